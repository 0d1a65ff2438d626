package response

import "github.com/rollguard/rollguard/pkg/plan"

// Result is how a response to a decision or a request ended. It is the
// rollguard_rollbacks_total result label, and what a CLI's exit code is
// derived from.
type Result string

// Results.
const (
	ResultSucceeded Result = "succeeded"
	// ResultUnverified: the plan ran to its end, but verify had no data
	// to judge the recovery by; a human checks.
	ResultUnverified Result = "unverified"
	ResultFailed     Result = "failed"
	// ResultRefused: the executor refused the plan (no older revision, a
	// paused Deployment, a run that needs a human...); nothing written.
	ResultRefused Result = "refused"
	// ResultBlocked: an interlock blocked the action; nothing written.
	ResultBlocked Result = "blocked"
	ResultDryRun  Result = "dry-run"
	// ResultNoop: the revision was already rolled back.
	ResultNoop  Result = "noop"
	ResultPaged Result = "paged"
	// ResultNotLeader: this replica does not lead; the leader acts.
	ResultNotLeader Result = "not-leader"
	// ResultHandedOver: the term ended mid-plan; the next leader resumes.
	ResultHandedOver Result = "handed-over"
	// ResultNothing: a resume found no unfinished run.
	ResultNothing Result = "nothing"
)

// counted are the results rollguard_rollbacks_total counts.
var counted = map[Result]bool{ResultSucceeded: true, ResultUnverified: true, ResultFailed: true, ResultRefused: true, ResultBlocked: true, ResultDryRun: true, ResultNoop: true}

// Outcome is the end of one response.
type Outcome struct {
	Result Result
	Plan   plan.Name
	RunID  string
	// Detail is the one line the status API shows as the last result.
	Detail string
}

// OK reports whether the action ended as asked: done, rehearsed (dry-run),
// already done, or handed to a human by a page.
func (o Outcome) OK() bool {
	switch o.Result {
	case ResultSucceeded, ResultDryRun, ResultNoop, ResultPaged:
		return true
	}
	return false
}

func (o Outcome) String() string { return o.Detail }

// count adds o to rollguard_rollbacks_total and returns it.
func (r *Responder) count(t Target, o Outcome) Outcome {
	if counted[o.Result] {
		r.m.rollbacks.WithLabelValues(t.Name, string(o.Plan), string(o.Result)).Inc()
	}
	return o
}
