package database

import (
	"context"
	"errors"
	"fmt"
	"path/filepath"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// eventually polls cond every 200 ms until it returns nil or timeout passes.
func eventually(t *testing.T, timeout time.Duration, what string, cond func() error) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		err := cond()
		if err == nil {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s: %v", what, timeout, err)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// pairInSync reports nil when every subscribed table is ready and has the
// primary's row count.
func pairInSync(ctx context.Context, pub, sub *pgx.Conn) error {
	var notReady int
	if err := sub.QueryRow(ctx, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'").Scan(&notReady); err != nil {
		return err
	}
	if notReady > 0 {
		return fmt.Errorf("%d tables not ready", notReady)
	}
	return sandboxfixture.CountsEqual(ctx, pub, sub)
}

// pair is the sandbox's primary and subscriber, for a test that touches
// their subscription: sandboxfixture.KeepPairReplicating puts it back when
// the test ends.
type pair struct {
	env                 sandboxenv.Env
	subName, prefix     string
	primary, subscriber *DB
	pub, sub            *pgx.Conn // superuser connections
}

// newPair opens the pair; the primary's DB uses the DSN of primaryDSN (the
// monitoring role is enough to read the lag: pg_monitor).
func newPair(t *testing.T, primaryDSN string) *pair {
	t.Helper()
	env := sandboxenv.Load(t)
	p := &pair{env: env, subName: env.Get(t, "PG_SUBSCRIPTION"), prefix: "rg-test-" + sandboxfixture.RandomHex(t, 4) + "-",
		primary:    openEnv(t, env, "primary", env.Get(t, primaryDSN)),
		subscriber: openEnv(t, env, "secondary", env.Get(t, "PG_SUBSCRIBER_DSN")),
		pub:        sandboxfixture.PgConnect(t, env.Get(t, "PG_PRIMARY_DSN")),
		sub:        sandboxfixture.PgConnect(t, env.Get(t, "PG_SUBSCRIBER_DSN"))}
	sandboxfixture.KeepPairReplicating(t, env, p.subscriber, p.subName, p.prefix)
	return p
}

func TestIntegrationDisableEnableLag(t *testing.T) {
	p := newPair(t, "PG_PRIMARY_MONITOR_DSN")
	ctx := context.Background()
	subName, prefix, primary, subscriber, pub, sub := p.subName, p.prefix, p.primary, p.subscriber, p.pub, p.sub

	if err := sandboxfixture.Replicates(ctx, pub, sub, prefix+"before", 10*time.Second); err != nil {
		t.Fatalf("pair not replicating before the test: %v", err)
	}
	eventually(t, 15*time.Second, "lag below 1s before disabling", func() error {
		lag, err := primary.StreamingLag(ctx)
		if err == nil && lag >= time.Second {
			return fmt.Errorf("lag %s", lag)
		}
		return err
	})

	if err := subscriber.DisableSubscription(ctx, subName); err != nil {
		t.Fatal(err)
	}
	if err := subscriber.DisableSubscription(ctx, subName); err != nil {
		t.Fatalf("disabling twice: %v", err)
	}
	if err := sandboxfixture.Replicates(ctx, pub, sub, prefix+"while-disabled", 2*time.Second); err == nil {
		t.Fatal("a row replicated to a disabled subscription")
	}
	// The walsender is gone and the slot is behind: no false zero.
	eventually(t, 10*time.Second, "lag unknown while disabled", func() error {
		lag, err := primary.StreamingLag(ctx)
		if errors.Is(err, ErrLagUnknown) {
			return nil
		}
		return fmt.Errorf("StreamingLag = %s, %v; want ErrLagUnknown", lag, err)
	})

	if err := subscriber.EnableSubscription(ctx, subName); err != nil {
		t.Fatal(err)
	}
	eventually(t, 15*time.Second, "lag below 1s after enabling", func() error {
		lag, err := primary.StreamingLag(ctx)
		if err == nil && lag >= time.Second {
			return fmt.Errorf("lag %s", lag)
		}
		return err
	})
	eventually(t, 10*time.Second, "row written while disabled arrives", func() error {
		ok, err := sandboxfixture.HasMarker(ctx, sub, prefix+"while-disabled")
		if err == nil && !ok {
			err = errors.New("not yet")
		}
		return err
	})
	// Idle and caught up: the lag columns go NULL and the lag is still 0.
	time.Sleep(2500 * time.Millisecond)
	var nulls int
	if err := pub.QueryRow(ctx, "SELECT count(*) FROM pg_stat_replication WHERE replay_lag IS NULL").Scan(&nulls); err != nil {
		t.Fatal(err)
	}
	lag, err := primary.StreamingLag(ctx)
	t.Logf("idle link: %d walsenders with NULL replay_lag, StreamingLag = %s, %v", nulls, lag, err)
	if err != nil || lag >= time.Second {
		t.Fatalf("idle caught-up StreamingLag = %s, %v; want < 1s", lag, err)
	}

	if err := subscriber.DisableSubscription(ctx, "no_such_sub"); !errors.Is(err, ErrSubscriptionNotFound) {
		t.Errorf("DisableSubscription(no_such_sub) = %v, want ErrSubscriptionNotFound", err)
	}
	if err := subscriber.DisableSubscription(ctx, `x"; DROP TABLE y; --`); !errors.Is(err, ErrInvalidIdentifier) {
		t.Errorf("DisableSubscription(injection) = %v, want ErrInvalidIdentifier", err)
	}
}

// An unrelated slot nobody consumes never catches up: the unscoped lag is
// unknown for as long as it exists, while the lag of the subscription's own
// slot is measured as usual.
func TestIntegrationStaleSlotScopedLag(t *testing.T) {
	p := newPair(t, "PG_PRIMARY_MONITOR_DSN")
	ctx := context.Background()
	subName, prefix, primary, subscriber, pub, sub := p.subName, p.prefix, p.primary, p.subscriber, p.pub, p.sub

	stale := sandboxfixture.StaleSlot(t, p.env.Get(t, "PG_PRIMARY_DSN"))
	slot, err := subscriber.SubscriptionSlot(ctx, subName)
	if err != nil {
		t.Fatal(err)
	}
	// A replicated write moves the WAL past the stale slot.
	if err := sandboxfixture.Replicates(ctx, pub, sub, prefix+"past-stale", 10*time.Second); err != nil {
		t.Fatalf("pair not replicating: %v", err)
	}
	if lag, err := primary.StreamingLag(ctx); !errors.Is(err, ErrLagUnknown) {
		t.Errorf("unscoped StreamingLag with slot %s = %s, %v; want ErrLagUnknown", stale, lag, err)
	}
	eventually(t, 15*time.Second, "lag of slot "+slot+" below 1s", func() error {
		lag, err := primary.StreamingLag(ctx, slot)
		if err == nil && lag >= time.Second {
			return fmt.Errorf("lag %s", lag)
		}
		return err
	})
	if _, err := primary.StreamingLag(ctx, "no_such_slot"); !errors.Is(err, ErrNoReplication) {
		t.Errorf("StreamingLag(no_such_slot) = %v, want ErrNoReplication", err)
	}
	if _, err := subscriber.SubscriptionSlot(ctx, "no_such_sub"); !errors.Is(err, ErrSubscriptionNotFound) {
		t.Errorf("SubscriptionSlot(no_such_sub) = %v, want ErrSubscriptionNotFound", err)
	}
}

// TestIntegrationResyncAfterInPlaceRestore reproduces the trap of an
// in-place restore over the publisher and repairs it with
// ResyncSubscription. It restores pggit on the primary to a dump taken
// seconds earlier, so other tests' writes in between are lost.
func TestIntegrationResyncAfterInPlaceRestore(t *testing.T) {
	p := newPair(t, "PG_PRIMARY_DSN")
	ctx := context.Background()
	subName, prefix, primary, subscriber, pub, sub := p.subName, p.prefix, p.primary, p.subscriber, p.pub, p.sub

	if err := sandboxfixture.Replicates(ctx, pub, sub, prefix+"before", 10*time.Second); err != nil {
		t.Fatalf("pair not replicating before the test: %v", err)
	}
	pre := filepath.Join(t.TempDir(), "pre.dump")
	if _, err := primary.Dump(ctx, pre); err != nil {
		t.Fatal(err)
	}
	if err := sandboxfixture.Replicates(ctx, pub, sub, prefix+"after-dump", 10*time.Second); err != nil {
		t.Fatal(err)
	}

	rctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	if err := primary.Restore(rctx, pre); err != nil {
		t.Fatal(err)
	}
	if ok, err := sandboxfixture.HasMarker(ctx, pub, prefix+"after-dump"); err != nil || ok {
		t.Fatalf("row written after the dump still on the primary after restore: %v, %v", ok, err)
	}
	// The trap: replication is broken, and the subscriber keeps the row the
	// restore removed.
	if err := sandboxfixture.Replicates(ctx, pub, sub, prefix+"after-restore", 3*time.Second); err == nil {
		t.Fatal("replication survived an in-place restore of the publisher; the documented trap did not happen")
	}
	if ok, _ := sandboxfixture.HasMarker(ctx, sub, prefix+"after-dump"); !ok {
		t.Fatal("subscriber lost the post-dump row without a resync")
	}

	if err := subscriber.ResyncSubscription(ctx, subName); err != nil {
		t.Fatal(err)
	}
	eventually(t, 30*time.Second, "pair in sync after resync", func() error { return pairInSync(ctx, pub, sub) })
	if ok, _ := sandboxfixture.HasMarker(ctx, sub, prefix+"after-dump"); ok {
		t.Error("subscriber still has the row the restore removed")
	}
	if ok, _ := sandboxfixture.HasMarker(ctx, sub, prefix+"after-restore"); !ok {
		t.Error("row written between restore and resync did not arrive")
	}
	if err := sandboxfixture.Replicates(ctx, pub, sub, prefix+"after-resync", 10*time.Second); err != nil {
		t.Fatal(err)
	}
	var slots int
	if err := pub.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE slot_name = $1", subName).Scan(&slots); err != nil || slots != 1 {
		t.Errorf("publisher has %d slots named %s, want 1 (%v)", slots, subName, err)
	}

	if err := subscriber.ResyncSubscription(ctx, "no_such_sub"); !errors.Is(err, ErrSubscriptionNotFound) {
		t.Errorf("ResyncSubscription(no_such_sub) = %v, want ErrSubscriptionNotFound", err)
	}
}

// TestIntegrationResyncRefusesEmptyPublication uses a scratch publisher and
// subscriber database of its own: a publication that lost its tables (what
// a restore with --no-publications leaves) must not make resync truncate
// the secondary.
func TestIntegrationResyncRefusesEmptyPublication(t *testing.T) {
	env := sandboxenv.Load(t)
	ctx := context.Background()
	pubDB, pubDSN := scratchDB(t, env)
	pc := sandboxfixture.PgConnect(t, pubDSN)
	sandboxfixture.PgExec(t, pc, "CREATE TABLE t (id int PRIMARY KEY)")
	sandboxfixture.PgExec(t, pc, "INSERT INTO t SELECT g FROM generate_series(1, 10) g")
	sandboxfixture.PgExec(t, pc, "CREATE PUBLICATION rg_pub FOR TABLE t")

	subSU := env.Get(t, "PG_SUBSCRIBER_DSN")
	admin := sandboxfixture.PgConnect(t, subSU)
	subDB := "rg_test_" + sandboxfixture.RandomHex(t, 4)
	sandboxfixture.PgExec(t, admin, "CREATE DATABASE "+subDB)
	subDSN := sandboxfixture.WithDatabase(t, subSU, subDB)
	sc := sandboxfixture.PgConnect(t, subDSN)
	t.Cleanup(func() {
		// DROP SUBSCRIPTION drops the slot on the publisher too.
		cctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		if _, err := sc.Exec(cctx, "DROP SUBSCRIPTION IF EXISTS rg_sub"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
		sc.Close(cctx)
		if _, err := admin.Exec(cctx, "DROP DATABASE IF EXISTS "+subDB+" WITH (FORCE)"); err != nil {
			t.Errorf("cleanup: %v", err)
		}
	})
	sandboxfixture.PgExec(t, sc, "CREATE TABLE t (id int PRIMARY KEY)")
	conninfo, err := pgx.ParseConfig(sandboxfixture.WithDatabase(t, env.Get(t, "PG_PRIMARY_DSN"), pubDB))
	if err != nil {
		t.Fatal(err)
	}
	sandboxfixture.PgExec(t, sc, fmt.Sprintf("CREATE SUBSCRIPTION rg_sub CONNECTION %s PUBLICATION rg_pub",
		quoteLiteral(fmt.Sprintf("host=%s port=%d user=%s dbname=%s", conninfo.Host, conninfo.Port, conninfo.User, pubDB))))
	eventually(t, 20*time.Second, "initial copy", func() error {
		if n := count(t, sc, "t"); n != 10 {
			return fmt.Errorf("%d rows", n)
		}
		return nil
	})

	sandboxfixture.PgExec(t, pc, "ALTER PUBLICATION rg_pub DROP TABLE t")
	subscriber := openEnv(t, env, "secondary", subDSN)
	if err := subscriber.ResyncSubscription(ctx, "rg_sub"); !errors.Is(err, ErrPublicationEmpty) {
		t.Fatalf("ResyncSubscription = %v, want ErrPublicationEmpty", err)
	}
	if n := count(t, sc, "t"); n != 10 {
		t.Errorf("secondary has %d rows after a refused resync, want 10", n)
	}
	var enabled bool
	if err := sc.QueryRow(ctx, "SELECT subenabled FROM pg_subscription WHERE subname = 'rg_sub'").Scan(&enabled); err != nil || !enabled {
		t.Errorf("subscription after a refused resync: enabled=%v, %v; want untouched", enabled, err)
	}
}
