package backtest

import (
	"context"
	"fmt"
	"math"
	"sync"
	"time"

	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/source"
)

var t0 = time.Date(2026, 11, 25, 10, 0, 0, 0, time.UTC)

func at(i int) time.Time { return t0.Add(time.Duration(i) * time.Second) }

// rng builds a range from per-second values; NaN is a missing point.
func rng(labels map[string]string, vals []float64) source.Range {
	r := source.Range{Labels: labels}
	for i, v := range vals {
		if !math.IsNaN(v) {
			r.Points = append(r.Points, source.Point{Time: at(i), Value: v})
		}
	}
	return r
}

// fill returns n values, v at every index, then applies spans [from, to) → value.
func fill(n int, v float64, spans ...span) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = v
	}
	for _, s := range spans {
		for i := s.from; i < s.to && i < n; i++ {
			out[i] = s.v
		}
	}
	return out
}

type span struct {
	from, to int
	v        float64
}

// only keeps the values in [from, to), NaN elsewhere.
func only(vals []float64, from, to int) []float64 {
	out := make([]float64, len(vals))
	for i := range out {
		out[i] = math.NaN()
		if i >= from && i < to {
			out[i] = vals[i]
		}
	}
	return out
}

// fakeRange answers range queries from recorded ranges, clipped to the
// requested interval and aligned on start + k·step like Prometheus. Safe
// for the evaluator's concurrent queries.
type fakeRange struct {
	data  map[string][]source.Range
	err   map[string]error
	mu    sync.Mutex
	calls map[string]int
}

func (f *fakeRange) QueryRange(_ context.Context, q string, start, end time.Time, step time.Duration) ([]source.Range, error) {
	f.mu.Lock()
	if f.calls == nil {
		f.calls = map[string]int{}
	}
	f.calls[q]++
	f.mu.Unlock()
	if err := f.err[q]; err != nil {
		return nil, err
	}
	rs, ok := f.data[q]
	if !ok {
		return nil, fmt.Errorf("fake: unknown query %q", q)
	}
	var out []source.Range
	for _, r := range rs {
		c := source.Range{Labels: r.Labels}
		for _, p := range r.Points {
			if p.Time.Before(start) || p.Time.After(end) || p.Time.Sub(start)%step != 0 {
				continue
			}
			c.Points = append(c.Points, p)
		}
		if len(c.Points) > 0 {
			out = append(out, c)
		}
	}
	return out, nil
}

// instantOf answers instant queries from the same recorded ranges: the
// evaluator's view of the history.
type instantOf struct{ data map[string][]source.Range }

func (q instantOf) Query(_ context.Context, query string, ts time.Time) ([]source.Series, error) {
	var out []source.Series
	for _, r := range q.data[query] {
		for _, p := range r.Points {
			if p.Time.Equal(ts) {
				out = append(out, source.Series{Labels: r.Labels, Value: p.Value})
			}
		}
	}
	return out, nil
}

func modelDur(d time.Duration) model.Duration { return model.Duration(d) }
