package deploy

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	autoscalingv1 "k8s.io/api/autoscaling/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// fieldManager owns what these tests apply, so re-runs never conflict.
const fieldManager = "rollguard-deploy-test"

// TestInstallOnSandbox applies both overlays for real, then checks the
// ServiceAccount's rights with kubectl auth can-i and, under its own token,
// with client-go. Production is applied last and left installed (apply is
// idempotent), so later tests can act as rollguard.
func TestInstallOnSandbox(t *testing.T) {
	env := sandboxenv.Load(t)
	kubeconfig := env.Get(t, "KUBECONFIG")
	kubectlBin := filepath.Join(env.Get(t, "SANDBOX_BIN_DIR"), "kubectl")
	admin := clientsetFor(t, kubeconfig)

	byName := map[string]overlay{}
	for _, o := range overlays() {
		byName[o.name] = o
	}
	for _, name := range []string{"staging", "production"} {
		if !t.Run("apply/"+name, func(t *testing.T) {
			applyOverlay(t, admin, kubectlBin, kubeconfig, byName[name])
		}) {
			return
		}
	}
	t.Run("pod security enforced", func(t *testing.T) { podSecurityEnforced(t, admin) })
	t.Run("can-i", func(t *testing.T) { canI(t, kubectlBin, kubeconfig) })
	t.Run("serviceaccount token", func(t *testing.T) {
		saKubeconfig := filepath.Join(t.TempDir(), "rollguard.kubeconfig")
		script := filepath.Join(repoRoot(t), "test", "sandbox", "sa-kubeconfig")
		if out, stderr, err := run(t, 30*time.Second, nil, script, installNamespace, serviceAccount, saKubeconfig, "10m"); err != nil {
			t.Fatalf("sa-kubeconfig: %v\n%s%s", err, out, stderr)
		}
		actAsServiceAccount(t, admin, clientsetFor(t, saKubeconfig))
	})
}

func clientsetFor(t *testing.T, kubeconfig string) *kubernetes.Clientset {
	t.Helper()
	cfg, err := clientcmd.BuildConfigFromFlags("", kubeconfig)
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", kubeconfig, err)
	}
	cfg.Timeout = 15 * time.Second
	cs, err := kubernetes.NewForConfig(cfg)
	if err != nil {
		t.Fatalf("clientset for %s: %v", kubeconfig, err)
	}
	return cs
}

func ctxTimeout(t *testing.T, d time.Duration) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	t.Cleanup(cancel)
	return ctx
}

// applyOverlay server-side applies one overlay and checks that every
// rendered object was applied, that Pod Security had nothing to warn
// about, and that the ReplicaSet controller could create the pods (the
// rollguard namespace enforces "restricted", so a pod the standard refuses
// is never created).
func applyOverlay(t *testing.T, admin *kubernetes.Clientset, kubectlBin, kubeconfig string, o overlay) {
	dir := filepath.Join(repoRoot(t), "deploy", "overlays", o.name)

	// The overlays grant rights in the targets' namespaces but do not own
	// them (the applications do); on the sandbox they may not exist yet.
	cfgTargets := renderInstall(t, o).cfg.Targets
	for _, tg := range cfgTargets {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: tg.Namespace}}
		_, err := admin.CoreV1().Namespaces().Create(ctxTimeout(t, 10*time.Second), ns, metav1.CreateOptions{})
		if err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create target namespace %s: %v", tg.Namespace, err)
		}
	}

	want := render(t, filepath.Join("deploy", "overlays", o.name))
	stdout, stderr, err := run(t, 60*time.Second, nil, kubectlBin, "--kubeconfig", kubeconfig, "--request-timeout=30s",
		"apply", "--server-side", "--field-manager="+fieldManager, "-k", dir)
	if err != nil {
		t.Fatalf("kubectl apply --server-side -k %s: %v\n%s%s", dir, err, stdout, stderr)
	}
	if strings.Contains(stderr, "Warning:") {
		t.Errorf("kubectl apply warned:\n%s", stderr)
	}
	var applied []string
	for _, line := range strings.Split(strings.TrimSpace(stdout), "\n") {
		if obj, ok := strings.CutSuffix(line, " serverside-applied"); ok {
			applied = append(applied, obj)
		}
	}
	if len(applied) != len(want) {
		t.Errorf("applied %d objects, rendered %d:\n%s", len(applied), len(want), stdout)
	}

	ctx := ctxTimeout(t, 60*time.Second)
	dep, err := admin.AppsV1().Deployments(installNamespace).Get(ctx, deploymentName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", installNamespace, deploymentName, err)
	}
	if got := ptrVal(dep.Spec.Replicas, 1); got != o.replicas {
		t.Errorf("deployment %s/%s replicas = %d, want %d", installNamespace, deploymentName, got, o.replicas)
	}
	cm, err := admin.CoreV1().ConfigMaps(installNamespace).Get(ctx, configMapName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get configmap %s/%s: %v", installNamespace, configMapName, err)
	}
	src := find(t, want, "ConfigMap", installNamespace, configMapName)
	if wantData, _, _ := unstructuredString(src.Object, "data", configKey); cm.Data[configKey] != wantData {
		t.Errorf("configmap %s/%s does not hold the %s config", installNamespace, configMapName, o.name)
	}
	waitPodsCreated(t, ctx, admin, dep)
}

func unstructuredString(obj map[string]any, fields ...string) (string, bool, error) {
	cur := any(obj)
	for _, f := range fields {
		m, ok := cur.(map[string]any)
		if !ok {
			return "", false, fmt.Errorf("%s is not a map", f)
		}
		cur = m[f]
	}
	s, ok := cur.(string)
	return s, ok, nil
}

// waitPodsCreated waits until the Deployment's newest ReplicaSet has
// created all its pods, failing at once on a ReplicaFailure (admission
// refused a pod).
func waitPodsCreated(t *testing.T, ctx context.Context, admin *kubernetes.Clientset, dep *appsv1.Deployment) {
	t.Helper()
	for {
		d, err := admin.AppsV1().Deployments(dep.Namespace).Get(ctx, dep.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get deployment %s/%s: %v", dep.Namespace, dep.Name, err)
		}
		rev := d.Annotations["deployment.kubernetes.io/revision"]
		rss, err := admin.AppsV1().ReplicaSets(dep.Namespace).List(ctx, metav1.ListOptions{})
		if err != nil {
			t.Fatalf("list replicasets in %s: %v", dep.Namespace, err)
		}
		done := false
		for _, rs := range rss.Items {
			if !metav1.IsControlledBy(&rs, d) {
				continue
			}
			for _, c := range rs.Status.Conditions {
				if c.Type == appsv1.ReplicaSetReplicaFailure && c.Status == corev1.ConditionTrue {
					t.Fatalf("replicaset %s/%s cannot create pods: %s: %s", rs.Namespace, rs.Name, c.Reason, c.Message)
				}
			}
			if rev != "" && rs.Annotations["deployment.kubernetes.io/revision"] == rev &&
				ptrVal(rs.Spec.Replicas, 0) > 0 && rs.Status.Replicas == ptrVal(rs.Spec.Replicas, 0) {
				done = true
			}
		}
		if done {
			return
		}
		select {
		case <-ctx.Done():
			t.Fatalf("deployment %s/%s: the newest replicaset did not create its pods: %v", dep.Namespace, dep.Name, ctx.Err())
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// podSecurityEnforced proves the check above means something: the API
// server refuses a pod that breaks "restricted" in rollguard's namespace.
func podSecurityEnforced(t *testing.T, admin *kubernetes.Clientset) {
	pod := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "rollguard-psa-probe-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/probe:1"}}},
	}
	_, err := admin.CoreV1().Pods(installNamespace).Create(ctxTimeout(t, 10*time.Second), pod, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted`) {
		t.Errorf("dry-run create of an unrestricted pod in %s: err = %v, want forbidden by PodSecurity restricted", installNamespace, err)
	}
}

// canI asks the API server, impersonating rollguard's ServiceAccount.
func canI(t *testing.T, kubectlBin, kubeconfig string) {
	as := "--as=system:serviceaccount:" + installNamespace + ":" + serviceAccount
	tests := []struct {
		verb, resource, ns string
		extra              []string
		want               bool
	}{
		// What rollguard does in a target's namespace.
		{"get", "deployments.apps", "production", nil, true},
		{"list", "deployments.apps", "production", nil, true},
		{"watch", "deployments.apps", "production", nil, true},
		{"patch", "deployments.apps", "production", nil, true},
		{"update", "deployments.apps", "production", nil, true},
		{"get", "deployments.apps", "production", []string{"--subresource=scale"}, true},
		{"patch", "deployments.apps", "production", []string{"--subresource=scale"}, true},
		{"update", "deployments.apps", "production", []string{"--subresource=scale"}, true},
		{"get", "replicasets.apps", "production", nil, true},
		{"list", "replicasets.apps", "production", nil, true},
		{"watch", "replicasets.apps", "production", nil, true},
		{"list", "pods", "production", nil, true},
		{"create", "events", "production", nil, true},
		{"patch", "events", "production", nil, true},
		{"get", "configmaps", "production", nil, true},
		{"create", "configmaps", "production", nil, true},
		{"update", "configmaps", "production", nil, true},
		// The staging overlay grants the same in staging.
		{"update", "deployments.apps", "staging", []string{"--subresource=scale"}, true},
		// Leader election in its own namespace, on its one Lease.
		{"create", "leases.coordination.k8s.io", "rollguard", nil, true},
		{"get", "leases.coordination.k8s.io/rollguard", "rollguard", nil, true},
		{"update", "leases.coordination.k8s.io/rollguard", "rollguard", nil, true},
		// Its own state in its own namespace: incident records, pending
		// pages, the alerts taken up; retention deletes old records.
		{"get", "configmaps", "rollguard", nil, true},
		{"list", "configmaps", "rollguard", nil, true},
		{"create", "configmaps", "rollguard", nil, true},
		{"update", "configmaps", "rollguard", nil, true},
		{"delete", "configmaps", "rollguard", nil, true},

		// Never: delete, create workloads, secrets, exec, other namespaces,
		// cluster scope.
		{"delete", "deployments.apps", "production", nil, false},
		{"deletecollection", "deployments.apps", "production", nil, false},
		{"create", "deployments.apps", "production", nil, false},
		{"delete", "replicasets.apps", "production", nil, false},
		{"delete", "configmaps", "production", nil, false},
		{"list", "configmaps", "production", nil, false},
		{"get", "secrets", "production", nil, false},
		{"list", "secrets", "production", nil, false},
		{"get", "secrets", "rollguard", nil, false},
		{"create", "pods", "production", []string{"--subresource=exec"}, false},
		{"create", "pods", "production", nil, false},
		{"delete", "pods", "production", nil, false},
		{"get", "pods", "production", nil, false},
		{"watch", "pods", "production", nil, false},
		{"list", "pods", "kube-system", nil, false},
		{"update", "leases.coordination.k8s.io/other", "rollguard", nil, false},
		{"delete", "leases.coordination.k8s.io/rollguard", "rollguard", nil, false},
		{"get", "deployments.apps", "rollguard", nil, false},
		{"get", "deployments.apps", "kube-system", nil, false},
		{"get", "configmaps", "kube-system", nil, false},
		// The state rights stop at rollguard's namespace.
		{"watch", "configmaps", "rollguard", nil, false},
		{"deletecollection", "configmaps", "rollguard", nil, false},
		{"patch", "configmaps", "rollguard", nil, false},
		{"list", "configmaps", "kube-system", nil, false},
		{"delete", "configmaps", "default", nil, false},
		{"create", "configmaps", "kube-public", nil, false},
		{"create", "leases.coordination.k8s.io", "kube-system", nil, false},
		{"patch", "deployments.apps", "default", nil, false},
		{"create", "configmaps", "default", nil, false},
		{"create", "events", "default", nil, false},
		{"list", "deployments.apps", "", []string{"--all-namespaces"}, false},
		{"list", "nodes", "", nil, false},
		{"create", "namespaces", "", nil, false},
		{"create", "clusterrolebindings.rbac.authorization.k8s.io", "", nil, false},
		{"bind", "roles.rbac.authorization.k8s.io", "production", nil, false},
		{"*", "*", "production", nil, false},
	}
	for _, tt := range tests {
		name := strings.Join(slices.Concat([]string{tt.verb, tt.resource}, tt.extra), " ")
		if tt.ns != "" {
			name += " -n " + tt.ns
		}
		t.Run(name, func(t *testing.T) {
			args := slices.Concat([]string{tt.verb, tt.resource, as}, tt.extra)
			if tt.ns != "" {
				args = append(args, "-n", tt.ns)
			}
			got, answer := askCanI(t, kubectlBin, kubeconfig, args...)
			if got != tt.want {
				t.Errorf("can-i = %v, want %v (%s)", got, tt.want, answer)
			}
		})
	}
}

// askCanI asks kubectl auth can-i with args (verb, resource, flags) and
// returns its answer. can-i exits 0 for yes and 1 for no; anything else,
// or another answer, is an error of the question, not a "no", and fails
// the test.
func askCanI(t *testing.T, kubectlBin, kubeconfig string, args ...string) (yes bool, answer string) {
	t.Helper()
	stdout, stderr, err := run(t, 20*time.Second, nil, kubectlBin, slices.Concat([]string{"--kubeconfig", kubeconfig, "--request-timeout=10s", "auth", "can-i"}, args)...)
	answer = strings.TrimSpace(stdout)
	switch {
	case answer == "yes" && err == nil:
		return true, answer
	case strings.HasPrefix(answer, "no") && exitCode(err) == 1:
		return false, answer
	}
	t.Fatalf("kubectl auth can-i: %q, err %v\n%s", answer, err, stderr)
	return false, answer
}

func exitCode(err error) int {
	var ee interface{ ExitCode() int }
	if errors.As(err, &ee) {
		return ee.ExitCode()
	}
	return -1
}

// actAsServiceAccount does, under rollguard's own token, what a rollback
// does to a Deployment, and what it must never be able to do. The probe
// Deployment is paused, so scaling it creates no pods.
func actAsServiceAccount(t *testing.T, admin, sa *kubernetes.Clientset) {
	const ns = "production"
	probe := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "rollguard-rbac-probe-", Namespace: ns},
		Spec: appsv1.DeploymentSpec{
			Replicas: new(int32),
			Paused:   true,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "rollguard-rbac-probe"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "rollguard-rbac-probe"}},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "registry.invalid/probe:1"}}},
			},
		},
	}
	dep, err := admin.AppsV1().Deployments(ns).Create(ctxTimeout(t, 10*time.Second), probe, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create probe deployment: %v", err)
	}
	journal := dep.Name + "-journal"
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := admin.AppsV1().Deployments(ns).Delete(ctx, dep.Name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: delete deployment %s/%s: %v", ns, dep.Name, err)
		}
		if err := admin.CoreV1().ConfigMaps(ns).Delete(ctx, journal, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: delete configmap %s/%s: %v", ns, journal, err)
		}
	})

	deps := sa.AppsV1().Deployments(ns)
	cms := sa.CoreV1().ConfigMaps(ns)
	var scale *autoscalingv1.Scale
	var cm *corev1.ConfigMap
	steps := []struct {
		name      string
		do        func(ctx context.Context) error
		forbidden bool
	}{
		{"get deployment", func(ctx context.Context) error { _, err := deps.Get(ctx, dep.Name, metav1.GetOptions{}); return err }, false},
		{"list replicasets", func(ctx context.Context) error {
			_, err := sa.AppsV1().ReplicaSets(ns).List(ctx, metav1.ListOptions{})
			return err
		}, false},
		{"get scale", func(ctx context.Context) (err error) {
			scale, err = deps.GetScale(ctx, dep.Name, metav1.GetOptions{})
			if err == nil && scale.Spec.Replicas != 0 {
				return fmt.Errorf("scale replicas = %d, want 0", scale.Spec.Replicas)
			}
			return err
		}, false},
		{"update scale to 2", func(ctx context.Context) error {
			// Read again: a retry after a 409 must not resend a stale object.
			fresh, err := deps.GetScale(ctx, dep.Name, metav1.GetOptions{})
			if err != nil {
				return err
			}
			s := fresh.DeepCopy()
			s.Spec.Replicas = 2
			_, err = deps.UpdateScale(ctx, dep.Name, s, metav1.UpdateOptions{})
			return err
		}, false},
		{"patch freeze annotation", func(ctx context.Context) error {
			_, err := deps.Patch(ctx, dep.Name, types.MergePatchType, []byte(`{"metadata":{"annotations":{"rollguard.io/freeze":"true"}}}`), metav1.PatchOptions{})
			return err
		}, false},
		{"create journal configmap", func(ctx context.Context) (err error) {
			cm, err = cms.Create(ctx, &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: journal}, Data: map[string]string{"journal.json": "{}"}}, metav1.CreateOptions{})
			return err
		}, false},
		{"update journal configmap", func(ctx context.Context) error {
			c := cm.DeepCopy()
			c.Data["journal.json"] = `{"steps":[]}`
			_, err := cms.Update(ctx, c, metav1.UpdateOptions{})
			return err
		}, false},
		{"delete deployment", func(ctx context.Context) error { return deps.Delete(ctx, dep.Name, metav1.DeleteOptions{}) }, true},
		{"create deployment", func(ctx context.Context) error {
			p := probe.DeepCopy()
			_, err := deps.Create(ctx, p, metav1.CreateOptions{})
			return err
		}, true},
		{"delete journal configmap", func(ctx context.Context) error { return cms.Delete(ctx, journal, metav1.DeleteOptions{}) }, true},
		{"list configmaps", func(ctx context.Context) error { _, err := cms.List(ctx, metav1.ListOptions{}); return err }, true},
		{"list secrets", func(ctx context.Context) error {
			_, err := sa.CoreV1().Secrets(ns).List(ctx, metav1.ListOptions{})
			return err
		}, true},
		{"get deployment in default", func(ctx context.Context) error {
			_, err := sa.AppsV1().Deployments("default").Get(ctx, dep.Name, metav1.GetOptions{})
			return err
		}, true},
		{"scale deployment in kube-system", func(ctx context.Context) error {
			_, err := sa.AppsV1().Deployments("kube-system").GetScale(ctx, "coredns", metav1.GetOptions{})
			return err
		}, true},
		{"create pod", func(ctx context.Context) error {
			_, err := sa.CoreV1().Pods(ns).Create(ctx, &corev1.Pod{
				ObjectMeta: metav1.ObjectMeta{GenerateName: "rollguard-rbac-probe-"},
				Spec:       probe.Spec.Template.Spec,
			}, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
			return err
		}, true},
	}
	// In order: the scale and update steps use what the get and create
	// steps read.
	for _, s := range steps {
		ok := t.Run(s.name, func(t *testing.T) {
			// The controllers may touch the probe between a read and a
			// write (409): retry those as rollguard does; a 403 is final.
			err := retry.RetryOnConflict(retry.DefaultRetry, func() error { return s.do(ctxTimeout(t, 10*time.Second)) })
			var status apierrors.APIStatus
			switch {
			case !s.forbidden && err != nil:
				t.Fatalf("as %s: %v", serviceAccount, err)
			case s.forbidden && (!errors.As(err, &status) || status.Status().Code != http.StatusForbidden):
				t.Fatalf("as %s: err = %v, want 403 Forbidden", serviceAccount, err)
			}
		})
		if !ok && !s.forbidden {
			return
		}
	}

	// What the ServiceAccount did is what the admin sees.
	got, err := admin.AppsV1().Deployments(ns).Get(ctxTimeout(t, 10*time.Second), dep.Name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("the probe deployment is gone after the forbidden delete: %v", err)
	}
	if r := ptrVal(got.Spec.Replicas, 1); r != 2 || got.Annotations["rollguard.io/freeze"] != "true" {
		t.Errorf("probe deployment replicas=%d freeze=%q, want 2 and \"true\"", r, got.Annotations["rollguard.io/freeze"])
	}
}
