package app

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/source"
)

// rotation is a config whose secrets live in files of its directory.
type rotation struct {
	t   *testing.T
	dir string
}

func (r rotation) write(name, content string) {
	r.t.Helper()
	if err := os.WriteFile(filepath.Join(r.dir, name), []byte(content), 0o600); err != nil {
		r.t.Fatal(err)
	}
}

func newRotation(t *testing.T) (rotation, *daemon) {
	t.Helper()
	r := rotation{t: t, dir: t.TempDir()}
	r.write("token", "first-token\n")
	r.write("dsn", "postgres://rollguard:first-pw@db:5432/pggit\n")
	r.write("routing-key", "first-routing-key-0123456789\n")
	r.write("rollguard.yaml", `global:
  prometheus: {url: "http://prometheus:9090"}
  databases: [{name: primary, dsnFile: dsn}]
  api: {tokenFile: token}
  notify:
    incidentDir: `+r.dir+`
    pagerduty: {routingKeyFile: routing-key}
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers: [{name: errors, kind: errorRate, above: 0.05, minRate: 1}]
`)
	path := filepath.Join(r.dir, "rollguard.yaml")
	cfg, err := loadConfig(path)
	if err != nil {
		t.Fatal(err)
	}
	g := guard.New(guard.Options{})
	d := &daemon{opts: Options{ConfigFile: path}, log: zap.NewNop(), guard: g,
		eval:     evaluator.New(evaluator.Options{}, map[string]evaluator.Querier{rules.BackendPrometheus: idleProm{}, rules.BackendPostgres("primary"): nil}, nil, zap.NewNop(), nil),
		resp:     response.New(nil, nil, nil, g, response.Options{}, zap.NewNop(), nil),
		watch:    gitops.NewWatcher(nil, nil, nil, gitops.WatchOptions{}, zap.NewNop(), nil),
		reloadOK: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ok"}), reloadTS: prometheus.NewGauge(prometheus.GaugeOpts{Name: "ts"}),
		reloads: newReloadMetrics(nil)}
	if err := d.apply(cfg); err != nil {
		t.Fatal(err)
	}
	return r, d
}

// idleProm is a Prometheus backend the test never asks: it can evaluate
// ranges, as the daemon's triggers at global.prometheus.resolution need.
type idleProm struct{}

func (idleProm) Query(context.Context, string, time.Time) ([]source.Series, error) {
	return nil, errors.New("not asked in this test")
}

func (idleProm) QueryRange(context.Context, string, time.Time, time.Time, time.Duration) ([]source.Range, error) {
	return nil, errors.New("not asked in this test")
}

// call POSTs /-/reload (a mutating endpoint) with token.
func call(h http.Handler, token string) int {
	req := httptest.NewRequest(http.MethodPost, "/-/reload", nil)
	req.Header.Set("Authorization", "Bearer "+token)
	w := httptest.NewRecorder()
	h.ServeHTTP(w, req)
	return w.Code
}

func reloads(d *daemon, result string) float64 {
	m := &dto.Metric{}
	if err := d.reloads.total.WithLabelValues(result).Write(m); err != nil {
		panic(err)
	}
	return m.GetCounter().GetValue()
}

func gauge(g prometheus.Gauge) float64 {
	m := &dto.Metric{}
	if err := g.Write(m); err != nil {
		panic(err)
	}
	return m.GetGauge().GetValue()
}

// A reload after a secret rotated either puts the new secret in use (the
// API token) or is refused, saying a restart is needed and which secret
// (a DSN, a routing key: their connections and notifiers are built once);
// never "reloaded" with the old one still in use (secrets print as
// <secret>, so comparing printed configs saw no change). The reload
// metrics say which.
func TestRotatedSecretsOnReload(t *testing.T) {
	r, d := newRotation(t)
	h := api.NewHandler(&controller{d: d}, api.Options{TokenFunc: d.apiTokens}, zap.NewNop())
	before, _ := d.watchedHash()

	r.write("token", "second-token\n")
	if after, _ := d.watchedHash(); after == before {
		t.Error("the watched hash does not see the rotated token file: no automatic reload")
	}
	if err := d.reload(context.Background()); err != nil {
		t.Fatalf("token rotation: %v", err)
	}
	if code := call(h, "second-token"); code == http.StatusForbidden || code == http.StatusUnauthorized {
		t.Errorf("after the reload the new token is refused (%d): the old one is still in use", code)
	}
	if code := call(h, "first-token"); code != http.StatusForbidden {
		t.Errorf("after the reload the old token answers %d, want 403", code)
	}
	// Two: the call with the new token is itself a reload (POST /-/reload).
	if reloads(d, reloadApplied) != 2 || gauge(d.reloads.restartRequired) != 0 {
		t.Errorf("applied reloads %v, restart required %v", reloads(d, reloadApplied), gauge(d.reloads.restartRequired))
	}

	for i, tc := range []struct{ file, old, new, want string }{
		{"dsn", "postgres://rollguard:first-pw@db:5432/pggit\n", "postgres://rollguard:second-pw@db:5432/pggit\n",
			"[global.databases] changed: these settings take effect only on restart (rotated secrets [global.databases[primary].dsnFile] are still the old ones until then)"},
		{"routing-key", "first-routing-key-0123456789\n", "second-routing-key-0123456789\n",
			"[global.notify] changed: these settings take effect only on restart (rotated secrets [global.notify.pagerduty.routingKeyFile] are still the old ones until then)"},
	} {
		r.write(tc.file, tc.new)
		err := d.reload(context.Background())
		if err == nil || err.Error() != tc.want {
			t.Errorf("%s rotation: reload %v, want %q", tc.file, err, tc.want)
		}
		if reloads(d, reloadRestartRequired) != float64(i+1) || gauge(d.reloads.restartRequired) != 1 || gauge(d.reloadOK) != 0 {
			t.Errorf("%s rotation: restart_required %v, gauge %v, last reload successful %v", tc.file,
				reloads(d, reloadRestartRequired), gauge(d.reloads.restartRequired), gauge(d.reloadOK))
		}
		r.write(tc.file, tc.old)
	}
	// Put back, the file applies again.
	if err := d.reload(context.Background()); err != nil || gauge(d.reloads.restartRequired) != 0 {
		t.Errorf("reload after putting the secrets back: %v, restart required %v", err, gauge(d.reloads.restartRequired))
	}
}
