package deploy

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/labels"
	"sigs.k8s.io/yaml"

	"github.com/rollguard/rollguard/pkg/app"
)

// ruleGroups are the spec of a PrometheusRule, which is a Prometheus rule
// file's content.
type ruleGroups struct {
	Groups []struct {
		Name     string `json:"name"`
		Interval string `json:"interval"`
		Rules    []struct {
			Record      string            `json:"record"`
			Alert       string            `json:"alert"`
			Expr        string            `json:"expr"`
			For         string            `json:"for"`
			Labels      map[string]string `json:"labels"`
			Annotations map[string]string `json:"annotations"`
		} `json:"rules"`
	} `json:"groups"`
}

// writeRuleFile renders deploy/monitoring and writes its PrometheusRule's
// groups as a rule file promtool reads.
func writeRuleFile(t *testing.T) (string, ruleGroups) {
	t.Helper()
	return writeRuleFileOf(t, filepath.Join("deploy", "monitoring"), deploymentName)
}

// writeRuleFileOf does the same for the PrometheusRule name of the
// kustomization in dir.
func writeRuleFileOf(t *testing.T, dir, name string) (string, ruleGroups) {
	t.Helper()
	objs := render(t, dir)
	pr := find(t, objs, "PrometheusRule", installNamespace, name)
	spec, ok, err := unstructured.NestedMap(pr.Object, "spec")
	if !ok || err != nil {
		t.Fatalf("PrometheusRule has no spec: %v", err)
	}
	data, err := yaml.Marshal(spec)
	if err != nil {
		t.Fatal(err)
	}
	var groups ruleGroups
	if err := yaml.UnmarshalStrict(data, &groups); err != nil {
		t.Fatalf("PrometheusRule spec is not a rule file: %v", err)
	}
	p := filepath.Join(t.TempDir(), name+".rules.yaml")
	if err := os.WriteFile(p, data, 0o600); err != nil {
		t.Fatal(err)
	}
	return p, groups
}

// promtool check rules must accept the PrometheusRule, and must refuse a
// broken one (so a pass means something).
func TestPrometheusRuleParses(t *testing.T) {
	tool := promtool(t)
	rendered, _ := writeRuleFile(t)
	broken := filepath.Join(t.TempDir(), "broken.rules.yaml")
	if err := os.WriteFile(broken, []byte("groups:\n- name: x\n  rules:\n  - alert: X\n    expr: 'rate(up[5m]'\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name   string
		file   string
		wantOK bool
	}{
		{"rendered PrometheusRule", rendered, true},
		{"broken expression", broken, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			out, stderr, err := run(t, 30*time.Second, nil, tool, "check", "rules", tt.file)
			if (err == nil) != tt.wantOK {
				t.Errorf("promtool check rules: err = %v, want ok=%v\n%s%s", err, tt.wantOK, out, stderr)
			}
		})
	}
}

// The health alerts exist with their severities, and behave: each
// fires on its condition, checked with promtool test rules.
func TestPrometheusRuleAlerts(t *testing.T) {
	tool := promtool(t)
	file, groups := writeRuleFile(t)

	want := map[string]string{
		"RollguardNotReady":             "critical",
		"RollguardNoLeader":             "critical",
		"RollguardBlind":                "warning",
		"RollguardRollbackFailed":       "critical",
		"RollguardConfigReloadFailed":   "warning",
		"RollguardNotificationsFailing": "warning",
	}
	got := map[string]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			got[r.Alert] = r.Labels["severity"]
			if r.Annotations["summary"] == "" {
				t.Errorf("alert %s has no summary", r.Alert)
			}
		}
	}
	if gk, wk := sortedKeys(got), sortedKeys(want); !slices.Equal(gk, wk) {
		t.Errorf("alerts = %v, want %v", gk, wk)
	}
	for name, sev := range want {
		if g, ok := got[name]; ok && g != sev {
			t.Errorf("alert %s severity = %q, want %q", name, g, sev)
		}
	}

	// Each case: input series, the time to evaluate, and the alerts
	// expected firing then (labels, then summary).
	unitTests := `rule_files: [` + filepath.Base(file) + `]
evaluation_interval: 1m
tests:
  - name: not ready when no replica is scraped, none before 5m
    interval: 1m
    input_series:
      - series: 'up{job="rollguard",instance="a"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 4m
        alertname: RollguardNotReady
      - eval_time: 6m
        alertname: RollguardNotReady
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations: {summary: "rollguard has no ready replica; automatic rollbacks are off."}
  - name: not ready when the target vanished
    interval: 1m
    input_series:
      - series: 'up{job="other"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 6m
        alertname: RollguardNotReady
        exp_alerts:
          - exp_labels: {severity: critical, job: rollguard}
            exp_annotations: {summary: "rollguard has no ready replica; automatic rollbacks are off."}
  - name: one replica up is enough
    interval: 1m
    input_series:
      - series: 'up{job="rollguard",instance="a"}'
        values: '0x10'
      - series: 'up{job="rollguard",instance="b"}'
        values: '1x10'
    alert_rule_test:
      - eval_time: 10m
        alertname: RollguardNotReady
  - name: blind trigger after 5m of no data
    interval: 1m
    input_series:
      - series: 'rollguard_trigger_state{target="pggit-api",trigger="error-rate",state="nodata",instance="a"}'
        values: '1x10'
      - series: 'rollguard_trigger_state{target="pggit-api",trigger="latency-p99",state="nodata",instance="a"}'
        values: '0x10'
    alert_rule_test:
      - eval_time: 6m
        alertname: RollguardBlind
        exp_alerts:
          - exp_labels: {severity: warning, target: pggit-api, trigger: error-rate}
            exp_annotations: {summary: "rollguard trigger pggit-api/error-rate has had no data for 5 minutes."}
  - name: failed rollback pages at once
    interval: 1m
    input_series:
      - series: 'rollguard_rollbacks_total{target="pggit-api",result="failed",instance="a"}'
        values: '0 0 1 1 1'
    alert_rule_test:
      - eval_time: 1m
        alertname: RollguardRollbackFailed
      - eval_time: 3m
        alertname: RollguardRollbackFailed
        exp_alerts:
          - exp_labels: {severity: critical, target: pggit-api, result: failed, instance: a}
            exp_annotations: {summary: "A rollguard rollback of pggit-api stopped before finishing; see /api/v1/incidents."}
  - name: the first failure creates the series at 1 and still pages
    interval: 1m
    input_series:
      - series: 'rollguard_rollbacks_total{target="pggit-api",plan="quick",result="failed",instance="a"}'
        values: '_ _ 1 1 1'
    alert_rule_test:
      - eval_time: 3m
        alertname: RollguardRollbackFailed
        exp_alerts:
          - exp_labels: {severity: critical, target: pggit-api, plan: quick, result: failed, instance: a}
            exp_annotations: {summary: "A rollguard rollback of pggit-api stopped before finishing; see /api/v1/incidents."}
  - name: a zero failure counter is quiet, and an old failure resolves
    interval: 1m
    input_series:
      - series: 'rollguard_rollbacks_total{target="a",result="failed",instance="a"}'
        values: '0x20'
      - series: 'rollguard_rollbacks_total{target="b",result="failed",instance="a"}'
        values: '1x20'
    alert_rule_test:
      - eval_time: 1m
        alertname: RollguardRollbackFailed
        exp_alerts:
          - exp_labels: {severity: critical, target: b, result: failed, instance: a}
            exp_annotations: {summary: "A rollguard rollback of b stopped before finishing; see /api/v1/incidents."}
      - eval_time: 20m
        alertname: RollguardRollbackFailed
  - name: rejected config reload
    interval: 1m
    input_series:
      - series: 'rollguard_config_last_reload_successful{instance="a"}'
        values: '1 0 0 0'
      - series: 'rollguard_config_last_reload_successful{instance="b"}'
        values: '1 1 1 1'
    alert_rule_test:
      - eval_time: 3m
        alertname: RollguardConfigReloadFailed
        exp_alerts:
          - exp_labels: {severity: warning}
            exp_annotations: {summary: "rollguard rejected its new config and keeps running the old one."}
  - name: no leader
    interval: 1m
    input_series:
      - series: 'rollguard_leader{instance="a"}'
        values: '0x5'
      - series: 'rollguard_leader{instance="b"}'
        values: '0x5'
    alert_rule_test:
      - eval_time: 3m
        alertname: RollguardNoLeader
        exp_alerts:
          - exp_labels: {severity: critical}
            exp_annotations: {summary: "No rollguard replica holds the leader lease; nothing will act."}
`
	testFile := filepath.Join(filepath.Dir(file), "rollguard.rules_test.yaml")
	if err := os.WriteFile(testFile, []byte(unitTests), 0o600); err != nil {
		t.Fatal(err)
	}
	out, stderr, err := run(t, 30*time.Second, nil, tool, "test", "rules", testFile)
	if err != nil {
		t.Errorf("promtool test rules: %v\n%s%s", err, out, stderr)
	}
}

// Every rollguard_* series an alert reads must be one the daemon exports;
// an alert on a series that never exists never fires.
func TestPrometheusRuleMetricsExist(t *testing.T) {
	_, groups := writeRuleFile(t)
	metricRE := regexp.MustCompile(`\brollguard_[a-z_]+\b`)
	used := map[string][]string{}
	for _, g := range groups.Groups {
		for _, r := range g.Rules {
			for _, m := range metricRE.FindAllString(r.Expr, -1) {
				used[m] = append(used[m], r.Alert)
			}
		}
	}
	if len(used) == 0 {
		t.Fatal("no rollguard_* series in the alerts")
	}

	// The names the daemon's components register, prefix included.
	exported, err := app.MetricNames()
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range sortedKeys(used) {
		t.Run(m, func(t *testing.T) {
			if !slices.Contains(exported, m) {
				t.Errorf("alerts %v read %s, which no package under pkg/ or cmd/ exports", used[m], m)
			}
		})
	}
}

// The ServiceMonitor scrapes the Service's port, and its job label (the
// Service's name) is the one the NotReady alert reads.
func TestServiceMonitorSelectsService(t *testing.T) {
	mon := render(t, filepath.Join("deploy", "monitoring"))
	sm := find(t, mon, "ServiceMonitor", installNamespace, deploymentName)
	var spec struct {
		JobLabel string `json:"jobLabel"`
		Selector struct {
			MatchLabels map[string]string `json:"matchLabels"`
		} `json:"selector"`
		Endpoints []struct {
			Port     string `json:"port"`
			Path     string `json:"path"`
			Interval string `json:"interval"`
		} `json:"endpoints"`
	}
	raw, _, _ := unstructured.NestedMap(sm.Object, "spec")
	data, err := yaml.Marshal(raw)
	if err != nil {
		t.Fatal(err)
	}
	if err := yaml.UnmarshalStrict(data, &spec); err != nil {
		t.Fatalf("ServiceMonitor spec: %v", err)
	}
	base := render(t, filepath.Join("deploy", "base"))
	svc := typed[corev1.Service](t, find(t, base, "Service", installNamespace, deploymentName))
	if len(spec.Selector.MatchLabels) == 0 || !labels.SelectorFromSet(spec.Selector.MatchLabels).Matches(labels.Set(svc.Labels)) {
		t.Errorf("ServiceMonitor selector %v does not select Service labels %v", spec.Selector.MatchLabels, svc.Labels)
	}
	if spec.JobLabel != "" || svc.Name != "rollguard" {
		t.Errorf("job label would be %q/%q; the alerts read job=\"rollguard\"", spec.JobLabel, svc.Name)
	}
	if len(spec.Endpoints) != 1 || spec.Endpoints[0].Path != "/metrics" ||
		!slices.ContainsFunc(svc.Spec.Ports, func(p corev1.ServicePort) bool { return p.Name == spec.Endpoints[0].Port }) {
		t.Errorf("ServiceMonitor endpoints = %+v, want /metrics on a port of Service %s (%+v)", spec.Endpoints, svc.Name, svc.Spec.Ports)
	}
}
