package rollback

import (
	"time"

	"github.com/rollguard/rollguard/pkg/plan"
)

// Facts is what an Observer learns at each milestone. Plain data: the
// notify and incident code render it.
type Facts struct {
	Namespace  string
	Deployment string
	Action     plan.Name
	RunID      string
	Reason     string
	DryRun     bool
	// Resumed: this run continues a journal left by an earlier one.
	Resumed bool
	// Incident is the incident the run belongs to (journaled).
	Incident string

	// Step facts (empty in PlanStarted / PlanFinished).
	Step        string
	StepIndex   int // 1-based
	Steps       int
	Description string
	// Skipped: the step was already done by an earlier run.
	Skipped bool
	Detail  string

	Started  time.Time
	Finished time.Time
	Err      error
	// Undone lists, in PlanFinished of a stopped run, the steps whose
	// effect was put back (DB_READONLY, disabled subscriptions).
	Undone []string
	// LeftBehind says what a stopped run could not put back.
	LeftBehind []string
	// StateLeftBehind is, in PlanFinished of a stopped run, the
	// Deployment as the run left it and what a human must decide.
	StateLeftBehind *LeftState
	// Unverified, once the verify step has run without data to judge by,
	// says so and what is known (health, rollout); "" when verified.
	Unverified string

	// Versions.
	Bad      Revision
	Pinned   *Pinned
	Replicas int32
	// GitOps says what a GitOps-managed Deployment's owner is, what was
	// suspended and what a human must revert in Git; empty otherwise.
	GitOps string
}

// Observer is told about a plan's progress, synchronously and in order.
// Implementations must not block (queue and return): the rollback does not
// wait for Slack.
type Observer interface {
	PlanStarted(Facts)
	StepStarted(Facts)
	StepFinished(Facts)
	PlanFinished(Facts)
}

type nopObserver struct{}

func (nopObserver) PlanStarted(Facts)  {}
func (nopObserver) StepStarted(Facts)  {}
func (nopObserver) StepFinished(Facts) {}
func (nopObserver) PlanFinished(Facts) {}
