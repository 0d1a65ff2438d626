package pggitsim

import (
	"context"
	"encoding/json"
	"net/http/httptest"
	"net/url"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// These tests share the sandbox's primary with other packages' tests, so
// they never exhaust it: sessions are told apart by a unique
// application_name, and the refusal is provoked with a throwaway role's
// CONNECTION LIMIT rather than max_connections.

// withDSN returns dsn with the given user (when non-empty) and
// application_name.
func withDSN(t *testing.T, dsn, user, password, appName string) string {
	t.Helper()
	u, err := url.Parse(dsn)
	if err != nil {
		t.Fatalf("parse DSN: %v", err)
	}
	if user != "" {
		u.User = url.UserPassword(user, password)
	}
	q := u.Query()
	q.Set("application_name", appName)
	u.RawQuery = q.Encode()
	return u.String()
}

func superuser(t *testing.T, env sandboxenv.Env) *pgx.Conn {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := pgx.Connect(ctx, env.Get(t, "PG_PRIMARY_DSN"))
	if err != nil {
		t.Fatalf("connect as superuser: %v", err)
	}
	t.Cleanup(func() { closeConn(conn) })
	return conn
}

// sessions counts the sessions of appName by state.
func sessions(t *testing.T, su *pgx.Conn, appName string) map[string]int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	rows, err := su.Query(ctx, `SELECT coalesce(state, ''), count(*) FROM pg_stat_activity
		WHERE application_name = $1 AND backend_type = 'client backend' GROUP BY 1`, appName)
	if err != nil {
		t.Fatalf("query pg_stat_activity: %v", err)
	}
	out := map[string]int{}
	for rows.Next() {
		var state string
		var n int
		if err := rows.Scan(&state, &n); err != nil {
			t.Fatal(err)
		}
		out[state] = n
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	return out
}

// waitSessions polls: a closed connection's backend exits asynchronously.
func waitSessions(t *testing.T, su *pgx.Conn, appName string, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var got map[string]int
	for time.Now().Before(deadline) {
		if got = sessions(t, su, appName); len(got) == len(want) {
			ok := true
			for k, v := range want {
				ok = ok && got[k] == v
			}
			if ok {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("sessions of %s = %v, want %v", appName, got, want)
}

func simServer(t *testing.T, dsn string) *httptest.Server {
	t.Helper()
	s := New(fake.NewClientset(), Options{PGDSN: dsn}, nil)
	srv := httptest.NewServer(s.Handler())
	t.Cleanup(func() {
		srv.Close()
		s.pg.close()
	})
	return srv
}

func TestPGHoldAndReleaseIntegration(t *testing.T) {
	env := sandboxenv.Load(t)
	su := superuser(t, env)
	app := "pggitsim-it-" + sandboxfixture.RandomHex(t, 4)
	srv := simServer(t, withDSN(t, env.Get(t, "PG_PRIMARY_APP_DSN"), "", "", app))

	code, body := do(t, "POST", srv.URL+"/control/pg/hold", `{"n":2}`)
	if code != 200 || body != `{"requested":2,"opened":2,"held":2}` {
		t.Fatalf("hold = %d %s", code, body)
	}
	code, body = do(t, "POST", srv.URL+"/control/pg/hold", `{"n":1}`)
	if code != 200 || body != `{"requested":1,"opened":1,"held":3}` {
		t.Fatalf("second hold = %d %s", code, body)
	}
	waitSessions(t, su, app, map[string]int{"idle in transaction": 3})

	code, body = do(t, "POST", srv.URL+"/control/pg/release", ``)
	if code != 200 || body != `{"released":3}` {
		t.Fatalf("release = %d %s", code, body)
	}
	waitSessions(t, su, app, map[string]int{})
}

func TestPGHoldRefusedIntegration(t *testing.T) {
	env := sandboxenv.Load(t)
	su := superuser(t, env)
	role := "pggitsim_it_" + sandboxfixture.RandomHex(t, 4)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := su.Exec(ctx, "CREATE ROLE "+role+" LOGIN CONNECTION LIMIT 2 PASSWORD '"+role+"'"); err != nil {
		t.Fatalf("create role: %v", err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := su.Exec(ctx, "DROP ROLE IF EXISTS "+role); err != nil {
			t.Errorf("drop role %s: %v", role, err)
		}
	})
	app := "pggitsim-it-" + sandboxfixture.RandomHex(t, 4)
	srv := simServer(t, withDSN(t, env.Get(t, "PG_PRIMARY_APP_DSN"), role, role, app))

	code, body := do(t, "POST", srv.URL+"/control/pg/hold", `{"n":3}`)
	var res HoldResult
	if err := json.Unmarshal([]byte(body), &res); err != nil || code != 200 {
		t.Fatalf("hold = %d %s (%v)", code, body, err)
	}
	if res.Requested != 3 || res.Opened != 2 || res.Held != 2 || res.SQLState != "53300" || res.Error == "" {
		t.Fatalf("hold = %+v, want 2 of 3 opened and SQLSTATE 53300", res)
	}
	waitSessions(t, su, app, map[string]int{"idle in transaction": 2})
	if code, body := do(t, "POST", srv.URL+"/control/pg/release", ``); code != 200 || body != `{"released":2}` {
		t.Fatalf("release = %d %s", code, body)
	}
	waitSessions(t, su, app, map[string]int{})
}

func TestPGWriteIntegration(t *testing.T) {
	env := sandboxenv.Load(t)
	su := superuser(t, env)
	status := "pggitsim-it-" + sandboxfixture.RandomHex(t, 4)
	srv := simServer(t, env.Get(t, "PG_PRIMARY_APP_DSN"))
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if _, err := su.Exec(ctx, "DELETE FROM pggit.alert_delivery_queue WHERE delivery_status = $1", status); err != nil {
			t.Errorf("clean up rows: %v", err)
		}
	})

	code, body := do(t, "POST", srv.URL+"/control/pg/write", `{"rows":25,"status":"`+status+`"}`)
	if code != 200 || body != `{"inserted":25}` {
		t.Fatalf("write = %d %s", code, body)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	var n, maxSeq int
	var source string
	err := su.QueryRow(ctx, `SELECT count(*), max((payload->>'seq')::int), min(payload->>'source')
		FROM pggit.alert_delivery_queue WHERE delivery_status = $1`, status).Scan(&n, &maxSeq, &source)
	if err != nil {
		t.Fatalf("count rows: %v", err)
	}
	if n != 25 || maxSeq != 25 || source != "pggitsim" {
		t.Fatalf("rows = %d, max seq %d, source %q; want 25, 25, pggitsim", n, maxSeq, source)
	}
}
