package config

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"math/big"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	commoncfg "github.com/prometheus/common/config"
	yamlv2 "go.yaml.in/yaml/v2"
)

// indent puts every line of s under global.prometheus.httpConfig.
func httpConfigDoc(s string) string {
	var b strings.Builder
	for _, l := range strings.Split(strings.TrimRight(s, "\n"), "\n") {
		b.WriteString("      " + l + "\n")
	}
	return `global:
  prometheus:
    url: https://prometheus:9090
    httpConfig:
` + b.String() + `targets:
  - name: api
    namespace: prod
    deployment: api
    triggers:
      - {name: errors, kind: errorRate, above: 0.05}
`
}

// The strict decoder walks prometheus/common's structs itself (to report
// paths); for every accepted input the result must be what
// prometheus/common's own UnmarshalYAML gives under yaml.UnmarshalStrict,
// the way Prometheus loads it.
func TestHTTPConfigDecodesLikeUpstream(t *testing.T) {
	for _, src := range []string{
		"{}",
		"basic_auth: {username: rollguard, password_file: /s/pw}",
		"basic_auth: {username_file: /s/user, password_file: /s/pw}\ntls_config: {ca_file: /s/ca.crt, server_name: prom.internal, min_version: TLS12}",
		"authorization: {credentials_file: /s/token}",
		"authorization: {type: Token, credentials_file: /s/token}",
		"bearer_token_file: /s/token",
		"oauth2:\n  client_id: rollguard\n  client_secret_file: /s/secret\n  token_url: https://idp/token\n  scopes: [read]\n  endpoint_params: {audience: prom}\n  tls_config: {ca_file: /s/ca.crt}",
		"tls_config: {ca_file: /s/ca.crt, cert_file: /s/c.crt, key_file: /s/c.key, insecure_skip_verify: false}",
		"http_headers:\n  X-Scope-OrgID: {values: [tenant-a]}\n  X-Api-Key: {files: [/s/key]}",
		"proxy_url: http://proxy:3128\nno_proxy: localhost,10.0.0.0/8",
		"proxy_from_environment: true",
		"follow_redirects: false\nenable_http2: false",
	} {
		t.Run(src, func(t *testing.T) {
			cfg, err := Load([]byte(httpConfigDoc(src)))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var want commoncfg.HTTPClientConfig
			if err := yamlv2.UnmarshalStrict([]byte(src), &want); err != nil {
				t.Fatalf("upstream: %v", err)
			}
			if got := cfg.Global.Prometheus.HTTPConfig; !reflect.DeepEqual(got, want) {
				t.Errorf("decoded\n %#v\nupstream\n %#v", got, want)
			}
		})
	}
}

func TestHTTPConfigDefaults(t *testing.T) {
	cfg, err := Load([]byte(parts{}.yaml()))
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Global.Prometheus.HTTPConfig; !reflect.DeepEqual(got, commoncfg.DefaultHTTPClientConfig) {
		t.Errorf("default httpConfig = %#v, want prometheus/common's DefaultHTTPClientConfig", got)
	}
}

func TestHTTPConfigErrors(t *testing.T) {
	const p = "global.prometheus.httpConfig"
	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"misspelt key, with its path", "basic_auth: {username: u, pasword_file: /s/pw}",
			[]string{p + ".basic_auth.pasword_file: unknown field"}},
		{"unknown top key", "tls: {ca_file: /x}", []string{p + ".tls: unknown field"}},
		{"prometheus/common's own check, at the block", "basic_auth: {username: u, password_file: /s/pw}\nauthorization: {credentials_file: /s/t}",
			[]string{p + ": at most one of basic_auth, oauth2 & authorization must be configured"}},
		{"tls check at its block", "tls_config: {cert_file: /s/c.crt}",
			[]string{p + ".tls_config: exactly one of key or key_file must be configured when a client certificate is configured"}},
		{"oauth2 needs a token URL", "oauth2: {client_id: x, client_secret_file: /s/x}",
			[]string{p + ": oauth2 token_url must be configured"}},
		{"bad TLS version", "tls_config: {min_version: TLS99}",
			[]string{p + `.tls_config.min_version: unknown TLS version: TLS99`}},
		{"a list where a mapping belongs", "basic_auth: [a]",
			[]string{p + `.basic_auth: expected a mapping, got a list`}},
		{"inline password", "basic_auth: {username: u, password: hunter2}",
			[]string{p + ".basic_auth.password: secrets are not allowed in the config file; use basic_auth.password_file (read on every use, so rotating it needs no reload)"}},
		{"inline bearer token, named as written", "bearer_token: abc",
			[]string{p + ".bearer_token: secrets are not allowed in the config file; use authorization.credentials_file (read on every use, so rotating it needs no reload)"}},
		{"inline credentials", "authorization: {credentials: abc}",
			[]string{p + ".authorization.credentials: secrets are not allowed in the config file; use authorization.credentials_file (read on every use, so rotating it needs no reload)"}},
		{"inline TLS key", "tls_config: {cert_file: /s/c.crt, key: abc}",
			[]string{p + ".tls_config.key: secrets are not allowed in the config file; use key_file (read again when it changes)"}},
		{"secret manager refs", "basic_auth: {username: u, password_ref: vault/pw}\ntls_config: {ca_ref: vault/ca}",
			[]string{
				p + ".basic_auth.password_ref: not supported (rollguard has no secret manager); use basic_auth.password_file",
				p + ".tls_config.ca_ref: not supported (rollguard has no secret manager); use ca_file",
			}},
		{"oauth2 inline secret", "oauth2: {client_id: x, client_secret: abc, token_url: https://idp/t}",
			[]string{p + ".oauth2.client_secret: secrets are not allowed in the config file; use oauth2.client_secret_file (read on every use, so rotating it needs no reload)"}},
		{"header secrets", "http_headers:\n  X-Key: {secrets: [abc]}",
			[]string{p + ".http_headers.X-Key.secrets: secrets are not allowed in the config file; use files (read on every request)"}},
		{"reserved header", "http_headers:\n  Authorization: {values: [x]}",
			[]string{p + `: setting header "Authorization" is not allowed`}},
		{"proxy credentials", "proxy_url: http://u:pw@proxy:3128",
			[]string{p + ".proxy_url: must not hold credentials (user info); use proxy_from_environment"}},
		{"proxy connect header", "proxy_url: http://proxy:3128\nproxy_connect_header: {Proxy-Authorization: [abc]}",
			[]string{p + ".proxy_connect_header: secrets are not allowed in the config file; use proxy_from_environment (HTTPS_PROXY may carry the proxy's credentials)"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadErrors(t, httpConfigDoc(tc.src))
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

// writeCert writes a self-signed certificate and its key as PEM files.
func writeCert(t *testing.T, dir, name string) (certFile, keyFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	kder, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certFile, keyFile = filepath.Join(dir, name+".crt"), filepath.Join(dir, name+".key")
	if err := os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600); err != nil {
		t.Fatal(err)
	}
	return certFile, keyFile
}

func TestHTTPConfigSecretFiles(t *testing.T) {
	dir := t.TempDir()
	ca, _ := writeCert(t, dir, "ca")
	cert, key := writeCert(t, dir, "client")
	_, otherKey := writeCert(t, dir, "other")
	write := func(name, content string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	pw := write("pw", secretValue+"\n")
	empty := write("empty", "\n")
	notPEM := write("not-pem", "hello")
	missing := filepath.Join(dir, "missing")
	const p = "global.prometheus.httpConfig"

	for _, tc := range []struct {
		name, src string
		want      []string
	}{
		{"all good", "basic_auth: {username: u, password_file: " + pw + "}\ntls_config: {ca_file: " + ca + ", cert_file: " + cert + ", key_file: " + key + "}", nil},
		{"relative paths are relative to the config file", "basic_auth: {username: u, password_file: pw}\ntls_config: {ca_file: ca.crt}", nil},
		{"password file missing", "basic_auth: {username: u, password_file: " + missing + "}",
			[]string{p + ".basic_auth.password_file: reading secret: open " + missing + ": no such file or directory"}},
		{"credentials file empty", "authorization: {credentials_file: " + empty + "}",
			[]string{p + `.authorization.credentials_file: secret file "` + empty + `" is empty`}},
		{"unreadable CA file", "tls_config: {ca_file: " + missing + "}",
			[]string{p + ".tls_config.ca_file: reading CA certificates: open " + missing + ": no such file or directory"}},
		{"CA file without a certificate", "tls_config: {ca_file: " + notPEM + "}",
			[]string{p + `.tls_config.ca_file: file "` + notPEM + `" holds no PEM certificate`}},
		{"client key of another certificate", "tls_config: {cert_file: " + cert + ", key_file: " + otherKey + "}",
			[]string{p + `.tls_config.cert_file: client certificate "` + cert + `" and key "` + otherKey + `": tls: private key does not match public key`}},
		{"oauth2 secret and its TLS", "oauth2: {client_id: x, client_secret_file: " + missing + ", token_url: https://idp/t, tls_config: {ca_file: " + notPEM + "}}",
			[]string{
				p + ".oauth2.client_secret_file: reading secret: open " + missing + ": no such file or directory",
				p + `.oauth2.tls_config.ca_file: file "` + notPEM + `" holds no PEM certificate`,
			}},
		{"header file", "http_headers:\n  X-Key: {files: [" + empty + "]}",
			[]string{p + `.http_headers.X-Key.files[0]: secret file "` + empty + `" is empty`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			file := write("rollguard.yaml", httpConfigDoc(tc.src))
			cfg, err := LoadFile(file)
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			err = cfg.ResolveSecrets()
			var got []string
			if err != nil {
				errs, ok := err.(*Errors)
				if !ok {
					t.Fatalf("ResolveSecrets: %T %v", err, err)
				}
				for _, e := range errs.List {
					got = append(got, e.Error())
					if strings.Contains(e.Error(), secretValue) {
						t.Errorf("error holds the secret: %v", e)
					}
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestHTTPConfigRelativePaths(t *testing.T) {
	dir := t.TempDir()
	file := filepath.Join(dir, "rollguard.yaml")
	if err := os.WriteFile(file, []byte(httpConfigDoc("basic_auth: {username: u, password_file: secrets/pw}\ntls_config: {ca_file: /abs/ca.crt}")), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg, err := LoadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	hc := cfg.Global.Prometheus.HTTPConfig
	if got, want := hc.BasicAuth.PasswordFile, filepath.Join(dir, "secrets/pw"); got != want {
		t.Errorf("password_file = %q, want %q", got, want)
	}
	if got := hc.TLSConfig.CAFile; got != "/abs/ca.crt" {
		t.Errorf("ca_file = %q, want it unchanged", got)
	}
}
