package pggitsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// ErrPGNotConfigured is returned by the PostgreSQL controls without --pg-dsn.
var ErrPGNotConfigured = errors.New("postgresql not configured")

const (
	pgConnectTimeout = 5 * time.Second
	pgWriteTimeout   = 30 * time.Second
	pgCloseTimeout   = 2 * time.Second
)

// pgControl holds connections idle in transaction, the way a leaking
// pggit-api exhausts the pool, and writes queue rows on demand.
type pgControl struct {
	dsn    string
	logger *zap.Logger

	mu    sync.Mutex
	conns []*pgx.Conn
}

func newPGControl(dsn string, logger *zap.Logger) *pgControl {
	return &pgControl{dsn: dsn, logger: logger}
}

// HoldResult tells how a hold went: the server may refuse part of it
// (SQLSTATE 53300 too_many_connections), which is what tests look for.
type HoldResult struct {
	Requested int    `json:"requested"`
	Opened    int    `json:"opened"`
	Held      int    `json:"held"`
	Error     string `json:"error,omitempty"`
	SQLState  string `json:"sqlstate,omitempty"`
}

// hold opens n more connections, one by one, each left idle in
// transaction. It stops at the first failure.
func (c *pgControl) hold(ctx context.Context, n int) (HoldResult, error) {
	res := HoldResult{Requested: n}
	if c.dsn == "" {
		return res, ErrPGNotConfigured
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	var err error
	for i := 0; i < n; i++ {
		var conn *pgx.Conn
		conn, err = openIdleInTx(ctx, c.dsn)
		if err != nil {
			break
		}
		c.conns = append(c.conns, conn)
		res.Opened++
	}
	res.Held = len(c.conns)
	if err != nil {
		res.Error = err.Error()
		res.SQLState = sqlState(err)
		c.logger.Warn("holding connections stopped", zap.Int("opened", res.Opened),
			zap.Int("requested", n), zap.String("sqlstate", res.SQLState), zap.Error(err))
		return res, err
	}
	c.logger.Info("holding connections idle in transaction", zap.Int("opened", res.Opened), zap.Int("held", res.Held))
	return res, nil
}

func openIdleInTx(ctx context.Context, dsn string) (*pgx.Conn, error) {
	cctx, cancel := context.WithTimeout(ctx, pgConnectTimeout)
	defer cancel()
	conn, err := pgx.Connect(cctx, dsn)
	if err != nil {
		// pgx's connect error does not repeat the password.
		return nil, fmt.Errorf("connect to postgresql: %w", err)
	}
	for _, q := range []string{"BEGIN", "SELECT 1"} {
		if _, err := conn.Exec(cctx, q); err != nil {
			closeConn(conn)
			return nil, fmt.Errorf("postgresql %s: %w", q, err)
		}
	}
	return conn, nil
}

// release closes every held connection; the server rolls back their
// transactions. Connections already terminated (pool recovery) close too.
func (c *pgControl) release() int {
	c.mu.Lock()
	conns := c.conns
	c.conns = nil
	c.mu.Unlock()
	for _, conn := range conns {
		closeConn(conn)
	}
	if len(conns) > 0 {
		c.logger.Info("released held connections", zap.Int("released", len(conns)))
	}
	return len(conns)
}

func (c *pgControl) close() { c.release() }

func closeConn(conn *pgx.Conn) {
	ctx, cancel := context.WithTimeout(context.Background(), pgCloseTimeout)
	defer cancel()
	_ = conn.Close(ctx) // the server ends the session either way
}

// write inserts rows into pggit.alert_delivery_queue with one COPY on a
// fresh connection, so it fails like the app would when slots run out.
func (c *pgControl) write(ctx context.Context, rows int, status string) (int64, error) {
	if c.dsn == "" {
		return 0, ErrPGNotConfigured
	}
	ctx, cancel := context.WithTimeout(ctx, pgWriteTimeout)
	defer cancel()
	conn, err := pgx.Connect(ctx, c.dsn)
	if err != nil {
		return 0, fmt.Errorf("connect to postgresql: %w", err)
	}
	defer closeConn(conn)
	now := time.Now().UTC().Format(time.RFC3339Nano)
	i := 0
	next := func() ([]any, error) {
		if i >= rows {
			return nil, nil
		}
		i++
		b, err := json.Marshal(map[string]any{"source": "pggitsim", "seq": i, "queuedAt": now})
		// A string goes into both a jsonb and a text column.
		return []any{status, string(b)}, err
	}
	n, err := conn.CopyFrom(ctx, pgx.Identifier{"pggit", "alert_delivery_queue"},
		[]string{"delivery_status", "payload"}, pgx.CopyFromFunc(next))
	if err != nil {
		return n, fmt.Errorf("copy into pggit.alert_delivery_queue: %w", err)
	}
	c.logger.Info("wrote alert delivery queue rows", zap.Int64("rows", n), zap.String("status", status))
	return n, nil
}

// sqlState is the SQLSTATE of a server error, "" for others.
func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}
