package notify

import (
	"context"
	"encoding/json"
	"errors"
	"maps"
	"math"
	"reflect"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify/notifytest"
)

// memOutbox is an Outbox in memory; a change is stored when handed over.
type memOutbox struct {
	mu      sync.Mutex
	entries map[string]*Pending
	order   []string
	addErr  error
	log     []string // "add ID", "mark ID notifier state", "own ID owner"
}

func newMemOutbox() *memOutbox { return &memOutbox{entries: map[string]*Pending{}} }

func done(err error) Flush { return func(context.Context) error { return err } }

func (m *memOutbox) Add(es []Pending) Flush {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.addErr != nil {
		return done(m.addErr)
	}
	for _, p := range es {
		c := p
		c.Notifiers = map[string]DeliveryState{}
		for k, v := range p.Notifiers {
			c.Notifiers[k] = v
		}
		m.entries[p.Event.ID] = &c
		m.order = append(m.order, p.Event.ID)
		m.log = append(m.log, "add "+p.Event.ID)
	}
	return done(nil)
}

func (m *memOutbox) Mark(e Event, notifier string, st DeliveryState) Flush {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.log = append(m.log, "mark "+e.ID+" "+notifier+" "+string(st))
	p := m.entries[e.ID]
	if p == nil {
		return done(nil)
	}
	if st == StateDone {
		delete(p.Notifiers, notifier)
	} else {
		p.Notifiers[notifier] = st
	}
	if len(p.Notifiers) == 0 {
		delete(m.entries, e.ID)
	}
	return done(nil)
}

func (m *memOutbox) Own(es []Pending, owner string) Flush {
	m.mu.Lock()
	defer m.mu.Unlock()
	for _, p := range es {
		if e := m.entries[p.Event.ID]; e != nil {
			e.Owner = owner
			m.log = append(m.log, "own "+p.Event.ID+" "+owner)
		}
	}
	return done(nil)
}

func (m *memOutbox) Pending(context.Context) ([]Pending, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var out []Pending
	for _, id := range m.order {
		if p := m.entries[id]; p != nil {
			c := *p
			c.Notifiers = maps.Clone(p.Notifiers)
			out = append(out, c)
		}
	}
	return out, nil
}

func (m *memOutbox) state(id string) map[string]DeliveryState {
	m.mu.Lock()
	defer m.mu.Unlock()
	p := m.entries[id]
	if p == nil {
		return nil
	}
	out := map[string]DeliveryState{}
	for k, v := range p.Notifiers {
		out[k] = v
	}
	return out
}

// onceNotifier is a scripted notifier that delivers at most once.
type onceNotifier struct{ *scripted }

func (onceNotifier) AtMostOnce() bool { return true }

func runQueue(t *testing.T, q *Queue) (stop func()) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	doneCh := make(chan struct{})
	go func() { defer close(doneCh); q.Run(ctx) }()
	var once sync.Once
	stop = func() { once.Do(func() { cancel(); <-doneCh }) }
	t.Cleanup(stop)
	return stop
}

func TestOutboxStoredBeforeTheFirstAttempt(t *testing.T) {
	ob := newMemOutbox()
	pd := newScripted("pagerduty")
	var seen map[string]DeliveryState
	pd.hook = func(context.Context) error {
		ps, _ := ob.Pending(context.Background())
		if len(ps) == 1 {
			seen = ps[0].Notifiers
		}
		return nil
	}
	q := NewQueue(Options{Outbox: ob, Owner: "a"}, []Notifier{pd}, zap.NewNop(), nil)
	runQueue(t, q)
	q.Enqueue(Event{Kind: KindDetected, IncidentID: "i"})
	e := <-pd.done
	if e.ID == "" {
		t.Fatal("the queue gave the event no ID")
	}
	if want := map[string]DeliveryState{"pagerduty": StatePending}; !reflect.DeepEqual(seen, want) {
		t.Errorf("outbox at the attempt = %v, want %v", seen, want)
	}
	notifytest.WaitFor(t, "entry removed once delivered", func() bool { ps, _ := ob.Pending(context.Background()); return len(ps) == 0 })
}

func TestOutboxAtMostOnceClaimsEachAttempt(t *testing.T) {
	ob := newMemOutbox()
	sl := onceNotifier{newScripted("slack", Retryable(errors.New("503"), 0))}
	pd := newScripted("pagerduty")
	sl.hook = func(context.Context) error {
		if st := ob.state(lastID(ob)); st["slack"] != StateClaimed {
			t.Errorf("slack attempt while its state is %q, want claimed", st["slack"])
		}
		return nil
	}
	var sleeps sleeps
	o := testOpts(&sleeps)
	o.Outbox, o.Owner = ob, "a"
	q := NewQueue(o, []Notifier{sl, pd}, zap.NewNop(), nil)
	runQueue(t, q)
	q.Enqueue(Event{Kind: KindRollbackStarted, IncidentID: "i"})
	e := <-sl.done
	<-pd.done
	notifytest.WaitFor(t, "entry done", func() bool { return ob.state(e.ID) == nil })
	ob.mu.Lock()
	var slackLog []string
	for _, l := range ob.log {
		if l == "mark "+e.ID+" slack claimed" || l == "mark "+e.ID+" slack pending" || l == "mark "+e.ID+" slack done" {
			slackLog = append(slackLog, l[len("mark "+e.ID+" slack "):])
		}
	}
	ob.mu.Unlock()
	if want := []string{"claimed", "pending", "claimed", "done"}; !slices.Equal(slackLog, want) {
		t.Errorf("slack's outbox states %v, want %v (claim, failed attempt released, claim, delivered)", slackLog, want)
	}
}

func lastID(m *memOutbox) string {
	m.mu.Lock()
	defer m.mu.Unlock()
	if len(m.order) == 0 {
		return ""
	}
	return m.order[len(m.order)-1]
}

// TestOutboxShutdownLeavesPending: a process that stops while a peer
// refuses leaves the event pending (and never marks it done), so the
// next leader delivers it.
func TestOutboxShutdownLeavesPending(t *testing.T) {
	ob := newMemOutbox()
	pd := newScripted("pagerduty")
	var attempts int
	var mu sync.Mutex
	pd.hook = func(context.Context) error {
		mu.Lock()
		attempts++
		mu.Unlock()
		return Retryable(errors.New("503"), 0)
	}
	o := Options{Outbox: ob, Owner: "a", DrainTimeout: 10 * time.Millisecond, BaseBackoff: time.Hour,
		Sleep: func(ctx context.Context, d time.Duration) error { <-ctx.Done(); return ctx.Err() }}
	q := NewQueue(o, []Notifier{pd}, zap.NewNop(), nil)
	stop := runQueue(t, q)
	q.Enqueue(Event{Kind: KindDetected, IncidentID: "i"})
	notifytest.WaitFor(t, "first attempt", func() bool { mu.Lock(); defer mu.Unlock(); return attempts >= 1 })
	stop()
	ps, _ := ob.Pending(context.Background())
	if len(ps) != 1 || ps[0].Notifiers["pagerduty"] != StatePending {
		t.Fatalf("pending after shutdown = %+v, want the event pending for pagerduty", ps)
	}
}

func TestAdopt(t *testing.T) {
	now := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	mk := func(id, owner string, age time.Duration, st map[string]DeliveryState) Pending {
		return Pending{Event: Event{ID: id, Kind: KindDetected, IncidentID: "inc-" + id, Time: now.Add(-age)}, Owner: owner,
			Notifiers: st, Updated: now.Add(-age)}
	}
	ob := newMemOutbox()
	ob.Add([]Pending{
		mk("dead-leader", "b", time.Second, map[string]DeliveryState{"pagerduty": StatePending, "slack": StatePending}),
		mk("slack-in-flight", "b", time.Second, map[string]DeliveryState{"pagerduty": StatePending, "slack": StateClaimed}),
		mk("mine", "a", time.Hour, map[string]DeliveryState{"pagerduty": StatePending}),
		mk("gone-notifier", "b", time.Second, map[string]DeliveryState{"webhook:old": StatePending}),
	})
	pd := newScripted("pagerduty")
	sl := onceNotifier{newScripted("slack")}
	q := NewQueue(Options{Outbox: ob, Owner: "a", Now: func() time.Time { return now }}, []Notifier{pd, sl}, zap.NewNop(), nil)

	// A sweep adopts only what sat untouched for minAge.
	if n, err := q.Adopt(context.Background(), time.Minute); err != nil || n != 0 {
		t.Fatalf("Adopt(minAge 1m) = %d, %v; want nothing adopted", n, err)
	}
	n, err := q.Adopt(context.Background(), 0)
	if err != nil || n != 3 {
		t.Fatalf("Adopt(0) = %d, %v; want 3 deliveries queued", n, err)
	}
	runQueue(t, q)
	var got []string
	for range 2 {
		got = append(got, "pagerduty "+(<-pd.done).ID)
	}
	got = append(got, "slack "+(<-sl.done).ID)
	sort.Strings(got)
	want := []string{"pagerduty dead-leader", "pagerduty slack-in-flight", "slack dead-leader"}
	if !slices.Equal(got, want) {
		t.Errorf("delivered %v, want %v", got, want)
	}
	notifytest.WaitFor(t, "adopted entries done", func() bool {
		ps, _ := ob.Pending(context.Background())
		return len(ps) == 1 && ps[0].Event.ID == "mine"
	})
	time.Sleep(10 * time.Millisecond)
	if n := sl.attempts(); n != 1 {
		t.Errorf("slack attempts %d, want 1: the claimed event must not be posted again", n)
	}
}

func TestOutboxUnavailableStillDelivers(t *testing.T) {
	ob := newMemOutbox()
	ob.addErr = errors.New("configmaps is forbidden")
	pd := newScripted("pagerduty")
	q := NewQueue(Options{Outbox: ob, Owner: "a"}, []Notifier{pd}, zap.NewNop(), nil)
	runQueue(t, q)
	q.Enqueue(Event{Kind: KindDetected, IncidentID: "i"})
	select {
	case <-pd.done:
	case <-time.After(5 * time.Second):
		t.Fatal("an event the outbox refused was not delivered")
	}
}

// TestEventJSONRoundTrip: an event read back from the outbox has the
// typed details its producer put in.
func TestEventJSONRoundTrip(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	in := Event{ID: "x", Kind: KindRollbackSucceeded, Time: at, Target: Target{Namespace: "n", Deployment: "d"}, IncidentID: "n_d_h",
		Details: Details{
			Samples:         []Sample{{Time: at, Value: 0.2}, {Time: at, Value: math.NaN()}},
			DeployedAt:      at,
			BreachStartedAt: at,
			Plan:            []string{"stop", "verify"},
			Steps:           []StepResult{{Name: "stop", Started: at, Finished: at, Outcome: OutcomeOK}},
			DataIntegrity:   &DataIntegrity{AlertDeliveryQueue: 3},
			Requester:       &Requester{Kind: RequestedByAlertmanager, Name: "SecurityRollback", At: at, Fingerprint: "f", Labels: map[string]string{"a": "b"}},
			Threshold:       new(0.05),
			Window:          2 * time.Minute,
			Undone:          []string{"stop"},
			Since:           at,
			Resumed:         true,
		}}
	b, err := json.Marshal(in)
	if err != nil {
		t.Fatal(err)
	}
	var out Event
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	samples := out.Details.Samples
	if len(samples) != 2 || samples[0].Value != 0.2 || !math.IsNaN(samples[1].Value) {
		t.Errorf("samples = %#v", samples)
	}
	// NaN is never equal to itself: compare the rest.
	out.Details.Samples, in.Details.Samples = nil, nil
	if !reflect.DeepEqual(out, in) {
		t.Errorf("read back\n%#v\nwant\n%#v", out, in)
	}
}

// TestOldEventJSON: events an earlier version stored in the outbox (or in
// an incident's pending events), when details were a map, still decode.
func TestOldEventJSON(t *testing.T) {
	at := time.Date(2026, 5, 1, 12, 0, 0, 0, time.UTC)
	for _, tc := range []struct {
		name    string
		json    string
		want    Details
		wantErr string
	}{
		{name: "window in nanoseconds, typed values",
			json: `{"kind":"detected","time":"2026-05-01T12:00:00Z","target":{"namespace":"n","deployment":"d"},"details":{"data_integrity":{"alertDeliveryQueue":3,"unresolvedConflicts":0},"deployed_at":"2026-05-01T12:00:00Z","requested_by":{"kind":"trigger","name":"error-rate","at":"2026-05-01T12:00:00Z"},"threshold":0.05,"window":120000000000}}`,
			want: Details{DataIntegrity: &DataIntegrity{AlertDeliveryQueue: 3}, DeployedAt: at,
				Requester: &Requester{Kind: RequestedByTrigger, Name: "error-rate", At: at}, Threshold: new(0.05), Window: 2 * time.Minute}},
		{name: "window as a duration string",
			json: `{"kind":"detected","details":{"window":"5m"}}`,
			want: Details{Window: 5 * time.Minute}},
		{name: "window as a float",
			json: `{"kind":"detected","details":{"window":1.2e+11}}`,
			want: Details{Window: 2 * time.Minute}},
		{name: "the ad-hoc keys",
			json: `{"kind":"rollback_failed","details":{"gitops":"suspended","left_behind":["application"],"run_id":"r1","undone":["stop"],"since":"2026-05-01T12:00:00Z","preflight":true,"target_name":"api"}}`,
			want: Details{GitOps: "suspended", LeftBehind: []string{"application"}, RunID: "r1", Undone: []string{"stop"}, Since: at, Preflight: true, TargetName: "api"}},
		{name: "empty and null values, a key no version knows",
			json: `{"kind":"would_rollback","details":{"plan":null,"reason":"","other":"text"}}`,
			want: Details{}},
		{name: "a malformed typed detail",
			json:    `{"kind":"detected","details":{"samples":"nope"}}`,
			wantErr: "json: cannot unmarshal string into Go struct field Event.details.plain.samples of type []notify.Sample"},
		{name: "a window that is no duration",
			json:    `{"kind":"detected","details":{"window":"soon"}}`,
			wantErr: `details.window "soon": time: invalid duration "soon"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var e Event
			err := json.Unmarshal([]byte(tc.json), &e)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("err = %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if !reflect.DeepEqual(e.Details, tc.want) {
				t.Errorf("details = %#v, want %#v", e.Details, tc.want)
			}
		})
	}
}

// pickyNotifier is a scripted notifier that takes detections only.
type pickyNotifier struct{ *scripted }

func (pickyNotifier) Takes(e Event) bool { return e.Kind == KindDetected }

// An event a notifier does not take is not kept pending for it: a next
// leader would deliver nothing and a test of "every pending page
// delivered" would wait for pages that are never sent.
func TestOutboxKeepsPendingOnlyForNotifiersThatTakeTheEvent(t *testing.T) {
	ob := newMemOutbox()
	pd, slack := newScripted("pagerduty"), newScripted("slack")
	var seen []map[string]DeliveryState
	slack.hook = func(context.Context) error {
		ps, _ := ob.Pending(context.Background())
		for _, p := range ps {
			seen = append(seen, p.Notifiers)
		}
		return nil
	}
	q := NewQueue(Options{Outbox: ob, Owner: "a"}, []Notifier{pickyNotifier{pd}, slack}, zap.NewNop(), nil)
	runQueue(t, q)
	q.Enqueue(Event{Kind: KindStepStarted, IncidentID: "i"})
	<-slack.done
	if want := []map[string]DeliveryState{{"slack": StatePending}}; !reflect.DeepEqual(seen, want) {
		t.Errorf("outbox at slack's attempt = %v, want %v (nothing pending for pagerduty)", seen, want)
	}
	notifytest.WaitFor(t, "entry removed once delivered", func() bool { ps, _ := ob.Pending(context.Background()); return len(ps) == 0 })
}
