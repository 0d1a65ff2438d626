package deploy

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// TestHelmInstallOnSandbox installs the chart with `helm install
// --create-namespace` on the sandbox's API server, as the README says: the
// chart labels the namespace for Pod Security "restricted", which the API
// server then enforces on rollguard's own pods (created, so they pass) and
// on a pod that breaks it (refused); the target namespace named in the
// config gets the target Role bound to the release's ServiceAccount. The
// release is uninstalled at the end.
func TestHelmInstallOnSandbox(t *testing.T) {
	env := sandboxenv.Load(t)
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	kubeconfig := env.Get(t, "KUBECONFIG")
	helmBin := env.Get(t, "HELM_BIN")
	admin := clientsetFor(t, kubeconfig)

	suffix := rand.String(5)
	ns, targetNS := "rg-helm-"+suffix, "rg-helm-target-"+suffix
	if _, err := admin.CoreV1().Namespaces().Create(ctxTimeout(t, 10*time.Second),
		&corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: targetNS}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create target namespace: %v", err)
	}
	t.Cleanup(func() {
		_ = admin.CoreV1().Namespaces().Delete(ctxTimeout(t, 10*time.Second), targetNS, metav1.DeleteOptions{})
	})
	cfg := filepath.Join(t.TempDir(), "rollguard.yaml")
	if err := os.WriteFile(cfg, []byte(fmt.Sprintf(`global:
  listenAddress: 0.0.0.0:9847
  prometheus: {url: "http://prometheus.monitoring.svc:9090"}
  leaderElection: {enabled: true, namespace: %s}
  api: {tokenFile: /etc/rollguard/secrets/api-token}
targets:
  - name: api
    namespace: %s
    deployment: api
    triggers: [{name: errors, kind: errorRate, above: 0.05, action: rollback}]
`, ns, targetNS)), 0o600); err != nil {
		t.Fatal(err)
	}

	helmRun := func(timeout time.Duration, args ...string) (string, string, error) {
		return run(t, timeout, nil, helmBin, append([]string{"--kubeconfig", kubeconfig}, args...)...)
	}
	out, stderr, err := helmRun(2*time.Minute, "install", "rollguard", filepath.Join(repoRoot(t), chartDir),
		"--namespace", ns, "--create-namespace", "--set-file", "config="+cfg, "--wait", "--timeout", "90s")
	if err != nil {
		t.Fatalf("helm install: %v\n%s%s", err, out, stderr)
	}
	t.Cleanup(func() {
		if out, stderr, err := helmRun(2*time.Minute, "uninstall", "rollguard", "--namespace", ns, "--wait", "--timeout", "60s"); err != nil {
			t.Errorf("helm uninstall: %v\n%s%s", err, out, stderr)
		}
		// The chart keeps its namespace on uninstall.
		if _, err := admin.CoreV1().Namespaces().Get(ctxTimeout(t, 10*time.Second), ns, metav1.GetOptions{}); err != nil {
			t.Errorf("namespace %s after helm uninstall: %v, want it kept", ns, err)
		}
		_ = admin.CoreV1().Namespaces().Delete(ctxTimeout(t, 10*time.Second), ns, metav1.DeleteOptions{})
	})
	if strings.Contains(stderr, "PodSecurity") {
		t.Errorf("helm install warned about Pod Security:\n%s", stderr)
	}

	ctx := ctxTimeout(t, 30*time.Second)
	got, err := admin.CoreV1().Namespaces().Get(ctx, ns, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if got.Labels["pod-security.kubernetes.io/enforce"] != "restricted" {
		t.Errorf("namespace %s labels %v: want pod-security.kubernetes.io/enforce=restricted", ns, got.Labels)
	}
	dep, err := admin.AppsV1().Deployments(ns).Get(ctx, deploymentName, metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if dep.Status.ReadyReplicas != 2 {
		t.Errorf("deployment %s/%s: %d ready replicas, want 2 (helm install --wait)", ns, deploymentName, dep.Status.ReadyReplicas)
	}
	for _, c := range dep.Spec.Template.Spec.Containers {
		if c.Image != "ghcr.io/rollguard/rollguard:"+chartAppVersion(t) {
			t.Errorf("image %s, want the chart's appVersion", c.Image)
		}
	}
	waitPodsCreated(t, ctx, admin, dep)

	// The API server enforces "restricted" in the chart's namespace.
	probe := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{GenerateName: "rollguard-psa-probe-"},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "c", Image: "registry.invalid/probe:1"}}},
	}
	_, err = admin.CoreV1().Pods(ns).Create(ctx, probe, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if !apierrors.IsForbidden(err) || !strings.Contains(err.Error(), `violates PodSecurity "restricted`) {
		t.Errorf("dry-run create of an unrestricted pod in %s: %v, want forbidden by PodSecurity restricted", ns, err)
	}

	rb, err := admin.RbacV1().RoleBindings(targetNS).Get(ctx, targetRole, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("target RoleBinding in %s: %v", targetNS, err)
	}
	if len(rb.Subjects) != 1 || rb.Subjects[0].Namespace != ns || rb.Subjects[0].Name != serviceAccount {
		t.Errorf("target RoleBinding subjects %+v, want the ServiceAccount %s/%s", rb.Subjects, ns, serviceAccount)
	}
	if _, err := admin.RbacV1().Roles(ns).Get(ctx, leaderRole, metav1.GetOptions{}); err != nil {
		t.Errorf("leader Role in %s: %v", ns, err)
	}
}

func chartAppVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(repoRoot(t), chartDir, "Chart.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, "appVersion: "); ok {
			return strings.TrimSpace(v)
		}
	}
	t.Fatal("Chart.yaml has no appVersion")
	return ""
}
