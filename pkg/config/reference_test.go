package config

import (
	"bytes"
	"fmt"
	"go/ast"
	"os"
	"reflect"
	"strings"
	"testing"

	commoncfg "github.com/prometheus/common/config"
)

// referencePath is the configuration reference the README links to. It is
// generated from the doc comments of config.go, so it cannot drift from the
// structs: this test fails when it is stale. Regenerate with
//
//	UPDATE_REFERENCE=1 go test ./pkg/config -run TestConfigurationReference
const referencePath = "../../docs/configuration.md"

func TestConfigurationReference(t *testing.T) {
	got := renderReference(t)
	if os.Getenv("UPDATE_REFERENCE") != "" {
		if err := os.WriteFile(referencePath, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(referencePath)
	if err != nil {
		t.Fatalf("%v: generate it with UPDATE_REFERENCE=1 go test ./pkg/config -run TestConfigurationReference", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s is stale: the config structs changed. Regenerate with UPDATE_REFERENCE=1 go test ./pkg/config -run TestConfigurationReference", referencePath)
	}
}

type refField struct {
	key, typ, doc string
	section       string // the struct type of a nested section, if any
}

func renderReference(t *testing.T) []byte {
	t.Helper()
	types := map[string][]refField{}
	docs := map[string]string{}
	for _, st := range configStructs(t) {
		docs[st.spec.Name.Name] = oneLine(st.decl.Doc.Text())
		for _, field := range st.typ.Fields.List {
			key, ok := yamlKey(field)
			if !ok || key == "" {
				continue
			}
			typ, section := typeName(field.Type)
			types[st.spec.Name.Name] = append(types[st.spec.Name.Name], refField{key: key, typ: typ, doc: oneLine(field.Doc.Text()), section: section})
		}
	}
	var b bytes.Buffer
	b.WriteString("# rollguard configuration reference\n\n")
	b.WriteString("Generated from the doc comments of `pkg/config/config.go` and from `pkg/config/semantics.md`\n")
	b.WriteString("by `TestConfigurationReference`; do not edit by hand. Durations are Prometheus durations\n")
	b.WriteString("(`30s`, `5m`, `2h`). Secrets are only ever read from files or environment variables and are\n")
	b.WriteString("never logged. How verify, missing data and low volume, validation, pages and reloads behave\n")
	b.WriteString("is at the end: [How the settings behave](#how-the-settings-behave).\n")
	seen := map[string]bool{}
	var walk func(typ, path string)
	walk = func(typ, path string) {
		if seen[typ] {
			return
		}
		seen[typ] = true
		if path == "" {
			b.WriteString("\n## top level\n\n")
		} else {
			fmt.Fprintf(&b, "\n## `%s`\n\n", path)
		}
		if d := docs[typ]; d != "" {
			fmt.Fprintf(&b, "%s\n\n", d)
		}
		b.WriteString("| field | type | meaning |\n|---|---|---|\n")
		for _, fl := range types[typ] {
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", fl.key, fl.typ, strings.ReplaceAll(fl.doc, "|", "\\|"))
		}
		for _, fl := range types[typ] {
			if fl.section == "" {
				continue
			}
			sub := path + "." + fl.key
			if path == "" {
				sub = fl.key
			}
			if strings.HasPrefix(fl.typ, "list") {
				sub += "[]"
			}
			walk(fl.section, sub)
		}
	}
	walk("Config", "")
	renderHTTPConfig(t, &b)
	// The behaviour the tables cannot say, written by hand next to the
	// code that implements it.
	notes, err := os.ReadFile("semantics.md")
	if err != nil {
		t.Fatal(err)
	}
	b.WriteString("\n")
	b.Write(notes)
	return b.Bytes()
}

func typeName(e ast.Expr) (string, string) {
	switch e := e.(type) {
	case *ast.Ident:
		switch e.Name {
		case "string", "bool", "int", "float64":
			return e.Name, ""
		case "Secret":
			return "secret", ""
		}
		return "section", e.Name
	case *ast.StarExpr:
		t, s := typeName(e.X)
		return t + " (optional)", s
	case *ast.ArrayType:
		t, s := typeName(e.Elt)
		return "list of " + t, s
	case *ast.MapType:
		k, _ := typeName(e.Key)
		v, _ := typeName(e.Value)
		return "map " + k + " → " + v, ""
	case *ast.SelectorExpr:
		switch e.Sel.Name {
		case "Duration":
			return "duration", ""
		case "Name", "OnError", "Severity":
			// The words of plan, trigger and notify: strings in YAML.
			return "string", ""
		}
		return e.Sel.Name, ""
	}
	return fmt.Sprintf("%T", e), ""
}

func oneLine(s string) string { return strings.Join(strings.Fields(s), " ") }

// httpConfigDocs are the rows of the global.prometheus.httpConfig section:
// prometheus/common's keys, which config.go cannot document (the struct is
// theirs). renderHTTPConfig fails when a key of the library has no row or
// a row names no key, so an upgrade that adds a key cannot go unnoticed.
var httpConfigDocs = map[string]string{
	"basic_auth.username":                "HTTP basic auth user name.",
	"basic_auth.username_file":           "File holding the user name instead.",
	"basic_auth.username_ref":            "Refused: rollguard has no secret manager.",
	"basic_auth.password":                "Refused: no secrets in the config file; use password_file.",
	"basic_auth.password_file":           "File holding the password, read on every request (rotation needs no reload).",
	"basic_auth.password_ref":            "Refused: rollguard has no secret manager.",
	"authorization.type":                 "Scheme of the Authorization header. Default Bearer; Basic is refused (use basic_auth).",
	"authorization.credentials":          "Refused: no secrets in the config file; use credentials_file.",
	"authorization.credentials_file":     "File holding the credentials (e.g. a bearer token), read on every request.",
	"authorization.credentials_ref":      "Refused: rollguard has no secret manager.",
	"oauth2.client_id":                   "OAuth2 client credentials flow: the client ID. Required with oauth2.",
	"oauth2.client_secret":               "Refused: no secrets in the config file; use client_secret_file.",
	"oauth2.client_secret_file":          "File holding the client secret, read on every token request.",
	"oauth2.client_secret_ref":           "Refused: rollguard has no secret manager.",
	"oauth2.client_certificate_key_id":   "JWT bearer grant: the key ID of the client certificate key.",
	"oauth2.client_certificate_key":      "Refused: no secrets in the config file; use client_certificate_key_file.",
	"oauth2.client_certificate_key_file": "JWT bearer grant: file holding the private key that signs the assertion.",
	"oauth2.client_certificate_key_ref":  "Refused: rollguard has no secret manager.",
	"oauth2.grant_type":                  "client_credentials (default) or urn:ietf:params:oauth:grant-type:jwt-bearer.",
	"oauth2.signature_algorithm":         "JWT bearer grant: RS256, RS384 or RS512.",
	"oauth2.iss":                         "JWT bearer grant: the assertion's issuer.",
	"oauth2.audience":                    "JWT bearer grant: the assertion's audience.",
	"oauth2.claims":                      "JWT bearer grant: more claims of the assertion.",
	"oauth2.scopes":                      "Scopes asked for.",
	"oauth2.token_url":                   "Token endpoint. Required with oauth2.",
	"oauth2.endpoint_params":             "More parameters of the token request.",
	"oauth2.tls_config":                  "TLS of the token request, the keys of tls_config below.",
	"oauth2.proxy_url":                   "Proxy of the token request, as proxy_url below.",
	"oauth2.no_proxy":                    "As no_proxy below, for the token request.",
	"oauth2.proxy_from_environment":      "As proxy_from_environment below, for the token request.",
	"oauth2.proxy_connect_header":        "Refused: its values are secrets in the config file.",
	"bearer_token":                       "Refused: no secrets in the config file; use authorization.credentials_file.",
	"bearer_token_file":                  "Older spelling of authorization.credentials_file (type Bearer).",
	"tls_config.ca":                      "PEM CA certificates inline, to verify the server.",
	"tls_config.cert":                    "PEM client certificate inline (mTLS).",
	"tls_config.key":                     "Refused: no secrets in the config file; use key_file.",
	"tls_config.ca_file":                 "File of PEM CA certificates to verify the server (default: the system's); must hold one. Read again when it changes.",
	"tls_config.cert_file":               "Client certificate file (mTLS); must match key_file. Read again when it changes.",
	"tls_config.key_file":                "Client key file (mTLS). Read again when it changes.",
	"tls_config.ca_ref":                  "Refused: rollguard has no secret manager.",
	"tls_config.cert_ref":                "Refused: rollguard has no secret manager.",
	"tls_config.key_ref":                 "Refused: rollguard has no secret manager.",
	"tls_config.server_name":             "Name to verify the server's certificate against (and send as SNI). Default: the URL's host.",
	"tls_config.insecure_skip_verify":    "Do not verify the server's certificate. Default false; never in production.",
	"tls_config.min_version":             "Lowest TLS version: TLS10, TLS11, TLS12 or TLS13. Default Go's (TLS12).",
	"tls_config.max_version":             "Highest TLS version. Default Go's.",
	"follow_redirects":                   "Follow HTTP 3xx redirects. Default true.",
	"enable_http2":                       "Use HTTP/2 when the server offers it. Default true.",
	"proxy_url":                          "HTTP proxy URL, without credentials. Default none.",
	"no_proxy":                           "Comma-separated hosts, domains and CIDRs not to proxy; needs proxy_url.",
	"proxy_from_environment":             "Use HTTP_PROXY, HTTPS_PROXY and NO_PROXY (they may carry the proxy's credentials). Default false.",
	"proxy_connect_header":               "Refused: its values are secrets in the config file.",
	"http_headers.<name>":                "A header sent on every request; Authorization, Host, User-Agent and other reserved headers are refused.",
	"http_headers.<name>.values":         "Its plain values.",
	"http_headers.<name>.secrets":        "Refused: no secrets in the config file; use files.",
	"http_headers.<name>.files":          "Files whose contents are its values, read on every request (e.g. an API key).",
}

// httpConfigKeys lists prometheus/common's HTTP client keys as dotted
// paths, in field order; "<name>" stands for a header name.
func httpConfigKeys(t reflect.Type, prefix string, out *[]string) {
	for i := range t.NumField() {
		f := t.Field(i)
		if !f.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(f.Tag.Get("yaml"), ",")
		ft := f.Type
		if ft.Kind() == reflect.Pointer {
			ft = ft.Elem()
		}
		if name == "" && strings.Contains(opts, "inline") {
			if ft.Kind() == reflect.Struct {
				httpConfigKeys(ft, prefix, out)
				continue
			}
			*out = append(*out, prefix+"<name>")
			httpConfigKeys(ft.Elem(), prefix+"<name>.", out)
			continue
		}
		key := prefix + name
		if ft.Kind() == reflect.Struct && ft != reflect.TypeFor[commoncfg.URL]() && key != "oauth2.tls_config" {
			httpConfigKeys(ft, key+".", out)
			continue
		}
		*out = append(*out, key)
	}
}

func renderHTTPConfig(t *testing.T, b *bytes.Buffer) {
	t.Helper()
	var keys []string
	httpConfigKeys(reflect.TypeFor[commoncfg.HTTPClientConfig](), "", &keys)
	b.WriteString("\n## `global.prometheus.httpConfig`\n\n")
	b.WriteString("prometheus/common's HTTP client settings, keys in its snake_case, as in a Prometheus\n")
	b.WriteString("scrape config or an Alertmanager receiver's `http_config`. Checked when the config\n")
	b.WriteString("loads (unknown keys, conflicting settings); `rollguard validate` and the daemon also\n")
	b.WriteString("read every file it names (a CA file must hold a certificate, a client certificate must\n")
	b.WriteString("match its key). Files are read again on use, so rotating a password, token or\n")
	b.WriteString("certificate needs neither reload nor restart; changing this block itself needs a restart.\n\n")
	b.WriteString("| key | meaning |\n|---|---|\n")
	seen := map[string]bool{}
	for _, k := range keys {
		seen[k] = true
		d, ok := httpConfigDocs[k]
		if !ok {
			t.Errorf("httpConfig key %s (prometheus/common) has no row in httpConfigDocs", k)
		}
		fmt.Fprintf(b, "| `%s` | %s |\n", k, strings.ReplaceAll(d, "|", "\\|"))
	}
	for k := range httpConfigDocs {
		if !seen[k] {
			t.Errorf("httpConfigDocs row %s names no key of prometheus/common's HTTPClientConfig", k)
		}
	}
}
