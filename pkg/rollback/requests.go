package rollback

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

// IsPlan reports whether name is a plan a request may name directly
// instead of an action.
func IsPlan(name string) bool {
	switch Action(name) {
	case ActionQuick, ActionRevert, ActionFull, ActionPoolRecovery, ActionMultiRegion:
		return true
	}
	return false
}

// PlanFor is the one mapping of a requested action to the plan that
// carries it out on a target whose configured plan is configured (empty:
// quick). A plan name is that plan; full-rollback is the full plan;
// restart-then-rollback first restarts (pool recovery) and rolls back only
// when it fires again within the restart's memory, which the caller
// tracks and reports as restarted. ok is false for a page, which runs no
// plan.
func PlanFor(request string, configured Action, restarted bool) (plan Action, ok bool) {
	if IsPlan(request) {
		return Action(request), true
	}
	switch request {
	case RequestPage:
		return "", false
	case RequestFullRollback:
		return ActionFull, true
	case RequestRestartThenRollback:
		if !restarted {
			return ActionPoolRecovery, true
		}
	}
	if configured != "" {
		return configured, true
	}
	return ActionQuick, true
}
