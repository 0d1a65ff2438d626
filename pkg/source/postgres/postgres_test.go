package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"math/big"
	"net"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgproto3"
	"github.com/jackc/pgx/v5/pgtype"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

func TestNewAppliesOptions(t *testing.T) {
	tests := []struct {
		name    string
		opts    Options
		maxConn int32
		app     string
		stmt    string
		connect time.Duration
	}{
		{
			name:    "defaults",
			opts:    Options{Name: "primary", DSN: "postgres://u:p@127.0.0.1:1/db"},
			maxConn: 2, app: "rollguard", stmt: "10000", connect: 5 * time.Second,
		},
		{
			name:    "explicit",
			opts:    Options{Name: "primary", DSN: "postgres://u:p@127.0.0.1:1/db?pool_max_conns=20", MaxConns: 1, ConnectTimeout: 2 * time.Second, StatementTimeout: 1500 * time.Millisecond, ApplicationName: "watchdog"},
			maxConn: 1, app: "watchdog", stmt: "1500", connect: 2 * time.Second,
		},
		{
			name:    "DSN application_name and connect_timeout kept when not overridden",
			opts:    Options{Name: "primary", DSN: "host=127.0.0.1 port=1 user=u application_name=from-dsn connect_timeout=7"},
			maxConn: 2, app: "from-dsn", stmt: "10000", connect: 7 * time.Second,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.opts, zap.NewNop())
			if err != nil {
				t.Fatalf("New: %v", err)
			}
			defer s.Close()
			cfg := s.pool.Config()
			if cfg.MaxConns != tc.maxConn || cfg.MinConns != 0 {
				t.Errorf("MaxConns %d MinConns %d, want %d and 0", cfg.MaxConns, cfg.MinConns, tc.maxConn)
			}
			rp := cfg.ConnConfig.RuntimeParams
			if rp["application_name"] != tc.app || rp["statement_timeout"] != tc.stmt {
				t.Errorf("runtime params %v, want application_name=%s statement_timeout=%s", rp, tc.app, tc.stmt)
			}
			if cfg.ConnConfig.ConnectTimeout != tc.connect {
				t.Errorf("connect timeout %s, want %s", cfg.ConnConfig.ConnectTimeout, tc.connect)
			}
		})
	}
}

func TestNewRejects(t *testing.T) {
	tests := []struct {
		name string
		opts Options
	}{
		{"unparsable URL with password", Options{Name: "p", DSN: "postgres://user:hunter2@host:notaport/db"}},
		{"bad keyword DSN with password", Options{Name: "p", DSN: "host=h password=hunter2 port=abc"}},
		{"max conns 3", Options{Name: "p", DSN: "postgres://h/db", MaxConns: 3}},
		{"negative max conns", Options{Name: "p", DSN: "postgres://h/db", MaxConns: -1}},
		{"negative timeout", Options{Name: "p", DSN: "postgres://h/db", StatementTimeout: -time.Second}},
		{"no name", Options{DSN: "postgres://h/db"}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s, err := New(tc.opts, zap.NewNop())
			if err == nil {
				s.Close()
				t.Fatal("no error")
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q echoes the password", err)
			}
		})
	}
}

// closedPort returns a loopback address nothing listens on.
func closedPort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	return addr
}

func TestQueryUnreachableIsLazyAndTyped(t *testing.T) {
	host, port, _ := net.SplitHostPort(closedPort(t))
	// New must succeed with the server down: the daemon starts anyway.
	s, err := New(Options{Name: "primary", DSN: fmt.Sprintf("postgres://rollguard:hunter2@%s:%s/pggit?sslmode=disable", host, port), ConnectTimeout: time.Second}, zap.NewNop())
	if err != nil {
		t.Fatalf("New with the server down: %v", err)
	}
	defer s.Close()
	for _, q := range []string{BuiltinConnections, BuiltinReplicationLag, "SELECT 1"} {
		_, err := s.Query(context.Background(), q, time.Time{})
		if !errors.Is(err, source.ErrUnreachable) {
			t.Fatalf("Query(%q) err = %v, want ErrUnreachable", q, err)
		}
		if strings.Contains(err.Error(), "hunter2") {
			t.Errorf("error %q leaks the password", err)
		}
		if !strings.Contains(err.Error(), fmt.Sprintf("%q", q)) || !strings.Contains(err.Error(), `"primary"`) {
			t.Errorf("error %q does not name the source and query", err)
		}
	}
}

// refusingServer speaks just enough of the protocol to refuse every
// connection with the given FATAL error, as a full server does.
func refusingServer(t *testing.T, code, msg string) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				be := pgproto3.NewBackend(conn, conn)
				for {
					m, err := be.ReceiveStartupMessage()
					if err != nil {
						return
					}
					switch m.(type) {
					case *pgproto3.SSLRequest, *pgproto3.GSSEncRequest:
						if _, err := conn.Write([]byte("N")); err != nil {
							return
						}
						continue
					}
					be.Send(&pgproto3.ErrorResponse{Severity: "FATAL", SeverityUnlocalized: "FATAL", Code: code, Message: msg})
					_ = be.Flush()
					return
				}
			}()
		}
	}()
	return ln.Addr().String()
}

func TestConnectTimeErrors(t *testing.T) {
	tests := []struct {
		code, msg string
		want      error
	}{
		{"53300", "sorry, too many clients already", source.ErrTooManyConnections},
		{"53300", "remaining connection slots are reserved for roles with the SUPERUSER attribute", source.ErrTooManyConnections},
		{"53300", `too many connections for database "pggit"`, source.ErrTooManyConnections},
		// rollguard's own role at its CONNECTION LIMIT says nothing about
		// the application's pool: rollguard cannot connect, that is all.
		{"53300", `too many connections for role "rollguard"`, source.ErrUnreachable},
		{"57P03", "the database system is starting up", source.ErrUnreachable},
		{"28P01", `password authentication failed for user "rollguard"`, source.ErrUnreachable},
	}
	for _, tc := range tests {
		t.Run(tc.code+" "+tc.msg, func(t *testing.T) {
			addr := refusingServer(t, tc.code, tc.msg)
			s, err := New(Options{Name: "primary", DSN: "postgres://rollguard:hunter2@" + addr + "/pggit?sslmode=disable", ConnectTimeout: 2 * time.Second}, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			defer s.Close()
			_, err = s.Query(context.Background(), BuiltinConnections, time.Time{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			// What a pool trigger with onError: breach makes of it.
			pool := trigger.New(trigger.Rule{Op: trigger.Above, Threshold: 0.95, OnError: trigger.OnErrorBreach}, 0)
			if got, want := pool.Classify(trigger.Observation{Err: err}), map[bool]window.Kind{true: window.Breach, false: window.NoData}[tc.want == source.ErrTooManyConnections]; got != want {
				t.Errorf("onError breach reads it as %s, want %s", got, want)
			}
			var pgErr *pgconn.PgError
			if !errors.As(err, &pgErr) || pgErr.Code != tc.code {
				t.Errorf("err %v does not carry SQLSTATE %s", err, tc.code)
			}
			if strings.Contains(err.Error(), "hunter2") {
				t.Errorf("error %q leaks the password", err)
			}
		})
	}
}

func TestClassify(t *testing.T) {
	s := &Source{name: "primary"}
	done, cancel := context.WithCancel(context.Background())
	cancel()
	tests := []struct {
		name string
		ctx  context.Context
		err  error
		want error // nil: no sentinel
	}{
		{"too many connections", context.Background(), &pgconn.PgError{Code: "53300"}, source.ErrTooManyConnections},
		{"statement timeout", context.Background(), fmt.Errorf("read: %w", &pgconn.PgError{Code: "57014"}), source.ErrTimeout},
		{"syntax error", context.Background(), &pgconn.PgError{Code: "42601"}, source.ErrBadQuery},
		{"undefined table", context.Background(), &pgconn.PgError{Code: "42P01"}, source.ErrBadQuery},
		{"permission denied", context.Background(), &pgconn.PgError{Code: "42501"}, source.ErrBadQuery},
		{"division by zero has no sentinel", context.Background(), &pgconn.PgError{Code: "22012"}, nil},
		{"caller deadline", done, context.Canceled, source.ErrTimeout},
		{"deadline exceeded", context.Background(), fmt.Errorf("x: %w", context.DeadlineExceeded), source.ErrTimeout},
		{"connection lost", context.Background(), &net.OpError{Op: "read", Err: errors.New("connection reset by peer")}, source.ErrUnreachable},
		{"bad query from the column plan", context.Background(), fmt.Errorf("%w: no numeric column", source.ErrBadQuery), source.ErrBadQuery},
	}
	all := []error{source.ErrTooManyConnections, source.ErrTimeout, source.ErrBadQuery, source.ErrUnreachable, source.ErrNoData}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got := s.classify(tc.ctx, "SELECT 1", tc.err)
			for _, sentinel := range all {
				if errors.Is(got, sentinel) != (sentinel == tc.want) {
					t.Errorf("classify = %v: errors.Is(%v) = %v", got, sentinel, errors.Is(got, sentinel))
				}
			}
			if !errors.Is(got, tc.err) {
				t.Errorf("classify = %v does not wrap the original", got)
			}
			if !strings.Contains(got.Error(), `"SELECT 1"`) {
				t.Errorf("classify = %v does not name the query", got)
			}
		})
	}
}

func TestUnknownBuiltin(t *testing.T) {
	s, err := New(Options{Name: "p", DSN: "postgres://127.0.0.1:1/db"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if _, err := s.Query(context.Background(), "builtin:nope", time.Time{}); !errors.Is(err, source.ErrBadQuery) {
		t.Fatalf("err = %v, want ErrBadQuery", err)
	}
}

func TestConnectionSeries(t *testing.T) {
	got, err := connectionSeries(30, 6,
		map[string]float64{"pggit-api": 3, "rollguard": 1, "": 2},
		map[string]float64{"active": 1, "idle": 2, "idle in transaction": 3})
	if err != nil {
		t.Fatal(err)
	}
	want := []source.Series{
		{Labels: map[string]string{}, Value: 0.2},
		{Labels: map[string]string{"application_name": ""}, Value: 2.0 / 30},
		{Labels: map[string]string{"application_name": "pggit-api"}, Value: 0.1},
		{Labels: map[string]string{"application_name": "rollguard"}, Value: 1.0 / 30},
		{Labels: map[string]string{"state": "active"}, Value: 1.0 / 30},
		{Labels: map[string]string{"state": "idle"}, Value: 2.0 / 30},
		{Labels: map[string]string{"state": "idle in transaction"}, Value: 0.1},
	}
	if !reflect.DeepEqual(got, want) {
		t.Errorf("got %v\nwant %v", got, want)
	}
	if _, err := connectionSeries(30, 0, nil, nil); !errors.Is(err, source.ErrNoData) {
		t.Errorf("no backends: err = %v, want ErrNoData", err)
	}
}

func TestParseLSN(t *testing.T) {
	tests := []struct {
		in   string
		want uint64
		ok   bool
	}{
		{"0/0", 0, true},
		{"0/16B3748", 0x16B3748, true},
		{"16/B374D848", 0x16_B374D848, true},
		{"FFFFFFFF/FFFFFFFF", math.MaxUint64, true},
		{"16B374D848", 0, false},
		{"1/G", 0, false},
		{"100000000/0", 0, false},
	}
	for _, tc := range tests {
		got, err := parseLSN(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("parseLSN(%q) = %#x, %v; want %#x ok=%v", tc.in, got, err, tc.want, tc.ok)
		}
	}
}

func fields(specs ...any) []pgconn.FieldDescription {
	var out []pgconn.FieldDescription
	for i := 0; i < len(specs); i += 2 {
		out = append(out, pgconn.FieldDescription{Name: specs[i].(string), DataTypeOID: uint32(specs[i+1].(int))})
	}
	return out
}

func TestCustomRows(t *testing.T) {
	num := func(s string) pgtype.Numeric {
		var n pgtype.Numeric
		if err := n.Scan(s); err != nil {
			t.Fatal(err)
		}
		return n
	}
	tests := []struct {
		name    string
		fields  []pgconn.FieldDescription
		rows    [][]any
		want    []source.Series
		wantErr bool
	}{
		{
			name:   "text labels, last numeric is the value, other numerics and types ignored",
			fields: fields("queue", pgtype.TextOID, "attempts", pgtype.Int4OID, "since", pgtype.TimestamptzOID, "status", pgtype.VarcharOID, "pending", pgtype.Int8OID),
			rows: [][]any{
				{"webhooks", int32(3), time.Unix(0, 0), "blocked", int64(42)},
				{"email", int32(1), time.Unix(0, 0), nil, int64(0)},
			},
			want: []source.Series{
				{Labels: map[string]string{"queue": "webhooks", "status": "blocked"}, Value: 42},
				{Labels: map[string]string{"queue": "email", "status": ""}, Value: 0},
			},
		},
		{
			name:   "NULL, NaN and Inf values are dropped",
			fields: fields("k", pgtype.TextOID, "v", pgtype.Float8OID),
			rows:   [][]any{{"null", nil}, {"nan", math.NaN()}, {"inf", math.Inf(1)}, {"ok", 0.5}},
			want:   []source.Series{{Labels: map[string]string{"k": "ok"}, Value: 0.5}},
		},
		{
			name:   "numeric, NaN numeric dropped",
			fields: fields("v", pgtype.NumericOID),
			rows:   [][]any{{num("12.25")}, {num("NaN")}},
			want:   []source.Series{{Labels: map[string]string{}, Value: 12.25}},
		},
		{
			name:   "interval in seconds",
			fields: fields("lag", pgtype.IntervalOID),
			rows:   [][]any{{pgtype.Interval{Microseconds: 1_500_000, Days: 1, Valid: true}}},
			want:   []source.Series{{Labels: map[string]string{}, Value: 86401.5}},
		},
		{
			name:   "no rows",
			fields: fields("v", pgtype.Int8OID),
			want:   []source.Series{},
		},
		{
			name:    "no numeric column",
			fields:  fields("a", pgtype.TextOID, "b", pgtype.BoolOID),
			wantErr: true,
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			plan, err := planColumns(tc.fields)
			if tc.wantErr {
				if err == nil {
					t.Fatal("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := []source.Series{}
			for _, r := range tc.rows {
				if s, ok := plan.series(r); ok {
					got = append(got, s)
				}
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %v, want %v", got, tc.want)
			}
		})
	}
}

func TestToFloat(t *testing.T) {
	big1 := pgtype.Numeric{Int: big.NewInt(15), Exp: -1, Valid: true}
	tests := []struct {
		in   any
		want float64
		ok   bool
	}{
		{int16(-2), -2, true}, {int32(7), 7, true}, {int64(1 << 40), 1 << 40, true},
		{float32(0.5), 0.5, true}, {1.25, 1.25, true}, {big1, 1.5, true},
		{pgtype.Numeric{}, 0, false}, {pgtype.Interval{}, 0, false},
		{pgtype.Interval{Months: 1, Valid: true}, 30 * 86400, true},
		{"12", 0, false}, {true, 0, false}, {nil, 0, false},
		{math.Inf(-1), 0, false},
	}
	for _, tc := range tests {
		got, ok := toFloat(tc.in)
		if ok != tc.ok || (ok && got != tc.want) {
			t.Errorf("toFloat(%#v) = %v, %v; want %v, %v", tc.in, got, ok, tc.want, tc.ok)
		}
	}
}
