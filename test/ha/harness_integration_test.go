package ha

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	apiequality "k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/fields"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/apimachinery/pkg/watch"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/statestore"
	"github.com/rollguard/rollguard/test/inbox"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// Images of the simulator's fault profiles: v1.0.3 is healthy, v1.1.0
// fails 20 % of requests.
const (
	goodImage = "pggit-api:v1.0.3"
	badImage  = "pggit-api:v1.1.0"
	replicas  = 4
	apiToken  = "ha-test-token"
	// Interval of every daemon under test: the tolerances below are
	// expressed in it.
	interval = time.Second
)

// queries are the example config's, with 5 s rate windows so a 1 s scrape
// moves them within a few seconds.
var queries = sandboxfixture.ExampleQueries("5s")

var (
	binDir    string
	buildOnce sync.Once
	binPath   string
	buildErr  error
)

func TestMain(m *testing.M) {
	flag.Parse()
	// The tests mostly wait on rollouts, scrapes and windows; with the
	// default -parallel (GOMAXPROCS, 2 here) the package would take four
	// times as long. An explicit -parallel wins.
	explicit := false
	flag.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "test.parallel" })
	if !explicit {
		_ = flag.Set("test.parallel", "16")
	}
	var err error
	binDir, err = os.MkdirTemp("", "rollguard-ha-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(binDir)
	os.Exit(code)
}

// rollguardBinary builds cmd/rollguard once per package run. It is built
// lazily so that a run without the sandbox (every test skips) costs
// nothing.
func rollguardBinary(t *testing.T) string {
	t.Helper()
	buildOnce.Do(func() {
		_, file, _, _ := runtime.Caller(0)
		root := filepath.Join(filepath.Dir(file), "..", "..")
		binPath = filepath.Join(binDir, "rollguard")
		cmd := exec.Command("go", "build", "-o", binPath, "./cmd/rollguard")
		cmd.Dir = root
		out, err := cmd.CombinedOutput()
		if err != nil {
			buildErr = fmt.Errorf("go build ./cmd/rollguard: %w\n%s", err, out)
		}
	})
	if buildErr != nil {
		t.Fatal(buildErr)
	}
	return binPath
}

// harness is one test's view of the sandbox.
type harness struct {
	t           *testing.T
	env         sandboxenv.Env
	client      kubernetes.Interface
	kubeconfig  string
	promURL     string
	receiverURL string
	bin         string
	// inbox is the test's share of the receiver, under /t/<namespace>.
	inbox inbox.Inbox
	ns    string
}

// newHarness loads the sandbox, builds the binary and creates the test's
// namespace (deleted without waiting at the end).
func newHarness(t *testing.T, name string) *harness {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	env := sandboxenv.Load(t)
	h := &harness{
		t: t, env: env,
		kubeconfig:  env.Get(t, "KUBECONFIG"),
		promURL:     env.Get(t, "PROMETHEUS_URL"),
		receiverURL: strings.TrimSuffix(env.Get(t, "RECEIVER_URL"), "/"),
	}
	h.bin = rollguardBinary(t)
	h.client = sandboxfixture.Kube(t, env)
	h.ns = "rg-ha-" + name + "-" + rand.String(5)
	h.inbox = inbox.Inbox{Base: h.receiverURL, Prefix: "/t/" + h.ns}
	sandboxfixture.Namespace(t, h.client, h.ns)
	start := time.Now()
	t.Cleanup(func() { t.Logf("wall time %s", time.Since(start).Round(100*time.Millisecond)) })
	return h
}

func (h *harness) ctx() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), 10*time.Second)
}

// ---- Deployments ----

// createDeployment creates a simulated Deployment at image with 4
// replicas and waits for its rollout.
func (h *harness) createDeployment(name, image string) *appsv1.Deployment {
	h.t.Helper()
	sandboxfixture.CreateDeployment(h.t, h.client, sandboxfixture.Simulated(sandboxfixture.Deployment(h.ns, name, image, replicas)))
	return h.waitRollout(name, 60*time.Second)
}

// deploy sets the api container's image (and, when note is not empty, a
// pod template annotation that makes a distinct revision of the same
// image), as a human's `kubectl set image` would. It returns the
// Deployment as written, whose resourceVersion starts a write watch.
func (h *harness) deploy(name, image, note string) *appsv1.Deployment {
	h.t.Helper()
	return sandboxfixture.UpdateDeployment(h.t, h.client, h.ns, name, func(d *appsv1.Deployment) {
		d.Spec.Template.Spec.Containers[0].Image = image
		if note != "" {
			if d.Spec.Template.Annotations == nil {
				d.Spec.Template.Annotations = map[string]string{}
			}
			d.Spec.Template.Annotations["ha.rollguard.io/note"] = note
		}
	})
}

// annotate sets (or, with an empty value, removes) a Deployment
// annotation.
func (h *harness) annotate(name, key, value string) {
	h.t.Helper()
	var v any = value
	if value == "" {
		v = nil
	}
	patch, _ := json.Marshal(map[string]any{"metadata": map[string]any{"annotations": map[string]any{key: v}}})
	ctx, cancel := h.ctx()
	defer cancel()
	if _, err := h.client.AppsV1().Deployments(h.ns).Patch(ctx, name, "application/merge-patch+json", patch, metav1.PatchOptions{}); err != nil {
		h.t.Fatalf("annotate %s/%s: %v", h.ns, name, err)
	}
}

func (h *harness) get(name string) *appsv1.Deployment {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	d, err := h.client.AppsV1().Deployments(h.ns).Get(ctx, name, metav1.GetOptions{})
	if err != nil {
		h.t.Fatal(err)
	}
	return d
}

func (h *harness) waitRollout(name string, timeout time.Duration) *appsv1.Deployment {
	h.t.Helper()
	var d *appsv1.Deployment
	eventually(h.t, "rollout of "+h.ns+"/"+name, timeout, func() (bool, string) {
		d = h.get(name)
		return sandboxfixture.RolledOut(d)
	})
	return d
}

func image(d *appsv1.Deployment) string { return d.Spec.Template.Spec.Containers[0].Image }

// replicaSets returns the Deployment's ReplicaSets by image.
func (h *harness) replicaSets(name string) []appsv1.ReplicaSet {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	l, err := h.client.AppsV1().ReplicaSets(h.ns).List(ctx, metav1.ListOptions{LabelSelector: "app=" + name})
	if err != nil {
		h.t.Fatal(err)
	}
	return l.Items
}

// checkOneRollback asserts the ReplicaSet history of one rollback from
// the bad version to the good one: the good ReplicaSet was reused with the
// newest revision (its old number in revision-history), the bad one keeps
// its own, and nothing else was created.
func (h *harness) checkOneRollback(name string) {
	h.t.Helper()
	rss := h.replicaSets(name)
	var summary []string
	byImage := map[string]appsv1.ReplicaSet{}
	for _, rs := range rss {
		img := rs.Spec.Template.Spec.Containers[0].Image
		summary = append(summary, fmt.Sprintf("%s %s rev %s history %q", rs.Name, img,
			rs.Annotations["deployment.kubernetes.io/revision"], rs.Annotations["deployment.kubernetes.io/revision-history"]))
		byImage[img] = rs
	}
	good, bad := byImage[goodImage], byImage[badImage]
	if len(rss) != 2 || good.Annotations["deployment.kubernetes.io/revision"] != "3" ||
		good.Annotations["deployment.kubernetes.io/revision-history"] != "1" ||
		bad.Annotations["deployment.kubernetes.io/revision"] != "2" || bad.Annotations["deployment.kubernetes.io/revision-history"] != "" {
		h.t.Errorf("replicaset history is not exactly one rollback (want %s rev 3 history 1, %s rev 2): %v", goodImage, badImage, summary)
	}
}

// ---- journal ----

// journal returns the Deployment's journal, or nil.
func (h *harness) journal(name string) (*rollback.Journal, *corev1.ConfigMap) {
	h.t.Helper()
	d := h.get(name)
	ctx, cancel := h.ctx()
	defer cancel()
	cm, err := h.client.CoreV1().ConfigMaps(h.ns).Get(ctx, rollback.JournalName(d.UID), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return nil, nil
	}
	if err != nil {
		h.t.Fatal(err)
	}
	var j rollback.Journal
	if err := json.Unmarshal([]byte(cm.Data["journal.json"]), &j); err != nil {
		h.t.Fatalf("decode journal %s: %v", cm.Name, err)
	}
	return &j, cm
}

func (h *harness) waitJournal(name string, timeout time.Duration, state rollback.RunState) *rollback.Journal {
	h.t.Helper()
	var j *rollback.Journal
	eventually(h.t, fmt.Sprintf("journal of %s/%s %s", h.ns, name, state), timeout, func() (bool, string) {
		j, _ = h.journal(name)
		if j == nil {
			return false, "no journal"
		}
		return j.State == state, fmt.Sprintf("run %s state %s error %q steps %s", j.RunID, j.State, j.Error, stepStates(j))
	})
	return j
}

func stepStates(j *rollback.Journal) string {
	var s []string
	for _, st := range j.Steps {
		s = append(s, st.Name+"="+string(st.State))
	}
	return strings.Join(s, ",")
}

// kubeEvents counts the namespace's Events of reason on name.
func (h *harness) kubeEvents(name, reason string) int {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	l, err := h.client.CoreV1().Events(h.ns).List(ctx, metav1.ListOptions{FieldSelector: fields.Set{"reason": reason, "involvedObject.name": name}.String()})
	if err != nil {
		h.t.Fatal(err)
	}
	n := 0
	for _, e := range l.Items {
		n += max(int(e.Count), 1)
	}
	return n
}

// ---- following a Deployment and its ConfigMaps ----

// following is a watch of a Deployment and of ConfigMaps beside it.
type following struct {
	cancel context.CancelFunc
	done   chan struct{}
}

// follow watches the Deployment from and the ConfigMaps configMaps
// selects, both from from's resourceVersion on, and hands each event to
// onDeployment or onConfigMap, in order, until stop. A watch that ends
// before stop ends both, and closed (unless nil) is told which one
// ("deployment" or "configmap").
func (h *harness) follow(from *appsv1.Deployment, configMaps metav1.ListOptions, onDeployment, onConfigMap func(watch.Event), closed func(which string)) *following {
	h.t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	f := &following{cancel: cancel, done: make(chan struct{})}
	depW, err := h.client.AppsV1().Deployments(h.ns).Watch(ctx, metav1.ListOptions{
		FieldSelector: fields.OneTermEqualSelector("metadata.name", from.Name).String(), ResourceVersion: from.ResourceVersion})
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	configMaps.ResourceVersion = from.ResourceVersion
	cmW, err := h.client.CoreV1().ConfigMaps(h.ns).Watch(ctx, configMaps)
	if err != nil {
		cancel()
		h.t.Fatal(err)
	}
	if closed == nil {
		closed = func(string) {}
	}
	go func() {
		defer close(f.done)
		defer depW.Stop()
		defer cmW.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case ev, ok := <-depW.ResultChan():
				if !ok {
					closed("deployment")
					return
				}
				onDeployment(ev)
			case ev, ok := <-cmW.ResultChan():
				if !ok {
					closed("configmap")
					return
				}
				onConfigMap(ev)
			}
		}
	}()
	return f
}

// stop ends the watch and returns once no handler runs any more.
func (f *following) stop() {
	f.cancel()
	<-f.done
}

// ---- write watch ----

// writeWatch records every write rollguard could make to a Deployment or
// its journal while it is open: a Deployment MODIFIED event that changes
// generation, replicas or template, a deletion, and any journal ConfigMap
// event.
type writeWatch struct {
	h    *harness
	name string
	f    *following
	base *appsv1.Deployment
	jrv  string // the journal's resourceVersion at the start ("" when none)

	mu         sync.Mutex
	violations []string
}

// watchWrites starts watching from the Deployment as it was written by the
// test (after its last own write).
func (h *harness) watchWrites(from *appsv1.Deployment) *writeWatch {
	h.t.Helper()
	w := &writeWatch{h: h, name: from.Name, base: from.DeepCopy()}
	if _, cm := h.journal(from.Name); cm != nil {
		w.jrv = cm.ResourceVersion
	}
	journal := rollback.JournalName(from.UID)
	prev := from.DeepCopy()
	onDeployment := func(ev watch.Event) {
		d, isDep := ev.Object.(*appsv1.Deployment)
		switch {
		case !isDep:
			w.add(fmt.Sprintf("deployment watch: %s %T", ev.Type, ev.Object))
		case ev.Type == watch.Deleted:
			w.add("deployment deleted")
		case ev.Type == watch.Modified:
			if diff := specChange(prev, d); diff != "" {
				w.add(fmt.Sprintf("deployment written at resourceVersion %s: %s", d.ResourceVersion, diff))
			}
			prev = d
		}
	}
	onJournal := func(ev watch.Event) { w.add(fmt.Sprintf("journal configmap %s: %s", journal, ev.Type)) }
	w.f = h.follow(from, metav1.ListOptions{FieldSelector: fields.OneTermEqualSelector("metadata.name", journal).String()},
		onDeployment, onJournal, func(which string) { w.add(which + " watch closed early") })
	return w
}

func specChange(a, b *appsv1.Deployment) string {
	var d []string
	if a.Generation != b.Generation {
		d = append(d, fmt.Sprintf("generation %d -> %d", a.Generation, b.Generation))
	}
	if ra, rb := ptrVal(a.Spec.Replicas), ptrVal(b.Spec.Replicas); ra != rb {
		d = append(d, fmt.Sprintf("replicas %d -> %d", ra, rb))
	}
	if !apiequality.Semantic.DeepEqual(a.Spec.Template, b.Spec.Template) {
		d = append(d, fmt.Sprintf("template changed (image %s -> %s)", image(a), image(b)))
	}
	if a.Spec.Paused != b.Spec.Paused {
		d = append(d, "paused changed")
	}
	return strings.Join(d, ", ")
}

func ptrVal(p *int32) int32 {
	if p == nil {
		return -1
	}
	return *p
}

func (w *writeWatch) add(v string) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.violations = append(w.violations, v)
}

// assertNone stops the watch and fails the test on any write it saw, and
// on any difference between the Deployment and journal now and at the
// start (which a missed event could hide).
func (w *writeWatch) assertNone() {
	t := w.h.t
	t.Helper()
	w.f.stop()
	now := w.h.get(w.name)
	if diff := specChange(w.base, now); diff != "" {
		w.add("deployment differs from the start: " + diff)
	}
	jrv := ""
	if _, cm := w.h.journal(w.name); cm != nil {
		jrv = cm.ResourceVersion
	}
	if jrv != w.jrv {
		w.add(fmt.Sprintf("journal resourceVersion %q at the start, %q now", w.jrv, jrv))
	}
	w.mu.Lock()
	defer w.mu.Unlock()
	for _, v := range w.violations {
		t.Errorf("write while rollguard must not write: %s", v)
	}
}

// ---- config ----

// target is one configured target of a test config.
type target struct {
	name, deployment string
	freeze           bool
	dryRun           *bool
	// errorRate trigger: threshold (default 0.05), window (default 5s) and
	// action (default rollback).
	above  float64
	window string
	action string
	// extra triggers, as YAML maps.
	extra     []map[string]any
	rampPause string // default 1s
	// rollback holds settings merged over the default rollback section
	// (database, multiRegion...).
	rollback map[string]any
}

// daemonConfig is what a test varies in the config.
type daemonConfig struct {
	leaderElection bool
	dryRun         bool
	interlocks     map[string]any // over cooldown 10m, budget 10/h, maxRevisionAge 1h
	targets        []target
	// databases are name → DSN (written to files next to the config).
	databases map[string]string
	// tokens, when set, are the API's named tokens (name → token) instead
	// of the one unnamed apiToken.
	tokens map[string]string
	// slack posts to the receiver's Slack webhook too.
	slack bool
	// lease overrides the election's timing ("duration/renew/retry"),
	// for a test that must not lose its leader to a loaded machine.
	lease [3]string
}

// writeConfig writes the config (and its token and routing key files)
// into dir and returns its path. It follows the shape of the example that
// caught a real bad deploy (configs/production.yaml's shape).
func (h *harness) writeConfig(dir string, c daemonConfig) string {
	h.t.Helper()
	token := apiToken
	if len(c.tokens) > 0 {
		token = ""
		for _, name := range slices.Sorted(maps.Keys(c.tokens)) {
			token += name + ":" + c.tokens[name] + "\n"
		}
	}
	sandboxfixture.WriteFiles(h.t, dir, map[string]string{"token": token + "\n", "routing-key": "ha-" + h.ns + "\n", "slack-url": h.inbox.SlackURL() + "\n"})
	path := filepath.Join(dir, "rollguard.yaml")
	if err := os.WriteFile(path, h.configYAML(dir, c), 0o600); err != nil {
		h.t.Fatal(err)
	}
	return path
}

func (h *harness) configYAML(dir string, c daemonConfig) []byte {
	h.t.Helper()
	il := map[string]any{"cooldown": "10m", "maxRollbacksPerHour": 10, "maxRevisionAge": "1h"}
	for k, v := range c.interlocks {
		il[k] = v
	}
	global := map[string]any{
		"interval":      interval.String(),
		"for":           "5s",
		"listenAddress": "127.0.0.1:0",
		"logLevel":      "info",
		"dryRun":        c.dryRun,
		"prometheus":    map[string]any{"url": h.promURL, "timeout": "1s"},
		"kubernetes":    map[string]any{"kubeconfig": h.kubeconfig},
		"interlocks":    il,
		"api":           map[string]any{"tokenFile": "token"},
		"notify": map[string]any{
			// Records and pending pages in the test's namespace, where
			// every process of the test (and the test) reads them.
			"incidentStore": map[string]any{"namespace": h.ns},
			"pagerduty":     map[string]any{"routingKeyFile": "routing-key", "endpoint": h.inbox.PagerDutyEndpoint(), "timeout": "2s"},
		},
		"templates": queries.Templates(),
	}
	var dbs []any
	for _, name := range slices.Sorted(maps.Keys(c.databases)) {
		file := filepath.Join(dir, "dsn-"+name)
		sandboxfixture.WriteFiles(h.t, dir, map[string]string{"dsn-" + name: c.databases[name]})
		dbs = append(dbs, map[string]any{"name": name, "dsnFile": file, "binDir": h.env.Get(h.t, "PG_BIN_DIR"),
			"connectTimeout": "2s", "statementTimeout": "10s"})
	}
	if len(dbs) > 0 {
		global["databases"] = dbs
	}
	if c.slack {
		global["notify"].(map[string]any)["slack"] = map[string]any{"webhookURLFile": "slack-url", "timeout": "2s"}
	}
	if c.leaderElection {
		timing := [3]string{"2s", "1500ms", "200ms"}
		if c.lease[0] != "" {
			timing = c.lease
		}
		global["leaderElection"] = map[string]any{"enabled": true, "namespace": h.ns, "leaseName": "rollguard",
			"leaseDuration": timing[0], "renewDeadline": timing[1], "retryPeriod": timing[2]}
	}
	var targets []any
	for _, t := range c.targets {
		tr := map[string]any{"name": "error-rate", "kind": "errorRate", "above": or(t.above, 0.05), "minRate": 1,
			"for": orS(t.window, "5s"), "action": orS(t.action, "rollback")}
		triggers := []any{tr}
		for _, x := range t.extra {
			triggers = append(triggers, x)
		}
		rb := map[string]any{"strategy": "quick", "rampSteps": []int{2}, "rampPause": orS(t.rampPause, "1s"),
			"rolloutTimeout": "30s", "verifyWindow": "3s"}
		maps.Copy(rb, t.rollback)
		m := map[string]any{
			"name": t.name, "namespace": h.ns, "deployment": t.deployment, "containers": []string{"api"},
			"freeze": t.freeze, "triggers": triggers, "rollback": rb,
		}
		if t.dryRun != nil {
			m["dryRun"] = *t.dryRun
		}
		targets = append(targets, m)
	}
	b, err := yaml.Marshal(map[string]any{"global": global, "targets": targets})
	if err != nil {
		h.t.Fatal(err)
	}
	return b
}

func or(v, d float64) float64 {
	if v == 0 {
		return d
	}
	return v
}

func orS(v, d string) string {
	if v == "" {
		return d
	}
	return v
}

// ---- daemon processes ----

// daemon is one rollguard process.
type daemon struct {
	h        *harness
	identity string
	cmd      *exec.Cmd
	logs     *localproc.LogBuffer
	base     string // http://127.0.0.1:port
	exited   chan struct{}
	exitErr  error
}

// logLines returns the decoded JSON log lines whose msg is msg.
func (d *daemon) logLines(msg string) []map[string]any {
	var out []map[string]any
	for _, line := range strings.Split(d.logs.String(), "\n") {
		var m map[string]any
		if json.Unmarshal([]byte(line), &m) == nil && m["msg"] == msg {
			out = append(out, m)
		}
	}
	return out
}

// startDaemon runs `rollguard run --config cfg` as identity and waits for
// its HTTP server. Its log is printed when the test fails.
func (h *harness) startDaemon(cfg, identity string, env ...string) *daemon {
	h.t.Helper()
	d := &daemon{h: h, identity: identity, logs: &localproc.LogBuffer{}, exited: make(chan struct{})}
	d.cmd = exec.Command(h.bin, "run", "--config", cfg)
	d.cmd.Env = append(append(os.Environ(), "POD_NAME="+identity), env...)
	d.cmd.Stdout, d.cmd.Stderr = d.logs, d.logs
	d.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := d.cmd.Start(); err != nil {
		h.t.Fatal(err)
	}
	go func() { d.exitErr = d.cmd.Wait(); close(d.exited) }()
	h.t.Cleanup(func() {
		d.stop(syscall.SIGTERM, 10*time.Second)
		if h.t.Failed() {
			h.t.Logf("log of rollguard %s:\n%s", identity, d.logs.String())
		}
	})
	eventually(h.t, "rollguard "+identity+" listening", 20*time.Second, func() (bool, string) {
		select {
		case <-d.exited:
			h.t.Fatalf("rollguard %s exited at start: %v\n%s", identity, d.exitErr, d.logs.String())
		default:
		}
		for _, l := range d.logLines("rollguard started") {
			if addr, _ := l["listen"].(string); addr != "" {
				d.base = "http://" + addr
				return true, ""
			}
		}
		return false, "no start line yet"
	})
	return d
}

// stop signals the process and waits up to grace for it to exit, then
// kills it.
func (d *daemon) stop(sig syscall.Signal, grace time.Duration) {
	select {
	case <-d.exited:
		return
	default:
	}
	_ = d.cmd.Process.Signal(sig)
	select {
	case <-d.exited:
	case <-time.After(grace):
		d.h.t.Errorf("rollguard %s did not exit %s after %s; killing it", d.identity, grace, sig)
		_ = d.cmd.Process.Kill()
		<-d.exited
	}
}

var httpClient = &http.Client{Timeout: 10 * time.Second}

// call sends a request to the daemon; token "" sends none.
func (d *daemon) call(method, path, token string, body any) (int, []byte) {
	d.h.t.Helper()
	var r io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		r = bytes.NewReader(b)
	case string:
		r = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		r = bytes.NewReader(j)
	}
	req, err := http.NewRequest(method, d.base+path, r)
	if err != nil {
		d.h.t.Fatal(err)
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := httpClient.Do(req)
	if err != nil {
		d.h.t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// callRetry is call that sends the request again while the daemon
// answers 503 (its term has not begun, or a leader change), as the CLI's
// client does, for up to 10 s.
func (d *daemon) callRetry(method, path, token string, body any) (int, []byte) {
	d.h.t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for {
		code, b := d.call(method, path, token, body)
		if code != http.StatusServiceUnavailable || time.Now().After(deadline) {
			return code, b
		}
		time.Sleep(200 * time.Millisecond)
	}
}

func (d *daemon) status() api.Status {
	d.h.t.Helper()
	code, b := d.call(http.MethodGet, "/api/v1/status", "", nil)
	if code != http.StatusOK {
		d.h.t.Fatalf("status: %d %s", code, b)
	}
	var s api.Status
	if err := json.Unmarshal(b, &s); err != nil {
		d.h.t.Fatalf("decode status: %v\n%s", err, b)
	}
	return s
}

// tryStatus is status for a process that may be gone.
func (d *daemon) tryStatus() (api.Status, error) {
	resp, err := httpClient.Get(d.base + "/api/v1/status")
	if err != nil {
		return api.Status{}, err
	}
	defer resp.Body.Close()
	var s api.Status
	if resp.StatusCode != http.StatusOK {
		return s, fmt.Errorf("status %d", resp.StatusCode)
	}
	return s, json.NewDecoder(resp.Body).Decode(&s)
}

// metric returns the value of an unlabelled metric on /metrics.
func (d *daemon) metric(name string) string {
	d.h.t.Helper()
	code, b := d.call(http.MethodGet, "/metrics", "", nil)
	if code != http.StatusOK {
		d.h.t.Fatalf("metrics: %d", code)
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, name+" "); ok {
			return v
		}
	}
	return ""
}

// ---- receiver ----

func (h *harness) received(path string) []receiver.Request {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	rs, err := h.inbox.Received(ctx, path)
	if err != nil {
		h.t.Fatal(err)
	}
	return rs
}

// events returns the PagerDuty events accepted on the test's endpoint, of
// kind when kind is not empty. Answers the test scripted (faults) are
// left out.
func (h *harness) events(kind string) []inbox.PagerDutyEvent {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	all, err := h.inbox.PagerDuty(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	var out []inbox.PagerDutyEvent
	for _, e := range all {
		if e.Fault {
			continue
		}
		if e.Status != http.StatusAccepted {
			h.t.Errorf("pagerduty event rejected with %d: %s", e.Status, e)
			continue
		}
		if kind == "" || e.Kind(h.t) == kind {
			out = append(out, e)
		}
	}
	return out
}

// changeEvents returns the summaries of the PagerDuty change events.
func (h *harness) changeEvents() []string {
	h.t.Helper()
	var out []string
	for _, r := range h.received(receiver.PagerDutyChangePath) {
		var e struct {
			Payload struct {
				Summary string `json:"summary"`
			} `json:"payload"`
		}
		if err := json.Unmarshal([]byte(r.Body), &e); err != nil {
			h.t.Fatalf("decode change event: %v", err)
		}
		out = append(out, e.Payload.Summary)
	}
	return out
}

// startedChanges counts the "rollback ... started" change events: a plan
// that starts (or resumes) is a change to the service; only the detection
// and the outcome are pages.
func (h *harness) startedChanges() int {
	h.t.Helper()
	n := 0
	for _, s := range h.changeEvents() {
		if strings.HasSuffix(strings.SplitN(s, " (", 2)[0], " started") {
			n++
		}
	}
	return n
}

func (h *harness) summaries(es []inbox.PagerDutyEvent) []string {
	out := make([]string, 0, len(es))
	for _, e := range es {
		out = append(out, e.Kind(h.t)+": "+e.Payload.Summary)
	}
	return out
}

// ---- incident records ----

// records reads the test's incident records from the cluster, as any
// replica does.
func (h *harness) records() *incident.ClusterStore {
	return incident.NewClusterStore(statestore.New(h.client.CoreV1(), h.ns), incident.ClusterOptions{}, nil)
}

func (h *harness) incidents() []incident.Summary {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	l, err := h.records().List(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return l
}

func (h *harness) incident(id string) *incident.Record {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	r, err := h.records().Get(ctx, id)
	if err != nil {
		h.t.Fatal(err)
	}
	return r
}

// pending reads the notifications not yet delivered.
func (h *harness) pending() []notify.Pending {
	h.t.Helper()
	ctx, cancel := h.ctx()
	defer cancel()
	p, err := h.records().Pending(ctx)
	if err != nil {
		h.t.Fatal(err)
	}
	return p
}

// ---- polling ----

// eventually polls f every 200 ms until it reports done, failing the test
// with f's last detail after timeout.
func eventually(t *testing.T, what string, timeout time.Duration, f func() (bool, string)) {
	t.Helper()
	sandboxfixture.WaitFor(t, what, timeout, 200*time.Millisecond, func(context.Context) (bool, string, error) {
		ok, detail := f()
		return ok, detail, nil
	})
}

// triggerStatus returns one trigger's status from the daemon.
func triggerStatus(s api.Status, target, trig string) (statusTrigger, error) {
	for _, tr := range s.Triggers {
		if tr.Target == target && tr.Trigger == trig {
			return statusTrigger{State: tr.State.String(), BreachStart: tr.BreachStart, LastSample: tr.LastSample}, nil
		}
	}
	return statusTrigger{}, errors.New("trigger " + target + "/" + trig + " not in status")
}

type statusTrigger struct {
	State       string
	BreachStart time.Time
	LastSample  time.Time
}
