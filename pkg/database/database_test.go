package database

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/rollback"
)

const secret = "s3cr3t-pa55"

func TestParseIdentifier(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    pgx.Identifier
		wantErr bool
	}{
		{in: "pggit.alert_delivery_queue", want: pgx.Identifier{"pggit", "alert_delivery_queue"}},
		{in: "schema_versions", want: pgx.Identifier{"schema_versions"}},
		{in: "Public.MyTable$1", want: pgx.Identifier{"Public", "MyTable$1"}},
		{in: "", wantErr: true},
		{in: "a.b.c", wantErr: true},
		{in: "pggit.", wantErr: true},
		{in: ".t", wantErr: true},
		{in: "1table", wantErr: true},
		{in: `pggit."x"`, wantErr: true},
		{in: "t; DROP TABLE x", wantErr: true},
		{in: "t--", wantErr: true},
		{in: "tab le", wantErr: true},
		{in: strings.Repeat("a", 64), wantErr: true},
		{in: strings.Repeat("a", 63), want: pgx.Identifier{strings.Repeat("a", 63)}},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseIdentifier(tc.in)
			if tc.wantErr {
				if !errors.Is(err, ErrInvalidIdentifier) {
					t.Fatalf("ParseIdentifier(%q) error = %v, want ErrInvalidIdentifier", tc.in, err)
				}
				return
			}
			if err != nil {
				t.Fatalf("ParseIdentifier(%q): %v", tc.in, err)
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("ParseIdentifier(%q) = %q, want %q", tc.in, got, tc.want)
			}
		})
	}
}

func TestCountRowsRejectsBadNamesBeforeSQL(t *testing.T) {
	// Port 1 on loopback: any SQL attempt would fail with a connection
	// error, so ErrInvalidIdentifier proves validation came first.
	d := openFake(t, t.TempDir())
	_, err := d.CountRows(context.Background(), []string{"pggit.ok", "x; DROP TABLE y"})
	if !errors.Is(err, ErrInvalidIdentifier) {
		t.Fatalf("CountRows error = %v, want ErrInvalidIdentifier", err)
	}
}

// A realistic pg_restore --list (PostgreSQL 15) output.
const tocSample = `;
; Archive created at 2026-11-25 21:40:00 UTC
;     dbname: pggit
;     TOC Entries: 12
;     Compression: -1
;     Dump Version: 1.14-0
;     Format: CUSTOM
;
; Selected TOC Entries:
;
6; 2615 16385 SCHEMA - pggit postgres
215; 1259 16386 TABLE pggit alert_delivery_queue postgres
214; 1259 16387 SEQUENCE pggit alert_delivery_queue_id_seq postgres
3380; 0 0 SEQUENCE OWNED BY pggit alert_delivery_queue_id_seq postgres
216; 1259 16400 TABLE pggit schema_versions postgres
230; 1255 16410 FUNCTION pggit measure_replication_lag() postgres
3370; 0 16386 TABLE DATA pggit alert_delivery_queue postgres
3371; 0 16400 TABLE DATA pggit schema_versions postgres
3385; 0 0 SEQUENCE SET pggit alert_delivery_queue_id_seq postgres
3220; 2606 16420 CONSTRAINT pggit alert_delivery_queue alert_delivery_queue_pkey postgres
3390; 6104 16430 PUBLICATION - pggit_pub postgres
3391; 6106 16431 PUBLICATION TABLE pggit pggit_pub alert_delivery_queue postgres
3392; 0 0 ACL - SCHEMA pggit postgres
`

func TestParseTOC(t *testing.T) {
	entries, err := ParseTOC(strings.NewReader(tocSample))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 13 {
		t.Fatalf("got %d entries, want 13: %+v", len(entries), entries)
	}
	for _, tc := range []struct {
		i    int
		want TOCEntry
	}{
		{0, TOCEntry{ID: 6, Desc: "SCHEMA", Schema: "", Name: "pggit", Owner: "postgres"}},
		{1, TOCEntry{ID: 215, Desc: "TABLE", Schema: "pggit", Name: "alert_delivery_queue", Owner: "postgres"}},
		{3, TOCEntry{ID: 3380, Desc: "SEQUENCE OWNED BY", Schema: "pggit", Name: "alert_delivery_queue_id_seq", Owner: "postgres"}},
		{5, TOCEntry{ID: 230, Desc: "FUNCTION", Schema: "pggit", Name: "measure_replication_lag()", Owner: "postgres"}},
		{6, TOCEntry{ID: 3370, Desc: "TABLE DATA", Schema: "pggit", Name: "alert_delivery_queue", Owner: "postgres"}},
		{9, TOCEntry{ID: 3220, Desc: "CONSTRAINT", Schema: "pggit", Name: "alert_delivery_queue alert_delivery_queue_pkey", Owner: "postgres"}},
		{11, TOCEntry{ID: 3391, Desc: "PUBLICATION TABLE", Schema: "pggit", Name: "pggit_pub alert_delivery_queue", Owner: "postgres"}},
		{12, TOCEntry{ID: 3392, Desc: "ACL", Schema: "", Name: "SCHEMA pggit", Owner: "postgres"}},
	} {
		if entries[tc.i] != tc.want {
			t.Errorf("entry %d = %+v, want %+v", tc.i, entries[tc.i], tc.want)
		}
	}
	if got, want := tablesOf(entries), []string{"pggit.alert_delivery_queue", "pggit.schema_versions"}; !slices.Equal(got, want) {
		t.Errorf("tablesOf = %q, want %q", got, want)
	}
}

func TestParseTOCErrors(t *testing.T) {
	for name, in := range map[string]string{
		"no id":      "TABLE pggit t postgres\n",
		"bad id":     "x; 1259 1 TABLE pggit t postgres\n",
		"short":      "1; 1259 1 TABLE t\n",
		"bad oid":    "1; abc 1 TABLE pggit t postgres\n",
		"desc alone": "1; 0 0 TABLE DATA pggit t\n",
	} {
		t.Run(name, func(t *testing.T) {
			if _, err := ParseTOC(strings.NewReader(in)); err == nil {
				t.Fatalf("ParseTOC(%q) succeeded, want error", in)
			}
		})
	}
	entries, err := ParseTOC(strings.NewReader(";\n; only comments\n\n"))
	if err != nil || len(entries) != 0 {
		t.Fatalf("comments only: %v, %v", entries, err)
	}
}

func TestClientEnv(t *testing.T) {
	for _, tc := range []struct {
		dsn  string
		want []string
		mode string
	}{
		{
			dsn:  "postgres://rollguard:" + secret + "@db.example:6432/pggit?sslmode=disable&connect_timeout=3",
			want: []string{"PGHOST=db.example", "PGPORT=6432", "PGUSER=rollguard", "PGPASSWORD=" + secret, "PGDATABASE=pggit", "PGSSLMODE=disable", "PGCONNECT_TIMEOUT=3", "PGAPPNAME=rollguard"},
		},
		{dsn: "host=h user=u password=" + secret + " dbname=d", mode: "prefer"},
		{dsn: "host=h user=u dbname=d sslmode=require", mode: "require"},
		{dsn: "host=h user=u dbname=d sslmode=allow", mode: "allow"},
		{dsn: "host=h user=u dbname=d sslmode=verify-ca", mode: "verify-ca"},
		{dsn: "host=h user=u dbname=d sslmode=verify-full", mode: "verify-full"},
	} {
		t.Run(tc.dsn, func(t *testing.T) {
			cfg, err := pgconn.ParseConfig(tc.dsn)
			if err != nil {
				t.Fatal(err)
			}
			base := []string{"PATH=/bin", "PGPASSWORD=stray", "PGSERVICE=evil", "PGSSLROOTCERT=/etc/ca.pem", "HOME=/root"}
			env := clientEnv(base, cfg)
			for _, kv := range []string{"PGPASSWORD=stray", "PGSERVICE=evil"} {
				if slices.Contains(env, kv) {
					t.Errorf("env keeps %s", kv)
				}
			}
			for _, kv := range []string{"PATH=/bin", "HOME=/root", "PGSSLROOTCERT=/etc/ca.pem"} {
				if !slices.Contains(env, kv) {
					t.Errorf("env lost %s", kv)
				}
			}
			for _, kv := range tc.want {
				if !slices.Contains(env, kv) {
					t.Errorf("env %q lacks %s", env, kv)
				}
			}
			if tc.mode != "" && !slices.Contains(env, "PGSSLMODE="+tc.mode) {
				t.Errorf("env %q lacks PGSSLMODE=%s", env, tc.mode)
			}
		})
	}
}

func TestCommandKeepsPasswordOutOfArgs(t *testing.T) {
	d := openFake(t, t.TempDir())
	cmd := d.command(context.Background(), d.pgRestore, "--dbname="+conninfoValue("dbname", d.conn.Database), "/x.dump")
	for _, a := range cmd.Args {
		if strings.Contains(a, secret) {
			t.Fatalf("argument %q contains the password", a)
		}
	}
	if !slices.Contains(cmd.Env, "PGPASSWORD="+secret) {
		t.Fatalf("PGPASSWORD not in env")
	}
	if want := `--dbname=dbname='pggit'`; cmd.Args[1] != want {
		t.Fatalf("dbname arg = %q, want %q", cmd.Args[1], want)
	}
}

func TestConninfoValue(t *testing.T) {
	if got, want := conninfoValue("dbname", `we'ird\ db=x`), `dbname='we\'ird\\ db=x'`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestQuoteLiteral(t *testing.T) {
	if got, want := quoteLiteral(`host=h password='a\b'`), `E'host=h password=''a\\b'''`; got != want {
		t.Fatalf("got %s, want %s", got, want)
	}
}

func TestTailBuffer(t *testing.T) {
	b := &tailBuffer{max: 8}
	b.Write([]byte("0123"))
	if got := b.String(); got != "0123" {
		t.Fatalf("got %q", got)
	}
	b.Write([]byte("456789ab"))
	if got := b.String(); got != "...456789ab" {
		t.Fatalf("got %q, want ...456789ab", got)
	}
	if len(b.buf) != 8 {
		t.Fatalf("buffer holds %d bytes, want 8", len(b.buf))
	}
}

func TestOpenValidates(t *testing.T) {
	bin := fakeBin(t)
	good := Options{Name: "primary", DSN: "postgres://u:" + secret + "@127.0.0.1:1/pggit", BinDir: bin}
	for _, tc := range []struct {
		name   string
		modify func(*Options)
		want   error
	}{
		{"no name", func(o *Options) { o.Name = "" }, ErrInvalidArgument},
		{"too many conns", func(o *Options) { o.MaxConns = 3 }, ErrInvalidArgument},
		{"bad table", func(o *Options) { o.SchemaVersionsTable = "x;y" }, ErrInvalidIdentifier},
		{"bad dsn", func(o *Options) { o.DSN = "postgres://u:" + secret + "@[::1" }, ErrInvalidArgument},
		{"no binaries", func(o *Options) { o.BinDir = t.TempDir() }, os.ErrNotExist},
	} {
		t.Run(tc.name, func(t *testing.T) {
			o := good
			tc.modify(&o)
			_, err := Open(context.Background(), o, zap.NewNop())
			if !errors.Is(err, tc.want) {
				t.Fatalf("Open error = %v, want %v", err, tc.want)
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error leaks the password: %v", err)
			}
		})
	}
	d, err := Open(context.Background(), good, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	if got := d.pool.Config().MaxConns; got != MaxConns {
		t.Errorf("MaxConns = %d, want %d", got, MaxConns)
	}
	if got := d.versions.Sanitize(); got != `"pggit"."schema_versions"` {
		t.Errorf("versions table = %s", got)
	}
	if d.timeout != DefaultTimeout {
		t.Errorf("timeout = %s", d.timeout)
	}
}

func TestTerminateIdleValidates(t *testing.T) {
	d := openFake(t, t.TempDir())
	for _, tc := range []struct {
		role, app string
		age       time.Duration
	}{
		{"", "pggit-api", time.Minute},
		{"pggit_app", "", time.Minute},
		{"pggit_app", "pggit-api", 0},
		{"pggit_app", "pggit-api", -time.Second},
	} {
		if _, err := d.TerminateIdleInTransaction(context.Background(), tc.role, tc.app, tc.age); !errors.Is(err, ErrInvalidArgument) {
			t.Errorf("TerminateIdleInTransaction(%q, %q, %s) = %v, want ErrInvalidArgument", tc.role, tc.app, tc.age, err)
		}
	}
}

func TestMaxLag(t *testing.T) {
	str := func(s string) *string { return &s }
	f := func(v float64) *float64 { return &v }
	for _, tc := range []struct {
		name  string
		links []link
		want  time.Duration
		err   error
	}{
		{name: "none", err: ErrNoReplication},
		{name: "measured", links: []link{
			{name: "a", state: str("streaming"), lag: f(0.25), behind: f(100)},
			{name: "b", state: str("streaming"), lag: f(2.5), behind: f(0)},
		}, want: 2500 * time.Millisecond},
		{name: "idle caught up: NULL lag is zero", links: []link{
			{name: "a", state: str("streaming"), behind: f(0)},
		}, want: 0},
		{name: "NULL lag with unconfirmed WAL is unknown", links: []link{
			{name: "a", state: str("streaming"), behind: f(4096)},
		}, err: ErrLagUnknown},
		{name: "starting up", links: []link{
			{name: "a", state: str("startup")},
		}, err: ErrLagUnknown},
		{name: "catchup without lag columns", links: []link{
			{name: "a", state: str("catchup"), behind: f(0)},
		}, err: ErrLagUnknown},
		{name: "disabled subscriber behind", links: []link{
			{name: "a", state: str("streaming"), lag: f(0.1)},
			{name: "pggit_sub", state: str("inactive"), behind: f(120)},
		}, err: ErrLagUnknown},
		{name: "inactive slot fully confirmed", links: []link{
			{name: "pggit_sub", state: str("inactive"), behind: f(0)},
		}, want: 0},
		{name: "inactive slot never reserved", links: []link{
			{name: "s", state: str("inactive")},
		}, err: ErrLagUnknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := maxLag(tc.links)
			if !errors.Is(err, tc.err) {
				t.Fatalf("maxLag error = %v, want %v", err, tc.err)
			}
			if err == nil && got != tc.want {
				t.Fatalf("maxLag = %s, want %s", got, tc.want)
			}
		})
	}
}

func openFake(t *testing.T, dir string) *DB {
	t.Helper()
	bin := fakeBin(t)
	d, err := Open(context.Background(), Options{
		Name: "primary", DSN: "postgres://rollguard:" + secret + "@127.0.0.1:1/pggit?sslmode=disable&connect_timeout=1",
		BinDir: bin, Timeout: 2 * time.Second,
	}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(d.Close)
	_ = dir
	return d
}

// fakeBin writes shell-script stand-ins for pg_dump and pg_restore. They
// log their arguments and PG environment to $FAKE_LOG and obey $FAKE_MODE.
func fakeBin(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	pgDump := `#!/bin/sh
echo "pg_dump $*" >> "$FAKE_LOG"
env | grep '^PG' | sort >> "$FAKE_LOG"
if [ "$FAKE_MODE" = dumpfail ]; then
  i=0; while [ $i -lt 300 ]; do echo "pg_dump: noise line $i" >&2; i=$((i+1)); done
  echo "pg_dump: error: connection to server failed: FATAL: password authentication failed" >&2
  exit 1
fi
for a in "$@"; do case "$a" in --file=*) f="${a#--file=}";; esac; done
[ -f "$f" ] || { echo "pg_dump: temp file missing" >&2; exit 2; }
printf 'PGDMP fake archive' > "$f"
`
	pgRestore := `#!/bin/sh
echo "pg_restore $*" >> "$FAKE_LOG"
last=""; for a in "$@"; do last="$a"; done
case "$*" in
*--list*)
  head -c 5 "$last" 2>/dev/null | grep -q PGDMP || { echo "pg_restore: error: input file does not appear to be a valid archive" >&2; exit 1; }
  echo ";"
  echo "; Archive created at 2026-11-25"
  echo "215; 1259 16386 TABLE pggit alert_delivery_queue postgres"
  echo "3370; 0 16386 TABLE DATA pggit alert_delivery_queue postgres"
  exit 0;;
*--file=*)
  [ "$FAKE_MODE" = truncated ] && { echo "pg_restore: error: could not read from input file: end of file" >&2; exit 1; }
  exit 0;;
esac
[ "$FAKE_MODE" = truncated ] && { echo "pg_restore: error: could not read from input file: end of file" >&2; exit 1; }
[ "$FAKE_MODE" = restorefail ] && { echo "pg_restore: error: could not execute query: ERROR:  deadlock" >&2; exit 1; }
exit 0
`
	for name, body := range map[string]string{"pg_dump": pgDump, "pg_restore": pgRestore} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

// DB is the database pkg/rollback's plans run against: this keeps the two
// in step.
var _ rollback.Database = (*DB)(nil)
