package slack_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/pkg/notify/slack"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// receivedReq is one entry of the receiver's GET /_/received.
type receivedReq struct {
	Path string          `json:"path"`
	Body json.RawMessage `json:"body"`
}

// bodyJSON decodes the body whether the receiver stores it as JSON or as
// a JSON string holding it.
func (r receivedReq) bodyJSON() map[string]any {
	var m map[string]any
	if json.Unmarshal(r.Body, &m) == nil {
		return m
	}
	var s string
	if json.Unmarshal(r.Body, &s) == nil {
		_ = json.Unmarshal([]byte(s), &m)
	}
	return m
}

func received(t *testing.T, base, path string) []receivedReq {
	t.Helper()
	resp, err := http.Get(base + "/_/received?path=" + url.QueryEscape(path))
	if err != nil {
		t.Fatalf("receiver: %v", err)
	}
	defer resp.Body.Close()
	var out []receivedReq
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		t.Fatalf("receiver /_/received: %v", err)
	}
	return out
}

// TestSandboxReceiver sends a whole incident through the queue to the
// sandbox's PagerDuty and Slack receivers, with two 429s injected on the
// events endpoint.
func TestSandboxReceiver(t *testing.T) {
	env := sandboxenv.Load(t)
	if env["RECEIVER_URL"] == "" && os.Getenv("CI") == "" {
		// A sandbox started before the receivers existed: nothing to
		// talk to (on CI the Get below fails instead).
		t.Skip("sandbox has no PagerDuty/Slack receiver (RECEIVER_URL unset)")
	}
	pdURL, hook, ctl := env.Get(t, "PAGERDUTY_URL"), env.Get(t, "SLACK_WEBHOOK_URL"), env.Get(t, "RECEIVER_URL")
	// The receiver serves any path ending in a service's path: a prefix of
	// our own keeps our faults and records apart from other tests'.
	prefix := fmt.Sprintf("/t/notify-%d", time.Now().UnixNano())
	pdURL = strings.TrimSuffix(pdURL, "/") + prefix
	hu, err := url.Parse(hook)
	if err != nil {
		t.Fatalf("SLACK_WEBHOOK_URL: %v", err)
	}
	hu.Path = prefix + hu.Path
	hook = hu.String()

	fault := `{"path":"` + prefix + `/v2/enqueue","responses":[{"status":429,"retryAfter":"1"},{"status":503}]}`
	resp, err := http.Post(ctl+"/_/faults", "application/json", strings.NewReader(fault))
	if err != nil {
		t.Fatalf("faults: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK && resp.StatusCode != http.StatusNoContent && resp.StatusCode != http.StatusAccepted {
		t.Fatalf("faults: receiver answered %s", resp.Status)
	}

	const key = "INTEGRATION-routing-key-0123456789"
	pd, err := pagerduty.New(pagerduty.Options{Endpoint: pdURL, RoutingKey: key, StatusURL: "http://rollguard.test"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	sl, err := slack.New(slack.Options{WebhookURL: hook, Template: incident.Template{OnCall: "@pggit-oncall"}}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	st, err := incident.NewStore(t.TempDir(), incident.Template{})
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	q := notify.NewQueue(notify.Options{BaseBackoff: 10 * time.Millisecond, MaxBackoff: 50 * time.Millisecond,
		Sleep: func(ctx context.Context, d time.Duration) error { return nil }},
		[]notify.Notifier{pd, sl, incident.NewRecorder(st, zap.NewNop())}, zap.New(core), nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()

	tg := notify.Target{Namespace: "it-notify", Deployment: fmt.Sprintf("api-%d", time.Now().UnixNano())}
	id := notify.IncidentID(tg, "2")
	now := time.Now().UTC()
	for i, k := range []notify.Kind{notify.KindDetected, notify.KindRollbackStarted, notify.KindRollbackSucceeded} {
		q.Enqueue(notify.Event{Kind: k, Time: now.Add(time.Duration(i) * time.Second), Target: tg, Trigger: "error-rate",
			IncidentID: id, Details: notify.Details{BadVersion: "v1.1.0", RestoredVersion: "v1.0.3"}})
	}
	deadline := time.Now().Add(15 * time.Second)
	for {
		all := true
		for _, s := range q.Status() {
			all = all && s.Delivered+s.Failed == 3
		}
		if all {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("deliveries incomplete: %+v", q.Status())
		}
		time.Sleep(20 * time.Millisecond)
	}
	cancel()
	<-done
	for _, s := range q.Status() {
		if s.Failed != 0 {
			t.Errorf("%s failed: %+v", s.Name, s)
		}
	}

	var triggers, changes int
	for _, r := range received(t, ctl, prefix+"/v2/enqueue") {
		if b := r.bodyJSON(); b["dedup_key"] == id && b["event_action"] == "trigger" {
			triggers++
		}
	}
	for _, r := range received(t, ctl, prefix+"/v2/change/enqueue") {
		if b := r.bodyJSON(); b != nil && strings.Contains(fmt.Sprint(b["payload"]), tg.Deployment) {
			changes++
		}
	}
	// 2 accepted triggers (detected, succeeded: a started rollback is a
	// change event, not a page) plus the 2 injected failures (the receiver
	// logs rejected requests too).
	if triggers != 4 || changes != 2 {
		t.Errorf("pagerduty triggers %d (want 4 incl. 2 faulted), change events %d (want 2)", triggers, changes)
	}
	var slackMsgs []string
	slackPath := hu.Path
	for _, r := range received(t, ctl, slackPath) {
		if b := r.bodyJSON(); b != nil && strings.Contains(fmt.Sprint(b["text"]), tg.Deployment) {
			slackMsgs = append(slackMsgs, fmt.Sprint(b["text"]))
		}
	}
	if len(slackMsgs) != 2 || !strings.HasPrefix(slackMsgs[0], "⚠️ ROLLBACK INITIATED") || !strings.Contains(slackMsgs[1], "Status: RESOLVED") {
		t.Errorf("slack messages = %q", slackMsgs)
	}
	if _, err := st.Get(id); err != nil {
		t.Errorf("incident record: %v", err)
	}
	var buf bytes.Buffer
	for _, l := range logs.All() {
		fmt.Fprintln(&buf, l.Message, l.ContextMap())
	}
	if strings.Contains(buf.String(), key) || strings.Contains(buf.String(), slackPath) && len(slackPath) > 1 {
		t.Errorf("secret in logs:\n%s", buf.String())
	}
}
