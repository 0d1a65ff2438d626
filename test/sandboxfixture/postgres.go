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
