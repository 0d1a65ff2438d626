// Package pgseed builds a pggit database big enough for dump, restore and
// resync timings to matter (make bench's database benchmark): the sandbox's
// pggit schema filled with generated rows of the application's tables up to
// a size, with a publication for a secondary. Its custom-format dump is
// the "pre-deploy dump" a rollback restores, and it is kept in a cache
// directory between runs: a later run restores it instead of generating
// the rows again.
package pgseed

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
)

// version changes whenever the generated rows change, so an old cached dump
// is not taken for a new one.
const version = 2

// Publication is the seeded database's publication (every pggit table).
const Publication = "pggit_bench_pub"

// Migration is the pggit migration a deploy applies and a restore of the
// pre-deploy dump removes.
const Migration = "phase8_analytics_dashboard"

// Options says what to build where.
type Options struct {
	// Admin connects as a superuser to the primary's maintenance database
	// (postgres); the seeded database is created on that server.
	Admin string
	// Database is the seeded database's name.
	Database string
	// SizeMiB is the least size of the application's rows (tables and
	// their TOAST, indexes not counted).
	SizeMiB int
	// BinDir holds psql, pg_dump and pg_restore.
	BinDir string
	// SchemaFile is the pggit schema (test/fixtures/pggit-schema.sql).
	SchemaFile string
	// CacheDir keeps the dump between runs.
	CacheDir string
	// Logf reports progress.
	Logf func(format string, args ...any)
}

// Seed is a seeded database.
type Seed struct {
	// Dump is the pre-deploy dump (custom format) in the cache.
	Dump string
	// DumpBytes is its size; TableBytes the rows' (tables and TOAST),
	// DatabaseBytes the whole database's.
	DumpBytes, TableBytes, DatabaseBytes int64
	// Rows counts the rows of each table, by name.
	Rows map[string]int64
	// How the database came to be: "reused", "restored from the cache"
	// or "generated".
	How string
	// Took is how long Ensure took.
	Took time.Duration
}

// DefaultCacheDir is $XDG_CACHE_HOME/rollguard-bench (~/.cache/rollguard-bench),
// beside the sandbox's cached binaries.
func DefaultCacheDir() string {
	if d, err := os.UserCacheDir(); err == nil {
		return filepath.Join(d, "rollguard-bench")
	}
	return filepath.Join(".cache", "rollguard-bench")
}

// DumpPath is the cache file of a seed of that size.
func (o Options) DumpPath() string {
	return filepath.Join(o.CacheDir, fmt.Sprintf("pggit-%dMiB-v%d.dump", o.SizeMiB, version))
}

func (o Options) marker() string { return fmt.Sprintf("pgseed v%d %d MiB", version, o.SizeMiB) }

// dbDSN is Admin pointed at the seeded database.
func (o Options) dbDSN() (string, error) {
	cfg, err := pgx.ParseConfig(o.Admin)
	if err != nil {
		return "", fmt.Errorf("pgseed: admin DSN: %w", err)
	}
	return fmt.Sprintf("host=%s port=%d user=%s dbname=%s sslmode=disable", cfg.Host, cfg.Port, cfg.User, o.Database), nil
}

// Ensure leaves the database seeded and unmigrated, and the dump in the
// cache. A database already seeded at this size (its comment says so, the
// migration is not applied and its row counts are the dump's) is reused;
// otherwise it is dropped and created again, restored from the cached dump
// when there is one, generated (and then dumped to the cache) when not.
func Ensure(ctx context.Context, o Options) (*Seed, error) {
	start := time.Now()
	if o.Logf == nil {
		o.Logf = func(string, ...any) {}
	}
	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return nil, fmt.Errorf("pgseed: cache: %w", err)
	}
	admin, err := pgx.Connect(ctx, o.Admin)
	if err != nil {
		return nil, fmt.Errorf("pgseed: connect: %w", err)
	}
	defer admin.Close(context.WithoutCancel(ctx))
	dsn, err := o.dbDSN()
	if err != nil {
		return nil, err
	}
	seed := &Seed{Dump: o.DumpPath()}
	_, dumpErr := os.Stat(seed.Dump)

	var comment *string
	err = admin.QueryRow(ctx, `SELECT shobj_description(oid, 'pg_database') FROM pg_database WHERE datname = $1`, o.Database).Scan(&comment)
	exists := err == nil
	if err != nil && !errors.Is(err, pgx.ErrNoRows) {
		return nil, fmt.Errorf("pgseed: look up %s: %w", o.Database, err)
	}
	if exists && dumpErr == nil && comment != nil && strings.HasPrefix(*comment, o.marker()+";") {
		if ok, err := o.intact(ctx, dsn, *comment); err != nil {
			return nil, err
		} else if ok {
			seed.How = "reused"
			return o.finish(ctx, dsn, seed, start)
		}
	}

	if exists {
		o.Logf("dropping %s (not a seed of %d MiB)", o.Database, o.SizeMiB)
		if _, err := admin.Exec(ctx, "DROP DATABASE "+pgx.Identifier{o.Database}.Sanitize()+" WITH (FORCE)"); err != nil {
			return nil, fmt.Errorf("pgseed: drop %s: %w", o.Database, err)
		}
	}
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+pgx.Identifier{o.Database}.Sanitize()); err != nil {
		return nil, fmt.Errorf("pgseed: create %s: %w", o.Database, err)
	}
	if dumpErr == nil {
		o.Logf("restoring %s from the cached dump %s", o.Database, seed.Dump)
		// A new, empty database: parallel jobs are safe here (nothing to
		// keep if it fails; the next run starts over).
		if err := o.run(ctx, "pg_restore", "--exit-on-error", "--jobs=2", "--dbname="+dsn, seed.Dump); err != nil {
			return nil, err
		}
		seed.How = "restored from the cache"
	} else {
		if err := o.generate(ctx, dsn); err != nil {
			return nil, err
		}
		tmp := seed.Dump + ".tmp"
		o.Logf("dumping %s to the cache (%s)", o.Database, seed.Dump)
		if err := o.run(ctx, "pg_dump", "--format=custom", "--file="+tmp, "--dbname="+dsn); err != nil {
			os.Remove(tmp)
			return nil, err
		}
		if err := os.Rename(tmp, seed.Dump); err != nil {
			return nil, fmt.Errorf("pgseed: %w", err)
		}
		seed.How = "generated"
	}
	counts, err := o.counts(ctx, dsn)
	if err != nil {
		return nil, err
	}
	c := o.marker() + ";" + countsString(counts)
	if _, err := admin.Exec(ctx, "COMMENT ON DATABASE "+pgx.Identifier{o.Database}.Sanitize()+" IS "+quote(c)); err != nil {
		return nil, fmt.Errorf("pgseed: mark %s: %w", o.Database, err)
	}
	return o.finish(ctx, dsn, seed, start)
}

func (o Options) finish(ctx context.Context, dsn string, seed *Seed, start time.Time) (*Seed, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgseed: connect %s: %w", o.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if err := conn.QueryRow(ctx, `SELECT sum(pg_table_size(c.oid))::bigint, pg_database_size(current_database())
		FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pggit' AND c.relkind = 'r'`).
		Scan(&seed.TableBytes, &seed.DatabaseBytes); err != nil {
		return nil, fmt.Errorf("pgseed: size of %s: %w", o.Database, err)
	}
	if seed.Rows, err = o.counts(ctx, dsn); err != nil {
		return nil, err
	}
	fi, err := os.Stat(seed.Dump)
	if err != nil {
		return nil, fmt.Errorf("pgseed: %w", err)
	}
	seed.DumpBytes = fi.Size()
	seed.Took = time.Since(start)
	return seed, nil
}

// intact: the migration is not applied and every table has the row count
// the comment recorded when it was seeded.
func (o Options) intact(ctx context.Context, dsn, comment string) (bool, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return false, fmt.Errorf("pgseed: connect %s: %w", o.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	var applied bool
	if err := conn.QueryRow(ctx, `SELECT EXISTS (SELECT 1 FROM pggit.schema_versions WHERE name = $1)`, Migration).Scan(&applied); err != nil {
		return false, nil
	}
	if applied {
		return false, nil
	}
	counts, err := o.counts(ctx, dsn)
	if err != nil {
		return false, nil
	}
	return comment == o.marker()+";"+countsString(counts), nil
}

var tables = []string{"pggit.schema_versions", "pggit.alert_delivery_queue", "pggit.webhook_health_metrics", "pggit.replication_conflict_log"}

// Tables are the seeded tables, schema-qualified.
func Tables() []string { return append([]string(nil), tables...) }

func (o Options) counts(ctx context.Context, dsn string) (map[string]int64, error) {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return nil, fmt.Errorf("pgseed: connect %s: %w", o.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	out := map[string]int64{}
	for _, t := range tables {
		var n int64
		if err := conn.QueryRow(ctx, "SELECT count(*) FROM "+t).Scan(&n); err != nil {
			return nil, fmt.Errorf("pgseed: count %s: %w", t, err)
		}
		out[t] = n
	}
	return out, nil
}

func countsString(c map[string]int64) string {
	var parts []string
	for _, t := range tables {
		parts = append(parts, fmt.Sprintf("%s=%d", t, c[t]))
	}
	return strings.Join(parts, " ")
}

// generate creates the schema and fills it: alert deliveries (about four
// fifths of the size: JSON payloads of a webhook alert) and webhook health
// checks, in batches until the tables reach SizeMiB.
func (o Options) generate(ctx context.Context, dsn string) error {
	o.Logf("generating %d MiB of pggit rows in %s", o.SizeMiB, o.Database)
	if err := o.run(ctx, "psql", "-qAtX", "-v", "ON_ERROR_STOP=1", "--dbname="+dsn, "-f", o.SchemaFile); err != nil {
		return err
	}
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return fmt.Errorf("pgseed: connect %s: %w", o.Database, err)
	}
	defer conn.Close(context.WithoutCancel(ctx))
	stmts := []string{
		"SET ROLE pggit_app",
		`INSERT INTO pggit.schema_versions (name, version, applied_at) VALUES
			('phase6_multi_region', '6.2.0', now() - interval '60 days'),
			('phase7_webhook_health', '7.4.2', now() - interval '14 days')`,
		`INSERT INTO pggit.replication_conflict_log (table_name, conflict_type, detail, resolved, detected_at, resolved_at)
			SELECT 'alert_delivery_queue', (ARRAY['update_missing', 'insert_exists'])[1 + i % 2], 'row ' || i || ' from eu-west', true,
				now() - make_interval(hours => i), now() - make_interval(hours => i) + interval '3 minutes'
			FROM generate_series(1, 2000) AS i`,
		"RESET ROLE",
		// The superuser's, as in the sandbox's pggit database.
		"CREATE PUBLICATION " + Publication + " FOR TABLE " + strings.Join(tables, ", "),
		"SET ROLE pggit_app",
	}
	for _, s := range stmts {
		if _, err := conn.Exec(ctx, s); err != nil {
			return fmt.Errorf("pgseed: %s: %w", firstLine(s), err)
		}
	}
	const batch = 100000
	target := int64(o.SizeMiB) << 20
	var next int64 = 1
	for {
		var size int64
		if err := conn.QueryRow(ctx, `SELECT sum(pg_table_size(c.oid))::bigint FROM pg_class c
			JOIN pg_namespace n ON n.oid = c.relnamespace WHERE n.nspname = 'pggit' AND c.relkind = 'r'`).Scan(&size); err != nil {
			return fmt.Errorf("pgseed: size: %w", err)
		}
		if size >= target {
			break
		}
		o.Logf("  %d of %d MiB", size>>20, o.SizeMiB)
		if _, err := conn.Exec(ctx, `INSERT INTO pggit.alert_delivery_queue (delivery_status, payload, created_at)
			SELECT (ARRAY['delivered', 'delivered', 'delivered', 'failed', 'pending'])[1 + i % 5],
				jsonb_build_object(
					'alert', (ARRAY['disk_usage', 'push_rejected', 'merge_conflict', 'ci_failed'])[1 + i % 4],
					'target', 'https://hooks.example.test/' || (i % 997),
					'repository', 'org-' || (i % 113) || '/repo-' || (i % 7919),
					'commit', md5(i::text),
					'author', 'dev-' || (i % 541) || '@example.test',
					'message', 'Merge ' || md5((i * 31)::text) || ' into main: ' || md5((i * 7)::text) || ' ' || md5((i * 13)::text)),
				now() - make_interval(secs => i)
			FROM generate_series($1::bigint, $2::bigint) AS i`, next, next+batch-1); err != nil {
			return fmt.Errorf("pgseed: insert alert deliveries: %w", err)
		}
		if _, err := conn.Exec(ctx, `INSERT INTO pggit.webhook_health_metrics (webhook_url, health_status, response_time_ms, checked_at)
			SELECT 'https://hooks.example.test/' || (i % 997), (ARRAY['healthy', 'healthy', 'healthy', 'degraded', 'unhealthy'])[1 + i % 5],
				CASE WHEN i % 50 = 0 THEN NULL ELSE 20 + i % 480 END, now() - make_interval(secs => i * 5)
			FROM generate_series($1::bigint, $2::bigint) AS i`, next, next+batch-1); err != nil {
			return fmt.Errorf("pgseed: insert webhook checks: %w", err)
		}
		next += batch
	}
	if _, err := conn.Exec(ctx, "RESET ROLE"); err != nil {
		return err
	}
	_, err = conn.Exec(ctx, "VACUUM ANALYZE")
	return err
}

func (o Options) run(ctx context.Context, bin string, args ...string) error {
	cmd := exec.CommandContext(ctx, filepath.Join(o.BinDir, bin), args...)
	cmd.Env = append(os.Environ(), "PGAPPNAME=pgseed")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return fmt.Errorf("pgseed: %s: %w: %s", bin, err, tail(string(out), 2000))
	}
	return nil
}

func quote(s string) string { return "'" + strings.ReplaceAll(s, "'", "''") + "'" }

func firstLine(s string) string {
	l, _, _ := strings.Cut(strings.TrimSpace(s), "\n")
	return l
}

func tail(s string, n int) string {
	if len(s) > n {
		return "..." + s[len(s)-n:]
	}
	return s
}

// MiB renders a byte count.
func MiB(b int64) string { return strconv.FormatFloat(float64(b)/(1<<20), 'f', 0, 64) + " MiB" }
