package rollback_test

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/rollguard/rollguard/pkg/database"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// The database plans against the real PostgreSQL pair and API server. The
// pggit database is shared with other tests: every restore here runs on a
// scratch database of the test's own (pggit schema from test/fixtures), and
// the one test that touches the sandbox pair (pause and resume pggit_sub)
// leaves it enabled, replicating and in sync.

// pggitScratch is a scratch copy of the pggit database (see
// sandboxfixture.Pggit) with rollguard's own handle on it.
type pggitScratch struct {
	*sandboxfixture.Pggit
	db *database.DB
}

func newPggitScratch(t *testing.T, prefix string) *pggitScratch {
	t.Helper()
	env := sandboxenv.Load(t)
	p := sandboxfixture.NewPggit(t, env, prefix)
	return &pggitScratch{Pggit: p, db: openPG(t, env, "scratch-"+p.Name, p.DSN)}
}

func (p *pggitScratch) afterDumpRows(t *testing.T) int64 {
	t.Helper()
	return sandboxfixture.PgInt(t, p.Conn, "SELECT count(*) FROM pggit.alert_delivery_queue WHERE delivery_status = 'after-dump'")
}

// preDeployDump dumps the scratch database, as the deploy pipeline does
// before the migration, into dir and returns the dump's path.
func (p *pggitScratch) preDeployDump(t *testing.T, dir string) string {
	t.Helper()
	pre := filepath.Join(dir, "pre-deploy.dump")
	if _, err := p.db.Dump(context.Background(), pre); err != nil {
		t.Fatal(err)
	}
	return pre
}

// settings are the database steps' settings for the scratch database.
func (p *pggitScratch) settings(preDeployDump, forensicDir string) *rollback.DatabaseSettings {
	return &rollback.DatabaseSettings{DB: p.db, Migration: sandboxfixture.Phase8, PreDeployDump: preDeployDump, ForensicDir: forensicDir, Tables: sandboxfixture.PggitTables}
}

func openPG(t *testing.T, env sandboxenv.Env, name, dsn string) *database.DB {
	t.Helper()
	db, err := database.Open(context.Background(), database.Options{Name: name, DSN: dsn, BinDir: env.Get(t, "PG_BIN_DIR"), Timeout: 20 * time.Second},
		zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(db.Close)
	return db
}

// liveJournal reads the Deployment's journal ConfigMap from the cluster.
func (s *sandbox) liveJournal(t *testing.T) (*rollback.Journal, string) {
	t.Helper()
	cm, err := s.client.CoreV1().ConfigMaps(s.ns).Get(context.Background(), rollback.JournalName(s.get(t).UID), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	var j rollback.Journal
	if err := json.Unmarshal([]byte(cm.Data["journal.json"]), &j); err != nil {
		t.Fatal(err)
	}
	return &j, cm.ResourceVersion
}

func journalStep(t *testing.T, j *rollback.Journal, name string) rollback.StepRecord {
	t.Helper()
	for _, s := range j.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("journal has no step %s: %v", name, stepNames(j))
	return rollback.StepRecord{}
}

func (r *recorder) count(kind, step string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, e := range r.events {
		if e == kind+" "+step {
			n++
		}
	}
	return n
}

func hasEnv(c []string, name string) bool { return slices.Contains(c, name) }

func envNames(s *sandbox, t *testing.T) []string {
	var out []string
	for _, c := range s.get(t).Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			out = append(out, e.Name+"="+e.Value)
		}
	}
	return out
}

func forensicDumps(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*-forensic.dump"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func timed(t *testing.T) {
	start := time.Now()
	t.Cleanup(func() { t.Logf("wall time %s", time.Since(start).Round(10*time.Millisecond)) })
}

// TestDatabaseIntegrationFull: the full plan on a scratch database takes
// back what the bad version wrote, keeps it in the forensic dump, and ends
// on v1.0.3 without the read-only flag; a second firing restores nothing.
func TestDatabaseIntegrationFull(t *testing.T) {
	timed(t)
	s := newSandboxBeforeDeploy(t)
	env := sandboxenv.Load(t)
	ctx := context.Background()
	p := newPggitScratch(t, "rg_full_")
	pre := p.preDeployDump(t, t.TempDir())
	before := sandboxfixture.PgCounts(t, p.Conn)
	s.shipBad(t)
	p.Deploy(t, 25)

	forensicDir := t.TempDir()
	tg := s.target()
	tg.Database = p.settings(pre, forensicDir)
	var readOnlyDuringDump []string
	obs := &recorder{hook: func(kind string, f rollback.Facts) {
		if kind == "step-started" && f.Step == rollback.StepDBDump {
			readOnlyDuringDump = envNames(s, t)
		}
	}}
	req := rollback.Request{Target: tg, Action: plan.Full, Reason: "integration: data integrity"}
	res, err := s.executor(obs).Run(ctx, req)
	if err != nil {
		t.Fatalf("full: %v\nobserver: %v", err, obs.events)
	}
	s.assertRolledBack(t)
	if !hasEnv(readOnlyDuringDump, rollback.ReadOnlyEnv+"=true") {
		t.Errorf("template env during the forensic dump = %v, want %s=true", readOnlyDuringDump, rollback.ReadOnlyEnv)
	}
	if env := envNames(s, t); len(env) != 0 {
		t.Errorf("final template env = %v, want no %s", env, rollback.ReadOnlyEnv)
	}
	if n := p.afterDumpRows(t); n != 0 {
		t.Errorf("%d rows written after the pre-deploy dump survived the restore", n)
	}
	if p.MigrationApplied(t) {
		t.Error("migration still applied after the full rollback")
	}
	if after := sandboxfixture.PgCounts(t, p.Conn); !maps.Equal(after, before) {
		t.Errorf("row counts after restore %v, want the pre-deploy %v", after, before)
	}

	// The forensic dump holds what the restore removed.
	dumps := forensicDumps(t, forensicDir)
	if len(dumps) != 1 {
		t.Fatalf("forensic dumps %v, want 1", dumps)
	}
	copyName, copyDSN := sandboxfixture.ScratchDatabase(t, env.Get(t, "PG_PRIMARY_DSN"), "rg_forensic_")
	if err := p.db.RestoreInto(ctx, dumps[0], copyName); err != nil {
		t.Fatal(err)
	}
	cc := sandboxfixture.PgConnect(t, copyDSN)
	if n := sandboxfixture.PgInt(t, cc, "SELECT count(*) FROM pggit.alert_delivery_queue WHERE delivery_status = 'after-dump'"); n != 25 {
		t.Errorf("forensic dump has %d post-dump rows, want 25", n)
	}
	if n := sandboxfixture.PgInt(t, cc, "SELECT count(*) FROM pggit.schema_versions WHERE name = $1", sandboxfixture.Phase8); n != 1 {
		t.Errorf("forensic dump has %d migration rows, want 1", n)
	}

	// Journal: every step done, the dump and the restore exactly once.
	j, rv := s.liveJournal(t)
	wantSteps := []string{"preflight=done", "db-readonly=done", "db-dump=done", "stop=done", "db-restore=done", "db-verify=done",
		"application=done", "wait-rollout=done", "ramp=done", "verify=done"}
	if got := stepNames(j); !slices.Equal(got, wantSteps) || j.State != rollback.RunSucceeded {
		t.Errorf("journal %s %v, want succeeded %v", j.State, got, wantSteps)
	}
	for _, step := range []string{rollback.StepDBDump, rollback.StepDBRestore} {
		if rec := journalStep(t, j, step); rec.Attempts != 1 || obs.count("step-started", step) != 1 {
			t.Errorf("%s: %d attempts, started %d times; want once", step, rec.Attempts, obs.count("step-started", step))
		}
	}
	if d := journalStep(t, j, rollback.StepDBVerify).Detail; !strings.Contains(d, "pggit.alert_delivery_queue=6") || !strings.Contains(d, "migration "+sandboxfixture.Phase8+" not applied") {
		t.Errorf("db-verify detail %q", d)
	}
	if res.Replicas != 4 {
		t.Errorf("recorded replicas %d, want 4", res.Replicas)
	}

	// A second firing is refused and restores nothing: a row written now
	// survives, no second forensic dump, the journal is untouched.
	sandboxfixture.PgExec(t, p.Conn, "INSERT INTO pggit.alert_delivery_queue (delivery_status) VALUES ('after-rollback')")
	obs2 := &recorder{}
	_, err = s.executor(obs2).Run(ctx, req)
	if !errors.Is(err, rollback.ErrAlreadyRolledBack) {
		t.Fatalf("second run: %v, want ErrAlreadyRolledBack", err)
	}
	if n := sandboxfixture.PgInt(t, p.Conn, "SELECT count(*) FROM pggit.alert_delivery_queue WHERE delivery_status = 'after-rollback'"); n != 1 {
		t.Errorf("second run restored again: row written after the rollback is gone")
	}
	if d := forensicDumps(t, forensicDir); len(d) != 1 {
		t.Errorf("second run wrote another forensic dump: %v", d)
	}
	if _, rv2 := s.liveJournal(t); rv2 != rv {
		t.Errorf("second run rewrote the journal (rv %s -> %s)", rv, rv2)
	}
	if obs2.count("step-started", rollback.StepDBRestore) != 0 {
		t.Errorf("second run started db-restore: %v", obs2.events)
	}
}

// TestDatabaseIntegrationQuick: quick restores only when the migration is
// applied.
func TestDatabaseIntegrationQuick(t *testing.T) {
	t.Run("migration-applied", func(t *testing.T) {
		timed(t)
		s := newSandboxBeforeDeploy(t)
		ctx := context.Background()
		p := newPggitScratch(t, "rg_quick_")
		pre := p.preDeployDump(t, t.TempDir())
		s.shipBad(t)
		p.Deploy(t, 10)
		forensicDir := t.TempDir()
		tg := s.target()
		tg.Database = p.settings(pre, forensicDir)
		// The bad version must have stopped, terminating Pods included,
		// before the dump and the restore touch its database.
		podsAt := map[string]int{}
		obs := &recorder{hook: func(kind string, f rollback.Facts) {
			if kind == "step-started" && (f.Step == rollback.StepDBDump || f.Step == rollback.StepDBRestore) {
				podsAt[f.Step] = s.podCount(t)
			}
		}}
		res, err := s.executor(obs).Run(ctx, rollback.Request{Target: tg, Reason: "integration: error rate"})
		if err != nil {
			t.Fatalf("quick: %v\nobserver: %v", err, obs.events)
		}
		s.assertRolledBack(t)
		if want := map[string]int{rollback.StepDBDump: 0, rollback.StepDBRestore: 0}; !maps.Equal(podsAt, want) {
			t.Errorf("pods (terminating included) when the database steps started: %v, want none", podsAt)
		}
		want := []string{"preflight=done", "stop=done", "db-dump=done", "db-restore=done", "db-verify=done", "application=done", "wait-rollout=done", "ramp=done", "verify=done"}
		j, _ := s.liveJournal(t)
		if got := stepNames(j); !slices.Equal(got, want) || !j.MigrationApplied || res.State != rollback.RunSucceeded {
			t.Errorf("journal %v (migration applied %v, state %s), want %v", got, j.MigrationApplied, res.State, want)
		}
		if n := p.afterDumpRows(t); n != 0 || p.MigrationApplied(t) {
			t.Errorf("after restore: %d post-dump rows, migration applied %v; want 0, false", n, p.MigrationApplied(t))
		}
		if d := forensicDumps(t, forensicDir); len(d) != 1 {
			t.Errorf("forensic dumps %v, want 1", d)
		}
	})

	t.Run("migration-not-applied", func(t *testing.T) {
		timed(t)
		s := newSandbox(t)
		ctx := context.Background()
		p := newPggitScratch(t, "rg_quick_")
		pre := p.preDeployDump(t, t.TempDir())
		// A deploy without the migration: its rows must stay.
		sandboxfixture.PgExec(t, p.Conn, "INSERT INTO pggit.alert_delivery_queue (delivery_status) SELECT 'after-dump' FROM generate_series(1, 7)")
		before := sandboxfixture.PgCounts(t, p.Conn)
		forensicDir := t.TempDir()
		tg := s.target()
		tg.Database = p.settings(pre, forensicDir)
		obs := &recorder{}
		if _, err := s.executor(obs).Run(ctx, rollback.Request{Target: tg, Reason: "integration: error rate"}); err != nil {
			t.Fatalf("quick: %v\nobserver: %v", err, obs.events)
		}
		s.assertRolledBack(t)
		want := []string{"preflight=done", "stop=done", "application=done", "wait-rollout=done", "ramp=done", "verify=done"}
		j, _ := s.liveJournal(t)
		if got := stepNames(j); !slices.Equal(got, want) || j.MigrationApplied {
			t.Errorf("journal %v (migration applied %v), want %v", got, j.MigrationApplied, want)
		}
		if after := sandboxfixture.PgCounts(t, p.Conn); !maps.Equal(after, before) {
			t.Errorf("row counts %v, want untouched %v", after, before)
		}
		if d := forensicDumps(t, forensicDir); len(d) != 0 {
			t.Errorf("forensic dumps %v, want none", d)
		}
	})
}

// TestDatabaseIntegrationFailedRestore: a truncated pre-deploy dump is
// refused before anything is written; one that breaks while the plan runs
// is refused right before pg_restore, which never starts, so the database
// is untouched and a resume may try again (it is no interrupted restore).
func TestDatabaseIntegrationFailedRestore(t *testing.T) {
	timed(t)
	s := newSandboxBeforeDeploy(t)
	ctx := context.Background()
	p := newPggitScratch(t, "rg_failed_")
	dir := t.TempDir()
	good := p.preDeployDump(t, dir)
	b, err := os.ReadFile(good)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "pre-deploy-truncated.dump")
	if err := os.WriteFile(truncated, b[:len(b)*2/3], 0o600); err != nil {
		t.Fatal(err)
	}
	s.shipBad(t)
	p.Deploy(t, 10)
	before := sandboxfixture.PgCounts(t, p.Conn)
	untouched := func(t *testing.T, replicas int32) {
		t.Helper()
		if after := sandboxfixture.PgCounts(t, p.Conn); !maps.Equal(after, before) || !p.MigrationApplied(t) {
			t.Errorf("row counts %v (migration applied %v), want untouched %v", after, p.MigrationApplied(t), before)
		}
		d := s.get(t)
		if *d.Spec.Replicas != replicas || d.Spec.Template.Spec.Containers[0].Image != bad {
			t.Errorf("deployment %s with %d replicas, want %s at %d", d.Spec.Template.Spec.Containers[0].Image, *d.Spec.Replicas, bad, replicas)
		}
	}

	t.Run("invalid from the start", func(t *testing.T) {
		tg := s.target()
		tg.Database = p.settings(truncated, t.TempDir())
		_, err := s.executor(nil).Run(ctx, rollback.Request{Target: tg, Reason: "integration: error rate"})
		var ref *rollback.RefusedError
		if !errors.As(err, &ref) || !errors.Is(err, database.ErrDumpInvalid) {
			t.Fatalf("err = %v, want a refusal for the invalid dump", err)
		}
		untouched(t, 4)
		if _, err := s.client.CoreV1().ConfigMaps(s.ns).Get(ctx, rollback.JournalName(s.get(t).UID), metav1.GetOptions{}); err == nil {
			t.Error("a refused run wrote its journal")
		}
	})

	t.Run("broken while the plan runs", func(t *testing.T) {
		pre := filepath.Join(dir, "pre-deploy-copy.dump")
		if err := os.WriteFile(pre, b, 0o600); err != nil {
			t.Fatal(err)
		}
		tg := s.target()
		tg.Database = p.settings(pre, t.TempDir())
		obs := &recorder{hook: func(kind string, f rollback.Facts) {
			if kind == "step-started" && f.Step == rollback.StepDBDump {
				// The volume holding the backup goes bad during the incident.
				if err := os.WriteFile(pre, b[:len(b)*2/3], 0o600); err != nil {
					panic(err)
				}
			}
		}}
		_, err := s.executor(obs).Run(ctx, rollback.Request{Target: tg, Reason: "integration: error rate"})
		t.Logf("returned error: %v", err)
		if !errors.Is(err, database.ErrDumpInvalid) || !errors.Is(err, rollback.ErrStepFailed) || !strings.Contains(err.Error(), rollback.StepDBRestore) {
			t.Errorf("err = %v, want the restore step refusing the invalid dump", err)
		}
		untouched(t, 0)
		j, _ := s.liveJournal(t)
		want := []string{"preflight=done", "stop=done", "db-dump=done", "db-restore=pending", "db-verify=pending", "application=pending", "wait-rollout=pending", "ramp=pending", "verify=pending"}
		if got := stepNames(j); !slices.Equal(got, want) || j.State != rollback.RunFailed {
			t.Errorf("journal %s %v, want failed %v", j.State, got, want)
		}
		if rec := journalStep(t, j, rollback.StepDBRestore); !strings.Contains(rec.Detail, "not started") || !strings.Contains(rec.Detail, "invalid dump") {
			t.Errorf("db-restore detail %q", rec.Detail)
		}
		for _, step := range []string{rollback.StepApplication, rollback.StepRamp} {
			if n := obs.count("step-started", step); n != 0 {
				t.Errorf("%s started after the refused restore", step)
			}
		}
		// The next firing checks again and refuses again: no restore of a
		// broken dump, and no scale up over a half-done plan.
		_, err = s.executor(nil).Run(ctx, rollback.Request{Target: tg})
		t.Logf("next run: %v", err)
		if !errors.Is(err, database.ErrDumpInvalid) {
			t.Errorf("next run: %v, want the invalid dump refused again", err)
		}
		untouched(t, 0)
	})
}

// TestDatabaseIntegrationPoolRecovery: only the app's own old
// idle-in-transaction sessions end, then a rolling restart of the same
// version.
func TestDatabaseIntegrationPoolRecovery(t *testing.T) {
	timed(t)
	s := newSandbox(t)
	env := sandboxenv.Load(t)
	ctx := context.Background()
	// An application_name of the test's own: other tests (and the
	// simulator's /control/pg/hold) keep pggit-api sessions idle too.
	app := "pggit-api-" + rand.String(6)
	withApp := func(dsn, name string) string {
		u, err := url.Parse(dsn)
		if err != nil {
			t.Fatal(err)
		}
		q := u.Query()
		q.Set("application_name", name)
		u.RawQuery = q.Encode()
		return u.String()
	}
	appDSN := withApp(env.Get(t, "PG_PRIMARY_APP_DSN"), app)
	idleInTx := func(dsn string) (*pgx.Conn, uint32) {
		c := sandboxfixture.PgConnect(t, dsn)
		sandboxfixture.PgExec(t, c, "BEGIN")
		sandboxfixture.PgExec(t, c, "SELECT 1")
		return c, c.PgConn().PID()
	}
	type session struct {
		name string
		pid  uint32
		end  bool
	}
	_, pid1 := idleInTx(appDSN)
	_, pid2 := idleInTx(appDSN)
	active, pidActive := idleInTx(appDSN)
	_, pidOtherApp := idleInTx(withApp(env.Get(t, "PG_PRIMARY_APP_DSN"), app+"-other"))
	_, pidSuper := idleInTx(withApp(env.Get(t, "PG_PRIMARY_DSN"), app))
	_, pidMonitor := idleInTx(withApp(env.Get(t, "PG_PRIMARY_MONITOR_DSN"), app))
	time.Sleep(2 * time.Second)

	// The active one: idle in transaction for 2 s, now running a query.
	var wg sync.WaitGroup
	var activeErr error
	wg.Add(1)
	go func() {
		defer wg.Done()
		_, activeErr = active.Exec(ctx, "SELECT pg_sleep(5)")
	}()
	admin := sandboxfixture.PgConnect(t, env.Get(t, "PG_PRIMARY_DSN"))
	deadline := time.Now().Add(5 * time.Second)
	for sandboxfixture.PgInt(t, admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1 AND state = 'active'", int32(pidActive)) != 1 {
		if time.Now().After(deadline) {
			t.Fatal("pg_sleep session never became active")
		}
		time.Sleep(50 * time.Millisecond)
	}

	var pidFresh uint32
	obs := &recorder{hook: func(kind string, f rollback.Facts) {
		if kind == "step-started" && f.Step == rollback.StepTerminateIdle {
			// Idle in transaction for a few milliseconds when the step runs.
			_, pidFresh = idleInTx(appDSN)
		}
	}}
	monitor := openPG(t, env, "primary-monitor", env.Get(t, "PG_PRIMARY_MONITOR_DSN"))
	tg := s.target()
	tg.Database = &rollback.DatabaseSettings{DB: monitor}
	tg.PoolRecovery = rollback.PoolRecoverySettings{Role: "pggit_app", ApplicationName: app, OlderThan: time.Second}
	if _, err := s.executor(obs).Run(ctx, rollback.Request{Target: tg, Action: plan.PoolRecovery, Reason: "integration: pool exhausted"}); err != nil {
		t.Fatalf("pool-recovery: %v\nobserver: %v", err, obs.events)
	}
	wg.Wait()
	if activeErr != nil {
		t.Errorf("active session: %v", activeErr)
	}
	sessions := []session{
		{"old idle 1", pid1, true}, {"old idle 2", pid2, true}, {"active", pidActive, false}, {"fresh", pidFresh, false},
		{"other application", pidOtherApp, false}, {"superuser", pidSuper, false}, {"rollguard", pidMonitor, false},
	}
	for _, se := range sessions {
		alive := sandboxfixture.PgInt(t, admin, "SELECT count(*) FROM pg_stat_activity WHERE pid = $1", int32(se.pid)) == 1
		if alive == se.end {
			t.Errorf("session %s (pid %d): alive %v, want terminated %v", se.name, se.pid, alive, se.end)
		}
	}
	j, _ := s.liveJournal(t)
	if d := journalStep(t, j, rollback.StepTerminateIdle).Detail; !strings.HasPrefix(d, "terminated 2 sessions") {
		t.Errorf("terminate-sessions detail %q, want 2 terminated", d)
	}
	if got, want := stepNames(j), []string{"preflight=done", "terminate-sessions=done", "restart=done", "wait-rollout=done"}; !slices.Equal(got, want) {
		t.Errorf("journal %v, want %v", got, want)
	}

	// A restart, not a rollback: still v1.1.0, restartedAt set, rolled out.
	s.waitComplete(t)
	d := s.get(t)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != bad || d.Spec.Template.Annotations[kube.RestartedAtAnnotation] == "" ||
		*d.Spec.Replicas != 4 || d.Status.ReadyReplicas != 4 || d.Status.UpdatedReplicas != 4 {
		t.Errorf("deployment %s, annotations %v, spec %d, ready %d, updated %d; want %s restarted with 4 ready",
			img, d.Spec.Template.Annotations, *d.Spec.Replicas, d.Status.ReadyReplicas, d.Status.UpdatedReplicas, bad)
	}
}

// eventuallyErr retries cond every 200 ms until it returns nil or within
// has passed, and returns its last error.
func eventuallyErr(within time.Duration, cond func() error) error {
	deadline := time.Now().Add(within)
	for {
		err := cond()
		if err == nil || time.Now().After(deadline) {
			return err
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func subEnabled(t *testing.T, c *pgx.Conn, name string) bool {
	t.Helper()
	var on bool
	if err := c.QueryRow(context.Background(), "SELECT subenabled FROM pg_subscription WHERE subname = $1", name).Scan(&on); err != nil {
		t.Errorf("read pg_subscription %s: %v", name, err)
	}
	return on
}

// TestDatabaseIntegrationMultiRegion: subscriptions paused around the
// rollback and resumed (or, after an in-place restore of the publisher,
// rebuilt) with the lag back under 1 s.
func TestDatabaseIntegrationMultiRegion(t *testing.T) {
	t.Run("sandbox-pair", func(t *testing.T) {
		timed(t)
		s := newSandbox(t)
		env := sandboxenv.Load(t)
		ctx := context.Background()
		subName := env.Get(t, "PG_SUBSCRIPTION")
		primary := openPG(t, env, "primary", env.Get(t, "PG_PRIMARY_DSN"))
		secondary := openPG(t, env, "secondary", env.Get(t, "PG_SUBSCRIBER_DSN"))
		marker := "rg-rollback-" + rand.String(6)
		sandboxfixture.KeepPairReplicating(t, env, secondary, subName, marker+"-")
		// A slot nobody consumes on the primary: the lag waited for is the
		// secondary's own, or wait-lag would time out.
		sandboxfixture.StaleSlot(t, env.Get(t, "PG_PRIMARY_DSN"))
		pub := sandboxfixture.PgConnect(t, env.Get(t, "PG_PRIMARY_DSN"))
		sub := sandboxfixture.PgConnect(t, env.Get(t, "PG_SUBSCRIBER_DSN"))
		if err := sandboxfixture.Replicates(ctx, pub, sub, marker+"-before", 10*time.Second); err != nil {
			t.Fatalf("sandbox pair not replicating before the test: %v", err)
		}

		var enabledMidPlan *bool
		obs := &recorder{hook: func(kind string, f rollback.Facts) {
			if kind == "step-started" && f.Step == rollback.StepApplication {
				on := subEnabled(t, sub, subName)
				enabledMidPlan = &on
				// Written while the secondary is paused: must arrive after.
				if err := sandboxfixture.WriteMarker(ctx, pub, marker+"-during"); err != nil {
					t.Errorf("write during the plan: %v", err)
				}
			}
		}}
		tg := s.target()
		tg.Database = &rollback.DatabaseSettings{DB: primary}
		tg.MultiRegion = &rollback.MultiRegionSettings{
			Secondaries: []rollback.Secondary{{Name: "subscriber", DB: secondary, Subscription: subName}},
			MaxLag:      time.Second, LagTimeout: 60 * time.Second,
		}
		start := time.Now()
		if _, err := s.executor(obs).Run(ctx, rollback.Request{Target: tg, Action: plan.MultiRegion, Reason: "integration: multi-region"}); err != nil {
			t.Fatalf("multi-region: %v\nobserver: %v", err, obs.events)
		}
		t.Logf("plan took %s", time.Since(start).Round(10*time.Millisecond))
		s.assertRolledBack(t)
		if enabledMidPlan == nil || *enabledMidPlan {
			t.Errorf("subscription enabled mid-plan = %v, want disabled", enabledMidPlan)
		}
		if !subEnabled(t, sub, subName) {
			t.Error("subscription disabled after the plan")
		}
		j, _ := s.liveJournal(t)
		want := []string{"preflight=done", "lag-check=done", "disable-subscriptions=done", "stop=done", "application=done", "wait-rollout=done",
			"ramp=done", "verify=done", "enable-subscriptions=done", "wait-lag=done"}
		if got := stepNames(j); !slices.Equal(got, want) {
			t.Errorf("journal %v, want %v", got, want)
		}
		if d := journalStep(t, j, rollback.StepEnableSubs).Detail; d != "subscriber enabled" {
			t.Errorf("enable-subscriptions detail %q", d)
		}
		t.Logf("wait-lag: %s", journalStep(t, j, rollback.StepWaitLag).Detail)
		slot, err := secondary.SubscriptionSlot(ctx, subName)
		if err != nil {
			t.Fatal(err)
		}
		if lag, err := primary.StreamingLag(ctx, slot); err != nil || lag >= time.Second {
			t.Errorf("lag of slot %s after the plan %s, %v; want < 1s", slot, lag, err)
		}
		if err := eventuallyErr(10*time.Second, func() error {
			var n int64
			if err := sub.QueryRow(ctx, "SELECT count(*) FROM pggit.replication_conflict_log WHERE table_name = $1", marker+"-during").Scan(&n); err != nil || n != 1 {
				return fmt.Errorf("row written while paused: %d on the subscriber, %v", n, err)
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})

	// The trap on a scratch publisher/subscriber pair of the test's own:
	// the database step restores the publisher in place, which breaks
	// logical replication for good; the plan must rebuild the subscription.
	t.Run("restore-in-place", func(t *testing.T) {
		timed(t)
		s := newSandboxBeforeDeploy(t)
		env := sandboxenv.Load(t)
		ctx := context.Background()
		p := newPggitScratch(t, "rg_mrpub_")
		r := p.Replicate(t)
		sc, subDSN, subName := r.Conn, r.DSN, r.Subscription

		pre := p.preDeployDump(t, t.TempDir())
		s.shipBad(t)
		p.Deploy(t, 20)
		if err := eventuallyErr(10*time.Second, func() error { return sandboxfixture.CountsEqual(ctx, p.Conn, sc) }); err != nil {
			t.Fatalf("deploy rows did not replicate: %v", err)
		}

		secondary := openPG(t, env, "scratch-secondary", subDSN)
		var enabledMidPlan *bool
		var syncedAtWaitLag error
		obs := &recorder{hook: func(kind string, f rollback.Facts) {
			if kind == "step-started" && f.Step == rollback.StepDBRestore {
				on := subEnabled(t, sc, subName)
				enabledMidPlan = &on
			}
			if kind == "step-finished" && f.Step == rollback.StepWaitLag && f.Err == nil {
				// The plan says the secondary has caught up: it must already
				// hold the primary's rows, not be halfway through its copy.
				var notReady int64
				if err := sc.QueryRow(ctx, "SELECT count(*) FROM pg_subscription_rel WHERE srsubstate <> 'r'").Scan(&notReady); err != nil {
					t.Error(err)
				}
				syncedAtWaitLag = sandboxfixture.CountsEqual(ctx, p.Conn, sc)
				if syncedAtWaitLag == nil && notReady > 0 {
					syncedAtWaitLag = fmt.Errorf("%d tables not ready", notReady)
				}
			}
		}}
		tg := s.target()
		tg.Database = p.settings(pre, t.TempDir())
		tg.MultiRegion = &rollback.MultiRegionSettings{
			Secondaries: []rollback.Secondary{{Name: "scratch-secondary", DB: secondary, Subscription: subName}},
			MaxLag:      time.Second, LagTimeout: 60 * time.Second,
		}
		start := time.Now()
		_, err := s.executor(obs).Run(ctx, rollback.Request{Target: tg, Action: plan.MultiRegion, Reason: "integration: multi-region restore"})
		t.Logf("plan took %s", time.Since(start).Round(10*time.Millisecond))
		j, _ := s.liveJournal(t)
		for _, st := range j.Steps {
			t.Logf("step %s %s: %s %s", st.Name, st.State, st.Detail, st.Error)
		}
		if err != nil {
			t.Fatalf("multi-region with restore: %v", err)
		}
		s.assertRolledBack(t)
		if enabledMidPlan == nil || *enabledMidPlan {
			t.Errorf("subscription enabled during the restore = %v, want disabled", enabledMidPlan)
		}
		if d := journalStep(t, j, rollback.StepEnableSubs).Detail; d != "scratch-secondary resynced" {
			t.Errorf("enable-subscriptions detail %q, want a resync", d)
		}
		if !subEnabled(t, sc, subName) {
			t.Error("subscription not enabled after the plan")
		}
		if syncedAtWaitLag != nil {
			t.Errorf("wait-lag passed while the secondary was not in sync: %v", syncedAtWaitLag)
		}
		if err := eventuallyErr(30*time.Second, func() error { return sandboxfixture.CountsEqual(ctx, p.Conn, sc) }); err != nil {
			t.Errorf("pair not in sync after the plan: %v", err)
		}
		if n := sandboxfixture.PgInt(t, sc, "SELECT count(*) FROM pggit.alert_delivery_queue WHERE delivery_status = 'after-dump'"); n != 0 {
			t.Errorf("secondary still has %d rows the restore removed", n)
		}
		if n := sandboxfixture.PgInt(t, sc, "SELECT count(*) FROM pggit.schema_versions WHERE name = $1", sandboxfixture.Phase8); n != 0 {
			t.Error("secondary still has the migration row")
		}
		sandboxfixture.PgExec(t, p.Conn, "INSERT INTO pggit.alert_delivery_queue (delivery_status) VALUES ('after-plan')")
		if err := eventuallyErr(10*time.Second, func() error {
			if n := sandboxfixture.PgInt(t, sc, "SELECT count(*) FROM pggit.alert_delivery_queue WHERE delivery_status = 'after-plan'"); n != 1 {
				return errors.New("row written after the plan did not replicate")
			}
			return nil
		}); err != nil {
			t.Error(err)
		}
	})
}

// podCount counts the Pods in the test's namespace, terminating ones
// included (only the Deployment under test runs there).
func (s *sandbox) podCount(t *testing.T) int {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	pods, err := s.client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list pods: %v", err)
	}
	return len(pods.Items)
}
