// Package database carries out the runbook's PostgreSQL operations for the
// rollback executor: the schema version check, the forensic and pre-deploy
// dumps (pg_dump / pg_restore), row counts for verification, connection pool
// recovery (terminating stale idle-in-transaction sessions) and the
// multi-region steps (disable, enable and resynchronise logical
// subscriptions, replication lag).
//
// One DB is one database on one server: the executor opens one for the
// primary and one per secondary. A multi-region rollback with a database
// restore is, in order: primary.StreamingLag (is it safe to start),
// secondary.DisableSubscription, primary.Dump (forensic), primary.Restore
// (pre-deploy dump), secondary.ResyncSubscription (an in-place restore
// breaks the subscription for good, see Restore), then poll
// primary.StreamingLag until it is below 1 s before the secondaries get
// traffic back. Without a restore, EnableSubscription replaces the resync. Every call takes a ctx and adds its own
// timeout for SQL; dumps and restores are bounded only by the caller's ctx
// because their duration grows with the database.
package database

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgxpool"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/pgerror"
)

// Defaults applied by Open.
const (
	DefaultBinDir              = "/usr/lib/postgresql/15/bin"
	DefaultTimeout             = 10 * time.Second
	DefaultSchemaVersionsTable = "pggit.schema_versions"
	// MaxConns is the most connections a DB keeps: rollguard must never be
	// the one that exhausts the pool it is trying to recover.
	MaxConns int32 = 2
)

// Sentinel errors for the caller to branch on.
var (
	// ErrInvalidIdentifier: a table, schema or subscription name is not a
	// plain identifier (see ParseIdentifier).
	ErrInvalidIdentifier = errors.New("invalid identifier")
	// ErrInvalidArgument: an argument is empty or out of range.
	ErrInvalidArgument = errors.New("invalid argument")
	// ErrDumpExists: Dump refuses to replace an existing file, so a
	// forensic dump can never overwrite the pre-deploy one.
	ErrDumpExists = errors.New("dump file already exists")
	// ErrDumpInvalid: a dump file is missing, truncated or not a pg_dump
	// custom-format archive.
	ErrDumpInvalid = errors.New("invalid dump")
	// ErrCommandFailed: pg_dump or pg_restore exited with an error; the
	// error text carries the tail of its stderr.
	ErrCommandFailed = errors.New("command failed")
	// ErrSubscriptionNotFound: no subscription of that name in this database.
	ErrSubscriptionNotFound = errors.New("subscription not found")
	// ErrPublicationNotFound: the publisher no longer has a publication the
	// subscription needs; resync cannot proceed.
	ErrPublicationNotFound = errors.New("publication not found on publisher")
	// ErrPublicationEmpty: the publisher's publications publish no table;
	// resync refuses rather than truncate the secondary and copy nothing.
	ErrPublicationEmpty = errors.New("publication has no tables")
	// ErrNoReplication: the server has no subscribers or standbys at all.
	ErrNoReplication = errors.New("no replication")
	// ErrLagUnknown: a subscriber is disconnected or has not reported yet,
	// so its lag cannot be measured; it is not caught up as far as we know.
	ErrLagUnknown = errors.New("replication lag unknown")
)

// Options configures a DB.
type Options struct {
	// Name identifies the database in logs and errors (e.g. "primary").
	Name string
	// DSN is a pgx/libpq connection string; its password is never logged
	// nor passed on a command line.
	DSN string
	// BinDir holds pg_dump and pg_restore. Empty means DefaultBinDir when it
	// has them, else $PATH.
	BinDir string
	// MaxConns caps the pool (0 means MaxConns; more than MaxConns is an error).
	MaxConns int32
	// Timeout bounds each SQL operation (0 means DefaultTimeout).
	Timeout time.Duration
	// SchemaVersionsTable is the qualified table MigrationApplied reads
	// (default pggit.schema_versions); it needs a text column "name".
	SchemaVersionsTable string
}

// DB runs the runbook's operations against one database.
type DB struct {
	name      string
	pool      *pgxpool.Pool
	conn      *pgconn.Config
	pgDump    string
	pgRestore string
	timeout   time.Duration
	versions  pgx.Identifier
	logger    *zap.Logger

	mu sync.Mutex
	// readBack holds, per path, the file a full read of an archive
	// succeeded on: InspectDump does not read it in full again while the
	// file is that one, unchanged.
	readBack map[string]fileID
}

// Open validates opts, finds pg_dump and pg_restore and builds the pool.
// It does not connect: the daemon must start while PostgreSQL is down.
// ctx is reserved for future eager checks and is currently unused.
func Open(_ context.Context, opts Options, logger *zap.Logger) (*DB, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if opts.Name == "" {
		return nil, fmt.Errorf("database: %w: name is empty", ErrInvalidArgument)
	}
	if opts.MaxConns < 0 || opts.MaxConns > MaxConns {
		return nil, fmt.Errorf("database %s: %w: max conns %d not in [0,%d]", opts.Name, ErrInvalidArgument, opts.MaxConns, MaxConns)
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("database %s: %w: negative timeout", opts.Name, ErrInvalidArgument)
	}
	cfg, err := pgxpool.ParseConfig(opts.DSN)
	if err != nil {
		// The parse error quotes the DSN (pgx redacts the password on a
		// best-effort basis); say only that it is invalid.
		return nil, fmt.Errorf("database %s: %w: dsn cannot be parsed", opts.Name, ErrInvalidArgument)
	}
	cfg.MaxConns = opts.MaxConns
	if cfg.MaxConns == 0 {
		cfg.MaxConns = MaxConns
	}
	cfg.MinConns = 0
	timeout := opts.Timeout
	if timeout == 0 {
		timeout = DefaultTimeout
	}
	if cfg.ConnConfig.ConnectTimeout == 0 {
		cfg.ConnConfig.ConnectTimeout = timeout
	}
	if _, ok := cfg.ConnConfig.RuntimeParams["application_name"]; !ok {
		cfg.ConnConfig.RuntimeParams["application_name"] = "rollguard"
	}
	table := opts.SchemaVersionsTable
	if table == "" {
		table = DefaultSchemaVersionsTable
	}
	versions, err := ParseIdentifier(table)
	if err != nil {
		return nil, fmt.Errorf("database %s: schema versions table: %w", opts.Name, err)
	}
	dump, err := findBinary(opts.BinDir, "pg_dump")
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", opts.Name, err)
	}
	restore, err := findBinary(opts.BinDir, "pg_restore")
	if err != nil {
		return nil, fmt.Errorf("database %s: %w", opts.Name, err)
	}
	pool, err := pgxpool.NewWithConfig(context.Background(), cfg)
	if err != nil {
		return nil, fmt.Errorf("database %s: create pool: %w", opts.Name, err)
	}
	return &DB{
		name:      opts.Name,
		pool:      pool,
		conn:      cfg.ConnConfig.Config.Copy(),
		pgDump:    dump,
		pgRestore: restore,
		timeout:   timeout,
		versions:  versions,
		logger:    logger.With(zap.String("database", opts.Name)),
	}, nil
}

// Close releases the pool.
func (d *DB) Close() { d.pool.Close() }

// Name is the name given in Options.
func (d *DB) Name() string { return d.name }

// findBinary looks in dir when given, else DefaultBinDir, else $PATH.
func findBinary(dir, name string) (string, error) {
	if dir != "" {
		p := filepath.Join(dir, name)
		if err := executable(p); err != nil {
			return "", fmt.Errorf("%s in %s: %w", name, dir, err)
		}
		return p, nil
	}
	if p := filepath.Join(DefaultBinDir, name); executable(p) == nil {
		return p, nil
	}
	p, err := exec.LookPath(name)
	if err != nil {
		return "", fmt.Errorf("%s: %w", name, err)
	}
	return p, nil
}

func executable(p string) error {
	fi, err := os.Stat(p)
	if err != nil {
		return err
	}
	if fi.IsDir() || fi.Mode()&0o111 == 0 {
		return fmt.Errorf("%s is not executable", p)
	}
	return nil
}

// Ping runs SELECT 1 (the runbook's database connectivity check).
func (d *DB) Ping(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var one int
	if err := d.pool.QueryRow(ctx, "SELECT 1").Scan(&one); err != nil {
		return d.wrap("ping", err)
	}
	return nil
}

// MigrationApplied reports whether the schema versions table has a row for
// migration (the runbook: SELECT version FROM pggit.schema_versions WHERE
// name = 'phase8_analytics_dashboard'). A missing table is an error, not
// false: the executor must not skip a restore because it looked in the
// wrong place.
func (d *DB) MigrationApplied(ctx context.Context, migration string) (bool, error) {
	if migration == "" {
		return false, fmt.Errorf("database %s: migration: %w: empty name", d.name, ErrInvalidArgument)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var applied bool
	q := "SELECT EXISTS (SELECT 1 FROM " + d.versions.Sanitize() + " WHERE name = $1)"
	if err := d.pool.QueryRow(ctx, q, migration).Scan(&applied); err != nil {
		return false, d.wrap(fmt.Sprintf("migration %q in %s", migration, strings.Join(d.versions, ".")), err)
	}
	return applied, nil
}

// CountRows counts the rows of each table in one read-only repeatable-read
// transaction, so the counts are one consistent snapshot. Table names are
// exact catalog names as ListDump returns them ("schema.table"), quoted, so
// case matters; anything else is rejected before any SQL runs.
func (d *DB) CountRows(ctx context.Context, tables []string) (map[string]int64, error) {
	idents := make([]pgx.Identifier, len(tables))
	for i, t := range tables {
		id, err := ParseIdentifier(t)
		if err != nil {
			return nil, fmt.Errorf("database %s: count rows: %w", d.name, err)
		}
		idents[i] = id
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return nil, d.wrap("count rows: begin", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only; rollback after commit is a no-op
	counts := make(map[string]int64, len(tables))
	for i, id := range idents {
		var n int64
		if err := tx.QueryRow(ctx, "SELECT count(*) FROM "+id.Sanitize()).Scan(&n); err != nil {
			return nil, d.wrap("count rows of "+tables[i], err)
		}
		counts[tables[i]] = n
	}
	if err := tx.Commit(ctx); err != nil {
		return nil, d.wrap("count rows: commit", err)
	}
	return counts, nil
}

var identPart = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_$]*$`)

// maxIdentLen is PostgreSQL's NAMEDATALEN-1: longer names are silently
// truncated by the server, so a longer input would name another object.
const maxIdentLen = 63

// ParseIdentifier accepts "name" or "schema.name" where each part is a plain
// identifier (letters, digits, _ and $, not starting with a digit, at most
// 63 bytes) and returns it ready for pgx.Identifier.Sanitize. Quoted or
// dotted-inside names are refused rather than guessed at.
func ParseIdentifier(s string) (pgx.Identifier, error) {
	parts := strings.Split(s, ".")
	if len(parts) > 2 {
		return nil, fmt.Errorf("%w: %q has more than two parts", ErrInvalidIdentifier, s)
	}
	for _, p := range parts {
		if len(p) > maxIdentLen {
			return nil, fmt.Errorf("%w: %q is longer than %d bytes", ErrInvalidIdentifier, s, maxIdentLen)
		}
		if !identPart.MatchString(p) {
			return nil, fmt.Errorf("%w: %q", ErrInvalidIdentifier, s)
		}
	}
	return pgx.Identifier(parts), nil
}

// parseName accepts a single unqualified identifier (subscriptions).
func parseName(s string) (pgx.Identifier, error) {
	id, err := ParseIdentifier(s)
	if err != nil {
		return nil, err
	}
	if len(id) != 1 {
		return nil, fmt.Errorf("%w: %q must not be qualified", ErrInvalidIdentifier, s)
	}
	return id, nil
}

// wrap names the database and operation, and adds the sentinel of a
// refusal for lack of connection slots as pgerror classifies it: the
// server's or database's (source.ErrTooManyConnections) or rollguard's own
// role's limit (source.ErrRoleConnectionLimit).
func (d *DB) wrap(op string, err error) error {
	if limit := pgerror.ConnectionLimit(err); limit != nil {
		return fmt.Errorf("database %s: %s: %w: %w", d.name, op, limit, err)
	}
	return fmt.Errorf("database %s: %s: %w", d.name, op, err)
}

func isNoRows(err error) bool { return errors.Is(err, pgx.ErrNoRows) }
