// Package alertmanager runs a private Alertmanager (Debian's
// prometheus-alertmanager, the sandbox's ALERTMANAGER_BIN) on a free
// loopback port, for the tests' fixture and for make bench: its own storage,
// no cluster gossip, stopped by its pid.
package alertmanager

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"time"

	"github.com/rollguard/rollguard/test/localproc"
)

// Process is a running Alertmanager.
type Process struct {
	// URL is its base URL, http://127.0.0.1:PORT.
	URL string
	// Log is the file its output goes to.
	Log  string
	cmd  *exec.Cmd
	done chan struct{}
}

// Start writes configYAML to dir, starts bin with it on a free 127.0.0.1
// port (storage under dir, no gossip listener, so parallel ones never find
// each other) and waits up to readyTimeout for /-/ready. On failure the
// process is stopped and the error carries the end of its log.
func Start(ctx context.Context, bin, dir, configYAML string, readyTimeout time.Duration) (*Process, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, fmt.Errorf("alertmanager: %w", err)
	}
	cfgPath := filepath.Join(dir, "alertmanager.yml")
	if err := os.WriteFile(cfgPath, []byte(configYAML), 0o600); err != nil {
		return nil, fmt.Errorf("alertmanager: write config: %w", err)
	}
	logPath := filepath.Join(dir, "alertmanager.log")
	logf, err := os.Create(logPath)
	if err != nil {
		return nil, fmt.Errorf("alertmanager: create log: %w", err)
	}
	addr, err := localproc.FreeLoopbackAddr()
	if err != nil {
		logf.Close()
		return nil, fmt.Errorf("alertmanager: %w", err)
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
		return nil, fmt.Errorf("alertmanager: start %s: %w", bin, err)
	}
	p := &Process{URL: "http://" + addr, Log: logPath, cmd: cmd, done: make(chan struct{})}
	go func() { _ = cmd.Wait(); logf.Close(); close(p.done) }()

	client := &http.Client{Timeout: 2 * time.Second}
	deadline := time.Now().Add(readyTimeout)
	var last string
	for {
		select {
		case <-p.done:
			return nil, fmt.Errorf("alertmanager exited while starting; log %s:\n%s", logPath, localproc.Tail(logPath, 20))
		default:
		}
		ready, status := getReady(ctx, client, p.URL+"/-/ready")
		if ready {
			return p, nil
		}
		last = status
		if time.Now().After(deadline) || ctx.Err() != nil {
			p.Stop()
			return nil, fmt.Errorf("alertmanager on %s not ready after %s (last: %s); log %s:\n%s", addr, readyTimeout, last, logPath, localproc.Tail(logPath, 20))
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// Stop ends the process: SIGTERM, then SIGKILL if it lingers 5 s.
func (p *Process) Stop() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-p.done:
	case <-time.After(5 * time.Second):
		_ = p.cmd.Process.Kill()
		<-p.done
	}
}

// Done is closed when the process has exited.
func (p *Process) Done() <-chan struct{} { return p.done }

// getReady reports whether url answers 200.
func getReady(ctx context.Context, client *http.Client, url string) (bool, string) {
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
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
