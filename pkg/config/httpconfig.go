package config

import (
	"crypto/tls"
	"crypto/x509"
	"encoding/pem"
	"sort"

	commoncfg "github.com/prometheus/common/config"
)

// rollguard takes prometheus/common's HTTP client settings as they are, with
// two limits that keep to its own rule for secrets (files or the
// environment, never the config file):
//
//   - inline secrets (basic_auth.password, authorization.credentials,
//     bearer_token, oauth2.client_secret, tls_config.key, header secrets,
//     proxy_connect_header) are refused: each has a *_file twin, read on
//     every use, so a rotated secret needs no reload;
//   - the *_ref fields are refused: they name secrets of a secret manager,
//     and rollguard has none.

// validateHTTPConfig checks what prometheus/common's own Validate (already
// run while decoding) does not: the limits above, and that a proxy URL
// carries no credentials.
func validateHTTPConfig(errs *errList, p string, hc *commoncfg.HTTPClientConfig, given func(string) bool) {
	inline := func(field, use string) {
		errs.addf(p+"."+field, "secrets are not allowed in the config file; use %s (read on every use, so rotating it needs no reload)", use)
	}
	ref := func(field, use string) {
		errs.addf(p+"."+field, "not supported (rollguard has no secret manager); use %s", use)
	}
	if ba := hc.BasicAuth; ba != nil {
		if ba.Password != "" {
			inline("basic_auth.password", "basic_auth.password_file")
		}
		if ba.UsernameRef != "" {
			ref("basic_auth.username_ref", "basic_auth.username or basic_auth.username_file")
		}
		if ba.PasswordRef != "" {
			ref("basic_auth.password_ref", "basic_auth.password_file")
		}
	}
	if a := hc.Authorization; a != nil {
		// prometheus/common moves bearer_token into authorization while
		// decoding; name the key the file has.
		if a.Credentials != "" {
			if given(p + ".bearer_token") {
				inline("bearer_token", "authorization.credentials_file")
			} else {
				inline("authorization.credentials", "authorization.credentials_file")
			}
		}
		if a.CredentialsRef != "" {
			ref("authorization.credentials_ref", "authorization.credentials_file")
		}
	}
	if o := hc.OAuth2; o != nil {
		if o.ClientSecret != "" {
			inline("oauth2.client_secret", "oauth2.client_secret_file")
		}
		if o.ClientCertificateKey != "" {
			inline("oauth2.client_certificate_key", "oauth2.client_certificate_key_file")
		}
		if o.ClientSecretRef != "" {
			ref("oauth2.client_secret_ref", "oauth2.client_secret_file")
		}
		if o.ClientCertificateKeyRef != "" {
			ref("oauth2.client_certificate_key_ref", "oauth2.client_certificate_key_file")
		}
		validateTLS(errs, p+".oauth2.tls_config", &o.TLSConfig)
		validateProxy(errs, p+".oauth2", &o.ProxyConfig)
	}
	validateTLS(errs, p+".tls_config", &hc.TLSConfig)
	validateProxy(errs, p, &hc.ProxyConfig)
	if hc.HTTPHeaders != nil {
		for _, name := range sortedHeaderNames(hc.HTTPHeaders.Headers) {
			if len(hc.HTTPHeaders.Headers[name].Secrets) > 0 {
				errs.addf(keyPath(p+".http_headers", name)+".secrets", "secrets are not allowed in the config file; use files (read on every request)")
			}
		}
	}
}

func validateTLS(errs *errList, p string, t *commoncfg.TLSConfig) {
	if t.Key != "" {
		errs.addf(p+".key", "secrets are not allowed in the config file; use key_file (read again when it changes)")
	}
	for _, r := range []struct{ field, v, use string }{
		{"ca_ref", t.CARef, "ca_file"}, {"cert_ref", t.CertRef, "cert_file"}, {"key_ref", t.KeyRef, "key_file"},
	} {
		if r.v != "" {
			errs.addf(p+"."+r.field, "not supported (rollguard has no secret manager); use %s", r.use)
		}
	}
}

func validateProxy(errs *errList, p string, pc *commoncfg.ProxyConfig) {
	if len(pc.ProxyConnectHeader) > 0 {
		errs.addf(p+".proxy_connect_header", "secrets are not allowed in the config file; use proxy_from_environment (HTTPS_PROXY may carry the proxy's credentials)")
	}
	if pc.ProxyURL.URL != nil && pc.ProxyURL.User != nil {
		errs.addf(p+".proxy_url", "must not hold credentials (user info); use proxy_from_environment")
	}
}

func sortedHeaderNames(m map[string]commoncfg.Header) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// resolveHTTPConfig checks every file the HTTP client settings name, the
// way the client will read it: secrets readable and not empty, a CA file
// holding PEM certificates, a client certificate matching its key. The
// client itself reads them again on use (rotation), so nothing is kept.
// Errors name the field and the file, never the content.
func (r *secretReader) resolveHTTPConfig(p string, hc *commoncfg.HTTPClientConfig) {
	if ba := hc.BasicAuth; ba != nil {
		if ba.UsernameFile != "" {
			r.file(p+".basic_auth.username_file", ba.UsernameFile)
		}
		if ba.PasswordFile != "" {
			r.file(p+".basic_auth.password_file", ba.PasswordFile)
		}
	}
	if a := hc.Authorization; a != nil && a.CredentialsFile != "" {
		r.file(p+".authorization.credentials_file", a.CredentialsFile)
	}
	if o := hc.OAuth2; o != nil {
		if o.ClientSecretFile != "" {
			r.file(p+".oauth2.client_secret_file", o.ClientSecretFile)
		}
		if o.ClientCertificateKeyFile != "" {
			r.file(p+".oauth2.client_certificate_key_file", o.ClientCertificateKeyFile)
		}
		r.resolveTLS(p+".oauth2.tls_config", &o.TLSConfig)
	}
	r.resolveTLS(p+".tls_config", &hc.TLSConfig)
	if hc.HTTPHeaders != nil {
		for _, name := range sortedHeaderNames(hc.HTTPHeaders.Headers) {
			for i, f := range hc.HTTPHeaders.Headers[name].Files {
				r.file(indexPath(keyPath(p+".http_headers", name)+".files", i), f)
			}
		}
	}
}

func (r *secretReader) resolveTLS(p string, t *commoncfg.TLSConfig) {
	if t.CAFile != "" {
		name := r.abs(t.CAFile)
		switch b, err := r.readFile(name); {
		case err != nil:
			r.errs.addf(p+".ca_file", "reading CA certificates: %v", err)
		case !holdsCertificate(b):
			r.errs.addf(p+".ca_file", "file %q holds no PEM certificate", name)
		}
	}
	if t.CertFile == "" || t.KeyFile == "" {
		// Inline cert with a key file is allowed upstream; the pair is
		// then checked by the client when it is built.
		return
	}
	cert, certErr := r.readFile(r.abs(t.CertFile))
	if certErr != nil {
		r.errs.addf(p+".cert_file", "reading client certificate: %v", certErr)
	}
	key, keyErr := r.readFile(r.abs(t.KeyFile))
	if keyErr != nil {
		// The *PathError names the file and the cause, not the content.
		r.errs.addf(p+".key_file", "reading client key: %v", keyErr)
	}
	if certErr == nil && keyErr == nil {
		if _, err := tls.X509KeyPair(cert, key); err != nil {
			// crypto/tls names what is wrong (no PEM data, key does not
			// match), never the key.
			r.errs.addf(p+".cert_file", "client certificate %q and key %q: %v", r.abs(t.CertFile), r.abs(t.KeyFile), err)
		}
	}
}

// holdsCertificate reports whether b has at least one PEM certificate that
// parses.
func holdsCertificate(b []byte) bool {
	for {
		var blk *pem.Block
		blk, b = pem.Decode(b)
		if blk == nil {
			return false
		}
		if blk.Type != "CERTIFICATE" {
			continue
		}
		if _, err := x509.ParseCertificate(blk.Bytes); err == nil {
			return true
		}
	}
}
