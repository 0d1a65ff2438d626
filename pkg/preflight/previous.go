package preflight

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strings"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
)

// previousChecks asks the rollback executor what its preflight would pin
// now (Executor.Plan writes nothing: no journal, no Deployment change), so
// this check and a real rollback cannot disagree about the target; then
// compares that target with the image about to be deployed.
func (r *runner) previousChecks(ctx context.Context) []Check {
	var target map[string]string // container -> image of the rollback target
	pin := r.check(ctx, ItemPrevious, "previous.target", r.opts.CheckTimeout, func(ctx context.Context) (Status, string) {
		var st Status
		var ev string
		target, st, ev = r.pinTarget(ctx)
		return st, ev
	})
	next := r.check(ctx, ItemPrevious, "previous.next-image", r.opts.CheckTimeout, func(context.Context) (Status, string) {
		return r.compareNext(target)
	})
	return []Check{pin, next, r.gitopsCheck(ctx)}
}

// RollbackPlan is the plan the daemon runs when a trigger of t asks for a
// rollback, from the executor's one mapping of requests to plans.
func RollbackPlan(t *config.Target) plan.Name {
	plan, _ := plan.For(plan.RequestRollback, t.Rollback.Plan(), false)
	return plan
}

func (r *runner) pinTarget(ctx context.Context) (map[string]string, Status, string) {
	client, err := r.kube()
	if err != nil {
		return nil, StatusFail, err.Error()
	}
	deps := kube.New(client, kube.Options{Timeout: r.opts.CheckTimeout}, r.logger)
	exec := rollback.NewExecutor(deps, client.CoreV1(), rollback.Options{QueryTimeout: r.opts.CheckTimeout}, r.logger)
	// Without Database only the plan's deployment part can be planned: the
	// pin is the same for every rolling plan, and the database has checks
	// of its own below.
	action := RollbackPlan(r.t).DeploymentPart()
	plan, err := exec.Plan(ctx, rollback.Target{
		Namespace: r.t.Namespace, Deployment: r.t.Deployment, Containers: r.t.Containers,
		Strategy: action, StableImage: r.t.Rollback.StableImage,
	}, action)
	if err != nil {
		if errors.Is(err, rollback.ErrAlreadyAtTarget) && len(r.t.Rollback.StableImage) > 0 {
			// Before a deploy the configured stable image normally is what
			// runs: it is the target once the new version is out.
			return selectImages(r.t.Rollback.StableImage, r.t.Containers), StatusPass,
				fmt.Sprintf("configured stable image %s is what %s/%s runs now: the executor pins it once the new version is deployed",
					kube.FormatImages(r.t.Rollback.StableImage), r.t.Namespace, r.t.Deployment)
		}
		if errors.Is(err, rollback.ErrAlreadyRolledBack) {
			// Redeploying after a rollback: what runs now is what rollguard
			// rolled back to, and the revision the executor pins once the
			// new version is out.
			dep, gerr := deps.Get(ctx, r.t.Namespace, r.t.Deployment)
			if gerr != nil {
				return nil, StatusFail, gerr.Error()
			}
			cur := kube.Images(&dep.Spec.Template)
			return selectImages(cur, r.t.Containers), StatusWarn,
				fmt.Sprintf("%v; %s runs now and is the target once the new version is deployed", err, kube.FormatImages(cur))
		}
		return nil, StatusFail, "the executor's preflight cannot pin a rollback target: " + err.Error()
	}
	if plan.Pinned == nil {
		return nil, StatusFail, fmt.Sprintf("the executor's %s plan pins no target", plan.Action)
	}
	p := plan.Pinned
	ev := fmt.Sprintf("executor would pin %s from %s", kube.FormatImages(p.Images), p.Source)
	if p.ReplicaSet != "" {
		ev += fmt.Sprintf(" (replicaset %s, revision %d, pod-template-hash %s)", p.ReplicaSet, p.Revision, p.Hash)
	}
	ev += fmt.Sprintf("; running %s (revision %d)", kube.FormatImages(plan.Bad.Images), plan.Bad.Revision)
	if plan.Resume {
		return selectImages(p.Images, r.t.Containers), StatusFail, ev + fmt.Sprintf("; a rollback run %s is in flight for this deployment", plan.RunID)
	}
	return selectImages(p.Images, r.t.Containers), StatusPass, ev
}

// compareNext fails when a container would roll back to the very image
// being deployed: the "previous stable version" would be the new one.
func (r *runner) compareNext(target map[string]string) (Status, string) {
	if len(r.nextImages) == 0 {
		return StatusWarn, "--next-image not given: cannot check the rollback target differs from what is about to be deployed"
	}
	if target == nil {
		return StatusSkip, "no rollback target to compare with"
	}
	for c := range r.nextImages {
		if c == "" {
			continue
		}
		if _, ok := target[c]; !ok {
			return StatusFail, fmt.Sprintf("--next-image names container %q, which the rollback target does not have (containers: %s)", c, strings.Join(keys(target), ", "))
		}
	}
	var same, differ []string
	for _, c := range keys(target) {
		next, ok := r.nextImages[c]
		if !ok {
			next, ok = r.nextImages[""]
		}
		if !ok {
			continue
		}
		if next == target[c] {
			same = append(same, c+"="+next)
		} else {
			differ = append(differ, fmt.Sprintf("%s: %s -> rollback to %s", c, next, target[c]))
		}
	}
	if len(same) > 0 {
		return StatusFail, fmt.Sprintf("the rollback target is the version being deployed (%s): a rollback would change nothing", strings.Join(same, ", "))
	}
	return StatusPass, "next version differs from the rollback target: " + strings.Join(differ, "; ")
}

// selectImages keeps the rolled-back containers (all when none is named).
func selectImages(images map[string]string, containers []string) map[string]string {
	if len(containers) == 0 {
		return images
	}
	out := map[string]string{}
	for _, c := range containers {
		if img, ok := images[c]; ok {
			out[c] = img
		}
	}
	return out
}

func keys[V any](m map[string]V) []string {
	out := make([]string, 0, len(m))
	for k := range m {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}
