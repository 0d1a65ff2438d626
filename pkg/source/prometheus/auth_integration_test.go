package prometheus

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// configSource builds a Source the way the daemon does: a config file
// through pkg/config (strict decoding, secret files checked), then New with
// its global.prometheus.
func configSource(t *testing.T, url, httpConfig string) *Source {
	t.Helper()
	dir := t.TempDir()
	doc := fmt.Sprintf(`global:
  prometheus:
    url: %s
    timeout: 5s
    httpConfig:
%s
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers:
      - {name: errors, kind: errorRate, above: 0.05}
`, url, indent(httpConfig, "      "))
	path := filepath.Join(dir, "rollguard.yaml")
	if err := os.WriteFile(path, []byte(doc), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := config.LoadFile(path)
	if err != nil {
		t.Fatalf("config: %v", err)
	}
	if err := cfg.ResolveSecrets(); err != nil {
		t.Fatalf("config secrets: %v", err)
	}
	p := cfg.Global.Prometheus
	s, err := New(Options{URL: p.URL, Timeout: time.Duration(p.Timeout), HTTPConfig: &p.HTTPConfig}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func indent(s, pre string) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	for i, l := range lines {
		lines[i] = pre + l
	}
	return strings.Join(lines, "\n")
}

// TestIntegrationAuthenticatedPrometheus runs the real Prometheus behind its
// own web config (TLS and basic auth): the right settings reach it, wrong
// ones fail with an error that says unauthorized or TLS and is
// ErrUnreachable (the evaluator's no data, never a breach), and rotating
// the password (server and file) needs no new Source.
func TestIntegrationAuthenticatedPrometheus(t *testing.T) {
	env := sandboxenv.Load(t)
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	prom := sandboxfixture.StartSecurePrometheus(t, env)
	other := sandboxfixture.StartSecurePrometheus(t, env) // its CA is not prom's
	wrongPW := filepath.Join(t.TempDir(), "wrong")
	if err := os.WriteFile(wrongPW, []byte("not-the-password\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	right := fmt.Sprintf("basic_auth: {username: %s, password_file: %s}\ntls_config: {ca_file: %s}", prom.User, prom.PasswordFile, prom.CAFile)
	query := func(s *Source) ([]source.Series, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		return s.Query(ctx, "vector(1)", time.Time{})
	}

	good := configSource(t, prom.URL, right)
	if got, err := query(good); err != nil || len(got) != 1 || got[0].Value != 1 {
		t.Fatalf("right settings: %v, %v; want one sample 1", got, err)
	}

	for _, tc := range []struct {
		name, url, httpConfig string
		want                  error
		msg                   string
	}{
		{"wrong password", prom.URL, fmt.Sprintf("basic_auth: {username: %s, password_file: %s}\ntls_config: {ca_file: %s}", prom.User, wrongPW, prom.CAFile),
			source.ErrUnauthorized, "unauthorized: client_error: client error: 401"},
		{"no credentials", prom.URL, fmt.Sprintf("tls_config: {ca_file: %s}", prom.CAFile), source.ErrUnauthorized, "unauthorized"},
		{"system CAs only", prom.URL, fmt.Sprintf("basic_auth: {username: %s, password_file: %s}", prom.User, prom.PasswordFile),
			source.ErrTLS, "TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{"another CA", prom.URL, fmt.Sprintf("basic_auth: {username: %s, password_file: %s}\ntls_config: {ca_file: %s}", prom.User, prom.PasswordFile, other.CAFile),
			source.ErrTLS, "x509: certificate signed by unknown authority"},
		{"wrong server name", prom.URL, fmt.Sprintf("basic_auth: {username: %s, password_file: %s}\ntls_config: {ca_file: %s, server_name: prometheus.example}", prom.User, prom.PasswordFile, prom.CAFile),
			source.ErrTLS, "x509: certificate is valid for localhost, not prometheus.example"},
		{"plain http", strings.Replace(prom.URL, "https://", "http://", 1), right, source.ErrTLS, "the server speaks HTTPS, use an https:// URL"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := query(configSource(t, tc.url, tc.httpConfig))
			if !errors.Is(err, tc.want) || !errors.Is(err, source.ErrUnreachable) {
				t.Fatalf("error %v, want %v and ErrUnreachable", err, tc.want)
			}
			if !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q, want it to contain %q", err, tc.msg)
			}
		})
	}

	t.Run("rotation", func(t *testing.T) {
		prom.SetServerPassword(t, "second-password")
		if _, err := query(good); !errors.Is(err, source.ErrUnauthorized) {
			t.Fatalf("server rotated, file not yet: %v, want unauthorized", err)
		}
		prom.SetPassword(t, "second-password")
		if got, err := query(good); err != nil || len(got) != 1 {
			t.Fatalf("after the password file rotated too: %v, %v", got, err)
		}
	})
}
