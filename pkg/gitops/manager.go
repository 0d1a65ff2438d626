package gitops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/api/meta"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/dynamic"
)

// Manager reads, suspends and resumes owners through the dynamic client.
type Manager struct {
	client  dynamic.Interface
	timeout time.Duration
	now     func() time.Time
	log     *zap.Logger
}

// Options tune a Manager.
type Options struct {
	// Timeout bounds each API call (default 10s).
	Timeout time.Duration
	Now     func() time.Time
}

// NewManager returns a Manager.
func NewManager(client dynamic.Interface, o Options, logger *zap.Logger) *Manager {
	if o.Timeout <= 0 {
		o.Timeout = 10 * time.Second
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Manager{client: client, timeout: o.Timeout, now: o.Now, log: logger}
}

// notThere: the object, or its kind, does not exist in the cluster (a
// 404, or no such resource because the CRD is not installed).
func notThere(err error) bool {
	return apierrors.IsNotFound(err) || meta.IsNoMatchError(err)
}

// Detect returns the owner of a Deployment with these labels and
// annotations, or nil when nothing reconciles it. A named owner that does
// not exist (deleted, or its CRD is not installed) reconciles nothing. Any
// other read error is returned: the caller cannot tell, and must not act
// as if it could.
func (m *Manager) Detect(ctx context.Context, labels, annotations map[string]string, argoNamespace string) (*Owner, error) {
	for _, ref := range Refs(labels, annotations, argoNamespace) {
		if ref.Namespace == "" {
			return nil, fmt.Errorf("%s: the Deployment names no namespace for it", ref)
		}
		o, err := m.Get(ctx, ref)
		if notThere(err) {
			m.log.Debug("named owner does not exist", zap.String("owner", ref.String()), zap.Error(err))
			continue
		}
		if err != nil {
			return nil, err
		}
		return o, nil
	}
	return nil, nil
}

// Get reads an owner and its source's revision.
func (m *Manager) Get(ctx context.Context, ref Ref) (*Owner, error) {
	u, o, err := m.getOwner(ctx, ref)
	if err != nil {
		return nil, err
	}
	if ref.Kind == KindKustomization {
		m.fluxSource(ctx, u, o)
	}
	return o, nil
}

func (m *Manager) get(ctx context.Context, ref Ref) (*unstructured.Unstructured, error) {
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	u, err := m.client.Resource(ref.gvr()).Namespace(ref.Namespace).Get(ctx, ref.Name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", ref, err)
	}
	return u, nil
}

// getOwner reads ref, raw and as an Owner.
func (m *Manager) getOwner(ctx context.Context, ref Ref) (*unstructured.Unstructured, *Owner, error) {
	u, err := m.get(ctx, ref)
	if err != nil {
		return nil, nil, err
	}
	o, err := ownerOf(ref, u)
	if err != nil {
		return nil, nil, err
	}
	return u, o, nil
}

// ownerOf reads the fields rollguard needs from the object.
func ownerOf(ref Ref, u *unstructured.Unstructured) (*Owner, error) {
	o := &Owner{Ref: Ref{Tool: ref.Tool, Kind: ref.Kind, Namespace: ref.Namespace, Name: ref.Name},
		Generation: u.GetGeneration(), resourceVersion: u.GetResourceVersion()}
	mark, err := parseMark(u.GetAnnotations()[MarkAnnotation])
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	o.Mark = mark
	o.ObservedGeneration, _, _ = unstructured.NestedInt64(u.Object, "status", "observedGeneration")
	switch ref.Kind {
	case KindKustomization:
		o.Suspended, _, _ = unstructured.NestedBool(u.Object, "spec", "suspend")
		o.Applied, _, _ = unstructured.NestedString(u.Object, "status", "lastAppliedRevision")
		kind, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "kind")
		name, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "name")
		ns, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "namespace")
		if ns == "" {
			ns = ref.Namespace
		}
		if kind != "" {
			o.Source = kind + " " + ns + "/" + name
		}
	case KindHelmRelease:
		o.Suspended, _, _ = unstructured.NestedBool(u.Object, "spec", "suspend")
		// The chart version and values the release applies are in its
		// own spec, which the Kustomization above it takes from Git: a
		// new generation is a new revision.
		o.Revision = fmt.Sprintf("generation %d", u.GetGeneration())
		o.Applied, _, _ = unstructured.NestedString(u.Object, "status", "lastAttemptedRevision")
		kind, _, _ := unstructured.NestedString(u.Object, "spec", "chart", "spec", "sourceRef", "kind")
		name, _, _ := unstructured.NestedString(u.Object, "spec", "chart", "spec", "sourceRef", "name")
		if kind == "" {
			kind, _, _ = unstructured.NestedString(u.Object, "spec", "chartRef", "kind")
			name, _, _ = unstructured.NestedString(u.Object, "spec", "chartRef", "name")
		}
		if kind != "" {
			o.Source = "chart from " + kind + " " + name
		}
	case KindApplication:
		automated, found, _ := unstructured.NestedFieldNoCopy(u.Object, "spec", "syncPolicy", "automated")
		enabled := found && automated != nil
		if a, ok := automated.(map[string]any); ok {
			// Argo CD 3 can keep the policy and switch it off.
			if e, ok := a["enabled"].(bool); ok && !e {
				enabled = false
			}
		}
		o.Suspended = !enabled
		o.Revision, _, _ = unstructured.NestedString(u.Object, "status", "sync", "revision")
		if st, _, _ := unstructured.NestedString(u.Object, "status", "sync", "status"); st == "Synced" {
			o.Applied = o.Revision
		}
		repo, _, _ := unstructured.NestedString(u.Object, "spec", "source", "repoURL")
		path, _, _ := unstructured.NestedString(u.Object, "spec", "source", "path")
		rev, _, _ := unstructured.NestedString(u.Object, "spec", "source", "targetRevision")
		if repo != "" {
			o.Source = repo
			if path != "" {
				o.Source += " path " + path
			}
			if rev != "" {
				o.Source += " @ " + rev
			}
		} else if srcs, found, _ := unstructured.NestedSlice(u.Object, "spec", "sources"); found {
			o.Source = fmt.Sprintf("%d sources", len(srcs))
		}
	}
	return o, nil
}

// fluxSource fills a Kustomization's source revision from its source
// object. The source keeps fetching while the Kustomization is suspended,
// so its revision is where Git is now. An unreadable source leaves the
// revision empty (logged): the rollback does not depend on it, only the
// lift-on-new-revision does, and that never lifts on an empty revision.
func (m *Manager) fluxSource(ctx context.Context, u *unstructured.Unstructured, o *Owner) {
	kind, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "kind")
	name, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "name")
	ns, _, _ := unstructured.NestedString(u.Object, "spec", "sourceRef", "namespace")
	if ns == "" {
		ns = o.Namespace
	}
	gvr, ok := sourceGVRs[kind]
	if !ok || name == "" {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	src, err := m.client.Resource(gvr).Namespace(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		m.log.Warn("source of a Kustomization unreadable", zap.String("owner", o.String()), zap.String("source", kind+" "+ns+"/"+name), zap.Error(err))
		return
	}
	o.Revision, _, _ = unstructured.NestedString(src.Object, "status", "artifact", "revision")
	if url, _, _ := unstructured.NestedString(src.Object, "spec", "url"); url != "" {
		o.Source += " (" + url + ")"
	}
}

// Suspend turns the owner's reconciliation off and marks it, unless it is
// off already: a suspension somebody else made is left as it is (and is
// not rollguard's to lift); rollguard's own is re-marked with mark (the
// newest run). It returns the owner as written, and whether it wrote.
// The write carries the resourceVersion read, so what the mark keeps as
// "previous" is exactly what the suspension replaced.
func (m *Manager) Suspend(ctx context.Context, ref Ref, mark Mark) (*Owner, bool, error) {
	return retryChanged(ctx, func() (*Owner, bool, error) { return m.suspend(ctx, ref, mark) })
}

// retryChanged re-reads and retries a write that lost to another writer:
// the controllers write their objects' status all the time, and each
// attempt reads afresh what the write replaces.
func retryChanged(ctx context.Context, f func() (*Owner, bool, error)) (*Owner, bool, error) {
	for attempt := 1; ; attempt++ {
		o, wrote, err := f()
		if !errors.Is(err, ErrChanged) || attempt == 5 || ctx.Err() != nil {
			return o, wrote, err
		}
	}
}

func (m *Manager) suspend(ctx context.Context, ref Ref, mark Mark) (*Owner, bool, error) {
	u, o, err := m.getOwner(ctx, ref)
	if err != nil {
		return nil, false, err
	}
	if o.Suspended && o.Mark == nil {
		return o, false, nil
	}
	mark.State = StateSuspended
	spec := map[string]any{}
	switch {
	case o.Mark != nil:
		// Ours already (suspended, or lifted and now suspended again):
		// what it replaced is the first suspension's.
		mark.Previous = o.Mark.Previous
		if o.Mark.State == StateSuspended && o.Suspended {
			break
		}
		spec = suspendSpec(ref.Kind)
	default:
		mark.Previous, err = previous(ref.Kind, u)
		if err != nil {
			return nil, false, err
		}
		spec = suspendSpec(ref.Kind)
	}
	if mark.Since.IsZero() {
		mark.Since = m.now().UTC()
	}
	out, err := m.patch(ctx, ref, u.GetResourceVersion(), spec, &mark)
	if err != nil {
		return nil, false, err
	}
	o, err = ownerOf(ref, out)
	if err != nil {
		return nil, false, err
	}
	if ref.Kind == KindHelmRelease && o.Mark != nil && o.Mark.Generation == 0 {
		// The suspension itself is a new generation: the release's next
		// revision is any generation after this one.
		o.Mark.Generation = o.Generation
		if out, err = m.patch(ctx, ref, out.GetResourceVersion(), nil, o.Mark); err != nil {
			return nil, true, err
		}
		if o, err = ownerOf(ref, out); err != nil {
			return nil, true, err
		}
	}
	m.log.Info("gitops reconciliation suspended", zap.String("owner", ref.String()), zap.String("target", mark.Target), zap.String("run", mark.Run))
	return o, true, nil
}

// Lift puts back what rollguard's suspension replaced. keep leaves the
// mark in state lifted (the source moved on: rollguard watches what the
// new revision brings); otherwise the mark is removed and the object is
// as it was before the suspension. A suspension without rollguard's mark
// is not lifted (ErrNotMarked).
func (m *Manager) Lift(ctx context.Context, ref Ref, keep *Mark) (*Owner, error) {
	o, _, err := retryChanged(ctx, func() (*Owner, bool, error) {
		o, err := m.lift(ctx, ref, keep)
		return o, true, err
	})
	return o, err
}

func (m *Manager) lift(ctx context.Context, ref Ref, keep *Mark) (*Owner, error) {
	u, o, err := m.getOwner(ctx, ref)
	if err != nil {
		return nil, err
	}
	if o.Mark == nil {
		return o, fmt.Errorf("%s: %w", ref, ErrNotMarked)
	}
	spec, err := restoreSpec(ref.Kind, o.Mark.Previous)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ref, err)
	}
	if o.Mark.State != StateSuspended {
		spec = nil // already lifted: only the mark changes
	}
	var mark *Mark
	if keep != nil {
		k := *keep
		k.State = StateLifted
		mark = &k
	}
	out, err := m.patch(ctx, ref, u.GetResourceVersion(), spec, mark)
	if err != nil {
		return nil, err
	}
	m.log.Info("gitops reconciliation resumed", zap.String("owner", ref.String()), zap.Bool("watching", keep != nil))
	return ownerOf(ref, out)
}

// Unmark removes rollguard's mark and nothing else.
func (m *Manager) Unmark(ctx context.Context, ref Ref) error {
	_, _, err := retryChanged(ctx, func() (*Owner, bool, error) { return nil, true, m.unmark(ctx, ref) })
	return err
}

func (m *Manager) unmark(ctx context.Context, ref Ref) error {
	u, err := m.get(ctx, ref)
	if err != nil {
		return err
	}
	if _, ok := u.GetAnnotations()[MarkAnnotation]; !ok {
		return nil
	}
	_, err = m.patch(ctx, ref, u.GetResourceVersion(), nil, nil)
	return err
}

func suspendSpec(kind string) map[string]any {
	if kind == KindApplication {
		return map[string]any{"syncPolicy": map[string]any{"automated": nil}}
	}
	return map[string]any{"suspend": true}
}

// previous is the value the suspension replaces, as JSON (null: absent).
func previous(kind string, u *unstructured.Unstructured) (json.RawMessage, error) {
	var v any
	var found bool
	if kind == KindApplication {
		v, found, _ = unstructured.NestedFieldNoCopy(u.Object, "spec", "syncPolicy", "automated")
	} else {
		v, found, _ = unstructured.NestedFieldNoCopy(u.Object, "spec", "suspend")
	}
	if !found {
		v = nil
	}
	b, err := json.Marshal(v)
	if err != nil {
		return nil, fmt.Errorf("encode the value the suspension replaces: %w", err)
	}
	return b, nil
}

func restoreSpec(kind string, prev json.RawMessage) (map[string]any, error) {
	var v any
	if len(prev) > 0 {
		if err := json.Unmarshal(prev, &v); err != nil {
			return nil, fmt.Errorf("mark's previous value: %w", err)
		}
	}
	if kind == KindApplication {
		// automated was removed whole: the merge patch puts the map back
		// as it was (null leaves it absent).
		return map[string]any{"syncPolicy": map[string]any{"automated": v}}, nil
	}
	return map[string]any{"suspend": v}, nil
}

// patch writes spec fields and the mark (nil removes it) in one merge
// patch fenced by resourceVersion.
func (m *Manager) patch(ctx context.Context, ref Ref, rv string, spec map[string]any, mark *Mark) (*unstructured.Unstructured, error) {
	var markVal any
	if mark != nil {
		b, err := json.Marshal(mark)
		if err != nil {
			return nil, fmt.Errorf("encode mark of %s: %w", ref, err)
		}
		markVal = string(b)
	}
	body := map[string]any{"metadata": map[string]any{
		"resourceVersion": rv,
		"annotations":     map[string]any{MarkAnnotation: markVal},
	}}
	if len(spec) > 0 {
		body["spec"] = spec
	}
	data, err := json.Marshal(body)
	if err != nil {
		return nil, fmt.Errorf("encode patch of %s: %w", ref, err)
	}
	ctx, cancel := context.WithTimeout(ctx, m.timeout)
	defer cancel()
	out, err := m.client.Resource(ref.gvr()).Namespace(ref.Namespace).Patch(ctx, ref.Name, types.MergePatchType, data, metav1.PatchOptions{FieldManager: FieldManager})
	if apierrors.IsConflict(err) {
		return nil, fmt.Errorf("patch %s: %w", ref, ErrChanged)
	}
	if err != nil {
		return nil, fmt.Errorf("patch %s: %w", ref, err)
	}
	return out, nil
}

// IsNotThere reports whether err means the owner (or its kind) does not
// exist.
func IsNotThere(err error) bool {
	var se apierrors.APIStatus
	return notThere(err) || (errors.As(err, &se) && se.Status().Code == 404)
}
