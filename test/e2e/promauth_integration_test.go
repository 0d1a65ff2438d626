package e2e

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestAuthenticatedPrometheus runs the daemon against a Prometheus behind
// its own web config (TLS, basic auth), configured through
// global.prometheus.httpConfig. With the right settings the error-rate
// trigger reads the simulator's traffic and a trigger whose query always
// breaches fires; with a wrong password every trigger stays nodata with an
// "unauthorized" error, and the always-breaching one never fires: a refused
// credential is missing data, not evidence.
func TestAuthenticatedPrometheus(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	prom := sandboxfixture.StartSecurePrometheus(t, sb.env)
	ns := sb.newNamespace(t, "promauth")
	sb.createDeployment(t, ns, healthyImage, 2)
	const forDur = 2 * time.Second
	target := map[string]any{"namespace": ns, "triggers": []map[string]any{
		{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "action": "page"},
		{"name": "always", "kind": "prometheus", "query": "vector(1)", "above": 0, "for": dur(forDur), "action": "page"},
	}}
	httpConfig := func(passwordFile string) map[string]any {
		return map[string]any{
			"basic_auth": map[string]any{"username": prom.User, "password_file": passwordFile},
			"tls_config": map[string]any{"ca_file": prom.CAFile},
		}
	}

	t.Run("right settings", func(t *testing.T) {
		t.Parallel()
		began := time.Now()
		defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
		d := startDaemon(t, sb, daemonSpec{PrometheusURL: prom.URL, PrometheusHTTPConfig: httpConfig(prom.PasswordFile), Target: target})
		d.watch(t, "always", 20*time.Second, stateIs("firing"))
		// The private Prometheus scrapes the simulator for the first time
		// about 5 s after it starts.
		d.watch(t, "error-rate", 40*time.Second, stateIs("ok"))
	})

	t.Run("wrong password", func(t *testing.T) {
		t.Parallel()
		began := time.Now()
		defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
		wrong := filepath.Join(t.TempDir(), "wrong-password")
		if err := os.WriteFile(wrong, []byte("not-the-password\n"), 0o600); err != nil {
			t.Fatal(err)
		}
		d := startDaemon(t, sb, daemonSpec{PrometheusURL: prom.URL, PrometheusHTTPConfig: httpConfig(wrong), Target: target})
		// Well past `for` plus a tick: a trigger that took the refusals
		// for breaches would have fired by now.
		watchFor := forDur + 6*time.Second
		start := time.Now()
		for _, name := range []string{"always", "error-rate"} {
			obs := d.watch(t, name, watchFor+10*time.Second, func(trigger.Status) bool { return time.Since(start) >= watchFor })
			for _, o := range obs {
				if st := o.Status.State.String(); st != "nodata" || !strings.Contains(o.Status.LastError, "unauthorized") {
					t.Errorf("%s at %s: state %s, error %q; want nodata with an unauthorized error", name, fmtTime(o.At), st, o.Status.LastError)
					break
				}
			}
		}
	})
}
