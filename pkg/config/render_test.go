package config

import (
	"fmt"
	"reflect"
	"strings"
	"testing"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/trigger"
)

func TestFingerprint(t *testing.T) {
	base := parts{triggers: `      - {name: errors, kind: errorRate, above: 0.05, minRate: 1}
`}
	fp := func(t *testing.T, p parts) string {
		t.Helper()
		cfg, err := Load([]byte(p.yaml()))
		if err != nil {
			t.Fatalf("Load: %v", err)
		}
		return cfg.Targets[0].Triggers[0].Fingerprint()
	}
	want := fp(t, base)
	if len(want) != 32 {
		t.Fatalf("fingerprint %q, want 32 hex digits", want)
	}
	for _, tc := range []struct {
		name string
		p    parts
		same bool
	}{
		{"identical", base, true},
		{"name, action, severity and security do not count", parts{
			global:   "  notify: {pagerduty: {routingKeyFile: /s/rk, securityRoutingKeyFile: /s/srk}}\n",
			triggers: "      - {name: renamed, kind: errorRate, above: 0.05, minRate: 1, action: rollback, severity: info, security: true}\n",
		}, true},
		{"explicit values equal to the defaults", parts{triggers: "      - {name: errors, kind: errorRate, above: 0.05, minRate: 1, for: 1m, maxGap: 10s, onError: nodata}\n"}, true},
		{"threshold", parts{triggers: "      - {name: errors, kind: errorRate, above: 0.06, minRate: 1}\n"}, false},
		{"above vs below", parts{triggers: "      - {name: errors, kind: errorRate, below: 0.05, minRate: 1}\n"}, false},
		{"window", parts{triggers: "      - {name: errors, kind: errorRate, above: 0.05, minRate: 1, for: 2m}\n"}, false},
		{"global window it inherits", parts{global: "  for: 2m\n", triggers: base.triggers}, false},
		{"maxGap", parts{triggers: "      - {name: errors, kind: errorRate, above: 0.05, minRate: 1, maxGap: 20s}\n"}, false},
		{"onError", parts{triggers: "      - {name: pool, kind: connections, database: primary, above: 0.95, onError: breach}\n"}, false},
		{"minRate", parts{triggers: "      - {name: errors, kind: errorRate, above: 0.05, minRate: 2}\n"}, false},
		{"query", parts{triggers: "      - {name: errors, kind: errorRate, above: 0.05, minRate: 1, query: 'x', volumeQuery: 'y'}\n"}, false},
		{"template", parts{global: "  templates: {errorRate: {query: 'x', volumeQuery: 'y'}}\n", triggers: base.triggers}, false},
		{"match of the target", parts{target: "    match: {namespace: prod, deployment: api, region: eu}\n", triggers: base.triggers}, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := fp(t, tc.p); (got == want) != tc.same {
				t.Errorf("fingerprint %s vs %s, same = %v, want %v", got, want, got == want, tc.same)
			}
		})
	}
}

func TestDefaultsAndInheritance(t *testing.T) {
	cfg, err := Load([]byte(parts{
		global: "  interval: 10s\n  dryRun: true\n  notify: {slack: {webhookURLFile: /s/slack}}\n",
		target: "    notify: {severity: warning}\n",
		triggers: `      - {name: errors, kind: errorRate, above: 0.05}
      - {name: slow, kind: latencyP99, above: 5, match: {deployment: api}, severity: critical, blindAfter: 5m}
      - {name: conns, kind: connections, database: primary, above: 0.9}
      - {name: custom, kind: errorRate, above: 0.05, query: 'my_ratio'}
`,
	}.yaml()))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	g := cfg.Global
	if g.MaxGap.String() != "20s" || g.For.String() != "1m" || g.LogLevel != "info" || g.ListenAddress != "127.0.0.1:9847" ||
		g.QueryParallelism != 16 || g.Prometheus.Timeout.String() != "10s" || g.Databases[0].MaxConns != 2 ||
		g.LeaderElection.LeaseDuration.String() != "15s" || g.Interlocks.Cooldown.String() != "30m" ||
		g.Notify.PagerDuty.Endpoint != "https://events.pagerduty.com" || g.Notify.IncidentDir != "/var/lib/rollguard/incidents" {
		t.Errorf("global defaults wrong:\n%s", cfg)
	}
	tg := cfg.Targets[0]
	if !tg.DryRunEnabled() || *tg.Notify.PagerDuty || !*tg.Notify.Slack {
		t.Errorf("target dryRun=%v pagerduty=%v slack=%v, want true false true", tg.DryRunEnabled(), *tg.Notify.PagerDuty, *tg.Notify.Slack)
	}
	if tg.Match["namespace"] != "prod" || tg.Match["deployment"] != "api" || len(tg.Match) != 2 {
		t.Errorf("target match = %v", tg.Match)
	}
	if tg.Rollback.Strategy != plan.Quick || tg.Rollback.RampSteps[0] != 2 || tg.Rollback.PoolRecovery.IdleInTransactionAge.String() != "5m" {
		t.Errorf("rollback defaults = %+v", tg.Rollback)
	}
	errs, slow, conns, custom := tg.Triggers[0], tg.Triggers[1], tg.Triggers[2], tg.Triggers[3]
	if errs.Query != DefaultErrorRateQuery || errs.VolumeQuery != DefaultErrorRateVolumeQuery || errs.For != g.For ||
		errs.MaxGap != g.MaxGap || errs.BlindAfter != g.BlindAfter || errs.OnError != trigger.OnErrorNoData ||
		errs.Action != plan.RequestPage || errs.Severity != notify.SeverityWarning || len(errs.Match) != 2 {
		t.Errorf("errorRate trigger defaults = %+v", errs)
	}
	if slow.Query != DefaultLatencyP99Query || slow.VolumeQuery != "" || len(slow.Match) != 1 ||
		slow.Severity != notify.SeverityCritical || slow.BlindAfter.String() != "5m" {
		t.Errorf("latencyP99 trigger = %+v", slow)
	}
	if conns.Query != BuiltinConnections || conns.Match != nil {
		t.Errorf("connections trigger = %+v", conns)
	}
	if custom.Query != "my_ratio" || custom.VolumeQuery != "" {
		t.Errorf("custom query took the template's volume query: %+v", custom)
	}
	sum := cfg.Summary()
	for _, want := range []string{
		"1 target, 4 triggers; interval 10s\n",
		"target api: prod/api, strategy quick, dry-run\n",
		"  trigger errors: errorRate > 0.05 for 1m -> page (warning)\n",
		"  trigger conns: connections > 0.9 for 1m -> page (warning)\n",
	} {
		if !strings.Contains(sum, want) {
			t.Errorf("Summary() lacks %q:\n%s", want, sum)
		}
	}
}

func TestAnchorsAndMergeKeys(t *testing.T) {
	src := `global:
  prometheus: {url: "http://prometheus:9090"}
x-trigger: &rate
  kind: errorRate
  for: 2m
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers:
      - <<: *rate
        name: errors
        above: 0.05
`
	if got := loadErrors(t, src); len(got) != 1 || got[0] != "x-trigger: unknown field" {
		t.Fatalf("errors = %q, want only the unknown x-trigger", got)
	}
	src = strings.Replace(src, "x-trigger: &rate\n  kind: errorRate\n  for: 2m\n", "", 1)
	src = strings.Replace(src, "  prometheus:", "  templates:\n    errorRate: &rate {query: q}\n  prometheus:", 1)
	src = strings.Replace(src, "      - <<: *rate\n", "      - <<: [{kind: errorRate, for: 2m}]\n", 1)
	cfg, err := Load([]byte(src))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if tr := cfg.Targets[0].Triggers[0]; tr.Kind != KindErrorRate || tr.For.String() != "2m" || tr.Query != "q" {
		t.Errorf("merged trigger = %+v", tr)
	}
}

func TestAliasBombRefused(t *testing.T) {
	// 500 aliases of a target that holds 500 aliases of a trigger: a few
	// kilobytes of YAML, over a million nodes once expanded.
	var b strings.Builder
	b.WriteString("targets:\n  - &t {name: a, namespace: p, deployment: a, triggers: [&tr {name: x, kind: sql, above: 1}")
	b.WriteString(strings.Repeat(", *tr", 500))
	b.WriteString("]}\n")
	b.WriteString(strings.Repeat("  - *t\n", 500))
	got := loadErrors(t, b.String())
	want := "targets[29]: document too large (more than 200000 nodes after expanding aliases)"
	if len(got) != 1 || !strings.HasSuffix(got[0], "document too large (more than 200000 nodes after expanding aliases)") {
		t.Errorf("errors = %q, want %q", got, want)
	}
}

// Decoded list elements are released as the decoder goes; a list under an
// anchor is decoded again through its aliases and must be kept whole.
func TestAnchoredListsDecodedTwice(t *testing.T) {
	src := `global:
  prometheus: {url: "http://prometheus:9090"}
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers: &standard
      - {name: errors, kind: errorRate, above: 0.05}
      - {name: slow, kind: latencyP99, above: 5}
  - name: web
    namespace: prod
    deployment: web
    triggers: *standard
  - &worker
    name: worker
    namespace: prod
    deployment: worker
    triggers: [{name: errors, kind: errorRate, above: 0.1}]
  - <<: *worker
    name: worker-eu
    deployment: worker-eu
`
	cfg, err := Load([]byte(src))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	var got []string
	for _, tg := range cfg.Targets {
		for _, tr := range tg.Triggers {
			got = append(got, fmt.Sprintf("%s/%s>%g", tg.Name, tr.Name, *tr.Above))
		}
	}
	want := []string{"api/errors>0.05", "api/slow>5", "web/errors>0.05", "web/slow>5", "worker/errors>0.1", "worker-eu/errors>0.1"}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("triggers = %v, want %v", got, want)
	}
}
