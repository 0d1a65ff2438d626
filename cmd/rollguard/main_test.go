package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/version"
)

// productionConfig is configs/production.yaml, relative to this package's
// directory (go test runs in it).
const productionConfig = "../../configs/production.yaml"

// result is what one dispatch did.
type result struct {
	code           int
	stdout, stderr string
}

// rollguard runs the CLI in-process, as main would with args.
func rollguard(t *testing.T, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := dispatch(ctx, "rollguard", args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// writeFile writes body to name under dir and returns its path.
func writeFile(t *testing.T, dir, name, body string) string {
	t.Helper()
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

// validConfig is the smallest valid config: it needs no secret, so `plan`
// gets past loading to the target lookup.
const validConfig = `global:
  prometheus: {url: "http://127.0.0.1:9"}
  kubernetes: {kubeconfig: "/nonexistent/kubeconfig"}
targets:
  - name: pggit-api
    namespace: production
    deployment: pggit-api
    triggers:
      - name: error-rate
        kind: errorRate
        above: 0.05
        action: rollback
`

func TestDispatch(t *testing.T) {
	dir := t.TempDir()
	valid := writeFile(t, dir, "valid.yaml", validConfig)
	usageHead := "Usage:\n  rollguard [flags]\n  rollguard [command]\n"

	tests := []struct {
		name       string
		args       []string
		wantCode   int
		wantStdout []string // substrings
		wantStderr []string // substrings
		// exactStdout, when set, is the whole of stdout.
		exactStdout string
	}{
		{name: "no args", args: nil, wantCode: exitUsage, wantStderr: []string{usageHead, "  validate      check a config file and print a summary\n"}},
		{name: "help", args: []string{"help"}, wantCode: exitOK, wantStdout: []string{usageHead, "Reading (-o table|json|yaml):\n"}},
		{name: "-h", args: []string{"-h"}, wantCode: exitOK, wantStdout: []string{usageHead}},
		{name: "a command's help", args: []string{"plan", "--help"}, wantCode: exitOK,
			wantStdout: []string{"Usage:\n  rollguard plan [flags]\n", "  -n, --namespace string ", "  -o, --output format ", "      --context string "}},
		{name: "unknown command", args: []string{"frobnicate"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard: unknown command \"frobnicate\" for \"rollguard\"\nRun 'rollguard --help' for usage.\n"}},
		{name: "version", args: []string{"version"}, wantCode: exitOK,
			exactStdout: "rollguard " + version.Get().Version + " (revision " + version.Get().Revision + ", " + runtime.Version() + ")\n"},
		{name: "version with an argument", args: []string{"version", "extra"}, wantCode: exitUsage,
			wantStderr: []string{`rollguard version: unexpected arguments ["extra"]`}},
		{name: "bad flag", args: []string{"validate", "--no-such-flag"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard validate: unknown flag: --no-such-flag\nRun 'rollguard validate --help' for usage.\n"}},
		{name: "flag without its value", args: []string{"plan", "--target"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard plan: flag needs an argument: --target\n"}},
		{name: "validate production without secrets", args: []string{"validate", "--config", productionConfig, "--skip-secrets"}, wantCode: exitOK,
			exactStdout: productionConfig + `: valid
1 target, 5 triggers; interval 5s
target pggit-api: production/pggit-api, strategy quick, live
  trigger error-rate: errorRate > 0.05 for 1m -> rollback (critical)
  trigger latency-p99: latencyP99 > 5 for 1m -> rollback (critical)
  trigger connection-pool: connections > 0.95 for 1m -> restart-then-rollback (critical)
  trigger replication-lag: replicationLag > 30 for 1m -> rollback (critical)
  trigger webhook-delivery-blocked: sql > 0 for 5m -> page (error)
`},
		{name: "rollback without target", args: []string{"rollback", "--reason", "bad deploy"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard rollback: --target and --reason are required\n"}},
		{name: "rollback without reason", args: []string{"rollback", "--target", "pggit-api"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard rollback: --target and --reason are required\n"}},
		{name: "rollback with a blank reason", args: []string{"rollback", "--target", "pggit-api", "--reason", "  "}, wantCode: exitUsage,
			wantStderr: []string{"rollguard rollback: --target and --reason are required\n"}},
		{name: "rollback --force without --local", args: []string{"rollback", "--force", "--target", "pggit-api", "--reason", "x"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard rollback: --force goes with --local (the daemon's API takes no override)\n"}},
		{name: "rollback --local without config", args: []string{"rollback", "--local", "--target", "pggit-api", "--reason", "x"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard rollback: --local: --config is required\n"}},
		{name: "cluster flags without --local", args: []string{"rollback", "--target", "pggit-api", "--reason", "x", "--context", "prod"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard rollback: --kubeconfig, --context and -n/--namespace apply only with --local (the daemon uses its own cluster access)\n"}},
		{name: "rollback --local of an unknown target", args: []string{"rollback", "--local", "--config", valid, "--target", "nope", "--reason", "x"}, wantCode: exitUsage,
			wantStderr: []string{`usage: target "nope" is not in ` + valid + "\n"}},
		{name: "freeze without token file", args: []string{"freeze", "--target", "pggit-api", "--reason", "release", "--token-file", ""}, wantCode: exitUsage,
			wantStderr: []string{"rollguard: --token-file (or $ROLLGUARD_TOKEN_FILE) is required for commands that change something\n"}},
		{name: "freeze with a missing token file", args: []string{"freeze", "--target", "pggit-api", "--reason", "release", "--token-file", filepath.Join(dir, "nope")}, wantCode: exitUsage,
			wantStderr: []string{"rollguard: read token file: open " + filepath.Join(dir, "nope") + ": no such file or directory\n"}},
		{name: "unfreeze without reason", args: []string{"unfreeze", "--target", "pggit-api"}, wantCode: exitUsage,
			wantStderr: []string{"rollguard unfreeze: --target and --reason are required\n"}},
		{name: "status of a daemon that is not there", args: []string{"status", "--api", "http://127.0.0.1:1"}, wantCode: exitFail,
			wantStderr: []string{"rollguard: api GET /api/v1/status: Get \"http://127.0.0.1:1/api/v1/status\": dial tcp 127.0.0.1:1: connect: connection refused\n"}},
		{name: "plan of an unknown target", args: []string{"plan", "--config", valid, "--target", "nope"}, wantCode: exitUsage,
			wantStderr: []string{`usage: target "nope" is not in ` + valid + "\n"}},
		{name: "plan with an unknown action", args: []string{"plan", "--config", valid, "--target", "pggit-api", "--action", "yolo"}, wantCode: exitUsage,
			wantStderr: []string{`usage: --action "yolo": want quick, revert, full, pool-recovery or multi-region` + "\n"}},
		{name: "plan of a missing config file", args: []string{"plan", "--config", filepath.Join(dir, "missing.yaml"), "--target", "pggit-api"}, wantCode: exitFail,
			wantStderr: []string{"rollguard: reading config file: open " + filepath.Join(dir, "missing.yaml") + ": no such file or directory\n"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Setenv("ROLLGUARD_TOKEN_FILE", "")
			r := rollguard(t, tt.args...)
			if r.code != tt.wantCode {
				t.Errorf("exit code = %d, want %d\nstdout:\n%s\nstderr:\n%s", r.code, tt.wantCode, r.stdout, r.stderr)
			}
			if tt.exactStdout != "" && r.stdout != tt.exactStdout {
				t.Errorf("stdout:\n%s\nwant:\n%s", r.stdout, tt.exactStdout)
			}
			for _, s := range tt.wantStdout {
				if !strings.Contains(r.stdout, s) {
					t.Errorf("stdout does not contain %q:\n%s", s, r.stdout)
				}
			}
			for _, s := range tt.wantStderr {
				if !strings.Contains(r.stderr, s) {
					t.Errorf("stderr does not contain %q:\n%s", s, r.stderr)
				}
			}
			if tt.wantCode != exitOK && r.stdout != "" {
				t.Errorf("a failed command printed to stdout:\n%s", r.stdout)
			}
		})
	}
}

// TestValidateReportsEveryProblem checks that validate lists every problem
// of a file, one per line with its path (and line when known), exits 2,
// and never prints a secret's content.
func TestValidateReportsEveryProblem(t *testing.T) {
	// secretPassword is in a malformed DSN; it must never be printed.
	const secretPassword = "hunter2-Zq9xPw"
	dir := t.TempDir()
	writeFile(t, dir, "bad-dsn", "postgres://rollguard:"+secretPassword+"@db.internal:notaport/pggit?sslmode=disable\n")
	writeFile(t, dir, "good-dsn", "postgres://rollguard:"+secretPassword+"@db.internal:5432/pggit?sslmode=disable\n")
	writeFile(t, dir, "slack-url", "not a url "+secretPassword+"\n")
	writeFile(t, dir, "empty-token", "\n")

	tests := []struct {
		name        string
		body        string
		skipSecrets bool
		// want is every line of stderr, with F standing for the file's path.
		want     []string
		wantCode int
	}{
		{
			name: "invalid yaml",
			body: "global:\n  interval: 5s\n   bad: [\n",
			want: []string{"F:3: yaml: line 3: mapping values are not allowed in this context"},
		},
		{
			name: "every problem at once",
			body: `global:
  interval: 5s
  bogus: 1
targets:
  - name: api
    namespace: production
    deployment: api
    triggers:
      - name: err
        kind: errorRate
        above: .nan
        for: 0s
        action: rollback
      - name: custom
        kind: prometheus
        query: ""
        above: 1
        action: rollback
`,
			want: []string{
				"F:3: global.bogus: unknown field",
				"F: targets[0].triggers[0].above: must be a finite number, got NaN",
				"F: targets[0].triggers[0].for: must be > 0, got 0s",
				"F: targets[0].triggers[1].query: required for kind prometheus",
				"F: global.prometheus.url: required by targets[0].triggers[0] (kind errorRate)",
			},
		},
		{
			name: "unknown field deep in a trigger",
			body: strings.Replace(validConfig, "        action: rollback\n", "        action: rollback\n        threshhold: 3\n", 1),
			want: []string{"F:13: targets[0].triggers[0].threshhold: unknown field"},
		},
		{
			name: "secrets: missing file, malformed DSN, bad URL, empty token",
			body: strings.Replace(validConfig, "global:\n", `global:
  databases:
    - name: primary
      dsnFile: bad-dsn
    - name: replica
      dsnFile: missing-dsn
    - name: ok
      dsnFile: good-dsn
  notify:
    slack: {webhookURLFile: slack-url}
  api: {tokenFile: empty-token}
`, 1),
			want: []string{
				`F: global.databases[0].dsnFile: file "` + filepath.Join(dir, "bad-dsn") + `" does not hold a valid PostgreSQL connection string (details withheld: it may contain a password)`,
				"F: global.databases[1].dsnFile: reading secret: open " + filepath.Join(dir, "missing-dsn") + ": no such file or directory",
				`F: global.notify.slack.webhookURLFile: file "` + filepath.Join(dir, "slack-url") + `" does not hold an http or https URL (content withheld)`,
				`F: global.api.tokenFile: secret file "` + filepath.Join(dir, "empty-token") + `" is empty`,
			},
		},
		{
			name: "secrets are not read with --skip-secrets",
			body: strings.Replace(validConfig, "global:\n", `global:
  databases:
    - name: primary
      dsnFile: bad-dsn
`, 1),
			skipSecrets: true,
			wantCode:    exitOK,
		},
	}
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := writeFile(t, dir, "config"+string(rune('a'+i))+".yaml", tt.body)
			args := []string{"validate", "--config", f}
			if tt.skipSecrets {
				args = append(args, "--skip-secrets")
			}
			r := rollguard(t, args...)
			wantCode := tt.wantCode
			if tt.want != nil {
				wantCode = exitUsage
			}
			if r.code != wantCode {
				t.Errorf("exit code = %d, want %d\nstderr:\n%s", r.code, wantCode, r.stderr)
			}
			var want string
			for _, l := range tt.want {
				// The leading F of each line is the file.
				want += f + strings.TrimPrefix(l, "F") + "\n"
			}
			if r.stderr != want {
				t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want)
			}
			if wantCode == exitOK && !strings.HasPrefix(r.stdout, f+": valid\n") {
				t.Errorf("stdout = %q, want it to start with %q", r.stdout, f+": valid\n")
			}
			if strings.Contains(r.stdout+r.stderr, secretPassword) {
				t.Errorf("the output holds a secret:\n%s%s", r.stdout, r.stderr)
			}
		})
	}
}

// TestValidateProductionNeedsItsSecrets: without --skip-secrets, validate
// reads the mounted secret files and names each missing one.
func TestValidateProductionNeedsItsSecrets(t *testing.T) {
	if _, err := os.Stat("/etc/rollguard/secrets"); err == nil {
		t.Skip("/etc/rollguard/secrets exists on this machine")
	}
	r := rollguard(t, "validate", "--config", productionConfig)
	if r.code != exitUsage {
		t.Fatalf("exit code = %d, want %d\n%s", r.code, exitUsage, r.stderr)
	}
	want := ""
	for _, l := range []struct{ path, file string }{
		{"global.databases[0].dsnFile", "primary-dsn"},
		{"global.databases[1].dsnFile", "replica-eu-dsn"},
		{"global.notify.pagerduty.routingKeyFile", "pagerduty-routing-key"},
		{"global.notify.pagerduty.securityRoutingKeyFile", "pagerduty-security-routing-key"},
		{"global.notify.slack.webhookURLFile", "slack-webhook-url"},
		{"global.api.tokenFile", "api-token"},
	} {
		want += productionConfig + ": " + l.path + ": reading secret: open /etc/rollguard/secrets/" + l.file + ": no such file or directory\n"
	}
	if r.stderr != want {
		t.Errorf("stderr:\n%s\nwant:\n%s", r.stderr, want)
	}
	if r.stdout != "" {
		t.Errorf("stdout = %q, want nothing", r.stdout)
	}
}
