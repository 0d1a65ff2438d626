package response

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"sync"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/runtime"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// fakeTriggers is the evaluator as a new leader sees it.
type fakeTriggers struct {
	mu     sync.Mutex
	firing []trigger.Decision
	blind  []trigger.Blind
	rearms []string
}

func (f *fakeTriggers) Firing() []trigger.Decision {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]trigger.Decision(nil), f.firing...)
}

func (f *fakeTriggers) Blinded() []trigger.Blind {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]trigger.Blind(nil), f.blind...)
}

func (f *fakeTriggers) Rearm(target, name string, _ time.Time) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.rearms = append(f.rearms, target+"/"+name)
}

// scales lists the replica counts written through the scale subresource.
func scales(f *fixture) []int32 {
	var out []int32
	for _, a := range f.c.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "scale" {
			out = append(out, a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale).Spec.Replicas)
		}
	}
	return out
}

func (q *recQueue) count(kind notify.Kind) int {
	q.mu.Lock()
	defer q.mu.Unlock()
	n := 0
	for _, e := range q.events {
		if e.Kind == kind {
			n++
		}
	}
	return n
}

func (q *recQueue) incidents() map[string]bool {
	q.mu.Lock()
	defer q.mu.Unlock()
	ids := map[string]bool{}
	for _, e := range q.events {
		if e.Kind != notify.KindBlind {
			ids[e.IncidentID] = true
		}
	}
	return ids
}

// A decision made while this replica followed is acted on when it becomes
// leader, once: not again on a later term of the same process, not twice
// when the live edge and the replay meet. Blind pages likewise.
func TestFiringSeenAsFollowerIsActedOnAtLeadership(t *testing.T) {
	tr := &fakeTriggers{}
	f := newFixtureWith(t, Target{}, guard.Options{}, fixtureOpts{follower: true, triggers: tr})
	d := f.decision()
	blind := trigger.Blind{Target: "pggit-api", Trigger: "p99", Since: f.now.Add(-3 * time.Minute)}
	f.r.Fire(d)
	f.r.Blind(blind)
	f.waitJobs(t)
	if w := f.c.Writes(); len(w) != 0 || len(f.q.events) != 0 {
		t.Fatalf("a follower acted: %d writes, events %v", len(w), f.q.kinds())
	}
	// The edge is gone (the trigger latched); the evaluator still reports
	// the trigger firing and blind.
	tr.firing, tr.blind = []trigger.Decision{d}, []trigger.Blind{blind}
	f.lead(t)
	if got := scales(f); !reflect.DeepEqual(got, []int32{0, 2, 4}) || image(f.c) != "pggit-api:v1.0.3" {
		t.Fatalf("scales %v image %s: the firing was not acted on at leadership", got, image(f.c))
	}
	if n := f.q.count(notify.KindBlind); n != 1 {
		t.Errorf("%d blind pages, want 1", n)
	}
	// The live edge arriving after the replay is the same episode.
	f.r.Fire(d)
	f.waitJobs(t)
	// A new term of this process replays the same episode: nothing again.
	f.endTerm(t)
	f.lead(t)
	if got := scales(f); len(got) != 3 {
		t.Errorf("scales %v: acted twice on one firing episode", got)
	}
	if n := f.q.count(notify.KindRollbackStarted); n != 1 {
		t.Errorf("%d rollbacks started, want 1", n)
	}
	if n := f.q.count(notify.KindBlind); n != 1 {
		t.Errorf("%d blind pages, want 1", n)
	}
}

// A blind page is closed when the trigger has data again, once; the end of
// an episode this process never paged (a follower's) closes nothing.
func TestBlindPageResolvesWhenDataReturns(t *testing.T) {
	tr := &fakeTriggers{}
	f := newFixtureWith(t, Target{}, guard.Options{}, fixtureOpts{triggers: tr})
	f.lead(t)
	since := f.now.Add(-3 * time.Minute)
	f.r.Blind(trigger.Blind{Target: "pggit-api", Trigger: "p99", Since: since})
	back := trigger.Blind{Target: "pggit-api", Trigger: "p99", Since: since, Resolved: true, Until: f.now}
	f.r.Blind(back)
	f.r.Blind(back)
	f.r.Blind(trigger.Blind{Target: "pggit-api", Trigger: "p99", Since: f.now.Add(-time.Minute), Resolved: true, Until: f.now})
	if got := f.q.kinds(); !reflect.DeepEqual(got, []string{"blind", "blind_resolved"}) {
		t.Fatalf("events %v, want one blind page and its resolution", got)
	}
	f.q.mu.Lock()
	e := f.q.events[1]
	f.q.mu.Unlock()
	if e.Trigger != "p99" || e.Severity != notify.SeverityWarning || e.Target.Deployment == "" {
		t.Errorf("resolution %+v", e)
	}
}

// Interlocks are consumed only by a plan that started writing: a refusal
// (a paused Deployment) leaves one rollback per revision, the cooldown and
// the budget untouched.
func TestRefusalConsumesNoInterlock(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{Cooldown: time.Hour, MaxRollbacksPerHour: 1})
	f.c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Paused = true })
	f.fire(t)
	if st := f.r.Status()[0].LastResult; !strings.Contains(st, "deployment is paused") {
		t.Fatalf("last result %q, want the paused refusal", st)
	}
	// A human unpauses it; the breach goes on (a new firing episode).
	f.c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Paused = false })
	f.now = f.now.Add(time.Minute)
	f.fire(t)
	f.wantResult(t, "quick succeeded", "the refusal consumed an interlock")
}

// A crash or failure mid-plan, then the resume: one incident, one
// dedup_key, the resume reported under it, and the incident ends resolved.
func TestResumeReportsUnderTheSameIncident(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{})
	failed := false
	f.c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if a.GetSubresource() == "scale" && a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale).Spec.Replicas == 2 && !failed {
			failed = true // the ramp's first write fails once
			return true, nil, errors.New("apiserver unavailable")
		}
		return false, nil, nil
	})
	f.fire(t)
	f.wantResult(t, "quick failed", "the ramp to fail")
	// The next leader (here: the next term) resumes it.
	f.endTerm(t)
	f.lead(t)
	f.wantResult(t, "quick succeeded", "the resume to finish")
	f.wantOneIncident(t)
	var resumed bool
	for _, e := range f.q.events {
		resumed = resumed || e.Kind == notify.KindRollbackStarted && strings.HasPrefix(e.Summary, "ROLLBACK RESUMED")
	}
	if !resumed || f.q.count(notify.KindDetected) != 1 || f.q.count(notify.KindRollbackSucceeded) != 1 {
		t.Errorf("events %v: want one detection, a resume and one success", f.q.kinds())
	}
}

// restart-then-rollback: the pool recovery is no rollback; when the
// trigger still fires a whole window after the restart, it rolls back.
func TestRestartThenRollbackEscalates(t *testing.T) {
	tr := &fakeTriggers{}
	db := &poolDB{}
	f := newFixtureWith(t, Target{RestartMemory: 30 * time.Minute}, guard.Options{Cooldown: 30 * time.Minute, MaxRollbacksPerHour: 3},
		fixtureOpts{triggers: tr})
	f.r.mu.Lock()
	st := f.r.targets["pggit-api"]
	st.cfg.Rollback.Database = &rollback.DatabaseSettings{DB: db}
	st.cfg.Rollback.PoolRecovery = rollback.PoolRecoverySettings{Role: "pggit_app", ApplicationName: "pggit-api"}
	f.r.mu.Unlock()
	d := f.decision()
	d.Trigger, d.Action = "pool", ActionRestartThenRollback
	f.r.Fire(d)
	f.waitJobs(t)
	f.wantResult(t, "pool-recovery succeeded", "first firing: the pool recovery")
	if !reflect.DeepEqual(tr.rearms, []string{"pggit-api/pool"}) {
		t.Errorf("rearmed %v: the trigger must hold a whole window after the restart", tr.rearms)
	}
	// Still exhausted one window after the restart: the rearmed trigger
	// fires again.
	f.now = f.now.Add(70 * time.Second)
	d2 := f.decision()
	d2.Trigger, d2.Action = "pool", ActionRestartThenRollback
	f.r.Fire(d2)
	f.waitJobs(t)
	f.wantResult(t, "quick succeeded", "second firing: the escalation to a rollback")
	if image(f.c) != "pggit-api:v1.0.3" {
		t.Errorf("image %s", image(f.c))
	}
}

// A manual rollback right after a pool recovery is not held back by it.
func TestManualRollbackAfterARestart(t *testing.T) {
	db := &poolDB{}
	f := newFixture(t, Target{RestartMemory: 30 * time.Minute}, guard.Options{Cooldown: 30 * time.Minute})
	f.r.mu.Lock()
	st := f.r.targets["pggit-api"]
	st.cfg.Rollback.Database = &rollback.DatabaseSettings{DB: db}
	st.cfg.Rollback.PoolRecovery = rollback.PoolRecoverySettings{Role: "pggit_app", ApplicationName: "pggit-api"}
	f.r.mu.Unlock()
	if _, err := f.r.Request(context.Background(), "pggit-api", string(plan.PoolRecovery), "pool exhausted", false); err != nil {
		t.Fatal(err)
	}
	f.waitJobs(t)
	f.now = f.now.Add(time.Minute)
	if detail, err := f.r.Request(context.Background(), "pggit-api", ActionRollback, "still broken", false); err != nil {
		t.Fatalf("manual rollback after a restart: %q %v", detail, err)
	}
	f.waitJobs(t)
	if image(f.c) != "pggit-api:v1.0.3" {
		t.Errorf("image %s", image(f.c))
	}
}

// The end of a term waits for the running step, stops the plan at the next
// step boundary and leaves it for the next leader, which finishes it.
func TestTermEndDrainsAtAStepBoundary(t *testing.T) {
	entered, release := make(chan struct{}), make(chan struct{})
	var once sync.Once
	sleep := func(ctx context.Context, _ time.Duration) error {
		// The ramp's pause blocks the first time, as a long step would.
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-release
		}
		return ctx.Err()
	}
	f := newFixtureWith(t, Target{}, guard.Options{}, fixtureOpts{sleep: sleep, drain: time.Minute})
	f.r.Fire(f.decision())
	<-entered
	f.endLead()
	select {
	case <-f.leadDone:
		t.Fatal("Lead returned while a step was running: the lease would be released under it")
	case <-time.After(50 * time.Millisecond):
	}
	close(release)
	select {
	case <-f.leadDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Lead did not return after the step finished")
	}
	f.endLead = nil
	f.waitJobs(t)
	f.wantResult(t, "quick handed over", "a hand-over")
	if n := f.q.count(notify.KindRollbackFailed); n != 0 {
		t.Errorf("a hand-over paged %d failures", n)
	}
	f.lead(t)
	f.wantResult(t, "quick succeeded", "the next term to finish the plan")
	f.wantOneIncident(t)
}

// The drain is bounded: a step that outlives DrainTimeout is cancelled and
// journaled as interrupted, and the next term resumes it.
func TestTermEndCancelsAStepPastTheDrainTimeout(t *testing.T) {
	entered := make(chan struct{})
	var once sync.Once
	sleep := func(ctx context.Context, _ time.Duration) error {
		first := false
		once.Do(func() { first = true })
		if first {
			close(entered)
			<-ctx.Done() // never finishes by itself
		}
		return ctx.Err()
	}
	f := newFixtureWith(t, Target{}, guard.Options{}, fixtureOpts{sleep: sleep, drain: 20 * time.Millisecond})
	f.r.Fire(f.decision())
	<-entered
	f.endTerm(t)
	f.waitJobs(t)
	if n := f.q.count(notify.KindRollbackFailed); n != 0 {
		t.Errorf("an interrupted step paged %d failures", n)
	}
	f.lead(t)
	f.wantResult(t, "quick succeeded", "the next term to finish the plan")
}

// poolDB answers the pool recovery's one database call.
type poolDB struct{ rollback.Database }

func (*poolDB) TerminateIdleInTransaction(context.Context, string, string, time.Duration) (int, error) {
	return 2, nil
}

func (*poolDB) Ping(context.Context) error { return nil }

// A breach that began before the current revision was deployed is no
// evidence against it: nothing is rolled back, and the trigger must hold a
// whole window from the deploy.
func TestEvidenceOlderThanTheRevisionIsNotActedOn(t *testing.T) {
	tr := &fakeTriggers{}
	f := newFixtureWith(t, Target{}, guard.Options{}, fixtureOpts{triggers: tr})
	deployed := f.now.Add(-30 * time.Second)
	f.c.Now = func() time.Time { return deployed }
	// v1.2.0 ships while v1.1.0's breach is 30 s old.
	f.c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0" })
	f.c.ClearActions()
	f.fire(t) // first breach a minute ago
	if w := f.c.Writes(); len(w) != 0 {
		t.Fatalf("acted on evidence older than the revision: %d writes", len(w))
	}
	if !reflect.DeepEqual(tr.rearms, []string{"pggit-api/error-rate"}) {
		t.Errorf("rearmed %v, want the trigger re-judged from the deploy", tr.rearms)
	}
	// Breaching a whole window after the deploy: acted on.
	f.now = f.now.Add(time.Minute)
	d := f.decision()
	d.FirstBreach = deployed.Add(time.Second)
	f.r.Fire(d)
	f.waitJobs(t)
	if image(f.c) == "pggit-api:v1.2.0" {
		t.Fatal("v1.2.0 breaching on its own was not rolled back")
	}
}

// Counterexamples the model-based test found, kept as cases.
func TestModelCounterexamplesResponder(t *testing.T) {
	t.Run("a new request finishes the unfinished run under its incident", func(t *testing.T) {
		f := newFixture(t, Target{}, guard.Options{})
		failed := false
		f.c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
			if a.GetSubresource() == "scale" && a.(k8stesting.UpdateAction).GetObject().(*autoscalingv1.Scale).Spec.Replicas == 2 && !failed {
				failed = true
				return true, nil, errors.New("apiserver unavailable")
			}
			return false, nil, nil
		})
		f.fire(t)
		// A human asks again (the template is now the pinned one, a
		// revision of its own): the unfinished run is finished, under the
		// first incident.
		if _, err := f.r.Request(context.Background(), "pggit-api", ActionRollback, "still broken", false); err != nil {
			t.Fatal(err)
		}
		f.waitJobs(t)
		f.wantResult(t, "quick succeeded", "the rollback to finish")
		f.wantOneIncident(t)
	})

	t.Run("a journal taken by another rollguard is no failure to page", func(t *testing.T) {
		f := newFixture(t, Target{}, guard.Options{})
		// Mid-plan, another rollguard (which took the lease) writes the
		// journal first.
		updates := 0
		f.c.PrependReactor("update", "configmaps", func(k8stesting.Action) (bool, runtime.Object, error) {
			if updates++; updates == 3 {
				return true, nil, apierrors.NewConflict(corev1.Resource("configmaps"), "rollguard-journal-uid-1", errors.New("modified"))
			}
			return false, nil, nil
		})
		f.fire(t)
		if n := f.q.count(notify.KindRollbackFailed); n != 0 {
			t.Errorf("%d failure pages for another rollguard's run", n)
		}
		if st := f.r.Status()[0].LastResult; !strings.Contains(st, "left to another rollguard") {
			t.Errorf("last result %q", st)
		}
	})
}
