package kube

import (
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// kubeconfigFile writes a kubeconfig with one cluster per context (server
// https://<context>.example) and current-context current.
func kubeconfigFile(t *testing.T, dir, name, current string, contexts ...string) string {
	t.Helper()
	var b strings.Builder
	b.WriteString("apiVersion: v1\nkind: Config\nclusters:\n")
	for _, c := range contexts {
		b.WriteString("- name: " + c + "\n  cluster: {server: https://" + c + ".example}\n")
	}
	b.WriteString("users:\n- name: u\n  user: {token: t}\ncontexts:\n")
	for _, c := range contexts {
		b.WriteString("- name: " + c + "\n  context: {cluster: " + c + ", user: u}\n")
	}
	if current != "" {
		b.WriteString("current-context: " + current + "\n")
	}
	p := filepath.Join(dir, name)
	if err := os.WriteFile(p, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestRESTConfig(t *testing.T) {
	dir := t.TempDir()
	home := t.TempDir()
	a := kubeconfigFile(t, dir, "a", "staging", "staging", "production")
	b := kubeconfigFile(t, dir, "b", "", "dr")
	explicit := kubeconfigFile(t, dir, "explicit", "ci", "ci")
	missing := filepath.Join(dir, "missing")

	for _, tc := range []struct {
		name       string
		kubeconfig string // $KUBECONFIG
		opts       ClientOptions
		wantHost   string
		wantErr    string
	}{
		{name: "$KUBECONFIG before ~/.kube/config", kubeconfig: a, wantHost: "https://staging.example"},
		{name: "a context of a file later in the $KUBECONFIG list", kubeconfig: a + string(os.PathListSeparator) + b,
			opts: ClientOptions{Context: "dr", ContextFrom: "--context"}, wantHost: "https://dr.example"},
		{name: "--context", kubeconfig: a, opts: ClientOptions{Context: "production", ContextFrom: "--context"}, wantHost: "https://production.example"},
		{name: "explicit file over $KUBECONFIG", kubeconfig: a, opts: ClientOptions{Kubeconfig: explicit}, wantHost: "https://ci.example"},
		{name: "unknown context", kubeconfig: a, opts: ClientOptions{Context: "prod", ContextFrom: "--context"},
			wantErr: `kubeconfig: --context "prod": no such context in ` + a + ` (defined: production, staging)`},
		{name: "unknown context of the config", opts: ClientOptions{Kubeconfig: explicit, Context: "prod", ContextFrom: "global.kubernetes.context"},
			wantErr: `kubeconfig: global.kubernetes.context "prod": no such context in ` + explicit + ` (defined: ci)`},
		{name: "missing explicit file", opts: ClientOptions{Kubeconfig: missing, KubeconfigFrom: "--kubeconfig"},
			wantErr: `kubeconfig: --kubeconfig "` + missing + `": stat ` + missing + `: no such file or directory`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("HOME", home)
			t.Setenv("KUBECONFIG", tc.kubeconfig)
			rc, err := RESTConfig(tc.opts)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr {
					t.Fatalf("error %v, want %s", err, tc.wantErr)
				}
				if !errors.Is(err, ErrKubeconfig) {
					t.Errorf("error is not ErrKubeconfig")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if rc.Host != tc.wantHost {
				t.Errorf("host %s, want %s", rc.Host, tc.wantHost)
			}
		})
	}

	t.Run("nothing at all, not in a cluster", func(t *testing.T) {
		t.Setenv("HOME", t.TempDir())
		t.Setenv("KUBECONFIG", "")
		t.Setenv("KUBERNETES_SERVICE_HOST", "")
		_, err := RESTConfig(ClientOptions{})
		want := "kubeconfig: no kubeconfig found ($KUBECONFIG, ~/.kube/config) and not running in a cluster: use --kubeconfig"
		if err == nil || err.Error() != want {
			t.Fatalf("error %v, want %s", err, want)
		}
	})
	t.Run("a context with nothing to find it in", func(t *testing.T) {
		t.Setenv("HOME", t.TempDir())
		t.Setenv("KUBECONFIG", "")
		_, err := RESTConfig(ClientOptions{Context: "prod", ContextFrom: "--context"})
		if err == nil || !strings.Contains(err.Error(), `--context "prod": no such context in `) || !strings.Contains(err.Error(), "(it defines no context)") {
			t.Fatalf("error %v, want no such context", err)
		}
	})
}

func TestOverlay(t *testing.T) {
	base := ClientOptions{Kubeconfig: "/cfg", KubeconfigFrom: "global.kubernetes.kubeconfig", Context: "c", ContextFrom: "global.kubernetes.context"}
	if got := base.Overlay("", ""); got != base {
		t.Errorf("no flags: %+v", got)
	}
	got := base.Overlay("/flag", "f")
	want := ClientOptions{Kubeconfig: "/flag", KubeconfigFrom: "--kubeconfig", Context: "f", ContextFrom: "--context"}
	if got != want {
		t.Errorf("flags: %+v, want %+v", got, want)
	}
}

// client-go fixes ~/.kube/config when it is initialised, so the home file
// is tested in a child process with its own HOME.
func TestRESTConfigHomeFile(t *testing.T) {
	if os.Getenv("ROLLGUARD_KUBE_HOME_CHILD") == "1" {
		rc, err := RESTConfig(ClientOptions{})
		if err != nil {
			t.Fatal(err)
		}
		if rc.Host != "https://laptop.example" {
			t.Fatalf("host %s, want https://laptop.example", rc.Host)
		}
		return
	}
	home := t.TempDir()
	if err := os.MkdirAll(filepath.Join(home, ".kube"), 0o700); err != nil {
		t.Fatal(err)
	}
	kubeconfigFile(t, filepath.Join(home, ".kube"), "config", "laptop", "laptop")
	cmd := exec.Command(os.Args[0], "-test.run=^TestRESTConfigHomeFile$", "-test.count=1")
	cmd.Env = append(os.Environ(), "ROLLGUARD_KUBE_HOME_CHILD=1", "HOME="+home, "KUBECONFIG=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("child: %v\n%s", err, out)
	}
}
