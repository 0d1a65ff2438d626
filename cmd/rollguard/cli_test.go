package main

import (
	"bytes"
	"context"
	"encoding/json"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/config"
)

// as runs the CLI in-process under another program name (the kubectl
// plugin's).
func as(t *testing.T, name string, args ...string) result {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	var stdout, stderr bytes.Buffer
	code := dispatch(ctx, name, args, &stdout, &stderr)
	return result{code: code, stdout: stdout.String(), stderr: stderr.String()}
}

// Every read command takes -o the same way: the same flag, the same values,
// the same refusal of anything else (exit 2, naming the flag).
func TestReadCommandsShareOutputFlag(t *testing.T) {
	for _, cmd := range []string{"status", "plan", "preflight", "backtest"} {
		t.Run(cmd, func(t *testing.T) {
			h := rollguard(t, cmd, "--help")
			if h.code != exitOK || !strings.Contains(h.stdout, "  -o, --output format ") || !strings.Contains(h.stdout, "output format: table, json or yaml (default table)") {
				t.Errorf("%s --help (exit %d) lacks -o:\n%s", cmd, h.code, h.stdout)
			}
			r := rollguard(t, cmd, "-o", "xml")
			want := "rollguard " + cmd + `: invalid argument "xml" for "-o, --output" flag: want table, json or yaml` + "\nRun 'rollguard " + cmd + " --help' for usage.\n"
			if r.code != exitUsage || r.stderr != want {
				t.Errorf("-o xml: exit %d, stderr %q; want 2, %q", r.code, r.stderr, want)
			}
			c := rollguard(t, "__complete", cmd, "-o", "")
			if !strings.HasPrefix(c.stdout, "table\njson\nyaml\n:4\n") {
				t.Errorf("completion of -o: %q", c.stdout)
			}
		})
	}
}

func TestStatusFormats(t *testing.T) {
	st := api.Status{Version: "v0.9.0", Leader: true, ConfigHash: "a1b2", LoadedAt: time.Date(2026, 11, 25, 21, 0, 0, 0, time.UTC),
		Targets: []api.TargetStatus{{Name: "pggit-api", Namespace: "production", Deployment: "pggit-api"}}}
	_, url := fakeDaemon(t, st)
	j := rollguard(t, "status", "--api", url, "-o", "json")
	y := rollguard(t, "status", "--api", url, "-o", "yaml")
	if j.code != exitOK || y.code != exitOK {
		t.Fatalf("exit %d, %d: %s%s", j.code, y.code, j.stderr, y.stderr)
	}
	var fromJSON, fromYAML any
	if err := json.Unmarshal([]byte(j.stdout), &fromJSON); err != nil {
		t.Fatalf("-o json: %v\n%s", err, j.stdout)
	}
	if err := yaml.Unmarshal([]byte(y.stdout), &fromYAML); err != nil {
		t.Fatalf("-o yaml: %v\n%s", err, y.stdout)
	}
	if !reflect.DeepEqual(fromJSON, fromYAML) {
		t.Errorf("yaml and json differ:\n%s\n%s", j.stdout, y.stdout)
	}
	if !strings.Contains(y.stdout, "configHash: a1b2\n") {
		t.Errorf("-o yaml lacks the JSON field names:\n%s", y.stdout)
	}
	both := rollguard(t, "status", "--api", url, "--json", "-o", "yaml")
	if both.code != exitUsage || !strings.Contains(both.stderr, "rollguard status: --json and -o yaml disagree; use -o\n") {
		t.Errorf("--json -o yaml: exit %d, %q", both.code, both.stderr)
	}
}

// Installed as kubectl-rollguard, help and completion speak of
// "kubectl rollguard"; run as kubectl_complete-rollguard, the arguments are
// completed (kubectl's plugin completion).
func TestKubectlPlugin(t *testing.T) {
	r := as(t, pluginName, "status", "--help")
	if r.code != exitOK || !strings.Contains(r.stdout, "Usage:\n  kubectl rollguard status [flags]\n") {
		t.Errorf("plugin help (exit %d):\n%s", r.code, r.stdout)
	}
	r = as(t, pluginName, "frobnicate")
	if r.code != exitUsage || !strings.HasPrefix(r.stderr, `kubectl rollguard: unknown command "frobnicate" for "kubectl rollguard"`) {
		t.Errorf("plugin unknown command: exit %d, %q", r.code, r.stderr)
	}
	r = as(t, completionPluginName, "__complete", "sta")
	if r.code != exitOK || !strings.HasPrefix(r.stdout, "status\t") {
		t.Errorf("plugin completion: exit %d, %q", r.code, r.stdout)
	}
}

func TestCompletionScripts(t *testing.T) {
	for shell, want := range map[string]string{
		"bash": "__start_rollguard", "zsh": "#compdef rollguard", "fish": "complete -c rollguard", "powershell": "Register-ArgumentCompleter",
	} {
		r := rollguard(t, "completion", shell)
		if r.code != exitOK || !strings.Contains(r.stdout, want) {
			t.Errorf("completion %s: exit %d, no %q in %d bytes", shell, r.code, want, len(r.stdout))
		}
	}
	dir := t.TempDir()
	cfg := writeFile(t, dir, "rollguard.yaml", twoTargets)
	r := rollguard(t, "__complete", "plan", "--config", cfg, "--target", "")
	if !strings.HasPrefix(r.stdout, "pggit-api\tproduction/pggit-api\nbilling\tbilling/billing-api\nbilling-worker\tbilling/billing-worker\n:4\n") {
		t.Errorf("--target completion: %q", r.stdout)
	}
	r = rollguard(t, "__complete", "plan", "--config", cfg, "-n", "")
	if !strings.HasPrefix(r.stdout, "production\nbilling\n:4\n") {
		t.Errorf("-n completion: %q", r.stdout)
	}
}

const twoTargets = `global:
  prometheus: {url: "http://127.0.0.1:9"}
targets:
  - name: pggit-api
    namespace: production
    deployment: pggit-api
    triggers: [{name: errors, kind: errorRate, above: 0.05}]
  - name: billing
    namespace: billing
    deployment: billing-api
    triggers: [{name: errors, kind: errorRate, above: 0.05}]
  - name: billing-worker
    namespace: billing
    deployment: billing-worker
    triggers: [{name: errors, kind: errorRate, above: 0.05}]
`

func TestSelectTarget(t *testing.T) {
	cfg, err := config.Load([]byte(twoTargets))
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		target, ns, want, wantErr string
	}{
		{"pggit-api", "production", "pggit-api", ""},
		{"", "production", "pggit-api", ""},
		{"billing", "billing", "billing", ""},
		{"pggit-api", "staging", "", `-n staging: target "pggit-api" watches production/pggit-api, not namespace staging`},
		{"nope", "production", "", `--target "nope" is not in F`},
		{"", "staging", "", "-n staging: no target of F is in that namespace (targets: pggit-api (production), billing (billing), billing-worker (billing))"},
		{"", "billing", "", "-n billing: targets billing, billing-worker are in that namespace: pick one with --target"},
	} {
		got, err := selectTarget(cfg, "F", tc.target, tc.ns)
		if tc.wantErr != "" {
			if err == nil || err.Error() != tc.wantErr {
				t.Errorf("(%q, -n %q): error %v, want %s", tc.target, tc.ns, err, tc.wantErr)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("(%q, -n %q) = %q, %v; want %q", tc.target, tc.ns, got, err, tc.want)
		}
	}
}

// Bad cluster input is a usage error naming the flag or field, never a
// quiet fall back to another context or to in-cluster.
func TestPlanKubeconfigErrors(t *testing.T) {
	dir := t.TempDir()
	kubeconfig := writeFile(t, dir, "kubeconfig", `apiVersion: v1
kind: Config
clusters: [{name: c, cluster: {server: "https://127.0.0.1:9"}}]
users: [{name: u, user: {token: t}}]
contexts: [{name: staging, context: {cluster: c, user: u}}]
current-context: staging
`)
	withCtx := writeFile(t, dir, "with-context.yaml", strings.Replace(validConfig, `kubernetes: {kubeconfig: "/nonexistent/kubeconfig"}`,
		`kubernetes: {kubeconfig: "`+kubeconfig+`", context: prod}`, 1))
	plain := writeFile(t, dir, "plain.yaml", strings.Replace(validConfig, `  kubernetes: {kubeconfig: "/nonexistent/kubeconfig"}`+"\n", "", 1))
	missing := filepath.Join(dir, "missing")
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"unknown --context", []string{"plan", "--config", plain, "--kubeconfig", kubeconfig, "--context", "nope", "--target", "pggit-api"},
			`rollguard: kubernetes client config: kubeconfig: --context "nope": no such context in ` + kubeconfig + " (defined: staging)\n"},
		{"unknown context of the config", []string{"plan", "--config", withCtx, "--target", "pggit-api"},
			`rollguard: kubernetes client config: kubeconfig: global.kubernetes.context "prod": no such context in ` + kubeconfig + " (defined: staging)\n"},
		{"missing --kubeconfig", []string{"plan", "--config", plain, "--kubeconfig", missing, "--target", "pggit-api"},
			`rollguard: kubernetes client config: kubeconfig: --kubeconfig "` + missing + `": stat ` + missing + ": no such file or directory\n"},
		{"-n with no target there", []string{"plan", "--config", plain, "-n", "staging"},
			"rollguard plan: -n staging: no target of " + plain + " is in that namespace (targets: pggit-api (production))\n"},
		{"neither --target nor -n", []string{"plan", "--config", plain},
			"rollguard plan: --target (or -n/--namespace) is required\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("KUBECONFIG", filepath.Join(dir, "none"))
			r := rollguard(t, tc.args...)
			if r.code != exitUsage || r.stderr != tc.want {
				t.Errorf("exit %d, stderr %q; want 2, %q", r.code, r.stderr, tc.want)
			}
		})
	}
}
