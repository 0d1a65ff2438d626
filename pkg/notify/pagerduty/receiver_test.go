package pagerduty_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/test/receiver"
)

const key = "RECEIVER-routing-key-0123456789ab"

// Against the project's PagerDuty receiver (it validates events the way
// PagerDuty does): a whole incident, then a fault script.
func TestAgainstReceiver(t *testing.T) {
	rc := receiver.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	n, err := pagerduty.New(pagerduty.Options{Endpoint: srv.URL, RoutingKey: key, StatusURL: "http://rg"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	tg := notify.Target{Namespace: "production", Deployment: "pggit-api"}
	id := notify.IncidentID(tg, "7")
	t0 := time.Date(2026, 11, 25, 14, 35, 0, 0, time.UTC)
	for i, k := range []notify.Kind{notify.KindDetected, notify.KindRollbackStarted, notify.KindStepStarted, notify.KindRollbackSucceeded, notify.KindBlind, notify.KindTest} {
		e := notify.Event{Kind: k, Time: t0.Add(time.Duration(i) * time.Second), Target: tg, Trigger: "error-rate", IncidentID: id,
			Details: notify.Details{Step: "stop", Window: time.Minute}}
		if err := n.Notify(context.Background(), e); err != nil {
			t.Fatalf("%s: %v", k, err)
		}
	}
	var keys []string
	for _, r := range rc.Received("/v2/enqueue") {
		if r.Status != 202 {
			t.Errorf("receiver answered %d: %s", r.Status, r.Body)
		}
		var b struct {
			DedupKey string `json:"dedup_key"`
			Payload  struct {
				Details map[string]any `json:"custom_details"`
			} `json:"payload"`
		}
		if err := json.Unmarshal([]byte(r.Body), &b); err != nil {
			t.Fatal(err)
		}
		if b.Payload.Details["window"] != "1m0s" {
			t.Errorf("window detail = %v", b.Payload.Details["window"])
		}
		keys = append(keys, b.DedupKey)
	}
	// Started and the step are not paged: the detection triggered the
	// alert, the outcome updates it.
	if len(keys) != 4 || keys[0] != id || keys[1] != id ||
		keys[2] != "production/pggit-api/error-rate/blind" || !strings.HasPrefix(keys[3], "rollguard/test/") {
		t.Errorf("dedup keys = %q", keys)
	}
	if ch := rc.Received("/v2/change/enqueue"); len(ch) != 2 || ch[0].Status != 202 || ch[1].Status != 202 {
		t.Errorf("change events = %+v", ch)
	}

	if err := rc.SetFaults("/v2/enqueue", []receiver.Response{{Status: 429, RetryAfter: "7"}, {Status: 502}, {Status: 400}}); err != nil {
		t.Fatal(err)
	}
	e := notify.Event{Kind: notify.KindDetected, Time: t0, Target: tg, IncidentID: id}
	err = n.Notify(context.Background(), e)
	if d, ok := notify.RetryAfter(err); !ok || d != 7*time.Second {
		t.Errorf("429: err = %v, retry after %v", err, d)
	}
	if err = n.Notify(context.Background(), e); !notify.IsRetryable(err) {
		t.Errorf("502: err = %v, want retryable", err)
	}
	if err = n.Notify(context.Background(), e); notify.IsRetryable(err) || !errors.Is(err, pagerduty.ErrRejected) {
		t.Errorf("400: err = %v, want %v", err, pagerduty.ErrRejected)
	}
	for _, r := range rc.Received("") {
		if strings.Contains(r.Path, key) {
			t.Errorf("routing key in a URL: %s", r.Path)
		}
	}
}

// A hang fault: the request times out as a retryable error within the
// notifier's own timeout.
func TestReceiverHang(t *testing.T) {
	rc := receiver.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()
	if err := rc.SetFaults("/v2/enqueue", []receiver.Response{{Hang: 10 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	n, _ := pagerduty.New(pagerduty.Options{Endpoint: srv.URL, RoutingKey: key, Timeout: 100 * time.Millisecond}, zap.NewNop())
	start := time.Now()
	err := n.Notify(context.Background(), notify.Event{Kind: notify.KindTest, Time: time.Now()})
	if el := time.Since(start); el > 2*time.Second {
		t.Errorf("took %v", el)
	}
	if !notify.IsRetryable(err) || strings.Contains(err.Error(), key) {
		t.Errorf("err = %v, want retryable without the key", err)
	}
}
