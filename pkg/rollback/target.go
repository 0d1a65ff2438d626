// Package rollback turns the on-call runbook's procedures into plans of
// named steps and runs them with a journal, so a crash or a leader change
// resumes (or stops with a precise report) instead of repeating a
// destructive step or losing the recorded replica count.
//
// The plans (plan.Name):
//
//   - quick (default): preflight, stop (scale to 0), database (only when
//     configured and the migration is applied: forensic dump, restore,
//     verify), application (pod template back to the pinned target), wait,
//     ramp, verify. It stops a version that may be corrupting data, at the
//     cost of downtime.
//   - revert: preflight, application, wait, verify. The rolling update keeps
//     serving (no downtime), but the bad version keeps serving too until it
//     is replaced.
//   - full: preflight, DB_READONLY=true on the template, forensic dump, stop,
//     restore, deploy stable (the pinned template, which never had the
//     flag), wait, ramp, verify.
//   - pool-recovery: terminate the app's idle-in-transaction sessions, then
//     a rolling restart.
//   - multi-region: check lag, disable subscriptions on the secondaries, the
//     quick plan on the primary, enable them again (or resync them when the
//     primary's database was restored in place, which breaks logical
//     replication), wait for lag under maxLag.
package rollback

import (
	"context"
	"errors"
	"fmt"
	"time"

	"k8s.io/apimachinery/pkg/util/intstr"

	"github.com/rollguard/rollguard/pkg/plan"
)

// Runbook defaults.
const (
	DefaultRampPause      = 30 * time.Second
	DefaultRolloutTimeout = 30 * time.Second
	DefaultVerifyWindow   = 60 * time.Second
	DefaultIdleOlderThan  = 5 * time.Minute
	DefaultMaxLag         = time.Second
	DefaultLagTimeout     = 5 * time.Minute
	// DefaultMaxResumeAge bounds how old an unfinished run may be and still
	// be resumed automatically (the responder's default run timeout).
	DefaultMaxResumeAge = 30 * time.Minute
)

// DefaultRampSteps is the runbook's "scale to 2, pause, then the rest".
func DefaultRampSteps() []int32 { return []int32{2} }

// Database is what plans need from PostgreSQL; *database.DB implements it.
type Database interface {
	MigrationApplied(ctx context.Context, migration string) (bool, error)
	// Dump writes pg_dump -Fc to path atomically and returns its size.
	Dump(ctx context.Context, path string) (int64, error)
	// InspectDump verifies that path is a complete dump and returns when
	// it was taken and its size.
	InspectDump(ctx context.Context, path string) (created time.Time, size int64, err error)
	// Restore runs pg_restore --clean --if-exists --single-transaction.
	Restore(ctx context.Context, path string) error
	// Ping runs SELECT 1.
	Ping(ctx context.Context) error
	CountRows(ctx context.Context, tables []string) (map[string]int64, error)
	TerminateIdleInTransaction(ctx context.Context, role, applicationName string, olderThan time.Duration) (int, error)
	// DisableSubscription, EnableSubscription and ResyncSubscription are
	// called on a secondary.
	DisableSubscription(ctx context.Context, name string) error
	EnableSubscription(ctx context.Context, name string) error
	ResyncSubscription(ctx context.Context, name string) error
	// StreamingLag is called on the primary: max lag over its
	// subscribers, or over the links using the given slots.
	StreamingLag(ctx context.Context, slots ...string) (time.Duration, error)
	// SubscriptionSlot is called on a secondary: the slot its subscription
	// uses on the primary.
	SubscriptionSlot(ctx context.Context, name string) (string, error)
}

// Verifier reads the target's own signals after a rollback; the app
// implements it with the target's trigger queries.
type Verifier interface {
	// Lookback is how long before an instant the target's queries read
	// samples (their longest range selector, offsets included). The verify
	// step judges only instants at least that long after the rollout, so
	// what it judges never averages in the bad version.
	Lookback(namespace, deployment string) time.Duration
	// Verify evaluates each of the target's triggers at at.
	Verify(ctx context.Context, namespace, deployment string, at time.Time) []Signal
}

// SignalState is how one trigger read at one poll of the verify step.
type SignalState string

// Signal states.
const (
	// SignalOK: a value, within the threshold.
	SignalOK SignalState = "ok"
	// SignalBreach: a value beyond the threshold, from data that
	// postdates the rollout: the rollback did not cure it.
	SignalBreach SignalState = "breach"
	// SignalNoData: no value (a query error, a timeout, an empty result).
	SignalNoData SignalState = "nodata"
	// SignalLowVolume: the traffic was below the trigger's minRate, too
	// little to judge a ratio by.
	SignalLowVolume SignalState = "lowvolume"
)

// Signal is one trigger's reading at one poll.
type Signal struct {
	Trigger string
	State   SignalState
	// Detail is the value against the threshold, or why there was none.
	Detail string
}

// DatabaseSettings configure the database steps.
type DatabaseSettings struct {
	DB Database
	// Migration is the schema_versions name whose presence means the deploy
	// changed the database; quick restores only when it is applied.
	Migration string
	// PreDeployDump is the pg_dump -Fc taken before the deploy.
	PreDeployDump string
	// MaxDumpAge is how old PreDeployDump may be when it is restored
	// (0: no bound). A dump taken after the bad revision was deployed is
	// refused whatever its age: it may hold the bad version's writes.
	MaxDumpAge time.Duration
	// ForensicDir receives the forensic dump taken before a restore.
	ForensicDir string
	// Tables are counted after a restore (reported, for the incident).
	Tables []string
}

// PoolRecoverySettings configure pool-recovery.
type PoolRecoverySettings struct {
	// Role and ApplicationName select the app's own sessions; never
	// superuser, walsender or rollguard's own.
	Role            string
	ApplicationName string
	// OlderThan is the minimum idle-in-transaction age (default 5m).
	OlderThan time.Duration
}

// Secondary is a subscriber region.
type Secondary struct {
	Name         string
	DB           Database
	Subscription string
}

// MultiRegionSettings configure multi-region.
type MultiRegionSettings struct {
	Secondaries []Secondary
	// MaxLag is the lag to wait for after re-enabling (default 1s).
	MaxLag time.Duration
	// LagTimeout bounds that wait (default 5m).
	LagTimeout time.Duration
}

// Target is one Deployment and how to roll it back.
type Target struct {
	Namespace  string
	Deployment string
	// Containers the plans touch (DB_READONLY); empty means all.
	Containers []string
	// HealthURL must answer 200 between ramp steps and in verify.
	HealthURL string
	// Strategy is the plan of a plain "rollback": quick (default) or revert.
	Strategy plan.Name
	// StableImage pins container -> image; empty pins the previous
	// ReplicaSet by revision.
	StableImage map[string]string
	// RampSteps are the intermediate replica counts (default [2]).
	RampSteps []int32
	// RampPause is the pause after each intermediate step (default 30s).
	RampPause time.Duration
	// RolloutTimeout bounds each wait for a rollout (default 30s).
	RolloutTimeout time.Duration
	// RevertMaxSurge, when set, is the maxSurge revert gives the
	// Deployment for its rollout (e.g. 100%: every pinned pod is created at
	// once, the bad ones keep serving until the new ones are available);
	// the Deployment's own value is journaled and put back once the rollout
	// is complete. Nil paces revert by the Deployment's own strategy. A
	// Recreate Deployment is left as it is.
	RevertMaxSurge *intstr.IntOrString
	// VerifyWindow is how long every check must keep passing, with data,
	// once the trigger queries read only data that postdates the rollout
	// (default 60s).
	VerifyWindow time.Duration
	Database     *DatabaseSettings
	PoolRecovery PoolRecoverySettings
	MultiRegion  *MultiRegionSettings
	Verifier     Verifier
	// GitOps is the policy for a Deployment a GitOps controller (Flux,
	// Argo CD) reconciles.
	GitOps GitOpsPolicy
}

// withDefaults fills the runbook's defaults.
func (t Target) withDefaults() Target {
	if t.Strategy == "" {
		t.Strategy = plan.Quick
	}
	if t.RampSteps == nil {
		t.RampSteps = DefaultRampSteps()
	}
	if t.RampPause == 0 {
		t.RampPause = DefaultRampPause
	}
	if t.RolloutTimeout == 0 {
		t.RolloutTimeout = DefaultRolloutTimeout
	}
	if t.VerifyWindow == 0 {
		t.VerifyWindow = DefaultVerifyWindow
	}
	if t.PoolRecovery.OlderThan == 0 {
		t.PoolRecovery.OlderThan = DefaultIdleOlderThan
	}
	if t.MultiRegion != nil {
		mr := *t.MultiRegion
		if mr.MaxLag == 0 {
			mr.MaxLag = DefaultMaxLag
		}
		if mr.LagTimeout == 0 {
			mr.LagTimeout = DefaultLagTimeout
		}
		t.MultiRegion = &mr
	}
	return t
}

// ErrNotConfigured: the plan needs settings the target does not have.
var ErrNotConfigured = errors.New("not configured")

// check validates what action needs.
func (t Target) check(action plan.Name) error {
	name := t.Namespace + "/" + t.Deployment
	if t.Namespace == "" || t.Deployment == "" {
		return fmt.Errorf("target %q: namespace and deployment are required: %w", name, ErrNotConfigured)
	}
	hasDB := t.Database != nil && t.Database.DB != nil
	switch action {
	case plan.Quick, plan.Revert:
	case plan.Full:
		if !hasDB || t.Database.PreDeployDump == "" || t.Database.ForensicDir == "" {
			return fmt.Errorf("target %s: plan full needs database.db, preDeployDump and forensicDir: %w", name, ErrNotConfigured)
		}
	case plan.PoolRecovery:
		if !hasDB || t.PoolRecovery.Role == "" || t.PoolRecovery.ApplicationName == "" {
			return fmt.Errorf("target %s: plan pool-recovery needs database.db, poolRecovery.role and applicationName: %w", name, ErrNotConfigured)
		}
	case plan.MultiRegion:
		if !hasDB || t.MultiRegion == nil || len(t.MultiRegion.Secondaries) == 0 {
			return fmt.Errorf("target %s: plan multi-region needs database.db and multiRegion.secondaries: %w", name, ErrNotConfigured)
		}
	default:
		return fmt.Errorf("target %s: unknown plan %q: %w", name, action, ErrNotConfigured)
	}
	if (action == plan.MultiRegion || action == plan.Full) && t.MultiRegion != nil {
		// full handles the secondaries too when there are any.
		for i, s := range t.MultiRegion.Secondaries {
			if s.DB == nil || s.Subscription == "" {
				return fmt.Errorf("target %s: multiRegion.secondaries[%d]: db and subscription are required: %w", name, i, ErrNotConfigured)
			}
		}
	}
	if t.Database != nil && t.Database.DB != nil && t.Database.Migration != "" && (action == plan.Quick || action == plan.MultiRegion) {
		if t.Database.PreDeployDump == "" || t.Database.ForensicDir == "" {
			return fmt.Errorf("target %s: database.migration needs preDeployDump and forensicDir: %w", name, ErrNotConfigured)
		}
	}
	for _, n := range t.RampSteps {
		if n <= 0 {
			return fmt.Errorf("target %s: rampSteps must be > 0: %w", name, ErrNotConfigured)
		}
	}
	return nil
}
