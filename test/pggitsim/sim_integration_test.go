package pggitsim

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
	"k8s.io/client-go/util/retry"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestClusterRolloutIntegration runs the simulator on the sandbox's real
// API server, where kwok makes the Pods Ready, and follows a rollout from
// v1.1.0 to v1.0.3. It also asks the sandbox's own simulator process.
func TestClusterRolloutIntegration(t *testing.T) {
	env := sandboxenv.Load(t)
	rc, err := clientcmd.BuildConfigFromFlags("", env.Get(t, "KUBECONFIG"))
	if err != nil {
		t.Fatalf("load kubeconfig: %v", err)
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	ns := "pggitsim-it-" + sandboxfixture.RandomHex(t, 4)
	if _, err := cs.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create namespace: %v", err)
	}
	t.Cleanup(func() {
		// Deletion takes ~10 s; do not wait for it.
		_ = cs.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})

	replicas := int32(3)
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "pggit-api", Namespace: ns, Labels: map[string]string{SimulateLabel: "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": "pggit-api"}},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: map[string]string{"app": "pggit-api"}},
				Spec: corev1.PodSpec{Containers: []corev1.Container{
					{Name: "api", Image: "registry.local/pggit-api:v1.1.0"},
				}},
			},
		},
	}
	if _, err := cs.AppsV1().Deployments(ns).Create(ctx, d, metav1.CreateOptions{}); err != nil {
		t.Fatalf("create deployment: %v", err)
	}

	s := New(cs, Options{}, nil)
	sctx, stop := context.WithCancel(ctx)
	t.Cleanup(func() {
		stop()
		s.cluster.shutdown()
	})
	if err := s.Start(sctx); err != nil {
		t.Fatal(err)
	}
	waitNamespaceVersions(t, s, ns, map[string]int{"v1.1.0": 3})

	if err := s.Step(t0); err != nil {
		t.Fatal(err)
	}
	if err := s.Step(t0.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := requests(t, s, ns, "pggit-api", "v1.1.0", "500"); got != 6 {
		t.Errorf("status 500 = %v, want 6", got)
	}
	if got := requests(t, s, ns, "pggit-api", "v1.1.0", "200"); got != 24 {
		t.Errorf("status 200 = %v, want 24", got)
	}
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	if code, body := do(t, "GET", srv.URL+"/health/"+ns+"/pggit-api", ""); code != 503 {
		t.Errorf("health of v1.1.0 = %d %s, want 503", code, body)
	}

	// Roll forward to the healthy version.
	// The controllers write the Deployment's status meanwhile: read and
	// write again on a conflict, as kubectl does.
	err = retry.RetryOnConflict(retry.DefaultRetry, func() error {
		cur, err := cs.AppsV1().Deployments(ns).Get(ctx, "pggit-api", metav1.GetOptions{})
		if err != nil {
			return err
		}
		cur.Spec.Template.Spec.Containers[0].Image = "registry.local/pggit-api:v1.0.3"
		_, err = cs.AppsV1().Deployments(ns).Update(ctx, cur, metav1.UpdateOptions{})
		return err
	})
	if err != nil {
		t.Fatalf("update deployment: %v", err)
	}
	waitNamespaceVersions(t, s, ns, map[string]int{"v1.0.3": 3})
	code, body := do(t, "GET", srv.URL+"/health/"+ns+"/pggit-api", "")
	if want := `{"status":"ok","version":"v1.0.3","readyPods":{"v1.0.3":3}}`; code != 200 || body != want {
		t.Errorf("health = %d %s, want 200 %s", code, body, want)
	}

	// The sandbox's simulator process sees the same Deployment.
	if simURL := env["SIM_URL"]; simURL != "" {
		deadline := time.Now().Add(10 * time.Second)
		for {
			resp, err := http.Get(simURL + "/health/" + ns + "/pggit-api")
			if err != nil {
				t.Fatalf("sandbox simulator: %v", err)
			}
			var h Health
			err = json.NewDecoder(resp.Body).Decode(&h)
			resp.Body.Close()
			if err == nil && resp.StatusCode == 200 && h.Version == "v1.0.3" {
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("sandbox simulator health = %d %+v (%v)", resp.StatusCode, h, err)
			}
			time.Sleep(200 * time.Millisecond)
		}
	}
}

func waitNamespaceVersions(t *testing.T, s *Simulator, ns string, want map[string]int) {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	got := map[string]int{}
	for time.Now().Before(deadline) {
		vs, err := s.Versions()
		if err != nil {
			t.Fatal(err)
		}
		got = map[string]int{}
		for _, v := range vs {
			if v.Namespace == ns {
				got[v.Version] = v.Ready
			}
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("ready pods in %s = %v, want %v", ns, got, want)
}
