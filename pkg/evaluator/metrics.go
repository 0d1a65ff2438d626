package evaluator

import (
	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollguard/rollguard/pkg/window"
)

type metrics struct {
	evals prometheus.Counter
	qdur  *prometheus.HistogramVec
	serr  *prometheus.CounterVec
}

func newMetrics() *metrics {
	return &metrics{
		evals: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "evaluations_total",
			Help: "Evaluation ticks completed.",
		}),
		qdur: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "source_query_duration_seconds",
			Help:    "Duration of source queries.",
			Buckets: []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10},
		}, []string{"backend"}),
		serr: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "source_errors_total",
			Help: "Failed source queries by error kind (timeout, unauthorized, tls, role_connection_limit, unreachable, too_many_connections, bad_query, ambiguous, canceled, other).",
		}, []string{"backend", "kind"}),
	}
}

var (
	stateDesc = prometheus.NewDesc("trigger_state",
		"1 for the trigger's current state (ok, pending, firing, nodata, lowvolume), 0 for the others.",
		[]string{"target", "trigger", "state"}, nil)
	breachDesc = prometheus.NewDesc("trigger_breach_seconds",
		"How long the trigger's current breaching run has lasted, up to its last sample; 0 when not breaching.",
		[]string{"target", "trigger"}, nil)
	valueDesc = prometheus.NewDesc("trigger_last_value",
		"The trigger's last observed value; NaN when it had none.",
		[]string{"target", "trigger"}, nil)
	thresholdDesc = prometheus.NewDesc("trigger_threshold",
		"The trigger's threshold (compared above or below, as configured).",
		[]string{"target", "trigger"}, nil)
	forDesc = prometheus.NewDesc("trigger_for_seconds",
		"The trigger's window: a breach fires when it has lasted this long.",
		[]string{"target", "trigger"}, nil)
)

// triggerCollector exports the per-trigger series at scrape time from the
// triggers themselves, so a tick does no metric work per trigger and a
// removed trigger's series vanish with it.
type triggerCollector struct{ e *Evaluator }

func (c triggerCollector) Describe(ch chan<- *prometheus.Desc) {
	ch <- stateDesc
	ch <- breachDesc
	ch <- valueDesc
	ch <- thresholdDesc
	ch <- forDesc
}

func (c triggerCollector) Collect(ch chan<- prometheus.Metric) {
	for _, st := range c.e.Status() {
		for _, s := range window.States {
			v := 0.0
			if s == st.State {
				v = 1
			}
			ch <- prometheus.MustNewConstMetric(stateDesc, prometheus.GaugeValue, v, st.Target, st.Trigger, s.String())
		}
		breach := 0.0
		if !st.BreachStart.IsZero() {
			breach = st.LastSample.Sub(st.BreachStart).Seconds()
		}
		ch <- prometheus.MustNewConstMetric(breachDesc, prometheus.GaugeValue, breach, st.Target, st.Trigger)
		ch <- prometheus.MustNewConstMetric(valueDesc, prometheus.GaugeValue, st.Value, st.Target, st.Trigger)
		ch <- prometheus.MustNewConstMetric(thresholdDesc, prometheus.GaugeValue, st.Threshold, st.Target, st.Trigger)
		ch <- prometheus.MustNewConstMetric(forDesc, prometheus.GaugeValue, st.For.Seconds(), st.Target, st.Trigger)
	}
}
