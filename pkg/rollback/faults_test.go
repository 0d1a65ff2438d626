package rollback_test

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
)

// executorAt is newExecutor with the clock at now.
func executorAt(c *kubetest.Cluster, obs rollback.Observer, now time.Time) *rollback.Executor {
	d := kube.New(c, kube.Options{PollInterval: time.Millisecond, Now: func() time.Time { return now }}, zap.NewNop())
	return rollback.NewExecutor(d, c.CoreV1(), rollback.Options{
		Observer:     obs,
		Now:          func() time.Time { return now },
		Sleep:        func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		PollInterval: time.Second,
	}, zap.NewNop())
}

func pod(name string) *corev1.Pod {
	return &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, Labels: map[string]string{"app": "pggit-api"}},
		Status:     corev1.PodStatus{Phase: corev1.PodRunning},
	}
}

// A run that stopped the app and failed before its restore must never go
// on to pg_restore once a human has brought the app back: not on a resume
// (the replicas the run left are gone), and not while any Pod of the
// target is left, whatever the Deployment's status says.
func TestNoRestoreOverARunningApplication(t *testing.T) {
	ctx := context.Background()
	forensic := "Dump /backups/forensics/production-pggit-api-20261125T143600Z-forensic.dump"

	t.Run("human scaled back up after a failed run", func(t *testing.T) {
		c := newCluster(t)
		db := newFakeDB()
		db.errs[forensic] = errors.New("pg_dump: connection refused")
		if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db)}); !errors.Is(err, rollback.ErrStepFailed) {
			t.Fatalf("first run: %v, want the dump to fail", err)
		}
		if replicas(c) != 0 {
			t.Fatalf("replicas %d after the stop", replicas(c))
		}
		// On-call brings the bad version back up by hand while deciding.
		c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(4)) })
		_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db)})
		if !errors.Is(err, rollback.ErrConcurrentChange) || !strings.Contains(err.Error(), "spec.replicas") {
			t.Fatalf("resume: %v, want a concurrent change of spec.replicas", err)
		}
		if db.restores != 0 {
			t.Fatalf("pg_restore ran %d times over a running application", db.restores)
		}
		if replicas(c) != 4 {
			t.Errorf("replicas %d: the human's scale was overridden", replicas(c))
		}
		if j := journal(t, c); j.State != rollback.RunAborted {
			t.Errorf("journal %s, want aborted (a human's business now)", j.State)
		}
	})

	t.Run("a pod left although the deployment asks for none", func(t *testing.T) {
		c := newCluster(t)
		db := newFakeDB()
		// A Pod matching the selector appears between the dump and the
		// restore (one the status did not count, or started by hand).
		db.onCall = func(call string) {
			if call == forensic {
				if err := c.Tracker().Add(pod("pggit-api-straggler")); err != nil {
					t.Error(err)
				}
			}
		}
		_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db)})
		if !errors.Is(err, rollback.ErrPodsRunning) || !strings.Contains(err.Error(), "1 pods match its selector") {
			t.Fatalf("run: %v, want ErrPodsRunning", err)
		}
		if db.restores != 0 {
			t.Fatal("pg_restore ran while a pod of the target was left")
		}
		j := journal(t, c)
		if s := j.Steps[indexOf(j, "db-restore")]; s.State != rollback.StepPending {
			t.Fatalf("db-restore %s: a refused restore never started", s.State)
		}
		// Once the Pod is gone the run resumes and restores, once.
		db.onCall = nil
		if err := c.Tracker().Delete(corev1.SchemeGroupVersion.WithResource("pods"), ns, "pggit-api-straggler"); err != nil {
			t.Fatal(err)
		}
		if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db)}); err != nil {
			t.Fatalf("resume: %v", err)
		}
		if db.restores != 1 || image(c) != good || replicas(c) != 4 {
			t.Errorf("restores %d image %s replicas %d", db.restores, image(c), replicas(c))
		}
	})
}

// An unfinished run is resumed only while it is recent: an old one is
// closed for a human and nothing is written to the Deployment.
func TestUnfinishedRunNotResumedAfterMaxAge(t *testing.T) {
	ctx := context.Background()
	for _, state := range []string{"failed", "crashed"} {
		t.Run(state, func(t *testing.T) {
			c := newCluster(t)
			db := newFakeDB()
			if state == "failed" {
				db.panics["CountRows"] = true
				if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db)}); !errors.Is(err, rollback.ErrStepFailed) {
					t.Fatalf("first run: %v", err)
				}
			} else if err := runUntilCrash(ctx, c, dbTarget(db), plan.Quick, "application"); err == nil {
				t.Fatal("no crash")
			}
			c.ClearActions()
			later := fixedNow().Add(rollback.DefaultMaxResumeAge + time.Minute)
			_, err := executorAt(c, nil, later).Run(ctx, rollback.Request{Target: dbTarget(db)})
			var ref *rollback.RefusedError
			if !errors.As(err, &ref) || !errors.Is(err, rollback.ErrNeedsHuman) || !strings.Contains(err.Error(), "over the 30m0s a run may be resumed within") {
				t.Fatalf("late resume: %v, want a refusal for a human", err)
			}
			for _, w := range c.Writes() {
				if w.GetResource().Resource != "configmaps" {
					t.Errorf("late resume wrote %s %s", w.GetVerb(), w.GetResource().Resource)
				}
			}
			if j := journal(t, c); j.State != rollback.RunAborted {
				t.Errorf("journal %s, want aborted", j.State)
			}
		})
	}
}

// A failed run of an old, human-fixed incident is closed when the target
// has moved on; the first rollback of a new bad version runs, and pins the
// human's fix, never the revision rolled back before.
func TestStaleFailedRunDoesNotBlockTheNextIncident(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	tg := target()
	tg.Verifier = verifierFunc(func(context.Context, string, string) error { return errors.New("error rate 0.2 > 0.05") })
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg}); !errors.Is(err, rollback.ErrUnhealthy) {
		t.Fatalf("first run: %v, want verify to fail", err)
	}
	first := journal(t, c)
	if first.State != rollback.RunFailed {
		t.Fatalf("journal %s", first.State)
	}
	// The human fixes it by hand, and a day later a new bad version ships.
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = good })
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0" })
	res, err := executorAt(c, nil, fixedNow().Add(24*time.Hour)).Run(ctx, rollback.Request{Target: target()})
	if err != nil {
		t.Fatalf("new incident: %v", err)
	}
	if res.Resumed || image(c) != good || replicas(c) != 4 {
		t.Fatalf("resumed %v image %s replicas %d, want a new run back to %s", res.Resumed, image(c), replicas(c), good)
	}
	j := journal(t, c)
	if len(j.History) != 1 || j.History[0].RunID != first.RunID || j.History[0].State != rollback.RunSuperseded {
		t.Errorf("history %+v, want the old run kept as superseded", j.History)
	}
}

// The previous revision is never one rolled back before: after a human
// redeployed the bad version by hand (its ReplicaSet reused at a new
// revision) and shipped another on top, the ReplicaSet right below the
// current one is the bad one.
func TestNeverPinsARevisionRolledBackBefore(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t) // v1.0.3 (revision 1) → v1.1.0 (revision 2)
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: target()}); err != nil {
		t.Fatal(err) // v1.0.3 again, at revision 3
	}
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = bad })                // revision 4
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.0.5" }) // revision 5
	res, err := executorAt(c, nil, fixedNow().Add(48*time.Hour)).Run(ctx, rollback.Request{Target: target()})
	if err != nil {
		t.Fatal(err)
	}
	if got := res.Pinned.Images["api"]; got != good || image(c) != good {
		t.Fatalf("pinned %s, image %s; want %s, skipping %s which was rolled back before", got, image(c), good, bad)
	}
}

// The restore refuses a dump that is too old or was taken after the bad
// revision was deployed: at preflight, before anything is written, and
// again right before pg_restore.
func TestRestoreRefusesAStaleOrLateDump(t *testing.T) {
	ctx := context.Background()
	deployed := fixedNow().Add(-30 * time.Minute)
	tests := []struct {
		name  string
		taken time.Time
		want  error
	}{
		{"older than maxDumpAge", fixedNow().Add(-48 * time.Hour), rollback.ErrDumpTooOld},
		{"taken after the deploy", fixedNow().Add(-10 * time.Minute), rollback.ErrDumpAfterDeploy},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := kubetest.New(kubetest.NewDeployment(ns, name, 4, map[string]string{"api": good}))
			c.Now = func() time.Time { return deployed }
			c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = bad })
			c.ClearActions()
			db := newFakeDB()
			db.dumps["/backups/pre.dump"] = tt.taken
			tg := dbTarget(db)
			tg.Database.MaxDumpAge = 24 * time.Hour
			_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
			var ref *rollback.RefusedError
			if !errors.As(err, &ref) || !errors.Is(err, tt.want) {
				t.Fatalf("err = %v, want refusal %v", err, tt.want)
			}
			if w := c.Writes(); len(w) != 0 {
				t.Errorf("refused run wrote %d objects", len(w))
			}
			if db.restores != 0 {
				t.Error("restored")
			}
		})
	}
	t.Run("replaced between preflight and restore", func(t *testing.T) {
		c := newCluster(t)
		db := newFakeDB()
		tg := dbTarget(db)
		tg.Database.MaxDumpAge = 24 * time.Hour
		db.onCall = func(call string) {
			if strings.HasPrefix(call, "Dump /backups/forensics/") {
				// Someone copies a fresh dump (of the bad version's data)
				// over the pre-deploy one while the plan runs.
				db.dumps["/backups/pre.dump"] = fixedNow()
			}
		}
		_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
		if !errors.Is(err, rollback.ErrStepFailed) || !errors.Is(err, rollback.ErrDumpAfterDeploy) && !strings.Contains(err.Error(), "taken at") {
			t.Fatalf("err = %v", err)
		}
		if db.restores != 0 {
			t.Error("restored a dump taken during the incident")
		}
	})
}

// full on a target with secondaries handles them as multi-region does:
// disable before the restore, resync from the restored primary, wait for
// the lag.
func TestFullWithMultiRegionResyncsTheSecondaries(t *testing.T) {
	c := newCluster(t)
	db := newFakeDB()
	sec := newFakeDB()
	tg := dbTarget(db)
	tg.MultiRegion = &rollback.MultiRegionSettings{Secondaries: []rollback.Secondary{{Name: "eu-west", DB: sec, Subscription: "pggit_sub"}}}
	res, err := newExecutor(c, nil).Run(context.Background(), rollback.Request{Target: tg, Action: plan.Full})
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"preflight", "lag-check", "disable-subscriptions", "db-readonly", "db-dump", "stop", "db-restore", "db-verify",
		"application", "wait-rollout", "ramp", "verify", "enable-subscriptions", "wait-lag"}
	var got []string
	for _, s := range res.Steps {
		got = append(got, s.Name)
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("steps %v\nwant %v", got, want)
	}
	if want := []string{"Slot pggit_sub", "Disable pggit_sub", "Resync pggit_sub", "Slot pggit_sub"}; !reflect.DeepEqual(sec.Calls(), want) {
		t.Errorf("secondary calls %v, want %v", sec.Calls(), want)
	}
}

// A crash between the forensic dump's publication and the journal write
// leaves the file at the journaled path: the resume takes it as done
// instead of failing on it forever with the app at 0 replicas.
func TestResumeFindsTheForensicDumpAlreadyWritten(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	db := newFakeDB()
	path := "/backups/forensics/production-pggit-api-20261125T143600Z-forensic.dump"
	db.onCall = func(call string) {
		if call == "Dump "+path {
			// The dump is published, then the process dies before the
			// step's end is journaled.
			db.dumps[path] = fixedNow()
			panic(crash{"db-dump"})
		}
	}
	func() {
		defer func() { _ = recover() }()
		_, _ = newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db)})
	}()
	// (The executor records a panicking step as failed; a SIGKILL leaves
	// it running: either way the resume re-runs the step.)
	if j := journal(t, c); j.Steps[indexOf(j, "db-dump")].State == rollback.StepDone {
		t.Fatalf("journal %v", stepNames(j))
	}
	db.onCall = nil
	res, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db)})
	if err != nil {
		t.Fatalf("resume: %v", err)
	}
	if d := res.Steps[indexOf(journal(t, c), "db-dump")].Detail; !strings.Contains(d, "written by an earlier attempt") {
		t.Errorf("dump detail %q", d)
	}
	if image(c) != good || replicas(c) != 4 || db.restores != 1 {
		t.Errorf("image %s replicas %d restores %d", image(c), replicas(c), db.restores)
	}
}

// A run that stops leaves neither DB_READONLY nor disabled subscriptions
// behind; what it undid it does again on a resume.
func TestStoppedRunPutsBackReadOnlyAndSubscriptions(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	db := newFakeDB()
	sec := newFakeDB()
	tg := dbTarget(db)
	tg.MultiRegion = &rollback.MultiRegionSettings{Secondaries: []rollback.Secondary{{Name: "eu-west", DB: sec, Subscription: "pggit_sub"}}}
	db.errs["Dump /backups/forensics/production-pggit-api-20261125T143600Z-forensic.dump"] = errors.New("disk full")
	res, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg, Action: plan.Full})
	if !errors.Is(err, rollback.ErrStepFailed) {
		t.Fatalf("err = %v", err)
	}
	for _, e := range c.Deployment(ns, name).Spec.Template.Spec.Containers[0].Env {
		if e.Name == rollback.ReadOnlyEnv {
			t.Errorf("DB_READONLY left on the template after the run stopped")
		}
	}
	if want := []string{"Slot pggit_sub", "Disable pggit_sub", "Enable pggit_sub"}; !reflect.DeepEqual(sec.Calls(), want) {
		t.Errorf("secondary calls %v, want %v", sec.Calls(), want)
	}
	if want := []string{"db-readonly", "disable-subscriptions"}; !reflect.DeepEqual(res.Undone, want) {
		t.Errorf("undone %v, want %v", res.Undone, want)
	}
	// The resume disables and sets read-only again before it goes on.
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg, Action: plan.Full}); err != nil {
		t.Fatal(err)
	}
	if image(c) != good || db.restores != 1 {
		t.Errorf("image %s restores %d", image(c), db.restores)
	}
	if got := sec.Calls()[3:]; !reflect.DeepEqual(got, []string{"Disable pggit_sub", "Resync pggit_sub", "Slot pggit_sub"}) {
		t.Errorf("secondary calls on resume %v", got)
	}
}

// A drained run stops between two steps and leaves its journal unfinished
// for the next leader, which finishes it.
func TestDrainHandsOverBetweenSteps(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	drain := make(chan struct{})
	obs := &recorder{hook: func(kind string, f rollback.Facts) {
		if kind == "step-started" && f.Step == "application" {
			close(drain) // shutdown arrives while the step runs
		}
	}}
	_, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: target(), Drain: drain})
	if !errors.Is(err, rollback.ErrHandedOver) || !strings.Contains(err.Error(), "before step wait-rollout") {
		t.Fatalf("err = %v, want a hand-over before the step after application", err)
	}
	j := journal(t, c)
	if j.State != rollback.RunRunning || j.Steps[indexOf(j, "application")].State != rollback.StepDone {
		t.Fatalf("journal %s %v", j.State, stepNames(j))
	}
	res, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: target(), ResumeOnly: true})
	if err != nil || !res.Resumed {
		t.Fatalf("resume: %v %+v", err, res)
	}
	if image(c) != good || replicas(c) != 4 {
		t.Errorf("image %s replicas %d", image(c), replicas(c))
	}
	// Nothing left to resume: a resume-only request starts nothing.
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: target(), ResumeOnly: true}); !errors.Is(err, rollback.ErrNothingToResume) {
		t.Errorf("second resume: %v, want ErrNothingToResume", err)
	}
}

// Counterexamples the model-based test (pkg/response) found, kept as
// cases.
func TestModelCounterexamples(t *testing.T) {
	ctx := context.Background()

	t.Run("two runs in one second get distinct ids", func(t *testing.T) {
		c := newCluster(t)
		db := newFakeDB()
		tg := dbTarget(db)
		tg.PoolRecovery = rollback.PoolRecoverySettings{Role: "pggit_app", ApplicationName: "pggit-api"}
		first, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg, Action: plan.PoolRecovery})
		if err != nil {
			t.Fatal(err)
		}
		second, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
		if err != nil {
			t.Fatal(err)
		}
		if first.RunID == second.RunID || second.RunID != first.RunID+"-2" {
			t.Fatalf("run ids %q and %q", first.RunID, second.RunID)
		}
	})

	t.Run("the read-only variant of a bad version is never pinned", func(t *testing.T) {
		// A full rollback of v1.1.0 stopped after DB_READONLY (its
		// template is a revision of its own), a human fixed it by hand,
		// then shipped v1.2.0, bad too.
		c := newCluster(t)
		db := newFakeDB()
		db.errs["Dump /backups/forensics/production-pggit-api-20261125T143600Z-forensic.dump"] = errors.New("disk full")
		obs := &recorder{hook: func(kind string, f rollback.Facts) {
			if kind == "step-finished" && f.Step == "db-readonly" {
				// The process dies with the flag rolled out: no undo.
				panic(crash{"db-readonly"})
			}
		}}
		func() {
			defer func() { _ = recover() }()
			_, _ = newExecutor(c, obs).Run(ctx, rollback.Request{Target: dbTarget(db), Action: plan.Full})
		}()
		c.Mutate(ns, name, func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = good
			d.Spec.Template.Spec.Containers[0].Env = nil
		})
		c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0" })
		// Only the previous revision below v1.2.0 is v1.0.3; make the
		// read-only v1.1.0 the newest older one.
		c.Mutate(ns, name, func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = bad
			d.Spec.Template.Spec.Containers[0].Env = []corev1.EnvVar{{Name: rollback.ReadOnlyEnv, Value: "true"}}
		})
		c.Mutate(ns, name, func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0"
			d.Spec.Template.Spec.Containers[0].Env = nil
		})
		res, err := executorAt(c, nil, fixedNow().Add(48*time.Hour)).Run(ctx, rollback.Request{Target: target()})
		if err != nil {
			t.Fatal(err)
		}
		if got := res.Pinned.Images["api"]; got != good {
			t.Fatalf("pinned %s, want %s (v1.1.0 with DB_READONLY is still v1.1.0)", got, good)
		}
	})

	t.Run("a human scales up between the restore's start and pg_restore", func(t *testing.T) {
		c := newCluster(t)
		db := newFakeDB()
		// The restore's start is journaled, then the human acts.
		obs := &recorder{hook: func(kind string, f rollback.Facts) {
			if kind == "step-started" && f.Step == "db-restore" {
				c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(1)) })
			}
		}}
		_, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: dbTarget(db)})
		if !errors.Is(err, rollback.ErrPodsRunning) {
			t.Fatalf("err = %v, want ErrPodsRunning", err)
		}
		if db.restores != 0 {
			t.Fatal("pg_restore ran with a replica up")
		}
		if j := journal(t, c); j.Steps[indexOf(j, "db-restore")].State != rollback.StepPending {
			t.Errorf("db-restore %s, want pending (it never started)", j.Steps[indexOf(j, "db-restore")].State)
		}
	})
}

// A leadership term and every new request first ask to resume: finding
// nothing is the normal case and says nothing at Info (an SRE reading the
// log, and make demo, took "rollback refused" for a refusal).
func TestNothingToResumeIsNotARefusal(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	core, logs := observer.New(zap.InfoLevel)
	d := kube.New(c, kube.Options{PollInterval: time.Millisecond, Now: fixedNow}, zap.NewNop())
	exec := rollback.NewExecutor(d, c.CoreV1(), rollback.Options{Now: fixedNow, PollInterval: time.Second,
		Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }}, zap.New(core))
	if _, err := exec.Run(ctx, rollback.Request{Target: target(), ResumeOnly: true}); !errors.Is(err, rollback.ErrNothingToResume) {
		t.Fatalf("resume with no journal: %v, want ErrNothingToResume", err)
	}
	if n := logs.Len(); n != 0 {
		t.Errorf("%d lines at Info or above for nothing to resume: %v", n, logs.All()[0].Message)
	}
}
