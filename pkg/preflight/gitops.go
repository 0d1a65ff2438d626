package preflight

import (
	"context"
	"fmt"

	"k8s.io/client-go/dynamic"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/kube"
)

// GitOpsDetector finds the Flux or Argo CD object that reconciles a
// Deployment; *gitops.Manager implements it.
type GitOpsDetector interface {
	Detect(ctx context.Context, labels, annotations map[string]string, argoNamespace string) (*gitops.Owner, error)
}

// gitopsCheck tells the pipeline, before the deploy, what an automatic
// rollback of this target would meet: no GitOps owner, or an owner and
// what the target's gitops.mode makes of it. It reads what the executor's
// preflight reads (the Deployment's labels and annotations, then the
// owning object), so the two cannot disagree. A refuse policy is a warn,
// not a fail: it is a legitimate choice, but on-call should know that
// rollguard will page instead of rolling back.
func (r *runner) gitopsCheck(ctx context.Context) Check {
	return r.check(ctx, ItemPrevious, "previous.gitops", r.opts.CheckTimeout, func(ctx context.Context) (Status, string) {
		client, err := r.kube()
		if err != nil {
			return StatusFail, err.Error()
		}
		dep, err := kube.New(client, kube.Options{Timeout: r.opts.CheckTimeout}, r.logger).Get(ctx, r.t.Namespace, r.t.Deployment)
		if err != nil {
			return StatusFail, err.Error()
		}
		det, err := r.gitops()
		if err != nil {
			return StatusFail, err.Error()
		}
		mode := r.t.GitOps.Mode
		if mode == "" {
			mode = config.GitOpsRefuse
		}
		o, err := det.Detect(ctx, dep.Labels, dep.Annotations, r.t.GitOps.ArgoCDNamespace)
		switch {
		case err != nil && mode == config.GitOpsIgnore:
			return StatusWarn, fmt.Sprintf("cannot read the GitOps owner (%v); gitops.mode ignore: a rollback goes ahead regardless", err)
		case err != nil:
			return StatusFail, fmt.Sprintf("cannot tell whether GitOps manages %s/%s (%v): an automatic rollback would be refused", r.t.Namespace, r.t.Deployment, err)
		case o == nil:
			return StatusPass, fmt.Sprintf("no Flux or Argo CD object reconciles %s/%s", r.t.Namespace, r.t.Deployment)
		case o.SuspendedByRollguard():
			return StatusWarn, fmt.Sprintf("%s is still suspended by rollguard after an earlier rollback: revert in Git, or lift it with `rollguard resume-gitops --target %s`", o.Describe(), r.t.Name)
		}
		switch mode {
		case config.GitOpsSuspend:
			return StatusPass, fmt.Sprintf("%s reconciles it; gitops.mode suspend: a rollback suspends exactly that object before its first write", o.Describe())
		case config.GitOpsIgnore:
			return StatusWarn, fmt.Sprintf("%s reconciles it; gitops.mode ignore: the controller may put the bad version back after a rollback", o.Describe())
		}
		return StatusWarn, fmt.Sprintf("%s reconciles it; gitops.mode refuse: rollguard pages instead of rolling back, and a human reverts in Git (or set gitops.mode: suspend)", o.Describe())
	})
}

// gitops returns the injected detector, else one over the kubeconfig's
// dynamic client.
func (r *runner) gitops() (GitOpsDetector, error) {
	if r.opts.GitOps != nil {
		return r.opts.GitOps, nil
	}
	rc, err := r.restConfig()
	if err != nil {
		return nil, err
	}
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	r.opts.GitOps = gitops.NewManager(dc, gitops.Options{}, r.logger.Named("gitops"))
	return r.opts.GitOps, nil
}
