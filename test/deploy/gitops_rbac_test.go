package deploy

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"testing"

	rbacv1 "k8s.io/api/rbac/v1"
	"sigs.k8s.io/yaml"
)

// TestGitOpsRoleRules pins deploy/gitops's Role to exactly the verbs
// pkg/gitops uses: get and patch on the owners, get on the Flux sources.
func TestGitOpsRoleRules(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "deploy", "gitops", "rbac-gitops.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	docs := bytes.Split(b, []byte("\n---\n"))
	var role rbacv1.Role
	if err := yaml.UnmarshalStrict(docs[0], &role); err != nil {
		t.Fatalf("decode role: %v", err)
	}
	want := []rbacv1.PolicyRule{
		{APIGroups: []string{"kustomize.toolkit.fluxcd.io"}, Resources: []string{"kustomizations"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{"helm.toolkit.fluxcd.io"}, Resources: []string{"helmreleases"}, Verbs: []string{"get", "patch"}},
		{APIGroups: []string{"source.toolkit.fluxcd.io"}, Resources: []string{"gitrepositories", "ocirepositories", "buckets"}, Verbs: []string{"get"}},
		{APIGroups: []string{"argoproj.io"}, Resources: []string{"applications"}, Verbs: []string{"get", "patch"}},
	}
	if role.Kind != "Role" || !reflect.DeepEqual(role.Rules, want) {
		t.Errorf("role %s rules = %+v, want %+v", role.Kind, role.Rules, want)
	}
}
