package sandboxfixture

import (
	"errors"
	"fmt"
	"net"
	"os"
	"strings"
)

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
