// Package localproc holds what the tests and benchmarks need around the
// processes they start on this machine (a private Alertmanager, a
// Prometheus behind TLS, a rollguard daemon): a free loopback address to
// give them, a buffer that keeps their log while they run, and the end of
// that log for a failure message. It imports nothing of the project, so
// every test-support package can use it.
package localproc

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
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

// FreePort is the port of FreeLoopbackAddr, for callers that build the
// address (or a URL) themselves.
func FreePort() (int, error) {
	addr, err := FreeLoopbackAddr()
	if err != nil {
		return 0, err
	}
	_, port, err := net.SplitHostPort(addr)
	if err != nil {
		return 0, fmt.Errorf("free address %s: %w", addr, err)
	}
	n, err := strconv.Atoi(port)
	if err != nil {
		return 0, fmt.Errorf("free address %s: port: %w", addr, err)
	}
	return n, nil
}

// LogBuffer keeps what a process (or a daemon run in the test's process)
// logs, for assertions on its lines and for failure reports. It is safe
// for concurrent writes and reads.
type LogBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *LogBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.Write(p)
}

// String is everything logged so far.
func (l *LogBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// Lines is everything logged so far, a line an element.
func (l *LogBuffer) Lines() []string {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []string
	sc := bufio.NewScanner(bytes.NewReader(l.buf.Bytes()))
	sc.Buffer(make([]byte, 0, 64<<10), 1<<20)
	for sc.Scan() {
		out = append(out, sc.Text())
	}
	return out
}

// Last is the last n lines logged so far.
func (l *LogBuffer) Last(n int) []string {
	lines := l.Lines()
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return lines
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
