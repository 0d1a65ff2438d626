package preflight

import (
	"context"
	"errors"
	"strings"
	"testing"

	appsv1 "k8s.io/api/apps/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollguard/rollguard/pkg/gitops"
)

type stubDetector struct {
	owner *gitops.Owner
	err   error
}

func (s stubDetector) Detect(context.Context, map[string]string, map[string]string, string) (*gitops.Owner, error) {
	return s.owner, s.err
}

func TestGitOpsCheck(t *testing.T) {
	flux := &gitops.Owner{Ref: gitops.Ref{Tool: "flux", Kind: gitops.KindKustomization, Namespace: "flux-system", Name: "apps"},
		Revision: "main@sha1:abc123"}
	ours := *flux
	ours.Suspended, ours.Mark = true, &gitops.Mark{State: gitops.StateSuspended}
	for _, tc := range []struct {
		name     string
		mode     string
		det      stubDetector
		status   Status
		evidence string
	}{
		{"not managed", "", stubDetector{}, StatusPass, "no Flux or Argo CD object reconciles production/pggit-api"},
		{"managed, refuse (the default)", "", stubDetector{owner: flux}, StatusWarn,
			"flux Kustomization flux-system/apps at main@sha1:abc123 reconciles it; gitops.mode refuse: rollguard pages instead of rolling back"},
		{"managed, suspend", "suspend", stubDetector{owner: flux}, StatusPass, "gitops.mode suspend: a rollback suspends exactly that object"},
		{"managed, ignore", "ignore", stubDetector{owner: flux}, StatusWarn, "gitops.mode ignore: the controller may put the bad version back"},
		{"still suspended by rollguard", "suspend", stubDetector{owner: &ours}, StatusWarn, "is still suspended by rollguard after an earlier rollback"},
		{"owner unreadable, refuse", "refuse", stubDetector{err: errors.New("kustomizations is forbidden")}, StatusFail,
			"cannot tell whether GitOps manages production/pggit-api (kustomizations is forbidden): an automatic rollback would be refused"},
		{"owner unreadable, ignore", "ignore", stubDetector{err: errors.New("kustomizations is forbidden")}, StatusWarn,
			"gitops.mode ignore: a rollback goes ahead regardless"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dep := &appsv1.Deployment{ObjectMeta: metav1.ObjectMeta{Namespace: "production", Name: "pggit-api",
				Labels: map[string]string{"kustomize.toolkit.fluxcd.io/name": "apps", "kustomize.toolkit.fluxcd.io/namespace": "flux-system"}}}
			r := newTestRunner(t, goodSecrets, "", func(o *Options) {
				o.Kube, o.GitOps = fake.NewSimpleClientset(dep), tc.det
			})
			r.t.GitOps.Mode = tc.mode
			c := r.gitopsCheck(context.Background())
			if c.Item != ItemPrevious || c.Name != "previous.gitops" || c.Status != tc.status || !strings.Contains(c.Evidence, tc.evidence) {
				t.Errorf("got %s %s %s %q; want %s containing %q", c.Item, c.Name, c.Status, c.Evidence, tc.status, tc.evidence)
			}
		})
	}
}
