package sandboxfixture

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"syscall"
	"testing"
	"time"
)

// OwnPrometheus is a Prometheus of one test's own, from the sandbox's
// binary, so the test can kill it or change its web config without
// touching the shared one.
type OwnPrometheus struct {
	// Addr is its free loopback listen address.
	Addr string
	// LogPath is its log file, for failure messages.
	LogPath string
	cmd     *exec.Cmd
	done    chan struct{}
}

// SimulatorScrapeConfig is a prometheus.yml that scrapes the pggit-api
// simulator at simHost every second, keeping the namespace and deployment
// labels of its series.
func SimulatorScrapeConfig(simHost string) string {
	return fmt.Sprintf(`global:
  scrape_interval: 1s
  scrape_timeout: 1s
  evaluation_interval: 1s
scrape_configs:
  - job_name: pggit-api
    honor_labels: true
    static_configs:
      - targets: [%q]
`, simHost)
}

// StartOwnPrometheus runs bin with config (the content of prometheus.yml)
// and flags, its data and log in dir. Cleanup stops it: SIGTERM, and a
// kill after 5 s.
func StartOwnPrometheus(t testing.TB, bin, dir, config string, flags ...string) *OwnPrometheus {
	t.Helper()
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(config), 0o600); err != nil {
		t.Fatal(err)
	}
	p := &OwnPrometheus{Addr: FreeAddr(t), LogPath: filepath.Join(dir, "prometheus.log"), done: make(chan struct{})}
	logf, err := os.Create(p.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	args := append([]string{"--config.file=" + cfgPath, "--storage.tsdb.path=" + filepath.Join(dir, "data"),
		"--web.listen-address=" + p.Addr, "--log.level=warn"}, flags...)
	p.cmd = exec.Command(bin, args...)
	p.cmd.Stdout, p.cmd.Stderr = logf, logf
	if err := p.cmd.Start(); err != nil {
		logf.Close()
		t.Fatalf("start prometheus: %v", err)
	}
	go func() { _ = p.cmd.Wait(); logf.Close(); close(p.done) }()
	t.Cleanup(func() {
		select {
		case <-p.done:
			return
		default:
		}
		_ = p.cmd.Process.Signal(syscall.SIGTERM) // our own child, by its pid
		select {
		case <-p.done:
		case <-time.After(5 * time.Second):
			p.Kill()
		}
	})
	return p
}

// Exited is closed when the process has exited.
func (p *OwnPrometheus) Exited() <-chan struct{} { return p.done }

// Kill kills the process (our own child, by its pid) and waits for it.
func (p *OwnPrometheus) Kill() {
	select {
	case <-p.done:
		return
	default:
	}
	_ = p.cmd.Process.Kill()
	<-p.done
}
