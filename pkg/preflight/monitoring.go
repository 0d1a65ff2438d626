package preflight

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/source/postgres"
	"github.com/rollguard/rollguard/pkg/source/prometheus"
)

// querier is what a trigger's source answers; both backends implement it.
type querier interface {
	Query(ctx context.Context, query string, ts time.Time) ([]source.Series, error)
}

// monitoringChecks: every trigger's query returns data for this target
// now, and the daemon watching it answers.
func (r *runner) monitoringChecks(ctx context.Context) []Check {
	var checks []Check
	if len(r.t.Triggers) == 0 {
		checks = append(checks, Check{Item: ItemMonitoring, Name: "monitoring.triggers", Status: StatusFail, Evidence: "target has no trigger"})
	}
	for i := range r.t.Triggers {
		tr := &r.t.Triggers[i]
		checks = append(checks, r.check(ctx, ItemMonitoring, "trigger."+tr.Name, r.opts.CheckTimeout, func(ctx context.Context) (Status, string) {
			return r.triggerData(ctx, tr)
		}))
	}
	checks = append(checks, r.check(ctx, ItemMonitoring, "monitoring.daemon", r.opts.CheckTimeout, r.daemon))
	return checks
}

func (r *runner) source(tr *config.Trigger) (querier, error) {
	if config.IsPrometheusKind(tr.Kind) {
		if r.prom != nil {
			return r.prom, nil
		}
		if r.cfg.Global.Prometheus.URL == "" {
			return nil, errors.New("global.prometheus.url is not set")
		}
		p, err := prometheus.New(prometheus.Options{URL: r.cfg.Global.Prometheus.URL, Timeout: time.Duration(r.cfg.Global.Prometheus.Timeout), HTTPConfig: &r.cfg.Global.Prometheus.HTTPConfig}, r.logger)
		if err != nil {
			return nil, err
		}
		r.prom = p
		return p, nil
	}
	if s, ok := r.pgSources[tr.Database]; ok {
		return s, nil
	}
	dsn, err := r.dsn(tr.Database)
	if err != nil {
		return nil, err
	}
	g, _ := r.cfg.Global.Database(tr.Database)
	s, err := postgres.New(postgres.Options{
		Name: tr.Database, DSN: dsn, MaxConns: 1,
		ConnectTimeout: time.Duration(g.ConnectTimeout), StatementTimeout: time.Duration(g.StatementTimeout),
		ApplicationName: "rollguard-preflight",
	}, r.logger)
	if err != nil {
		return nil, err
	}
	// One small pool per database for every trigger on it: preflight must
	// not be what exhausts the connection slots it is checking.
	r.pgSources[tr.Database] = s
	r.closers = append(r.closers, s.Close)
	return s, nil
}

func (r *runner) triggerData(ctx context.Context, tr *config.Trigger) (Status, string) {
	src, err := r.source(tr)
	if err != nil {
		return StatusFail, fmt.Sprintf("%s trigger: %v", tr.Kind, err)
	}
	series, err := src.Query(ctx, tr.Query, r.now())
	if err != nil {
		return StatusFail, fmt.Sprintf("query fails now: %v", err)
	}
	// The series the daemon's evaluator would select.
	want := rules.Match(tr)
	var picked []source.Series
	for _, s := range series {
		if matches(s.Labels, want, tr) {
			picked = append(picked, s)
		}
	}
	if len(picked) == 0 {
		if len(series) == 0 {
			return StatusFail, fmt.Sprintf("query returns no data now (%s): the trigger would be blind", abbreviate(tr.Query))
		}
		sel := labelsString(want)
		if sel == "" {
			sel = "no labels (the total)"
		}
		return StatusFail, fmt.Sprintf("query returns %d series but none with %s: the trigger would be blind", len(series), sel)
	}
	vals := make([]string, 0, 3)
	for i, s := range picked {
		if i == 3 {
			vals = append(vals, fmt.Sprintf("and %d more", len(picked)-3))
			break
		}
		vals = append(vals, strconv.FormatFloat(s.Value, 'g', 4, 64)+labelsString(s.Labels))
	}
	ev := fmt.Sprintf("%s returns %s (%s)", tr.Kind, strings.Join(vals, ", "), tr.Comparison())
	if len(picked) > 1 && len(want) == 0 {
		return StatusWarn, ev + ": several series and no match labels, the evaluator wants exactly one"
	}
	return StatusPass, ev
}

// matches: every wanted label is equal. With none wanted, the built-in
// PostgreSQL signals are read from their unlabelled total series; any
// series counts for custom queries.
func matches(labels, want map[string]string, tr *config.Trigger) bool {
	if len(want) == 0 {
		if tr.Query == config.BuiltinConnections || tr.Query == config.BuiltinReplicationLag {
			return len(labels) == 0
		}
		return true
	}
	for k, v := range want {
		if labels[k] != v {
			return false
		}
	}
	return true
}

func labelsString(m map[string]string) string {
	if len(m) == 0 {
		return ""
	}
	parts := make([]string, 0, len(m))
	for k, v := range m {
		if k == "__name__" {
			continue
		}
		parts = append(parts, fmt.Sprintf("%s=%q", k, v))
	}
	sort.Strings(parts)
	return "{" + strings.Join(parts, ",") + "}"
}

func abbreviate(s string) string {
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > 120 {
		return s[:117] + "..."
	}
	return s
}

// daemon checks rollguard's own API: ready, and watching this target.
// Unreachable is a warning, not a failure: preflight often runs from a
// workstation that cannot reach the in-cluster daemon, and says so.
func (r *runner) daemon(ctx context.Context) (Status, string) {
	base := r.opts.DaemonURL
	if base == "" {
		base = "http://" + r.cfg.Global.ListenAddress
	}
	base = strings.TrimRight(base, "/")
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/readyz", nil)
	if err != nil {
		return StatusFail, fmt.Sprintf("daemon URL %s: %v", base, err)
	}
	resp, err := r.httpClient.Do(req)
	if err != nil {
		return StatusWarn, fmt.Sprintf("rollguard daemon not reachable at %s (%v): make sure `rollguard run` watches target %s before deploying", base, err, r.t.Name)
	}
	var body [512]byte
	n, _ := resp.Body.Read(body[:])
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return StatusFail, fmt.Sprintf("rollguard daemon at %s is not ready: %s %s", base, resp.Status, strings.TrimSpace(string(body[:n])))
	}
	c := api.Client{BaseURL: base, Token: r.opts.DaemonToken, HTTP: r.httpClient}
	st, err := c.Status(ctx)
	if err != nil {
		return StatusFail, fmt.Sprintf("rollguard daemon at %s is ready but its status fails: %v", base, err)
	}
	names := make([]string, 0, len(st.Targets))
	for _, ts := range st.Targets {
		if ts.Name != r.t.Name {
			names = append(names, ts.Name)
			continue
		}
		ev := fmt.Sprintf("rollguard %s at %s is ready and watches %s (%s/%s), leader %t", st.Version, base, ts.Name, ts.Namespace, ts.Deployment, st.Leader)
		switch {
		case ts.Namespace != r.t.Namespace || ts.Deployment != r.t.Deployment:
			return StatusFail, ev + fmt.Sprintf(": but this config says %s/%s", r.t.Namespace, r.t.Deployment)
		case ts.Frozen:
			return StatusWarn, ev + ": target is FROZEN, it will page instead of rolling back"
		case ts.DryRun:
			return StatusWarn, ev + ": target is in DRY-RUN, it will not roll back"
		case ts.Running != "":
			return StatusFail, ev + ": a rollback is running: " + ts.Running
		}
		return StatusPass, ev
	}
	return StatusFail, fmt.Sprintf("rollguard daemon at %s is ready but does not watch target %s (it watches %v): the deploy would be unguarded", base, r.t.Name, names)
}
