package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rollguard/rollguard/pkg/config"
)

// A reload that changes how Prometheus or a notifier is reached is refused
// (they are built once); the same settings, re-read from the file, are not
// a change even though they hold pointers and maps.
func TestReloadRestartOnlyHTTPSettings(t *testing.T) {
	dir := t.TempDir()
	load := func(httpConfig, notify string) *config.Config {
		t.Helper()
		doc := `global:
  prometheus:
    url: https://prometheus:9090
    httpConfig:
` + httpConfig + `
  notify:
    incidentDir: ` + dir + `
` + notify + `
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers: [{name: errors, kind: errorRate, above: 0.05}]
`
		p := filepath.Join(dir, "rollguard.yaml")
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		cfg, err := config.LoadFile(p)
		if err != nil {
			t.Fatal(err)
		}
		return cfg
	}
	const auth = "      basic_auth: {username: rollguard, password_file: pw}\n      http_headers: {X-Scope-OrgID: {values: [a]}}"
	const hooks = "    webhooks: [{name: t, url: 'https://t.example/h', httpConfig: {authorization: {credentials_file: tok}}}]\n    alertmanager: {urls: ['http://am:9093'], labels: {team: x}}"
	d := &daemon{cfg: load(auth, hooks)}

	if err := d.checkRestartOnly(load(auth, hooks)); err != nil {
		t.Errorf("the same file again: %v", err)
	}
	for _, tc := range []struct {
		name, httpConfig, notify, want string
	}{
		{"another user", strings.Replace(auth, "username: rollguard", "username: other", 1), hooks, "[global.prometheus] changed"},
		{"another header value", strings.Replace(auth, "values: [a]", "values: [b]", 1), hooks, "[global.prometheus] changed"},
		{"another webhook token file", auth, strings.Replace(hooks, "credentials_file: tok", "credentials_file: tok2", 1), "[global.notify] changed"},
		{"another alertmanager label", auth, strings.Replace(hooks, "team: x", "team: y", 1), "[global.notify] changed"},
	} {
		err := d.checkRestartOnly(load(tc.httpConfig, tc.notify))
		if err == nil || !strings.HasPrefix(err.Error(), tc.want) {
			t.Errorf("%s: %v, want %s ...", tc.name, err, tc.want)
		}
	}
}
