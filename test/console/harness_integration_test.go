package console

import (
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

const (
	deploymentName = "pggit-api"
	healthyImage   = "pggit-api:v1.0.3"
	apiToken       = "console-test-token"
	// window is the trigger's `for`.
	window = 10 * time.Second
	// The error ratio over [10s]: a series that vanished (the bad Pods
	// scaled away) still counts for 10 s, so the trigger stays firing long
	// enough for a 2 s refresh to show it, as it would on a real
	// Prometheus with a 1m rate.
	errorRateQuery = `(sum by (namespace, deployment) (rate(http_requests_total{status=~"5.."}[10s])) or 0 * sum by (namespace, deployment) (rate(http_requests_total[10s]))) / sum by (namespace, deployment) (rate(http_requests_total[10s]))`
	volumeQuery    = `sum by (namespace, deployment) (rate(http_requests_total[10s]))`
	latencyQuery   = `histogram_quantile(0.99, sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[10s])))`
)

type sandbox struct {
	env    sandboxenv.Env
	kube   kubernetes.Interface
	deps   *kube.Deployments
	simURL string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	env := sandboxenv.Load(t)
	kc := sandboxfixture.Kube(t, env)
	return &sandbox{env: env, kube: kc, deps: kube.New(kc, kube.Options{}, nil), simURL: env.Get(t, "SIM_URL")}
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// badImage defines a fault profile under a tag of the test's own.
func (sb *sandbox) badImage(t *testing.T, p pggitsim.Profile) string {
	t.Helper()
	tag := "console-" + randomHex(t, 3)
	body, _ := json.Marshal(p)
	if err := sb.sim(http.MethodPut, "/control/profiles/"+tag, body); err != nil {
		t.Fatalf("define profile %s: %v", tag, err)
	}
	t.Cleanup(func() {
		if err := sb.sim(http.MethodDelete, "/control/profiles/"+tag, nil); err != nil {
			t.Logf("cleanup: delete profile %s: %v", tag, err)
		}
	})
	return "pggit-api:" + tag
}

func (sb *sandbox) sim(method, path string, body []byte) error {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, method, sb.simURL+path, bytes.NewReader(body))
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		b, _ := io.ReadAll(resp.Body)
		return fmt.Errorf("%s %s: %s: %s", method, path, resp.Status, b)
	}
	return nil
}

// logBuffer keeps the daemon's log for a failure report.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startDaemon runs app.Run in this process for one target in ns and waits
// for /healthz; cleanup stops it and prints its log tail on failure.
func startDaemon(t *testing.T, sb *sandbox, ns string) string {
	t.Helper()
	dir := t.TempDir()
	// PagerDuty and Slack are the sandbox's receiver under a prefix of
	// the test's own, so the incident page has pages to show.
	prefix := sb.env.Get(t, "RECEIVER_URL") + "/t/console-" + randomHex(t, 4)
	for name, content := range map[string]string{"token": apiToken, "routing-key": "console-routing-key-0123456789ab", "slack-url": prefix + receiver.SlackWebhookPath} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	cfg := map[string]any{
		"global": map[string]any{
			"interval": "1s", "for": window.String(), "blindAfter": "5m", "listenAddress": listen, "logLevel": "info",
			"kubernetes": map[string]any{"kubeconfig": sb.env.Get(t, "KUBECONFIG")},
			"prometheus": map[string]any{"url": sb.env.Get(t, "PROMETHEUS_URL"), "timeout": "1s"},
			"interlocks": map[string]any{"cooldown": "1m", "maxRollbacksPerHour": 10, "maxRevisionAge": "1h"},
			"api":        map[string]any{"tokenFile": "token"},
			"notify": map[string]any{
				"incidentDir": filepath.Join(dir, "incidents"),
				"pagerduty":   map[string]any{"routingKeyFile": "routing-key", "endpoint": prefix, "timeout": "5s"},
				"slack":       map[string]any{"webhookURLFile": "slack-url", "timeout": "5s"},
			},
			"templates": map[string]any{
				"errorRate":  map[string]any{"query": errorRateQuery, "volumeQuery": volumeQuery},
				"latencyP99": map[string]any{"query": latencyQuery},
			},
		},
		"targets": []any{map[string]any{
			"name": deploymentName, "namespace": ns, "deployment": deploymentName, "containers": []string{"api"},
			"healthURL": sb.simURL + "/health/" + ns + "/" + deploymentName,
			"rollback":  map[string]any{"strategy": "quick", "rampSteps": []int{2}, "rampPause": "1s", "rolloutTimeout": "30s", "verifyWindow": "45s"},
			"triggers": []map[string]any{
				{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "action": "rollback"},
				{"name": "latency-p99", "kind": "latencyP99", "above": 5, "action": "rollback"},
			},
		}},
	}
	b, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rollguard.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	logs := &logBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() {
		errc <- app.Run(ctx, app.Options{ConfigFile: path, LogOutput: logs, Identity: "console-test", ShutdownTimeout: 5 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("app.Run returned %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("app.Run did not return within 20s of cancel")
		}
		if t.Failed() {
			lines := strings.Split(strings.TrimSpace(logs.String()), "\n")
			if len(lines) > 120 {
				lines = lines[len(lines)-120:]
			}
			t.Logf("daemon log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
		}
	})
	base := "http://" + listen
	sandboxfixture.WaitFor(t, "daemon /healthz", 20*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		select {
		case err := <-errc:
			errc <- err
			return false, "", fmt.Errorf("app.Run returned: %v", err)
		default:
		}
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, base+"/healthz", nil)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, "", err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	})
	return base
}

// --- the browser ------------------------------------------------------

// browser starts Debian's Chromium headless with a fresh profile. As root
// it needs --no-sandbox; the machine has no network, so everything that
// would call home is off.
func browser(t *testing.T, env sandboxenv.Env) context.Context {
	t.Helper()
	bin := env.Get(t, "CHROMIUM_BIN")
	opts := []chromedp.ExecAllocatorOption{
		chromedp.ExecPath(bin),
		chromedp.UserDataDir(t.TempDir()),
		chromedp.Flag("headless", true),
		chromedp.Flag("no-sandbox", true),
		chromedp.Flag("disable-gpu", true),
		chromedp.Flag("disable-quic", true),
		chromedp.Flag("no-first-run", true),
		chromedp.Flag("no-default-browser-check", true),
		chromedp.Flag("disable-background-networking", true),
		chromedp.Flag("disable-component-update", true),
		chromedp.Flag("disable-sync", true),
		chromedp.Flag("disable-extensions", true),
		chromedp.Flag("disable-default-apps", true),
		chromedp.Flag("hide-scrollbars", true),
		chromedp.WindowSize(1280, 900),
	}
	actx, cancelAlloc := chromedp.NewExecAllocator(context.Background(), opts...)
	ctx, cancel := chromedp.NewContext(actx, chromedp.WithLogf(t.Logf))
	t.Cleanup(func() { cancel(); cancelAlloc() })
	if err := chromedp.Do(ctx); err != nil {
		t.Fatalf("start chromium %s: %v", bin, err)
	}
	return ctx
}

// run runs browser actions with their own deadline.
func run(t *testing.T, ctx context.Context, what string, d time.Duration, actions ...chromedp.Action[chromedp.Void]) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, d)
	defer cancel()
	if err := chromedp.Do(c, actions...); err != nil {
		t.Fatalf("browser: %s: %v", what, err)
	}
}

// eval evaluates a script in the page (awaiting a promise) and returns
// its value.
func eval[T any](t *testing.T, ctx context.Context, script string) T {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	v, err := chromedp.Run(c, chromedp.Evaluate[T](script, chromedp.EvalAwaitPromise))
	if err != nil {
		t.Fatalf("browser: evaluate %s: %v", firstLine(script), err)
	}
	return v
}

func firstLine(s string) string {
	s = strings.TrimSpace(s)
	if i := strings.IndexByte(s, '\n'); i >= 0 {
		s = s[:i] + " …"
	}
	return s
}

// screenshotDir is where the screenshots go.
func screenshotDir(t *testing.T) string {
	t.Helper()
	dir := os.Getenv("ROLLGUARD_SCREENSHOT_DIR")
	if dir == "" {
		_, file, _, _ := runtime.Caller(0)
		dir = filepath.Join(filepath.Dir(file), ".screenshots")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	abs, _ := filepath.Abs(dir)
	return abs
}

// shoot saves a full-page screenshot and prints its path.
func shoot(t *testing.T, ctx context.Context, dir, name string) {
	t.Helper()
	c, cancel := context.WithTimeout(ctx, 20*time.Second)
	defer cancel()
	png, err := chromedp.Run(c, chromedp.FullScreenshot(100))
	if err != nil {
		t.Fatalf("browser: screenshot %s: %v", name, err)
	}
	path := filepath.Join(dir, name+".png")
	if err := os.WriteFile(path, png, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Logf("screenshot: %s", path)
}

func (sb *sandbox) annotation(t *testing.T, ns string) (string, bool) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	d, err := sb.kube.AppsV1().Deployments(ns).Get(ctx, deploymentName, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", ns, deploymentName, err)
	}
	v, ok := d.Annotations[kube.FreezeAnnotation]
	return v, ok
}
