package ha

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// front is one address in front of both replicas, as a Service is. It
// alternates per request (a Service balances per connection; alternating
// per request sends the follower its half even over one kept-alive
// connection).
type front struct {
	url   string
	n     atomic.Int64
	perTo [2]atomic.Int64
}

func (p *pair) front(t *testing.T) *front {
	t.Helper()
	backends := make([]*url.URL, 2)
	for i, d := range []*daemon{p.leader, p.follower} {
		u, err := url.Parse(d.base)
		if err != nil {
			t.Fatal(err)
		}
		backends[i] = u
	}
	f := &front{}
	rp := &httputil.ReverseProxy{Rewrite: func(r *httputil.ProxyRequest) {
		i := f.n.Add(1) % 2
		f.perTo[i].Add(1)
		r.SetURL(backends[i])
	}}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: rp, ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close() })
	f.url = "http://" + ln.Addr().String()
	return f
}

// TestAlertsThroughAlertmanagerReachTheLeader: a real Alertmanager sends
// its webhook to one address in front of two replicas. Half of the
// notifications land on the follower, which hands them to the leader; 20
// alerts are sent, 20 handled, each once: one asks for the rollback of a
// bad deploy (one plan, one journal run), 19 ask for a page (one
// PagerDuty alert and one incident record each, naming the alert).
func TestAlertsThroughAlertmanagerReachTheLeader(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "am")
	h.createDeployment("api", goodImage)
	h.createDeployment("quiet", goodImage)
	quiet := func(name string) target {
		return target{name: name, deployment: name, above: 0.9, action: "page"}
	}
	p := h.startPair(daemonConfig{targets: []target{quiet("api"), quiet("quiet")}})
	h.deploy("api", badImage, "")
	h.waitRollout("api", 30*time.Second)
	fr := p.front(t)

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte(apiToken), 0o600); err != nil {
		t.Fatal(err)
	}
	am := sandboxfixture.Alertmanager(t, h.env, fmt.Sprintf(`route:
  receiver: rollguard
  group_by: ['...']
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: rollguard
    webhook_configs:
      - url: %s/api/v1/alerts/alertmanager
        send_resolved: true
        http_config:
          authorization:
            credentials_file: %s
`, fr.url, tokenFile))

	const n = 20
	alerts := []map[string]any{{"labels": map[string]string{"alertname": "SecurityRollback", "rollguard_target": "api",
		"rollguard_action": "rollback", "rollguard_security": "true"}, "annotations": map[string]string{"summary": "CVE in the auth path"}}}
	for i := 1; i < n; i++ {
		alerts = append(alerts, map[string]any{"labels": map[string]string{"alertname": fmt.Sprintf("Advisory%02d", i), "rollguard_target": "quiet",
			"rollguard_action": "page"}, "annotations": map[string]string{"summary": "a human decides"}})
	}
	body, _ := json.Marshal(alerts)
	resp, err := httpClient.Post(am+"/api/v2/alerts", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post alerts to alertmanager: %s", resp.Status)
	}
	sent := time.Now()

	// Each alert is handled: 19 page incidents and the rollback's.
	var recs []incident.Summary
	eventually(t, "20 incident records", 60*time.Second, func() (bool, string) {
		recs = h.incidents()
		return len(recs) == n, fmt.Sprintf("%d records", len(recs))
	})
	j := h.waitJournal("api", 60*time.Second, rollback.RunSucceeded)
	handled := time.Since(sent)
	if got := image(h.waitRollout("api", 30*time.Second)); got != goodImage {
		t.Errorf("api image %s, want %s", got, goodImage)
	}

	fingerprints := map[string]int{}
	for _, s := range recs {
		rec := h.incident(s.ID)
		var alerts []notify.Requester
		for _, q := range rec.Requests {
			if q.Kind == notify.RequestedByAlertmanager {
				alerts = append(alerts, q)
			}
		}
		if len(alerts) != 1 || alerts[0].Fingerprint == "" || alerts[0].Labels["rollguard_target"] == "" {
			t.Errorf("record %s requests %+v, want the one alert with its fingerprint and labels", s.ID, rec.Requests)
			continue
		}
		fingerprints[alerts[0].Fingerprint]++
	}
	if len(fingerprints) != n {
		t.Errorf("%d distinct alerts in the records, want %d: %v", len(fingerprints), n, fingerprints)
	}
	keys := map[string]int{}
	eventually(t, "a page for each alert", 20*time.Second, func() (bool, string) {
		clear(keys)
		for _, e := range h.events("detected") {
			keys[e.DedupKey]++
		}
		return len(keys) == n, fmt.Sprintf("%d distinct", len(keys))
	})
	// One leader acts; should the lease move during the test, the next
	// one redelivers what was pending (a repeat PagerDuty takes as the
	// same alert) and takes no alert up twice.
	changes := len(p.leader.logLines("became leader")) + len(p.follower.logLines("became leader")) - 1
	for k, c := range keys {
		if c != 1 && changes == 0 {
			t.Errorf("dedup key %s paged %d times with no leader change", k, c)
		}
	}

	// Each alert was taken up once, by whichever replica led; the other
	// handed over what it got.
	time.Sleep(2 * time.Second) // a late repeat would show now
	byFP := map[string]int{}
	for _, d := range []*daemon{p.leader, p.follower} {
		for _, l := range d.logLines("alert request") {
			if l["accepted"] == true {
				byFP[l["fingerprint"].(string)]++
			}
		}
	}
	for fp, c := range byFP {
		if c != 1 {
			t.Errorf("alert %s accepted %d times", fp, c)
		}
	}
	if len(byFP) != n {
		t.Errorf("%d alerts accepted, want %d", len(byFP), n)
	}
	handedOver := len(p.follower.logLines("request handed to the leader")) + len(p.leader.logLines("request handed to the leader"))
	if handedOver == 0 {
		t.Error("no request was handed to the leader: the test did not exercise it")
	}
	if runs := len(j.History) + 1; runs != 1 {
		t.Errorf("%d journal runs, want one", runs)
	}
	// Alertmanager's own count: every notification delivered, none
	// failed for good.
	sentAM, failedAM := amMetric(t, am, "alertmanager_notifications_total"), amMetric(t, am, "alertmanager_notifications_failed_total")
	t.Logf("alerts sent %d, handled %d (distinct fingerprints in records %d) in %s; webhook notifications by Alertmanager %g (failed %g); "+
		"front sent %d to the leader and %d to the follower, %d handed over; leader changes %d",
		n, len(byFP), len(fingerprints), handled.Round(100*time.Millisecond), sentAM, failedAM, fr.perTo[0].Load(), fr.perTo[1].Load(), handedOver, changes)
	if sentAM < n || failedAM != 0 {
		t.Errorf("alertmanager sent %g webhook notifications, %g failed; want at least %d and none failed", sentAM, failedAM, n)
	}
}

// amMetric sums Alertmanager's counter name for the webhook integration.
func amMetric(t *testing.T, am, name string) float64 {
	t.Helper()
	resp, err := httpClient.Get(am + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	sum := 0.0
	for _, line := range strings.Split(b.String(), "\n") {
		if strings.HasPrefix(line, name+"{") && strings.Contains(line, `integration="webhook"`) {
			var v float64
			fmt.Sscanf(line[strings.LastIndex(line, " ")+1:], "%g", &v)
			sum += v
		}
	}
	return sum
}

// pageKey identifies one event's PagerDuty delivery: its kind, step and
// time (the payload's timestamp is the event's).
func pageKey(kind, step string, at time.Time) string {
	return kind + "/" + step + "@" + at.UTC().Format(time.RFC3339Nano)
}

// TestPagesSurviveLeaderKill: the leader rolls a bad deploy back while
// PagerDuty answers 503, so its pages wait in the outbox; SIGKILLed, it
// delivers none of them. The other replica takes over and delivers every
// pending event; Slack, which had its messages, gets none twice.
func TestPagesSurviveLeaderKill(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "outbox")
	h.createDeployment(deployName, goodImage)
	// A lease that a loaded machine's API latency does not cost the
	// leader: the test kills it, it must not stop on its own first.
	p := h.startPair(daemonConfig{slack: true, lease: [3]string{"6s", "4s", "500ms"}, targets: []target{{name: deployName, deployment: deployName}}})
	faults := make([]map[string]any, 200)
	for i := range faults {
		faults[i] = map[string]any{"status": 503}
	}
	h.faults("/v2/enqueue", faults)

	h.deploy(deployName, badImage, "")
	h.waitJournal(deployName, 90*time.Second, rollback.RunSucceeded)
	// Every event of the rollback is stored, PagerDuty's still pending.
	var atKill []notify.Pending
	eventually(t, "the rollback's pages pending in the outbox", 30*time.Second, func() (bool, string) {
		for _, pe := range h.pending() {
			if pe.Notifiers["pagerduty"] == notify.StatePending && pe.Event.Kind == notify.KindRollbackSucceeded {
				return true, ""
			}
		}
		return false, fmt.Sprintf("%d pending", len(h.pending()))
	})
	if err := p.leader.cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatalf("SIGKILL %s: %v (lost lease lines: %d): it stopped before the kill, the test did not run its scenario",
			p.leader.identity, err, len(p.leader.logLines("leader lease lost: exiting so a fresh process rejoins the election")))
	}
	<-p.leader.exited
	killed := time.Now()
	// What the dead leader left, read before anyone can take over (its
	// lease has seconds to run): PagerDuty's pending events; the messages
	// Slack had not posted, and an attempt in flight (claimed: posted or
	// not, never again).
	slackBefore := len(h.received(receiver.SlackWebhookPath))
	slackPending, slackClaimed := 0, 0
	for _, pe := range h.pending() {
		if pe.Notifiers["pagerduty"] == notify.StatePending && pagerduty.Pages(pe.Event) {
			// Change events (rollback started/succeeded) go to another
			// endpoint; the pages are what on-call must not lose.
			atKill = append(atKill, pe)
		}
		if k := pe.Event.Kind; k == notify.KindRollbackStarted || k == notify.KindRollbackSucceeded {
			switch pe.Notifiers["slack"] {
			case notify.StatePending:
				slackPending++
			case notify.StateClaimed:
				slackClaimed++
			}
		}
	}
	h.faults("/v2/enqueue", nil)
	accepted := len(h.events(""))
	t.Logf("killed leader %s with %d events pending for PagerDuty (%d accepted before the kill)", p.leader.identity, len(atKill), accepted)

	eventually(t, "the follower takes over", 20*time.Second, func() (bool, string) {
		s, err := p.follower.tryStatus()
		return err == nil && s.Leader, fmt.Sprint(err)
	})
	eventually(t, "the outbox empties", 30*time.Second, func() (bool, string) {
		n := len(h.pending())
		return n == 0, fmt.Sprintf("%d pending", n)
	})
	got := map[string]int{}
	for _, e := range h.events("") {
		var step string
		e.Detail(t, "step", &step)
		got[pageKey(e.Kind(h.t), step, e.Payload.Timestamp)]++
	}
	delivered := 0
	for _, pe := range atKill {
		step := pe.Event.Details.Step
		k := pageKey(string(pe.Event.Kind), step, pe.Event.Time)
		if got[k] == 0 {
			t.Errorf("pending %s never reached PagerDuty", k)
			continue
		}
		delivered++
	}
	keys := map[string]bool{}
	for _, e := range h.events("") {
		keys[e.DedupKey] = true
	}
	if len(keys) != 1 {
		t.Errorf("dedup keys %v, want the incident's one", keys)
	}
	if n := len(p.follower.logLines("pending notifications adopted")); n != 1 {
		t.Errorf("the new leader adopted %d times, want once", n)
	}
	// Slack: what it had not posted is posted by the new leader, once;
	// nothing it had is posted again.
	slack := h.received(receiver.SlackWebhookPath)
	texts := map[string]int{}
	for _, r := range slack {
		var m struct{ Text string }
		_ = json.Unmarshal([]byte(r.Body), &m)
		texts[m.Text]++
	}
	for text, c := range texts {
		if c > 1 {
			t.Errorf("slack got a message %d times: %.80q", c, text)
		}
	}
	if n := len(slack); n < slackBefore+slackPending || n > slackBefore+slackPending+slackClaimed || (slackClaimed == 0 && n != 2) {
		t.Errorf("slack messages: %d before the kill, %d pending and %d in flight at it, %d after; want the start and the end, each once",
			slackBefore, slackPending, slackClaimed, n)
	}
	t.Logf("pages pending at the kill %d, delivered by %s after takeover %d (in %s); PagerDuty events accepted %d; "+
		"slack messages %d (%d of them pending at the kill), none twice",
		len(atKill), p.follower.identity, delivered, time.Since(killed).Round(100*time.Millisecond), len(h.events("")), len(slack), slackPending)
	// The record is whole: both leaders' events in one record.
	recs := h.incidents()
	if len(recs) != 1 || recs[0].Status != incident.StatusResolved {
		t.Errorf("records %+v, want one resolved", recs)
	}
}

// TestFollowerHandsManualRollbackToTheLeader: a human's rollback sent to
// the follower is done by the leader, recorded with the caller's token
// name; a wrong token is refused by the follower itself; both replicas
// serve the same incident records.
func TestFollowerHandsManualRollbackToTheLeader(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "manual-pair")
	h.createDeployment(deployName, goodImage)
	p := h.startPair(daemonConfig{tokens: map[string]string{"alice": "tok-alice", "bob": "tok-bob"},
		targets: []target{quietTarget()}})
	h.deploy(deployName, badImage, "")
	h.waitRollout(deployName, 30*time.Second)
	path := "/api/v1/targets/" + deployName + "/rollback"
	body := map[string]string{"reason": "CVE-2026-1234 in the auth path", "action": "rollback"}

	w := h.watchWrites(h.get(deployName))
	if code, b := p.follower.call(http.MethodPost, path, apiToken, body); code != http.StatusForbidden {
		t.Errorf("unnamed token when tokens are named: %d %s, want 403", code, b)
	}
	time.Sleep(2 * time.Second)
	w.assertNone()

	code, b := p.follower.call(http.MethodPost, path, "tok-bob", body)
	if code != http.StatusAccepted || !strings.Contains(string(b), `"accepted": true`) {
		t.Fatalf("rollback on the follower = %d %s, want 202 accepted by the leader", code, b)
	}
	h.checkRolledBack(body["reason"])
	if n := len(p.follower.logLines("rollback plan started")); n != 0 {
		t.Errorf("the follower started %d plans", n)
	}
	var recs []incident.Summary
	eventually(t, "the record", 15*time.Second, func() (bool, string) {
		recs = h.incidents()
		return len(recs) == 1 && recs[0].Status == incident.StatusResolved, fmt.Sprint(recs)
	})
	rec := h.incident(recs[0].ID)
	if len(rec.Requests) != 1 || rec.Requests[0].Kind != notify.RequestedByAPI || rec.Requests[0].Name != "bob" ||
		rec.Requests[0].Reason != body["reason"] {
		t.Errorf("requests %+v, want bob's through the API with the reason", rec.Requests)
	}
	_, fromLeader := p.leader.call(http.MethodGet, "/api/v1/incidents", "", nil)
	_, fromFollower := p.follower.call(http.MethodGet, "/api/v1/incidents", "", nil)
	if !bytes.Equal(fromLeader, fromFollower) || !strings.Contains(string(fromLeader), recs[0].ID) {
		t.Errorf("GET /api/v1/incidents differs:\nleader   %s\nfollower %s", fromLeader, fromFollower)
	}
	_, mdLeader := p.leader.call(http.MethodGet, "/api/v1/incidents/"+recs[0].ID+"?format=markdown", "", nil)
	_, mdFollower := p.follower.call(http.MethodGet, "/api/v1/incidents/"+recs[0].ID+"?format=markdown", "", nil)
	if !bytes.Equal(mdLeader, mdFollower) || !strings.Contains(string(mdLeader), "| api bob |") {
		t.Errorf("the report differs between replicas or does not name the caller:\n%s", mdFollower)
	}
}

// faults scripts the receiver's answers on the test's path (nil clears).
func (h *harness) faults(path string, responses []map[string]any) {
	h.t.Helper()
	if responses == nil {
		responses = []map[string]any{}
	}
	b, _ := json.Marshal(map[string]any{"path": h.inbox.Prefix + path, "responses": responses})
	resp, err := httpClient.Post(h.receiverURL+"/_/faults", "application/json", bytes.NewReader(b))
	if err != nil {
		h.t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		h.t.Fatalf("script faults: %s", resp.Status)
	}
}
