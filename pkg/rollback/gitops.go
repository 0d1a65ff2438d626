package rollback

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"

	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/kube"
)

// Step names of a plan on a Deployment a GitOps controller reconciles.
const (
	// StepGitOpsSuspend suspends the owner's reconciliation before the
	// first write to the Deployment.
	StepGitOpsSuspend = "gitops-suspend"
	// StepGitOpsCheck, the last step, checks the suspension still holds
	// and the template is still the pinned one: a controller that fought
	// the rollback stops the plan instead of it reporting success.
	StepGitOpsCheck = "gitops-check"
)

// GitOps refusals and stops.
var (
	// ErrGitOpsManaged: a GitOps controller reconciles the Deployment and
	// the policy is refuse: a human reverts the bad commit in Git.
	ErrGitOpsManaged = errors.New("managed by GitOps")
	// ErrGitOpsUnknown: whether a GitOps controller reconciles the
	// Deployment could not be read; acting blind could start a fight.
	ErrGitOpsUnknown = errors.New("cannot tell whether GitOps manages the deployment")
	// ErrGitOpsReverted: the bad revision came back after a rollback of a
	// GitOps-managed Deployment; rollguard does not fight its controller.
	ErrGitOpsReverted = errors.New("the GitOps controller put the bad revision back")
	// ErrGitOpsResumed: the owner's reconciliation was turned back on
	// while the plan ran: the controller will undo the rollback.
	ErrGitOpsResumed = errors.New("reconciliation resumed during the rollback")
)

// GitOpsOwners finds and suspends the objects that reconcile Deployments;
// *gitops.Manager implements it.
type GitOpsOwners interface {
	Detect(ctx context.Context, labels, annotations map[string]string, argoNamespace string) (*gitops.Owner, error)
	Get(ctx context.Context, ref gitops.Ref) (*gitops.Owner, error)
	Suspend(ctx context.Context, ref gitops.Ref, mark gitops.Mark) (*gitops.Owner, bool, error)
	Lift(ctx context.Context, ref gitops.Ref, keep *gitops.Mark) (*gitops.Owner, error)
}

// GitOpsPolicy says what a plan does on a Deployment that a GitOps
// controller reconciles.
type GitOpsPolicy struct {
	// Mode is gitops.ModeRefuse (the default), ModeSuspend or ModeIgnore.
	Mode string
	// ArgoNamespace is where Argo CD keeps its Applications.
	ArgoNamespace string
	// Target is the target's name, written in a suspension's mark.
	Target string
	// Owners looks owners up; nil: GitOps is not looked at.
	Owners GitOpsOwners
}

func (p GitOpsPolicy) mode() string {
	if p.Mode == "" {
		return gitops.ModeRefuse
	}
	return p.Mode
}

// GitOpsRecord is what the journal keeps about the owner of the
// Deployment: found at preflight, before any write, so a resume suspends
// exactly the same object and a stop can lift it again.
type GitOpsRecord struct {
	Mode  string       `json:"mode"`
	Owner gitops.Owner `json:"owner"`
	// Wrote: this run's suspend step turned reconciliation off (false: it
	// was off already, or the step has not run).
	Wrote bool `json:"wrote,omitempty"`
	// Lifted: the run stopped before writing to the Deployment and put
	// the owner's reconciliation back on.
	Lifted bool `json:"lifted,omitempty"`
}

// commitOf is the commit of a Flux revision ("main@sha1:abc" → "abc");
// other revisions are returned as they are.
func commitOf(rev string) string {
	if i := strings.LastIndex(rev, ":"); i >= 0 && strings.Contains(rev, "@sha") {
		return rev[i+1:]
	}
	return rev
}

// revertHint is what a human must do in Git.
func revertHint(o *gitops.Owner, bad string) string {
	where := "the commit that deploys " + bad
	if c := commitOf(o.Revision); c != "" && o.Kind != gitops.KindHelmRelease {
		where = "commit " + c + " (it deploys " + bad + ")"
	} else if o.Kind == gitops.KindHelmRelease {
		where = "the change to " + o.String() + " that deploys " + bad
	}
	return "revert " + where + " in Git"
}

// gitopsPreflight looks for the Deployment's owner. It writes nothing; a
// refusal comes back as a *RefusedError.
func (e *Executor) gitopsPreflight(ctx context.Context, t Target, dep *appsv1.Deployment, cur Revision) (*GitOpsRecord, error) {
	p := t.GitOps
	mode := p.mode()
	refuse := func(reason error, detail string) error {
		return &RefusedError{Namespace: t.Namespace, Deployment: t.Deployment, Reason: reason, Detail: detail}
	}
	o, err := p.Owners.Detect(ctx, dep.Labels, dep.Annotations, p.ArgoNamespace)
	if err != nil {
		if mode == gitops.ModeIgnore {
			e.logger.Warn("gitops owner unreadable; ignored by policy", zap.String("namespace", t.Namespace), zap.String("deployment", t.Deployment), zap.Error(err))
			return nil, nil
		}
		return nil, refuse(ErrGitOpsUnknown, err.Error())
	}
	if o == nil {
		return nil, nil
	}
	rec := &GitOpsRecord{Mode: mode, Owner: *o}
	if mode == gitops.ModeRefuse && !o.Suspended {
		return nil, refuse(ErrGitOpsManaged, fmt.Sprintf("%s reconciles it and would put %s back: %s (or set gitops.mode: suspend)",
			o.Describe(), kube.FormatImages(cur.Images), revertHint(o, kube.FormatImages(cur.Images))))
	}
	return rec, nil
}

// suspends reports whether the run suspends its owner.
func (j *Journal) suspends() bool { return j.GitOps != nil && j.GitOps.Mode == gitops.ModeSuspend }

func describeGitOpsSuspend(r *run) string {
	o := &r.j.GitOps.Owner
	return fmt.Sprintf("suspend %s (%s) before the first write", o.Describe(), gitops.What(o.Kind))
}

func runGitOpsSuspend(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	g := r.j.GitOps
	bad := kube.FormatImages(r.j.Bad.Images)
	o, wrote, err := r.t.GitOps.Owners.Suspend(ctx, g.Owner.Ref, gitops.Mark{
		Target: r.t.GitOps.Target, Run: r.j.RunID, Revision: g.Owner.Revision, Bad: bad, BadHash: r.j.Bad.Hash,
	})
	if err != nil {
		return "", fmt.Errorf("deployment %s: suspend %s: %w", r.name(), g.Owner.String(), err)
	}
	g.Wrote = g.Wrote || wrote
	g.Lifted = false
	rev := g.Owner.Revision
	g.Owner.Suspended, g.Owner.Mark, g.Owner.Generation = o.Suspended, o.Mark, o.Generation
	if o.Mark == nil {
		return fmt.Sprintf("%s was already suspended, not by rollguard: left as it is; Git at %s deploys %s: %s",
			g.Owner.String(), orNone(rev), bad, revertHint(&g.Owner, bad)), nil
	}
	lift := "the suspension lifts itself when the source moves past " + rev
	if rev == "" {
		lift = "the source's revision is unknown, so only a human lifts it"
	}
	return fmt.Sprintf("suspended %s (%s); Git at %s deploys %s: %s; %s, or `rollguard resume-gitops --target %s`",
		g.Owner.String(), gitops.What(g.Owner.Kind), orNone(rev), bad, revertHint(&g.Owner, bad), lift, r.t.GitOps.Target), nil
}

func runGitOpsCheck(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	g := r.j.GitOps
	o, err := r.t.GitOps.Owners.Get(ctx, g.Owner.Ref)
	if err != nil {
		return "", fmt.Errorf("deployment %s: read %s: %w", r.name(), g.Owner.String(), err)
	}
	if !o.Suspended {
		return "", fmt.Errorf("deployment %s: %s: %w: its controller will put %s back; not retrying against it",
			r.name(), o.String(), ErrGitOpsResumed, kube.FormatImages(r.j.Bad.Images))
	}
	dep, err := r.e.cluster.Get(ctx, r.t.Namespace, r.t.Deployment)
	if err != nil {
		return "", err
	}
	r.dep = dep
	if err := kube.Check(dep, r.templateExpect()); err != nil {
		return "", fmt.Errorf("deployment %s: after the rollback, with %s suspended: %w", r.name(), o.String(), err)
	}
	return fmt.Sprintf("%s still suspended; the template is still the pinned %s", o.String(), kube.FormatImages(r.j.Pinned.Images)), nil
}

// liftIfNothingWritten puts the owner's reconciliation back on when a run
// that suspended it stops before its first write to the Deployment: there
// is no rollback to protect, and leaving GitOps off would be a surprise.
// The suspend step goes back to pending, so a resume suspends again.
func (r *run) liftIfNothingWritten(ctx context.Context) {
	g := r.j.GitOps
	if g == nil || !g.Wrote || r.t.GitOps.Owners == nil {
		return
	}
	after := false
	var suspend *StepRecord
	for i := range r.j.Steps {
		s := &r.j.Steps[i]
		if s.Name == StepGitOpsSuspend {
			after, suspend = true, s
			continue
		}
		if after && s.State != StepPending {
			return // a write may have happened
		}
	}
	if suspend == nil {
		return
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), r.e.opts.JournalTimeout)
	defer cancel()
	if _, err := r.t.GitOps.Owners.Lift(lctx, g.Owner.Ref, nil); err != nil {
		r.log().Error("suspension not lifted after the run stopped before any write", zap.String("owner", g.Owner.String()), zap.Error(err))
		return
	}
	g.Wrote, g.Lifted = false, true
	suspend.State = StepPending
	suspend.Detail = "lifted again: the run stopped before writing to the deployment"
	r.log().Info("gitops suspension lifted: the run stopped before any write", zap.String("owner", g.Owner.String()))
}

// gitopsNote says, for pages and the incident record, what was suspended
// and what a human must revert in Git.
func (j *Journal) gitopsNote(target string) string {
	g := j.GitOps
	if g == nil {
		return ""
	}
	bad := kube.FormatImages(j.Bad.Images)
	switch {
	case g.Mode == gitops.ModeSuspend && g.Wrote:
		return fmt.Sprintf("rollguard suspended %s; Git at %s still deploys %s: %s, then `rollguard resume-gitops --target %s` (or it lifts itself when the source moves on)",
			g.Owner.String(), orNone(g.Owner.Revision), bad, revertHint(&g.Owner, bad), target)
	case g.Owner.Suspended:
		return fmt.Sprintf("%s was already suspended; Git at %s still deploys %s: %s", g.Owner.String(), orNone(g.Owner.Revision), bad, revertHint(&g.Owner, bad))
	case g.Mode == gitops.ModeIgnore:
		return fmt.Sprintf("%s reconciles this deployment (gitops.mode ignore): it may put %s back; %s", g.Owner.Describe(), bad, revertHint(&g.Owner, bad))
	}
	return g.Owner.Describe()
}
