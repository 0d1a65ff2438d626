// Package response owns what happens after a trigger fires (or a human or
// an Alertmanager alert asks): it names the bad revision, passes the
// interlocks, runs the executor's plan, and tells humans at each
// milestone. It is the "guard → action → executor → notifier" part of the
// data flow (DESIGN §1).
//
// The evaluator must never wait on a rollback, and a rollback must never
// wait on a pager: Fire and Blind only queue, one worker per target runs
// plans (so two decisions for one Deployment never race), and every
// notification goes through the non-blocking notify queue.
package response

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// Actions a trigger or a request asks for (the config's words).
const (
	ActionRollback            = "rollback"
	ActionRestartThenRollback = "restart-then-rollback"
	ActionFullRollback        = "full-rollback"
	ActionPage                = "page"
)

// ErrUnknownTarget: the request names no configured target.
var ErrUnknownTarget = errors.New("unknown target")

// ErrUnknownAction: the request names no action or plan.
var ErrUnknownAction = errors.New("unknown action")

// ErrBusy: a plan is already running for the target.
var ErrBusy = errors.New("a plan is already running for this target")

// Executor runs plans; *rollback.Executor implements it.
type Executor interface {
	Run(ctx context.Context, req rollback.Request) (*rollback.Result, error)
	Plan(ctx context.Context, target rollback.Target, action rollback.Action) (*rollback.PlanView, error)
}

// plans a request may name directly instead of an action.
var plans = map[string]bool{
	string(rollback.ActionQuick): true, string(rollback.ActionRevert): true, string(rollback.ActionFull): true,
	string(rollback.ActionPoolRecovery): true, string(rollback.ActionMultiRegion): true,
}

// ValidAction reports whether a request may ask for action: one of the
// config's actions or a plan name.
func ValidAction(action string) bool {
	switch action {
	case ActionRollback, ActionRestartThenRollback, ActionFullRollback, ActionPage:
		return true
	}
	return plans[action]
}

// Deployments reads the target's state; *kube.Deployments implements it.
type Deployments interface {
	Get(ctx context.Context, ns, name string) (*appsv1.Deployment, error)
	ReplicaSets(ctx context.Context, dep *appsv1.Deployment) ([]appsv1.ReplicaSet, error)
}

// Queue takes notifications without blocking; *notify.Queue implements it.
type Queue interface {
	Enqueue(e notify.Event)
}

// Target is one configured target as the responder needs it.
type Target struct {
	Name     string
	Rollback rollback.Target // Namespace, Deployment, Strategy, plans' settings
	DryRun   bool
	// Frozen is the config's per-target freeze (the annotation is read
	// from the Deployment).
	Frozen bool
	// Severity of pages for this target when the trigger has none.
	Severity notify.Severity
	Cluster  string
	// RestartMemory is how long a pool recovery is remembered: a
	// restart-then-rollback trigger that fires again within it rolls back.
	RestartMemory time.Duration
}

// Options configure the responder.
type Options struct {
	Now      func() time.Time
	IsLeader func() bool
	// RunTimeout bounds one plan run (default 30m).
	RunTimeout time.Duration
	// ReadTimeout bounds the reads before a plan (default 10s).
	ReadTimeout time.Duration
	// WouldRollback: send dry-run "would roll back" notifications.
	WouldRollback bool
	// StatusURL links pages to the incident API.
	StatusURL string
	// Integrity runs the runbook's data integrity check after a successful
	// rollback (nil: not checked; the incident record says so).
	Integrity func(ctx context.Context, namespace, deployment string) (*notify.DataIntegrity, error)
}

// Responder turns decisions into actions.
type Responder struct {
	exec   Executor
	kube   Deployments
	queue  Queue
	guard  *guard.Guard
	opts   Options
	log    *zap.Logger
	m      *metrics
	jobs   chan job
	wakeup chan struct{}

	mu      sync.Mutex
	targets map[string]*targetState
	// pageOnce remembers "cannot roll back" pages per episode (target,
	// revision, reason), so a trigger that stays firing pages once.
	pageOnce map[string]time.Time

	// runs maps namespace/deployment to the event template of the plan in
	// flight (one plan per Deployment at a time), for the Observer.
	runsMu sync.Mutex
	runs   map[string]notify.Event
}

type targetState struct {
	cfg        Target
	running    string // action in flight
	lastResult string
	restarted  time.Time // last pool recovery started
	pending    []job
}

type job struct {
	target   string
	action   string
	reason   string
	manual   bool
	resume   bool // continue an in-flight journal (after a restart or a leader change)
	security bool
	severity notify.Severity
	decision *trigger.Decision
}

// New returns a Responder; call Run to start its workers.
func New(exec Executor, kube Deployments, queue Queue, g *guard.Guard, opts Options, logger *zap.Logger, reg prometheus.Registerer) *Responder {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.IsLeader == nil {
		opts.IsLeader = func() bool { return true }
	}
	if opts.RunTimeout <= 0 {
		opts.RunTimeout = 30 * time.Minute
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	return &Responder{
		exec: exec, kube: kube, queue: queue, guard: g, opts: opts, log: logger,
		m:        newMetrics(reg),
		jobs:     make(chan job, 1024),
		wakeup:   make(chan struct{}, 1),
		targets:  map[string]*targetState{},
		pageOnce: map[string]time.Time{},
		runs:     map[string]notify.Event{},
	}
}

// SetExecutor sets the executor; call it before Run. (The executor needs
// the responder's Observer, so they cannot be built in one step.)
func (r *Responder) SetExecutor(e Executor) { r.exec = e }

// SetTargets installs the targets (hot reload). A target whose plan is
// running keeps running with the settings it started with.
func (r *Responder) SetTargets(ts []Target) {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := make(map[string]*targetState, len(ts))
	for _, t := range ts {
		st := r.targets[t.Name]
		if st == nil {
			st = &targetState{}
		}
		st.cfg = t
		next[t.Name] = st
	}
	r.targets = next
}

// Fire queues a firing trigger's action. It never blocks.
func (r *Responder) Fire(d trigger.Decision) {
	j := job{target: d.Target, action: d.Action, reason: fmt.Sprintf("trigger %s: %s %s %g", d.Trigger, describeValue(d), d.Op, d.Threshold),
		security: d.Security, severity: notify.Severity(d.Severity), decision: &d}
	select {
	case r.jobs <- j:
	default:
		r.log.Error("decision dropped: responder queue full", zap.String("target", d.Target), zap.String("trigger", d.Trigger))
	}
}

// Blind pages that a trigger has been without data for blindAfter.
func (r *Responder) Blind(b trigger.Blind) {
	t, ok := r.target(b.Target)
	if !ok || !r.opts.IsLeader() {
		// Followers evaluate to keep their windows warm; only the leader
		// speaks, or every replica would page.
		return
	}
	r.queue.Enqueue(notify.Event{
		Kind: notify.KindBlind, Time: r.opts.Now(), Target: r.notifyTarget(t), Trigger: b.Trigger,
		Severity: notify.SeverityWarning,
		Summary:  fmt.Sprintf("rollguard is blind on %s/%s: no data since %s", b.Target, b.Trigger, b.Since.UTC().Format(time.RFC3339)),
		Details:  map[string]any{notify.DetailError: b.LastError, "since": b.Since},
	})
}

// Request asks for an action from a human or an alert. The interlocks are
// checked now so the caller gets the verdict; the plan runs in the
// background.
func (r *Responder) Request(ctx context.Context, target, action, reason string, security bool) (string, error) {
	t, ok := r.target(target)
	if !ok {
		return "", fmt.Errorf("target %q: %w", target, ErrUnknownTarget)
	}
	if action == "" {
		action = ActionRollback
	}
	if !ValidAction(action) {
		return "", fmt.Errorf("action %q: %w", action, ErrUnknownAction)
	}
	j := job{target: target, action: action, reason: reason, manual: true, security: security, severity: t.Severity}
	if action == ActionPage {
		r.page(j, t)
		return "paged", nil
	}
	info, err := r.inspect(ctx, t)
	if err != nil {
		return "", err
	}
	if v := r.check(j, t, info); !v.Allowed() {
		return v.String(), fmt.Errorf("%s: %w", v.String(), ErrRefusedByInterlock)
	}
	select {
	case r.jobs <- j:
		return "accepted: " + r.planFor(j, t) + " plan queued", nil
	default:
		return "", errors.New("responder queue full")
	}
}

// SeedHistory feeds the interlocks the last journaled run of every target,
// so a restart or a leader change keeps the cooldown, the budget and
// one-rollback-per-revision. (Each journal holds the Deployment's latest
// run only: the hourly budget is seeded approximately.)
func (r *Responder) SeedHistory(ctx context.Context, last func(ctx context.Context, ns, name string) (*rollback.Journal, error)) {
	r.mu.Lock()
	targets := make([]Target, 0, len(r.targets))
	for _, st := range r.targets {
		targets = append(targets, st.cfg)
	}
	r.mu.Unlock()
	for _, t := range targets {
		ctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
		j, err := last(ctx, t.Rollback.Namespace, t.Rollback.Deployment)
		cancel()
		if err != nil {
			r.log.Warn("cannot read the journal to seed the interlocks", zap.String("target", t.Name), zap.Error(err))
			continue
		}
		if j == nil || j.Started.IsZero() {
			continue
		}
		rev := j.Bad.Hash
		if rev == "" && j.Bad.Revision != 0 {
			rev = fmt.Sprintf("rev%d", j.Bad.Revision)
		}
		r.guard.Record(t.Name, rev, j.Started)
		r.log.Info("interlocks seeded from the journal", zap.String("target", t.Name), zap.String("revision", rev),
			zap.Time("started", j.Started), zap.String("state", string(j.State)))
	}
}

// Resume looks for plans a previous leader left in flight and finishes
// them (the journal says where they stopped; completed destructive steps
// are never repeated). Call it on becoming leader.
func (r *Responder) Resume(ctx context.Context) {
	r.mu.Lock()
	targets := make([]Target, 0, len(r.targets))
	for _, st := range r.targets {
		targets = append(targets, st.cfg)
	}
	r.mu.Unlock()
	for _, t := range targets {
		if t.DryRun {
			continue
		}
		pctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
		pv, err := r.exec.Plan(pctx, t.Rollback, "")
		cancel()
		if err != nil || pv == nil || !pv.Resume {
			continue
		}
		r.log.Info("resuming an in-flight plan", zap.String("target", t.Name), zap.String("plan", string(pv.Action)), zap.String("run", pv.RunID))
		select {
		case r.jobs <- job{target: t.Name, action: string(pv.Action), reason: "resume run " + pv.RunID + " after a restart or leader change", resume: true, manual: true, severity: t.Severity}:
		default:
			r.log.Error("resume dropped: responder queue full", zap.String("target", t.Name))
		}
	}
}

// Execute runs a human's request in the caller's goroutine, through the
// same interlocks and plan as the daemon, and returns the outcome (the CLI's
// `rollback --local`).
func (r *Responder) Execute(ctx context.Context, target, action, reason string) (string, error) {
	t, ok := r.target(target)
	if !ok {
		return "", fmt.Errorf("target %q: %w", target, ErrUnknownTarget)
	}
	if action == "" {
		action = ActionRollback
	}
	if !ValidAction(action) {
		return "", fmt.Errorf("action %q: %w", action, ErrUnknownAction)
	}
	return r.handle(ctx, job{target: target, action: action, reason: reason, manual: true, severity: t.Severity}, t), nil
}

// ErrRefusedByInterlock wraps a guard verdict returned to a requester.
var ErrRefusedByInterlock = errors.New("refused by an interlock")

// Run dispatches queued jobs to per-target workers until ctx is done, then
// waits for running plans to stop.
func (r *Responder) Run(ctx context.Context) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-r.jobs:
			r.mu.Lock()
			st := r.targets[j.target]
			switch {
			case st == nil:
				r.mu.Unlock()
				r.log.Warn("decision for a target no longer configured", zap.String("target", j.target))
				continue
			case st.running != "":
				// One plan per Deployment at a time. A second decision while
				// a plan runs is the same incident (or a human who will see
				// the running plan in the status API): log, do not queue.
				r.mu.Unlock()
				r.log.Info("plan already running; decision not queued", zap.String("target", j.target),
					zap.String("running", st.running), zap.String("action", j.action))
				continue
			}
			st.running = j.action
			cfg := st.cfg
			r.mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				res := r.handle(ctx, j, cfg)
				r.mu.Lock()
				if st := r.targets[j.target]; st != nil {
					st.running = ""
					st.lastResult = res
				}
				r.mu.Unlock()
			}()
		}
	}
}

// TargetStatus is one target's responder state, for the status API.
type TargetStatus struct {
	Name, Running, LastResult string
	DryRun                    bool
}

// Status lists the targets' states.
func (r *Responder) Status() []TargetStatus {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]TargetStatus, 0, len(r.targets))
	for name, st := range r.targets {
		out = append(out, TargetStatus{Name: name, Running: st.running, LastResult: st.lastResult, DryRun: st.cfg.DryRun})
	}
	return out
}

func (r *Responder) target(name string) (Target, bool) {
	r.mu.Lock()
	defer r.mu.Unlock()
	st, ok := r.targets[name]
	if !ok {
		return Target{}, false
	}
	return st.cfg, true
}

// revisionInfo is what the interlocks need from the cluster.
type revisionInfo struct {
	revision   string // the bad revision's pod-template-hash (or number)
	number     int64
	image      string
	deployedAt time.Time
	frozen     bool
	freezeNote string
}

// inspect reads the Deployment and finds its current ReplicaSet: the bad
// revision, when it was deployed, and the freeze annotation.
func (r *Responder) inspect(ctx context.Context, t Target) (revisionInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
	defer cancel()
	ns, name := t.Rollback.Namespace, t.Rollback.Deployment
	dep, err := r.kube.Get(ctx, ns, name)
	if err != nil {
		return revisionInfo{}, err
	}
	info := revisionInfo{frozen: kube.Frozen(dep), freezeNote: dep.Annotations[kube.FreezeAnnotation]}
	rss, err := r.kube.ReplicaSets(ctx, dep)
	if err != nil {
		return revisionInfo{}, err
	}
	for i := range rss {
		rs := &rss[i]
		tmpl := kube.TemplateOf(rs)
		if kube.EqualTemplates(&tmpl, &dep.Spec.Template) {
			info.revision = rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
			info.number, _ = kube.Revision(rs)
			info.deployedAt = rs.CreationTimestamp.Time
			break
		}
	}
	if info.revision == "" {
		// The controller has not created the ReplicaSet yet; fall back to
		// the Deployment's revision so one-per-revision still holds.
		info.number, _ = kube.Revision(dep)
		info.revision = fmt.Sprintf("rev%d", info.number)
	}
	for _, img := range kube.Images(&dep.Spec.Template) {
		if info.image != "" {
			info.image += ","
		}
		info.image += img
	}
	return info, nil
}

func (r *Responder) check(j job, t Target, info revisionInfo) guard.Verdict {
	if j.resume {
		// Finishing a plan that already passed the interlocks: only
		// leadership, dry-run and freeze still apply (a human who froze
		// the Deployment mid-plan wins).
		return guard.New(guard.Options{}).Check(guard.Request{Target: t.Name, Action: j.action,
			Frozen: info.frozen, FrozenInConfig: t.Frozen, FreezeNote: info.freezeNote, DryRun: t.DryRun, Leader: r.opts.IsLeader(), Manual: true}, r.opts.Now())
	}
	return r.guard.Check(guard.Request{
		Target: t.Name, Revision: info.revision, Action: j.action, DeployedAt: info.deployedAt,
		Frozen: info.frozen, FrozenInConfig: t.Frozen, FreezeNote: info.freezeNote, DryRun: t.DryRun, Leader: r.opts.IsLeader(), Manual: j.manual,
	}, r.opts.Now())
}

// planFor maps the requested action to an executor plan.
func (r *Responder) planFor(j job, t Target) string {
	if plans[j.action] {
		return j.action
	}
	switch j.action {
	case ActionFullRollback:
		return string(rollback.ActionFull)
	case ActionRestartThenRollback:
		r.mu.Lock()
		st := r.targets[t.Name]
		recent := st != nil && !st.restarted.IsZero() && r.opts.Now().Sub(st.restarted) < t.RestartMemory
		r.mu.Unlock()
		if !recent {
			return string(rollback.ActionPoolRecovery)
		}
	}
	if t.Rollback.Strategy != "" {
		return string(t.Rollback.Strategy)
	}
	return string(rollback.ActionQuick)
}

// handle runs one job to its end and returns a one-line result.
func (r *Responder) handle(ctx context.Context, j job, t Target) string {
	if !r.opts.IsLeader() {
		return "not leader" // followers keep their windows warm; only the leader pages and acts
	}
	if j.action == ActionPage {
		r.page(j, t)
		return "paged"
	}
	info, err := r.inspect(ctx, t)
	if err != nil {
		r.log.Error("cannot read target before acting", zap.String("target", t.Name), zap.Error(err))
		r.cannot(j, t, revisionInfo{}, "read-failed", err.Error())
		return "cannot roll back: " + err.Error()
	}
	plan := r.planFor(j, t)
	id := notify.IncidentID(r.notifyTarget(t), info.revision)
	base := r.event(j, t, info, id)
	v := r.check(j, t, info)
	switch v.Reason {
	case guard.DryRun:
		// Dry-run (staging) says "would roll back" at info severity and
		// nothing else: a critical "detected" page would wake on-call for
		// a rehearsal.
		return r.dryRun(ctx, j, t, info, id, plan)
	case guard.NotLeader:
		return "not leader" // leadership lost since the check above
	}
	detected := base
	detected.Kind = notify.KindDetected
	detected.Summary = fmt.Sprintf("%s: %s (revision %s, %s)", t.Name, j.reason, info.revision, info.image)
	r.queue.Enqueue(detected)
	if !v.Allowed() {
		r.cannot(j, t, info, string(v.Reason), v.Detail)
		r.m.rollbacks.WithLabelValues(t.Name, plan, "blocked").Inc()
		return v.String()
	}
	if !j.resume {
		r.guard.Record(t.Name, info.revision, r.opts.Now())
	}
	if plan == string(rollback.ActionPoolRecovery) {
		r.mu.Lock()
		if st := r.targets[t.Name]; st != nil {
			st.restarted = r.opts.Now()
		}
		r.mu.Unlock()
	}
	runCtx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	obs := r.observe(t.Name, base)
	defer obs.done()
	res, err := r.exec.Run(runCtx, rollback.Request{Target: t.Rollback, Action: rollback.Action(plan), Reason: j.reason})
	switch {
	case err == nil:
		r.m.rollbacks.WithLabelValues(t.Name, plan, "succeeded").Inc()
		return fmt.Sprintf("%s succeeded (run %s)", plan, res.RunID)
	case errors.Is(err, rollback.ErrAlreadyRolledBack):
		r.m.rollbacks.WithLabelValues(t.Name, plan, "noop").Inc()
		return "already rolled back for revision " + info.revision
	default:
		var refused *rollback.RefusedError
		if errors.As(err, &refused) {
			r.m.rollbacks.WithLabelValues(t.Name, plan, "refused").Inc()
			r.cannot(j, t, info, "refused", err.Error())
			return "cannot roll back: " + err.Error()
		}
		r.m.rollbacks.WithLabelValues(t.Name, plan, "failed").Inc()
		return plan + " failed: " + err.Error()
	}
}

// dryRun runs the plan without writes and reports what would happen.
func (r *Responder) dryRun(ctx context.Context, j job, t Target, info revisionInfo, id, plan string) string {
	runCtx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout*3)
	defer cancel()
	res, err := r.exec.Run(runCtx, rollback.Request{Target: t.Rollback, Action: rollback.Action(plan), Reason: j.reason, DryRun: true})
	e := r.event(j, t, info, id)
	e.Kind = notify.KindWouldRollback
	e.Severity = notify.SeverityInfo
	var steps []string
	if res != nil {
		for _, s := range res.Steps {
			steps = append(steps, s.Name)
		}
	}
	e.Details[notify.DetailPlan] = steps
	e.Details[notify.DetailStrategy] = plan
	if err != nil {
		e.Details[notify.DetailReason] = err.Error()
		e.Summary = fmt.Sprintf("dry-run: %s: would roll back with %s, but: %v", t.Name, plan, err)
	} else {
		e.Summary = fmt.Sprintf("dry-run: %s: would roll back %s with %s (%d steps)", t.Name, info.image, plan, len(steps))
	}
	if r.opts.WouldRollback {
		r.queue.Enqueue(e)
	}
	r.m.rollbacks.WithLabelValues(t.Name, plan, "dry-run").Inc()
	r.log.Info("dry-run: would roll back", zap.String("target", t.Name), zap.String("plan", plan), zap.Strings("steps", steps), zap.Error(err))
	return "dry-run: would run " + plan
}

// page sends a page-only action: a human decides.
func (r *Responder) page(j job, t Target) {
	e := r.event(j, t, revisionInfo{}, "")
	e.Kind = notify.KindDetected
	e.Summary = fmt.Sprintf("%s: %s (page only: a human decides)", t.Name, j.reason)
	r.queue.Enqueue(e)
}

// cannot pages "cannot roll back" once per episode.
func (r *Responder) cannot(j job, t Target, info revisionInfo, reason, detail string) {
	key := t.Name + "|" + info.revision + "|" + reason
	now := r.opts.Now()
	r.mu.Lock()
	last, seen := r.pageOnce[key]
	// An episode ends after a quiet day; prune so the map stays bounded.
	for k, at := range r.pageOnce {
		if now.Sub(at) > 24*time.Hour {
			delete(r.pageOnce, k)
		}
	}
	if !seen || now.Sub(last) > 24*time.Hour {
		r.pageOnce[key] = now
	}
	r.mu.Unlock()
	if seen && now.Sub(last) <= 24*time.Hour {
		r.log.Info("cannot roll back (already paged)", zap.String("target", t.Name), zap.String("reason", reason))
		return
	}
	e := r.event(j, t, info, notify.IncidentID(r.notifyTarget(t), info.revision))
	e.Kind = notify.KindCannotRollback
	e.Summary = fmt.Sprintf("cannot roll back %s: %s: %s", t.Name, reason, detail)
	e.Details[notify.DetailReason] = reason + ": " + detail
	r.queue.Enqueue(e)
	r.log.Warn("cannot roll back", zap.String("target", t.Name), zap.String("reason", reason), zap.String("detail", detail))
}

func (r *Responder) notifyTarget(t Target) notify.Target {
	return notify.Target{Cluster: t.Cluster, Namespace: t.Rollback.Namespace, Deployment: t.Rollback.Deployment}
}

// event builds the common part of every event of a job.
func (r *Responder) event(j job, t Target, info revisionInfo, id string) notify.Event {
	sev := j.severity
	if !sev.Valid() {
		sev = t.Severity
	}
	if !sev.Valid() {
		sev = notify.SeverityCritical
	}
	e := notify.Event{
		Time: r.opts.Now(), Target: r.notifyTarget(t), IncidentID: id, Severity: sev, Security: j.security,
		Details: map[string]any{notify.DetailReason: j.reason},
	}
	if info.image != "" {
		e.Details[notify.DetailBadVersion] = info.image
	}
	if !info.deployedAt.IsZero() {
		e.Details[notify.DetailDeployedAt] = info.deployedAt
	}
	if d := j.decision; d != nil {
		e.Trigger = d.Trigger
		e.Details[notify.DetailQuery] = d.Query
		e.Details[notify.DetailThreshold] = d.Threshold
		e.Details[notify.DetailOp] = string(d.Op)
		e.Details[notify.DetailBreachStartedAt] = d.FirstBreach
		samples := make([]notify.Sample, 0, len(d.Samples))
		for _, s := range d.Samples {
			samples = append(samples, notify.Sample{Time: s.Time, Value: s.Value})
		}
		e.Details[notify.DetailSamples] = samples
	}
	if r.opts.StatusURL != "" && id != "" {
		e.Links = []notify.Link{{Href: r.opts.StatusURL + "/api/v1/incidents/" + id, Text: "rollguard incident"}}
	}
	return e
}

func describeValue(d trigger.Decision) string {
	if d.Error != "" {
		return "error " + d.Error
	}
	return fmt.Sprintf("%.4g", d.Value)
}
