package evaluator

import (
	"context"
	"fmt"
	"runtime"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// memQuerier answers grouped queries from prebuilt results, like a
// Prometheus that has already evaluated them: the benchmark measures the
// evaluator, not a backend.
type memQuerier map[string][]source.Series

func (m memQuerier) Query(_ context.Context, q string, _ time.Time) ([]source.Series, error) {
	return m[q], nil
}

// QueryRange answers a range query with the prebuilt series' values at
// every step, like a Prometheus whose data does not change.
func (m memQuerier) QueryRange(_ context.Context, q string, start, end time.Time, step time.Duration) ([]source.Range, error) {
	series := m[q]
	n := int(end.Sub(start)/step) + 1
	out := make([]source.Range, len(series))
	pts := make([]source.Point, n*len(series))
	for i, s := range series {
		p := pts[i*n : (i+1)*n : (i+1)*n]
		for k := range p {
			p[k] = source.Point{Time: start.Add(time.Duration(k) * step), Value: s.Value}
		}
		out[i] = source.Range{Labels: s.Labels, Points: p}
	}
	return out, nil
}

type nopHandler struct{}

func (nopHandler) Fire(trigger.Decision) {}
func (nopHandler) Blind(trigger.Blind)   {}

const benchTargets = 2500

// benchSetup builds 4 trigger templates × 2,500 targets = 10,000 triggers:
// error rate (with a volume query), P99 latency, pool usage, replication
// lag, each template one grouped query fanned out by {namespace,
// deployment}. One target in 50 breaches, so windows go pending and fire.
func benchSetup(reg prometheus.Registerer) (*Evaluator, []Spec) {
	templates := []struct {
		name, backend, query, volume string
		threshold, value, hot        float64
		minRate                      float64
	}{
		{"error-rate", "prom", `sum by (namespace, deployment) (rate(http_requests_total{status="500"}[1m])) / sum by (namespace, deployment) (rate(http_requests_total[1m]))`,
			`sum by (namespace, deployment) (rate(http_requests_total[1m]))`, 0.05, 0.001, 0.2, 1},
		{"p99", "prom", `histogram_quantile(0.99, sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[1m])))`, "", 5, 0.05, 8, 0},
		{"pool", "pg", "builtin:connections", "", 0.95, 0.3, 0.99, 0},
		{"lag", "pg", "builtin:replication_lag", "", 30, 0.5, 45, 0},
	}
	prom, pg := memQuerier{}, memQuerier{}
	var specs []Spec
	for _, tp := range templates {
		q := prom
		if tp.backend == "pg" {
			q = pg
		}
		for i := range benchTargets {
			ns, dep := fmt.Sprintf("ns-%d", i%50), fmt.Sprintf("app-%d", i)
			v := tp.value
			if i%50 == 0 {
				v = tp.hot
			}
			q[tp.query] = append(q[tp.query], source.Series{Labels: map[string]string{"namespace": ns, "deployment": dep, "instance": "x"}, Value: v})
			if tp.volume != "" {
				q[tp.volume] = append(q[tp.volume], source.Series{Labels: map[string]string{"namespace": ns, "deployment": dep}, Value: 10})
			}
			specs = append(specs, Spec{
				ID: ns + "/" + dep + "/" + tp.name, Backend: tp.backend, Query: tp.query, VolumeQuery: tp.volume,
				Match: map[string]string{"namespace": ns, "deployment": dep},
				Rule: trigger.Rule{Target: ns + "/" + dep, Name: tp.name, Op: trigger.Above, Threshold: tp.threshold,
					For: time.Minute, MaxGap: 10 * time.Second, BlindAfter: 2 * time.Minute, MinRate: tp.minRate, Action: "rollback"},
			})
		}
	}
	e := New(Options{Interval: 5 * time.Second, Parallelism: 4, QueryTimeout: 4 * time.Second},
		map[string]Querier{"prom": prom, "pg": pg}, nopHandler{}, zap.NewNop(), reg)
	return e, specs
}

// BenchmarkTick is one evaluation of 10,000 triggers over 5 distinct
// in-memory queries of 2,500 series each.
func BenchmarkTick(b *testing.B) {
	e, specs := benchSetup(prometheus.NewRegistry())
	benchTicks(b, e, specs)
}

// BenchmarkTickResolution is BenchmarkTick with the Prometheus triggers
// (half of them) sampled every second: 5 points per series and trigger per
// 5 s tick. The range results are built by the in-memory querier in the
// loop (about what a decoder allocates for them).
func BenchmarkTickResolution(b *testing.B) {
	e, specs := benchSetup(prometheus.NewRegistry())
	for i := range specs {
		if specs[i].Backend == "prom" {
			specs[i].Resolution = time.Second
		}
	}
	benchTicks(b, e, specs)
}

// benchTicks sets specs on e and times its 5 s ticks.
func benchTicks(b *testing.B, e *Evaluator, specs []Spec) {
	b.Helper()
	if err := e.SetTriggers(specs); err != nil {
		b.Fatal(err)
	}
	ctx := context.Background()
	now := t0
	// Warm up: fill the windows and grow the index maps once.
	for range 20 {
		now = now.Add(5 * time.Second)
		e.Tick(ctx, now)
	}
	b.ReportAllocs()
	b.ResetTimer()
	for b.Loop() {
		now = now.Add(5 * time.Second)
		e.Tick(ctx, now)
	}
	b.ReportMetric(float64(len(specs)), "triggers")
}

// BenchmarkWindowState reports the heap bytes of one trigger's state
// (trigger + window + evidence ring for for=60s at 5s), measured as the
// runtime.MemStats delta over 10,000 triggers.
func BenchmarkWindowState(b *testing.B) {
	r := trigger.Rule{Target: "t", Name: "n", Op: trigger.Above, Threshold: 1, For: time.Minute, MaxGap: 10 * time.Second}
	capacity := window.CapacityFor(time.Minute, 5*time.Second)
	var perTrigger float64
	for b.Loop() {
		perTrigger = heapDelta(func() any {
			ts := make([]*trigger.Trigger, 10000)
			for i := range ts {
				ts[i] = trigger.New(r, capacity)
			}
			return ts
		}) / 10000
	}
	b.ReportMetric(perTrigger, "B/trigger")
	b.ReportMetric(float64(capacity), "ring-samples")
}

// BenchmarkEvaluatorState reports the heap bytes per trigger of a whole
// evaluator after SetTriggers and one tick: trigger state, status, the
// fan-out plan and index, and its Prometheus metric children.
func BenchmarkEvaluatorState(b *testing.B) {
	var perTrigger float64
	for b.Loop() {
		e, specs := benchSetup(prometheus.NewRegistry())
		perTrigger = heapDelta(func() any {
			if err := e.SetTriggers(specs); err != nil {
				b.Fatal(err)
			}
			e.Tick(context.Background(), t0)
			return e
		}) / float64(len(specs))
	}
	b.ReportMetric(perTrigger, "B/trigger")
}

func heapDelta(build func() any) float64 {
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	keep := build()
	runtime.GC()
	runtime.ReadMemStats(&after)
	runtime.KeepAlive(keep)
	return float64(after.HeapAlloc) - float64(before.HeapAlloc)
}

// BenchmarkScrape is one /metrics gather of the evaluator's registry with
// 10,000 triggers (the per-trigger series are built at scrape time).
func BenchmarkScrape(b *testing.B) {
	reg := prometheus.NewRegistry()
	e, specs := benchSetup(reg)
	if err := e.SetTriggers(specs); err != nil {
		b.Fatal(err)
	}
	e.Tick(context.Background(), t0)
	b.ReportAllocs()
	for b.Loop() {
		if _, err := reg.Gather(); err != nil {
			b.Fatal(err)
		}
	}
}
