package main

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/util/rand"
	"k8s.io/client-go/kubernetes"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

const (
	cliDeploy  = "pggit-api"
	goodImage  = "pggit-api:v1.0.3"
	badImage   = "pggit-api:v1.1.0"
	revisionAn = "deployment.kubernetes.io/revision"
)

// cliSandbox is one test's namespace with pggit-api rolled from v1.0.3 to
// v1.1.0 (4 replicas), and a rollguard config for it.
type cliSandbox struct {
	client kubernetes.Interface
	ns     string
	config string
	// incidents is the config's global.notify.incidentDir.
	incidents string
}

func newCLISandbox(t *testing.T) *cliSandbox {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	env := sandboxenv.Load(t)
	kubeconfig := env.Get(t, "KUBECONFIG")
	rc := sandboxfixture.KubeConfig(t, env)
	rc.Timeout = 15 * time.Second
	client := sandboxfixture.ClientFor(t, rc)
	s := &cliSandbox{client: client, ns: "rg-cli-" + rand.String(6), incidents: t.TempDir()}
	sandboxfixture.Namespace(t, client, s.ns)
	sandboxfixture.CreateDeployment(t, client, sandboxfixture.Simulated(sandboxfixture.Deployment(s.ns, cliDeploy, goodImage, 4)))
	kd := kube.New(client, kube.Options{PollInterval: 100 * time.Millisecond}, zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel)))
	sandboxfixture.RollThrough(t, client, kd, s.ns, cliDeploy, badImage)

	// The shape of a working sandbox config (see the team's example):
	// a short error-rate window on the sandbox's Prometheus, the
	// simulator's health endpoint, a quick rollback with a short ramp.
	s.config = filepath.Join(t.TempDir(), "rollguard.yaml")
	cfg := fmt.Sprintf(`global:
  interval: 1s
  for: 10s
  blindAfter: 30s
  listenAddress: 127.0.0.1:0
  prometheus: {url: %q, timeout: 1s}
  kubernetes: {kubeconfig: %q}
  interlocks: {cooldown: 1m, maxRollbacksPerHour: 10, maxRevisionAge: 1h}
  notify:
    incidentDir: %q
  templates:
    errorRate:
      query: '(sum by (namespace, deployment) (rate(http_requests_total{status=~"5.."}[5s])) or 0 * sum by (namespace, deployment) (rate(http_requests_total[5s]))) / sum by (namespace, deployment) (rate(http_requests_total[5s]))'
      volumeQuery: 'sum by (namespace, deployment) (rate(http_requests_total[5s]))'
targets:
  - name: pggit-api
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
      rampPause: 2s
      rolloutTimeout: 30s
      verifyWindow: 30s
`, env.Get(t, "PROMETHEUS_URL"), kubeconfig, s.incidents, s.ns, cliDeploy,
		fmt.Sprintf("%s/health/%s/%s", env.Get(t, "SIM_URL"), s.ns, cliDeploy), s.ns, cliDeploy)
	if err := os.WriteFile(s.config, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	return s
}

func (s *cliSandbox) ctx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func (s *cliSandbox) deployment(t *testing.T) *appsv1.Deployment {
	t.Helper()
	d, err := s.client.AppsV1().Deployments(s.ns).Get(s.ctx(t), cliDeploy, metav1.GetOptions{})
	if err != nil {
		t.Fatalf("get deployment %s/%s: %v", s.ns, cliDeploy, err)
	}
	return d
}

// hashes returns the pod-template-hash of the ReplicaSet at each revision.
func (s *cliSandbox) hashes(t *testing.T) map[string]string {
	t.Helper()
	rss, err := s.client.AppsV1().ReplicaSets(s.ns).List(s.ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list replicasets in %s: %v", s.ns, err)
	}
	out := map[string]string{}
	for _, rs := range rss.Items {
		out[rs.Annotations[revisionAn]] = rs.Labels[appsv1.DefaultDeploymentUniqueLabelKey]
	}
	return out
}

// writes is what rollguard leaves behind in the namespace: journal
// ConfigMaps and its Events.
func (s *cliSandbox) writes(t *testing.T) (journals []string, events []string) {
	t.Helper()
	cms, err := s.client.CoreV1().ConfigMaps(s.ns).List(s.ctx(t), metav1.ListOptions{LabelSelector: rollback.LabelJournal})
	if err != nil {
		t.Fatalf("list configmaps in %s: %v", s.ns, err)
	}
	for _, cm := range cms.Items {
		journals = append(journals, cm.Name)
	}
	evs, err := s.client.CoreV1().Events(s.ns).List(s.ctx(t), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list events in %s: %v", s.ns, err)
	}
	for _, e := range evs.Items {
		if strings.HasPrefix(e.Reason, "Rollback") {
			events = append(events, e.Reason)
		}
	}
	return journals, events
}

func TestIntegrationPlanWritesNothing(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := newCLISandbox(t)
	before := s.deployment(t)
	hashes := s.hashes(t)
	if before.Annotations[revisionAn] != "2" || hashes["1"] == "" || hashes["2"] == "" {
		t.Fatalf("setup: deployment revision %q, replicasets by revision %v; want revisions 1 and 2", before.Annotations[revisionAn], hashes)
	}

	r := rollguard(t, "plan", "--config", s.config, "--target", "pggit-api")
	if r.code != exitOK {
		t.Fatalf("rollguard plan: exit code %d\n%s", r.code, r.stderr)
	}
	for _, want := range []string{
		fmt.Sprintf("plan quick for deployment %s/%s\n", s.ns, cliDeploy),
		fmt.Sprintf("  bad revision:  2 (%s) api=%s\n", hashes["2"], badImage),
		fmt.Sprintf("  pinned target: previous-revision revision 1 (%s) api=%s\n", hashes["1"], goodImage),
		"  replicas to restore: 4\n",
	} {
		if !strings.Contains(r.stdout, want) {
			t.Errorf("plan output lacks %q:\n%s", want, r.stdout)
		}
	}
	// The step table: "#  STEP  STATE ..." then one numbered row a step.
	row := regexp.MustCompile(`(?m)^(\d+)\s+(\S+)\s+(\S+)\s+(true|false)\s+(.+)$`)
	var steps []string
	for _, m := range row.FindAllStringSubmatch(r.stdout, -1) {
		steps = append(steps, m[2])
		if m[2] != "preflight" && m[3] != "pending" {
			t.Errorf("step %s state %s, want pending: plan must not run it", m[2], m[3])
		}
	}
	if got, want := strings.Join(steps, " "), "preflight stop application wait-rollout ramp verify"; got != want {
		t.Errorf("plan steps = %q, want %q\n%s", got, want, r.stdout)
	}

	after := s.deployment(t)
	if after.ResourceVersion != before.ResourceVersion || after.Generation != before.Generation {
		t.Errorf("plan changed the deployment: resourceVersion %s -> %s, generation %d -> %d",
			before.ResourceVersion, after.ResourceVersion, before.Generation, after.Generation)
	}
	if got := after.Spec.Template.Spec.Containers[0].Image; got != badImage {
		t.Errorf("image after plan = %s, want %s (unchanged)", got, badImage)
	}
	if journals, events := s.writes(t); len(journals) != 0 || len(events) != 0 {
		t.Errorf("plan wrote journals %v and events %v, want none", journals, events)
	}
	t.Logf("plan test wall time %s", time.Since(start).Round(time.Millisecond))
}

func TestIntegrationRollbackLocal(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := newCLISandbox(t)
	uid := s.deployment(t).UID

	r := rollguard(t, "rollback", "--local", "--config", s.config, "--target", "pggit-api", "--reason", "v1.1.0 serves 20% 5xx")
	if r.code != exitOK {
		t.Fatalf("rollguard rollback --local: exit code %d\nstdout:\n%s\nstderr:\n%s", r.code, r.stdout, r.stderr)
	}
	if !regexp.MustCompile(`^quick succeeded \(run \d{8}T\d{6}Z\)\n$`).MatchString(r.stdout) {
		t.Errorf("stdout = %q, want \"quick succeeded (run ...)\"", r.stdout)
	}

	d := s.deployment(t)
	if got := d.Spec.Template.Spec.Containers[0].Image; got != goodImage {
		t.Errorf("image after rollback = %s, want %s", got, goodImage)
	}
	if d.Spec.Replicas == nil || *d.Spec.Replicas != 4 || d.Status.ReadyReplicas != 4 || d.Status.UpdatedReplicas != 4 ||
		d.Status.AvailableReplicas != 4 || d.Status.ObservedGeneration < d.Generation {
		t.Errorf("after rollback: spec %v, status %+v; want 4 ready, updated and available", d.Spec.Replicas, d.Status)
	}
	journals, events := s.writes(t)
	if len(journals) != 1 || journals[0] != rollback.JournalName(uid) {
		t.Errorf("journal configmaps = %v, want [%s]", journals, rollback.JournalName(uid))
	}
	for _, reason := range []string{kube.ReasonPlanStarted, kube.ReasonStepSucceeded} {
		found := false
		for _, e := range events {
			found = found || e == reason
		}
		if !found {
			t.Errorf("no %s event on the deployment; events %v", reason, events)
		}
	}
	files, err := os.ReadDir(s.incidents)
	if err != nil || len(files) == 0 {
		t.Errorf("incident dir %s: %d files, err %v; want the incident record", s.incidents, len(files), err)
	}

	// A second --local rollback within the cooldown is refused: the
	// interlocks are seeded from the journal, as the daemon's are.
	r = rollguard(t, "rollback", "--local", "--config", s.config, "--target", "pggit-api", "--reason", "again")
	if r.code != exitFail || r.stdout != "" || !strings.Contains(r.stderr, "cannot roll back: cooldown: last rollback of pggit-api started ") {
		t.Errorf("second rollback: exit %d, stdout %q; want %d and the cooldown on stderr\n%s", r.code, r.stdout, exitFail, r.stderr)
	}
	// --force passes the cooldown, and rolling back again finds nothing
	// older that differs: it must not flip the Deployment back to the bad
	// version.
	r = rollguard(t, "rollback", "--local", "--force", "--config", s.config, "--target", "pggit-api", "--reason", "again, forced")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "already rolled back for revision ") || !strings.Contains(r.stderr, "interlocks overridden by a human (--force)") {
		t.Errorf("forced rollback: exit %d, stdout %q; want 0, \"already rolled back for revision ...\" and the override logged\n%s", r.code, r.stdout, r.stderr)
	}
	if got := s.deployment(t).Spec.Template.Spec.Containers[0].Image; got != goodImage {
		t.Errorf("a second rollback set the image to %s, want %s kept", got, goodImage)
	}
	t.Logf("rollback test wall time %s", time.Since(start).Round(time.Millisecond))
}
