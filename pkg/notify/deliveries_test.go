package notify

import (
	"context"
	"errors"
	"testing"
	"time"
)

// sending marks each delivery sent, as the PagerDuty and Slack notifiers do
// when a message went out.
type sending struct{ *scripted }

func (s sending) Notify(ctx context.Context, e Event) error {
	err := s.scripted.Notify(ctx, e)
	if err == nil {
		Sent(ctx)
	}
	return err
}

// The queue records each event's final outcome per notifier: delivered
// (after retries) when a message went out, failed; an event the notifier
// had nothing to say about (or a filter declined) is no page.
func TestDeliveryLog(t *testing.T) {
	log := NewDeliveryLog(0)
	pd := sending{newScripted("pagerduty", ErrRetryable)}
	sl := sending{newScripted("slack", errors.New("slack: 400 invalid_payload"))}
	quiet := Filter(sending{newScripted("chat")}, func(Event) bool { return false })
	silent := newScripted("incident") // returns nil, sends nothing
	q := NewQueue(Options{Log: log, Sleep: func(context.Context, time.Duration) error { return nil }}, []Notifier{pd, sl, quiet, silent}, nil, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.Run(ctx) }()
	q.Enqueue(Event{Kind: KindDetected, IncidentID: "inc-1", Summary: "api: error rate"})
	q.Enqueue(Event{Kind: KindDetected, IncidentID: "inc-2"})
	deadline := time.Now().Add(5 * time.Second)
	for len(log.ForIncident("inc-1")) < 2 || len(log.ForIncident("inc-2")) < 2 || silent.attempts() < 2 {
		if time.Now().After(deadline) {
			t.Fatalf("deliveries: %+v", log.ForIncident("inc-1"))
		}
		time.Sleep(5 * time.Millisecond)
	}
	cancel()
	<-done
	got := map[string]Delivery{}
	for _, d := range log.ForIncident("inc-1") {
		got[d.Notifier] = d
	}
	if d := got["pagerduty"]; d.Result != ResultDelivered || d.Attempts != 2 || d.Summary != "api: error rate" {
		t.Errorf("pagerduty: %+v, want delivered on attempt 2", d)
	}
	if d := got["slack"]; d.Result != ResultFailed || d.Error != "slack: 400 invalid_payload" {
		t.Errorf("slack: %+v, want failed with its error", d)
	}
	if d, ok := got["chat"]; ok {
		t.Errorf("a filtered event is in the log: %+v", d)
	}
	if d, ok := got["incident"]; ok {
		t.Errorf("an event sent nowhere is in the log: %+v", d)
	}
}

func TestDeliveryLogIsBounded(t *testing.T) {
	log := NewDeliveryLog(10)
	for i := 0; i < 25; i++ {
		log.add(Delivery{IncidentID: "x", Attempts: i})
	}
	got := log.ForIncident("x")
	if len(got) > 10 || got[len(got)-1].Attempts != 24 {
		t.Errorf("kept %d, last %+v; want at most 10, the newest last", len(got), got[len(got)-1])
	}
	var nilLog *DeliveryLog
	nilLog.add(Delivery{}) // a queue without a log records nothing
}
