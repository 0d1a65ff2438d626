package deploy

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// TestGitOpsRBAC applies deploy/gitops into the sandbox's Flux and Argo CD
// namespaces and checks with kubectl auth can-i that rollguard's
// ServiceAccount may read and patch exactly the owners' kinds there, read
// the Flux sources, and nothing else.
func TestGitOpsRBAC(t *testing.T) {
	env := sandboxenv.Load(t)
	kubeconfig := env.Get(t, "KUBECONFIG")
	kubectlBin := filepath.Join(env.Get(t, "SANDBOX_BIN_DIR"), "kubectl")
	fluxNS, argoNS := env.Get(t, "FLUX_NAMESPACE"), env.Get(t, "ARGOCD_NAMESPACE")
	component := filepath.Join(repoRoot(t), "deploy", "gitops")
	for _, ns := range []string{fluxNS, argoNS} {
		dir := t.TempDir()
		// kustomize takes components by relative path only.
		rel, err := filepath.Rel(dir, component)
		if err != nil {
			t.Fatal(err)
		}
		k := "apiVersion: kustomize.config.k8s.io/v1beta1\nkind: Kustomization\nnamespace: " + ns + "\ncomponents:\n  - " + rel + "\n"
		if err := os.WriteFile(filepath.Join(dir, "kustomization.yaml"), []byte(k), 0o644); err != nil {
			t.Fatal(err)
		}
		if out, stderr, err := run(t, 60*time.Second, nil, kubectlBin, "--kubeconfig", kubeconfig, "--request-timeout=30s",
			"apply", "--server-side", "--field-manager="+fieldManager, "-k", dir); err != nil {
			t.Fatalf("apply deploy/gitops in %s: %v\n%s%s", ns, err, out, stderr)
		}
	}
	as := "--as=system:serviceaccount:" + installNamespace + ":" + serviceAccount
	for _, tt := range []struct {
		verb, resource, ns string
		want               bool
	}{
		{"get", "kustomizations.kustomize.toolkit.fluxcd.io", fluxNS, true},
		{"patch", "kustomizations.kustomize.toolkit.fluxcd.io", fluxNS, true},
		// helmreleases are granted too, but can-i says no for a kind the
		// API server does not serve, and the sandbox has no HelmRelease
		// CRD (it ships in helm-controller, which the module proxy here
		// does not serve); the render test checks the rule instead.
		{"get", "gitrepositories.source.toolkit.fluxcd.io", fluxNS, true},
		{"get", "ocirepositories.source.toolkit.fluxcd.io", fluxNS, true},
		{"get", "buckets.source.toolkit.fluxcd.io", fluxNS, true},
		{"get", "applications.argoproj.io", argoNS, true},
		{"patch", "applications.argoproj.io", argoNS, true},

		{"update", "kustomizations.kustomize.toolkit.fluxcd.io", fluxNS, false},
		{"delete", "kustomizations.kustomize.toolkit.fluxcd.io", fluxNS, false},
		{"create", "kustomizations.kustomize.toolkit.fluxcd.io", fluxNS, false},
		{"list", "kustomizations.kustomize.toolkit.fluxcd.io", fluxNS, false},
		{"patch", "gitrepositories.source.toolkit.fluxcd.io", fluxNS, false},
		{"delete", "applications.argoproj.io", argoNS, false},
		{"create", "applications.argoproj.io", argoNS, false},
		{"patch", "appprojects.argoproj.io", argoNS, false},
		{"get", "secrets", fluxNS, false},
		{"get", "secrets", argoNS, false},
		{"patch", "kustomizations.kustomize.toolkit.fluxcd.io", "default", false},
		{"patch", "applications.argoproj.io", "default", false},
		{"patch", "kustomizations.kustomize.toolkit.fluxcd.io", "production", false},
		{"*", "*", fluxNS, false},
	} {
		name := tt.verb + " " + tt.resource + " -n " + tt.ns
		t.Run(name, func(t *testing.T) {
			got, answer := askCanI(t, kubectlBin, kubeconfig, tt.verb, tt.resource, as, "-n", tt.ns)
			if got != tt.want {
				t.Errorf("can-i = %v, want %v (%s)", got, tt.want, answer)
			}
		})
	}
}
