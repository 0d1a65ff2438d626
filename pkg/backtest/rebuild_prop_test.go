package backtest

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"go.uber.org/zap"
	"pgregory.net/rapid"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// series is one trigger's history as Prometheus would answer it at a run
// of evaluation instants: a value (NaN when the expression has none at
// that instant, which Prometheus drops), whether the instant is a hole
// (no sample at all), and the request volume (NaN when unknown).
type series struct {
	at     []time.Time
	value  []float64
	hole   []bool
	volume []float64
}

// counterRate is what rate() over the last two scrapes of a counter reads:
// a decrease is a reset (the counter restarted from 0), so the increase is
// the new value, as Prometheus computes it; a single scrape is no rate.
func counterRate(prev, cur float64, dt time.Duration, have bool) float64 {
	if !have {
		return math.NaN()
	}
	inc := cur - prev
	if inc < 0 {
		inc = cur
	}
	return inc / dt.Seconds()
}

// genHistory draws a series with holes, NaN, counter resets and, when
// jitter is set, instants off the grid by up to a third of the step.
func genHistory(t *rapid.T, start time.Time, step time.Duration, jitter bool) series {
	n := rapid.IntRange(2, 60).Draw(t, "steps")
	var h series
	var errs, total float64
	var have bool
	for i := 0; i < n; i++ {
		at := start.Add(time.Duration(i) * step)
		if jitter && i > 0 {
			// Millisecond jitter, as Prometheus stamps.
			at = at.Add(time.Duration(rapid.IntRange(-int(step/time.Millisecond)/3, int(step/time.Millisecond)/3).Draw(t, "jitter")) * time.Millisecond)
		}
		h.at = append(h.at, at)
		prevErrs, prevTotal := errs, total
		switch rapid.IntRange(0, 9).Draw(t, "counter") {
		case 0: // the process restarted: both counters reset
			errs, total = 0, float64(rapid.IntRange(0, 20).Draw(t, "afterReset"))
		default:
			total += float64(rapid.IntRange(0, 60).Draw(t, "requests"))
			errs += float64(rapid.IntRange(0, 10).Draw(t, "errors"))
		}
		errs = math.Min(errs, total)
		dt := step
		vol := counterRate(prevTotal, total, dt, have)
		bad := counterRate(prevErrs, errs, dt, have)
		have = true
		v := bad / vol // NaN for 0/0 and a single scrape
		switch rapid.IntRange(0, 9).Draw(t, "shape") {
		case 0:
			h.hole, h.value, h.volume = append(h.hole, true), append(h.value, math.NaN()), append(h.volume, math.NaN())
			continue
		case 1:
			v = math.NaN()
		case 2:
			vol = math.NaN()
		}
		h.hole = append(h.hole, false)
		h.value = append(h.value, v)
		h.volume = append(h.volume, vol)
	}
	return h
}

var propLabels = map[string]string{"namespace": "prod", "deployment": "api"}

// ranges is the series as query_range returns it: NaN and holes are
// missing points.
func (h series) ranges() (values, volume []source.Range) {
	vr := source.Range{Labels: propLabels}
	wr := source.Range{Labels: propLabels}
	for i, at := range h.at {
		if !h.hole[i] && !math.IsNaN(h.value[i]) {
			vr.Points = append(vr.Points, source.Point{Time: at, Value: h.value[i]})
		}
		if !h.hole[i] && !math.IsNaN(h.volume[i]) {
			wr.Points = append(wr.Points, source.Point{Time: at, Value: h.volume[i]})
		}
	}
	return []source.Range{vr}, []source.Range{wr}
}

// instantQuerier answers an instant query from the series, as Prometheus
// would at that instant (NaN dropped, a hole empty).
type instantQuerier struct{ h series }

func (q instantQuerier) Query(_ context.Context, query string, ts time.Time) ([]source.Series, error) {
	for i, at := range q.h.at {
		if !at.Equal(ts) {
			continue
		}
		v := q.h.value[i]
		if query == "volume" {
			v = q.h.volume[i]
		}
		if q.h.hole[i] || math.IsNaN(v) {
			return nil, nil
		}
		return []source.Series{{Labels: propLabels, Value: v}}, nil
	}
	return nil, fmt.Errorf("no instant %s in the series", ts)
}

func propRule(t *rapid.T) trigger.Rule {
	r := trigger.Rule{Target: "api", Name: "error-rate", Op: trigger.Above, Threshold: 0.05, Query: "ratio",
		For: time.Duration(rapid.IntRange(0, 12).Draw(t, "forSteps")) * 5 * time.Second, BlindAfter: 20 * time.Second}
	if rapid.Bool().Draw(t, "minRate") {
		r.MinRate = 1
	}
	return r
}

// state is what must agree: the window's state, its run, its nodata
// episode, its last sample and its evidence.
func state(s trigger.Status, samples []window.Sample) string {
	out := fmt.Sprintf("%s breach %v nodata %v last %v", s.State, s.BreachStart, s.NoDataSince, s.LastSample)
	for _, x := range samples {
		out += fmt.Sprintf(" %s/%s", x.Time.Format("04:05.000"), x.Kind)
	}
	return out
}

func newPropEvaluator(t *rapid.T, h series, rule trigger.Rule, step time.Duration) *evaluator.Evaluator {
	e := evaluator.New(evaluator.Options{Interval: step}, map[string]evaluator.Querier{"prom": instantQuerier{h}}, nil, zap.NewNop(), nil)
	spec := evaluator.Spec{ID: "api/error-rate", Backend: "prom", Query: "ratio", Match: propLabels, Rule: rule}
	if rule.MinRate > 0 {
		spec.VolumeQuery = "volume"
	}
	if err := e.SetTriggers([]evaluator.Spec{spec}); err != nil {
		t.Fatal(err)
	}
	return e
}

func triggerState(e *evaluator.Evaluator) string {
	v := e.Views()[0]
	return state(v.Status, v.Samples)
}

// TestRebuildLiveAndBacktestAgree: for the same samples, the window a
// restart rebuilds from query_range, the one live evaluation builds tick
// by tick, and the backtest's replay are in the same state, with holes
// (which live reads as an empty result and resets on), NaN, counter resets
// and instants off the grid.
func TestRebuildLiveAndBacktestAgree(t *testing.T) {
	const step = 5 * time.Second
	start := time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)
	rapid.Check(t, func(t *rapid.T) {
		jitter := rapid.Bool().Draw(t, "jitter")
		h := genHistory(t, start, step, jitter)
		rule := propRule(t)

		live := newPropEvaluator(t, h, rule, step)
		var liveStates []window.State
		for _, at := range h.at {
			live.Tick(context.Background(), at)
			liveStates = append(liveStates, live.Status()[0].State)
		}

		rebuilt := newPropEvaluator(t, h, rule, step)
		values, volume := h.ranges()
		if err := rebuilt.SeedRange("api/error-rate", h.at, values[0].Points, volume[0].Points); err != nil {
			t.Fatal(err)
		}
		if l, r := triggerState(live), triggerState(rebuilt); l != r {
			t.Fatalf("rebuilt window differs from live:\n live    %s\n rebuilt %s", l, r)
		}

		if jitter {
			return // the backtest evaluates a grid
		}
		in := Input{Rule: rule, Capacity: window.CapacityFor(rule.For, step), Match: propLabels, Values: values,
			From: h.at[0], To: h.at[len(h.at)-1], Step: step}
		if rule.MinRate > 0 {
			in.Volume = volume
		}
		in.Rule.MaxGap = 2 * step // the evaluator's default
		rp := Replay(in)
		for i := range liveStates {
			if rp.States[i] != liveStates[i] {
				t.Fatalf("step %d (%s): backtest %s, live %s", i, h.at[i].Format("04:05"), rp.States[i], liveStates[i])
			}
		}
	})
}
