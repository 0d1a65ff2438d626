package rollback

import (
	"context"
	"fmt"
	"maps"
	"slices"
	"strings"

	"github.com/rollguard/rollguard/pkg/kube"
)

// LeftState is the Deployment as a stopped run left it, for the page and
// the incident record: a rollback that stops halfway (the previous version
// unhealthy too, a rollout that timed out) leaves a state nobody chose,
// and the human taking over needs it exactly.
type LeftState struct {
	// Summary is one line for a page's title, e.g. "left at 2 of 4
	// replicas of pggit-api:v1.0.3 (1 available)".
	Summary string `json:"summary"`
	// Detail is the Deployment's state (images, replicas asked, updated,
	// ready, available) and what a human must decide, with the command.
	Detail string `json:"detail"`
}

// leftBehind reads the Deployment as the stopped run leaves it and says
// what a human must decide: which version is in place (the pinned one, the
// bad one, or neither), at how many of the recorded replicas, and the
// choices from there. rollguard never toggles back to the bad version by
// itself, so the text says that too.
func (r *run) leftBehind(ctx context.Context) *LeftState {
	gctx, cancel := context.WithTimeout(ctx, r.e.opts.QueryTimeout)
	defer cancel()
	dep, err := r.e.cluster.Get(gctx, r.t.Namespace, r.t.Deployment)
	if err != nil {
		return &LeftState{Summary: "state unknown", Detail: fmt.Sprintf("deployment %s unreadable when the run stopped (%v): check by hand what runs", r.name(), err)}
	}
	live := kube.Images(&dep.Spec.Template)
	asked, rec, avail := kube.Replicas(dep), r.j.Replicas, dep.Status.AvailableReplicas
	bad := bareImages(r.j.Bad.Images)
	scale := fmt.Sprintf("kubectl -n %s scale deployment/%s --replicas=%d", r.t.Namespace, r.t.Deployment, rec)
	var pinned string
	if r.j.Pinned != nil {
		pinned = bareImages(r.j.Pinned.Images)
	}
	var decide string
	switch {
	case r.j.Pinned != nil && maps.Equal(live, r.j.Pinned.Images) && asked < rec:
		decide = fmt.Sprintf("the previous version %s is in place at %d of the %d recorded replicas (%d available); the bad version %s is not running. "+
			"Decide: if %s serves well enough, scale it to the recorded count (%s); if it is unhealthy too, roll back further to an older version "+
			"(rollback.stableImage, or deploy it) or fix forward. rollguard will not put %s back.", pinned, asked, rec, avail, bad, pinned, scale, bad)
	case r.j.Pinned != nil && maps.Equal(live, r.j.Pinned.Images):
		decide = fmt.Sprintf("the previous version %s is in place at %d of the %d recorded replicas (%d available); the bad version %s is not running. "+
			"Decide whether %s is healthy: if not, roll back further to an older version (rollback.stableImage, or deploy it) or fix forward. "+
			"rollguard will not put %s back.", pinned, asked, rec, avail, bad, pinned, bad)
	case maps.Equal(live, r.j.Bad.Images) && asked == 0:
		decide = fmt.Sprintf("the bad version %s is still the template, at 0 of the %d recorded replicas: the service is DOWN. "+
			"Decide: finish the rollback (rollguard rollback resumes this run while it is recent) or serve %s again (%s).", bad, rec, bad, scale)
	case maps.Equal(live, r.j.Bad.Images):
		decide = fmt.Sprintf("the bad version %s still runs at %d replicas (%d available): nothing was rolled back. "+
			"Decide: retry (rollguard rollback), roll back by hand, or fix forward.", bad, asked, avail)
	default:
		decide = fmt.Sprintf("the template is %s, neither the bad version %s nor the previous version %s: someone changed it, and it is theirs to decide.",
			bareImages(live), bad, orNone(pinned))
	}
	return &LeftState{
		Summary: fmt.Sprintf("left at %d of %d replicas of %s (%d available)", asked, rec, bareImages(live), avail),
		Detail:  "deployment " + kube.DescribeState(dep) + "; " + decide,
	}
}

// bareImages is a version as pages show it: the images in container
// order, without the container names.
func bareImages(m map[string]string) string {
	parts := make([]string, 0, len(m))
	for _, c := range slices.Sorted(maps.Keys(m)) {
		parts = append(parts, m[c])
	}
	return strings.Join(parts, ",")
}
