// Package response owns what happens after a trigger fires (or a human or
// an Alertmanager alert asks): it names the bad revision, passes the
// interlocks, runs the executor's plan, and tells humans at each
// milestone. It is the "guard → action → executor → notifier" part of the
// data flow (docs/design.md).
//
// The evaluator must never wait on a rollback, and a rollback must never
// wait on a pager: Fire and Blind only queue, one worker per target runs
// plans (so two decisions for one Deployment never race), and every
// notification goes through the non-blocking notify queue.
//
// Leadership. Only a leader acts; its authority is a term, one call of
// Lead. A term begins by seeding the interlocks from the journals,
// resuming what the previous leader left unfinished, and acting on every
// trigger firing (and paging every trigger blind) now: those edges may
// have passed while this replica was a follower. It ends when Lead's
// context does (shutdown, lost lease): running plans are drained, stopping
// at their next step boundary with their journal left for the next leader,
// and Lead returns only then (bounded by DrainTimeout, after which the
// step is cancelled and journaled as interrupted), so the lease is
// released after, never before, the work it protects.
package response

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// Actions a trigger or a request asks for: pkg/rollback's words, which
// also map each to its plan.
const (
	ActionRollback            = plan.RequestRollback
	ActionRestartThenRollback = plan.RequestRestartThenRollback
	ActionFullRollback        = plan.RequestFullRollback
	ActionPage                = plan.RequestPage
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
	LastRun(ctx context.Context, ns, name string) (*rollback.Journal, error)
}

// Triggers is what a new leader asks the evaluator, and what a pool
// recovery rearms; *evaluator.Evaluator implements it.
type Triggers interface {
	Firing() []trigger.Decision
	Blinded() []trigger.Blind
	Rearm(target, trigger string, at time.Time)
}

// ValidAction reports whether a request may ask for action: one of the
// config's actions or a plan name.
func ValidAction(action string) bool {
	switch action {
	case ActionRollback, ActionRestartThenRollback, ActionFullRollback, ActionPage:
		return true
	}
	return plan.Known(action)
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
	Now func() time.Time
	// RunTimeout bounds one plan run (default 30m).
	RunTimeout time.Duration
	// ReadTimeout bounds the reads before a plan (default 10s).
	ReadTimeout time.Duration
	// DrainTimeout is how long the end of a term waits for a running step
	// to finish before cancelling it (default 20s).
	DrainTimeout time.Duration
	// WouldRollback: send dry-run "would roll back" notifications.
	WouldRollback bool
	// StatusURL links pages to the incident API.
	StatusURL string
	// Integrity runs the runbook's data integrity check after a successful
	// rollback (nil: not checked; the incident record says so).
	Integrity func(ctx context.Context, namespace, deployment string) (*notify.DataIntegrity, error)
	// Triggers, if set, tells a new leader what fires now and is rearmed
	// after a pool recovery.
	Triggers Triggers
	// Alerts, if set, keeps the Alertmanager alerts taken up across
	// leaders (one fingerprint is one request until it resolves).
	Alerts AlertLog
	// AlertMemory is how long an alert taken up is remembered when it
	// never resolves (default 7 days).
	AlertMemory time.Duration
}

// Responder turns decisions into actions.
type Responder struct {
	exec  Executor
	kube  Deployments
	queue Queue
	guard *guard.Guard
	opts  Options
	log   *zap.Logger
	m     *metrics
	jobs  chan job
	// open counts jobs queued and not yet done (or dropped).
	open atomic.Int64

	mu      sync.Mutex
	targets map[string]*targetState
	term    *term // the current leadership term; nil while following
	// pageOnce remembers "cannot roll back" pages per episode (target,
	// revision, reason), so a trigger that stays firing pages once.
	pageOnce map[string]time.Time
	// episodes remembers the firing episodes (target, trigger, first
	// breach) a leader took up, so a replay on a new term acts on each
	// once; blindPaged likewise for blind episodes.
	episodes   map[string]time.Time
	blindPaged map[string]time.Time

	alerts alertState
}

// term is one leadership term's authority to act.
type term struct {
	ctx   context.Context // cancelled DrainTimeout after the term ends
	drain chan struct{}   // closed when the term ends
	wg    sync.WaitGroup  // its running plans
	// alertsRead is closed once the term has read the alerts taken up:
	// before, a repeat cannot be told from a new alert.
	alertsRead chan struct{}
	// caughtUp is closed once the term has queued what was pending at its
	// start: resumed runs, alerts taken up, and the triggers already
	// firing or blind.
	caughtUp chan struct{}
}

type targetState struct {
	cfg        Target
	running    string // action in flight
	lastResult string
	restarted  time.Time // last pool recovery that started writing
	// parked is a decision that arrived while the term's resume of this
	// target was looking for unfinished work: it runs if there was none,
	// and is the resumed run's own incident if there was.
	parked *job
}

type job struct {
	target   string
	action   string
	reason   string
	manual   bool
	resume   bool // finish the run the journal left unfinished
	force    bool // a human passing the stateful interlocks (--force)
	security bool
	severity notify.Severity
	decision *trigger.Decision
	episode  string // the firing episode a decision belongs to
	// by is who asked, carried by every event of the job.
	by notify.Requester
	// alert is the Alertmanager alert that asked, if one did.
	alert *AlertRef
}

// New returns a Responder; call Run to dispatch its jobs and Lead for each
// leadership term.
func New(exec Executor, kube Deployments, queue Queue, g *guard.Guard, opts Options, logger *zap.Logger, reg prometheus.Registerer) *Responder {
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.RunTimeout <= 0 {
		opts.RunTimeout = 30 * time.Minute
	}
	if opts.ReadTimeout <= 0 {
		opts.ReadTimeout = 10 * time.Second
	}
	if opts.DrainTimeout <= 0 {
		opts.DrainTimeout = 20 * time.Second
	}
	if opts.AlertMemory <= 0 {
		opts.AlertMemory = 7 * 24 * time.Hour
	}
	return &Responder{
		exec: exec, kube: kube, queue: queue, guard: g, opts: opts, log: logger,
		m:          newMetrics(reg),
		jobs:       make(chan job, 1024),
		targets:    map[string]*targetState{},
		pageOnce:   map[string]time.Time{},
		episodes:   map[string]time.Time{},
		blindPaged: map[string]time.Time{},
	}
}

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

// Leading reports whether a leadership term is in progress.
func (r *Responder) Leading() bool {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.term != nil
}

// caughtUp reports whether a term is running and has queued what was
// pending at its start.
func (r *Responder) caughtUp() bool {
	r.mu.Lock()
	tm := r.term
	r.mu.Unlock()
	if tm == nil {
		return false
	}
	select {
	case <-tm.caughtUp:
		return true
	default:
		return false
	}
}

// waitAlertsRead waits, for at most ReadTimeout (the bound of the read
// itself) or until ctx is done, until the current term has read the alerts
// taken up. It reports false outside a term or when they are not read by
// then.
func (r *Responder) waitAlertsRead(ctx context.Context) bool {
	r.mu.Lock()
	tm := r.term
	r.mu.Unlock()
	if tm == nil {
		return false
	}
	timer := time.NewTimer(r.opts.ReadTimeout)
	defer timer.Stop()
	select {
	case <-tm.alertsRead:
		return true
	case <-tm.drain:
	case <-ctx.Done():
	case <-timer.C:
	}
	return false
}

// Lead runs one leadership term until ctx is done (see the package
// comment). Call it from the leader election's callback, or once with the
// process's context where there is no election.
func (r *Responder) Lead(ctx context.Context) {
	hard, cancel := context.WithCancel(context.WithoutCancel(ctx))
	defer cancel()
	tm := &term{ctx: hard, drain: make(chan struct{}), alertsRead: make(chan struct{}), caughtUp: make(chan struct{})}
	r.mu.Lock()
	r.term = tm
	r.mu.Unlock()
	r.log.Info("leadership term started")

	r.SeedHistory(ctx)
	r.Resume(ctx)
	r.takeUpAlerts(ctx)
	close(tm.alertsRead)
	if tr := r.opts.Triggers; tr != nil {
		for _, d := range tr.Firing() {
			r.Fire(d)
		}
		for _, b := range tr.Blinded() {
			r.Blind(b)
		}
	}
	close(tm.caughtUp)

	<-ctx.Done()
	r.mu.Lock()
	r.term = nil // no plan starts in this term from now on
	r.mu.Unlock()
	r.dropAlerts()
	close(tm.drain)
	done := make(chan struct{})
	go func() { tm.wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(r.opts.DrainTimeout):
		r.log.Warn("running step did not finish within the drain timeout; cancelling it", zap.Duration("drainTimeout", r.opts.DrainTimeout))
		cancel()
		<-done
	}
	r.log.Info("leadership term ended")
}

// Fire queues a firing trigger's action. It never blocks. A firing episode
// already taken up by a leader of this process is not queued again.
func (r *Responder) Fire(d trigger.Decision) {
	key := d.Target + "|" + d.Trigger + "|" + d.FirstBreach.UTC().Format(time.RFC3339Nano)
	r.mu.Lock()
	_, seen := r.episodes[key]
	r.mu.Unlock()
	if seen {
		r.log.Debug("firing episode already acted on", zap.String("target", d.Target), zap.String("trigger", d.Trigger))
		return
	}
	j := job{target: d.Target, action: d.Action, reason: fmt.Sprintf("trigger %s: %s %s %g", d.Trigger, describeValue(d), d.Op, d.Threshold),
		security: d.Security, severity: d.Severity, decision: &d, episode: key}
	j.by = notify.Requester{Kind: notify.RequestedByTrigger, Name: d.Trigger, Reason: j.reason, At: d.FiredAt}
	if !r.enqueue(j) {
		r.log.Error("decision dropped: responder queue full", zap.String("target", d.Target), zap.String("trigger", d.Trigger))
	}
}

// enqueue queues j without blocking; false when the queue is full.
func (r *Responder) enqueue(j job) bool {
	r.open.Add(1)
	select {
	case r.jobs <- j:
		return true
	default:
		r.open.Add(-1)
		return false
	}
}

// idle reports whether every queued job is done.
func (r *Responder) idle() bool { return r.open.Load() == 0 }

// Blind pages that a trigger has been without data for blindAfter, once
// per episode, and only from a leader: every replica evaluates, one
// speaks.
func (r *Responder) Blind(b trigger.Blind) {
	key := b.Target + "|" + b.Trigger + "|" + b.Since.UTC().Format(time.RFC3339Nano)
	if b.Resolved {
		r.unblind(b, key)
		return
	}
	r.mu.Lock()
	st, ok := r.targets[b.Target]
	_, paged := r.blindPaged[key]
	leading := r.term != nil
	if ok && leading && !paged {
		r.blindPaged[key] = r.opts.Now()
		prune(r.blindPaged, r.opts.Now())
	}
	r.mu.Unlock()
	if !ok || !leading || paged {
		return
	}
	r.queue.Enqueue(notify.Event{
		Kind: notify.KindBlind, Time: r.opts.Now(), Target: r.notifyTarget(st.cfg), Trigger: b.Trigger,
		Severity: notify.SeverityWarning,
		Summary:  fmt.Sprintf("rollguard is blind on %s/%s: no data since %s", b.Target, b.Trigger, b.Since.UTC().Format(time.RFC3339)),
		Details:  notify.Details{Error: b.LastError, Since: b.Since},
	})
}

// unblind closes the blind page of an episode this process paged: the
// trigger has data again.
func (r *Responder) unblind(b trigger.Blind, key string) {
	r.mu.Lock()
	st, ok := r.targets[b.Target]
	_, paged := r.blindPaged[key]
	leading := r.term != nil
	if ok && leading && paged {
		delete(r.blindPaged, key)
	}
	r.mu.Unlock()
	if !ok || !leading || !paged {
		return
	}
	r.queue.Enqueue(notify.Event{
		Kind: notify.KindBlindResolved, Time: r.opts.Now(), Target: r.notifyTarget(st.cfg), Trigger: b.Trigger,
		Severity: notify.SeverityWarning,
		Summary: fmt.Sprintf("rollguard sees again on %s/%s: data since %s (blind since %s)", b.Target, b.Trigger,
			b.Until.UTC().Format(time.RFC3339), b.Since.UTC().Format(time.RFC3339)),
		Details: notify.Details{Since: b.Since, Until: b.Until},
	})
}

// Request asks for an action from a human through the API (see Ask).
func (r *Responder) Request(ctx context.Context, target, action, reason string, security bool) (string, error) {
	return r.Ask(ctx, Ask{Target: target, Action: action, Reason: reason, Security: security,
		By: notify.Requester{Kind: notify.RequestedByAPI}})
}

// request asks for j on its target; the interlocks are checked now so
// the caller gets the verdict, and the plan runs in the background.
func (r *Responder) request(ctx context.Context, j job) (string, error) {
	target, action := j.target, j.action
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
	j.action, j.manual, j.severity = action, true, t.Severity
	if !r.Leading() {
		return "", fmt.Errorf("target %q: %w", target, ErrNotLeader)
	}
	if action == ActionPage {
		r.page(j, t)
		r.alertDone(j, Outcome{Result: ResultPaged, Detail: "paged"})
		return "paged", nil
	}
	info, err := r.inspect(ctx, t)
	if err != nil {
		return "", fmt.Errorf("target %q: %w: %w", target, ErrUnavailable, err)
	}
	if a := j.alert; a != nil && !info.deployedAt.IsZero() && a.StartsAt.Before(info.deployedAt) {
		detail := r.alertPredates(j, t, info)
		return detail, fmt.Errorf("%s: %w", detail, ErrAlertPredatesRevision)
	}
	v := r.check(j, t, info, r.Leading(), time.Time{})
	if v.Reason == guard.NotLeader {
		return "", fmt.Errorf("target %q: %w", target, ErrNotLeader)
	}
	if !v.Allowed() {
		return v.String(), fmt.Errorf("%s: %w", v.String(), ErrRefusedByInterlock)
	}
	if !r.enqueue(j) {
		return "", fmt.Errorf("target %q: %w: responder queue full", target, ErrUnavailable)
	}
	return "accepted: " + string(r.planFor(j, t)) + " plan queued", nil
}

// SeedHistory feeds the interlocks every run the journals remember (each
// Deployment's last run and its history), so a restart or a leader change
// keeps the cooldown, the budget and one rollback per revision.
func (r *Responder) SeedHistory(ctx context.Context) {
	for _, t := range r.targetList() {
		rctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
		j, err := r.exec.LastRun(rctx, t.Rollback.Namespace, t.Rollback.Deployment)
		cancel()
		if err != nil {
			r.log.Warn("cannot read the journal to seed the interlocks", zap.String("target", t.Name), zap.Error(err))
			continue
		}
		if j == nil || j.Started.IsZero() {
			continue
		}
		for _, run := range j.Runs() {
			r.guard.Record(t.Name, run.BadHash, run.Started, run.Action != plan.PoolRecovery)
		}
		r.log.Info("interlocks seeded from the journal", zap.String("target", t.Name), zap.String("revision", j.Bad.Hash),
			zap.Time("started", j.Started), zap.String("state", string(j.State)), zap.Int("runs", len(j.History)+1))
	}
}

// Resume queues, for every target, the continuation of a run the journal
// left unfinished (the executor finds none, or closes one too old or
// superseded). Completed destructive steps are never repeated, and the
// continuation passes the interlocks again.
func (r *Responder) Resume(ctx context.Context) {
	for _, t := range r.targetList() {
		if t.DryRun {
			continue
		}
		const why = "resume after a restart or a leader change"
		if !r.enqueue(job{target: t.Name, reason: why, resume: true, manual: true, severity: t.Severity,
			by: notify.Requester{Kind: notify.RequestedByResume, Reason: why, At: r.opts.Now()}}) {
			r.log.Error("resume dropped: responder queue full", zap.String("target", t.Name))
		}
	}
}

// Execute runs a human's request in the caller's goroutine, through the
// same interlocks and plan as the daemon, and returns the outcome (the CLI's
// `rollback --local`). force passes the stateful interlocks (see
// guard.Request.Force) and is logged.
func (r *Responder) Execute(ctx context.Context, target, action, reason string, force bool) (Outcome, error) {
	return r.ExecuteAs(ctx, notify.Requester{Kind: notify.RequestedByCLI}, target, action, reason, force)
}

// ExecuteAs is Execute on behalf of by (the human at the terminal).
func (r *Responder) ExecuteAs(ctx context.Context, by notify.Requester, target, action, reason string, force bool) (Outcome, error) {
	t, ok := r.target(target)
	if !ok {
		return Outcome{}, fmt.Errorf("target %q: %w", target, ErrUnknownTarget)
	}
	if action == "" {
		action = ActionRollback
	}
	if !ValidAction(action) {
		return Outcome{}, fmt.Errorf("action %q: %w", action, ErrUnknownAction)
	}
	if force {
		r.log.Warn("interlocks overridden by a human (--force)", zap.String("target", target), zap.String("action", action), zap.String("reason", reason))
	}
	// A human at a terminal is the leader of this one action; the journal
	// still fences it against a running daemon.
	by.Reason, by.At = reason, r.opts.Now()
	return r.handle(ctx, nil, job{target: target, action: action, reason: reason, manual: true, force: force, severity: t.Severity, by: by}, t), nil
}

// ErrRefusedByInterlock wraps a guard verdict returned to a requester.
var ErrRefusedByInterlock = errors.New("refused by an interlock")

// Run dispatches queued jobs to per-target workers of the current term
// until ctx is done. A follower drops what it is handed: a decision that
// still fires is acted on when this replica becomes leader.
func (r *Responder) Run(ctx context.Context) {
	for {
		select {
		case <-ctx.Done():
			return
		case j := <-r.jobs:
			r.dispatch(j)
		}
	}
}

func (r *Responder) dispatch(j job) {
	started := false
	defer func() {
		if !started {
			r.open.Add(-1)
		}
	}()
	r.mu.Lock()
	st := r.targets[j.target]
	tm := r.term
	switch {
	case st == nil:
		r.mu.Unlock()
		r.log.Warn("decision for a target no longer configured", zap.String("target", j.target))
		r.alertDone(j, Outcome{Result: ResultNothing, Detail: "target no longer configured"})
		return
	case tm == nil:
		r.mu.Unlock()
		r.log.Debug("not leader: decision left to the leader", zap.String("target", j.target), zap.String("action", j.action))
		return
	case st.running == "resume" && !j.resume:
		if st.parked != nil {
			r.open.Add(-1) // the newer decision replaces it
		}
		st.parked = &j
		started = true // done when the resume is
		r.mu.Unlock()
		return
	case st.running != "":
		// One plan per Deployment at a time. A second decision while a
		// plan runs is the same incident (or a human who will see the
		// running plan in the status API): log, do not queue. st is read
		// under mu only: the plan's goroutine clears running when it ends.
		running := st.running
		r.mu.Unlock()
		r.log.Info("plan already running; decision not queued", zap.String("target", j.target),
			zap.String("running", running), zap.String("action", j.action))
		r.alertDone(j, Outcome{Result: ResultNothing, Detail: "taken up by the plan already running (" + running + ")"})
		return
	}
	if j.episode != "" {
		r.episodes[j.episode] = r.opts.Now()
		prune(r.episodes, r.opts.Now())
	}
	st.running = j.action
	if j.resume {
		st.running = "resume"
	}
	cfg := st.cfg
	// Added under mu, before Lead (which clears r.term under mu) waits.
	tm.wg.Add(1)
	started = true
	r.mu.Unlock()
	go func() {
		defer tm.wg.Done()
		defer r.open.Add(-1)
		out := r.handle(tm.ctx, tm.drain, j, cfg)
		if out.Result != ResultHandedOver {
			r.alertDone(j, out)
		}
		var parked *job
		r.mu.Lock()
		if st := r.targets[j.target]; st != nil {
			st.running = ""
			if !(j.resume && out.Result == ResultNothing) {
				st.lastResult = out.Detail
			}
			parked, st.parked = st.parked, nil
		}
		r.mu.Unlock()
		if parked != nil {
			if out.Result == ResultNothing {
				r.dispatch(*parked)
				return
			}
			r.log.Info("decision taken up by the resumed plan", zap.String("target", parked.target), zap.String("action", parked.action))
			r.alertDone(*parked, out)
			if parked.episode != "" {
				r.mu.Lock()
				r.episodes[parked.episode] = r.opts.Now()
				r.mu.Unlock()
			}
			r.open.Add(-1)
		}
	}()
}

// prune forgets episodes older than a day, which bounds the maps by the
// episodes of a day.
func prune(m map[string]time.Time, now time.Time) {
	for k, at := range m {
		if now.Sub(at) > 24*time.Hour {
			delete(m, k)
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

func (r *Responder) targetList() []Target {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([]Target, 0, len(r.targets))
	for _, st := range r.targets {
		out = append(out, st.cfg)
	}
	return out
}

// revisionInfo is what the interlocks need from the cluster.
type revisionInfo struct {
	revision   string // the bad revision's pod-template-hash (or number)
	image      string
	deployedAt time.Time
	frozen     bool
	freezeNote string
}

// revisionOf names a revision for the interlocks and the incident: its
// pod-template-hash, or its number while the controller has not created
// its ReplicaSet yet.
func revisionOf(rev rollback.Revision) revisionInfo {
	info := revisionInfo{revision: rev.Hash, image: images(rev.Images), deployedAt: rev.DeployedAt}
	if info.revision == "" && rev.Revision != 0 {
		info.revision = fmt.Sprintf("rev%d", rev.Revision)
	}
	return info
}

// inspect reads the Deployment and its current revision (the bad one),
// when it was deployed, and the freeze annotation.
func (r *Responder) inspect(ctx context.Context, t Target) (revisionInfo, error) {
	ctx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout)
	defer cancel()
	ns, name := t.Rollback.Namespace, t.Rollback.Deployment
	dep, err := r.kube.Get(ctx, ns, name)
	if err != nil {
		return revisionInfo{}, err
	}
	rss, err := r.kube.ReplicaSets(ctx, dep)
	if err != nil {
		return revisionInfo{}, err
	}
	info := revisionOf(rollback.CurrentRevision(dep, rss))
	if info.revision == "" {
		// The controller has not created the ReplicaSet yet; the
		// Deployment's revision keeps one-per-revision holding.
		n, _ := kube.Revision(dep)
		info.revision = fmt.Sprintf("rev%d", n)
	}
	info.frozen, info.freezeNote = kube.Frozen(dep), dep.Annotations[kube.FreezeAnnotation]
	return info, nil
}

// check applies the interlocks. own is the start of the run a resume
// continues (zero for a new action).
func (r *Responder) check(j job, t Target, info revisionInfo, leader bool, own time.Time) guard.Verdict {
	return r.guard.Check(guard.Request{
		Target: t.Name, Revision: info.revision, Action: j.action, DeployedAt: info.deployedAt,
		Frozen: info.frozen, FrozenInConfig: t.Frozen, FreezeNote: info.freezeNote, DryRun: t.DryRun, Leader: leader, Manual: j.manual,
		Own: own, Force: j.force,
	}, r.opts.Now())
}

// planFor maps the requested action to an executor plan
// (plan.For); a restart-then-rollback rolls back only when the
// target was restarted within its restart memory.
func (r *Responder) planFor(j job, t Target) plan.Name {
	var restarted bool
	if j.action == ActionRestartThenRollback {
		r.mu.Lock()
		st := r.targets[t.Name]
		restarted = st != nil && !st.restarted.IsZero() && r.opts.Now().Sub(st.restarted) < t.RestartMemory
		r.mu.Unlock()
	}
	p, _ := plan.For(j.action, t.Rollback.Strategy, restarted)
	return p
}

// blockedError is an interlock's verdict on a resumed run.
type blockedError struct{ v guard.Verdict }

func (e *blockedError) Error() string { return e.v.String() }

// handle runs one job to its end. drain is the term's (nil for a human's
// local action).
func (r *Responder) handle(ctx context.Context, drain <-chan struct{}, j job, t Target) Outcome {
	if j.action == ActionPage {
		r.page(j, t)
		return Outcome{Result: ResultPaged, Detail: "paged"}
	}
	if j.resume {
		return r.resume(ctx, drain, j, t)
	}
	if !t.DryRun {
		// A half done plan is finished before another starts, under its
		// own incident: the new request is that incident too.
		if out := r.resume(ctx, drain, j, t); out.Result != ResultNothing {
			return out
		}
	}
	info, err := r.inspect(ctx, t)
	if err != nil {
		r.log.Error("cannot read target before acting", zap.String("target", t.Name), zap.Error(err))
		r.cannot(j, t, revisionInfo{}, "read-failed", err.Error())
		return Outcome{Result: ResultFailed, Detail: "cannot roll back: " + err.Error()}
	}
	if a := j.alert; a != nil && !info.deployedAt.IsZero() && a.StartsAt.Before(info.deployedAt) {
		// Deployed after the alert began (between the request and its
		// run): the alert is about an earlier revision.
		return Outcome{Result: ResultBlocked, Detail: r.alertPredates(j, t, info)}
	}
	if d := j.decision; d != nil && !info.deployedAt.IsZero() && d.FirstBreach.Before(info.deployedAt) {
		// The breach began under an earlier revision: it is no evidence
		// against this one, which must breach a whole window on its own.
		r.log.Info("evidence predates the current revision: not acting on it", zap.String("target", t.Name),
			zap.String("trigger", d.Trigger), zap.Time("firstBreach", d.FirstBreach), zap.Time("deployedAt", info.deployedAt),
			zap.String("revision", info.revision))
		if r.opts.Triggers != nil {
			r.opts.Triggers.Rearm(d.Target, d.Trigger, info.deployedAt)
		}
		return Outcome{Result: ResultNothing, Detail: fmt.Sprintf("trigger %s: breach since %s predates revision %s (deployed %s): re-judged on its own",
			d.Trigger, d.FirstBreach.UTC().Format(time.RFC3339), info.revision, info.deployedAt.UTC().Format(time.RFC3339))}
	}
	p := r.planFor(j, t)
	id := notify.IncidentID(r.notifyTarget(t), info.revision)
	v := r.check(j, t, info, true, time.Time{})
	switch v.Reason {
	case guard.DryRun:
		// Dry-run (staging) says "would roll back" at info severity and
		// nothing else: a critical "detected" page would wake on-call for
		// a rehearsal.
		return r.dryRun(ctx, j, t, info, id, p)
	case guard.NotLeader:
		return Outcome{Result: ResultNotLeader, Plan: p, Detail: "not leader"}
	}
	detected := r.event(j, t, info, id)
	detected.Kind = notify.KindDetected
	detected.Summary = fmt.Sprintf("%s: %s (revision %s, %s)", t.Name, j.reason, info.revision, info.image)
	r.queue.Enqueue(detected)
	if !v.Allowed() {
		r.cannot(j, t, info, string(v.Reason), v.Detail)
		return r.count(t, Outcome{Result: ResultBlocked, Plan: p, Detail: v.String()})
	}
	runCtx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	obs := r.observe(j, t, info, id)
	res, err := r.exec.Run(runCtx, rollback.Request{Target: t.Rollback, Action: p, Reason: j.reason, Incident: id,
		Observer: obs, Drain: drain, MaxResumeAge: r.guard.Options().MaxResumeAge})
	return r.outcome(j, t, info, p, res, err)
}

// resume continues the run the journal left unfinished, if any; its
// identity (incident, bad revision) is the journal's, and it passes the
// interlocks again, its own record aside.
func (r *Responder) resume(ctx context.Context, drain <-chan struct{}, j job, t Target) Outcome {
	var info revisionInfo
	admit := func(ri rollback.RunInfo) error {
		info = revisionOf(ri.Bad)
		live, err := r.inspect(ctx, t)
		if err != nil {
			return err
		}
		// Freeze is read live: a human who froze the Deployment while the
		// run was down wins.
		info.frozen, info.freezeNote = live.frozen, live.freezeNote
		if v := r.check(j, t, info, true, ri.Started); !v.Allowed() {
			return &blockedError{v}
		}
		r.log.Info("resuming an in-flight plan", zap.String("target", t.Name), zap.String("plan", string(ri.Action)), zap.String("run", ri.RunID))
		return nil
	}
	runCtx, cancel := context.WithTimeout(ctx, r.opts.RunTimeout)
	defer cancel()
	obs := r.observe(j, t, revisionInfo{}, "")
	res, err := r.exec.Run(runCtx, rollback.Request{Target: t.Rollback, Reason: j.reason, ResumeOnly: true, Observer: obs,
		Drain: drain, MaxResumeAge: r.guard.Options().MaxResumeAge, Admit: admit})
	var p plan.Name
	if res != nil {
		p = res.Action
	}
	var blocked *blockedError
	switch {
	case errors.Is(err, rollback.ErrNothingToResume):
		return Outcome{Result: ResultNothing, Detail: "nothing to resume"}
	case errors.As(err, &blocked):
		if blocked.v.Reason == guard.DryRun {
			return Outcome{Result: ResultDryRun, Detail: "dry-run: unfinished run left alone"}
		}
		r.cannot(j, t, info, string(blocked.v.Reason), "unfinished run not resumed: "+blocked.v.Detail)
		return r.count(t, Outcome{Result: ResultBlocked, Plan: p, Detail: blocked.v.String()})
	}
	var refused *rollback.RefusedError
	if res == nil && err != nil && !errors.As(err, &refused) {
		// No run found to continue: the journal or the Deployment could
		// not be read (or the Deployment is gone). The next term, or the
		// next firing, looks again.
		r.log.Warn("cannot look for an unfinished plan", zap.String("target", t.Name), zap.Error(err))
		return Outcome{Result: ResultNothing, Detail: "nothing resumed: " + err.Error()}
	}
	if info.revision == "" {
		// Refused before Admit (too old, config missing): name the
		// incident by what runs now.
		info, _ = r.inspect(ctx, t)
	}
	return r.outcome(j, t, info, p, res, err)
}

// outcome maps a run's end to the responder's Outcome, pages a refusal,
// and counts it.
func (r *Responder) outcome(j job, t Target, info revisionInfo, p plan.Name, res *rollback.Result, err error) Outcome {
	var refused *rollback.RefusedError
	switch {
	case err == nil:
		if res.Action == plan.PoolRecovery && j.decision != nil && r.opts.Triggers != nil {
			// The restart may have cured the pool: the trigger must hold a
			// whole window from now to fire again, and then escalates.
			r.opts.Triggers.Rearm(j.decision.Target, j.decision.Trigger, r.opts.Now())
		}
		if res.Unverified != "" {
			return r.count(t, Outcome{Result: ResultUnverified, Plan: res.Action, RunID: res.RunID,
				Detail: fmt.Sprintf("%s done, unverified (run %s): %s", res.Action, res.RunID, res.Unverified)})
		}
		return r.count(t, Outcome{Result: ResultSucceeded, Plan: res.Action, RunID: res.RunID,
			Detail: fmt.Sprintf("%s succeeded (run %s)", res.Action, res.RunID)})
	case errors.Is(err, rollback.ErrHandedOver):
		return Outcome{Result: ResultHandedOver, Plan: p, Detail: fmt.Sprintf("%s handed over to the next leader: %v", p, err)}
	case errors.Is(err, rollback.ErrJournalConflict):
		// Another rollguard (a leader whose lease this one took over, or
		// the reverse) owns the journal: its run, its report.
		r.log.Warn("journal written by another rollguard: leaving the run to it", zap.String("target", t.Name), zap.Error(err))
		return Outcome{Result: ResultHandedOver, Plan: p, Detail: fmt.Sprintf("%s left to another rollguard: %v", p, err)}
	case errors.Is(err, rollback.ErrAlreadyRolledBack):
		return r.count(t, Outcome{Result: ResultNoop, Plan: p, Detail: "already rolled back for revision " + info.revision})
	case errors.As(err, &refused):
		r.cannot(j, t, info, "refused", err.Error())
		return r.count(t, Outcome{Result: ResultRefused, Plan: p, Detail: "cannot roll back: " + err.Error()})
	default:
		if res != nil {
			p = res.Action
		} else {
			// It failed before it started (its preflight could not read the
			// cluster or the database): no run to report, so page here.
			r.cannot(j, t, info, "preflight-failed", err.Error())
		}
		return r.count(t, Outcome{Result: ResultFailed, Plan: p, Detail: fmt.Sprintf("%s failed: %v", p, err)})
	}
}

// dryRun runs the plan without writes and reports what would happen.
func (r *Responder) dryRun(ctx context.Context, j job, t Target, info revisionInfo, id string, p plan.Name) Outcome {
	runCtx, cancel := context.WithTimeout(ctx, r.opts.ReadTimeout*3)
	defer cancel()
	res, err := r.exec.Run(runCtx, rollback.Request{Target: t.Rollback, Action: p, Reason: j.reason, DryRun: true})
	e := r.event(j, t, info, id)
	e.Kind = notify.KindWouldRollback
	e.Severity = notify.SeverityInfo
	var steps []string
	if res != nil {
		for _, s := range res.Steps {
			steps = append(steps, s.Name)
		}
	}
	e.Details.Plan = steps
	e.Details.Strategy = string(p)
	if err != nil {
		e.Details.Reason = err.Error()
		e.Summary = fmt.Sprintf("dry-run: %s: would roll back with %s, but: %v", t.Name, p, err)
	} else {
		e.Summary = fmt.Sprintf("dry-run: %s: would roll back %s with %s (%d steps)", t.Name, info.image, p, len(steps))
	}
	if r.opts.WouldRollback {
		r.queue.Enqueue(e)
	}
	r.log.Info("dry-run: would roll back", zap.String("target", t.Name), zap.String("plan", string(p)), zap.Strings("steps", steps), zap.Error(err))
	return r.count(t, Outcome{Result: ResultDryRun, Plan: p, Detail: "dry-run: would run " + string(p)})
}

// page sends a page-only action: a human decides. An alert's page is an
// incident of its own (one per alert firing), so every alert asking for a
// page is one PagerDuty alert and one record of who asked.
func (r *Responder) page(j job, t Target) {
	id := ""
	if j.alert != nil {
		id = notify.IncidentID(r.notifyTarget(t), "alert-"+j.alert.Fingerprint)
	}
	e := r.event(j, t, revisionInfo{}, id)
	e.Kind = notify.KindDetected
	e.Summary = fmt.Sprintf("%s: %s (page only: a human decides)", t.Name, j.reason)
	r.queue.Enqueue(e)
}

// cannot pages "cannot roll back" once per episode.
func (r *Responder) cannot(j job, t Target, info revisionInfo, reason, detail string) {
	r.cannotOnce(j, t, info, reason, detail, t.Name+"|"+info.revision+"|"+reason)
}

// cannotOnce pages "cannot roll back" once a day per key.
func (r *Responder) cannotOnce(j job, t Target, info revisionInfo, reason, detail, key string) {
	now := r.opts.Now()
	r.mu.Lock()
	last, seen := r.pageOnce[key]
	// An episode ends after a quiet day; prune so the map stays bounded.
	prune(r.pageOnce, now)
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
	e.Details.Reason = reason + ": " + detail
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
		Details: notify.Details{Reason: j.reason, BadVersion: info.image, DeployedAt: info.deployedAt},
	}
	if j.by.Kind != "" {
		by := j.by.Clone()
		e.Details.Requester = &by
	}
	if d := j.decision; d != nil {
		e.Trigger = d.Trigger
		e.Details.Query, e.Details.Threshold, e.Details.Op, e.Details.BreachStartedAt = d.Query, new(d.Threshold), string(d.Op), d.FirstBreach
		samples := make([]notify.Sample, 0, len(d.Samples))
		for _, s := range d.Samples {
			samples = append(samples, notify.Sample{Time: s.Time, Value: s.Value})
		}
		e.Details.Samples = samples
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
