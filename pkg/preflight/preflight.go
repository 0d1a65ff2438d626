// Package preflight runs the machine-checkable items of the runbook's
// pre-deployment checklist against the live systems and reports each with
// pass, fail, warn, skip or manual and the evidence behind it:
//
//   - Backup completed and tested: the pre-deploy dump exists, is younger
//     than rollback.database.maxDumpAge, pg_restore reads all of it and
//     lists the verifyTables, and (RestoreTest) restores cleanly into a
//     scratch database that is dropped afterwards.
//   - Previous stable version documented: the rollback target the
//     executor's preflight would pin resolves now (rollback.Executor.Plan,
//     which writes nothing), and differs from the image about to be
//     deployed; and whether Flux or Argo CD reconciles the target, with
//     what its gitops.mode makes a rollback do (refuse: rollguard pages
//     instead, a warn).
//   - Monitoring alerts configured: every trigger's query returns data now,
//     and rollguard's own daemon answers, is ready and watches the target.
//   - PagerDuty escalation configured: routing key (and webhook) files are
//     present and well-formed; TestPage sends an info event and wants 202.
//   - Database replication verified: the secondaries' subscriptions are
//     enabled with a running apply worker, and the lag is under the
//     target's threshold.
//   - All critical fixes applied: the required migrations are in
//     pggit.schema_versions.
//
// Only a fail blocks the deploy; a warn is something a human should read.
// Items no machine can check are listed as manual so the checklist stays
// whole.
package preflight

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"text/tabwriter"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/backup"
	"github.com/rollguard/rollguard/pkg/config"
)

// ErrUsage marks an error in what the operator asked for (config file,
// target, flag values); the CLI maps it to exit code 2. It is the same
// sentinel as backup's.
var ErrUsage = backup.ErrUsage

// Status is the outcome of one check.
type Status string

// Statuses. Only StatusFail blocks.
const (
	StatusPass   Status = "pass"
	StatusFail   Status = "fail"
	StatusWarn   Status = "warn"
	StatusSkip   Status = "skip"
	StatusManual Status = "manual"
)

// The runbook's checklist items, as it words them.
const (
	ItemBackup      = "Backup completed and tested"
	ItemPrevious    = "Previous stable version documented"
	ItemMonitoring  = "Monitoring alerts configured"
	ItemResponders  = "Incident response team available"
	ItemSlack       = "Slack channel created/active"
	ItemPaging      = "PagerDuty escalation configured"
	ItemReplication = "Database replication verified"
	ItemFixes       = "All critical fixes applied"
)

// Defaults.
const (
	DefaultCheckTimeout   = 30 * time.Second
	DefaultRestoreTimeout = 15 * time.Minute
	// DefaultLagThreshold is the runbook's replication lag trigger (30 s),
	// used when the target has no replicationLag trigger of its own.
	DefaultLagThreshold = 30 * time.Second
)

// Check is one checked fact.
type Check struct {
	Item     string `json:"item"`
	Name     string `json:"check"`
	Status   Status `json:"status"`
	Evidence string `json:"evidence"`
	// Took is how long the check ran.
	Took time.Duration `json:"tookNanoseconds"`
}

// Report is the checklist of one target.
type Report struct {
	Target     string    `json:"target"`
	Namespace  string    `json:"namespace"`
	Deployment string    `json:"deployment"`
	Time       time.Time `json:"time"`
	Checks     []Check   `json:"checks"`
}

// Blocking reports whether any check failed: the deploy should not go on.
func (r *Report) Blocking() bool {
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			return true
		}
	}
	return false
}

// Counts returns how many checks ended in each status.
func (r *Report) Counts() map[Status]int {
	m := map[Status]int{}
	for _, c := range r.Checks {
		m[c.Status]++
	}
	return m
}

// Failed returns the failed checks.
func (r *Report) Failed() []Check {
	var out []Check
	for _, c := range r.Checks {
		if c.Status == StatusFail {
			out = append(out, c)
		}
	}
	return out
}

// Summary is one line: the counts and the verdict.
func (r *Report) Summary() string {
	n := r.Counts()
	verdict := "ready to deploy"
	if r.Blocking() {
		verdict = "BLOCKED: fix the failed checks before deploying"
	}
	return fmt.Sprintf("preflight %s (%s/%s): %d pass, %d fail, %d warn, %d skip, %d manual: %s",
		r.Target, r.Namespace, r.Deployment, n[StatusPass], n[StatusFail], n[StatusWarn], n[StatusSkip], n[StatusManual], verdict)
}

// WriteTable writes the checklist as an aligned table and the summary.
func (r *Report) WriteTable(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ITEM\tCHECK\tRESULT\tEVIDENCE")
	for _, c := range r.Checks {
		ev := strings.ReplaceAll(c.Evidence, "\n", " ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Item, c.Name, strings.ToUpper(string(c.Status)), ev)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	_, err := fmt.Fprintln(w, r.Summary())
	return err
}

// jsonReport adds the verdict to the JSON form.
type jsonReport struct {
	*Report
	Blocking bool           `json:"blocking"`
	Counts   map[Status]int `json:"counts"`
}

// WriteJSON writes the report as one indented JSON object with the
// verdict ("blocking").
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(jsonReport{Report: r, Blocking: r.Blocking(), Counts: r.Counts()})
}

// Options says what to check.
type Options struct {
	// ConfigFile is loaded when Config is nil. Its secrets are resolved
	// here; a secret that cannot be read fails the checks that need it.
	ConfigFile string
	// Config is an already loaded configuration whose secrets the caller
	// has resolved; a secret that did not resolve fails the checks that
	// need it ("not resolved").
	Config *config.Config
	// Target names the target to check.
	Target string
	// NextImage is what is about to be deployed: "image" (every rolled
	// back container) or "container=image"; repeatable.
	NextImage []string
	// RequireMigrations must be in pggit.schema_versions, in addition to
	// the target's rollback.database.migration.
	RequireMigrations []string
	// RestoreTest restores the dump into a scratch database, then drops it.
	RestoreTest bool
	// TestPage sends an info-severity test event to PagerDuty.
	TestPage bool
	// DaemonURL is rollguard's own API; default http://<global.listenAddress>.
	DaemonURL string
	// DaemonToken is sent as a bearer token (the read endpoints need none).
	DaemonToken string
	// Kubeconfig and KubeContext override global.kubernetes.kubeconfig
	// and .context (the command line's --kubeconfig and --context).
	Kubeconfig, KubeContext string
	// Kube is used instead of building a client from the kubeconfig.
	Kube kubernetes.Interface
	// GitOps finds the target's GitOps owner (default: a gitops.Manager
	// over the kubeconfig).
	GitOps GitOpsDetector
	// HTTPClient reaches the daemon (default: a client with CheckTimeout).
	HTTPClient *http.Client
	// PagerDutyTransport carries the test page (default
	// http.DefaultTransport); the status code is read from it.
	PagerDutyTransport http.RoundTripper
	// CheckTimeout bounds each check (default 30s); RestoreTimeout bounds
	// the restore test (default 15m).
	CheckTimeout   time.Duration
	RestoreTimeout time.Duration
	// Now is the clock (default time.Now).
	Now    func() time.Time
	Logger *zap.Logger
}

// Run loads the config, finds the target and runs every check. Problems
// with the request itself (config file, unknown target, malformed flag
// values) are returned wrapping ErrUsage; everything found on the live
// systems is in the Report, and the error is nil.
func Run(ctx context.Context, opts Options) (*Report, error) {
	r, err := newRunner(opts)
	if err != nil {
		return nil, err
	}
	defer r.close()
	rep := &Report{Target: r.t.Name, Namespace: r.t.Namespace, Deployment: r.t.Deployment, Time: r.now().UTC()}
	sections := []func(context.Context) []Check{
		r.backupChecks,
		r.previousChecks,
		r.monitoringChecks,
		r.manualChecks,
		r.pagingChecks,
		r.replicationChecks,
		r.migrationChecks,
	}
	for _, s := range sections {
		if err := ctx.Err(); err != nil {
			return rep, fmt.Errorf("preflight of target %q: %w", r.t.Name, err)
		}
		for _, c := range s(ctx) {
			r.logger.Debug("preflight check", zap.String("item", c.Item), zap.String("check", c.Name),
				zap.String("status", string(c.Status)), zap.String("evidence", c.Evidence))
			rep.Checks = append(rep.Checks, c)
		}
	}
	r.logger.Info("preflight finished", zap.String("target", r.t.Name), zap.Bool("blocking", rep.Blocking()),
		zap.Int("failed", len(rep.Failed())))
	return rep, nil
}

// loadConfig returns the config and the secret problems by path, which
// fail only the checks that need those secrets.
func loadConfig(opts Options) (*config.Config, []*config.Error, error) {
	cfg := opts.Config
	if cfg == nil {
		if opts.ConfigFile == "" {
			return nil, nil, fmt.Errorf("%w: no config file given", ErrUsage)
		}
		c, err := config.LoadFile(opts.ConfigFile)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: %w", ErrUsage, err)
		}
		if err := c.ResolveSecrets(); err != nil {
			var errs *config.Errors
			if !errors.As(err, &errs) {
				return nil, nil, fmt.Errorf("%w: %w", ErrUsage, err)
			}
			return c, errs.List, nil
		}
		return c, nil, nil
	}
	return cfg, nil, nil
}

// secretProblem returns the message of the secret error at or under path.
func secretProblem(errs []*config.Error, path string) (string, bool) {
	var msgs []string
	for _, e := range errs {
		if e.Path == path || strings.HasPrefix(e.Path, path+".") {
			msgs = append(msgs, e.Error())
		}
	}
	return strings.Join(msgs, "; "), len(msgs) > 0
}

// parseNextImages turns --next-image values into container -> image; the
// key "" applies to every container.
func parseNextImages(vals []string) (map[string]string, error) {
	out := map[string]string{}
	for _, v := range vals {
		v = strings.TrimSpace(v)
		if v == "" {
			return nil, fmt.Errorf("%w: --next-image: empty value", ErrUsage)
		}
		container, image := "", v
		if c, i, ok := strings.Cut(v, "="); ok {
			container, image = strings.TrimSpace(c), strings.TrimSpace(i)
			if container == "" || image == "" {
				return nil, fmt.Errorf("%w: --next-image %q: want IMAGE or CONTAINER=IMAGE", ErrUsage, v)
			}
		}
		if prev, dup := out[container]; dup && prev != image {
			return nil, fmt.Errorf("%w: --next-image: two images for container %q (%s, %s)", ErrUsage, orAll(container), prev, image)
		}
		out[container] = image
	}
	return out, nil
}

func orAll(container string) string {
	if container == "" {
		return "(all)"
	}
	return container
}

// ago renders a duration for evidence, rounded to what a human reads.
func ago(d time.Duration) string {
	switch {
	case d < time.Second && d > -time.Second:
		return d.Round(time.Millisecond).String()
	case d < time.Minute:
		return d.Round(100 * time.Millisecond).String()
	case d < time.Hour:
		return d.Round(time.Second).String()
	default:
		return d.Round(time.Minute).String()
	}
}
