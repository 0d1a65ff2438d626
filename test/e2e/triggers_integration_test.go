package e2e

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/test/inbox"
	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestTriggerFiresOnceWindowHeld deploys a bad version under a running
// daemon whose triggers only page, so nothing is rolled back and the
// instant of firing can be read from the status API and the page: the
// trigger goes pending at the first breaching sample and fires once the
// breach has held for `for`, not a tick earlier and at most a tick or two
// later. The other trigger of the target stays quiet.
func TestTriggerFiresOnceWindowHeld(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	cases := []struct {
		name      string
		fires     string // the trigger the bad version breaches
		quiet     string // the one it must not
		query     string
		threshold float64
		profile   pggitsim.Profile
	}{
		{
			name: "20 percent 5xx fires error-rate", fires: "error-rate", quiet: "latency-p99",
			query: errorRateQuery, threshold: 0.05,
			profile: pggitsim.Profile{ErrorRate: 0.2, LatencySeconds: 0.05},
		},
		{
			name: "slow P99 fires latency-p99", fires: "latency-p99", quiet: "error-rate",
			query: latencyP99Query, threshold: 5,
			profile: pggitsim.Profile{LatencySeconds: 0.05, SlowFraction: 0.05, SlowSeconds: 8},
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()

			ns := sb.newNamespace(t, tc.fires)
			bad := sb.badImage(t, tc.fires, tc.profile)
			sb.createDeployment(t, ns, healthyImage, 4)
			ib := sb.newInbox(t, tc.fires)
			d := startDaemon(t, sb, daemonSpec{PrometheusURL: sb.promURL, Inbox: &ib, Target: map[string]any{
				"namespace": ns,
				"triggers": []map[string]any{
					{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "action": "page"},
					{"name": "latency-p99", "kind": "latencyP99", "above": 5, "action": "page"},
				},
			}})
			// Both triggers have data and are healthy before the deploy.
			d.watch(t, "error-rate", 40*time.Second, stateIs("ok"))
			d.watch(t, "latency-p99", 20*time.Second, stateIs("ok"))

			sb.setImage(t, ns, bad)
			obs := d.watch(t, tc.fires, 60*time.Second, stateIs("firing"))
			bs := checkFireTiming(t, obs, window)

			// The page: exactly one, for this trigger, with the evidence.
			ib.WaitPagerDuty(t, "page of "+tc.fires, 10*time.Second, func(evs []inbox.PagerDutyEvent) bool { return len(evs) >= 1 })
			time.Sleep(2 * time.Second) // a second page would come on the next ticks; see that none does
			e := ib.OnlyPagerDuty(t, "the page of "+tc.fires)
			checkPage(t, e, ns, tc.fires, "critical")
			if e.DedupKey != ns+"/"+deploymentName {
				t.Errorf("dedup_key = %q, want %q (a page-only action has no incident id)", e.DedupKey, ns+"/"+deploymentName)
			}
			fired := checkEvidence(t, e, tc.query, tc.threshold, bs)
			if got := fired.Sub(bs); got < window || got > window+fireSlack {
				t.Errorf("evidence: fired %v after the breach started, want within [%v, %v]", got, window, window+fireSlack)
			}
			if lag := e.Received.Sub(fired); lag < 0 || lag > 2*time.Second {
				t.Errorf("page received %v after the trigger fired, want within 2s", lag)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			q, err := d.triggerStatus(ctx, tc.quiet)
			if err != nil {
				t.Fatal(err)
			}
			if q.State.String() != "ok" {
				t.Errorf("%s: state %s (value %.4g), want ok: the bad version breaches only %s", tc.quiet, q.State, q.Value, tc.fires)
			}
			t.Logf("%s fired %v after its breach started (value %.4g); page received %v later",
				tc.fires, fired.Sub(bs).Round(time.Millisecond), obs[len(obs)-1].Status.Value, e.Received.Sub(fired).Round(time.Millisecond))
		})
	}
}

// checkFireTiming checks the status observations of one breach run: the
// trigger was pending (with one breachStart) until its samples spanned
// `for`, and firing as soon as they did, at most fireSlack late. It returns
// the breach start.
func checkFireTiming(t *testing.T, obs []observation, forDur time.Duration) time.Time {
	t.Helper()
	fi := len(obs) - 1
	if obs[fi].Status.State.String() != "firing" {
		t.Fatalf("last observation is %s, not firing", obs[fi].Status.State)
	}
	fire := obs[fi].Status
	bs := fire.BreachStart
	if bs.IsZero() {
		t.Fatalf("firing status has no breachStart: %+v", fire)
	}
	pending := 0
	for j := fi - 1; j >= 0 && obs[j].Status.State.String() == "pending"; j-- {
		s := obs[j].Status
		pending++
		if !s.BreachStart.Equal(bs) {
			t.Errorf("pending at %s had breachStart %s, firing has %s: the run restarted", fmtTime(obs[j].At), fmtTime(s.BreachStart), fmtTime(bs))
		}
		if span := s.LastSample.Sub(bs); span >= forDur {
			t.Errorf("still pending with a sample %v after the breach started (for %v): fired late", span, forDur)
		}
	}
	if pending == 0 {
		t.Errorf("never saw the trigger pending before it fired")
	}
	for _, o := range obs {
		if o.Status.State.String() == "firing" && o.At.Before(bs.Add(forDur)) {
			t.Errorf("firing at %s, before breachStart %s + for %v", fmtTime(o.At), fmtTime(bs), forDur)
		}
	}
	if span := fire.LastSample.Sub(bs); span < forDur || span > forDur+fireSlack {
		t.Errorf("firing with its last sample %v after the breach started, want within [%v, %v]", span, forDur, forDur+fireSlack)
	}
	if seen := obs[fi].At.Sub(bs); seen > forDur+fireSlack {
		t.Errorf("first seen firing %v after the breach started, want at most %v", seen, forDur+fireSlack)
	}
	t.Logf("pending for %d polls from %s; firing seen %v after the breach started", pending, fmtTime(bs), obs[fi].At.Sub(bs).Round(time.Millisecond))
	return bs
}

// checkPage checks the fields every alert event of a target carries.
func checkPage(t *testing.T, e inbox.PagerDutyEvent, ns, trig, severity string) {
	t.Helper()
	if e.Status != http.StatusAccepted {
		t.Errorf("receiver answered %d to the event, want 202", e.Status)
	}
	for _, c := range []struct{ field, got, want string }{
		{"routing_key", e.RoutingKey, routingKey},
		{"event_action", e.EventAction, "trigger"},
		{"payload.severity", e.Payload.Severity, severity},
		{"payload.source", e.Payload.Source, "rollguard/" + ns},
		{"payload.component", e.Payload.Component, deploymentName},
		{"payload.group", e.Payload.Group, ns},
		{"payload.class", e.Payload.Class, trig},
	} {
		if c.got != c.want {
			t.Errorf("%s = %q, want %q", c.field, c.got, c.want)
		}
	}
	if n := len(e.Payload.Summary); n == 0 || n > 1024 {
		t.Errorf("payload.summary has %d bytes, want 1..1024: %q", n, e.Payload.Summary)
	}
	if e.Payload.Timestamp.IsZero() {
		t.Errorf("payload.timestamp is missing")
	}
}

// checkEvidence checks custom_details' query, threshold, breach start and
// samples, and returns the firing instant: the window's last sample.
func checkEvidence(t *testing.T, e inbox.PagerDutyEvent, query string, threshold float64, bs time.Time) time.Time {
	t.Helper()
	var q string
	if !e.Detail(t, "query", &q) || q != query {
		t.Errorf("custom_details.query = %q, want %q", q, query)
	}
	var th float64
	if !e.Detail(t, "threshold", &th) || th != threshold {
		t.Errorf("custom_details.threshold = %v, want %v", th, threshold)
	}
	var start time.Time
	if !e.Detail(t, "breach_started_at", &start) || !start.Equal(bs) {
		t.Errorf("custom_details.breach_started_at = %s, want the status API's breachStart %s", fmtTime(start), fmtTime(bs))
	}
	var samples []evidenceSample
	if !e.Detail(t, "samples", &samples) || len(samples) == 0 {
		keys := make([]string, 0, len(e.Payload.CustomDetails))
		for k := range e.Payload.CustomDetails {
			keys = append(keys, k)
		}
		t.Fatalf("custom_details.samples missing or empty; custom_details keys %v", keys)
	}
	breaching := 0
	for i, s := range samples {
		if i > 0 && !s.Time.After(samples[i-1].Time) {
			t.Errorf("samples not in time order at %d: %s after %s", i, fmtTime(s.Time), fmtTime(samples[i-1].Time))
		}
		if s.Time.Before(bs) {
			continue
		}
		breaching++
		if !(s.Value > threshold) {
			t.Errorf("sample at %s (after the breach started) = %v, want > %v", fmtTime(s.Time), s.Value, threshold)
		}
	}
	last := samples[len(samples)-1].Time
	// One sample a second over `for`: the run holds at least for/interval
	// samples, minus one for a slow tick.
	if min := int(window/time.Second) - 1; breaching < min {
		t.Errorf("evidence holds %d breaching samples, want at least %d", breaching, min)
	}
	return last
}

// startPrometheus runs a Prometheus of the test's own, scraping the
// simulator every second, so the test can kill it without touching the
// shared one. It returns its URL and a function that kills it.
func startPrometheus(t *testing.T, sb *sandbox) (string, func()) {
	t.Helper()
	bin := sb.env.Get(t, "PROMETHEUS_BIN")
	simHost := strings.TrimPrefix(strings.TrimPrefix(sb.simURL, "http://"), "https://")
	prom := sandboxfixture.StartOwnPrometheus(t, bin, t.TempDir(), sandboxfixture.SimulatorScrapeConfig(simHost))
	addr, stop := prom.Addr, prom.Kill
	u := "http://" + addr
	sandboxfixture.WaitFor(t, "own prometheus ready on "+addr, 15*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		code, body, err := httpGet(u + "/-/ready")
		return err == nil && code == http.StatusOK, fmt.Sprintf("%d %s", code, strings.TrimSpace(body)), nil
	})
	// Prometheus 2.42 scrapes for the first time about 5.5 s after start
	// (service discovery): wait for it, or a daemon started now is blind
	// from its first tick and pages it, which is right but not this test.
	sandboxfixture.WaitFor(t, "own prometheus scraped the simulator", 20*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		code, body, err := httpGet(u + "/api/v1/query?query=" + url.QueryEscape(`up == 1`))
		return err == nil && code == http.StatusOK && strings.Contains(body, `"value"`), strings.TrimSpace(body), nil
	})
	return u, stop
}

// TestPrometheusDownMidBreach kills the trigger's Prometheus while the
// trigger is pending: the trigger goes nodata, never fires (rolling back
// because the monitoring died is what rollguard must not do), and after
// blindAfter one warning page says rollguard is blind.
func TestPrometheusDownMidBreach(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	const blindAfter = 5 * time.Second

	promURL, killProm := startPrometheus(t, sb)
	ns := sb.newNamespace(t, "promdown")
	bad := sb.badImage(t, "promdown", pggitsim.Profile{ErrorRate: 0.2, LatencySeconds: 0.05})
	sb.createDeployment(t, ns, healthyImage, 4)
	ib := sb.newInbox(t, "promdown")
	d := startDaemon(t, sb, daemonSpec{PrometheusURL: promURL, Inbox: &ib, BlindAfter: blindAfter, Target: map[string]any{
		"namespace": ns,
		"rollback":  map[string]any{"strategy": "quick", "rampSteps": []int{2}, "rampPause": "1s", "rolloutTimeout": "30s", "verifyWindow": "5s"},
		"triggers": []map[string]any{
			{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "action": "rollback"},
		},
	}})
	// The first scrape of a new Prometheus comes 5-6 s after its start.
	before := d.watch(t, "error-rate", 40*time.Second, stateIs("ok"))

	sb.setImage(t, ns, bad)
	// Mid-breach: the run has held a few seconds, well short of `for`.
	pend := d.watch(t, "error-rate", 20*time.Second, func(s trigger.Status) bool {
		return s.State.String() == "pending" && s.LastSample.Sub(s.BreachStart) >= 4*time.Second
	})
	bs := pend[len(pend)-1].Status.BreachStart
	killProm()
	killed := time.Now()
	t.Logf("prometheus killed %v after the breach started", killed.Sub(bs).Round(time.Millisecond))
	if killed.Sub(bs) >= window-2*time.Second {
		t.Fatalf("prometheus killed %v after the breach started: too close to for %v to tell", killed.Sub(bs), window)
	}

	// Watch well past the instant the trigger would have fired and past
	// blindAfter, so a late fire or a second blind page would be seen.
	watchUntil := window + 4*time.Second
	after := d.watch(t, "error-rate", watchUntil+10*time.Second, func(trigger.Status) bool { return time.Since(killed) >= watchUntil })
	for _, o := range append(append(before, pend...), after...) {
		if o.Status.State.String() == "firing" {
			t.Errorf("firing at %s with prometheus down", fmtTime(o.At))
		}
	}
	var noData time.Time
	for _, o := range after {
		st := o.Status.State.String()
		switch {
		case noData.IsZero() && st == "nodata":
			noData = o.Status.NoDataSince
			t.Logf("nodata %v after the kill, since %s: %s", o.At.Sub(killed).Round(time.Millisecond), fmtTime(noData), o.Status.LastError)
			if o.Status.LastError == "" {
				t.Errorf("nodata without lastError")
			}
		case !noData.IsZero() && st != "nodata":
			t.Errorf("state %s at %s after nodata with prometheus still down", st, fmtTime(o.At))
		}
	}
	if noData.IsZero() {
		t.Fatalf("never nodata in %v after prometheus was killed", watchUntil)
	}
	if got := noData.Sub(killed); got < -time.Second || got > 2*time.Second {
		t.Errorf("nodata since %s, %v after the kill: want the first tick after it", fmtTime(noData), got)
	}

	e := ib.OnlyPagerDuty(t, "the blind page")
	checkPage(t, e, ns, "error-rate", "warning")
	if k := e.Kind(t); k != "blind" {
		t.Errorf("custom_details.kind = %q, want blind", k)
	}
	if want := ns + "/" + deploymentName + "/error-rate/blind"; e.DedupKey != want {
		t.Errorf("dedup_key = %q, want %q", e.DedupKey, want)
	}
	if got := e.Received.Sub(noData); got < blindAfter || got > blindAfter+fireSlack {
		t.Errorf("blind page %v after nodata began, want within [%v, %v]", got, blindAfter, blindAfter+fireSlack)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	msgs, err := ib.Slack(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(msgs) != 1 || !strings.Contains(msgs[0].Text, "BLIND") {
		t.Errorf("slack got %d messages, want exactly 1 saying BLIND: %+v", len(msgs), msgs)
	}

	// Nothing was rolled back: the bad version still runs.
	done, state, err := sb.rolloutState(ctx, ns, bad, 4)
	if err != nil || !done {
		t.Errorf("deployment after the blind episode: %s (%v); want still on %s x4", state, err, bad)
	}
	st, err := d.client.Status(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(st.Targets) != 1 || st.Targets[0].LastResult != "" || st.Targets[0].Running != "" {
		t.Errorf("target status %+v, want no action run", st.Targets)
	}
	t.Logf("blind page received %v after nodata began", e.Received.Sub(noData).Round(time.Millisecond))
}
