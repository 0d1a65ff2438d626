package kube_test

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/intstr"
	k8stesting "k8s.io/client-go/testing"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/kube/kubetest"
)

const ns, name = "production", "pggit-api"

func setup(t *testing.T) (*kubetest.Cluster, *kube.Deployments) {
	t.Helper()
	c := kubetest.New(kubetest.NewDeployment(ns, name, 4, map[string]string{"api": "pggit-api:v1.0.3"}))
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.1.0" })
	c.ClearActions()
	return c, kube.New(c, kube.Options{PollInterval: time.Millisecond}, nil)
}

// rollbackWrite is a write of v1.0.3's template over the Deployment as
// the test found it, and what that write expects.
func rollbackWrite(c *kubetest.Cluster) (corev1.PodTemplateSpec, kube.Expect) {
	dep := c.Deployment(ns, name)
	stable := *dep.Spec.Template.DeepCopy()
	stable.Spec.Containers[0].Image = "pggit-api:v1.0.3"
	return stable, kube.Expect{UID: string(dep.UID), Template: &dep.Spec.Template}
}

func TestReplicaSetsSortedByRevision(t *testing.T) {
	c, d := setup(t)
	ctx := context.Background()
	dep, err := d.Get(ctx, ns, name)
	if err != nil {
		t.Fatal(err)
	}
	// A ReplicaSet of another Deployment with matching labels is not ours.
	foreign := &appsv1.ReplicaSet{ObjectMeta: metav1.ObjectMeta{Name: "other", Namespace: ns, Labels: map[string]string{"app": name},
		Annotations:     map[string]string{kube.RevisionAnnotation: "9"},
		OwnerReferences: []metav1.OwnerReference{{UID: "someone-else", Controller: ptr(true)}}}}
	if err := c.Tracker().Add(foreign); err != nil {
		t.Fatal(err)
	}
	rss, err := d.ReplicaSets(ctx, dep)
	if err != nil {
		t.Fatal(err)
	}
	if len(rss) != 2 {
		t.Fatalf("got %d replicasets, want 2", len(rss))
	}
	want := []string{"pggit-api:v1.0.3", "pggit-api:v1.1.0"}
	for i, rs := range rss {
		rev, _ := kube.Revision(&rs)
		if rev != int64(i+1) || rs.Spec.Template.Spec.Containers[0].Image != want[i] {
			t.Errorf("rs[%d] = rev %d image %s, want rev %d image %s", i, rev, rs.Spec.Template.Spec.Containers[0].Image, i+1, want[i])
		}
	}
	tmpl := kube.TemplateOf(&rss[0])
	if _, ok := tmpl.Labels[kube.PodTemplateHashLabel]; ok {
		t.Error("TemplateOf kept pod-template-hash")
	}
}

func TestScaleUsesSubresourceAndDetectsConcurrentChange(t *testing.T) {
	ctx := context.Background()
	tests := []struct {
		name      string
		mutate    func(*appsv1.Deployment) // applied by "someone else" on the first scale update
		wantErr   error
		wantField string
		want      int32
	}{
		{name: "status only write is retried", mutate: func(d *appsv1.Deployment) { d.Status.ObservedGeneration++ }, want: 0},
		{name: "image change stops", mutate: func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0" }, wantErr: kube.ErrConcurrentChange, wantField: "spec.template", want: 4},
		{name: "replica change stops", mutate: func(d *appsv1.Deployment) { d.Spec.Replicas = ptr(int32(7)) }, wantErr: kube.ErrConcurrentChange, wantField: "spec.replicas", want: 7},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, d := setup(t)
			dep := c.Deployment(ns, name)
			exp := kube.Expect{UID: string(dep.UID), Template: &dep.Spec.Template, Replicas: ptr(int32(4))}
			fired := false
			// Someone writes between our read of the scale and our update:
			// the update carries a stale resourceVersion and gets 409.
			c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
				if a.GetSubresource() == "scale" && !fired {
					fired = true
					c.Mutate(ns, name, tt.mutate)
				}
				return false, nil, nil
			})
			_, err := d.Scale(ctx, ns, name, 0, exp)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("err = %v, want %v", err, tt.wantErr)
			}
			var cc *kube.ConcurrentChangeError
			if tt.wantField != "" && (!errors.As(err, &cc) || cc.Field != tt.wantField) {
				t.Fatalf("err = %v, want field %s", err, tt.wantField)
			}
			if got := *c.Deployment(ns, name).Spec.Replicas; got != tt.want {
				t.Errorf("replicas = %d, want %d", got, tt.want)
			}
			var sawScale bool
			for _, a := range c.Actions() {
				if a.GetVerb() == "update" && a.GetSubresource() == "scale" {
					sawScale = true
				}
				if a.GetVerb() == "update" && a.GetSubresource() == "" && a.GetResource().Resource == "deployments" {
					t.Errorf("scale wrote the deployment directly: %v", a)
				}
			}
			if !sawScale {
				t.Error("no update of the scale subresource")
			}
		})
	}
}

func TestSetTemplateConflict(t *testing.T) {
	ctx := context.Background()
	c, d := setup(t)
	stable, exp := rollbackWrite(c)

	// Someone edits after we read: the update must not overwrite it.
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0" })
	_, err := d.SetTemplate(ctx, ns, name, stable, exp)
	var cc *kube.ConcurrentChangeError
	if !errors.As(err, &cc) || cc.Field != "spec.template" || cc.Namespace != ns || cc.Name != name {
		t.Fatalf("err = %v, want concurrent change of spec.template", err)
	}
	if img := c.Deployment(ns, name).Spec.Template.Spec.Containers[0].Image; img != "pggit-api:v1.2.0" {
		t.Fatalf("image = %s, the other writer's change was overwritten", img)
	}
	if got, want := err.Error(), "deployment production/pggit-api: spec.template changed by someone else: concurrent change"; got != want {
		t.Errorf("error = %q, want %q", got, want)
	}
}

func TestSetTemplateRetriesStatusConflictAndCarriesResourceVersion(t *testing.T) {
	ctx := context.Background()
	c, d := setup(t)
	stable, exp := rollbackWrite(c)
	conflicts := 0
	c.PrependReactor("update", "deployments", func(a k8stesting.Action) (bool, runtime.Object, error) {
		u := a.(k8stesting.UpdateAction).GetObject().(*appsv1.Deployment)
		if u.ResourceVersion == "" {
			t.Error("update without resourceVersion precondition")
		}
		if conflicts < 2 {
			conflicts++
			return true, nil, apierrors.NewConflict(schema.GroupResource{Group: "apps", Resource: "deployments"}, name, errors.New("status write"))
		}
		return false, nil, nil
	})
	out, err := d.SetTemplate(ctx, ns, name, stable, exp)
	if err != nil {
		t.Fatal(err)
	}
	if out.Spec.Template.Spec.Containers[0].Image != "pggit-api:v1.0.3" || conflicts != 2 {
		t.Fatalf("image %s after %d conflicts", out.Spec.Template.Spec.Containers[0].Image, conflicts)
	}
	// A second call is a no-op: no further update.
	c.ClearActions()
	if _, err := d.SetTemplate(ctx, ns, name, stable, kube.Expect{Template: &stable}); err != nil {
		t.Fatal(err)
	}
	if w := c.Writes(); len(w) != 0 {
		t.Errorf("idempotent SetTemplate wrote %v", w)
	}
}

func TestStatus(t *testing.T) {
	base := func(mut func(*appsv1.Deployment)) *appsv1.Deployment {
		d := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Generation: 3}, Spec: appsv1.DeploymentSpec{Replicas: ptr(int32(4))},
			Status: appsv1.DeploymentStatus{ObservedGeneration: 3, Replicas: 4, UpdatedReplicas: 4, ReadyReplicas: 4, AvailableReplicas: 4}}
		mut(d)
		return d
	}
	tests := []struct {
		name     string
		d        *appsv1.Deployment
		complete bool
		deadline bool
		msg      string
	}{
		{"complete", base(func(*appsv1.Deployment) {}), true, false, "successfully rolled out"},
		{"unobserved", base(func(d *appsv1.Deployment) { d.Status.ObservedGeneration = 2 }), false, false, "waiting for the spec update to be observed"},
		{"updating", base(func(d *appsv1.Deployment) { d.Status.UpdatedReplicas = 2 }), false, false, "2 of 4 new replicas updated"},
		{"old pending", base(func(d *appsv1.Deployment) { d.Status.Replicas = 5 }), false, false, "1 old replicas pending termination"},
		{"unavailable", base(func(d *appsv1.Deployment) { d.Status.AvailableReplicas = 3 }), false, false, "3 of 4 updated replicas available"},
		{"deadline", base(func(d *appsv1.Deployment) {
			d.Status.Conditions = []appsv1.DeploymentCondition{{Type: appsv1.DeploymentProgressing, Status: corev1.ConditionFalse, Reason: "ProgressDeadlineExceeded"}}
		}), false, true, "progress deadline exceeded"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := kube.Status(tt.d)
			if s.Complete != tt.complete || s.ProgressDeadline != tt.deadline || s.Message != tt.msg {
				t.Errorf("got %+v", s)
			}
		})
	}
}

func TestWaitRollout(t *testing.T) {
	ctx := context.Background()
	c, d := setup(t)
	c.Rollout = false
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.0.3" })
	var seen []kube.RolloutStatus
	polls := 0
	_, s, err := d.WaitRollout(ctx, ns, name, kube.WaitOptions{Timeout: 5 * time.Second,
		Progress: func(s kube.RolloutStatus) { seen = append(seen, s) },
		Check: func(*appsv1.Deployment) error {
			polls++
			if polls == 3 {
				c.Complete(ns, name)
			}
			return nil
		}})
	if err != nil || !s.Complete {
		t.Fatalf("wait: %v %+v", err, s)
	}
	if len(seen) != 2 || seen[0].Complete || !seen[1].Complete {
		t.Errorf("progress = %+v, want one waiting then complete", seen)
	}

	// Timeout names the object and the last status.
	c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v9" })
	_, _, err = d.WaitRollout(ctx, ns, name, kube.WaitOptions{Timeout: 20 * time.Millisecond})
	if !errors.Is(err, kube.ErrRolloutTimeout) {
		t.Fatalf("err = %v, want ErrRolloutTimeout", err)
	}
	// A failing check stops the wait with its error.
	stop := errors.New("stop")
	_, _, err = d.WaitRollout(ctx, ns, name, kube.WaitOptions{Timeout: time.Second, Check: func(*appsv1.Deployment) error { return stop }})
	if !errors.Is(err, stop) {
		t.Fatalf("err = %v, want the check's error", err)
	}
}

func TestRecordEventAndHelpers(t *testing.T) {
	ctx := context.Background()
	c, d := setup(t)
	dep := c.Deployment(ns, name)
	if err := d.RecordEvent(ctx, dep, corev1.EventTypeNormal, kube.ReasonStepStarted, "stop: scale to 0"); err != nil {
		t.Fatal(err)
	}
	evs, err := c.CoreV1().Events(ns).List(ctx, metav1.ListOptions{})
	if err != nil || len(evs.Items) != 1 {
		t.Fatalf("events %v %v", evs, err)
	}
	ev := evs.Items[0]
	if ev.Reason != "RollbackStepStarted" || ev.Source.Component != "rollguard" || ev.InvolvedObject.UID != dep.UID || ev.InvolvedObject.Kind != "Deployment" {
		t.Errorf("event = %+v", ev)
	}

	for _, tc := range []struct {
		ann  map[string]string
		want bool
	}{{nil, false}, {map[string]string{kube.FreezeAnnotation: "true"}, true}, {map[string]string{kube.FreezeAnnotation: "false"}, false}, {map[string]string{kube.FreezeAnnotation: "yes please"}, true}} {
		if got := kube.Frozen(&appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Annotations: tc.ann}}); got != tc.want {
			t.Errorf("Frozen(%v) = %v", tc.ann, got)
		}
	}
	tmpl := kube.WithEnv(dep.Spec.Template, nil, "DB_READONLY", "true")
	if e := tmpl.Spec.Containers[0].Env; len(e) != 1 || e[0].Name != "DB_READONLY" || e[0].Value != "true" {
		t.Errorf("env = %v", e)
	}
	if len(dep.Spec.Template.Spec.Containers[0].Env) != 0 {
		t.Error("WithEnv changed its input")
	}
	at := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	if got := kube.WithRestartedAt(dep.Spec.Template, at).Annotations[kube.RestartedAtAnnotation]; got != "2026-01-02T03:04:05Z" {
		t.Errorf("restartedAt = %q", got)
	}
	if _, err := kube.WithImages(dep.Spec.Template, map[string]string{"nope": "x"}); err == nil {
		t.Error("WithImages accepted an unknown container")
	}
}

func ptr[T any](v T) *T { return &v }

func TestSetMaxSurge(t *testing.T) {
	all, quarter, one := intstr.FromString("100%"), intstr.FromString("25%"), intstr.FromInt32(1)
	tests := []struct {
		name      string
		live      *intstr.IntOrString
		recreate  bool
		edit      bool // someone changes the template after we read it
		from, to  *intstr.IntOrString
		wantErr   string
		wantWrite bool
		want      *intstr.IntOrString
	}{
		{name: "raise", live: &quarter, from: &quarter, to: &all, wantWrite: true, want: &all},
		{name: "raise from unset", from: nil, to: &all, wantWrite: true, want: &all},
		{name: "already there is a no-op", live: &all, from: &quarter, to: &all, want: &all},
		{name: "restore to unset", live: &all, from: &all, to: nil, wantWrite: true},
		{name: "someone else's value is left alone", live: &one, from: &quarter, to: &all, want: &one,
			wantErr: "deployment production/pggit-api: spec.strategy.rollingUpdate.maxSurge changed by someone else: concurrent change"},
		{name: "recreate", recreate: true, from: &quarter, to: &all,
			wantErr: "deployment production/pggit-api: spec.strategy.type changed by someone else: concurrent change"},
		{name: "template fence", live: &quarter, edit: true, from: &quarter, to: &all, want: &quarter,
			wantErr: "deployment production/pggit-api: spec.template changed by someone else: concurrent change"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c, d := setup(t)
			c.Mutate(ns, name, func(dep *appsv1.Deployment) {
				if tt.recreate {
					dep.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RecreateDeploymentStrategyType}
					return
				}
				dep.Spec.Strategy = appsv1.DeploymentStrategy{Type: appsv1.RollingUpdateDeploymentStrategyType,
					RollingUpdate: &appsv1.RollingUpdateDeployment{MaxSurge: tt.live}}
			})
			dep := c.Deployment(ns, name)
			exp := kube.Expect{UID: string(dep.UID), Template: dep.Spec.Template.DeepCopy()}
			if tt.edit {
				c.Mutate(ns, name, func(d *appsv1.Deployment) { d.Spec.Template.Spec.Containers[0].Image = "pggit-api:v1.2.0" })
			}
			c.ClearActions()
			_, err := d.SetMaxSurge(ctx, ns, name, tt.from, tt.to, exp)
			if got := fmt.Sprint(err); (tt.wantErr == "" && err != nil) || (tt.wantErr != "" && got != tt.wantErr) {
				t.Fatalf("err = %v, want %q", err, tt.wantErr)
			}
			if tt.wantErr != "" && !errors.Is(err, kube.ErrConcurrentChange) {
				t.Errorf("err %v is not ErrConcurrentChange", err)
			}
			if wrote := len(c.Writes()) > 0; wrote != tt.wantWrite {
				t.Errorf("wrote = %v, want %v (%v)", wrote, tt.wantWrite, c.Writes())
			}
			if tt.recreate {
				return
			}
			if got := kube.MaxSurge(c.Deployment(ns, name)); kube.SurgeString(got) != kube.SurgeString(tt.want) {
				t.Errorf("maxSurge = %s, want %s", kube.SurgeString(got), kube.SurgeString(tt.want))
			}
		})
	}
}

// With NoPods a stopped Deployment is not done while Pods are counted
// (kubectl's criteria call a scale-down of the current ReplicaSet complete
// at once) or terminate, and where the cluster cannot tell, not before the
// grace period has passed.
func TestWaitRolloutNoPods(t *testing.T) {
	type read struct {
		replicas    int32
		terminating *int32
	}
	two, zero := int32(2), int32(0)
	grace0, grace30 := int64(0), int64(30)
	tests := []struct {
		name      string
		reads     []read // the status of each read; the last one stays
		grace     *int64
		wantReads int
		wantErr   string
	}{
		{name: "pods of the current replicaset are waited for", reads: []read{{4, &zero}, {1, &zero}, {0, &zero}}, wantReads: 3},
		{name: "terminating pods are waited for", reads: []read{{0, &two}, {0, &two}, {0, &zero}}, wantReads: 3},
		{name: "not reported, no grace period", reads: []read{{0, nil}}, grace: &grace0, wantReads: 1},
		{name: "not reported, grace period not over", reads: []read{{0, nil}}, grace: &grace30,
			wantErr: "rollout of deployment production/pggit-api (terminating pods not reported by the cluster: waiting out the 30s grace period): rollout not complete"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx := context.Background()
			c, d := setup(t)
			c.Mutate(ns, name, func(d *appsv1.Deployment) {
				d.Spec.Replicas = new(int32)
				d.Spec.Template.Spec.TerminationGracePeriodSeconds = tt.grace
			})
			gvr := appsv1.SchemeGroupVersion.WithResource("deployments")
			setStatus := func(r read) {
				obj, err := c.Tracker().Get(gvr, ns, name)
				if err != nil {
					t.Fatal(err)
				}
				dep := obj.(*appsv1.Deployment).DeepCopy()
				// The current ReplicaSet's Pods count as updated, ready and
				// available until they are deleted.
				dep.Status.Replicas, dep.Status.UpdatedReplicas, dep.Status.ReadyReplicas, dep.Status.AvailableReplicas = r.replicas, r.replicas, r.replicas, r.replicas
				dep.Status.TerminatingReplicas = r.terminating
				if err := c.Tracker().Update(gvr, dep, ns); err != nil {
					t.Fatal(err)
				}
			}
			setStatus(tt.reads[0])
			reads := 0
			_, s, err := d.WaitRollout(ctx, ns, name, kube.WaitOptions{Timeout: 200 * time.Millisecond, NoPods: true,
				Check: func(*appsv1.Deployment) error {
					reads++
					setStatus(tt.reads[min(reads, len(tt.reads)-1)])
					return nil
				}})
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr || !errors.Is(err, kube.ErrRolloutTimeout) {
					t.Fatalf("err = %v, want %q", err, tt.wantErr)
				}
				return
			}
			if err != nil || !s.Complete || s.Terminating != 0 || s.Replicas != 0 {
				t.Fatalf("wait: %v %+v", err, s)
			}
			if reads != tt.wantReads {
				t.Errorf("done after %d reads, want %d", reads, tt.wantReads)
			}
		})
	}
}

func TestFormatImages(t *testing.T) {
	tests := []struct {
		images map[string]string
		want   string
	}{
		{nil, ""},
		{map[string]string{"api": "pggit-api:v1.0.3"}, "api=pggit-api:v1.0.3"},
		// Sorted by container whatever the map's order, so a plan, a page
		// and an error name the same images the same way.
		{map[string]string{"worker": "w:2", "api": "a:1", "migrate": "m:3"}, "api=a:1,migrate=m:3,worker=w:2"},
	}
	for _, tt := range tests {
		t.Run(tt.want, func(t *testing.T) {
			if got := kube.FormatImages(tt.images); got != tt.want {
				t.Errorf("FormatImages(%v) = %q, want %q", tt.images, got, tt.want)
			}
		})
	}
}
