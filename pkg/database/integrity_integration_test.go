package database

import (
	"context"
	"errors"
	"strconv"
	"testing"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// The runbook's data integrity check reads the same figures as a human
// with psql would, in one snapshot; a database without the pggit tables
// says so instead of reporting zeros.
func TestIntegrationIntegrity(t *testing.T) {
	env := sandboxenv.Load(t)
	admin := sandboxfixture.PgConnect(t, env.Get(t, "PG_PRIMARY_DSN"))
	ctx := context.Background()
	var wantQueue, wantConflicts int64
	if err := admin.QueryRow(ctx, `SELECT (SELECT count(*) FROM pggit.alert_delivery_queue),
	       (SELECT count(*) FROM pggit.replication_conflict_log WHERE NOT resolved)`).Scan(&wantQueue, &wantConflicts); err != nil {
		t.Fatal(err)
	}
	d := openEnv(t, env, "primary", env.Get(t, "PG_PRIMARY_DSN"))
	got, err := d.Integrity(ctx)
	if err != nil {
		t.Fatal(err)
	}
	// Other tests may write to the queue meanwhile: it can only grow.
	if got.AlertDeliveryQueue < wantQueue || got.UnresolvedConflicts != wantConflicts {
		t.Fatalf("integrity = %+v, want queue ≥ %d and %d unresolved conflicts", got, wantQueue, wantConflicts)
	}
	found := false
	for _, v := range got.LatestSchemaVersions {
		if v == "phase8_analytics_dashboard 8.0.0" {
			found = true
		}
	}
	if !found {
		t.Fatalf("latest schema versions %q lack the fixture's phase8_analytics_dashboard 8.0.0", got.LatestSchemaVersions)
	}

	scratch := "rg_integrity_" + sandboxfixture.RandomHex(t, 4)
	sandboxfixture.PgExec(t, admin, "CREATE DATABASE "+scratch)
	t.Cleanup(func() { sandboxfixture.PgExec(t, admin, "DROP DATABASE IF EXISTS "+scratch+" WITH (FORCE)") })
	cfg := admin.Config()
	empty := openEnv(t, env, "scratch", "postgres://"+cfg.User+"@"+cfg.Host+":"+strconv.Itoa(int(cfg.Port))+"/"+scratch+"?sslmode=disable")
	if _, err := empty.Integrity(ctx); !errors.Is(err, ErrNoIntegrityTables) {
		t.Fatalf("integrity of a database without pggit tables: err = %v, want ErrNoIntegrityTables", err)
	}
}
