package main

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// benchConfigs writes every config the bench gives rollguard into dir and
// returns their paths by name.
func benchConfigs(t *testing.T, dir string) map[string]string {
	t.Helper()
	env := sandboxenv.Env{"KUBECONFIG": "/k/kubeconfig", "PROMETHEUS_URL": "http://127.0.0.1:9090", "SIM_URL": "http://127.0.0.1:8090", "PG_BIN_DIR": "/pg/bin"}
	t.Chdir("../..") // the production config is read from the repository's root
	prod, err := readProduction()
	if err != nil {
		t.Fatal(err)
	}
	paths := map[string]string{}
	sub := func(name string) string {
		d := filepath.Join(dir, name)
		if err := os.MkdirAll(d, 0o755); err != nil {
			t.Fatal(err)
		}
		return d
	}
	if paths["latency"], _, err = writeDaemonConfig(sub("latency"), env, "bench-latency", 18001, latencyConfig{window: 30 * time.Second, interval: time.Second}); err != nil {
		t.Fatal(err)
	}
	if paths["rollback"], _, err = writeRollbackConfig(sub("rollback"), env, "bench-rollback", 18002, 20*time.Second, "100%"); err != nil {
		t.Fatal(err)
	}
	if paths["anchor"], _, err = writeAnchorConfig(sub("anchor"), env, prod, "bench-anchor", "http://127.0.0.1:19090", 18003, anchorIntervals[len(anchorIntervals)-1]); err != nil {
		t.Fatal(err)
	}
	d := &dbEnv{env: env, primaryPort: "15432", secPort: "15433"}
	for _, plan := range []string{planFull, planMulti} {
		if paths["database "+plan], err = writeDatabaseConfig(sub(plan), d, plan, "bench-db", "/dumps/pre.dump", 10*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	return paths
}

// TestConfigsLoad: rollguard takes every config the bench writes, with the
// bench's Deployment as its one target.
func TestConfigsLoad(t *testing.T) {
	for name, path := range benchConfigs(t, t.TempDir()) {
		t.Run(name, func(t *testing.T) {
			cfg, err := config.LoadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if len(cfg.Targets) != 1 || cfg.Targets[0].Namespace != benchNamespace {
				t.Errorf("targets %+v, want one in %s", cfg.Targets, benchNamespace)
			}
		})
	}
}
