// Package postgres samples a PostgreSQL server: two built-in signals from
// the runbook (connection-slot use and replication lag) and custom SQL.
//
// The pool is small (at most 2 connections) and lazy: New never dials, so
// the daemon starts while PostgreSQL is down and reports ErrUnreachable at
// query time instead. A connection the pool already holds keeps working
// when the server runs out of slots, so the connections signal can still be
// read during the very exhaustion it watches; when no connection can be
// opened the error is ErrTooManyConnections (SQLSTATE 53300), which a
// trigger may treat as a breach.
package postgres

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"sort"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/pgerror"
	"github.com/rollguard/rollguard/pkg/source"
)

// Built-in query names accepted by Query in place of SQL.
const (
	BuiltinConnections    = "builtin:connections"
	BuiltinReplicationLag = "builtin:replication_lag"
)

// Defaults applied by New to zero Options fields.
const (
	DefaultMaxConns         = int32(2)
	DefaultConnectTimeout   = 5 * time.Second
	DefaultStatementTimeout = 10 * time.Second
	DefaultApplicationName  = "rollguard"

	// maxRows bounds a custom query's result: a trigger wants a handful
	// of series, and a runaway query must not eat the daemon's memory.
	maxRows = 10000
	// queryTimeoutSlack lets the server's statement_timeout (a clean
	// SQLSTATE 57014) fire before the client's own deadline does.
	queryTimeoutSlack = 2 * time.Second
)

// Options configure a Source.
type Options struct {
	// Name identifies the database in errors and logs (the DSN cannot:
	// it may hold a password).
	Name string
	// DSN is a libpq URL or keyword/value string.
	DSN string
	// MaxConns is the pool size, 1 or 2; zero means 2. Set explicitly:
	// pgxpool's own default follows the node's CPU count, not the pod's.
	MaxConns int32
	// ConnectTimeout bounds opening one connection; zero means the DSN's
	// connect_timeout, or DefaultConnectTimeout.
	ConnectTimeout time.Duration
	// StatementTimeout is sent as the statement_timeout startup parameter;
	// zero means DefaultStatementTimeout. (PgBouncer rejects unknown
	// startup parameters: there, set it with ALTER ROLE … SET.)
	StatementTimeout time.Duration
	// ApplicationName is reported in pg_stat_activity; empty means the
	// DSN's application_name, or "rollguard".
	ApplicationName string
}

// Source queries one PostgreSQL server. It is safe for concurrent use.
type Source struct {
	name         string
	pool         *pgxpool.Pool
	queryTimeout time.Duration
	logger       *zap.Logger
	now          func() time.Time

	mu  sync.Mutex
	lag *lagHistory
}

// New builds a Source without connecting.
func New(opts Options, logger *zap.Logger) (*Source, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if opts.Name == "" {
		return nil, errors.New("postgres source: name is empty")
	}
	switch {
	case opts.MaxConns == 0:
		opts.MaxConns = DefaultMaxConns
	case opts.MaxConns < 0 || opts.MaxConns > 2:
		return nil, fmt.Errorf("postgres source %q: max conns %d: must be 1 or 2", opts.Name, opts.MaxConns)
	}
	if opts.ConnectTimeout < 0 || opts.StatementTimeout < 0 {
		return nil, fmt.Errorf("postgres source %q: timeouts must not be negative", opts.Name)
	}
	if opts.StatementTimeout == 0 {
		opts.StatementTimeout = DefaultStatementTimeout
	}
	if opts.StatementTimeout < time.Millisecond {
		return nil, fmt.Errorf("postgres source %q: statement timeout %s: must be at least 1ms", opts.Name, opts.StatementTimeout)
	}

	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// pgx redacts the password in its message, but only in the
		// shapes it recognises; a malformed DSN is exactly when it may
		// not. Say what is wrong without any of the text.
		return nil, fmt.Errorf("postgres source %q: invalid DSN (not shown: it may hold a password)", opts.Name)
	}
	cfg.MaxConns = opts.MaxConns
	// MinConns 0 keeps the pool lazy: no dial before the first query.
	cfg.MinConns = 0
	switch {
	case opts.ConnectTimeout > 0:
		cfg.ConnConfig.ConnectTimeout = opts.ConnectTimeout
	case cfg.ConnConfig.ConnectTimeout == 0:
		cfg.ConnConfig.ConnectTimeout = DefaultConnectTimeout
	}
	if opts.ApplicationName != "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = opts.ApplicationName
	} else if cfg.ConnConfig.RuntimeParams["application_name"] == "" {
		cfg.ConnConfig.RuntimeParams["application_name"] = DefaultApplicationName
	}
	cfg.ConnConfig.RuntimeParams["statement_timeout"] = strconv.FormatInt(opts.StatementTimeout.Milliseconds(), 10)

	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres source %q: create pool: %w", opts.Name, err)
	}
	return &Source{
		name:         opts.Name,
		pool:         pool,
		queryTimeout: cfg.ConnConfig.ConnectTimeout + opts.StatementTimeout + queryTimeoutSlack,
		logger:       logger.With(zap.String("postgres", opts.Name)),
		now:          time.Now,
		lag:          newLagHistory(lagHistoryCap),
	}, nil
}

// Close closes the pool's connections.
func (s *Source) Close() { s.pool.Close() }

// Query runs a built-in or custom SQL. PostgreSQL has no history, so ts is
// not used: every answer is "now".
//
// builtin:connections gives client backends (backend_type 'client
// backend': not walsenders, autovacuum, or background workers) as a
// fraction of the slots an ordinary role can use: max_connections minus
// superuser_reserved_connections (and reserved_connections on PG16+).
// Against that denominator 1.0 means exactly what the runbook calls pool
// exhaustion: the app's next connection is refused with SQLSTATE 53300.
//
//	{}                        all client backends
//	{application_name="X"}   client backends of application X ("" when unset)
//	{state="S"}               client backends in state S (active, idle,
//	                          idle in transaction, ...; "" when hidden)
//
// Dividing by max_connections instead would cap the reading at about 0.9
// and a "> 95 %" threshold could never fire.
// The role needs pg_monitor (pg_read_all_stats) to see other roles' state.
//
// builtin:replication_lag gives seconds of lag per replication slot,
// {slot="name"}, and their maximum, {}; no slots means an empty result.
// It is the age of the data each slot has confirmed (slotLag), not the
// lag the links report (database.DB.StreamingLag, which a rollback plan
// waits on): a disabled subscription has no pg_stat_replication row, and
// its lag must still grow. See lagHistory for how it stays correct when
// the lag columns are NULL.
//
// Custom SQL: the last numeric column (integer, float, numeric, or an
// interval in seconds) is the value; text columns are labels named after
// the column (NULL reads as ""); other columns are ignored. A row whose
// value is NULL, NaN or ±Inf is dropped. No rows is an empty result.
func (s *Source) Query(ctx context.Context, query string, _ time.Time) ([]source.Series, error) {
	ctx, cancel := context.WithTimeout(ctx, s.queryTimeout)
	defer cancel()

	var (
		out   []source.Series
		err   error
		began = time.Now()
	)
	// Acquire apart from the query: a server that cannot give us a
	// connection (down, restarting, accepting TCP and never answering) is
	// unreachable, which is never a breach; only a query that got a
	// connection and then ran out of time is a timeout.
	if strings.HasPrefix(query, "builtin:") && query != BuiltinConnections && query != BuiltinReplicationLag {
		return nil, fmt.Errorf("postgres %q query %q: %w: unknown built-in (want %s or %s)",
			s.name, query, source.ErrBadQuery, BuiltinConnections, BuiltinReplicationLag)
	}
	conn, err := s.pool.Acquire(ctx)
	if err != nil {
		return nil, s.classifyConnect(query, err)
	}
	defer conn.Release()
	switch query {
	case BuiltinConnections:
		out, err = s.connections(ctx, conn)
	case BuiltinReplicationLag:
		out, err = s.slotLags(ctx, conn)
	default:
		out, err = s.custom(ctx, conn, query)
	}
	if err != nil {
		return nil, s.classify(ctx, query, err)
	}
	s.logger.Debug("postgres query done", zap.String("query", query), zap.Int("series", len(out)), zap.Duration("took", time.Since(began)))
	return out, nil
}

const connectionsSQL = `
SELECT current_setting('max_connections')::float8
         - current_setting('superuser_reserved_connections')::float8
         - COALESCE(current_setting('reserved_connections', true), '0')::float8,
       COALESCE(application_name, ''),
       COALESCE(state, ''),
       count(*)::float8
FROM pg_stat_activity
WHERE backend_type = 'client backend'
GROUP BY 2, 3`

func (s *Source) connections(ctx context.Context, conn queryer) ([]source.Series, error) {
	rows, err := conn.Query(ctx, connectionsSQL)
	if err != nil {
		return nil, err
	}
	var (
		maxConns, total float64
		byApp           = map[string]float64{}
		byState         = map[string]float64{}
	)
	for rows.Next() {
		var app, state string
		var n float64
		if err := rows.Scan(&maxConns, &app, &state, &n); err != nil {
			rows.Close()
			return nil, err
		}
		total += n
		byApp[app] += n
		byState[state] += n
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return connectionSeries(maxConns, total, byApp, byState)
}

// connectionSeries turns the counts into fractions of the usable slots.
func connectionSeries(maxConns, total float64, byApp, byState map[string]float64) ([]source.Series, error) {
	if total == 0 {
		// Our own session is a client backend: zero rows means the view
		// hid everything, which is not a reading of 0.
		return nil, fmt.Errorf("%w: pg_stat_activity shows no client backend", source.ErrNoData)
	}
	if maxConns <= 0 {
		return nil, fmt.Errorf("usable connection slots read %v", maxConns)
	}
	out := []source.Series{{Labels: map[string]string{}, Value: total / maxConns}}
	for _, app := range sortedKeys(byApp) {
		out = append(out, source.Series{Labels: map[string]string{"application_name": app}, Value: byApp[app] / maxConns})
	}
	for _, st := range sortedKeys(byState) {
		out = append(out, source.Series{Labels: map[string]string{"state": st}, Value: byState[st] / maxConns})
	}
	return out, nil
}

// replicationSQL reads every slot with the primary's flushed WAL position
// (what a walsender can send: with synchronous_commit=off the written
// position runs ahead of it) and the walsender's own lag measurement when
// one is connected. A logical slot's progress is confirmed_flush_lsn; a
// physical slot only has restart_lsn. A slot never used has neither.
const replicationSQL = `
SELECT s.slot_name::text,
       pg_current_wal_flush_lsn()::text,
       COALESCE(s.confirmed_flush_lsn, s.restart_lsn)::text,
       EXTRACT(EPOCH FROM GREATEST(r.write_lag, r.flush_lag, r.replay_lag))::float8
FROM pg_replication_slots s
LEFT JOIN pg_stat_replication r ON r.pid = s.active_pid
ORDER BY s.slot_name`

type slotReading struct {
	slot      string
	current   uint64
	confirmed uint64
	serverLag *float64
}

func (s *Source) slotLags(ctx context.Context, conn queryer) ([]source.Series, error) {
	rows, err := conn.Query(ctx, replicationSQL)
	if err != nil {
		return nil, err
	}
	var readings []slotReading
	for rows.Next() {
		var (
			slot, current string
			confirmed     *string
			serverLag     *float64
		)
		if err := rows.Scan(&slot, &current, &confirmed, &serverLag); err != nil {
			rows.Close()
			return nil, err
		}
		if confirmed == nil {
			s.logger.Debug("replication slot never used, skipped", zap.String("slot", slot))
			continue
		}
		cur, err := parseLSN(current)
		if err != nil {
			rows.Close()
			return nil, err
		}
		conf, err := parseLSN(*confirmed)
		if err != nil {
			rows.Close()
			return nil, err
		}
		readings = append(readings, slotReading{slot: slot, current: cur, confirmed: conf, serverLag: serverLag})
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	if len(readings) == 0 {
		return []source.Series{}, nil
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.now()
	// Every row carries the same current position (one statement, one
	// snapshot of the function's result per row is close enough: take the
	// highest so the history stays monotonic).
	var current uint64
	for _, r := range readings {
		current = max(current, r.current)
	}
	s.lag.record(now, current)

	out := make([]source.Series, 0, len(readings)+1)
	var worst float64
	for _, r := range readings {
		lag := slotLag(now, current, r.confirmed, r.serverLag, s.lag)
		worst = max(worst, lag)
		out = append(out, source.Series{Labels: map[string]string{"slot": r.slot}, Value: lag})
	}
	return append([]source.Series{{Labels: map[string]string{}, Value: worst}}, out...), nil
}

// slotLag is the lag of one slot in seconds.
//
//   - Caught up (confirmed ≥ the primary's flushed position): 0, whatever
//     the lag columns say; they go NULL on an idle, caught-up link.
//   - Behind: the age of the WAL position the subscriber has confirmed,
//     from the history of positions this Source has seen (interpolated
//     between two queries), or, when the subscriber is behind everything
//     in the history, the time since the primary was first seen past it
//     (a lower bound that keeps growing). This is what keeps lag growing
//     when a subscription is disabled and its pg_stat_replication row,
//     with the lag columns, is gone.
//   - The walsender's own measurement, when there is one, is taken if it
//     is larger (e.g. right after a restart, when the history is empty).
func slotLag(now time.Time, current, confirmed uint64, serverLag *float64, h *lagHistory) float64 {
	if confirmed >= current {
		return 0
	}
	lag := now.Sub(h.confirmedAt(confirmed)).Seconds()
	if serverLag != nil && finite(*serverLag) && *serverLag > lag {
		lag = *serverLag
	}
	return max(lag, 0)
}

// parseLSN reads a pg_lsn's text form, "16/B374D848".
func parseLSN(s string) (uint64, error) {
	hi, lo, ok := strings.Cut(s, "/")
	if !ok {
		return 0, fmt.Errorf("parse lsn %q: want X/Y", s)
	}
	h, err := strconv.ParseUint(hi, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse lsn %q: %w", s, err)
	}
	l, err := strconv.ParseUint(lo, 16, 32)
	if err != nil {
		return 0, fmt.Errorf("parse lsn %q: %w", s, err)
	}
	return h<<32 | l, nil
}

func (s *Source) custom(ctx context.Context, conn queryer, query string) ([]source.Series, error) {
	rows, err := conn.Query(ctx, query)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := planColumns(rows.FieldDescriptions())
	if err != nil {
		return nil, fmt.Errorf("%w: %w", source.ErrBadQuery, err)
	}
	out := []source.Series{}
	for n := 0; rows.Next(); n++ {
		if n == maxRows {
			return nil, fmt.Errorf("%w: more than %d rows", source.ErrBadQuery, maxRows)
		}
		vals, err := rows.Values()
		if err != nil {
			return nil, err
		}
		if ser, ok := cols.series(vals); ok {
			out = append(out, ser)
		}
	}
	if err := rows.Err(); err != nil {
		return nil, err
	}
	return out, nil
}

// columnPlan says which result columns are labels and which is the value.
type columnPlan struct {
	value  int
	labels map[int]string
}

func planColumns(fields []pgconn.FieldDescription) (columnPlan, error) {
	p := columnPlan{value: -1, labels: map[int]string{}}
	for i, f := range fields {
		switch f.DataTypeOID {
		case pgtype.Int2OID, pgtype.Int4OID, pgtype.Int8OID, pgtype.Float4OID, pgtype.Float8OID,
			pgtype.NumericOID, pgtype.IntervalOID:
			p.value = i
		case pgtype.TextOID, pgtype.VarcharOID, pgtype.BPCharOID, pgtype.NameOID:
			p.labels[i] = f.Name
		}
	}
	if p.value < 0 {
		return p, errors.New("no numeric column for the value")
	}
	delete(p.labels, p.value)
	return p, nil
}

func (p columnPlan) series(vals []any) (source.Series, bool) {
	v, ok := toFloat(vals[p.value])
	if !ok {
		return source.Series{}, false
	}
	labels := make(map[string]string, len(p.labels))
	for i, name := range p.labels {
		if str, ok := vals[i].(string); ok {
			labels[name] = str
		} else {
			labels[name] = ""
		}
	}
	return source.Series{Labels: labels, Value: v}, true
}

// toFloat converts a decoded value; false means no data (NULL, NaN, ±Inf).
func toFloat(v any) (float64, bool) {
	var f float64
	switch x := v.(type) {
	case nil:
		return 0, false
	case int16:
		f = float64(x)
	case int32:
		f = float64(x)
	case int64:
		f = float64(x)
	case float32:
		f = float64(x)
	case float64:
		f = x
	case pgtype.Numeric:
		fv, err := x.Float64Value()
		if err != nil || !fv.Valid {
			return 0, false
		}
		f = fv.Float64
	case pgtype.Interval:
		if !x.Valid {
			return 0, false
		}
		// A month has no fixed length; 30 days is PostgreSQL's own
		// convention (EXTRACT(EPOCH FROM interval) uses 30 days too).
		f = float64(x.Microseconds)/1e6 + float64(x.Days)*86400 + float64(x.Months)*30*86400
	default:
		return 0, false
	}
	return f, finite(f)
}

// queryer is a connection the built-ins and custom SQL run on.
type queryer interface {
	Query(ctx context.Context, sql string, args ...any) (pgx.Rows, error)
}

// classifyConnect wraps a failure to get a connection: too many
// connections (SQLSTATE 53300) is the one that says something about the
// watched system; anything else, a deadline included, is unreachable.
func (s *Source) classifyConnect(query string, err error) error {
	if limit := pgerror.ConnectionLimit(err); limit != nil {
		return s.connectionLimit(query, limit, err)
	}
	return s.wrap(query, source.ErrUnreachable, err)
}

// connectionLimit wraps a SQLSTATE 53300 as pgerror classified it.
// rollguard's own role at its limit is no evidence: it is reported as
// unreachable, so no trigger, not even with onError: breach, counts it.
func (s *Source) connectionLimit(query string, limit, err error) error {
	if limit == source.ErrRoleConnectionLimit {
		return fmt.Errorf("postgres %q query %q: %w: %w: %w", s.name, query, source.ErrUnreachable, limit, err)
	}
	return s.wrap(query, limit, err)
}

// classify wraps err with the source sentinel that fits it.
func (s *Source) classify(ctx context.Context, query string, err error) error {
	if limit := pgerror.ConnectionLimit(err); limit != nil {
		return s.connectionLimit(query, limit, err)
	}
	switch code := pgerror.Code(err); {
	case code == pgerror.CodeQueryCanceled: // statement_timeout
		return s.wrap(query, source.ErrTimeout, err)
	case strings.HasPrefix(code, pgerror.ClassSyntaxOrAccess):
		return s.wrap(query, source.ErrBadQuery, err)
	}
	for _, sentinel := range []error{source.ErrBadQuery, source.ErrNoData} {
		if errors.Is(err, sentinel) {
			return fmt.Errorf("postgres %q query %q: %w", s.name, query, err)
		}
	}
	if ctx.Err() != nil {
		return s.wrap(query, source.ErrTimeout, err)
	}
	// Refused, DNS, authentication, the server starting up or its own
	// connect_timeout: no connection could be made.
	var connErr *pgconn.ConnectError
	if errors.As(err, &connErr) {
		return s.wrap(query, source.ErrUnreachable, err)
	}
	if pgconn.Timeout(err) || errors.Is(err, context.DeadlineExceeded) {
		return s.wrap(query, source.ErrTimeout, err)
	}
	// A connection lost mid-query (server restart, network).
	var netErr net.Error
	if errors.As(err, &netErr) {
		return s.wrap(query, source.ErrUnreachable, err)
	}
	return fmt.Errorf("postgres %q query %q: %w", s.name, query, err)
}

func (s *Source) wrap(query string, sentinel, err error) error {
	return fmt.Errorf("postgres %q query %q: %w: %w", s.name, query, sentinel, err)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func sortedKeys(m map[string]float64) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
