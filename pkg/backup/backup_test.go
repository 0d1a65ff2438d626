package backup

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/config/configtest"
)

// fakeDumper writes content to the dump path the way database.Dump does
// (refusing an existing file) and answers the listing and counts.
type fakeDumper struct {
	content string
	tables  []string
	pingErr error
	dumpErr error
	dumped  []string
}

func (f *fakeDumper) Ping(context.Context) error { return f.pingErr }

func (f *fakeDumper) Dump(_ context.Context, path string) (int64, error) {
	f.dumped = append(f.dumped, path)
	if f.dumpErr != nil {
		return 0, f.dumpErr
	}
	if _, err := os.Lstat(path); err == nil {
		return 0, errors.New("exists")
	}
	if err := os.WriteFile(path, []byte(f.content), 0o600); err != nil {
		return 0, err
	}
	return int64(len(f.content)), nil
}

func (f *fakeDumper) ListDump(context.Context, string) ([]string, error) { return f.tables, nil }

func (f *fakeDumper) CountRows(_ context.Context, tables []string) (map[string]int64, error) {
	m := map[string]int64{}
	for i, t := range tables {
		m[t] = int64(10 * (i + 1))
	}
	return m, nil
}

func names(t *testing.T, dir string) []string {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range ents {
		out = append(out, e.Name())
	}
	sort.Strings(out)
	return out
}

func read(t *testing.T, p string) string {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

func TestRunPlanPublishesAndKeepsPrevious(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "pre.dump")
	plan := &Plan{Target: "api", Database: "primary", Path: path, VerifyTables: []string{"pggit.a"}}
	clock := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	opts := Options{Now: func() time.Time { clock = clock.Add(time.Second); return clock }}

	d := &fakeDumper{content: "first", tables: []string{"pggit.a", "pggit.b"}}
	res, err := RunPlan(context.Background(), d, plan, opts)
	if err != nil {
		t.Fatal(err)
	}
	if got := read(t, path); got != "first" {
		t.Fatalf("dump = %q", got)
	}
	if want := []string{"pre.dump", "pre.dump.json"}; !reflect.DeepEqual(names(t, dir), want) {
		t.Fatalf("files = %v, want %v", names(t, dir), want)
	}
	if strings.HasPrefix(filepath.Base(d.dumped[0]), "pre.dump") || filepath.Dir(d.dumped[0]) != dir {
		t.Errorf("dumped to %s: want a hidden staging name in %s", d.dumped[0], dir)
	}
	rec, err := ReadRecord(path)
	if err != nil {
		t.Fatal(err)
	}
	sum, _ := FileSHA256(path)
	want := Record{Version: 1, Target: "api", Database: "primary", Path: path,
		Started: time.Date(2026, 11, 25, 12, 0, 1, 0, time.UTC), Finished: time.Date(2026, 11, 25, 12, 0, 2, 0, time.UTC),
		DurationSeconds: 1, SizeBytes: 5, SHA256: sum, Tables: []string{"pggit.a", "pggit.b"}, RowCounts: map[string]int64{"pggit.a": 10}}
	if !reflect.DeepEqual(*rec, want) {
		t.Fatalf("record\n got %+v\nwant %+v", *rec, want)
	}
	if res.RecordPath != path+".json" || res.SizeBytes != 5 || res.Previous != "" {
		t.Errorf("result %+v", res)
	}
	wantSummary := "backup of target api (database primary) written to " + path + ": 5 bytes in 1.0s, 2 tables, sha256 " + sum +
		"; rows pggit.a=10; record " + path + ".json"
	if res.Summary() != wantSummary {
		t.Errorf("summary\n got %s\nwant %s", res.Summary(), wantSummary)
	}

	d2 := &fakeDumper{content: "second", tables: []string{"pggit.a"}}
	res, err = RunPlan(context.Background(), d2, plan, opts)
	if err != nil {
		t.Fatal(err)
	}
	if read(t, path) != "second" || read(t, path+".prev") != "first" {
		t.Fatalf("dump %q prev %q", read(t, path), read(t, path+".prev"))
	}
	prevRec, err := ReadRecord(path + ".prev")
	if err != nil || prevRec.SizeBytes != 5 {
		t.Fatalf("previous record %+v %v", prevRec, err)
	}
	if res.Previous != path+".prev" {
		t.Errorf("previous = %q", res.Previous)
	}
	if want := []string{"pre.dump", "pre.dump.json", "pre.dump.prev", "pre.dump.prev.json"}; !reflect.DeepEqual(names(t, dir), want) {
		t.Fatalf("files = %v, want %v", names(t, dir), want)
	}

	// DiscardPrevious replaces without keeping, and removes nothing else.
	opts.DiscardPrevious = true
	if _, err := RunPlan(context.Background(), &fakeDumper{content: "third", tables: []string{"pggit.a"}}, plan, opts); err != nil {
		t.Fatal(err)
	}
	if read(t, path) != "third" || read(t, path+".prev") != "first" {
		t.Fatalf("dump %q prev %q", read(t, path), read(t, path+".prev"))
	}
}

func TestRunPlanFailureLeavesOldDump(t *testing.T) {
	for _, tc := range []struct {
		name    string
		d       *fakeDumper
		wantErr error
		wantMsg string
	}{
		{"dump fails", &fakeDumper{dumpErr: errors.New("pg_dump: boom")}, nil, "pg_dump: boom"},
		{"missing verify table", &fakeDumper{content: "new", tables: []string{"pggit.b"}}, ErrMissingTables, "[pggit.a]"},
		{"ping refused", &fakeDumper{pingErr: errors.New("connection refused")}, ErrUsage, "connection refused"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			path := filepath.Join(dir, "pre.dump")
			if err := os.WriteFile(path, []byte("old"), 0o600); err != nil {
				t.Fatal(err)
			}
			plan := &Plan{Target: "api", Database: "primary", Path: path, VerifyTables: []string{"pggit.a"}}
			_, err := RunPlan(context.Background(), tc.d, plan, Options{})
			if err == nil || (tc.wantErr != nil && !errors.Is(err, tc.wantErr)) || !strings.Contains(err.Error(), tc.wantMsg) {
				t.Fatalf("err = %v, want %v containing %q", err, tc.wantErr, tc.wantMsg)
			}
			if !strings.Contains(err.Error(), `"api"`) {
				t.Errorf("error does not name the target: %v", err)
			}
			if got := read(t, path); got != "old" {
				t.Errorf("dump = %q, want the old one", got)
			}
			if want := []string{"pre.dump"}; !reflect.DeepEqual(names(t, dir), want) {
				t.Errorf("files = %v, want %v (no staging left)", names(t, dir), want)
			}
		})
	}
}

func writeConfig(t *testing.T, dir, dumpPath string) string {
	t.Helper()
	yml := `
global:
  databases:
    - name: primary
      dsnFile: dsn
targets:
` + configtest.DatabaseTarget("api", "m1", dumpPath, "/tmp", "") + `  - name: nodb
    namespace: production
    deployment: other
    triggers:
      - name: pool
        kind: connections
        database: primary
        above: 0.95
`
	return configtest.Write(t, dir, yml, map[string]string{"dsn": "postgres://postgres@127.0.0.1:1/pggit?sslmode=disable\n"})
}

func TestResolveRejectsBadInput(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "file")
	if err := os.WriteFile(file, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, target, dump, want string
	}{
		{"unknown target", "nope", filepath.Join(dir, "d.dump"), `target "nope" is not in the config (targets: [api nodb])`},
		{"no rollback database", "nodb", filepath.Join(dir, "d.dump"), `target "nodb" has no rollback.database`},
		{"dump path is a directory", "api", dir, "is a directory, not a regular file"},
		{"directory missing", "api", filepath.Join(dir, "missing", "d.dump"), "no such file or directory"},
		{"parent is a file", "api", filepath.Join(file, "d.dump"), "d.dump: not a directory"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfgDir := t.TempDir()
			_, err := Resolve(Options{ConfigFile: writeConfig(t, cfgDir, tc.dump), Target: tc.target})
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrUsage containing %q", err, tc.want)
			}
		})
	}
	if _, err := Resolve(Options{ConfigFile: filepath.Join(dir, "absent.yaml"), Target: "api"}); !errors.Is(err, ErrUsage) {
		t.Errorf("absent config: %v", err)
	}
	cfg, err := config.LoadFile(writeConfig(t, t.TempDir(), filepath.Join(dir, "d.dump")))
	if err != nil {
		t.Fatal(err)
	}
	// Secrets not resolved: refused before any connection is tried.
	if _, err := Resolve(Options{Config: cfg, Target: "api"}); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "not resolved") {
		t.Errorf("unresolved secrets: %v", err)
	}
}

func TestRunRefusedConnectionIsUsage(t *testing.T) {
	dir := t.TempDir()
	dump := filepath.Join(dir, "d.dump")
	_, err := Run(context.Background(), Options{ConfigFile: writeConfig(t, t.TempDir(), dump), Target: "api", Timeout: 10 * time.Second})
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "primary") {
		t.Fatalf("err = %v, want ErrUsage naming the database", err)
	}
	if names(t, dir) != nil {
		t.Errorf("files left: %v", names(t, dir))
	}
}
