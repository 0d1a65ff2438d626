package app

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/rollback"
)

// Plan prints the plan a rollback of target would run now, for the live
// cluster state, without writing anything.
func Plan(ctx context.Context, opts Options, target, action string) (string, error) {
	pv, err := PlanView(ctx, opts, target, action)
	if err != nil {
		return "", err
	}
	return RenderPlan(pv), nil
}

// PlanView is the plan a rollback of target would run now, for the live
// cluster state, read without writing anything.
func PlanView(ctx context.Context, opts Options, target, action string) (*rollback.PlanView, error) {
	opts.defaults()
	cfg, err := loadConfig(opts.ConfigFile)
	if err != nil {
		return nil, err
	}
	t, ok := findTarget(cfg.Targets, target)
	if !ok {
		return nil, fmt.Errorf("%w: target %q is not in %s", ErrUsage, target, opts.ConfigFile)
	}
	if action != "" && !plan.Known(action) {
		return nil, fmt.Errorf("%w: --action %q: want quick, revert, full, pool-recovery or multi-region", ErrUsage, action)
	}
	logger, err := NewLogger("warn", opts.LogOutput)
	if err != nil {
		return nil, err
	}
	client, rc, err := kubeClient(cfg, opts)
	if err != nil {
		return nil, err
	}
	owners, err := gitopsManager(rc, logger)
	if err != nil {
		return nil, err
	}
	dbs, err := openDatabases(ctx, cfg, logger)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, db := range dbs {
			db.Close()
		}
	}()
	exec := rollback.NewExecutor(kube.New(client, kube.Options{}, logger), client.CoreV1(), rollback.Options{}, logger)
	// The real run verifies with the target's triggers; say so in the plan
	// (Plan never runs a step, so the verifier is only described).
	rt := rollbackTarget(t, dbs, describedVerifier{lookback: targetLookback(cfg, t.Namespace, t.Deployment)})
	rt.GitOps = gitopsPolicy(t, owners)
	pv, err := exec.Plan(ctx, rt, plan.Name(action))
	if err != nil {
		return nil, err
	}
	return pv, nil
}

// RenderPlan is the plan as `rollguard plan` prints it.
func RenderPlan(pv *rollback.PlanView) string {
	var b strings.Builder
	fmt.Fprintf(&b, "plan %s for deployment %s/%s\n", pv.Action, pv.Namespace, pv.Deployment)
	if pv.Resume {
		fmt.Fprintf(&b, "  resumes run %s\n", pv.RunID)
	}
	fmt.Fprintf(&b, "  bad revision:  %d (%s) %s\n", pv.Bad.Revision, pv.Bad.Hash, kube.FormatImages(pv.Bad.Images))
	if pv.Pinned != nil {
		fmt.Fprintf(&b, "  pinned target: %s revision %d (%s) %s\n", pv.Pinned.Source, pv.Pinned.Revision, pv.Pinned.Hash, kube.FormatImages(pv.Pinned.Images))
	}
	fmt.Fprintf(&b, "  replicas to restore: %d\n", pv.Replicas)
	if pv.MigrationApplied {
		b.WriteString("  database migration applied: the database steps will run\n")
	}
	if g := pv.GitOps; g != nil {
		fmt.Fprintf(&b, "  gitops: %s, policy %s", g.Owner.Describe(), g.Mode)
		switch {
		case g.Owner.SuspendedByRollguard():
			b.WriteString(" (suspended by rollguard)")
		case g.Owner.Suspended:
			b.WriteString(" (its reconciliation is already suspended)")
		}
		b.WriteString("\n")
	} else {
		b.WriteString("  gitops: no Flux or Argo CD object reconciles it\n")
	}
	b.WriteString("\n")
	tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "#\tSTEP\tSTATE\tIDEMPOTENT\tWHAT IT DOES")
	for i, s := range pv.Steps {
		fmt.Fprintf(tw, "%d\t%s\t%s\t%v\t%s\n", i+1, s.Name, s.State, s.Idempotent, s.Description)
	}
	tw.Flush()
	return b.String()
}

// RollbackLocal runs a rollback in this process (no daemon needed), through
// the same interlocks, plan, journal and notifications as the daemon: the
// interlocks are seeded from the journals first, so the cooldown, the
// budget and one rollback per revision hold for a human at a terminal too.
// force passes those (not a freeze or dry-run), and is logged.
func RollbackLocal(ctx context.Context, opts Options, target, action, reason string, force bool) (string, error) {
	opts.defaults()
	cfg, err := loadConfig(opts.ConfigFile)
	if err != nil {
		return "", err
	}
	if _, ok := findTarget(cfg.Targets, target); !ok {
		return "", fmt.Errorf("%w: target %q is not in %s", ErrUsage, target, opts.ConfigFile)
	}
	// A human at a terminal is the leader of this one action; the journal
	// still fences it against a running daemon.
	cfg.Global.LeaderElection.Enabled = false
	logger, err := NewLogger(cfg.Global.LogLevel, opts.LogOutput)
	if err != nil {
		return "", err
	}
	d, err := newDaemon(ctx, cfg, opts, logger)
	if err != nil {
		return "", err
	}
	defer d.close()
	qctx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); d.queue.Run(qctx) }()
	defer func() { stop(); <-done }()
	d.resp.SeedHistory(ctx)
	out, err := d.resp.ExecuteAs(ctx, notify.Requester{Kind: notify.RequestedByCLI, Name: caller()}, target, normalizeAction(action), reason, force)
	if errors.Is(err, response.ErrUnknownAction) {
		err = fmt.Errorf("%w: %v", ErrUsage, err)
	}
	if err != nil {
		return "", err
	}
	logger.Info("manual rollback finished", zap.String("target", target), zap.String("result", out.Detail), zap.Bool("force", force))
	if !out.OK() {
		// Nothing to print: a failure goes to stderr only.
		return "", errors.New(out.Detail)
	}
	return out.Detail + "\n", nil
}

// describedVerifier stands for the daemon's verifier in `rollguard plan`,
// which describes the steps and runs none of them.
type describedVerifier struct{ lookback time.Duration }

func (v describedVerifier) Lookback(string, string) time.Duration { return v.lookback }

func (describedVerifier) Verify(context.Context, string, string, time.Time) []rollback.Signal {
	return []rollback.Signal{{Trigger: "plan", State: rollback.SignalNoData, Detail: "verify does not run in a plan"}}
}
