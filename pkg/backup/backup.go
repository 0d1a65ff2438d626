// Package backup is the runbook's pre-deployment backup step as a command:
// pg_dump -Fc of a target's rollback database to the configured dumpPath,
// verified with pg_restore before it replaces anything, and described by a
// small JSON record beside it (<dumpPath>.json) that preflight and the
// full rollback read.
//
// The configured path only ever changes by one rename of a complete,
// verified file: the dump is written under a hidden staging name in the
// same directory (database.Dump itself writes a temp file, syncs, reads it
// back and renames), checked again for the expected tables, and only then
// renamed over the old dump. A failure at any point leaves the old dump
// (or nothing) at the final path, never a partial one. The dump it replaces
// is kept as <dumpPath>.prev unless the caller says otherwise: a backup
// taken of an already broken database must not destroy the last good one.
package backup

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/database"
)

// ErrUsage marks an error in what the operator asked for or pointed at
// (the config file, the target, the database or the dump path), as opposed
// to a failure while doing it. The CLI maps it to exit code 2.
var ErrUsage = errors.New("usage error")

// ErrMissingTables: the fresh dump lacks a table the target's
// rollback.database.verifyTables names; it is not published.
var ErrMissingTables = errors.New("dump lacks expected tables")

// RecordVersion is the version of the Record format.
const RecordVersion = 1

// Suffixes of the files kept beside the dump.
const (
	RecordSuffix   = ".json"
	PreviousSuffix = ".prev"
)

// Defaults.
const (
	// DefaultTimeout bounds the whole backup (dump, verification, counts).
	DefaultTimeout = 30 * time.Minute
	// maxCountedTables bounds the row counts taken when verifyTables is
	// empty: count(*) of every table of a big schema would take long and
	// say little.
	maxCountedTables = 50
)

// Options says what to back up.
type Options struct {
	// ConfigFile is loaded (and its secrets resolved) when Config is nil.
	ConfigFile string
	// Config is an already loaded configuration with resolved secrets.
	Config *config.Config
	// Target names the target whose rollback.database is dumped.
	Target string
	// DiscardPrevious replaces the old dump without keeping it as
	// <dumpPath>.prev.
	DiscardPrevious bool
	// Timeout bounds the whole backup; zero means DefaultTimeout.
	Timeout time.Duration
	// Now is the clock (default time.Now).
	Now func() time.Time
	// Logger gets the progress; nil means no logs.
	Logger *zap.Logger
}

// Record describes a published dump. It is written beside the dump as
// <dumpPath>.json; SHA256 ties it to the dump's exact bytes, so a record
// left over from another dump is detected rather than trusted.
type Record struct {
	Version int `json:"version"`
	// Target and Database are the config names.
	Target   string `json:"target"`
	Database string `json:"database"`
	// DatabaseName is the PostgreSQL database dumped.
	DatabaseName string    `json:"databaseName,omitempty"`
	Path         string    `json:"path"`
	Started      time.Time `json:"started"`
	Finished     time.Time `json:"finished"`
	// DurationSeconds covers the dump and its verification.
	DurationSeconds float64 `json:"durationSeconds"`
	SizeBytes       int64   `json:"sizeBytes"`
	SHA256          string  `json:"sha256"`
	// Tables are the tables in the dump ("schema.table", sorted).
	Tables []string `json:"tables"`
	// RowCounts are counted on the live database right after the dump, in
	// one snapshot; rows written between the dump's snapshot and the count
	// make them differ slightly from the dump's own.
	RowCounts map[string]int64 `json:"rowCounts,omitempty"`
	// Previous is where the replaced dump was kept, if any.
	Previous string `json:"previous,omitempty"`
}

// Result is what Run did.
type Result struct {
	Record
	// RecordPath is the JSON record's path.
	RecordPath string `json:"recordPath"`
}

// Summary is one line for the operator: where, how big, how long, what.
func (r *Result) Summary() string {
	s := fmt.Sprintf("backup of target %s (database %s) written to %s: %d bytes in %.1fs, %d tables, sha256 %s",
		r.Target, r.Database, r.Path, r.SizeBytes, r.DurationSeconds, len(r.Tables), r.SHA256)
	if len(r.RowCounts) > 0 {
		keys := make([]string, 0, len(r.RowCounts))
		for k := range r.RowCounts {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		parts := make([]string, len(keys))
		for i, k := range keys {
			parts[i] = fmt.Sprintf("%s=%d", k, r.RowCounts[k])
		}
		s += "; rows " + strings.Join(parts, " ")
	}
	if r.Previous != "" {
		s += "; previous dump kept as " + r.Previous
	}
	return s + "; record " + r.RecordPath
}

// RecordPath is the record file of the dump at dumpPath.
func RecordPath(dumpPath string) string { return dumpPath + RecordSuffix }

// ReadRecord reads the record of the dump at dumpPath.
func ReadRecord(dumpPath string) (*Record, error) {
	p := RecordPath(dumpPath)
	b, err := os.ReadFile(p)
	if err != nil {
		return nil, fmt.Errorf("backup record: %w", err)
	}
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("backup record %s: %w", p, err)
	}
	if r.Version != RecordVersion {
		return nil, fmt.Errorf("backup record %s: version %d, want %d", p, r.Version, RecordVersion)
	}
	return &r, nil
}

// FileSHA256 returns the hex SHA-256 of the file at path.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("hash %s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// Dumper is what Run needs from the database; *database.DB implements it.
type Dumper interface {
	Ping(ctx context.Context) error
	Dump(ctx context.Context, path string) (int64, error)
	ListDump(ctx context.Context, path string) ([]string, error)
	CountRows(ctx context.Context, tables []string) (map[string]int64, error)
}

// Plan is a resolved backup: which database, to where.
type Plan struct {
	Target       string
	Database     string
	DatabaseName string
	Path         string
	VerifyTables []string
	// DSN and BinDir open the database; DSN is a secret.
	DSN    config.Secret
	BinDir string
	// MaxConns and Timeout are the database's settings.
	MaxConns int32
	Timeout  time.Duration
}

// Resolve loads the config (unless given) and finds the target's rollback
// database and dump path, checking the path can be written. Every problem
// wraps ErrUsage.
func Resolve(opts Options) (*Plan, error) {
	cfg := opts.Config
	if cfg == nil {
		if opts.ConfigFile == "" {
			return nil, fmt.Errorf("%w: no config file given", ErrUsage)
		}
		c, err := config.LoadFile(opts.ConfigFile)
		if err != nil {
			return nil, fmt.Errorf("%w: %w", ErrUsage, err)
		}
		if err := c.ResolveSecrets(); err != nil {
			return nil, fmt.Errorf("%w: %s: %w", ErrUsage, opts.ConfigFile, err)
		}
		cfg = c
	}
	t, err := FindTarget(cfg, opts.Target)
	if err != nil {
		return nil, err
	}
	rdb := t.Rollback.Database
	if rdb == nil {
		return nil, fmt.Errorf("%w: target %q has no rollback.database: nothing to back up", ErrUsage, t.Name)
	}
	db, ok := cfg.Global.Database(rdb.Name)
	if !ok {
		return nil, fmt.Errorf("%w: target %q: rollback.database.name %q is not in global.databases", ErrUsage, t.Name, rdb.Name)
	}
	if db.DSN == "" {
		return nil, fmt.Errorf("%w: database %q: connection string not resolved (secrets not read)", ErrUsage, db.Name)
	}
	if err := checkWritable(rdb.DumpPath); err != nil {
		return nil, fmt.Errorf("%w: target %q: dump path: %w", ErrUsage, t.Name, err)
	}
	p := &Plan{
		Target:       t.Name,
		Database:     db.Name,
		Path:         rdb.DumpPath,
		VerifyTables: append([]string(nil), rdb.VerifyTables...),
		DSN:          db.DSN,
		BinDir:       db.BinDir,
		MaxConns:     int32(db.MaxConns),
		Timeout:      time.Duration(db.StatementTimeout),
	}
	return p, nil
}

// FindTarget returns the named target; an unknown name wraps ErrUsage and
// lists the known ones.
func FindTarget(cfg *config.Config, name string) (*config.Target, error) {
	if name == "" {
		return nil, fmt.Errorf("%w: no target given", ErrUsage)
	}
	names := make([]string, 0, len(cfg.Targets))
	for i := range cfg.Targets {
		if cfg.Targets[i].Name == name {
			return &cfg.Targets[i], nil
		}
		names = append(names, cfg.Targets[i].Name)
	}
	return nil, fmt.Errorf("%w: target %q is not in the config (targets: %v)", ErrUsage, name, names)
}

// checkWritable refuses a dump path that is a directory or another
// non-regular file, or whose directory is missing or not writable. The
// directory is probed by creating (and removing) a file, which is what the
// dump will do: permission bits do not tell the whole story (root, ACLs,
// read-only mounts).
func checkWritable(path string) error {
	if fi, err := os.Lstat(path); err == nil {
		switch {
		case fi.IsDir():
			return fmt.Errorf("%s is a directory, not a regular file", path)
		case !fi.Mode().IsRegular():
			return fmt.Errorf("%s exists and is not a regular file (mode %s)", path, fi.Mode())
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return err
	}
	dir := filepath.Dir(path)
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("directory of %s: %w", path, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("%s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".rollguard-probe-*")
	if err != nil {
		return fmt.Errorf("directory %s is not writable: %w", dir, err)
	}
	name := f.Name()
	f.Close()
	return os.Remove(name)
}

// Run takes the backup: it resolves the plan, opens the database (a refused
// connection wraps ErrUsage: nothing was written) and calls RunPlan.
func Run(ctx context.Context, opts Options) (*Result, error) {
	plan, err := Resolve(opts)
	if err != nil {
		return nil, err
	}
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	db, err := database.Open(ctx, database.Options{
		Name: plan.Database, DSN: string(plan.DSN), BinDir: plan.BinDir,
		MaxConns: plan.MaxConns, Timeout: plan.Timeout,
	}, logger)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrUsage, err)
	}
	defer db.Close()
	plan.DatabaseName = databaseName(string(plan.DSN))
	return RunPlan(ctx, db, plan, opts)
}

// RunPlan dumps through d to plan.Path; see the package comment for the
// steps and what a failure leaves behind.
func RunPlan(ctx context.Context, d Dumper, plan *Plan, opts Options) (*Result, error) {
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	timeout := opts.Timeout
	if timeout <= 0 {
		timeout = DefaultTimeout
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	logger = logger.With(zap.String("target", plan.Target), zap.String("database", plan.Database), zap.String("path", plan.Path))

	if err := d.Ping(ctx); err != nil {
		return nil, fmt.Errorf("%w: target %q: %w", ErrUsage, plan.Target, err)
	}

	started := now()
	dir, base := filepath.Split(plan.Path)
	staging := filepath.Join(dir, "."+base+".new-"+randomSuffix())
	stagingRecord := staging + RecordSuffix
	defer func() {
		// Whatever happened, the staging files must not outlive Run; after
		// a successful publish they no longer exist and this is a no-op.
		_ = os.Remove(staging)
		_ = os.Remove(stagingRecord)
	}()

	logger.Info("backup started")
	size, err := d.Dump(ctx, staging)
	if err != nil {
		return nil, fmt.Errorf("backup of target %q to %s: %w", plan.Target, plan.Path, err)
	}
	tables, err := d.ListDump(ctx, staging)
	if err != nil {
		return nil, fmt.Errorf("backup of target %q to %s: %w", plan.Target, plan.Path, err)
	}
	if missing := MissingTables(tables, plan.VerifyTables); len(missing) > 0 {
		return nil, fmt.Errorf("backup of target %q to %s: %w: %v (the previous dump is left in place)", plan.Target, plan.Path, ErrMissingTables, missing)
	}
	counted := plan.VerifyTables
	if len(counted) == 0 {
		counted = tables
		if len(counted) > maxCountedTables {
			counted = counted[:maxCountedTables]
		}
	}
	counts, err := d.CountRows(ctx, counted)
	if err != nil {
		return nil, fmt.Errorf("backup of target %q to %s: count rows: %w", plan.Target, plan.Path, err)
	}
	sum, err := FileSHA256(staging)
	if err != nil {
		return nil, fmt.Errorf("backup of target %q to %s: %w", plan.Target, plan.Path, err)
	}
	finished := now()

	rec := Record{
		Version: RecordVersion, Target: plan.Target, Database: plan.Database, DatabaseName: plan.DatabaseName,
		Path: plan.Path, Started: started.UTC(), Finished: finished.UTC(),
		DurationSeconds: finished.Sub(started).Seconds(), SizeBytes: size, SHA256: sum,
		Tables: tables, RowCounts: counts,
	}
	prev, err := publish(plan.Path, staging, stagingRecord, &rec, !opts.DiscardPrevious)
	if err != nil {
		return nil, fmt.Errorf("backup of target %q to %s: %w", plan.Target, plan.Path, err)
	}
	rec.Previous = prev

	logger.Info("backup published",
		zap.Int64("bytes", size), zap.Duration("duration", finished.Sub(started)),
		zap.Int("tables", len(tables)), zap.Any("rowCounts", counts), zap.String("previous", prev))
	return &Result{Record: rec, RecordPath: RecordPath(plan.Path)}, nil
}

// publish moves the verified staging dump to path, keeping the old dump as
// path.prev when keep is set, and writes the record. The old dump is
// hard-linked to .prev before the rename so the final path is never
// without a dump. The record is written to a staging file first and
// renamed after the dump: a crash in between leaves the old record, whose
// SHA-256 no longer matches, never a record that claims a dump it is not.
func publish(path, staging, stagingRecord string, rec *Record, keep bool) (previous string, err error) {
	if keep {
		if _, err := os.Lstat(path); err == nil {
			previous = path + PreviousSuffix
			if err := replaceWithLink(path, previous); err != nil {
				return "", fmt.Errorf("keep previous dump: %w", err)
			}
			if _, err := os.Lstat(RecordPath(path)); err == nil {
				if err := replaceWithLink(RecordPath(path), RecordPath(previous)); err != nil {
					return "", fmt.Errorf("keep previous record: %w", err)
				}
			} else if err := os.Remove(RecordPath(previous)); err != nil && !errors.Is(err, os.ErrNotExist) {
				// A record of an older .prev would describe the wrong file.
				return "", fmt.Errorf("remove stale previous record: %w", err)
			}
		}
	}
	rec.Previous = previous
	if err := writeFileSync(stagingRecord, rec); err != nil {
		return "", err
	}
	// One rename replaces the old dump atomically: a reader sees the old
	// file or the new one, never a mix.
	if err := os.Rename(staging, path); err != nil {
		return "", fmt.Errorf("publish dump: %w", err)
	}
	if err := os.Rename(stagingRecord, RecordPath(path)); err != nil {
		return previous, fmt.Errorf("publish record: %w", err)
	}
	if err := syncDir(filepath.Dir(path)); err != nil {
		return previous, err
	}
	return previous, nil
}

// replaceWithLink makes dst a hard link to src, replacing dst.
func replaceWithLink(src, dst string) error {
	tmp := dst + ".tmp-" + randomSuffix()
	if err := os.Link(src, tmp); err != nil {
		return err
	}
	if err := os.Rename(tmp, dst); err != nil {
		_ = os.Remove(tmp)
		return err
	}
	return nil
}

func writeFileSync(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return fmt.Errorf("encode record: %w", err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("write record: %w", err)
	}
	if _, err := f.Write(append(b, '\n')); err != nil {
		f.Close()
		return fmt.Errorf("write record %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("sync record %s: %w", path, err)
	}
	return f.Close()
}

func syncDir(dir string) error {
	f, err := os.Open(dir)
	if err != nil {
		return fmt.Errorf("sync directory: %w", err)
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}

// MissingTables returns the tables of want that the dump listing have
// lacks, sorted.
func MissingTables(have, want []string) []string {
	set := make(map[string]bool, len(have))
	for _, t := range have {
		set[t] = true
	}
	var missing []string
	for _, t := range want {
		if !set[t] {
			missing = append(missing, t)
		}
	}
	sort.Strings(missing)
	return missing
}

// databaseName is the PostgreSQL database a DSN connects to, for the
// record; empty when it cannot be parsed (the DSN itself is never shown).
func databaseName(dsn string) string {
	cfg, err := pgconn.ParseConfig(dsn)
	if err != nil {
		return ""
	}
	return cfg.Database
}

func randomSuffix() string {
	var b [6]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
