package pagerduty_test

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"slices"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
	"github.com/rollguard/rollguard/test/receiver"
)

// rollbackEvents is what the responder enqueues for a quick rollback of six
// steps, in order.
func rollbackEvents(tg notify.Target, id string, t0 time.Time, final notify.Kind) []notify.Event {
	at := func(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }
	evs := []notify.Event{
		{Kind: notify.KindDetected, Time: at(0), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical},
		{Kind: notify.KindRollbackStarted, Time: at(1), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical},
	}
	for i, s := range []string{"stop", "application", "wait-rollout", "ramp", "verify"} {
		evs = append(evs,
			notify.Event{Kind: notify.KindStepStarted, Time: at(2 + 2*i), Target: tg, Trigger: "error-rate", IncidentID: id, Details: notify.Details{Step: s}},
			notify.Event{Kind: notify.KindStepFinished, Time: at(3 + 2*i), Target: tg, Trigger: "error-rate", IncidentID: id,
				Details: notify.Details{Step: s, StepOutcome: notify.OutcomeOK}})
	}
	return append(evs, notify.Event{Kind: final, Time: at(20), Target: tg, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical})
}

type sent struct{ action, dedup, kind string }

func alertEvents(t *testing.T, rc *receiver.Receiver) []sent {
	t.Helper()
	var out []sent
	for _, r := range rc.Received("/v2/enqueue") {
		var b struct {
			Action   string `json:"event_action"`
			DedupKey string `json:"dedup_key"`
			Payload  struct {
				Details map[string]any `json:"custom_details"`
			} `json:"payload"`
		}
		if err := json.Unmarshal([]byte(r.Body), &b); err != nil {
			t.Fatal(err)
		}
		k, _ := b.Payload.Details["kind"].(string)
		out = append(out, sent{b.Action, b.DedupKey, k})
	}
	return out
}

// A rollback pages on-call with what they act on: triggered, then its
// outcome (and resolved when configured), on one dedup_key; not one event
// per step. Step detail goes to the incident record and Slack.
func TestRollbackPagesTriggeredAndOutcomeOnly(t *testing.T) {
	tg := notify.Target{Namespace: "production", Deployment: "pggit-api"}
	id := notify.IncidentID(tg, "7")
	t0 := time.Date(2026, 11, 25, 14, 35, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		resolve bool
		want    []sent
	}{
		{name: "a human resolves", want: []sent{{"trigger", id, "detected"}, {"trigger", id, "rollback_succeeded"}}},
		{name: "resolve on success", resolve: true, want: []sent{{"trigger", id, "detected"}, {"trigger", id, "rollback_succeeded"}, {"resolve", id, ""}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := receiver.New(nil)
			srv := httptest.NewServer(rc)
			defer srv.Close()
			n, err := pagerduty.New(pagerduty.Options{Endpoint: srv.URL, RoutingKey: key, ResolveOnSuccess: tc.resolve}, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			for _, e := range rollbackEvents(tg, id, t0, notify.KindRollbackSucceeded) {
				if err := n.Notify(context.Background(), e); err != nil {
					t.Fatalf("%s: %v", e.Kind, err)
				}
			}
			if got := alertEvents(t, rc); !slices.Equal(got, tc.want) {
				t.Errorf("alert events:\n got %v\nwant %v", got, tc.want)
			}
			// The change events mark the rollback on the service.
			if ch := rc.Received("/v2/change/enqueue"); len(ch) != 2 {
				t.Errorf("%d change events, want 2 (started, succeeded)", len(ch))
			}
		})
	}
}
