package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/inbox"
	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// incidentRecord reads the one incident of a daemon from its API.
// waitIncident waits until the one incident record has status (the
// record is written by a notifier of its own: it may trail the pages) and
// returns it; it returns the record as it is after 10s.
func waitIncident(t *testing.T, d *daemon, status incident.Status) incident.Record {
	t.Helper()
	var rec incident.Record
	deadline := time.Now().Add(10 * time.Second)
	for {
		rec = incidentRecord(t, d)
		if rec.Status == status || time.Now().After(deadline) {
			return rec
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func incidentRecord(t *testing.T, d *daemon) incident.Record {
	t.Helper()
	code, body, err := httpGet(d.url + "/api/v1/incidents")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /api/v1/incidents: %d %v", code, err)
	}
	var list []incident.Summary
	if err := json.Unmarshal([]byte(body), &list); err != nil || len(list) != 1 {
		t.Fatalf("incident list %q (%v): want one incident", body, err)
	}
	code, body, err = httpGet(d.url + "/api/v1/incidents/" + url.PathEscape(list[0].ID))
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET incident: %d %v", code, err)
	}
	var rec incident.Record
	if err := json.Unmarshal([]byte(body), &rec); err != nil {
		t.Fatal(err)
	}
	return rec
}

func recordStep(t *testing.T, rec incident.Record, name string) incident.StepResult {
	t.Helper()
	for _, s := range rec.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("incident has no step %s: %+v", name, rec.Steps)
	return incident.StepResult{}
}

// TestVerifyWaitsForPostRollbackData rolls a bad deploy back with the
// production templates (rate(...[1m])), with the default ramp pause and a
// short one. At the end of the ramp the queries still average the bad
// version's errors (Prometheus says so at the instant verify starts): a
// verify judging then reported a working rollback as failed. Verify waits
// until its queries read only data from after the rollout, holds its
// window, and the rollback succeeds. Wall time is about 1.5 min per case,
// run in parallel: the minute of the templates' range cannot be shortened
// without changing what is tested.
func TestVerifyWaitsForPostRollbackData(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	for _, pause := range []time.Duration{30 * time.Second, time.Second} {
		t.Run("ramp pause "+pause.String(), func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
			ns := sb.newNamespace(t, "verify")
			bad := sb.badImage(t, "verify", pggitsim.Profile{ErrorRate: 0.3, LatencySeconds: 0.05})
			sb.createDeployment(t, ns, healthyImage, 4)
			ib := sb.newInbox(t, "verify")
			d := startDaemon(t, sb, daemonSpec{PrometheusURL: sb.promURL, Inbox: &ib,
				Global: map[string]any{"templates": map[string]any{
					"errorRate":  map[string]any{"query": config.DefaultErrorRateQuery, "volumeQuery": config.DefaultErrorRateVolumeQuery},
					"latencyP99": map[string]any{"query": config.DefaultLatencyP99Query},
				}},
				Target: map[string]any{
					"namespace": ns,
					"healthURL": sb.simURL + "/health/" + ns + "/" + deploymentName,
					"rollback":  map[string]any{"strategy": "quick", "rampSteps": []int{2}, "rampPause": pause.String(), "rolloutTimeout": "30s", "verifyWindow": "3s"},
					"triggers": []map[string]any{
						{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "action": "rollback"},
						{"name": "latency-p99", "kind": "latencyP99", "above": 5, "action": "rollback"},
					},
				}})
			d.watch(t, "error-rate", 60*time.Second, stateIs("ok"))
			sb.setImage(t, ns, bad)
			d.watch(t, "error-rate", 90*time.Second, stateIs("firing"))

			evs := ib.WaitPagerDuty(t, "the rollback's outcome page", 150*time.Second, func(evs []inbox.PagerDutyEvent) bool {
				return len(evs) > 0 && evs[len(evs)-1].Kind(t) != "detected"
			})
			if k := evs[len(evs)-1].Kind(t); k != "rollback_succeeded" {
				t.Fatalf("outcome %s (%s), want rollback_succeeded", k, evs[len(evs)-1].Payload.Summary)
			}
			sb.waitRollout(t, ns, healthyImage, 4)

			rec := waitIncident(t, d, incident.StatusResolved)
			rolled, verify := recordStep(t, rec, rollback.StepWaitRollout), recordStep(t, rec, rollback.StepVerify)
			waited := verify.Finished.Sub(verify.Started)
			t.Logf("rollout done %s, verify %s .. %s (%v): %s", fmtTime(rolled.Finished), fmtTime(verify.Started), fmtTime(verify.Finished), waited.Round(time.Millisecond), verify.Detail)
			// It judged from one minute after the rollout, then held 3 s.
			// (The record's times are the notifications', a few ms after
			// the journal's: 500 ms of slack.)
			if verify.Finished.Before(rolled.Finished.Add(time.Minute+3*time.Second-500*time.Millisecond)) || !strings.Contains(verify.Detail, "after waiting") {
				t.Errorf("verify ended %v after the rollout, detail %q: want it to wait out the 1m range, then hold 3s", verify.Finished.Sub(rolled.Finished), verify.Detail)
			}
			if rec.Status != incident.StatusResolved || !strings.HasPrefix(rec.Verification, "held 3s") {
				t.Errorf("incident %s, verification %q", rec.Status, rec.Verification)
			}

			// What judging at the end of the ramp would have read: the bad
			// version's errors, still in the minute's average.
			sel := fmt.Sprintf(`namespace=%q,deployment=%q`, ns, deploymentName)
			ratio := fmt.Sprintf(`(sum(rate(http_requests_total{%s,status=~"5.."}[1m])) or vector(0)) / sum(rate(http_requests_total{%s}[1m]))`, sel, sel)
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			v, ok, err := sandboxfixture.PromValueAt(ctx, sb.promURL, ratio, verify.Started)
			if err != nil || !ok {
				t.Fatalf("error ratio at the end of the ramp: %v %v", ok, err)
			}
			t.Logf("error ratio over [1m] when verify started: %.3f", v)
			if v <= 0.05 {
				t.Errorf("the [1m] error ratio was %.3f when verify started: not the case this test is about", v)
			}
		})
	}
}

// TestVerifyUnverifiedWithPrometheusStopped stops the trigger's Prometheus
// once the rollback has put the previous version back: verify has no data,
// and the page says UNVERIFIED with what is known (health, the rollout),
// never "ROLLBACK COMPLETE". About 40 s.
func TestVerifyUnverifiedWithPrometheusStopped(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	promURL, killProm := startPrometheus(t, sb)
	ns := sb.newNamespace(t, "unverified")
	bad := sb.badImage(t, "unverified", pggitsim.Profile{ErrorRate: 0.3, LatencySeconds: 0.05})
	sb.createDeployment(t, ns, healthyImage, 4)
	ib := sb.newInbox(t, "unverified")
	health := sb.simURL + "/health/" + ns + "/" + deploymentName
	d := startDaemon(t, sb, daemonSpec{PrometheusURL: promURL, Inbox: &ib, Target: map[string]any{
		"namespace": ns,
		"healthURL": health,
		"rollback":  map[string]any{"strategy": "quick", "rampSteps": []int{2}, "rampPause": "1s", "rolloutTimeout": "30s", "verifyWindow": "3s"},
		"triggers": []map[string]any{
			{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "action": "rollback"},
		},
	}})
	d.watch(t, "error-rate", 40*time.Second, stateIs("ok"))
	sb.setImage(t, ns, bad)
	d.watch(t, "error-rate", 40*time.Second, stateIs("firing"))
	// Stopped once the previous version is back in the template: the
	// plan goes on, verify has nothing to judge by.
	sandboxfixture.WaitFor(t, "the rollback to write the previous version", 30*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		_, state, err := sb.rolloutState(ctx, ns, healthyImage, 4)
		return strings.HasPrefix(state, "image "+healthyImage), state, err
	})
	killProm()
	t.Logf("prometheus stopped %v after the bad deploy", time.Since(began).Round(time.Millisecond))

	evs := ib.WaitPagerDuty(t, "the rollback's outcome page", 60*time.Second, func(evs []inbox.PagerDutyEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].Kind(t) != "detected"
	})
	last := evs[len(evs)-1]
	checkPage(t, last, ns, "error-rate", "critical")
	if k := last.Kind(t); k != "rollback_unverified" || !strings.HasPrefix(last.Payload.Summary, "ROLLBACK DONE, UNVERIFIED: ") {
		t.Fatalf("outcome %s %q, want rollback_unverified", k, last.Payload.Summary)
	}
	var known string
	last.Detail(t, "verification", &known)
	for _, want := range []string{"no data to judge by: error-rate no data at 3 of 3 polls", "health " + health + " 200",
		"deployment " + ns + "/" + deploymentName + " api=" + healthyImage + ", 4 replicas asked"} {
		if !strings.Contains(known, want) {
			t.Errorf("verification %q lacks %q", known, want)
		}
	}
	for _, e := range evs {
		if e.Kind(t) == "rollback_succeeded" {
			t.Errorf("a success page without data: %s", e.Payload.Summary)
		}
	}
	sb.waitRollout(t, ns, healthyImage, 4)

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var msgs []inbox.SlackMessage
	sandboxfixture.WaitFor(t, "the unverified slack message", 10*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		m, err := ib.Slack(ctx)
		msgs = m
		return len(m) >= 2, fmt.Sprintf("%d messages", len(m)), err
	})
	if txt := msgs[len(msgs)-1].Text; !strings.Contains(txt, "ROLLBACK DONE, UNVERIFIED") || !strings.Contains(txt, "Status: UNVERIFIED") {
		t.Errorf("last slack message:\n%s", txt)
	}
	rec := waitIncident(t, d, incident.StatusUnverified)
	if rec.Status != incident.StatusUnverified || rec.Verification != known || rec.StableAt != (time.Time{}) {
		t.Errorf("incident %s, stable at %v, verification %q", rec.Status, rec.StableAt, rec.Verification)
	}
	st, err := d.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Targets) != 1 || !strings.HasPrefix(st.Targets[0].LastResult, "quick done, unverified") {
		t.Errorf("target status %+v, want the last result unverified", st.Targets)
	}
	code, metrics, err := httpGet(d.url + "/metrics")
	if err != nil || code != http.StatusOK || !strings.Contains(metrics, `rollguard_rollbacks_total{plan="quick",result="unverified",target="pggit-api"} 1`) {
		t.Errorf("metrics (%d %v) lack one unverified rollback", code, err)
	}
}
