package database

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"
)

// stderrTail is how much of a command's stderr an error carries: enough for
// pg_restore's last messages, bounded so a noisy failure cannot bloat logs.
const stderrTail = 4 << 10

// dumpCompression is the gzip level of a dump (pg_dump's default is 6).
// A dump is taken in the middle of a rollback, with the application
// stopped, and pg_dump 15 compresses on the one thread that also reads the
// rows: at level 6 most of its time is compression. make bench, 632 MiB
// pggit database: 16.1 s and 127 MiB at the default, 6.8 s and 139 MiB at
// 1, 4.9 s and 471 MiB uncompressed; a directory-format dump with --jobs=2
// took as long as level 1 (two big tables, two cores shared with the
// server). Level 1 keeps the file within 10 % of the default's size.
const dumpCompression = "1"

// Dump writes a custom-format (pg_dump -Fc) dump of the database to path and
// returns its size. The file appears complete or not at all: pg_dump writes
// a temporary file in the same directory, which is synced, read back in full
// by pg_restore (a truncated archive fails there), renamed into place, and
// the directory is synced so the rename survives a crash. An existing path
// is never replaced (ErrDumpExists): a forensic dump must not overwrite the
// pre-deploy dump. Rollguard is the only writer (leader election), so the
// existence check before the rename is not raced.
func (d *DB) Dump(ctx context.Context, path string) (int64, error) {
	start := time.Now()
	if path == "" {
		return 0, fmt.Errorf("database %s: dump: %w: empty path", d.name, ErrInvalidArgument)
	}
	if _, err := os.Lstat(path); err == nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, ErrDumpExists)
	} else if !errors.Is(err, os.ErrNotExist) {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, err)
	}
	dir, base := filepath.Split(path)
	if dir == "" {
		dir = "."
	}
	// CreateTemp makes the file 0600: a dump holds every row.
	tmp, err := os.CreateTemp(dir, "."+base+".tmp-*")
	if err != nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, err)
	}
	tmpName := tmp.Name()
	tmp.Close()
	published := false
	defer func() {
		if !published {
			os.Remove(tmpName)
		}
	}()

	// --file (not stdout) so pg_dump can seek back and record data offsets
	// in the archive's table of contents.
	if _, err := d.run(ctx, d.pgDump, "--format=custom", "--compress="+dumpCompression, "--no-password", "--file="+tmpName); err != nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, err)
	}
	if err := syncFile(tmpName); err != nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, err)
	}
	if _, err := d.verify(ctx, tmpName); err != nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, err)
	}
	fi, err := os.Stat(tmpName)
	if err != nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, err)
	}
	if _, err := os.Lstat(path); err == nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, ErrDumpExists)
	}
	if err := os.Rename(tmpName, path); err != nil {
		return 0, fmt.Errorf("database %s: dump to %s: %w", d.name, path, err)
	}
	published = true
	if err := syncFile(dir); err != nil {
		return 0, fmt.Errorf("database %s: dump to %s: sync directory: %w", d.name, path, err)
	}
	d.logger.Info("database dumped", zap.String("path", path), zap.Int64("bytes", fi.Size()), zap.Duration("duration", time.Since(start)))
	return fi.Size(), nil
}

// Restore replaces the database's contents with the dump at path, in place:
// pg_restore --clean --if-exists --single-transaction. The whole restore is
// one transaction (which implies --exit-on-error), so a missing, truncated
// or failing dump changes nothing: a missing file or one whose table of
// contents cannot be read is refused before anything runs, and an archive
// cut short fails inside the transaction, which is rolled back (both
// ErrDumpInvalid). The dump is not read in full beforehand as Dump's is:
// the transaction already guarantees it, and the pre-deployment checklist
// (pkg/preflight) reads the pre-deploy dump in full when it is taken; the
// extra pass cost 2.4 s of a 632 MiB database's 25 s rollback (make bench).
//
// Ownership and privileges are restored as dumped (no --no-owner): this is
// the same database, and --no-owner would hand every object to the restoring
// role and drop the application's grants. The DSN's role must therefore be
// able to SET those owners (a superuser, as in the runbook).
//
// Subscriptions are not touched (--no-subscriptions): they are topology,
// not data, and --clean would DROP SUBSCRIPTION, which also drops its slot
// on the publisher.
//
// Publications ARE restored as dumped. Observed on PostgreSQL 15 with the
// sandbox pair (publication FOR TABLE, subscriber enabled):
//   - as here: --clean drops and recreates the publication (new OID) and the
//     tables; the subscriber's walsender, decoding WAL from before the
//     restore, fails with `publication "pggit_pub" does not exist` and the
//     apply worker restarts into the same error for good.
//   - with --no-publications: the publication object survives (same OID)
//     but DROP TABLE removed its tables and the membership entries
//     (PUBLICATION TABLE) are skipped too, so it publishes nothing: no error
//     anywhere, replication just stops, and the subscriber keeps the rows
//     the restore removed. Silent is worse, so we do not use it.
//
// Either way a secondary is stale after an in-place restore of its primary
// (DROP/CREATE TABLE are not replicated): disable its subscription before
// the restore (multi-region step 2) and call ResyncSubscription on it after.
func (d *DB) Restore(ctx context.Context, path string) error {
	start := time.Now()
	if _, err := d.toc(ctx, path); err != nil {
		return fmt.Errorf("database %s: restore %s: %w", d.name, path, err)
	}
	_, err := d.run(ctx, d.pgRestore,
		"--clean", "--if-exists", "--single-transaction", "--exit-on-error",
		"--no-subscriptions", "--no-password",
		"--dbname="+conninfoValue("dbname", d.conn.Database), path)
	if err != nil && archiveUnreadable(err) {
		return fmt.Errorf("database %s: restore %s (rolled back): %w: %w", d.name, path, ErrDumpInvalid, err)
	}
	if err != nil {
		return fmt.Errorf("database %s: restore %s: %w", d.name, path, err)
	}
	d.logger.Info("database restored", zap.String("path", path), zap.Duration("duration", time.Since(start)))
	return nil
}

// RestoreInto restores the dump into another, existing database on the same
// server (a scratch copy to test a backup, the runbook's pre-deploy
// checklist). Owners, privileges, publications and subscriptions are left
// out: the copy must not replicate or depend on the original's roles.
func (d *DB) RestoreInto(ctx context.Context, path, database string) error {
	if database == "" {
		return fmt.Errorf("database %s: restore %s: %w: empty target database", d.name, path, ErrInvalidArgument)
	}
	if database == d.conn.Database {
		return fmt.Errorf("database %s: restore %s: %w: target is this database, use Restore", d.name, path, ErrInvalidArgument)
	}
	if _, err := d.verify(ctx, path); err != nil {
		return fmt.Errorf("database %s: restore %s into %s: %w", d.name, path, database, err)
	}
	_, err := d.run(ctx, d.pgRestore,
		"--single-transaction", "--exit-on-error", "--no-owner", "--no-privileges",
		"--no-publications", "--no-subscriptions", "--no-password",
		"--dbname="+conninfoValue("dbname", database), path)
	if err != nil {
		return fmt.Errorf("database %s: restore %s into %s: %w", d.name, path, database, err)
	}
	return nil
}

// ListDump returns the tables ("schema.table", sorted) in the dump's table
// of contents (pg_restore --list), after reading the whole archive so a
// truncated dump is reported as ErrDumpInvalid.
func (d *DB) ListDump(ctx context.Context, path string) ([]string, error) {
	a, err := d.verify(ctx, path)
	if err != nil {
		return nil, fmt.Errorf("database %s: list dump %s: %w", d.name, path, err)
	}
	return tablesOf(a.entries), nil
}

// InspectDump verifies that path is a complete archive (read in full, as
// Dump reads its own) and returns when it was taken and its size. The time
// is the archive header's "Archive created at" when it names UTC or a
// numeric offset, else the file's modification time (a zone abbreviation
// cannot be resolved safely).
//
// A file this DB has already read in full, and that is still the same file
// unchanged (device, inode, size, modification and change time; a user can
// set the modification time but not the change time), has its table of
// contents read again but not its data. A rollback inspects the pre-deploy
// dump at its preflight, before anything is stopped, and again right
// before pg_restore: the second full read cost 2.7–5.8 s of a multi-region
// rollback (make bench), and the restore's single transaction refuses a
// truncated archive anyway.
func (d *DB) InspectDump(ctx context.Context, path string) (created time.Time, size int64, err error) {
	a, err := d.verifyOnce(ctx, path)
	if err != nil {
		return time.Time{}, 0, fmt.Errorf("database %s: inspect dump %s: %w", d.name, path, err)
	}
	created = a.created
	if created.IsZero() {
		created = a.info.ModTime()
	}
	return created, a.info.Size(), nil
}

// archive is what toc learns of a dump.
type archive struct {
	entries []TOCEntry
	info    os.FileInfo
	created time.Time // zero when the header's time cannot be read safely
}

// verify checks path is a complete, readable custom-format archive: its
// table of contents parses and is not empty, and pg_restore can read every
// entry (writing the SQL script to /dev/null). --list alone reads only the
// header and would accept a dump cut off in its data.
func (d *DB) verify(ctx context.Context, path string) (archive, error) {
	a, err := d.toc(ctx, path)
	if err != nil {
		return archive{}, err
	}
	if _, err := d.run(ctx, d.pgRestore, "--file="+os.DevNull, path); err != nil {
		return archive{}, fmt.Errorf("%w: %w", ErrDumpInvalid, err)
	}
	return a, nil
}

// verifyOnce is verify, skipping the full read of a file already read in
// full and unchanged since.
func (d *DB) verifyOnce(ctx context.Context, path string) (archive, error) {
	a, err := d.toc(ctx, path)
	if err != nil {
		return archive{}, err
	}
	before, ok := idOf(a.info)
	d.mu.Lock()
	seen, had := d.readBack[path]
	d.mu.Unlock()
	if ok && had && seen == before {
		d.logger.Debug("dump read in full before and unchanged since", zap.String("path", path))
		return a, nil
	}
	if _, err := d.run(ctx, d.pgRestore, "--file="+os.DevNull, path); err != nil {
		return archive{}, fmt.Errorf("%w: %w", ErrDumpInvalid, err)
	}
	// Remembered only when nothing changed the file during the read.
	if fi, err := os.Stat(path); ok && err == nil {
		if after, ok := idOf(fi); ok && after == before {
			d.mu.Lock()
			if d.readBack == nil {
				d.readBack = map[string]fileID{}
			}
			d.readBack[path] = after
			d.mu.Unlock()
		}
	}
	return a, nil
}

// archiveUnreadable: pg_restore failed reading the archive itself (cut
// short, not an archive), not applying it.
func archiveUnreadable(err error) bool {
	msg := err.Error()
	for _, s := range []string{"could not read from input file", "does not appear to be a valid archive", "did not find magic string", "unexpected end of file"} {
		if strings.Contains(msg, s) {
			return true
		}
	}
	return false
}

// toc reads path's table of contents (pg_restore --list): the file exists,
// is a custom-format archive and lists something. It does not read the
// data.
func (d *DB) toc(ctx context.Context, path string) (archive, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return archive{}, fmt.Errorf("%w: %w", ErrDumpInvalid, err)
	}
	if !fi.Mode().IsRegular() {
		return archive{}, fmt.Errorf("%w: not a regular file", ErrDumpInvalid)
	}
	out, err := d.run(ctx, d.pgRestore, "--list", path)
	if err != nil {
		return archive{}, fmt.Errorf("%w: %w", ErrDumpInvalid, err)
	}
	entries, err := ParseTOC(strings.NewReader(out))
	if err != nil {
		return archive{}, fmt.Errorf("%w: %w", ErrDumpInvalid, err)
	}
	if len(entries) == 0 {
		return archive{}, fmt.Errorf("%w: empty table of contents", ErrDumpInvalid)
	}
	return archive{entries: entries, info: fi, created: ArchiveCreated(out)}, nil
}

// ArchiveCreated reads the "; Archive created at ..." line of pg_restore
// --list output. It returns the zero time unless the zone is UTC, GMT or a
// numeric offset: Go would read any other abbreviation as UTC+0 silently.
func ArchiveCreated(list string) time.Time {
	for _, line := range strings.Split(list, "\n") {
		rest, ok := strings.CutPrefix(strings.TrimSpace(line), "; Archive created at ")
		if !ok {
			continue
		}
		rest = strings.TrimSpace(rest)
		for _, zone := range []string{" UTC", " GMT"} {
			if v, ok := strings.CutSuffix(rest, zone); ok {
				if t, err := time.ParseInLocation(time.DateTime, v, time.UTC); err == nil {
					return t
				}
			}
		}
		for _, layout := range []string{time.DateTime + " -0700", time.DateTime + " -07"} {
			if t, err := time.Parse(layout, rest); err == nil {
				return t
			}
		}
		return time.Time{}
	}
	return time.Time{}
}

// TOCEntry is one line of pg_restore --list.
type TOCEntry struct {
	ID     int
	Desc   string // TABLE, TABLE DATA, INDEX, PUBLICATION, ...
	Schema string // "" when the object has none ("-")
	Name   string
	Owner  string
}

// tocDescs are the multi-word object kinds pg_dump writes; the rest are one
// word. Longest first, so "TABLE DATA" wins over "TABLE".
var tocDescs = []string{
	"PUBLICATION TABLES IN SCHEMA", "DEFAULT ACL", "FK CONSTRAINT", "TABLE DATA",
	"SEQUENCE SET", "SEQUENCE OWNED BY", "MATERIALIZED VIEW DATA", "MATERIALIZED VIEW",
	"PUBLICATION TABLE", "TEXT SEARCH CONFIGURATION", "TEXT SEARCH DICTIONARY",
	"TEXT SEARCH PARSER", "TEXT SEARCH TEMPLATE", "FOREIGN TABLE", "FOREIGN DATA WRAPPER",
	"USER MAPPING", "EVENT TRIGGER", "LARGE OBJECT", "BLOB METADATA", "BLOBS",
	"DATABASE PROPERTIES", "SERVER", "ROW SECURITY", "POLICY", "STATISTICS DATA",
	"CHECK CONSTRAINT", "OPERATOR CLASS", "OPERATOR FAMILY", "ACCESS METHOD",
	"SHELL TYPE", "TRANSFORM", "CAST",
}

// ParseTOC parses pg_restore --list output. Lines are
// "ID; CATALOG OID DESC SCHEMA NAME OWNER"; comment lines start with ";".
// Object names with spaces are rare and ambiguous in this format: the
// schema is the first word and the owner the last, the name what is left.
func ParseTOC(r io.Reader) ([]TOCEntry, error) {
	var entries []TOCEntry
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, ";") {
			continue
		}
		idText, rest, ok := strings.Cut(line, ";")
		if !ok {
			return nil, fmt.Errorf("toc line %d: no entry id: %q", n, line)
		}
		id, err := strconv.Atoi(strings.TrimSpace(idText))
		if err != nil {
			return nil, fmt.Errorf("toc line %d: entry id: %w", n, err)
		}
		fields := strings.Fields(rest)
		// catalog oid, object oid, desc (>=1 word), schema, name (>=1), owner
		if len(fields) < 6 {
			return nil, fmt.Errorf("toc line %d: too few fields: %q", n, line)
		}
		for _, f := range fields[:2] {
			if _, err := strconv.ParseUint(f, 10, 32); err != nil {
				return nil, fmt.Errorf("toc line %d: oid %q: %w", n, f, err)
			}
		}
		body := strings.Join(fields[2:], " ")
		desc := fields[2]
		for _, d := range tocDescs {
			if strings.HasPrefix(body, d+" ") {
				desc = d
				break
			}
		}
		tail := strings.Fields(strings.TrimPrefix(body, desc+" "))
		if len(tail) < 3 {
			return nil, fmt.Errorf("toc line %d: too few fields after %s: %q", n, desc, line)
		}
		e := TOCEntry{
			ID:     id,
			Desc:   desc,
			Schema: tail[0],
			Name:   strings.Join(tail[1:len(tail)-1], " "),
			Owner:  tail[len(tail)-1],
		}
		if e.Schema == "-" {
			e.Schema = ""
		}
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read toc: %w", err)
	}
	return entries, nil
}

// tablesOf returns the TABLE entries as sorted "schema.table".
func tablesOf(entries []TOCEntry) []string {
	var tables []string
	for _, e := range entries {
		if e.Desc != "TABLE" {
			continue
		}
		if e.Schema == "" {
			tables = append(tables, e.Name)
			continue
		}
		tables = append(tables, e.Schema+"."+e.Name)
	}
	sort.Strings(tables)
	return tables
}

// run executes a PostgreSQL client binary with the connection in the
// environment and returns its stdout. Errors wrap ErrCommandFailed with
// the tail of stderr.
func (d *DB) run(ctx context.Context, bin string, args ...string) (string, error) {
	cmd := d.command(ctx, bin, args...)
	var stdout strings.Builder
	stderr := &tailBuffer{max: stderrTail}
	cmd.Stdout = &stdout
	cmd.Stderr = stderr
	d.logger.Debug("running postgres client", zap.String("binary", filepath.Base(bin)), zap.Strings("args", args))
	start := time.Now()
	defer func() {
		d.logger.Debug("postgres client done", zap.String("binary", filepath.Base(bin)), zap.String("what", clientWhat(args)),
			zap.Float64("seconds", time.Since(start).Seconds()))
	}()
	if err := cmd.Run(); err != nil {
		if ctxErr := ctx.Err(); ctxErr != nil {
			return "", fmt.Errorf("%s: %w: %w (stderr: %s)", filepath.Base(bin), ErrCommandFailed, ctxErr, stderr.String())
		}
		return "", fmt.Errorf("%s: %w: %w (stderr: %s)", filepath.Base(bin), ErrCommandFailed, err, stderr.String())
	}
	return stdout.String(), nil
}

// clientWhat names what a pg_dump or pg_restore run does, for the timing
// log: the dump, reading an archive back (list or read in full), or the
// restore.
func clientWhat(args []string) string {
	for _, a := range args {
		switch {
		case a == "--list":
			return "list"
		case a == "--file="+os.DevNull:
			return "read back"
		case strings.HasPrefix(a, "--dbname="):
			return "restore"
		}
	}
	return "dump"
}

// command builds the exec.Cmd. The connection goes in PG* environment
// variables, never in argv: argv is world-readable in /proc and ps.
func (d *DB) command(ctx context.Context, bin string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, bin, args...)
	cmd.Env = clientEnv(os.Environ(), d.conn)
	// SIGTERM first: pg_dump/pg_restore then close their connections and
	// the server rolls back the restore transaction at once.
	cmd.Cancel = func() error { return cmd.Process.Signal(syscall.SIGTERM) }
	cmd.WaitDelay = 5 * time.Second
	return cmd
}

// inheritedPG are the PG* variables kept from the process environment: TLS
// file locations, which a parsed pgconn.Config does not retain. Every other
// PG* variable (PGSERVICE, PGOPTIONS, a stray PGPASSWORD ...) is dropped so
// the binaries connect exactly where the pool does.
var inheritedPG = map[string]bool{
	"PGSSLROOTCERT": true, "PGSSLCERT": true, "PGSSLKEY": true, "PGSSLCRL": true,
}

// clientEnv returns base without its PG* variables, plus the connection
// settings of cfg as libpq environment variables.
func clientEnv(base []string, cfg *pgconn.Config) []string {
	env := make([]string, 0, len(base)+8)
	for _, kv := range base {
		k, _, _ := strings.Cut(kv, "=")
		if strings.HasPrefix(k, "PG") && !inheritedPG[k] {
			continue
		}
		env = append(env, kv)
	}
	add := func(k, v string) {
		if v != "" {
			env = append(env, k+"="+v)
		}
	}
	add("PGHOST", cfg.Host)
	if cfg.Port != 0 {
		add("PGPORT", strconv.Itoa(int(cfg.Port)))
	}
	add("PGUSER", cfg.User)
	add("PGPASSWORD", cfg.Password)
	add("PGDATABASE", cfg.Database)
	add("PGSSLMODE", sslMode(cfg))
	if cfg.ConnectTimeout > 0 {
		// libpq takes whole seconds, minimum 2.
		add("PGCONNECT_TIMEOUT", strconv.Itoa(max(2, int(cfg.ConnectTimeout.Round(time.Second)/time.Second))))
	}
	add("PGAPPNAME", "rollguard")
	return env
}

// sslMode recovers the libpq sslmode from the TLS configs pgconn built for
// it (pgconn keeps no sslmode field): prefer and allow are a TLS and a
// plaintext attempt to the same host, verify-full is the only mode that
// checks the certificate the standard way, verify-ca checks it in
// VerifyPeerCertificate.
func sslMode(cfg *pgconn.Config) string {
	var fallbackPlain, fallbackTLS bool
	for _, fb := range cfg.Fallbacks {
		if fb.Host != cfg.Host || fb.Port != cfg.Port {
			continue
		}
		if fb.TLSConfig == nil {
			fallbackPlain = true
		} else {
			fallbackTLS = true
		}
	}
	switch {
	case cfg.TLSConfig == nil && fallbackTLS:
		return "allow"
	case cfg.TLSConfig == nil:
		return "disable"
	case fallbackPlain:
		return "prefer"
	case !cfg.TLSConfig.InsecureSkipVerify:
		return "verify-full"
	case cfg.TLSConfig.VerifyPeerCertificate != nil:
		return "verify-ca"
	default:
		return "require"
	}
}

// conninfoValue renders key='value' for a libpq connection string, so a
// database name with spaces or '=' cannot be misread.
func conninfoValue(key, value string) string {
	r := strings.NewReplacer(`\`, `\\`, `'`, `\'`)
	return key + "='" + r.Replace(value) + "'"
}

func syncFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	if err := f.Sync(); err != nil {
		return fmt.Errorf("sync %s: %w", path, err)
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	max       int
	buf       []byte
	truncated bool
}

func (b *tailBuffer) Write(p []byte) (int, error) {
	b.buf = append(b.buf, p...)
	if over := len(b.buf) - b.max; over > 0 {
		b.buf = append(b.buf[:0], b.buf[over:]...)
		b.truncated = true
	}
	return len(p), nil
}

func (b *tailBuffer) String() string {
	s := strings.TrimSpace(string(b.buf))
	if b.truncated {
		return "..." + s
	}
	return s
}
