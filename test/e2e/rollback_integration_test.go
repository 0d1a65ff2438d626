package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/test/inbox"
	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestBadDeployRolledBackEndToEnd is the whole product on one bad deploy:
// the error-rate trigger fires, rollguard rolls the Deployment back with
// the quick plan, and humans get one PagerDuty incident (one dedup_key for
// every event), two Slack messages in the runbook's order and an incident
// report with every timeline milestone stamped; the Deployment is back on
// the good version and the error ratio Prometheus computes is back to 0.
func TestBadDeployRolledBackEndToEnd(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	const threshold = 0.05

	ns := sb.newNamespace(t, "rollback")
	bad := sb.badImage(t, "rollback", pggitsim.Profile{ErrorRate: 0.2, LatencySeconds: 0.05})
	sb.createDeployment(t, ns, healthyImage, 4)
	ib := sb.newInbox(t, "rollback")
	d := startDaemon(t, sb, daemonSpec{PrometheusURL: sb.promURL, Inbox: &ib, Target: map[string]any{
		"namespace": ns,
		"healthURL": sb.simURL + "/health/" + ns + "/" + deploymentName,
		"rollback":  map[string]any{"strategy": "quick", "rampSteps": []int{2}, "rampPause": "2s", "rolloutTimeout": "30s", "verifyWindow": "5s"},
		"triggers": []map[string]any{
			{"name": "error-rate", "kind": "errorRate", "above": threshold, "minRate": 1, "action": "rollback"},
		},
	}})
	d.watch(t, "error-rate", 40*time.Second, stateIs("ok"))

	sb.setImage(t, ns, bad)
	obs := d.watch(t, "error-rate", 60*time.Second, stateIs("firing"))
	bs := checkFireTiming(t, obs, window)
	fired := time.Now()

	// The plan runs to its end: the last page says it succeeded.
	evs := ib.WaitPagerDuty(t, "rollback_succeeded page", 90*time.Second, func(evs []inbox.PagerDutyEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].Kind(t) == "rollback_succeeded"
	})
	t.Logf("rollback succeeded %v after the trigger fired (%d pagerduty events)", time.Since(fired).Round(time.Millisecond), len(evs))
	sb.waitRollout(t, ns, healthyImage, 4)

	t.Run("pagerduty: one incident", func(t *testing.T) {
		checkIncidentPages(t, evs, ns, threshold, bs)
	})
	t.Run("pagerduty: change events", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		reqs, err := ib.Received(ctx, receiver.PagerDutyChangePath)
		if err != nil {
			t.Fatal(err)
		}
		var sums []string
		for _, r := range reqs {
			var ce struct {
				RoutingKey string `json:"routing_key"`
				Payload    struct {
					Summary string `json:"summary"`
				} `json:"payload"`
			}
			if err := json.Unmarshal([]byte(r.Body), &ce); err != nil {
				t.Fatalf("change event %q: %v", r.Body, err)
			}
			if ce.RoutingKey != routingKey || r.Status != http.StatusAccepted {
				t.Errorf("change event: routing_key %q status %d", ce.RoutingKey, r.Status)
			}
			sums = append(sums, ce.Payload.Summary)
		}
		want := []string{
			fmt.Sprintf("rollguard rollback of %s/%s started (%s -> %s)", ns, deploymentName, bad, healthyImage),
			fmt.Sprintf("rollguard rollback of %s/%s succeeded (%s -> %s)", ns, deploymentName, bad, healthyImage),
		}
		if strings.Join(sums, "\n") != strings.Join(want, "\n") {
			t.Errorf("change events:\n%s\nwant:\n%s", strings.Join(sums, "\n"), strings.Join(want, "\n"))
		}
	})
	t.Run("slack: initiated then resolved", func(t *testing.T) {
		var msgs []inbox.SlackMessage
		sandboxfixture.WaitFor(t, "two slack messages", 10*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			m, err := ib.Slack(ctx)
			msgs = m
			return len(m) >= 2, fmt.Sprintf("%d messages", len(m)), err
		})
		if len(msgs) != 2 {
			t.Fatalf("slack got %d messages, want 2 (initiated, resolved)", len(msgs))
		}
		first, last := msgs[0].Text, msgs[1].Text
		if !strings.Contains(first, "ROLLBACK INITIATED: "+ns+"/"+deploymentName) || !strings.Contains(first, bad+" → "+healthyImage) {
			t.Errorf("first slack message is not ROLLBACK INITIATED %s → %s:\n%s", bad, healthyImage, first)
		}
		for _, want := range []string{"🚨 INCIDENT: " + ns + "/" + deploymentName + " Deployment Rollback (error-rate)", "Severity: CRITICAL", "Status: RESOLVED", "Timeline:", "Actions Taken:", "Rolled back to " + healthyImage} {
			if !strings.Contains(last, want) {
				t.Errorf("last slack message lacks %q:\n%s", want, last)
			}
		}
		checkTimeline(t, "slack", last, `\d{2}:\d{2}:\d{2} UTC`)
		for _, m := range msgs {
			if m.Status != http.StatusOK {
				t.Errorf("receiver answered %d to a slack message", m.Status)
			}
		}
	})
	t.Run("incident report", func(t *testing.T) {
		checkIncidentReport(t, d, evs, bs)
	})
	t.Run("closed loop: status and error ratio", func(t *testing.T) {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		st, err := d.client.Status(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if len(st.Targets) != 1 || !strings.HasPrefix(st.Targets[0].LastResult, "quick succeeded") || st.Targets[0].Running != "" {
			t.Errorf("target status %+v, want lastResult quick succeeded and nothing running", st.Targets)
		}
		sel := fmt.Sprintf(`namespace=%q,deployment=%q`, ns, deploymentName)
		ratio := fmt.Sprintf(`(sum(rate(http_requests_total{%s,status=~"5.."}[5s])) or vector(0)) / sum(rate(http_requests_total{%s}[5s]))`, sel, sel)
		sandboxfixture.WaitFor(t, "error ratio back near 0 in the shared prometheus", 30*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			v, ok, err := sandboxfixture.PromValue(ctx, sb.promURL, ratio)
			if err != nil || !ok {
				return false, "no result", err
			}
			return v < 0.01, fmt.Sprintf("ratio %.4f", v), nil
		})
		d.watch(t, "error-rate", 20*time.Second, stateIs("ok"))
	})
}

// checkIncidentPages: the incident is paged as on-call acts on it, the
// detection and the outcome ("detected", then "rollback_succeeded"), on one
// dedup_key with the full payload; the steps are not paged.
func checkIncidentPages(t *testing.T, evs []inbox.PagerDutyEvent, ns string, threshold float64, bs time.Time) {
	t.Helper()
	if len(evs) != 2 {
		t.Fatalf("%d pagerduty events, want detected and rollback_succeeded: %v", len(evs), evs)
	}
	key := evs[0].DedupKey
	if !strings.HasPrefix(key, ns+"_"+deploymentName+"_") {
		t.Errorf("dedup_key %q, want the incident id %s_%s_<revision>", key, ns, deploymentName)
	}
	count := map[string]int{}
	var kinds []string
	for i, e := range evs {
		k := e.Kind(t)
		count[k]++
		kinds = append(kinds, k)
		if e.DedupKey != key {
			t.Errorf("event %d (%s): dedup_key %q, want %q like every event of the incident", i, k, e.DedupKey, key)
		}
		var id string
		if !e.Detail(t, "incident_id", &id) || id != key {
			t.Errorf("event %d (%s): custom_details.incident_id %q, want %q", i, k, id, key)
		}
		checkPage(t, e, ns, "error-rate", "critical")
		checkEvidence(t, e, errorRateQuery, threshold, bs)
	}
	if kinds[0] != "detected" || kinds[len(kinds)-1] != "rollback_succeeded" {
		t.Errorf("event kinds %v: want detected first and rollback_succeeded last", kinds)
	}
	for _, k := range []string{"detected", "rollback_succeeded"} {
		if count[k] != 1 {
			t.Errorf("%d %s events, want 1 (kinds %v)", count[k], k, kinds)
		}
	}
	fired := checkEvidence(t, evs[0], errorRateQuery, threshold, bs)
	if got := fired.Sub(bs); got < window || got > window+fireSlack {
		t.Errorf("fired %v after the breach started, want within [%v, %v]", got, window, window+fireSlack)
	}
	t.Logf("%d events on dedup_key %s: %v", len(evs), key, kinds)
}

var timelineHeads = []string{"detected", "Rollback initiated", "restored", "System stable"}

// checkTimeline checks the "Timeline:" block of a runbook template: one
// stamped line per entry, and the four milestones present.
func checkTimeline(t *testing.T, where, text, stamp string) {
	t.Helper()
	_, rest, ok := strings.Cut(text, "Timeline:\n")
	if !ok {
		t.Errorf("%s: no Timeline block", where)
		return
	}
	block, _, _ := strings.Cut(rest, "\n\n")
	line := regexp.MustCompile(`^- ` + stamp + `: \S`)
	lines := strings.Split(strings.TrimSpace(block), "\n")
	for _, l := range lines {
		if !line.MatchString(l) || strings.Contains(l, "[") {
			t.Errorf("%s: timeline line %q is not `- <time>: <what>` with a real time", where, l)
		}
	}
	for _, h := range timelineHeads {
		found := false
		for _, l := range lines {
			found = found || strings.Contains(l, h)
		}
		if !found {
			t.Errorf("%s: timeline has no %q line:\n%s", where, h, block)
		}
	}
}

// checkIncidentReport reads the incident from the API: one incident, the
// PagerDuty dedup_key's, resolved, every milestone stamped in order, and
// its Markdown (the same as the file in incidentDir) with no placeholder in
// either timeline.
func checkIncidentReport(t *testing.T, d *daemon, evs []inbox.PagerDutyEvent, bs time.Time) {
	t.Helper()
	code, body, err := httpGet(d.url + "/api/v1/incidents")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET /api/v1/incidents: %d %v", code, err)
	}
	var list []incident.Summary
	if err := json.Unmarshal([]byte(body), &list); err != nil {
		t.Fatalf("incident list %q: %v", body, err)
	}
	if len(list) != 1 {
		t.Fatalf("%d incidents, want 1: %+v", len(list), list)
	}
	id := list[0].ID
	if len(evs) > 0 && id != evs[0].DedupKey {
		t.Errorf("incident id %q, pagerduty dedup_key %q: want the same", id, evs[0].DedupKey)
	}
	code, body, err = httpGet(d.url + "/api/v1/incidents/" + url.PathEscape(id))
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET incident %s: %d %v", id, code, err)
	}
	var rec incident.Record
	if err := json.Unmarshal([]byte(body), &rec); err != nil {
		t.Fatalf("incident %s: %v", id, err)
	}
	if rec.Status != incident.StatusResolved {
		t.Errorf("incident status %q, want resolved", rec.Status)
	}
	if !rec.BreachStartedAt.Equal(bs) {
		t.Errorf("breachStartedAt %s, want %s", fmtTime(rec.BreachStartedAt), fmtTime(bs))
	}
	steps := []struct {
		name string
		at   time.Time
	}{
		{"breach started", rec.BreachStartedAt}, {"detected", rec.DetectedAt}, {"rollback initiated", rec.RollbackStartedAt},
		{"restored", rec.RestoredAt}, {"stable", rec.StableAt},
	}
	for i, s := range steps {
		if s.at.IsZero() {
			t.Errorf("incident: %s has no time", s.name)
			continue
		}
		if i > 0 && s.at.Before(steps[i-1].at) {
			t.Errorf("incident: %s at %s before %s at %s", s.name, fmtTime(s.at), steps[i-1].name, fmtTime(steps[i-1].at))
		}
	}
	if got := rec.DetectedAt.Sub(rec.BreachStartedAt); got < window || got > window+fireSlack+time.Second {
		t.Errorf("detected %v after the breach started, want within [%v, %v]", got, window, window+fireSlack+time.Second)
	}
	t.Logf("timeline: breach %s, detected +%v, initiated +%v, restored +%v, stable +%v", fmtTime(bs),
		rec.DetectedAt.Sub(bs).Round(time.Millisecond), rec.RollbackStartedAt.Sub(bs).Round(time.Millisecond),
		rec.RestoredAt.Sub(bs).Round(time.Millisecond), rec.StableAt.Sub(bs).Round(time.Millisecond))

	code, md, err := httpGet(d.url + "/api/v1/incidents/" + url.PathEscape(id) + "?format=markdown")
	if err != nil || code != http.StatusOK {
		t.Fatalf("GET incident %s markdown: %d %v", id, code, err)
	}
	file, err := os.ReadFile(filepath.Join(d.incidentDir, id+".md"))
	if err != nil || string(file) != md {
		t.Errorf("incidentDir's %s.md differs from the API's markdown (%v)", id, err)
	}
	if !strings.HasPrefix(md, "# Incident "+id+": ") || !strings.Contains(md, "Status: RESOLVED") {
		t.Errorf("markdown does not open as the resolved incident %s:\n%s", id, md)
	}
	checkTimeline(t, "markdown", md, `\d{2}:\d{2}:\d{2} UTC`)
	_, email, ok := strings.Cut(md, "## Email escalation")
	if !ok {
		t.Fatalf("markdown has no email escalation:\n%s", md)
	}
	checkTimeline(t, "email escalation", email, `\d{4}-\d{2}-\d{2} \d{2}:\d{2}:\d{2} UTC`)
	if t.Failed() {
		t.Logf("markdown:\n%s", md)
	}
}
