package rollback

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"time"

	"go.uber.org/zap"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"

	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/plan"
)

// Step names, journaled: never rename one.
const (
	StepPreflight     = "preflight"
	StepStop          = "stop"
	StepDBReadOnly    = "db-readonly"
	StepDBDump        = "db-dump"
	StepDBRestore     = "db-restore"
	StepDBVerify      = "db-verify"
	StepApplication   = "application"
	StepWaitRollout   = "wait-rollout"
	StepRamp          = "ramp"
	StepVerify        = "verify"
	StepTerminateIdle = "terminate-sessions"
	StepRestart       = "restart"
	StepLagCheck      = "lag-check"
	StepDisableSubs   = "disable-subscriptions"
	StepEnableSubs    = "enable-subscriptions"
	StepWaitLag       = "wait-lag"
	StepSurge         = "surge"
	StepRestoreSurge  = "restore-surge"
)

// ReadOnlyEnv is the variable the full plan sets to stop the app writing.
const ReadOnlyEnv = "DB_READONLY"

// ErrUnhealthy: a health check, SELECT 1 or the Verifier did not pass.
var ErrUnhealthy = errors.New("unhealthy")

// stepDef is one kind of step.
//
// Idempotency, which decides what a resume may re-run:
//   - Kubernetes writes are absolute (replicas = n, template = T) and
//     checked against what the run expects, so re-running them is a no-op
//     or finishes the job. Template writes journal their intent first, so a
//     resume recognises a half-done write as its own.
//   - The forensic dump writes a path fixed in the journal, atomically: a
//     re-run replaces the same file.
//   - The restore is NOT idempotent once started: pg_restore runs in one
//     transaction, but a crash after its commit and before the journal write
//     is indistinguishable from a crash before it, and restoring again would
//     throw away whatever was written since. A resume stops there with an
//     UnsafeResumeError for a human.
//   - Terminating idle-in-transaction sessions, enabling/disabling
//     subscriptions, waits and checks are safe to repeat.
type stepDef struct {
	idempotent bool
	describe   func(r *run) string
	// prepare, if set, fixes the step's intent in rec before the start is
	// journaled.
	prepare func(r *run, rec *StepRecord)

	run func(ctx context.Context, r *run, rec *StepRecord) (string, error)
	// unsafeDetail tells a human how to finish a non-idempotent step.
	unsafeDetail func(r *run, rec *StepRecord) string
}

// Shape is what decides a plan's steps besides its action.
type Shape struct {
	// Restore: quick and multi-region run their database steps (the
	// target has database settings and the deploy's migration is applied).
	Restore bool
	// Surge: revert raises maxSurge for its rollout and puts it back.
	Surge bool
	// MultiRegion: full also handles the secondaries (an in-place restore
	// of the primary breaks their logical replication for good otherwise).
	MultiRegion bool
	// Suspend: a GitOps controller reconciles the Deployment and the
	// policy is suspend: its reconciliation is suspended right after
	// preflight, before the first write, and checked as the last step.
	Suspend bool
}

// Steps lists the steps of action's plan by the names the journal keeps.
func Steps(action plan.Name, s Shape) []string {
	steps := plainSteps(action, s)
	if s.Suspend && action.Rolls() {
		out := append([]string{steps[0], StepGitOpsSuspend}, steps[1:]...)
		return append(out, StepGitOpsCheck)
	}
	return steps
}

func plainSteps(action plan.Name, s Shape) []string {
	db := []string{}
	if s.Restore {
		db = []string{StepDBDump, StepDBRestore, StepDBVerify}
	}
	quick := append(append([]string{StepStop}, db...), StepApplication, StepWaitRollout, StepRamp, StepVerify)
	switch action {
	case plan.Revert:
		if s.Surge {
			return []string{StepPreflight, StepSurge, StepApplication, StepWaitRollout, StepRestoreSurge, StepVerify}
		}
		return []string{StepPreflight, StepApplication, StepWaitRollout, StepVerify}
	case plan.Full:
		full := []string{StepDBReadOnly, StepDBDump, StepStop, StepDBRestore, StepDBVerify, StepApplication, StepWaitRollout, StepRamp, StepVerify}
		if s.MultiRegion {
			// As multi-region: the secondaries stop applying before the
			// restore and are resynced from the restored primary after.
			out := append([]string{StepPreflight, StepLagCheck, StepDisableSubs}, full...)
			return append(out, StepEnableSubs, StepWaitLag)
		}
		return append([]string{StepPreflight}, full...)
	case plan.PoolRecovery:
		return []string{StepPreflight, StepTerminateIdle, StepRestart, StepWaitRollout}
	case plan.MultiRegion:
		out := []string{StepPreflight, StepLagCheck, StepDisableSubs}
		out = append(out, quick...)
		return append(out, StepEnableSubs, StepWaitLag)
	default:
		return append([]string{StepPreflight}, quick...)
	}
}

// planSteps lists a new run's steps; the list is journaled at preflight and
// a resume follows the journal, not the (possibly reloaded) config.
func planSteps(action plan.Name, t Target, j *Journal) []string {
	return Steps(action, Shape{Restore: t.Database != nil && t.Database.DB != nil && j.MigrationApplied, Surge: j.Surge != nil,
		MultiRegion: t.MultiRegion != nil && len(t.MultiRegion.Secondaries) > 0, Suspend: j.suspends()})
}

// lookupStep returns the definition of a journaled step name.
func lookupStep(name string) (stepDef, bool) {
	switch name {
	case StepPreflight:
		return stepDef{idempotent: true, describe: describePreflight,
			run: func(_ context.Context, r *run, _ *StepRecord) (string, error) { return preflightDetail(r.j), nil }}, true
	case StepStop:
		return stepDef{idempotent: true, describe: func(r *run) string {
			d := fmt.Sprintf("scale %s to 0 through the scale subresource (recorded %d replicas)", r.name(), r.j.Replicas)
			if r.databaseStepFollows(StepStop) {
				d += ", then wait until no pod is left, terminating ones included"
			}
			return d
		}, run: runStop}, true
	case StepDBReadOnly:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("set %s=true on the pod template of %s and wait for the rollout", ReadOnlyEnv, r.name())
		}, prepare: func(r *run, rec *StepRecord) {
			if rec.Intent == nil {
				tmpl := kube.WithEnv(*r.exp.Template, r.t.Containers, ReadOnlyEnv, "true")
				rec.Intent = &tmpl
			}
		}, run: runReadOnly}, true
	case StepDBDump:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return "forensic pg_dump -Fc to " + r.dumpPath()
		}, prepare: func(r *run, rec *StepRecord) {
			if rec.Path == "" {
				rec.Path = r.dumpPath()
			}
		}, run: runDump}, true
	case StepDBRestore:
		return stepDef{idempotent: false, describe: func(r *run) string {
			return "check that no pod runs and the pre-deploy dump is one to restore, then pg_restore --clean --if-exists --single-transaction " + r.t.Database.PreDeployDump
		}, run: runRestore, unsafeDetail: func(r *run, rec *StepRecord) string {
			return fmt.Sprintf("pg_restore of %s may or may not have committed; check the schema (migration %q) and row counts, finish the plan by hand "+
				"(pinned %s, recorded replicas %d), then delete configmap %s/%s",
				r.t.Database.PreDeployDump, r.t.Database.Migration, pinnedString(r.j.Pinned), r.j.Replicas, r.t.Namespace, JournalName(r.j.UID))
		}}, true
	case StepDBVerify:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return "SELECT 1, count rows of " + strings.Join(r.t.Database.Tables, ", ") + ", migration no longer applied"
		}, run: runDBVerify}, true
	case StepApplication:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("set the pod template of %s to the pinned %s", r.name(), pinnedString(r.j.Pinned))
		}, run: runApplication}, true
	case StepSurge:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("set maxSurge of %s from %s to %s for the rollout: the pinned version starts at once, the running one serves until it is available",
				r.name(), kube.SurgeString(r.j.Surge.From), r.j.Surge.To.String())
		}, run: runSurge}, true
	case StepRestoreSurge:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("put maxSurge of %s back to %s", r.name(), kube.SurgeString(r.j.Surge.From))
		}, run: runRestoreSurge}, true
	case StepWaitRollout:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("wait up to %s for the rollout (kubectl rollout status criteria)", r.t.RolloutTimeout)
		}, run: runWaitRollout}, true
	case StepRamp:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("scale up %s, pausing %s and health-checking between steps", rampString(rampTargets(r.t.RampSteps, r.j.Replicas)), r.t.RampPause)
		}, run: runRamp}, true
	case StepVerify:
		return stepDef{idempotent: true, describe: describeVerify, run: runVerify}, true
	case StepGitOpsSuspend:
		// Idempotent: the write is absolute (suspended, with rollguard's
		// mark) and the owner it suspends was journaled at preflight.
		return stepDef{idempotent: true, describe: describeGitOpsSuspend, run: runGitOpsSuspend}, true
	case StepGitOpsCheck:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("check %s is still suspended and the template is still the pinned one", r.j.GitOps.Owner.String())
		}, run: runGitOpsCheck}, true
	case StepTerminateIdle:
		return stepDef{idempotent: true, describe: func(r *run) string {
			p := r.t.PoolRecovery
			return fmt.Sprintf("terminate sessions of role %s, application %s idle in transaction for more than %s", p.Role, p.ApplicationName, p.OlderThan)
		}, run: runTerminateIdle}, true
	case StepRestart:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("rolling restart of %s (%s)", r.name(), kube.RestartedAtAnnotation)
		}, prepare: func(r *run, rec *StepRecord) {
			if rec.Intent == nil {
				tmpl := kube.WithRestartedAt(*r.exp.Template, r.e.opts.Now())
				rec.Intent = &tmpl
			}
		}, run: runRestart}, true
	case StepLagCheck:
		return stepDef{idempotent: true, describe: func(*run) string { return "read the primary's replication lag" }, run: runLagCheck}, true
	case StepDisableSubs:
		return stepDef{idempotent: true, describe: func(r *run) string { return "ALTER SUBSCRIPTION ... DISABLE on " + r.secondaries() }, run: runDisableSubs}, true
	case StepEnableSubs:
		return stepDef{idempotent: true, describe: func(r *run) string {
			if r.restoredPrimary() {
				return "resync (drop, recreate with copy_data) subscriptions on " + r.secondaries() + ": the primary was restored in place"
			}
			return "ALTER SUBSCRIPTION ... ENABLE on " + r.secondaries()
		}, run: runEnableSubs}, true
	case StepWaitLag:
		return stepDef{idempotent: true, describe: func(r *run) string {
			return fmt.Sprintf("wait up to %s for replication lag under %s", r.t.MultiRegion.LagTimeout, r.t.MultiRegion.MaxLag)
		}, run: runWaitLag}, true
	}
	return stepDef{}, false
}

func (r *run) name() string { return r.t.Namespace + "/" + r.t.Deployment }

func (r *run) dumpPath() string {
	return filepath.Join(r.t.Database.ForensicDir, fmt.Sprintf("%s-%s-%s-forensic.dump", r.t.Namespace, r.t.Deployment, r.j.RunID))
}

func (r *run) secondaries() string {
	var names []string
	for _, s := range r.t.MultiRegion.Secondaries {
		names = append(names, s.Name+"/"+s.Subscription)
	}
	return strings.Join(names, ", ")
}

// restoredPrimary: a restore of this run happened (or may have).
func (r *run) restoredPrimary() bool {
	s := r.j.step(StepDBRestore)
	return s != nil && s.State != StepPending && s.State != StepWouldRun
}

func (r *run) dbCtx(ctx context.Context, long bool) (context.Context, context.CancelFunc) {
	if long {
		return context.WithTimeout(ctx, r.e.opts.DumpTimeout)
	}
	return context.WithTimeout(ctx, r.e.opts.QueryTimeout)
}

// templateExpect is what a write may assume: the Deployment is still the
// one the run started on and carries the template the run last saw or
// wrote.
func (r *run) templateExpect() kube.Expect {
	return kube.Expect{UID: r.exp.UID, Template: r.exp.Template}
}

// setTemplate writes tmpl as the Deployment's template, on the
// expectation of templateExpect, and remembers what it wrote.
func (r *run) setTemplate(ctx context.Context, tmpl corev1.PodTemplateSpec) (*appsv1.Deployment, error) {
	dep, err := r.e.cluster.SetTemplate(ctx, r.t.Namespace, r.t.Deployment, tmpl, r.templateExpect())
	if dep != nil {
		r.dep = dep
	}
	if err != nil {
		return nil, err
	}
	r.exp.Template = tmpl.DeepCopy()
	return dep, nil
}

func (r *run) wait(ctx context.Context) (*appsv1.Deployment, kube.RolloutStatus, error) {
	return r.waitFor(ctx, false)
}

// waitFor is wait, and with noPods also until no Pod is left, terminating
// ones included.
func (r *run) waitFor(ctx context.Context, noPods bool) (*appsv1.Deployment, kube.RolloutStatus, error) {
	exp := r.templateExpect()
	log := r.log()
	timeout := r.t.RolloutTimeout
	if noPods && r.dep != nil {
		// Pods may take their whole grace period to go (and must be
		// waited out where the cluster does not count terminating ones).
		timeout += kube.GracePeriod(r.dep)
	}
	return r.e.cluster.WaitRollout(ctx, r.t.Namespace, r.t.Deployment, kube.WaitOptions{
		Timeout: timeout,
		NoPods:  noPods,
		Check:   func(d *appsv1.Deployment) error { return kube.Check(d, exp) },
		Progress: func(s kube.RolloutStatus) {
			log.Info("rollout progress", zap.String("status", s.Message), zap.Int32("updated", s.Updated),
				zap.Int32("available", s.Available), zap.Int32("spec", s.Spec))
		},
	})
}

func describePreflight(r *run) string {
	if r.j.Pinned == nil {
		return fmt.Sprintf("record %d replicas of %s", r.j.Replicas, kube.FormatImages(r.j.Bad.Images))
	}
	return fmt.Sprintf("pin %s (%s), record %d replicas", pinnedString(r.j.Pinned), r.j.Pinned.Source, r.j.Replicas)
}

func runStop(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	exp := r.templateExpect()
	exp.Replicas = r.exp.Replicas
	dep, err := r.e.cluster.Scale(ctx, r.t.Namespace, r.t.Deployment, 0, exp)
	if dep != nil {
		r.dep = dep
	}
	if err != nil {
		return "", err
	}
	zero := int32(0)
	r.exp.Replicas = &zero
	// Scaling to 0 also turns an HPA off until replicas are > 0 again; the
	// ramp's last step brings the recorded count (and the HPA) back.
	if !r.databaseStepFollows(StepStop) {
		// Nothing below depends on the old Pods being gone: the new ones
		// start at the ramp, and a terminating Pod gets no traffic.
		return fmt.Sprintf("scaled to 0 (recorded %d)", r.j.Replicas), nil
	}
	// A dump or a restore follows: the bad version must have stopped
	// writing first. Terminating Pods run until their grace period ends,
	// so wait until none is left.
	dep, s, err := r.waitFor(ctx, true)
	if dep != nil {
		r.dep = dep
	}
	if err != nil {
		return "", fmt.Errorf("deployment %s: waiting for its pods to stop before the database steps: %w", r.name(), err)
	}
	if !s.TerminatingKnown {
		return fmt.Sprintf("scaled to 0 (recorded %d); the cluster does not report terminating pods, waited out their grace period", r.j.Replicas), nil
	}
	return fmt.Sprintf("scaled to 0 (recorded %d); no pod left", r.j.Replicas), nil
}

// databaseStepFollows reports whether a dump or a restore comes after step
// in this run's plan.
func (r *run) databaseStepFollows(step string) bool {
	after := false
	for _, s := range r.j.Steps {
		switch {
		case s.Name == step:
			after = true
		case after && (s.Name == StepDBDump || s.Name == StepDBRestore):
			return true
		}
	}
	return false
}

func runReadOnly(ctx context.Context, r *run, rec *StepRecord) (string, error) {
	if _, err := r.setTemplate(ctx, *rec.Intent); err != nil {
		return "", err
	}
	dep, s, err := r.wait(ctx)
	if dep != nil {
		r.dep = dep
	}
	switch {
	case err == nil:
		return fmt.Sprintf("%s=true rolled out (%d available)", ReadOnlyEnv, s.Available), nil
	case errors.Is(err, kube.ErrRolloutTimeout) || errors.Is(err, kube.ErrProgressDeadline):
		// The dump that follows is forensic and the stop right after it ends
		// every write anyway: a slow rollout of the flag is not worth
		// stalling the rollback for.
		r.log().Warn("read-only flag not rolled out, continuing", zap.Error(err))
		return fmt.Sprintf("%s=true set, rollout incomplete (%s)", ReadOnlyEnv, s.Message), nil
	default:
		return "", err
	}
}

func runDump(ctx context.Context, r *run, rec *StepRecord) (string, error) {
	dctx, cancel := r.dbCtx(ctx, true)
	defer cancel()
	// An earlier attempt of this step may have published the dump
	// (atomically: a file at the journaled path is whole) and died before
	// its end was journaled. A dump that verifies is that attempt's; one
	// that does not is evidence too and is never overwritten.
	switch _, size, err := r.t.Database.DB.InspectDump(dctx, rec.Path); {
	case err == nil:
		return fmt.Sprintf("forensic dump %s (%d bytes), written by an earlier attempt", rec.Path, size), nil
	case !errors.Is(err, fs.ErrNotExist):
		return "", fmt.Errorf("deployment %s: forensic dump %s exists from an earlier attempt and does not verify: %w", r.name(), rec.Path, err)
	}
	// A missing forensic directory must not stop a rollback at 3 a.m.:
	// create it (private: the dump holds the application's data).
	if err := os.MkdirAll(filepath.Dir(rec.Path), 0o700); err != nil {
		return "", fmt.Errorf("deployment %s: forensic dump directory: %w", r.name(), err)
	}
	n, err := r.t.Database.DB.Dump(dctx, rec.Path)
	if err != nil {
		return "", fmt.Errorf("deployment %s: forensic dump to %s: %w", r.name(), rec.Path, err)
	}
	return fmt.Sprintf("forensic dump %s (%d bytes)", rec.Path, n), nil
}

// checkPreDeployDump refuses a pre-deploy dump that is not one to restore:
// older than maxDumpAge, or taken after the bad revision was deployed (it
// would hold the bad version's writes).
func (r *run) checkPreDeployDump(ctx context.Context) error {
	db := r.t.Database
	qctx, cancel := r.dbCtx(ctx, true)
	defer cancel()
	created, _, err := db.DB.InspectDump(qctx, db.PreDeployDump)
	if err != nil {
		return fmt.Errorf("deployment %s: pre-deploy dump %s: %w", r.name(), db.PreDeployDump, err)
	}
	if dep := r.j.Bad.DeployedAt; !dep.IsZero() && created.After(dep) {
		return fmt.Errorf("deployment %s: %s taken at %s, after revision %s was deployed at %s: %w", r.name(), db.PreDeployDump,
			created.UTC().Format(time.RFC3339), orNone(r.j.Bad.Hash), dep.UTC().Format(time.RFC3339), ErrDumpAfterDeploy)
	}
	if age := r.e.opts.Now().Sub(created); db.MaxDumpAge > 0 && age > db.MaxDumpAge {
		return fmt.Errorf("deployment %s: %s taken at %s is %s old (maxDumpAge %s): %w", r.name(), db.PreDeployDump,
			created.UTC().Format(time.RFC3339), age.Round(time.Second), db.MaxDumpAge, ErrDumpTooOld)
	}
	return nil
}

// requireNoPods checks, right before a database write, that no Pod of the
// target runs: the Deployment asks for none, reports none, and no Pod
// matching its selector is left (terminating ones included). Checked live,
// never taken from the journal: a human may have scaled back up since the
// stop.
func (r *run) requireNoPods(ctx context.Context, step string) error {
	dep, err := r.e.cluster.Get(ctx, r.t.Namespace, r.t.Deployment)
	if err != nil {
		return fmt.Errorf("deployment %s: before %s: %w", r.name(), step, err)
	}
	r.dep = dep
	if n := kube.Replicas(dep); n != 0 || dep.Status.Replicas != 0 {
		return fmt.Errorf("deployment %s: before %s: spec asks for %d replicas, status reports %d: %w", r.name(), step, n, dep.Status.Replicas, ErrPodsRunning)
	}
	pods, err := r.e.cluster.Pods(ctx, dep)
	if err != nil {
		return fmt.Errorf("deployment %s: before %s: %w", r.name(), step, err)
	}
	if pods != 0 {
		return fmt.Errorf("deployment %s: before %s: %d pods match its selector: %w", r.name(), step, pods, ErrPodsRunning)
	}
	return nil
}

// notStartedError is a step's refusal to begin: nothing was done, so the
// step goes back to pending and a resume may try it again (a restore
// refused for running Pods is no interrupted restore).
type notStartedError struct{ err error }

func (e *notStartedError) Error() string { return e.err.Error() }
func (e *notStartedError) Unwrap() error { return e.err }

func runRestore(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	// Checked after the step's start is journaled and right before
	// pg_restore, so nothing a human does in between goes unseen.
	if err := r.requireNoPods(ctx, StepDBRestore); err != nil {
		return "", &notStartedError{err}
	}
	if err := r.checkPreDeployDump(ctx); err != nil {
		return "", &notStartedError{err}
	}
	dctx, cancel := r.dbCtx(ctx, true)
	defer cancel()
	if err := r.t.Database.DB.Restore(dctx, r.t.Database.PreDeployDump); err != nil {
		return "", fmt.Errorf("deployment %s: restore %s: %w", r.name(), r.t.Database.PreDeployDump, err)
	}
	return "restored " + r.t.Database.PreDeployDump, nil
}

func runDBVerify(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	db := r.t.Database
	qctx, cancel := r.dbCtx(ctx, false)
	defer cancel()
	if err := db.DB.Ping(qctx); err != nil {
		return "", fmt.Errorf("deployment %s: database ping after restore: %w", r.name(), err)
	}
	detail := "SELECT 1 ok"
	if len(db.Tables) > 0 {
		counts, err := db.DB.CountRows(qctx, db.Tables)
		if err != nil {
			return "", fmt.Errorf("deployment %s: count rows after restore: %w", r.name(), err)
		}
		var parts []string
		for _, t := range db.Tables {
			parts = append(parts, fmt.Sprintf("%s=%d", t, counts[t]))
		}
		detail += "; rows " + strings.Join(parts, " ")
	}
	if db.Migration != "" {
		applied, err := db.DB.MigrationApplied(qctx, db.Migration)
		if err != nil {
			return detail, fmt.Errorf("deployment %s: check migration %q after restore: %w", r.name(), db.Migration, err)
		}
		if applied {
			return detail, fmt.Errorf("deployment %s: migration %q still applied after restore: %w", r.name(), db.Migration, ErrUnhealthy)
		}
		detail += fmt.Sprintf("; migration %s not applied", db.Migration)
	}
	return detail, nil
}

func runApplication(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	dep, err := r.setTemplate(ctx, r.j.Pinned.Template)
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("template set to %s (generation %d)", kube.FormatImages(r.j.Pinned.Images), dep.Generation), nil
}

func runSurge(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	to := r.j.Surge.To
	dep, err := r.e.cluster.SetMaxSurge(ctx, r.t.Namespace, r.t.Deployment, r.j.Surge.From, &to, r.templateExpect())
	if dep != nil {
		r.dep = dep
	}
	if err != nil {
		return "", err
	}
	// Until restore-surge runs, the Deployment keeps the raised value: a
	// failed or interrupted run says so in its report, and a resume puts
	// it back.
	return fmt.Sprintf("maxSurge %s → %s (restored after the rollout)", kube.SurgeString(r.j.Surge.From), to.String()), nil
}

func runRestoreSurge(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	to := r.j.Surge.To
	dep, err := r.e.cluster.SetMaxSurge(ctx, r.t.Namespace, r.t.Deployment, &to, r.j.Surge.From, r.templateExpect())
	if dep != nil {
		r.dep = dep
	}
	if err != nil {
		return "", err
	}
	return "maxSurge back to " + kube.SurgeString(r.j.Surge.From), nil
}

func runWaitRollout(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	dep, s, err := r.wait(ctx)
	if dep != nil {
		r.dep = dep
	}
	if err != nil {
		return s.Message, err
	}
	return fmt.Sprintf("rolled out: %d/%d updated, %d available", s.Updated, s.Spec, s.Available), nil
}

// rampTargets is the ascending intermediate steps below recorded, then
// recorded itself; nothing when the recorded count is 0.
func rampTargets(steps []int32, recorded int32) []int32 {
	if recorded <= 0 {
		return nil
	}
	var out []int32
	seen := map[int32]bool{}
	for _, n := range steps {
		if n > 0 && n < recorded && !seen[n] {
			seen[n] = true
			out = append(out, n)
		}
	}
	sort.Slice(out, func(i, j int) bool { return out[i] < out[j] })
	return append(out, recorded)
}

func rampString(ns []int32) string {
	if len(ns) == 0 {
		return "nothing (recorded 0 replicas)"
	}
	parts := make([]string, len(ns))
	for i, n := range ns {
		parts[i] = fmt.Sprint(n)
	}
	return "to " + strings.Join(parts, " then ")
}

func runRamp(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	targets := rampTargets(r.t.RampSteps, r.j.Replicas)
	if len(targets) == 0 {
		return "recorded 0 replicas: left at 0", nil
	}
	var done []string
	for i, n := range targets {
		// The pause runs from the scale, as in the runbook (scale 2; sleep
		// 30; scale 4): the wait for the new pods is part of it, not added
		// to it.
		scaled := r.e.opts.Now()
		// Replicas are not checked here: once above 0 an HPA is back in
		// charge and may resize; the template still fences the ramp.
		dep, err := r.e.cluster.Scale(ctx, r.t.Namespace, r.t.Deployment, n, r.templateExpect())
		if dep != nil {
			r.dep = dep
		}
		if err != nil {
			return strings.Join(done, ", "), err
		}
		dep, s, err := r.wait(ctx)
		if dep != nil {
			r.dep = dep
		}
		if err != nil {
			return strings.Join(done, ", "), err
		}
		done = append(done, fmt.Sprintf("%d available", s.Available))
		if i == len(targets)-1 {
			break
		}
		if err := r.e.opts.Sleep(ctx, max(0, r.t.RampPause-r.e.opts.Now().Sub(scaled))); err != nil {
			return strings.Join(done, ", "), fmt.Errorf("deployment %s: ramp pause: %w", r.name(), err)
		}
		if r.t.HealthURL != "" {
			if err := r.health(ctx); err != nil {
				return strings.Join(done, ", "), err
			}
			done = append(done, "healthy")
		}
	}
	return strings.Join(done, ", "), nil
}

func describeVerify(r *run) string {
	var parts []string
	if r.t.HealthURL != "" {
		parts = append(parts, "GET "+r.t.HealthURL+" = 200")
	}
	if r.t.Database != nil && r.t.Database.DB != nil {
		parts = append(parts, "SELECT 1")
	}
	if r.t.Verifier != nil {
		parts = append(parts, "every trigger with data and under threshold")
	}
	if len(parts) == 0 {
		return "nothing to verify (no health URL, database or verifier)"
	}
	d := strings.Join(parts, ", ") + fmt.Sprintf(" at every poll for %s", r.t.VerifyWindow)
	if r.t.Verifier != nil {
		if lb := r.t.Verifier.Lookback(r.t.Namespace, r.t.Deployment); lb > 0 {
			d += fmt.Sprintf(", judging only data that postdates the rollout (the queries read %s)", lb)
		}
	}
	return d
}

// rolledOut is when the bad version stopped serving: the end of the run's
// wait for the rollout of the pinned template (every Pod of the bad
// version gone or terminating), or else when verify began.
func (r *run) rolledOut(verifyStart time.Time) time.Time {
	if s := r.j.step(StepWaitRollout); s != nil && s.State == StepDone && s.Finished != nil {
		return *s.Finished
	}
	return verifyStart
}

// runVerify holds the checks for the whole verify window. Trigger queries
// read history (rate(...[1m]) averages the last minute), so judging starts
// only once that much time has passed since the rollout: before, a working
// rollback would read as failed on the bad version's last errors. Then
// every poll must pass: health 200, SELECT 1, and no trigger beyond its
// threshold; one that fails ends the step as failed at once. A trigger
// without data at a poll (a source down, too little traffic) cannot say
// the service recovered: the step ends done but unverified, and the run's
// Unverified says what is known instead. The window is measured by the
// sleeps between polls, so an injected clock works.
func runVerify(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	r.j.Unverified = ""
	start := r.e.opts.Now()
	judgeFrom := start
	var lookback time.Duration
	if v := r.t.Verifier; v != nil {
		lookback = v.Lookback(r.t.Namespace, r.t.Deployment)
		if t := r.rolledOut(start).Add(lookback); t.After(start) {
			judgeFrom = t
		}
	}
	waited := judgeFrom.Sub(start)
	if waited > 0 {
		r.log().Info("verify waits for data that postdates the rollout", zap.Duration("lookback", lookback), zap.Time("judgeFrom", judgeFrom))
		if err := r.e.opts.Sleep(ctx, waited); err != nil {
			return "", fmt.Errorf("deployment %s: verify: waiting %s for data that postdates the rollout: %w", r.name(), waited, err)
		}
	}
	v := &verdict{}
	// A poll every PollInterval from the window's start, and one at its
	// end: the checks hold over the whole window, not a poll short of it.
	polls := 0
	for held := time.Duration(0); ; {
		if err := r.verifyOnce(ctx, r.e.opts.Now(), v); err != nil {
			return v.summary(), err
		}
		polls++
		if held >= r.t.VerifyWindow {
			break
		}
		next := min(r.e.opts.PollInterval, r.t.VerifyWindow-held)
		if err := r.e.opts.Sleep(ctx, next); err != nil {
			return "", fmt.Errorf("deployment %s: verify: %w", r.name(), err)
		}
		held += next
	}
	detail := fmt.Sprintf("held %s (%d polls)", r.t.VerifyWindow, polls)
	if waited > 0 {
		detail += fmt.Sprintf(" after waiting %s for data that postdates the rollout", waited.Round(time.Millisecond))
	}
	detail += ": " + v.summary() + "; " + r.rolloutState(ctx)
	if v.unverified() {
		r.j.Unverified = "no data to judge by: " + v.summary() + "; " + r.rolloutState(ctx)
		r.log().Warn("verify ran to its end without data: the rollback is unverified", zap.String("detail", r.j.Unverified))
		return "UNVERIFIED: " + detail, nil
	}
	return detail, nil
}

// verifyOnce runs every check once at at; a failed check or a breach is
// the step's error.
func (r *run) verifyOnce(ctx context.Context, at time.Time, v *verdict) error {
	if r.t.HealthURL != "" {
		if err := r.health(ctx); err != nil {
			return err
		}
		v.health = "health " + r.t.HealthURL + " 200"
	}
	if r.t.Database != nil && r.t.Database.DB != nil {
		qctx, cancel := r.dbCtx(ctx, false)
		err := r.t.Database.DB.Ping(qctx)
		cancel()
		if err != nil {
			return fmt.Errorf("deployment %s: SELECT 1: %w: %w", r.name(), ErrUnhealthy, err)
		}
		v.ping = "SELECT 1 ok"
	}
	if r.t.Verifier == nil {
		return nil
	}
	qctx, cancel := r.dbCtx(ctx, false)
	signals := r.t.Verifier.Verify(qctx, r.t.Namespace, r.t.Deployment, at)
	cancel()
	v.polls++
	var breaches []string
	for _, s := range signals {
		v.record(s)
		if s.State == SignalBreach {
			breaches = append(breaches, s.Trigger+" "+s.Detail)
		}
	}
	if len(breaches) > 0 {
		sort.Strings(breaches)
		return fmt.Errorf("deployment %s: triggers: %w: still breaching after the rollback: %s", r.name(), ErrUnhealthy, strings.Join(breaches, ", "))
	}
	return nil
}

// verdict accumulates the verify step's polls.
type verdict struct {
	health, ping string
	polls        int
	triggers     []string // in first-seen order
	last         map[string]Signal
	missing      map[string]int // polls without data, by trigger
}

func (v *verdict) record(s Signal) {
	if v.last == nil {
		v.last, v.missing = map[string]Signal{}, map[string]int{}
	}
	if _, ok := v.last[s.Trigger]; !ok {
		v.triggers = append(v.triggers, s.Trigger)
	}
	if s.State == SignalNoData || s.State == SignalLowVolume {
		v.missing[s.Trigger]++
		// The reason of a missing poll is kept over a later value: it is
		// why the step is unverified.
		v.last[s.Trigger] = s
		return
	}
	if prev, ok := v.last[s.Trigger]; !ok || v.missing[s.Trigger] == 0 || prev.State == SignalOK {
		v.last[s.Trigger] = s
	}
}

func (v *verdict) unverified() bool {
	for _, n := range v.missing {
		if n > 0 {
			return true
		}
	}
	return false
}

func (v *verdict) summary() string {
	var parts []string
	for _, name := range v.triggers {
		s := v.last[name]
		switch n := v.missing[name]; {
		case n == 0:
			parts = append(parts, name+" "+s.Detail)
		case s.State == SignalLowVolume:
			parts = append(parts, fmt.Sprintf("%s low volume at %d of %d polls (%s)", name, n, v.polls, s.Detail))
		default:
			parts = append(parts, fmt.Sprintf("%s no data at %d of %d polls (%s)", name, n, v.polls, s.Detail))
		}
	}
	for _, p := range []string{v.health, v.ping} {
		if p != "" {
			parts = append(parts, p)
		}
	}
	if len(parts) == 0 {
		return "nothing to verify"
	}
	return strings.Join(parts, ", ")
}

// rolloutState is the Deployment as verify leaves it, for the record and
// for a human reading an unverified page.
func (r *run) rolloutState(ctx context.Context) string {
	gctx, cancel := context.WithTimeout(ctx, r.e.opts.QueryTimeout)
	defer cancel()
	dep, err := r.e.cluster.Get(gctx, r.t.Namespace, r.t.Deployment)
	if err != nil {
		return fmt.Sprintf("deployment %s unreadable: %v", r.name(), err)
	}
	r.dep = dep
	return "deployment " + kube.DescribeState(dep)
}

func (r *run) health(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, r.e.opts.QueryTimeout)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, r.t.HealthURL, nil)
	if err != nil {
		return fmt.Errorf("deployment %s: health request: %w", r.name(), err)
	}
	resp, err := r.e.opts.HTTPClient.Do(req)
	if err != nil {
		return fmt.Errorf("deployment %s: health check: %w: %w", r.name(), ErrUnhealthy, err)
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	_ = resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("deployment %s: health check status %d: %w", r.name(), resp.StatusCode, ErrUnhealthy)
	}
	return nil
}

func runTerminateIdle(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	p := r.t.PoolRecovery
	qctx, cancel := r.dbCtx(ctx, false)
	defer cancel()
	n, err := r.t.Database.DB.TerminateIdleInTransaction(qctx, p.Role, p.ApplicationName, p.OlderThan)
	if err != nil {
		return "", fmt.Errorf("deployment %s: terminate idle sessions: %w", r.name(), err)
	}
	return fmt.Sprintf("terminated %d sessions idle in transaction for more than %s", n, p.OlderThan), nil
}

func runRestart(ctx context.Context, r *run, rec *StepRecord) (string, error) {
	if _, err := r.setTemplate(ctx, *rec.Intent); err != nil {
		return "", err
	}
	return "restartedAt " + rec.Intent.Annotations[kube.RestartedAtAnnotation], nil
}

// secondarySlots are the primary's replication slots the secondaries'
// subscriptions use: the lag to check and wait for is theirs, not that of
// every slot on the primary (an unrelated stale one would never catch up).
// A slot that cannot be read leaves the wait on every slot, the safe side.
func (r *run) secondarySlots(ctx context.Context) []string {
	var slots []string
	for _, s := range r.t.MultiRegion.Secondaries {
		qctx, cancel := r.dbCtx(ctx, false)
		slot, err := s.DB.SubscriptionSlot(qctx, s.Subscription)
		cancel()
		if err != nil {
			r.log().Warn("subscription slot unreadable, using every slot of the primary", zap.String("secondary", s.Name), zap.Error(err))
			return nil
		}
		slots = append(slots, slot)
	}
	return slots
}

func runLagCheck(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	slots := r.secondarySlots(ctx)
	qctx, cancel := r.dbCtx(ctx, false)
	defer cancel()
	lag, err := r.t.Database.DB.StreamingLag(qctx, slots...)
	if err != nil {
		// Informational (the runbook's "check replication status"): the
		// rollback must not wait on a status read.
		r.log().Warn("replication lag unreadable", zap.Error(err))
		return fmt.Sprintf("lag unreadable: %v", err), nil
	}
	return fmt.Sprintf("primary replication lag %s", lag), nil
}

func runDisableSubs(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	var done []string
	for _, s := range r.t.MultiRegion.Secondaries {
		qctx, cancel := r.dbCtx(ctx, false)
		err := s.DB.DisableSubscription(qctx, s.Subscription)
		cancel()
		if err != nil {
			return strings.Join(done, ", "), fmt.Errorf("deployment %s: disable subscription %s on %s: %w", r.name(), s.Subscription, s.Name, err)
		}
		done = append(done, s.Name+" disabled")
	}
	return strings.Join(done, ", "), nil
}

func runEnableSubs(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	resync := r.restoredPrimary()
	var done []string
	for _, s := range r.t.MultiRegion.Secondaries {
		qctx, cancel := r.dbCtx(ctx, true)
		var err error
		verb := "enabled"
		if resync {
			// An in-place restore of the publisher drops and recreates the
			// publication: ENABLE alone loops on "publication does not
			// exist"; the subscription must be rebuilt with copy_data.
			err, verb = s.DB.ResyncSubscription(qctx, s.Subscription), "resynced"
		} else {
			err = s.DB.EnableSubscription(qctx, s.Subscription)
		}
		cancel()
		if err != nil {
			return strings.Join(done, ", "), fmt.Errorf("deployment %s: %s subscription %s on %s: %w", r.name(), strings.TrimSuffix(verb, "d"), s.Subscription, s.Name, err)
		}
		done = append(done, s.Name+" "+verb)
	}
	return strings.Join(done, ", "), nil
}

func runWaitLag(ctx context.Context, r *run, _ *StepRecord) (string, error) {
	mr := r.t.MultiRegion
	attempts := int(mr.LagTimeout/r.e.opts.PollInterval) + 1
	var last error
	var lag time.Duration
	var slots []string
	for i := 0; i < attempts; i++ {
		if i > 0 {
			if err := r.e.opts.Sleep(ctx, r.e.opts.PollInterval); err != nil {
				return "", fmt.Errorf("deployment %s: wait for lag: %w", r.name(), err)
			}
		}
		if slots == nil {
			// Read again until known: a resync has just recreated them.
			slots = r.secondarySlots(ctx)
		}
		qctx, cancel := r.dbCtx(ctx, false)
		l, err := r.t.Database.DB.StreamingLag(qctx, slots...)
		cancel()
		if err != nil {
			last = err
			continue
		}
		lag = l
		if lag < mr.MaxLag {
			return fmt.Sprintf("replication lag %s < %s", lag, mr.MaxLag), nil
		}
		last = fmt.Errorf("lag %s", lag)
	}
	return "", fmt.Errorf("deployment %s: replication lag not under %s within %s (last: %v): %w", r.name(), mr.MaxLag, mr.LagTimeout, last, ErrUnhealthy)
}

func pinnedString(p *Pinned) string {
	if p == nil {
		return "nothing"
	}
	s := kube.FormatImages(p.Images)
	if p.ReplicaSet != "" {
		s += fmt.Sprintf(" (replicaset %s, revision %d)", p.ReplicaSet, p.Revision)
	}
	return s
}

func fmtTime(t *time.Time) string {
	if t == nil {
		return "unknown"
	}
	return t.UTC().Format(time.RFC3339)
}

// errNothingToUndo: the step's effect is already gone.
var errNothingToUndo = errors.New("nothing to undo")

// undo puts back what a stopped run must not leave behind, newest first:
// the secondaries' subscriptions it disabled (enabled again, or resynced
// when the primary was or may have been restored in place) and the
// DB_READONLY flag while the template is still the run's read-only one.
// An undone step goes back to pending, so a resume does it again; what
// cannot be undone is listed in LeftBehind for the page.
func (r *run) undo(ctx context.Context) {
	if r.dryRun {
		return
	}
	r.j.Undone, r.j.LeftBehind = nil, nil
	for i := len(r.j.Steps) - 1; i >= 0; i-- {
		rec := &r.j.Steps[i]
		if rec.State == StepPending || rec.State == StepSkipped || rec.State == StepWouldRun {
			continue
		}
		var detail string
		var err error
		switch rec.Name {
		case StepDisableSubs:
			if en := r.j.step(StepEnableSubs); en != nil && en.State == StepDone {
				continue
			}
			if r.t.MultiRegion == nil {
				err = fmt.Errorf("deployment %s: no multiRegion settings to reach the secondaries: %w", r.name(), ErrNotConfigured)
				break
			}
			detail, err = runEnableSubs(ctx, r, rec)
		case StepDBReadOnly:
			detail, err = r.undoReadOnly(ctx, rec)
		default:
			continue
		}
		switch {
		case errors.Is(err, errNothingToUndo):
		case err != nil:
			r.log().Error("cannot put back what the stopped run changed", zap.String("step", rec.Name), zap.Error(err))
			r.j.LeftBehind = append(r.j.LeftBehind, fmt.Sprintf("%s: %v", rec.Name, err))
		default:
			r.log().Info("put back what the stopped run changed", zap.String("step", rec.Name), zap.String("detail", detail))
			rec.State = StepPending
			rec.Detail = "undone after the run stopped: " + detail
			r.j.Undone = append(r.j.Undone, rec.Name)
		}
	}
}

// undoReadOnly writes the template the run started from back over its
// read-only one, fenced on the read-only one still being there.
func (r *run) undoReadOnly(ctx context.Context, rec *StepRecord) (string, error) {
	if rec.Intent == nil {
		return "", errNothingToUndo
	}
	dep, err := r.e.cluster.Get(ctx, r.t.Namespace, r.t.Deployment)
	if err != nil {
		return "", err
	}
	if !kube.EqualTemplates(&dep.Spec.Template, rec.Intent) {
		// Replaced since (the pinned version, or a human's): the flag went
		// with it.
		return "", errNothingToUndo
	}
	dep, err = r.e.cluster.SetTemplate(ctx, r.t.Namespace, r.t.Deployment, r.j.Bad.Template,
		kube.Expect{UID: string(dep.UID), Template: rec.Intent})
	if err != nil {
		return "", err
	}
	r.dep = dep
	r.exp.Template = r.j.Bad.Template.DeepCopy()
	return fmt.Sprintf("%s removed again (template back to %s)", ReadOnlyEnv, kube.FormatImages(r.j.Bad.Images)), nil
}
