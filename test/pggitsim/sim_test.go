package pggitsim

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollguard/rollguard/test/sandboxfixture"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func deployment(ns, name string, simulate bool) *appsv1.Deployment {
	d := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": name}},
		Spec: appsv1.DeploymentSpec{
			Selector: &metav1.LabelSelector{MatchLabels: map[string]string{"app": name}},
		},
	}
	if simulate {
		d.Labels[SimulateLabel] = "true"
	}
	return d
}

type podOpt func(*corev1.Pod)

func notReady(p *corev1.Pod) {
	p.Name += "-notready"
	p.Status.Conditions[0].Status = corev1.ConditionFalse
}
func terminating(p *corev1.Pod) {
	ts := metav1.NewTime(t0)
	p.Name += "-terminating"
	p.DeletionTimestamp = &ts
}
func sidecarFirst(p *corev1.Pod) {
	p.Spec.Containers = append([]corev1.Container{{Name: "proxy", Image: "envoy:v1.30"}}, p.Spec.Containers...)
}

func pod(ns, app, name, image string, opts ...podOpt) *corev1.Pod {
	p := &corev1.Pod{
		ObjectMeta: metav1.ObjectMeta{Namespace: ns, Name: name, Labels: map[string]string{"app": app}},
		Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: image}}},
		Status: corev1.PodStatus{
			Phase:      corev1.PodRunning,
			Conditions: []corev1.PodCondition{{Type: corev1.PodReady, Status: corev1.ConditionTrue}},
		},
	}
	for _, o := range opts {
		o(p)
	}
	return p
}

func pods(ns, app, image string, n int, opts ...podOpt) []runtime.Object {
	var out []runtime.Object
	tag := ImageTag(image)
	for i := range n {
		out = append(out, pod(ns, app, fmt.Sprintf("%s-%s-%d", app, strings.ReplaceAll(tag, ".", "-"), i), image, opts...))
	}
	return out
}

// startSim builds a simulator on a fake clientset holding objs and waits
// for its caches.
func startSim(t *testing.T, opts Options, objs ...runtime.Object) (*Simulator, *fake.Clientset) {
	t.Helper()
	cs := fake.NewClientset(objs...)
	s := New(cs, opts, nil)
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(func() {
		cancel()
		s.cluster.shutdown()
	})
	if err := s.Start(ctx); err != nil {
		t.Fatalf("Start: %v", err)
	}
	return s, cs
}

// stepFor runs steps of d from t0 until total has elapsed; the first step
// at t0 only sets the start.
func stepFor(t *testing.T, s *Simulator, start time.Time, d, total time.Duration) time.Time {
	t.Helper()
	now := start
	if err := s.Step(now); err != nil {
		t.Fatalf("Step: %v", err)
	}
	for el := time.Duration(0); el < total; el += d {
		now = now.Add(d)
		if err := s.Step(now); err != nil {
			t.Fatalf("Step: %v", err)
		}
	}
	return now
}

// gather returns the series of one metric family from the registry, as
// /metrics would show them.
func gather(t *testing.T, s *Simulator, name string) []*dto.Metric {
	t.Helper()
	mfs, err := s.registry.Gather()
	if err != nil {
		t.Fatalf("Gather: %v", err)
	}
	for _, mf := range mfs {
		if mf.GetName() == name {
			return mf.GetMetric()
		}
	}
	return nil
}

// series finds the series of name with exactly the given labels.
func series(t *testing.T, s *Simulator, name string, labels ...string) *dto.Metric {
	t.Helper()
	want := map[string]string{}
	for i := 0; i+1 < len(labels); i += 2 {
		want[labels[i]] = labels[i+1]
	}
	for _, m := range gather(t, s, name) {
		got := map[string]string{}
		for _, lp := range m.GetLabel() {
			got[lp.GetName()] = lp.GetValue()
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return m
		}
	}
	return nil
}

// requests is the value of one http_requests_total series, -1 if absent.
func requests(t *testing.T, s *Simulator, ns, deploy, version, status string) float64 {
	t.Helper()
	m := series(t, s, "http_requests_total", "namespace", ns, "deployment", deploy, "version", version, "status", status)
	if m == nil {
		return -1
	}
	return m.GetCounter().GetValue()
}

// readyGauge is the value of pggitsim_ready_pods, -1 if absent.
func readyGauge(t *testing.T, s *Simulator, ns, deploy, version string) float64 {
	t.Helper()
	m := series(t, s, "pggitsim_ready_pods", "namespace", ns, "deployment", deploy, "version", version)
	if m == nil {
		return -1
	}
	return m.GetGauge().GetValue()
}

// histogram returns the gathered histogram of one version.
func histogram(t *testing.T, s *Simulator, ns, deploy, version string) *dto.Histogram {
	t.Helper()
	m := series(t, s, "http_request_duration_seconds", "namespace", ns, "deployment", deploy, "version", version)
	if m == nil {
		t.Fatalf("no histogram for %s/%s %s", ns, deploy, version)
	}
	return m.GetHistogram()
}

func bucket(t *testing.T, h *dto.Histogram, le float64) uint64 {
	t.Helper()
	for _, b := range h.GetBucket() {
		if b.GetUpperBound() == le {
			return b.GetCumulativeCount()
		}
	}
	t.Fatalf("no bucket le=%v", le)
	return 0
}

func TestImageTag(t *testing.T) {
	for _, tc := range []struct{ image, want string }{
		{"pggit-api:v1.1.0", "v1.1.0"},
		{"registry.local:5000/pggit/pggit-api:v1.1.1-slow", "v1.1.1-slow"},
		{"registry.local:5000/pggit-api", "latest"},
		{"pggit-api", "latest"},
		{"pggit-api:v1.0.3@sha256:abcdef", "v1.0.3"},
		{"pggit-api@sha256:abcdef", "latest"},
	} {
		t.Run(tc.image, func(t *testing.T) {
			if got := ImageTag(tc.image); got != tc.want {
				t.Fatalf("ImageTag(%q) = %q, want %q", tc.image, got, tc.want)
			}
		})
	}
}

func TestTrafficCountsExact(t *testing.T) {
	objs := []runtime.Object{
		deployment("production", "pggit-api", true),
		deployment("production", "other", false), // not labelled: ignored
	}
	objs = append(objs, pods("production", "pggit-api", "reg/pggit-api:v1.1.0", 4)...)
	objs = append(objs, pods("production", "pggit-api", "reg/pggit-api:v1.1.0", 1, notReady)...)
	objs = append(objs, pod("production", "pggit-api", "old-term", "reg/pggit-api:v1.1.0", terminating))
	objs = append(objs, pods("staging", "pggit-api", "reg/pggit-api:v1.1.0", 3)...) // no Deployment there
	objs = append(objs, pods("production", "other", "reg/other:v1.1.0", 2)...)
	s, _ := startSim(t, Options{}, objs...)

	stepFor(t, s, t0, 100*time.Millisecond, 10*time.Second)

	if got := requests(t, s, "production", "pggit-api", "v1.1.0", "200"); got != 320 {
		t.Errorf("status 200 = %v, want 320", got)
	}
	if got := requests(t, s, "production", "pggit-api", "v1.1.0", "500"); got != 80 {
		t.Errorf("status 500 = %v, want 80", got)
	}
	h := histogram(t, s, "production", "pggit-api", "v1.1.0")
	if h.GetSampleCount() != 400 {
		t.Errorf("histogram count = %d, want 400", h.GetSampleCount())
	}
	if got := bucket(t, h, 0.05); got != 400 {
		t.Errorf("bucket le=0.05 = %d, want 400", got)
	}
	if got := bucket(t, h, 0.025); got != 0 {
		t.Errorf("bucket le=0.025 = %d, want 0", got)
	}
	// Exactly one version of one Deployment is served.
	if n := len(gather(t, s, "http_requests_total")); n != 2 {
		t.Errorf("http_requests_total series = %d, want 2", n)
	}
	if got := readyGauge(t, s, "production", "pggit-api", "v1.1.0"); got != 4 {
		t.Errorf("pggitsim_ready_pods = %v, want 4", got)
	}
}

func TestTrafficIrregularStepsStayExact(t *testing.T) {
	objs := append([]runtime.Object{deployment("production", "pggit-api", true)},
		pods("production", "pggit-api", "pggit-api:v1.1.0", 3)...)
	s, _ := startSim(t, Options{}, objs...)
	now := t0
	if err := s.Step(now); err != nil {
		t.Fatal(err)
	}
	// 7 s in uneven steps, one repeated timestamp and one going back.
	for _, d := range []time.Duration{130, 70, 0, 1000, 333, 667, 1800, 3000} {
		now = now.Add(d * time.Millisecond)
		if err := s.Step(now); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.Step(now.Add(-time.Second)); err != nil {
		t.Fatal(err)
	}
	// 3 pods × 10/s × 7 s = 210; 20 % = 42.
	if got := requests(t, s, "production", "pggit-api", "v1.1.0", "500"); got != 42 {
		t.Errorf("status 500 = %v, want 42", got)
	}
	if got := requests(t, s, "production", "pggit-api", "v1.1.0", "200"); got != 168 {
		t.Errorf("status 200 = %v, want 168", got)
	}
}

func TestTrafficSlowProfile(t *testing.T) {
	objs := append([]runtime.Object{deployment("production", "pggit-api", true)},
		pods("production", "pggit-api", "pggit-api:v1.1.1-slow", 4, sidecarFirst)...)
	s, _ := startSim(t, Options{}, objs...)
	stepFor(t, s, t0, 100*time.Millisecond, 10*time.Second)

	if got := requests(t, s, "production", "pggit-api", "v1.1.1-slow", "500"); got != 0 {
		t.Errorf("status 500 = %v, want 0", got)
	}
	h := histogram(t, s, "production", "pggit-api", "v1.1.1-slow")
	for _, tc := range []struct {
		le   float64
		want uint64
	}{{0.05, 380}, {5, 380}, {10, 400}} {
		if got := bucket(t, h, tc.le); got != tc.want {
			t.Errorf("bucket le=%v = %d, want %d", tc.le, got, tc.want)
		}
	}
	if want := 380*0.05 + 20*8; h.GetSampleSum() < want-1e-6 || h.GetSampleSum() > want+1e-6 {
		t.Errorf("sum = %v, want %v", h.GetSampleSum(), want)
	}
}

func TestTrafficMixedRollout(t *testing.T) {
	objs := []runtime.Object{deployment("production", "pggit-api", true)}
	objs = append(objs, pods("production", "pggit-api", "pggit-api:v1.0.3", 2)...)
	objs = append(objs, pods("production", "pggit-api", "pggit-api:v1.1.0", 2)...)
	objs = append(objs, pods("production", "pggit-api", "pggit-api:v9.9.9", 1)...) // unknown: healthy
	s, _ := startSim(t, Options{}, objs...)
	stepFor(t, s, t0, 100*time.Millisecond, 5*time.Second)

	for _, tc := range []struct {
		version, status string
		want            float64
	}{
		{"v1.0.3", "200", 100}, {"v1.0.3", "500", 0},
		{"v1.1.0", "200", 80}, {"v1.1.0", "500", 20},
		{"v9.9.9", "200", 50}, {"v9.9.9", "500", 0},
	} {
		if got := requests(t, s, "production", "pggit-api", tc.version, tc.status); got != tc.want {
			t.Errorf("%s status %s = %v, want %v", tc.version, tc.status, got, tc.want)
		}
	}
}

func TestNoReadyPodsNoSeries(t *testing.T) {
	objs := append([]runtime.Object{deployment("production", "pggit-api", true)},
		pods("production", "pggit-api", "pggit-api:v1.0.3", 3, notReady)...)
	s, _ := startSim(t, Options{}, objs...)
	stepFor(t, s, t0, 100*time.Millisecond, 5*time.Second)
	if n := len(gather(t, s, "http_requests_total")); n != 0 {
		t.Errorf("http_requests_total series = %d, want 0", n)
	}
	if n := len(gather(t, s, "http_request_duration_seconds")); n != 0 {
		t.Errorf("http_request_duration_seconds series = %d, want 0", n)
	}
}

func TestReadinessChangesAreFollowed(t *testing.T) {
	objs := append([]runtime.Object{deployment("production", "pggit-api", true)},
		pods("production", "pggit-api", "pggit-api:v1.1.0", 2)...)
	s, cs := startSim(t, Options{}, objs...)
	now := stepFor(t, s, t0, 100*time.Millisecond, time.Second) // 20 requests

	// The rollback: v1.1.0 Pods go away, v1.0.3 Pods become Ready.
	ctx := context.Background()
	for i := range 2 {
		name := fmt.Sprintf("pggit-api-v1-1-0-%d", i)
		if err := cs.CoreV1().Pods("production").Delete(ctx, name, metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	for _, o := range pods("production", "pggit-api", "pggit-api:v1.0.3", 3) {
		if _, err := cs.CoreV1().Pods("production").Create(ctx, o.(*corev1.Pod), metav1.CreateOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitVersions(t, s, []Version{{Key: Key{"production", "pggit-api", "v1.0.3"}, Ready: 3, Healthy: true}})

	for range 10 {
		now = now.Add(100 * time.Millisecond)
		if err := s.Step(now); err != nil {
			t.Fatal(err)
		}
	}
	if got := requests(t, s, "production", "pggit-api", "v1.1.0", "200") + requests(t, s, "production", "pggit-api", "v1.1.0", "500"); got != 20 {
		t.Errorf("v1.1.0 requests = %v, want 20 (no traffic after its pods left)", got)
	}
	if got := requests(t, s, "production", "pggit-api", "v1.0.3", "200"); got != 30 {
		t.Errorf("v1.0.3 requests = %v, want 30", got)
	}
	if got := readyGauge(t, s, "production", "pggit-api", "v1.1.0"); got != 0 {
		t.Errorf("ready gauge of v1.1.0 = %v, want 0", got)
	}
}

func TestDeletedDeploymentSeriesAreDropped(t *testing.T) {
	objs := []runtime.Object{deployment("gone", "pggit-api", true), deployment("kept", "pggit-api", true)}
	objs = append(objs, pods("gone", "pggit-api", "pggit-api:v1.1.0", 2)...)
	objs = append(objs, pods("kept", "pggit-api", "pggit-api:v1.1.0", 2)...)
	s, cs := startSim(t, Options{}, objs...)
	now := stepFor(t, s, t0, 100*time.Millisecond, time.Second)
	if got := requests(t, s, "gone", "pggit-api", "v1.1.0", "500"); got != 4 {
		t.Fatalf("status 500 before delete = %v, want 4", got)
	}

	ctx := context.Background()
	if err := cs.AppsV1().Deployments("gone").Delete(ctx, "pggit-api", metav1.DeleteOptions{}); err != nil {
		t.Fatal(err)
	}
	// Scaled to 0 but still there: series stay, the gauge reads 0.
	for i := range 2 {
		if err := cs.CoreV1().Pods("kept").Delete(ctx, fmt.Sprintf("pggit-api-v1-1-0-%d", i), metav1.DeleteOptions{}); err != nil {
			t.Fatal(err)
		}
	}
	waitVersions(t, s, []Version{})
	if err := s.Step(now.Add(time.Second)); err != nil {
		t.Fatal(err)
	}
	if got := requests(t, s, "gone", "pggit-api", "v1.1.0", "500"); got != -1 {
		t.Errorf("series of deleted deployment = %v, want absent", got)
	}
	if m := series(t, s, "http_request_duration_seconds", "namespace", "gone", "deployment", "pggit-api", "version", "v1.1.0"); m != nil {
		t.Errorf("histogram of deleted deployment still served")
	}
	if got := requests(t, s, "kept", "pggit-api", "v1.1.0", "500"); got != 4 {
		t.Errorf("status 500 of scaled-down deployment = %v, want 4", got)
	}
	if got := readyGauge(t, s, "kept", "pggit-api", "v1.1.0"); got != 0 {
		t.Errorf("ready gauge of scaled-down deployment = %v, want 0", got)
	}
}

// waitVersions polls the informer-backed view: fake watch events arrive
// asynchronously.
func waitVersions(t *testing.T, s *Simulator, want []Version) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	var got []Version
	for time.Now().Before(deadline) {
		var err error
		if got, err = s.Versions(); err != nil {
			t.Fatal(err)
		}
		if fmt.Sprint(got) == fmt.Sprint(want) {
			return
		}
		time.Sleep(5 * time.Millisecond)
	}
	t.Fatalf("versions = %v, want %v", got, want)
}

func TestRunUsesInjectedTicker(t *testing.T) {
	objs := append([]runtime.Object{deployment("production", "pggit-api", true)},
		pods("production", "pggit-api", "pggit-api:v1.1.0", 4)...)
	ticks := make(chan time.Time)
	stopped := make(chan struct{})
	s := New(fake.NewClientset(objs...), Options{NewTicker: func(d time.Duration) (<-chan time.Time, func()) {
		if d != DefaultTick {
			t.Errorf("tick = %v, want %v", d, DefaultTick)
		}
		return ticks, func() { close(stopped) }
	}}, nil)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Run(ctx) }()
	for i := 0; i <= 100; i++ { // 101 ticks: the first only starts the clock
		ticks <- t0.Add(time.Duration(i) * 100 * time.Millisecond)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatalf("Run: %v", err)
	}
	<-stopped
	if got := requests(t, s, "production", "pggit-api", "v1.1.0", "500"); got != 80 {
		t.Errorf("status 500 = %v, want 80", got)
	}
	if got := requests(t, s, "production", "pggit-api", "v1.1.0", "200"); got != 320 {
		t.Errorf("status 200 = %v, want 320", got)
	}
}

func TestHealth(t *testing.T) {
	objs := []runtime.Object{
		deployment("production", "pggit-api", true),
		deployment("bad", "pggit-api", true),
		deployment("mixed", "pggit-api", true),
		deployment("empty", "pggit-api", true),
		deployment("plain", "pggit-api", false),
	}
	objs = append(objs, pods("production", "pggit-api", "pggit-api:v1.0.3", 2)...)
	objs = append(objs, pods("bad", "pggit-api", "pggit-api:v1.1.0", 3)...)
	objs = append(objs, pods("mixed", "pggit-api", "pggit-api:v1.1.0", 3)...)
	objs = append(objs, pods("mixed", "pggit-api", "pggit-api:v1.0.3", 1)...)
	objs = append(objs, pods("empty", "pggit-api", "pggit-api:v1.0.3", 2, notReady)...)
	objs = append(objs, pods("plain", "pggit-api", "pggit-api:v1.0.3", 2)...)
	s, _ := startSim(t, Options{}, objs...)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	for _, tc := range []struct {
		path string
		code int
		want Health
	}{
		{"/health", 200, Health{Status: "ok", Version: "v1.0.3", ReadyPods: map[string]int{"v1.0.3": 2}}},
		{"/health/production/pggit-api", 200, Health{Status: "ok", Version: "v1.0.3", ReadyPods: map[string]int{"v1.0.3": 2}}},
		{"/health/bad/pggit-api", 503, Health{Status: "unavailable", Version: "v1.1.0",
			ReadyPods: map[string]int{"v1.1.0": 3}, Reason: "no ready pod runs a healthy version"}},
		{"/health/mixed/pggit-api", 200, Health{Status: "ok", Version: "v1.0.3",
			ReadyPods: map[string]int{"v1.1.0": 3, "v1.0.3": 1}}},
		{"/health/empty/pggit-api", 503, Health{Status: "unavailable", Reason: "no ready pods"}},
		{"/health/plain/pggit-api", 503, Health{Status: "unavailable", Reason: "deployment not found or not simulated"}},
		{"/health/nowhere/pggit-api", 503, Health{Status: "unavailable", Reason: "deployment not found or not simulated"}},
	} {
		t.Run(tc.path, func(t *testing.T) {
			resp, err := http.Get(srv.URL + tc.path)
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var got Health
			if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tc.code || fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Fatalf("GET %s = %d %+v, want %d %+v", tc.path, resp.StatusCode, got, tc.code, tc.want)
			}
		})
	}

	if _, err := s.Health("bad", "pggit-api"); !errors.Is(err, ErrUnhealthy) {
		t.Fatalf("Health(bad) error = %v, want ErrUnhealthy", err)
	}
}

func do(t *testing.T, method, url, body string) (int, string) {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, strings.TrimSpace(string(b))
}

func TestControlProfiles(t *testing.T) {
	objs := append([]runtime.Object{deployment("production", "pggit-api", true)},
		pods("production", "pggit-api", "pggit-api:v1.0.3", 4)...)
	s, _ := startSim(t, Options{}, objs...)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()

	for _, tc := range []struct {
		name, method, path, body string
		code                     int
		want                     string
	}{
		{"bad rate", "PUT", "/control/profiles/v1.0.3", `{"errorRate":1.5}`, 400,
			`{"error":"profile v1.0.3: invalid profile: errorRate 1.5 not in [0, 1]"}`},
		{"unknown field", "PUT", "/control/profiles/v1.0.3", `{"error_rate":0.5}`, 400,
			`{"error":"decode request body: json: unknown field \"error_rate\""}`},
		{"empty body", "PUT", "/control/profiles/v1.0.3", ``, 400,
			`{"error":"decode request body: empty body"}`},
		{"set", "PUT", "/control/profiles/v1.0.3", `{"errorRate":0.5,"latencySeconds":0.2}`, 200,
			`{"errorRate":0.5,"latencySeconds":0.2,"slowFraction":0,"slowSeconds":0}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			code, body := do(t, tc.method, srv.URL+tc.path, tc.body)
			if code != tc.code || body != tc.want {
				t.Fatalf("%s %s = %d %s, want %d %s", tc.method, tc.path, code, body, tc.code, tc.want)
			}
		})
	}

	stepFor(t, s, t0, 100*time.Millisecond, 5*time.Second)
	if got := requests(t, s, "production", "pggit-api", "v1.0.3", "500"); got != 100 {
		t.Errorf("status 500 after PUT = %v, want 100", got)
	}
	if got := bucket(t, histogram(t, s, "production", "pggit-api", "v1.0.3"), 0.25); got != 200 {
		t.Errorf("bucket le=0.25 = %d, want 200", got)
	}
	if code, _ := do(t, "GET", srv.URL+"/health", ""); code != 503 {
		t.Errorf("health with 50%% errors = %d, want 503", code)
	}

	code, body := do(t, "DELETE", srv.URL+"/control/profiles/v1.0.3", "")
	if want := `{"errorRate":0,"latencySeconds":0.05,"slowFraction":0,"slowSeconds":0}`; code != 200 || body != want {
		t.Fatalf("DELETE = %d %s, want 200 %s", code, body, want)
	}
	code, body = do(t, "GET", srv.URL+"/control/profiles", "")
	var got map[string]Profile
	if err := json.Unmarshal([]byte(body), &got); code != 200 || err != nil {
		t.Fatalf("GET /control/profiles = %d %s (%v)", code, body, err)
	}
	if fmt.Sprint(got) != fmt.Sprint(DefaultProfiles()) {
		t.Fatalf("profiles = %v, want defaults %v", got, DefaultProfiles())
	}
}

func TestMetricsEndpoint(t *testing.T) {
	objs := append([]runtime.Object{deployment("production", "pggit-api", true)},
		pods("production", "pggit-api", "pggit-api:v1.1.0", 1)...)
	s, _ := startSim(t, Options{}, objs...)
	stepFor(t, s, t0, 100*time.Millisecond, time.Second)
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	code, body := do(t, "GET", srv.URL+"/metrics", "")
	for _, want := range []string{
		`http_requests_total{deployment="pggit-api",namespace="production",status="200",version="v1.1.0"} 8`,
		`http_requests_total{deployment="pggit-api",namespace="production",status="500",version="v1.1.0"} 2`,
		`http_request_duration_seconds_bucket{deployment="pggit-api",namespace="production",version="v1.1.0",le="10"} 10`,
		`http_request_duration_seconds_bucket{deployment="pggit-api",namespace="production",version="v1.1.0",le="0.005"} 0`,
	} {
		if code != 200 || !strings.Contains(body, want) {
			t.Errorf("GET /metrics = %d, missing %s in:\n%s", code, want, body)
		}
	}
	if strings.Contains(body, "go_goroutines") {
		t.Errorf("metrics include the global registry's collectors")
	}
}

func TestPGControlsWithoutDSN(t *testing.T) {
	s, _ := startSim(t, Options{})
	srv := httptest.NewServer(s.Handler())
	defer srv.Close()
	for _, tc := range []struct {
		path, body string
		code       int
		want       string
	}{
		{"/control/pg/hold", `{"n":2}`, 503, `{"error":"postgresql not configured"}`},
		{"/control/pg/hold", `{"n":0}`, 400, `{"error":"n must be \u003e 0, got 0"}`},
		{"/control/pg/write", `{"rows":3}`, 503, `{"error":"postgresql not configured"}`},
		{"/control/pg/write", `{"rows":-1}`, 400, `{"error":"rows must be \u003e 0, got -1"}`},
		{"/control/pg/release", ``, 200, `{"released":0}`},
	} {
		t.Run(tc.path+tc.body, func(t *testing.T) {
			code, body := do(t, "POST", srv.URL+tc.path, tc.body)
			if code != tc.code || body != tc.want {
				t.Fatalf("POST %s = %d %s, want %d %s", tc.path, code, body, tc.code, tc.want)
			}
		})
	}
}

func TestLoadProfiles(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		sandboxfixture.WriteFiles(t, dir, map[string]string{name: body})
		return filepath.Join(dir, name)
	}
	good := write("good.yaml", "profiles:\n  v1.1.0: {errorRate: 0.5, latencySeconds: 0.1}\n  v2.0.0: {slowFraction: 0.1, slowSeconds: 6}\n")
	got, err := LoadProfiles(good)
	if err != nil {
		t.Fatal(err)
	}
	want := DefaultProfiles()
	want["v1.1.0"] = Profile{ErrorRate: 0.5, LatencySeconds: 0.1}
	want["v2.0.0"] = Profile{SlowFraction: 0.1, SlowSeconds: 6}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("LoadProfiles = %v, want %v", got, want)
	}
	flat := write("flat.yaml", "v1.1.0: {errorRate: 0.5, latencySeconds: 0.1}\nv2.0.0: {slowFraction: 0.1, slowSeconds: 6}\n")
	if got, err := LoadProfiles(flat); err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("LoadProfiles(flat) = %v, %v; want %v", got, err, want)
	}
	if got, err := LoadProfiles(write("empty.yaml", "")); err != nil || fmt.Sprint(got) != fmt.Sprint(DefaultProfiles()) {
		t.Fatalf("LoadProfiles(empty) = %v, %v; want defaults", got, err)
	}

	for _, tc := range []struct{ name, body, want string }{
		{"typo.yaml", "profiles:\n  v1.1.0: {errorrate: 0.5}\n", "field errorrate not found in type pggitsim.Profile"},
		{"range.yaml", "profiles:\n  v1.1.0: {slowFraction: 2}\n", "v1.1.0: invalid profile: slowFraction 2 not in [0, 1]"},
		{"flat-typo.yaml", "v1.1.0: {errorrate: 0.5}\n", "field errorrate not found in type pggitsim.Profile"},
		{"not-yaml.yaml", "profiles: [\n", "parse profiles"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := LoadProfiles(write(tc.name, tc.body))
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("LoadProfiles error = %v, want it to contain %q", err, tc.want)
			}
		})
	}
	if _, err := LoadProfiles(filepath.Join(dir, "missing.yaml")); !errors.Is(err, os.ErrNotExist) {
		t.Fatalf("LoadProfiles(missing) error = %v, want ErrNotExist", err)
	}
}
