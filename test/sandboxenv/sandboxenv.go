// Package sandboxenv gives integration tests the addresses of the local
// sandbox (test/sandbox/up writes them to an env file).
//
// A test that needs the sandbox calls Load. When the env file is absent the
// test is skipped with a clear message, unless CI is set: on CI a missing
// sandbox is a failure, never a silent skip.
package sandboxenv

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// Env holds the sandbox's KEY=VALUE pairs.
type Env map[string]string

// Get returns the value of key, failing the test when it is missing.
func (e Env) Get(t testing.TB, key string) string {
	t.Helper()
	v, ok := e[key]
	if !ok || v == "" {
		t.Fatalf("sandbox env: %s is not set (see test/sandbox/.state/env)", key)
	}
	return v
}

// Path is the env file: $ROLLGUARD_SANDBOX_ENV, or test/sandbox/.state/env
// in this repository.
func Path() string {
	if p := os.Getenv("ROLLGUARD_SANDBOX_ENV"); p != "" {
		return p
	}
	_, file, _, _ := runtime.Caller(0)
	return filepath.Join(filepath.Dir(file), "..", "sandbox", ".state", "env")
}

// Load reads the env file, skipping (or failing on CI) when it is absent.
func Load(t testing.TB) Env {
	t.Helper()
	p := Path()
	env, err := Read(p)
	if err != nil {
		if os.IsNotExist(err) && os.Getenv("CI") == "" {
			t.Skipf("sandbox not running (%s missing): run `make sandbox-up` first", p)
		}
		t.Fatalf("sandbox env: %v", err)
	}
	return env
}

// Read parses an env file of KEY=VALUE lines; blank lines and # comments
// are ignored, and values may be single- or double-quoted.
func Read(path string) (Env, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	env := Env{}
	sc := bufio.NewScanner(f)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			return nil, fmt.Errorf("%s:%d: want KEY=VALUE, got %q", path, n, line)
		}
		if len(v) >= 2 && (v[0] == '"' || v[0] == '\'') && v[len(v)-1] == v[0] {
			v = v[1 : len(v)-1]
		}
		env[strings.TrimSpace(k)] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return env, nil
}
