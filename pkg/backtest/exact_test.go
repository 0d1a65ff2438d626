package backtest

import (
	"context"
	"math"
	"math/rand/v2"
	"reflect"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/trigger/triggertest"
	"github.com/rollguard/rollguard/pkg/window"
)

type recorder struct {
	mu     sync.Mutex
	fires  []trigger.Decision
	blinds []trigger.Blind
}

func (r *recorder) Fire(d trigger.Decision) { r.mu.Lock(); r.fires = append(r.fires, d); r.mu.Unlock() }
func (r *recorder) Blind(b trigger.Blind)   { r.mu.Lock(); r.blinds = append(r.blinds, b); r.mu.Unlock() }

// recorded is a long, seeded history with everything the trigger code
// branches on: calm, faults of random length, flapping, gaps of random
// length, low-volume stretches, a version change (two series for one
// deployment, never at the same instant), a neighbour series the match
// must skip, and a stretch where both versions report (ambiguous).
func recorded(seed uint64, steps int) map[string][]source.Range {
	r := rand.New(rand.NewPCG(seed, 1))
	vals := make([]float64, steps)
	vol := make([]float64, steps)
	mode, left := 0, 0
	for i := range vals {
		if left == 0 {
			mode, left = r.IntN(5), 3+r.IntN(25)
		}
		left--
		vol[i] = 5 + 20*r.Float64()
		switch mode {
		case 0, 1: // calm
			vals[i] = 0.02 * r.Float64()
		case 2: // fault
			vals[i] = 0.1 + 0.3*r.Float64()
		case 3: // flapping
			vals[i] = []float64{0.2, 0.01}[r.IntN(2)]
		case 4: // gap or low volume
			if r.IntN(2) == 0 {
				vals[i], vol[i] = math.NaN(), math.NaN()
			} else {
				vals[i], vol[i] = 0.3, 0.5
			}
		}
	}
	lbl := func(v string) map[string]string {
		return map[string]string{"namespace": "prod", "deployment": "api", "version": v}
	}
	split := steps / 2
	v1, v2 := only(vals, 0, split+3), only(vals, split, steps) // 3 steps of overlap
	return map[string][]source.Range{
		"ratio": {
			rng(lbl("v1"), v1),
			rng(lbl("v2"), v2),
			rng(map[string]string{"namespace": "prod", "deployment": "other"}, fill(steps, 0.9)),
		},
		"volume": {rng(map[string]string{"namespace": "prod", "deployment": "api"}, vol)},
	}
}

// TestReplayMatchesEvaluator feeds one recorded history to the backtest
// replay and to the live evaluator (an in-memory querier answering the
// recorded value at each tick) and requires the same decisions, with the
// same evidence, and the same blind reports, at the same instants.
func TestReplayMatchesEvaluator(t *testing.T) {
	const steps = 3000
	cfgTrigger := recordedTrigger()
	for _, tc := range []struct {
		name            string
		forDur, maxGap  time.Duration
		interval, blind time.Duration
	}{
		{"for 10s", 10 * time.Second, 0, time.Second, 5 * time.Second},
		{"for 0 immediate", 0, 0, time.Second, 3 * time.Second},
		{"interval 5s maxGap 15s", 30 * time.Second, 15 * time.Second, 5 * time.Second, 20 * time.Second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 4; seed++ {
				step := tc.interval
				data := recordedEvery(seed, steps, step)
				ct := cfgTrigger
				ct.For, ct.MaxGap, ct.BlindAfter = modelDur(tc.forDur), modelDur(tc.maxGap), modelDur(tc.blind)
				target := config.Target{Name: "api"}
				rule := RuleFor(target, ct, tc.interval)
				to := t0.Add(time.Duration(steps-1) * step)

				src := &fakeRange{data: data}
				values, _ := src.QueryRange(context.Background(), "ratio", t0, to, step)
				volume, _ := src.QueryRange(context.Background(), "volume", t0, to, step)
				got := Replay(Input{Rule: rule, Capacity: window.CapacityFor(rule.For, step), Match: ct.Match,
					Values: values, Volume: volume, From: t0, To: to, Step: step})

				rec := &recorder{}
				ev := evaluator.New(evaluator.Options{Interval: tc.interval}, map[string]evaluator.Querier{"prometheus": instantOf{data}}, rec, zap.NewNop(), nil)
				spec := evaluator.Spec{ID: "api/error-rate", Backend: "prometheus", Query: ct.Query, VolumeQuery: ct.VolumeQuery, Match: ct.Match, Rule: rule}
				if tc.maxGap == 0 {
					spec.Rule.MaxGap = 0 // the evaluator's own default, 2 × interval
				}
				if err := ev.SetTriggers([]evaluator.Spec{spec}); err != nil {
					t.Fatal(err)
				}
				for i := range steps {
					ev.Tick(context.Background(), t0.Add(time.Duration(i)*step))
				}

				sameAsDaemon(t, seed, got, rec, ev)
			}
		})
	}
}

// rangeDaemon answers the evaluator's instant and range queries from the
// same recording.
type rangeDaemon struct {
	instantOf
	*fakeRange
}

// TestReplayMatchesEvaluatorAtResolution is TestReplayMatchesEvaluator for
// a daemon sampling at a resolution finer than its interval: it ticks every
// interval at an arbitrary phase, evaluates due windows in between (as Run
// does), and must decide exactly what a backtest at that resolution
// replays, with the same evidence.
func TestReplayMatchesEvaluatorAtResolution(t *testing.T) {
	const steps = 3000
	cfgTrigger := recordedTrigger()
	for _, tc := range []struct {
		name                 string
		forDur, blind        time.Duration
		interval, res, phase time.Duration
	}{
		{"5s interval, 1s resolution", 10 * time.Second, 5 * time.Second, 5 * time.Second, time.Second, 2300 * time.Millisecond},
		// blindAfter 2s: low volume is not blindness, so only holes make
		// blinds, and at 500ms a hole of 4 steps is one.
		{"3s interval, 500ms resolution", 7 * time.Second, 2 * time.Second, 3 * time.Second, 500 * time.Millisecond, 10 * time.Millisecond},
	} {
		t.Run(tc.name, func(t *testing.T) {
			for seed := uint64(1); seed <= 4; seed++ {
				data := recordedEvery(seed, steps, tc.res)
				ct := cfgTrigger
				ct.For, ct.BlindAfter = modelDur(tc.forDur), modelDur(tc.blind)
				rule := RuleFor(config.Target{Name: "api"}, ct, tc.interval)
				to := t0.Add(time.Duration(steps-1) * tc.res)

				cfg := &config.Config{}
				cfg.Global.Interval = modelDur(tc.interval)
				cfg.Global.Prometheus.Resolution = modelDur(tc.res)
				cfg.Targets = []config.Target{{Name: "api", Namespace: "prod", Deployment: "api", Triggers: []config.Trigger{ct}}}
				cfg.Targets[0].Triggers[0].MaxGap = modelDur(rule.MaxGap)
				src := &fakeRange{data: data}
				rep, err := Backtest(context.Background(), Options{Config: cfg, From: t0, To: to, Source: src, Retention: -1})
				if err != nil {
					t.Fatal(err)
				}
				got := rep.Targets[0].Triggers[0].replayed

				rec := &recorder{}
				ev := evaluator.New(evaluator.Options{Interval: tc.interval}, map[string]evaluator.Querier{"prometheus": rangeDaemon{instantOf{data}, src}}, rec, zap.NewNop(), nil)
				spec := evaluator.Spec{ID: "api/error-rate", Backend: "prometheus", Query: ct.Query, VolumeQuery: ct.VolumeQuery,
					Match: ct.Match, Rule: rule, Resolution: tc.res}
				spec.Rule.MaxGap = 0 // the evaluator's own default, 2 × interval
				if err := ev.SetTriggers([]evaluator.Spec{spec}); err != nil {
					t.Fatal(err)
				}
				// The first tick samples t0 (its instant at or before the tick).
				tick := t0.Add(tc.phase % tc.res)
				for !tick.After(to) {
					for due, ok := ev.NextDue(); ok && due.Before(tick); due, ok = ev.NextDue() {
						ev.EvaluateDue(context.Background(), due)
					}
					ev.Tick(context.Background(), tick)
					tick = tick.Add(tc.interval)
				}
				ev.Tick(context.Background(), to)

				sameAsDaemon(t, seed, got, rec, ev)
			}
		})
	}
}

// recordedTrigger is the configured trigger the recorded history is
// replayed through: the error ratio above 0.1 at 2 requests/s or more.
func recordedTrigger() config.Trigger {
	above := 0.1
	return config.Trigger{
		Name: "error-rate", Kind: config.KindPrometheus, Query: "ratio", VolumeQuery: "volume",
		Match: map[string]string{"namespace": "prod", "deployment": "api"},
		Above: &above, MinRate: 2, Action: plan.RequestRollback, Severity: notify.SeverityCritical,
		OnError: trigger.OnErrorNoData,
	}
}

// recordedEvery is recorded with its points one step apart.
func recordedEvery(seed uint64, steps int, step time.Duration) map[string][]source.Range {
	data := recorded(seed, steps)
	for _, rs := range data {
		for i := range rs {
			for j := range rs[i].Points {
				k := rs[i].Points[j].Time.Sub(t0) / time.Second
				rs[i].Points[j].Time = t0.Add(time.Duration(k) * step)
			}
		}
	}
	return data
}

// sameAsDaemon fails the test unless the backtest's replay got decided
// what the daemon's evaluator ev told rec: the same fires and blinds, and
// the same state at the end.
func sameAsDaemon(t *testing.T, seed uint64, got *Replayed, rec *recorder, ev *evaluator.Evaluator) {
	t.Helper()
	if len(rec.fires) == 0 || len(rec.blinds) == 0 {
		t.Fatalf("seed %d: the history must exercise fires and blinds: %d fires, %d blinds", seed, len(rec.fires), len(rec.blinds))
	}
	if len(got.Decisions) != len(rec.fires) {
		t.Fatalf("seed %d: backtest %d fires, daemon %d", seed, len(got.Decisions), len(rec.fires))
	}
	for i := range rec.fires {
		if !reflect.DeepEqual(triggertest.Comparable(got.Decisions[i]), triggertest.Comparable(rec.fires[i])) {
			t.Fatalf("seed %d fire %d:\nbacktest %+v\ndaemon   %+v", seed, i, got.Decisions[i], rec.fires[i])
		}
	}
	if !reflect.DeepEqual(got.Blinds, rec.blinds) {
		t.Fatalf("seed %d blinds:\nbacktest %+v\ndaemon   %+v", seed, got.Blinds, rec.blinds)
	}
	// And the state at the end agrees too.
	if st := ev.Status()[0].State; st != got.States[len(got.States)-1] {
		t.Errorf("seed %d: final state backtest %s, daemon %s", seed, got.States[len(got.States)-1], st)
	}
}
