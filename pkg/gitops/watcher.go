package gitops

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
)

// Deployments reads Deployments; *kube.Deployments implements it.
type Deployments interface {
	Get(ctx context.Context, ns, name string) (*appsv1.Deployment, error)
}

// Pager takes notifications without blocking; *notify.Queue implements it.
type Pager interface {
	Enqueue(e notify.Event)
}

// WatchTarget is one configured target as the watcher needs it.
type WatchTarget struct {
	Name, Namespace, Deployment string
	Mode                        string
	ArgoNamespace               string
	Cluster                     string
}

// WatchOptions tune the Watcher.
type WatchOptions struct {
	// Interval between two looks at every target (default 10s).
	Interval time.Duration
	// IsLeader: only the leader lifts or suspends; every replica reads, so
	// status is right everywhere.
	IsLeader func() bool
	Now      func() time.Time
	// Probation is how long, after lifting because the source moved on,
	// rollguard waits for the owner to apply the new revision before it
	// stops watching (default 1h).
	Probation time.Duration
}

// Status is what the status API shows about a target's owner.
type Status struct {
	Owner    string `json:"owner,omitempty"`
	Mode     string `json:"mode"`
	Source   string `json:"source,omitempty"`
	Revision string `json:"revision,omitempty"`
	// Suspended: the owner's reconciliation is off now (anyone's doing);
	// ByRollguard: rollguard's suspension.
	Suspended   bool       `json:"suspended,omitempty"`
	ByRollguard bool       `json:"byRollguard,omitempty"`
	Since       *time.Time `json:"since,omitempty"`
	Run         string     `json:"run,omitempty"`
	// Watching is set after rollguard lifted its suspension because Git
	// moved on: the revision it waits to see applied.
	Watching string    `json:"watching,omitempty"`
	Error    string    `json:"error,omitempty"`
	Checked  time.Time `json:"checked,omitzero"`
}

// Watcher keeps rollguard's suspensions visible and lifts them: by a
// human (Resume) or by itself once the source's revision moves past the
// one that deployed the bad version. After such a lift it watches the new
// revision: if it brings the bad template back, it suspends again once and
// pages instead of rolling back again.
type Watcher struct {
	m     *Manager
	deps  Deployments
	pager Pager
	opts  WatchOptions
	log   *zap.Logger
	gauge *prometheus.GaugeVec

	mu      sync.Mutex
	targets []WatchTarget
	status  map[string]Status
}

// NewWatcher returns a Watcher; reg may be nil.
func NewWatcher(m *Manager, deps Deployments, pager Pager, o WatchOptions, logger *zap.Logger, reg prometheus.Registerer) *Watcher {
	if o.Interval <= 0 {
		o.Interval = 10 * time.Second
	}
	if o.IsLeader == nil {
		o.IsLeader = func() bool { return true }
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Probation <= 0 {
		o.Probation = time.Hour
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	w := &Watcher{m: m, deps: deps, pager: pager, opts: o, log: logger, status: map[string]Status{},
		gauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "gitops_suspended",
			Help: "1 while rollguard holds the reconciliation of the target's GitOps owner (Flux Kustomization or HelmRelease, Argo CD Application) suspended.",
		}, []string{"target"})}
	if reg != nil {
		reg.MustRegister(w.gauge)
	}
	return w
}

// SetTargets installs the targets (hot reload).
func (w *Watcher) SetTargets(ts []WatchTarget) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.targets = append([]WatchTarget(nil), ts...)
	keep := map[string]bool{}
	for _, t := range ts {
		keep[t.Name] = true
	}
	for name := range w.status {
		if !keep[name] {
			delete(w.status, name)
			w.gauge.DeleteLabelValues(name)
		}
	}
}

// Status returns the last look at a target's owner.
func (w *Watcher) Status(target string) (Status, bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	s, ok := w.status[target]
	return s, ok
}

// Run looks at every target each interval until ctx is done.
func (w *Watcher) Run(ctx context.Context) {
	t := time.NewTicker(w.opts.Interval)
	defer t.Stop()
	for {
		w.Tick(ctx)
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// Tick looks at every target once.
func (w *Watcher) Tick(ctx context.Context) {
	w.mu.Lock()
	ts := append([]WatchTarget(nil), w.targets...)
	w.mu.Unlock()
	sort.Slice(ts, func(i, j int) bool { return ts[i].Name < ts[j].Name })
	for _, t := range ts {
		if ctx.Err() != nil {
			return
		}
		st := w.look(ctx, t)
		st.Checked = w.opts.Now()
		w.mu.Lock()
		w.status[t.Name] = st
		w.mu.Unlock()
		v := 0.0
		if st.ByRollguard {
			v = 1
		}
		w.gauge.WithLabelValues(t.Name).Set(v)
	}
}

func (w *Watcher) look(ctx context.Context, t WatchTarget) Status {
	st := Status{Mode: t.Mode}
	dep, o, err := w.owner(ctx, t)
	if err != nil {
		st.Error = err.Error()
		w.log.Debug("gitops owner unreadable", zap.String("target", t.Name), zap.Error(err))
		// Keep showing a suspension seen before: unreadable is not lifted.
		if prev, ok := w.Status(t.Name); ok {
			prev.Error = st.Error
			return prev
		}
		return st
	}
	if o == nil {
		return st
	}
	if w.opts.IsLeader() {
		if o, err = w.act(ctx, t, dep, o); err != nil {
			st.Error = err.Error()
			w.log.Warn("gitops watch action failed; retrying next interval", zap.String("target", t.Name), zap.String("owner", o.String()), zap.Error(err))
		}
	}
	return statusOf(st, o, t.Name)
}

func statusOf(st Status, o *Owner, target string) Status {
	st.Owner, st.Source, st.Revision, st.Suspended = o.String(), o.Source, o.Revision, o.Suspended
	if m := o.Mark; m != nil && m.Target == target {
		st.ByRollguard = o.SuspendedByRollguard()
		st.Run = m.Run
		if st.ByRollguard {
			since := m.Since
			st.Since = &since
		}
		if m.State == StateLifted {
			st.Watching = m.LiftedRevision
		}
	}
	return st
}

func (w *Watcher) owner(ctx context.Context, t WatchTarget) (*appsv1.Deployment, *Owner, error) {
	dep, err := w.deps.Get(ctx, t.Namespace, t.Deployment)
	if err != nil {
		return nil, nil, err
	}
	o, err := w.m.Detect(ctx, dep.Labels, dep.Annotations, t.ArgoNamespace)
	return dep, o, err
}

// movedOn reports whether the source has a revision past the one the
// suspension was made at. An unknown revision never counts.
func movedOn(o *Owner) bool {
	m := o.Mark
	if o.Kind == KindHelmRelease {
		return m.Generation > 0 && o.Generation > m.Generation
	}
	return o.Revision != "" && m.Revision != "" && o.Revision != m.Revision
}

// applied reports whether the owner has applied the revision it was
// lifted for.
func applied(o *Owner) bool {
	m := o.Mark
	if o.Kind == KindHelmRelease {
		return o.ObservedGeneration >= o.Generation
	}
	return m.LiftedRevision != "" && o.Applied == m.LiftedRevision
}

// act lifts or re-suspends rollguard's own suspension of t's owner.
func (w *Watcher) act(ctx context.Context, t WatchTarget, dep *appsv1.Deployment, o *Owner) (*Owner, error) {
	m := o.Mark
	if m == nil || m.Target != t.Name {
		return o, nil
	}
	now := w.opts.Now().UTC()
	switch m.State {
	case StateSuspended:
		if !o.Suspended || !movedOn(o) {
			return o, nil
		}
		keep := *m
		keep.LiftedRevision, keep.LiftedAt = o.Revision, &now
		lifted, err := w.m.Lift(ctx, o.Ref, &keep)
		if err != nil {
			return o, err
		}
		lifted.Revision, lifted.Source = o.Revision, o.Source
		w.page(t, m, notify.KindDetected, notify.SeverityInfo,
			fmt.Sprintf("%s: Git moved from %s to %s: rollguard lifted its suspension of %s; if %s brings %s back, it suspends again once and pages",
				t.Name, orUnknown(m.Revision), o.Revision, o.String(), o.Revision, m.Bad))
		return lifted, nil
	case StateLifted:
		if !applied(o) {
			if m.LiftedAt != nil && now.Sub(*m.LiftedAt) > w.opts.Probation {
				w.log.Info("gitops owner did not apply the new revision in time; watch ended", zap.String("target", t.Name), zap.String("owner", o.String()))
				return o, w.m.Unmark(ctx, o.Ref)
			}
			return o, nil
		}
		running := kube.FormatImages(kube.Images(&dep.Spec.Template))
		if m.Bad == "" || running != m.Bad {
			w.log.Info("gitops owner applied a new revision without the bad version; watch ended", zap.String("target", t.Name),
				zap.String("owner", o.String()), zap.String("revision", m.LiftedRevision), zap.String("images", running))
			return o, w.m.Unmark(ctx, o.Ref)
		}
		if m.Resuspended >= 1 {
			err := w.m.Unmark(ctx, o.Ref)
			w.page(t, m, notify.KindCannotRollback, notify.SeverityCritical,
				fmt.Sprintf("%s: revision %s of %s brings %s back again: rollguard does not suspend it a second time nor roll back again; fix Git",
					t.Name, m.LiftedRevision, o.String(), m.Bad))
			return o, err
		}
		again := *m
		again.Resuspended++
		again.Revision, again.LiftedRevision, again.LiftedAt, again.Since = m.LiftedRevision, "", nil, now
		so, _, err := w.m.Suspend(ctx, o.Ref, again)
		if err != nil {
			return o, err
		}
		so.Revision, so.Source = o.Revision, o.Source
		w.page(t, m, notify.KindCannotRollback, notify.SeverityCritical,
			fmt.Sprintf("%s: revision %s of %s brings %s back: rollguard suspended it again (once) and does not roll back again; revert it in Git, then `rollguard resume-gitops --target %s`",
				t.Name, m.LiftedRevision, o.String(), m.Bad, t.Name))
		return so, nil
	}
	return o, nil
}

// ErrUnknownTarget: Resume names no watched target.
var ErrUnknownTarget = errors.New("unknown target")

// Resume lifts rollguard's suspension of target's owner: a human says Git
// is fixed. A suspension rollguard did not make is not lifted.
func (w *Watcher) Resume(ctx context.Context, target, reason string) (string, error) {
	var t *WatchTarget
	w.mu.Lock()
	for i := range w.targets {
		if w.targets[i].Name == target {
			tt := w.targets[i]
			t = &tt
		}
	}
	w.mu.Unlock()
	if t == nil {
		return "", fmt.Errorf("target %q: %w", target, ErrUnknownTarget)
	}
	_, o, err := w.owner(ctx, *t)
	if err != nil {
		return "", err
	}
	if o == nil {
		return "", fmt.Errorf("target %s: no Flux or Argo CD object reconciles deployment %s/%s: %w", target, t.Namespace, t.Deployment, ErrNotMarked)
	}
	if o.Mark == nil || o.Mark.Target != target {
		return "", fmt.Errorf("target %s: %s: %w", target, o.String(), ErrNotMarked)
	}
	m := *o.Mark
	lifted, err := w.m.Lift(ctx, o.Ref, nil)
	if err != nil {
		return "", err
	}
	w.page(*t, &m, notify.KindDetected, notify.SeverityInfo,
		fmt.Sprintf("%s: a human lifted rollguard's suspension of %s (%s)", target, o.String(), reason))
	w.mu.Lock()
	w.status[target] = statusOf(Status{Mode: t.Mode, Checked: w.opts.Now()}, lifted, target)
	w.mu.Unlock()
	w.gauge.WithLabelValues(target).Set(0)
	return fmt.Sprintf("%s: reconciliation of %s resumed", target, o.String()), nil
}

func (w *Watcher) page(t WatchTarget, m *Mark, kind notify.Kind, sev notify.Severity, summary string) {
	w.log.Info("gitops", zap.String("target", t.Name), zap.String("summary", summary))
	if w.pager == nil {
		return
	}
	nt := notify.Target{Cluster: t.Cluster, Namespace: t.Namespace, Deployment: t.Deployment}
	rev := m.BadHash
	if rev == "" {
		rev = "gitops"
	}
	w.pager.Enqueue(notify.Event{
		Kind: kind, Time: w.opts.Now(), Target: nt, IncidentID: notify.IncidentID(nt, rev), Severity: sev, Summary: summary,
		Details: notify.Details{Reason: summary, BadVersion: m.Bad, GitOps: summary},
	})
}

func orUnknown(s string) string {
	if s == "" {
		return "an unknown revision"
	}
	return s
}
