// Package rules is the one translation of a configuration's triggers into
// what the daemon runs: the trigger.Rule each one is judged by and the
// evaluator.Spec that samples it. The daemon, the backtest, preflight and
// post-rollback verification all take their rules from here, so a what-if
// or a check judges exactly what the daemon would judge; a second copy of
// this mapping would drift silently (a default applied in one place, a
// field forgotten in another).
package rules

import (
	"fmt"
	"time"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// BackendPrometheus is the evaluator backend name of the Prometheus source.
const BackendPrometheus = "prometheus"

// BackendPostgres is the evaluator backend name of the PostgreSQL source of
// the configured database db.
func BackendPostgres(db string) string { return "postgres:" + db }

// ID is the evaluator's identity of a trigger of a target.
func ID(target, trig string) string { return target + "/" + trig }

// Rule is the rule the daemon runs for trigger tr of the target named
// target. interval is global.interval: a maxGap of 0 (possible only in a
// config built in code, loading fills it) takes window.DefaultMaxGap.
func Rule(target string, tr *config.Trigger, interval time.Duration) trigger.Rule {
	r := trigger.Rule{
		Target:     target,
		Name:       tr.Name,
		For:        time.Duration(tr.For),
		MaxGap:     time.Duration(tr.MaxGap),
		BlindAfter: time.Duration(tr.BlindAfter),
		OnError:    tr.OnError,
		MinRate:    tr.MinRate,
		Action:     tr.Action,
		Severity:   tr.Severity,
		Security:   tr.Security,
		Query:      tr.Query,
	}
	switch {
	case tr.Above != nil:
		r.Op, r.Threshold = trigger.Above, *tr.Above
	case tr.Below != nil:
		r.Op, r.Threshold = trigger.Below, *tr.Below
	}
	if r.MaxGap == 0 {
		r.MaxGap = window.DefaultMaxGap(interval)
	}
	return r
}

// Match selects the trigger's series from its query's result: the
// configured match, or for a connections trigger naming an application
// that application's share (builtin:connections labels each share with
// application_name).
func Match(tr *config.Trigger) map[string]string {
	if tr.Kind == config.KindConnections && tr.Application != "" {
		return map[string]string{"application_name": tr.Application}
	}
	return tr.Match
}

// Backend is the evaluator backend that answers tr's query.
func Backend(tr *config.Trigger) string {
	if config.IsPrometheusKind(tr.Kind) {
		return BackendPrometheus
	}
	return BackendPostgres(tr.Database)
}

// Spec is how the daemon evaluates trigger tr of the target named target
// under cfg's global settings: its rule, its query and match, and a PromQL
// trigger sampled at global.prometheus.resolution.
func Spec(cfg *config.Config, target string, tr *config.Trigger) evaluator.Spec {
	s := evaluator.Spec{
		ID: ID(target, tr.Name), Backend: Backend(tr), Query: tr.Query, VolumeQuery: tr.VolumeQuery,
		Match: Match(tr), Rule: Rule(target, tr, time.Duration(cfg.Global.Interval)),
		// Name, action, severity are not in the config fingerprint; the
		// window must survive a change of those, but the rule must not be
		// stale, so they join the key here.
		Fingerprint: tr.Fingerprint() + "|" + tr.Action + "|" + string(tr.Severity) + fmt.Sprint(tr.Security),
	}
	if s.Backend == BackendPrometheus {
		s.Resolution = time.Duration(cfg.Global.Prometheus.Resolution)
	}
	return s
}

// Specs are the evaluator specs of every configured trigger, in the
// config's order.
func Specs(cfg *config.Config) []evaluator.Spec {
	var out []evaluator.Spec
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		for j := range t.Triggers {
			out = append(out, Spec(cfg, t.Name, &t.Triggers[j]))
		}
	}
	return out
}
