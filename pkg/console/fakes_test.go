package console

import (
	"context"
	"fmt"
	"math"
	"time"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

var t0 = time.Date(2026, 3, 14, 3, 12, 0, 0, time.UTC)

// view builds a trigger whose window holds n samples one second apart
// ending at t0, each from value(i); the state follows the samples the way
// the window would judge them.
func view(target, name string, threshold float64, forDur time.Duration, n int, value func(i int) float64) evaluator.View {
	rule := trigger.Rule{Target: target, Name: name, Op: trigger.Above, Threshold: threshold, For: forDur, MaxGap: 2 * time.Second}
	tr := trigger.New(rule, window.CapacityFor(forDur, time.Second))
	for i := 0; i < n; i++ {
		v := value(i)
		o := trigger.Observation{Value: v, Volume: math.NaN()}
		if math.IsNaN(v) {
			o.Err = fmt.Errorf("prometheus query: no data")
		}
		tr.Replay(t0.Add(time.Duration(i-n+1)*time.Second), o)
	}
	w := tr.Window()
	return evaluator.View{Status: tr.Status(), Rule: tr.Rule(), Samples: w.Samples(nil)}
}

// fleet is a Fleet, Targets, Incidents and Deliveries from fixed data.
type fleet struct {
	snap      Snapshot
	detail    map[string]TargetDetail
	records   map[string]*incident.Record
	delivered []notify.Delivery
}

func (f *fleet) Snapshot(context.Context) Snapshot { return f.snap }

func (f *fleet) Target(_ context.Context, name string) (TargetDetail, error) {
	d, ok := f.detail[name]
	if !ok {
		return TargetDetail{}, fmt.Errorf("target %q: %w", name, ErrUnknownTarget)
	}
	return d, nil
}

func (f *fleet) Plan(_ context.Context, name, action string) (*rollback.PlanView, error) {
	d, ok := f.detail[name]
	if !ok {
		return nil, fmt.Errorf("target %q: %w", name, ErrUnknownTarget)
	}
	if d.Plan == nil {
		return nil, fmt.Errorf("%s", d.PlanError)
	}
	return d.Plan, nil
}

func (f *fleet) List(context.Context) ([]incident.Summary, error) {
	var out []incident.Summary
	for _, r := range f.records {
		out = append(out, incident.Summary{ID: r.ID, Target: r.Target, Trigger: r.Trigger, Status: r.Status, Summary: r.Summary, OpenedAt: r.OpenedAt})
	}
	return out, nil
}

func (f *fleet) Get(_ context.Context, id string) (*incident.Record, error) {
	r, ok := f.records[id]
	if !ok {
		return nil, fmt.Errorf("incident %s: %w", id, incident.ErrNotFound)
	}
	return r, nil
}

func (f *fleet) Markdown(ctx context.Context, id string) ([]byte, error) {
	r, err := f.Get(ctx, id)
	if err != nil {
		return nil, err
	}
	return []byte(incident.Markdown(r, incident.Template{})), nil
}

func (f *fleet) ForIncident(id string) []notify.Delivery {
	var out []notify.Delivery
	for _, d := range f.delivered {
		if d.IncidentID == id {
			out = append(out, d)
		}
	}
	return out
}

// sampleFleet is one target of each kind: a firing one with a plan and an
// incident, a pending one, a blind one and a calm one.
func sampleFleet() *fleet {
	bad := func(i int) float64 {
		if i < 4 {
			return 0.002
		}
		return 0.2
	}
	firing := view("pggit-api", "error-rate", 0.05, 10*time.Second, 14, bad)
	latency := view("pggit-api", "latency-p99", 5, 10*time.Second, 12, func(int) float64 { return 0.12 })
	pending := view("billing", "error-rate", 0.05, 60*time.Second, 12, func(i int) float64 {
		if i < 8 {
			return 0.01
		}
		return 0.09
	})
	blind := view("search", "replication-lag", 30, 60*time.Second, 12, func(i int) float64 {
		if i < 6 {
			return 2
		}
		return math.NaN()
	})
	calm := view("web", "error-rate", 0.05, 60*time.Second, 14, func(i int) float64 { return 0.004 + float64(i%3)*0.001 })
	snap := Snapshot{Version: "v0.9.0", Identity: "rollguard-0", Leader: true, LeaderElection: true, ConfigHash: "3f2a9c01be4d", LoadedAt: t0.Add(-42 * time.Minute), Interval: time.Second,
		Targets: []Target{
			{Name: "billing", Namespace: "production", Deployment: "billing", Image: "api=billing:v2.4.0", Triggers: []evaluator.View{pending}},
			{Name: "pggit-api", Namespace: "production", Deployment: "pggit-api", Image: "api=pggit-api:v1.1.0", Running: "quick", Triggers: []evaluator.View{firing, latency}},
			{Name: "search", Namespace: "production", Deployment: "search", Image: "api=search:v3.0.1", Freeze: "Deployment annotated rollguard.io/freeze: reindexing", Triggers: []evaluator.View{blind}},
			{Name: "web", Namespace: "staging", Deployment: "web", Image: "web=web:v9", DryRun: true, Triggers: []evaluator.View{calm}},
		}}
	plan := &rollback.PlanView{Namespace: "production", Deployment: "pggit-api", Action: plan.Quick,
		Bad:      rollback.Revision{Revision: 7, Hash: "6d5f8c9b7", Images: map[string]string{"api": "pggit-api:v1.1.0"}},
		Pinned:   &rollback.Pinned{Source: "previous-revision", Revision: 6, Hash: "7c9d4b6f5", Images: map[string]string{"api": "pggit-api:v1.0.3"}},
		Replicas: 4,
		Steps: []rollback.StepView{
			{Name: "preflight", Description: "pin the previous revision", Idempotent: true, State: "done"},
			{Name: "stop", Description: "scale to 0", Idempotent: true, State: "pending"},
			{Name: "application", Description: "restore pggit-api:v1.0.3", Idempotent: true, State: "pending"},
			{Name: "verify", Description: "health URL 200 and triggers under threshold", Idempotent: true, State: "pending"},
		}}
	detail := TargetDetail{Target: snap.Targets[1], Plan: plan, Actions: []string{"quick", "revert"},
		Current:  &Revision{Number: 7, Name: "pggit-api-6d5f8c9b7", Hash: "6d5f8c9b7", Images: "api=pggit-api:v1.1.0", Created: t0.Add(-90 * time.Second), Ready: 4, Desired: 4},
		Previous: &Revision{Number: 6, Name: "pggit-api-7c9d4b6f5", Hash: "7c9d4b6f5", Images: "api=pggit-api:v1.0.3", Created: t0.Add(-26 * time.Hour)},
		Interlocks: []Interlock{
			{Name: "Leader", State: InterlockPass, Detail: "this replica (rollguard-0) holds the lease"},
			{Name: "Dry-run", State: InterlockPass, Detail: "off: acts for real"},
			{Name: "Freeze", State: InterlockPass, Detail: "not frozen"},
			{Name: "Cooldown", State: InterlockBlocks, Detail: "12m 03s left of 30m0s"},
			{Name: "Hourly budget", State: InterlockPass, Detail: "2 of 3 left this hour (all targets)"},
		},
		Verdict: "Would not roll back: cooldown: last rollback of pggit-api started 17m57s ago (cooldown 30m0s). rollguard pages a human instead."}
	samples := []notify.Sample{}
	for i := 0; i < 14; i++ {
		samples = append(samples, notify.Sample{Time: t0.Add(time.Duration(i-13) * time.Second), Value: bad(i)})
	}
	rec := &incident.Record{ID: "pggit-api-6d5f8c9b7", Target: "production/pggit-api", Namespace: "production", Deployment: "pggit-api", Trigger: "error-rate",
		Severity: notify.SeverityCritical, Status: incident.StatusResolved, Summary: "pggit-api: trigger error-rate: 0.2 above 0.05",
		BadVersion: "pggit-api:v1.1.0", RestoredVersion: "pggit-api:v1.0.3", Strategy: "quick",
		OpenedAt: t0, BreachStartedAt: t0.Add(-9 * time.Second), DetectedAt: t0.Add(time.Second), StableAt: t0.Add(40 * time.Second),
		Evidence: incident.Evidence{Query: "sum(rate(http_requests_total{status=~\"5..\"}[5s]))", Threshold: 0.05, Op: "above", Samples: samples},
		Timeline: []incident.Entry{
			{Time: t0.Add(-9 * time.Second), What: "Breach started (above 0.05)"},
			{Time: t0.Add(time.Second), What: "Trigger error-rate detected: pggit-api: trigger error-rate: 0.2 above 0.05"},
			{Time: t0.Add(2 * time.Second), What: "Rollback initiated (strategy quick) to pggit-api:v1.0.3"},
			{Time: t0.Add(40 * time.Second), What: "System stable, Trigger error-rate back below 0.05"},
			{Time: t0.Add(40 * time.Second), What: "Rollback succeeded"},
		},
		Steps: []notify.StepResult{
			{Name: "stop", Started: t0.Add(2 * time.Second), Finished: t0.Add(5 * time.Second), Outcome: "ok"},
			{Name: "application", Started: t0.Add(5 * time.Second), Finished: t0.Add(20 * time.Second), Outcome: "ok"},
			{Name: "verify", Started: t0.Add(20 * time.Second), Finished: t0.Add(40 * time.Second), Outcome: "ok"},
		}}
	return &fleet{snap: snap, detail: map[string]TargetDetail{"pggit-api": detail}, records: map[string]*incident.Record{rec.ID: rec},
		delivered: []notify.Delivery{
			{Time: t0.Add(time.Second), Notifier: "pagerduty", Kind: notify.KindDetected, IncidentID: rec.ID, Result: notify.ResultDelivered, Attempts: 1},
			{Time: t0.Add(2 * time.Second), Notifier: "slack", Kind: notify.KindRollbackStarted, IncidentID: rec.ID, Result: notify.ResultFailed, Attempts: 8, Error: "slack: 503"},
			{Time: t0.Add(2 * time.Second), Notifier: "incident", Kind: notify.KindRollbackStarted, IncidentID: rec.ID, Result: notify.ResultDelivered, Attempts: 1},
		}}
}

func newTestConsole(f *fleet, token string) *Console {
	return New(f, f, f, f, Options{Token: []byte(token), Now: func() time.Time { return t0 }}, nil)
}
