// Command bench is `make bench` (test/bench/run builds and runs it): five
// benchmarks on the running sandbox, printed as tables and written between
// markers in docs/benchmarks.md with the machine, date and commit.
//
//   - latency: a fault injected at t0 (the simulator's profile for the
//     running tag turns to 20 % errors) to the start of the rollback's
//     first step, for the runbook's 60 s window and a short one;
//   - rollback: `rollguard rollback --local` quick and revert against the
//     runbook's Quick Rollback kubectl commands (quick-rollback.sh),
//     alternating on the same cluster;
//   - anchor: the same fault seen by a Prometheus alerting rule with the
//     production trigger's expression, routed by Alertmanager to a webhook,
//     and by rollguard with the production configuration, side by side;
//   - database: the full and multi-region plans against the runbook's own
//     commands (full-rollback.sh, multi-region-rollback.sh) on a seeded
//     database of 500 MiB (test/pgseed), alternating;
//   - scale: one evaluator tick of N targets × 4 triggers against a real
//     Prometheus scraping a synthetic exporter (test/cmd/seriesgen) and the
//     sandbox's PostgreSQL, with a CPU and heap profile at the largest N.
//
// Benchmarks report; nothing here asserts a timing.
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/rollguard/rollguard/test/pgseed"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

type options struct {
	rollguard    string
	seriesgen    string
	doc          string
	outDir       string
	only         map[string]bool
	runs         int
	anchorRuns   int
	anchorSetups map[string]bool
	anchorRes    string
	dbSizeMiB    int
	dbCache      string
	dbRounds     int
	dbPlans      map[string]bool
	rounds       int
	scaleN       []int
	scaleTicks   int
	longFor      time.Duration
	longIval     time.Duration
	shortFor     time.Duration
	shortIval    time.Duration
	rampPause    time.Duration
	settle       time.Duration
	recorded     bool
	sandboxNote  string
}

func main() { os.Exit(run()) }

func run() int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var o options
	only := flag.String("only", "latency,rollback,anchor,database,scale", "benchmarks to run, comma-separated (latency, rollback, anchor, database, scale)")
	scale := flag.String("scale", "100,1000,10000", "target counts for the scale benchmark")
	flag.StringVar(&o.rollguard, "rollguard", "bin/rollguard", "rollguard binary")
	flag.StringVar(&o.seriesgen, "seriesgen", "bin/seriesgen", "seriesgen binary")
	flag.StringVar(&o.doc, "doc", "docs/benchmarks.md", "markdown file whose marked section is rewritten (empty: print only)")
	flag.StringVar(&o.outDir, "out", "", "directory for logs and profiles (default: $SANDBOX_STATE_DIR/bench)")
	flag.IntVar(&o.runs, "runs", 5, "detection-latency runs per configuration")
	anchorSetups := flag.String("anchor-setups", "1s,defaults", "anchor: rows to run (1s: scrape and rule every 1 s, group_wait 0s; defaults: 30 s and group_wait 30s)")
	flag.IntVar(&o.dbSizeMiB, "db-size-mib", 500, "database: least size of the seeded rows in MiB")
	flag.StringVar(&o.dbCache, "db-cache", pgseed.DefaultCacheDir(), "database: directory keeping the seeded database's dump between runs")
	flag.IntVar(&o.dbRounds, "db-rounds", 3, "database: rounds per plan (each: the runbook's commands and rollguard, alternating)")
	dbPlans := flag.String("db-plans", "full,multi-region", "database: plans to time")
	flag.StringVar(&o.anchorRes, "anchor-resolution", "", "anchor: rollguard's global.prometheus.resolution (empty: the production config's); 0s samples once per tick, as rollguard did before it had one")
	flag.IntVar(&o.anchorRuns, "anchor-runs", 5, "anchor: runs per row (each run times rollguard at every interval on the same fault)")
	flag.IntVar(&o.rounds, "rounds", 5, "rollback rounds (each: script, quick, revert, revert-paced in rotating order)")
	flag.IntVar(&o.scaleTicks, "ticks", 6, "measured ticks per scale size")
	flag.DurationVar(&o.longFor, "long-for", 60*time.Second, "the runbook's window")
	flag.DurationVar(&o.longIval, "long-interval", 5*time.Second, "evaluation interval with the runbook's window (rollguard's default)")
	flag.DurationVar(&o.shortFor, "short-for", 10*time.Second, "the short window")
	flag.DurationVar(&o.shortIval, "short-interval", time.Second, "evaluation interval with the short window")
	flag.DurationVar(&o.rampPause, "ramp-pause", 5*time.Second, "pause between ramp steps, for rollguard and the script alike (the runbook's is 30s); excluded from the durations")
	flag.DurationVar(&o.settle, "settle", 5*time.Second, "rollback: idle time between the bad version's rollout and the timed rollback (a real detection window is longer); lets the controller-manager's client rate limiters refill")
	flag.StringVar(&o.sandboxNote, "sandbox-note", "", "how the sandbox was obtained, for the report")
	child := flag.Int("scale-child", 0, "internal: measure this many targets in this process against --prom and print JSON")
	promURL := flag.String("prom", "", "internal: the scale child's Prometheus")
	profile := flag.Bool("profile", false, "internal: the scale child writes CPU and heap profiles")
	p99Query := flag.String("p99-query", "", "internal: the scale child's latencyP99 template (empty: the default)")
	childResolution := flag.String("child-resolution", "", "internal: the scale child's global.prometheus.resolution (empty: the default)")
	flag.BoolVar(&o.recorded, "recorded", true, "scale: measure the largest N again with the P99 template reading deploy/monitoring/fleet's recorded series")
	flag.Parse()
	if *child > 0 {
		if err := scaleChild(ctx, *child, *promURL, o.outDir, o.scaleTicks, *profile, *p99Query, *childResolution); err != nil {
			fmt.Fprintf(os.Stderr, "bench scale child: %v\n", err)
			return 1
		}
		return 0
	}
	o.only = map[string]bool{}
	for _, s := range strings.Split(*only, ",") {
		if s = strings.TrimSpace(s); s != "" {
			o.only[s] = true
		}
	}
	o.dbPlans = map[string]bool{}
	for _, s := range strings.Split(*dbPlans, ",") {
		o.dbPlans[strings.TrimSpace(s)] = true
	}
	o.anchorSetups = map[string]bool{}
	for _, s := range strings.Split(*anchorSetups, ",") {
		o.anchorSetups[strings.TrimSpace(s)] = true
	}
	for _, s := range strings.Split(*scale, ",") {
		n, err := strconv.Atoi(strings.TrimSpace(s))
		if err != nil || n <= 0 {
			fmt.Fprintf(os.Stderr, "bench: --scale %q: want positive integers\n", *scale)
			return 2
		}
		o.scaleN = append(o.scaleN, n)
	}
	if err := bench(ctx, o); err != nil {
		fmt.Fprintf(os.Stderr, "\nbench FAILED: %v\n", err)
		return 1
	}
	return 0
}

func say(format string, args ...any) {
	fmt.Printf("[%s] "+format+"\n", append([]any{time.Now().Format("15:04:05")}, args...)...)
}

func bench(ctx context.Context, o options) error {
	env, err := sandboxenv.Read(sandboxenv.Path())
	if err != nil {
		return fmt.Errorf("sandbox env (is the sandbox up? make sandbox-up): %w", err)
	}
	if o.outDir == "" {
		o.outDir = filepath.Join(env["SANDBOX_STATE_DIR"], "bench")
	}
	if err := os.MkdirAll(o.outDir, 0o755); err != nil {
		return err
	}
	for _, p := range []*string{&o.rollguard, &o.seriesgen} {
		if abs, err := filepath.Abs(*p); err == nil {
			*p = abs
		}
	}
	repo, err := os.Getwd() // test/bench/run starts the bench in the repository
	if err != nil {
		return err
	}
	rep := &report{started: time.Now(), sandboxNote: o.sandboxNote, outDir: o.outDir, repoDir: repo, stateDir: env["SANDBOX_STATE_DIR"]}
	rep.machine = machineInfo()
	say("machine: %s; logs and profiles in %s", rep.machine, o.outDir)

	if o.only["latency"] || o.only["rollback"] || o.only["anchor"] || o.only["database"] {
		c, err := newCluster(env)
		if err != nil {
			return err
		}
		if o.only["latency"] {
			for _, lc := range []latencyConfig{
				{name: "runbook", window: o.longFor, interval: o.longIval},
				{name: "short", window: o.shortFor, interval: o.shortIval},
			} {
				res, err := runLatency(ctx, c, env, o, lc)
				if err != nil {
					return fmt.Errorf("latency %s: %w", lc.name, err)
				}
				rep.latency = append(rep.latency, res)
			}
		}
		if o.only["rollback"] {
			res, err := runRollback(ctx, c, env, o)
			if err != nil {
				return fmt.Errorf("rollback: %w", err)
			}
			rep.rollback = res
		}
		if o.only["database"] {
			res, err := runDatabase(ctx, c, env, o)
			if err != nil {
				return fmt.Errorf("database: %w", err)
			}
			rep.database = res
		}
		if o.only["anchor"] {
			res, err := runAnchor(ctx, c, env, o)
			if err != nil {
				return fmt.Errorf("anchor: %w", err)
			}
			rep.anchor = res
		}
	}
	if o.only["scale"] {
		res, err := runScale(ctx, env, o)
		if err != nil {
			return fmt.Errorf("scale: %w", err)
		}
		rep.scale = res
	}
	rep.finished = time.Now()
	md := rep.markdown()
	fmt.Println()
	fmt.Println(md)
	if o.doc != "" {
		if err := updateDoc(o.doc, md); err != nil {
			return err
		}
		say("results written to %s", o.doc)
	}
	return nil
}
