// Package notifyfixture holds the events whose wire formats the notifiers'
// golden tests pin: one of each milestone with the details its producer
// attaches, so a change to how details are carried shows up as a diff of
// what the outbox, the webhook, PagerDuty, Slack and the incident record
// receive.
package notifyfixture

import (
	"bytes"
	"context"
	"math"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/test/receiver"
)

// At is the time of the first event; the others follow it by seconds.
var At = time.Date(2026, 11, 25, 14, 35, 0, 0, time.UTC)

// Target is the Deployment every case is about.
var Target = notify.Target{Namespace: "production", Deployment: "pggit-api"}

// IncidentID is the incident of the rollback cases.
var IncidentID = notify.IncidentID(Target, "7")

// Case is one named event.
type Case struct {
	Name  string
	Event notify.Event
}

func at(sec int) time.Time { return At.Add(time.Duration(sec) * time.Second) }

// Cases returns fresh copies of the events, in the order an incident
// produces them, then the ones outside a rollback.
func Cases() []Case {
	tg := Target
	id := IncidentID
	trig := notify.Requester{Kind: notify.RequestedByTrigger, Name: "error-rate", Reason: "error rate above 0.05", At: at(0)}
	alert := notify.Requester{Kind: notify.RequestedByAlertmanager, Name: "SecurityRollback", Reason: "CVE-2026-0001 in v1.1.0",
		At: at(0), Fingerprint: "f00dfeed", StartsAt: at(-30), Labels: map[string]string{"alertname": "SecurityRollback", "severity": "critical"}}
	link := []notify.Link{{Href: "https://rollguard.example/api/v1/incidents/" + id, Text: "rollguard incident"}}
	steps := []notify.StepResult{
		{Name: "preflight", Started: at(2), Finished: at(2), Outcome: notify.OutcomeOK},
		{Name: "stop", Started: at(3), Finished: at(5), Outcome: notify.OutcomeOK, Detail: "0 of 2 replicas left"},
		{Name: "application", Started: at(5), Finished: at(6), Outcome: notify.OutcomeOK, Detail: "template set to api=pggit-api:v1.0.3 (generation 3)"},
	}
	failedSteps := append(steps[:2:2], notify.StepResult{Name: "wait-rollout", Started: at(6), Finished: at(66), Outcome: notify.OutcomeFailed, Error: "rollout timed out after 1m0s"})
	unverifiedSteps := append(steps[:3:3], notify.StepResult{Name: "verify", Started: at(8), Finished: at(68), Outcome: notify.OutcomeUnverified,
		Detail: "no data to judge by: error-rate no data at 6 of 6 polls (prometheus unreachable)"})
	// run is what every event of a rollback run carries.
	run := func(d notify.Details) notify.Details {
		d.Reason, d.Requester = "error rate above 0.05", &trig
		d.BadVersion, d.DeployedAt = "pggit-api:v1.1.0", at(-3600)
		d.RestoredVersion, d.Strategy, d.RunID = "pggit-api:v1.0.3", "quick", "run-0001"
		return d
	}
	return []Case{
		{"detected", notify.Event{Kind: notify.KindDetected, Time: at(0), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{
				Reason: "error rate above 0.05", Requester: &trig,
				Query: "sum(rate(http_requests_total{code=~\"5..\"}[1m])) / sum(rate(http_requests_total[1m]))", Threshold: new(0.05),
				Op: "above", Window: 2 * time.Minute, BreachStartedAt: at(-120),
				Samples:    []notify.Sample{{Time: at(-120), Value: 0.07}, {Time: at(-60), Value: math.NaN()}, {Time: at(0), Value: 0.21}},
				BadVersion: "pggit-api:v1.1.0", DeployedAt: at(-3600)},
			Links: link}},
		{"detected_page_only_by_alert", notify.Event{Kind: notify.KindDetected, Time: at(0), Target: tg, IncidentID: notify.IncidentID(tg, "alert-f00dfeed"),
			Severity: notify.SeverityCritical, Security: true, Summary: "pggit-api: CVE-2026-0001 in v1.1.0 (page only: a human decides)",
			Details: notify.Details{Reason: "CVE-2026-0001 in v1.1.0", Requester: &alert}}},
		{"rollback_started", notify.Event{Kind: notify.KindRollbackStarted, Time: at(1), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Summary: "ROLLBACK INITIATED: production/pggit-api with plan quick (error rate above 0.05)",
			Details: run(notify.Details{Plan: []string{"preflight", "stop", "application", "wait-rollout", "verify"}}), Links: link}},
		{"rollback_resumed_gitops", notify.Event{Kind: notify.KindRollbackStarted, Time: at(1), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Summary: "ROLLBACK RESUMED: production/pggit-api with plan quick (error rate above 0.05)",
			Details: run(notify.Details{Resumed: true,
				GitOps: "rollguard suspended Kustomization flux-system/pggit-api; Git at abc123 still deploys api=pggit-api:v1.1.0"})}},
		{"step_started", notify.Event{Kind: notify.KindStepStarted, Time: at(3), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Summary: "production/pggit-api: step 2/5 stop started: scale to 0",
			Details: run(notify.Details{Step: "stop"})}},
		{"step_finished_restored", notify.Event{Kind: notify.KindStepFinished, Time: at(6), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: run(notify.Details{Step: "wait-rollout", StepOutcome: notify.OutcomeOK,
				StepDetail: "2 of 2 replicas available", Milestone: notify.MilestoneRestored})}},
		{"step_finished_stable", notify.Event{Kind: notify.KindStepFinished, Time: at(68), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: run(notify.Details{Step: "verify", StepOutcome: notify.OutcomeOK,
				StepDetail: "error-rate held below 0.05 for 1m0s", Verification: "error-rate held below 0.05 for 1m0s",
				Milestone: notify.MilestoneStable})}},
		{"step_finished_failed", notify.Event{Kind: notify.KindStepFinished, Time: at(66), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: run(notify.Details{Step: "wait-rollout", StepOutcome: notify.OutcomeFailed,
				StepError: "rollout timed out after 1m0s"})}},
		{"rollback_succeeded", notify.Event{Kind: notify.KindRollbackSucceeded, Time: at(70), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Summary: "ROLLBACK COMPLETE: production/pggit-api restored to pggit-api:v1.0.3 with plan quick",
			Details: run(notify.Details{Steps: steps,
				DataIntegrity: &notify.DataIntegrity{AlertDeliveryQueue: 3, LatestSchemaVersions: []string{"20261101_webhooks"}}}),
			Links: link}},
		{"rollback_failed", notify.Event{Kind: notify.KindRollbackFailed, Time: at(67), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Summary: "ROLLBACK STOPPED: production/pggit-api: wait-rollout: rollout timed out after 1m0s (put back: [stop]) (NOT put back: [application]); 1 of 2 replicas available",
			Details: run(notify.Details{Steps: failedSteps, Error: "wait-rollout: rollout timed out after 1m0s",
				Undone: []string{"stop"}, LeftBehind: []string{"application"},
				StateLeftBehind: "production/pggit-api api=pggit-api:v1.0.3, 2 replicas asked, 2 updated, 1 ready, 1 available"})}},
		{"rollback_unverified", notify.Event{Kind: notify.KindRollbackUnverified, Time: at(69), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: run(notify.Details{Steps: unverifiedSteps,
				Verification: "no data to judge by: error-rate no data at 6 of 6 polls (prometheus unreachable)"})}},
		{"cannot_rollback", notify.Event{Kind: notify.KindCannotRollback, Time: at(1), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Summary: "cannot roll back pggit-api: frozen: frozen until 2026-11-26T00:00:00Z by alice",
			Details: notify.Details{Reason: "frozen: frozen until 2026-11-26T00:00:00Z by alice", Requester: &trig,
				BadVersion: "pggit-api:v1.1.0", DeployedAt: at(-3600)}}},
		{"cannot_rollback_rejected_alert", notify.Event{Kind: notify.KindCannotRollback, Time: at(1), Target: tg, IncidentID: notify.IncidentID(tg, "alert-f00dfeed"),
			Severity: notify.SeverityCritical, Security: true,
			Summary: "rollguard cannot act on alert SecurityRollback (fingerprint f00dfeed): no target matches",
			Details: notify.Details{Reason: "rejected-alert: no target matches", Requester: &alert}}},
		{"would_rollback", notify.Event{Kind: notify.KindWouldRollback, Time: at(1), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityInfo,
			Summary: "dry-run: pggit-api: would roll back pggit-api:v1.1.0 with quick (3 steps)",
			Details: notify.Details{Reason: "error rate above 0.05", Requester: &trig,
				Plan: []string{"preflight", "stop", "application"}, Strategy: "quick"}}},
		{"blind", notify.Event{Kind: notify.KindBlind, Time: at(0), Target: tg, Trigger: "latency-p99", Severity: notify.SeverityWarning,
			Summary: "rollguard is blind on pggit-api/latency-p99: no data since 2026-11-25T14:30:00Z",
			Details: notify.Details{Error: "prometheus: connection refused", Since: at(-300)}}},
		{"blind_resolved", notify.Event{Kind: notify.KindBlindResolved, Time: at(0), Target: tg, Trigger: "latency-p99", Severity: notify.SeverityWarning,
			Summary: "rollguard sees again on pggit-api/latency-p99: data since 2026-11-25T14:35:00Z (blind since 2026-11-25T14:30:00Z)",
			Details: notify.Details{Since: at(-300), Until: at(0)}}},
		{"gitops_lifted", notify.Event{Kind: notify.KindDetected, Time: at(0), Target: tg, IncidentID: notify.IncidentID(tg, "5d8f7c9b4"), Severity: notify.SeverityInfo,
			Summary: "pggit-api: a human lifted rollguard's suspension of Kustomization flux-system/pggit-api (fixed in Git)",
			Details: notify.Details{Reason: "pggit-api: a human lifted rollguard's suspension of Kustomization flux-system/pggit-api (fixed in Git)",
				BadVersion: "api=pggit-api:v1.1.0",
				GitOps:     "pggit-api: a human lifted rollguard's suspension of Kustomization flux-system/pggit-api (fixed in Git)"}}},
		{"test_preflight", notify.Event{Kind: notify.KindTest, Time: at(0), Target: notify.Target{Cluster: "eu-1", Namespace: "production", Deployment: "pggit-api"},
			Severity: notify.SeverityInfo, Summary: "rollguard preflight test page for target pggit-api (production/pggit-api): no action needed",
			Details: notify.Details{Preflight: true, TargetName: "pggit-api"}}},
		{"record_failed", notify.Event{Kind: notify.KindRecordFailed, Time: at(2), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityError,
			Summary: "rollguard could not store the incident record " + id + " (the rollback is not affected): configmap is full",
			Details: notify.Details{Error: "configmap is full"}}},
	}
}

// Incident is a sequence of cases that make one incident, in delivery
// order: notifiers that fold an incident (Slack, the record) render them
// together.
type Incident struct {
	Name  string
	Cases []string
}

// Incidents are the whole incidents: a success, a failure, and a resumed
// run that ends unverified.
func Incidents() []Incident {
	return []Incident{
		{"incident_succeeded", []string{"detected", "rollback_started", "step_started", "step_finished_restored", "step_finished_stable", "rollback_succeeded"}},
		{"incident_failed", []string{"detected", "rollback_started", "step_started", "step_finished_failed", "rollback_failed"}},
		{"incident_unverified", []string{"detected", "rollback_resumed_gitops", "step_finished_restored", "rollback_unverified"}},
	}
}

// Singles are the cases, each a run of its own.
func Singles() []Run {
	var runs []Run
	for _, c := range Cases() {
		runs = append(runs, Run{c.Name, []notify.Event{c.Event}})
	}
	return runs
}

// Runs are the singles, then every incident.
func Runs() []Run {
	runs := Singles()
	byName := map[string]notify.Event{}
	for _, r := range runs {
		byName[r.Name] = r.Events[0]
	}
	for _, in := range Incidents() {
		r := Run{Name: in.Name}
		for _, c := range in.Cases {
			r.Events = append(r.Events, byName[c])
		}
		runs = append(runs, r)
	}
	return runs
}

// Run is a named sequence of events.
type Run struct {
	Name   string
	Events []notify.Event
}

// Deliver sends each run's events through a fresh notifier (made by
// newNotifier for a local receiver's base URL) and hands what the
// receiver got to check, in a subtest named for the run.
func Deliver(t *testing.T, runs []Run, newNotifier func(url string) (notify.Notifier, error), check func(t *testing.T, r Run, got []receiver.Request)) {
	t.Helper()
	rc := receiver.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	for _, r := range runs {
		t.Run(r.Name, func(t *testing.T) {
			rc.Reset()
			n, err := newNotifier(srv.URL)
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range r.Events {
				if err := n.Notify(context.Background(), e); err != nil {
					t.Fatalf("%s: %v", e.Kind, err)
				}
			}
			check(t, r, rc.Received(""))
		})
	}
}

// Golden compares got with the file testdata/golden/NAME, or rewrites the
// file when the environment has UPDATE_GOLDEN=1 (check the diff before
// committing it).
func Golden(t testing.TB, name string, got []byte) {
	t.Helper()
	file := filepath.Join("testdata", "golden", name)
	if os.Getenv("UPDATE_GOLDEN") == "1" {
		if err := os.MkdirAll(filepath.Dir(file), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with UPDATE_GOLDEN=1 to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with UPDATE_GOLDEN=1 after checking):\ngot:  %s\nwant: %s", file, got, want)
	}
}
