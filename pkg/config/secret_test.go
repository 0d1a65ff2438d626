package config

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"slices"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"
)

const secretValue = "s3cr3t-Pa55word"

func TestSecretNeverPrints(t *testing.T) {
	s := Secret(secretValue)
	holder := struct {
		Name string
		Key  Secret
		Ptr  *Secret
	}{"x", s, &s}
	var outs []string
	for _, f := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x", "%X", "%d", "%10s"} {
		outs = append(outs, fmt.Sprintf(f, s), fmt.Sprintf(f, holder))
	}
	outs = append(outs, s.String(), fmt.Sprint(s), fmt.Sprintln(s))
	j, err := json.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	y, err := yaml.Marshal(holder)
	if err != nil {
		t.Fatal(err)
	}
	outs = append(outs, string(j), string(y))
	for _, out := range outs {
		if strings.Contains(out, secretValue) || strings.Contains(out, fmt.Sprintf("%x", secretValue)) {
			t.Errorf("secret printed: %q", out)
		}
	}
	if got := fmt.Sprintf("%s", s); got != "<secret>" {
		t.Errorf("%%s = %q, want <secret>", got)
	}
	if string(j) != `{"Name":"x","Key":"\u003csecret\u003e","Ptr":"\u003csecret\u003e"}` {
		t.Errorf("json = %s", j)
	}
	if string(s) != secretValue {
		t.Errorf("string(s) does not give the value")
	}
}

// fakeFS serves secret files from a map; anything else does not exist.
type fakeFS map[string]string

func (f fakeFS) read(name string) ([]byte, error) {
	v, ok := f[name]
	if !ok {
		return nil, &fs.PathError{Op: "open", Path: name, Err: fs.ErrNotExist}
	}
	return []byte(v), nil
}

func lookup(env map[string]string) func(string) (string, bool) {
	return func(k string) (string, bool) { v, ok := env[k]; return v, ok }
}

const secretsConfig = `global:
  prometheus: {url: "http://prometheus:9090"}
  databases:
    - {name: primary, dsnFile: /s/primary-dsn}
    - {name: replica, dsnEnv: REPLICA_DSN}
  api: {tokenFile: api-token}
  notify:
    pagerduty: {routingKeyFile: /s/rk, securityRoutingKeyFile: /s/srk}
    slack: {webhookURLFile: /s/slack}
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers: [{name: errors, kind: errorRate, above: 0.05, security: true}]
`

func TestResolveSecrets(t *testing.T) {
	good := fakeFS{
		"/s/primary-dsn":    "postgres://rollguard:" + secretValue + "@db:5432/pggit?sslmode=disable\n",
		"/etc/rg/api-token": "  token-" + secretValue + "\n",
		"/s/rk":             "rk-" + secretValue,
		"/s/srk":            "srk-" + secretValue,
		"/s/slack":          "https://hooks.slack.com/services/" + secretValue,
	}
	goodEnv := map[string]string{"REPLICA_DSN": "host=replica user=rollguard password=" + secretValue}

	t.Run("all present", func(t *testing.T) {
		cfg, err := Load([]byte(secretsConfig))
		if err != nil {
			t.Fatal(err)
		}
		cfg.baseDir = "/etc/rg" // as LoadFile of /etc/rg/rollguard.yaml
		if err := cfg.resolveSecrets(good.read, lookup(goodEnv)); err != nil {
			t.Fatalf("resolveSecrets: %v", err)
		}
		g := cfg.Global
		for name, got := range map[string]Secret{
			"primary DSN": g.Databases[0].DSN, "replica DSN": g.Databases[1].DSN, "token": g.API.Token,
			"routing key": g.Notify.PagerDuty.RoutingKey, "security key": g.Notify.PagerDuty.SecurityRoutingKey,
			"webhook": g.Notify.Slack.WebhookURL,
		} {
			if !strings.Contains(string(got), secretValue) || strings.TrimSpace(string(got)) != string(got) {
				t.Errorf("%s not resolved or not trimmed (len %d)", name, len(got))
			}
		}
		if got := string(g.API.Token); got != "token-"+secretValue {
			t.Errorf("token not trimmed (len %d)", len(got))
		}
		out := cfg.String() + cfg.Summary() + fmt.Sprintf("%+v %#v", cfg, cfg)
		if strings.Contains(out, secretValue) {
			t.Errorf("String/Summary/%%v leak a secret:\n%s", out)
		}
		if !strings.Contains(cfg.String(), "routingKeyFile: /s/rk") {
			t.Errorf("String() lacks the secret file name:\n%s", cfg.String())
		}
	})

	for _, tc := range []struct {
		name   string
		change func(fs fakeFS, env map[string]string)
		want   []string
	}{
		{
			name:   "missing file and unset variable",
			change: func(fs fakeFS, env map[string]string) { delete(fs, "/s/rk"); delete(env, "REPLICA_DSN") },
			want: []string{
				`global.databases[1].dsnEnv: environment variable "REPLICA_DSN" is not set`,
				"global.notify.pagerduty.routingKeyFile: reading secret: open /s/rk: file does not exist",
			},
		},
		{
			name: "empty file and empty variable",
			change: func(fs fakeFS, env map[string]string) {
				fs["/etc/rg/api-token"] = " \n"
				env["REPLICA_DSN"] = ""
			},
			want: []string{
				`global.databases[1].dsnEnv: environment variable "REPLICA_DSN" is empty`,
				`global.api.tokenFile: secret file "/etc/rg/api-token" is empty`,
			},
		},
		{
			name: "malformed DSNs are reported without their content",
			change: func(fs fakeFS, env map[string]string) {
				fs["/s/primary-dsn"] = "postgres://rollguard:" + secretValue + "@db:notaport/pggit"
				env["REPLICA_DSN"] = "host=replica password=" + secretValue + " sslmode=sometimes"
			},
			want: []string{
				`global.databases[0].dsnFile: file "/s/primary-dsn" does not hold a valid PostgreSQL connection string (details withheld: it may contain a password)`,
				`global.databases[1].dsnEnv: environment variable "REPLICA_DSN" does not hold a valid PostgreSQL connection string (details withheld: it may contain a password)`,
			},
		},
		{
			name: "named tokens: malformed lines and a repeated name, without their content",
			change: func(fs fakeFS, env map[string]string) {
				fs["/etc/rg/api-token"] = "# on-call\nalice:a-" + secretValue + "\nbob " + secretValue + "\n\nalice:b-" + secretValue + "\n-x:" + secretValue + "\n"
			},
			want: []string{
				`global.api.tokenFile: file "/etc/rg/api-token" line 3: want NAME:TOKEN (content withheld)`,
				`global.api.tokenFile: file "/etc/rg/api-token" line 5: name "alice" already used on line 2`,
				`global.api.tokenFile: file "/etc/rg/api-token" line 6: want NAME:TOKEN (a name is 1-64 letters, digits or ._@- , starting with a letter or digit) (content withheld)`,
			},
		},
		{
			name:   "webhook file without a URL",
			change: func(fs fakeFS, env map[string]string) { fs["/s/slack"] = "hooks.slack.com/" + secretValue },
			want:   []string{`global.notify.slack.webhookURLFile: file "/s/slack" does not hold an http or https URL (content withheld)`},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load([]byte(secretsConfig))
			if err != nil {
				t.Fatal(err)
			}
			cfg.baseDir = "/etc/rg"
			fs := fakeFS{}
			for k, v := range good {
				fs[k] = v
			}
			env := map[string]string{}
			for k, v := range goodEnv {
				env[k] = v
			}
			tc.change(fs, env)
			err = cfg.resolveSecrets(fs.read, lookup(env))
			var errs *Errors
			if !errors.As(err, &errs) {
				t.Fatalf("resolveSecrets = %v, want *Errors", err)
			}
			var got []string
			for _, e := range errs.List {
				got = append(got, e.Error())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n got  %q\n want %q", got, tc.want)
			}
			if strings.Contains(err.Error(), secretValue) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestNamedTokens(t *testing.T) {
	cfg, err := Load([]byte(secretsConfig))
	if err != nil {
		t.Fatal(err)
	}
	cfg.baseDir = "/etc/rg"
	fs := fakeFS{"/s/primary-dsn": "postgres://db/pggit", "/s/rk": "rk", "/s/srk": "srk", "/s/slack": "https://hooks.slack.com/x",
		"/etc/rg/api-token": "# humans\nalice:tok-a\n  bob@example.com:tok-b  \n"}
	if err := cfg.resolveSecrets(fs.read, lookup(map[string]string{"REPLICA_DSN": "host=replica"})); err != nil {
		t.Fatal(err)
	}
	api := cfg.Global.API
	want := []NamedToken{{Name: "alice", Token: "tok-a"}, {Name: "bob@example.com", Token: "tok-b"}}
	if api.Token != "" || !slices.Equal(api.Tokens, want) {
		t.Fatalf("token %q, tokens %+v; want %+v", api.Token, api.Tokens, want)
	}
	if out := fmt.Sprintf("%+v %v", cfg, api.Tokens); strings.Contains(out, "tok-a") {
		t.Errorf("printing the config leaks a named token: %s", out)
	}
}

// Load itself never reads a secret: a config whose files do not exist
// loads, and `rollguard validate` can run anywhere.
func TestLoadDoesNotReadSecrets(t *testing.T) {
	cfg, err := Load([]byte(secretsConfig))
	if err != nil {
		t.Fatalf("Load: %v", err)
	}
	if cfg.Global.Databases[0].DSN != "" || cfg.Global.API.Token != "" {
		t.Errorf("Load resolved secrets")
	}
}
