package deploy

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	"k8s.io/apimachinery/pkg/apis/meta/v1/unstructured"
	k8sruntime "k8s.io/apimachinery/pkg/runtime"
	utilyaml "k8s.io/apimachinery/pkg/util/yaml"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// The install's fixed names: the overlays, configs/ and the daemon's
// defaults all agree on them, and the tests check that they do.
const (
	installNamespace = "rollguard"
	serviceAccount   = "rollguard"
	deploymentName   = "rollguard"
	configMapName    = "rollguard-config"
	configKey        = "rollguard.yaml"
	targetRole       = "rollguard-target"
	leaderRole       = "rollguard-leader"
	stateRole        = "rollguard-state"
	secretName       = "rollguard-secrets"
)

// overlay is one install variant and the config it must carry.
type overlay struct {
	name     string // directory under deploy/overlays
	config   string // its source under configs/
	replicas int32
}

// overlays lists the install variants in deploy/overlays.
func overlays() []overlay {
	return []overlay{
		{name: "production", config: "production.yaml", replicas: 2},
		{name: "staging", config: "staging.yaml", replicas: 1},
	}
}

// repoRoot is the repository's top directory, found from this file so the
// tests do not depend on the working directory.
func repoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the test source file")
	}
	return filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
}

// kubectl returns a kubectl binary for rendering: the sandbox's (its
// version matches the API server the integration tests use) when the env
// file names one, else the one on PATH. Rendering needs no cluster, so the
// unit tests only skip when neither exists.
func kubectl(t testing.TB) string {
	t.Helper()
	if env, err := sandboxenv.Read(sandboxenv.Path()); err == nil && env["SANDBOX_BIN_DIR"] != "" {
		p := filepath.Join(env["SANDBOX_BIN_DIR"], "kubectl")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("kubectl")
	if err != nil {
		t.Skip("no kubectl to render the overlays with: start the sandbox (test/sandbox/up) or put kubectl on PATH")
	}
	return p
}

// promtool returns the promtool beside the sandbox's prometheus binary,
// else the one on PATH.
func promtool(t testing.TB) string {
	t.Helper()
	if env, err := sandboxenv.Read(sandboxenv.Path()); err == nil && env["PROMETHEUS_BIN"] != "" {
		p := filepath.Join(filepath.Dir(env["PROMETHEUS_BIN"]), "promtool")
		if _, err := os.Stat(p); err == nil {
			return p
		}
	}
	p, err := exec.LookPath("promtool")
	if err != nil {
		t.Skip("no promtool to check the rules with: apt-get install prometheus or start the sandbox")
	}
	return p
}

// run runs a command with its own timeout and returns stdout and stderr.
func run(t testing.TB, timeout time.Duration, env []string, name string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	if env != nil {
		cmd.Env = append(os.Environ(), env...)
	}
	var out, errOut bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errOut
	err = cmd.Run()
	if ctx.Err() != nil {
		err = fmt.Errorf("%s %s: timed out after %s: %w", name, strings.Join(args, " "), timeout, ctx.Err())
	}
	return out.String(), errOut.String(), err
}

// render runs kubectl kustomize on a directory relative to the repository
// and decodes every object it prints.
func render(t testing.TB, dir string) []*unstructured.Unstructured {
	t.Helper()
	out, stderr, err := run(t, 30*time.Second, nil, kubectl(t), "kustomize", filepath.Join(repoRoot(t), dir))
	if err != nil {
		t.Fatalf("kubectl kustomize %s: %v\n%s", dir, err, stderr)
	}
	objs, err := decodeObjects([]byte(out))
	if err != nil {
		t.Fatalf("decode kubectl kustomize %s: %v", dir, err)
	}
	if len(objs) == 0 {
		t.Fatalf("kubectl kustomize %s rendered no objects", dir)
	}
	return objs
}

// decodeObjects splits a multi-document YAML stream into objects.
func decodeObjects(data []byte) ([]*unstructured.Unstructured, error) {
	dec := utilyaml.NewYAMLOrJSONDecoder(bytes.NewReader(data), 4096)
	var objs []*unstructured.Unstructured
	for {
		var m map[string]any
		err := dec.Decode(&m)
		if errors.Is(err, io.EOF) {
			return objs, nil
		}
		if err != nil {
			return nil, fmt.Errorf("document %d: %w", len(objs)+1, err)
		}
		if len(m) == 0 {
			continue
		}
		objs = append(objs, &unstructured.Unstructured{Object: m})
	}
}

// find returns the one object of kind, namespace and name, failing the
// test when it is not rendered.
func find(t testing.TB, objs []*unstructured.Unstructured, kind, ns, name string) *unstructured.Unstructured {
	t.Helper()
	for _, o := range objs {
		if o.GetKind() == kind && o.GetNamespace() == ns && o.GetName() == name {
			return o
		}
	}
	t.Fatalf("%s %s/%s is not among the rendered objects", kind, ns, name)
	return nil
}

// ofKind returns every rendered object of kind.
func ofKind(objs []*unstructured.Unstructured, kind string) []*unstructured.Unstructured {
	var out []*unstructured.Unstructured
	for _, o := range objs {
		if o.GetKind() == kind {
			out = append(out, o)
		}
	}
	return out
}

// typed converts an object to its API type, refusing unknown fields so a
// misspelt field (which the API server would also refuse) fails here too.
func typed[T any](t testing.TB, u *unstructured.Unstructured) *T {
	t.Helper()
	var v T
	if err := k8sruntime.DefaultUnstructuredConverter.FromUnstructuredWithValidation(u.Object, &v, true); err != nil {
		t.Fatalf("%s %s/%s: %v", u.GetKind(), u.GetNamespace(), u.GetName(), err)
	}
	return &v
}
