package ha

import (
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/test/inbox"
)

const reloadMetric = "rollguard_config_last_reload_successful"

// TestReloadKeepsRunning: a reload with invalid YAML is refused (400 with
// the error) and the daemon keeps evaluating on the old config with its
// trigger state; a valid reload that changes one trigger's threshold keeps
// the window of the unchanged trigger.
func TestReloadKeepsRunning(t *testing.T) {
	t.Parallel()
	h := newHarness(t, "reload")
	h.createDeployment(deployName, goodImage)
	latency := func(above float64) map[string]any {
		return map[string]any{"name": "latency-p99", "kind": "latencyP99", "above": above, "for": "120s", "action": "page"}
	}
	// Windows far longer than the test: the error-rate trigger stays
	// pending throughout, so its breachStart is the state to keep.
	cfg := func(above float64) daemonConfig {
		return daemonConfig{targets: []target{{name: deployName, deployment: deployName, window: "120s",
			extra: []map[string]any{latency(above)}}}}
	}
	dir := t.TempDir()
	path := h.writeConfig(dir, cfg(5))
	d := h.startDaemon(path, "rollguard-reload")
	h.deploy(deployName, badImage, "")

	pending := func() statusTrigger {
		t.Helper()
		st, err := triggerStatus(d.status(), deployName, "error-rate")
		if err != nil {
			t.Fatal(err)
		}
		return st
	}
	var before statusTrigger
	eventually(t, "error-rate pending", 30*time.Second, func() (bool, string) {
		before = pending()
		return before.State == "pending", fmt.Sprintf("%+v", before)
	})
	if v := d.metric(reloadMetric); v != "1" {
		t.Fatalf("%s = %q at start, want 1", reloadMetric, v)
	}
	hash := d.status().ConfigHash

	if err := os.WriteFile(path, []byte("global:\n  interval: [1s\ntargets: {\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	code, b := d.call(http.MethodPost, "/-/reload", apiToken, nil)
	if code != http.StatusBadRequest || !strings.Contains(string(b), `"error"`) || !strings.Contains(string(b), filepath.Base(path)) {
		t.Errorf("reload of invalid YAML = %d %s, want 400 with the error naming the file", code, b)
	}
	if v := d.metric(reloadMetric); v != "0" {
		t.Errorf("%s = %q after the bad reload, want 0", reloadMetric, v)
	}
	// Still evaluating on the old config: new samples, same run.
	eventually(t, "evaluation goes on after the bad reload", 10*time.Second, func() (bool, string) {
		now := pending()
		return now.State == "pending" && now.LastSample.After(before.LastSample.Add(2*interval)), fmt.Sprintf("%+v", now)
	})
	if now := pending(); !now.BreachStart.Equal(before.BreachStart) {
		t.Errorf("breachStart %s after the bad reload, want %s", now.BreachStart, before.BreachStart)
	}
	if s := d.status(); s.ConfigHash != hash {
		t.Errorf("config hash %s after a refused reload, want %s", s.ConfigHash, hash)
	}

	// A valid change of the other trigger's threshold.
	if err := os.WriteFile(path, h.configYAML(dir, cfg(4)), 0o600); err != nil {
		t.Fatal(err)
	}
	if code, b := d.call(http.MethodPost, "/-/reload", apiToken, nil); code != http.StatusOK {
		t.Fatalf("valid reload = %d %s", code, b)
	}
	if v := d.metric(reloadMetric); v != "1" {
		t.Errorf("%s = %q after the valid reload, want 1", reloadMetric, v)
	}
	s := d.status()
	if s.ConfigHash == hash {
		t.Errorf("config hash unchanged after a valid reload")
	}
	for _, tr := range s.Triggers {
		if tr.Trigger == "latency-p99" && tr.Threshold != 4 {
			t.Errorf("latency-p99 threshold %v after the reload, want 4", tr.Threshold)
		}
	}
	time.Sleep(2 * interval)
	if now := pending(); now.State != "pending" || !now.BreachStart.Equal(before.BreachStart) {
		t.Errorf("error-rate %s since %s after the valid reload, want pending since %s (window kept)", now.State, now.BreachStart, before.BreachStart)
	}
	select {
	case <-d.exited:
		t.Errorf("daemon exited: %v", d.exitErr)
	default:
	}
}

// TestRestartMidBreachRebuildsWindow stops the daemon (SIGTERM) while a
// trigger is pending and starts a new one at once: the new one rebuilds the
// window from Prometheus and fires at breachStart + for, not at
// restart + for.
func TestRestartMidBreachRebuildsWindow(t *testing.T) {
	t.Parallel()
	const window = 10 * time.Second
	h := newHarness(t, "restart")
	h.createDeployment(deployName, goodImage)
	path := h.writeConfig(t.TempDir(), daemonConfig{targets: []target{{name: deployName, deployment: deployName, window: window.String()}}})
	first := h.startDaemon(path, "rollguard-1")
	h.deploy(deployName, badImage, "")

	var breach statusTrigger
	eventually(t, "error-rate pending", 30*time.Second, func() (bool, string) {
		st, err := triggerStatus(first.status(), deployName, "error-rate")
		breach = st
		return err == nil && st.State == "pending", fmt.Sprintf("%+v %v", st, err)
	})
	// Well into the window, well before its end.
	time.Sleep(time.Until(breach.BreachStart.Add(5 * time.Second)))
	first.stop(syscall.SIGTERM, 10*time.Second)
	restart := time.Now()
	if n := len(first.logLines("trigger fired")); n != 0 {
		t.Fatalf("the first daemon fired before the restart")
	}
	second := h.startDaemon(path, "rollguard-2")
	t.Logf("breach started %s; restarted %.1fs later", breach.BreachStart.Format(time.StampMilli), restart.Sub(breach.BreachStart).Seconds())

	var detected inbox.PagerDutyEvent
	eventually(t, "the second daemon fires", 30*time.Second, func() (bool, string) {
		es := h.events("detected")
		if len(es) > 0 {
			detected = es[0]
		}
		return len(es) > 0, fmt.Sprint(h.summaries(h.events("")))
	})
	fired := detected.Payload.Timestamp
	want := breach.BreachStart.Add(window)
	t.Logf("fired at %s: %+.2fs from breachStart + for (%s), %+.2fs from restart + for",
		fired.Format(time.StampMilli), fired.Sub(want).Seconds(), want.Format(time.StampMilli), fired.Sub(restart.Add(window)).Seconds())
	// The first daemon located the breach between two instants of its
	// 1 s grid; the second rebuilt the window from history on the grid,
	// so its run may start up to one resolution later.
	if tol := interval + 2*time.Second; fired.Sub(want) < -tol || fired.Sub(want) > tol {
		t.Errorf("fired %+.2fs from breachStart + for, want within ±%s", fired.Sub(want).Seconds(), tol)
	}
	rebuilt := second.logLines("windows rebuilt from Prometheus history")
	if len(rebuilt) != 1 || rebuilt[0]["seeded"] != float64(1) {
		t.Errorf("window rebuild: %v, want one trigger seeded", rebuilt)
	}
	// Let the rollback finish so the shutdown at cleanup is not mid-plan.
	h.waitJournal(deployName, 60*time.Second, rollback.RunSucceeded)
}
