package response

import (
	"context"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/trigger"
)

const ns, name = "production", "pggit-api"

type recQueue struct {
	mu     sync.Mutex
	events []notify.Event
}

func (q *recQueue) Enqueue(e notify.Event) {
	q.mu.Lock()
	defer q.mu.Unlock()
	q.events = append(q.events, e)
}

func (q *recQueue) kinds() []string {
	q.mu.Lock()
	defer q.mu.Unlock()
	var out []string
	for _, e := range q.events {
		k := string(e.Kind)
		if s := e.Details.Step; s != "" {
			k += ":" + s
		}
		out = append(out, k)
	}
	return out
}

func newCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	replicas := int32(4)
	c := kubetest.New(&appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: name, Namespace: ns, UID: "uid-1"},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": name}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "pggit-api:v1.0.3"}}},
			},
		},
	})
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.1.0" })
	return c
}

type fixture struct {
	c     *kubetest.Cluster
	q     *recQueue
	r     *Responder
	now   time.Time
	stop  context.CancelFunc
	done  chan struct{}
	guard *guard.Guard

	endLead  context.CancelFunc
	leadDone chan struct{}
}

// fixtureOpts vary the fixture for the fault-path tests.
type fixtureOpts struct {
	follower bool // start without a leadership term
	triggers Triggers
	sleep    func(ctx context.Context, d time.Duration) error
	drain    time.Duration
}

func newFixture(t *testing.T, target Target, g guard.Options) *fixture {
	return newFixtureWith(t, target, g, fixtureOpts{})
}

func newFixtureWith(t *testing.T, target Target, g guard.Options, o fixtureOpts) *fixture {
	t.Helper()
	f := &fixture{c: newCluster(t), q: &recQueue{}, now: time.Now()}
	dep := kube.New(f.c, kube.Options{PollInterval: time.Millisecond}, zap.NewNop())
	f.guard = guard.New(g)
	sleep := o.sleep
	if sleep == nil {
		sleep = func(context.Context, time.Duration) error { return nil }
	}
	exec := rollback.NewExecutor(dep, f.c.CoreV1(), rollback.Options{
		Now: func() time.Time { return f.now }, Sleep: sleep, PollInterval: time.Millisecond,
	}, zap.NewNop())
	f.r = New(exec, dep, f.q, f.guard, Options{Now: func() time.Time { return f.now }, WouldRollback: true,
		Triggers: o.triggers, DrainTimeout: o.drain}, zap.NewNop(), nil)
	target.Name = "pggit-api"
	target.Rollback.Namespace, target.Rollback.Deployment = ns, name
	target.Rollback.RampSteps = []int32{2}
	target.Rollback.VerifyWindow = time.Millisecond
	f.r.SetTargets([]Target{target})
	ctx, cancel := context.WithCancel(context.Background())
	f.stop, f.done = cancel, make(chan struct{})
	go func() { defer close(f.done); f.r.Run(ctx) }()
	t.Cleanup(func() {
		if f.endLead != nil {
			f.endLead()
			<-f.leadDone
		}
		f.stop()
		<-f.done
	})
	if !o.follower {
		f.lead(t)
	}
	return f
}

// lead starts a leadership term and waits for its own work (the resume
// of the journal, the replay of what fires) to be done.
func (f *fixture) lead(t *testing.T) {
	t.Helper()
	f.startTerm(t)
	// Leading is true from the term's first instant; the firing triggers
	// it replays are queued a little later, and only then is an idle
	// responder done with them.
	deadline := time.Now().Add(5 * time.Second)
	for !f.r.caughtUp() {
		if time.Now().After(deadline) {
			t.Fatal("the term did not take up what was pending at its start")
		}
		time.Sleep(time.Millisecond)
	}
	f.waitJobs(t)
}

// startTerm starts a leadership term and returns as soon as it has begun.
func (f *fixture) startTerm(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f.endLead, f.leadDone = cancel, make(chan struct{})
	done := f.leadDone
	go func() { defer close(done); f.r.Lead(ctx) }()
	for !f.r.Leading() {
		time.Sleep(time.Millisecond)
	}
}

// endTerm ends the leadership term and waits for Lead to return.
func (f *fixture) endTerm(t *testing.T) {
	t.Helper()
	f.endLead()
	select {
	case <-f.leadDone:
	case <-time.After(10 * time.Second):
		t.Fatal("Lead did not return")
	}
	f.endLead = nil
}

// waitJobs waits until every queued job is done.
func (f *fixture) waitJobs(t *testing.T) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !f.r.idle() {
		if time.Now().After(deadline) {
			t.Fatalf("responder still busy: %+v", f.r.Status())
		}
		time.Sleep(time.Millisecond)
	}
}

func (f *fixture) fire(t *testing.T) {
	t.Helper()
	f.r.Fire(f.decision())
	f.waitJobs(t)
}

// decision is the error-rate trigger firing now, its breach a minute old.
// wantResult stops the test unless the target's last result starts with
// prefix; why says what the test waited for.
func (f *fixture) wantResult(t *testing.T, prefix, why string) {
	t.Helper()
	if st := f.r.Status()[0].LastResult; !strings.HasPrefix(st, prefix) {
		t.Fatalf("last result %q, want %q... (%s)", st, prefix, why)
	}
}

// wantOneIncident fails the test unless every event belongs to one
// incident.
func (f *fixture) wantOneIncident(t *testing.T) {
	t.Helper()
	if ids := f.q.incidents(); len(ids) != 1 {
		t.Errorf("events span incidents %v, want one", ids)
	}
}

func (f *fixture) decision() trigger.Decision {
	return trigger.Decision{Target: "pggit-api", Trigger: "error-rate", Action: ActionRollback, Severity: "critical",
		Query: "q", Op: trigger.Above, Threshold: 0.05, Value: 0.2, FirstBreach: f.now.Add(-time.Minute), FiredAt: f.now}
}

func image(c *kubetest.Cluster) string {
	return c.Deployment(ns, name).Spec.Template.Spec.Containers[0].Image
}

func TestFireRollsBackAndNotifiesInOrder(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{Cooldown: time.Hour, MaxRevisionAge: 0})
	f.fire(t)
	if got := image(f.c); got != "pggit-api:v1.0.3" {
		t.Fatalf("image = %s, want the previous revision back", got)
	}
	want := "detected rollback_started step_started:stop step_finished:stop step_started:application step_finished:application " +
		"step_started:wait-rollout step_finished:wait-rollout step_started:ramp step_finished:ramp step_started:verify step_finished:verify rollback_succeeded"
	got := strings.Join(f.q.kinds(), " ")
	// The preflight step is journaled as done before the plan starts.
	got = strings.ReplaceAll(got, "step_finished:preflight ", "")
	if got != want {
		t.Fatalf("events:\n got %s\nwant %s", got, want)
	}
	ids := map[string]bool{}
	for _, e := range f.q.events {
		ids[e.IncidentID] = true
	}
	if len(ids) != 1 {
		t.Fatalf("events span %d incidents, want 1: %v", len(ids), ids)
	}
	f.wantResult(t, "quick succeeded", "the rollback to finish")
}

func TestSecondFiringOfTheSameRevisionPagesOnce(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{})
	f.fire(t)
	// Someone redeploys the very same bad template.
	f.c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.1.0" })
	writes := len(f.c.Writes())
	n := len(f.q.events)
	f.now = f.now.Add(time.Minute)
	f.fire(t)
	// A new episode of the same breach (the trigger flapped): refused again,
	// and not paged again.
	f.now = f.now.Add(time.Minute)
	f.fire(t)
	if w := len(f.c.Writes()); w != writes {
		t.Fatalf("%d writes after the second firing, want none", w-writes)
	}
	var cannot int
	for _, e := range f.q.events[n:] {
		if e.Kind == notify.KindCannotRollback {
			cannot++
			if !strings.Contains(e.Summary, "already-rolled-back") {
				t.Fatalf("summary %q", e.Summary)
			}
		}
	}
	if cannot != 1 {
		t.Fatalf("%d cannot-roll-back pages, want exactly 1 per episode: %v", cannot, f.q.kinds()[n:])
	}
}

func TestBlockedActionsWriteNothing(t *testing.T) {
	tests := []struct {
		name     string
		target   Target
		guard    guard.Options
		wantKind notify.Kind
		wantText string
	}{
		{"dry-run", Target{DryRun: true}, guard.Options{}, notify.KindWouldRollback, "dry-run: pggit-api: would roll back"},
		{"config freeze", Target{Frozen: true}, guard.Options{}, notify.KindCannotRollback, "cannot roll back pggit-api: frozen: target frozen in config (targets[].freeze)"},
		{"global freeze", Target{}, guard.Options{Freeze: true}, notify.KindCannotRollback, "frozen in config"},
		{"old revision", Target{}, guard.Options{MaxRevisionAge: time.Nanosecond}, notify.KindCannotRollback, "revision-too-old"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.target, tt.guard)
			f.now = f.now.Add(time.Hour) // the deploy is an hour old
			before := len(f.c.Writes())
			f.fire(t)
			if w := f.c.Writes()[before:]; len(w) != 0 {
				t.Fatalf("writes: %v", w)
			}
			if image(f.c) != "pggit-api:v1.1.0" {
				t.Fatal("image changed")
			}
			var found int
			for _, e := range f.q.events {
				if e.Kind == tt.wantKind {
					found++
					if !strings.Contains(e.Summary, tt.wantText) {
						t.Fatalf("summary %q does not contain %q", e.Summary, tt.wantText)
					}
				}
			}
			if found != 1 {
				t.Fatalf("%d %s events, want 1: %v", found, tt.wantKind, f.q.kinds())
			}
			if tt.wantKind == notify.KindWouldRollback && len(f.q.events) != 1 {
				// A rehearsal must not page on-call at critical severity.
				t.Fatalf("dry-run sent more than the info event: %v", f.q.kinds())
			}
		})
	}
}

// A new leader (or a restarted process) starts with an empty guard; seeded
// from the journal, it still honours the cooldown of the last rollback.
func TestSeedHistoryKeepsCooldown(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{Cooldown: time.Hour})
	f.fire(t)
	if image(f.c) != "pggit-api:v1.0.3" {
		t.Fatal("first rollback did not happen")
	}
	// Failover: a fresh guard, seeded from the journal.
	f.r.guard = guard.New(guard.Options{Cooldown: time.Hour})
	f.r.SeedHistory(context.Background())
	// A second, different bad version ten minutes later.
	f.now = f.now.Add(10 * time.Minute)
	f.c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0" })
	before := len(f.c.Writes())
	f.fire(t)
	if w := f.c.Writes()[before:]; len(w) != 0 {
		t.Fatalf("rolled back inside the cooldown after a failover: %v", w)
	}
	if got := f.r.Status()[0].LastResult; !strings.Contains(got, "cooldown") {
		t.Fatalf("last result %q, want a cooldown refusal", got)
	}
}

func TestRequestValidatesTargetAndAction(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{})
	ctx := context.Background()
	if _, err := f.r.Request(ctx, "kube-dns", "rollback", "x", false); err == nil || err.Error() != `target "kube-dns": unknown target` {
		t.Fatalf("err = %v", err)
	}
	if _, err := f.r.Request(ctx, "pggit-api", "delete", "x", false); err == nil || err.Error() != `action "delete": unknown action` {
		t.Fatalf("err = %v", err)
	}
	f.c.Mutate(ns, name, func(d *appsv1.Deployment) {
		d.Annotations = map[string]string{kube.FreezeAnnotation: "migration running"}
	})
	detail, err := f.r.Request(ctx, "pggit-api", "rollback", "x", false)
	if err == nil || detail != "cannot roll back: frozen: Deployment annotated rollguard.io/freeze: migration running" {
		t.Fatalf("detail %q err %v", detail, err)
	}
}

func TestSucceededEventCarriesDataIntegrity(t *testing.T) {
	f := newFixture(t, Target{}, guard.Options{})
	f.r.opts.Integrity = func(_ context.Context, gotNS, gotName string) (*notify.DataIntegrity, error) {
		if gotNS != ns || gotName != name {
			t.Errorf("integrity asked for %s/%s", gotNS, gotName)
		}
		return &notify.DataIntegrity{AlertDeliveryQueue: 42, UnresolvedConflicts: 1, LatestSchemaVersions: []string{"v8"}}, nil
	}
	f.fire(t)
	last := f.q.events[len(f.q.events)-1]
	di := last.Details.DataIntegrity
	if last.Kind != notify.KindRollbackSucceeded || di == nil || di.AlertDeliveryQueue != 42 || di.UnresolvedConflicts != 1 {
		t.Fatalf("last event %s details %v", last.Kind, last.Details.DataIntegrity)
	}
}
