package gitops

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/gitserver"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

const (
	goodImage = "pggit-api:v1.0.3"
	badImage  = "pggit-api:v1.1.0"
	// fluxInterval paces the GitRepository and the Kustomization: short,
	// so the controller's revert shows within seconds.
	fluxInterval = "2s"
)

var gitRepositoryGVR = schema.GroupVersionResource{Group: "source.toolkit.fluxcd.io", Version: "v1", Resource: "gitrepositories"}

// fluxApp is one application deployed by the real Flux controllers from a
// Git repository served on loopback: namespace ns, Deployment "api", a
// GitRepository and a Kustomization named name in Flux's namespace.
type fluxApp struct {
	t        *testing.T
	name, ns string
	fluxNS   string
	git      *gitserver.Server
	kc       kubernetes.Interface
	dc       dynamic.Interface
	deps     *kube.Deployments
	owners   *gitops.Manager
	exec     *rollback.Executor
}

func deploymentYAML(ns, image, extra string) string {
	return fmt.Sprintf(`apiVersion: apps/v1
kind: Deployment
metadata:
  name: api
  namespace: %s
spec:
  replicas: 2
  selector:
    matchLabels: {app: api}
  template:
    metadata:
      labels: {app: api%s}
    spec:
      containers:
        - name: api
          image: %s
`, ns, extra, image)
}

// newFluxApp deploys the good image, then the bad one, through Git and
// Flux, and waits until the bad one has rolled out.
func newFluxApp(t *testing.T, env sandboxenv.Env, name string) *fluxApp {
	t.Helper()
	rc := sandboxfixture.KubeConfig(t, env)
	a := &fluxApp{t: t, name: name, ns: name, fluxNS: env.Get(t, "FLUX_NAMESPACE"), git: gitserver.Start(t),
		kc: sandboxfixture.ClientFor(t, rc)}
	var err error
	if a.dc, err = dynamic.NewForConfig(rc); err != nil {
		t.Fatalf("dynamic client: %v", err)
	}
	log := zaptest.NewLogger(t)
	a.deps = kube.New(a.kc, kube.Options{}, log)
	a.owners = gitops.NewManager(a.dc, gitops.Options{}, log)
	a.exec = rollback.NewExecutor(a.deps, a.kc.CoreV1(), rollback.Options{PollInterval: 200 * time.Millisecond}, log)
	sandboxfixture.Namespace(t, a.kc, a.ns)

	a.git.Commit(t, "deploy "+goodImage, map[string]string{"app/deployment.yaml": deploymentYAML(a.ns, goodImage, "")})
	a.create(gitRepositoryGVR, map[string]any{
		"apiVersion": "source.toolkit.fluxcd.io/v1", "kind": "GitRepository",
		"metadata": map[string]any{"name": name, "namespace": a.fluxNS},
		"spec":     map[string]any{"interval": fluxInterval, "url": a.git.URL, "ref": map[string]any{"branch": gitserver.Branch}},
	})
	a.create(gitops.KustomizationGVR, map[string]any{
		"apiVersion": "kustomize.toolkit.fluxcd.io/v1", "kind": "Kustomization",
		"metadata": map[string]any{"name": name, "namespace": a.fluxNS},
		"spec": map[string]any{"interval": fluxInterval, "path": "./app", "prune": false,
			"sourceRef": map[string]any{"kind": "GitRepository", "name": name}},
	})
	a.waitImage(goodImage, 90*time.Second)
	sandboxfixture.WaitRolledOut(t, a.deps, a.ns, "api")
	a.git.Commit(t, "deploy "+badImage, map[string]string{"app/deployment.yaml": deploymentYAML(a.ns, badImage, "")})
	a.waitImage(badImage, 60*time.Second)
	sandboxfixture.WaitRolledOut(t, a.deps, a.ns, "api")
	return a
}

func (a *fluxApp) create(gvr schema.GroupVersionResource, obj map[string]any) {
	a.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	u := &unstructured.Unstructured{Object: obj}
	if _, err := a.dc.Resource(gvr).Namespace(u.GetNamespace()).Create(ctx, u, metav1.CreateOptions{}); err != nil {
		a.t.Fatalf("create %s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	a.t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		_ = a.dc.Resource(gvr).Namespace(u.GetNamespace()).Delete(ctx, u.GetName(), metav1.DeleteOptions{})
	})
}

func (a *fluxApp) image(ctx context.Context) (string, error) {
	d, err := a.kc.AppsV1().Deployments(a.ns).Get(ctx, "api", metav1.GetOptions{})
	if err != nil {
		return "", err
	}
	return d.Spec.Template.Spec.Containers[0].Image, nil
}

func (a *fluxApp) waitImage(image string, timeout time.Duration) {
	a.t.Helper()
	sandboxfixture.WaitFor(a.t, a.name+": deployment image "+image, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		img, err := a.image(ctx)
		return img == image, "image " + img, err
	})
}

func (a *fluxApp) kustomization(ctx context.Context) *unstructured.Unstructured {
	a.t.Helper()
	u, err := a.dc.Resource(gitops.KustomizationGVR).Namespace(a.fluxNS).Get(ctx, a.name, metav1.GetOptions{})
	if err != nil {
		a.t.Fatalf("get kustomization: %v", err)
	}
	return u
}

func (a *fluxApp) target(mode string) rollback.Target {
	return rollback.Target{Namespace: a.ns, Deployment: "api", Strategy: plan.Revert, RolloutTimeout: 60 * time.Second,
		VerifyWindow: time.Second, GitOps: rollback.GitOpsPolicy{Mode: mode, Target: a.name, Owners: a.owners}}
}

func (a *fluxApp) run(mode string) (*rollback.Result, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	return a.exec.Run(ctx, rollback.Request{Target: a.target(mode), Reason: "gitops test: " + badImage + " is bad"})
}

func (a *fluxApp) watcher(pager gitops.Pager) *gitops.Watcher {
	return gitops.NewWatcher(a.owners, a.deps, pager, gitops.WatchOptions{Interval: time.Second}, zaptest.NewLogger(a.t), nil)
}

func ctxT(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// pages records the watcher's notifications.
type pages struct {
	mu sync.Mutex
	ev []notify.Event
}

func (p *pages) Enqueue(e notify.Event) { p.mu.Lock(); p.ev = append(p.ev, e); p.mu.Unlock() }
func (p *pages) has(kind notify.Kind, substr string) bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, e := range p.ev {
		if e.Kind == kind && strings.Contains(e.Summary, substr) {
			return true
		}
	}
	return false
}

// TestFluxFight: with gitops.mode ignore the real kustomize-controller
// puts the bad image back after rollguard's rollback (the time it takes is
// logged), and rollguard then refuses to fight it; with the default
// (refuse) nothing is written and the refusal names the Kustomization and
// the commit; with suspend the rollback holds while Git still deploys the
// bad image.
func TestFluxFight(t *testing.T) {
	env := sandboxenv.Load(t)
	suffix := rand.String(5)

	t.Run("ignore: the controller reverts, rollguard stops", func(t *testing.T) {
		t.Parallel()
		a := newFluxApp(t, env, "rg-flux-ignore-"+suffix)
		res, err := a.run(gitops.ModeIgnore)
		wrote := time.Now()
		if res != nil {
			for _, s := range res.Steps {
				if s.Name == rollback.StepApplication && s.Finished != nil {
					wrote = *s.Finished
				}
			}
		}
		// The run either finished before the controller's next
		// reconciliation or was stopped by it (the template fence).
		if err != nil && !errors.Is(err, rollback.ErrConcurrentChange) {
			t.Fatalf("rollback with mode ignore: %v", err)
		}
		a.waitImage(badImage, 60*time.Second)
		t.Logf("Flux kustomize-controller put %s back %.1f s after rollguard's template write (Kustomization interval %s); run error: %v",
			badImage, time.Since(wrote).Seconds(), fluxInterval, err)
		sandboxfixture.WaitRolledOut(t, a.deps, a.ns, "api")

		// The trigger fires again: rollguard must not fight, and must not
		// call it done either.
		_, err = a.run(gitops.ModeIgnore)
		var ref *rollback.RefusedError
		if !errors.As(err, &ref) || !(errors.Is(err, rollback.ErrGitOpsReverted) || errors.Is(err, rollback.ErrNeedsHuman)) {
			t.Fatalf("second rollback: err = %v, want a refusal (the GitOps controller reverted it, or the stopped run needs a human)", err)
		}
		if errors.Is(err, rollback.ErrGitOpsReverted) && !strings.Contains(err.Error(), "Flux Kustomization "+a.fluxNS+"/"+a.name) {
			t.Errorf("refusal %q does not name the Kustomization", err)
		}
		t.Logf("second firing: %v", err)
	})

	t.Run("refuse: nothing written, the page names the commit", func(t *testing.T) {
		t.Parallel()
		a := newFluxApp(t, env, "rg-flux-refuse-"+suffix)
		_, err := a.run(gitops.ModeRefuse)
		var ref *rollback.RefusedError
		if !errors.As(err, &ref) || !errors.Is(err, rollback.ErrGitOpsManaged) {
			t.Fatalf("rollback with mode refuse: err = %v, want ErrGitOpsManaged", err)
		}
		for _, want := range []string{"Flux Kustomization " + a.fluxNS + "/" + a.name, "GitRepository " + a.fluxNS + "/" + a.name, "revert commit ", "api=" + badImage} {
			if !strings.Contains(err.Error(), want) {
				t.Errorf("refusal %q lacks %q", err, want)
			}
		}
		if img, err := a.image(ctxT(t, 5*time.Second)); err != nil || img != badImage {
			t.Errorf("image = %s, %v; want %s untouched", img, err, badImage)
		}
		if s, _, _ := unstructured.NestedBool(a.kustomization(ctxT(t, 5*time.Second)).Object, "spec", "suspend"); s {
			t.Error("refuse suspended the Kustomization")
		}
	})

	t.Run("suspend: no fight, then resume-gitops", func(t *testing.T) {
		t.Parallel()
		a := newFluxApp(t, env, "rg-flux-suspend-"+suffix)
		before := a.kustomization(ctxT(t, 5*time.Second))
		res, err := a.run(gitops.ModeSuspend)
		if err != nil {
			t.Fatalf("rollback with mode suspend: %v", err)
		}
		var names []string
		for _, s := range res.Steps {
			names = append(names, s.Name)
		}
		if names[1] != rollback.StepGitOpsSuspend || names[len(names)-1] != rollback.StepGitOpsCheck {
			t.Errorf("steps %v: want %s second and %s last", names, rollback.StepGitOpsSuspend, rollback.StepGitOpsCheck)
		}
		t.Logf("suspend step: %s", res.Steps[1].Detail)
		// Git still deploys the bad image: hold for five of the
		// controller's intervals and check it never comes back.
		hold := time.Now().Add(10 * time.Second)
		for time.Now().Before(hold) {
			if img, err := a.image(ctxT(t, 5*time.Second)); err != nil || img != goodImage {
				t.Fatalf("during the hold the image became %s (%v): the controller fought the rollback", img, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
		k := a.kustomization(ctxT(t, 5*time.Second))
		if s, _, _ := unstructured.NestedBool(k.Object, "spec", "suspend"); !s {
			t.Fatal("kustomization not suspended after the run")
		}
		w := a.watcher(nil)
		w.SetTargets([]gitops.WatchTarget{{Name: a.name, Namespace: a.ns, Deployment: "api", Mode: gitops.ModeSuspend}})
		w.Tick(ctxT(t, 10*time.Second))
		if st, _ := w.Status(a.name); !st.ByRollguard || st.Owner != "Flux Kustomization "+a.fluxNS+"/"+a.name {
			t.Fatalf("watcher status %+v: want suspended by rollguard", st)
		}

		if _, err := w.Resume(ctxT(t, 10*time.Second), a.name, "test: a human lifts it"); err != nil {
			t.Fatalf("resume-gitops: %v", err)
		}
		after := a.kustomization(ctxT(t, 5*time.Second))
		if _, found, _ := unstructured.NestedFieldNoCopy(after.Object, "spec", "suspend"); found {
			t.Errorf("spec.suspend still set after resume: the Kustomization had none")
		}
		if _, ok := after.GetAnnotations()[gitops.MarkAnnotation]; ok {
			t.Error("rollguard's mark still on the Kustomization after resume")
		}
		beforeSpec, _, _ := unstructured.NestedMap(before.Object, "spec")
		afterSpec, _, _ := unstructured.NestedMap(after.Object, "spec")
		if fmt.Sprint(beforeSpec) != fmt.Sprint(afterSpec) {
			t.Errorf("spec after resume %v, want as before %v", afterSpec, beforeSpec)
		}
		// Git was not fixed: the controller applies the bad image again.
		a.waitImage(badImage, 60*time.Second)
		w.Tick(ctxT(t, 10*time.Second))
		if st, _ := w.Status(a.name); st.ByRollguard || st.Suspended {
			t.Errorf("watcher status after resume %+v: want not suspended", st)
		}
	})

	t.Run("suspend: Git moves on with the fix, the suspension lifts itself", func(t *testing.T) {
		t.Parallel()
		a := newFluxApp(t, env, "rg-flux-fixed-"+suffix)
		if _, err := a.run(gitops.ModeSuspend); err != nil {
			t.Fatalf("rollback with mode suspend: %v", err)
		}
		p := &pages{}
		w := a.watcher(p)
		w.SetTargets([]gitops.WatchTarget{{Name: a.name, Namespace: a.ns, Deployment: "api", Mode: gitops.ModeSuspend}})
		fix := a.git.Commit(t, "revert "+badImage, map[string]string{"app/deployment.yaml": deploymentYAML(a.ns, goodImage, "")})
		sandboxfixture.WaitFor(t, "watcher lifts after the fix and ends its watch", 60*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			w.Tick(ctx)
			k := a.kustomization(ctx)
			_, marked := k.GetAnnotations()[gitops.MarkAnnotation]
			s, _, _ := unstructured.NestedBool(k.Object, "spec", "suspend")
			applied, _, _ := unstructured.NestedString(k.Object, "status", "lastAppliedRevision")
			return !marked && !s && strings.HasSuffix(applied, fix), fmt.Sprintf("marked %v suspended %v applied %s", marked, s, applied), nil
		})
		if !p.has(notify.KindDetected, "lifted its suspension") {
			t.Errorf("no page about the lift; pages: %+v", p.ev)
		}
		if img, err := a.image(ctxT(t, 5*time.Second)); err != nil || img != goodImage {
			t.Errorf("image = %s (%v), want %s", img, err, goodImage)
		}
	})

	t.Run("suspend: Git moves on still bad, suspended again once, then paged", func(t *testing.T) {
		t.Parallel()
		a := newFluxApp(t, env, "rg-flux-stillbad-"+suffix)
		if _, err := a.run(gitops.ModeSuspend); err != nil {
			t.Fatalf("rollback with mode suspend: %v", err)
		}
		p := &pages{}
		w := a.watcher(p)
		w.SetTargets([]gitops.WatchTarget{{Name: a.name, Namespace: a.ns, Deployment: "api", Mode: gitops.ModeSuspend}})
		// A commit that changes something else and keeps the bad image.
		a.git.Commit(t, "unrelated change", map[string]string{"app/README": "docs\n"})
		sandboxfixture.WaitFor(t, "suspended again after the bad image came back", 60*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			w.Tick(ctx)
			o, err := a.owners.Get(ctx, gitops.Ref{Tool: gitops.Flux, Kind: gitops.KindKustomization, Namespace: a.fluxNS, Name: a.name})
			if err != nil || o.Mark == nil {
				return false, "no mark", err
			}
			return o.Suspended && o.Mark.Resuspended == 1, fmt.Sprintf("suspended %v mark %+v", o.Suspended, *o.Mark), nil
		})
		if !p.has(notify.KindCannotRollback, "suspended it again (once)") {
			t.Errorf("no page about the re-suspension; pages: %+v", p.ev)
		}
		// And once more: no third suspension, a page.
		a.git.Commit(t, "another change, still bad", map[string]string{"app/README": "more docs\n"})
		sandboxfixture.WaitFor(t, "lifted and paged, not suspended a second time", 60*time.Second, 500*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			w.Tick(ctx)
			o, err := a.owners.Get(ctx, gitops.Ref{Tool: gitops.Flux, Kind: gitops.KindKustomization, Namespace: a.fluxNS, Name: a.name})
			if err != nil {
				return false, "", err
			}
			return o.Mark == nil && !o.Suspended && p.has(notify.KindCannotRollback, "back again"), fmt.Sprintf("suspended %v mark %v", o.Suspended, o.Mark != nil), nil
		})
		if img, err := a.image(ctxT(t, 5*time.Second)); err != nil || img != badImage {
			t.Errorf("image = %s (%v): rollguard must not roll back again", img, err)
		}
	})
}
