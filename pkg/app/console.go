package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/console"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/version"
)

// newConsole builds the web console over the daemon.
func (d *daemon) newConsole(cfg *config.Config) *console.Console {
	v := &consoleView{d: d, deps: &deploymentCache{ttl: 2 * time.Second, byNS: map[string]nsDeployments{}}}
	var inc console.Incidents
	if d.records != nil {
		inc = d.records.reader
	}
	tokens := func() [][]byte {
		var out [][]byte
		for _, t := range d.apiTokens() {
			out = append(out, t.Secret)
		}
		return out
	}
	return console.New(v, v, inc, d.deliveries, console.Options{TokenFunc: tokens}, d.log.Named("console"))
}

// consoleView is the console's read-only view of the daemon.
type consoleView struct {
	d    *daemon
	deps *deploymentCache
}

func (v *consoleView) Snapshot(ctx context.Context) console.Snapshot {
	d := v.d
	cfg := d.config()
	d.mu.RLock()
	hash, loaded := d.cfgHash, d.loadedAt
	d.mu.RUnlock()
	s := console.Snapshot{Version: version.Get().Version, Identity: d.opts.Identity, Leader: d.isLeader(), LeaderElection: d.elect != nil,
		DryRun: cfg.Global.DryRun, ConfigHash: hash, LoadedAt: loaded, Interval: time.Duration(cfg.Global.Interval)}
	views := map[string][]evaluator.View{}
	for _, vw := range d.eval.Views() {
		views[vw.Rule.Target] = append(views[vw.Rule.Target], vw)
	}
	resp := map[string]response.TargetStatus{}
	for _, t := range d.resp.Status() {
		resp[t.Name] = t
	}
	namespaces := map[string]bool{}
	for _, t := range cfg.Targets {
		namespaces[t.Namespace] = true
	}
	deps := v.deps.get(ctx, d, namespaces)
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		s.Targets = append(s.Targets, v.target(cfg, t, resp[t.Name], views[t.Name], deps))
	}
	return s
}

func (v *consoleView) target(cfg *config.Config, t *config.Target, rs response.TargetStatus, views []evaluator.View, deps map[string]depInfo) console.Target {
	dry := cfg.Global.DryRun || (t.DryRun != nil && *t.DryRun)
	out := console.Target{Name: t.Name, Namespace: t.Namespace, Deployment: t.Deployment, DryRun: dry,
		Running: rs.Running, LastResult: rs.LastResult, Triggers: views}
	di, known := deps[t.Namespace+"/"+t.Deployment]
	out.Image = di.image
	switch {
	case cfg.Global.Interlocks.Freeze:
		out.Freeze = "frozen in config (global.interlocks.freeze)"
	case t.Freeze:
		out.Freeze = "target frozen in config (targets[].freeze)"
	case known && di.frozen:
		out.Freeze = "Deployment annotated " + kube.FreezeAnnotation
		if di.note != "" && di.note != "true" {
			out.Freeze += ": " + di.note
		}
	case !known:
		out.FreezeUnknown = true
	}
	return out
}

// Target reads the target's Deployment and ReplicaSets, the plan a
// rollback would run now and every interlock.
func (v *consoleView) Target(ctx context.Context, name string) (console.TargetDetail, error) {
	d := v.d
	cfg := d.config()
	t, ok := findTarget(cfg.Targets, name)
	if !ok {
		return console.TargetDetail{}, fmt.Errorf("target %q: %w", name, console.ErrUnknownTarget)
	}
	var rs response.TargetStatus
	for _, s := range d.resp.Status() {
		if s.Name == name {
			rs = s
		}
	}
	var views []evaluator.View
	for _, vw := range d.eval.Views() {
		if vw.Rule.Target == name {
			views = append(views, vw)
		}
	}
	now := time.Now()
	out := console.TargetDetail{Actions: planChoices(t)}

	rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	dep, err := d.kube.Get(rctx, t.Namespace, t.Deployment)
	var rss []appsv1.ReplicaSet
	if err == nil {
		rss, err = d.kube.ReplicaSets(rctx, dep)
	}
	deps := map[string]depInfo{}
	if err != nil {
		out.ReadError = err.Error()
	} else {
		deps[t.Namespace+"/"+t.Deployment] = infoOf(dep)
		out.Current, out.Previous = revisions(dep, rss)
	}
	out.Target = v.target(cfg, t, rs, views, deps)

	pv, perr := d.exec.Plan(rctx, rollbackTarget(t, d.dbs, describedVerifier{}), "")
	if perr != nil {
		out.PlanError = perr.Error()
	} else {
		out.Plan = pv
	}
	out.Interlocks, out.Verdict, out.VerdictAllowed = v.interlocks(cfg, t, out, dep, now)
	return out, nil
}

func (v *consoleView) Plan(ctx context.Context, name, action string) (*rollback.PlanView, error) {
	t, ok := findTarget(v.d.config().Targets, name)
	if !ok {
		return nil, fmt.Errorf("target %q: %w", name, console.ErrUnknownTarget)
	}
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	return v.d.exec.Plan(ctx, rollbackTarget(t, v.d.dbs, describedVerifier{}), plan.Name(action))
}

// planChoices are the plans a human may ask for on the target: its own
// strategy first.
func planChoices(t *config.Target) []string {
	out := []string{string(t.Rollback.Plan())}
	add := func(p string) {
		for _, have := range out {
			if have == p {
				return
			}
		}
		out = append(out, p)
	}
	add(string(plan.Quick))
	add(string(plan.Revert))
	if t.Rollback.Database != nil {
		add(string(plan.Full))
		add(string(plan.PoolRecovery))
	}
	if t.Rollback.MultiRegion != nil {
		add(string(plan.MultiRegion))
	}
	return out
}

// interlocks lists every interlock's state in the order the guard checks
// them, and asks the guard itself what an automatic action would meet
// now.
func (v *consoleView) interlocks(cfg *config.Config, t *config.Target, td console.TargetDetail, dep *appsv1.Deployment, now time.Time) ([]console.Interlock, string, bool) {
	d := v.d
	il := cfg.Global.Interlocks
	gs := d.guard.State(t.Name, now)
	var out []console.Interlock
	add := func(name, state, detail string) {
		out = append(out, console.Interlock{Name: name, State: state, Detail: detail})
	}
	leader := d.isLeader()
	switch {
	case d.elect == nil:
		add("Leader", console.InterlockOff, "leader election off: this process acts alone")
	case leader:
		add("Leader", console.InterlockPass, "this replica ("+d.opts.Identity+") holds the lease")
	default:
		add("Leader", console.InterlockBlocks, "this replica ("+d.opts.Identity+") is a follower: the leader acts")
	}
	if td.DryRun {
		add("Dry-run", console.InterlockBlocks, "dry-run: pages \"would roll back\" with the plan and writes nothing")
	} else {
		add("Dry-run", console.InterlockPass, "off: acts for real")
	}
	annotated, note := false, ""
	switch {
	case td.Freeze != "" && dep == nil:
		add("Freeze", console.InterlockBlocks, td.Freeze)
	case dep != nil && (td.Freeze != ""):
		detail := td.Freeze
		if kube.Frozen(dep) {
			annotated, note = true, dep.Annotations[kube.FreezeAnnotation]
			if who, at := freezeSetter(dep); who != "" {
				detail += fmt.Sprintf(" (set by %s at %s)", who, at.UTC().Format("2006-01-02 15:04:05 UTC"))
			}
		}
		add("Freeze", console.InterlockBlocks, detail)
	case dep == nil:
		add("Freeze", console.InterlockUnknown, "the Deployment could not be read")
	default:
		add("Freeze", console.InterlockPass, "not frozen (config, annotation "+kube.FreezeAnnotation+")")
	}
	var revision string
	var deployedAt time.Time
	if td.Current != nil {
		revision, deployedAt = td.Current.Hash, td.Current.Created
		if revision == "" {
			revision = fmt.Sprintf("rev%d", td.Current.Number)
		}
	}
	switch at, acted := gs.ActedOn[revision]; {
	case revision == "":
		add("One rollback per revision", console.InterlockUnknown, "current revision unknown")
	case acted:
		add("One rollback per revision", console.InterlockBlocks, fmt.Sprintf("revision %s was rolled back at %s", revision, at.UTC().Format("15:04:05 UTC")))
	default:
		add("One rollback per revision", console.InterlockPass, "revision "+revision+" not rolled back yet")
	}
	maxAge := time.Duration(il.MaxRevisionAge)
	switch {
	case maxAge <= 0:
		add("Revision age", console.InterlockOff, "maxRevisionAge off")
	case deployedAt.IsZero():
		add("Revision age", console.InterlockUnknown, "deploy time of the current revision unknown: automatic actions blocked")
	case now.Sub(deployedAt) > maxAge:
		add("Revision age", console.InterlockBlocks, fmt.Sprintf("deployed %s ago, older than maxRevisionAge %s: page only", roundDur(now.Sub(deployedAt)), maxAge))
	default:
		add("Revision age", console.InterlockPass, fmt.Sprintf("deployed %s ago (maxRevisionAge %s)", roundDur(now.Sub(deployedAt)), maxAge))
	}
	switch {
	case gs.Options.Cooldown <= 0:
		add("Cooldown", console.InterlockOff, "cooldown off")
	case gs.CooldownLeft > 0:
		add("Cooldown", console.InterlockBlocks, fmt.Sprintf("%s left of %s (last rollback started %s)", roundDur(gs.CooldownLeft), gs.Options.Cooldown, gs.LastRollback.UTC().Format("15:04:05 UTC")))
	case !gs.LastRollback.IsZero():
		add("Cooldown", console.InterlockPass, fmt.Sprintf("last rollback started %s ago (cooldown %s)", roundDur(now.Sub(gs.LastRollback)), gs.Options.Cooldown))
	default:
		add("Cooldown", console.InterlockPass, fmt.Sprintf("no rollback remembered (cooldown %s)", gs.Options.Cooldown))
	}
	switch {
	case gs.BudgetLeft < 0:
		add("Hourly budget", console.InterlockOff, "budget off")
	case gs.BudgetLeft == 0:
		add("Hourly budget", console.InterlockBlocks, fmt.Sprintf("0 of %d left: %d rollbacks in the last hour, all targets", gs.Options.MaxRollbacksPerHour, gs.RollbacksLastHour))
	default:
		add("Hourly budget", console.InterlockPass, fmt.Sprintf("%d of %d left this hour (all targets)", gs.BudgetLeft, gs.Options.MaxRollbacksPerHour))
	}
	switch g, ok := d.watch.Status(t.Name); {
	case t.GitOps.Mode == config.GitOpsIgnore:
		add("GitOps", console.InterlockOff, "gitops.mode ignore: a Flux or Argo CD controller may undo a rollback")
	case !ok:
		add("GitOps", console.InterlockPass, "mode "+t.GitOps.Mode+": read at preflight (no suspension held)")
	case g.Error != "":
		add("GitOps", console.InterlockUnknown, g.Error)
	case g.ByRollguard:
		add("GitOps", console.InterlockPass, fmt.Sprintf("rollguard holds %s suspended (run %s); Git at %s: a human reverts the bad commit, then resume-gitops", g.Owner, g.Run, g.Revision))
	default:
		add("GitOps", console.InterlockPass, fmt.Sprintf("%s, mode %s, not suspended", g.Owner, g.Mode))
	}

	plan := string(t.Rollback.Plan())
	if td.Running != "" {
		return out, "A plan is running now (" + td.Running + "): a new decision is not queued until it ends.", false
	}
	if dep == nil {
		return out, "Unknown: the Deployment could not be read; an automatic action would page \"cannot roll back\".", false
	}
	// The guard is the judge: ask it, as the responder would for a trigger.
	verdict := d.guard.Check(guard.Request{Target: t.Name, Revision: revision, Action: response.ActionRollback, DeployedAt: deployedAt,
		Frozen: annotated, FreezeNote: note, FrozenInConfig: t.Freeze, DryRun: td.DryRun, Leader: leader}, now)
	switch {
	case verdict.Allowed() && td.Plan == nil:
		return out, "The interlocks pass, but the executor would refuse: " + td.PlanError, false
	case verdict.Allowed():
		return out, fmt.Sprintf("Would roll back automatically with plan %s: every interlock passes.", td.Plan.Action), true
	case verdict.Reason == guard.DryRun:
		return out, "Dry-run: would page \"would roll back\" with plan " + plan + " and change nothing.", false
	}
	return out, "Would not roll back: " + string(verdict.Reason) + ": " + verdict.Detail + ". rollguard pages a human instead.", false
}

func roundDur(d time.Duration) time.Duration {
	if d >= time.Minute {
		return d.Round(time.Second)
	}
	return d.Round(100 * time.Millisecond)
}

// revisions finds the ReplicaSet running the Deployment's template and the
// newest older one with other images (what a rollback restores).
func revisions(dep *appsv1.Deployment, rss []appsv1.ReplicaSet) (cur, prev *console.Revision) {
	sorted := append([]appsv1.ReplicaSet(nil), rss...)
	sort.Slice(sorted, func(i, j int) bool {
		a, _ := kube.Revision(&sorted[i])
		b, _ := kube.Revision(&sorted[j])
		return a > b
	})
	curImages := kube.FormatImages(kube.Images(&dep.Spec.Template))
	rev := func(rs *appsv1.ReplicaSet) *console.Revision {
		n, _ := kube.Revision(rs)
		tmpl := kube.TemplateOf(rs)
		var desired int32
		if rs.Spec.Replicas != nil {
			desired = *rs.Spec.Replicas
		}
		return &console.Revision{Number: n, Name: rs.Name, Hash: rs.Labels[kube.PodTemplateHashLabel], Images: kube.FormatImages(kube.Images(&tmpl)),
			Created: rs.CreationTimestamp.Time, Ready: rs.Status.ReadyReplicas, Desired: desired}
	}
	for i := range sorted {
		tmpl := kube.TemplateOf(&sorted[i])
		switch {
		case cur == nil && kube.EqualTemplates(&tmpl, &dep.Spec.Template):
			cur = rev(&sorted[i])
		case cur != nil && prev == nil && kube.FormatImages(kube.Images(&tmpl)) != curImages:
			prev = rev(&sorted[i])
		}
	}
	return cur, prev
}

// freezeSetter names the field manager that last set the freeze
// annotation, from the Deployment's managed fields: who froze it.
func freezeSetter(dep *appsv1.Deployment) (string, time.Time) {
	var who string
	var when time.Time
	for _, mf := range dep.ManagedFields {
		if mf.FieldsV1 == nil {
			continue
		}
		var f map[string]map[string]map[string]json.RawMessage
		if json.Unmarshal(mf.FieldsV1.Raw, &f) != nil {
			continue
		}
		if _, ok := f["f:metadata"]["f:annotations"]["f:"+kube.FreezeAnnotation]; !ok {
			continue
		}
		at := time.Time{}
		if mf.Time != nil {
			at = mf.Time.Time
		}
		if who == "" || at.After(when) {
			who, when = mf.Manager, at
		}
	}
	return who, when
}

// --- deployments for the overview -----------------------------------------

type depInfo struct {
	frozen bool
	note   string
	image  string
}

func infoOf(dep *appsv1.Deployment) depInfo {
	return depInfo{frozen: kube.Frozen(dep), note: dep.Annotations[kube.FreezeAnnotation], image: kube.FormatImages(kube.Images(&dep.Spec.Template))}
}

type nsDeployments struct {
	at   time.Time
	deps map[string]depInfo
	err  error
}

// deploymentCache lists the targets' namespaces at most once per ttl, so
// an overview refreshed by several browsers every 2 s costs one list per
// namespace per ttl, not a read per target per refresh; a freeze shows
// within the ttl.
type deploymentCache struct {
	ttl  time.Duration
	mu   sync.Mutex
	byNS map[string]nsDeployments
}

// get returns namespace/name → info for every Deployment it could list; a
// target missing from it has an unknown freeze state.
func (c *deploymentCache) get(ctx context.Context, d *daemon, namespaces map[string]bool) map[string]depInfo {
	c.mu.Lock()
	defer c.mu.Unlock()
	out := map[string]depInfo{}
	now := time.Now()
	for ns := range namespaces {
		e, ok := c.byNS[ns]
		if !ok || now.Sub(e.at) > c.ttl {
			lctx, cancel := context.WithTimeout(ctx, 3*time.Second)
			list, err := d.client.AppsV1().Deployments(ns).List(lctx, metav1.ListOptions{})
			cancel()
			e = nsDeployments{at: now, err: err, deps: map[string]depInfo{}}
			if err == nil {
				for i := range list.Items {
					e.deps[list.Items[i].Name] = infoOf(&list.Items[i])
				}
			} else if errors.Is(err, context.Canceled) {
				continue // the reader went away: do not cache its failure
			}
			c.byNS[ns] = e
		}
		for name, di := range e.deps {
			out[ns+"/"+name] = di
		}
	}
	for ns := range c.byNS {
		if !namespaces[ns] {
			delete(c.byNS, ns)
		}
	}
	return out
}
