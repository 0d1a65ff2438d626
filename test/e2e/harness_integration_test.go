package e2e

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/test/appdaemon"
	"github.com/rollguard/rollguard/test/inbox"
	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// The templates of the example config that caught a real bad deploy in the
// sandbox: [5s] rate windows so a 1 s scrape settles within seconds.
var (
	queries         = sandboxfixture.ExampleQueries("5s")
	errorRateQuery  = queries.ErrorRate
	latencyP99Query = queries.LatencyP99
)

const (
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

// --- Kubernetes ---------------------------------------------------------

// newNamespace creates a namespace of its own for one test. Deletion takes
// about 10 s; nothing waits for it.
func (sb *sandbox) newNamespace(t *testing.T, prefix string) string {
	t.Helper()
	ns := "e2e-" + prefix + "-" + sandboxfixture.RandomHex(t, 3)
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
	sandboxfixture.SetImage(t, sb.kube, ns, deploymentName, image)
	t.Logf("deployment %s/%s: image set to %s", ns, deploymentName, image)
}

// rolloutState says, by kubectl rollout status's criteria, whether the
// Deployment runs image on replicas ready Pods.
func (sb *sandbox) rolloutState(ctx context.Context, ns, image string, replicas int32) (bool, string, error) {
	d, err := sb.kube.AppsV1().Deployments(ns).Get(ctx, deploymentName, metav1.GetOptions{})
	if err != nil {
		return false, "", err
	}
	img := d.Spec.Template.Spec.Containers[0].Image
	done, state := sandboxfixture.RolledOut(d)
	return done && img == image && kube.Replicas(d) == replicas, "image " + img + " " + state, nil
}

func (sb *sandbox) waitRollout(t *testing.T, ns, image string, replicas int32) {
	t.Helper()
	sandboxfixture.WaitFor(t, fmt.Sprintf("%s/%s rolled out on %s x%d", ns, deploymentName, image, replicas), 60*time.Second, 250*time.Millisecond,
		func(ctx context.Context) (bool, string, error) { return sb.rolloutState(ctx, ns, image, replicas) })
}

// --- simulator ----------------------------------------------------------

// badImage defines a fault profile under an image tag of the test's own,
// so no other test's profile change can move its signal, and returns the
// image.
func (sb *sandbox) badImage(t *testing.T, name string, p pggitsim.Profile) string {
	t.Helper()
	return sandboxfixture.FaultImage(t, sb.simURL, "e2e-"+name+"-"+sandboxfixture.RandomHex(t, 3), p)
}

// --- receiver -----------------------------------------------------------

// evidenceSample is one element of custom_details.samples.
type evidenceSample struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
}

func (sb *sandbox) newInbox(t *testing.T, name string) inbox.Inbox {
	return inbox.Inbox{Base: sb.receiverURL, Prefix: "/t/e2e-" + name + "-" + sandboxfixture.RandomHex(t, 4)}
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
	Inbox      *inbox.Inbox // PagerDuty and Slack; nil for none
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
}

func dur(d time.Duration) string { return d.String() }

// writeConfig writes the config of spec into dir with its secret files and
// returns its path and listen address.
func writeConfig(t *testing.T, sb *sandbox, dir string, spec daemonSpec) (string, string) {
	t.Helper()
	write := func(name, content string) string {
		sandboxfixture.WriteFiles(t, dir, map[string]string{name: content})
		return name // relative: secrets are read relative to the config file
	}
	listen := sandboxfixture.FreeAddr(t)
	blind := spec.BlindAfter
	if blind == 0 {
		blind = 5 * time.Minute
	}
	// Files: the tests compare the report the API serves with the file.
	notifyCfg := map[string]any{"incidentDir": filepath.Join(dir, "incidents"), "incidentStore": map[string]any{"kind": "dir"}}
	if ib := spec.Inbox; ib != nil {
		notifyCfg["pagerduty"] = map[string]any{"routingKeyFile": write("routing-key", routingKey), "endpoint": ib.PagerDutyEndpoint(), "timeout": "5s"}
		notifyCfg["slack"] = map[string]any{"webhookURLFile": write("slack-url", ib.SlackURL()), "timeout": "5s"}
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
		"templates":     queries.Templates(),
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
	ad := appdaemon.Start(t, path, listen, "e2e-"+t.Name(), 150)
	return &daemon{url: ad.URL, dir: dir, incidentDir: filepath.Join(dir, "incidents"),
		client: &api.Client{BaseURL: ad.URL, Token: apiToken, HTTP: &http.Client{Timeout: 5 * time.Second}}}
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
