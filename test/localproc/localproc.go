// Package localproc holds what the tests and benchmarks need around the
// processes they start on this machine (a private Alertmanager, a
// Prometheus behind TLS): a free loopback address to give them and the
// end of their log for a failure message. It imports nothing of the
// project, so every test-support package can use it.
package localproc

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

// FreeLoopbackAddr picks a free port on 127.0.0.1. The port is released
// before the caller binds it; another process could take it in between,
// which then shows as a start failure naming the address.
func FreeLoopbackAddr() (string, error) {
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

// Tail returns the last n lines of path, indented, for failure messages.
func Tail(path string, n int) string {
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
