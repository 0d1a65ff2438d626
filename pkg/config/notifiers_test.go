package config

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"
)

func TestNotifiersValid(t *testing.T) {
	cfg, err := Load([]byte(parts{global: `  notify:
    webhooks:
      - name: tickets
        url: https://tickets.example/hooks/rollguard
        kinds: [rollback_failed, cannot_rollback]
        httpConfig:
          authorization: {credentials_file: /secrets/tickets-token}
      - name: chat
        urlFile: /secrets/chat-url
    alertmanager:
      urls: [http://alertmanager-0:9093, http://alertmanager-1:9093]
      labels: {team: payments}
`, target: `    notify: {webhooks: false}
`}.yaml()))
	if err != nil {
		t.Fatal(err)
	}
	n := cfg.Global.Notify
	if len(n.Webhooks) != 2 || n.Webhooks[1].Timeout != dur(10*time.Second) || !n.Webhooks[1].HTTPConfig.FollowRedirects {
		t.Errorf("webhooks %+v: want the second with the defaults", n.Webhooks)
	}
	if a := n.Alertmanager; a == nil || a.ActiveFor != dur(24*time.Hour) || a.Timeout != dur(10*time.Second) || !a.HTTPConfig.EnableHTTP2 {
		t.Errorf("alertmanager %+v: want the defaults", a)
	}
}

func TestNotifiersErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    parts
		want []string
	}{
		{"webhook without a URL, bad name, bad kind", parts{global: `  notify:
    webhooks:
      - name: Tickets
        kinds: [rollback_exploded]
`}, []string{
			`global.notify.webhooks[0].name: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got "Tickets"`,
			"global.notify.webhooks[0]: one of url and urlFile is required",
			`global.notify.webhooks[0].kinds[0]: must be one of detected|rollback_started|step_started|step_finished|rollback_succeeded|rollback_failed|rollback_unverified|cannot_rollback|would_rollback|blind|blind_resolved|test|record_failed, got "rollback_exploded"`,
		}},
		{"both URLs, a duplicate, an inline secret", parts{global: `  notify:
    webhooks:
      - {name: a, url: "https://x.example/h", urlFile: /s/u}
      - name: a
        url: "ftp://x.example/h"
        httpConfig: {basic_auth: {username: u, password: p}}
`}, []string{
			"global.notify.webhooks[0]: only one of url and urlFile is allowed",
			`global.notify.webhooks[1].name: duplicate webhook name "a" (also global.notify.webhooks[0])`,
			`global.notify.webhooks[1].url: must be an http or https URL, got "ftp://x.example/h"`,
			"global.notify.webhooks[1].httpConfig.basic_auth.password: secrets are not allowed in the config file; use basic_auth.password_file (read on every use, so rotating it needs no reload)",
		}},
		{"alertmanager", parts{global: `  notify:
    alertmanager:
      urls: ["alertmanager:9093"]
      labels: {severity: low, "bad-name": x, team: ""}
      activeFor: 0s
      httpConfig: {tls_config: {key_file: /s/k}}
`}, []string{
			// Decoding problems (prometheus/common's own check) come first.
			"global.notify.alertmanager.httpConfig.tls_config: exactly one of cert or cert_file must be configured when a client key is configured",
			`global.notify.alertmanager.urls[0]: must be an http or https URL, got "alertmanager:9093"`,
			`global.notify.alertmanager.labels.bad-name: not a valid label name, got "bad-name"`,
			"global.notify.alertmanager.labels.severity: set by rollguard on every alert; choose another name",
			"global.notify.alertmanager.labels.team: must not be empty (Alertmanager drops empty labels)",
			"global.notify.alertmanager.activeFor: must be > 0, got 0s",
		}},
		{"alertmanager without URLs", parts{global: `  notify:
    alertmanager: {labels: {team: x}}
`}, []string{"global.notify.alertmanager.urls: at least one Alertmanager URL is required"}},
		{"target opts in to what is not configured", parts{target: `    notify: {webhooks: true, alertmanager: true}
`}, []string{
			"targets[0].notify.webhooks: requires global.notify.webhooks",
			"targets[0].notify.alertmanager: requires global.notify.alertmanager",
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadErrors(t, tc.p.yaml())
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}

func TestNotifierSecrets(t *testing.T) {
	dir := t.TempDir()
	write := func(name, content string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	write("chat-url", "https://chat.example/hooks/"+secretValue+"\n")
	write("bad-url", "not a url "+secretValue)
	write("primary-dsn", "postgres://u@db/x")
	write("rollguard.yaml", parts{global: `  notify:
    webhooks:
      - {name: chat, urlFile: chat-url}
      - {name: bad, urlFile: bad-url}
      - name: tickets
        url: https://tickets.example/h
        httpConfig: {authorization: {credentials_file: missing-token}}
    alertmanager:
      urls: [http://am:9093]
      httpConfig: {basic_auth: {username: u, password_file: missing-pw}}
`}.yaml())
	cfg, err := LoadFile(filepath.Join(dir, "rollguard.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	cfg.Global.Databases[0].DSNFile = filepath.Join(dir, "primary-dsn")
	err = cfg.ResolveSecrets()
	errs, ok := err.(*Errors)
	if !ok {
		t.Fatalf("ResolveSecrets: %v", err)
	}
	var got []string
	for _, e := range errs.List {
		got = append(got, e.Error())
	}
	want := []string{
		`global.notify.webhooks[1].urlFile: file "` + filepath.Join(dir, "bad-url") + `" does not hold an http or https URL (content withheld)`,
		"global.notify.webhooks[2].httpConfig.authorization.credentials_file: reading secret: open " + filepath.Join(dir, "missing-token") + ": no such file or directory",
		"global.notify.alertmanager.httpConfig.basic_auth.password_file: reading secret: open " + filepath.Join(dir, "missing-pw") + ": no such file or directory",
	}
	if !slices.Equal(got, want) {
		t.Errorf("errors\n got %q\nwant %q", got, want)
	}
	if u := string(cfg.Global.Notify.Webhooks[0].URLSecret); u != "https://chat.example/hooks/"+secretValue {
		t.Errorf("chat URL not resolved: %q", u)
	}
}
