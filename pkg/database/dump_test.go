package database

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func setupFake(t *testing.T, mode string) (*DB, string, string) {
	t.Helper()
	dir := t.TempDir()
	logFile := filepath.Join(t.TempDir(), "calls.log")
	t.Setenv("FAKE_LOG", logFile)
	t.Setenv("FAKE_MODE", mode)
	t.Setenv("PGPASSWORD", "stray-from-parent")
	return openFake(t, dir), dir, logFile
}

func readLog(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	return string(b)
}

func dirNames(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

func TestDump(t *testing.T) {
	d, dir, logFile := setupFake(t, "")
	path := filepath.Join(dir, "forensic.dump")
	n, err := d.Dump(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(len("PGDMP fake archive")); n != want {
		t.Errorf("Dump returned %d bytes, want %d", n, want)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("dump mode = %v, want 0600", fi.Mode().Perm())
	}
	if got := dirNames(t, dir); !slices.Equal(got, []string{"forensic.dump"}) {
		t.Errorf("directory holds %q, want only the dump", got)
	}
	log := readLog(t, logFile)
	if strings.Contains(strings.Join(lines(log, "pg_"), "\n"), secret) {
		t.Errorf("password on a command line:\n%s", log)
	}
	for _, want := range []string{"PGPASSWORD=" + secret, "PGHOST=127.0.0.1", "PGPORT=1", "PGUSER=rollguard", "PGDATABASE=pggit", "PGSSLMODE=disable", "pg_dump --format=custom --compress=1 --no-password --file=" + dir + "/.forensic.dump.tmp-", "pg_restore --list " + dir + "/.forensic.dump.tmp-", "pg_restore --file=/dev/null "} {
		if !strings.Contains(log, want) {
			t.Errorf("log lacks %q:\n%s", want, log)
		}
	}
	if strings.Contains(log, "stray-from-parent") {
		t.Errorf("a PG variable of the parent leaked into the child:\n%s", log)
	}

	// A second dump to the same path must not replace it.
	if _, err := d.Dump(context.Background(), path); !errors.Is(err, ErrDumpExists) {
		t.Fatalf("second Dump error = %v, want ErrDumpExists", err)
	}
}

func lines(s, prefix string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, prefix) {
			out = append(out, l)
		}
	}
	return out
}

func TestDumpFailureLeavesNothing(t *testing.T) {
	d, dir, _ := setupFake(t, "dumpfail")
	path := filepath.Join(dir, "pre.dump")
	_, err := d.Dump(context.Background(), path)
	if !errors.Is(err, ErrCommandFailed) {
		t.Fatalf("Dump error = %v, want ErrCommandFailed", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, "password authentication failed") {
		t.Errorf("error lacks the stderr tail: %s", msg)
	}
	if strings.Contains(msg, "noise line 0\n") || len(msg) > stderrTail+300 {
		t.Errorf("error carries %d bytes, want the bounded tail", len(msg))
	}
	if strings.Contains(msg, secret) {
		t.Errorf("error leaks the password")
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("directory holds %q after a failed dump, want nothing", got)
	}
}

func TestDumpVerifyFailureLeavesNothing(t *testing.T) {
	d, dir, _ := setupFake(t, "truncated")
	path := filepath.Join(dir, "pre.dump")
	if _, err := d.Dump(context.Background(), path); !errors.Is(err, ErrDumpInvalid) {
		t.Fatalf("Dump error = %v, want ErrDumpInvalid", err)
	}
	if got := dirNames(t, dir); len(got) != 0 {
		t.Errorf("directory holds %q after a failed verification, want nothing", got)
	}
}

func TestRestore(t *testing.T) {
	d, dir, logFile := setupFake(t, "")
	path := filepath.Join(dir, "pre.dump")
	if err := os.WriteFile(path, []byte("PGDMP fake"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := d.Restore(context.Background(), path); err != nil {
		t.Fatal(err)
	}
	want := "pg_restore --clean --if-exists --single-transaction --exit-on-error --no-subscriptions --no-password --dbname=dbname='pggit' " + path
	if !slices.Contains(lines(readLog(t, logFile), "pg_restore"), want) {
		t.Fatalf("log lacks %q:\n%s", want, readLog(t, logFile))
	}
}

func TestRestoreRefusesBadDumps(t *testing.T) {
	for _, tc := range []struct {
		name, mode, content string
		missing             bool
		want                error
		// ran: the restore itself was attempted (and, in one
		// transaction, rolled back).
		ran bool
	}{
		{name: "missing", missing: true, want: ErrDumpInvalid},
		{name: "not an archive", content: "-- plain SQL", want: ErrDumpInvalid},
		{name: "truncated", mode: "truncated", content: "PGDMP", want: ErrDumpInvalid, ran: true},
		{name: "restore fails", mode: "restorefail", content: "PGDMP", want: ErrCommandFailed, ran: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, dir, logFile := setupFake(t, tc.mode)
			path := filepath.Join(dir, "pre.dump")
			if !tc.missing {
				if err := os.WriteFile(path, []byte(tc.content), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			err := d.Restore(context.Background(), path)
			if !errors.Is(err, tc.want) {
				t.Fatalf("Restore error = %v, want %v", err, tc.want)
			}
			restored := slices.ContainsFunc(lines(readLog(t, logFile), "pg_restore"), func(l string) bool {
				return strings.Contains(l, "--single-transaction")
			})
			if restored != tc.ran {
				t.Fatalf("restore ran = %v, want %v", restored, tc.ran)
			}
			if read := strings.Contains(readLog(t, logFile), "--file=/dev/null"); read {
				t.Errorf("the dump was read in full before the restore; the transaction is what keeps a bad dump from changing anything")
			}
		})
	}
}

func TestListDump(t *testing.T) {
	d, dir, _ := setupFake(t, "")
	path := filepath.Join(dir, "pre.dump")
	if err := os.WriteFile(path, []byte("PGDMP fake"), 0o600); err != nil {
		t.Fatal(err)
	}
	got, err := d.ListDump(context.Background(), path)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"pggit.alert_delivery_queue"}; !slices.Equal(got, want) {
		t.Fatalf("ListDump = %q, want %q", got, want)
	}
}

func TestRestoreIntoValidates(t *testing.T) {
	d, dir, _ := setupFake(t, "")
	for _, db := range []string{"", "pggit"} {
		if err := d.RestoreInto(context.Background(), filepath.Join(dir, "x"), db); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("RestoreInto(%q) = %v, want ErrInvalidArgument", db, err)
		}
	}
}

// TestInspectDumpReadsAnUnchangedDumpOnce: a rollback inspects the
// pre-deploy dump at its preflight (before it stops anything) and again
// right before pg_restore. The second inspection of a file unchanged since
// the first reads its table of contents only: reading a 121 MiB archive in
// full again cost 2.7–5.8 s of a multi-region rollback (make bench), and
// the restore's single transaction already refuses a truncated archive. A
// file changed in between (rewritten, replaced) is read in full again.
func TestInspectDumpReadsAnUnchangedDumpOnce(t *testing.T) {
	d, dir, logFile := setupFake(t, "")
	path := filepath.Join(dir, "pre.dump")
	if err := os.WriteFile(path, []byte("PGDMP fake archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	readBacks := func() int { return len(lines(readLog(t, logFile), "pg_restore --file=/dev/null "+path)) }
	lists := func() int { return len(lines(readLog(t, logFile), "pg_restore --list "+path)) }
	inspect := func() {
		t.Helper()
		if _, _, err := d.InspectDump(context.Background(), path); err != nil {
			t.Fatal(err)
		}
	}
	inspect()
	inspect()
	if r, l := readBacks(), lists(); r != 1 || l != 2 {
		t.Errorf("two inspections of an unchanged dump: %d full reads and %d table-of-contents reads, want 1 and 2", r, l)
	}
	// Rewritten with the same bytes: its change time moves, so it is read
	// in full again.
	if err := os.WriteFile(path, []byte("PGDMP fake archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	inspect()
	if r := readBacks(); r != 2 {
		t.Errorf("after the file was rewritten: %d full reads, want 2", r)
	}
	// Replaced by another file (a rename over it).
	other := filepath.Join(dir, "other.dump")
	if err := os.WriteFile(other, []byte("PGDMP fake archive"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(other, path); err != nil {
		t.Fatal(err)
	}
	inspect()
	if r := readBacks(); r != 3 {
		t.Errorf("after the file was replaced: %d full reads, want 3", r)
	}
}
