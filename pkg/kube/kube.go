// Package kube holds the few Deployment operations rollguard's rollback
// plans need, over client-go: read a Deployment and its ReplicaSet history,
// scale through the scale subresource, put a pod template back, wait for a
// rollout by kubectl's own criteria, and record Events.
//
// Every write is fenced: it carries the resourceVersion of the object it was
// computed from, and before each attempt the live object is compared with
// what rollguard last read or wrote (Expect). A difference means someone
// else changed the Deployment while a plan was running; that is reported as
// ErrConcurrentChange and never overwritten. A 409 caused only by the
// Deployment controller writing status is retried.
package kube

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/clock"
)

// Annotations and labels rollguard reads or writes.
const (
	// RevisionAnnotation is the Deployment controller's revision number on
	// ReplicaSets (and on the Deployment itself).
	RevisionAnnotation = "deployment.kubernetes.io/revision"
	// PodTemplateHashLabel is added by the Deployment controller to the
	// template of each ReplicaSet it owns; it must be removed before a
	// ReplicaSet's template is written back to the Deployment.
	PodTemplateHashLabel = "pod-template-hash"
	// FreezeAnnotation on a Deployment stops every automated action.
	FreezeAnnotation = "rollguard.io/freeze"
	// RestartedAtAnnotation on the pod template is what `kubectl rollout
	// restart` sets; changing it rolls every Pod.
	RestartedAtAnnotation = "kubectl.kubernetes.io/restartedAt"
	// timedOutReason is the Progressing condition's reason once
	// progressDeadlineSeconds passed (kubectl: deploymentutil.TimedOutReason).
	timedOutReason = "ProgressDeadlineExceeded"
)

// Sentinel errors for branching.
var (
	// ErrConcurrentChange: the live Deployment differs from what rollguard
	// last read or wrote, so somebody else is changing it.
	ErrConcurrentChange = errors.New("concurrent change")
	// ErrProgressDeadline: the rollout exceeded progressDeadlineSeconds.
	ErrProgressDeadline = errors.New("progress deadline exceeded")
	// ErrRolloutTimeout: the rollout did not complete within the wait.
	ErrRolloutTimeout = errors.New("rollout not complete")
	// ErrTooManyConflicts: status writes kept racing every attempt.
	ErrTooManyConflicts = errors.New("too many conflicts")
)

// ConcurrentChangeError names the object and field that someone else
// changed. It matches ErrConcurrentChange with errors.Is.
type ConcurrentChangeError struct {
	Namespace, Name string
	// Field is the changed field: spec.template, spec.replicas, spec.paused,
	// spec.strategy... or metadata.uid (the Deployment was deleted and
	// recreated).
	Field string
	// Detail, if set, says what the field is now against what was expected.
	Detail string
}

func (e *ConcurrentChangeError) Error() string {
	if e.Detail != "" {
		return fmt.Sprintf("deployment %s/%s: %s changed by someone else (%s): %v", e.Namespace, e.Name, e.Field, e.Detail, ErrConcurrentChange)
	}
	return fmt.Sprintf("deployment %s/%s: %s changed by someone else: %v", e.Namespace, e.Name, e.Field, ErrConcurrentChange)
}

// Is makes errors.Is(err, ErrConcurrentChange) true.
func (e *ConcurrentChangeError) Is(target error) bool { return target == ErrConcurrentChange }

// Expect is what rollguard last read or wrote on a Deployment; nil fields
// are not checked. A write first compares the live object with it.
type Expect struct {
	UID      string
	Template *corev1.PodTemplateSpec
	Replicas *int32
}

// Options tune Deployments. Zero values take the defaults.
type Options struct {
	// Timeout bounds each API call (default 10s).
	Timeout time.Duration
	// PollInterval is how often WaitRollout re-reads (default 100ms: a
	// rollback waits for a rollout up to three times, and each wait ends on
	// average half an interval after the rollout did; make bench measured
	// 500ms as most of quick's overhead over the runbook's kubectl script).
	PollInterval time.Duration
	// MaxAttempts bounds the retries after a 409 that was not a concurrent
	// change (default 10).
	MaxAttempts int
	// Component is the Events' source component (default "rollguard").
	Component string
	// Instance is the Events' reporting instance (e.g. the Pod name).
	Instance string
	// Now is the clock (default time.Now).
	Now func() time.Time
}

// Deployments performs Deployment operations through a clientset.
type Deployments struct {
	client kubernetes.Interface
	opts   Options
	logger *zap.Logger
}

// New returns Deployments over client.
func New(client kubernetes.Interface, opts Options, logger *zap.Logger) *Deployments {
	if opts.Timeout <= 0 {
		opts.Timeout = 10 * time.Second
	}
	if opts.PollInterval <= 0 {
		opts.PollInterval = 100 * time.Millisecond
	}
	if opts.MaxAttempts <= 0 {
		opts.MaxAttempts = 10
	}
	if opts.Component == "" {
		opts.Component = "rollguard"
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Deployments{client: client, opts: opts, logger: logger}
}

// Get reads a Deployment.
func (d *Deployments) Get(ctx context.Context, ns, name string) (*appsv1.Deployment, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	dep, err := d.client.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get deployment %s/%s: %w", ns, name, err)
	}
	return dep, nil
}

// Pods counts the Pods matching dep's selector that have not terminated
// (terminating ones count: they may still write). Before a database step
// this is the ground truth the Deployment's status can lag behind: a Pod
// a human or another controller started is counted too.
func (d *Deployments) Pods(ctx context.Context, dep *appsv1.Deployment) (int, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
	if err != nil {
		return 0, fmt.Errorf("deployment %s/%s: selector: %w", dep.Namespace, dep.Name, err)
	}
	if sel.Empty() {
		return 0, fmt.Errorf("deployment %s/%s: empty selector matches every pod", dep.Namespace, dep.Name)
	}
	pods, err := d.client.CoreV1().Pods(dep.Namespace).List(ctx, metav1.ListOptions{LabelSelector: sel.String()})
	if err != nil {
		return 0, fmt.Errorf("list pods of deployment %s/%s: %w", dep.Namespace, dep.Name, err)
	}
	n := 0
	for i := range pods.Items {
		if p := pods.Items[i].Status.Phase; p != corev1.PodSucceeded && p != corev1.PodFailed {
			n++
		}
	}
	return n, nil
}

// ReplicaSets lists the ReplicaSets owned (by ownerReferences UID) by dep,
// sorted by ascending deployment.kubernetes.io/revision; ReplicaSets without
// a readable revision sort first as revision 0.
func (d *Deployments) ReplicaSets(ctx context.Context, dep *appsv1.Deployment) ([]appsv1.ReplicaSet, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	opts := metav1.ListOptions{}
	// The selector narrows the list on the server; ownership is still
	// decided by UID because selectors of different Deployments may overlap.
	if dep.Spec.Selector != nil {
		sel, err := metav1.LabelSelectorAsSelector(dep.Spec.Selector)
		if err == nil {
			opts.LabelSelector = sel.String()
		}
	}
	list, err := d.client.AppsV1().ReplicaSets(dep.Namespace).List(ctx, opts)
	if err != nil {
		return nil, fmt.Errorf("list replicasets of deployment %s/%s: %w", dep.Namespace, dep.Name, err)
	}
	var owned []appsv1.ReplicaSet
	for _, rs := range list.Items {
		for _, ref := range rs.OwnerReferences {
			if ref.UID == dep.UID && ref.Controller != nil && *ref.Controller {
				owned = append(owned, rs)
				break
			}
		}
	}
	sort.SliceStable(owned, func(i, j int) bool {
		ri, _ := Revision(&owned[i])
		rj, _ := Revision(&owned[j])
		if ri != rj {
			return ri < rj
		}
		return owned[i].Name < owned[j].Name
	})
	return owned, nil
}

// Revision reads deployment.kubernetes.io/revision of obj.
func Revision(obj metav1.Object) (int64, bool) {
	v, ok := obj.GetAnnotations()[RevisionAnnotation]
	if !ok {
		return 0, false
	}
	n, err := strconv.ParseInt(v, 10, 64)
	if err != nil {
		return 0, false
	}
	return n, true
}

// TemplateOf returns rs's pod template as it would be written back to its
// Deployment: a deep copy without the pod-template-hash label (what
// `kubectl rollout undo` does).
func TemplateOf(rs *appsv1.ReplicaSet) corev1.PodTemplateSpec {
	t := *rs.Spec.Template.DeepCopy()
	delete(t.Labels, PodTemplateHashLabel)
	if len(t.Labels) == 0 {
		t.Labels = nil
	}
	return t
}

// EqualTemplates compares pod templates semantically, ignoring the
// pod-template-hash label (nil and empty collections are equal).
func EqualTemplates(a, b *corev1.PodTemplateSpec) bool {
	if a == nil || b == nil {
		return a == b
	}
	ac, bc := a.DeepCopy(), b.DeepCopy()
	delete(ac.Labels, PodTemplateHashLabel)
	delete(bc.Labels, PodTemplateHashLabel)
	return apiequality.Semantic.DeepEqual(ac, bc)
}

// Frozen reports whether the freeze annotation is set on dep. A value that
// does not parse as a bool counts as frozen: a typo must not unfreeze.
func Frozen(dep *appsv1.Deployment) bool {
	v, ok := dep.Annotations[FreezeAnnotation]
	if !ok {
		return false
	}
	b, err := strconv.ParseBool(v)
	return err != nil || b
}

// Replicas returns spec.replicas with the API default of 1.
func Replicas(dep *appsv1.Deployment) int32 {
	if dep.Spec.Replicas == nil {
		return 1
	}
	return *dep.Spec.Replicas
}

// check compares live with exp.
func check(live *appsv1.Deployment, exp Expect) error {
	field := ""
	switch {
	case exp.UID != "" && string(live.UID) != exp.UID:
		field = "metadata.uid"
	case live.Spec.Paused:
		// Plans refuse a paused Deployment, so a pause seen later is a human
		// taking over.
		field = "spec.paused"
	case exp.Template != nil && !EqualTemplates(&live.Spec.Template, exp.Template):
		field = "spec.template"
	case exp.Replicas != nil && Replicas(live) != *exp.Replicas:
		field = "spec.replicas"
	}
	if field == "" {
		return nil
	}
	return &ConcurrentChangeError{Namespace: live.Namespace, Name: live.Name, Field: field}
}

// Check returns a *ConcurrentChangeError when live differs from exp.
func Check(live *appsv1.Deployment, exp Expect) error { return check(live, exp) }

// GetScale reads the scale subresource.
func (d *Deployments) GetScale(ctx context.Context, ns, name string) (*autoscalingv1.Scale, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	s, err := d.client.AppsV1().Deployments(ns).GetScale(ctx, name, metav1.GetOptions{})
	if err != nil {
		return nil, fmt.Errorf("get scale of deployment %s/%s: %w", ns, name, err)
	}
	return s, nil
}

// Scale sets spec.replicas through the scale subresource, so an HPA or a
// webhook sees the same write `kubectl scale` makes. Each attempt reads the
// Deployment, checks it against exp, reads the scale and writes it with the
// scale's resourceVersion; the resourceVersions must agree so the scale
// written is the one of the Deployment checked. A no-op when replicas
// already match. Returns the Deployment as last read.
func (d *Deployments) Scale(ctx context.Context, ns, name string, replicas int32, exp Expect) (*appsv1.Deployment, error) {
	for attempt := 1; ; attempt++ {
		live, err := d.Get(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		if err := check(live, exp); err != nil {
			return live, err
		}
		if Replicas(live) == replicas {
			return live, nil
		}
		s, err := d.GetScale(ctx, ns, name)
		if err != nil {
			return live, err
		}
		if s.ResourceVersion == live.ResourceVersion {
			s.Spec.Replicas = replicas
			err = d.updateScale(ctx, ns, name, s)
			if err == nil {
				d.logger.Info("deployment scaled", zap.String("namespace", ns), zap.String("deployment", name), zap.Int32("replicas", replicas))
				return d.Get(ctx, ns, name)
			}
			if !apierrors.IsConflict(err) {
				return live, err
			}
		}
		if attempt >= d.opts.MaxAttempts {
			return live, fmt.Errorf("scale deployment %s/%s to %d: %w", ns, name, replicas, ErrTooManyConflicts)
		}
		d.logger.Warn("scale conflict, retrying", zap.String("namespace", ns), zap.String("deployment", name), zap.Int("attempt", attempt))
		if err := d.backoff(ctx, attempt); err != nil {
			return live, fmt.Errorf("scale deployment %s/%s: %w", ns, name, err)
		}
	}
}

func (d *Deployments) updateScale(ctx context.Context, ns, name string, s *autoscalingv1.Scale) error {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	if _, err := d.client.AppsV1().Deployments(ns).UpdateScale(ctx, name, s, metav1.UpdateOptions{}); err != nil {
		return fmt.Errorf("update scale of deployment %s/%s: %w", ns, name, err)
	}
	return nil
}

// SetTemplate replaces the pod template with tmpl by an Update carrying the
// resourceVersion of the Deployment just checked against exp, so an edit in
// between gives 409; after a 409 the re-read decides between a retry and
// ErrConcurrentChange. A no-op when the template already equals tmpl.
func (d *Deployments) SetTemplate(ctx context.Context, ns, name string, tmpl corev1.PodTemplateSpec, exp Expect) (*appsv1.Deployment, error) {
	return d.fencedUpdate(ctx, ns, name, exp, "set template of",
		func(live *appsv1.Deployment) (bool, error) {
			return EqualTemplates(&live.Spec.Template, &tmpl) && !live.Spec.Paused, nil
		},
		func(upd *appsv1.Deployment) { upd.Spec.Template = *tmpl.DeepCopy() },
		func(out *appsv1.Deployment) {
			d.logger.Info("deployment template set", zap.String("namespace", ns), zap.String("deployment", name), zap.Int64("generation", out.Generation))
		})
}

// SetMaxSurge moves spec.strategy.rollingUpdate.maxSurge from "from" to
// "to" (nil: unset, which the API server defaults to 25%), fenced like
// SetTemplate. A no-op when it is already "to"; any other value, or a
// strategy that is no longer RollingUpdate, is someone else's change
// (ErrConcurrentChange) and is left alone. The strategy is not part of the
// pod template: changing it starts no rollout, it paces the next one.
func (d *Deployments) SetMaxSurge(ctx context.Context, ns, name string, from, to *intstr.IntOrString, exp Expect) (*appsv1.Deployment, error) {
	return d.fencedUpdate(ctx, ns, name, exp, "set maxSurge of",
		func(live *appsv1.Deployment) (bool, error) {
			if live.Spec.Strategy.Type == appsv1.RecreateDeploymentStrategyType {
				return false, &ConcurrentChangeError{Namespace: ns, Name: name, Field: "spec.strategy.type"}
			}
			cur := MaxSurge(live)
			if sameIntOrString(cur, to) {
				return true, nil
			}
			if !sameIntOrString(cur, from) {
				return false, &ConcurrentChangeError{Namespace: ns, Name: name, Field: "spec.strategy.rollingUpdate.maxSurge"}
			}
			return false, nil
		},
		func(upd *appsv1.Deployment) {
			if upd.Spec.Strategy.RollingUpdate == nil {
				upd.Spec.Strategy.RollingUpdate = &appsv1.RollingUpdateDeployment{}
			}
			var v *intstr.IntOrString
			if to != nil {
				c := *to
				v = &c
			}
			upd.Spec.Strategy.RollingUpdate.MaxSurge = v
		},
		func(*appsv1.Deployment) {
			d.logger.Info("deployment maxSurge set", zap.String("namespace", ns), zap.String("deployment", name),
				zap.String("from", SurgeString(from)), zap.String("to", SurgeString(to)))
		})
}

// MaxSurge is the Deployment's maxSurge, nil when unset or not a rolling
// update.
func MaxSurge(dep *appsv1.Deployment) *intstr.IntOrString {
	if ru := dep.Spec.Strategy.RollingUpdate; ru != nil {
		return ru.MaxSurge
	}
	return nil
}

// SurgeString prints a maxSurge for logs and journals ("unset" for nil).
func SurgeString(v *intstr.IntOrString) string {
	if v == nil {
		return "unset"
	}
	return v.String()
}

func sameIntOrString(a, b *intstr.IntOrString) bool {
	if a == nil || b == nil {
		return a == b
	}
	return *a == *b
}

// fencedUpdate is the read-check-write loop of every Deployment Update:
// done reports the write is already in place (or fails the call); change
// edits a copy of the live object, which is written with its
// resourceVersion; a 409 re-reads and decides again.
func (d *Deployments) fencedUpdate(ctx context.Context, ns, name string, exp Expect, what string,
	done func(*appsv1.Deployment) (bool, error), change func(*appsv1.Deployment), logDone func(*appsv1.Deployment)) (*appsv1.Deployment, error) {
	for attempt := 1; ; attempt++ {
		live, err := d.Get(ctx, ns, name)
		if err != nil {
			return nil, err
		}
		if exp.UID != "" && string(live.UID) != exp.UID {
			return live, check(live, exp)
		}
		ok, err := done(live)
		if err != nil {
			return live, err
		}
		if ok {
			return live, nil
		}
		if err := check(live, exp); err != nil {
			return live, err
		}
		upd := live.DeepCopy()
		change(upd)
		out, err := d.update(ctx, upd)
		if err == nil {
			logDone(out)
			return out, nil
		}
		if !apierrors.IsConflict(err) {
			return live, err
		}
		if attempt >= d.opts.MaxAttempts {
			return live, fmt.Errorf("%s deployment %s/%s: %w", what, ns, name, ErrTooManyConflicts)
		}
		d.logger.Warn("deployment update conflict, retrying", zap.String("namespace", ns), zap.String("deployment", name),
			zap.String("write", what), zap.Int("attempt", attempt))
		if err := d.backoff(ctx, attempt); err != nil {
			return live, fmt.Errorf("%s deployment %s/%s: %w", what, ns, name, err)
		}
	}
}

func (d *Deployments) update(ctx context.Context, dep *appsv1.Deployment) (*appsv1.Deployment, error) {
	ctx, cancel := context.WithTimeout(ctx, d.opts.Timeout)
	defer cancel()
	out, err := d.client.AppsV1().Deployments(dep.Namespace).Update(ctx, dep, metav1.UpdateOptions{})
	if err != nil {
		return nil, fmt.Errorf("update deployment %s/%s: %w", dep.Namespace, dep.Name, err)
	}
	return out, nil
}

// backoff waits a little longer after each conflict: status writes by the
// Deployment controller come in bursts while Pods change.
func (d *Deployments) backoff(ctx context.Context, attempt int) error {
	return clock.Sleep(ctx, time.Duration(attempt)*20*time.Millisecond)
}

// WithEnv returns a copy of tmpl with env name=value set on the named
// containers (every container when names is empty).
func WithEnv(tmpl corev1.PodTemplateSpec, containers []string, name, value string) corev1.PodTemplateSpec {
	out := *tmpl.DeepCopy()
	for i := range out.Spec.Containers {
		c := &out.Spec.Containers[i]
		if !selected(c.Name, containers) {
			continue
		}
		found := false
		for j := range c.Env {
			if c.Env[j].Name == name {
				c.Env[j].Value = value
				c.Env[j].ValueFrom = nil
				found = true
			}
		}
		if !found {
			c.Env = append(c.Env, corev1.EnvVar{Name: name, Value: value})
		}
	}
	return out
}

// WithRestartedAt returns a copy of tmpl annotated the way `kubectl rollout
// restart` does, which makes the controller replace every Pod.
func WithRestartedAt(tmpl corev1.PodTemplateSpec, at time.Time) corev1.PodTemplateSpec {
	out := *tmpl.DeepCopy()
	if out.Annotations == nil {
		out.Annotations = map[string]string{}
	}
	out.Annotations[RestartedAtAnnotation] = at.UTC().Format(time.RFC3339)
	return out
}

// WithImages returns a copy of tmpl with the images of the named containers
// replaced; it fails when a container is not in the template.
func WithImages(tmpl corev1.PodTemplateSpec, images map[string]string) (corev1.PodTemplateSpec, error) {
	out := *tmpl.DeepCopy()
	for name, image := range images {
		found := false
		for i := range out.Spec.Containers {
			if out.Spec.Containers[i].Name == name {
				out.Spec.Containers[i].Image = image
				found = true
			}
		}
		for i := range out.Spec.InitContainers {
			if out.Spec.InitContainers[i].Name == name {
				out.Spec.InitContainers[i].Image = image
				found = true
			}
		}
		if !found {
			return out, fmt.Errorf("container %q not in pod template", name)
		}
	}
	return out, nil
}

// Images maps container name to image.
func Images(tmpl *corev1.PodTemplateSpec) map[string]string {
	m := make(map[string]string, len(tmpl.Spec.Containers))
	for _, c := range tmpl.Spec.Containers {
		m[c.Name] = c.Image
	}
	return m
}

// FormatImages writes images as container=image pairs sorted by container,
// comma-separated: one stable form for logs, pages, plans and errors.
func FormatImages(images map[string]string) string {
	parts := make([]string, 0, len(images))
	for _, c := range slices.Sorted(maps.Keys(images)) {
		parts = append(parts, c+"="+images[c])
	}
	return strings.Join(parts, ",")
}

func selected(name string, names []string) bool {
	if len(names) == 0 {
		return true
	}
	for _, n := range names {
		if n == name {
			return true
		}
	}
	return false
}

// DescribeState is a Deployment's state as a human deciding what to do
// next needs it: its template's images, the replicas it asks for and how
// many are updated, ready and available, e.g. "production/pggit-api
// api=pggit-api:v1.0.3, 4 replicas asked, 2 updated, 1 ready, 1 available".
func DescribeState(dep *appsv1.Deployment) string {
	st := dep.Status
	return fmt.Sprintf("%s/%s %s, %d replicas asked, %d updated, %d ready, %d available",
		dep.Namespace, dep.Name, FormatImages(Images(&dep.Spec.Template)), Replicas(dep), st.UpdatedReplicas, st.ReadyReplicas, st.AvailableReplicas)
}
