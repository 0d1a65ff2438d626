package deploy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/config"
)

// fleetRecord is the series deploy/monitoring/fleet records; its
// kustomization's comment tells SREs to point templates.latencyP99 at it.
const fleetRecord = "namespace_deployment:http_request_duration_seconds:p99_rate1m"

// The fleet recording rule is rollguard's default P99 template, recorded
// at rollguard's default interval: a config switched to the recorded series
// sees the same values, labels and freshness (plus at most one interval).
func TestFleetRecordingRule(t *testing.T) {
	tool := promtool(t)
	file, groups := writeRuleFileOf(t, filepath.Join("deploy", "monitoring", "fleet"), "rollguard-fleet")
	if len(groups.Groups) != 1 || len(groups.Groups[0].Rules) != 1 {
		t.Fatalf("fleet rules = %+v, want one group with one rule", groups)
	}
	g := groups.Groups[0]
	r := g.Rules[0]
	if r.Record != fleetRecord {
		t.Errorf("record = %q, want %q", r.Record, fleetRecord)
	}
	if r.Expr != config.DefaultLatencyP99Query {
		t.Errorf("expr = %q, want the default latencyP99 template %q", r.Expr, config.DefaultLatencyP99Query)
	}
	if g.Interval != "5s" {
		t.Errorf("group interval = %q, want 5s (rollguard's default interval)", g.Interval)
	}
	if out, stderr, err := run(t, 30*time.Second, nil, tool, "check", "rules", file); err != nil {
		t.Fatalf("promtool check rules: %v\n%s%s", err, out, stderr)
	}

	// Deployment a (two pods, two versions) serves everything between 0.1 s
	// and 1 s: P99 = 0.1 + 0.9 × 0.99 = 0.991. Deployment b serves all under
	// 0.1 s: P99 = 0.099. The pod and version labels are summed away; the
	// recorded series keep exactly namespace and deployment.
	unitTests := `rule_files: [` + filepath.Base(file) + `]
evaluation_interval: 5s
tests:
  - name: recorded P99 per deployment
    interval: 5s
    input_series:
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="a",pod="a-1",version="v1",le="0.1"}'
        values: '0x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="a",pod="a-1",version="v1",le="1"}'
        values: '0+10x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="a",pod="a-1",version="v1",le="+Inf"}'
        values: '0+10x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="a",pod="a-2",version="v2",le="0.1"}'
        values: '0x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="a",pod="a-2",version="v2",le="1"}'
        values: '0+30x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="a",pod="a-2",version="v2",le="+Inf"}'
        values: '0+30x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="b",pod="b-1",version="v1",le="0.1"}'
        values: '0+5x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="b",pod="b-1",version="v1",le="1"}'
        values: '0+5x40'
      - series: 'http_request_duration_seconds_bucket{namespace="prod",deployment="b",pod="b-1",version="v1",le="+Inf"}'
        values: '0+5x40'
    promql_expr_test:
      - expr: round(` + fleetRecord + `, 0.001)
        eval_time: 2m
        exp_samples:
          - labels: '{namespace="prod",deployment="a"}'
            value: 0.991
          - labels: '{namespace="prod",deployment="b"}'
            value: 0.099
      - expr: ` + fleetRecord + ` - on (namespace, deployment) ` + config.DefaultLatencyP99Query + `
        eval_time: 2m
        exp_samples:
          - labels: '{namespace="prod",deployment="a"}'
            value: 0
          - labels: '{namespace="prod",deployment="b"}'
            value: 0
`
	testFile := filepath.Join(filepath.Dir(file), "fleet.rules_test.yaml")
	if err := os.WriteFile(testFile, []byte(unitTests), 0o600); err != nil {
		t.Fatal(err)
	}
	if out, stderr, err := run(t, 30*time.Second, nil, tool, "test", "rules", testFile); err != nil {
		t.Errorf("promtool test rules: %v\n%s%s", err, out, stderr)
	}
}
