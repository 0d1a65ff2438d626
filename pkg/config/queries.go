package config

import (
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/promql"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// Warnings returns the legal but probably unintended choices found when
// the configuration was loaded (a trigger that a handful of requests can
// fire, a window that is not a whole number of intervals, a verify window
// that cannot see the recovery), each with its path. Validate prints them
// and the daemon logs them; none stops a load.
func (c *Config) Warnings() []*Error { return c.warnings }

// WarningLines renders the warnings one per line, like Errors.Lines.
func (c *Config) WarningLines() []string {
	return (&Errors{File: c.file, List: c.warnings}).Lines()
}

func (c *Config) warnf(path, format string, args ...any) {
	c.warnings.addf(path, format, args...)
}

// checkPromQL parses a query with Prometheus' parser: a query Prometheus
// rejects, or one that does not return one number per series, is an error
// at path. It returns what the parser found, and false when the query is
// unusable.
func (c *Config) checkPromQL(errs *errList, path, q string) (promql.Query, bool) {
	if strings.TrimSpace(q) == "" {
		return promql.Query{}, false
	}
	pq, err := promql.Parse(q)
	if err != nil {
		errs.addf(path, "%v", err)
		return promql.Query{}, false
	}
	switch pq.Type {
	case "vector", "scalar":
	case "matrix":
		errs.addf(path, "must return an instant vector or a scalar, got a range vector")
		return pq, false
	default:
		errs.addf(path, "must return an instant vector or a scalar, got a %s", pq.Type)
		return pq, false
	}
	if pq.Pinned {
		c.warnf(path, "uses the @ modifier: part of the query reads a fixed instant and never changes")
	}
	return pq, true
}

// validateTemplates parses the built-in kinds' queries once, where they
// are written: the triggers that inherit them are not checked again.
func (c *Config) validateTemplates(errs *errList) {
	t := &c.Global.Templates
	for _, q := range []struct{ path, q string }{
		{"global.templates.errorRate.query", t.ErrorRate.Query},
		{"global.templates.errorRate.volumeQuery", t.ErrorRate.VolumeQuery},
		{"global.templates.latencyP99.query", t.LatencyP99.Query},
		{"global.templates.latencyP99.volumeQuery", t.LatencyP99.VolumeQuery},
	} {
		c.checkPromQL(errs, q.path, q.q)
	}
}

// atLeastTwoIntervals reports a window that holds at most two samples
// one interval apart: one transient spike that spans two evaluations fires
// it.
func atLeastTwoIntervals(errs *errList, path string, d, interval model.Duration) {
	if d <= 0 || interval <= 0 || d >= 2*interval {
		return
	}
	errs.addf(path, "must be at least two intervals (%s with global.interval %s), got %s: a shorter window holds two samples at most, one interval apart",
		2*interval, interval, d)
}

// ratioKinds are the kinds whose value is a share in [0, 1].
var ratioKinds = map[string]string{KindErrorRate: "an errorRate", KindConnections: "connections"}

// validateSignal checks what a trigger's threshold, window and error
// handling can mean for its kind: a threshold a ratio can never cross (or
// always crosses), onError: breach on a source whose errors say nothing
// about the Deployment, a replication lag that reads every slot.
func (c *Config) validateSignal(tr *Trigger, p string, errs *errList, given func(string) bool) {
	g := &c.Global
	if name, ok := ratioKinds[tr.Kind]; ok {
		if a := tr.Above; a != nil && !isNaNOrInf(*a) {
			switch {
			case *a < 0:
				errs.addf(p+".above", "%s is a ratio in [0, 1]: above must be in [0, 1), got %v (it would always breach)", name, *a)
			case *a >= 1:
				errs.addf(p+".above", "%s is a ratio in [0, 1]: above must be in [0, 1), got %v (it could never fire)", name, *a)
			case *a == 0 && tr.Kind == KindErrorRate:
				c.warnf(p+".above", "0: a single failed request in the window is a breach")
			}
		}
		if b := tr.Below; b != nil && !isNaNOrInf(*b) {
			switch {
			case *b <= 0:
				errs.addf(p+".below", "%s is a ratio in [0, 1]: below must be in (0, 1], got %v (it could never fire)", name, *b)
			case *b > 1:
				errs.addf(p+".below", "%s is a ratio in [0, 1]: below must be in (0, 1], got %v (it would always breach)", name, *b)
			}
		}
	}
	if tr.Kind == KindErrorRate && tr.MinRate == 0 {
		c.warnf(p+".minRate", "0 (no volume guard): a handful of requests with one failure can fire this errorRate; set minRate (requests per second)")
	}
	if given(p + ".for") {
		atLeastTwoIntervals(errs, p+".for", tr.For, g.Interval)
	}
	if given(p+".for") && tr.For > 0 && g.Interval > 0 && tr.For%g.Interval != 0 {
		fires := (tr.For/g.Interval + 1) * g.Interval
		c.warnf(p+".for", "%s is not a multiple of global.interval %s: the trigger fires at the first sample at or after %s, %s after the breach began",
			tr.For, g.Interval, tr.For, fires)
	}
	if tr.OnError == trigger.OnErrorBreach && IsPrometheusKind(tr.Kind) {
		errs.addf(p+".onError", "breach is for PostgreSQL kinds (connections, replicationLag, sql), got kind %s: a Prometheus timeout or error says nothing about the Deployment", tr.Kind)
	}
	if tr.Kind == KindReplicationLag && tr.Match["slot"] == "" {
		errs.addf(p+".match", "replicationLag needs match.slot, the replication slot of the subscriber it watches (SELECT subslotname FROM pg_subscription on the subscriber): without it the trigger reads the worst slot on the primary, and an abandoned or unrelated slot fires it")
	}
}

// validateVerifyWindow warns when the trigger queries of a target read
// more history than the rollback's last pause plus its verify window: the
// verify step then has to wait for data that postdates the rollback before
// it can judge, and takes longer than verifyWindow says.
func (c *Config) validateVerifyWindow(t *Target, p string, lookbacks map[int]time.Duration) {
	var longest time.Duration
	at := -1
	for i := range t.Triggers {
		if d := lookbacks[i]; d > longest {
			longest, at = d, i
		}
	}
	if at < 0 {
		return
	}
	r := &t.Rollback
	pause := time.Duration(r.RampPause)
	if r.Strategy == plan.Revert || len(r.RampSteps) == 0 {
		pause = 0
	}
	window := time.Duration(r.VerifyWindow)
	if window <= 0 || pause+window >= longest {
		return
	}
	msg := fmt.Sprintf("%s, with rampPause %s,", model.Duration(window), model.Duration(pause))
	if pause == 0 {
		msg = fmt.Sprintf("%s, with no ramp pause,", model.Duration(window))
	}
	c.warnf(p+".rollback.verifyWindow", "%s cannot see the recovery in the trigger queries, which read %s of history (%s.triggers[%d]): verify waits until %s after the rollout before it judges, so it takes up to %s",
		msg, model.Duration(longest), p, at, model.Duration(longest), model.Duration(longest+window))
}

func isNaNOrInf(f float64) bool { return math.IsNaN(f) || math.IsInf(f, 0) }
