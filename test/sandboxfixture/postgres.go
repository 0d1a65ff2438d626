package sandboxfixture

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"k8s.io/apimachinery/pkg/util/rand"
)

// WithDatabase is URL DSN dsn naming database db instead.
func WithDatabase(t testing.TB, dsn, db string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		// The DSN holds a password: name the failure, not the DSN.
		t.Fatalf("parse DSN: %v", err)
	}
	u.Path = "/" + db
	return u.String()
}

// ScratchDatabase creates an empty database named prefix plus a random
// suffix on the server of superDSN (a superuser, so the sandbox's
// reserved connections apply) and drops it, FORCE, when the test ends, so
// destructive tests do not touch pggit.
func ScratchDatabase(t testing.TB, superDSN, prefix string) (name, dsn string) {
	t.Helper()
	name = prefix + rand.String(8)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	admin, err := pgx.Connect(ctx, superDSN)
	if err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	defer admin.Close(context.Background())
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+name); err != nil {
		t.Fatalf("create database %s: %v", name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, superDSN)
		if err != nil {
			t.Errorf("cleanup: drop database %s: %v", name, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "DROP DATABASE IF EXISTS "+name+" WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: drop database %s: %v", name, err)
		}
	})
	return name, WithDatabase(t, superDSN, name)
}

// StaleSlot creates a logical replication slot nobody consumes on the
// server of superDSN (what a decommissioned subscriber leaves behind) and
// drops it when the test ends, so the WAL it holds and its lag do not leak
// into other tests. It returns the slot's name.
func StaleSlot(t testing.TB, superDSN string) string {
	t.Helper()
	slot := "rg_stale_" + rand.String(6)
	ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
	defer cancel()
	c, err := pgx.Connect(ctx, superDSN)
	if err != nil {
		t.Fatalf("stale slot: connect: %v", err)
	}
	defer c.Close(ctx)
	if _, err := c.Exec(ctx, "SELECT pg_create_logical_replication_slot($1, 'pgoutput')", slot); err != nil {
		t.Fatalf("stale slot: create %s: %v", slot, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		c, err := pgx.Connect(ctx, superDSN)
		if err != nil {
			t.Errorf("stale slot: connect to drop %s: %v", slot, err)
			return
		}
		defer c.Close(ctx)
		if _, err := c.Exec(ctx, "SELECT pg_drop_replication_slot($1)", slot); err != nil {
			t.Errorf("stale slot: drop %s: %v", slot, err)
		}
	})
	return slot
}
