// Command pgseed builds the database of make bench's database benchmark on
// the sandbox's primary (test/pgseed): pggit rows up to --size-mib, with
// its pre-deploy dump cached in --cache for the next run.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/rollguard/rollguard/test/pgseed"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	o := pgseed.Options{Logf: func(f string, a ...any) { fmt.Fprintf(os.Stderr, f+"\n", a...) }}
	flag.StringVar(&o.Database, "database", "pggit_bench", "database to seed")
	flag.IntVar(&o.SizeMiB, "size-mib", 500, "least size of the rows (tables and TOAST) in MiB")
	flag.StringVar(&o.CacheDir, "cache", pgseed.DefaultCacheDir(), "directory keeping the dump between runs")
	flag.StringVar(&o.SchemaFile, "schema", "test/fixtures/pggit-schema.sql", "pggit schema")
	flag.Parse()
	env, err := sandboxenv.Read(sandboxenv.Path())
	if err != nil {
		fmt.Fprintf(os.Stderr, "pgseed: sandbox env (is the sandbox up?): %v\n", err)
		os.Exit(1)
	}
	o.BinDir = env["PG_BIN_DIR"]
	o.Admin = AdminDSN(env["PG_PRIMARY_DSN"])
	s, err := pgseed.Ensure(ctx, o)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fmt.Printf("%s: %s (%s of rows, %s in all; dump %s, %s) in %s\n", o.Database, s.How, pgseed.MiB(s.TableBytes),
		pgseed.MiB(s.DatabaseBytes), s.Dump, pgseed.MiB(s.DumpBytes), s.Took.Round(time.Second))
}

// AdminDSN points a sandbox DSN at the maintenance database.
func AdminDSN(dsn string) string {
	if i := strings.LastIndexByte(dsn, '/'); i > len("postgres://") {
		q := ""
		if j := strings.IndexByte(dsn[i:], '?'); j >= 0 {
			q = dsn[i+j:]
		}
		return dsn[:i] + "/postgres" + q
	}
	return dsn
}
