package evaluator

import (
	"context"
	"fmt"
	"math"
	"reflect"
	"sort"
	"testing"
	"time"

	"go.uber.org/zap"
	"pgregory.net/rapid"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/trigger/triggertest"
)

// What one instant of a generated history holds for the watched
// Deployment.
const (
	instOK        = iota // ratio 0.01
	instBreach           // ratio 0.2
	instMissing          // no series
	instAmbiguous        // two versions report
	instLowVolume        // ratio 0.3 at 0.5 requests/s
	instNoVolume         // ratio 0.2, no volume series
	instKinds
)

// genHistory draws a history on the resolution's grid from t0: runs of
// one kind, so windows get to fill, with flapping and gaps in between.
type genHistory struct {
	res   time.Duration
	kinds []int
}

func drawHistory(t *rapid.T, res time.Duration, n int) *genHistory {
	h := &genHistory{res: res}
	for len(h.kinds) < n {
		k := rapid.IntRange(0, instKinds-1).Draw(t, "kind")
		if rapid.IntRange(0, 2).Draw(t, "weight") > 0 {
			k = rapid.SampledFrom([]int{instOK, instBreach}).Draw(t, "common")
		}
		for range rapid.IntRange(1, 40).Draw(t, "run") {
			h.kinds = append(h.kinds, k)
		}
	}
	return h
}

func (h *genHistory) at(t time.Time) int {
	if t.Before(t0) || t.UnixNano()%int64(h.res) != 0 {
		return instMissing // not an instant of the history
	}
	i := int(t.Sub(t0) / h.res)
	if i >= len(h.kinds) {
		return instOK
	}
	return h.kinds[i]
}

// series answers the history's queries: "ratio" (grouped, with a
// neighbour the match must skip), "volume", and "other", an unrelated
// query of another trigger.
func (h *genHistory) series(q string, t time.Time) []source.Series {
	me := lbl("namespace", "prod", "deployment", "api")
	v := func(version string) map[string]string {
		return lbl("namespace", "prod", "deployment", "api", "version", version)
	}
	neighbour := source.Series{Labels: lbl("namespace", "prod", "deployment", "web"), Value: 0.9}
	k := h.at(t)
	switch q {
	case "volume":
		switch k {
		case instLowVolume:
			return []source.Series{{Labels: me, Value: 0.5}}
		case instNoVolume, instMissing:
			return nil
		}
		return []source.Series{{Labels: me, Value: 10}}
	case "other":
		if k == instMissing {
			return nil
		}
		return []source.Series{{Labels: me, Value: float64(k)}}
	}
	switch k {
	case instOK:
		return []source.Series{{Labels: v("v1"), Value: 0.01}, neighbour}
	case instBreach, instNoVolume:
		return []source.Series{{Labels: v("v1"), Value: 0.2}, neighbour}
	case instAmbiguous:
		return []source.Series{{Labels: v("v1"), Value: 0.2}, {Labels: v("v2"), Value: 0.2}, neighbour}
	case instLowVolume:
		return []source.Series{{Labels: v("v2"), Value: 0.3}, neighbour}
	}
	return []source.Series{neighbour}
}

type propSetup struct {
	interval, res, forDur time.Duration
	specs                 []Spec
}

func drawSetup(t *rapid.T) propSetup {
	iv := rapid.SampledFrom([]time.Duration{time.Second, 2 * time.Second, 3 * time.Second, 5 * time.Second}).Draw(t, "interval")
	res := rapid.SampledFrom([]time.Duration{250 * time.Millisecond, 500 * time.Millisecond, time.Second}).Draw(t, "resolution")
	res = min(res, iv)
	forDur := time.Duration(rapid.IntRange(0, 40).Draw(t, "forSteps")) * res
	r := trigger.Rule{Target: "api", Name: "error-rate", Op: trigger.Above, Threshold: 0.05, For: forDur,
		BlindAfter: time.Duration(rapid.IntRange(1, 20).Draw(t, "blindSteps")) * res, MinRate: 1, Action: "rollback"}
	main := Spec{ID: "api/error-rate", Backend: "prom", Query: "ratio", VolumeQuery: "volume",
		Match: lbl("namespace", "prod", "deployment", "api"), Rule: r, Resolution: res}
	other := Spec{ID: "api/other", Backend: "prom", Query: "other", Match: lbl("namespace", "prod", "deployment", "api"),
		Rule:       trigger.Rule{Target: "api", Name: "other", Op: trigger.Above, Threshold: float64(instBreach) - 0.5, For: forDur, Action: "page"},
		Resolution: res}
	return propSetup{interval: iv, res: res, forDur: forDur, specs: []Spec{main, other}}
}

func (s propSetup) evaluator(t *rapid.T, h *genHistory, rec Handler, res time.Duration) *Evaluator {
	e := New(Options{Interval: s.interval, QueryTimeout: time.Second}, map[string]Querier{"prom": &history{series: h.series}}, rec, zap.NewNop(), nil)
	specs := make([]Spec, len(s.specs))
	for i, sp := range s.specs {
		sp.Resolution = res
		specs[i] = sp
	}
	if err := e.SetTriggers(specs); err != nil {
		t.Fatal(err)
	}
	return e
}

// outcome is everything a run of the evaluator produced that a human or
// the responder sees.
type outcome struct {
	decisions []trigger.Decision
	blinds    []trigger.Blind
	statuses  []trigger.Status
}

func (r *recorder) outcome(e *Evaluator) outcome {
	o := outcome{blinds: append([]trigger.Blind(nil), r.blinds...), statuses: e.Status()}
	for _, d := range r.decisions {
		o.decisions = append(o.decisions, triggertest.Comparable(d))
	}
	// Triggers evaluated apart (one's window completing before the other's
	// tick) hand over in that order: compare per trigger, in time order.
	sort.SliceStable(o.decisions, func(i, j int) bool { return o.decisions[i].Trigger < o.decisions[j].Trigger })
	sort.SliceStable(o.blinds, func(i, j int) bool { return o.blinds[i].Trigger < o.blinds[j].Trigger })
	for i := range o.statuses {
		if math.IsNaN(o.statuses[i].Value) {
			o.statuses[i].Value = -1
		}
	}
	return o
}

// TestPropRangeEqualsEveryInstant: a trigger sampled at a resolution ends
// up exactly as if it had been evaluated at every instant of its grid, one
// by one, whatever the times of the ticks and of the due evaluations in
// between (short of a stall past maxRangeIntervals): same decisions with
// the same evidence, same blind reports, same final state. And evaluated
// one instant at a time, the range path picks what an instant query at
// that instant picks.
func TestPropRangeEqualsEveryInstant(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		s := drawSetup(t)
		h := drawHistory(t, s.res, 200)
		ctx := context.Background()

		// The daemon: ticks at an arbitrary phase and jitter, sometimes
		// late, and due evaluations at arbitrary moments in between.
		batched := &recorder{}
		e := s.evaluator(t, h, batched, s.res)
		wall := t0.Add(time.Duration(rapid.Int64Range(0, int64(s.interval)-1).Draw(t, "phase")))
		maxStep := time.Duration(maxRangeIntervals)*s.interval - s.res
		var first, lastTick time.Time // the first instant evaluated is the first tick's
		for wall.Before(t0.Add(time.Duration(len(h.kinds)) * s.res)) {
			if !first.IsZero() && rapid.IntRange(0, 3).Draw(t, "due") == 0 {
				e.EvaluateDue(ctx, wall)
			} else {
				if first.IsZero() {
					first = floorStep(wall, s.res)
				}
				e.Tick(ctx, wall)
				lastTick = wall
			}
			// A due evaluation may leave other queries behind: the next
			// tick comes within the stall bound of the last one.
			gap := time.Duration(rapid.Int64Range(int64(time.Millisecond), int64(maxStep)).Draw(t, "gap"))
			wall = wall.Add(gap)
			if limit := lastTick.Add(maxStep); wall.After(limit) {
				wall = limit
			}
		}
		// Catch every query up to the same last instant.
		if first.IsZero() {
			first = floorStep(wall, s.res)
		}
		e.Tick(ctx, wall)
		last := e.plan.queries[0].through
		for _, q := range e.plan.queries {
			if !q.through.Equal(last) {
				t.Fatalf("queries evaluated through different instants: %v and %v", q.through, last)
			}
		}

		// The reference: the same triggers evaluated at every instant,
		// one per tick, from the daemon's first instant to its last; and
		// the same with instant queries.
		one := &recorder{}
		ref := s.evaluator(t, h, one, s.res)
		inst := &recorder{}
		instant := s.evaluator(t, h, inst, 0)
		for at := first; !at.After(last); at = at.Add(s.res) {
			ref.Tick(ctx, at)
			instant.Tick(ctx, at)
		}

		if got, want := batched.outcome(e), one.outcome(ref); !reflect.DeepEqual(got, want) {
			t.Fatalf("batched evaluations differ from one instant at a time:\n got %s\nwant %s", show(got), show(want))
		}
		// Instant queries keep every sample as evidence (no spacing) and
		// take the default maxGap from the interval, like the range path;
		// only the evidence differs.
		gotR, gotI := one.outcome(ref), inst.outcome(instant)
		for i := range gotR.decisions {
			gotR.decisions[i].Samples = nil
		}
		for i := range gotI.decisions {
			gotI.decisions[i].Samples = nil
		}
		if !reflect.DeepEqual(gotR, gotI) {
			t.Fatalf("range path differs from instant queries:\n range   %s\n instant %s", show(gotR), show(gotI))
		}
	})
}

func show(o outcome) string {
	s := fmt.Sprintf("%d decisions", len(o.decisions))
	for _, d := range o.decisions {
		s += fmt.Sprintf(" [%s first %s at %s, %d samples]", d.Trigger, d.FirstBreach.Sub(t0), d.FiredAt.Sub(t0), len(d.Samples))
	}
	s += fmt.Sprintf("; %d blinds", len(o.blinds))
	for _, b := range o.blinds {
		s += fmt.Sprintf(" [%s since %s: %s]", b.Trigger, b.Since.Sub(t0), b.LastError)
	}
	for _, st := range o.statuses {
		s += fmt.Sprintf("; %s %s last %s breach %s nodata %s value %v err %q", st.Trigger, st.State, st.LastSample.Sub(t0),
			st.BreachStart.Sub(t0), st.NoDataSince.Sub(t0), st.Value, st.LastError)
	}
	return s
}

// TestPropRunActsAtCompletion: driven by Run, a trigger with a resolution
// acts at the instant its window completes (first breach + for), never
// later, at any interval up to its window and any tick phase: every
// decision is stamped FirstBreach + for and handed over at that moment of
// the clock.
func TestPropRunActsAtCompletion(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		s := drawSetup(rt)
		if s.forDur < s.interval {
			s.forDur = s.interval
			for i := range s.specs {
				s.specs[i].Rule.For = s.forDur
			}
		}
		h := drawHistory(rt, s.res, 200)
		phase := time.Duration(rapid.Int64Range(0, int64(s.interval)-1).Draw(rt, "phase"))
		clk := newFakeClock(t0.Add(phase))
		rec := &clockedRecorder{clock: clk}
		e := New(Options{Interval: s.interval, QueryTimeout: time.Second, Now: clk.Now, After: clk.After},
			map[string]Querier{"prom": &history{series: h.series}}, rec, zap.NewNop(), nil)
		if err := e.SetTriggers(s.specs); err != nil {
			rt.Fatal(err)
		}
		clk.runUntil(rt, e, t0.Add(time.Duration(len(h.kinds))*s.res))
		for i, d := range rec.decisions {
			want := ceilStep(d.FirstBreach.Add(s.forDur), s.res)
			if !d.FiredAt.Equal(want) || !rec.walls[i].Equal(want) {
				rt.Fatalf("%s: first breach +%s, fired +%s, acted at +%s; want both at +%s",
					d.Trigger, d.FirstBreach.Sub(t0), d.FiredAt.Sub(t0), rec.walls[i].Sub(t0), want.Sub(t0))
			}
		}
	})
}
