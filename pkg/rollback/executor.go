package rollback

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"

	"github.com/rollguard/rollguard/pkg/clock"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
)

// Cluster is what plans need from Kubernetes; *kube.Deployments implements
// it.
type Cluster interface {
	Get(ctx context.Context, ns, name string) (*appsv1.Deployment, error)
	ReplicaSets(ctx context.Context, dep *appsv1.Deployment) ([]appsv1.ReplicaSet, error)
	GetScale(ctx context.Context, ns, name string) (*autoscalingv1.Scale, error)
	Scale(ctx context.Context, ns, name string, replicas int32, exp kube.Expect) (*appsv1.Deployment, error)
	SetTemplate(ctx context.Context, ns, name string, tmpl corev1.PodTemplateSpec, exp kube.Expect) (*appsv1.Deployment, error)
	SetMaxSurge(ctx context.Context, ns, name string, from, to *intstr.IntOrString, exp kube.Expect) (*appsv1.Deployment, error)
	WaitRollout(ctx context.Context, ns, name string, o kube.WaitOptions) (*appsv1.Deployment, kube.RolloutStatus, error)
	RecordEvent(ctx context.Context, dep *appsv1.Deployment, eventType, reason, message string) error
	// Pods counts the Pods matching dep's selector that have not ended.
	Pods(ctx context.Context, dep *appsv1.Deployment) (int, error)
}

// Options tune the Executor. Zero values take the defaults.
type Options struct {
	Observer Observer
	// HTTPClient checks HealthURL (default: a client with a 5s timeout).
	HTTPClient *http.Client
	// Now and Sleep are the clock; tests inject both so no test sleeps.
	Now   func() time.Time
	Sleep func(ctx context.Context, d time.Duration) error
	// JournalTimeout bounds each journal read or write (default 10s).
	JournalTimeout time.Duration
	// DumpTimeout bounds a dump or a restore (default 15m).
	DumpTimeout time.Duration
	// QueryTimeout bounds other database calls and health checks (30s).
	QueryTimeout time.Duration
	// PollInterval paces verify and the lag wait (default 2s).
	PollInterval time.Duration
	// Journaled, if set, is called right after a step's start (done
	// false) or end (done true) is in the journal: fault injection, so a
	// test can kill the process at that exact point.
	Journaled func(step string, done bool)
}

// Executor runs plans. It is safe for concurrent use on different
// Deployments; the journal's resourceVersion fences two runs of the same one.
type Executor struct {
	cluster  Cluster
	journals *journalStore
	opts     Options
	logger   *zap.Logger
}

// NewExecutor returns an Executor. configMaps is where journals live
// (clientset.CoreV1()).
func NewExecutor(cluster Cluster, configMaps corev1client.ConfigMapsGetter, opts Options, logger *zap.Logger) *Executor {
	if opts.Observer == nil {
		opts.Observer = nopObserver{}
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.Sleep == nil {
		opts.Sleep = clock.Sleep
	}
	if opts.JournalTimeout <= 0 {
		opts.JournalTimeout = 10 * time.Second
	}
	if opts.DumpTimeout <= 0 {
		opts.DumpTimeout = 15 * time.Minute
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = 30 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 2 * time.Second
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Executor{
		cluster:  cluster,
		journals: &journalStore{cms: configMaps, timeout: opts.JournalTimeout},
		opts:     opts,
		logger:   logger,
	}
}

// Request asks for one plan run.
type Request struct {
	Target Target
	// Action is the plan; empty means Target.Strategy (default quick).
	Action plan.Name
	// Reason is why (the trigger, or a human's words); journaled.
	Reason string
	// DryRun runs the same plan making no write to the cluster or the
	// database: each step reports what it would do.
	DryRun bool
	// Incident is the incident a new run belongs to; it is journaled, and
	// a resumed run keeps the journal's.
	Incident string
	// Observer is told about this run's milestones (default:
	// Options.Observer). The caller's incident context travels in it.
	Observer Observer
	// ResumeOnly continues an unfinished run and never starts a new one
	// (a new leader finishing its predecessor's work).
	ResumeOnly bool
	// MaxResumeAge bounds how old an unfinished run may be and still be
	// resumed (default DefaultMaxResumeAge); an older one is closed for a
	// human.
	MaxResumeAge time.Duration
	// Drain, when closed, stops the run at the next step boundary with
	// ErrHandedOver, its journal left unfinished for the next leader.
	Drain <-chan struct{}
	// Admit, if set, is asked once the run is fixed (new or resumed, its
	// incident, the bad revision) and before its first write; an error
	// stops the run with nothing written and is returned as it is. The
	// responder passes a resumed run through the interlocks here.
	Admit func(RunInfo) error
}

// RunInfo identifies the run Admit is asked about.
type RunInfo struct {
	RunID    string
	Action   plan.Name
	Resumed  bool
	Started  time.Time
	Incident string
	Bad      Revision
}

// Result is the outcome of Run.
type Result struct {
	RunID    string
	Action   plan.Name
	DryRun   bool
	Resumed  bool
	State    RunState
	Incident string
	Bad      Revision
	Pinned   *Pinned
	Replicas int32
	Steps    []StepRecord
	// Undone lists the steps put back after the run stopped; LeftBehind
	// what could not be.
	Undone     []string
	LeftBehind []string
	// Unverified: the plan ran to its end but verify had no data to judge
	// by; it says what is known.
	Unverified string
	// StateLeftBehind is, for a stopped run, the Deployment as it was
	// left and what a human must decide.
	StateLeftBehind *LeftState
}

// StepView describes one step for `rollguard plan`.
type StepView struct {
	Name        string
	Description string
	// Idempotent steps may be re-run after an interruption.
	Idempotent bool
	// State is pending for a new plan, or the journaled state on resume.
	State StepState
}

// PlanView is the plan for the live cluster state.
type PlanView struct {
	Namespace  string
	Deployment string
	Action     plan.Name
	Resume     bool
	RunID      string
	// Started is when the run began (the resumed run's start on resume).
	Started time.Time
	// Incident is the journaled incident of a resumed run.
	Incident         string
	Bad              Revision
	Pinned           *Pinned
	Replicas         int32
	MigrationApplied bool
	// GitOps is the owner of a GitOps-managed Deployment (nil: none found,
	// or not looked at).
	GitOps *GitOpsRecord
	Steps  []StepView
}

// Plan describes what Run would do now, without writing anything.
func (e *Executor) Plan(ctx context.Context, target Target, action plan.Name) (*PlanView, error) {
	return e.plan(ctx, Request{Target: target, Action: action, DryRun: true})
}

// PlanResume describes the unfinished run a resume-only request would
// continue now; a *RefusedError (ErrNothingToResume, ErrNeedsHuman, ...)
// when there is none to resume.
func (e *Executor) PlanResume(ctx context.Context, target Target, maxAge time.Duration) (*PlanView, error) {
	return e.plan(ctx, Request{Target: target, DryRun: true, ResumeOnly: true, MaxResumeAge: maxAge})
}

func (e *Executor) plan(ctx context.Context, req Request) (*PlanView, error) {
	r, err := e.prepare(ctx, req)
	if err != nil {
		return nil, err
	}
	v := &PlanView{
		Namespace: r.t.Namespace, Deployment: r.t.Deployment, Action: r.j.Action,
		Resume: r.resumed, RunID: r.j.RunID, Started: r.j.Started, Incident: r.j.Incident, Bad: r.j.Bad, Pinned: r.j.Pinned,
		Replicas: r.j.Replicas, MigrationApplied: r.j.MigrationApplied, GitOps: r.j.GitOps,
	}
	for _, rec := range r.j.Steps {
		def, _ := lookupStep(rec.Name)
		v.Steps = append(v.Steps, StepView{Name: rec.Name, Description: def.describe(r), Idempotent: def.idempotent, State: rec.State})
	}
	return v, nil
}

// Run runs (or resumes) the plan. A refusal is a *RefusedError and writes
// nothing; a stop on a concurrent change wraps ErrConcurrentChange; a
// destructive step found interrupted is an *UnsafeResumeError; a drained
// run returns ErrHandedOver.
func (e *Executor) Run(ctx context.Context, req Request) (*Result, error) {
	r, err := e.prepare(ctx, req)
	if err != nil {
		obs := req.Observer
		if obs == nil {
			obs = e.opts.Observer
		}
		base := Facts{Namespace: req.Target.Namespace, Deployment: req.Target.Deployment, Action: req.Action, Reason: req.Reason,
			DryRun: req.DryRun, Incident: req.Incident}
		if base.Action == "" {
			base.Action = req.Target.withDefaults().Strategy
		}
		var ref *RefusedError
		switch {
		case errors.Is(err, ErrNothingToResume):
			// Every leadership term and every new request first look
			// for an unfinished run: finding none is the normal case.
			e.logger.Debug("nothing to resume", zap.String("namespace", base.Namespace), zap.String("deployment", base.Deployment), zap.Error(err))
		case errors.As(err, &ref):
			e.logger.Info("rollback refused", zap.String("namespace", base.Namespace), zap.String("deployment", base.Deployment), zap.Error(err))
		default:
			e.logger.Error("rollback preflight failed", zap.String("namespace", base.Namespace), zap.String("deployment", base.Deployment), zap.Error(err))
		}
		now := e.opts.Now()
		base.Started, base.Finished, base.Err = now, now, err
		obs.PlanStarted(base)
		obs.PlanFinished(base)
		return nil, err
	}
	if req.Admit != nil && !req.DryRun {
		if err := req.Admit(RunInfo{RunID: r.j.RunID, Action: r.j.Action, Resumed: r.resumed, Started: r.j.Started,
			Incident: r.j.Incident, Bad: r.j.Bad}); err != nil {
			f := r.facts()
			f.Started, f.Finished, f.Err = e.opts.Now(), e.opts.Now(), err
			r.obs.PlanStarted(f)
			r.obs.PlanFinished(f)
			return nil, err
		}
	}
	err = r.execute(ctx)
	return r.result(), err
}

// run is the state of one plan run.
type run struct {
	e       *Executor
	t       Target
	j       *Journal
	cm      *corev1.ConfigMap // journal as last written; nil before create
	dep     *appsv1.Deployment
	exp     kube.Expect
	dryRun  bool
	resumed bool
	obs     Observer
	drain   <-chan struct{}
	// prevJournal is the ConfigMap of a finished older run that a new run
	// replaces (its resourceVersion fences the replacement).
	prevJournal *corev1.ConfigMap
}

func (r *run) facts() Facts {
	return Facts{
		Namespace: r.t.Namespace, Deployment: r.t.Deployment, Action: r.j.Action, RunID: r.j.RunID,
		Reason: r.j.Reason, DryRun: r.dryRun, Resumed: r.resumed, Incident: r.j.Incident,
		Bad: r.j.Bad, Pinned: r.j.Pinned, Replicas: r.j.Replicas, Unverified: r.j.Unverified,
		GitOps: r.j.gitopsNote(r.t.GitOps.Target),
	}
}

func (r *run) result() *Result {
	return &Result{
		RunID: r.j.RunID, Action: r.j.Action, DryRun: r.dryRun, Resumed: r.resumed, State: r.j.State, Incident: r.j.Incident,
		Bad: r.j.Bad, Pinned: r.j.Pinned, Replicas: r.j.Replicas, Steps: append([]StepRecord(nil), r.j.Steps...),
		Undone: append([]string(nil), r.j.Undone...), LeftBehind: append([]string(nil), r.j.LeftBehind...),
		Unverified: r.j.Unverified, StateLeftBehind: r.j.StateLeftBehind,
	}
}

func (r *run) log() *zap.Logger {
	return r.e.logger.With(zap.String("namespace", r.t.Namespace), zap.String("deployment", r.t.Deployment),
		zap.String("action", string(r.j.Action)), zap.String("run", r.j.RunID), zap.Bool("dryRun", r.dryRun))
}

// execute runs the journal's steps from the first not done.
func (r *run) execute(ctx context.Context) error {
	e := r.e
	f := r.facts()
	f.Started = e.opts.Now()
	if !r.dryRun && r.cm == nil {
		// The first write of a new run: the journal, pinned target and
		// recorded replicas are durable before the Deployment is touched.
		// Only from here on has the run started writing: PlanStarted
		// without an error is what consumes the interlocks.
		if err := r.save(ctx); err != nil {
			r.log().Error("rollback journal not written", zap.Error(err))
			f.Finished, f.Err = e.opts.Now(), err
			r.obs.PlanStarted(f)
			r.obs.PlanFinished(f)
			return err
		}
	}
	r.obs.PlanStarted(f)
	if !r.dryRun {
		r.event(ctx, corev1.EventTypeNormal, kube.ReasonPlanStarted, fmt.Sprintf("%s rollback (run %s, resumed %v): %s", r.j.Action, r.j.RunID, r.resumed, r.j.Reason))
	}
	r.log().Info("rollback plan started", zap.Bool("resumed", r.resumed), zap.Int32("replicas", r.j.Replicas))

	err := r.steps(ctx)

	f.Finished = e.opts.Now()
	f.Err = err
	f.Unverified = r.j.Unverified
	switch {
	case r.dryRun:
	case err == nil:
		r.j.State = RunSucceeded
		r.j.Finished = ptrTime(f.Finished)
		r.j.Error = ""
		if serr := r.save(ctx); serr != nil {
			err = serr
			f.Err = err
		}
	case errors.Is(err, ErrJournalConflict):
		// Another writer owns the journal now: nothing of ours to record
		// or put back.
	case handedOver(ctx, err):
		// Drained between steps, or cancelled inside one (shutdown, lost
		// leadership): the run is not over, the next leader resumes it.
		// A step cut short is recorded as failed so the resume knows.
		if !errors.Is(err, ErrHandedOver) {
			err = fmt.Errorf("%w: interrupted: %w", ErrHandedOver, err)
			f.Err = err
			r.j.State = RunFailed
			r.j.Error = err.Error()
			r.j.Finished = ptrTime(f.Finished)
			sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), e.opts.JournalTimeout)
			if serr := r.save(sctx); serr != nil {
				r.log().Error("journal write after cancellation failed", zap.Error(serr))
			}
			cancel()
		}
	default:
		state := RunFailed
		// A concurrent change or an unsafe resume is a human's business from
		// now on: never resumed by the next firing.
		if errors.Is(err, ErrConcurrentChange) || errors.Is(err, ErrUnsafeResume) {
			state = RunAborted
		}
		r.close(ctx, state, err)
		f.Undone, f.LeftBehind, f.StateLeftBehind = r.j.Undone, r.j.LeftBehind, r.j.StateLeftBehind
	}
	if !r.dryRun {
		if err == nil {
			r.event(ctx, corev1.EventTypeNormal, kube.ReasonPlanSucceeded, fmt.Sprintf("%s rollback done (run %s)", r.j.Action, r.j.RunID))
		} else {
			r.event(context.WithoutCancel(ctx), corev1.EventTypeWarning, kube.ReasonPlanFailed, fmt.Sprintf("%s rollback stopped (run %s): %v", r.j.Action, r.j.RunID, err))
		}
	}
	switch {
	case err == nil:
		r.log().Info("rollback plan finished")
	case errors.Is(err, ErrHandedOver):
		r.log().Info("rollback plan handed over between steps", zap.Error(err))
	default:
		r.log().Error("rollback plan stopped", zap.Error(err))
	}
	r.obs.PlanFinished(f)
	return err
}

// handedOver reports whether err ends the run only for this process: a
// drain between steps, or a cancelled context (not a deadline: a run that
// outlived its timeout has failed).
func handedOver(ctx context.Context, err error) bool {
	return errors.Is(err, ErrHandedOver) || errors.Is(ctx.Err(), context.Canceled)
}

// close ends an unfinished run in state (failed, aborted, superseded)
// after putting back what it must not leave behind, and records it. The
// record is written even when ctx was cancelled: the next run must know
// where this one ended.
func (r *run) close(ctx context.Context, state RunState, cause error) {
	// The undo may be cut short by a shutdown (it then says so in
	// LeftBehind); the record of the stop is written regardless.
	r.undo(ctx)
	r.liftIfNothingWritten(ctx)
	ctx = context.WithoutCancel(ctx)
	if state == RunFailed || state == RunAborted {
		r.j.StateLeftBehind = r.leftBehind(ctx)
	}
	r.j.State = state
	r.j.Error = cause.Error()
	r.j.Finished = ptrTime(r.e.opts.Now())
	sctx, cancel := context.WithTimeout(ctx, r.e.opts.JournalTimeout)
	defer cancel()
	if err := r.save(sctx); err != nil {
		r.log().Error("journal write after the run stopped failed", zap.Error(err))
	}
}

func (r *run) steps(ctx context.Context) error {
	e := r.e
	n := len(r.j.Steps)
	for i := range r.j.Steps {
		rec := &r.j.Steps[i]
		def, ok := lookupStep(rec.Name)
		if !ok {
			return fmt.Errorf("deployment %s/%s: journal names unknown step %q", r.t.Namespace, r.t.Deployment, rec.Name)
		}
		f := r.facts()
		f.Step, f.StepIndex, f.Steps = rec.Name, i+1, n
		f.Description = def.describe(r)

		if rec.State == StepDone || rec.State == StepSkipped {
			// Done by an earlier run (or, for preflight, by this one).
			f.Skipped = true
			f.Detail = rec.Detail
			if rec.Started != nil {
				f.Started = *rec.Started
			}
			if rec.Finished != nil {
				f.Finished = *rec.Finished
			}
			if r.resumed {
				r.obs.StepStarted(f)
			}
			r.obs.StepFinished(f)
			continue
		}
		if (rec.State == StepRunning || rec.State == StepFailed) && !def.idempotent {
			started := time.Time{}
			if rec.Started != nil {
				started = *rec.Started
			}
			return &UnsafeResumeError{Namespace: r.t.Namespace, Deployment: r.t.Deployment, Step: rec.Name, Started: started,
				StepError: rec.Error, Detail: def.unsafeDetail(r, rec)}
		}
		if r.dryRun {
			f.Started = e.opts.Now()
			r.obs.StepStarted(f)
			f.Finished = f.Started
			f.Detail = "dry-run: would " + f.Description
			r.obs.StepFinished(f)
			rec.State = StepWouldRun
			rec.Detail = f.Detail
			continue
		}
		if err := ctx.Err(); err != nil {
			return fmt.Errorf("deployment %s/%s: before step %s: %w", r.t.Namespace, r.t.Deployment, rec.Name, err)
		}
		select {
		case <-r.drain:
			return fmt.Errorf("deployment %s/%s: before step %s: %w", r.t.Namespace, r.t.Deployment, rec.Name, ErrHandedOver)
		default:
		}

		// Journal the start (and the step's intent) before acting.
		if def.prepare != nil {
			def.prepare(r, rec)
		}
		rec.State = StepRunning
		rec.Started = ptrTime(e.opts.Now())
		rec.Finished = nil
		rec.Error = ""
		rec.Attempts++
		if err := r.save(ctx); err != nil {
			return err
		}
		r.journaled(rec.Name, false)
		f.Started = *rec.Started
		r.log().Info("rollback step started", zap.String("step", rec.Name), zap.Int("index", i+1))
		r.event(ctx, corev1.EventTypeNormal, kube.ReasonStepStarted, fmt.Sprintf("%s %d/%d %s: %s", r.j.Action, i+1, n, rec.Name, f.Description))
		r.obs.StepStarted(f)

		detail, err := r.runStep(ctx, def, rec)

		rec.Finished = ptrTime(e.opts.Now())
		rec.Detail = detail
		f.Finished, f.Detail, f.Err, f.Unverified = *rec.Finished, detail, err, r.j.Unverified
		var notStarted *notStartedError
		if errors.As(err, &notStarted) {
			// The step refused to begin: nothing done, pending again.
			rec.State = StepPending
			rec.Started, rec.Finished = nil, nil
			rec.Detail = "not started: " + err.Error()
			r.log().Error("rollback step refused to start", zap.String("step", rec.Name), zap.Error(err))
			r.obs.StepFinished(f)
			if serr := r.save(ctx); serr != nil {
				return serr
			}
			return fmt.Errorf("%w: %s: %w", ErrStepFailed, rec.Name, err)
		}
		if err != nil {
			rec.State = StepFailed
			rec.Error = err.Error()
			r.log().Error("rollback step failed", zap.String("step", rec.Name), zap.Error(err))
			r.event(context.WithoutCancel(ctx), corev1.EventTypeWarning, kube.ReasonStepFailed, fmt.Sprintf("%s %d/%d %s failed: %v", r.j.Action, i+1, n, rec.Name, err))
			r.obs.StepFinished(f)
			// The step's name goes into the returned (and journaled run)
			// error: a page saying "invalid dump" must also say where the
			// plan stopped.
			return fmt.Errorf("%w: %s: %w", ErrStepFailed, rec.Name, err)
		}
		rec.State = StepDone
		if err := r.save(ctx); err != nil {
			return err
		}
		r.journaled(rec.Name, true)
		r.log().Info("rollback step done", zap.String("step", rec.Name), zap.String("detail", detail))
		r.event(ctx, corev1.EventTypeNormal, kube.ReasonStepSucceeded, fmt.Sprintf("%s %d/%d %s: %s", r.j.Action, i+1, n, rec.Name, detail))
		r.obs.StepFinished(f)
	}
	return nil
}

// runStep runs one step, turning a panic into an error so the journal
// records the step as failed rather than leaving it for a blind re-run.
func (r *run) runStep(ctx context.Context, def stepDef, rec *StepRecord) (detail string, err error) {
	defer func() {
		if p := recover(); p != nil {
			// steps wraps it in ErrStepFailed.
			err = fmt.Errorf("deployment %s/%s: step %s panicked: %v", r.t.Namespace, r.t.Deployment, rec.Name, p)
		}
	}()
	return def.run(ctx, r, rec)
}

func (r *run) save(ctx context.Context) error {
	if r.dryRun {
		return nil
	}
	prev := r.cm
	if prev == nil {
		prev = r.prevJournal
	}
	cm, err := r.e.journals.save(ctx, r.j, prev)
	if err != nil {
		return err
	}
	r.cm = cm
	r.prevJournal = nil
	return nil
}

// event records a Kubernetes Event; a failure is logged only: Events are
// for humans, the journal is the record.
func (r *run) event(ctx context.Context, typ, reason, msg string) {
	if r.dryRun || r.dep == nil {
		return
	}
	if err := r.e.cluster.RecordEvent(ctx, r.dep, typ, reason, msg); err != nil {
		r.log().Warn("event not recorded", zap.String("reason", reason), zap.Error(err))
	}
}

func (r *run) journaled(step string, done bool) {
	if f := r.e.opts.Journaled; f != nil && !r.dryRun {
		f(step, done)
	}
}

func ptrTime(t time.Time) *time.Time { return &t }
