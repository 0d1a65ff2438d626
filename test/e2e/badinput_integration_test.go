package e2e

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/app"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// blackhole accepts TCP connections and never answers: a host that is
// reachable but dead (a hung server, a firewall that accepts). It closes at
// cleanup.
func blackhole(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestStartsBlindWithSourcesUnreachable starts the daemon with its
// Prometheus and PostgreSQL unreachable: it serves, /healthz is 200,
// /readyz is 503 and says which source has not answered and why, every
// trigger is nodata with the error, and nothing fires, not even the
// connections trigger with onError: breach (an unreachable database says
// nothing about the Deployment).
func TestStartsBlindWithSourcesUnreachable(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	cases := []struct {
		name string
		addr func(t *testing.T) string
		// why must appear in /readyz's reason.
		why string
	}{
		{name: "connection refused", addr: func(t *testing.T) string { return sandboxfixture.FreeAddr(t) }, why: "connection refused"},
		{name: "accepts and never answers", addr: blackhole, why: "deadline exceeded"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			began := time.Now()
			defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
			const forDur = 2 * time.Second // a breach would fire within seconds
			ib := sb.newInbox(t, "unreachable")
			d := startDaemon(t, sb, daemonSpec{
				PrometheusURL: "http://" + tc.addr(t),
				Databases:     map[string]string{"primary": "postgres://rollguard:rollguard@" + tc.addr(t) + "/pggit?sslmode=disable"},
				Inbox:         &ib,
				BlindAfter:    time.Minute,
				Target: map[string]any{"namespace": "e2e-unreachable-" + sandboxfixture.RandomHex(t, 3), "triggers": []map[string]any{
					{"name": "error-rate", "kind": "errorRate", "above": 0.05, "minRate": 1, "for": dur(forDur), "action": "rollback"},
					{"name": "latency-p99", "kind": "latencyP99", "above": 5, "for": dur(forDur), "action": "rollback"},
					{"name": "connections", "kind": "connections", "database": "primary", "above": 0.95, "onError": "breach", "for": dur(forDur), "action": "page"},
				}},
			})
			if code, body, err := httpGet(d.url + "/healthz"); err != nil || code != http.StatusOK || body != "ok\n" {
				t.Errorf("/healthz = %d %q (%v), want 200 ok", code, body, err)
			}
			var reason string
			sandboxfixture.WaitFor(t, "/readyz says why it is not ready", 15*time.Second, 200*time.Millisecond, func(context.Context) (bool, string, error) {
				code, body, err := httpGet(d.url + "/readyz")
				if err != nil {
					return false, "", err
				}
				reason = body
				if code != http.StatusServiceUnavailable {
					return false, fmt.Sprintf("%d %s", code, body), fmt.Errorf("/readyz answered %d, want 503", code)
				}
				return strings.Contains(body, "has not answered yet") && strings.Contains(body, tc.why), body, nil
			})
			if !strings.Contains(reason, `backend \"prometheus\"`) && !strings.Contains(reason, `backend \"postgres:primary\"`) {
				t.Errorf("/readyz reason names no backend: %s", reason)
			}

			// Well past `for` plus a tick: a trigger that took the errors for
			// breaches would have fired by now.
			watchFor := forDur + 6*time.Second
			start := time.Now()
			for _, name := range []string{"error-rate", "latency-p99", "connections"} {
				obs := d.watch(t, name, watchFor+10*time.Second, func(trigger.Status) bool { return time.Since(start) >= watchFor })
				for _, o := range obs {
					if st := o.Status.State.String(); st != "nodata" || o.Status.LastError == "" {
						t.Errorf("%s at %s: state %s, error %q; want nodata with the source's error", name, fmtTime(o.At), st, o.Status.LastError)
						break
					}
				}
			}
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			evs, err := ib.PagerDuty(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 0 {
				t.Errorf("pagerduty got %d events, want none: %+v", len(evs), evs)
			}
			if code, _, _ := httpGet(d.url + "/readyz"); code != http.StatusServiceUnavailable {
				t.Errorf("/readyz = %d after %v with every source down, want 503", code, watchFor)
			}
		})
	}
}

// TestInvalidConfigRefused: app.Run returns config.ErrInvalid for a config
// that is not valid, at once and without serving.
func TestInvalidConfigRefused(t *testing.T) {
	sb := newSandbox(t)
	t.Parallel()
	cases := []struct {
		name string
		// config turns a valid config into the invalid one.
		config func(valid string) string
		// want is in the error.
		want string
	}{
		{name: "not YAML", config: func(v string) string { return v + "\n  targets: [oops\n\t- {\n" }, want: "yaml"},
		{name: "unknown field", config: func(v string) string {
			return strings.Replace(v, "global:\n", "global:\n    intervall: 1s\n", 1)
		}, want: "intervall"},
		{name: "invalid value", config: func(v string) string {
			return strings.Replace(v, "interval: 1s", "interval: -1s", 1)
		}, want: "interval"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			path, listen := writeConfig(t, sb, dir, daemonSpec{PrometheusURL: sb.promURL, Target: map[string]any{
				"namespace": "e2e-invalid", "triggers": []map[string]any{{"name": "error-rate", "kind": "errorRate", "above": 0.05}},
			}})
			valid, err := os.ReadFile(path)
			if err != nil {
				t.Fatal(err)
			}
			if !strings.Contains(string(valid), "global:\n") || !strings.Contains(string(valid), "interval: 1s") {
				t.Fatalf("generated config changed shape:\n%s", valid)
			}
			if err := os.WriteFile(path, []byte(tc.config(string(valid))), 0o600); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
			defer cancel()
			errc := make(chan error, 1)
			go func() {
				errc <- app.Run(ctx, app.Options{ConfigFile: path, LogOutput: &localproc.LogBuffer{}, Identity: "e2e-invalid"})
			}()
			select {
			case err = <-errc:
			case <-time.After(10 * time.Second):
				cancel()
				t.Fatalf("app.Run still running 10s after start with an invalid config (serving %s?)", listen)
			}
			if !errors.Is(err, config.ErrInvalid) {
				t.Fatalf("app.Run = %v, want an error matching config.ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), filepath.Base(path)) {
				t.Errorf("error %q does not name %q and the file", err, tc.want)
			}
			if c, err := net.DialTimeout("tcp", listen, time.Second); err == nil {
				c.Close()
				t.Errorf("something listens on %s: an invalid config must not serve", listen)
			}
			t.Logf("refused: %v", err)
		})
	}
}
