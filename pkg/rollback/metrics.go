package rollback

import (
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/rollguard/rollguard/pkg/plan"
)

// StepMetrics times the steps of executed plans: the histogram
// step_duration_seconds by plan, step and result. It is declared here, with
// the plans and their steps it measures; the caller that judges a step's
// result (the responder) observes it.
type StepMetrics struct {
	durations *prometheus.HistogramVec
}

// NewStepMetrics declares the step metrics and registers them on reg when
// reg is not nil. The name carries no prefix: the registerer adds it.
func NewStepMetrics(reg prometheus.Registerer) *StepMetrics {
	m := &StepMetrics{durations: prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "rollback_step_duration_seconds",
		Help:    "Duration of each executed plan step.",
		Buckets: []float64{0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120, 300},
	}, []string{"plan", "step", "result"})}
	if reg != nil {
		reg.MustRegister(m.durations)
	}
	return m
}

// Observe records that step of plan ended with result after d.
func (m *StepMetrics) Observe(plan plan.Name, step, result string, d time.Duration) {
	m.durations.WithLabelValues(string(plan), step, result).Observe(d.Seconds())
}
