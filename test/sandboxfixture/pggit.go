package sandboxfixture

import (
	"context"
	"errors"
	"fmt"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// Phase8 is the migration the fixtures' bad deploy applies.
const Phase8 = "phase8_analytics_dashboard"

// PggitTables are the tables the database plans count and restore.
var PggitTables = []string{"pggit.schema_versions", "pggit.alert_delivery_queue", "pggit.webhook_health_metrics", "pggit.replication_conflict_log"}

// PgConnect connects to dsn, waiting out "too many connections" (other
// tests hold the app's slots at times), and closes it when the test ends.
func PgConnect(t testing.TB, dsn string) *pgx.Conn {
	t.Helper()
	var c *pgx.Conn
	var err error
	deadline := time.Now().Add(30 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		c, err = pgx.Connect(ctx, dsn)
		cancel()
		var pgErr *pgconn.PgError
		if err == nil || !(errors.As(err, &pgErr) && pgErr.Code == "53300") || time.Now().After(deadline) {
			break
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("connect: %v", err) // never the DSN: it holds a password
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

// PgExec runs sql, failing the test on an error.
func PgExec(t testing.TB, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

// PgInt runs a query returning one integer.
func PgInt(t testing.TB, c *pgx.Conn, sql string, args ...any) int64 {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	var n int64
	if err := c.QueryRow(ctx, sql, args...).Scan(&n); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
	return n
}

// PgCounts counts the rows of every pggit table.
func PgCounts(t testing.TB, c *pgx.Conn) map[string]int64 {
	t.Helper()
	out := map[string]int64{}
	for _, tb := range PggitTables {
		out[tb] = PgInt(t, c, "SELECT count(*) FROM "+tb)
	}
	return out
}

// CountsEqual compares the pggit tables' row counts on two servers.
func CountsEqual(ctx context.Context, a, b *pgx.Conn) error {
	for _, tb := range PggitTables {
		var x, y int64
		if err := a.QueryRow(ctx, "SELECT count(*) FROM "+tb).Scan(&x); err != nil {
			return err
		}
		if err := b.QueryRow(ctx, "SELECT count(*) FROM "+tb).Scan(&y); err != nil {
			return err
		}
		if x != y {
			return fmt.Errorf("%s: primary %d rows, secondary %d", tb, x, y)
		}
	}
	return nil
}

// ApplyFixture runs a test/fixtures SQL file (psql meta-commands dropped).
func ApplyFixture(t testing.TB, c *pgx.Conn, file string) {
	t.Helper()
	_, self, _, _ := runtime.Caller(0)
	b, err := os.ReadFile(filepath.Join(filepath.Dir(self), "..", "fixtures", file))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	for _, l := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(strings.TrimSpace(l), `\`) {
			lines = append(lines, l)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, err := c.PgConn().Exec(ctx, strings.Join(lines, "\n")).ReadAll(); err != nil {
		t.Fatalf("fixture %s: %v", file, err)
	}
}

// Pggit is a scratch copy of the pggit database on the primary in its
// pre-deploy state: schema and seed rows, migration Phase8 not applied.
type Pggit struct {
	Name, DSN string
	Conn      *pgx.Conn
	env       sandboxenv.Env
}

// NewPggit creates the scratch copy (dropped when the test ends).
func NewPggit(t testing.TB, env sandboxenv.Env, prefix string) *Pggit {
	t.Helper()
	name, dsn := ScratchDatabase(t, env.Get(t, "PG_PRIMARY_DSN"), prefix)
	c := PgConnect(t, dsn)
	ApplyFixture(t, c, "pggit-schema.sql")
	ApplyFixture(t, c, "pggit-seed.sql")
	PgExec(t, c, "DELETE FROM pggit.schema_versions WHERE name = $1", Phase8)
	return &Pggit{Name: name, DSN: dsn, Conn: c, env: env}
}

// Deploy plays the bad deploy: the migration lands and the new version
// writes rows a rollback must take back.
func (p *Pggit) Deploy(t testing.TB, rows int) {
	t.Helper()
	PgExec(t, p.Conn, "INSERT INTO pggit.schema_versions (name, version) VALUES ($1, '8.0.0')", Phase8)
	PgExec(t, p.Conn, "INSERT INTO pggit.alert_delivery_queue (delivery_status, payload) SELECT 'after-dump', jsonb_build_object('n', g) FROM generate_series(1, $1::int) g", rows)
}

// MigrationApplied reports whether Phase8 is in schema_versions.
func (p *Pggit) MigrationApplied(t testing.TB) bool {
	t.Helper()
	return PgInt(t, p.Conn, "SELECT count(*) FROM pggit.schema_versions WHERE name = $1", Phase8) == 1
}

// Dump takes the pre-deploy dump (pg_dump -Fc) into path.
func (p *Pggit) Dump(t testing.TB, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(p.env.Get(t, "PG_BIN_DIR"), "pg_dump"), "--format=custom", "--file="+path, "--dbname="+p.DSN)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pg_dump %s: %v\n%s", p.Name, err, out)
	}
}

// Replica is a scratch subscriber of a Pggit on the sandbox's second
// server, through a publication and a subscription of its own.
type Replica struct {
	Name, DSN    string
	Subscription string
	Conn         *pgx.Conn
}

// Replicate publishes p's tables and subscribes a scratch database on the
// subscriber server to them, waiting for the initial copy. The
// subscription and its slot are dropped when the test ends.
func (p *Pggit) Replicate(t testing.TB) *Replica {
	t.Helper()
	pub := "rg_pub_" + rand.String(6)
	sub := "rg_sub_" + rand.String(6)
	PgExec(t, p.Conn, "CREATE PUBLICATION "+pub+" FOR TABLE "+strings.Join(PggitTables, ", "))
	name, dsn := ScratchDatabase(t, p.env.Get(t, "PG_SUBSCRIBER_DSN"), "rg_sub_")
	sc := PgConnect(t, dsn)
	ApplyFixture(t, sc, "pggit-schema.sql")
	cfg, err := pgx.ParseConfig(p.env.Get(t, "PG_PRIMARY_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	conninfo := fmt.Sprintf("host=%s port=%d user=%s dbname=%s", cfg.Host, cfg.Port, cfg.User, p.Name)
	if cfg.Password != "" {
		conninfo += " password=" + cfg.Password
	}
	PgExec(t, sc, "CREATE SUBSCRIPTION "+sub+" CONNECTION '"+strings.ReplaceAll(conninfo, "'", "''")+"' PUBLICATION "+pub)
	r := &Replica{Name: name, DSN: dsn, Subscription: sub, Conn: sc}
	t.Cleanup(func() { p.dropSubscription(t, r) })
	WaitFor(t, "initial copy to the replica", 30*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		if err := CountsEqual(ctx, p.Conn, sc); err != nil {
			return false, err.Error(), nil
		}
		return true, "", nil
	})
	return r
}

// Enabled reports whether the replica's subscription is enabled.
func (r *Replica) Enabled(t testing.TB) bool {
	t.Helper()
	return PgInt(t, r.Conn, "SELECT count(*) FROM pg_subscription WHERE subname = $1 AND subenabled", r.Subscription) == 1
}

// dropSubscription detaches the subscription from its slot before
// dropping it (the primary may already have lost the slot to a resync),
// then drops the slots left on the primary, table-sync ones included.
func (p *Pggit) dropSubscription(t testing.TB, r *Replica) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	sc, err := pgx.Connect(ctx, r.DSN)
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer sc.Close(ctx)
	var slot string
	_ = sc.QueryRow(ctx, "SELECT coalesce(subslotname, '') FROM pg_subscription WHERE subname = $1", r.Subscription).Scan(&slot)
	for _, q := range []string{"ALTER SUBSCRIPTION " + r.Subscription + " DISABLE", "ALTER SUBSCRIPTION " + r.Subscription + " SET (slot_name = NONE)", "DROP SUBSCRIPTION IF EXISTS " + r.Subscription} {
		if _, err := sc.Exec(ctx, q); err != nil && !strings.Contains(err.Error(), "does not exist") {
			t.Errorf("cleanup: %s: %v", q, err)
		}
	}
	pc, err := pgx.Connect(ctx, p.env.Get(t, "PG_PRIMARY_DSN"))
	if err != nil {
		t.Errorf("cleanup: %v", err)
		return
	}
	defer pc.Close(ctx)
	u, _ := url.Parse(p.DSN)
	db := strings.TrimPrefix(u.Path, "/")
	deadline := time.Now().Add(10 * time.Second)
	for {
		// A walsender may hold the slot for a moment after the drop.
		_, err := pc.Exec(ctx, "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE database = $1 AND NOT active", db)
		var left int64
		_ = pc.QueryRow(ctx, "SELECT count(*) FROM pg_replication_slots WHERE database = $1", db).Scan(&left)
		if err == nil && left == 0 || time.Now().After(deadline) {
			if left != 0 {
				t.Errorf("cleanup: %d replication slots of %s left (%v)", left, db, err)
			}
			return
		}
		time.Sleep(200 * time.Millisecond)
	}
}
