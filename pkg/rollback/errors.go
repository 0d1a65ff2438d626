package rollback

import (
	"errors"
	"fmt"
	"time"

	"github.com/rollguard/rollguard/pkg/kube"
)

// Refusal reasons: the plan did not start and wrote nothing. The caller
// pages (docs/design.md §4) except for ErrAlreadyRolledBack.
var (
	ErrPaused             = errors.New("deployment is paused")
	ErrFrozen             = errors.New("deployment is frozen (" + kube.FreezeAnnotation + ")")
	ErrNoPreviousRevision = errors.New("no older revision to roll back to")
	ErrAlreadyAtTarget    = errors.New("deployment already runs the target")
	ErrAlreadyRolledBack  = errors.New("already rolled back for this revision")
	// ErrNeedsHuman: an earlier run of this Deployment was stopped (a
	// concurrent change, an unsafe resume) and nobody has cleared it.
	ErrNeedsHuman = errors.New("an earlier rollback stopped and needs a human")
	// ErrNothingToResume: a resume-only request found no unfinished run
	// that still describes the Deployment.
	ErrNothingToResume = errors.New("no unfinished run to resume")
	// ErrPinnedBad: the only target found is a revision rolled back before.
	ErrPinnedBad = errors.New("rollback target is a revision rolled back before")
	// ErrDumpTooOld and ErrDumpAfterDeploy: the pre-deploy dump is not one
	// to restore (checked at preflight and again right before the restore).
	ErrDumpTooOld      = errors.New("pre-deploy dump older than maxDumpAge")
	ErrDumpAfterDeploy = errors.New("pre-deploy dump taken after the bad revision was deployed")
)

// Errors that stop a running plan.
var (
	// ErrConcurrentChange is kube's: someone else changed the Deployment.
	ErrConcurrentChange = kube.ErrConcurrentChange
	// ErrUnsafeResume: a non-idempotent step started and its end was never
	// recorded; re-running it blindly could repeat it.
	ErrUnsafeResume = errors.New("unsafe to resume")
	// ErrJournalConflict: another writer changed the journal (a second
	// rollguard instance); the lease is not a fence, the journal is.
	ErrJournalConflict = errors.New("journal changed by another writer")
	// ErrStepFailed wraps a step's own error, with the step's name.
	ErrStepFailed = errors.New("step failed")
	// ErrPodsRunning: a database step found Pods of the target running; it
	// never runs over a live application.
	ErrPodsRunning = errors.New("pods of the target are running")
	// ErrHandedOver: the run stopped between two steps because its caller
	// drained it (shutdown, lost leadership); the journal stays unfinished
	// for the next leader to resume.
	ErrHandedOver = errors.New("stopped between steps for the next leader")
)

// RefusedError says why a plan was refused; errors.Is matches its Reason.
type RefusedError struct {
	Namespace, Deployment string
	Reason                error
	Detail                string
}

func (e *RefusedError) Error() string {
	s := fmt.Sprintf("rollback of deployment %s/%s refused: %v", e.Namespace, e.Deployment, e.Reason)
	if e.Detail != "" {
		s += ": " + e.Detail
	}
	return s
}

// Unwrap returns the reason.
func (e *RefusedError) Unwrap() error { return e.Reason }

// UnsafeResumeError reports a destructive step that started and never
// recorded its end, with what a human needs to finish by hand.
type UnsafeResumeError struct {
	Namespace, Deployment string
	Step                  string
	Started               time.Time
	// StepError is the error the step returned when it failed (its end was
	// recorded); empty when it never finished.
	StepError string
	Detail    string
}

func (e *UnsafeResumeError) Error() string {
	if e.StepError != "" {
		return fmt.Sprintf("deployment %s/%s: step %s started at %s and failed (%s); it is not safe to re-run automatically: %v: %s",
			e.Namespace, e.Deployment, e.Step, e.Started.UTC().Format(time.RFC3339), e.StepError, ErrUnsafeResume, e.Detail)
	}
	return fmt.Sprintf("deployment %s/%s: step %s started at %s and its end was never recorded: %v: %s",
		e.Namespace, e.Deployment, e.Step, e.Started.UTC().Format(time.RFC3339), ErrUnsafeResume, e.Detail)
}

// Is makes errors.Is(err, ErrUnsafeResume) true.
func (e *UnsafeResumeError) Is(target error) bool { return target == ErrUnsafeResume }
