package notify

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rollguard/rollguard/pkg/notify/notifytest"
)

// scripted answers Notify with its errors in order, then nil; it records
// every attempt.
type scripted struct {
	name string
	mu   sync.Mutex
	errs []error
	got  []Event
	done chan Event // receives each delivered event
	hook func(ctx context.Context) error
}

func newScripted(name string, errs ...error) *scripted {
	return &scripted{name: name, errs: errs, done: make(chan Event, 100)}
}

func (s *scripted) Name() string { return s.name }

func (s *scripted) Notify(ctx context.Context, e Event) error {
	if s.hook != nil {
		if err := s.hook(ctx); err != nil {
			return err
		}
	}
	s.mu.Lock()
	s.got = append(s.got, e)
	var err error
	if len(s.errs) > 0 {
		err, s.errs = s.errs[0], s.errs[1:]
	}
	s.mu.Unlock()
	if err == nil {
		s.done <- e
	}
	return err
}

func (s *scripted) attempts() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.got)
}

type sleeps struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleeps) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

func (s *sleeps) get() []time.Duration {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]time.Duration(nil), s.d...)
}

func testOpts(sl *sleeps) Options {
	return Options{
		MaxAttempts: 5,
		BaseBackoff: time.Second,
		MaxBackoff:  4 * time.Second,
		Timeout:     5 * time.Second,
		Sleep:       sl.sleep,
		Jitter:      func(d time.Duration) time.Duration { return d },
	}
}

func count(q *Queue, notifier, result string) float64 {
	return metricValue(q.total.WithLabelValues(notifier, result))
}

// metricValue reads a counter or gauge (testutil would pull in a module
// go.sum does not have).
func metricValue(m prometheus.Metric) float64 {
	var d dto.Metric
	if err := m.Write(&d); err != nil {
		panic(err)
	}
	if d.Counter != nil {
		return d.Counter.GetValue()
	}
	return d.Gauge.GetValue()
}

func TestQueueRetries(t *testing.T) {
	rateLimited := Retryable(errors.New("429"), 7*time.Second)
	cases := []struct {
		name       string
		errs       []error
		attempts   int
		sleeps     []time.Duration
		delivered  float64
		retried    float64
		failed     float64
		wantLogErr string
	}{
		{name: "first try", attempts: 1, delivered: 1},
		{
			name:     "retryable backs off exponentially up to the max",
			errs:     []error{ErrRetryable, fmt.Errorf("x: %w", ErrRetryable), ErrRetryable, ErrRetryable},
			attempts: 5, sleeps: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second},
			delivered: 1, retried: 4,
		},
		{
			name:     "retry-after is honoured",
			errs:     []error{rateLimited},
			attempts: 2, sleeps: []time.Duration{7 * time.Second}, delivered: 1, retried: 1,
		},
		{
			name:     "permanent is not retried",
			errs:     []error{errors.New("pagerduty: 400 invalid event")},
			attempts: 1, failed: 1, wantLogErr: "permanent error",
		},
		{
			name:     "attempts exhausted",
			errs:     []error{ErrRetryable, ErrRetryable, ErrRetryable, ErrRetryable, ErrRetryable, ErrRetryable},
			attempts: 5, sleeps: []time.Duration{time.Second, 2 * time.Second, 4 * time.Second, 4 * time.Second},
			retried: 4, failed: 1, wantLogErr: "attempts exhausted",
		},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			sl := &sleeps{}
			n := newScripted("pd", tc.errs...)
			core, logs := observer.New(zapcore.DebugLevel)
			q := NewQueue(testOpts(sl), []Notifier{n}, zap.New(core), prometheus.NewRegistry())
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			done := make(chan struct{})
			go func() { q.Run(ctx); close(done) }()
			q.Enqueue(Event{Kind: KindDetected, IncidentID: "a"})
			notifytest.WaitFor(t, "outcome", func() bool {
				return count(q, "pd", ResultDelivered)+count(q, "pd", ResultFailed) == 1
			})
			cancel()
			<-done
			if got := n.attempts(); got != tc.attempts {
				t.Errorf("attempts = %d, want %d", got, tc.attempts)
			}
			if got := sl.get(); fmt.Sprint(got) != fmt.Sprint(tc.sleeps) && !(len(got) == 0 && len(tc.sleeps) == 0) {
				t.Errorf("sleeps = %v, want %v", got, tc.sleeps)
			}
			for res, want := range map[string]float64{ResultDelivered: tc.delivered, ResultRetried: tc.retried, ResultFailed: tc.failed, ResultDropped: 0} {
				if got := count(q, "pd", res); got != want {
					t.Errorf("%s = %v, want %v", res, got, want)
				}
			}
			gaveUp := logs.FilterMessage("notification gave up").All()
			if tc.wantLogErr == "" {
				if len(gaveUp) != 0 {
					t.Errorf("unexpected give-up log: %v", gaveUp)
				}
				return
			}
			if len(gaveUp) != 1 || gaveUp[0].Level != zapcore.ErrorLevel || gaveUp[0].ContextMap()["reason"] != tc.wantLogErr {
				t.Errorf("give-up logs = %+v, want one Error with reason %q", gaveUp, tc.wantLogErr)
			}
		})
	}
}

func TestQueueAttemptTimeoutIsRetryable(t *testing.T) {
	sl := &sleeps{}
	opts := testOpts(sl)
	opts.Timeout = 20 * time.Millisecond
	opts.MaxAttempts = 2
	n := newScripted("slow")
	// The notifier ignores classification and returns the bare ctx error,
	// as a careless one would: the queue must still see a timeout.
	n.hook = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	q := NewQueue(opts, []Notifier{n}, zap.NewNop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	q.Enqueue(Event{Kind: KindTest})
	notifytest.WaitFor(t, "give up", func() bool { return count(q, "slow", ResultFailed) == 1 })
	if got := count(q, "slow", ResultRetried); got != 1 {
		t.Errorf("retried = %v, want 1", got)
	}
}

func TestQueueSlowNotifierDoesNotBlockOthers(t *testing.T) {
	sl := &sleeps{}
	release := make(chan struct{})
	slow := newScripted("slow")
	entered := make(chan struct{}, 10)
	slow.hook = func(ctx context.Context) error {
		entered <- struct{}{}
		select {
		case <-release:
			return nil
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	fast := newScripted("fast")
	opts := testOpts(sl)
	opts.Size = 2
	q := NewQueue(opts, []Notifier{slow, fast}, zap.NewNop(), nil)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan struct{})
	go func() { q.Run(ctx); close(done) }()

	q.Enqueue(Event{Kind: KindDetected, IncidentID: "1"})
	<-entered // slow is now hung on event 1
	for i := 1; i <= 4; i++ {
		if i > 1 {
			start := time.Now()
			q.Enqueue(Event{Kind: KindStepStarted, IncidentID: fmt.Sprint(i)})
			if el := time.Since(start); el > 100*time.Millisecond {
				t.Errorf("Enqueue blocked for %v", el)
			}
		}
		select {
		case e := <-fast.done:
			if e.IncidentID != fmt.Sprint(i) {
				t.Errorf("fast got %q, want %q (order)", e.IncidentID, fmt.Sprint(i))
			}
		case <-time.After(5 * time.Second):
			t.Fatalf("fast notifier held back by the slow one at event %d", i)
		}
	}
	// slow holds event 1 in flight and 2, 3 in its buffer of 2: 4 dropped.
	if got := count(q, "slow", ResultDropped); got != 1 {
		t.Errorf("slow dropped = %v, want 1", got)
	}
	if got := metricValue(q.length.WithLabelValues("slow")); got != 2 {
		t.Errorf("slow queue length = %v, want 2", got)
	}
	close(release)
	notifytest.WaitFor(t, "slow backlog", func() bool { return count(q, "slow", ResultDelivered) == 3 })
	cancel()
	<-done
}

func TestQueueFullDropsAndCounts(t *testing.T) {
	n := newScripted("pd")
	core, logs := observer.New(zapcore.InfoLevel)
	opts := testOpts(&sleeps{})
	opts.Size = 3
	q := NewQueue(opts, []Notifier{n}, zap.New(core), nil)
	// Not running: the buffer fills and Enqueue must still return.
	for i := 0; i < 5; i++ {
		q.Enqueue(Event{Kind: KindStepStarted, IncidentID: "inc"})
	}
	if got := count(q, "pd", ResultDropped); got != 2 {
		t.Errorf("dropped = %v, want 2", got)
	}
	if got := q.Status()[0]; got.Dropped != 2 || got.QueueLength != 3 {
		t.Errorf("status = %+v, want dropped 2, length 3", got)
	}
	dl := logs.FilterMessage("notification dropped").All()
	if len(dl) != 2 || dl[0].Level != zapcore.ErrorLevel {
		t.Errorf("drop logs = %+v, want 2 at Error", dl)
	}
	// The buffered three are delivered once it runs.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	notifytest.WaitFor(t, "backlog", func() bool { return count(q, "pd", ResultDelivered) == 3 })
}

func TestQueueDrainsOnCancel(t *testing.T) {
	n := newScripted("pd")
	opts := testOpts(&sleeps{})
	opts.DrainTimeout = 2 * time.Second
	q := NewQueue(opts, []Notifier{n}, zap.NewNop(), nil)
	for i := 0; i < 4; i++ {
		q.Enqueue(Event{Kind: KindStepFinished})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	q.Run(ctx) // must return, having delivered the backlog
	if got := count(q, "pd", ResultDelivered); got != 4 {
		t.Errorf("delivered after drain = %v, want 4", got)
	}
}

func TestQueueDrainIsBounded(t *testing.T) {
	n := newScripted("hang")
	n.hook = func(ctx context.Context) error { <-ctx.Done(); return ctx.Err() }
	opts := testOpts(&sleeps{})
	opts.DrainTimeout = 30 * time.Millisecond
	opts.Timeout = time.Hour
	q := NewQueue(opts, []Notifier{n}, zap.NewNop(), nil)
	for i := 0; i < 3; i++ {
		q.Enqueue(Event{Kind: KindStepFinished})
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	start := time.Now()
	q.Run(ctx)
	if el := time.Since(start); el > 2*time.Second {
		t.Fatalf("Run took %v after cancel, want about the drain bound", el)
	}
	if f, d := count(q, "hang", ResultFailed), count(q, "hang", ResultDropped); f != 1 || d != 2 {
		t.Errorf("failed %v dropped %v, want 1 and 2", f, d)
	}
}

func TestRetryHelpers(t *testing.T) {
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	for in, want := range map[string]time.Duration{
		"":                              0,
		"3":                             3 * time.Second,
		"-1":                            0,
		"soon":                          0,
		"Fri, 02 Jan 2026 03:04:15 GMT": 10 * time.Second,
	} {
		if got := ParseRetryAfter(in, now); got != want {
			t.Errorf("ParseRetryAfter(%q) = %v, want %v", in, got, want)
		}
	}
	err := fmt.Errorf("slack post: %w", Retryable(errors.New("429"), 2*time.Second))
	if !IsRetryable(err) {
		t.Error("wrapped RetryableError not retryable")
	}
	if d, ok := RetryAfter(err); !ok || d != 2*time.Second {
		t.Errorf("RetryAfter = %v %v", d, ok)
	}
	if IsRetryable(errors.New("400")) {
		t.Error("plain error is retryable")
	}
}

func TestIncidentIDAndTruncate(t *testing.T) {
	if got := IncidentID(Target{Namespace: "production", Deployment: "pggit-api"}, "7"); got != "production_pggit-api_7" {
		t.Errorf("IncidentID = %q", got)
	}
	if got := IncidentID(Target{Cluster: "EU/1", Namespace: "p", Deployment: "a.b"}, "../x y"); got != "eu-1_p_a.b_x-y" {
		t.Errorf("IncidentID = %q", got)
	}
	s := strings.Repeat("é", 600) // 1200 bytes
	got := Truncate(s, 1024)
	if len(got) > 1024 || !strings.HasSuffix(got, "…") || !isValidUTF8(got) {
		t.Errorf("Truncate: len %d valid %v", len(got), isValidUTF8(got))
	}
	if Truncate("short", 1024) != "short" {
		t.Error("Truncate changed a short string")
	}
}

func isValidUTF8(s string) bool { return strings.ToValidUTF8(s, "\uFFFD") == s }

func TestFilter(t *testing.T) {
	n := newScripted("slack")
	f := Filter(n, func(e Event) bool { return e.Target.Namespace != "staging" })
	if f.Name() != "slack" {
		t.Errorf("Name = %q", f.Name())
	}
	for _, ns := range []string{"staging", "production"} {
		if err := f.Notify(context.Background(), Event{Target: Target{Namespace: ns}}); err != nil {
			t.Fatal(err)
		}
	}
	if n.attempts() != 1 || n.got[0].Target.Namespace != "production" {
		t.Errorf("passed %+v, want only production", n.got)
	}
}

func TestSampleJSONWritesNaNAsNull(t *testing.T) {
	at := time.Date(2026, 11, 25, 14, 35, 0, 0, time.UTC)
	in := []Sample{{Time: at, Value: 0.2}, {Time: at.Add(time.Second), Value: math.NaN()}}
	b, err := json.Marshal(Details{Samples: in})
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	want := `{"samples":[{"time":"2026-11-25T14:35:00Z","value":0.2},{"time":"2026-11-25T14:35:01Z","value":null}]}`
	if string(b) != want {
		t.Fatalf("got %s\nwant %s", b, want)
	}
	var out struct{ Samples []Sample }
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	if len(out.Samples) != 2 || out.Samples[0].Value != 0.2 || !math.IsNaN(out.Samples[1].Value) {
		t.Fatalf("round trip: %+v", out.Samples)
	}
}
