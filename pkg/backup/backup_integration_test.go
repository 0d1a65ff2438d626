package backup_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/backup"
	"github.com/rollguard/rollguard/pkg/config/configtest"
	"github.com/rollguard/rollguard/pkg/database"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// writeConfig writes a config with one target whose rollback database has
// the given DSN, and returns its path.
func writeConfig(t *testing.T, dir, dsn, dumpPath string, verifyTables []string) string {
	t.Helper()
	vt := ""
	if len(verifyTables) > 0 {
		vt = "        verifyTables: [" + strings.Join(verifyTables, ", ") + "]\n"
	}
	yml := `
global:
  databases:
    - name: primary
      dsnFile: primary-dsn
      binDir: /usr/lib/postgresql/15/bin
targets:
` + configtest.DatabaseTarget("pggit-api", "phase8_analytics_dashboard", dumpPath, filepath.Join(dir, "forensics"), vt)
	return configtest.Write(t, dir, yml, map[string]string{"primary-dsn": dsn + "\n"})
}

func TestIntegrationBackupOfSandboxPrimary(t *testing.T) {
	env := sandboxenv.Load(t)
	dir := t.TempDir()
	dumps := filepath.Join(dir, "backups")
	if err := os.Mkdir(dumps, 0o700); err != nil {
		t.Fatal(err)
	}
	dump := filepath.Join(dumps, "pggit_pre-phase8.dump")
	tables := []string{"pggit.alert_delivery_queue", "pggit.webhook_health_metrics"}
	cfg := writeConfig(t, dir, env.Get(t, "PG_PRIMARY_DSN"), dump, tables)
	logger := zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel))
	ctx := context.Background()

	res, err := backup.Run(ctx, backup.Options{ConfigFile: cfg, Target: "pggit-api", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(dump)
	if err != nil || fi.Size() != res.SizeBytes || fi.Size() == 0 {
		t.Fatalf("dump %v size %d, result %d", err, fi.Size(), res.SizeBytes)
	}
	for _, tb := range tables {
		if !slices.Contains(res.Tables, tb) {
			t.Errorf("tables %v lack %s", res.Tables, tb)
		}
		if _, ok := res.RowCounts[tb]; !ok {
			t.Errorf("row counts %v lack %s", res.RowCounts, tb)
		}
	}
	rec, err := backup.ReadRecord(dump)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := backup.FileSHA256(dump)
	if rec.SHA256 != sum || rec.DatabaseName != "pggit" || rec.Database != "primary" || rec.DurationSeconds <= 0 {
		t.Errorf("record %+v (dump sha %s)", rec, sum)
	}
	// The published dump is what pg_restore reads in full.
	db, err := database.Open(ctx, database.Options{Name: "check", DSN: env.Get(t, "PG_PRIMARY_DSN")}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if listed, err := db.ListDump(ctx, dump); err != nil || !slices.Equal(listed, res.Tables) {
		t.Errorf("ListDump = %v, %v; record says %v", listed, err, res.Tables)
	}

	// A second backup replaces it and keeps the first as .prev.
	res2, err := backup.Run(ctx, backup.Options{ConfigFile: cfg, Target: "pggit-api", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if prevSum, _ := backup.FileSHA256(dump + ".prev"); prevSum != sum || res2.Previous != dump+".prev" {
		t.Errorf(".prev sha %s, want %s; previous %q", prevSum, sum, res2.Previous)
	}
	got := backup.Names(t, dumps)
	slices.Sort(got)
	want := []string{"pggit_pre-phase8.dump", "pggit_pre-phase8.dump.json", "pggit_pre-phase8.dump.prev", "pggit_pre-phase8.dump.prev.json"}
	if !slices.Equal(got, want) {
		t.Errorf("files %v, want %v (no staging left)", got, want)
	}
}

func TestIntegrationBackupBadInput(t *testing.T) {
	env := sandboxenv.Load(t)
	ctx := context.Background()
	good := env.Get(t, "PG_PRIMARY_DSN")
	refused := "postgres://postgres@127.0.0.1:1/pggit?sslmode=disable&connect_timeout=2"
	for _, tc := range []struct {
		name   string
		dsn    string
		dump   func(dir string) string
		target string
		want   string
	}{
		{"dump path is a directory", good, func(dir string) string { return dir }, "pggit-api", "is a directory, not a regular file"},
		{"directory missing", good, func(dir string) string { return filepath.Join(dir, "nope", "x.dump") }, "pggit-api", "nope"},
		{"database refuses", refused, func(dir string) string { return filepath.Join(dir, "x.dump") }, "pggit-api", "database primary"},
		{"unknown target", good, func(dir string) string { return filepath.Join(dir, "x.dump") }, "pggit-web", `target "pggit-web" is not in the config`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			dumps := t.TempDir()
			path := tc.dump(dumps)
			_, err := backup.Run(ctx, backup.Options{ConfigFile: writeConfig(t, dir, tc.dsn, path, nil), Target: tc.target, Timeout: time.Minute})
			if !errors.Is(err, backup.ErrUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrUsage containing %q", err, tc.want)
			}
			t.Logf("error: %v", err)
			if got := backup.Names(t, dumps); len(got) != 0 {
				t.Errorf("left in the dump directory: %v", got)
			}
		})
	}
}

// TestIntegrationFullRollbackRestoresBackup: backup, then the "deploy"
// applies its migration and changes data, then the executor's full
// rollback restores the database from the backup's dumpPath. It runs on a
// scratch database of its own: an in-place restore of the published pggit
// database would break the sandbox's logical replication.
func TestIntegrationFullRollbackRestoresBackup(t *testing.T) {
	env := sandboxenv.Load(t)
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	ctx := context.Background()
	logger := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	adminDSN := env.Get(t, "PG_PRIMARY_DSN")

	// Scratch database with the two tables the runbook looks at.
	_, scratchDSN := sandboxfixture.ScratchDatabase(t, adminDSN, "rg_backup_")
	sc := sandboxfixture.PgConnect(t, scratchDSN)
	sandboxfixture.PgExec(t, sc, `CREATE SCHEMA pggit;
CREATE TABLE pggit.schema_versions (name text PRIMARY KEY, version text, applied_at timestamptz DEFAULT now());
CREATE TABLE pggit.alert_delivery_queue (id serial PRIMARY KEY, payload text);
INSERT INTO pggit.schema_versions (name, version) VALUES ('phase7_webhook_health', '7.4.2');
INSERT INTO pggit.alert_delivery_queue (payload) SELECT 'p' || g FROM generate_series(1, 100) g;`)

	dir := t.TempDir()
	dump := filepath.Join(dir, "pre.dump")
	tables := []string{"pggit.alert_delivery_queue"}
	cfg := writeConfig(t, dir, scratchDSN, dump, tables)
	res, err := backup.Run(ctx, backup.Options{ConfigFile: cfg, Target: "pggit-api", Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	if res.RowCounts["pggit.alert_delivery_queue"] != 100 {
		t.Fatalf("backup counted %v", res.RowCounts)
	}

	// The bad deploy: a migration and corrupted data.
	sandboxfixture.PgExec(t, sc, `INSERT INTO pggit.schema_versions (name, version) VALUES ('phase8_analytics_dashboard', '8.0.0');
DELETE FROM pggit.alert_delivery_queue WHERE id > 40;`)
	sc.Close(ctx)

	// A Deployment of its own, rolled from v1.0.3 to v1.1.0.
	client, deps := kubeClient(t, env, logger)
	ns := "rg-backup-" + rand.String(6)
	newDeployment(t, client, deps, ns, "pggit-api:v1.0.3", "pggit-api:v1.1.0")

	// The executor's forensic dump does not create its directory.
	if err := os.Mkdir(filepath.Join(dir, "forensics"), 0o700); err != nil {
		t.Fatal(err)
	}
	db, err := database.Open(ctx, database.Options{Name: "primary", DSN: scratchDSN, BinDir: "/usr/lib/postgresql/15/bin"}, logger)
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	exec := rollback.NewExecutor(deps, client.CoreV1(), rollback.Options{
		PollInterval: 200 * time.Millisecond,
		Sleep:        func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
	}, logger)
	out, err := exec.Run(ctx, rollback.Request{Action: plan.Full, Reason: "backup integration test", Target: rollback.Target{
		Namespace: ns, Deployment: "pggit-api", Containers: []string{"api"},
		RampSteps: []int32{1}, RolloutTimeout: time.Minute, VerifyWindow: 5 * time.Second,
		Database: &rollback.DatabaseSettings{
			DB: db, Migration: "phase8_analytics_dashboard",
			PreDeployDump: dump, ForensicDir: filepath.Join(dir, "forensics"), Tables: tables,
		},
	}})
	if err != nil {
		t.Fatalf("full rollback: %v", err)
	}
	if out.State != rollback.RunSucceeded {
		t.Fatalf("state %s: %+v", out.State, out.Steps)
	}
	counts, err := db.CountRows(ctx, tables)
	if err != nil || counts["pggit.alert_delivery_queue"] != 100 {
		t.Fatalf("after restore rows %v, %v; want the backup's 100", counts, err)
	}
	if applied, err := db.MigrationApplied(ctx, "phase8_analytics_dashboard"); err != nil || applied {
		t.Fatalf("migration applied after restore: %v %v", applied, err)
	}
	if got := backup.Names(t, filepath.Join(dir, "forensics")); len(got) != 1 {
		t.Errorf("forensic dumps: %v", got)
	}
	// The backup itself is untouched by the rollback.
	if sum, _ := backup.FileSHA256(dump); sum != res.SHA256 {
		t.Errorf("dump changed: sha %s, recorded %s", sum, res.SHA256)
	}
}

func kubeClient(t *testing.T, env sandboxenv.Env, logger *zap.Logger) (kubernetes.Interface, *kube.Deployments) {
	t.Helper()
	client := sandboxfixture.Kube(t, env)
	return client, kube.New(client, kube.Options{PollInterval: 100 * time.Millisecond}, logger)
}

// newDeployment creates namespace ns with Deployment pggit-api rolled
// through images in order, each rollout complete.
func newDeployment(t *testing.T, client kubernetes.Interface, deps *kube.Deployments, ns string, images ...string) {
	t.Helper()
	sandboxfixture.Namespace(t, client, ns)
	sandboxfixture.CreateDeployment(t, client, sandboxfixture.Deployment(ns, "pggit-api", images[0], 1))
	sandboxfixture.RollThrough(t, client, deps, ns, "pggit-api", images[1:]...)
}
