package config

import (
	"fmt"
	"strings"
	"testing"
)

// One rollguard can guard a whole cluster: a literal 10,000-target file
// (about half a million YAML nodes) loads, while alias bombs stay refused
// (TestAliasBombRefused).
func TestLoadTenThousandTargets(t *testing.T) {
	if testing.Short() {
		t.Skip("large document")
	}
	cfg, err := Load([]byte(largeConfig(10000)))
	if err != nil {
		t.Fatalf("load: %v", err)
	}
	if len(cfg.Targets) != 10000 || len(cfg.Targets[9999].Triggers) != 4 {
		t.Fatalf("loaded %d targets", len(cfg.Targets))
	}
}

// largeConfig writes n targets of the 4 runbook triggers each, literally
// (no anchors), as a generator would.
func largeConfig(n int) string {
	var b strings.Builder
	b.WriteString("global:\n  prometheus: {url: http://prometheus:9090}\n  databases:\n    - {name: primary, dsnEnv: PG_DSN}\ntargets:\n")
	for i := range n {
		fmt.Fprintf(&b, `  - name: app-%d
    namespace: ns-%d
    deployment: app-%d
    triggers:
      - {name: error-rate, kind: errorRate, above: 0.05, minRate: 1, action: rollback}
      - {name: latency-p99, kind: latencyP99, above: 5, action: rollback}
      - {name: pool, kind: connections, database: primary, above: 0.95, onError: breach, action: page}
      - {name: lag, kind: replicationLag, database: primary, above: 30, action: page, match: {slot: sub_from_primary}}
`, i, i%100, i)
	}
	return b.String()
}
