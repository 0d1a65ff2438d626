// Package gitserver serves a Git repository over HTTP on 127.0.0.1 for
// tests: git's own smart-HTTP server (`git http-backend`) behind a CGI
// handler, the way a real Git host answers Flux's source-controller. Commits
// are made with the git command line in a work tree and pushed to the
// served bare repository.
package gitserver

import (
	"context"
	"net/http/cgi"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Server is one served repository.
type Server struct {
	// URL is the repository's clone URL.
	URL  string
	bare string
	work string
}

// Branch is the branch commits go to.
const Branch = "main"

// Start creates an empty repository and serves it until the test ends.
func Start(t testing.TB) *Server {
	t.Helper()
	root := t.TempDir()
	s := &Server{bare: filepath.Join(root, "repo.git"), work: filepath.Join(root, "work")}
	git(t, root, "init", "--quiet", "--bare", "--initial-branch="+Branch, s.bare)
	git(t, root, "init", "--quiet", "--initial-branch="+Branch, s.work)
	git(t, s.work, "remote", "add", "origin", s.bare)
	execPath := strings.TrimSpace(git(t, root, "--exec-path"))
	h := &cgi.Handler{
		Path: filepath.Join(execPath, "git-http-backend"),
		Root: "/",
		Env:  []string{"GIT_PROJECT_ROOT=" + root, "GIT_HTTP_EXPORT_ALL=1"},
	}
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	s.URL = srv.URL + "/repo.git"
	return s
}

// Commit writes files (path → content; an empty content removes the file)
// in the work tree, commits and pushes them, and returns the commit's
// hash.
func (s *Server) Commit(t testing.TB, msg string, files map[string]string) string {
	t.Helper()
	for p, content := range files {
		full := filepath.Join(s.work, p)
		if content == "" {
			_ = os.Remove(full)
			continue
		}
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatalf("gitserver: %v", err)
		}
		if err := os.WriteFile(full, []byte(content), 0o644); err != nil {
			t.Fatalf("gitserver: %v", err)
		}
	}
	git(t, s.work, "add", "--all")
	git(t, s.work, "-c", "user.name=rollguard test", "-c", "user.email=test@rollguard.invalid", "commit", "--quiet", "--allow-empty", "-m", msg)
	git(t, s.work, "push", "--quiet", "origin", Branch)
	return strings.TrimSpace(git(t, s.work, "rev-parse", "HEAD"))
}

func git(t testing.TB, dir string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, "git", args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "GIT_CONFIG_NOSYSTEM=1", "HOME="+dir)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("git %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return string(out)
}
