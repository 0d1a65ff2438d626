package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net/url"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

func newIntegrationSource(t *testing.T, dsn string, opts Options) *Source {
	t.Helper()
	opts.Name = "sandbox"
	opts.DSN = dsn
	s, err := New(opts, zaptest.NewLogger(t, zaptest.Level(zap.InfoLevel)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	t.Cleanup(s.Close)
	return s
}

func query(t *testing.T, s *Source, q string) []source.Series {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	got, err := s.Query(ctx, q, time.Now())
	if err != nil {
		t.Fatalf("Query(%q): %v", q, err)
	}
	return got
}

func find(series []source.Series, labels map[string]string) (float64, bool) {
	for _, s := range series {
		if len(s.Labels) != len(labels) {
			continue
		}
		match := true
		for k, v := range labels {
			if s.Labels[k] != v {
				match = false
			}
		}
		if match {
			return s.Value, true
		}
	}
	return 0, false
}

func connect(t *testing.T, dsn string, params map[string]string) *pgx.Conn {
	t.Helper()
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	for k, v := range params {
		cfg.RuntimeParams[k] = v
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	c, err := pgx.ConnectConfig(ctx, cfg)
	if err != nil {
		t.Fatalf("connect: %v", err)
	}
	t.Cleanup(func() { c.Close(context.Background()) })
	return c
}

func exec(t *testing.T, c *pgx.Conn, sql string, args ...any) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if _, err := c.Exec(ctx, sql, args...); err != nil {
		t.Fatalf("%s: %v", sql, err)
	}
}

func TestIntegrationCustomSQL(t *testing.T) {
	env := sandboxenv.Load(t)
	s := newIntegrationSource(t, env.Get(t, "PG_PRIMARY_MONITOR_DSN"), Options{StatementTimeout: 500 * time.Millisecond})

	t.Run("labels and value", func(t *testing.T) {
		got := query(t, s, `SELECT k, 7::int AS ignored, v FROM (VALUES ('a', 1.5::float8), ('b', NULL), ('c', 'NaN'::float8), (NULL, 2)) AS t(k, v)`)
		want := []source.Series{
			{Labels: map[string]string{"k": "a"}, Value: 1.5},
			{Labels: map[string]string{"k": ""}, Value: 2},
		}
		if fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("got %v, want %v", got, want)
		}
	})
	t.Run("name labels, bigint and numeric values", func(t *testing.T) {
		got := query(t, s, `SELECT datname, count(*) FROM pg_stat_activity WHERE datname = current_database() GROUP BY 1`)
		if v, ok := find(got, map[string]string{"datname": "pggit"}); !ok || v < 1 {
			t.Errorf("got %v, want datname=pggit ≥ 1", got)
		}
		got = query(t, s, `SELECT 12.25::numeric`)
		if len(got) != 1 || got[0].Value != 12.25 {
			t.Errorf("numeric: got %v", got)
		}
		got = query(t, s, `SELECT interval '1 minute 30 seconds'`)
		if len(got) != 1 || got[0].Value != 90 {
			t.Errorf("interval: got %v", got)
		}
	})
	t.Run("pggit table", func(t *testing.T) {
		got := query(t, s, `SELECT count(*) FROM pggit.alert_delivery_queue`)
		if len(got) != 1 || got[0].Value < 0 {
			t.Errorf("got %v", got)
		}
	})
	t.Run("no rows", func(t *testing.T) {
		if got := query(t, s, `SELECT 1 WHERE false`); len(got) != 0 {
			t.Errorf("got %v, want empty", got)
		}
	})
	errs := []struct {
		name, sql string
		want      error
	}{
		{"syntax error", `SELEC 1`, source.ErrBadQuery},
		{"undefined table", `SELECT count(*) FROM no_such_table`, source.ErrBadQuery},
		{"no numeric column", `SELECT 'x'::text`, source.ErrBadQuery},
		{"statement timeout", `SELECT 1 FROM pg_sleep(3)`, source.ErrTimeout},
	}
	for _, tc := range errs {
		t.Run(tc.name, func(t *testing.T) {
			_, err := s.Query(context.Background(), tc.sql, time.Now())
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
		})
	}
	t.Run("source still usable after errors", func(t *testing.T) {
		if got := query(t, s, `SELECT 1`); len(got) != 1 || got[0].Value != 1 {
			t.Errorf("got %v", got)
		}
	})
}

func TestIntegrationConnections(t *testing.T) {
	env := sandboxenv.Load(t)
	maxConns, err := strconv.ParseFloat(env.Get(t, "PG_MAX_CONNECTIONS"), 64)
	if err != nil {
		t.Fatal(err)
	}
	// The denominator is the slots an ordinary role can use: the sandbox
	// keeps the default 3 superuser_reserved_connections.
	maxConns -= 3
	s := newIntegrationSource(t, env.Get(t, "PG_PRIMARY_MONITOR_DSN"), Options{})
	// A name of our own, so the simulator's pggit-api sessions do not
	// change the count under test.
	app := fmt.Sprintf("rollguard-srctest-%d", os.Getpid())

	before := query(t, s, BuiltinConnections)
	if v, ok := find(before, map[string]string{"application_name": "rollguard"}); !ok || v < 1/maxConns {
		t.Errorf("own session not counted: %v", before)
	}
	if _, ok := find(before, map[string]string{"application_name": app}); ok {
		t.Fatalf("%s already connected: %v", app, before)
	}
	total0, _ := find(before, map[string]string{})

	const held = 3
	for range held {
		connect(t, env.Get(t, "PG_PRIMARY_APP_DSN"), map[string]string{"application_name": app})
	}
	after := query(t, s, BuiltinConnections)
	v, ok := find(after, map[string]string{"application_name": app})
	if !ok || math.Abs(v-held/maxConns) > 1e-9 {
		t.Errorf("application_name=%s: %v (found %v), want %v", app, v, ok, held/maxConns)
	}
	// Other engineers' sessions come and go; the total can only be
	// checked loosely, but it must include ours.
	total1, _ := find(after, map[string]string{})
	if total1 < held/maxConns || total1 > 1 {
		t.Errorf("total %v (before %v), want ≥ %v", total1, total0, held/maxConns)
	}
	if idle, _ := find(after, map[string]string{"state": "idle"}); idle < held/maxConns {
		t.Errorf("state=idle %v, want ≥ %v", idle, held/maxConns)
	}
	var sumApps float64
	for _, ser := range after {
		if _, ok := ser.Labels["application_name"]; ok {
			sumApps += ser.Value
		}
	}
	if math.Abs(sumApps-total1) > 1e-9 {
		t.Errorf("per-application series sum to %v, total is %v", sumApps, total1)
	}
}

// TestIntegrationTooManyConnections gets a real SQLSTATE 53300 without
// exhausting the shared server: a throwaway role with CONNECTION LIMIT 1
// is refused with the same code as a full server. That is rollguard's own
// role at its limit, which says nothing about the application: never
// ErrTooManyConnections. A database at its CONNECTION LIMIT, which the
// application's sessions fill, is.
func TestIntegrationTooManyConnections(t *testing.T) {
	env := sandboxenv.Load(t)
	super := connect(t, env.Get(t, "PG_PRIMARY_DSN"), nil)
	role := fmt.Sprintf("rollguard_srctest_%d", os.Getpid())
	const password = "srctest-pw"
	exec(t, super, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s' CONNECTION LIMIT 1`, role, password))
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = super.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE usename = $1`, role)
		_, _ = super.Exec(ctx, "DROP ROLE IF EXISTS "+role)
	})

	u, err := url.Parse(env.Get(t, "PG_PRIMARY_DSN"))
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(role, password)
	dsn := u.String()

	s := newIntegrationSource(t, dsn, Options{})
	// The first query opens the one allowed connection and keeps it.
	if got := query(t, s, `SELECT 1`); len(got) != 1 {
		t.Fatalf("got %v", got)
	}
	s.Close()
	// The server ends a closed connection's backend asynchronously: until
	// it is gone the slot is still the role's.
	deadline := time.Now().Add(10 * time.Second)
	for {
		var n int
		if err := super.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_activity WHERE usename = $1`, role).Scan(&n); err != nil {
			t.Fatal(err)
		}
		if n == 0 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("%d backends of %s still running after the source closed", n, role)
		}
		time.Sleep(20 * time.Millisecond)
	}

	connect(t, dsn, nil) // hold the only slot
	s2 := newIntegrationSource(t, dsn, Options{})
	_, err = s2.Query(context.Background(), BuiltinConnections, time.Now())
	if !errors.Is(err, source.ErrRoleConnectionLimit) || !errors.Is(err, source.ErrUnreachable) || errors.Is(err, source.ErrTooManyConnections) {
		t.Fatalf("err = %v, want ErrRoleConnectionLimit (unreachable), not ErrTooManyConnections", err)
	}
	t.Logf("own role refused as expected: %v", err)

	// The database at its limit: a second role (the application's) holds
	// the only connection the database allows.
	db := fmt.Sprintf("rollguard_srctest_db_%d", os.Getpid())
	exec(t, super, fmt.Sprintf(`CREATE DATABASE %s CONNECTION LIMIT 1`, db))
	t.Cleanup(func() {
		ctx := context.Background()
		_, _ = super.Exec(ctx, `SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = $1`, db)
		_, _ = super.Exec(ctx, "DROP DATABASE IF EXISTS "+db)
	})
	app := role + "_app"
	exec(t, super, fmt.Sprintf(`CREATE ROLE %s LOGIN PASSWORD '%s'`, app, password))
	t.Cleanup(func() { _, _ = super.Exec(context.Background(), "DROP ROLE IF EXISTS "+app) })
	exec(t, super, fmt.Sprintf(`ALTER ROLE %s CONNECTION LIMIT -1`, role))
	u.Path = "/" + db
	u.User = url.UserPassword(app, password)
	connect(t, u.String(), nil) // the application takes the slot
	u.User = url.UserPassword(role, password)
	s3 := newIntegrationSource(t, u.String(), Options{})
	_, err = s3.Query(context.Background(), BuiltinConnections, time.Now())
	if !errors.Is(err, source.ErrTooManyConnections) {
		t.Fatalf("err = %v, want ErrTooManyConnections", err)
	}
	t.Logf("database full, as expected: %v", err)
}

func TestIntegrationReplicationLag(t *testing.T) {
	env := sandboxenv.Load(t)
	slot := env.Get(t, "PG_SUBSCRIPTION") // the subscription's slot has its name
	s := newIntegrationSource(t, env.Get(t, "PG_PRIMARY_MONITOR_DSN"), Options{})
	primary := connect(t, env.Get(t, "PG_PRIMARY_DSN"), nil)
	subscriber := connect(t, env.Get(t, "PG_SUBSCRIBER_DSN"), nil)

	lag := func() float64 {
		t.Helper()
		got := query(t, s, BuiltinReplicationLag)
		v, ok := find(got, map[string]string{"slot": slot})
		if !ok {
			t.Fatalf("no series for slot %s: %v", slot, got)
		}
		overall, ok := find(got, map[string]string{})
		if !ok || overall < v {
			t.Fatalf("overall %v (found %v) below slot lag %v", overall, ok, v)
		}
		return v
	}
	// WAL that no subscriber applies: a non-transactional logical
	// message, which pgoutput skips. It moves the primary's position as a
	// real write would, without touching any table.
	write := func() { exec(t, primary, `SELECT pg_logical_emit_message(false, 'rollguard-srctest', 'x')`) }

	// An idle (or lightly used) caught-up link reads about 0, even though
	// the lag columns go NULL.
	waitFor(t, 30*time.Second, "caught-up link under 1s", func() bool { return lag() < 1 })

	exec(t, subscriber, fmt.Sprintf(`ALTER SUBSCRIPTION %s DISABLE`, slot))
	t.Cleanup(func() {
		if _, err := subscriber.Exec(context.Background(), fmt.Sprintf(`ALTER SUBSCRIPTION %s ENABLE`, slot)); err != nil {
			t.Errorf("re-enable subscription %s: %v", slot, err)
		}
	})
	// Wait until the walsender is gone: its row leaves pg_stat_replication.
	waitFor(t, 15*time.Second, "walsender to exit", func() bool {
		var n int
		if err := primary.QueryRow(context.Background(), `SELECT count(*) FROM pg_stat_replication WHERE application_name = $1`, slot).Scan(&n); err != nil {
			t.Fatal(err)
		}
		return n == 0
	})

	var reads []float64
	for range 4 {
		write()
		reads = append(reads, lag())
		time.Sleep(time.Second)
	}
	t.Logf("lag while disabled: %v", reads)
	for i := 1; i < len(reads); i++ {
		if reads[i] <= reads[i-1] {
			t.Errorf("lag did not grow: %v", reads)
			break
		}
	}
	if last := reads[len(reads)-1]; last < 2.5 {
		t.Errorf("lag after about 3s disabled reads %v, want ≥ 2.5", last)
	}

	exec(t, subscriber, fmt.Sprintf(`ALTER SUBSCRIPTION %s ENABLE`, slot))
	waitFor(t, 30*time.Second, "lag back under 1s after ENABLE", func() bool { return lag() < 1 })
}

func waitFor(t *testing.T, timeout time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(timeout)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %s waiting for %s", timeout, what)
		}
		time.Sleep(250 * time.Millisecond)
	}
}
