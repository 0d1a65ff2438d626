package console

import (
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/test/appdaemon"
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
)

// queries rate over [10s]: a series that vanished (the bad Pods scaled
// away) still counts for 10 s, so the trigger stays firing long enough for
// a 2 s refresh to show it, as it would on a real Prometheus with a 1m
// rate.
var queries = sandboxfixture.ExampleQueries("10s")

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

// badImage defines a fault profile under a tag of the test's own.
func (sb *sandbox) badImage(t *testing.T, p pggitsim.Profile) string {
	t.Helper()
	return sandboxfixture.FaultImage(t, sb.simURL, "console-"+sandboxfixture.RandomHex(t, 3), p)
}

// startDaemon runs app.Run in this process for one target in ns and waits
// for /healthz; cleanup stops it and prints its log tail on failure.
func startDaemon(t *testing.T, sb *sandbox, ns string) string {
	t.Helper()
	dir := t.TempDir()
	// PagerDuty and Slack are the sandbox's receiver under a prefix of
	// the test's own, so the incident page has pages to show.
	prefix := sb.env.Get(t, "RECEIVER_URL") + "/t/console-" + sandboxfixture.RandomHex(t, 4)
	sandboxfixture.WriteFiles(t, dir, map[string]string{"token": apiToken, "routing-key": "console-routing-key-0123456789ab", "slack-url": prefix + receiver.SlackWebhookPath})
	listen := sandboxfixture.FreeAddr(t)
	cfg := map[string]any{
		"global": map[string]any{
			"interval": "1s", "for": window.String(), "blindAfter": "5m", "listenAddress": listen, "logLevel": "info",
			"kubernetes": map[string]any{"kubeconfig": sb.env.Get(t, "KUBECONFIG")},
			"prometheus": map[string]any{"url": sb.env.Get(t, "PROMETHEUS_URL"), "timeout": "1s"},
			"interlocks": map[string]any{"cooldown": "1m", "maxRollbacksPerHour": 10, "maxRevisionAge": "1h"},
			"api":        map[string]any{"tokenFile": "token"},
			"notify": map[string]any{
				// Records in the cluster, in the test's namespace.
				"incidentStore": map[string]any{"namespace": ns},
				"pagerduty":     map[string]any{"routingKeyFile": "routing-key", "endpoint": prefix, "timeout": "5s"},
				"slack":         map[string]any{"webhookURLFile": "slack-url", "timeout": "5s"},
			},
			"templates": queries.Templates(),
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
	return appdaemon.Start(t, path, listen, "console-test", 120).URL
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
