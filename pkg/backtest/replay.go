package backtest

import (
	"fmt"
	"math"
	"time"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// VersionLabel is the series label a revision is read from: the simulator
// and most exporters of a Deployment's metrics carry the image tag in it.
const VersionLabel = "version"

// Input is one trigger's history, as a range query returned it.
type Input struct {
	Rule trigger.Rule
	// Capacity is the evidence ring's size and Spacing its thinning; the
	// daemon uses window.CapacityFor(for, interval), and a spacing of the
	// interval when it samples at a finer resolution.
	Capacity int
	Spacing  time.Duration
	// Match selects the trigger's series, as in evaluator.Spec.
	Match map[string]string
	// Values is the query's whole result over the range; Volume is the
	// volume query's, nil without one.
	Values, Volume []source.Range
	// From, To and Step are the evaluation instants: From + k·Step ≤ To.
	From, To time.Time
	Step     time.Duration
}

// Replayed is what the trigger did at each step.
type Replayed struct {
	Rule       trigger.Rule
	From       time.Time
	Step       time.Duration
	Values     []float64 // per step; NaN when the observation had no value
	Kinds      []window.Kind
	States     []window.State
	Decisions  []trigger.Decision
	Revisions  []string // per decision: the version label of the firing series, "" when absent
	Blinds     []trigger.Blind
	HasVersion bool // some selected series carried a version label
}

// At returns the instant of step i.
func (r *Replayed) At(i int) time.Time { return r.From.Add(time.Duration(i) * r.Step) }

// cursor walks one range's points in time order.
type cursor struct {
	r source.Range
	i int
}

// at returns the range's value at t (Unix ms), advancing past older points.
func (c *cursor) at(ms int64) (float64, bool) {
	for c.i < len(c.r.Points) && c.r.Points[c.i].Time.UnixMilli() < ms {
		c.i++
	}
	if c.i < len(c.r.Points) && c.r.Points[c.i].Time.UnixMilli() == ms {
		return c.r.Points[c.i].Value, true
	}
	return 0, false
}

// instant rebuilds, from a range result, the instant vector an instant query
// at the same time would have returned: every series that has a point
// there. Prometheus evaluates query_range as a sequence of instant queries
// at start + k·step, so this is what the daemon's tick at that instant saw.
type instant struct {
	cursors []*cursor
	buf     []source.Series
	labels  []map[string]string
}

func newInstant(ranges []source.Range, match map[string]string) *instant {
	in := &instant{}
	for _, r := range ranges {
		// Ranges that cannot match are dropped up front; the selection
		// below would skip them anyway, at the cost of a scan per step.
		if !containsAll(r.Labels, match) {
			continue
		}
		in.cursors = append(in.cursors, &cursor{r: r})
	}
	return in
}

// pick selects the trigger's value at t exactly as the evaluator does with
// an instant result: evaluator.Select over the series present at t.
func (in *instant) pick(t time.Time, match map[string]string) (float64, map[string]string, error) {
	ms := t.UnixMilli()
	in.buf, in.labels = in.buf[:0], in.labels[:0]
	for _, c := range in.cursors {
		if v, ok := c.at(ms); ok {
			in.buf = append(in.buf, source.Series{Labels: c.r.Labels, Value: v})
			in.labels = append(in.labels, c.r.Labels)
		}
	}
	v, err := evaluator.Select(in.buf, match)
	if err != nil {
		return math.NaN(), nil, err
	}
	// Select found exactly one series containing match; every candidate
	// contains it, so that is the only one present.
	return v, in.labels[0], nil
}

// Replay feeds the trigger's history through pkg/trigger at each step, in
// time order, the way the evaluator's ticks would have: a step where the
// series has no point is an observation with source.ErrNoData (a gap in
// Prometheus's data is what the live daemon sees as an empty result), and
// the volume is the volume series' point at the same instant, or unknown.
func Replay(in Input) *Replayed {
	tr := trigger.NewWithEvidence(in.Rule, in.Capacity, in.Spacing)
	n := steps(in.From, in.To, in.Step)
	out := &Replayed{
		Rule:   tr.Rule(),
		From:   in.From,
		Step:   in.Step,
		Values: make([]float64, 0, n),
		Kinds:  make([]window.Kind, 0, n),
		States: make([]window.State, 0, n),
	}
	vals := newInstant(in.Values, in.Match)
	var vols *instant
	if in.Volume != nil {
		vols = newInstant(in.Volume, in.Match)
	}
	for i := range n {
		t := out.At(i)
		obs := trigger.Observation{Volume: math.NaN()}
		var lbls map[string]string
		var err error
		obs.Value, lbls, err = vals.pick(t, in.Match)
		if err != nil {
			obs.Err = fmt.Errorf("prometheus query %q match %v: %w", in.Rule.Query, in.Match, err)
		}
		if vols != nil {
			if v, _, err := vols.pick(t, in.Match); err == nil {
				obs.Volume = v
			}
		}
		if _, ok := lbls[VersionLabel]; ok {
			out.HasVersion = true
		}
		st, d, b := tr.Observe(t, obs)
		last, _ := tr.Window().Last()
		out.Values = append(out.Values, last.Value)
		out.Kinds = append(out.Kinds, last.Kind)
		out.States = append(out.States, st.State)
		if d != nil {
			out.Decisions = append(out.Decisions, *d)
			out.Revisions = append(out.Revisions, lbls[VersionLabel])
		}
		if b != nil {
			out.Blinds = append(out.Blinds, *b)
		}
	}
	return out
}

// steps is the number of instants From + k·Step ≤ To.
func steps(from, to time.Time, step time.Duration) int {
	if step <= 0 || to.Before(from) {
		return 0
	}
	return int(to.Sub(from)/step) + 1
}

func containsAll(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Span is a stretch of consecutive steps in one state.
type Span struct {
	State window.State `json:"state"`
	// From is the first step in the state; To is the step that left it,
	// or the end of the range plus one step: [From, To).
	From time.Time `json:"from"`
	To   time.Time `json:"to"`
}

// Spans returns the stretches in the given states, in time order.
func (r *Replayed) Spans(states ...window.State) []Span {
	want := func(s window.State) bool {
		for _, w := range states {
			if s == w {
				return true
			}
		}
		return false
	}
	var out []Span
	for i := 0; i < len(r.States); {
		s := r.States[i]
		j := i + 1
		for j < len(r.States) && r.States[j] == s {
			j++
		}
		if want(s) {
			out = append(out, Span{State: s, From: r.At(i), To: r.At(j)})
		}
		i = j
	}
	return out
}
