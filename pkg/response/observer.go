package response

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
)

type metrics struct {
	rollbacks *prometheus.CounterVec
	steps     *rollback.StepMetrics
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollbacks_total",
			Help: "Actions on targets by plan and result (succeeded, failed, refused, blocked, dry-run, noop).",
		}, []string{"target", "plan", "result"}),
		steps: rollback.NewStepMetrics(reg),
	}
	if reg != nil {
		reg.MustRegister(m.rollbacks)
	}
	return m
}

// runObserver is the rollback.Observer of one run: it turns each
// milestone into an event of the run's incident, and records the run in
// the interlocks the moment it starts writing (a refusal or a failed
// preflight consumes nothing).
type runObserver struct {
	r    *Responder
	j    job
	t    Target
	info revisionInfo
	id   string

	mu      sync.Mutex
	base    *notify.Event
	started bool // PlanStarted saw the run begin
}

// observe returns the observer of a run of j. A resumed run's incident and
// bad revision are the journal's: with id empty they are taken from the
// run's facts.
func (r *Responder) observe(j job, t Target, info revisionInfo, id string) *runObserver {
	return &runObserver{r: r, j: j, t: t, info: info, id: id}
}

func (o *runObserver) event(f rollback.Facts) (notify.Event, bool) {
	if f.DryRun {
		return notify.Event{}, false
	}
	o.mu.Lock()
	if o.base == nil {
		if o.id == "" {
			o.info = revisionOf(f.Bad)
			o.id = f.Incident
			if o.id == "" {
				o.id = notify.IncidentID(o.r.notifyTarget(o.t), o.info.revision)
			}
		}
		b := o.r.event(o.j, o.t, o.info, o.id)
		o.base = &b
	}
	e := *o.base
	o.mu.Unlock()
	e.Time = o.r.opts.Now()
	e.Details.RunID = f.RunID
	e.Details.Strategy = string(f.Action)
	if img := images(f.Bad.Images); img != "" {
		e.Details.BadVersion = img
	}
	if f.Pinned != nil {
		e.Details.RestoredVersion = images(f.Pinned.Images)
	}
	e.Details.GitOps = f.GitOps
	return e, true
}

func (o *runObserver) PlanStarted(f rollback.Facts) {
	if f.Err != nil || f.DryRun {
		return
	}
	o.mu.Lock()
	o.started = true
	o.mu.Unlock()
	r := o.r
	if !f.Resumed {
		// The run has written its journal: from now on it counts.
		rev := o.info.revision
		if rev == "" {
			rev = revisionOf(f.Bad).revision
		}
		now := r.opts.Now()
		r.guard.Record(o.t.Name, rev, now, f.Action != plan.PoolRecovery)
		if f.Action == plan.PoolRecovery {
			r.mu.Lock()
			if st := r.targets[o.t.Name]; st != nil {
				st.restarted = now
			}
			r.mu.Unlock()
		}
	}
	e, _ := o.event(f)
	e.Kind = notify.KindRollbackStarted
	verb := "ROLLBACK INITIATED"
	if f.Resumed {
		verb = "ROLLBACK RESUMED"
		e.Details.Resumed = true
	}
	e.Summary = fmt.Sprintf("%s: %s/%s with plan %s (%s)", verb, f.Namespace, f.Deployment, f.Action, f.Reason)
	r.queue.Enqueue(e)
}

func (o *runObserver) StepStarted(f rollback.Facts) {
	e, ok := o.event(f)
	if !ok || f.Skipped {
		return
	}
	e.Kind = notify.KindStepStarted
	e.Details.Step = f.Step
	e.Summary = fmt.Sprintf("%s/%s: step %d/%d %s started: %s", f.Namespace, f.Deployment, f.StepIndex, f.Steps, f.Step, f.Description)
	o.r.queue.Enqueue(e)
}

func (o *runObserver) StepFinished(f rollback.Facts) {
	outcome := notify.OutcomeOK
	switch {
	case f.Err != nil:
		outcome = notify.OutcomeFailed
	case f.Skipped && !(f.Step == rollback.StepPreflight && !f.Resumed):
		// The executor pins the target (preflight) before its first
		// write and reports the step as already done; only on a resume
		// was it really done by an earlier run.
		outcome = notify.OutcomeSkipped
	case f.Step == rollback.StepVerify && f.Unverified != "":
		outcome = notify.OutcomeUnverified
	}
	if !f.Skipped && !f.Finished.IsZero() && !f.Started.IsZero() {
		o.r.m.steps.Observe(f.Action, f.Step, outcome, f.Finished.Sub(f.Started))
	}
	e, ok := o.event(f)
	if !ok {
		return
	}
	e.Kind = notify.KindStepFinished
	e.Details.Step, e.Details.StepOutcome, e.Details.StepDetail = f.Step, outcome, f.Detail
	if f.Err != nil {
		e.Details.StepError = f.Err.Error()
	}
	if f.Err == nil {
		switch f.Step {
		case rollback.StepWaitRollout:
			e.Details.Milestone = notify.MilestoneRestored
		case rollback.StepVerify:
			e.Details.Verification = f.Detail
			if outcome == notify.OutcomeOK {
				// Only a verified recovery is "stable".
				e.Details.Milestone = notify.MilestoneStable
			}
		}
	}
	e.Summary = fmt.Sprintf("%s/%s: step %d/%d %s %s", f.Namespace, f.Deployment, f.StepIndex, f.Steps, f.Step, outcome)
	if f.Detail != "" {
		e.Summary += ": " + f.Detail
	}
	o.r.queue.Enqueue(e)
}

func (o *runObserver) PlanFinished(f rollback.Facts) {
	var refused *rollback.RefusedError
	var blocked *blockedError
	if errors.As(f.Err, &refused) || errors.As(f.Err, &blocked) || errors.Is(f.Err, rollback.ErrHandedOver) ||
		errors.Is(f.Err, rollback.ErrJournalConflict) {
		// Refusals page "cannot roll back" once per episode (the
		// responder); a hand-over is not an end: the next leader resumes;
		// a journal written by another rollguard is that one's run, and
		// it reports it.
		return
	}
	o.mu.Lock()
	started := o.started
	o.mu.Unlock()
	if !started {
		// It never began: the responder reports why.
		return
	}
	e, ok := o.event(f)
	if !ok {
		return
	}
	r := o.r
	if f.Err == nil {
		// The plan is over: a bounded read here delays only this page.
		if r.opts.Integrity != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			di, err := r.opts.Integrity(ctx, f.Namespace, f.Deployment)
			cancel()
			if err != nil {
				r.log.Warn("data integrity check failed", zap.String("namespace", f.Namespace), zap.String("deployment", f.Deployment), zap.Error(err))
			} else if di != nil {
				v := *di
				e.Details.DataIntegrity = &v
			}
		}
		e.Kind = notify.KindRollbackSucceeded
		e.Summary = fmt.Sprintf("ROLLBACK COMPLETE: %s/%s restored to %s with plan %s", f.Namespace, f.Deployment, e.Details.RestoredVersion, f.Action)
		if f.Unverified != "" {
			// Rolled back, but nothing says the service recovered: never
			// a success page.
			e.Kind = notify.KindRollbackUnverified
			e.Details.Verification = f.Unverified
			e.Summary = fmt.Sprintf("ROLLBACK DONE, UNVERIFIED: %s/%s restored to %s with plan %s, recovery not verified: %s",
				f.Namespace, f.Deployment, e.Details.RestoredVersion, f.Action, f.Unverified)
		}
	} else {
		e.Kind = notify.KindRollbackFailed
		e.Details.Error = f.Err.Error()
		e.Summary = fmt.Sprintf("ROLLBACK STOPPED: %s/%s: %v", f.Namespace, f.Deployment, f.Err)
		if len(f.Undone) > 0 {
			e.Details.Undone = f.Undone
			e.Summary += fmt.Sprintf(" (put back: %v)", f.Undone)
		}
		if len(f.LeftBehind) > 0 {
			e.Details.LeftBehind = f.LeftBehind
			e.Summary += fmt.Sprintf(" (NOT put back: %v)", f.LeftBehind)
		}
		if s := f.StateLeftBehind; s != nil {
			e.Details.StateLeftBehind = s.Detail
			e.Summary += "; " + s.Summary
		}
	}
	r.queue.Enqueue(e)
}

// images is a version as the pages show it: the images, in container
// order, without the container names.
func images(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, c := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, m[c])
	}
	return strings.Join(parts, ",")
}
