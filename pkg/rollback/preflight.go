package rollback

import (
	"context"
	"errors"
	"fmt"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/rollguard/rollguard/pkg/kube"
)

// prepare reads the live state and the journal and returns the run to
// execute: a resumed one, or a new one with its target pinned. It writes
// nothing; refusals come back as *RefusedError.
func (e *Executor) prepare(ctx context.Context, req Request) (*run, error) {
	t := req.Target.withDefaults()
	action := req.Action
	if action == "" {
		action = t.Strategy
	}
	if err := t.check(action); err != nil {
		return nil, err
	}
	refuse := func(reason error, detail string) error {
		return &RefusedError{Namespace: t.Namespace, Deployment: t.Deployment, Reason: reason, Detail: detail}
	}

	dep, err := e.cluster.Get(ctx, t.Namespace, t.Deployment)
	if err != nil {
		return nil, err
	}
	if kube.Frozen(dep) {
		return nil, refuse(ErrFrozen, "")
	}
	j, cm, err := e.journals.load(ctx, t.Namespace, dep.UID)
	if err != nil {
		return nil, err
	}
	rss, err := e.cluster.ReplicaSets(ctx, dep)
	if err != nil {
		return nil, err
	}
	cur := currentRevision(dep, rss)
	r := &run{e: e, t: t, dep: dep, dryRun: req.DryRun}

	if j != nil {
		switch j.State {
		case RunRunning, RunFailed:
			// An in-flight run is resumed whatever was asked now: a half
			// done plan must be finished (or stopped) before another starts.
			if j.Action != action {
				e.logger.Warn("resuming the journaled plan instead of the requested one", zap.String("namespace", t.Namespace),
					zap.String("deployment", t.Deployment), zap.String("journaled", string(j.Action)), zap.String("requested", string(action)))
			}
			if err := t.check(j.Action); err != nil {
				return nil, fmt.Errorf("resume run %s: %w", j.RunID, err)
			}
			if err := t.supports(j); err != nil {
				return nil, fmt.Errorf("resume run %s: %w", j.RunID, err)
			}
			if dep.Spec.Paused {
				return nil, refuse(ErrPaused, "paused while run "+j.RunID+" was in flight")
			}
			if !knownTemplate(j, &dep.Spec.Template) {
				// Someone else changed the template while the run was down.
				cc := &kube.ConcurrentChangeError{Namespace: t.Namespace, Name: t.Deployment, Field: "spec.template"}
				if !req.DryRun {
					r.j, r.cm = j, cm
					r.abort(ctx, cc)
				}
				return nil, fmt.Errorf("resume run %s: %w", j.RunID, cc)
			}
			r.j, r.cm, r.resumed = j, cm, true
			r.exp = kube.Expect{UID: string(dep.UID), Template: dep.Spec.Template.DeepCopy()}
			return r, nil
		case RunAborted:
			if knownTemplate(j, &dep.Spec.Template) {
				return nil, refuse(ErrNeedsHuman, fmt.Sprintf("run %s: %s (delete configmap %s/%s once resolved)", j.RunID, j.Error, t.Namespace, JournalName(dep.UID)))
			}
		case RunSucceeded:
			if j.Action.rolls() == action.rolls() {
				if kube.EqualTemplates(&dep.Spec.Template, finalTemplate(j)) {
					return nil, refuse(ErrAlreadyRolledBack, fmt.Sprintf("run %s (%s) finished at %s", j.RunID, j.Action, fmtTime(j.Finished)))
				}
				if action.rolls() && cur.Hash != "" && cur.Hash == j.Bad.Hash && j.GitOps != nil {
					// Its controller put it back: say so (a page), and do
					// not fight it with a second rollback.
					return nil, refuse(ErrGitOpsReverted, fmt.Sprintf("revision %s was rolled back by run %s and %s deployed it again: not retrying against it; %s",
						cur.Hash, j.RunID, j.GitOps.Owner.Describe(), revertHint(&j.GitOps.Owner, kube.FormatImages(j.Bad.Images))))
				}
				if action.rolls() && cur.Hash != "" && cur.Hash == j.Bad.Hash {
					// The bad revision was deployed again after rollguard
					// rolled it back: one rollback per bad revision; a human
					// redeployed it and decides.
					return nil, refuse(ErrAlreadyRolledBack, fmt.Sprintf("revision %s was rolled back by run %s and has been redeployed", cur.Hash, j.RunID))
				}
			}
		}
		// A finished run of another revision: the new run replaces it.
		r.prevJournal = cm
	}

	// New run: preflight. Nothing below writes.
	if dep.Spec.Paused {
		return nil, refuse(ErrPaused, "")
	}
	now := e.opts.Now()
	j = &Journal{
		Version:    journalVersion,
		RunID:      now.UTC().Format("20060102T150405Z"),
		Namespace:  t.Namespace,
		Deployment: t.Deployment,
		UID:        dep.UID,
		Action:     action,
		Reason:     req.Reason,
		State:      RunRunning,
		Started:    now,
		Bad:        cur,
	}
	if action.rolls() {
		p, err := pin(t, dep, rss, cur)
		if err != nil {
			var ref *RefusedError
			if errors.As(err, &ref) {
				ref.Namespace, ref.Deployment = t.Namespace, t.Deployment
			}
			return nil, err
		}
		j.Pinned = p
	}
	scale, err := e.cluster.GetScale(ctx, t.Namespace, t.Deployment)
	if err != nil {
		return nil, err
	}
	j.Replicas = scale.Spec.Replicas
	if (action == ActionQuick || action == ActionMultiRegion) && t.Database != nil && t.Database.DB != nil && t.Database.Migration != "" {
		qctx, cancel := context.WithTimeout(ctx, e.opts.QueryTimeout)
		applied, err := t.Database.DB.MigrationApplied(qctx, t.Database.Migration)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("deployment %s/%s: preflight: check migration %q: %w", t.Namespace, t.Deployment, t.Database.Migration, err)
		}
		j.MigrationApplied = applied
	}
	if action == ActionRevert && t.RevertMaxSurge != nil && dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		if from := kube.MaxSurge(dep); from == nil || *from != *t.RevertMaxSurge {
			j.Surge = &Surge{To: *t.RevertMaxSurge}
			if from != nil {
				f := *from
				j.Surge.From = &f
			}
		}
	}
	if action.rolls() && t.GitOps.Owners != nil {
		g, err := e.gitopsPreflight(ctx, t, dep, cur)
		if err != nil {
			return nil, err
		}
		j.GitOps = g
	}
	for _, name := range planSteps(action, t, j) {
		def, _ := lookupStep(name)
		j.Steps = append(j.Steps, StepRecord{Name: name, State: StepPending, Idempotent: def.idempotent})
	}
	j.Steps[0].State = StepDone
	j.Steps[0].Started, j.Steps[0].Finished = ptrTime(now), ptrTime(now)
	j.Steps[0].Detail = preflightDetail(j)
	r.j = j
	r.exp = kube.Expect{UID: string(dep.UID), Template: dep.Spec.Template.DeepCopy(), Replicas: &j.Replicas}
	return r, nil
}

// abort records a stop found before any step ran (resume of a changed
// Deployment).
func (r *run) abort(ctx context.Context, cause error) {
	now := r.e.opts.Now()
	r.j.State = RunAborted
	r.j.Error = cause.Error()
	r.j.Finished = &now
	if err := r.save(ctx); err != nil {
		r.e.logger.Error("journal write after abort failed", zap.String("namespace", r.t.Namespace), zap.String("deployment", r.t.Deployment), zap.Error(err))
	}
}

// currentRevision is the ReplicaSet running dep's template now (the highest
// revision with an equal template); when the controller has not created it
// yet only the template is known.
func currentRevision(dep *appsv1.Deployment, rss []appsv1.ReplicaSet) Revision {
	rev := Revision{Template: *dep.Spec.Template.DeepCopy(), Images: kube.Images(&dep.Spec.Template)}
	for i := len(rss) - 1; i >= 0; i-- {
		tmpl := kube.TemplateOf(&rss[i])
		if kube.EqualTemplates(&tmpl, &dep.Spec.Template) {
			rev.ReplicaSet = rss[i].Name
			rev.Hash = rss[i].Labels[kube.PodTemplateHashLabel]
			rev.Revision, _ = kube.Revision(&rss[i])
			break
		}
	}
	return rev
}

// pin fixes the rollback target before any write: the configured stable
// images, or the newest ReplicaSet older than the current one with a
// different template. Never `rollout undo`: the reused ReplicaSet gets a new
// revision, so a second undo would bring the bad version back.
func pin(t Target, dep *appsv1.Deployment, rss []appsv1.ReplicaSet, cur Revision) (*Pinned, error) {
	if len(t.StableImage) > 0 {
		tmpl, err := kube.WithImages(dep.Spec.Template, t.StableImage)
		if err != nil {
			return nil, fmt.Errorf("deployment %s/%s: stable image: %w: %w", t.Namespace, t.Deployment, err, ErrNotConfigured)
		}
		if kube.EqualTemplates(&tmpl, &dep.Spec.Template) {
			return nil, &RefusedError{Reason: ErrAlreadyAtTarget, Detail: "runs " + kube.FormatImages(kube.Images(&tmpl))}
		}
		p := &Pinned{Source: "stable-image", Template: tmpl, Images: kube.Images(&tmpl)}
		for i := len(rss) - 1; i >= 0; i-- {
			rt := kube.TemplateOf(&rss[i])
			if kube.EqualTemplates(&rt, &tmpl) {
				p.ReplicaSet, p.Hash = rss[i].Name, rss[i].Labels[kube.PodTemplateHashLabel]
				p.Revision, _ = kube.Revision(&rss[i])
				break
			}
		}
		return p, nil
	}
	for i := len(rss) - 1; i >= 0; i-- {
		rs := &rss[i]
		rev, _ := kube.Revision(rs)
		if cur.ReplicaSet != "" && rev >= cur.Revision {
			continue
		}
		tmpl := kube.TemplateOf(rs)
		if sameVersion(&tmpl, &dep.Spec.Template) {
			// Same version, only restarted (a pool recovery's rolling
			// restart is a revision of its own): not a rollback target.
			continue
		}
		return &Pinned{Source: "previous-revision", ReplicaSet: rs.Name, Hash: rs.Labels[kube.PodTemplateHashLabel],
			Revision: rev, Template: tmpl, Images: kube.Images(&tmpl)}, nil
	}
	return nil, &RefusedError{Reason: ErrNoPreviousRevision, Detail: fmt.Sprintf("%d replicasets, current revision %d", len(rss), cur.Revision)}
}

// supports checks that the (possibly reloaded) config still has what the
// journaled steps need.
func (t Target) supports(j *Journal) error {
	for _, s := range j.Steps {
		needDB, needMR := false, false
		switch s.Name {
		case StepDBDump, StepDBRestore, StepDBVerify, StepTerminateIdle:
			needDB = true
		case StepLagCheck, StepWaitLag, StepDisableSubs, StepEnableSubs:
			needDB, needMR = true, true
		}
		if needDB && (t.Database == nil || t.Database.DB == nil) {
			return fmt.Errorf("deployment %s/%s: journaled step %s needs database settings: %w", t.Namespace, t.Deployment, s.Name, ErrNotConfigured)
		}
		if (s.Name == StepGitOpsSuspend || s.Name == StepGitOpsCheck) && t.GitOps.Owners == nil {
			return fmt.Errorf("deployment %s/%s: journaled step %s needs the gitops owners: %w", t.Namespace, t.Deployment, s.Name, ErrNotConfigured)
		}
		if needMR && t.MultiRegion == nil {
			return fmt.Errorf("deployment %s/%s: journaled step %s needs multiRegion settings: %w", t.Namespace, t.Deployment, s.Name, ErrNotConfigured)
		}
	}
	return nil
}

// sameVersion compares templates ignoring the restartedAt annotation.
func sameVersion(a, b *corev1.PodTemplateSpec) bool {
	ac, bc := a.DeepCopy(), b.DeepCopy()
	delete(ac.Annotations, kube.RestartedAtAnnotation)
	delete(bc.Annotations, kube.RestartedAtAnnotation)
	return kube.EqualTemplates(ac, bc)
}

// knownTemplate reports whether tmpl is one the journaled run expects to
// see: the one it started from, its pinned target, or one of its steps'
// intents.
func knownTemplate(j *Journal, tmpl *corev1.PodTemplateSpec) bool {
	if kube.EqualTemplates(tmpl, &j.Bad.Template) {
		return true
	}
	if j.Pinned != nil && kube.EqualTemplates(tmpl, &j.Pinned.Template) {
		return true
	}
	for _, s := range j.Steps {
		if s.Intent != nil && kube.EqualTemplates(tmpl, s.Intent) {
			return true
		}
	}
	return false
}

// finalTemplate is the template a finished run left in place.
func finalTemplate(j *Journal) *corev1.PodTemplateSpec {
	if j.Pinned != nil {
		return &j.Pinned.Template
	}
	for i := len(j.Steps) - 1; i >= 0; i-- {
		if j.Steps[i].Intent != nil {
			return j.Steps[i].Intent
		}
	}
	return &j.Bad.Template
}

func preflightDetail(j *Journal) string {
	s := fmt.Sprintf("running %s (revision %d, hash %s); replicas %d", kube.FormatImages(j.Bad.Images), j.Bad.Revision, orNone(j.Bad.Hash), j.Replicas)
	if j.Pinned != nil {
		s += fmt.Sprintf("; pinned %s from %s", kube.FormatImages(j.Pinned.Images), j.Pinned.Source)
		if j.Pinned.ReplicaSet != "" {
			s += fmt.Sprintf(" (replicaset %s, revision %d, hash %s)", j.Pinned.ReplicaSet, j.Pinned.Revision, j.Pinned.Hash)
		}
	}
	if j.MigrationApplied {
		s += "; migration applied"
	}
	if j.Surge != nil {
		s += "; maxSurge " + kube.SurgeString(j.Surge.From)
	}
	return s
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}
