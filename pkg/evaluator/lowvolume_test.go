package evaluator

import (
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
)

// A quiet night shows as its own state in the status and the metrics, and
// pages nothing: the error ratio of no traffic is 0/0 (no series), but the
// volume query says why.
func TestLowVolumeStateInStatusAndMetrics(t *testing.T) {
	lbl := map[string]string{"namespace": "production", "deployment": "api"}
	q := static(map[string][]source.Series{
		"volume": {{Labels: lbl, Value: 0.1}},
	})
	reg := prometheus.NewRegistry()
	h := &recorder{}
	e := New(Options{Interval: 5e9}, map[string]Querier{"prom": q}, h, zap.NewNop(), prefixed(reg))
	r := rule("errors", 0.05)
	r.MinRate = 1
	if err := e.SetTriggers([]Spec{{ID: "api/errors", Backend: "prom", Query: "ratio", VolumeQuery: "volume", Match: lbl, Rule: r}}); err != nil {
		t.Fatal(err)
	}
	for s := 0; s <= 600; s += 5 {
		e.Tick(t.Context(), at(s))
	}
	if st := e.Status()[0]; st.State.String() != "lowvolume" {
		t.Errorf("state %s, want lowvolume", st.State)
	}
	if len(h.blinds) != 0 {
		t.Errorf("blind reports %v: low volume is not blindness", h.blinds)
	}
	for state, want := range map[string]float64{"lowvolume": 1, "nodata": 0, "ok": 0, "pending": 0, "firing": 0} {
		if v, ok := findMetric(t, reg, "rollguard_trigger_state", map[string]string{"trigger": "errors", "state": state}); !ok || v != want {
			t.Errorf("rollguard_trigger_state{state=%q} = %v (exported %v), want %v", state, v, ok, want)
		}
	}
}
