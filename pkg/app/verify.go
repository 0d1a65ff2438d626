package app

import (
	"context"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/promql"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// verifier reads a target's triggers for the executor's verify step, each
// classified exactly as the evaluator classifies a tick: a value beyond the
// threshold is a breach, no value (an error, a timeout, an empty result)
// is no data, traffic below minRate is low volume. No data is never a pass:
// the step reports the rollback unverified.
type verifier struct{ d *daemon }

func (v *verifier) Lookback(ns, name string) time.Duration {
	return targetLookback(v.d.config(), ns, name)
}

func (v *verifier) Verify(ctx context.Context, ns, name string, at time.Time) []rollback.Signal {
	cfg := v.d.config()
	queriers := v.d.src.queriers()
	// Triggers of a target often share a query (the templates' volume
	// query): ask each once per poll.
	type answer struct {
		series []source.Series
		err    error
	}
	asked := map[[2]string]answer{}
	ask := func(backend, q string) ([]source.Series, error) {
		k := [2]string{backend, q}
		if a, ok := asked[k]; ok {
			return a.series, a.err
		}
		qr, ok := queriers[backend]
		if !ok {
			return nil, fmt.Errorf("%w: no %s source configured", source.ErrUnreachable, backend)
		}
		s, err := qr.Query(ctx, q, at)
		asked[k] = answer{s, err}
		return s, err
	}
	var out []rollback.Signal
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		if t.Namespace != ns || t.Deployment != name {
			continue
		}
		for j := range t.Triggers {
			s := rules.Spec(cfg, t.Name, &t.Triggers[j])
			obs := trigger.Observation{Volume: math.NaN()}
			series, err := ask(s.Backend, s.Query)
			if err == nil {
				if obs.Value, err = evaluator.Select(series, s.Match); err != nil {
					err = fmt.Errorf("%s query %q match %v: %w", s.Backend, s.Query, s.Match, err)
				}
			}
			obs.Err = err
			if s.VolumeQuery != "" {
				if vs, verr := ask(s.Backend, s.VolumeQuery); verr == nil {
					if vol, serr := evaluator.Select(vs, s.Match); serr == nil {
						obs.Volume = vol
					}
				}
			}
			out = append(out, verifySignal(s.Rule, obs))
		}
	}
	return out
}

// verifySignal classifies one observation for verify.
func verifySignal(r trigger.Rule, o trigger.Observation) rollback.Signal {
	s := rollback.Signal{Trigger: r.Name}
	threshold := fmt.Sprintf("%s %g", r.Op, r.Threshold)
	if r.MinRate > 0 && !math.IsNaN(o.Volume) && o.Volume < r.MinRate && (o.Err == nil || errors.Is(o.Err, source.ErrNoData)) {
		s.State, s.Detail = rollback.SignalLowVolume, fmt.Sprintf("%.4g requests/s < minRate %g", o.Volume, r.MinRate)
		return s
	}
	switch trigger.New(r, 1).Classify(o) {
	case window.Breach:
		s.State = rollback.SignalBreach
		if o.Err != nil {
			s.Detail = fmt.Sprintf("error counted as a breach (%v)", o.Err)
		} else {
			s.Detail = fmt.Sprintf("= %.4g (%s)", o.Value, threshold)
		}
	case window.OK:
		s.State, s.Detail = rollback.SignalOK, fmt.Sprintf("= %.4g (%s)", o.Value, threshold)
	default:
		s.State = rollback.SignalNoData
		switch {
		case o.Err != nil:
			s.Detail = o.Err.Error()
		case r.MinRate > 0 && math.IsNaN(o.Volume):
			s.Detail = "request volume unknown"
		default:
			s.Detail = "no value"
		}
	}
	return s
}

// targetLookback is the longest history any Prometheus query of the
// target's triggers reads (0 without one).
func targetLookback(cfg *config.Config, ns, name string) time.Duration {
	var longest time.Duration
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		if t.Namespace != ns || t.Deployment != name {
			continue
		}
		for _, tr := range t.Triggers {
			if !config.IsPrometheusKind(tr.Kind) {
				continue
			}
			for _, q := range []string{tr.Query, tr.VolumeQuery} {
				if q == "" {
					continue
				}
				if pq, err := promql.Parse(q); err == nil {
					longest = max(longest, pq.Lookback)
				}
			}
		}
	}
	return longest
}
