package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollguard/rollguard/test/jsonlog"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/pgseed"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// The database benchmark: rollguard's full and multi-region plans against
// the runbook's own commands for the same procedures, on a database big
// enough for dump, restore and resync to matter.

const (
	dbName       = "pggit_bench"
	dbSub        = "pggit_bench_sub"
	planFull     = "full"
	planMulti    = "multi-region"
	methodRunbk  = "runbook"
	methodRG     = "rollguard"
	dbDeployRows = 20000 // rows the bad version writes after its migration
)

type dbRun struct {
	plan, method string
	round        int
	// wall: exec → exit; ready: exec → 4 Ready of the previous image;
	// both with the ramp pause taken out.
	wall, ready time.Duration
	// phases: where the time went, by phase name, in the order they ran
	// (the PostgreSQL client runs inside rollguard's steps last).
	phases map[string]time.Duration
	order  []string
	// predeployDump: the untimed pg_dump -Fc before the deploy.
	predeployDump time.Duration
}

func (r *dbRun) add(name string, d time.Duration) {
	if _, ok := r.phases[name]; !ok {
		r.order = append(r.order, name)
	}
	r.phases[name] += d
}

type dbResult struct {
	seed      *pgseed.Seed
	syncTook  time.Duration // the secondary's first copy
	pause     time.Duration
	runs      []dbRun
	primaryPG string
}

type dbEnv struct {
	env                  sandboxenv.Env
	primary, secondary   pgx.ConnConfig // superuser, to dbName
	primaryPort, secPort string
	seed                 *pgseed.Seed
}

func (d *dbEnv) dsn(port string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%s/%s?sslmode=disable", port, dbName)
}

func pgPort(dsn string) (string, error) {
	cfg, err := pgx.ParseConfig(dsn)
	if err != nil {
		return "", err
	}
	return strconv.Itoa(int(cfg.Port)), nil
}

func runDatabase(ctx context.Context, c *cluster, env sandboxenv.Env, o options) (*dbResult, error) {
	if err := c.ensureNamespace(ctx); err != nil {
		return nil, err
	}
	d := &dbEnv{env: env}
	var err error
	if d.primaryPort, err = pgPort(env["PG_PRIMARY_DSN"]); err != nil {
		return nil, err
	}
	if d.secPort, err = pgPort(env["PG_SUBSCRIBER_DSN"]); err != nil {
		return nil, err
	}
	// A secondary left by an earlier run holds a replication slot on the
	// bench database: the seed could not drop it. The full plan is
	// single-region anyway: no subscriber while it restores (an in-place
	// restore would break the subscription it then does not repair).
	if err := d.dropSecondary(ctx); err != nil {
		return nil, err
	}
	// Nor is one left behind: its walsender would decode every later
	// write of the primary (the other benchmarks, the tests).
	defer func() {
		if err := d.dropSecondary(context.WithoutCancel(ctx)); err != nil {
			say("   (could not drop the secondary %s: %v)", dbName, err)
		}
	}()
	say("== database: seeding %s with %d MiB of pggit rows (cache %s)", dbName, o.dbSizeMiB, o.dbCache)
	seed, err := pgseed.Ensure(ctx, pgseed.Options{
		Admin: fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", d.primaryPort), Database: dbName,
		SizeMiB: o.dbSizeMiB, BinDir: env["PG_BIN_DIR"], SchemaFile: "test/fixtures/pggit-schema.sql", CacheDir: o.dbCache,
		Logf: func(f string, a ...any) { say("   "+f, a...) },
	})
	if err != nil {
		return nil, err
	}
	d.seed = seed
	say("   %s: %s in %s: %s of rows, %s in all; pre-deploy dump %s (%s)", dbName, seed.How, seed.Took.Round(time.Second),
		pgseed.MiB(seed.TableBytes), pgseed.MiB(seed.DatabaseBytes), seed.Dump, pgseed.MiB(seed.DumpBytes))
	res := &dbResult{seed: seed, pause: o.rampPause, primaryPG: pgVersion(env["PG_BIN_DIR"])}

	for _, plan := range []string{planFull, planMulti} {
		if !o.dbPlans[plan] {
			continue
		}
		if plan == planMulti {
			took, err := d.createSecondary(ctx)
			if err != nil {
				return nil, err
			}
			res.syncTook = took
			say("   secondary %s subscribed and copied in %s", dbName, took.Round(100*time.Millisecond))
		}
		say("== database, %s: %d rounds of the runbook's commands and rollguard (alternating), ramp pause %s excluded", plan, o.dbRounds, o.rampPause)
		for round := 1; round <= o.dbRounds; round++ {
			order := []string{methodRunbk, methodRG}
			if round%2 == 0 {
				order = []string{methodRG, methodRunbk}
			}
			for _, m := range order {
				r, err := d.once(ctx, c, o, plan, m, round)
				if err != nil {
					return nil, fmt.Errorf("%s round %d %s: %w", plan, round, m, err)
				}
				res.runs = append(res.runs, r)
				say("   round %d %-9s wall %.2fs, 4 ready %.2fs; %s", round, m, r.wall.Seconds(), r.ready.Seconds(), phaseString(r.phases))
			}
		}
	}
	return res, nil
}

func phaseString(p map[string]time.Duration) string {
	var keys []string
	for k := range p {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var out []string
	for _, k := range keys {
		out = append(out, fmt.Sprintf("%s %.2fs", k, p[k].Seconds()))
	}
	return strings.Join(out, ", ")
}

func (d *dbEnv) exec(ctx context.Context, port, sql string, args ...any) error {
	return d.execIn(ctx, d.dsn(port), sql, args...)
}

func (d *dbEnv) execIn(ctx context.Context, dsn, sql string, args ...any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	if _, err := conn.Exec(ctx, sql, args...); err != nil {
		return fmt.Errorf("%s: %w", strings.SplitN(strings.TrimSpace(sql), "\n", 2)[0], err)
	}
	return nil
}

func (d *dbEnv) query(ctx context.Context, port, sql string, dst ...any) error {
	return d.queryIn(ctx, d.dsn(port), sql, dst...)
}

// admin is the server's maintenance database.
func (d *dbEnv) admin(port string) string {
	return fmt.Sprintf("postgres://postgres@127.0.0.1:%s/postgres?sslmode=disable", port)
}

func (d *dbEnv) queryIn(ctx context.Context, dsn, sql string, dst ...any) error {
	conn, err := pgx.Connect(ctx, dsn)
	if err != nil {
		return err
	}
	defer conn.Close(context.WithoutCancel(ctx))
	return conn.QueryRow(ctx, sql).Scan(dst...)
}

// dropSecondary removes the bench's subscription (and its slot) and
// database on the subscriber, if a previous run left them.
func (d *dbEnv) dropSecondary(ctx context.Context) error {
	admin, err := pgx.Connect(ctx, d.admin(d.secPort))
	if err != nil {
		return err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	var exists bool
	if err := admin.QueryRow(ctx, "SELECT EXISTS (SELECT 1 FROM pg_database WHERE datname = $1)", dbName).Scan(&exists); err != nil {
		return err
	}
	if exists {
		_ = d.exec(ctx, d.secPort, "ALTER SUBSCRIPTION "+dbSub+" DISABLE")
		_ = d.exec(ctx, d.secPort, "ALTER SUBSCRIPTION "+dbSub+" SET (slot_name = NONE)")
		_ = d.exec(ctx, d.secPort, "DROP SUBSCRIPTION IF EXISTS "+dbSub)
		if _, err := admin.Exec(ctx, "DROP DATABASE "+dbName+" WITH (FORCE)"); err != nil {
			return fmt.Errorf("drop the secondary's %s: %w", dbName, err)
		}
	}
	for deadline := time.Now().Add(30 * time.Second); ; sleep(ctx, 200*time.Millisecond) {
		// Slots belong to the server, not to a database: ask through the
		// admin database, which exists before the seed creates dbName.
		err := d.execIn(ctx, d.admin(d.primaryPort), "SELECT pg_drop_replication_slot(slot_name) FROM pg_replication_slots WHERE slot_name = $1", dbSub)
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) {
			return fmt.Errorf("drop the slot %s on the primary: %w", dbSub, err)
		}
	}
}

// createSecondary creates the secondary region's database (the pggit schema)
// and its subscription, and waits for the initial copy.
func (d *dbEnv) createSecondary(ctx context.Context) (time.Duration, error) {
	if err := d.dropSecondary(ctx); err != nil {
		return 0, err
	}
	admin, err := pgx.Connect(ctx, d.admin(d.secPort))
	if err != nil {
		return 0, err
	}
	defer admin.Close(context.WithoutCancel(ctx))
	if _, err := admin.Exec(ctx, "CREATE DATABASE "+dbName); err != nil {
		return 0, err
	}
	cmd := exec.CommandContext(ctx, filepath.Join(d.env["PG_BIN_DIR"], "psql"), "-qAtX", "-v", "ON_ERROR_STOP=1", "--dbname="+d.dsn(d.secPort),
		"-f", "test/fixtures/pggit-schema.sql")
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("schema on the secondary: %w: %s", err, out)
	}
	start := time.Now()
	conninfo := fmt.Sprintf("host=127.0.0.1 port=%s user=postgres dbname=%s application_name=%s", d.primaryPort, dbName, dbSub)
	if err := d.exec(ctx, d.secPort, fmt.Sprintf("CREATE SUBSCRIPTION %s CONNECTION '%s' PUBLICATION %s", dbSub, conninfo, pgseed.Publication)); err != nil {
		return 0, err
	}
	if err := d.waitSecondary(ctx, 10*time.Minute); err != nil {
		return 0, err
	}
	return time.Since(start), nil
}

// waitSecondary waits until every table of the subscription is copied and
// streaming, and the secondary has every row the primary has.
func (d *dbEnv) waitSecondary(ctx context.Context, timeout time.Duration) error {
	deadline := time.Now().Add(timeout)
	for ; ; sleep(ctx, 200*time.Millisecond) {
		var pending int64
		err := d.query(ctx, d.secPort, fmt.Sprintf(`SELECT count(*) FROM pg_subscription_rel r JOIN pg_subscription s ON s.oid = r.srsubid
			WHERE s.subname = '%s' AND r.srsubstate <> 'r'`, dbSub), &pending)
		if err == nil && pending == 0 {
			pc, perr := d.counts(ctx, d.primaryPort)
			sc, serr := d.counts(ctx, d.secPort)
			if perr == nil && serr == nil && pc == sc {
				return nil
			}
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("secondary %s not caught up within %s (pending tables: %d, %v)", dbName, timeout, pending, err)
		}
	}
}

// quiesce waits until neither server runs an autovacuum worker and every
// active logical walsender of the primary has confirmed the WAL written so
// far, then checkpoints both: each timed run starts from the same quiet
// servers, not while the previous run's restore is still being vacuumed,
// decoded by the sandbox's other subscription and written out.
func (d *dbEnv) quiesce(ctx context.Context) error {
	idle := func(port string) (bool, error) {
		var workers int64
		err := d.queryIn(ctx, d.admin(port), "SELECT count(*) FROM pg_stat_activity WHERE backend_type = 'autovacuum worker'", &workers)
		return workers == 0, err
	}
	for deadline := time.Now().Add(5 * time.Minute); ; sleep(ctx, 500*time.Millisecond) {
		a, err := idle(d.primaryPort)
		if err != nil {
			return err
		}
		b, err := idle(d.secPort)
		if err != nil {
			return err
		}
		var behind int64
		if err := d.queryIn(ctx, d.admin(d.primaryPort), `SELECT count(*) FROM pg_replication_slots
			WHERE active AND slot_type = 'logical' AND pg_wal_lsn_diff(pg_current_wal_lsn(), confirmed_flush_lsn) > 1048576`, &behind); err != nil {
			return err
		}
		if a && b && behind == 0 {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			say("   (servers not quiet after 5m: autovacuum idle %v/%v, walsenders behind %d; timing anyway)", a, b, behind)
			break
		}
	}
	for _, port := range []string{d.primaryPort, d.secPort} {
		if err := d.execIn(ctx, d.admin(port), "CHECKPOINT"); err != nil {
			return err
		}
	}
	return nil
}

func (d *dbEnv) counts(ctx context.Context, port string) (string, error) {
	var parts []string
	for _, t := range pgseed.Tables() {
		var n int64
		if err := d.query(ctx, port, "SELECT count(*) FROM "+t, &n); err != nil {
			return "", err
		}
		parts = append(parts, fmt.Sprintf("%s=%d", t, n))
	}
	return strings.Join(parts, " "), nil
}

func (d *dbEnv) seedCounts() string {
	var parts []string
	for _, t := range pgseed.Tables() {
		parts = append(parts, fmt.Sprintf("%s=%d", t, d.seed.Rows[t]))
	}
	return strings.Join(parts, " ")
}

// preDeployDump takes the runbook's pre-deploy backup of the bench
// database (pg_dump -Fc, its checklist's command) to path.
func (d *dbEnv) preDeployDump(ctx context.Context, path string) (time.Duration, error) {
	start := time.Now()
	cmd := exec.CommandContext(ctx, filepath.Join(d.env["PG_BIN_DIR"], "pg_dump"), "--format=custom", "--file="+path, "--dbname="+d.dsn(d.primaryPort))
	if out, err := cmd.CombinedOutput(); err != nil {
		return 0, fmt.Errorf("pre-deploy dump of %s: %w: %s", dbName, err, out)
	}
	return time.Since(start), nil
}

// deploy is what the bad version did to the database: its migration, and
// rows written since.
func (d *dbEnv) deploy(ctx context.Context) error {
	if err := d.exec(ctx, d.primaryPort, "INSERT INTO pggit.schema_versions (name, version) VALUES ($1, '8.0.0')", pgseed.Migration); err != nil {
		return err
	}
	return d.exec(ctx, d.primaryPort, `INSERT INTO pggit.alert_delivery_queue (delivery_status, payload)
		SELECT 'pending', jsonb_build_object('alert', 'analytics_dashboard', 'n', i) FROM generate_series(1, $1::int) AS i`, dbDeployRows)
}

func (d *dbEnv) once(ctx context.Context, c *cluster, o options, plan, method string, round int) (dbRun, error) {
	r := dbRun{plan: plan, method: method, round: round, phases: map[string]time.Duration{}}
	stamp := time.Now().Format("150405")
	short := map[string]string{planFull: "full", planMulti: "mr"}[plan]
	name := fmt.Sprintf("db-%s-%s-%d-%s", short, map[string]string{methodRunbk: "rb", methodRG: "rg"}[method], round, stamp)
	badImage := "pggit-api:bench-db-" + stamp
	defer c.remove(context.WithoutCancel(ctx), name)
	dir := filepath.Join(o.outDir, name)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return r, err
	}
	// Forensic dumps are as big as the database: none is kept.
	defer os.RemoveAll(filepath.Join(dir, "forensics"))
	// The runbook's pre-deploy backup, taken right before the deploy as its
	// checklist says. rollguard restores only a dump taken before the bad
	// revision was deployed (an older one could not hold the bad version's
	// writes): the archive's "created at" and the ReplicaSet's creation
	// time both have 1 s resolution, so a second passes between them.
	predeploy := filepath.Join(dir, "pre-deploy.dump")
	defer os.Remove(predeploy)
	took, err := d.preDeployDump(ctx, predeploy)
	if err != nil {
		return r, err
	}
	r.predeployDump = took
	sleep(ctx, time.Second)
	if err := c.prepare(ctx, name, badImage); err != nil {
		return r, err
	}
	if err := d.deploy(ctx); err != nil {
		return r, fmt.Errorf("deploy's migration: %w", err)
	}
	if plan == planMulti {
		if err := d.waitSecondary(ctx, 2*time.Minute); err != nil {
			return r, fmt.Errorf("before the rollback: %w", err)
		}
	}
	sleep(ctx, o.settle)
	if err := d.quiesce(ctx); err != nil {
		return r, err
	}

	logPath := filepath.Join(dir, "rollback.log")
	health := fmt.Sprintf("%s/health/%s/%s", d.env["SIM_URL"], benchNamespace, name)
	var cmd *exec.Cmd
	pauses := time.Duration(0)
	switch method {
	case methodRunbk:
		pgEnv := []string{"SANDBOX_BIN_DIR=" + d.env["SANDBOX_BIN_DIR"], "KUBECONFIG=" + d.env["KUBECONFIG"], "PG_BIN_DIR=" + d.env["PG_BIN_DIR"],
			"PGHOST=127.0.0.1", "PGPORT=" + d.primaryPort, "PGUSER=postgres", "PGDATABASE=" + dbName, "SECONDARY_PGPORT=" + d.secPort}
		if err := os.MkdirAll(filepath.Join(dir, "forensics"), 0o700); err != nil {
			return r, err
		}
		if plan == planFull {
			manifest := filepath.Join(dir, "deployment.yaml")
			if err := os.WriteFile(manifest, []byte(stableManifest(name)), 0o644); err != nil {
				return r, err
			}
			cmd = exec.CommandContext(ctx, "test/bench/full-rollback.sh", benchNamespace, name, manifest, predeploy,
				filepath.Join(dir, "forensics", "post-rollback.dump"), health)
		} else {
			cmd = exec.CommandContext(ctx, "test/bench/multi-region-rollback.sh", benchNamespace, name, goodImage, predeploy, dbSub,
				pgseed.Publication, fmt.Sprintf("%g", o.rampPause.Seconds()))
			pauses = o.rampPause
		}
		cmd.Env = append(os.Environ(), pgEnv...)
	default:
		cfg, err := writeDatabaseConfig(dir, d, plan, name, predeploy, o.rampPause)
		if err != nil {
			return r, err
		}
		action := "rollback"
		if plan == planFull {
			action = "full-rollback"
		}
		cmd = exec.CommandContext(ctx, o.rollguard, "rollback", "--local", "--config", cfg, "--target", name, "--action", action, "--reason", "make bench")
		pauses = o.rampPause // ramp [2] then 4: one pause
	}
	f, err := os.Create(logPath)
	if err != nil {
		return r, err
	}
	defer f.Close()
	var stdout strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, f

	start, end, readyAt, runErr := c.runUntilReady(ctx, cmd, name, 15*time.Minute)
	_, _ = f.WriteString(stdout.String())
	if runErr != nil {
		return r, fmt.Errorf("%s: %w (log %s)", method, runErr, logPath)
	}
	r.wall = end.Sub(start) - pauses
	if readyAt.IsZero() {
		return r, fmt.Errorf("%s: 4 replicas of %s not ready (log %s)", method, goodImage, logPath)
	}
	r.ready = readyAt.Sub(start) - pauses
	if method == methodRunbk {
		scriptPhases(stdout.String(), &r)
	} else {
		rollguardPhases(logPath, &r)
		if _, ok := r.phases["ramp"]; ok {
			r.phases["ramp"] -= pauses
		}
	}

	// Both must leave the database as the pre-deploy dump has it, and the
	// secondary caught up with it.
	got, err := d.counts(ctx, d.primaryPort)
	if err != nil {
		return r, err
	}
	if want := d.seedCounts(); got != want {
		return r, fmt.Errorf("%s: primary after the rollback: %s, want the pre-deploy dump's %s", method, got, want)
	}
	if plan == planMulti {
		if err := d.waitSecondary(ctx, 30*time.Second); err != nil {
			return r, fmt.Errorf("%s: after the rollback: %w", method, err)
		}
	}
	return r, nil
}

// scriptPhases reads the scripts' "phase NAME START END" lines.
func scriptPhases(out string, into *dbRun) {
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) != 4 || f[0] != "phase" {
			continue
		}
		a, err1 := strconv.ParseFloat(f[2], 64)
		b, err2 := strconv.ParseFloat(f[3], 64)
		if err1 == nil && err2 == nil {
			into.add(f[1], time.Duration((b-a)*float64(time.Second)))
		}
	}
}

// rollguardPhases reads the plan's step durations from its log, and splits
// the database steps into the client runs (pg_dump, pg_restore reading a
// dump back, pg_restore restoring) the debug log times.
func rollguardPhases(logPath string, into *dbRun) {
	started := map[string]time.Time{}
	clients := &dbRun{phases: map[string]time.Duration{}}
	for _, l := range jsonlog.Read[dbLogLine](logPath) {
		switch l.Msg {
		case "rollback step started":
			started[l.Step] = l.time()
		case "rollback step done":
			if s, ok := started[l.Step]; ok {
				into.add(l.Step, l.time().Sub(s))
			}
		case "postgres client done":
			clients.add(l.Binary+" "+l.What, time.Duration(l.Seconds*float64(time.Second)))
		}
	}
	for _, k := range clients.order {
		into.add("("+k+")", clients.phases[k])
	}
}

type dbLogLine struct {
	logLine
	Binary  string  `json:"binary"`
	What    string  `json:"what"`
	Seconds float64 `json:"seconds"`
}

// stableManifest is the Deployment at its previous version, as a team
// keeps it for the runbook's `kubectl create -f deployment.yaml`.
func stableManifest(name string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: %s
  namespace: %s
  labels: {pggitsim.rollguard.io/simulate: "true", rollguard.io/bench: "true"}
spec:
  replicas: %d
  selector:
    matchLabels: {app: %s}
  template:
    metadata:
      labels: {app: %s}
    spec:
      containers:
        - name: %s
          image: %s
`, name, benchNamespace, replicas, name, name, container, goodImage)
}

func writeDatabaseConfig(dir string, d *dbEnv, plan, name, predeploy string, pause time.Duration) (string, error) {
	for file, port := range map[string]string{"primary-dsn": d.primaryPort, "replica-dsn": d.secPort} {
		if err := os.WriteFile(filepath.Join(dir, file), []byte(d.dsn(port)), 0o600); err != nil {
			return "", err
		}
	}
	port, err := localproc.FreePort()
	if err != nil {
		return "", err
	}
	multi := ""
	if plan == planMulti {
		multi = fmt.Sprintf(`      multiRegion:
        secondaries: [replica-eu]
        subscription: %s
        maxLag: 1s
        timeout: 10m
`, dbSub)
	}
	cfg := fmt.Sprintf(`# Generated by make bench (database).
global:
  interval: 5s
  listenAddress: 127.0.0.1:%d
  logLevel: debug
  prometheus: {url: %q}
%s  notify:
    incidentDir: %q
  databases:
    - name: primary
      dsnFile: primary-dsn
      binDir: %s
    - name: replica-eu
      dsnFile: replica-dsn
      binDir: %s
%s    triggers:
      - {name: error-rate, kind: errorRate, above: 0.05, minRate: 1, action: rollback}
    rollback:
      strategy: quick
      rampSteps: [2]
      rampPause: %s
      rolloutTimeout: 30s
      verifyWindow: 30s
      database:
        name: primary
        migration: %s
        dumpPath: %s
        forensicDir: %s
        verifyTables: [pggit.alert_delivery_queue, pggit.webhook_health_metrics]
%s`, port, d.env["PROMETHEUS_URL"], benchGlobal(d.env), filepath.Join(dir, "incidents"), d.env["PG_BIN_DIR"], d.env["PG_BIN_DIR"],
		benchTarget(d.env, name), model(pause), pgseed.Migration, predeploy,
		filepath.Join(dir, "forensics"), multi)
	path := filepath.Join(dir, "rollguard.yaml")
	return path, os.WriteFile(path, []byte(cfg), 0o644)
}

func pgVersion(binDir string) string {
	b, err := exec.Command(filepath.Join(binDir, "pg_dump"), "--version").Output()
	if err != nil {
		return "unknown"
	}
	return strings.TrimSpace(string(b))
}

// figure is the comparable duration of a plan: full ends with the previous
// version at 4 Ready on the restored database (the runbook's commands exit
// before that); multi-region ends when the secondary has caught up, which
// both wait for before they exit, without rollguard's verify step: it
// waits for metrics from after the rollout and holds verifyWindow (30 s),
// a wait the script, whose check is one curl, does not have; the rollback
// rows leave it out too.
func (r dbRun) figure() time.Duration {
	if r.plan == planFull {
		return r.ready
	}
	return r.wall - r.phases["verify"]
}

func (res *dbResult) predeployMedian() time.Duration {
	var ds []time.Duration
	for _, r := range res.runs {
		ds = append(ds, r.predeployDump)
	}
	if len(ds) == 0 {
		return 0
	}
	return statsOf(ds).med
}

func (res *dbResult) markdown(b *strings.Builder) {
	s := res.seed
	fmt.Fprintf(b, "### Database: the full and multi-region plans against the runbook's commands (%s of rows)\n\n", pgseed.MiB(s.TableBytes))
	fmt.Fprintf(b, "`%s` on the sandbox's primary (%s): the pggit schema with %s of generated rows (%d alert deliveries with JSON payloads, "+
		"%d webhook health checks; %s with indexes), built by `test/pgseed` (`--db-size-mib`, this run: %s) and kept as a dump "+
		"(`pg_dump -Fc`, %s) in the cache between runs. Each run takes the runbook's pre-deploy backup (`pg_dump -Fc`, untimed, "+
		"median %s), deploys a bad version a second later (rollguard restores only a dump taken before the bad revision was deployed), "+
		"whose migration is applied and which wrote %d rows, then rolls back to that dump; both sides must leave the primary exactly as the pre-deploy dump has it (checked), and for multi-region the "+
		"secondary (a subscription on the sandbox's subscriber, first copy %s) caught up with it (checked). \"runbook\" is "+
		"`test/bench/full-rollback.sh` or `test/bench/multi-region-rollback.sh`: the runbook's kubectl, pg_dump, pg_restore and "+
		"ALTER SUBSCRIPTION commands in its order (the scripts say where the runbook's text cannot run as written). \"rollguard\" is "+
		"`rollguard rollback --local --action full-rollback|rollback`. Alternating, started %s after the bad version rolled out, the "+
		"ramp pause (%s) taken out. The figure compared is, for full, exec → 4 Ready of the previous version (the runbook's commands "+
		"exit before), and for multi-region exec → exit, once the secondary has caught up (both wait for it), without rollguard's verify "+
		"step (it waits for metrics from after the rollout and holds verifyWindow, 30 s; the script checks with one curl; the rollback "+
		"rows leave it out too).\n\n",
		dbName, res.primaryPG, pgseed.MiB(s.TableBytes), s.Rows["pggit.alert_delivery_queue"], s.Rows["pggit.webhook_health_metrics"],
		pgseed.MiB(s.DatabaseBytes), s.How, pgseed.MiB(s.DumpBytes), res.predeployMedian().Round(100*time.Millisecond), dbDeployRows, res.syncTook.Round(100*time.Millisecond),
		5*time.Second, res.pause)
	b.WriteString("| plan | method | runs | exec → exit, min / median / max | exec → 4 ready, min / median / max | the figure, median | ratio to the runbook (median of the figure, goal ≤ 1.0) |\n")
	b.WriteString("|---|---|---|---|---|---|---|\n")
	for _, plan := range []string{planFull, planMulti} {
		base := time.Duration(0)
		for _, m := range []string{methodRunbk, methodRG} {
			var wall, ready, fig []time.Duration
			for _, r := range res.runs {
				if r.plan == plan && r.method == m {
					wall, ready, fig = append(wall, r.wall), append(ready, r.ready), append(fig, r.figure())
				}
			}
			if len(wall) == 0 {
				continue
			}
			med := statsOf(fig).med
			if m == methodRunbk {
				base = med
			}
			fmt.Fprintf(b, "| %s | %s | %d | %s | %s | %.2f s | %.2f |\n", plan, m, len(wall), statsOf(wall), statsOf(ready), med.Seconds(), ratio(med, base))
		}
	}
	b.WriteString("\nWhere the time goes (median seconds per phase, in the order they run, the ramp pause taken out): the scripts' steps, " +
		"rollguard's plan steps and, in parentheses, the PostgreSQL client runs inside rollguard's steps (`pg_dump`; `pg_restore` " +
		"listing an archive, reading one back in full to check it, restoring).\n\n")
	for _, plan := range []string{planFull, planMulti} {
		for _, m := range []string{methodRunbk, methodRG} {
			phases := map[string][]time.Duration{}
			var keys []string
			for _, r := range res.runs {
				if r.plan != plan || r.method != m {
					continue
				}
				for _, k := range r.order {
					if _, ok := phases[k]; !ok {
						keys = append(keys, k)
					}
					phases[k] = append(phases[k], r.phases[k])
				}
			}
			if len(keys) == 0 {
				continue
			}
			var parts []string
			for _, k := range keys {
				parts = append(parts, fmt.Sprintf("%s %.2f", k, statsOf(phases[k]).med.Seconds()))
			}
			fmt.Fprintf(b, "- %s, %s: %s\n", plan, m, strings.Join(parts, "; "))
		}
	}
	b.WriteString("\n")
}
