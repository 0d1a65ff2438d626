package rollback_test

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/resource"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

const deployName = "pggit-api"

type sandbox struct {
	client kubernetes.Interface
	kube   *kube.Deployments
	ns     string
	simURL string
	logger *zap.Logger
}

// newSandbox creates a namespace of the test's own with pggit-api rolled
// from v1.0.3 to v1.1.0, 4 replicas, simulated.
func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	s := newSandboxBeforeDeploy(t)
	s.shipBad(t)
	return s
}

// shipBad deploys the bad version (after the pre-deploy dump a database
// test takes: the restore refuses a dump taken after the deploy).
func (s *sandbox) shipBad(t *testing.T) {
	t.Helper()
	sandboxfixture.RollThrough(t, s.client, s.kube, s.ns, deployName, "pggit-api:v1.1.0")
}

// newSandboxBeforeDeploy is newSandbox with only the good version rolled
// out.
func newSandboxBeforeDeploy(t *testing.T) *sandbox {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	env := sandboxenv.Load(t)
	client := sandboxfixture.Kube(t, env)
	logger := zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))
	s := &sandbox{client: client, ns: "rg-rollback-" + rand.String(6), simURL: env["SIM_URL"], logger: logger,
		kube: kube.New(client, kube.Options{PollInterval: 100 * time.Millisecond}, logger)}
	sandboxfixture.Namespace(t, client, s.ns)
	sandboxfixture.CreateDeployment(t, client, sandboxfixture.Simulated(sandboxfixture.Deployment(s.ns, deployName, "pggit-api:v1.0.3", 4)))
	return s
}

func (s *sandbox) waitComplete(t *testing.T) {
	t.Helper()
	sandboxfixture.WaitRolledOut(t, s.kube, s.ns, deployName)
}

func (s *sandbox) setImage(t *testing.T, image string) {
	t.Helper()
	sandboxfixture.SetImage(t, s.client, s.ns, deployName, image)
}

func (s *sandbox) get(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d, err := s.client.AppsV1().Deployments(s.ns).Get(context.Background(), deployName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	return d
}

func (s *sandbox) target() rollback.Target {
	tg := rollback.Target{
		Namespace: s.ns, Deployment: deployName, Containers: []string{"api"},
		RampSteps: []int32{2}, RampPause: time.Second, RolloutTimeout: 60 * time.Second, VerifyWindow: 10 * time.Second,
	}
	if s.simURL != "" {
		tg.HealthURL = fmt.Sprintf("%s/health/%s/%s", s.simURL, s.ns, deployName)
	}
	return tg
}

func (s *sandbox) executor(obs rollback.Observer) *rollback.Executor {
	return rollback.NewExecutor(s.kube, s.client.CoreV1(), rollback.Options{Observer: obs, PollInterval: 500 * time.Millisecond}, s.logger)
}

// assertRolledBack checks v1.0.3 runs with 4 Ready replicas and the
// rollout is complete.
func (s *sandbox) assertRolledBack(t *testing.T) {
	t.Helper()
	s.waitComplete(t)
	d := s.get(t)
	if img := d.Spec.Template.Spec.Containers[0].Image; img != "pggit-api:v1.0.3" || *d.Spec.Replicas != 4 || d.Status.ReadyReplicas != 4 {
		t.Fatalf("deployment runs %s, spec %d, ready %d; want pggit-api:v1.0.3 with 4 ready", img, *d.Spec.Replicas, d.Status.ReadyReplicas)
	}
}

func TestIntegrationQuick(t *testing.T) {
	s := newSandbox(t)
	ctx := context.Background()
	obs := &recorder{}
	res, err := s.executor(obs).Run(ctx, rollback.Request{Target: s.target(), Reason: "integration"})
	if err != nil {
		t.Fatalf("quick: %v\nobserver: %v", err, obs.events)
	}
	s.assertRolledBack(t)
	if res.Pinned.Revision != 1 || res.Bad.Revision != 2 || res.Pinned.Hash == "" || res.Bad.Hash == "" {
		t.Errorf("pinned %+v bad rev %d", res.Pinned, res.Bad.Revision)
	}
	evs, err := s.client.CoreV1().Events(s.ns).List(ctx, metav1.ListOptions{FieldSelector: "reason=" + kube.ReasonStepSucceeded})
	if err != nil || len(evs.Items) != 5 {
		t.Errorf("step events: %d %v", len(evs.Items), err)
	}

	// A second firing for the same bad revision changes nothing.
	before := s.get(t).ResourceVersion
	_, err = s.executor(nil).Run(ctx, rollback.Request{Target: s.target()})
	if !errors.Is(err, rollback.ErrAlreadyRolledBack) {
		t.Fatalf("second run: %v", err)
	}
	if after := s.get(t).ResourceVersion; after != before {
		t.Errorf("second run changed the deployment: rv %s -> %s", before, after)
	}
}

// Revert never takes the service down: ready replicas stay at or above
// spec - maxUnavailable (25 % of 4 = 1) with the Deployment's own pace and
// with maxSurge raised to 100 %; the raised value really starts the whole
// good version at once (the controller asks its ReplicaSets for up to 8
// Pods, not 5) and is put back after. The peak is read from the
// ReplicaSets' spec.replicas, which the controller keeps within spec +
// maxSurge; the Deployment's status.replicas adds up ReplicaSet statuses of
// different moments and may briefly show more.
func TestIntegrationRevertKeepsServing(t *testing.T) {
	all := intstr.FromString("100%")
	tests := []struct {
		name             string
		surge            *intstr.IntOrString
		minPeak, maxPeak int32
		// podQuota, when set, is a ResourceQuota on the namespace's Pods:
		// the surge is asked for but only as many Pods as fit exist.
		podQuota int64
	}{
		{name: "deployment's pace", minPeak: 5, maxPeak: 5},
		{name: "surge 100%", surge: &all, minPeak: 7, maxPeak: 8},
		// docs/configuration.md: without room for the second copy the
		// rollout goes as fast as Pods fit; it must still finish, serving.
		{name: "surge 100% with room for one more pod", surge: &all, minPeak: 7, maxPeak: 8, podQuota: 5},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s := newSandbox(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			if tt.podQuota > 0 {
				s.podQuota(t, tt.podQuota)
			}
			d := s.get(t)
			before := kube.SurgeString(kube.MaxSurge(d))
			w, err := s.client.AppsV1().Deployments(s.ns).Watch(ctx, metav1.ListOptions{
				FieldSelector: fields.OneTermEqualSelector("metadata.name", deployName).String(), ResourceVersion: d.ResourceVersion})
			if err != nil {
				t.Fatal(err)
			}
			rsList, err := s.client.AppsV1().ReplicaSets(s.ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			rsw, err := s.client.AppsV1().ReplicaSets(s.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: rsList.ResourceVersion})
			if err != nil {
				t.Fatal(err)
			}
			var (
				mu      sync.Mutex
				minimum = d.Status.ReadyReplicas
				asked   = map[string]int32{} // ReplicaSet → spec.replicas
				peak    int32
				seen    int
				// Pods that exist, terminating ones included (the quota
				// counts them), from one ordered watch stream.
				pods     = map[string]bool{}
				peakPods int
			)
			for _, rs := range rsList.Items {
				asked[rs.Name] = *rs.Spec.Replicas
			}
			podList, err := s.client.CoreV1().Pods(s.ns).List(ctx, metav1.ListOptions{})
			if err != nil {
				t.Fatal(err)
			}
			for _, p := range podList.Items {
				pods[p.Name] = true
			}
			peakPods = len(pods)
			pw, err := s.client.CoreV1().Pods(s.ns).Watch(ctx, metav1.ListOptions{ResourceVersion: podList.ResourceVersion})
			if err != nil {
				t.Fatal(err)
			}
			done := make(chan struct{}, 3)
			go func() {
				defer func() { done <- struct{}{} }()
				for ev := range pw.ResultChan() {
					if p, ok := ev.Object.(*corev1.Pod); ok {
						mu.Lock()
						switch ev.Type {
						case watch.Added:
							pods[p.Name] = true
						case watch.Deleted:
							delete(pods, p.Name)
						}
						peakPods = max(peakPods, len(pods))
						mu.Unlock()
					}
				}
			}()
			go func() {
				defer func() { done <- struct{}{} }()
				for ev := range w.ResultChan() {
					if dep, ok := ev.Object.(*appsv1.Deployment); ok && ev.Type == watch.Modified {
						mu.Lock()
						seen++
						minimum = min(minimum, dep.Status.ReadyReplicas)
						mu.Unlock()
					}
				}
			}()
			go func() {
				defer func() { done <- struct{}{} }()
				for ev := range rsw.ResultChan() {
					if rs, ok := ev.Object.(*appsv1.ReplicaSet); ok && rs.Spec.Replicas != nil {
						mu.Lock()
						asked[rs.Name] = *rs.Spec.Replicas
						var sum int32
						for _, n := range asked {
							sum += n
						}
						peak = max(peak, sum)
						mu.Unlock()
					}
				}
			}()
			tg := s.target()
			tg.Strategy, tg.RevertMaxSurge = plan.Revert, tt.surge
			res, err := s.executor(nil).Run(ctx, rollback.Request{Target: tg})
			if err != nil {
				t.Fatal(err)
			}
			s.assertRolledBack(t)
			w.Stop()
			rsw.Stop()
			pw.Stop()
			<-done
			<-done
			<-done
			mu.Lock()
			defer mu.Unlock()
			if seen == 0 {
				t.Fatal("watch saw no updates")
			}
			if minimum < 3 {
				t.Errorf("ready replicas dropped to %d, below spec - maxUnavailable = 3", minimum)
			}
			if peak < tt.minPeak || peak > tt.maxPeak {
				t.Errorf("pods asked of the ReplicaSets at the peak of the rollout = %d, want %d..%d", peak, tt.minPeak, tt.maxPeak)
			}
			if tt.podQuota > 0 && int64(peakPods) > tt.podQuota {
				t.Errorf("%d pods at once under a quota of %d: the quota did not hold, the case tests nothing", peakPods, tt.podQuota)
			}
			if after := kube.SurgeString(kube.MaxSurge(s.get(t))); after != before || before != "25%" {
				t.Errorf("maxSurge %s before, %s after; want the API default 25%% both times", before, after)
			}
			var names []string
			for _, st := range res.Steps {
				names = append(names, st.Name)
			}
			t.Logf("steps %v, pods asked at the peak %d, pods at once at most %d, ready at least %d", names, peak, peakPods, minimum)
		})
	}
}

// podQuota puts a ResourceQuota of n Pods on the namespace and waits until
// the quota controller has counted its usage: before that, the admission
// plugin refuses every Pod.
func (s *sandbox) podQuota(t *testing.T, n int64) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	q := &corev1.ResourceQuota{ObjectMeta: metav1.ObjectMeta{Name: "pods", Namespace: s.ns},
		Spec: corev1.ResourceQuotaSpec{Hard: corev1.ResourceList{corev1.ResourcePods: *resource.NewQuantity(n, resource.DecimalSI)}}}
	if _, err := s.client.CoreV1().ResourceQuotas(s.ns).Create(ctx, q, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	for {
		got, err := s.client.CoreV1().ResourceQuotas(s.ns).Get(ctx, q.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if used, ok := got.Status.Used[corev1.ResourcePods]; ok && used.Value() == 4 {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("resource quota %s/%s: usage not counted: %v", s.ns, q.Name, got.Status)
		case <-time.After(100 * time.Millisecond):
		}
	}
}

func TestIntegrationKillMidPlanAndRerun(t *testing.T) {
	tests := []struct{ kind, step string }{
		// Killed between steps: after step k finished.
		{"step-finished", "stop"}, {"step-finished", "application"}, {"step-finished", "wait-rollout"}, {"step-finished", "ramp"},
		// Killed inside a step, 300 ms after it started.
		{"step-started", "wait-rollout"}, {"step-started", "ramp"},
	}
	for _, tt := range tests {
		t.Run(tt.kind+"-"+tt.step, func(t *testing.T) {
			s := newSandbox(t)
			ctx, cancel := context.WithCancel(context.Background())
			defer cancel()
			obs := &recorder{hook: func(kind string, f rollback.Facts) {
				if kind == tt.kind && f.Step == tt.step {
					if kind == "step-started" {
						time.AfterFunc(300*time.Millisecond, cancel)
						return
					}
					cancel()
				}
			}}
			_, err := s.executor(obs).Run(ctx, rollback.Request{Target: s.target()})
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("first run: %v, want canceled", err)
			}
			res, err := s.executor(nil).Run(context.Background(), rollback.Request{Target: s.target()})
			if err != nil {
				t.Fatalf("rerun: %v", err)
			}
			if !res.Resumed || res.State != rollback.RunSucceeded || res.Replicas != 4 {
				t.Errorf("rerun result %+v", res)
			}
			s.assertRolledBack(t)
		})
	}
}

func TestIntegrationConcurrentSetImage(t *testing.T) {
	s := newSandbox(t)
	obs := &recorder{hook: func(kind string, f rollback.Facts) {
		if kind == "step-started" && f.Step == "application" {
			s.setImage(t, "pggit-api:v1.2.0")
		}
	}}
	_, err := s.executor(obs).Run(context.Background(), rollback.Request{Target: s.target()})
	var cc *kube.ConcurrentChangeError
	if !errors.As(err, &cc) || cc.Field != "spec.template" || !errors.Is(err, rollback.ErrConcurrentChange) {
		t.Fatalf("err = %v, want concurrent change of spec.template", err)
	}
	if img := s.get(t).Spec.Template.Spec.Containers[0].Image; img != "pggit-api:v1.2.0" {
		t.Errorf("image %s: the other writer's change was overwritten", img)
	}
}

func TestIntegrationDryRunWritesNothing(t *testing.T) {
	s := newSandbox(t)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	// Let the controller settle so its own status writes do not count.
	time.Sleep(time.Second)
	d := s.get(t)
	w, err := s.client.AppsV1().Deployments(s.ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", deployName).String(), ResourceVersion: d.ResourceVersion})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Stop()
	evsBefore, _ := s.client.CoreV1().Events(s.ns).List(ctx, metav1.ListOptions{})
	for _, action := range []plan.Name{plan.Quick, plan.Revert} {
		obs := &recorder{}
		res, err := s.executor(obs).Run(ctx, rollback.Request{Target: s.target(), Action: action, DryRun: true})
		if err != nil {
			t.Fatal(err)
		}
		if len(res.Steps) < 4 || !strings.HasPrefix(res.Steps[1].Detail, "dry-run: would ") {
			t.Errorf("%s steps %+v", action, res.Steps)
		}
	}
	select {
	case ev := <-w.ResultChan():
		t.Fatalf("dry-run changed the deployment: %s", ev.Type)
	case <-time.After(2 * time.Second):
	}
	if after := s.get(t).ResourceVersion; after != d.ResourceVersion {
		t.Errorf("resourceVersion %s -> %s", d.ResourceVersion, after)
	}
	cms, _ := s.client.CoreV1().ConfigMaps(s.ns).List(ctx, metav1.ListOptions{LabelSelector: rollback.LabelJournal + "=true"})
	if len(cms.Items) != 0 {
		t.Errorf("dry-run wrote a journal")
	}
	evsAfter, _ := s.client.CoreV1().Events(s.ns).List(ctx, metav1.ListOptions{})
	if len(evsAfter.Items) != len(evsBefore.Items) {
		t.Errorf("dry-run recorded events: %d -> %d", len(evsBefore.Items), len(evsAfter.Items))
	}
}
