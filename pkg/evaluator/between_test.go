package evaluator

import (
	"fmt"
	"testing"
	"time"

	"go.uber.org/zap"
	"pgregory.net/rapid"

	"github.com/rollguard/rollguard/pkg/source"
)

// signal is a query's answer as a function of time, at any instant: what a
// Prometheus gives whose scrapes fall between the instants of the grid.
// Each interval [from, to) has a ratio; the volume query answers vol.
type signal struct {
	ratio   []segment
	volume  []segment
	missing []segment // no series at all
}

type segment struct {
	from, to time.Duration
	v        float64
}

func (s signal) at(segs []segment, t time.Time, def float64) float64 {
	d := t.Sub(t0)
	for _, g := range segs {
		if d >= g.from && d < g.to {
			return g.v
		}
	}
	return def
}

func (s signal) series(q string, t time.Time) []source.Series {
	if s.at(s.missing, t, 0) == 1 {
		return nil
	}
	if q == "volume" {
		return []source.Series{{Labels: lbl("d", "a"), Value: s.at(s.volume, t, 10)}}
	}
	return []source.Series{{Labels: lbl("d", "a"), Value: s.at(s.ratio, t, 0.01)}}
}

const forever = 24 * time.Hour

// TestRunStartsBetweenGridInstants: sampled every second, a breach that
// begins between two seconds starts the run within betweenStep of its
// real start, and the trigger fires (and acts) at that start + for
// exactly, whatever the poll interval. Before, the run started at the next
// whole second and the trigger fired up to a second late.
func TestRunStartsBetweenGridInstants(t *testing.T) {
	sec := func(f float64) time.Duration { return time.Duration(f * float64(time.Second)) }
	for _, tc := range []struct {
		name      string
		interval  time.Duration
		phase     time.Duration
		for_      time.Duration
		sig       signal
		minRate   float64
		wantFirst time.Duration
	}{
		{name: "5s interval", interval: 5 * time.Second, phase: ms(347), for_: time.Minute,
			sig: signal{ratio: []segment{{sec(13.37), forever, 0.2}}}, wantFirst: sec(13.4)},
		{name: "1s interval", interval: time.Second, phase: ms(10), for_: time.Minute,
			sig: signal{ratio: []segment{{sec(13.37), forever, 0.2}}}, wantFirst: sec(13.4)},
		{name: "30s interval, for off the grid", interval: 30 * time.Second, phase: ms(120), for_: 47 * time.Second,
			sig: signal{ratio: []segment{{sec(40.52), forever, 0.2}}}, wantFirst: sec(40.6)},
		{name: "breach in the last tenth: the grid instant", interval: 5 * time.Second, phase: ms(347), for_: time.Minute,
			sig: signal{ratio: []segment{{sec(13.95), forever, 0.2}}}, wantFirst: sec(14)},
		{name: "on the grid", interval: 5 * time.Second, phase: ms(347), for_: time.Minute,
			sig: signal{ratio: []segment{{sec(13), forever, 0.2}}}, wantFirst: sec(13)},
		{name: "a flap inside the step: the last unbroken run", interval: 5 * time.Second, phase: ms(347), for_: time.Minute,
			sig: signal{ratio: []segment{{sec(13.2), sec(13.5), 0.2}, {sec(13.5), sec(13.8), 0.01}, {sec(13.8), forever, 0.2}}}, wantFirst: sec(13.8)},
		{name: "volume below the guard between the instants", interval: 5 * time.Second, phase: ms(347), for_: time.Minute, minRate: 1,
			sig: signal{ratio: []segment{{sec(13.37), forever, 0.2}}, volume: []segment{{0, sec(13.65), 0.5}}}, wantFirst: sec(13.7)},
		{name: "after missing data: the grid instant", interval: 5 * time.Second, phase: ms(347), for_: time.Minute,
			sig: signal{ratio: []segment{{sec(13.37), forever, 0.2}}, missing: []segment{{sec(12.5), sec(13.2), 1}}}, wantFirst: sec(14)},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clk := newFakeClock(t0.Add(tc.phase))
			h := &history{series: tc.sig.series}
			rec := &clockedRecorder{clock: clk}
			e := New(Options{Interval: tc.interval, QueryTimeout: time.Second, Now: clk.Now, After: clk.After},
				map[string]Querier{"prom": h}, rec, zap.NewNop(), nil)
			r := rule("err", 0.05)
			r.For, r.MaxGap, r.MinRate = tc.for_, 0, tc.minRate
			s := spec("err", "prom", "errors", lbl("d", "a"), r)
			s.Resolution = time.Second
			if tc.minRate > 0 {
				s.VolumeQuery = "volume"
			}
			if err := e.SetTriggers([]Spec{s}); err != nil {
				t.Fatal(err)
			}
			wantFire := tc.wantFirst + tc.for_
			clk.runUntil(t, e, t0.Add(wantFire+2*tc.interval))

			if len(rec.decisions) != 1 {
				t.Fatalf("decisions %v, want one", rec.fired())
			}
			d := rec.decisions[0]
			if got := d.FirstBreach.Sub(t0); got != tc.wantFirst {
				t.Errorf("first breach +%s, want +%s", got, tc.wantFirst)
			}
			if got := d.FiredAt.Sub(t0); got != wantFire {
				t.Errorf("fired +%s, want +%s", got, wantFire)
			}
			if wall := rec.walls[0]; !wall.Equal(d.FiredAt) {
				t.Errorf("acted at +%s, want at the window's completion +%s", wall.Sub(t0), d.FiredAt.Sub(t0))
			}
		})
	}
}

// TestRunStartProperty: for any breach start, poll interval and phase,
// the run starts within betweenStep after the breach began (never before
// it: missing data and samples that did not breach are never evidence),
// and the trigger fires and acts at the run's start + for exactly. (A
// window shorter than the poll interval can complete before any tick has
// seen it pending: it acts at the tick that sees it, so for is drawn
// longer than an interval plus the resolution.)
func TestRunStartProperty(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		interval := rapid.SampledFrom([]time.Duration{time.Second, 2 * time.Second, 5 * time.Second, 15 * time.Second, 30 * time.Second}).Draw(rt, "interval")
		phase := time.Duration(rapid.Int64Range(0, int64(interval-1)).Draw(rt, "phase"))
		// After the first tick's sample: a breach already under way when
		// the evaluator starts is seen from its first sample.
		breach := phase + 2*time.Second + time.Duration(rapid.Int64Range(0, int64(20*time.Second)).Draw(rt, "breach"))
		forDur := interval + time.Second + time.Duration(rapid.Int64Range(1, int64(90*time.Second)).Draw(rt, "for"))

		clk := newFakeClock(t0.Add(phase))
		h := &history{series: signal{ratio: []segment{{breach, forever, 0.2}}}.series}
		rec := &clockedRecorder{clock: clk}
		e := New(Options{Interval: interval, QueryTimeout: time.Second, Now: clk.Now, After: clk.After},
			map[string]Querier{"prom": h}, rec, zap.NewNop(), nil)
		r := rule("err", 0.05)
		r.For, r.MaxGap = forDur, 0
		s := spec("err", "prom", "errors", lbl("d", "a"), r)
		s.Resolution = time.Second
		if err := e.SetTriggers([]Spec{s}); err != nil {
			rt.Fatal(err)
		}
		clk.runUntil(rt, e, t0.Add(breach+forDur+2*interval+time.Second))
		if len(rec.decisions) != 1 {
			rt.Fatalf("decisions %v, want one", rec.fired())
		}
		d := rec.decisions[0]
		late := d.FirstBreach.Sub(t0.Add(breach))
		if late < 0 || late >= betweenStep {
			rt.Fatalf("run starts %s after the breach, want in [0, %s)", late, betweenStep)
		}
		if !d.FiredAt.Equal(d.FirstBreach.Add(forDur)) || !rec.walls[0].Equal(d.FiredAt) {
			rt.Fatalf("first breach +%s, fired +%s, acted +%s; want fired and acted at +%s", d.FirstBreach.Sub(t0),
				d.FiredAt.Sub(t0), rec.walls[0].Sub(t0), d.FirstBreach.Add(forDur).Sub(t0))
		}
	})
}

// TestBetweenCallsOnlyWhereARunStarts: the step before an instant is
// sampled only where a run starts after a sample that did not breach, once
// per query of the trigger's component, and never for a run that goes on.
func TestBetweenCallsOnlyWhereARunStarts(t *testing.T) {
	h := &history{series: signal{ratio: []segment{{13370 * time.Millisecond, forever, 0.2}}}.series}
	e := newEval(t, map[string]Querier{"prom": h}, &recorder{}, nil)
	r := rule("err", 0.05)
	r.MinRate = 1
	s := spec("err", "prom", "errors", lbl("d", "a"), r)
	s.Resolution, s.VolumeQuery = time.Second, "volume"
	if err := e.SetTriggers([]Spec{s}); err != nil {
		t.Fatal(err)
	}
	ticks(e, 0, 40)
	if got, want := fmt.Sprint(h.between), "[range errors 13.1s..13.9s range volume 13.1s..13.9s]"; got != want {
		// The two queries run in parallel: either order.
		if alt := "[range volume 13.1s..13.9s range errors 13.1s..13.9s]"; got != alt {
			t.Errorf("between calls %s, want %s", got, want)
		}
	}
	if st := statusOf(t, e, "err"); !st.BreachStart.Equal(t0.Add(13400 * time.Millisecond)) {
		t.Errorf("breach start %v, want +13.4s", st.BreachStart)
	}
}
