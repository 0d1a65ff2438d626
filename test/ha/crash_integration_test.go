package ha

import (
	"fmt"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// crashSlots bounds the crash cases running at once: each runs two
// rollguard processes, pg_dump and pg_restore on a 2-core machine. The
// multi-region ones also hold logical replication workers of the
// subscriber (max_logical_replication_workers), so fewer of them run.
var (
	crashSlots = make(chan struct{}, 6)
	mrSlots    = make(chan struct{}, 2)
)

// TestCrashMatrix kills rollguard (SIGKILL, its own fault injection at the
// exact journal write) right after each step of quick, full and
// multi-region has been journaled done, starts a new process, and checks
// the end state: the good image at the recorded replicas, no DB_READONLY,
// the database restored once (the deploy's rows gone, the migration undone),
// the secondary replicating again, one incident (one PagerDuty dedup_key)
// whose record shows the crash and the resume and ends resolved. A crash
// after the restore's start was journaled but before its end (pg_restore
// may or may not have committed) is never restored again: the new process
// stops for a human and puts the subscription back.
func TestCrashMatrix(t *testing.T) {
	t.Parallel()
	type planCase struct {
		name   string
		action string
		steps  []string
		mr     bool
	}
	plans := []planCase{
		{"quick", "quick", rollback.Steps(plan.Quick, rollback.Shape{Restore: true}), false},
		{"full", "full-rollback", rollback.Steps(plan.Full, rollback.Shape{}), false},
		{"multi-region", "multi-region", rollback.Steps(plan.MultiRegion, rollback.Shape{Restore: true}), true},
	}
	for _, p := range plans {
		for _, step := range p.steps[1:] { // preflight is journaled with the run
			crash := step + ":done"
			t.Run(p.name+"/"+crash, func(t *testing.T) {
				t.Parallel()
				crashCase(t, p.action, crash, p.mr)
			})
		}
	}
	t.Run("multi-region/db-restore:start", func(t *testing.T) {
		t.Parallel()
		crashCase(t, "multi-region", "db-restore:start", true)
	})
}

func crashCase(t *testing.T, action, crashAt string, multiRegion bool) {
	slots := crashSlots
	if multiRegion {
		slots = mrSlots
	}
	slots <- struct{}{}
	defer func() { <-slots }()
	h := newHarness(t, "crash")
	env := h.env
	dir := t.TempDir()

	db := sandboxfixture.NewPggit(t, env, "rg_crash_")
	var rep *sandboxfixture.Replica
	if multiRegion {
		rep = db.Replicate(t)
	}
	h.createDeployment(deployName, goodImage)
	pre := filepath.Join(dir, "pre-deploy.dump")
	db.Dump(t, pre)
	before := sandboxfixture.PgCounts(t, db.Conn)
	time.Sleep(time.Second) // the dump's header has whole seconds: deploy strictly after
	h.deploy(deployName, badImage, "")
	h.waitRollout(deployName, 60*time.Second)
	db.Deploy(t, 10)

	rb := map[string]any{
		"database": map[string]any{"name": "primary", "migration": sandboxfixture.Phase8, "dumpPath": pre,
			"forensicDir": filepath.Join(dir, "forensics"), "verifyTables": sandboxfixture.PggitTables},
	}
	dbs := map[string]string{"primary": db.DSN}
	if multiRegion {
		rb["multiRegion"] = map[string]any{"secondaries": []string{"secondary"}, "subscription": rep.Subscription, "maxLag": "2s", "timeout": "60s"}
		dbs["secondary"] = rep.DSN
	}
	cfg := h.writeConfig(dir, daemonConfig{
		leaderElection: true, databases: dbs,
		// The trigger never fires (20 % errors): the plan is asked for.
		targets: []target{{name: "pggit-api", deployment: deployName, above: 0.9, rollback: rb}},
	})

	a := h.startDaemon(cfg, "rollguard-a", "ROLLGUARD_CRASH_AT="+crashAt)
	eventually(t, "rollguard-a leads", 15*time.Second, func() (bool, string) {
		s, err := a.tryStatus()
		return err == nil && s.Leader, fmt.Sprint(err)
	})
	code, body := a.callRetry(http.MethodPost, "/api/v1/targets/pggit-api/rollback", apiToken,
		map[string]string{"action": action, "reason": "crash matrix at " + crashAt})
	if code != http.StatusOK && code != http.StatusAccepted {
		t.Fatalf("rollback request: %d %s", code, body)
	}
	select {
	case <-a.exited:
	case <-time.After(90 * time.Second):
		j, _ := h.journal(deployName)
		t.Fatalf("rollguard-a did not crash at %s; journal %s", crashAt, stepStates(j))
	}
	crashed, _ := h.journal(deployName)
	t.Logf("rollguard-a killed itself at %s: journal %s %s", crashAt, crashed.State, stepStates(crashed))

	b := h.startDaemon(cfg, "rollguard-b")
	want := rollback.RunSucceeded
	if crashAt == "db-restore:start" {
		want = rollback.RunAborted
	}
	j := h.waitJournal(deployName, 120*time.Second, want)
	if j.RunID != crashed.RunID {
		t.Errorf("journal run %s, want the crashed run %s resumed", j.RunID, crashed.RunID)
	}
	d := h.get(deployName)
	for _, c := range d.Spec.Template.Spec.Containers {
		for _, e := range c.Env {
			if e.Name == rollback.ReadOnlyEnv {
				t.Errorf("%s left on the template", rollback.ReadOnlyEnv)
			}
		}
	}
	if want == rollback.RunSucceeded {
		final := h.waitRollout(deployName, 30*time.Second)
		if image(final) != goodImage || ptrVal(final.Spec.Replicas) != replicas {
			t.Errorf("final %s x%d, want %s x%d", image(final), ptrVal(final.Spec.Replicas), goodImage, replicas)
		}
		if after := sandboxfixture.PgCounts(t, db.Conn); fmt.Sprint(after) != fmt.Sprint(before) || db.MigrationApplied(t) {
			t.Errorf("rows %v (migration applied %v), want the pre-deploy %v", after, db.MigrationApplied(t), before)
		}
		for _, s := range j.Steps {
			if s.Name == rollback.StepDBRestore && s.Attempts != 1 {
				t.Errorf("db-restore ran %d times, want once", s.Attempts)
			}
		}
	} else if !strings.Contains(j.Error, "unsafe to resume") {
		t.Errorf("journal error %q, want an unsafe resume for a human", j.Error)
	}
	if rep != nil {
		eventually(t, "the secondary replicates again", 60*time.Second, func() (bool, string) {
			if !rep.Enabled(t) {
				return false, "subscription disabled"
			}
			if err := sandboxfixture.CountsEqual(t.Context(), db.Conn, rep.Conn); err != nil {
				return false, err.Error()
			}
			return true, ""
		})
	}

	// One incident: one dedup_key across both processes, the resume in it.
	eventually(t, "the end is paged", 20*time.Second, func() (bool, string) {
		end := "rollback_succeeded"
		if want != rollback.RunSucceeded {
			end = "rollback_failed"
		}
		return len(h.events(end)) == 1, fmt.Sprint(h.summaries(h.events("")))
	})
	keys := map[string]bool{}
	var resumed int
	for _, e := range h.events("") {
		keys[e.DedupKey] = true
		if e.Kind(h.t) == "rollback_started" && strings.HasPrefix(e.Payload.Summary, "ROLLBACK RESUMED") {
			resumed++
		}
	}
	if len(keys) != 1 || resumed != 1 {
		t.Errorf("dedup keys %v and %d resumed pages, want one key and one resume: %q", keys, resumed, h.summaries(h.events("")))
	}
	// The record is in the cluster, written by both processes; the
	// recorder may still be a few events behind PagerDuty.
	wantStatus := incident.StatusResolved
	if want != rollback.RunSucceeded {
		wantStatus = incident.StatusFailed
	}
	var recs []incident.Summary
	eventually(t, "one incident record, "+string(wantStatus), 20*time.Second, func() (bool, string) {
		recs = h.incidents()
		return len(recs) == 1 && recs[0].Status == wantStatus, fmt.Sprint(recs)
	})
	rec := h.incident(recs[0].ID)
	resumedLine := false
	for _, e := range rec.Timeline {
		resumedLine = resumedLine || strings.Contains(e.What, "Rollback resumed after rollguard restarted")
	}
	if rec.Status != wantStatus || !resumedLine {
		t.Errorf("incident record status %q (want %s), resume recorded %v", rec.Status, wantStatus, resumedLine)
	}
	_ = b
}
