package trigger

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/window"
)

var t0 = time.Date(2026, 3, 14, 14, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

var nan = math.NaN()

func errorRate() Rule {
	return Rule{
		Target: "production/pggit-api", Name: "error-rate", Op: Above, Threshold: 0.05,
		For: 60 * time.Second, MaxGap: 10 * time.Second, BlindAfter: 2 * time.Minute,
		Action: "rollback", Severity: "critical", Query: "sum(rate(errors[1m]))/sum(rate(all[1m]))",
	}
}

func val(v float64) Observation { return Observation{Value: v, Volume: nan} }

func TestClassify(t *testing.T) {
	above := Rule{Op: Above, Threshold: 0.05}
	below := Rule{Op: Below, Threshold: 0.05}
	withErr := func(r Rule, o OnError) Rule { r.OnError = o; return r }
	withRate := func(r Rule, m float64) Rule { r.MinRate = m; return r }
	wrapped := func(s error) error {
		return fmt.Errorf("postgres query %q: %w: %w", "builtin:connections", s, errors.New("boom"))
	}

	tests := []struct {
		name string
		rule Rule
		obs  Observation
		want window.Kind
	}{
		{"above breach", above, val(0.2), window.Breach},
		{"above equal is ok", above, val(0.05), window.OK},
		{"above below is ok", above, val(0.01), window.OK},
		{"below breach", below, val(0.01), window.Breach},
		{"below equal is ok", below, val(0.05), window.OK},
		{"NaN is nodata", above, val(nan), window.NoData},
		{"+Inf is nodata", above, val(math.Inf(1)), window.NoData},
		{"-Inf is nodata for below", below, val(math.Inf(-1)), window.NoData},
		{"ErrNoData is nodata", above, Observation{Err: wrapped(source.ErrNoData)}, window.NoData},
		{"unreachable is nodata by default", above, Observation{Err: wrapped(source.ErrUnreachable)}, window.NoData},
		{"too many connections is nodata by default", above, Observation{Err: wrapped(source.ErrTooManyConnections)}, window.NoData},
		{"explicit onError nodata", withErr(above, OnErrorNoData), Observation{Err: wrapped(source.ErrTimeout)}, window.NoData},
		{"onError breach: too many connections is breach", withErr(above, OnErrorBreach), Observation{Err: wrapped(source.ErrTooManyConnections)}, window.Breach},
		{"onError breach: timeout is breach", withErr(above, OnErrorBreach), Observation{Err: wrapped(source.ErrTimeout)}, window.Breach},
		{"onError breach: unreachable stays nodata", withErr(above, OnErrorBreach), Observation{Err: wrapped(source.ErrUnreachable)}, window.NoData},
		{"onError breach: untyped error stays nodata", withErr(above, OnErrorBreach), Observation{Err: errors.New("FATAL: terminating connection due to administrator command (SQLSTATE 57P01)")}, window.NoData},
		{"onError breach: ErrNoData stays nodata", withErr(above, OnErrorBreach), Observation{Err: wrapped(source.ErrNoData)}, window.NoData},
		{"onError breach: bad query stays nodata", withErr(above, OnErrorBreach), Observation{Err: wrapped(source.ErrBadQuery)}, window.NoData},
		{"onError breach: ambiguous stays nodata", withErr(above, OnErrorBreach), Observation{Err: wrapped(source.ErrAmbiguous)}, window.NoData},
		{"minRate: 2 req/min is nodata", withRate(above, 1), Observation{Value: 1, Volume: 2.0 / 60}, window.NoData},
		{"minRate: unknown volume is nodata", withRate(above, 1), Observation{Value: 1, Volume: nan}, window.NoData},
		{"minRate: volume at minRate counts", withRate(above, 1), Observation{Value: 1, Volume: 1}, window.Breach},
		{"minRate: ok with volume", withRate(above, 1), Observation{Value: 0, Volume: 10}, window.OK},
		{"minRate off: NaN volume ignored", above, Observation{Value: 1, Volume: nan}, window.Breach},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := New(tc.rule, 0).Classify(tc.obs); got != tc.want {
				t.Fatalf("Classify = %v, want %v", got, tc.want)
			}
		})
	}
}

// step is one observation at a second.
type step struct {
	sec int
	obs Observation
}

func series(from, to, every int, o Observation) []step {
	var out []step
	for s := from; s <= to; s += every {
		out = append(out, step{s, o})
	}
	return out
}

func cat(parts ...[]step) []step {
	var out []step
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// drive feeds the steps and returns the seconds at which a Decision and a
// Blind were emitted.
func drive(tr *Trigger, steps []step) (fired, blind []int, decisions []*Decision) {
	for _, s := range steps {
		_, d, b := tr.Observe(at(s.sec), s.obs)
		if d != nil {
			fired = append(fired, s.sec)
			decisions = append(decisions, d)
		}
		if b != nil {
			blind = append(blind, s.sec)
		}
	}
	return fired, blind, decisions
}

func TestDecisionsAndBlind(t *testing.T) {
	pool := errorRate()
	pool.Name, pool.OnError, pool.Threshold = "pool", OnErrorBreach, 0.95
	ratio := errorRate()
	ratio.MinRate = 1
	tooMany := Observation{Err: fmt.Errorf("postgres connect: %w", source.ErrTooManyConnections)}
	down := Observation{Err: fmt.Errorf("prometheus query: %w", source.ErrUnreachable)}

	tests := []struct {
		name      string
		rule      Rule
		steps     []step
		wantFired []int
		wantBlind []int
	}{
		{"continuous breach fires once at for", errorRate(), series(0, 300, 5, val(0.2)), []int{60}, nil},
		{"breach 50s, recover 5s, breach 50s never fires", errorRate(),
			cat(series(0, 50, 5, val(0.2)), series(55, 55, 5, val(0.01)), series(60, 110, 5, val(0.2))), nil, nil},
		{"ok then fire again gives a second decision", errorRate(),
			cat(series(0, 60, 5, val(0.2)), series(65, 65, 5, val(0)), series(70, 130, 5, val(0.2))), []int{60, 130}, nil},
		{"gap restart while firing is the same incident", errorRate(),
			cat(series(0, 60, 5, val(0.2)), series(80, 200, 5, val(0.2))), []int{60}, nil},
		{"20s gap with maxGap 10s resets", errorRate(),
			cat(series(0, 40, 5, val(0.2)), series(60, 115, 5, val(0.2))), nil, nil},
		{"NaN is nodata and never fires", errorRate(), series(0, 300, 5, val(nan)), nil, []int{120}},
		{"2 requests a minute at 100% errors with minRate 1/s is nodata", ratio,
			series(0, 300, 5, Observation{Value: 1, Volume: 2.0 / 60}), nil, []int{120}},
		{"ratio with volume fires", ratio, series(0, 60, 5, Observation{Value: 1, Volume: 10}), []int{60}, nil},
		{"onError breach with ErrTooManyConnections fires", pool, series(0, 90, 5, tooMany), []int{60}, nil},
		{"source down is blind once per episode", errorRate(),
			cat(series(0, 200, 5, down), series(205, 205, 5, val(0)), series(210, 400, 5, down)), nil, []int{120, 330}},
		{"blind needs the full blindAfter of one episode", errorRate(),
			cat(series(0, 100, 5, down), series(105, 105, 5, val(0.2)), series(110, 200, 5, down)), nil, nil},
		{"blindAfter 0 never reports", func() Rule { r := errorRate(); r.BlindAfter = 0; return r }(), series(0, 600, 5, down), nil, nil},
		{"immediate trigger fires on first breach", func() Rule { r := errorRate(); r.For = 0; return r }(),
			cat(series(0, 10, 5, val(0)), series(15, 30, 5, val(1))), []int{15}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			fired, blind, _ := drive(New(tc.rule, 0), tc.steps)
			if fmt.Sprint(fired) != fmt.Sprint(tc.wantFired) {
				t.Errorf("fired at %v, want %v", fired, tc.wantFired)
			}
			if fmt.Sprint(blind) != fmt.Sprint(tc.wantBlind) {
				t.Errorf("blind at %v, want %v", blind, tc.wantBlind)
			}
		})
	}
}

func TestDecisionContent(t *testing.T) {
	r := errorRate()
	r.Security = true
	tr := New(r, 4)
	steps := cat(series(0, 0, 5, val(0.01)), series(5, 65, 5, val(0.2)))
	fired, _, ds := drive(tr, steps)
	if len(ds) != 1 || fired[0] != 65 {
		t.Fatalf("decisions at %v, want one at 65", fired)
	}
	d := ds[0]
	if d.Target != r.Target || d.Trigger != r.Name || d.Action != "rollback" || d.Severity != "critical" ||
		!d.Security || d.Query != r.Query || d.Op != Above || d.Threshold != 0.05 || d.Value != 0.2 {
		t.Errorf("decision fields %+v", d)
	}
	if !d.FirstBreach.Equal(at(5)) || !d.FiredAt.Equal(at(65)) {
		t.Errorf("first breach %v fired %v, want %v %v", d.FirstBreach, d.FiredAt, at(5), at(65))
	}
	if len(d.Samples) != 4 || !d.Samples[0].Time.Equal(at(50)) || !d.Samples[3].Time.Equal(at(65)) || d.Samples[3].Kind != window.Breach {
		t.Errorf("evidence %+v, want 4 samples 50..65", d.Samples)
	}
	st := tr.Status()
	if st.State != window.StateFiring || !st.BreachStart.Equal(at(5)) || !st.LastSample.Equal(at(65)) || st.Value != 0.2 {
		t.Errorf("status %+v", st)
	}
	if _, err := json.Marshal(d); err != nil {
		t.Fatalf("marshal decision: %v", err)
	}
}

func TestErrorDecisionJSON(t *testing.T) {
	r := errorRate()
	r.OnError, r.For = OnErrorBreach, 0
	tr := New(r, 0)
	_, d, _ := tr.Observe(at(0), Observation{Err: fmt.Errorf("postgres connect: %w", source.ErrTooManyConnections)})
	if d == nil {
		t.Fatal("no decision")
	}
	if !math.IsNaN(d.Value) || d.Error != "postgres connect: too many connections" {
		t.Fatalf("value %v error %q", d.Value, d.Error)
	}
	b, err := json.Marshal(d)
	if err != nil {
		t.Fatalf("marshal: %v", err)
	}
	if !strings.Contains(string(b), `"value":null`) || !strings.Contains(string(b), `"samples":[{"time":"2026-03-14T14:00:00Z","value":null,"kind":"breach"}]`) {
		t.Fatalf("json %s", b)
	}
	sb, err := json.Marshal(tr.Status())
	if err != nil || !strings.Contains(string(sb), `"state":"firing"`) || !strings.Contains(string(sb), `"value":null`) {
		t.Fatalf("status json %s %v", sb, err)
	}
}

func TestBlindContent(t *testing.T) {
	tr := New(errorRate(), 0)
	down := Observation{Err: fmt.Errorf("prometheus query: %w", source.ErrUnreachable)}
	_, blind, _ := drive(tr, series(0, 115, 5, down))
	if blind != nil {
		t.Fatalf("blind at %v before blindAfter", blind)
	}
	_, _, b := tr.Observe(at(120), down)
	if b == nil || b.Target != "production/pggit-api" || b.Trigger != "error-rate" || !b.Since.Equal(at(0)) ||
		b.LastError != "prometheus query: source unreachable" {
		t.Fatalf("blind %+v", b)
	}
	st := tr.Status()
	if st.State != window.StateNoData || !st.NoDataSince.Equal(at(0)) || st.LastError == "" {
		t.Fatalf("status %+v", st)
	}
}

func TestReplay(t *testing.T) {
	tests := []struct {
		name      string
		replay    []step
		live      []step
		wantState window.State // after replay
		wantFired []int
	}{
		{"replay ending firing fires on the next live breach", series(0, 120, 5, val(0.2)), series(125, 200, 5, val(0.2)),
			window.StateFiring, []int{125}},
		{"replay ending firing, live ok resets without firing", series(0, 120, 5, val(0.2)), series(125, 130, 5, val(0)),
			window.StateFiring, nil},
		{"replay pending completes the window live", series(0, 45, 5, val(0.2)), series(50, 100, 5, val(0.2)),
			window.StatePending, []int{60}},
		{"a gap after the replay restarts the run", series(0, 45, 5, val(0.2)), series(70, 200, 5, val(0.2)),
			window.StatePending, []int{130}},
		{"live samples older than the replay are ignored", series(0, 120, 5, val(0.2)), series(100, 120, 5, val(0)),
			window.StateFiring, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			tr := New(errorRate(), 0)
			var st Status
			for _, s := range tc.replay {
				st = tr.Replay(at(s.sec), s.obs)
			}
			if st.State != tc.wantState {
				t.Fatalf("after replay %v, want %v", st.State, tc.wantState)
			}
			fired, _, _ := drive(tr, tc.live)
			if fmt.Sprint(fired) != fmt.Sprint(tc.wantFired) {
				t.Fatalf("fired at %v, want %v", fired, tc.wantFired)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	ok := errorRate()
	tests := []struct {
		name   string
		mutate func(*Rule)
		want   string
	}{
		{"valid", func(*Rule) {}, ""},
		{"bad op", func(r *Rule) { r.Op = ">" }, `trigger production/pggit-api/error-rate: op ">": must be "above" or "below"`},
		{"bad onError", func(r *Rule) { r.OnError = "panic" }, `trigger production/pggit-api/error-rate: onError "panic": must be "nodata" or "breach"`},
		{"negative for", func(r *Rule) { r.For = -1 }, `trigger production/pggit-api/error-rate: durations must be >= 0`},
		{"NaN threshold", func(r *Rule) { r.Threshold = nan }, `trigger production/pggit-api/error-rate: threshold must be finite`},
		{"negative minRate", func(r *Rule) { r.MinRate = -1 }, `trigger production/pggit-api/error-rate: minRate must be >= 0`},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			r := ok
			tc.mutate(&r)
			err := r.Validate()
			if got := fmt.Sprint(err); (tc.want == "" && err != nil) || (tc.want != "" && got != tc.want) {
				t.Fatalf("Validate() = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestStatusJSONRoundTrip(t *testing.T) {
	for _, in := range []Status{
		{Target: "a", Trigger: "b", State: window.StateFiring, Op: Above, Threshold: 0.05, Value: 0.2, BreachStart: at(5)},
		{Target: "a", Trigger: "c", State: window.StateNoData, Op: Below, Threshold: 1, Value: math.NaN(), LastError: "no data"},
	} {
		b, err := json.Marshal(in)
		if err != nil {
			t.Fatal(err)
		}
		var out Status
		if err := json.Unmarshal(b, &out); err != nil {
			t.Fatalf("unmarshal %s: %v", b, err)
		}
		same := out.Value == in.Value || (math.IsNaN(out.Value) && math.IsNaN(in.Value))
		out.Value, in.Value = 0, 0
		if !same || out != in {
			t.Fatalf("round trip of %s gave %+v", b, out)
		}
	}
	var s window.State
	if err := s.UnmarshalText([]byte("sleeping")); err == nil || err.Error() != `unknown window state "sleeping"` {
		t.Fatalf("err = %v", err)
	}
}

// Firing and Blinded describe the current episode as the edge into it did,
// for a replica that becomes leader after the edge; Rearm makes a firing
// run hold a whole window again.
func TestFiringBlindedRearm(t *testing.T) {
	tr := New(errorRate(), 0)
	if tr.Firing() != nil || tr.Blinded() != nil {
		t.Fatal("an empty trigger reports an episode")
	}
	fired, _, _ := drive(tr, series(0, 60, 5, val(0.2)))
	if fmt.Sprint(fired) != "[60]" {
		t.Fatalf("fired at %v", fired)
	}
	d := tr.Firing()
	if d == nil || !d.FirstBreach.Equal(at(0)) || !d.FiredAt.Equal(at(60)) || d.Value != 0.2 || len(d.Samples) != 13 {
		t.Fatalf("Firing() = %+v", d)
	}
	// Still firing later: the same episode (same first breach).
	drive(tr, series(65, 70, 5, val(0.3)))
	if d2 := tr.Firing(); d2 == nil || !d2.FirstBreach.Equal(d.FirstBreach) || !d2.FiredAt.Equal(at(70)) {
		t.Fatalf("Firing() later = %+v", d2)
	}
	// A restart at 72: pending until the breach has held 60 s from it,
	// then a new edge.
	tr.Rearm(at(72))
	if tr.Firing() != nil {
		t.Fatal("still firing right after Rearm")
	}
	fired, _, _ = drive(tr, series(75, 140, 5, val(0.2)))
	if fmt.Sprint(fired) != "[135]" {
		t.Fatalf("after Rearm fired at %v, want [135] (72 + 60, on the 5 s grid)", fired)
	}
	// Rearm outside a run is a no-op; a recovery still resets.
	drive(tr, series(145, 145, 5, val(0)))
	tr.Rearm(at(146))
	if st := tr.Status(); st.State != window.StateOK {
		t.Fatalf("state %v", st.State)
	}

	b := New(errorRate(), 0)
	_, blinds, _ := drive(b, series(0, 125, 5, Observation{Err: source.ErrUnreachable}))
	if len(blinds) != 1 {
		t.Fatalf("blinds %v", blinds)
	}
	if bl := b.Blinded(); bl == nil || !bl.Since.Equal(at(0)) || bl.Trigger != "error-rate" {
		t.Fatalf("Blinded() = %+v", bl)
	}
	drive(b, series(130, 130, 5, val(0)))
	if b.Blinded() != nil {
		t.Fatal("blind after data came back")
	}
}
