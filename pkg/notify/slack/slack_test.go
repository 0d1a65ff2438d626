package slack

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/notifytest"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
)

const secretPath = "/services/T0SECRET/B0SECRET/xoxSECRETtoken123"

type fakeSlack struct {
	script *notifytest.Script
	mu     sync.Mutex
	msgs   []Message
}

func newFake(t *testing.T, script ...notifytest.Answer) (*fakeSlack, string) {
	f := &fakeSlack{script: notifytest.NewScript(script...)}
	return f, f.script.Serve(t, f).URL + secretPath
}

func (f *fakeSlack) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.URL.Path != secretPath {
		http.Error(w, "no_service", http.StatusNotFound)
		return
	}
	b, _ := io.ReadAll(r.Body)
	var m Message
	if err := json.Unmarshal(b, &m); err != nil || (m.Text == "" && len(m.Blocks) == 0) {
		http.Error(w, "invalid_payload", http.StatusBadRequest)
		return
	}
	f.mu.Lock()
	f.msgs = append(f.msgs, m)
	f.mu.Unlock()
	rp := f.script.Next()
	if rp == nil {
		_, _ = io.WriteString(w, "ok")
		return
	}
	if !f.script.Answer(w, r, rp) {
		return
	}
	w.WriteHeader(rp.Status)
	// Echo the path, as a careless proxy might: it must be scrubbed.
	_, _ = fmt.Fprintf(w, "%s (%s)", rp.Body, r.URL.Path)
}

func (f *fakeSlack) messages() []Message {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Message(nil), f.msgs...)
}

var tg = notify.Target{Namespace: "production", Deployment: "pggit-api"}

const incID = "production_pggit-api_7"

func ev(k notify.Kind, sec int, d notify.Details) notify.Event {
	return notify.Event{Kind: k, Time: time.Date(2026, 11, 25, 14, 32, sec, 0, time.UTC), Target: tg, Trigger: "error-rate",
		IncidentID: incID, Severity: notify.SeverityCritical, Details: d}
}

func TestMessages(t *testing.T) {
	f, hook := newFake(t)
	n, err := New(Options{WebhookURL: hook, Channel: "#pggit-incidents", Template: incident.Template{
		Impact: "Webhook delivery system", OnCall: "@pggit-oncall", StatusPage: "https://status.pggit.io", StatusURL: "http://rollguard:8080"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	events := []notify.Event{
		ev(notify.KindDetected, 10, notify.Details{BadVersion: "v1.1.0", DeployedAt: time.Date(2026, 11, 25, 14, 30, 0, 0, time.UTC),
			Query: "q", Op: "above", Threshold: new(0.05)}),
		ev(notify.KindRollbackStarted, 11, notify.Details{RestoredVersion: "v1.0.3", Plan: []string{"preflight", "stop"}}),
		ev(notify.KindStepStarted, 12, notify.Details{Step: "stop"}),
		ev(notify.KindStepFinished, 13, notify.Details{Step: "stop", Milestone: notify.MilestoneRestored}),
		ev(notify.KindRollbackSucceeded, 40, notify.Details{}),
	}
	for _, e := range events {
		if err := n.Notify(context.Background(), e); err != nil {
			t.Fatalf("%s: %v", e.Kind, err)
		}
	}
	msgs := f.messages()
	if len(msgs) != 2 {
		t.Fatalf("posted %d messages, want 2 (started, final)", len(msgs))
	}
	start := msgs[0]
	if !strings.HasPrefix(start.Text, "⚠️ ROLLBACK INITIATED: production/pggit-api (v1.1.0 → v1.0.3)") ||
		!strings.Contains(start.Text, "Plan: preflight → stop") || start.Channel != "#pggit-incidents" ||
		!strings.Contains(start.Text, "Incident: http://rollguard:8080/api/v1/incidents/"+incID) {
		t.Errorf("start message = %q", start.Text)
	}
	final := msgs[1].Text
	for _, want := range []string{
		"🚨 INCIDENT: production/pggit-api Deployment Rollback (error-rate)", "Severity: CRITICAL", "Status: RESOLVED",
		"Impact: Webhook delivery system", "- 14:30:00 UTC: Deployment of v1.1.0 seen", "- 14:32:10 UTC: Trigger error-rate detected",
		"- 14:32:11 UTC: Rollback initiated to v1.0.3", "- 14:32:13 UTC: Previous version v1.0.3 restored", "- 14:32:40 UTC: System stable",
		"Root Cause: To be determined", "- Rolled back to v1.0.3", "Next Steps:", "On-Call: @pggit-oncall",
	} {
		if !strings.Contains(final, want) {
			t.Errorf("final message lacks %q:\n%s", want, final)
		}
	}
	if len(msgs[1].Blocks) == 0 || msgs[1].Blocks[0].Text.Type != "mrkdwn" {
		t.Errorf("blocks = %+v", msgs[1].Blocks)
	}
	if len(n.records) != 0 {
		t.Errorf("records kept after the incident ended: %d", len(n.records))
	}
}

func TestFailureMessage(t *testing.T) {
	f, hook := newFake(t)
	n, _ := New(Options{WebhookURL: hook}, zap.NewNop())
	for _, e := range []notify.Event{
		ev(notify.KindRollbackStarted, 1, notify.Details{}),
		ev(notify.KindStepFinished, 5, notify.Details{Step: "wait", StepOutcome: notify.OutcomeFailed, StepError: "rollout timed out"}),
		{Kind: notify.KindRollbackFailed, Time: time.Date(2026, 11, 25, 14, 32, 6, 0, time.UTC), Target: tg, IncidentID: incID, Summary: "plan stopped at wait"},
	} {
		if err := n.Notify(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	msgs := f.messages()
	last := msgs[len(msgs)-1].Text
	if !strings.HasPrefix(last, "🔥 ROLLBACK FAILED: production/pggit-api: plan stopped at wait") ||
		!strings.Contains(last, "Failed step: wait (rollout timed out)") || !strings.Contains(last, "Status: ROLLBACK_FAILED") {
		t.Errorf("failure message = %q", last)
	}
}

func TestErrors(t *testing.T) {
	cases := []struct {
		name      string
		r         notifytest.Answer
		retryable bool
		after     time.Duration
		rejected  bool
	}{
		{name: "429", r: notifytest.Answer{Status: 429, Body: "rate_limited", RetryAfter: "30"}, retryable: true, after: 30 * time.Second},
		{name: "500", r: notifytest.Answer{Status: 500, Body: "rollup_error"}, retryable: true},
		{name: "503", r: notifytest.Answer{Status: 503}, retryable: true},
		{name: "400", r: notifytest.Answer{Status: 400, Body: "invalid_payload"}, rejected: true},
		{name: "403", r: notifytest.Answer{Status: 403, Body: "action_prohibited"}, rejected: true},
		{name: "404", r: notifytest.Answer{Status: 404, Body: "channel_not_found"}, rejected: true},
		{name: "410", r: notifytest.Answer{Status: 410, Body: "channel_is_archived"}, rejected: true},
		{name: "timeout", r: notifytest.Answer{Hang: true}, retryable: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, hook := newFake(t, tc.r)
			n, _ := New(Options{WebhookURL: hook, Timeout: 50 * time.Millisecond}, zap.NewNop())
			err := n.Notify(context.Background(), ev(notify.KindTest, 0, notify.Details{}))
			if err == nil {
				t.Fatal("Notify succeeded")
			}
			if notify.IsRetryable(err) != tc.retryable || errors.Is(err, ErrRejected) != tc.rejected {
				t.Errorf("err = %v: retryable %v rejected %v", err, notify.IsRetryable(err), errors.Is(err, ErrRejected))
			}
			if d, _ := notify.RetryAfter(err); d != tc.after {
				t.Errorf("retry after = %v, want %v", d, tc.after)
			}
			if strings.Contains(err.Error(), "SECRET") {
				t.Errorf("webhook secret in error: %v", err)
			}
		})
	}
}

func TestConnectionRefusedIsScrubbed(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	hook := srv.URL + secretPath
	srv.Close()
	n, _ := New(Options{WebhookURL: hook}, zap.NewNop())
	err := n.Notify(context.Background(), ev(notify.KindTest, 0, notify.Details{}))
	if !notify.IsRetryable(err) || strings.Contains(err.Error(), "SECRET") || strings.Contains(err.Error(), hook) {
		t.Errorf("err = %v", err)
	}
	if _, err := New(Options{WebhookURL: "not a url" + secretPath}, nil); err == nil || strings.Contains(err.Error(), "SECRET") {
		t.Errorf("New error = %v", err)
	}
}

type sleeper struct{ n int }

func (s *sleeper) sleep(ctx context.Context, _ time.Duration) error { s.n++; return ctx.Err() }

// 410 channel_is_archived is given up at once, logged at Error, and the
// webhook URL appears nowhere: not in logs, not in the status.
func TestQueue410NotRetriedAndNoSecretLogged(t *testing.T) {
	f, hook := newFake(t, notifytest.Answer{Status: 410, Body: "channel_is_archived"}, notifytest.Answer{Status: 429, RetryAfter: "1"})
	n, _ := New(Options{WebhookURL: hook}, zap.NewNop())
	core, logs := observer.New(zapcore.DebugLevel)
	sl := &sleeper{}
	q := notify.NewQueue(notify.Options{Sleep: sl.sleep}, []notify.Notifier{n}, zap.New(core), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	q.Enqueue(ev(notify.KindTest, 0, notify.Details{}))
	q.Enqueue(ev(notify.KindTest, 1, notify.Details{}))
	notifytest.WaitFor(t, "two outcomes", func() bool { s := q.Status()[0]; return s.Delivered+s.Failed == 2 })
	if got := len(f.messages()); got != 3 {
		t.Errorf("posts = %d, want 3 (410 once; 429 then ok)", got)
	}
	if s := q.Status()[0]; s.Failed != 1 || s.Delivered != 1 || sl.n != 1 {
		t.Errorf("status %+v sleeps %d, want 1 failed 1 delivered 1 sleep", s, sl.n)
	}
	gaveUp := logs.FilterMessage("notification gave up").All()
	if len(gaveUp) != 1 || !strings.Contains(gaveUp[0].ContextMap()["error"].(string), "channel_is_archived") {
		t.Errorf("give-up logs = %+v", gaveUp)
	}
	for _, l := range logs.All() {
		line := l.Message + fmt.Sprint(l.ContextMap())
		if strings.Contains(line, "SECRET") {
			t.Errorf("secret logged: %s", line)
		}
	}
	st, _ := json.Marshal(q.Status())
	if strings.Contains(string(st), "SECRET") {
		t.Errorf("secret in status: %s", st)
	}
}

// A receiver that hangs costs its notifier a timeout per attempt; Enqueue
// stays instant and the other notifier delivers meanwhile.
func TestHangingPagerDutyDoesNotHoldBackSlack(t *testing.T) {
	release := make(chan struct{})
	var pdHits sync.WaitGroup
	pdHits.Add(1)
	var once sync.Once
	pd := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		once.Do(pdHits.Done)
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	defer pd.Close()
	defer close(release)
	f, hook := newFake(t)
	pdn, err := pagerduty.New(pagerduty.Options{Endpoint: pd.URL, RoutingKey: "ROUTINGKEY-hang-0123456789"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	sn, _ := New(Options{WebhookURL: hook}, zap.NewNop())
	core, logs := observer.New(zapcore.DebugLevel)
	q := notify.NewQueue(notify.Options{Timeout: 250 * time.Millisecond, MaxAttempts: 2, Sleep: (&sleeper{}).sleep},
		[]notify.Notifier{pdn, sn}, zap.New(core), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	start := time.Now()
	q.Enqueue(ev(notify.KindTest, 0, notify.Details{}))
	pdHits.Wait()
	q.Enqueue(ev(notify.KindTest, 1, notify.Details{}))
	q.Enqueue(ev(notify.KindBlind, 2, notify.Details{}))
	if el := time.Since(start); el > 200*time.Millisecond {
		t.Errorf("Enqueue took %v", el)
	}
	notifytest.WaitFor(t, "slack deliveries", func() bool { return len(f.messages()) == 3 })
	if s := q.Status()[0]; s.Failed != 0 || s.Delivered != 0 {
		t.Errorf("pagerduty finished an event (%+v) before slack delivered: slack was held back", s)
	}
	notifytest.WaitFor(t, "pagerduty give-ups", func() bool { return q.Status()[0].Failed == 3 })
	retried := logs.FilterMessage("notification failed, retrying").All()
	if len(retried) != 3 {
		t.Errorf("retries logged = %d, want 3", len(retried))
	}
	for _, l := range logs.All() {
		if strings.Contains(fmt.Sprint(l.ContextMap()), "ROUTINGKEY-hang") {
			t.Errorf("routing key logged: %v", l.ContextMap())
		}
	}
}
