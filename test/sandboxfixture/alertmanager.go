package sandboxfixture

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

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
	dir := t.TempDir()
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(configYAML), 0o600); err != nil {
		t.Fatalf("alertmanager: write config: %v", err)
	}
	logPath := filepath.Join(dir, "alertmanager.log")
	logf, err := os.Create(logPath)
	if err != nil {
		t.Fatalf("alertmanager: create log: %v", err)
	}
	addr, err := freeLoopbackAddr()
	if err != nil {
		logf.Close()
		t.Fatalf("alertmanager: %v", err)
	}
	cmd := exec.Command(bin,
		"--config.file="+cfgPath,
		"--storage.path="+filepath.Join(dir, "data"),
		"--web.listen-address="+addr,
		// Empty: no gossip listener, so parallel Alertmanagers never find
		// each other and no extra port is taken.
		"--cluster.listen-address=",
		"--log.level=warn",
	)
	cmd.Stdout, cmd.Stderr = logf, logf
	if err := cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("alertmanager: start %s: %v", bin, err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); logf.Close(); close(done) }()
	t.Cleanup(func() {
		select {
		case <-done:
			return
		default:
		}
		// Our own child, by its pid: SIGTERM, then SIGKILL if it lingers.
		_ = cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-done:
		case <-time.After(5 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})

	base := "http://" + addr
	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(15 * time.Second)
	var last string
	for {
		select {
		case <-done:
			t.Fatalf("alertmanager exited while starting; log %s:\n%s", logPath, tailFile(logPath, 20))
		default:
		}
		ready, status := getReady(client, base+"/-/ready")
		if ready {
			return base
		}
		last = status
		if time.Now().After(deadline) {
			t.Fatalf("alertmanager on %s not ready after 15s (last: %s); log %s:\n%s", addr, last, logPath, tailFile(logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// getReady reports whether url answers 200.
func getReady(client *http.Client, url string) (bool, string) {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return false, err.Error()
	}
	resp, err := client.Do(req)
	if err != nil {
		return false, err.Error()
	}
	resp.Body.Close()
	return resp.StatusCode == http.StatusOK, resp.Status
}

// freeLoopbackAddr picks a free port on 127.0.0.1. The port is released
// before the caller binds it; another process could take it in between,
// which then shows as a start failure naming the address.
func freeLoopbackAddr() (string, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return "", fmt.Errorf("pick a free port on 127.0.0.1: %w", err)
	}
	addr := l.Addr().String()
	if err := l.Close(); err != nil && !errors.Is(err, net.ErrClosed) {
		return "", fmt.Errorf("release %s: %w", addr, err)
	}
	return addr, nil
}

// tailFile returns the last n lines of path, indented, for failure messages.
func tailFile(path string, n int) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return "    (" + err.Error() + ")"
	}
	lines := strings.Split(strings.TrimRight(string(b), "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return "    " + strings.Join(lines, "\n    ")
}
