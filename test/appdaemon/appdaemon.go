// Package appdaemon runs the rollguard daemon (app.Run, what `rollguard
// run` runs) inside the test's process against the sandbox, for suites
// that drive it through its HTTP API and need no second process.
package appdaemon

import (
	"context"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// stopTimeout bounds how long app.Run may take to return after cancel.
const stopTimeout = 20 * time.Second

// Daemon is one app.Run in this process.
type Daemon struct {
	// URL is http:// and the config's listen address.
	URL  string
	Logs *localproc.LogBuffer
}

// Start runs app.Run on configFile, which listens on listen, as identity
// and waits until it serves /healthz. Cleanup stops it and fails the test
// if Run returned an error; the last logTail lines of its log are printed
// when the test failed.
func Start(t *testing.T, configFile, listen, identity string, logTail int) *Daemon {
	t.Helper()
	d := &Daemon{URL: "http://" + listen, Logs: &localproc.LogBuffer{}}
	errc := make(chan error, 1)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		errc <- app.Run(ctx, app.Options{ConfigFile: configFile, LogOutput: d.Logs, Identity: identity, ShutdownTimeout: 5 * time.Second})
	}()
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-errc:
			if err != nil {
				t.Errorf("app.Run returned %v", err)
			}
		case <-time.After(stopTimeout):
			t.Errorf("app.Run did not return within %v of cancel", stopTimeout)
		}
		if t.Failed() {
			lines := d.Logs.Last(logTail)
			t.Logf("daemon log (last %d lines):\n%s", len(lines), strings.Join(lines, "\n"))
		}
	})
	sandboxfixture.WaitFor(t, "daemon /healthz on "+listen, 20*time.Second, 50*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		select {
		case err := <-errc:
			errc <- err // for the cleanup
			t.Fatalf("app.Run returned before serving: %v", err)
		default:
		}
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, d.URL+"/healthz", nil)
		if err != nil {
			return false, "", err
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			return false, "", err
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK, resp.Status, nil
	})
	return d
}
