package sandboxfixture

import (
	"context"
	"testing"
	"time"

	"github.com/rollguard/rollguard/test/alertmanager"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// MinimalAlertmanagerConfig routes every alert to a receiver that sends
// nothing: enough for a test that only reads alerts back from the API.
const MinimalAlertmanagerConfig = `route:
  receiver: blackhole
  group_wait: 0s
  group_interval: 1s
  repeat_interval: 1h
receivers:
  - name: blackhole
`

// Alertmanager starts a private Alertmanager (the sandbox's
// ALERTMANAGER_BIN) with configYAML (MinimalAlertmanagerConfig when empty)
// on a free 127.0.0.1 port, with its own storage directory and no cluster
// gossip, waits until /-/ready answers, and stops it when the test ends. It
// returns the base URL (http://127.0.0.1:PORT). Each test gets its own, so
// alerts and silences never leak between tests.
func Alertmanager(t testing.TB, env sandboxenv.Env, configYAML string) string {
	t.Helper()
	bin := env.Get(t, "ALERTMANAGER_BIN")
	if configYAML == "" {
		configYAML = MinimalAlertmanagerConfig
	}
	p, err := alertmanager.Start(context.Background(), bin, t.TempDir(), configYAML, 15*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(p.Stop)
	return p.URL
}
