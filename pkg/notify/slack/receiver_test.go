package slack_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/slack"
	"github.com/rollguard/rollguard/test/receiver"
)

// Against the project's Slack receiver: 410 channel_is_archived is given
// up after one post; the next message (a 503, then ok) is retried.
func TestAgainstReceiver(t *testing.T) {
	rc := receiver.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	if err := rc.SetFaults("/slack/webhook", []receiver.Response{
		{Status: 410, Body: "channel_is_archived"}, {Status: 503},
	}); err != nil {
		t.Fatal(err)
	}
	n, err := slack.New(slack.Options{WebhookURL: srv.URL + "/slack/webhook"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	core, logs := observer.New(zapcore.DebugLevel)
	q := notify.NewQueue(notify.Options{Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }},
		[]notify.Notifier{n}, zap.New(core), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	tg := notify.Target{Namespace: "production", Deployment: "pggit-api"}
	q.Enqueue(notify.Event{Kind: notify.KindRollbackStarted, Target: tg, IncidentID: "production_pggit-api_7"})
	q.Enqueue(notify.Event{Kind: notify.KindBlind, Target: tg, Trigger: "latency"})
	deadline := time.Now().Add(5 * time.Second)
	for s := q.Status()[0]; s.Delivered+s.Failed < 2; s = q.Status()[0] {
		if time.Now().After(deadline) {
			t.Fatalf("status %+v", s)
		}
		time.Sleep(time.Millisecond)
	}
	got := rc.Received("/slack/webhook")
	var statuses []int
	for _, r := range got {
		statuses = append(statuses, r.Status)
	}
	if len(got) != 3 || statuses[0] != 410 || statuses[1] != 503 || statuses[2] != 200 {
		t.Fatalf("receiver saw statuses %v, want [410 503 200]", statuses)
	}
	var m struct{ Text string }
	if err := json.Unmarshal([]byte(got[2].Body), &m); err != nil || !strings.Contains(m.Text, "BLIND on production/pggit-api") {
		t.Errorf("delivered %q", got[2].Body)
	}
	if s := q.Status()[0]; s.Failed != 1 || s.Delivered != 1 || !strings.Contains(s.LastError, "410 channel_is_archived") {
		t.Errorf("status = %+v", s)
	}
	if n := len(logs.FilterMessage("notification gave up").All()); n != 1 {
		t.Errorf("give-ups logged = %d, want 1", n)
	}
}
