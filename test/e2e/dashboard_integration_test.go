package e2e

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rollguard/rollguard/test/inbox"
	"github.com/rollguard/rollguard/test/pggitsim"
	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// dashboardQuery is one panel target of the Grafana dashboard.
type dashboardQuery struct {
	Panel string
	RefID string
	Expr  string // as written, with Grafana's variables
}

// grafanaVars are what Grafana substitutes before it sends a query: every
// target ($target = All), and the intervals of a short time range.
var grafanaVars = strings.NewReplacer(
	"$__rate_interval", "1m",
	"$__interval", "5s",
	"$__range", "10m",
	"$target", ".*",
)

func (q dashboardQuery) promQL() string { return grafanaVars.Replace(q.Expr) }

// dashboardQueries reads every panel query of deploy/monitoring's dashboard.
func dashboardQueries(t *testing.T) []dashboardQuery {
	t.Helper()
	_, file, _, _ := runtime.Caller(0)
	path := filepath.Join(filepath.Dir(file), "..", "..", "deploy", "monitoring", "dashboard", "rollguard.json")
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	type target struct {
		RefID string `json:"refId"`
		Expr  string `json:"expr"`
	}
	type panel struct {
		Type    string   `json:"type"`
		Title   string   `json:"title"`
		Targets []target `json:"targets"`
		Panels  []panel  `json:"panels"`
	}
	var dash struct {
		UID    string  `json:"uid"`
		Panels []panel `json:"panels"`
	}
	if err := json.Unmarshal(b, &dash); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	var out []dashboardQuery
	var walk func(ps []panel)
	walk = func(ps []panel) {
		for _, p := range ps {
			walk(p.Panels)
			if p.Type == "row" {
				continue
			}
			if len(p.Targets) == 0 {
				t.Errorf("panel %q has no query", p.Title)
			}
			for _, tg := range p.Targets {
				if strings.TrimSpace(tg.Expr) == "" {
					t.Errorf("panel %q target %s has no expr", p.Title, tg.RefID)
				}
				out = append(out, dashboardQuery{Panel: p.Title, RefID: tg.RefID, Expr: tg.Expr})
			}
		}
	}
	walk(dash.Panels)
	if dash.UID != "rollguard" || len(out) < 10 {
		t.Fatalf("dashboard uid %q with %d queries", dash.UID, len(out))
	}
	return out
}

// checkParses has promtool (the sandbox Prometheus's own PromQL parser)
// parse every query as a recording rule, and proves the check can fail.
func checkParses(t *testing.T, promBin string, qs []dashboardQuery) {
	t.Helper()
	promtool := filepath.Join(filepath.Dir(promBin), "promtool")
	type rule struct {
		Record string `json:"record"`
		Expr   string `json:"expr"`
	}
	var rules []rule
	for i, q := range qs {
		rules = append(rules, rule{Record: fmt.Sprintf("dashboard:query_%d", i), Expr: q.promQL()})
	}
	write := func(name string, rs []rule) string {
		b, err := yaml.Marshal(map[string]any{"groups": []any{map[string]any{"name": "dashboard", "rules": rs}}})
		if err != nil {
			t.Fatal(err)
		}
		p := filepath.Join(t.TempDir(), name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	ok := write("dashboard.rules.yaml", rules)
	if out, err := exec.Command(promtool, "check", "rules", ok).CombinedOutput(); err != nil {
		t.Fatalf("promtool check rules refused a dashboard query: %v\n%s", err, out)
	}
	bad := write("broken.rules.yaml", []rule{{Record: "dashboard:broken", Expr: "sum by (x (rollguard_leader)"}})
	if out, err := exec.Command(promtool, "check", "rules", bad).CombinedOutput(); err == nil {
		t.Fatalf("promtool check rules accepted a broken query:\n%s", out)
	}
}

// startScraper runs a Prometheus of the test's own that scrapes the
// daemon's /metrics every second.
func startScraper(t *testing.T, bin, daemonHost string) string {
	t.Helper()
	dir := t.TempDir()
	cfg := fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
scrape_configs:
  - job_name: rollguard
    static_configs:
      - targets: [%q]
`, daemonHost)
	return "http://" + sandboxfixture.StartOwnPrometheus(t, bin, dir, cfg).Addr
}

// instant runs query at now and returns how many series it gave.
func instant(ctx context.Context, base, query string) (int, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/query?query="+url.QueryEscape(query), nil)
	if err != nil {
		return 0, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, fmt.Errorf("decode (HTTP %d): %w", resp.StatusCode, err)
	}
	if body.Status != "success" {
		return 0, fmt.Errorf("%s", body.Error)
	}
	return len(body.Data.Result), nil
}

// TestDashboardQueriesReturnData: every panel query of the Grafana
// dashboard parses (promtool, the Prometheus parser) and returns data from
// a Prometheus scraping a rollguard that has just rolled back a bad
// deploy, paged through PagerDuty, Slack, a webhook and Alertmanager, and
// holds the leader lease.
func TestDashboardQueriesReturnData(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	qs := dashboardQueries(t)
	promBin := sb.env.Get(t, "PROMETHEUS_BIN")
	checkParses(t, promBin, qs)

	ns := sb.newNamespace(t, "dashboard")
	bad := sb.badImage(t, "dashboard", pggitsim.Profile{ErrorRate: 0.2, LatencySeconds: 0.05})
	sb.createDeployment(t, ns, healthyImage, 2)
	ib := sb.newInbox(t, "dashboard")
	am := sandboxfixture.Alertmanager(t, sb.env, "")
	d := startDaemon(t, sb, daemonSpec{PrometheusURL: sb.promURL, Inbox: &ib,
		Notify: map[string]any{
			"webhooks":     []map[string]any{{"name": "tickets", "url": sb.receiverURL + ib.Prefix + receiver.GenericWebhookPath}},
			"alertmanager": map[string]any{"urls": []string{am}},
		},
		Global: map[string]any{"leaderElection": map[string]any{"enabled": true, "namespace": ns, "leaseName": "rollguard",
			"leaseDuration": "4s", "renewDeadline": "3s", "retryPeriod": "1s"}},
		Target: map[string]any{
			"namespace": ns,
			"rollback":  map[string]any{"strategy": "quick", "rampSteps": []int{1}, "rampPause": "1s", "rolloutTimeout": "30s", "verifyWindow": "5s"},
			"triggers": []map[string]any{
				{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "action": "rollback"},
			},
		},
		// A query that parses (validate accepts it) and that Prometheus
		// refuses when it runs it (an invalid regular expression is an
		// execution error): the source-errors panel has something to
		// show (bad_query). It is another target's, which only pages: a
		// trigger of the rolled-back target without data would make its
		// rollback unverified.
		More: []map[string]any{{"name": "broken-probe", "namespace": ns, "deployment": "broken-probe",
			"triggers": []map[string]any{{"name": "broken", "kind": "prometheus", "action": "page", "above": 1,
				"query": `label_replace(sum(rate(http_requests_total[5s])), "x", "$1", "job", "(")`}}}},
	})
	prom := startScraper(t, promBin, strings.TrimPrefix(d.url, "http://"))

	d.watch(t, "error-rate", 40*time.Second, stateIs("ok"))
	sb.setImage(t, ns, bad)
	ib.WaitPagerDuty(t, "rollback_succeeded page", 90*time.Second, func(evs []inbox.PagerDutyEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].Kind(t) == "rollback_succeeded"
	})
	// The scraper has seen the rollback once its counter is there.
	sandboxfixture.WaitFor(t, "the scraper saw the rollback", 20*time.Second, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		n, err := instant(ctx, prom, `rollguard_rollbacks_total{result="succeeded"}`)
		return n > 0, fmt.Sprintf("%d series", n), err
	})

	// The daemon delivered through the new notifiers too.
	for _, notifier := range []string{"webhook:tickets", "alertmanager", "pagerduty", "slack"} {
		sandboxfixture.WaitFor(t, notifier+" delivered", 10*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string, error) {
			n, err := instant(ctx, prom, fmt.Sprintf(`rollguard_notifications_total{notifier=%q,result="delivered"} > 0`, notifier))
			return n > 0, fmt.Sprintf("%d series", n), err
		})
	}

	for _, q := range qs {
		t.Run(fmt.Sprintf("%s/%s", q.Panel, q.RefID), func(t *testing.T) {
			var n int
			sandboxfixture.WaitFor(t, "data for "+q.promQL(), 10*time.Second, 250*time.Millisecond, func(ctx context.Context) (bool, string, error) {
				var err error
				n, err = instant(ctx, prom, q.promQL())
				return n > 0, fmt.Sprintf("%d series", n), err
			})
		})
	}
}
