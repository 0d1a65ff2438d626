package preflight

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"sort"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollguard/rollguard/pkg/backup"
	"github.com/rollguard/rollguard/pkg/database"
)

// backupChecks: the dump exists and is fresh, pg_restore reads it and it
// holds the expected tables, its record matches it, and (on request) it
// restores into a scratch database.
func (r *runner) backupChecks(ctx context.Context) []Check {
	rdb := r.t.Rollback.Database
	if rdb == nil {
		return []Check{{Item: ItemBackup, Name: "backup.dump", Status: StatusWarn,
			Evidence: "target has no rollback.database: no pre-deploy dump is configured, a full rollback cannot restore data"}}
	}
	var fi os.FileInfo
	dump := r.check(ctx, ItemBackup, "backup.dump", r.opts.CheckTimeout, func(context.Context) (Status, string) {
		var st Status
		var ev string
		fi, st, ev = r.dumpFile(rdb.DumpPath, time.Duration(rdb.MaxDumpAge))
		return st, ev
	})
	checks := []Check{dump, r.check(ctx, ItemBackup, "backup.forensic-dir", r.opts.CheckTimeout, func(context.Context) (Status, string) {
		return forensicDir(rdb.ForensicDir)
	})}
	if fi == nil {
		// Nothing to read: the other backup checks would only repeat it.
		return append(checks,
			Check{Item: ItemBackup, Name: "backup.contents", Status: StatusSkip, Evidence: "no dump to read"},
			Check{Item: ItemBackup, Name: "backup.restore-test", Status: StatusSkip, Evidence: "no dump to restore"})
	}

	var tables []string
	checks = append(checks, r.check(ctx, ItemBackup, "backup.contents", r.opts.RestoreTimeout, func(ctx context.Context) (Status, string) {
		db, err := r.db(ctx, rdb.Name)
		if err != nil {
			return StatusFail, "cannot read the dump: " + err.Error()
		}
		tables, err = db.ListDump(ctx, rdb.DumpPath)
		if err != nil {
			return StatusFail, err.Error()
		}
		if missing := backup.MissingTables(tables, rdb.VerifyTables); len(missing) > 0 {
			return StatusFail, fmt.Sprintf("pg_restore reads %d tables but not the expected %s", len(tables), strings.Join(missing, ", "))
		}
		if len(tables) == 0 {
			return StatusFail, "pg_restore --list shows no table"
		}
		ev := fmt.Sprintf("pg_restore reads the whole archive: %d tables", len(tables))
		if len(rdb.VerifyTables) > 0 {
			ev += ", including " + strings.Join(rdb.VerifyTables, ", ")
		} else {
			ev += " (no verifyTables configured to expect)"
		}
		return StatusPass, ev
	}))

	checks = append(checks, r.check(ctx, ItemBackup, "backup.record", r.opts.CheckTimeout, func(context.Context) (Status, string) {
		return recordCheck(rdb.DumpPath, fi)
	}))

	if !r.opts.RestoreTest {
		return append(checks, Check{Item: ItemBackup, Name: "backup.restore-test", Status: StatusSkip, Evidence: "not requested (--restore-test)"})
	}
	if checks[2].Status == StatusFail {
		return append(checks, Check{Item: ItemBackup, Name: "backup.restore-test", Status: StatusSkip, Evidence: "the dump is not readable"})
	}
	return append(checks, r.check(ctx, ItemBackup, "backup.restore-test", r.opts.RestoreTimeout, func(ctx context.Context) (Status, string) {
		return r.restoreTest(ctx, rdb.Name, rdb.DumpPath, rdb.VerifyTables)
	}))
}

// dumpFile checks the dump is a non-empty regular file no older than
// maxAge. fi is nil when there is nothing to read.
func (r *runner) dumpFile(path string, maxAge time.Duration) (os.FileInfo, Status, string) {
	fi, err := os.Stat(path)
	if errors.Is(err, os.ErrNotExist) {
		return nil, StatusFail, fmt.Sprintf("dump %s is missing: run `rollguard backup --target %s`", path, r.t.Name)
	}
	if err != nil {
		return nil, StatusFail, fmt.Sprintf("dump %s: %v", path, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, StatusFail, fmt.Sprintf("dump %s is not a regular file (%s)", path, fi.Mode().Type())
	}
	if fi.Size() == 0 {
		return nil, StatusFail, fmt.Sprintf("dump %s is empty", path)
	}
	age := r.now().Sub(fi.ModTime())
	desc := fmt.Sprintf("dump %s: %d bytes, written %s (%s ago)", path, fi.Size(), fi.ModTime().UTC().Format(time.RFC3339), ago(age))
	if maxAge > 0 && age > maxAge {
		return fi, StatusFail, fmt.Sprintf("%s: older than maxDumpAge %s: take a fresh backup", desc, maxAge)
	}
	if age < -time.Minute {
		return fi, StatusWarn, desc + ": written in the future, check the clocks"
	}
	return fi, StatusPass, fmt.Sprintf("%s, within maxDumpAge %s", desc, maxAge)
}

// forensicDir checks the directory the rollback's forensic dump goes to:
// the executor does not create it, and a full rollback stops at that step
// when it cannot write there. Probed by creating a file, as the dump will.
func forensicDir(dir string) (Status, string) {
	fi, err := os.Stat(dir)
	if err != nil {
		return StatusFail, fmt.Sprintf("forensic dump directory: %v: the rollback's forensic dump would fail", err)
	}
	if !fi.IsDir() {
		return StatusFail, fmt.Sprintf("forensic dump directory %s is not a directory", dir)
	}
	f, err := os.CreateTemp(dir, ".rollguard-preflight-*")
	if err != nil {
		return StatusFail, fmt.Sprintf("forensic dump directory %s is not writable: %v", dir, err)
	}
	name := f.Name()
	f.Close()
	if err := os.Remove(name); err != nil {
		return StatusWarn, fmt.Sprintf("forensic dump directory %s: probe file %s not removed: %v", dir, name, err)
	}
	return StatusPass, fmt.Sprintf("forensic dump directory %s is writable", dir)
}

// recordCheck compares the record `rollguard backup` left beside the dump
// with the dump itself. A dump taken by hand has none: a warning, since
// the runbook's pg_dump is just as good, but its row counts are unknown.
func recordCheck(path string, fi os.FileInfo) (Status, string) {
	rec, err := backup.ReadRecord(path)
	if errors.Is(err, os.ErrNotExist) {
		return StatusWarn, fmt.Sprintf("no record %s: the dump was not taken by `rollguard backup`, its row counts are unknown", backup.RecordPath(path))
	}
	if err != nil {
		return StatusWarn, err.Error()
	}
	sum, err := backup.FileSHA256(path)
	if err != nil {
		return StatusWarn, fmt.Sprintf("hash dump: %v", err)
	}
	if rec.SHA256 != sum || rec.SizeBytes != fi.Size() {
		return StatusWarn, fmt.Sprintf("record %s describes another dump (sha256 %s, %d bytes; the dump is %s, %d bytes)",
			backup.RecordPath(path), short(rec.SHA256), rec.SizeBytes, short(sum), fi.Size())
	}
	return StatusPass, fmt.Sprintf("record matches the dump (sha256 %s): taken %s from database %s in %.1fs, %d tables, rows %s",
		short(sum), rec.Finished.UTC().Format(time.RFC3339), rec.Database, rec.DurationSeconds, len(rec.Tables), countsString(rec.RowCounts))
}

// restoreTest restores the dump into a new scratch database on the same
// server, counts the expected tables there, and drops it whatever
// happened. The scratch name is unique so two preflights cannot collide.
func (r *runner) restoreTest(ctx context.Context, dbName, path string, tables []string) (Status, string) {
	db, err := r.db(ctx, dbName)
	if err != nil {
		return StatusFail, err.Error()
	}
	dsn, err := r.dsn(dbName)
	if err != nil {
		return StatusFail, err.Error()
	}
	admin, err := connect(ctx, dsn, "")
	if err != nil {
		return StatusFail, fmt.Sprintf("database %s: connect to create the scratch database: %v", dbName, err)
	}
	defer admin.Close(context.WithoutCancel(ctx))

	scratch := "rollguard_preflight_" + randomHex(6)
	ident := pgx.Identifier{scratch}.Sanitize()
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+ident); err != nil {
		return StatusFail, fmt.Sprintf("database %s: create scratch database %s: %v", dbName, scratch, err)
	}
	dropped := func() string {
		// A fresh context: the restore may have used up ctx, and the
		// scratch copy (every row of production) must not be left behind.
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.opts.CheckTimeout)
		defer cancel()
		if _, err := admin.Exec(dctx, "DROP DATABASE IF EXISTS "+ident+" WITH (FORCE)"); err != nil {
			return fmt.Sprintf("; SCRATCH DATABASE %s NOT DROPPED: %v", scratch, err)
		}
		return fmt.Sprintf("; scratch database %s dropped", scratch)
	}

	start := time.Now()
	if err := db.RestoreInto(ctx, path, scratch); err != nil {
		return StatusFail, fmt.Sprintf("restore into scratch database: %v%s", err, dropped())
	}
	took := time.Since(start)
	counts, err := countIn(ctx, dsn, scratch, tables)
	if err != nil {
		return StatusFail, fmt.Sprintf("restored in %s but counting rows failed: %v%s", ago(took), err, dropped())
	}
	drop := dropped()
	st := StatusPass
	if strings.Contains(drop, "NOT DROPPED") {
		st = StatusWarn
	}
	ev := fmt.Sprintf("restored cleanly into %s in %s", scratch, ago(took))
	if len(counts) > 0 {
		ev += "; rows " + countsString(counts)
	}
	return st, ev + drop
}

// connect opens one connection with dsn, to database dbname when not
// empty.
func connect(ctx context.Context, dsn, dbname string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return nil, errors.New("connection string cannot be parsed (not shown)")
	}
	if dbname != "" {
		cfg.Database = dbname
	}
	cfg.RuntimeParams["application_name"] = "rollguard-preflight"
	return pgx.ConnectConfig(ctx, cfg)
}

func countIn(ctx context.Context, dsn, dbname string, tables []string) (map[string]int64, error) {
	if len(tables) == 0 {
		return nil, nil
	}
	c, err := connect(ctx, dsn, dbname)
	if err != nil {
		return nil, err
	}
	defer c.Close(context.WithoutCancel(ctx))
	counts := map[string]int64{}
	for _, t := range tables {
		id, err := database.ParseIdentifier(t)
		if err != nil {
			return nil, err
		}
		var n int64
		if err := c.QueryRow(ctx, "SELECT count(*) FROM "+id.Sanitize()).Scan(&n); err != nil {
			return nil, fmt.Errorf("count %s: %w", t, err)
		}
		counts[t] = n
	}
	return counts, nil
}

func countsString(m map[string]int64) string {
	if len(m) == 0 {
		return "not counted"
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	parts := make([]string, len(keys))
	for i, k := range keys {
		parts[i] = fmt.Sprintf("%s=%d", k, m[k])
	}
	return strings.Join(parts, " ")
}

func short(sum string) string {
	if len(sum) > 12 {
		return sum[:12]
	}
	return sum
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
