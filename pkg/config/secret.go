package config

import (
	"fmt"
	"io"
	"net/url"
	"os"
	"path/filepath"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"
)

const redacted = "<secret>"

// Secret is a credential read from a file or the environment. Every way of
// printing or marshalling it gives "<secret>"; string(s) is the only way to
// the value, so a use of it is easy to find in review.
type Secret string

// String returns "<secret>".
func (s Secret) String() string { return redacted }

// GoString returns "<secret>", for %#v.
func (s Secret) GoString() string { return redacted }

// Format prints "<secret>" for every verb, so %q, %x or %v on a struct
// that holds a Secret cannot leak it.
func (s Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, redacted) }

// MarshalYAML returns "<secret>".
func (s Secret) MarshalYAML() (any, error) { return redacted, nil }

// MarshalJSON returns "<secret>".
func (s Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + redacted + `"`), nil }

// MarshalText returns "<secret>".
func (s Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// ResolveSecrets reads every configured secret file and environment
// variable into the Secret fields (Database.DSN, PagerDuty.RoutingKey and
// SecurityRoutingKey, Slack.WebhookURL, API.Token) and checks their
// contents: a DSN must parse, a webhook URL must be a URL. The files of
// global.prometheus.httpConfig are checked the same way (readable, not
// empty, a CA file holds certificates, a client certificate matches its
// key) but not kept: prometheus/common reads them on every use. Surrounding
// whitespace (a trailing newline) is trimmed. Relative file paths are
// relative to the config file's directory. Every problem is returned at
// once in an *Errors whose messages name the field and the file or
// variable, never the content.
func (c *Config) ResolveSecrets() error {
	return c.resolveSecrets(os.ReadFile, os.LookupEnv)
}

func (c *Config) resolveSecrets(readFile func(string) ([]byte, error), lookupEnv func(string) (string, bool)) error {
	var errs errList
	r := secretReader{baseDir: c.baseDir, readFile: readFile, lookupEnv: lookupEnv, errs: &errs}

	for i := range c.Global.Databases {
		db := &c.Global.Databases[i]
		p := indexPath("global.databases", i)
		var (
			dsn    Secret
			ok     bool
			path   string
			source string
		)
		switch {
		case db.DSNFile != "":
			path, source = p+".dsnFile", fmt.Sprintf("file %q", r.abs(db.DSNFile))
			dsn, ok = r.file(path, db.DSNFile)
		case db.DSNEnv != "":
			path, source = p+".dsnEnv", fmt.Sprintf("environment variable %q", db.DSNEnv)
			dsn, ok = r.env(path, db.DSNEnv)
		}
		if !ok {
			continue
		}
		// pgconn's own error message quotes the connection string with
		// only the password part redacted, and a URL parse error quotes
		// all of it: say nothing about the content.
		if _, err := pgconn.ParseConfig(string(dsn)); err != nil {
			errs.addf(path, "%s does not hold a valid PostgreSQL connection string (details withheld: it may contain a password)", source)
			continue
		}
		db.DSN = dsn
	}

	pd := &c.Global.Notify.PagerDuty
	if pd.RoutingKeyFile != "" {
		pd.RoutingKey, _ = r.file("global.notify.pagerduty.routingKeyFile", pd.RoutingKeyFile)
	}
	if pd.SecurityRoutingKeyFile != "" {
		pd.SecurityRoutingKey, _ = r.file("global.notify.pagerduty.securityRoutingKeyFile", pd.SecurityRoutingKeyFile)
	}
	sl := &c.Global.Notify.Slack
	if sl.WebhookURLFile != "" {
		const path = "global.notify.slack.webhookURLFile"
		if s, ok := r.file(path, sl.WebhookURLFile); ok {
			u, err := url.Parse(string(s))
			if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
				errs.addf(path, "file %q does not hold an http or https URL (content withheld)", r.abs(sl.WebhookURLFile))
			} else {
				sl.WebhookURL = s
			}
		}
	}
	r.resolveHTTPConfig("global.prometheus.httpConfig", &c.Global.Prometheus.HTTPConfig)
	r.resolveNotifiers(&c.Global.Notify)
	if c.Global.API.TokenFile != "" {
		c.Global.API.Token, _ = r.file("global.api.tokenFile", c.Global.API.TokenFile)
	}

	if len(errs) > 0 {
		return &Errors{File: c.file, List: errs}
	}
	return nil
}

type secretReader struct {
	baseDir   string
	readFile  func(string) ([]byte, error)
	lookupEnv func(string) (string, bool)
	errs      *errList
}

func (r *secretReader) abs(name string) string {
	if r.baseDir == "" || filepath.IsAbs(name) {
		return name
	}
	return filepath.Join(r.baseDir, name)
}

func (r *secretReader) file(path, name string) (Secret, bool) {
	name = r.abs(name)
	b, err := r.readFile(name)
	if err != nil {
		// The *PathError names the file and the cause, not the content.
		r.errs.addf(path, "reading secret: %v", err)
		return "", false
	}
	s := strings.TrimSpace(string(b))
	if s == "" {
		r.errs.addf(path, "secret file %q is empty", name)
		return "", false
	}
	return Secret(s), true
}

func (r *secretReader) env(path, name string) (Secret, bool) {
	v, ok := r.lookupEnv(name)
	if !ok {
		r.errs.addf(path, "environment variable %q is not set", name)
		return "", false
	}
	s := strings.TrimSpace(v)
	if s == "" {
		r.errs.addf(path, "environment variable %q is empty", name)
		return "", false
	}
	return Secret(s), true
}
