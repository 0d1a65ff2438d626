package gitops

import (
	"context"
	"errors"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"

	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestArgoCDApplication runs rollguard's Argo CD path against the
// Application CRD on the real API server. No Argo CD controller runs in
// the sandbox: this shows detection through the tracking annotation, the
// refusal, the journaled suspension (automated sync off) and that
// resume-gitops restores the Application exactly; it cannot show Argo CD's
// self-heal fighting a rollback.
func TestArgoCDApplication(t *testing.T) {
	env := sandboxenv.Load(t)
	argoNS := env.Get(t, "ARGOCD_NAMESPACE")
	rc := sandboxfixture.KubeConfig(t, env)
	kc := sandboxfixture.ClientFor(t, rc)
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	log := zaptest.NewLogger(t)
	deps := kube.New(kc, kube.Options{}, log)
	owners := gitops.NewManager(dc, gitops.Options{}, log)
	exec := rollback.NewExecutor(deps, kc.CoreV1(), rollback.Options{PollInterval: 200 * time.Millisecond}, log)

	ns := "rg-argo-" + rand.String(5)
	app := ns + "-app"
	sandboxfixture.Namespace(t, kc, ns)
	apps := dc.Resource(gitops.ApplicationGVR).Namespace(argoNS)
	obj := &unstructured.Unstructured{Object: map[string]any{
		"apiVersion": "argoproj.io/v1alpha1", "kind": "Application",
		"metadata": map[string]any{"name": app, "namespace": argoNS, "annotations": map[string]any{"team": "pggit"}},
		"spec": map[string]any{
			"project":     "default",
			"destination": map[string]any{"server": "https://kubernetes.default.svc", "namespace": ns},
			"source":      map[string]any{"repoURL": "https://git.example.invalid/pggit/deploy.git", "path": "api", "targetRevision": "main"},
			"syncPolicy": map[string]any{
				"automated":   map[string]any{"prune": true, "selfHeal": true},
				"syncOptions": []any{"ServerSideApply=true"},
			},
		},
		"status": map[string]any{"sync": map[string]any{"status": "Synced", "revision": "4f1c2ab9d0e8"}},
	}}
	created, err := apps.Create(ctxT(t, 10*time.Second), obj, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create application: %v", err)
	}
	t.Cleanup(func() { _ = apps.Delete(context.Background(), app, metav1.DeleteOptions{}) })

	d := sandboxfixture.Deployment(ns, "api", goodImage, 2)
	d.Annotations = map[string]string{gitops.AnnotationArgoTrackingID: app + ":apps/Deployment:" + ns + "/api"}
	sandboxfixture.CreateDeployment(t, kc, d)
	sandboxfixture.RollThrough(t, kc, deps, ns, "api", badImage)

	target := func(mode string) rollback.Target {
		return rollback.Target{Namespace: ns, Deployment: "api", Strategy: plan.Revert, RolloutTimeout: 60 * time.Second,
			VerifyWindow: time.Second, GitOps: rollback.GitOpsPolicy{Mode: mode, ArgoNamespace: argoNS, Target: "argo-api", Owners: owners}}
	}
	run := func(mode string) (*rollback.Result, error) {
		return exec.Run(ctxT(t, 2*time.Minute), rollback.Request{Target: target(mode), Reason: "argo test"})
	}

	t.Run("detect", func(t *testing.T) {
		dep, err := deps.Get(ctxT(t, 5*time.Second), ns, "api")
		if err != nil {
			t.Fatal(err)
		}
		o, err := owners.Detect(ctxT(t, 5*time.Second), dep.Labels, dep.Annotations, argoNS)
		if err != nil || o == nil {
			t.Fatalf("detect: %v, %v", o, err)
		}
		if o.String() != "Argo CD Application "+argoNS+"/"+app || o.Suspended || o.Revision != "4f1c2ab9d0e8" {
			t.Errorf("owner %+v", o)
		}
		// Helm charts set Argo CD's instance label too: without an
		// Application of that name it is not an owner.
		o, err = owners.Detect(ctxT(t, 5*time.Second), map[string]string{gitops.LabelArgoInstance: "some-helm-release"}, nil, argoNS)
		if err != nil || o != nil {
			t.Errorf("instance label of a Helm release: owner %v, err %v; want none", o, err)
		}
	})

	t.Run("refuse", func(t *testing.T) {
		_, err := run(gitops.ModeRefuse)
		if !errors.Is(err, rollback.ErrGitOpsManaged) || !strings.Contains(err.Error(), "Argo CD Application "+argoNS+"/"+app) ||
			!strings.Contains(err.Error(), "revert commit 4f1c2ab9d0e8") {
			t.Fatalf("refuse: err = %v", err)
		}
	})

	t.Run("suspend, then resume restores the application exactly", func(t *testing.T) {
		res, err := run(gitops.ModeSuspend)
		if err != nil {
			t.Fatalf("rollback with mode suspend: %v", err)
		}
		t.Logf("suspend step: %s", res.Steps[1].Detail)
		got, err := apps.Get(ctxT(t, 5*time.Second), app, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if _, found, _ := unstructured.NestedFieldNoCopy(got.Object, "spec", "syncPolicy", "automated"); found {
			t.Error("automated sync still on after the suspension")
		}
		if opts, _, _ := unstructured.NestedSlice(got.Object, "spec", "syncPolicy", "syncOptions"); len(opts) != 1 {
			t.Errorf("syncOptions changed: %v", opts)
		}
		if img := mustImage(t, deps, ns); img != goodImage {
			t.Errorf("image %s, want %s", img, goodImage)
		}

		w := gitops.NewWatcher(owners, deps, nil, gitops.WatchOptions{}, log, nil)
		w.SetTargets([]gitops.WatchTarget{{Name: "argo-api", Namespace: ns, Deployment: "api", Mode: gitops.ModeSuspend, ArgoNamespace: argoNS}})
		w.Tick(ctxT(t, 10*time.Second))
		if st, _ := w.Status("argo-api"); !st.ByRollguard {
			t.Errorf("status %+v: want suspended by rollguard", st)
		}
		if _, err := w.Resume(ctxT(t, 10*time.Second), "argo-api", "test"); err != nil {
			t.Fatalf("resume: %v", err)
		}
		after, err := apps.Get(ctxT(t, 5*time.Second), app, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range [][]string{{"spec"}, {"status"}, {"metadata", "annotations"}, {"metadata", "labels"}} {
			want, _, _ := unstructured.NestedFieldNoCopy(created.Object, f...)
			have, _, _ := unstructured.NestedFieldNoCopy(after.Object, f...)
			if !reflect.DeepEqual(want, have) {
				t.Errorf("%v after resume = %v, want %v", f, have, want)
			}
		}
		// Resuming something rollguard did not suspend is refused.
		if _, err := w.Resume(ctxT(t, 10*time.Second), "argo-api", "again"); !errors.Is(err, gitops.ErrNotMarked) {
			t.Errorf("second resume: err = %v, want ErrNotMarked", err)
		}
	})
}

func mustImage(t *testing.T, deps *kube.Deployments, ns string) string {
	t.Helper()
	d, err := deps.Get(ctxT(t, 5*time.Second), ns, "api")
	if err != nil {
		t.Fatal(err)
	}
	return d.Spec.Template.Spec.Containers[0].Image
}
