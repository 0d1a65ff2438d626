package rollback

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
)

// prepare reads the live state and the journal and returns the run to
// execute: a resumed one, or a new one with its target pinned. It writes
// nothing but the closing of a run that can no longer be resumed;
// refusals come back as *RefusedError.
//
// An unfinished journal (running, failed) is resumed whatever was asked
// now, while it still describes the Deployment: a half done plan must be
// finished before another starts. It is closed instead when
//   - the target moved on: the live template is none the run started
//     from or wrote (a human deployed something else); the run is kept in
//     the history as superseded and a new request starts afresh;
//   - it is older than MaxResumeAge: the world the run was planned in is
//     gone; a human decides (ErrNeedsHuman), the run is kept as aborted.
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
	if kube.Frozen(dep) && !req.ResumeOnly {
		// (A resume is passed through the interlocks by Admit, which
		// reads the freeze and its note.)
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
	cur := CurrentRevision(dep, rss)
	r := &run{e: e, t: t, dep: dep, dryRun: req.DryRun, obs: req.Observer, drain: req.Drain}
	if r.obs == nil {
		r.obs = e.opts.Observer
	}
	now := e.opts.Now()
	maxAge := req.MaxResumeAge
	if maxAge <= 0 {
		maxAge = DefaultMaxResumeAge
	}

	var history []RunSummary
	bad := knownBad{}
	if j != nil {
		if j.State.resumable() {
			switch {
			case !knownTemplate(j, &dep.Spec.Template):
				// A human deployed another version while the run was down
				// or failed: it has nothing left to finish.
				cause := fmt.Errorf("target moved on to %s while the run was unfinished", kube.FormatImages(kube.Images(&dep.Spec.Template)))
				e.logger.Info("unfinished run superseded: the target moved on", zap.String("namespace", t.Namespace),
					zap.String("deployment", t.Deployment), zap.String("run", j.RunID))
				if req.DryRun {
					j.State, j.Error, j.Finished = RunSuperseded, cause.Error(), &now
				} else {
					// Closed now, with what it left behind put back: the
					// subscriptions it disabled are no new run's business.
					r.j, r.cm = j, cm
					r.close(ctx, RunSuperseded, cause)
					cm = r.cm
					r.j, r.cm = nil, nil
				}
				if req.ResumeOnly {
					return nil, refuse(ErrNothingToResume, "run "+j.RunID+" superseded: "+cause.Error())
				}
			case now.Sub(j.Started) > maxAge:
				detail := fmt.Sprintf("run %s started %s ago, over the %s a run may be resumed within; it stopped at %s (delete configmap %s/%s once resolved)",
					j.RunID, now.Sub(j.Started).Round(time.Second), maxAge, stoppedAt(j), t.Namespace, JournalName(dep.UID))
				if !req.DryRun {
					r.j, r.cm = j, cm
					r.abort(ctx, errors.New("not resumed: "+detail))
				}
				return nil, refuse(ErrNeedsHuman, detail)
			default:
				if j.Action != action && !req.ResumeOnly {
					e.logger.Warn("resuming the journaled plan instead of the requested one", zap.String("namespace", t.Namespace),
						zap.String("deployment", t.Deployment), zap.String("journaled", string(j.Action)), zap.String("requested", string(action)))
				}
				return e.resume(ctx, r, j, cm)
			}
		}
		if req.ResumeOnly {
			return nil, refuse(ErrNothingToResume, "")
		}
		switch j.State {
		case RunAborted:
			if knownTemplate(j, &dep.Spec.Template) {
				return nil, refuse(ErrNeedsHuman, fmt.Sprintf("run %s: %s (delete configmap %s/%s once resolved)", j.RunID, j.Error, t.Namespace, JournalName(dep.UID)))
			}
		case RunSucceeded:
			if j.Action.Rolls() == action.Rolls() {
				if kube.EqualTemplates(&dep.Spec.Template, finalTemplate(j)) {
					return nil, refuse(ErrAlreadyRolledBack, fmt.Sprintf("run %s (%s) finished at %s", j.RunID, j.Action, fmtTime(j.Finished)))
				}
			}
		}
		if action.Rolls() && cur.Hash != "" && cur.Hash == j.Bad.Hash && j.State == RunSucceeded && j.GitOps != nil {
			// Its controller put it back: say so (a page), and do not fight
			// it with a second rollback.
			return nil, refuse(ErrGitOpsReverted, fmt.Sprintf("revision %s was rolled back by run %s and %s deployed it again: not retrying against it; %s",
				cur.Hash, j.RunID, j.GitOps.Owner.Describe(), revertHint(&j.GitOps.Owner, kube.FormatImages(j.Bad.Images))))
		}
		if action.Rolls() && cur.Hash != "" && j.knownBad().hashes[cur.Hash] {
			// This revision was rolled back before and has been deployed
			// again: one rollback per bad revision; a human redeployed it
			// and decides.
			return nil, refuse(ErrAlreadyRolledBack, fmt.Sprintf("revision %s was rolled back before (journal history) and has been redeployed", cur.Hash))
		}
		// A finished (or just superseded) run: the new run replaces it
		// and keeps it in the history.
		r.prevJournal = cm
		bad = j.knownBad()
		history = append([]RunSummary{j.summary()}, j.History...)
		if len(history) > maxHistory {
			history = history[:maxHistory]
		}
	} else if req.ResumeOnly {
		return nil, refuse(ErrNothingToResume, "")
	}

	// New run: preflight. Nothing below writes.
	if dep.Spec.Paused {
		return nil, refuse(ErrPaused, "")
	}
	j = &Journal{
		Version:    journalVersion,
		RunID:      runID(now, history),
		Namespace:  t.Namespace,
		Deployment: t.Deployment,
		UID:        dep.UID,
		Action:     action,
		Reason:     req.Reason,
		State:      RunRunning,
		Started:    now,
		Bad:        cur,
		Incident:   req.Incident,
		History:    history,
	}
	if action.Rolls() {
		p, err := pin(t, dep, rss, cur, bad)
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
	if (action == plan.Quick || action == plan.MultiRegion) && t.Database != nil && t.Database.DB != nil && t.Database.Migration != "" {
		qctx, cancel := context.WithTimeout(ctx, e.opts.QueryTimeout)
		applied, err := t.Database.DB.MigrationApplied(qctx, t.Database.Migration)
		cancel()
		if err != nil {
			return nil, fmt.Errorf("deployment %s/%s: preflight: check migration %q: %w", t.Namespace, t.Deployment, t.Database.Migration, err)
		}
		j.MigrationApplied = applied
	}
	if action == plan.Revert && t.RevertMaxSurge != nil && dep.Spec.Strategy.Type != appsv1.RecreateDeploymentStrategyType {
		if from := kube.MaxSurge(dep); from == nil || *from != *t.RevertMaxSurge {
			j.Surge = &Surge{To: *t.RevertMaxSurge}
			if from != nil {
				f := *from
				j.Surge.From = &f
			}
		}
	}
	if action.Rolls() && t.GitOps.Owners != nil {
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
	r.j = j
	if j.step(StepDBRestore) != nil {
		// Refuse before the first write a restore that would be refused
		// at its step, with the app already stopped.
		if err := r.checkPreDeployDump(ctx); err != nil {
			return nil, refuse(err, "")
		}
	}
	j.Steps[0].State = StepDone
	j.Steps[0].Started, j.Steps[0].Finished = ptrTime(now), ptrTime(now)
	j.Steps[0].Detail = preflightDetail(j)
	r.exp = kube.Expect{UID: string(dep.UID), Template: dep.Spec.Template.DeepCopy(), Replicas: &j.Replicas}
	return r, nil
}

// resume prepares the continuation of the unfinished run j.
func (e *Executor) resume(ctx context.Context, r *run, j *Journal, cm *corev1.ConfigMap) (*run, error) {
	t, dep := r.t, r.dep
	if err := t.check(j.Action); err != nil {
		return nil, fmt.Errorf("resume run %s: %w", j.RunID, err)
	}
	if err := t.supports(j); err != nil {
		return nil, fmt.Errorf("resume run %s: %w", j.RunID, err)
	}
	if dep.Spec.Paused {
		return nil, &RefusedError{Namespace: t.Namespace, Deployment: t.Deployment, Reason: ErrPaused, Detail: "paused while run " + j.RunID + " was in flight"}
	}
	r.j, r.cm, r.resumed = j, cm, true
	r.exp = kube.Expect{UID: string(dep.UID), Template: dep.Spec.Template.DeepCopy()}
	if n, ok := j.expectedReplicas(); ok {
		// The run left the Deployment at n replicas and has not scaled it
		// since: anything else is a human's hand (a scale back up after a
		// failed stop-and-restore), and the run must not go on over it.
		if live := kube.Replicas(dep); live != n {
			cc := &kube.ConcurrentChangeError{Namespace: t.Namespace, Name: t.Deployment, Field: "spec.replicas",
				Detail: fmt.Sprintf("%d, the run left %d", live, n)}
			if !r.dryRun {
				r.abort(ctx, cc)
			}
			return nil, fmt.Errorf("resume run %s: %w", j.RunID, cc)
		}
		r.exp.Replicas = &n
	}
	return r, nil
}

// expectedReplicas is the replica count the run left the Deployment at,
// when it knows it: after its stop and before its ramp began.
func (j *Journal) expectedReplicas() (int32, bool) {
	stop, ramp := j.step(StepStop), j.step(StepRamp)
	if stop == nil || stop.State != StepDone {
		return 0, false
	}
	if ramp != nil && ramp.State != StepPending {
		return 0, false
	}
	return 0, true
}

// stoppedAt names where an unfinished run stopped.
func stoppedAt(j *Journal) string {
	for _, s := range j.Steps {
		switch s.State {
		case StepRunning, StepFailed:
			return fmt.Sprintf("step %s (%s)", s.Name, s.State)
		case StepPending:
			return "before step " + s.Name
		}
	}
	return "the end of its steps"
}

// abort records a stop found before any step ran (a resume that must not
// go on).
func (r *run) abort(ctx context.Context, cause error) { r.close(ctx, RunAborted, cause) }

// currentRevision is the ReplicaSet running dep's template now (the highest
// revision with an equal template); when the controller has not created it
// yet only the template is known.
func CurrentRevision(dep *appsv1.Deployment, rss []appsv1.ReplicaSet) Revision {
	rev := Revision{Template: *dep.Spec.Template.DeepCopy(), Images: kube.Images(&dep.Spec.Template)}
	for i := len(rss) - 1; i >= 0; i-- {
		tmpl := kube.TemplateOf(&rss[i])
		if kube.EqualTemplates(&tmpl, &dep.Spec.Template) {
			rev.ReplicaSet = rss[i].Name
			rev.Hash = rss[i].Labels[kube.PodTemplateHashLabel]
			rev.Revision, _ = kube.Revision(&rss[i])
			rev.DeployedAt = rss[i].CreationTimestamp.Time
			break
		}
	}
	return rev
}

// pin fixes the rollback target before any write: the configured stable
// images, or the newest ReplicaSet older than the current one with a
// different template. Never `rollout undo`: the reused ReplicaSet gets a new
// revision, so a second undo would bring the bad version back.
//
// A revision the Deployment's journal records as rolled back (bad) is never
// pinned: with the ReplicaSet of the human's fix reused at a new revision,
// "the previous revision" can be the bad one itself.
func pin(t Target, dep *appsv1.Deployment, rss []appsv1.ReplicaSet, cur Revision, bad knownBad) (*Pinned, error) {
	if len(t.StableImage) > 0 {
		tmpl, err := kube.WithImages(dep.Spec.Template, t.StableImage)
		if err != nil {
			return nil, fmt.Errorf("deployment %s/%s: stable image: %w: %w", t.Namespace, t.Deployment, err, ErrNotConfigured)
		}
		if kube.EqualTemplates(&tmpl, &dep.Spec.Template) {
			return nil, &RefusedError{Reason: ErrAlreadyAtTarget, Detail: "runs " + kube.FormatImages(kube.Images(&tmpl))}
		}
		// A stable image is the operator's explicit choice; it is refused
		// only when it is exactly a revision already rolled back.
		for i := range rss {
			rt := kube.TemplateOf(&rss[i])
			if kube.EqualTemplates(&rt, &tmpl) && bad.hashes[rss[i].Labels[kube.PodTemplateHashLabel]] {
				return nil, &RefusedError{Reason: ErrPinnedBad, Detail: "stable image " + kube.FormatImages(kube.Images(&tmpl)) + " is a revision rolled back before"}
			}
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
		if bad.has(rs.Labels[kube.PodTemplateHashLabel], kube.Images(&tmpl)) {
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

// runID names a new run by its start, to the second; a second run started
// within the same second as one the journal remembers gets a suffix, so a
// run ID (and the forensic dump named after it) is never reused.
func runID(now time.Time, history []RunSummary) string {
	id := now.UTC().Format("20060102T150405Z")
	taken := map[string]bool{}
	for _, h := range history {
		taken[h.RunID] = true
	}
	for n := 2; taken[id]; n++ {
		id = fmt.Sprintf("%s-%d", now.UTC().Format("20060102T150405Z"), n)
	}
	return id
}
