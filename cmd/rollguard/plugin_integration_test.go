package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// TestIntegrationKubectlPlugin installs the binary as kubectl-rollguard and
// runs it through the sandbox's kubectl, finding the cluster the way
// kubectl does: $KUBECONFIG and --context, with -n picking the target.
func TestIntegrationKubectlPlugin(t *testing.T) {
	t.Parallel()
	start := time.Now()
	s := newCLISandbox(t)
	env := sandboxenv.Load(t)
	kubectl := filepath.Join(env.Get(t, "SANDBOX_BIN_DIR"), "kubectl")

	// The config says nothing about the cluster: KUBECONFIG and --context do.
	cfgBytes, err := os.ReadFile(s.config)
	if err != nil {
		t.Fatal(err)
	}
	var kept []string
	for _, l := range strings.Split(string(cfgBytes), "\n") {
		if !strings.HasPrefix(l, "  kubernetes:") {
			kept = append(kept, l)
		}
	}
	cfg := writeFile(t, t.TempDir(), "rollguard.yaml", strings.Join(kept, "\n"))

	bin := t.TempDir()
	build := exec.Command("go", "build", "-o", filepath.Join(bin, pluginName), ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	run := func(args ...string) (int, string, string) {
		t.Helper()
		cmd := exec.Command(kubectl, args...)
		cmd.Env = append(os.Environ(), "PATH="+bin+string(os.PathListSeparator)+os.Getenv("PATH"), "KUBECONFIG="+env.Get(t, "KUBECONFIG"))
		var stdout, stderr bytes.Buffer
		cmd.Stdout, cmd.Stderr = &stdout, &stderr
		err := cmd.Run()
		var ee *exec.ExitError
		code := 0
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		} else if err != nil {
			t.Fatalf("kubectl %v: %v", args, err)
		}
		return code, stdout.String(), stderr.String()
	}

	if code, out, errOut := run("plugin", "list"); code != 0 || !strings.Contains(out, filepath.Join(bin, pluginName)) {
		t.Errorf("kubectl plugin list: exit %d, %q %q; want %s listed", code, out, errOut, pluginName)
	}
	if code, out, _ := run("rollguard", "plan", "--help"); code != 0 || !strings.Contains(out, "kubectl rollguard plan [flags]") {
		t.Errorf("kubectl rollguard plan --help: exit %d\n%s", code, out)
	}

	code, out, errOut := run("rollguard", "plan", "--config", cfg, "--context", "sandbox", "-n", s.ns, "-o", "json")
	if code != 0 {
		t.Fatalf("kubectl rollguard plan: exit %d\n%s", code, errOut)
	}
	var plan planDoc
	if err := json.Unmarshal([]byte(out), &plan); err != nil {
		t.Fatalf("plan -o json: %v\n%s", err, out)
	}
	if plan.Namespace != s.ns || plan.Deployment != cliDeploy || plan.Action != "quick" || plan.Bad.Images["api"] != badImage ||
		plan.Pinned == nil || plan.Pinned.Images["api"] != goodImage || plan.Replicas != 4 || len(plan.Steps) == 0 {
		t.Errorf("plan = %+v; want quick for %s/%s from %s back to %s, 4 replicas", plan, s.ns, cliDeploy, badImage, goodImage)
	}

	code, _, errOut = run("rollguard", "plan", "--config", cfg, "--context", "nope", "-n", s.ns)
	if code != exitUsage || !strings.Contains(errOut, `--context "nope": no such context in `+env.Get(t, "KUBECONFIG")+" (defined: sandbox)") {
		t.Errorf("unknown context: exit %d, stderr %q", code, errOut)
	}
	t.Logf("plugin test wall time %s", time.Since(start).Round(time.Millisecond))
}
