package response

import (
	"context"
	"time"

	"errors"
	"fmt"
	"go.uber.org/zap"
	"maps"
	"sort"
	"strings"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/rollback"
)

type metrics struct {
	rollbacks *prometheus.CounterVec
	steps     *prometheus.HistogramVec
}

func newMetrics(reg prometheus.Registerer) *metrics {
	m := &metrics{
		rollbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "rollguard_rollbacks_total",
			Help: "Actions on targets by plan and result (succeeded, failed, refused, blocked, dry-run, noop).",
		}, []string{"target", "plan", "result"}),
		steps: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "rollguard_rollback_step_duration_seconds",
			Help:    "Duration of each executed plan step.",
			Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
		}, []string{"plan", "step", "result"}),
	}
	if reg != nil {
		reg.MustRegister(m.rollbacks, m.steps)
	}
	return m
}

// Observer returns the rollback.Observer to give the executor: it turns
// each milestone of a plan into a notification of the incident the plan
// belongs to.
func (r *Responder) Observer() rollback.Observer { return (*observer)(r) }

type observer Responder

type runRef struct {
	r    *Responder
	key  string
	base notify.Event
}

func (r *Responder) observe(target string, base notify.Event) *runRef {
	key := base.Target.Namespace + "/" + base.Target.Deployment
	r.runsMu.Lock()
	r.runs[key] = base
	r.runsMu.Unlock()
	return &runRef{r: r, key: key, base: base}
}

func (rr *runRef) done() {
	rr.r.runsMu.Lock()
	delete(rr.r.runs, rr.key)
	rr.r.runsMu.Unlock()
}

func (o *observer) base(f rollback.Facts) (notify.Event, bool) {
	r := (*Responder)(o)
	r.runsMu.Lock()
	defer r.runsMu.Unlock()
	e, ok := r.runs[f.Namespace+"/"+f.Deployment]
	if !ok || f.DryRun {
		return notify.Event{}, false
	}
	e.Details = maps.Clone(e.Details)
	e.Time = r.opts.Now()
	if f.RunID != "" {
		e.Details["run_id"] = f.RunID
	}
	e.Details[notify.DetailStrategy] = string(f.Action)
	if img := images(f.Bad.Images); img != "" {
		e.Details[notify.DetailBadVersion] = img
	}
	if f.Pinned != nil {
		e.Details[notify.DetailRestoredVersion] = images(f.Pinned.Images)
	}
	if f.GitOps != "" {
		e.Details["gitops"] = f.GitOps
	}
	return e, true
}

func (o *observer) PlanStarted(f rollback.Facts) {
	e, ok := o.base(f)
	if !ok || f.Err != nil {
		return
	}
	e.Kind = notify.KindRollbackStarted
	verb := "ROLLBACK INITIATED"
	if f.Resumed {
		verb = "ROLLBACK RESUMED"
	}
	e.Summary = fmt.Sprintf("%s: %s/%s with plan %s (%s)", verb, f.Namespace, f.Deployment, f.Action, f.Reason)
	o.queue.Enqueue(e)
}

func (o *observer) StepStarted(f rollback.Facts) {
	e, ok := o.base(f)
	if !ok || f.Skipped {
		return
	}
	e.Kind = notify.KindStepStarted
	e.Details[notify.DetailStep] = f.Step
	e.Summary = fmt.Sprintf("%s/%s: step %d/%d %s started: %s", f.Namespace, f.Deployment, f.StepIndex, f.Steps, f.Step, f.Description)
	o.queue.Enqueue(e)
}

func (o *observer) StepFinished(f rollback.Facts) {
	outcome := notify.OutcomeOK
	switch {
	case f.Err != nil:
		outcome = notify.OutcomeFailed
	case f.Skipped && !(f.Step == rollback.StepPreflight && !f.Resumed):
		// The executor pins the target (preflight) before its first
		// write and reports the step as already done; only on a resume
		// was it really done by an earlier run.
		outcome = notify.OutcomeSkipped
	}
	if !f.Skipped && !f.Finished.IsZero() && !f.Started.IsZero() {
		o.m.steps.WithLabelValues(string(f.Action), f.Step, outcome).Observe(f.Finished.Sub(f.Started).Seconds())
	}
	e, ok := o.base(f)
	if !ok {
		return
	}
	e.Kind = notify.KindStepFinished
	e.Details[notify.DetailStep] = f.Step
	e.Details[notify.DetailStepOutcome] = outcome
	if f.Err != nil {
		e.Details[notify.DetailStepError] = f.Err.Error()
	}
	if f.Err == nil {
		switch f.Step {
		case rollback.StepWaitRollout:
			e.Details[notify.DetailMilestone] = notify.MilestoneRestored
		case rollback.StepVerify:
			e.Details[notify.DetailMilestone] = notify.MilestoneStable
		}
	}
	e.Summary = fmt.Sprintf("%s/%s: step %d/%d %s %s", f.Namespace, f.Deployment, f.StepIndex, f.Steps, f.Step, outcome)
	if f.Detail != "" {
		e.Summary += ": " + f.Detail
	}
	o.queue.Enqueue(e)
}

func (o *observer) PlanFinished(f rollback.Facts) {
	e, ok := o.base(f)
	if !ok {
		return
	}
	var refused *rollback.RefusedError
	if errors.As(f.Err, &refused) {
		return // the responder pages "cannot roll back" once per episode
	}
	if f.Err == nil {
		// The plan is over: a bounded read here delays only this page.
		if o.opts.Integrity != nil {
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			di, err := o.opts.Integrity(ctx, f.Namespace, f.Deployment)
			cancel()
			if err != nil {
				o.log.Warn("data integrity check failed", zap.String("namespace", f.Namespace), zap.String("deployment", f.Deployment), zap.Error(err))
			} else if di != nil {
				e.Details[notify.DetailDataIntegrity] = *di
			}
		}
		e.Kind = notify.KindRollbackSucceeded
		e.Summary = fmt.Sprintf("ROLLBACK COMPLETE: %s/%s restored to %s with plan %s", f.Namespace, f.Deployment, e.Details[notify.DetailRestoredVersion], f.Action)
	} else {
		e.Kind = notify.KindRollbackFailed
		e.Details[notify.DetailError] = f.Err.Error()
		e.Summary = fmt.Sprintf("ROLLBACK STOPPED: %s/%s: %v", f.Namespace, f.Deployment, f.Err)
	}
	o.queue.Enqueue(e)
}

func images(m map[string]string) string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, 0, len(keys))
	for _, k := range keys {
		parts = append(parts, m[k])
	}
	return strings.Join(parts, ",")
}
