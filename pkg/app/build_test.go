package app

import (
	"testing"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/preflight"
)

// The configured strategy decides the executor's plan; a quick rollback of
// a target with multiRegion is the runbook's Multi-Region Rollback.
func TestRollbackTargetPlan(t *testing.T) {
	hundred, two := intstr.FromString("100%"), intstr.FromInt32(2)
	tests := []struct {
		name      string
		rollback  string
		wantPlan  plan.Name
		wantSurge *intstr.IntOrString
	}{
		{name: "defaults", rollback: "{}", wantPlan: plan.Quick, wantSurge: &hundred},
		{name: "revert, Deployment's pace", rollback: `{strategy: revert, revertMaxSurge: ""}`, wantPlan: plan.Revert},
		{name: "revert, count", rollback: `{strategy: revert, revertMaxSurge: 2}`, wantPlan: plan.Revert, wantSurge: &two},
		{name: "quick with multiRegion", rollback: `{poolRecovery: {database: primary}, multiRegion: {secondaries: [eu], subscription: sub}}`, wantPlan: plan.MultiRegion, wantSurge: &hundred},
		{name: "revert with multiRegion", rollback: `{strategy: revert, poolRecovery: {database: primary}, multiRegion: {secondaries: [eu], subscription: sub}}`, wantPlan: plan.Revert, wantSurge: &hundred},
		{name: "full", rollback: `{strategy: full, database: {name: primary, migration: m, dumpPath: /d, forensicDir: /f}}`, wantPlan: plan.Full, wantSurge: &hundred},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			cfg, err := config.Load([]byte(`global:
  prometheus: {url: "http://prometheus:9090"}
  databases:
    - {name: primary, dsnEnv: PG_DSN}
    - {name: eu, dsnEnv: PG_EU_DSN}
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers: [{name: errors, kind: errorRate, above: 0.05}]
    rollback: ` + tt.rollback + "\n"))
			if err != nil {
				t.Fatal(err)
			}
			got := rollbackTarget(&cfg.Targets[0], nil, nil)
			if got.Strategy != tt.wantPlan {
				t.Errorf("plan = %s, want %s", got.Strategy, tt.wantPlan)
			}
			if g, w := got.RevertMaxSurge, tt.wantSurge; (g == nil) != (w == nil) || (g != nil && *g != *w) {
				t.Errorf("revertMaxSurge = %v, want %v", g, w)
			}
		})
	}
}

// The deploy preflight checks the rollback target of the plan the daemon
// would run: for every target of every shipped configuration, the plan
// preflight takes for a trigger's rollback must be the daemon's.
func TestPreflightPlanEqualsDaemonPlan(t *testing.T) {
	forShippedConfigs(t, func(t *testing.T, cfg *config.Config) {
		if len(cfg.Targets) == 0 {
			t.Fatal("the configuration has no targets")
		}
		for i := range cfg.Targets {
			tg := &cfg.Targets[i]
			daemon, ok := plan.For(plan.RequestRollback, rollbackTarget(tg, nil, nil).Strategy, false)
			if !ok {
				t.Fatalf("%s: the daemon runs no plan for a rollback", tg.Name)
			}
			if got := preflight.RollbackPlan(tg); got != daemon {
				t.Errorf("%s: preflight plans %s, the daemon runs %s", tg.Name, got, daemon)
			}
		}
	})
}
