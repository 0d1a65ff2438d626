package prometheus

import (
	"context"
	"encoding/pem"
	"errors"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
)

const vectorOK = `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"x"},"value":[1,"1"]}]}}`

// basicAuthServer answers like Prometheus behind basic auth: 401 unless the
// request carries user and the password *pw holds at that moment.
func basicAuthServer(t *testing.T, user string, pw *string, tlsOn bool) *httptest.Server {
	t.Helper()
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		u, p, ok := r.BasicAuth()
		if !ok || u != user || p != *pw {
			w.Header().Set("WWW-Authenticate", "Basic")
			http.Error(w, "Unauthorized", http.StatusUnauthorized)
			return
		}
		if ua := r.Header.Get("User-Agent"); ua != ClientName {
			t.Errorf("User-Agent %q, want %q", ua, ClientName)
		}
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(vectorOK))
	})
	srv := httptest.NewUnstartedServer(h)
	// The handshake failures are the point of the tests: keep them out
	// of the output.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	if tlsOn {
		srv.StartTLS()
	} else {
		srv.Start()
	}
	t.Cleanup(srv.Close)
	return srv
}

func writeFile(t *testing.T, dir, name, content string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func sourceWith(t *testing.T, url string, hc commoncfg.HTTPClientConfig) *Source {
	t.Helper()
	s, err := New(Options{URL: url, Timeout: 5 * time.Second, HTTPConfig: &hc}, zap.NewNop())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

// The error of a refused or impossible connection says what is wrong, is
// ErrUnreachable (no data, never a breach) and never holds the password.
func TestQueryAuthAndTLSErrors(t *testing.T) {
	dir := t.TempDir()
	password := "right-horse-battery"
	plain := basicAuthServer(t, "rollguard", &password, false)
	secure := basicAuthServer(t, "rollguard", &password, true)
	caFile := writeFile(t, dir, "ca.crt", string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: secure.Certificate().Raw})))
	right := writeFile(t, dir, "right", password+"\n")
	wrong := writeFile(t, dir, "wrong", "wrong-password\n")
	auth := func(file string) *commoncfg.BasicAuth {
		return &commoncfg.BasicAuth{Username: "rollguard", PasswordFile: file}
	}
	withTLS := func(hc commoncfg.HTTPClientConfig, ca string) commoncfg.HTTPClientConfig {
		hc.TLSConfig = commoncfg.TLSConfig{CAFile: ca}
		return hc
	}
	def := commoncfg.DefaultHTTPClientConfig
	for _, tc := range []struct {
		name    string
		url     string
		hc      commoncfg.HTTPClientConfig
		wantErr error  // nil: the query succeeds
		wantMsg string // substring of the error
	}{
		{"right password", plain.URL, commoncfg.HTTPClientConfig{BasicAuth: auth(right)}, nil, ""},
		{"right password over TLS with the CA", secure.URL, withTLS(commoncfg.HTTPClientConfig{BasicAuth: auth(right)}, caFile), nil, ""},
		{"wrong password", plain.URL, commoncfg.HTTPClientConfig{BasicAuth: auth(wrong)}, source.ErrUnauthorized, "source unreachable: unauthorized: client_error: client error: 401"},
		{"no credentials", plain.URL, def, source.ErrUnauthorized, "unauthorized"},
		{"server certificate from an unknown CA", secure.URL, commoncfg.HTTPClientConfig{BasicAuth: auth(right)}, source.ErrTLS, "TLS handshake failed: tls: failed to verify certificate: x509: certificate signed by unknown authority"},
		{"plain HTTP to a TLS server", strings.Replace(secure.URL, "https://", "http://", 1), commoncfg.HTTPClientConfig{BasicAuth: auth(right)}, source.ErrTLS, "the server speaks HTTPS, use an https:// URL"},
		{"TLS to a plain HTTP server", strings.Replace(plain.URL, "http://", "https://", 1), withTLS(def, caFile), source.ErrTLS, "TLS handshake failed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := sourceWith(t, tc.url, tc.hc)
			got, err := s.Query(context.Background(), "up", time.Time{})
			if tc.wantErr == nil {
				if err != nil || len(got) != 1 {
					t.Fatalf("Query = %v, %v; want one series", got, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("Query succeeded, want %v", tc.wantErr)
			}
			if !errors.Is(err, tc.wantErr) || !errors.Is(err, source.ErrUnreachable) {
				t.Errorf("error %v: want %v and ErrUnreachable", err, tc.wantErr)
			}
			if errors.Is(err, source.ErrTimeout) || errors.Is(err, source.ErrBadQuery) {
				t.Errorf("error %v is also a timeout or a bad query", err)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("error %q, want it to contain %q", err, tc.wantMsg)
			}
			if strings.Contains(err.Error(), password) {
				t.Errorf("error holds the password: %v", err)
			}
		})
	}
}

// A rotated password file is read on the next request: no restart.
func TestQueryRereadsRotatedPasswordFile(t *testing.T) {
	dir := t.TempDir()
	password := "first"
	srv := basicAuthServer(t, "rollguard", &password, false)
	pwFile := writeFile(t, dir, "pw", "first")
	s := sourceWith(t, srv.URL, commoncfg.HTTPClientConfig{BasicAuth: &commoncfg.BasicAuth{Username: "rollguard", PasswordFile: pwFile}})
	if _, err := s.Query(context.Background(), "up", time.Time{}); err != nil {
		t.Fatalf("first password: %v", err)
	}
	password = "second" // the server rotates first
	if _, err := s.Query(context.Background(), "up", time.Time{}); !errors.Is(err, source.ErrUnauthorized) {
		t.Fatalf("server rotated, file not yet: %v, want unauthorized", err)
	}
	writeFile(t, dir, "pw", "second")
	if _, err := s.Query(context.Background(), "up", time.Time{}); err != nil {
		t.Fatalf("after the file rotated: %v", err)
	}
}

func TestNewHTTPConfigErrors(t *testing.T) {
	missing := filepath.Join(t.TempDir(), "missing.crt")
	_, err := New(Options{URL: "https://prometheus:9090", HTTPConfig: &commoncfg.HTTPClientConfig{TLSConfig: commoncfg.TLSConfig{CAFile: missing}}}, zap.NewNop())
	if err == nil || !strings.Contains(err.Error(), missing) {
		t.Errorf("unreadable CA file: %v, want an error naming %s", err, missing)
	}
	_, err = New(Options{URL: "http://prometheus:9090", HTTPConfig: &commoncfg.HTTPClientConfig{}, RoundTripper: http.DefaultTransport}, zap.NewNop())
	if err == nil || err.Error() != "prometheus source: HTTPConfig and RoundTripper are mutually exclusive" {
		t.Errorf("both: %v", err)
	}
}
