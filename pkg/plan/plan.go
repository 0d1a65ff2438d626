// Package plan owns the words of rollguard's response: the plans that
// carry out a rollback and the actions a trigger, an Alertmanager alert or
// a human may request, and the one mapping from a request to its plan.
//
// It holds no logic that touches a cluster or a database (pkg/rollback
// builds and runs the plans), so the configuration and the CLI can speak
// of plans without depending on the Kubernetes client.
package plan

// Name names a plan. The steps of each are described in pkg/rollback.
type Name string

// The plans.
const (
	Quick        Name = "quick"
	Revert       Name = "revert"
	Full         Name = "full"
	PoolRecovery Name = "pool-recovery"
	MultiRegion  Name = "multi-region"
)

// Rolls reports whether a plan puts another version in place (a pool
// recovery only restarts the running one).
func (n Name) Rolls() bool { return n != PoolRecovery }

// DeploymentPart is the plan that does to the Deployment what n does,
// without a database: quick for full and multi-region, n itself otherwise.
// Every rolling plan pins the same rollback target, so a check that has no
// database handles (the deploy preflight) plans this part to see the pin.
func (n Name) DeploymentPart() Name {
	switch n {
	case Full, MultiRegion:
		return Quick
	}
	return n
}

// What a firing trigger, an Alertmanager alert or a human asks for: the
// words of a trigger's action in the configuration and of the API's
// requests. They are untyped so every layer that carries them as text
// (the config, alert labels, the journal) uses these declarations as they
// are.
const (
	RequestRollback            = "rollback"
	RequestRestartThenRollback = "restart-then-rollback"
	RequestFullRollback        = "full-rollback"
	RequestPage                = "page"
)

// Known reports whether name is a plan a request may name directly
// instead of an action.
func Known(name string) bool {
	switch Name(name) {
	case Quick, Revert, Full, PoolRecovery, MultiRegion:
		return true
	}
	return false
}

// For is the one mapping of a requested action to the plan that carries it
// out on a target whose configured plan is configured (empty: quick). A
// plan name is that plan; full-rollback is the full plan;
// restart-then-rollback first restarts (pool recovery) and rolls back only
// when it fires again within the restart's memory, which the caller
// tracks and reports as restarted. ok is false for a page, which runs no
// plan.
func For(request string, configured Name, restarted bool) (p Name, ok bool) {
	if Known(request) {
		return Name(request), true
	}
	switch request {
	case RequestPage:
		return "", false
	case RequestFullRollback:
		return Full, true
	case RequestRestartThenRollback:
		if !restarted {
			return PoolRecovery, true
		}
	}
	if configured != "" {
		return configured, true
	}
	return Quick, true
}
