package rollback_test

import (
	"context"
	"fmt"
	"io/fs"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
	"github.com/rollguard/rollguard/pkg/rollback"
)

const (
	ns, name = "production", "pggit-api"
	good     = "pggit-api:v1.0.3"
	bad      = "pggit-api:v1.1.0"
)

// fakeDB records calls; the migration counts as applied until a restore.
type fakeDB struct {
	mu       sync.Mutex
	calls    []string
	applied  bool
	errs     map[string]error
	panics   map[string]bool
	lags     []time.Duration
	restores int
	// onCall, if set, sees each call before it is answered.
	onCall func(call string)
	// dumps are the archives on disk and when each was taken.
	dumps map[string]time.Time
}

// preDeployTaken is when the fixture's pre-deploy dump was taken: an hour
// before fixedNow, before the bad revision was deployed.
var preDeployTaken = fixedNow().Add(-time.Hour)

func newFakeDB() *fakeDB {
	return &fakeDB{applied: true, errs: map[string]error{}, panics: map[string]bool{},
		dumps: map[string]time.Time{"/backups/pre.dump": preDeployTaken}}
}

func (f *fakeDB) record(call string) error {
	if f.onCall != nil {
		f.onCall(call)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.calls = append(f.calls, call)
	if f.panics[call] {
		delete(f.panics, call)
		panic("boom in " + call)
	}
	if err, ok := f.errs[call]; ok {
		delete(f.errs, call)
		return err
	}
	return nil
}

func (f *fakeDB) Calls() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.calls...)
}

func (f *fakeDB) MigrationApplied(_ context.Context, m string) (bool, error) {
	if err := f.record("MigrationApplied"); err != nil {
		return false, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.applied, nil
}

// Dump refuses an existing path, as the real one does.
func (f *fakeDB) Dump(_ context.Context, path string) (int64, error) {
	if err := f.record("Dump " + path); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.dumps[path]; ok {
		return 0, fmt.Errorf("dump to %s: dump file already exists", path)
	}
	f.dumps[path] = fixedNow()
	return 1234, nil
}
func (f *fakeDB) InspectDump(_ context.Context, path string) (time.Time, int64, error) {
	if err := f.record("Inspect " + path); err != nil {
		return time.Time{}, 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	at, ok := f.dumps[path]
	if !ok {
		return time.Time{}, 0, fmt.Errorf("inspect %s: %w", path, fs.ErrNotExist)
	}
	return at, 1234, nil
}
func (f *fakeDB) Restore(_ context.Context, path string) error {
	if err := f.record("Restore"); err != nil {
		return err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.restores++
	f.applied = false
	return nil
}
func (f *fakeDB) Ping(context.Context) error { return f.record("Ping") }
func (f *fakeDB) CountRows(_ context.Context, tables []string) (map[string]int64, error) {
	m := map[string]int64{}
	for i, t := range tables {
		m[t] = int64(10 * (i + 1))
	}
	return m, f.record("CountRows")
}
func (f *fakeDB) TerminateIdleInTransaction(_ context.Context, role, app string, older time.Duration) (int, error) {
	return 3, f.record(fmt.Sprintf("Terminate %s %s %s", role, app, older))
}
func (f *fakeDB) DisableSubscription(_ context.Context, n string) error {
	return f.record("Disable " + n)
}
func (f *fakeDB) EnableSubscription(_ context.Context, n string) error {
	return f.record("Enable " + n)
}
func (f *fakeDB) ResyncSubscription(_ context.Context, n string) error {
	return f.record("Resync " + n)
}
func (f *fakeDB) SubscriptionSlot(_ context.Context, name string) (string, error) {
	return "slot_" + name, f.record("Slot " + name)
}
func (f *fakeDB) StreamingLag(_ context.Context, slots ...string) (time.Duration, error) {
	call := "Lag"
	if len(slots) > 0 {
		call += " " + strings.Join(slots, ",")
	}
	if err := f.record(call); err != nil {
		return 0, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.lags) == 0 {
		return 0, nil
	}
	l := f.lags[0]
	if len(f.lags) > 1 {
		f.lags = f.lags[1:]
	}
	return l, nil
}

// recorder is an Observer keeping every call.
type recorder struct {
	mu     sync.Mutex
	events []string
	facts  []rollback.Facts
	hook   func(kind string, f rollback.Facts)
}

func (r *recorder) add(kind string, f rollback.Facts) {
	r.mu.Lock()
	s := kind
	if f.Step != "" {
		s += " " + f.Step
	}
	if f.Skipped {
		s += " (skipped)"
	}
	if f.Err != nil {
		s += " error"
	}
	r.events = append(r.events, s)
	r.facts = append(r.facts, f)
	hook := r.hook
	r.mu.Unlock()
	if hook != nil {
		hook(kind, f)
	}
}
func (r *recorder) PlanStarted(f rollback.Facts)  { r.add("plan-started", f) }
func (r *recorder) StepStarted(f rollback.Facts)  { r.add("step-started", f) }
func (r *recorder) StepFinished(f rollback.Facts) { r.add("step-finished", f) }
func (r *recorder) PlanFinished(f rollback.Facts) { r.add("plan-finished", f) }

// fixture: a Deployment rolled from good to bad, 4 replicas.
func newCluster(t *testing.T) *kubetest.Cluster {
	t.Helper()
	c := kubetest.New(kubetest.NewDeployment(ns, name, 4, map[string]string{"api": good}))
	// The bad revision was deployed half an hour before fixedNow, after the
	// pre-deploy dump (preDeployTaken).
	c.Now = func() time.Time { return fixedNow().Add(-30 * time.Minute) }
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = bad })
	c.ClearActions()
	return c
}

func newExecutor(c *kubetest.Cluster, obs rollback.Observer) *rollback.Executor {
	d := kube.New(c, kube.Options{PollInterval: time.Millisecond, Now: fixedNow}, zap.NewNop())
	return rollback.NewExecutor(d, c.CoreV1(), rollback.Options{
		Observer:     obs,
		Now:          fixedNow,
		Sleep:        func(ctx context.Context, _ time.Duration) error { return ctx.Err() },
		PollInterval: time.Second,
	}, zap.NewNop())
}

func fixedNow() time.Time { return time.Date(2026, 11, 25, 14, 36, 0, 0, time.UTC) }

func target() rollback.Target {
	return rollback.Target{
		Namespace: ns, Deployment: name, Containers: []string{"api"},
		RampSteps: []int32{2}, RampPause: time.Second, RolloutTimeout: 2 * time.Second, VerifyWindow: 3 * time.Second,
	}
}

func dbTarget(db *fakeDB) rollback.Target {
	t := target()
	t.Database = &rollback.DatabaseSettings{DB: db, Migration: "phase8_analytics_dashboard", PreDeployDump: "/backups/pre.dump",
		ForensicDir: "/backups/forensics", Tables: []string{"pggit.alert_delivery_queue"}}
	return t
}

func image(c *kubetest.Cluster) string {
	return c.Deployment(ns, name).Spec.Template.Spec.Containers[0].Image
}

func replicas(c *kubetest.Cluster) int32 { return *c.Deployment(ns, name).Spec.Replicas }

// scales lists the replicas written through the scale subresource.
func scales(c *kubetest.Cluster) []int32 {
	var out []int32
	for _, a := range c.Actions() {
		if a.GetVerb() == "update" && a.GetSubresource() == "scale" {
			out = append(out, scaleReplicas(a))
		}
	}
	return out
}
