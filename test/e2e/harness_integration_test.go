package e2e

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// The templates of the example config that caught a real bad deploy in the
// sandbox: [5s] rate windows so a 1 s scrape settles within seconds.
const (
	errorRateQuery  = `(sum by (namespace, deployment) (rate(http_requests_total{status=~"5.."}[5s])) or 0 * sum by (namespace, deployment) (rate(http_requests_total[5s]))) / sum by (namespace, deployment) (rate(http_requests_total[5s]))`
	volumeQuery     = `sum by (namespace, deployment) (rate(http_requests_total[5s]))`
	latencyP99Query = `histogram_quantile(0.99, sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[5s])))`

	deploymentName = "pggit-api"
	healthyImage   = "pggit-api:v1.0.3"
	routingKey     = "e2e-routing-key-0123456789abcdef"
	apiToken       = "e2e-api-token"
	// window is every trigger's `for` unless a test says otherwise.
	window = 10 * time.Second
	// fireSlack is how late after breachStart+for a trigger may fire: one
	// 1 s tick, plus scheduling on a busy 2-core machine.
	fireSlack = 3 * time.Second
)

// sandbox is what the tests reach: the env file's addresses and a
// Kubernetes client.
type sandbox struct {
	env         sandboxenv.Env
	kube        kubernetes.Interface
	kubeconfig  string
	promURL     string
	simURL      string
	receiverURL string
}

func newSandbox(t *testing.T) *sandbox {
	t.Helper()
	env := sandboxenv.Load(t)
	sb := &sandbox{
		env:         env,
		kubeconfig:  env.Get(t, "KUBECONFIG"),
		promURL:     env.Get(t, "PROMETHEUS_URL"),
		simURL:      env.Get(t, "SIM_URL"),
		receiverURL: env.Get(t, "RECEIVER_URL"),
	}
	sb.kube = sandboxfixture.Kube(t, env)
	return sb
}

func randomHex(t testing.TB, n int) string {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return hex.EncodeToString(b)
}

// freePort returns a loopback port nothing listens on right now.
func freePort(t testing.TB) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// --- Kubernetes ---------------------------------------------------------

// newNamespace creates a namespace of its own for one test. Deletion takes
// about 10 s; nothing waits for it.
func (sb *sandbox) newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := "e2e-" + prefix + "-" + randomHex(t, 3)
	sandboxfixture.Namespace(t, sb.kube, ns)
	return ns
}

// createDeployment creates the simulated pggit-api Deployment and waits for
// its rollout.
func (sb *sandbox) createDeployment(t *testing.T, ns, image string, replicas int32) {
	t.Helper()
	dep := sandboxfixture.Simulated(sandboxfixture.Deployment(ns, deploymentName, image, replicas))
	dep.Labels["app"] = deploymentName
	sandboxfixture.CreateDeployment(t, sb.kube, dep)
	sb.waitRollout(t, ns, image, replicas)
}

// setImage is `kubectl set image deployment/pggit-api api=IMAGE`.
func (sb *sandbox) setImage(t *testing.T, ns, image string) {
	t.Helper()
	patch := fmt.Sprintf(`{"spec":{"template":{"spec":{"containers":[{"name":"api","image":%q}]}}}}`, image)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if _, err := sb.kube.AppsV1().Deployments(ns).Patch(ctx, deploymentName, types.StrategicMergePatchType, []byte(patch), metav1.PatchOptions{}); err != nil {
		t.Fatalf("set image %s on %s/%s: %v", image, ns, deploymentName, err)
	}
	t.Logf("deployment %s/%s: image set to %s", ns, deploymentName, image)
}

// rolloutState says, by kubectl rollout status's criteria, whether the
// Deployment runs image on replicas ready Pods.
func (sb *sandbox) rolloutState(ctx context.Context, ns, image string, replicas int32) (bool, string, error) {
	d, err := sb.kube.AppsV1().Deployments(ns).Get(ctx, deploymentName, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	img := ""
	for _, c := range d.Spec.Template.Spec.Containers {
		if c.Name == "api" {
			img = c.Image
		}
	}
	spec := int32(-1)
	if d.Spec.Replicas != nil {
		spec = *d.Spec.Replicas
	}
	st := d.Status
	done := img == image && spec == replicas && d.Generation <= st.ObservedGeneration &&
		st.UpdatedReplicas == replicas && st.Replicas == replicas && st.AvailableReplicas == replicas && st.ReadyReplicas == replicas
	return done, fmt.Sprintf("image %s spec %d updated %d replicas %d ready %d available %d (generation %d observed %d)",
		img, spec, st.UpdatedReplicas, st.Replicas, st.ReadyReplicas, st.AvailableReplicas, d.Generation, st.ObservedGeneration), nil
}

func (sb *sandbox) waitRollout(t *testing.T, ns, image string, replicas int32) {
	t.Helper()
	sandboxfixture.WaitFor(t, fmt.Sprintf("%s/%s rolled out on %s x%d", ns, deploymentName, image, replicas), 60*time.Second, 250*time.Millisecond,
		func(ctx context.Context) (bool, string, error) { return sb.rolloutState(ctx, ns, image, replicas) })
}

// --- simulator ----------------------------------------------------------

func (sb *sandbox) simDo(ctx context.Context, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, sb.simURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("simulator %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("simulator %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("simulator %s %s: decode %q: %w", method, path, b, err)
		}
	}
	return nil
}

// badImage defines a fault profile under an image tag of the test's own,
// so no other test's profile change can move its signal, and returns the
// image.
func (sb *sandbox) badImage(t *testing.T, name string, p pggitsim.Profile) string {
	t.Helper()
	tag := "e2e-" + name + "-" + randomHex(t, 3)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := sb.simDo(ctx, http.MethodPut, "/control/profiles/"+tag, p, nil); err != nil {
		t.Fatalf("define profile %s: %v", tag, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := sb.simDo(ctx, http.MethodDelete, "/control/profiles/"+tag, nil, nil); err != nil {
			t.Logf("cleanup: delete profile %s: %v", tag, err)
		}
	})
	t.Logf("profile %s: %+v", tag, p)
	return "pggit-api:" + tag
}

// --- receiver -----------------------------------------------------------

// pdEvent is a PagerDuty Events API v2 event as rollguard sent it.
type pdEvent struct {
	RoutingKey  string `json:"routing_key"`
	EventAction string `json:"event_action"`
	DedupKey    string `json:"dedup_key"`
	Payload     struct {
		Summary       string                     `json:"summary"`
		Source        string                     `json:"source"`
		Severity      string                     `json:"severity"`
		Timestamp     time.Time                  `json:"timestamp"`
		Component     string                     `json:"component"`
		Group         string                     `json:"group"`
		Class         string                     `json:"class"`
		CustomDetails map[string]json.RawMessage `json:"custom_details"`
	} `json:"payload"`
	// Received and Status are the receiver's record, not the event.
	Received time.Time `json:"-"`
	Status   int       `json:"-"`
}

// String is a readable one-line form for failure messages.
func (e pdEvent) String() string {
	details := make([]string, 0, len(e.Payload.CustomDetails))
	for k, v := range e.Payload.CustomDetails {
		if len(v) > 80 {
			v = append(v[:77:77], "..."...)
		}
		details = append(details, k+"="+string(v))
	}
	sort.Strings(details)
	return fmt.Sprintf("{%s %s dedup_key=%q severity=%s class=%s summary=%q details: %s}",
		e.Received.UTC().Format("15:04:05.000"), e.EventAction, e.DedupKey, e.Payload.Severity, e.Payload.Class, e.Payload.Summary, strings.Join(details, " "))
}

func (e pdEvent) detail(t *testing.T, key string, v any) bool {
	t.Helper()
	raw, ok := e.Payload.CustomDetails[key]
	if !ok {
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("custom_details.%s = %s: %v", key, raw, err)
	}
	return true
}

func (e pdEvent) kind(t *testing.T) string {
	var k string
	e.detail(t, "kind", &k)
	return k
}

// evidenceSample is one element of custom_details.samples.
type evidenceSample struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
}

// inbox is one test's share of the receiver: its own path prefix, so its
// records and faults are its own.
type inbox struct {
	base   string // receiver control base
	prefix string // /t/<unique>
}

func (sb *sandbox) newInbox(t *testing.T, name string) inbox {
	return inbox{base: sb.receiverURL, prefix: "/t/e2e-" + name + "-" + randomHex(t, 4)}
}

func (ib inbox) pagerDutyEndpoint() string { return ib.base + ib.prefix }
func (ib inbox) slackURL() string          { return ib.base + ib.prefix + receiver.SlackWebhookPath }

func (ib inbox) received(ctx context.Context, path string) ([]receiver.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ib.base+"/_/received?path="+url.QueryEscape(ib.prefix+path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("receiver: GET /_/received: %s", resp.Status)
	}
	var out []receiver.Request
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("receiver: decode: %w", err)
	}
	return out, nil
}

// pagerDuty returns the alert events received, oldest first.
func (ib inbox) pagerDuty(ctx context.Context) ([]pdEvent, error) {
	reqs, err := ib.received(ctx, receiver.PagerDutyEventsPath)
	if err != nil {
		return nil, err
	}
	out := make([]pdEvent, 0, len(reqs))
	for _, r := range reqs {
		var e pdEvent
		if err := json.Unmarshal([]byte(r.Body), &e); err != nil {
			return nil, fmt.Errorf("pagerduty event %q: %w", r.Body, err)
		}
		e.Received, e.Status = r.Time, r.Status
		out = append(out, e)
	}
	return out, nil
}

// slackMessage is a webhook body as rollguard posted it.
type slackMessage struct {
	Text     string    `json:"text"`
	Received time.Time `json:"-"`
	Status   int       `json:"-"`
}

func (ib inbox) slack(ctx context.Context) ([]slackMessage, error) {
	reqs, err := ib.received(ctx, receiver.SlackWebhookPath)
	if err != nil {
		return nil, err
	}
	out := make([]slackMessage, 0, len(reqs))
	for _, r := range reqs {
		var m slackMessage
		if err := json.Unmarshal([]byte(r.Body), &m); err != nil {
			return nil, fmt.Errorf("slack message %q: %w", r.Body, err)
		}
		m.Received, m.Status = r.Time, r.Status
		out = append(out, m)
	}
	return out, nil
}

// --- the daemon ---------------------------------------------------------

// daemonSpec is the part of a config a test chooses; startDaemon adds the
// listen address, secrets, kubeconfig, templates and notifiers.
type daemonSpec struct {
	PrometheusURL string
	// PrometheusHTTPConfig is global.prometheus.httpConfig; nil for none.
	PrometheusHTTPConfig map[string]any
	// Notify and Global are merged into global.notify and global (e.g.
	// webhooks, leaderElection); nil for nothing more.
	Notify, Global map[string]any
	// Databases maps a name to its DSN (written to a secret file).
	Databases  map[string]string
	Inbox      *inbox // PagerDuty and Slack; nil for none
	BlindAfter time.Duration
	Target     map[string]any // one target; name defaults to pggit-api
	// More are targets after it, as they are.
	More []map[string]any
}

type daemon struct {
	url         string
	dir         string
	incidentDir string
	client      *api.Client
	logs        *logBuffer
	errc        chan error
}

// logBuffer collects the daemon's JSON log lines for failure reports.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

func (l *logBuffer) lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

func dur(d time.Duration) string { return d.String() }

// writeConfig writes the config of spec into dir with its secret files and
// returns its path and listen address.
func writeConfig(t *testing.T, sb *sandbox, dir string, spec daemonSpec) (string, string) {
	t.Helper()
	write := func(name, content string) string {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return name // relative: secrets are read relative to the config file
	}
	listen := fmt.Sprintf("127.0.0.1:%d", freePort(t))
	blind := spec.BlindAfter
	if blind == 0 {
		blind = 5 * time.Minute
	}
	// Files: the tests compare the report the API serves with the file.
	notifyCfg := map[string]any{"incidentDir": filepath.Join(dir, "incidents"), "incidentStore": map[string]any{"kind": "dir"}}
	if ib := spec.Inbox; ib != nil {
		notifyCfg["pagerduty"] = map[string]any{"routingKeyFile": write("routing-key", routingKey), "endpoint": ib.pagerDutyEndpoint(), "timeout": "5s"}
		notifyCfg["slack"] = map[string]any{"webhookURLFile": write("slack-url", ib.slackURL()), "timeout": "5s"}
	}
	global := map[string]any{
		"interval":      "1s",
		"for":           dur(window),
		"blindAfter":    dur(blind),
		"listenAddress": listen,
		"logLevel":      "info",
		"kubernetes":    map[string]any{"kubeconfig": sb.kubeconfig},
		"interlocks":    map[string]any{"cooldown": "1m", "maxRollbacksPerHour": 10, "maxRevisionAge": "1h"},
		"api":           map[string]any{"tokenFile": write("token", apiToken)},
		"notify":        notifyCfg,
		"templates": map[string]any{
			"errorRate":  map[string]any{"query": errorRateQuery, "volumeQuery": volumeQuery},
			"latencyP99": map[string]any{"query": latencyP99Query},
		},
	}
	for k, v := range spec.Notify {
		notifyCfg[k] = v
	}
	for k, v := range spec.Global {
		global[k] = v
	}
	if spec.PrometheusURL != "" {
		prom := map[string]any{"url": spec.PrometheusURL, "timeout": "1s"}
		if spec.PrometheusHTTPConfig != nil {
			prom["httpConfig"] = spec.PrometheusHTTPConfig
		}
		global["prometheus"] = prom
	}
	var dbs []map[string]any
	for name, dsn := range spec.Databases {
		dbs = append(dbs, map[string]any{"name": name, "dsnFile": write("dsn-"+name, dsn), "connectTimeout": "2s", "statementTimeout": "2s"})
	}
	if len(dbs) > 0 {
		global["databases"] = dbs
	}
	target := map[string]any{"name": deploymentName, "deployment": deploymentName, "containers": []string{"api"}}
	for k, v := range spec.Target {
		target[k] = v
	}
	targets := []any{target}
	for _, m := range spec.More {
		targets = append(targets, m)
	}
	b, err := yaml.Marshal(map[string]any{"global": global, "targets": targets})
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "rollguard.yaml")
	if err := os.WriteFile(path, b, 0o600); err != nil {
		t.Fatal(err)
	}
	return path, listen
}

// startDaemon runs app.Run in this process and waits until it serves
// /healthz. Cleanup stops it and fails the test if Run returned an error;
// the daemon's log is printed when the test failed.
func startDaemon(t *testing.T, sb *sandbox, spec daemonSpec) *daemon {
	t.Helper()
	dir := t.TempDir()
	path, listen := writeConfig(t, sb, dir, spec)
	d := &daemon{url: "http://" + listen, dir: dir, incidentDir: filepath.Join(dir, "incidents"), logs: &logBuffer{}, errc: make(chan error, 1)}
	d.client = &api.Client{BaseURL: d.url, Token: apiToken, HTTP: &http.Client{Timeout: 5 * time.Second}}
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		d.errc <- app.Run(ctx, app.Options{ConfigFile: path, LogOutput: d.logs, Identity: "e2e-" + t.Name(), ShutdownTimeout: 5 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-d.errc:
			if err != nil {
				t.Errorf("app.Run returned %v", err)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("app.Run did not return within 20s of cancel")
		}
		if t.Failed() {
			lines := d.logs.lines()
			if len(lines) > 150 {
				lines = lines[len(lines)-150:]
			}
			t.Logf("daemon log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
		}
	})
	start := time.Now()
	for {
		select {
		case err := <-d.errc:
			d.errc <- err // for the cleanup
			t.Fatalf("app.Run returned before serving: %v\nlog:\n%s", err, strings.Join(d.logs.lines(), "\n"))
		default:
		}
		code, _, err := httpGet(d.url + "/healthz")
		if err == nil && code == http.StatusOK {
			t.Logf("daemon serving on %s after %v", listen, time.Since(start).Round(time.Millisecond))
			return d
		}
		if time.Since(start) > 20*time.Second {
			t.Fatalf("daemon not serving /healthz within 20s: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func httpGet(u string) (int, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, "", err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, "", err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 4<<20))
	return resp.StatusCode, string(b), err
}

// triggerStatus returns one trigger's status from /api/v1/status.
func (d *daemon) triggerStatus(ctx context.Context, name string) (trigger.Status, error) {
	s, err := d.client.Status(ctx)
	if err != nil {
		return trigger.Status{}, err
	}
	for _, ts := range s.Triggers {
		if ts.Trigger == name {
			return ts, nil
		}
	}
	return trigger.Status{}, fmt.Errorf("trigger %q not in the status (%d triggers)", name, len(s.Triggers))
}

// observation is one poll of a trigger's status.
type observation struct {
	At     time.Time
	Status trigger.Status
}

// watch polls the trigger every 100 ms, logging each state change, until
// done says so; it fails the test at the deadline. It returns every
// observation, oldest first.
func (d *daemon) watch(t *testing.T, name string, timeout time.Duration, done func(trigger.Status) bool) []observation {
	t.Helper()
	var obs []observation
	start := time.Now()
	var last trigger.Status
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		s, err := d.triggerStatus(ctx, name)
		cancel()
		now := time.Now()
		if err == nil {
			obs = append(obs, observation{At: now, Status: s})
			if len(obs) == 1 || s.State != last.State {
				t.Logf("%s: %v -> %s (value %.4g, breachStart %s, noDataSince %s, lastError %q)", name, now.Sub(start).Round(time.Millisecond),
					s.State, s.Value, fmtTime(s.BreachStart), fmtTime(s.NoDataSince), s.LastError)
			}
			last = s
			if done(s) {
				return obs
			}
		}
		if now.After(start.Add(timeout)) {
			t.Fatalf("%s: condition not reached within %v; last status %+v (poll error %v)", name, timeout, last, err)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func fmtTime(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("15:04:05.000")
}

func stateIs(want string) func(trigger.Status) bool {
	return func(s trigger.Status) bool { return s.State.String() == want }
}

// waitEvents polls the inbox's PagerDuty events until done says so.
func (ib inbox) waitEvents(t *testing.T, what string, timeout time.Duration, done func([]pdEvent) bool) []pdEvent {
	t.Helper()
	var got []pdEvent
	sandboxfixture.WaitFor(t, what, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		evs, err := ib.pagerDuty(ctx)
		if err != nil {
			return false, "", err
		}
		got = evs
		return done(evs), fmt.Sprintf("%d pagerduty events", len(evs)), nil
	})
	return got
}
