package rollback_test

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
)

func scaleReplicas(a k8stesting.Action) int32 {
	return a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale).Spec.Replicas
}

func journal(t *testing.T, c *kubetest.Cluster) *rollback.Journal {
	t.Helper()
	uid := c.Deployment(ns, name).UID
	cm, err := c.CoreV1().ConfigMaps(ns).Get(context.Background(), rollback.JournalName(uid), metav1.GetOptions{})
	if err != nil {
		t.Fatalf("journal: %v", err)
	}
	var j rollback.Journal
	if err := json.Unmarshal([]byte(cm.Data["journal.json"]), &j); err != nil {
		t.Fatal(err)
	}
	if cm.Labels[rollback.LabelJournal] != "true" || cm.Labels[rollback.LabelDeployment] != name {
		t.Errorf("journal labels = %v", cm.Labels)
	}
	return &j
}

func stepNames(j *rollback.Journal) []string {
	var out []string
	for _, s := range j.Steps {
		out = append(out, s.Name+"="+string(s.State))
	}
	return out
}

func TestQuickRollback(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	health := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, _ *http.Request) { health++ }))
	defer srv.Close()
	obs := &recorder{}
	tg := target()
	tg.HealthURL = srv.URL
	res, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: tg, Reason: "error rate 20% > 5% for 60s"})
	if err != nil {
		t.Fatal(err)
	}
	if image(c) != good || replicas(c) != 4 {
		t.Fatalf("image %s replicas %d, want %s x4", image(c), replicas(c), good)
	}
	if got, want := scales(c), []int32{0, 2, 4}; !reflect.DeepEqual(got, want) {
		t.Errorf("scale writes = %v, want %v", got, want)
	}
	if res.Pinned == nil || res.Pinned.Source != "previous-revision" || res.Pinned.Revision != 1 || res.Pinned.Images["api"] != good || res.Pinned.Hash == "" {
		t.Errorf("pinned = %+v", res.Pinned)
	}
	if res.Replicas != 4 || res.Bad.Images["api"] != bad || res.Bad.Revision != 2 {
		t.Errorf("result = %+v", res)
	}
	j := journal(t, c)
	want := []string{"preflight=done", "stop=done", "application=done", "wait-rollout=done", "ramp=done", "verify=done"}
	if j.State != rollback.RunSucceeded || !reflect.DeepEqual(stepNames(j), want) {
		t.Errorf("journal %s %v, want succeeded %v", j.State, stepNames(j), want)
	}
	if health != 5 { // once between ramp steps, at each of verify's 4 polls (3s window, 1s apart)
		t.Errorf("health checks = %d, want 5", health)
	}
	// Events on the Deployment, one per milestone, from rollguard.
	evs, _ := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	reasons := map[string]int{}
	for _, e := range evs.Items {
		if e.Source.Component != "rollguard" || e.InvolvedObject.Name != name {
			t.Errorf("event %+v", e)
		}
		reasons[e.Reason]++
	}
	if reasons[kube.ReasonStepStarted] != 5 || reasons[kube.ReasonStepSucceeded] != 5 || reasons[kube.ReasonPlanSucceeded] != 1 {
		t.Errorf("event reasons = %v", reasons)
	}
	wantObs := []string{"plan-started", "step-finished preflight (skipped)", "step-started stop", "step-finished stop", "step-started application", "step-finished application",
		"step-started wait-rollout", "step-finished wait-rollout", "step-started ramp", "step-finished ramp", "step-started verify", "step-finished verify", "plan-finished"}
	if !reflect.DeepEqual(obs.events, wantObs) {
		t.Errorf("observer = %v\nwant %v", obs.events, wantObs)
	}

	// A second firing for the same bad revision changes nothing.
	c.ClearActions()
	_, err = newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
	if !errors.Is(err, rollback.ErrAlreadyRolledBack) {
		t.Fatalf("second run: %v, want ErrAlreadyRolledBack", err)
	}
	if w := c.Writes(); len(w) != 0 {
		t.Errorf("second run wrote %v", w)
	}
}

func TestRefusals(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name   string
		setup  func(c *kubetest.Cluster, tg *rollback.Target)
		want   error
		detail string
	}{
		{name: "paused", setup: func(c *kubetest.Cluster, _ *rollback.Target) {
			c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Paused = true })
		}, want: rollback.ErrPaused},
		{name: "frozen", setup: func(c *kubetest.Cluster, _ *rollback.Target) {
			c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Annotations[kube.FreezeAnnotation] = "true" })
		}, want: rollback.ErrFrozen},
		{name: "stable image already running", setup: func(_ *kubetest.Cluster, tg *rollback.Target) {
			tg.StableImage = map[string]string{"api": bad}
		}, want: rollback.ErrAlreadyAtTarget},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			tg := target()
			tt.setup(c, &tg)
			c.ClearActions()
			obs := &recorder{}
			_, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: tg})
			var ref *rollback.RefusedError
			if !errors.Is(err, tt.want) || !errors.As(err, &ref) || ref.Namespace != ns || ref.Deployment != name {
				t.Fatalf("err = %v, want refusal %v", err, tt.want)
			}
			if w := c.Writes(); len(w) != 0 {
				t.Errorf("refusal wrote %v", w)
			}
			if len(obs.facts) != 2 || obs.facts[1].Err == nil {
				t.Errorf("observer = %v", obs.events)
			}
		})
	}
	t.Run("no previous revision", func(t *testing.T) {
		c := kubetest.New(kubetest.NewDeployment(ns, name, 4, map[string]string{"api": bad}))
		c.ClearActions()
		_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: target()})
		if !errors.Is(err, rollback.ErrNoPreviousRevision) {
			t.Fatalf("err = %v", err)
		}
		if got := err.Error(); got != "rollback of deployment production/pggit-api refused: no older revision to roll back to: 1 replicasets, current revision 1" {
			t.Errorf("error = %q", got)
		}
		if len(c.Writes()) != 0 {
			t.Errorf("wrote %v", c.Writes())
		}
	})
}

func TestPinsStableImageAndPreviousRevision(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	// A third revision: previous is the bad one's predecessor, not revision 1.
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.1.1-slow" })
	v, err := newExecutor(c, nil).Plan(ctx, target(), "")
	if err != nil {
		t.Fatal(err)
	}
	if v.Pinned.Images["api"] != bad || v.Pinned.Revision != 2 || v.Bad.Revision != 3 || v.Replicas != 4 {
		t.Errorf("plan = %+v", v)
	}
	if len(v.Steps) != 6 || v.Steps[1].Name != "stop" || !strings.Contains(v.Steps[1].Description, "scale production/pggit-api to 0") {
		t.Errorf("steps = %+v", v.Steps)
	}
	tg := target()
	tg.StableImage = map[string]string{"api": good}
	v, err = newExecutor(c, nil).Plan(ctx, tg, plan.Revert)
	if err != nil {
		t.Fatal(err)
	}
	if v.Pinned.Source != "stable-image" || v.Pinned.Images["api"] != good || v.Pinned.Revision != 1 {
		t.Errorf("pinned = %+v", v.Pinned)
	}
	var names []string
	for _, s := range v.Steps {
		names = append(names, s.Name)
	}
	if want := []string{"preflight", "application", "wait-rollout", "verify"}; !reflect.DeepEqual(names, want) {
		t.Errorf("revert steps = %v", names)
	}
	if len(c.Writes()) != 0 {
		t.Errorf("Plan wrote %v", c.Writes())
	}
}

func TestDryRunWritesNothing(t *testing.T) {
	ctx := context.Background()
	for _, action := range []plan.Name{plan.Quick, plan.Revert, plan.Full, plan.PoolRecovery, plan.MultiRegion} {
		t.Run(string(action), func(t *testing.T) {
			c := newCluster(t)
			db := newFakeDB()
			tg := dbTarget(db)
			tg.PoolRecovery = rollback.PoolRecoverySettings{Role: "pggit_app", ApplicationName: "pggit-api"}
			sec := newFakeDB()
			tg.MultiRegion = &rollback.MultiRegionSettings{Secondaries: []rollback.Secondary{{Name: "eu", DB: sec, Subscription: "pggit_sub"}}}
			obs := &recorder{}
			res, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: tg, Action: action, DryRun: true})
			if err != nil {
				t.Fatal(err)
			}
			if w := c.Writes(); len(w) != 0 {
				t.Fatalf("dry-run wrote %v", w)
			}
			for _, call := range append(db.Calls(), sec.Calls()...) {
				// Reads only: the migration, and the pre-deploy dump the
				// restore would be refused for.
				if call != "MigrationApplied" && call != "Inspect /backups/pre.dump" {
					t.Errorf("dry-run database call %s", call)
				}
			}
			if image(c) != bad || replicas(c) != 4 {
				t.Errorf("dry-run changed the deployment")
			}
			for _, s := range res.Steps[1:] {
				if s.State != rollback.StepWouldRun || !strings.HasPrefix(s.Detail, "dry-run: would ") {
					t.Errorf("step %s = %s %q", s.Name, s.State, s.Detail)
				}
			}
			if !obs.facts[0].DryRun {
				t.Error("facts not marked dry-run")
			}
		})
	}
}

func TestConcurrentChangeStopsThePlan(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		at        string // step whose start triggers the other writer
		mutate    func(*appsv1.Deployment)
		field     string
		wantImage string
	}{
		{name: "set image before application", at: "application", mutate: func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0"
		}, field: "spec.template", wantImage: "pggit-api:v1.2.0"},
		{name: "scale before stop", at: "stop", mutate: func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(6)) }, field: "spec.replicas", wantImage: bad},
		{name: "set image during ramp", at: "ramp", mutate: func(d *appsv1.Deployment) {
			d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0"
		}, field: "spec.template", wantImage: "pggit-api:v1.2.0"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := newCluster(t)
			obs := &recorder{hook: func(kind string, f rollback.Facts) {
				if kind == "step-started" && f.Step == tt.at {
					c.Mutate(ns, name, tt.mutate)
				}
			}}
			_, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: target()})
			var cc *kube.ConcurrentChangeError
			if !errors.Is(err, rollback.ErrConcurrentChange) || !errors.As(err, &cc) || cc.Field != tt.field {
				t.Fatalf("err = %v, want concurrent change of %s", err, tt.field)
			}
			if image(c) != tt.wantImage {
				t.Errorf("image = %s, want %s (the other writer's)", image(c), tt.wantImage)
			}
			j := journal(t, c)
			if j.State != rollback.RunAborted || !strings.Contains(j.Error, tt.field) {
				t.Errorf("journal %s %q", j.State, j.Error)
			}
			// While the Deployment still runs a template the run knows, the
			// next firing refuses instead of fighting the human.
			if tt.field == "spec.replicas" {
				_, err = newExecutor(c, nil).Run(ctx, rollback.Request{Target: target()})
				if !errors.Is(err, rollback.ErrNeedsHuman) {
					t.Errorf("next run: %v, want ErrNeedsHuman", err)
				}
			}
		})
	}
}

// crash makes the process "die" right after step's start was journaled.
type crash struct{ step string }

func runUntilCrash(ctx context.Context, c *kubetest.Cluster, tg rollback.Target, action plan.Name, step string) (err error) {
	defer func() {
		if p := recover(); p != nil {
			if _, ok := p.(crash); !ok {
				panic(p)
			}
			err = errors.New("crashed")
		}
	}()
	obs := &recorder{hook: func(kind string, f rollback.Facts) {
		if kind == "step-started" && f.Step == step {
			panic(crash{step})
		}
	}}
	_, err = newExecutor(c, obs).Run(ctx, rollback.Request{Target: tg, Action: action})
	return err
}

func TestResumeAfterCrashAtEachStep(t *testing.T) {
	ctx := context.Background()
	steps := []string{"stop", "db-dump", "db-restore", "db-verify", "application", "wait-rollout", "ramp", "verify"}
	for _, step := range steps {
		t.Run(step, func(t *testing.T) {
			c := newCluster(t)
			db := newFakeDB()
			tg := dbTarget(db)
			if err := runUntilCrash(ctx, c, tg, plan.Quick, step); err == nil || err.Error() != "crashed" {
				t.Fatalf("first run: %v", err)
			}
			j := journal(t, c)
			if s := j.Steps[indexOf(j, step)]; s.State != rollback.StepRunning {
				t.Fatalf("journal step %s = %s, want running", step, s.State)
			}
			obs := &recorder{}
			res, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: tg, Action: plan.Quick})
			if step == "db-restore" {
				// Started, end never recorded: never a second restore blindly.
				var ue *rollback.UnsafeResumeError
				if !errors.As(err, &ue) || ue.Step != "db-restore" || !strings.Contains(ue.Detail, "recorded replicas 4") {
					t.Fatalf("resume: %v, want UnsafeResumeError", err)
				}
				if db.restores != 0 {
					t.Errorf("restores = %d", db.restores)
				}
				if j := journal(t, c); j.State != rollback.RunAborted {
					t.Errorf("journal state %s, want aborted", j.State)
				}
				_, err = newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
				if !errors.Is(err, rollback.ErrNeedsHuman) {
					t.Errorf("third run: %v, want ErrNeedsHuman", err)
				}
				return
			}
			if err != nil {
				t.Fatalf("resume: %v", err)
			}
			if !res.Resumed || res.State != rollback.RunSucceeded {
				t.Errorf("result = %+v", res)
			}
			if image(c) != good || replicas(c) != 4 {
				t.Errorf("final image %s replicas %d, want %s x4 (replica count from the journal)", image(c), replicas(c), good)
			}
			if db.restores != 1 {
				t.Errorf("restores = %d, want exactly 1", db.restores)
			}
			// Steps done before the crash were skipped.
			for _, f := range obs.facts {
				if f.Step != "" && indexOf(journal(t, c), f.Step) < indexOf(journal(t, c), step) && !f.Skipped {
					t.Errorf("step %s re-run after resume", f.Step)
				}
			}
			// The forensic dump, if re-run, went to the same path.
			var dumps []string
			for _, call := range db.Calls() {
				if strings.HasPrefix(call, "Dump ") {
					dumps = append(dumps, call)
				}
			}
			if len(dumps) == 0 || dumps[0] != dumps[len(dumps)-1] {
				t.Errorf("dumps = %v", dumps)
			}
		})
	}
}

func indexOf(j *rollback.Journal, step string) int {
	for i, s := range j.Steps {
		if s.Name == step {
			return i
		}
	}
	return -1
}

func TestFailedStepIsResumed(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	db := newFakeDB()
	tg := dbTarget(db)
	// The verify of the database fails once (a panic: recovered, journaled).
	db.panics["CountRows"] = true
	_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
	if !errors.Is(err, rollback.ErrStepFailed) {
		t.Fatalf("err = %v, want ErrStepFailed", err)
	}
	j := journal(t, c)
	if j.State != rollback.RunFailed || j.Steps[indexOf(j, "db-verify")].State != rollback.StepFailed {
		t.Fatalf("journal %s %v", j.State, stepNames(j))
	}
	if replicas(c) != 0 {
		t.Fatalf("replicas = %d, want 0 while stopped", replicas(c))
	}
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg}); err != nil {
		t.Fatal(err)
	}
	if image(c) != good || replicas(c) != 4 || db.restores != 1 {
		t.Errorf("image %s replicas %d restores %d", image(c), replicas(c), db.restores)
	}
	// A failed restore (reported error) is not retried either.
	c2 := newCluster(t)
	db2 := newFakeDB()
	db2.errs["Restore"] = errors.New("pg_restore: exit status 1")
	if _, err := newExecutor(c2, nil).Run(ctx, rollback.Request{Target: dbTarget(db2)}); err == nil {
		t.Fatal("restore error not reported")
	}
	_, err = newExecutor(c2, nil).Run(ctx, rollback.Request{Target: dbTarget(db2)})
	if !errors.Is(err, rollback.ErrUnsafeResume) {
		t.Fatalf("err = %v, want ErrUnsafeResume", err)
	}
}

func TestCancelMidPlanThenRerun(t *testing.T) {
	tests := []struct{ kind, step string }{
		{"step-finished", "stop"}, {"step-finished", "application"}, {"step-finished", "wait-rollout"}, {"step-finished", "ramp"},
		// Cancelled inside the step: its kube calls see a cancelled ctx.
		{"step-started", "application"}, {"step-started", "ramp"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"-"+tt.step, func(t *testing.T) {
			c := newCluster(t)
			ctx, cancel := context.WithCancel(context.Background())
			obs := &recorder{hook: func(kind string, f rollback.Facts) {
				if kind == tt.kind && f.Step == tt.step {
					cancel()
				}
			}}
			_, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: target()})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("err = %v, want canceled", err)
			}
			if j := journal(t, c); j.State != rollback.RunFailed {
				t.Fatalf("journal state %s, want failed (resumable)", j.State)
			}
			if _, err := newExecutor(c, nil).Run(context.Background(), rollback.Request{Target: target()}); err != nil {
				t.Fatal(err)
			}
			if image(c) != good || replicas(c) != 4 {
				t.Errorf("image %s replicas %d", image(c), replicas(c))
			}
		})
	}
}

func TestRevertNeverScales(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	tg := target()
	tg.Strategy = plan.Revert
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg}); err != nil {
		t.Fatal(err)
	}
	if s := scales(c); len(s) != 0 {
		t.Errorf("revert scaled: %v", s)
	}
	if image(c) != good || replicas(c) != 4 {
		t.Errorf("image %s replicas %d", image(c), replicas(c))
	}
}

func TestFullRollback(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	db := newFakeDB()
	var envSeen bool
	c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if d, ok := a.(k8stesting.UpdateAction).GetObject().(*appsv1.Deployment); ok {
			for _, e := range d.Spec.Template.Spec.Containers[0].Env {
				if e.Name == "DB_READONLY" && e.Value == "true" {
					envSeen = true
				}
			}
		}
		return false, nil, nil
	})
	res, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db), Action: plan.Full})
	if err != nil {
		t.Fatal(err)
	}
	if !envSeen {
		t.Error("DB_READONLY=true never written")
	}
	d := c.Deployment(ns, name)
	if image(c) != good || replicas(c) != 4 || len(d.Spec.Template.Spec.Containers[0].Env) != 0 {
		t.Errorf("final %s x%d env %v", image(c), replicas(c), d.Spec.Template.Spec.Containers[0].Env)
	}
	// The pre-deploy dump is inspected at preflight and again right
	// before the restore; the forensic path is looked at for a dump an
	// interrupted attempt left.
	want := []string{"Inspect /backups/pre.dump", "Inspect /backups/forensics/production-pggit-api-20261125T143600Z-forensic.dump",
		"Dump /backups/forensics/production-pggit-api-20261125T143600Z-forensic.dump",
		"Inspect /backups/pre.dump", "Restore", "Ping", "CountRows", "MigrationApplied", "Ping", "Ping", "Ping", "Ping"} // verify pings at each of its 4 polls
	if got := db.Calls(); !reflect.DeepEqual(got, want) {
		t.Errorf("db calls = %v\nwant %v", got, want)
	}
	if got := scales(c); !reflect.DeepEqual(got, []int32{0, 2, 4}) {
		t.Errorf("scales = %v", got)
	}
	if res.Steps[2].Detail != "forensic dump /backups/forensics/production-pggit-api-20261125T143600Z-forensic.dump (1234 bytes)" {
		t.Errorf("dump detail %q", res.Steps[2].Detail)
	}
}

func TestQuickSkipsDatabaseWhenMigrationNotApplied(t *testing.T) {
	c := newCluster(t)
	db := newFakeDB()
	db.applied = false
	res, err := newExecutor(c, nil).Run(context.Background(), rollback.Request{Target: dbTarget(db)})
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range res.Steps {
		if strings.HasPrefix(s.Name, "db-") {
			t.Errorf("database step %s in plan", s.Name)
		}
	}
	if want := []string{"MigrationApplied", "Ping", "Ping", "Ping", "Ping"}; !reflect.DeepEqual(db.Calls(), want) {
		t.Errorf("db calls = %v", db.Calls())
	}
}

func TestPoolRecovery(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	db := newFakeDB()
	tg := dbTarget(db)
	tg.PoolRecovery = rollback.PoolRecoverySettings{Role: "pggit_app", ApplicationName: "pggit-api"}
	if err := runUntilCrash(ctx, c, tg, plan.PoolRecovery, "wait-rollout"); err == nil {
		t.Fatal("no crash")
	}
	first := c.Deployment(ns, name).Spec.Template.Annotations[kube.RestartedAtAnnotation]
	if first != "2026-11-25T14:36:00Z" || image(c) != bad {
		t.Fatalf("restartedAt %q image %s", first, image(c))
	}
	c.ClearActions()
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg, Action: plan.PoolRecovery}); err != nil {
		t.Fatal(err)
	}
	for _, a := range c.Writes() {
		if a.GetResource().Resource == "deployments" {
			t.Errorf("resume restarted again: %v", a)
		}
	}
	if got := db.Calls(); !reflect.DeepEqual(got, []string{"Terminate pggit_app pggit-api 5m0s"}) {
		t.Errorf("db calls %v", got)
	}
	// A rollback after the restart (restart-then-rollback) is a new run.
	if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: target()}); err != nil {
		t.Fatal(err)
	}
	if image(c) != good {
		t.Errorf("image %s", image(c))
	}
}

func TestMultiRegion(t *testing.T) {
	for _, applied := range []bool{false, true} {
		c := newCluster(t)
		db := newFakeDB()
		db.applied = applied
		db.lags = []time.Duration{3 * time.Second, 5 * time.Second, 200 * time.Millisecond}
		sec := newFakeDB()
		tg := dbTarget(db)
		tg.MultiRegion = &rollback.MultiRegionSettings{Secondaries: []rollback.Secondary{{Name: "eu-west", DB: sec, Subscription: "pggit_sub"}}}
		res, err := newExecutor(c, nil).Run(context.Background(), rollback.Request{Target: tg, Action: plan.MultiRegion})
		if err != nil {
			t.Fatal(err)
		}
		// The lag checked and waited for is the subscription slot's.
		want := []string{"Slot pggit_sub", "Disable pggit_sub", "Enable pggit_sub", "Slot pggit_sub"}
		if applied {
			// The primary was restored in place: the subscription is rebuilt.
			want = []string{"Slot pggit_sub", "Disable pggit_sub", "Resync pggit_sub", "Slot pggit_sub"}
		}
		if !reflect.DeepEqual(sec.Calls(), want) {
			t.Errorf("applied=%v secondary calls = %v, want %v", applied, sec.Calls(), want)
		}
		var lags []string
		for _, c := range db.Calls() {
			if strings.HasPrefix(c, "Lag") {
				lags = append(lags, c)
			}
		}
		if want := []string{"Lag slot_pggit_sub", "Lag slot_pggit_sub", "Lag slot_pggit_sub"}; !reflect.DeepEqual(lags, want) {
			t.Errorf("applied=%v primary lag reads = %v, want %v (lag-check, then wait-lag until under 1s)", applied, lags, want)
		}
		last := res.Steps[len(res.Steps)-1]
		if last.Name != "wait-lag" || last.Detail != "replication lag 200ms < 1s" {
			t.Errorf("last step %+v", last)
		}
		if image(c) != good || replicas(c) != 4 {
			t.Errorf("image %s replicas %d", image(c), replicas(c))
		}
	}
}

func TestJournalConflictStops(t *testing.T) {
	c := newCluster(t)
	obs := &recorder{hook: func(kind string, f rollback.Facts) {
		if kind == "step-finished" && f.Step == "stop" {
			// Another rollguard instance writes the journal.
			uid := c.Deployment(ns, name).UID
			cm, err := c.CoreV1().ConfigMaps(ns).Get(context.Background(), rollback.JournalName(uid), metav1.GetOptions{})
			if err != nil {
				panic(err)
			}
			cm.Data["other"] = "x"
			if _, err := c.CoreV1().ConfigMaps(ns).Update(context.Background(), cm, metav1.UpdateOptions{}); err != nil {
				panic(err)
			}
		}
	}}
	_, err := newExecutor(c, obs).Run(context.Background(), rollback.Request{Target: target()})
	if !errors.Is(err, rollback.ErrJournalConflict) {
		t.Fatalf("err = %v, want ErrJournalConflict", err)
	}
	if image(c) != bad {
		t.Errorf("plan went on after losing the journal: image %s", image(c))
	}
}

func TestVerifyFailsAfterWindow(t *testing.T) {
	c := newCluster(t)
	tg := target()
	tg.Verifier = verifierFunc(func(context.Context, string, string) error { return errors.New("error rate 0.2 > 0.05") })
	_, err := newExecutor(c, nil).Run(context.Background(), rollback.Request{Target: tg})
	if !errors.Is(err, rollback.ErrUnhealthy) || !strings.Contains(err.Error(), "error rate 0.2 > 0.05") {
		t.Fatalf("err = %v", err)
	}
}

// verifierFunc reads one trigger, error-rate: breaching when f returns an
// error, else under its threshold. Its queries read no history.
type verifierFunc func(ctx context.Context, ns, name string) error

func (f verifierFunc) Lookback(string, string) time.Duration { return 0 }

func (f verifierFunc) Verify(ctx context.Context, ns, name string, _ time.Time) []rollback.Signal {
	if err := f(ctx, ns, name); err != nil {
		return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalBreach, Detail: err.Error()}}
	}
	return []rollback.Signal{{Trigger: "error-rate", State: rollback.SignalOK, Detail: "= 0 (above 0.05)"}}
}

func TestNotConfigured(t *testing.T) {
	c := newCluster(t)
	for _, a := range []plan.Name{plan.Full, plan.PoolRecovery, plan.MultiRegion, "sideways"} {
		_, err := newExecutor(c, nil).Run(context.Background(), rollback.Request{Target: target(), Action: a})
		if !errors.Is(err, rollback.ErrNotConfigured) {
			t.Errorf("%s: err = %v", a, err)
		}
	}
}

func ptr[T any](v T) *T { return &v }

func TestResumeWithChangedConfigAndDryRunOfUnsafeJournal(t *testing.T) {
	ctx := context.Background()
	c := newCluster(t)
	db := newFakeDB()
	if err := runUntilCrash(ctx, c, dbTarget(db), plan.Quick, "db-restore"); err == nil {
		t.Fatal("no crash")
	}
	// The config lost its database settings since: refuse, never panic.
	_, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: target()})
	if !errors.Is(err, rollback.ErrNotConfigured) {
		t.Fatalf("err = %v, want ErrNotConfigured", err)
	}
	// A dry-run of the interrupted journal reports the unsafe step and
	// writes nothing.
	c.ClearActions()
	_, err = newExecutor(c, nil).Run(ctx, rollback.Request{Target: dbTarget(db), DryRun: true})
	if !errors.Is(err, rollback.ErrUnsafeResume) {
		t.Fatalf("dry-run err = %v, want ErrUnsafeResume", err)
	}
	if w := c.Writes(); len(w) != 0 {
		t.Errorf("dry-run wrote %v", w)
	}
	if j := journal(t, c); j.State != rollback.RunRunning {
		t.Errorf("journal state %s, want running (untouched)", j.State)
	}
}

// surgeWrites lists, for each Deployment update, its image and maxSurge.
func surgeWrites(c *kubetest.Cluster) []string {
	var out []string
	for _, a := range c.Actions() {
		if a.GetVerb() != "update" || a.GetSubresource() != "" || a.GetResource().Resource != "deployments" {
			continue
		}
		d := a.(k8stesting.UpdateAction).GetObject().(*appsv1.Deployment)
		out = append(out, d.Spec.Template.Spec.Containers[0].Image+" surge="+kube.SurgeString(kube.MaxSurge(d)))
	}
	return out
}

func withSurge(c *kubetest.Cluster, v *intstr.IntOrString, recreate bool) {
	c.Mutate(ns, name, func(d *appsv1.Deployment) {
		d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
			RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: v}}
		if recreate {
			d.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
		}
	})
	c.ClearActions()
}

func TestRevertSurge(t *testing.T) {
	all, quarter := intstr.FromString("100%"), intstr.FromString("25%")
	tests := []struct {
		name      string
		live      *intstr.IntOrString
		recreate  bool
		surge     *intstr.IntOrString
		wantSteps []string
		wantDescr string
		wantWrite []string
	}{
		{name: "raised for the rollout and put back", live: &quarter, surge: &all,
			wantSteps: []string{"preflight=done", "surge=done", "application=done", "wait-rollout=done", "restore-surge=done", "verify=done"},
			wantDescr: "set maxSurge of production/pggit-api from 25% to 100% for the rollout",
			wantWrite: []string{bad + " surge=100%", good + " surge=100%", good + " surge=25%"}},
		{name: "not configured: the Deployment's own pace", live: &quarter,
			wantSteps: []string{"preflight=done", "application=done", "wait-rollout=done", "verify=done"},
			wantWrite: []string{good + " surge=25%"}},
		{name: "already at the value", live: &all, surge: &all,
			wantSteps: []string{"preflight=done", "application=done", "wait-rollout=done", "verify=done"},
			wantWrite: []string{good + " surge=100%"}},
		{name: "recreate is left alone", recreate: true, surge: &all,
			wantSteps: []string{"preflight=done", "application=done", "wait-rollout=done", "verify=done"},
			wantWrite: []string{good + " surge=unset"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := newCluster(t)
			withSurge(c, tt.live, tt.recreate)
			tg := target()
			tg.Strategy, tg.RevertMaxSurge = plan.Revert, tt.surge
			v, err := newExecutor(c, nil).Plan(ctx, tg, "")
			if err != nil {
				t.Fatal(err)
			}
			if tt.wantDescr != "" && !strings.HasPrefix(v.Steps[1].Description, tt.wantDescr) {
				t.Errorf("surge step = %q, want %q…", v.Steps[1].Description, tt.wantDescr)
			}
			if _, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg}); err != nil {
				t.Fatal(err)
			}
			if got := stepNames(journal(t, c)); !reflect.DeepEqual(got, tt.wantSteps) {
				t.Errorf("steps = %v, want %v", got, tt.wantSteps)
			}
			if got := surgeWrites(c); !reflect.DeepEqual(got, tt.wantWrite) {
				t.Errorf("deployment writes = %v, want %v", got, tt.wantWrite)
			}
			if s := scales(c); len(s) != 0 {
				t.Errorf("revert scaled: %v", s)
			}
		})
	}
}

// A revert that dies with maxSurge raised puts the Deployment's own value
// back when resumed, even if the config changed in between; a dry run of
// it writes nothing.
func TestRevertSurgeResumeAndDryRun(t *testing.T) {
	all, quarter, two := intstr.FromString("100%"), intstr.FromString("25%"), intstr.FromInt32(2)
	for _, step := range []string{"application", "wait-rollout", "restore-surge"} {
		t.Run("crash at "+step, func(t *testing.T) {
			ctx := context.Background()
			c := newCluster(t)
			withSurge(c, &quarter, false)
			tg := target()
			tg.Strategy, tg.RevertMaxSurge = plan.Revert, &all
			if err := runUntilCrash(ctx, c, tg, "", step); err == nil || err.Error() != "crashed" {
				t.Fatalf("first run: %v", err)
			}
			if got := kube.SurgeString(kube.MaxSurge(c.Deployment(ns, name))); got != "100%" {
				t.Fatalf("maxSurge after the crash = %s, want 100%%", got)
			}
			tg.RevertMaxSurge = &two // reloaded config: the journal decides
			res, err := newExecutor(c, nil).Run(ctx, rollback.Request{Target: tg})
			if err != nil || !res.Resumed {
				t.Fatalf("resume: %+v, %v", res, err)
			}
			if got := kube.SurgeString(kube.MaxSurge(c.Deployment(ns, name))); got != "25%" || image(c) != good {
				t.Errorf("after resume: maxSurge %s image %s, want 25%% and %s", got, image(c), good)
			}
		})
	}
	t.Run("dry run", func(t *testing.T) {
		c := newCluster(t)
		withSurge(c, &quarter, false)
		tg := target()
		tg.Strategy, tg.RevertMaxSurge = plan.Revert, &all
		res, err := newExecutor(c, nil).Run(context.Background(), rollback.Request{Target: tg, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if w := c.Writes(); len(w) != 0 {
			t.Errorf("dry run wrote %v", w)
		}
		if res.Steps[1].Name != "surge" || res.Steps[1].State != rollback.StepWouldRun {
			t.Errorf("dry-run steps = %+v", res.Steps)
		}
	})
}

// Before a dump or a restore the stop waits until no Pod is left,
// terminating ones included: a Pod being deleted may write until its grace
// period ends. Without a database step it does not wait.
func TestStopWaitsForPodsBeforeDatabaseSteps(t *testing.T) {
	tests := []struct {
		name       string
		db         bool
		wantDetail string
		// reads reporting terminating Pods before the stop is done: the
		// scale's own read back, then the wait's until one reports none.
		wantReads int
	}{
		{name: "database steps follow", db: true, wantDetail: "scaled to 0 (recorded 4); no pod left", wantReads: 3},
		{name: "no database step", wantDetail: "scaled to 0 (recorded 4)", wantReads: 1},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c := newCluster(t)
			// After the scale to 0, the first 3 reads of the Deployment
			// report 2 Pods terminating.
			var mu sync.Mutex
			stopped, reads := false, 0
			c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() == "scale" && scaleReplicas(a) == 0 {
					mu.Lock()
					stopped = true
					mu.Unlock()
				}
				return false, nil, nil
			})
			c.PrependReactor("get", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
				mu.Lock()
				defer mu.Unlock()
				if a.GetSubresource() != "" || !stopped || reads >= 3 {
					return false, nil, nil
				}
				reads++
				obj, err := c.Tracker().Get(appsv1.SchemeGroupVersion.WithResource("deployments"), ns, name)
				if err != nil {
					return true, nil, err
				}
				d := obj.(*appsv1.Deployment).DeepCopy()
				d.Status.TerminatingReplicas = ptr(int32(2))
				return true, d, nil
			})
			obs := &recorder{hook: func(kind string, f rollback.Facts) {
				mu.Lock()
				defer mu.Unlock()
				if kind == "step-finished" && f.Step == "stop" && reads != tt.wantReads {
					t.Errorf("stop finished after %d reads with pods terminating, want %d", reads, tt.wantReads)
				}
			}}
			tg := target()
			var db *fakeDB
			if tt.db {
				db = newFakeDB()
				db.onCall = func(call string) {
					mu.Lock()
					defer mu.Unlock()
					if strings.HasPrefix(call, "Dump") && reads < 3 {
						t.Errorf("dump while %d reads still had pods terminating", 3-reads)
					}
				}
				tg = dbTarget(db)
			}
			if _, err := newExecutor(c, obs).Run(ctx, rollback.Request{Target: tg}); err != nil {
				t.Fatal(err)
			}
			j := journal(t, c)
			if got := j.Steps[indexOf(j, "stop")].Detail; got != tt.wantDetail {
				t.Errorf("stop detail = %q, want %q", got, tt.wantDetail)
			}
		})
	}
}
