package sandboxfixture

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// The sandbox's logical replication pair (pggit_pub on the primary,
// pggit_sub on the subscriber), as the database steps' integration tests
// use it: whether a write replicates, and a clean-up that leaves the pair
// replicating whatever a test did to it.

// HasMarker reports whether c holds the marker row WriteMarker wrote.
func HasMarker(ctx context.Context, c *pgx.Conn, marker string) (bool, error) {
	var ok bool
	err := c.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pggit.replication_conflict_log WHERE table_name = $1)", marker).Scan(&ok)
	return ok, err
}

// WriteMarker writes a row named marker, for HasMarker to find where it
// replicated to.
func WriteMarker(ctx context.Context, c *pgx.Conn, marker string) error {
	_, err := c.Exec(ctx, "INSERT INTO pggit.replication_conflict_log (table_name, conflict_type, resolved) VALUES ($1, 'rg-test', true)", marker)
	return err
}

// Replicates writes a marker row on the primary and waits for it on the
// subscriber.
func Replicates(ctx context.Context, pub, sub *pgx.Conn, marker string, within time.Duration) error {
	if err := WriteMarker(ctx, pub, marker); err != nil {
		return err
	}
	deadline := time.Now().Add(within)
	for time.Now().Before(deadline) {
		if ok, err := HasMarker(ctx, sub, marker); err != nil || ok {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
	return fmt.Errorf("marker %s did not replicate within %s", marker, within)
}

// Subscriber is what the clean-up needs of the subscriber's database.
type Subscriber interface {
	EnableSubscription(ctx context.Context, name string) error
	ResyncSubscription(ctx context.Context, name string) error
}

// KeepPairReplicating registers a clean-up that leaves the sandbox's
// subscription subName enabled, replicating and in sync, resyncing it when
// ENABLE is not enough, and removes the test's marker rows (those named
// marker and after).
func KeepPairReplicating(t *testing.T, env sandboxenv.Env, subscriber Subscriber, subName, marker string) {
	t.Helper()
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
		defer cancel()
		pub, err := pgx.Connect(ctx, env.Get(t, "PG_PRIMARY_DSN"))
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer pub.Close(ctx)
		sub, err := pgx.Connect(ctx, env.Get(t, "PG_SUBSCRIBER_DSN"))
		if err != nil {
			t.Errorf("cleanup: %v", err)
			return
		}
		defer sub.Close(ctx)
		defer func() {
			if _, err := pub.Exec(ctx, "DELETE FROM pggit.replication_conflict_log WHERE table_name LIKE $1", marker+"%"); err != nil {
				t.Errorf("cleanup: delete markers: %v", err)
			}
		}()
		if err := subscriber.EnableSubscription(ctx, subName); err != nil {
			t.Errorf("cleanup: enable %s: %v", subName, err)
		}
		if err := Replicates(ctx, pub, sub, marker+"cleanup", 10*time.Second); err == nil {
			return
		}
		t.Logf("cleanup: %s is not replicating; resyncing it", subName)
		if err := subscriber.ResyncSubscription(ctx, subName); err != nil {
			t.Errorf("cleanup: resync %s: %v (the sandbox pair needs `make sandbox-up` again)", subName, err)
			return
		}
		if err := Replicates(ctx, pub, sub, marker+"cleanup-resync", 30*time.Second); err != nil {
			t.Errorf("cleanup: %s not replicating after resync: %v", subName, err)
		}
	})
}
