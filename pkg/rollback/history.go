package rollback

import (
	"context"
)

// LastRun returns the journal of the Deployment's last plan run, or nil
// when it has none. The app seeds the interlocks from it after a restart or
// a leader change, so a failover does not reset the cooldown, the budget or
// one-rollback-per-revision.
func (e *Executor) LastRun(ctx context.Context, ns, name string) (*Journal, error) {
	dep, err := e.cluster.Get(ctx, ns, name)
	if err != nil {
		return nil, err
	}
	j, _, err := e.journals.load(ctx, ns, dep.UID)
	return j, err
}
