package evaluator

import (
	"context"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/window"
)

// Views carries each trigger's window (oldest first), its status and its
// rule with the evaluator's defaults (MaxGap 2 × interval); the samples
// are copies that later ticks do not change.
func TestViews(t *testing.T) {
	vals := map[string]float64{"q": 0.01}
	q := newFake(func(_ context.Context, query string) ([]source.Series, error) {
		return []source.Series{{Value: vals[query]}}, nil
	})
	e := newEval(t, map[string]Querier{"prom": q}, &recorder{}, nil)
	r := rule("ratio", 0.05)
	r.MaxGap = 0
	if err := e.SetTriggers([]Spec{spec("b", "prom", "q", nil, r), spec("a", "prom", "q", nil, rule("other", 0.05))}); err != nil {
		t.Fatal(err)
	}
	e.Tick(context.Background(), at(0))
	vals["q"] = 0.2
	e.Tick(context.Background(), at(5))
	views := e.Views()
	if len(views) != 2 || views[0].Rule.Name != "other" || views[1].Rule.Name != "ratio" {
		t.Fatalf("views %+v, want other then ratio (by ID)", views)
	}
	v := views[1]
	if v.Rule.MaxGap != 10*time.Second {
		t.Errorf("MaxGap %v, want the default 2 × 5s", v.Rule.MaxGap)
	}
	if v.Status.State != window.StatePending || v.Status.Value != 0.2 {
		t.Errorf("status %+v, want pending at 0.2", v.Status)
	}
	want := []window.Sample{{Time: at(0).UTC(), Value: 0.01, Kind: window.OK}, {Time: at(5).UTC(), Value: 0.2, Kind: window.Breach}}
	if len(v.Samples) != 2 || v.Samples[0] != want[0] || v.Samples[1] != want[1] {
		t.Errorf("samples %+v, want %+v", v.Samples, want)
	}
	e.Tick(context.Background(), at(10))
	if len(v.Samples) != 2 {
		t.Errorf("a later tick changed a returned view")
	}
}

// BenchmarkViews is what the console's overview costs the evaluator on
// each refresh: the status, rule and a copy of the window of 10,000
// triggers, taken under the lock the tick also needs.
func BenchmarkViews(b *testing.B) {
	e, specs := benchSetup(nil)
	if err := e.SetTriggers(specs); err != nil {
		b.Fatal(err)
	}
	now := t0
	for range 20 {
		now = now.Add(5 * time.Second)
		e.Tick(context.Background(), now)
	}
	b.ReportAllocs()
	for b.Loop() {
		if v := e.Views(); len(v) != len(specs) {
			b.Fatalf("%d views", len(v))
		}
	}
}
