package window

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

// TestPropWindowMatchesDefinition checks the window against its definition
// on arbitrary sample sequences (out of order and duplicate times
// included): after each accepted sample at t, the state is
//   - nodata for a NoData sample, ok for an OK one;
//   - for a breach, with r the earliest sample such that every accepted
//     sample from r to t breached and no two consecutive ones are further
//     apart than maxGap: firing when t − r ≥ for, else pending, with
//     BreachStart r.
//
// A sample not after the last accepted one changes nothing. The evidence
// spacing never changes the state.
func TestPropWindowMatchesDefinition(t *testing.T) {
	rapid.Check(t, func(t *rapid.T) {
		cfg := Config{
			For:      time.Duration(rapid.IntRange(0, 20).Draw(t, "for")) * time.Second,
			MaxGap:   time.Duration(rapid.IntRange(0, 6).Draw(t, "maxGap")) * time.Second,
			Capacity: rapid.IntRange(1, 10).Draw(t, "capacity"),
			Spacing:  time.Duration(rapid.IntRange(0, 5).Draw(t, "spacing")) * time.Second,
		}
		w := New(cfg)
		var accepted []Sample
		now := t0
		for range rapid.IntRange(1, 120).Draw(t, "samples") {
			now = now.Add(time.Duration(rapid.IntRange(-2000, 8000).Draw(t, "stepMs")) * time.Millisecond)
			s := Sample{Time: now, Kind: Kind(rapid.IntRange(0, 2).Draw(t, "kind"))}
			before := w.State()
			ok := w.Observe(s)
			if want := len(accepted) == 0 || s.Time.After(accepted[len(accepted)-1].Time); ok != want {
				t.Fatalf("Observe at %s accepted %v, want %v", s.Time.Sub(t0), ok, want)
			}
			if !ok {
				if w.State() != before {
					t.Fatalf("an ignored sample changed the state %s → %s", before, w.State())
				}
				continue
			}
			accepted = append(accepted, s)
			wantState, wantStart := definition(cfg, accepted)
			if w.State() != wantState {
				t.Fatalf("after %d samples (last %s at %s): state %s, want %s", len(accepted), s.Kind, s.Time.Sub(t0), w.State(), wantState)
			}
			if start, ok := w.BreachStart(); ok != !wantStart.IsZero() || (ok && !start.Equal(wantStart)) {
				t.Fatalf("breach start %s (%v), want %s", start.Sub(t0), ok, wantStart.Sub(t0))
			}
			ev := w.Samples(nil)
			if len(ev) == 0 || len(ev) > cfg.Capacity || !ev[len(ev)-1].Time.Equal(s.Time) {
				t.Fatalf("evidence %d samples (cap %d), newest %v; want the newest sample last", len(ev), cfg.Capacity, ev)
			}
		}
	})
}

// definition computes the state of the samples from scratch.
func definition(cfg Config, ss []Sample) (State, time.Time) {
	last := ss[len(ss)-1]
	switch last.Kind {
	case NoData:
		return StateNoData, time.Time{}
	case OK:
		return StateOK, time.Time{}
	}
	r := len(ss) - 1
	for r > 0 && ss[r-1].Kind == Breach && (cfg.MaxGap == 0 || ss[r].Time.Sub(ss[r-1].Time) <= cfg.MaxGap) {
		r--
	}
	start := ss[r].Time.UTC()
	if last.Time.Sub(start) >= cfg.For {
		return StateFiring, start
	}
	return StatePending, start
}
