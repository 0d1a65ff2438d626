package evaluator

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

var t0 = time.Date(2026, 3, 14, 14, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// fakeQuerier answers from a function and counts calls per query.
type fakeQuerier struct {
	mu     sync.Mutex
	calls  map[string]int
	answer func(ctx context.Context, q string) ([]source.Series, error)
}

func newFake(answer func(ctx context.Context, q string) ([]source.Series, error)) *fakeQuerier {
	return &fakeQuerier{calls: map[string]int{}, answer: answer}
}

func (f *fakeQuerier) Query(ctx context.Context, q string, _ time.Time) ([]source.Series, error) {
	f.mu.Lock()
	f.calls[q]++
	f.mu.Unlock()
	return f.answer(ctx, q)
}

func (f *fakeQuerier) count(q string) int {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.calls[q]
}

// static answers each query from a table; unknown queries return nothing.
func static(table map[string][]source.Series) *fakeQuerier {
	return newFake(func(_ context.Context, q string) ([]source.Series, error) { return table[q], nil })
}

type recorder struct {
	mu        sync.Mutex
	decisions []trigger.Decision
	blinds    []trigger.Blind
}

func (r *recorder) Fire(d trigger.Decision) {
	r.mu.Lock()
	r.decisions = append(r.decisions, d)
	r.mu.Unlock()
}
func (r *recorder) Blind(b trigger.Blind) { r.mu.Lock(); r.blinds = append(r.blinds, b); r.mu.Unlock() }

func (r *recorder) fired() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, d := range r.decisions {
		out = append(out, fmt.Sprintf("%s@%s", d.Trigger, d.FiredAt.Sub(t0)))
	}
	return out
}

func rule(name string, threshold float64) trigger.Rule {
	return trigger.Rule{
		Target: "production/api", Name: name, Op: trigger.Above, Threshold: threshold,
		For: time.Minute, MaxGap: 10 * time.Second, BlindAfter: 2 * time.Minute, Action: "rollback",
	}
}

func spec(id, backend, q string, match map[string]string, r trigger.Rule) Spec {
	return Spec{ID: id, Backend: backend, Query: q, Match: match, Rule: r}
}

func lbl(kv ...string) map[string]string {
	m := map[string]string{}
	for i := 0; i < len(kv); i += 2 {
		m[kv[i]] = kv[i+1]
	}
	return m
}

func newEval(t *testing.T, queriers map[string]Querier, h Handler, reg prometheus.Registerer) *Evaluator {
	t.Helper()
	return New(Options{Interval: 5 * time.Second, Parallelism: 4, QueryTimeout: time.Second}, queriers, h, zap.NewNop(), reg)
}

func statusOf(t *testing.T, e *Evaluator, name string) trigger.Status {
	t.Helper()
	for _, s := range e.Status() {
		if s.Trigger == name {
			return s
		}
	}
	t.Fatalf("no status for %q", name)
	return trigger.Status{}
}

func ticks(e *Evaluator, from, to int) {
	for s := from; s <= to; s += 5 {
		e.Tick(context.Background(), at(s))
	}
}

func TestGroupedFanOut(t *testing.T) {
	prom := static(map[string][]source.Series{
		"errors": {
			{Labels: lbl("namespace", "production", "deployment", "a"), Value: 0.2},
			{Labels: lbl("namespace", "production", "deployment", "b"), Value: 0.01},
			{Labels: lbl("namespace", "staging", "deployment", "a"), Value: 0.9},
			{Labels: lbl("namespace", "production", "deployment", "dup"), Value: 1},
			{Labels: lbl("namespace", "production", "deployment", "dup"), Value: 2},
			{Labels: lbl("deployment", "nons"), Value: 0.3},
		},
		"volume": {
			{Labels: lbl("namespace", "production", "deployment", "a"), Value: 10},
			{Labels: lbl("namespace", "production", "deployment", "b"), Value: 10},
		},
		"single": {{Labels: lbl("job", "x"), Value: 7}},
		"nan":    {{Labels: lbl(), Value: math.NaN()}},
	})
	rec := &recorder{}
	e := newEval(t, map[string]Querier{"prom": prom}, rec, nil)
	withVolume := func(s Spec) Spec { s.VolumeQuery = "volume"; s.Rule.MinRate = 1; return s }
	specs := []Spec{
		withVolume(spec("a", "prom", "errors", lbl("namespace", "production", "deployment", "a"), rule("a", 0.05))),
		withVolume(spec("b", "prom", "errors", lbl("namespace", "production", "deployment", "b"), rule("b", 0.05))),
		spec("staging-a", "prom", "errors", lbl("namespace", "staging", "deployment", "a"), rule("staging-a", 0.05)),
		spec("by-deploy-only", "prom", "errors", lbl("deployment", "b"), rule("by-deploy-only", 0.05)),
		spec("absent-label", "prom", "errors", lbl("namespace", "", "deployment", "nons"), rule("absent-label", 0.05)),
		spec("missing", "prom", "errors", lbl("namespace", "production", "deployment", "zz"), rule("missing", 0.05)),
		spec("dup", "prom", "errors", lbl("namespace", "production", "deployment", "dup"), rule("dup", 0.05)),
		withVolume(spec("no-volume", "prom", "errors", lbl("namespace", "staging", "deployment", "a"), rule("no-volume", 0.05))),
		spec("single", "prom", "single", nil, rule("single", 5)),
		spec("no-match-many", "prom", "errors", nil, rule("no-match-many", 0.05)),
		spec("empty", "prom", "empty", nil, rule("empty", 0.05)),
		spec("nan", "prom", "nan", nil, rule("nan", 0.05)),
	}
	if err := e.SetTriggers(specs); err != nil {
		t.Fatal(err)
	}
	ticks(e, 0, 60)

	for _, q := range []string{"errors", "volume", "single", "empty", "nan"} {
		if got := prom.count(q); got != 13 {
			t.Errorf("query %q ran %d times in 13 ticks, want 13 (once per tick)", q, got)
		}
	}
	tests := []struct {
		name    string
		state   window.State
		value   float64 // NaN: none
		errPart string
	}{
		{"a", window.StateFiring, 0.2, ""},
		{"b", window.StateOK, 0.01, ""},
		{"staging-a", window.StateFiring, 0.9, ""},
		{"by-deploy-only", window.StateOK, 0.01, ""},
		{"absent-label", window.StateFiring, 0.3, ""},
		{"missing", window.StateNoData, math.NaN(), `prom query "errors" match map[deployment:zz namespace:production]: no data`},
		{"dup", window.StateNoData, math.NaN(), "ambiguous result"},
		{"no-volume", window.StateNoData, 0.9, ""},
		{"single", window.StateFiring, 7, ""},
		{"no-match-many", window.StateNoData, math.NaN(), `prom query "errors": 6 series: ambiguous result: several series`},
		{"empty", window.StateNoData, math.NaN(), `prom query "empty": no data`},
		{"nan", window.StateNoData, math.NaN(), ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			st := statusOf(t, e, tc.name)
			if st.State != tc.state {
				t.Errorf("state %v, want %v", st.State, tc.state)
			}
			if math.IsNaN(tc.value) != math.IsNaN(st.Value) || (!math.IsNaN(tc.value) && st.Value != tc.value) {
				t.Errorf("value %v, want %v", st.Value, tc.value)
			}
			if !strings.Contains(st.LastError, tc.errPart) || (tc.errPart == "" && st.LastError != "") {
				t.Errorf("last error %q, want it to contain %q", st.LastError, tc.errPart)
			}
		})
	}
	want := "[a@1m0s absent-label@1m0s single@1m0s staging-a@1m0s]"
	if got := fmt.Sprint(rec.fired()); got != want {
		t.Errorf("fired %s, want %s", got, want)
	}
}

func TestSelect(t *testing.T) {
	series := []source.Series{
		{Labels: lbl("d", "a", "v", "1"), Value: 1},
		{Labels: lbl("d", "a", "v", "2"), Value: 2},
		{Labels: lbl("d", "b"), Value: 3},
	}
	tests := []struct {
		match   map[string]string
		want    float64
		wantErr error
	}{
		{lbl("d", "b"), 3, nil},
		{lbl("d", "a", "v", "2"), 2, nil},
		{lbl("d", "a"), 0, source.ErrAmbiguous},
		{lbl("d", "c"), 0, source.ErrNoData},
		{lbl("d", "b", "v", ""), 3, nil},
		{nil, 0, source.ErrAmbiguous},
	}
	for _, tc := range tests {
		got, err := Select(series, tc.match)
		if !errors.Is(err, tc.wantErr) || (tc.wantErr == nil && got != tc.want) {
			t.Errorf("Select(%v) = %v, %v; want %v, %v", tc.match, got, err, tc.want, tc.wantErr)
		}
	}
	// The PostgreSQL built-ins answer a total {} beside breakdowns; an empty
	// match selects the total, and two unlabelled series stay ambiguous.
	withTotal := append([]source.Series{{Labels: map[string]string{}, Value: 0.9}}, series...)
	if got, err := Select(withTotal, nil); err != nil || got != 0.9 {
		t.Errorf("Select(total + breakdown, nil) = %v, %v; want 0.9", got, err)
	}
	if _, err := Select(append(withTotal, source.Series{Value: 1}), nil); !errors.Is(err, source.ErrAmbiguous) {
		t.Errorf("two unlabelled series: err %v, want ErrAmbiguous", err)
	}
	q := &query{key: queryKey{backend: "pg", query: "builtin:connections"}, series: withTotal}
	if got, err := q.pick(-1, 0, nil, nil); err != nil || got != 0.9 {
		t.Errorf("pick without match = %v, %v; want 0.9", got, err)
	}
	if pts, err := SelectRange([]source.Range{{Labels: lbl("slot", "s1")}, {Points: []source.Point{{Time: t0, Value: 7}}}}, nil); err != nil || len(pts) != 1 || pts[0].Value != 7 {
		t.Errorf("SelectRange total = %v, %v", pts, err)
	}
	pts, err := SelectRange([]source.Range{{Labels: lbl("d", "a"), Points: []source.Point{{Time: t0, Value: 1}}}}, lbl("d", "a"))
	if err != nil || len(pts) != 1 {
		t.Errorf("SelectRange = %v, %v", pts, err)
	}
	if _, err := SelectRange(nil, lbl("d", "a")); !errors.Is(err, source.ErrNoData) {
		t.Errorf("SelectRange(nil) err %v, want ErrNoData", err)
	}
}

// TestIndexScanSlot checks the collision fallback: a scan slot must give
// the same answers as Select.
func TestIndexScanSlot(t *testing.T) {
	q := &query{key: queryKey{backend: "prom", query: "q"}, series: []source.Series{
		{Labels: lbl("d", "a"), Value: 1}, {Labels: lbl("d", "b"), Value: 2},
	}, groups: []*group{{names: []string{"d"}, index: map[uint64]int32{42: slotScan}}}}
	if v, err := q.pick(0, 42, []string{"b"}, lbl("d", "b")); err != nil || v != 2 {
		t.Fatalf("pick via scan = %v, %v", v, err)
	}
	if _, err := q.pick(0, 42, []string{"c"}, lbl("d", "c")); !errors.Is(err, source.ErrNoData) {
		t.Fatalf("pick missing via scan err %v", err)
	}
	// A slot whose series does not carry the match (a hash collision with
	// an absent value) is no data, not someone else's value.
	q.groups[0].index[42] = 0
	if _, err := q.pick(0, 42, []string{"c"}, lbl("d", "c")); !errors.Is(err, source.ErrNoData) {
		t.Fatalf("pick on colliding slot err %v", err)
	}
}

func TestHangingQuerierDoesNotStallOthers(t *testing.T) {
	for _, par := range []int{1, 2} {
		t.Run(fmt.Sprintf("parallelism %d", par), func(t *testing.T) {
			var deadline time.Duration
			slow := newFake(func(ctx context.Context, q string) ([]source.Series, error) {
				d, _ := ctx.Deadline()
				deadline = time.Until(d)
				<-ctx.Done() // hangs until the evaluator's timeout
				return nil, fmt.Errorf("slow query: %w", ctx.Err())
			})
			fast := static(map[string][]source.Series{"up": {{Value: 1}}})
			reg := prometheus.NewRegistry()
			const timeout = 200 * time.Millisecond
			e := New(Options{Interval: 5 * time.Second, Parallelism: par, QueryTimeout: timeout},
				map[string]Querier{"slow": slow, "fast": fast}, &recorder{}, zap.NewNop(), prefixed(reg))
			if err := e.SetTriggers([]Spec{
				spec("1-slow", "slow", "hang", nil, rule("slow", 0.5)),
				spec("2-fast", "fast", "up", nil, rule("fast", 0.5)),
			}); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			e.Tick(context.Background(), at(0))
			took := time.Since(start)
			if took > timeout+time.Second {
				t.Fatalf("tick took %v with a %v query timeout", took, timeout)
			}
			if deadline > timeout {
				t.Errorf("hanging query got a deadline %v away, want <= %v", deadline, timeout)
			}
			if st := statusOf(t, e, "fast"); st.State != window.StatePending || st.Value != 1 {
				t.Errorf("fast trigger %v %v, want pending 1", st.State, st.Value)
			}
			st := statusOf(t, e, "slow")
			if st.State != window.StateNoData || !strings.Contains(st.LastError, "source query timed out") {
				t.Errorf("slow trigger %v %q, want nodata with timeout", st.State, st.LastError)
			}
			if v := metricValue(t, reg, "rollguard_source_errors_total", lbl("backend", "slow", "kind", "timeout")); v != 1 {
				t.Errorf("timeout errors %v, want 1", v)
			}
			ok, why := e.Ready()
			if ok || !strings.HasPrefix(why, `backend "slow" has not answered yet: slow query "hang": source query timed out: slow query: context deadline exceeded`) {
				t.Errorf("Ready() = %v, %q", ok, why)
			}
		})
	}
}

func TestHotReload(t *testing.T) {
	prom := static(map[string][]source.Series{
		"errors": {
			{Labels: lbl("d", "a"), Value: 0.2},
			{Labels: lbl("d", "b"), Value: 0.2},
			{Labels: lbl("d", "c"), Value: 0.2},
			{Labels: lbl("d", "x"), Value: 0.2},
		},
	})
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	e := newEval(t, map[string]Querier{"prom": prom}, rec, prefixed(reg))
	a := spec("a", "prom", "errors", lbl("d", "a"), rule("a", 0.05))
	b := spec("b", "prom", "errors", lbl("d", "b"), rule("b", 0.05))
	x := spec("x", "prom", "errors", lbl("d", "x"), rule("x", 0.05))
	pinned := spec("pinned", "prom", "errors", lbl("d", "c"), rule("pinned", 0.05))
	pinned.Fingerprint = "v1"
	if err := e.SetTriggers([]Spec{a, b, x, pinned}); err != nil {
		t.Fatal(err)
	}
	ticks(e, 0, 30)

	// An invalid set is rejected whole and the current one kept.
	bad := spec("bad", "nope", "errors", nil, rule("bad", 1))
	err := e.SetTriggers([]Spec{a, bad, a})
	want := "set triggers: trigger \"bad\": unknown backend \"nope\"\ntrigger \"a\": duplicate id\ntrigger \"a\": duplicate target/name production/api/a"
	if err == nil || err.Error() != want {
		t.Fatalf("SetTriggers(invalid) = %v, want %q", err, want)
	}
	if len(e.Status()) != 4 {
		t.Fatalf("invalid reload changed the set: %d triggers", len(e.Status()))
	}

	b2 := b
	b2.Rule.Threshold = 0.1 // changed: window restarts
	pinned2 := pinned
	pinned2.Rule.Action = "page" // same explicit fingerprint: kept
	c := spec("c", "prom", "errors", lbl("d", "c"), rule("c", 0.05))
	if err := e.SetTriggers([]Spec{c, b2, a, pinned2}); err != nil {
		t.Fatal(err)
	}
	if st := statusOf(t, e, "a"); st.State != window.StatePending || !st.BreachStart.Equal(at(0)) {
		t.Errorf("unchanged trigger a: %v since %v, want pending since 0", st.State, st.BreachStart)
	}
	if st := statusOf(t, e, "pinned"); st.State != window.StatePending || !st.BreachStart.Equal(at(0)) {
		t.Errorf("same fingerprint: %v since %v, want pending since 0", st.State, st.BreachStart)
	}
	if st := statusOf(t, e, "b"); st.State != window.StateNoData || !st.LastSample.IsZero() {
		t.Errorf("changed trigger b: %v last %v, want a fresh window", st.State, st.LastSample)
	}
	for _, s := range e.Status() {
		if s.Trigger == "x" {
			t.Errorf("removed trigger x still in status")
		}
	}
	if _, ok := findMetric(t, reg, "rollguard_trigger_state", lbl("trigger", "x")); ok {
		t.Errorf("removed trigger x still has metrics")
	}
	ticks(e, 35, 95)
	wantFired := "[a@1m0s pinned@1m0s b@1m35s c@1m35s]"
	if got := fmt.Sprint(rec.fired()); got != wantFired {
		t.Errorf("fired %s, want %s", got, wantFired)
	}
}

func TestSeed(t *testing.T) {
	prom := static(map[string][]source.Series{
		"hot":  {{Value: 0.2}},
		"cold": {{Value: 0}},
		"vol":  {{Value: 10}},
	})
	rec := &recorder{}
	e := newEval(t, map[string]Querier{"prom": prom}, rec, nil)
	ratio := spec("ratio", "prom", "hot", nil, rule("ratio", 0.05))
	ratio.VolumeQuery, ratio.Rule.MinRate = "vol", 1
	ratioNoVol := ratio
	ratioNoVol.ID, ratioNoVol.Rule.Name = "ratio-novol", "ratio-novol"
	if err := e.SetTriggers([]Spec{
		spec("full", "prom", "hot", nil, rule("full", 0.05)),
		spec("full-then-ok", "prom", "cold", nil, rule("full-then-ok", 0.05)),
		spec("partial", "prom", "hot", nil, rule("partial", 0.05)),
		ratio, ratioNoVol,
	}); err != nil {
		t.Fatal(err)
	}
	pts := func(from, to int, v float64) []source.Point {
		var out []source.Point
		for s := from; s <= to; s += 5 {
			out = append(out, source.Point{Time: at(s), Value: v})
		}
		return out
	}
	for id, p := range map[string][]source.Point{"full": pts(0, 120, 0.2), "full-then-ok": pts(0, 120, 0.2), "partial": pts(90, 120, 0.2)} {
		if err := e.Seed(id, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.SeedWithVolume("ratio", pts(0, 120, 0.5), pts(0, 120, 5)); err != nil {
		t.Fatal(err)
	}
	if err := e.Seed("ratio-novol", pts(0, 120, 0.5)); err != nil {
		t.Fatal(err)
	}
	if err := e.Seed("nope", nil); !errors.Is(err, ErrUnknownTrigger) {
		t.Fatalf("Seed(unknown) = %v, want ErrUnknownTrigger", err)
	}
	if got := rec.fired(); got != nil {
		t.Fatalf("seeding fired %v; past instants must not act", got)
	}
	for name, want := range map[string]window.State{"full": window.StateFiring, "full-then-ok": window.StateFiring,
		"partial": window.StatePending, "ratio": window.StateFiring, "ratio-novol": window.StateNoData} {
		if st := statusOf(t, e, name); st.State != want {
			t.Errorf("%s after seed: %v, want %v", name, st.State, want)
		}
	}
	ticks(e, 125, 150)
	want := "[full@2m5s ratio@2m5s partial@2m30s]"
	if got := fmt.Sprint(rec.fired()); got != want {
		t.Errorf("fired %s, want %s", got, want)
	}
	if first := rec.decisions[0].FirstBreach; !first.Equal(at(0)) {
		t.Errorf("seeded decision first breach %v, want %v", first, at(0))
	}
}

func TestBlindAndReady(t *testing.T) {
	var up bool
	var mu sync.Mutex
	pg := newFake(func(context.Context, string) ([]source.Series, error) {
		mu.Lock()
		defer mu.Unlock()
		if !up {
			return nil, fmt.Errorf("postgres connect: %w", source.ErrUnreachable)
		}
		return []source.Series{{Value: 3}}, nil
	})
	rec := &recorder{}
	reg := prometheus.NewRegistry()
	e := newEval(t, map[string]Querier{"pg": pg}, rec, prefixed(reg))
	if err := e.SetTriggers([]Spec{spec("pool", "pg", "builtin:connections", nil, rule("pool", 0.95))}); err != nil {
		t.Fatal(err)
	}
	if ok, why := e.Ready(); ok || why != "no evaluation has completed yet" {
		t.Fatalf("Ready() before a tick = %v, %q", ok, why)
	}
	ticks(e, 0, 300)
	if ok, why := e.Ready(); ok || why != `backend "pg" has not answered yet: postgres connect: source unreachable` {
		t.Fatalf("Ready() with pg down = %v, %q", ok, why)
	}
	if len(rec.blinds) != 1 || !rec.blinds[0].Since.Equal(at(0)) || rec.blinds[0].Trigger != "pool" {
		t.Fatalf("blinds %+v, want one since 0", rec.blinds)
	}
	if v := metricValue(t, reg, "rollguard_source_errors_total", lbl("backend", "pg", "kind", "unreachable")); v != 61 {
		t.Errorf("unreachable errors %v, want 61", v)
	}
	mu.Lock()
	up = true
	mu.Unlock()
	ticks(e, 305, 305)
	if ok, why := e.Ready(); !ok || why != "" {
		t.Fatalf("Ready() with pg up = %v, %q", ok, why)
	}
	if len(rec.decisions) != 0 {
		t.Fatalf("decisions %v while blind", rec.fired())
	}
}

func TestMetrics(t *testing.T) {
	prom := static(map[string][]source.Series{"q": {{Value: 0.25}}})
	reg := prometheus.NewRegistry()
	e := newEval(t, map[string]Querier{"prom": prom}, &recorder{}, prefixed(reg))
	if err := e.SetTriggers([]Spec{spec("t", "prom", "q", nil, rule("t", 0.05))}); err != nil {
		t.Fatal(err)
	}
	ticks(e, 0, 65)
	tl := func(kv ...string) map[string]string {
		return lbl(append([]string{"target", "production/api", "trigger", "t"}, kv...)...)
	}
	tests := []struct {
		name   string
		labels map[string]string
		want   float64
	}{
		{"rollguard_trigger_state", tl("state", "firing"), 1},
		{"rollguard_trigger_state", tl("state", "pending"), 0},
		{"rollguard_trigger_state", tl("state", "ok"), 0},
		{"rollguard_trigger_state", tl("state", "nodata"), 0},
		{"rollguard_trigger_breach_seconds", tl(), 65},
		{"rollguard_trigger_last_value", tl(), 0.25},
		{"rollguard_trigger_threshold", tl(), 0.05},
		{"rollguard_trigger_for_seconds", tl(), 60},
		{"rollguard_evaluations_total", nil, 14},
		{"rollguard_source_query_duration_seconds", lbl("backend", "prom"), 14}, // sample count
	}
	for _, tc := range tests {
		if got := metricValue(t, reg, tc.name, tc.labels); got != tc.want {
			t.Errorf("%s%v = %v, want %v", tc.name, tc.labels, got, tc.want)
		}
	}
}

func TestDefaultMaxGap(t *testing.T) {
	prom := static(map[string][]source.Series{"q": {{Value: 1}}})
	rec := &recorder{}
	e := newEval(t, map[string]Querier{"prom": prom}, rec, nil)
	r := rule("t", 0.05)
	r.MaxGap = 0 // 2 × 5 s
	if err := e.SetTriggers([]Spec{spec("t", "prom", "q", nil, r)}); err != nil {
		t.Fatal(err)
	}
	for _, s := range []int{0, 10, 21, 30, 40, 50, 60, 70, 80, 90} { // 11 s gap at 21
		e.Tick(context.Background(), at(s))
	}
	if got := fmt.Sprint(rec.fired()); got != "[t@1m30s]" {
		t.Fatalf("fired %s, want [t@1m30s] (run restarted at 21 s)", got)
	}
}

func TestTickCancelledFeedsNothing(t *testing.T) {
	prom := newFake(func(ctx context.Context, _ string) ([]source.Series, error) { return nil, ctx.Err() })
	rec := &recorder{}
	e := newEval(t, map[string]Querier{"prom": prom}, rec, nil)
	if err := e.SetTriggers([]Spec{spec("t", "prom", "q", nil, rule("t", 0.05))}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	e.Tick(ctx, at(0))
	if st := statusOf(t, e, "t"); !st.LastSample.IsZero() {
		t.Fatalf("cancelled tick fed a sample: %+v", st)
	}
}

func TestRunStopsOnCancel(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var n int
	prom := newFake(func(context.Context, string) ([]source.Series, error) {
		n++ // evaluations are serialised: one query per tick
		if n == 3 {
			cancel()
		}
		return []source.Series{{Value: 0}}, nil
	})
	clk := newFakeClock(at(0).Add(ms(7)))
	e := New(Options{Interval: 5 * time.Second, Now: clk.Now, After: clk.After},
		map[string]Querier{"prom": prom}, &recorder{}, zap.NewNop(), nil)
	if err := e.SetTriggers([]Spec{spec("t", "prom", "q", nil, rule("t", 0.05))}); err != nil {
		t.Fatal(err)
	}
	done := make(chan error)
	go func() { done <- e.Run(ctx) }()
	for running := true; running; {
		select {
		case w := <-clk.waits:
			clk.mu.Lock()
			clk.now = w.at.Add(ms(2)) // timers wake a little late
			clk.mu.Unlock()
			w.ch <- w.at
		case err := <-done:
			if err != nil {
				t.Fatalf("Run = %v", err)
			}
			running = false
		}
	}
	// Ticks at 0, 5 and 10 s (stamped on the schedule, not the late wake);
	// the third was cancelled and fed nothing.
	if st := statusOf(t, e, "t"); st.State != window.StateOK || !st.LastSample.Equal(at(5).Add(ms(7))) {
		t.Fatalf("after Run: %v at +%s, want ok at +5.007s (the clock stamps ticks)", st.State, st.LastSample.Sub(t0))
	}
}

func findMetric(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) (float64, bool) {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name {
			continue
		}
	next:
		for _, m := range mf.GetMetric() {
			have := map[string]string{}
			for _, lp := range m.GetLabel() {
				have[lp.GetName()] = lp.GetValue()
			}
			for k, v := range labels {
				if have[k] != v {
					continue next
				}
			}
			switch {
			case m.Gauge != nil:
				return m.GetGauge().GetValue(), true
			case m.Counter != nil:
				return m.GetCounter().GetValue(), true
			case m.Histogram != nil:
				return float64(m.GetHistogram().GetSampleCount()), true
			}
		}
	}
	return 0, false
}

func metricValue(t *testing.T, reg *prometheus.Registry, name string, labels map[string]string) float64 {
	t.Helper()
	v, ok := findMetric(t, reg, name, labels)
	if !ok {
		t.Fatalf("metric %s%v not found", name, labels)
	}
	return v
}

// prefixed registers on reg as the daemon does, with rollguard's prefix
// added to every name, so tests read the names the daemon exposes.
func prefixed(reg *prometheus.Registry) prometheus.Registerer {
	return prometheus.WrapRegistererWithPrefix("rollguard_", reg)
}
