package sandboxfixture

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/rollguard/rollguard/test/sandboxenv"

	"github.com/rollguard/rollguard/test/localproc"
)

// SecurePrometheus is a private Prometheus (the sandbox's PROMETHEUS_BIN)
// behind its own --web.config.file: TLS with a certificate of a CA of the
// test's own, and HTTP basic auth. It scrapes the sandbox's simulator every
// second, so queries about pggit-api return data.
type SecurePrometheus struct {
	// URL is https://127.0.0.1:PORT.
	URL string
	// CAFile verifies the server's certificate (for tls_config.ca_file).
	CAFile string
	// User is the basic auth user; PasswordFile holds its password (for
	// basic_auth.password_file).
	User, PasswordFile string

	dir     string
	webFile string
	cert    string
	key     string
}

// StartSecurePrometheus starts a SecurePrometheus and waits until it
// answers an authenticated /-/ready over TLS; it is stopped when the test
// ends.
func StartSecurePrometheus(t testing.TB, env sandboxenv.Env) *SecurePrometheus {
	t.Helper()
	bin := env.Get(t, "PROMETHEUS_BIN")
	simHost := strings.TrimPrefix(env.Get(t, "SIM_URL"), "http://")
	dir := t.TempDir()
	p := &SecurePrometheus{User: "rollguard", dir: dir, webFile: filepath.Join(dir, "web.yml")}
	p.CAFile, p.cert, p.key = writeServerPKI(t, dir)
	p.PasswordFile = filepath.Join(dir, "password")
	p.SetPassword(t, "first-"+RandomHex(t, 6))

	prom := StartOwnPrometheus(t, bin, dir, SimulatorScrapeConfig(simHost), "--web.config.file="+p.webFile)
	addr, logPath, done := prom.Addr, prom.LogPath, prom.Exited()
	p.URL = "https://" + addr

	client := p.Client(t)
	deadline := time.Now().Add(20 * time.Second)
	for {
		select {
		case <-done:
			t.Fatalf("prometheus with web config exited while starting; log %s:\n%s", logPath, localproc.Tail(logPath, 20))
		default:
		}
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		req, _ := http.NewRequestWithContext(ctx, http.MethodGet, p.URL+"/-/ready", nil)
		req.SetBasicAuth(p.User, p.password(t))
		resp, err := client.Do(req)
		cancel()
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return p
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("prometheus with web config on %s not ready after 20s (last: %v); log %s:\n%s", addr, err, logPath, localproc.Tail(logPath, 20))
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// SetPassword makes password the only one the server accepts and writes it
// to PasswordFile. Prometheus reads its web config on every request, so the
// change takes effect at once, as a rotated Kubernetes Secret would.
func (p *SecurePrometheus) SetPassword(t testing.TB, password string) {
	t.Helper()
	hash, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	web := fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  %s: %s\n", p.cert, p.key, p.User, hash)
	if err := writeAtomic(p.webFile, web); err != nil {
		t.Fatal(err)
	}
	if err := writeAtomic(p.PasswordFile, password+"\n"); err != nil {
		t.Fatal(err)
	}
}

// SetServerPassword changes only the server's side (the password file
// keeps the old one), as when a rotation reached the server first.
func (p *SecurePrometheus) SetServerPassword(t testing.TB, password string) {
	t.Helper()
	old := p.password(t)
	p.SetPassword(t, password)
	if err := writeAtomic(p.PasswordFile, old+"\n"); err != nil {
		t.Fatal(err)
	}
}

func (p *SecurePrometheus) password(t testing.TB) string {
	t.Helper()
	b, err := os.ReadFile(p.PasswordFile)
	if err != nil {
		t.Fatal(err)
	}
	return strings.TrimSpace(string(b))
}

// Client is an HTTP client that trusts the server's CA (it sends no
// credentials by itself).
func (p *SecurePrometheus) Client(t testing.TB) *http.Client {
	t.Helper()
	pemBytes, err := os.ReadFile(p.CAFile)
	if err != nil {
		t.Fatal(err)
	}
	pool := x509.NewCertPool()
	if !pool.AppendCertsFromPEM(pemBytes) {
		t.Fatalf("%s: no certificate", p.CAFile)
	}
	return &http.Client{Timeout: 5 * time.Second, Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool, MinVersion: tls.VersionTLS12}}}
}

// writeAtomic replaces path's content in one rename, so a reader never sees
// half a file.
func writeAtomic(path, content string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(content), 0o600); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

// writeServerPKI writes a CA and a server certificate for 127.0.0.1 and
// localhost signed by it; it returns the CA, certificate and key files.
func writeServerPKI(t testing.TB, dir string) (caFile, certFile, keyFile string) {
	t.Helper()
	now := time.Now()
	caKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	caTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "rollguard-test-ca"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
	}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, err := x509.ParseCertificate(caDER)
	if err != nil {
		t.Fatal(err)
	}
	srvKey, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	srvTmpl := &x509.Certificate{
		SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: "prometheus"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, DNSNames: []string{"localhost"},
	}
	srvDER, err := x509.CreateCertificate(rand.Reader, srvTmpl, caCert, &srvKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(srvKey)
	if err != nil {
		t.Fatal(err)
	}
	caFile, certFile, keyFile = filepath.Join(dir, "ca.crt"), filepath.Join(dir, "server.crt"), filepath.Join(dir, "server.key")
	for _, f := range []struct {
		path string
		blk  *pem.Block
	}{
		{caFile, &pem.Block{Type: "CERTIFICATE", Bytes: caDER}},
		{certFile, &pem.Block{Type: "CERTIFICATE", Bytes: srvDER}},
		{keyFile, &pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER}},
	} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(f.blk), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return caFile, certFile, keyFile
}
