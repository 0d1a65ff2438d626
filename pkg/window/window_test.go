package window

import (
	"encoding/json"
	"fmt"
	"math"
	"testing"
	"time"
)

var t0 = time.Date(2026, 3, 14, 14, 0, 0, 0, time.UTC)

func at(sec int) time.Time { return t0.Add(time.Duration(sec) * time.Second) }

// obs is one step: the sample's second and kind.
type obs struct {
	sec  int
	kind Kind
}

// every returns samples of kind k from sec `from` to `to` inclusive, step s.
func every(from, to, step int, k Kind) []obs {
	var out []obs
	for s := from; s <= to; s += step {
		out = append(out, obs{s, k})
	}
	return out
}

// alternate returns breach, ok, breach, ... every step seconds.
func alternate(from, to, step int) []obs {
	var out []obs
	for s := from; s <= to; s += step {
		k := Breach
		if (s-from)/step%2 == 1 {
			k = OK
		}
		out = append(out, obs{s, k})
	}
	return out
}

func cat(parts ...[]obs) []obs {
	var out []obs
	for _, p := range parts {
		out = append(out, p...)
	}
	return out
}

// firstFiring feeds the steps and returns the second of the first firing
// state, or -1.
func firstFiring(w *Window, steps []obs) int {
	for _, s := range steps {
		w.Observe(Sample{Time: at(s.sec), Kind: s.kind})
		if w.State() == StateFiring {
			return s.sec
		}
	}
	return -1
}

func TestFiring(t *testing.T) {
	cfg := Config{For: 60 * time.Second, MaxGap: 10 * time.Second}
	tests := []struct {
		name  string
		cfg   Config
		steps []obs
		want  int // second of first firing, -1 never
	}{
		{"continuous breach fires at for", cfg, every(0, 120, 5, Breach), 60},
		{"continuous breach off the grid fires at first tick at or after for", cfg, every(3, 120, 5, Breach), 63},
		{"interval not dividing for fires at first tick past for", Config{For: 60 * time.Second, MaxGap: 14 * time.Second}, every(0, 120, 7, Breach), 63},
		{"breach 50s, recover 5s, breach 50s never fires", cfg,
			cat(every(0, 50, 5, Breach), []obs{{55, OK}}, every(60, 110, 5, Breach)), -1},
		{"one ok resets the run", cfg,
			cat(every(0, 55, 5, Breach), []obs{{60, OK}}, every(65, 130, 5, Breach)), 125},
		{"nodata resets the run", cfg,
			cat(every(0, 55, 5, Breach), []obs{{60, NoData}}, every(65, 130, 5, Breach)), 125},
		{"20s gap with maxGap 10s restarts the run at the new sample", cfg,
			cat(every(0, 40, 5, Breach), every(60, 130, 5, Breach)), 120},
		{"gap equal to maxGap keeps the run", cfg, every(0, 60, 10, Breach), 60},
		{"maxGap 0 disables the gap check", Config{For: 60 * time.Second}, []obs{{0, Breach}, {30, Breach}, {60, Breach}}, 60},
		{"for 0 fires on the first breach", Config{}, []obs{{0, OK}, {5, Breach}}, 5},
		{"only ok never fires", cfg, every(0, 300, 5, OK), -1},
		{"only nodata never fires", cfg, every(0, 300, 5, NoData), -1},
		{"alternating never fires", cfg, alternate(0, 300, 5), -1},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			if got := firstFiring(New(tc.cfg), tc.steps); got != tc.want {
				t.Fatalf("first firing at %d s, want %d s", got, tc.want)
			}
		})
	}
}

func TestStates(t *testing.T) {
	w := New(Config{For: 10 * time.Second, MaxGap: 10 * time.Second})
	if w.State() != StateNoData {
		t.Fatalf("initial state %v, want nodata", w.State())
	}
	if _, ok := w.NoDataSince(); ok {
		t.Fatal("NoDataSince before any sample must be unknown")
	}
	steps := []struct {
		sec         int
		kind        Kind
		want        State
		breachStart int // -1 none
		nodataSince int // -1 none
	}{
		{0, NoData, StateNoData, -1, 0},
		{5, NoData, StateNoData, -1, 0},
		{10, OK, StateOK, -1, -1},
		{15, Breach, StatePending, 15, -1},
		{20, Breach, StatePending, 15, -1},
		{25, Breach, StateFiring, 15, -1},
		{30, Breach, StateFiring, 15, -1},
		{35, NoData, StateNoData, -1, 35},
		{40, NoData, StateNoData, -1, 35},
		{45, Breach, StatePending, 45, -1},
		{60, Breach, StatePending, 60, -1}, // 15 s gap > 10 s restarts
		{65, OK, StateOK, -1, -1},
		{70, NoData, StateNoData, -1, 70},
	}
	for _, s := range steps {
		if !w.Observe(Sample{Time: at(s.sec), Value: float64(s.sec), Kind: s.kind}) {
			t.Fatalf("t=%d: sample rejected", s.sec)
		}
		if w.State() != s.want {
			t.Fatalf("t=%d: state %v, want %v", s.sec, w.State(), s.want)
		}
		bs, ok := w.BreachStart()
		if (s.breachStart >= 0) != ok || (ok && !bs.Equal(at(s.breachStart))) {
			t.Fatalf("t=%d: breach start %v %v, want %d", s.sec, bs, ok, s.breachStart)
		}
		ns, ok := w.NoDataSince()
		if (s.nodataSince >= 0) != ok || (ok && !ns.Equal(at(s.nodataSince))) {
			t.Fatalf("t=%d: nodata since %v %v, want %d", s.sec, ns, ok, s.nodataSince)
		}
	}
}

func TestOutOfOrderIgnored(t *testing.T) {
	w := New(Config{For: 10 * time.Second, MaxGap: 10 * time.Second})
	for _, s := range []int{0, 5} {
		w.Observe(Sample{Time: at(s), Kind: Breach})
	}
	for _, s := range []Sample{
		{Time: at(5), Kind: OK},     // duplicate time
		{Time: at(3), Kind: NoData}, // older
		{Time: at(-100), Kind: OK},  // much older
	} {
		if w.Observe(s) {
			t.Fatalf("sample at %v accepted, want ignored", s.Time)
		}
	}
	if w.State() != StatePending || w.Len() != 2 {
		t.Fatalf("state %v len %d after ignored samples, want pending 2", w.State(), w.Len())
	}
	if last, _ := w.Last(); !last.Time.Equal(at(5)) || last.Kind != Breach {
		t.Fatalf("last %+v, want breach at 5", last)
	}
	if !w.Observe(Sample{Time: at(10), Kind: Breach}) || w.State() != StateFiring {
		t.Fatalf("state %v after in-order breach at 10, want firing", w.State())
	}
}

func TestRing(t *testing.T) {
	tests := []struct {
		capacity, wantCap int
	}{{0, DefaultCapacity}, {-1, DefaultCapacity}, {3, 3}, {1000, MaxCapacity}}
	for _, tc := range tests {
		if got := New(Config{Capacity: tc.capacity}).Cap(); got != tc.wantCap {
			t.Errorf("capacity %d: cap %d, want %d", tc.capacity, got, tc.wantCap)
		}
	}

	w := New(Config{Capacity: 3})
	if got := w.Samples(nil); len(got) != 0 {
		t.Fatalf("empty ring gave %v", got)
	}
	for i := range 5 {
		w.Observe(Sample{Time: at(i), Value: float64(i), Kind: Breach})
	}
	got := w.Samples(nil)
	if len(got) != 3 {
		t.Fatalf("ring holds %d samples, want 3", len(got))
	}
	for i, s := range got {
		if want := i + 2; s.Value != float64(want) || !s.Time.Equal(at(want)) || s.Kind != Breach {
			t.Fatalf("sample %d = %+v, want value/time %d", i, s, want)
		}
	}
}

// TestRingSpacing: with a spacing, a run of one kind keeps a sample every
// spacing plus its newest, every change of kind is kept, and the state is
// that of every sample.
func TestRingSpacing(t *testing.T) {
	tests := []struct {
		name    string
		steps   []obs
		want    []int // seconds of the evidence, oldest first
		capping int
	}{
		{"1 s breaches thinned to 5 s plus the newest", every(0, 12, 1, Breach), []int{0, 5, 10, 12}, 14},
		{"kind changes are kept", cat(every(0, 3, 1, OK), every(4, 6, 1, Breach), []obs{{7, NoData}}, every(8, 9, 1, Breach)),
			[]int{0, 3, 4, 6, 7, 8, 9}, 14},
		{"samples already spaced are all kept", every(0, 20, 5, Breach), []int{0, 5, 10, 15, 20}, 14},
		{"capacity still bounds it", every(0, 60, 1, Breach), []int{45, 50, 55, 60}, 4},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			w := New(Config{For: 60 * time.Second, Capacity: tc.capping, Spacing: 5 * time.Second})
			ref := New(Config{For: 60 * time.Second, Capacity: tc.capping})
			for _, s := range tc.steps {
				w.Observe(Sample{Time: at(s.sec), Kind: s.kind})
				ref.Observe(Sample{Time: at(s.sec), Kind: s.kind})
				if w.State() != ref.State() {
					t.Fatalf("at %d: state %s, without spacing %s", s.sec, w.State(), ref.State())
				}
			}
			var got []int
			for _, s := range w.Samples(nil) {
				got = append(got, int(s.Time.Sub(t0)/time.Second))
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("evidence at %v, want %v", got, tc.want)
			}
		})
	}
}

func TestCapacityFor(t *testing.T) {
	tests := []struct {
		forDur, interval time.Duration
		want             int
	}{
		{60 * time.Second, 5 * time.Second, 14},
		{0, 5 * time.Second, 2},
		{time.Hour, 5 * time.Second, MaxCapacity},
		{time.Minute, 0, DefaultCapacity},
	}
	for _, tc := range tests {
		if got := CapacityFor(tc.forDur, tc.interval); got != tc.want {
			t.Errorf("CapacityFor(%v, %v) = %d, want %d", tc.forDur, tc.interval, got, tc.want)
		}
	}
}

func TestSampleJSON(t *testing.T) {
	tests := []struct {
		s    Sample
		want string
	}{
		{Sample{Time: at(0), Value: 0.25, Kind: Breach}, `{"time":"2026-03-14T14:00:00Z","value":0.25,"kind":"breach"}`},
		{Sample{Time: at(5), Value: math.NaN(), Kind: NoData}, `{"time":"2026-03-14T14:00:05Z","value":null,"kind":"nodata"}`},
		{Sample{Time: at(5), Value: math.Inf(1), Kind: NoData}, `{"time":"2026-03-14T14:00:05Z","value":null,"kind":"nodata"}`},
	}
	for _, tc := range tests {
		b, err := json.Marshal(tc.s)
		if err != nil || string(b) != tc.want {
			t.Errorf("json %s, %v; want %s", b, err, tc.want)
		}
	}
}

func TestStrings(t *testing.T) {
	for s, want := range map[State]string{StateOK: "ok", StatePending: "pending", StateFiring: "firing", StateNoData: "nodata", State(9): "unknown"} {
		if s.String() != want {
			t.Errorf("%d.String() = %q, want %q", s, s.String(), want)
		}
	}
}
