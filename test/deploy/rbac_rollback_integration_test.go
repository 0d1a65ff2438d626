package deploy

import (
	"bytes"
	"context"
	"encoding/pem"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

const (
	rbacGoodImage = "pggit-api:v1.0.3"
	rbacBadImage  = "pggit-api:v1.1.0"
	// noRoleNamespace has no rollguard Role. It is kept between runs (the
	// tests leave namespaces); each run uses a Deployment of its own.
	noRoleNamespace = "rg-rbac-norole"
)

// TestRollbackUnderServiceAccountRBAC: rollguard run out-of-cluster with
// that ServiceAccount's token performs a real rollback under exactly that
// RBAC, and cannot touch a namespace where the install grants nothing.
func TestRollbackUnderServiceAccountRBAC(t *testing.T) {
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	start := time.Now()
	env := sandboxenv.Load(t)
	kubeconfig := env.Get(t, "KUBECONFIG")
	kubectlBin := filepath.Join(env.Get(t, "SANDBOX_BIN_DIR"), "kubectl")
	admin := clientsetFor(t, kubeconfig)

	var production overlay
	for _, o := range overlays() {
		if o.name == "production" {
			production = o
		}
	}
	applyOverlay(t, admin, kubectlBin, kubeconfig, production)

	saKubeconfig := filepath.Join(t.TempDir(), "rollguard.kubeconfig")
	script := filepath.Join(repoRoot(t), "test", "sandbox", "sa-kubeconfig")
	if out, stderr, err := run(t, 30*time.Second, nil, script, installNamespace, serviceAccount, saKubeconfig, "10m"); err != nil {
		t.Fatalf("sa-kubeconfig: %v\n%s%s", err, out, stderr)
	}
	t.Logf("overlay applied and token minted in %s", time.Since(start).Round(time.Millisecond))
	// rollguard talks to the API server through a recording proxy, so the
	// test sees every request the ServiceAccount made and its answer.
	proxied, rec := recordingProxy(t, saKubeconfig)

	t.Run("rollback in production", func(t *testing.T) {
		begin := time.Now()
		const ns = "production"
		dep := rolledOutDeployment(t, admin, ns)
		cfg := rbacConfig(t, env, proxied, ns, dep.Name)
		rec.reset()

		var logs bytes.Buffer
		out, err := app.RollbackLocal(ctxTimeout(t, 2*time.Minute), app.Options{ConfigFile: cfg, LogOutput: &logs}, "api", "", "rbac test: v1.1.0 is bad", false)
		if err != nil || !strings.HasPrefix(out, "quick succeeded") {
			t.Fatalf("rollback as %s: out %q, err %v\nlog:\n%s", serviceAccount, out, err, logs.String())
		}

		got, err := admin.AppsV1().Deployments(ns).Get(ctxTimeout(t, 10*time.Second), dep.Name, metav1.GetOptions{})
		if err != nil {
			t.Fatalf("get deployment %s/%s: %v", ns, dep.Name, err)
		}
		if img := got.Spec.Template.Spec.Containers[0].Image; img != rbacGoodImage {
			t.Errorf("image = %s, want %s", img, rbacGoodImage)
		}
		if ptrVal(got.Spec.Replicas, 0) != 4 || got.Status.ReadyReplicas != 4 || got.Status.UpdatedReplicas != 4 || got.Status.AvailableReplicas != 4 {
			t.Errorf("replicas spec %d, status %+v; want 4 ready, updated, available", ptrVal(got.Spec.Replicas, 0), got.Status)
		}
		// Every request was the ServiceAccount's and was allowed; the
		// replicas went through deployments/scale (stop to 0, ramp to 2
		// and 4), the template through one update of the Deployment, and
		// nothing was deleted.
		reqs := rec.requests()
		depPath := "/apis/apps/v1/namespaces/" + ns + "/deployments/" + dep.Name
		count := map[string]int{}
		for _, r := range reqs {
			// A 404 is the journal's first read, and a 409 a write fenced
			// by resourceVersion that lost to the controller's status
			// update (pkg/kube rereads and retries it; the rollback
			// succeeded above). Anything else 4xx/5xx (above all a 403)
			// means the RBAC or the request is wrong.
			expected := (r.status == http.StatusNotFound && r.method == http.MethodGet) ||
				(r.status == http.StatusConflict && r.method == http.MethodPut && (r.path == depPath || r.path == depPath+"/scale"))
			if r.status >= 400 && !expected {
				t.Errorf("%s %s answered %d under the ServiceAccount's RBAC", r.method, r.path, r.status)
			}
			if !r.bearer {
				t.Errorf("%s %s was sent without the ServiceAccount's bearer token", r.method, r.path)
			}
			count[r.method+" "+r.path]++
			if r.method == http.MethodDelete {
				count["DELETE"]++
			}
		}
		for _, want := range []struct {
			req string
			min int
		}{
			{"PUT " + depPath + "/scale", 3},
			{"GET " + depPath + "/scale", 3},
			{"PUT " + depPath, 1},
			{"POST /api/v1/namespaces/" + ns + "/configmaps", 1},
			{"POST /api/v1/namespaces/" + ns + "/events", 1},
		} {
			if count[want.req] < want.min {
				t.Errorf("%d requests %q, want at least %d; requests:\n%s", count[want.req], want.req, want.min, rec.String())
			}
		}
		if count["DELETE"] != 0 {
			t.Errorf("rollguard sent %d DELETE requests:\n%s", count["DELETE"], rec.String())
		}
		journal := rollback.JournalName(dep.UID)
		cm, err := admin.CoreV1().ConfigMaps(ns).Get(ctxTimeout(t, 10*time.Second), journal, metav1.GetOptions{})
		if err != nil {
			t.Errorf("journal configmap %s/%s: %v", ns, journal, err)
		} else if cm.Labels[rollback.LabelJournal] != "true" {
			t.Errorf("journal configmap %s/%s labels %v, want %s=true", ns, journal, cm.Labels, rollback.LabelJournal)
		}
		reasons := eventReasons(t, admin, ns, dep.Name)
		for _, want := range []string{kube.ReasonPlanStarted, kube.ReasonStepStarted, kube.ReasonStepSucceeded} {
			if !reasons[want] {
				t.Errorf("no %s event on deployment %s/%s; events %v", want, ns, dep.Name, reasons)
			}
		}
		if reasons[kube.ReasonStepFailed] || reasons[kube.ReasonPlanFailed] {
			t.Errorf("failure events on deployment %s/%s: %v", ns, dep.Name, reasons)
		}
		t.Logf("rollback as %s/%s in %s took %s", installNamespace, serviceAccount, ns, time.Since(begin).Round(time.Millisecond))
	})

	t.Run("namespace without a role", func(t *testing.T) {
		ns := &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: noRoleNamespace}}
		if _, err := admin.CoreV1().Namespaces().Create(ctxTimeout(t, 10*time.Second), ns, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
			t.Fatalf("create namespace %s: %v", noRoleNamespace, err)
		}
		dep := rolledOutDeployment(t, admin, noRoleNamespace)
		cfg := rbacConfig(t, env, proxied, noRoleNamespace, dep.Name)
		rec.reset()

		var logs bytes.Buffer
		out, err := app.RollbackLocal(ctxTimeout(t, time.Minute), app.Options{ConfigFile: cfg, LogOutput: &logs}, "api", "", "rbac test: no role here", false)
		if err == nil {
			t.Fatalf("rollback in %s as %s succeeded (%q), want forbidden", noRoleNamespace, serviceAccount, out)
		}
		if out != "" {
			t.Errorf("a failed rollback returned output %q for stdout, want none (the error goes to stderr)", out)
		}
		msg := err.Error()
		for _, want := range []string{"forbidden", fmt.Sprintf("in the namespace %q", noRoleNamespace), "system:serviceaccount:" + installNamespace + ":" + serviceAccount} {
			if !strings.Contains(msg, want) {
				t.Errorf("error does not contain %q: %v", want, err)
			}
		}

		got, gerr := admin.AppsV1().Deployments(noRoleNamespace).Get(ctxTimeout(t, 10*time.Second), dep.Name, metav1.GetOptions{})
		if gerr != nil {
			t.Fatalf("get deployment %s/%s: %v", noRoleNamespace, dep.Name, gerr)
		}
		if got.ResourceVersion != dep.ResourceVersion || got.Spec.Template.Spec.Containers[0].Image != rbacBadImage {
			t.Errorf("deployment changed: resourceVersion %s -> %s, image %s", dep.ResourceVersion, got.ResourceVersion, got.Spec.Template.Spec.Containers[0].Image)
		}
		if _, cerr := admin.CoreV1().ConfigMaps(noRoleNamespace).Get(ctxTimeout(t, 10*time.Second), rollback.JournalName(dep.UID), metav1.GetOptions{}); !apierrors.IsNotFound(cerr) {
			t.Errorf("journal configmap in %s: err %v, want not found", noRoleNamespace, cerr)
		}
		if reasons := eventReasons(t, admin, noRoleNamespace, dep.Name); len(reasons) != 0 {
			t.Errorf("rollguard events on %s/%s: %v, want none", noRoleNamespace, dep.Name, reasons)
		}
		// The API server refused what was asked; nothing got through.
		reqs := rec.requests()
		if len(reqs) == 0 {
			t.Errorf("no request reached the API server through the proxy")
		}
		for _, r := range reqs {
			if r.status != http.StatusForbidden && r.method != http.MethodGet {
				t.Errorf("%s %s answered %d, want only refused requests:\n%s", r.method, r.path, r.status, rec.String())
			}
			if r.status < 400 && strings.Contains(r.path, "/namespaces/"+noRoleNamespace+"/") {
				t.Errorf("%s %s answered %d in a namespace without a role", r.method, r.path, r.status)
			}
		}
		t.Logf("forbidden rollback: %v", err)
	})
	t.Logf("wall time %s", time.Since(start).Round(time.Millisecond))
}

// rolledOutDeployment creates, as admin, a simulated Deployment with a
// unique name in ns at v1.0.3 with 4 replicas, rolls it to v1.1.0, waits
// for both rollouts and deletes it when the test ends.
func rolledOutDeployment(t *testing.T, admin *kubernetes.Clientset, ns string) *appsv1.Deployment {
	t.Helper()
	name := "rg-rbac-" + rand.String(6)
	d := sandboxfixture.Simulated(sandboxfixture.Deployment(ns, name, rbacGoodImage, 4))
	ctx := ctxTimeout(t, 2*time.Minute)
	created, err := admin.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{})
	if err != nil {
		t.Fatalf("create deployment %s/%s: %v", ns, name, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := admin.AppsV1().Deployments(ns).Delete(ctx, name, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: delete deployment %s/%s: %v", ns, name, err)
		}
		journal := rollback.JournalName(created.UID)
		if err := admin.CoreV1().ConfigMaps(ns).Delete(ctx, journal, metav1.DeleteOptions{}); err != nil && !apierrors.IsNotFound(err) {
			t.Errorf("cleanup: delete configmap %s/%s: %v", ns, journal, err)
		}
	})
	kd := kube.New(admin, kube.Options{PollInterval: 100 * time.Millisecond}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	wait := func() {
		if _, st, err := kd.WaitRollout(ctx, ns, name, kube.WaitOptions{Timeout: 60 * time.Second}); err != nil {
			t.Fatalf("rollout of %s/%s: %v (%+v)", ns, name, err, st)
		}
	}
	wait()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"api","image":%q}]}}}}`, rbacBadImage)
	if _, err := admin.AppsV1().Deployments(ns).Patch(ctx, name, "application/strategic-merge-patch+json", []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("set image of %s/%s: %v", ns, name, err)
	}
	wait()
	got, err := admin.AppsV1().Deployments(ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", ns, name, err)
	}
	return got
}

// rbacConfig writes a rollguard config for one target whose Kubernetes
// identity is the ServiceAccount's kubeconfig. maxRevisionAge is large so
// the revision-age interlock never decides the outcome.
func rbacConfig(t *testing.T, env sandboxenv.Env, kubeconfig, ns, name string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  interval: 1s
  for: 10s
  listenAddress: 127.0.0.1:0
  prometheus: {url: %q, timeout: 1s}
  kubernetes: {kubeconfig: %q}
  interlocks: {cooldown: 1m, maxRollbacksPerHour: 10, maxRevisionAge: 1000h}
  notify:
    incidentDir: %q
  templates:
    errorRate:
      query: '(sum by (namespace, deployment) (rate(http_requests_total{status=~"5.."}[5s])) or 0 * sum by (namespace, deployment) (rate(http_requests_total[5s]))) / sum by (namespace, deployment) (rate(http_requests_total[5s]))'
      volumeQuery: 'sum by (namespace, deployment) (rate(http_requests_total[5s]))'
targets:
  - name: api
    namespace: %s
    deployment: %s
    containers: [api]
    healthURL: %q
    match: {namespace: %s, deployment: %s}
    triggers:
      - name: error-rate
        kind: errorRate
        above: 0.05
        minRate: 1
        action: rollback
    rollback:
      strategy: quick
      rampSteps: [2]
      rampPause: 1s
      rolloutTimeout: 30s
      verifyWindow: 30s
`, env.Get(t, "PROMETHEUS_URL"), kubeconfig, filepath.Join(dir, "incidents"), ns, name,
		fmt.Sprintf("%s/health/%s/%s", env.Get(t, "SIM_URL"), ns, name), ns, name)
	p := filepath.Join(dir, "rollguard.yaml")
	if err := os.WriteFile(p, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// eventReasons returns the reasons of rollguard's Events on a Deployment.
func eventReasons(t *testing.T, admin *kubernetes.Clientset, ns, name string) map[string]bool {
	t.Helper()
	sel := fields.Set{"involvedObject.kind": "Deployment", "involvedObject.name": name}.AsSelector().String()
	evs, err := admin.CoreV1().Events(ns).List(ctxTimeout(t, 10*time.Second), metav1.ListOptions{FieldSelector: sel})
	if err != nil {
		t.Fatalf("list events of %s/%s: %v", ns, name, err)
	}
	out := map[string]bool{}
	for _, e := range evs.Items {
		if strings.HasPrefix(e.Reason, "Rollback") {
			out[e.Reason] = true
		}
	}
	return out
}

// apiRequest is one request the proxy forwarded and the answer it got.
type apiRequest struct {
	method, path string
	status       int
	bearer       bool
}

// recorder keeps the requests seen by recordingProxy.
type recorder struct {
	mu   sync.Mutex
	reqs []apiRequest
}

func (r *recorder) add(req apiRequest) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = append(r.reqs, req)
}

func (r *recorder) reset() {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.reqs = nil
}

func (r *recorder) requests() []apiRequest {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.reqs)
}

func (r *recorder) String() string {
	var b strings.Builder
	for _, req := range r.requests() {
		fmt.Fprintf(&b, "  %s %s -> %d\n", req.method, req.path, req.status)
	}
	return b.String()
}

// recordingProxy serves the API server of kubeconfig on a loopback
// listener, passing each request through unchanged (with the client's own
// bearer token) and recording it. It returns a copy of kubeconfig that
// points at the proxy.
func recordingProxy(t *testing.T, kubeconfig string) (string, *recorder) {
	t.Helper()
	raw, err := clientcmd.LoadFromFile(kubeconfig)
	if err != nil {
		t.Fatalf("load kubeconfig %s: %v", kubeconfig, err)
	}
	rc, err := clientcmd.NewDefaultClientConfig(*raw, nil).ClientConfig()
	if err != nil {
		t.Fatalf("kubeconfig %s: %v", kubeconfig, err)
	}
	upstream, err := url.Parse(rc.Host)
	if err != nil {
		t.Fatalf("kubeconfig %s: server %q: %v", kubeconfig, rc.Host, err)
	}
	// TLS to the API server with the cluster's CA, and no credentials of
	// its own: the client's Authorization header is the only identity.
	tr, err := rest.TransportFor(&rest.Config{TLSClientConfig: rest.TLSClientConfig{CAData: rc.CAData}})
	if err != nil {
		t.Fatalf("transport to %s: %v", rc.Host, err)
	}
	rec := &recorder{}
	proxy := &httputil.ReverseProxy{
		Rewrite:       func(pr *httputil.ProxyRequest) { pr.SetURL(upstream) },
		Transport:     tr,
		FlushInterval: -1,
		ModifyResponse: func(resp *http.Response) error {
			req := resp.Request
			rec.add(apiRequest{method: req.Method, path: req.URL.Path, status: resp.StatusCode,
				bearer: req.Header.Get("Authorization") == "Bearer "+rc.BearerToken})
			return nil
		},
	}
	// TLS on the proxy too: client-go does not send a bearer token over
	// plain http.
	srv := httptest.NewTLSServer(proxy)
	t.Cleanup(srv.Close)
	ca := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	for _, c := range raw.Clusters {
		c.Server = srv.URL
		c.CertificateAuthorityData = ca
	}
	out := filepath.Join(t.TempDir(), "proxied.kubeconfig")
	if err := clientcmd.WriteToFile(*raw, out); err != nil {
		t.Fatalf("write %s: %v", out, err)
	}
	return out, rec
}
