package backtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/source/prometheus"
	"github.com/rollguard/rollguard/pkg/window"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestBacktestSandbox records about 90 s of history with the simulator and
// backtests it: a fault at a known time, a flapping stretch, and a gap
// where the Deployment has no ready Pods (so the ratio has no result).
func TestBacktestSandbox(t *testing.T) {
	env := sandboxenv.Load(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()

	promURL, simURL := env.Get(t, "PROMETHEUS_URL"), env.Get(t, "SIM_URL")
	restCfg, err := clientcmd.BuildConfigFromFlags("", env.Get(t, "KUBECONFIG"))
	if err != nil {
		t.Fatal(err)
	}
	kc, err := kubernetes.NewForConfig(restCfg)
	if err != nil {
		t.Fatal(err)
	}
	suffix := sandboxfixture.RandomHex(t, 4)
	ns, tag := "bt-"+suffix, "bt-"+suffix
	profile := func(errorRate float64) time.Time {
		t.Helper()
		body := fmt.Sprintf(`{"errorRate":%g,"latencySeconds":0.05}`, errorRate)
		req, _ := http.NewRequestWithContext(ctx, http.MethodPut, simURL+"/control/profiles/"+tag, strings.NewReader(body))
		req.Header.Set("Content-Type", "application/json")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("set profile %s: %v", tag, err)
		}
		resp.Body.Close()
		if resp.StatusCode/100 != 2 {
			t.Fatalf("set profile %s: %s", tag, resp.Status)
		}
		return time.Now()
	}
	scale := func(n int32) time.Time {
		t.Helper()
		s, err := kc.AppsV1().Deployments(ns).GetScale(ctx, "api", metav1.GetOptions{})
		if err != nil {
			t.Fatal(err)
		}
		s.Spec.Replicas = n
		if _, err := kc.AppsV1().Deployments(ns).UpdateScale(ctx, "api", s, metav1.UpdateOptions{}); err != nil {
			t.Fatal(err)
		}
		return time.Now()
	}

	profile(0)
	if _, err := kc.CoreV1().Namespaces().Create(ctx, &corev1.Namespace{ObjectMeta: metav1.ObjectMeta{Name: ns}}, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		// Deletion takes ~10 s; nothing waits for it.
		_ = kc.CoreV1().Namespaces().Delete(context.Background(), ns, metav1.DeleteOptions{})
	})
	replicas := int32(2)
	labels := map[string]string{"app": "api"}
	dep := &appsv1.Deployment{
		ObjectMeta: metav1.ObjectMeta{Name: "api", Namespace: ns, Labels: map[string]string{"pggitsim.rollguard.io/simulate": "true"}},
		Spec: appsv1.DeploymentSpec{
			Replicas: &replicas,
			Selector: &metav1.LabelSelector{MatchLabels: labels},
			Template: corev1.PodTemplateSpec{
				ObjectMeta: metav1.ObjectMeta{Labels: labels},
				Spec:       corev1.PodSpec{Containers: []corev1.Container{{Name: "api", Image: "pggit-api:" + tag}}},
			},
		},
	}
	if _, err := kc.AppsV1().Deployments(ns).Create(ctx, dep, metav1.CreateOptions{}); err != nil {
		t.Fatal(err)
	}

	sel := fmt.Sprintf(`namespace=%q`, ns)
	ratioQ := fmt.Sprintf(`sum by (namespace, deployment) (rate(http_requests_total{%s,status="500"}[5s])) / sum by (namespace, deployment) (rate(http_requests_total{%s}[5s]))`, sel, sel)
	volumeQ := fmt.Sprintf(`sum by (namespace, deployment) (rate(http_requests_total{%s}[5s]))`, sel)
	prom, err := prometheus.New(prometheus.Options{URL: promURL, Timeout: 10 * time.Second}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	waitRatio := func(what string) {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for time.Now().Before(deadline) {
			s, err := prom.Query(ctx, ratioQ, time.Now())
			if err == nil && len(s) == 1 {
				return
			}
			time.Sleep(500 * time.Millisecond)
		}
		t.Fatalf("%s: the ratio series did not appear within 60 s", what)
	}
	waitRatio("start")

	// The recording: healthy, fault, healthy, flapping, healthy, gap, healthy.
	start := time.Now()
	time.Sleep(8 * time.Second)
	fault := profile(0.3)
	time.Sleep(20 * time.Second)
	recovered := profile(0)
	time.Sleep(8 * time.Second)
	flap0 := time.Now()
	for i := range 8 {
		profile([]float64{0.3, 0}[i%2])
		time.Sleep(3 * time.Second)
	}
	flap1 := time.Now()
	time.Sleep(6 * time.Second)
	gap0 := scale(0)
	time.Sleep(12 * time.Second)
	gap1 := scale(2)
	waitRatio("after the gap")
	time.Sleep(6 * time.Second)
	end := time.Now()
	time.Sleep(2 * time.Second) // the last scrape
	t.Logf("recorded %s .. %s: fault %s, recovered %s, flapping %s .. %s, gap %s .. %s",
		start.Format(time.TimeOnly), end.Format(time.TimeOnly), fault.Format(time.TimeOnly), recovered.Format(time.TimeOnly),
		flap0.Format(time.TimeOnly), flap1.Format(time.TimeOnly), gap0.Format(time.TimeOnly), gap1.Format(time.TimeOnly))

	yaml := fmt.Sprintf(`
global:
  interval: 1s
  blindAfter: 5s
  prometheus: {url: %q}
  interlocks: {cooldown: 10m}
targets:
  - name: bt
    namespace: %s
    deployment: api
    triggers:
      - name: error-rate
        kind: prometheus
        query: %q
        volumeQuery: %q
        match: {namespace: %s, deployment: api}
        above: 0.1
        for: 10s
        minRate: 1
        action: rollback
`, promURL, ns, ratioQ, volumeQ, ns)
	load := func() *config.Config {
		cfg, err := config.Load([]byte(yaml))
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	from, to := start.Truncate(time.Second), end.Truncate(time.Second)
	run := func(o Options) *Report {
		t.Helper()
		o.Config, o.From, o.To, o.Step = load(), from, to, time.Second
		o.Logger = zaptest.NewLogger(t)
		rep, err := Backtest(ctx, o)
		if err != nil {
			t.Fatal(err)
		}
		return rep
	}

	rep := run(Options{})
	tr := rep.Targets[0].Triggers[0]
	fires := rep.Targets[0].Fires
	for _, f := range fires {
		t.Logf("fire at %s (first breach %s) %s %s", f.At.Format(time.TimeOnly), f.FirstBreach.Format(time.TimeOnly), f.Verdict, f.Detail)
	}
	for _, s := range tr.Spans {
		t.Logf("span %s %s .. %s", s.State, s.From.Format(time.TimeOnly), s.To.Format(time.TimeOnly))
	}

	// The fault is found: its first breaching sample is the first point of
	// the raw series above the threshold after the switch, and it fires
	// exactly `for` later.
	raw, err := prom.QueryRange(ctx, ratioQ, from, to, time.Second)
	if err != nil || len(raw) != 1 {
		t.Fatalf("raw ratio: %d series, %v", len(raw), err)
	}
	var trueBreach time.Time
	for _, p := range raw[0].Points {
		if !p.Time.Before(fault) && p.Value > 0.1 {
			trueBreach = p.Time
			break
		}
	}
	if trueBreach.IsZero() || trueBreach.Sub(fault) > 6*time.Second {
		t.Fatalf("the raw series shows the fault at %v, %v after the switch", trueBreach, trueBreach.Sub(fault))
	}
	if len(fires) != 1 {
		t.Fatalf("fires: %d, want exactly the fault (%+v)", len(fires), fires)
	}
	f := fires[0]
	if d := f.FirstBreach.Sub(trueBreach); d < -time.Second || d > time.Second {
		t.Errorf("first breach %s, true breach %s: more than one step apart", f.FirstBreach, trueBreach)
	}
	if d := f.At.Sub(f.FirstBreach); d < 10*time.Second || d > 11*time.Second {
		t.Errorf("fired %s after the first breach, want the 10s window (+ one step)", d)
	}
	if f.Verdict != VerdictWouldAct || f.Revision != "" {
		t.Errorf("verdict %s revision %q", f.Verdict, f.Revision)
	}

	// The flapping stretch breached, but never for the whole window.
	breachedInFlap := false
	for _, s := range tr.Spans {
		in := s.From.After(flap0) && s.From.Before(flap1.Add(5*time.Second))
		if in && s.State == window.StatePending {
			breachedInFlap = true
		}
		if in && s.State == window.StateFiring {
			t.Errorf("flapping stretch fired: %+v", s)
		}
	}
	if !breachedInFlap {
		t.Error("the flapping stretch never breached: the recording did not flap")
	}

	// The gap (no Pod, so no request: the ratio is 0/0 while the volume
	// reads 0) is low volume, not a breach, and not blindness: no blind
	// page.
	var gapSpan *Span
	for i, s := range tr.Spans {
		if s.State == window.StateLowVolume && s.To.After(gap0) && s.From.Before(gap1.Add(6*time.Second)) {
			gapSpan = &tr.Spans[i]
		}
	}
	if gapSpan == nil || gapSpan.To.Sub(gapSpan.From) < 5*time.Second {
		t.Fatalf("no lowvolume span of at least 5 s over the gap %s .. %s: %+v", gap0, gap1, tr.Spans)
	}
	if len(tr.Blind) != 0 {
		t.Errorf("the gap of traffic paged blind: %+v", tr.Blind)
	}

	// A lower threshold finds more: the flapping stretch now holds above
	// it; the cooldown blocks the second rollback.
	low := run(Options{Sets: []string{"targets.bt.triggers.error-rate.above=0.05"}})
	lf := low.Targets[0].Fires
	if len(lf) <= len(fires) {
		t.Fatalf("above=0.05 found %d fires, want more than %d", len(lf), len(fires))
	}
	inFlap := false
	for _, f := range lf {
		t.Logf("above=0.05: fire at %s %s %s", f.At.Format(time.TimeOnly), f.Verdict, f.BlockedBy)
		if f.At.After(flap0) && f.At.Before(flap1.Add(6*time.Second)) {
			inFlap = true
			if f.BlockedBy != guard.Cooldown {
				t.Errorf("second rollback within the cooldown: %+v", f)
			}
		}
	}
	if !inFlap {
		t.Error("above=0.05 did not fire in the flapping stretch")
	}

	// JSON: only the documented structure.
	var out bytes.Buffer
	plotFile := filepath.Join(t.TempDir(), "sandbox.png")
	if d := os.Getenv("BACKTEST_PLOT_DIR"); d != "" {
		plotFile = filepath.Join(d, "sandbox.png")
	}
	err = Run(ctx, Options{Config: load(), From: from, To: to, Step: time.Second, Output: OutputJSON, Stdout: &out, PlotFile: plotFile})
	if err != nil {
		t.Fatal(err)
	}
	var v any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	documented, err := os.ReadFile("testdata/report.shape")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range Shape(v) {
		if !strings.Contains(string(documented), "\n"+k+"\n") && !strings.HasPrefix(string(documented), k+"\n") {
			t.Errorf("JSON key %q is not in the documented structure", k)
		}
	}
	if st, err := os.Stat(plotFile); err != nil || st.Size() < 10_000 {
		t.Errorf("plot %s: %v", plotFile, err)
	}

	// Bad input against the real server: a range older than the retention
	// Prometheus reports.
	err = Run(ctx, Options{Config: load(), From: time.Now().Add(-48 * time.Hour), To: time.Now(), Step: time.Second})
	if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "older than Prometheus's retention of 1d") {
		t.Errorf("retention: %v", err)
	}
}
