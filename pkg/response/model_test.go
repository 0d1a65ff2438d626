package response

// A model-based test of the responder, guard, journal and executor
// together: random interleavings of ticks, deploys, human hands, leader
// changes, crashes at every write of every plan, manual requests and
// reloads, with the invariants of docs/design.md checked after every
// action. `make test` runs it for a bounded number of checks; `make soak`
// runs it for as long as it is given (ROLLGUARD_SOAK, a duration).
//
// A process is one rollguard: its own responder, guard, executor and
// memory, reaching the shared world (one kubetest cluster, one database
// and a secondary) through gates. A crash is modelled where it matters:
// after the k-th write a process makes, every further call it makes fails
// and nothing it still does reaches the world; a new process then starts
// from what the world holds (the journal).

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	corev1client "k8s.io/client-go/kubernetes/typed/core/v1"
	"pgregory.net/rapid"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/trigger"
)

var errDead = errors.New("process is dead")

const (
	modelFor      = time.Minute
	modelInterval = 5 * time.Second
	modelTarget   = "pggit-api"
)

// world is what outlives a process.
type world struct {
	t   *rapid.T
	c   *kubetest.Cluster
	db  *modelDB // primary
	sec *modelDB // secondary (its subscription)

	mu  sync.Mutex
	now time.Time
	// bad images breach; the rest are healthy.
	bad     map[string]bool
	deploys int
	trig    modelTrigger
	events  []notify.Event
	touched map[string]bool // runs a human touched (scaled) while they ran
	// lastScale is the model time of the last human scale. A run's
	// goroutine reads the replicas before it writes its first journal, so a
	// scale in that gap marks the previous run in touched; comparing times
	// catches it (the model clock only moves on "later", so a scale at the
	// run's start time counts as during the run).
	lastScale time.Time
	// judged are the images a rollback started from: judged bad.
	judged   map[string]bool
	violated []string
}

// modelTrigger is the error-rate trigger of every replica: they all read
// the same Prometheus.
type modelTrigger struct {
	breachSince time.Time // zero when not breaching
	fired       bool      // the edge into firing was reached at a tick
	lastTick    time.Time
}

func (w *world) clock() time.Time {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.now
}

func (w *world) violation(format string, args ...any) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.violated = append(w.violated, fmt.Sprintf(format, args...))
}

func (w *world) dep() *appsv1.Deployment { return w.c.Deployment(ns, name) }

func image0(d *appsv1.Deployment) string { return d.Spec.Template.Spec.Containers[0].Image }

func hasReadOnly(d *appsv1.Deployment) bool {
	for _, e := range d.Spec.Template.Spec.Containers[0].Env {
		if e.Name == rollback.ReadOnlyEnv {
			return true
		}
	}
	return false
}

// Firing, Blinded and Rearm are the evaluator as every process sees it.
func (w *world) Firing() []trigger.Decision {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.trig.fired {
		return nil
	}
	return []trigger.Decision{w.decisionLocked()}
}

func (w *world) Blinded() []trigger.Blind { return nil }

func (w *world) Rearm(_, _ string, at time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if !w.trig.breachSince.IsZero() && at.After(w.trig.breachSince) {
		w.trig.breachSince = at
		w.trig.fired = false
	}
}

func (w *world) decisionLocked() trigger.Decision {
	return trigger.Decision{Target: modelTarget, Trigger: "error-rate", Action: ActionRollback, Severity: "critical",
		Query: "q", Op: trigger.Above, Threshold: 0.05, Value: 0.2, FirstBreach: w.trig.breachSince, FiredAt: w.now}
}

// modelDB is a database and its dumps; its state is what the invariants
// read.
type modelDB struct {
	w        *world
	mu       sync.Mutex
	applied  bool // the bad deploy's migration
	subOn    bool // the secondary's subscription
	dumps    map[string]time.Time
	restores int
}

func (d *modelDB) MigrationApplied(context.Context, string) (bool, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	return d.applied, nil
}

func (d *modelDB) Dump(_ context.Context, path string) (int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	if _, ok := d.dumps[path]; ok {
		return 0, fmt.Errorf("dump to %s: exists", path)
	}
	d.dumps[path] = d.w.clock()
	return 100, nil
}

func (d *modelDB) InspectDump(_ context.Context, path string) (time.Time, int64, error) {
	d.mu.Lock()
	defer d.mu.Unlock()
	at, ok := d.dumps[path]
	if !ok {
		return time.Time{}, 0, fmt.Errorf("inspect %s: %w", path, fs.ErrNotExist)
	}
	return at, 100, nil
}

func (d *modelDB) Restore(context.Context, string) error {
	dep := d.w.dep()
	if kube.Replicas(dep) != 0 || dep.Status.Replicas != 0 {
		d.w.violation("pg_restore with %d replicas asked and %d running", kube.Replicas(dep), dep.Status.Replicas)
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	d.restores++
	d.applied = false
	return nil
}

func (d *modelDB) Ping(context.Context) error { return nil }
func (d *modelDB) CountRows(context.Context, []string) (map[string]int64, error) {
	return map[string]int64{}, nil
}
func (d *modelDB) TerminateIdleInTransaction(context.Context, string, string, time.Duration) (int, error) {
	return 1, nil
}
func (d *modelDB) DisableSubscription(context.Context, string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.subOn = false
	return nil
}
func (d *modelDB) EnableSubscription(context.Context, string) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.subOn = true
	return nil
}
func (d *modelDB) ResyncSubscription(ctx context.Context, n string) error {
	return d.EnableSubscription(ctx, n)
}
func (d *modelDB) StreamingLag(context.Context, ...string) (time.Duration, error) { return 0, nil }
func (d *modelDB) SubscriptionSlot(_ context.Context, n string) (string, error) {
	return "slot_" + n, nil
}

// process is one rollguard process.
type process struct {
	id   int
	w    *world
	dead atomic.Bool
	r    *Responder

	// The armed interruption: after the writes-th write, do it.
	mu     sync.Mutex
	writes int
	armAt  int
	arm    func()

	stop     context.CancelFunc
	done     chan struct{}
	endLead  context.CancelFunc
	leadDone chan struct{}
	// lostLease: the lease was lost mid-plan (the term ends as soon as its
	// plan reaches a step boundary).
	lostLease atomic.Bool
}

// wrote counts one write of the process and runs the armed interruption
// when its turn has come.
func (p *process) wrote() {
	p.mu.Lock()
	p.writes++
	var f func()
	if p.arm != nil && p.writes == p.armAt {
		f, p.arm = p.arm, nil
	}
	p.mu.Unlock()
	if f != nil {
		f()
	}
}

// gate is the process's way to the world.
type gate struct {
	p *process
	k *kube.Deployments
}

func (g *gate) err() error {
	if g.p.dead.Load() {
		return errDead
	}
	return nil
}

func (g *gate) Get(ctx context.Context, ns, name string) (*appsv1.Deployment, error) {
	if err := g.err(); err != nil {
		return nil, err
	}
	return g.k.Get(ctx, ns, name)
}

func (g *gate) ReplicaSets(ctx context.Context, dep *appsv1.Deployment) ([]appsv1.ReplicaSet, error) {
	if err := g.err(); err != nil {
		return nil, err
	}
	return g.k.ReplicaSets(ctx, dep)
}

func (g *gate) GetScale(ctx context.Context, ns, name string) (*autoscalingv1.Scale, error) {
	if err := g.err(); err != nil {
		return nil, err
	}
	return g.k.GetScale(ctx, ns, name)
}

func (g *gate) Scale(ctx context.Context, ns, name string, n int32, exp kube.Expect) (*appsv1.Deployment, error) {
	if err := g.err(); err != nil {
		return nil, err
	}
	d, err := g.k.Scale(ctx, ns, name, n, exp)
	if err == nil {
		g.p.wrote()
	}
	return d, err
}

func (g *gate) SetTemplate(ctx context.Context, ns, name string, tmpl corev1.PodTemplateSpec, exp kube.Expect) (*appsv1.Deployment, error) {
	if err := g.err(); err != nil {
		return nil, err
	}
	before := image0(g.p.w.dep())
	after := tmpl.Spec.Containers[0].Image
	g.p.w.mu.Lock()
	isBad := g.p.w.judged[after]
	g.p.w.mu.Unlock()
	d, err := g.k.SetTemplate(ctx, ns, name, tmpl, exp)
	if err == nil {
		if after != before && isBad {
			g.p.w.violation("rolled %s to %s, a revision rolled back before", before, after)
		}
		g.p.wrote()
	}
	return d, err
}

func (g *gate) SetMaxSurge(ctx context.Context, ns, name string, from, to *intstr.IntOrString, exp kube.Expect) (*appsv1.Deployment, error) {
	if err := g.err(); err != nil {
		return nil, err
	}
	d, err := g.k.SetMaxSurge(ctx, ns, name, from, to, exp)
	if err == nil {
		g.p.wrote()
	}
	return d, err
}

func (g *gate) WaitRollout(ctx context.Context, ns, name string, o kube.WaitOptions) (*appsv1.Deployment, kube.RolloutStatus, error) {
	if err := g.err(); err != nil {
		return nil, kube.RolloutStatus{}, err
	}
	return g.k.WaitRollout(ctx, ns, name, o)
}

func (g *gate) RecordEvent(context.Context, *appsv1.Deployment, string, string, string) error {
	return g.err()
}

func (g *gate) Pods(ctx context.Context, dep *appsv1.Deployment) (int, error) {
	if err := g.err(); err != nil {
		return 0, err
	}
	return g.k.Pods(ctx, dep)
}

// ConfigMaps is the journal's way to the world.
func (g *gate) ConfigMaps(ns string) corev1client.ConfigMapInterface {
	return &gatedConfigMaps{ConfigMapInterface: g.p.w.c.CoreV1().ConfigMaps(ns), g: g}
}

type gatedConfigMaps struct {
	corev1client.ConfigMapInterface
	g *gate
}

func (c *gatedConfigMaps) Get(ctx context.Context, name string, o metav1.GetOptions) (*corev1.ConfigMap, error) {
	if err := c.g.err(); err != nil {
		return nil, err
	}
	return c.ConfigMapInterface.Get(ctx, name, o)
}

func (c *gatedConfigMaps) Create(ctx context.Context, cm *corev1.ConfigMap, o metav1.CreateOptions) (*corev1.ConfigMap, error) {
	if err := c.g.err(); err != nil {
		return nil, err
	}
	out, err := c.ConfigMapInterface.Create(ctx, cm, o)
	if err == nil {
		c.g.p.wrote()
	}
	return out, err
}

func (c *gatedConfigMaps) Update(ctx context.Context, cm *corev1.ConfigMap, o metav1.UpdateOptions) (*corev1.ConfigMap, error) {
	if err := c.g.err(); err != nil {
		return nil, err
	}
	out, err := c.ConfigMapInterface.Update(ctx, cm, o)
	if err == nil {
		c.g.p.wrote()
	}
	return out, err
}

// gatedDB is the process's way to a database; its writes count.
type gatedDB struct {
	p  *process
	db *modelDB
}

func (d *gatedDB) check() error {
	if d.p.dead.Load() {
		return errDead
	}
	return nil
}

func (d *gatedDB) MigrationApplied(ctx context.Context, m string) (bool, error) {
	if err := d.check(); err != nil {
		return false, err
	}
	return d.db.MigrationApplied(ctx, m)
}

func (d *gatedDB) Dump(ctx context.Context, path string) (int64, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	n, err := d.db.Dump(ctx, path)
	if err == nil {
		d.p.wrote()
	}
	return n, err
}

func (d *gatedDB) InspectDump(ctx context.Context, path string) (time.Time, int64, error) {
	if err := d.check(); err != nil {
		return time.Time{}, 0, err
	}
	return d.db.InspectDump(ctx, path)
}

func (d *gatedDB) Restore(ctx context.Context, path string) error {
	if err := d.check(); err != nil {
		return err
	}
	err := d.db.Restore(ctx, path)
	if err == nil {
		d.p.wrote()
	}
	return err
}

func (d *gatedDB) Ping(ctx context.Context) error {
	if err := d.check(); err != nil {
		return err
	}
	return d.db.Ping(ctx)
}

func (d *gatedDB) CountRows(ctx context.Context, t []string) (map[string]int64, error) {
	if err := d.check(); err != nil {
		return nil, err
	}
	return d.db.CountRows(ctx, t)
}

func (d *gatedDB) TerminateIdleInTransaction(ctx context.Context, role, app string, age time.Duration) (int, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	n, err := d.db.TerminateIdleInTransaction(ctx, role, app, age)
	if err == nil {
		d.p.wrote()
	}
	return n, err
}

func (d *gatedDB) DisableSubscription(ctx context.Context, n string) error {
	if err := d.check(); err != nil {
		return err
	}
	err := d.db.DisableSubscription(ctx, n)
	if err == nil {
		d.p.wrote()
	}
	return err
}

func (d *gatedDB) EnableSubscription(ctx context.Context, n string) error {
	if err := d.check(); err != nil {
		return err
	}
	err := d.db.EnableSubscription(ctx, n)
	if err == nil {
		d.p.wrote()
	}
	return err
}

func (d *gatedDB) ResyncSubscription(ctx context.Context, n string) error {
	if err := d.check(); err != nil {
		return err
	}
	err := d.db.ResyncSubscription(ctx, n)
	if err == nil {
		d.p.wrote()
	}
	return err
}

func (d *gatedDB) StreamingLag(ctx context.Context, s ...string) (time.Duration, error) {
	if err := d.check(); err != nil {
		return 0, err
	}
	return d.db.StreamingLag(ctx, s...)
}

func (d *gatedDB) SubscriptionSlot(ctx context.Context, n string) (string, error) {
	if err := d.check(); err != nil {
		return "", err
	}
	return d.db.SubscriptionSlot(ctx, n)
}

// Enqueue is the process's pager: nothing a dead process says is heard.
func (p *process) Enqueue(e notify.Event) {
	if p.dead.Load() {
		return
	}
	w := p.w
	if e.Kind == notify.KindRollbackSucceeded {
		// The plan has just ended (its journal written): it left the
		// replicas it recorded, unless a human scaled while it ran.
		j, d := w.journal(), w.dep()
		w.mu.Lock()
		touched := j != nil && (w.touched[j.RunID] || !w.lastScale.IsZero() && !w.lastScale.Before(j.Started))
		w.mu.Unlock()
		if j != nil && j.State == rollback.RunSucceeded && j.Action.Rolls() && !touched && kube.Replicas(d) != j.Replicas {
			var steps []string
			for _, st := range j.Steps {
				steps = append(steps, st.Name+"="+string(st.State)+" "+st.Detail)
			}
			w.violation("run %s (%s, resumed in event %v) succeeded with %d replicas, recorded %d; event %q; steps:\n%s",
				j.RunID, j.Action, e.Details.RunID, kube.Replicas(d), j.Replicas, e.Summary, strings.Join(steps, "\n"))
		}
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	if img := e.Details.BadVersion; img != "" && e.Kind == notify.KindRollbackStarted {
		if plan.Name(e.Details.Strategy).Rolls() {
			w.judged[strings.TrimPrefix(img, "api=")] = true
		}
	}
	w.events = append(w.events, e)
}

// modelConfig is the drawn configuration of one run of the model.
type modelConfig struct {
	strategy    plan.Name
	action      string // the trigger's
	multiRegion bool
	rampSteps   []int32
}

func (w *world) target(p *process, cfg modelConfig) Target {
	db := &gatedDB{p: p, db: w.db}
	tg := rollback.Target{
		Namespace: ns, Deployment: name, Containers: []string{"api"}, Strategy: cfg.strategy,
		RampSteps: cfg.rampSteps, RampPause: time.Second, RolloutTimeout: time.Second, VerifyWindow: time.Millisecond,
		Database: &rollback.DatabaseSettings{DB: db, Migration: "phase8", PreDeployDump: "/backups/pre.dump",
			ForensicDir: "/forensics", MaxDumpAge: 24 * time.Hour},
		PoolRecovery: rollback.PoolRecoverySettings{Role: "pggit_app", ApplicationName: "pggit-api"},
	}
	if cfg.multiRegion {
		tg.MultiRegion = &rollback.MultiRegionSettings{Secondaries: []rollback.Secondary{{Name: "eu", DB: &gatedDB{p: p, db: w.sec}, Subscription: "sub"}}}
	}
	return Target{Name: modelTarget, Rollback: tg, RestartMemory: 30 * time.Minute, Severity: notify.SeverityCritical}
}

var guardOpts = guard.Options{Cooldown: 30 * time.Minute, MaxRollbacksPerHour: 3, MaxRevisionAge: 2 * time.Hour, MaxResumeAge: 30 * time.Minute}

func (w *world) start(id int, cfg modelConfig) *process {
	p := &process{id: id, w: w}
	g := &gate{p: p, k: kube.New(w.c, kube.Options{PollInterval: time.Millisecond, Now: w.clock}, zap.NewNop())}
	exec := rollback.NewExecutor(g, g, rollback.Options{
		Now: w.clock, Sleep: func(ctx context.Context, _ time.Duration) error { return ctx.Err() }, PollInterval: time.Millisecond,
	}, zap.NewNop())
	p.r = New(exec, g, p, guard.New(guardOpts), Options{Now: w.clock, Triggers: w, DrainTimeout: 5 * time.Second}, zap.NewNop(), nil)
	p.r.SetTargets([]Target{w.target(p, cfg)})
	ctx, cancel := context.WithCancel(context.Background())
	p.stop, p.done = cancel, make(chan struct{})
	go func() { defer close(p.done); p.r.Run(ctx) }()
	return p
}

func (p *process) lead() {
	ctx, cancel := context.WithCancel(context.Background())
	p.endLead, p.leadDone = cancel, make(chan struct{})
	done := p.leadDone
	go func() { defer close(done); p.r.Lead(ctx) }()
	for !p.r.Leading() {
		time.Sleep(100 * time.Microsecond)
	}
}

func (p *process) follow() {
	if p.endLead == nil {
		return
	}
	p.endLead()
	<-p.leadDone
	p.endLead = nil
}

func (p *process) leading() bool { return p.endLead != nil && !p.dead.Load() && !p.lostLease.Load() }

// kill ends the process abruptly: nothing it does from now on reaches the
// world, and its goroutines are reaped.
func (p *process) kill() {
	p.dead.Store(true)
	if p.endLead != nil {
		p.endLead()
		<-p.leadDone
		p.endLead = nil
	}
	p.stop()
	<-p.done
}

func (p *process) settle(t *rapid.T) {
	deadline := time.Now().Add(10 * time.Second)
	for !p.r.idle() {
		if time.Now().After(deadline) {
			t.Fatalf("process %d still busy: %+v", p.id, p.r.Status())
		}
		time.Sleep(100 * time.Microsecond)
	}
}

// model is one run: the world and its processes.
type model struct {
	w     *world
	cfg   modelConfig
	procs []*process
	next  int
}

func newModel(t *rapid.T) *model {
	now := time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)
	w := &world{t: t, now: now, bad: map[string]bool{}, touched: map[string]bool{}, judged: map[string]bool{}}
	w.db = &modelDB{w: w, subOn: true, dumps: map[string]time.Time{"/backups/pre.dump": now.Add(-time.Hour)}}
	w.sec = &modelDB{w: w, subOn: true, dumps: map[string]time.Time{}}
	w.c = kubetest.New(kubetest.NewDeployment(ns, name, 4, map[string]string{"api": "pggit-api:v1.0.0"}))
	w.c.Now = w.clock
	m := &model{w: w, cfg: modelConfig{
		strategy:    rapid.SampledFrom([]plan.Name{plan.Quick, plan.Revert}).Draw(t, "strategy"),
		action:      rapid.SampledFrom([]string{ActionRollback, ActionFullRollback, ActionRestartThenRollback}).Draw(t, "action"),
		multiRegion: rapid.Bool().Draw(t, "multiRegion"),
		rampSteps:   rapid.SampledFrom([][]int32{{2}, {1, 3}}).Draw(t, "rampSteps"),
	}}
	p := m.spawn()
	p.lead()
	return m
}

func (m *model) spawn() *process {
	m.next++
	p := m.w.start(m.next, m.cfg)
	m.procs = append(m.procs, p)
	return p
}

func (m *model) live() []*process {
	var out []*process
	for _, p := range m.procs {
		if !p.dead.Load() {
			out = append(out, p)
		}
	}
	return out
}

func (m *model) leader() *process {
	for _, p := range m.live() {
		if p.leading() {
			return p
		}
	}
	return nil
}

func (m *model) settle(t *rapid.T) {
	for _, p := range m.live() {
		p.settle(t)
	}
}

// tick advances the clock one interval and samples the world the way every
// replica's evaluator would: a running bad version breaches, a good one is
// healthy, no running version is no data.
func (m *model) tick(t *rapid.T) {
	nodata := rapid.IntRange(0, 9).Draw(t, "nodata") == 0
	w := m.w
	d := w.dep()
	w.mu.Lock()
	w.now = w.now.Add(modelInterval)
	breach := !nodata && kube.Replicas(d) > 0 && w.bad[image0(d)]
	gap := !w.trig.lastTick.IsZero() && w.now.Sub(w.trig.lastTick) > 2*modelInterval
	switch {
	case !breach:
		w.trig = modelTrigger{}
	case gap || w.trig.breachSince.IsZero():
		// A gap over maxGap restarts the run, like the window.
		w.trig = modelTrigger{breachSince: w.now}
	}
	w.trig.lastTick = w.now
	var dec *trigger.Decision
	if breach && !w.trig.fired && w.now.Sub(w.trig.breachSince) >= modelFor {
		w.trig.fired = true
		dd := w.decisionLocked()
		dd.Action = m.cfg.action
		dec = &dd
	}
	w.mu.Unlock()
	if dec != nil {
		for _, p := range m.live() {
			p.r.Fire(*dec)
		}
	}
}

func (w *world) deploy(t *rapid.T, bad bool) {
	w.mu.Lock()
	w.deploys++
	img := fmt.Sprintf("pggit-api:v1.%d.0", w.deploys)
	if !bad {
		img = fmt.Sprintf("pggit-api:v1.0.%d", w.deploys)
	}
	w.bad[img] = bad
	applied := bad && w.deploys%2 == 0 // some bad deploys migrate the database
	w.mu.Unlock()
	w.c.Mutate(ns, name, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Containers[0].Image = img
		d.Spec.Template.Spec.Containers[0].Env = nil
	})
	if applied {
		w.db.mu.Lock()
		w.db.applied = true
		w.db.mu.Unlock()
	}
}

func (w *world) humanScale(n int32) {
	w.c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Replicas = &n })
	w.mu.Lock()
	w.lastScale = w.now
	w.mu.Unlock()
	if j := w.journal(); j != nil {
		// A human scaled after the last run began: its end state is the
		// human's too.
		w.mu.Lock()
		w.touched[j.RunID] = true
		w.mu.Unlock()
	}
}

// arm draws an interruption for the leader's next writes.
func (m *model) arm(t *rapid.T) {
	p := m.leader()
	if p == nil {
		return
	}
	k := rapid.IntRange(1, 16).Draw(t, "afterWrite")
	kind := rapid.SampledFrom([]string{"crash", "human-scale", "human-deploy", "lose-lease", "reload"}).Draw(t, "interruption")
	var f func()
	switch kind {
	case "crash":
		f = func() { p.dead.Store(true) }
	case "human-scale":
		n := int32(rapid.IntRange(0, 4).Draw(t, "scale"))
		f = func() { m.w.humanScale(n) }
	case "human-deploy":
		bad := rapid.Bool().Draw(t, "deployBad")
		f = func() { m.w.deploy(t, bad) }
	case "lose-lease":
		end := p.endLead
		f = func() { p.lostLease.Store(true); go end() }
	case "reload":
		f = func() { p.r.SetTargets([]Target{m.w.target(p, m.cfg)}) }
	}
	p.mu.Lock()
	p.armAt, p.arm = p.writes+k, f
	p.mu.Unlock()
}

// ensureLeader makes sure a live process leads, starting one if a crash
// left none: the cluster always elects another leader.
func (m *model) ensureLeader(t *rapid.T) {
	for _, p := range m.procs {
		if p.dead.Load() && p.endLead != nil {
			p.kill()
		}
	}
	for _, p := range m.live() {
		if p.lostLease.Load() {
			// The term ends once its plan reaches a step boundary.
			p.follow()
			p.lostLease.Store(false)
		}
	}
	if m.leader() != nil {
		return
	}
	live := m.live()
	if len(live) == 0 || rapid.Bool().Draw(t, "newProcess") {
		live = append(live, m.spawn())
	}
	rapid.SampledFrom(live).Draw(t, "nextLeader").lead()
}

func (m *model) changeLeader(t *rapid.T) {
	if p := m.leader(); p != nil {
		p.follow()
	}
	m.ensureLeader(t)
}

func (m *model) crashLeader(t *rapid.T) {
	if p := m.leader(); p != nil {
		p.kill()
	}
	m.ensureLeader(t)
}

func (m *model) manual(t *rapid.T) {
	p := m.leader()
	if p == nil {
		return
	}
	action := rapid.SampledFrom([]string{ActionRollback, ActionFullRollback, string(plan.PoolRecovery), ActionPage}).Draw(t, "manualAction")
	_, _ = p.r.Request(context.Background(), modelTarget, action, "a human asks", false)
}

// journal is the world's journal, nil when there is none.
func (w *world) journal() *rollback.Journal {
	exec := rollback.NewExecutor(kube.New(w.c, kube.Options{}, zap.NewNop()), w.c.CoreV1(), rollback.Options{}, zap.NewNop())
	j, err := exec.LastRun(context.Background(), ns, name)
	if err != nil {
		return nil
	}
	return j
}

// check verifies the invariants that hold at every settled point.
func (m *model) check(t *rapid.T) {
	w := m.w
	w.mu.Lock()
	violated := append([]string(nil), w.violated...)
	events := append([]notify.Event(nil), w.events...)
	w.mu.Unlock()
	for _, v := range violated {
		t.Fatalf("invariant violated: %s", v)
	}
	j := w.journal()
	if j == nil {
		return
	}
	// At most one rollback per bad revision, and one incident for it.
	runs := map[string]map[string]bool{}
	incident := map[string]string{}
	for _, r := range j.Runs() {
		if !r.Action.Rolls() || r.BadHash == "" {
			continue
		}
		if runs[r.BadHash] == nil {
			runs[r.BadHash] = map[string]bool{}
		}
		runs[r.BadHash][r.RunID] = true
		if len(runs[r.BadHash]) > 1 {
			t.Fatalf("revision %s rolled back by runs %v", r.BadHash, runs[r.BadHash])
		}
		incident[r.RunID] = r.Incident
	}
	byIncident := map[string]string{} // run → incident its events used
	for _, e := range events {
		id := e.Details.RunID
		if id == "" {
			continue
		}
		if want, ok := incident[id]; ok && want != "" && e.IncidentID != want {
			var trail []string
			for _, x := range events {
				if x.Details.RunID == id || x.IncidentID == e.IncidentID {
					trail = append(trail, fmt.Sprintf("%s %s %q", x.Kind, x.IncidentID, x.Summary))
				}
			}
			t.Fatalf("run %s paged under incident %s and %s:\n%s", id, want, e.IncidentID, strings.Join(trail, "\n"))
		}
		byIncident[id] = e.IncidentID
	}
	// Once no run is unfinished: neither DB_READONLY nor a disabled
	// subscription is left.
	if j.State == rollback.RunRunning || j.State == rollback.RunFailed {
		return
	}
	d := w.dep()
	if hasReadOnly(d) && len(j.LeftBehind) == 0 {
		t.Fatalf("run %s %s and %s is left on the template", j.RunID, j.State, rollback.ReadOnlyEnv)
	}
	w.sec.mu.Lock()
	subOn := w.sec.subOn
	w.sec.mu.Unlock()
	if !subOn && len(j.LeftBehind) == 0 {
		t.Fatalf("run %s %s and the secondary's subscription is left disabled", j.RunID, j.State)
	}
}

// firingHeard: every firing a leader saw ended in an action or a page.
func (m *model) firingHeard(t *rapid.T) {
	w := m.w
	firing := w.Firing()
	if len(firing) == 0 || m.leader() == nil {
		return
	}
	d := firing[0]
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, e := range w.events {
		if !e.Time.Before(d.FirstBreach) && e.Kind != notify.KindBlind {
			return
		}
	}
	t.Fatalf("trigger firing since %s with a leader, and nobody was told", d.FirstBreach)
}

func (m *model) teardown() {
	for _, p := range m.procs {
		if !p.dead.Load() {
			p.follow()
			p.stop()
			<-p.done
		}
	}
}

func runModel(t *rapid.T) {
	m := newModel(t)
	defer m.teardown()
	m.w.deploy(t, true) // the bad deploy the story starts with
	t.Repeat(map[string]func(*rapid.T){
		"tick": func(t *rapid.T) {
			for i := rapid.IntRange(1, 16).Draw(t, "ticks"); i > 0; i-- {
				m.tick(t)
				m.settle(t)
				m.ensureLeader(t)
				m.settle(t)
			}
		},
		"deploy":        func(t *rapid.T) { m.w.deploy(t, rapid.Bool().Draw(t, "bad")) },
		"human-scale":   func(t *rapid.T) { m.w.humanScale(int32(rapid.IntRange(0, 4).Draw(t, "replicas"))) },
		"arm":           m.arm,
		"change-leader": m.changeLeader,
		"crash-leader":  m.crashLeader,
		"manual":        m.manual,
		"reload": func(t *rapid.T) {
			for _, p := range m.live() {
				p.r.SetTargets([]Target{m.w.target(p, m.cfg)})
			}
		},
		"later": func(t *rapid.T) {
			d := time.Duration(rapid.IntRange(1, 40).Draw(t, "minutes")) * time.Minute
			m.w.mu.Lock()
			m.w.now = m.w.now.Add(d)
			m.w.mu.Unlock()
		},
		"": func(t *rapid.T) {
			m.settle(t)
			m.ensureLeader(t)
			m.settle(t)
			m.check(t)
			m.firingHeard(t)
		},
	})
	// The end: a leader, time enough to resume or close what is left.
	m.ensureLeader(t)
	m.settle(t)
	m.check(t)
}

// TestModel runs the model for a bounded number of checks in `make test`;
// ROLLGUARD_SOAK=30m (make soak) runs it until the duration is spent.
func TestModel(t *testing.T) {
	soak := os.Getenv("ROLLGUARD_SOAK")
	if soak == "" {
		rapid.Check(t, runModel)
		return
	}
	d, err := time.ParseDuration(soak)
	if err != nil {
		t.Fatalf("ROLLGUARD_SOAK=%q: %v", soak, err)
	}
	end := time.Now().Add(d)
	rounds := 0
	for time.Now().Before(end) {
		rounds++
		t.Run(fmt.Sprintf("round-%d", rounds), func(t *testing.T) { rapid.Check(t, runModel) })
		if t.Failed() {
			return
		}
	}
	t.Logf("soak: %d rounds of checks in %s without a counterexample", rounds, d)
}
