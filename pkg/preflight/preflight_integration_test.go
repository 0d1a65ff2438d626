package preflight_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"
	"go.uber.org/zap/zaptest"
	"k8s.io/apimachinery/pkg/util/rand"

	"github.com/rollguard/rollguard/pkg/backup"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/preflight"
	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

const routingKey = "R0LLGUARDPREFL1GHTTESTKEY0000001"

// fixture is one target of its own: a namespace and Deployment, a config
// with secret files in a temp dir, a fresh backup, and a PagerDuty
// receiver (the sandbox's, or one in-process when the sandbox has none).
type fixture struct {
	env    sandboxenv.Env
	dir    string
	config string
	dump   string
	ns     string
	logger *zap.Logger
	// received returns the bodies of the events posted to /v2/enqueue.
	received func(t *testing.T) []string
}

func newFixture(t *testing.T, extraTriggers string, images ...string) *fixture {
	t.Helper()
	if testing.Short() {
		t.Skip("integration test: skipped with -short")
	}
	env := sandboxenv.Load(t)
	f := &fixture{env: env, dir: t.TempDir(), ns: "rg-preflight-" + rand.String(6),
		logger: zaptest.NewLogger(t, zaptest.Level(zap.WarnLevel))}
	f.dump = filepath.Join(f.dir, "backups", "pggit_pre-phase8.dump")
	for _, d := range []string{"backups", "forensics"} {
		if err := os.Mkdir(filepath.Join(f.dir, d), 0o700); err != nil {
			t.Fatal(err)
		}
	}
	pdURL := env["PAGERDUTY_URL"]
	if pdURL == "" {
		rc := receiver.New(f.logger)
		srv := httptest.NewServer(rc)
		t.Cleanup(srv.Close)
		pdURL = srv.URL
		f.received = func(*testing.T) []string {
			var out []string
			for _, r := range rc.Received("/v2/enqueue") {
				out = append(out, r.Body)
			}
			return out
		}
	} else {
		recvURL := env.Get(t, "RECEIVER_URL")
		f.received = func(t *testing.T) []string {
			resp, err := http.Get(recvURL + "/_/received?path=/v2/enqueue")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			var reqs []struct{ Body string }
			if err := json.NewDecoder(resp.Body).Decode(&reqs); err != nil {
				t.Fatal(err)
			}
			var out []string
			for _, r := range reqs {
				out = append(out, r.Body)
			}
			return out
		}
	}
	secrets := map[string]string{
		"primary-dsn":   env.Get(t, "PG_PRIMARY_DSN"),
		"secondary-dsn": env.Get(t, "PG_SUBSCRIBER_DSN"),
		"pd-key":        routingKey,
		"slack-url":     "https://hooks.slack.invalid/services/T0/B0/secret",
	}
	for name, v := range secrets {
		if err := os.WriteFile(filepath.Join(f.dir, name), []byte(v+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	yml := fmt.Sprintf(`
global:
  prometheus:
    url: %s
  kubernetes:
    kubeconfig: %s
  databases:
    - name: primary
      dsnFile: primary-dsn
      binDir: %s
    - name: secondary
      dsnFile: secondary-dsn
  notify:
    pagerduty:
      routingKeyFile: pd-key
      endpoint: %s
    slack:
      webhookURLFile: slack-url
targets:
  - name: pggit-api
    namespace: %s
    deployment: pggit-api
    containers: [api]
    triggers:
      - name: scrape-targets
        kind: prometheus
        query: count(up)
        above: 100000
      - name: connection-pool
        kind: connections
        database: primary
        above: 0.95
      - name: replication-lag
        kind: replicationLag
        database: primary
        match: {slot: pggit_sub}
        above: 30
      - name: queue
        kind: sql
        database: primary
        query: SELECT count(*) FROM pggit.alert_delivery_queue
        above: 1000000
%s    rollback:
      database:
        name: primary
        migration: phase8_analytics_dashboard
        dumpPath: %s
        forensicDir: %s
        verifyTables: [pggit.alert_delivery_queue, pggit.webhook_health_metrics]
        maxDumpAge: 1h
      multiRegion:
        secondaries: [secondary]
        subscription: %s
`, env.Get(t, "PROMETHEUS_URL"), env.Get(t, "KUBECONFIG"), env.Get(t, "PG_BIN_DIR"), pdURL, f.ns,
		extraTriggers, f.dump, filepath.Join(f.dir, "forensics"), env.Get(t, "PG_SUBSCRIPTION"))
	f.config = filepath.Join(f.dir, "rollguard.yaml")
	if err := os.WriteFile(f.config, []byte(yml), 0o600); err != nil {
		t.Fatal(err)
	}
	f.deploy(t, images...)
	if _, err := backup.Run(context.Background(), backup.Options{ConfigFile: f.config, Target: "pggit-api", Logger: f.logger}); err != nil {
		t.Fatal(err)
	}
	return f
}

// deploy creates the namespace and Deployment pggit-api rolled through
// images, each rollout complete.
func (f *fixture) deploy(t *testing.T, images ...string) {
	t.Helper()
	client := sandboxfixture.Kube(t, f.env)
	deps := kube.New(client, kube.Options{PollInterval: 100 * time.Millisecond}, f.logger)
	sandboxfixture.Namespace(t, client, f.ns)
	sandboxfixture.CreateDeployment(t, client, sandboxfixture.Deployment(f.ns, "pggit-api", images[0], 1))
	sandboxfixture.RollThrough(t, client, deps, f.ns, "pggit-api", images[1:]...)
}

func (f *fixture) run(t *testing.T, mod func(o *preflight.Options)) *preflight.Report {
	t.Helper()
	o := preflight.Options{
		ConfigFile: f.config, Target: "pggit-api",
		NextImage:    []string{"api=pggit-api:v1.1.0"},
		DaemonURL:    "http://127.0.0.1:1", // no daemon in the sandbox
		CheckTimeout: 20 * time.Second,
		Logger:       f.logger,
	}
	if mod != nil {
		mod(&o)
	}
	rep, err := preflight.Run(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	t.Logf("report:\n%s", b.String())
	return rep
}

func check(t *testing.T, rep *preflight.Report, name string) preflight.Check {
	t.Helper()
	for _, c := range rep.Checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %s in the report", name)
	return preflight.Check{}
}

func expect(t *testing.T, rep *preflight.Report, name string, st preflight.Status, evidence string) {
	t.Helper()
	c := check(t, rep, name)
	if c.Status != st || !strings.Contains(c.Evidence, evidence) {
		t.Errorf("%s = %s %q; want %s containing %q", name, c.Status, c.Evidence, st, evidence)
	}
}

func TestIntegrationPreflightPasses(t *testing.T) {
	f := newFixture(t, "", "pggit-api:v1.0.2", "pggit-api:v1.0.3")
	rep := f.run(t, func(o *preflight.Options) {
		o.RestoreTest, o.TestPage = true, true
		o.RequireMigrations = []string{"phase7_webhook_health"}
	})
	for _, c := range rep.Checks {
		want := preflight.StatusPass
		switch c.Name {
		case "monitoring.daemon":
			want = preflight.StatusWarn
		case "responders", "slack-channel":
			want = preflight.StatusManual
		}
		if c.Status != want {
			t.Errorf("%s = %s (%s), want %s", c.Name, c.Status, c.Evidence, want)
		}
	}
	if rep.Blocking() {
		t.Errorf("report blocks: %v", rep.Failed())
	}
	expect(t, rep, "previous.target", preflight.StatusPass, "api=pggit-api:v1.0.2 from previous-revision")
	expect(t, rep, "previous.next-image", preflight.StatusPass, "api: pggit-api:v1.1.0 -> rollback to pggit-api:v1.0.2")
	expect(t, rep, "previous.gitops", preflight.StatusPass, "no Flux or Argo CD object reconciles")
	expect(t, rep, "backup.restore-test", preflight.StatusPass, "dropped")
	expect(t, rep, "replication.subscription.secondary", preflight.StatusPass, "is enabled, apply worker pid")
	expect(t, rep, "monitoring.daemon", preflight.StatusWarn, "not reachable at http://127.0.0.1:1")
	for _, name := range []string{"backup.dump", "backup.contents", "backup.record", "paging.test-page",
		"fixes.migration.phase7_webhook_health", "fixes.migration.phase8_analytics_dashboard",
		"trigger.scrape-targets", "trigger.connection-pool", "trigger.replication-lag", "trigger.queue"} {
		check(t, rep, name)
	}

	// The scratch database is gone.
	c := sandboxfixture.PgConnect(t, f.env.Get(t, "PG_PRIMARY_DSN"))
	var left int
	if err := c.QueryRow(context.Background(), "SELECT count(*) FROM pg_database WHERE datname LIKE 'rollguard_preflight_%'").Scan(&left); err != nil || left != 0 {
		t.Errorf("scratch databases left: %d %v", left, err)
	}

	// The test page reached the receiver at info severity.
	found := false
	for _, body := range f.received(t) {
		if !strings.Contains(body, f.ns) {
			continue
		}
		var ev struct {
			RoutingKey string `json:"routing_key"`
			Payload    struct{ Severity, Summary string }
		}
		if err := json.Unmarshal([]byte(body), &ev); err != nil {
			t.Fatal(err)
		}
		found = ev.RoutingKey == routingKey && ev.Payload.Severity == "info" && strings.Contains(ev.Payload.Summary, "test page")
	}
	if !found {
		t.Errorf("no info test event for %s at the receiver", f.ns)
	}

	var js strings.Builder
	if err := rep.WriteJSON(&js); err != nil || !strings.Contains(js.String(), `"blocking": false`) {
		t.Errorf("json %v: %s", err, js.String())
	}
}

func TestIntegrationPreflightBadDumps(t *testing.T) {
	f := newFixture(t, "", "pggit-api:v1.0.2", "pggit-api:v1.0.3")
	good, err := os.ReadFile(f.dump)
	if err != nil {
		t.Fatal(err)
	}
	restore := func(t *testing.T) {
		t.Helper()
		if err := os.WriteFile(f.dump, good, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	t.Run("stale", func(t *testing.T) {
		restore(t)
		old := time.Now().Add(-2 * time.Hour)
		if err := os.Chtimes(f.dump, old, old); err != nil {
			t.Fatal(err)
		}
		rep := f.run(t, nil)
		expect(t, rep, "backup.dump", preflight.StatusFail, "older than maxDumpAge 1h")
		if !rep.Blocking() {
			t.Error("a stale dump does not block")
		}
	})
	t.Run("truncated", func(t *testing.T) {
		if err := os.WriteFile(f.dump, good[:len(good)/2], 0o600); err != nil {
			t.Fatal(err)
		}
		rep := f.run(t, func(o *preflight.Options) { o.RestoreTest = true })
		expect(t, rep, "backup.dump", preflight.StatusPass, "bytes")
		expect(t, rep, "backup.contents", preflight.StatusFail, "invalid dump")
		expect(t, rep, "backup.record", preflight.StatusWarn, "describes another dump")
		expect(t, rep, "backup.restore-test", preflight.StatusSkip, "not readable")
		if !rep.Blocking() {
			t.Error("a truncated dump does not block")
		}
	})
	t.Run("missing", func(t *testing.T) {
		if err := os.Remove(f.dump); err != nil {
			t.Fatal(err)
		}
		rep := f.run(t, nil)
		expect(t, rep, "backup.dump", preflight.StatusFail, "is missing: run `rollguard backup --target pggit-api`")
		expect(t, rep, "backup.contents", preflight.StatusSkip, "no dump")
	})
	t.Run("forensic dir missing", func(t *testing.T) {
		restore(t)
		if err := os.Remove(filepath.Join(f.dir, "forensics")); err != nil {
			t.Fatal(err)
		}
		rep := f.run(t, nil)
		expect(t, rep, "backup.forensic-dir", preflight.StatusFail, "no such file or directory")
		expect(t, rep, "backup.dump", preflight.StatusPass, "within maxDumpAge")
	})
}

func TestIntegrationPreflightNoOlderRevision(t *testing.T) {
	f := newFixture(t, "", "pggit-api:v1.0.3")
	rep := f.run(t, nil)
	expect(t, rep, "previous.target", preflight.StatusFail, "no older revision to roll back to")
	expect(t, rep, "previous.next-image", preflight.StatusSkip, "no rollback target")
	if !rep.Blocking() {
		t.Error("no rollback target does not block")
	}
}

func TestIntegrationPreflightNextImageIsTheTarget(t *testing.T) {
	f := newFixture(t, "", "pggit-api:v1.0.2", "pggit-api:v1.0.3")
	rep := f.run(t, func(o *preflight.Options) { o.NextImage = []string{"pggit-api:v1.0.2"} })
	expect(t, rep, "previous.next-image", preflight.StatusFail, "the rollback target is the version being deployed (api=pggit-api:v1.0.2)")
}

func TestIntegrationPreflightDisabledSubscription(t *testing.T) {
	f := newFixture(t, "", "pggit-api:v1.0.2", "pggit-api:v1.0.3")
	sub := sandboxfixture.PgConnect(t, f.env.Get(t, "PG_SUBSCRIBER_DSN"))
	name := pgx.Identifier{f.env.Get(t, "PG_SUBSCRIPTION")}.Sanitize()
	t.Cleanup(func() {
		// Always: every other test of the sandbox needs replication.
		if _, err := sub.Exec(context.Background(), "ALTER SUBSCRIPTION "+name+" ENABLE"); err != nil {
			t.Errorf("re-enable subscription: %v", err)
		}
	})
	if _, err := sub.Exec(context.Background(), "ALTER SUBSCRIPTION "+name+" DISABLE"); err != nil {
		t.Fatal(err)
	}
	rep := f.run(t, nil)
	expect(t, rep, "replication.subscription.secondary", preflight.StatusFail, "is DISABLED")
	if !rep.Blocking() {
		t.Error("a disabled subscription does not block")
	}
}

func TestIntegrationPreflightMissingMigrationAndBlindTrigger(t *testing.T) {
	f := newFixture(t, `      - name: blind
        kind: prometheus
        query: rollguard_preflight_no_such_metric
        above: 1
`, "pggit-api:v1.0.2", "pggit-api:v1.0.3")
	rep := f.run(t, func(o *preflight.Options) { o.RequireMigrations = []string{"phase8_critical_fixes"} })
	expect(t, rep, "fixes.migration.phase8_critical_fixes", preflight.StatusFail, "is NOT in pggit.schema_versions")
	expect(t, rep, "fixes.migration.phase8_analytics_dashboard", preflight.StatusPass, "is in pggit.schema_versions")
	expect(t, rep, "trigger.blind", preflight.StatusFail, "returns no data now")
	expect(t, rep, "trigger.queue", preflight.StatusPass, "sql returns")
	if got := len(rep.Failed()); got != 2 {
		t.Errorf("%d failed checks, want 2: %v", got, rep.Failed())
	}
}
