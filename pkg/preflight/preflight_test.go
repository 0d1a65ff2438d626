package preflight

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
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/config/configtest"
	"github.com/rollguard/rollguard/test/receiver"
)

const goodKey = "abcdefghijklmnopqrstuvwxyz012345"

// writeConfig writes a config and the given secret files into a temp dir.
// pdEndpoint may be empty.
func writeConfig(t *testing.T, secrets map[string]string, pdEndpoint string) string {
	t.Helper()
	ep := ""
	if pdEndpoint != "" {
		ep = "      endpoint: " + pdEndpoint + "\n"
	}
	yml := `
global:
  databases:
    - name: primary
      dsnFile: primary-dsn
  notify:
    pagerduty:
      routingKeyFile: pd-key
` + ep + `    slack:
      webhookURLFile: slack-url
targets:
` + configtest.DatabaseTarget("api", "m1", "/backups/x.dump", "/backups/forensics", "        maxDumpAge: 1h\n")
	return configtest.Write(t, t.TempDir(), yml, secrets)
}

var goodSecrets = map[string]string{
	"primary-dsn": "postgres://u:p@127.0.0.1:1/pggit",
	"pd-key":      goodKey + "\n",
	"slack-url":   "https://hooks.slack.com/services/T/B/SECRETPART",
}

func TestReportVerdictAndRendering(t *testing.T) {
	rep := &Report{Target: "api", Namespace: "production", Deployment: "pggit-api", Time: time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC),
		Checks: []Check{
			{Item: ItemBackup, Name: "backup.dump", Status: StatusPass, Evidence: "fresh"},
			{Item: ItemMonitoring, Name: "monitoring.daemon", Status: StatusWarn, Evidence: "not reachable"},
			{Item: ItemResponders, Name: "responders", Status: StatusManual, Evidence: "ask"},
		}}
	if rep.Blocking() {
		t.Fatal("warn and manual must not block")
	}
	var b strings.Builder
	if err := rep.WriteTable(&b); err != nil {
		t.Fatal(err)
	}
	want := `ITEM                              CHECK              RESULT  EVIDENCE
Backup completed and tested       backup.dump        PASS    fresh
Monitoring alerts configured      monitoring.daemon  WARN    not reachable
Incident response team available  responders         MANUAL  ask
preflight api (production/pggit-api): 1 pass, 0 fail, 1 warn, 0 skip, 1 manual: ready to deploy
`
	if b.String() != want {
		t.Errorf("table:\n%s\nwant:\n%s", b.String(), want)
	}

	rep.Checks = append(rep.Checks, Check{Item: ItemFixes, Name: "fixes.migration.x", Status: StatusFail, Evidence: "missing"})
	if !rep.Blocking() || len(rep.Failed()) != 1 {
		t.Fatal("a fail must block")
	}
	b.Reset()
	if err := rep.WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Target   string
		Blocking bool
		Counts   map[string]int
		Checks   []struct{ Check, Status, Evidence, Item string }
	}
	if err := json.Unmarshal([]byte(b.String()), &got); err != nil {
		t.Fatal(err)
	}
	if !got.Blocking || got.Target != "api" || got.Counts["fail"] != 1 || len(got.Checks) != 4 ||
		got.Checks[3].Check != "fixes.migration.x" || got.Checks[3].Status != "fail" {
		t.Errorf("json: %+v\n%s", got, b.String())
	}
	if !strings.HasSuffix(rep.Summary(), "BLOCKED: fix the failed checks before deploying") {
		t.Errorf("summary %q", rep.Summary())
	}
}

func TestParseNextImages(t *testing.T) {
	for _, tc := range []struct {
		in      []string
		want    map[string]string
		wantErr string
	}{
		{nil, map[string]string{}, ""},
		{[]string{"pggit-api:v1.1.0"}, map[string]string{"": "pggit-api:v1.1.0"}, ""},
		{[]string{"api=pggit-api:v1.1.0", "sidecar=envoy:1"}, map[string]string{"api": "pggit-api:v1.1.0", "sidecar": "envoy:1"}, ""},
		{[]string{"api=a:1", "api=a:1"}, map[string]string{"api": "a:1"}, ""},
		{[]string{"api=a:1", "api=a:2"}, nil, `two images for container "api" (a:1, a:2)`},
		{[]string{"=a:1"}, nil, `--next-image "=a:1": want IMAGE or CONTAINER=IMAGE`},
		{[]string{" "}, nil, "--next-image: empty value"},
	} {
		got, err := parseNextImages(tc.in)
		if tc.wantErr != "" {
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("%q: err = %v, want ErrUsage with %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("%q: got %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestCompareNext(t *testing.T) {
	target := map[string]string{"api": "pggit-api:v1.0.3", "sidecar": "envoy:1"}
	for _, tc := range []struct {
		name     string
		next     map[string]string
		target   map[string]string
		want     Status
		evidence string
	}{
		{"not given", nil, target, StatusWarn, "--next-image not given"},
		{"no target", map[string]string{"": "x"}, nil, StatusSkip, "no rollback target"},
		{"differs", map[string]string{"api": "pggit-api:v1.1.0"}, target, StatusPass, "api: pggit-api:v1.1.0 -> rollback to pggit-api:v1.0.3"},
		{"same", map[string]string{"api": "pggit-api:v1.0.3"}, target, StatusFail, "the rollback target is the version being deployed (api=pggit-api:v1.0.3)"},
		{"wildcard same as one container", map[string]string{"": "envoy:1"}, target, StatusFail, "(sidecar=envoy:1)"},
		{"unknown container", map[string]string{"web": "x"}, target, StatusFail, `names container "web", which the rollback target does not have (containers: api, sidecar)`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := &runner{nextImages: tc.next}
			st, ev := r.compareNext(tc.target)
			if st != tc.want || !strings.Contains(ev, tc.evidence) {
				t.Errorf("got %s %q, want %s containing %q", st, ev, tc.want, tc.evidence)
			}
		})
	}
}

func TestRunUsageErrors(t *testing.T) {
	cfg := writeConfig(t, goodSecrets, "")
	for _, tc := range []struct {
		name string
		opts Options
		want string
	}{
		{"no config", Options{Target: "api"}, "no config file given"},
		{"config missing", Options{ConfigFile: cfg + ".absent", Target: "api"}, "reading config file"},
		{"unknown target", Options{ConfigFile: cfg, Target: "web"}, `target "web" is not in the config (targets: [api])`},
		{"bad next image", Options{ConfigFile: cfg, Target: "api", NextImage: []string{"api="}}, "want IMAGE or CONTAINER=IMAGE"},
		{"empty migration", Options{ConfigFile: cfg, Target: "api", RequireMigrations: []string{""}}, "--require-migration: empty name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Run(context.Background(), tc.opts)
			if !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("err = %v, want ErrUsage containing %q", err, tc.want)
			}
		})
	}
}

func newTestRunner(t *testing.T, secrets map[string]string, pdEndpoint string, mod func(*Options)) *runner {
	t.Helper()
	o := Options{ConfigFile: writeConfig(t, secrets, pdEndpoint), Target: "api", CheckTimeout: 5 * time.Second,
		Now: func() time.Time { return time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC) }}
	if mod != nil {
		mod(&o)
	}
	r, err := newRunner(o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(r.close)
	return r
}

func TestDumpFile(t *testing.T) {
	r := newTestRunner(t, goodSecrets, "", nil)
	now := r.now()
	dir := t.TempDir()
	write := func(name, content string, mtime time.Time) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		if err := os.Chtimes(p, mtime, mtime); err != nil {
			t.Fatal(err)
		}
		return p
	}
	for _, tc := range []struct {
		name     string
		path     string
		want     Status
		evidence string
	}{
		{"fresh", write("fresh", "x", now.Add(-30*time.Minute)), StatusPass, "1 bytes, written 2026-11-25T11:30:00Z (30m0s ago), within maxDumpAge 1h"},
		{"stale", write("stale", "x", now.Add(-90*time.Minute)), StatusFail, "(1h30m0s ago): older than maxDumpAge 1h0m0s: take a fresh backup"},
		{"empty", write("empty", "", now), StatusFail, "is empty"},
		{"future", write("future", "x", now.Add(time.Hour)), StatusWarn, "written in the future"},
		{"missing", filepath.Join(dir, "absent"), StatusFail, "is missing: run `rollguard backup --target api`"},
		{"directory", dir, StatusFail, "is not a regular file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, st, ev := r.dumpFile(tc.path, time.Hour)
			if st != tc.want || !strings.Contains(ev, tc.evidence) {
				t.Errorf("got %s %q, want %s containing %q", st, ev, tc.want, tc.evidence)
			}
		})
	}
}

func TestPagingSecrets(t *testing.T) {
	for _, tc := range []struct {
		name    string
		secrets map[string]string
		check   string
		want    Status
		ev      string
	}{
		{"good key", goodSecrets, "paging.routing-key", StatusPass, "holds a 32-character routing key"},
		{"short key", with(goodSecrets, "pd-key", "short"), "paging.routing-key", StatusFail, "does not hold an Events API v2 routing key (32 letters and digits; it holds 5 characters)"},
		{"missing key file", without(goodSecrets, "pd-key"), "paging.routing-key", StatusFail, "global.notify.pagerduty.routingKeyFile: reading secret: open"},
		{"slack ok shows host only", goodSecrets, "paging.slack-webhook", StatusPass, "holds a https webhook URL on host hooks.slack.com"},
		{"slack not a URL", with(goodSecrets, "slack-url", "not a url"), "paging.slack-webhook", StatusFail, "does not hold an http or https URL"},
		{"test page off", goodSecrets, "paging.test-page", StatusSkip, "not requested (--test-page)"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := newTestRunner(t, tc.secrets, "", nil)
			c := find(t, r.pagingChecks(context.Background()), tc.check)
			if c.Status != tc.want || !strings.Contains(c.Evidence, tc.ev) {
				t.Errorf("got %s %q, want %s containing %q", c.Status, c.Evidence, tc.want, tc.ev)
			}
			for _, secret := range []string{"SECRETPART", goodKey, "short"} {
				if strings.Contains(c.Evidence, secret) && tc.name != "short key" {
					t.Errorf("evidence leaks a secret: %q", c.Evidence)
				}
			}
		})
	}
}

func TestTestPage(t *testing.T) {
	rc := receiver.New(nil)
	srv := httptest.NewServer(rc)
	defer srv.Close()

	r := newTestRunner(t, goodSecrets, srv.URL, func(o *Options) { o.TestPage = true })
	c := find(t, r.pagingChecks(context.Background()), "paging.test-page")
	if c.Status != StatusPass || !strings.Contains(c.Evidence, "accepted by "+srv.URL+"/v2/enqueue (202)") {
		t.Fatalf("got %s %q", c.Status, c.Evidence)
	}
	got := rc.Received("/v2/enqueue")
	if len(got) != 1 {
		t.Fatalf("received %d events", len(got))
	}
	var ev struct {
		RoutingKey  string `json:"routing_key"`
		EventAction string `json:"event_action"`
		Payload     struct{ Severity, Summary, Source string }
	}
	if err := json.Unmarshal([]byte(got[0].Body), &ev); err != nil {
		t.Fatal(err)
	}
	if ev.RoutingKey != goodKey || ev.EventAction != "trigger" || ev.Payload.Severity != "info" ||
		ev.Payload.Summary != "rollguard preflight test page for target api (production/pggit-api): no action needed" {
		t.Errorf("event %+v", ev)
	}

	// A rejected event fails the check with the status.
	if err := rc.SetFaults("/v2/enqueue", []receiver.Response{{Status: 400}}); err != nil {
		t.Fatal(err)
	}
	c = find(t, r.pagingChecks(context.Background()), "paging.test-page")
	if c.Status != StatusFail || !strings.Contains(c.Evidence, "(HTTP 400)") {
		t.Errorf("rejected: got %s %q", c.Status, c.Evidence)
	}
}

func TestDaemon(t *testing.T) {
	status := api.Status{Version: "v0.1.0", Leader: true, Targets: []api.TargetStatus{
		{Name: "other", Namespace: "production", Deployment: "web"},
		{Name: "api", Namespace: "production", Deployment: "pggit-api"},
	}}
	for _, tc := range []struct {
		name   string
		ready  bool
		mutate func(s *api.Status)
		want   Status
		ev     string
	}{
		{"ready and watching", true, nil, StatusPass, "rollguard v0.1.0 at URL is ready and watches api (production/pggit-api), leader true"},
		{"not ready", false, nil, StatusFail, "is not ready: 503 Service Unavailable"},
		{"does not watch", true, func(s *api.Status) { s.Targets = s.Targets[:1] }, StatusFail, "does not watch target api (it watches [other]): the deploy would be unguarded"},
		{"dry-run", true, func(s *api.Status) { s.Targets[1].DryRun = true }, StatusWarn, "target is in DRY-RUN"},
		{"frozen", true, func(s *api.Status) { s.Targets[1].Frozen = true }, StatusWarn, "target is FROZEN"},
		{"other deployment", true, func(s *api.Status) { s.Targets[1].Deployment = "x" }, StatusFail, "but this config says production/pggit-api"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := status
			s.Targets = append([]api.TargetStatus(nil), status.Targets...)
			if tc.mutate != nil {
				tc.mutate(&s)
			}
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
				switch req.URL.Path {
				case "/readyz":
					if !tc.ready {
						w.WriteHeader(http.StatusServiceUnavailable)
						io.WriteString(w, `{"error":"not ready: prometheus has not answered"}`)
						return
					}
					io.WriteString(w, "ready\n")
				case "/api/v1/status":
					json.NewEncoder(w).Encode(s)
				default:
					http.NotFound(w, req)
				}
			}))
			defer srv.Close()
			r := newTestRunner(t, goodSecrets, "", func(o *Options) { o.DaemonURL = srv.URL })
			st, ev := r.daemon(context.Background())
			want := strings.ReplaceAll(tc.ev, "URL", srv.URL)
			if st != tc.want || !strings.Contains(ev, want) {
				t.Errorf("got %s %q, want %s containing %q", st, ev, tc.want, want)
			}
		})
	}
	t.Run("unreachable", func(t *testing.T) {
		srv := httptest.NewServer(http.NotFoundHandler())
		url := srv.URL
		srv.Close()
		r := newTestRunner(t, goodSecrets, "", func(o *Options) { o.DaemonURL = url })
		st, ev := r.daemon(context.Background())
		if st != StatusWarn || !strings.Contains(ev, fmt.Sprintf("rollguard daemon not reachable at %s", url)) {
			t.Errorf("got %s %q", st, ev)
		}
	})
}

func TestMissingDSNFailsOnlyItsChecks(t *testing.T) {
	r := newTestRunner(t, without(goodSecrets, "primary-dsn"), "", func(o *Options) { o.RequireMigrations = []string{"fix"} })
	checks := r.migrationChecks(context.Background())
	if len(checks) != 2 || checks[0].Name != "fixes.migration.fix" || checks[1].Name != "fixes.migration.m1" {
		t.Fatalf("checks %+v", checks)
	}
	for _, c := range checks {
		if c.Status != StatusFail || !strings.Contains(c.Evidence, `database "primary": global.databases[0].dsnFile: reading secret`) {
			t.Errorf("%s: %s %q", c.Name, c.Status, c.Evidence)
		}
	}
	// Paging does not depend on the database and still passes.
	if c := find(t, r.pagingChecks(context.Background()), "paging.routing-key"); c.Status != StatusPass {
		t.Errorf("routing key: %s %q", c.Status, c.Evidence)
	}
}

func find(t *testing.T, checks []Check, name string) Check {
	t.Helper()
	for _, c := range checks {
		if c.Name == name {
			return c
		}
	}
	t.Fatalf("no check %s in %+v", name, checks)
	return Check{}
}

func with(m map[string]string, k, v string) map[string]string {
	out := map[string]string{}
	for a, b := range m {
		out[a] = b
	}
	out[k] = v
	return out
}

func without(m map[string]string, k string) map[string]string {
	out := with(m, k, "")
	delete(out, k)
	return out
}
