package evaluator

import (
	"context"
	"fmt"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// history answers instant and range queries from a function of time, like
// a Prometheus whose data is known at every instant. It records the
// instants it was asked for (an instant query is a range of one).
type history struct {
	mu     sync.Mutex
	series func(query string, t time.Time) []source.Series
	fail   func(query string, start, end time.Time) error
	calls  []string
	ranges [][2]time.Time // per range call: start, end
	// between are the calls that sample the step before a run's start
	// (step betweenStep), kept apart from the grid's.
	between []string
}

func (h *history) Query(_ context.Context, q string, ts time.Time) ([]source.Series, error) {
	h.mu.Lock()
	h.calls = append(h.calls, fmt.Sprintf("instant %s @%s", q, ts.Sub(t0)))
	h.ranges = append(h.ranges, [2]time.Time{ts, ts}) // one instant of a range
	h.mu.Unlock()
	return h.series(q, ts), nil
}

func (h *history) QueryRange(_ context.Context, q string, start, end time.Time, step time.Duration) ([]source.Range, error) {
	h.mu.Lock()
	if step == betweenStep {
		h.between = append(h.between, fmt.Sprintf("range %s %s..%s", q, start.Sub(t0), end.Sub(t0)))
	} else {
		h.calls = append(h.calls, fmt.Sprintf("range %s %s..%s", q, start.Sub(t0), end.Sub(t0)))
		h.ranges = append(h.ranges, [2]time.Time{start, end})
	}
	h.mu.Unlock()
	if h.fail != nil {
		if err := h.fail(q, start, end); err != nil {
			return nil, err
		}
	}
	byKey := map[string]*source.Range{}
	var keys []string
	for t := start; !t.After(end); t = t.Add(step) {
		for _, s := range h.series(q, t) {
			k := fmt.Sprint(s.Labels)
			r := byKey[k]
			if r == nil {
				r = &source.Range{Labels: s.Labels}
				byKey[k] = r
				keys = append(keys, k)
			}
			r.Points = append(r.Points, source.Point{Time: t, Value: s.Value})
		}
	}
	sort.Strings(keys)
	out := make([]source.Range, 0, len(keys))
	for _, k := range keys {
		out = append(out, *byKey[k])
	}
	return out, nil
}

func (h *history) rangeCalls() [][2]time.Time {
	h.mu.Lock()
	defer h.mu.Unlock()
	return append([][2]time.Time(nil), h.ranges...)
}

// fakeClock drives Run without sleeping: Run's waits are handed to the
// test, which moves the clock to the wake time and releases them.
type fakeClock struct {
	mu    sync.Mutex
	now   time.Time
	waits chan fakeWait
}

type fakeWait struct {
	at time.Time
	ch chan time.Time
}

func newFakeClock(start time.Time) *fakeClock {
	return &fakeClock{now: start, waits: make(chan fakeWait)}
}

func (c *fakeClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.now
}

func (c *fakeClock) After(d time.Duration) <-chan time.Time {
	w := fakeWait{at: c.Now().Add(max(d, 0)), ch: make(chan time.Time, 1)}
	c.waits <- w
	return w.ch
}

// runUntil runs e.Run on the clock, releasing each wait at its time, until
// the clock would pass until. It returns when Run has returned.
func (c *fakeClock) runUntil(t interface{ Fatalf(string, ...any) }, e *Evaluator, until time.Time) {
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	for {
		w := <-c.waits
		if w.at.After(until) {
			cancel()
			break
		}
		c.mu.Lock()
		c.now = w.at
		c.mu.Unlock()
		w.ch <- w.at
	}
	if err := <-done; err != nil {
		t.Fatalf("Run = %v", err)
	}
}

// clockedRecorder notes the clock's time at each Fire: when the evaluator
// acted, as opposed to the instant the decision is stamped with.
type clockedRecorder struct {
	recorder
	clock *fakeClock
	walls []time.Time
}

func (r *clockedRecorder) Fire(d trigger.Decision) {
	r.recorder.Fire(d)
	r.mu.Lock()
	r.walls = append(r.walls, r.clock.Now())
	r.mu.Unlock()
}

func ms(n int) time.Duration { return time.Duration(n) * time.Millisecond }

// breachFrom is a query's answer: one series, 0.2 from `from` on, 0.01
// before.
func breachFrom(from time.Time) func(string, time.Time) []source.Series {
	return func(_ string, t time.Time) []source.Series {
		v := 0.01
		if !t.Before(from) {
			v = 0.2
		}
		return []source.Series{{Labels: lbl("d", "a"), Value: v}}
	}
}

// TestRangeFiresAtBreachStartPlusFor: at a 5 s interval with ticks at an
// arbitrary phase, a trigger sampled every second starts its run at the
// first breaching second and fires at that second + for, evaluated at that
// very moment rather than at the next tick.
func TestRangeFiresAtBreachStartPlusFor(t *testing.T) {
	for _, tc := range []struct {
		name     string
		interval time.Duration
		phase    time.Duration // ticks at t0 + phase + k·interval
		breach   time.Duration // first breaching instant
		for_     time.Duration
		wantFire time.Duration
	}{
		{"5s interval, breach between ticks", 5 * time.Second, ms(347), 13 * time.Second, time.Minute, 73 * time.Second},
		{"5s interval, breach just after a tick", 5 * time.Second, ms(999), 6 * time.Second, time.Minute, 66 * time.Second},
		{"1s interval", time.Second, ms(10), 13 * time.Second, time.Minute, 73 * time.Second},
		{"30s interval, window not on the tick grid", 30 * time.Second, ms(120), 41 * time.Second, 47 * time.Second, 88 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(t0.Add(tc.phase))
			h := &history{series: breachFrom(t0.Add(tc.breach))}
			rec := &clockedRecorder{clock: clk}
			e := New(Options{Interval: tc.interval, QueryTimeout: time.Second, Now: clk.Now, After: clk.After},
				map[string]Querier{"prom": h}, rec, zap.NewNop(), nil)
			r := rule("err", 0.05)
			r.For, r.MaxGap = tc.for_, 0
			s := spec("err", "prom", "errors", lbl("d", "a"), r)
			s.Resolution = time.Second
			if err := e.SetTriggers([]Spec{s}); err != nil {
				t.Fatal(err)
			}
			clk.runUntil(t, e, t0.Add(tc.wantFire+2*tc.interval))

			if len(rec.decisions) != 1 {
				t.Fatalf("decisions %v, want one", rec.fired())
			}
			d := rec.decisions[0]
			if !d.FirstBreach.Equal(t0.Add(tc.breach)) || !d.FiredAt.Equal(t0.Add(tc.wantFire)) {
				t.Errorf("first breach +%s, fired +%s; want +%s, +%s", d.FirstBreach.Sub(t0), d.FiredAt.Sub(t0), tc.breach, tc.wantFire)
			}
			if wall := rec.walls[0]; !wall.Equal(d.FiredAt) {
				t.Errorf("acted at +%s, want at the window's completion +%s", wall.Sub(t0), d.FiredAt.Sub(t0))
			}
			// Every second was asked for exactly once, in order.
			next := time.Time{}
			for _, c := range h.rangeCalls() {
				if !next.IsZero() && !c[0].Equal(next) {
					t.Fatalf("range call %s..%s after one that ended at +%s", c[0].Sub(t0), c[1].Sub(t0), next.Add(-time.Second).Sub(t0))
				}
				next = c[1].Add(time.Second)
			}
		})
	}
}

// TestRangeDueEvaluationRunsOnlyItsQueries: the evaluation at a window's
// completion runs that trigger's query and volume query (they sample the
// same instants) and nothing else.
func TestRangeDueEvaluationRunsOnlyItsQueries(t *testing.T) {
	h := &history{series: func(q string, t time.Time) []source.Series {
		switch q {
		case "volume":
			return []source.Series{{Labels: lbl("d", "a"), Value: 10}}
		case "other":
			return []source.Series{{Labels: lbl("d", "a"), Value: 0}}
		}
		return breachFrom(at(12))(q, t)
	}}
	pg := static(map[string][]source.Series{"pool": {{Value: 0.1}}})
	rec := &recorder{}
	e := newEval(t, map[string]Querier{"prom": h, "pg": pg}, rec, nil)
	r := rule("err", 0.05)
	r.For, r.MinRate = 10*time.Second, 1
	errSpec := spec("err", "prom", "errors", lbl("d", "a"), r)
	errSpec.VolumeQuery, errSpec.Resolution = "volume", time.Second
	other := spec("other", "prom", "other", lbl("d", "a"), rule("other", 0.05))
	other.Resolution = time.Second
	if err := e.SetTriggers([]Spec{errSpec, other, spec("pool", "pg", "pool", nil, rule("pool", 0.9))}); err != nil {
		t.Fatal(err)
	}
	ticks(e, 0, 20) // ticks at 0, 5, ..., 20
	due, ok := e.NextDue()
	if !ok || !due.Equal(at(22)) {
		t.Fatalf("NextDue = +%s, %v; want +22s (first breach 12 s + 10 s)", due.Sub(t0), ok)
	}
	h.calls = nil
	e.EvaluateDue(context.Background(), at(21)) // not due yet: nothing runs
	if len(h.calls) != 0 || pg.count("pool") != 5 {
		t.Fatalf("evaluation before the due time ran %v, pool %d", h.calls, pg.count("pool"))
	}
	e.EvaluateDue(context.Background(), at(22).Add(ms(3)))
	sort.Strings(h.calls)
	if want := "[range errors 21s..22s range volume 21s..22s]"; fmt.Sprint(h.calls) != want {
		t.Errorf("due evaluation ran %v, want %s", h.calls, want)
	}
	if pg.count("pool") != 5 {
		t.Errorf("due evaluation ran the PostgreSQL query")
	}
	if got := fmt.Sprint(rec.fired()); got != "[err@22s]" {
		t.Errorf("fired %s, want [err@22s]", got)
	}
	if st := statusOf(t, e, "other"); !st.LastSample.Equal(at(20)) {
		t.Errorf("other trigger sampled at +%s by a due evaluation that was not its own", st.LastSample.Sub(t0))
	}
	if _, ok := e.NextDue(); ok {
		t.Errorf("still due after firing")
	}
}

// TestRangeInstantsAndErrors: what a trigger sampled at a resolution sees
// when series come and go, when two report at once, and when the query
// fails.
func TestRangeInstantsAndErrors(t *testing.T) {
	h := &history{series: func(_ string, t time.Time) []source.Series {
		sec := int(t.Sub(t0) / time.Second)
		v1 := source.Series{Labels: lbl("d", "a", "version", "v1"), Value: 0.2}
		v2 := source.Series{Labels: lbl("d", "a", "version", "v2"), Value: 0.3}
		switch {
		case sec < 3:
			return []source.Series{v1}
		case sec == 3: // the series is missing
			return nil
		case sec < 6:
			return []source.Series{v1, v2} // both versions report: ambiguous
		default:
			return []source.Series{v2}
		}
	}}
	h.fail = func(_ string, start, _ time.Time) error {
		if start.Equal(at(11)) {
			return fmt.Errorf("prometheus range query: %w", source.ErrTimeout)
		}
		return nil
	}
	rec := &recorder{}
	e := newEval(t, map[string]Querier{"prom": h}, rec, nil)
	r := rule("err", 0.05)
	r.For = 0
	s := spec("err", "prom", "errors", lbl("d", "a"), r)
	s.Resolution = time.Second
	if err := e.SetTriggers([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	var states []string
	for _, sec := range []int{0, 5, 10, 15} {
		e.Tick(context.Background(), at(sec).Add(ms(400)))
		st := statusOf(t, e, "err")
		states = append(states, fmt.Sprintf("%s@%s", st.State, st.LastSample.Sub(t0)))
	}
	if got, want := strings.Join(states, " "), "firing@0s nodata@5s firing@10s nodata@15s"; got != want {
		t.Errorf("states %s, want %s", got, want)
	}
	st := statusOf(t, e, "err")
	if !strings.Contains(st.LastError, source.ErrTimeout.Error()) {
		t.Errorf("last error %q, want the range query's timeout", st.LastError)
	}
	// For 0 fires on the first breach of each run: the missing series at
	// 3 s and the ambiguous 4-5 s reset the run, so 6 s fires again.
	if got := fmt.Sprint(rec.fired()); got != "[err@0s err@6s]" {
		t.Errorf("fired %s, want [err@0s err@6s]", got)
	}
	if got := rec.decisions[1].Value; got != 0.3 {
		t.Errorf("second decision value %v, want v2's 0.3", got)
	}
}

// TestRangeReloadKeepsPlaceInTime: a reload neither repeats nor skips the
// instants of a range query that stays.
func TestRangeReloadKeepsPlaceInTime(t *testing.T) {
	h := &history{series: breachFrom(at(0))}
	e := newEval(t, map[string]Querier{"prom": h}, &recorder{}, nil)
	s := spec("a", "prom", "errors", lbl("d", "a"), rule("a", 0.05))
	s.Resolution = time.Second
	if err := e.SetTriggers([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	ticks(e, 0, 10)
	b := spec("b", "prom", "errors", lbl("d", "a"), rule("b", 0.05))
	b.Resolution = time.Second
	if err := e.SetTriggers([]Spec{s, b}); err != nil {
		t.Fatal(err)
	}
	ticks(e, 15, 15)
	calls := h.rangeCalls()
	if last := calls[len(calls)-1]; !last[0].Equal(at(11)) || !last[1].Equal(at(15)) {
		t.Errorf("range after the reload %s..%s, want 11s..15s", last[0].Sub(t0), last[1].Sub(t0))
	}
	if st := statusOf(t, e, "a"); !st.BreachStart.Equal(at(0)) {
		t.Errorf("kept trigger's run starts +%s, want +0s", st.BreachStart.Sub(t0))
	}
}

// TestRangeStallIsBounded: after a long stall a range evaluation reaches
// back at most maxRangeIntervals intervals, and the window sees the gap.
func TestRangeStallIsBounded(t *testing.T) {
	h := &history{series: breachFrom(at(0))}
	e := newEval(t, map[string]Querier{"prom": h}, &recorder{}, nil)
	r := rule("a", 0.05)
	r.MaxGap = 0 // 2 × 5 s
	s := spec("a", "prom", "errors", lbl("d", "a"), r)
	s.Resolution = time.Second
	if err := e.SetTriggers([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	ticks(e, 0, 5)
	e.Tick(context.Background(), at(60))
	calls := h.rangeCalls()
	if last := calls[len(calls)-1]; !last[0].Equal(at(46)) || !last[1].Equal(at(60)) {
		t.Errorf("range after the stall %s..%s, want 46s..60s (3 intervals)", last[0].Sub(t0), last[1].Sub(t0))
	}
	if st := statusOf(t, e, "a"); !st.BreachStart.Equal(at(46)) {
		t.Errorf("run starts +%s after a 41 s gap, want +46s", st.BreachStart.Sub(t0))
	}
}

func TestResolutionValidation(t *testing.T) {
	e := newEval(t, map[string]Querier{"prom": &history{}, "pg": static(nil)}, nil, nil)
	bad := func(id, backend string, res time.Duration) Spec {
		s := spec(id, backend, "q", nil, rule(id, 1))
		s.Resolution = res
		return s
	}
	err := e.SetTriggers([]Spec{
		bad("neg", "prom", -time.Second),
		bad("frac", "prom", 1500*time.Microsecond),
		bad("big", "prom", 6*time.Second),
		bad("pg", "pg", time.Second),
		bad("ok", "prom", 5*time.Second),
	})
	want := `set triggers: trigger "neg": resolution -1s: must be a whole number of milliseconds >= 0
trigger "frac": resolution 1.5ms: must be a whole number of milliseconds >= 0
trigger "big": resolution 6s: must not exceed the interval 5s
trigger "pg": resolution 1s: backend "pg" cannot evaluate ranges`
	if err == nil || err.Error() != want {
		t.Fatalf("SetTriggers = %v\nwant %s", err, want)
	}
}

func TestStepGrid(t *testing.T) {
	tm := time.Date(2026, 3, 14, 14, 0, 7, 300e6, time.UTC)
	for _, tc := range []struct {
		step        time.Duration
		floor, ceil string
	}{
		{time.Second, "14:00:07", "14:00:08"},
		{7 * time.Second, "14:00:02", "14:00:09"}, // multiples of 7 s since the Unix epoch, not of the hour
		{250 * time.Millisecond, "14:00:07.25", "14:00:07.5"},
	} {
		f, c := floorStep(tm, tc.step), ceilStep(tm, tc.step)
		if got := f.Format("15:04:05.999"); got != tc.floor {
			t.Errorf("floorStep(%s) = %s, want %s", tc.step, got, tc.floor)
		}
		if got := c.Format("15:04:05.999"); got != tc.ceil {
			t.Errorf("ceilStep(%s) = %s, want %s", tc.step, got, tc.ceil)
		}
		if f.UnixNano()%int64(tc.step) != 0 || !ceilStep(f, tc.step).Equal(f) {
			t.Errorf("step %s: floor %s is not on the grid", tc.step, f)
		}
	}
}

// TestOneInstantIsAnInstantQuery: an evaluation of a single instant (a
// resolution equal to the interval) asks Prometheus an instant query, half
// the cost of a one-point query_range, and samples the same instants.
func TestOneInstantIsAnInstantQuery(t *testing.T) {
	h := &history{series: breachFrom(at(7))}
	rec := &recorder{}
	e := newEval(t, map[string]Querier{"prom": h}, rec, nil)
	r := rule("a", 0.05)
	r.For = 20 * time.Second
	s := spec("a", "prom", "errors", lbl("d", "a"), r)
	s.Resolution = 5 * time.Second
	if err := e.SetTriggers([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	for _, sec := range []int{1, 6, 11, 16, 21, 26, 31, 36} {
		e.Tick(context.Background(), at(sec).Add(ms(300)))
	}
	want := "[instant errors @0s instant errors @5s instant errors @10s instant errors @15s instant errors @20s instant errors @25s instant errors @30s instant errors @35s]"
	if got := fmt.Sprint(h.calls); got != want {
		t.Errorf("calls %s\nwant  %s", got, want)
	}
	if got := fmt.Sprint(rec.fired()); got != "[a@30s]" {
		t.Errorf("fired %s, want [a@30s] (first breach at the 10 s instant + 20 s)", got)
	}
}
