package preflight

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/jackc/pgx/v5"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/database"
)

// replicationChecks: each secondary's subscription is enabled with a
// running apply worker, and the primary's replication lag is under the
// target's threshold. A target without multiRegion and without a
// replicationLag trigger has no replication to verify.
func (r *runner) replicationChecks(ctx context.Context) []Check {
	mr := r.t.Rollback.MultiRegion
	lagTrigger := r.lagTrigger()
	if mr == nil && lagTrigger == nil {
		return []Check{{Item: ItemReplication, Name: "replication", Status: StatusSkip,
			Evidence: "target has no rollback.multiRegion and no replicationLag trigger"}}
	}
	var checks []Check
	if mr != nil {
		for _, sec := range mr.Secondaries {
			checks = append(checks, r.check(ctx, ItemReplication, "replication.subscription."+sec, r.opts.CheckTimeout, func(ctx context.Context) (Status, string) {
				return r.subscription(ctx, sec, mr.Subscription)
			}))
		}
	}
	checks = append(checks, r.check(ctx, ItemReplication, "replication.lag", r.opts.CheckTimeout, func(ctx context.Context) (Status, string) {
		return r.lag(ctx, lagTrigger)
	}))
	return checks
}

func (r *runner) lagTrigger() *config.Trigger {
	for i := range r.t.Triggers {
		if r.t.Triggers[i].Kind == config.KindReplicationLag {
			return &r.t.Triggers[i]
		}
	}
	return nil
}

// subscription reads pg_subscription and pg_stat_subscription on the
// secondary: enabled is the switch the multi-region rollback flips, the
// worker pid says it is actually applying.
func (r *runner) subscription(ctx context.Context, secondary, name string) (Status, string) {
	dsn, err := r.dsn(secondary)
	if err != nil {
		return StatusFail, err.Error()
	}
	c, err := connect(ctx, dsn, "")
	if err != nil {
		return StatusFail, fmt.Sprintf("secondary %s: connect: %v", secondary, err)
	}
	defer c.Close(context.WithoutCancel(ctx))
	var (
		enabled  bool
		pid      *int32
		received *float64
	)
	err = c.QueryRow(ctx, `
SELECT s.subenabled, st.pid, extract(epoch FROM now() - st.last_msg_receipt_time)::float8
FROM pg_subscription s
JOIN pg_database d ON d.oid = s.subdbid AND d.datname = current_database()
LEFT JOIN pg_stat_subscription st ON st.subid = s.oid AND st.relid IS NULL
WHERE s.subname = $1`, name).Scan(&enabled, &pid, &received)
	if errors.Is(err, pgx.ErrNoRows) {
		return StatusFail, fmt.Sprintf("secondary %s has no subscription %s", secondary, name)
	}
	if err != nil {
		return StatusFail, fmt.Sprintf("secondary %s: read subscription %s: %v", secondary, name, err)
	}
	if !enabled {
		return StatusFail, fmt.Sprintf("subscription %s on secondary %s is DISABLED: ALTER SUBSCRIPTION %s ENABLE", name, secondary, name)
	}
	if pid == nil {
		return StatusFail, fmt.Sprintf("subscription %s on secondary %s is enabled but has no apply worker (pg_stat_subscription): check the secondary's log", name, secondary)
	}
	ev := fmt.Sprintf("subscription %s on secondary %s is enabled, apply worker pid %d", name, secondary, *pid)
	if received != nil {
		ev += fmt.Sprintf(", last message %s ago", ago(time.Duration(*received*float64(time.Second))))
	}
	return StatusPass, ev
}

// lag measures on the primary: the target's rollback database, else the
// database of its replicationLag trigger. The threshold is that trigger's
// (seconds), else the runbook's 30 s.
func (r *runner) lag(ctx context.Context, tr *config.Trigger) (Status, string) {
	primary := ""
	if db := r.t.Rollback.Database; db != nil {
		primary = db.Name
	}
	threshold, from := DefaultLagThreshold, "the runbook's default"
	if tr != nil {
		if primary == "" {
			primary = tr.Database
		}
		if tr.Above != nil {
			threshold, from = time.Duration(*tr.Above*float64(time.Second)), "trigger "+tr.Name
		}
	}
	if primary == "" {
		return StatusFail, "no primary database: the target has no rollback.database and no replicationLag trigger database"
	}
	db, err := r.db(ctx, primary)
	if err != nil {
		return StatusFail, err.Error()
	}
	lag, err := db.StreamingLag(ctx)
	switch {
	case errors.Is(err, database.ErrNoReplication):
		return StatusFail, fmt.Sprintf("primary %s has no subscriber or standby at all", primary)
	case err != nil:
		return StatusFail, err.Error()
	case lag >= threshold:
		return StatusFail, fmt.Sprintf("primary %s: replication lag %s, not under %s (%s)", primary, ago(lag), threshold, from)
	}
	return StatusPass, fmt.Sprintf("primary %s: replication lag %s, under %s (%s)", primary, ago(lag), threshold, from)
}

// migrationChecks: every required migration is in the schema versions
// table of the target's database.
func (r *runner) migrationChecks(ctx context.Context) []Check {
	if len(r.migrations) == 0 {
		return []Check{{Item: ItemFixes, Name: "fixes", Status: StatusSkip,
			Evidence: "no migration required (--require-migration, rollback.database.migration)"}}
	}
	dbName := ""
	if db := r.t.Rollback.Database; db != nil {
		dbName = db.Name
	} else if len(r.cfg.Global.Databases) == 1 {
		dbName = r.cfg.Global.Databases[0].Name
	}
	var checks []Check
	for _, m := range r.migrations {
		checks = append(checks, r.check(ctx, ItemFixes, "fixes.migration."+m, r.opts.CheckTimeout, func(ctx context.Context) (Status, string) {
			if dbName == "" {
				return StatusFail, "no database to check: the target has no rollback.database and global.databases has several"
			}
			db, err := r.db(ctx, dbName)
			if err != nil {
				return StatusFail, err.Error()
			}
			ok, err := db.MigrationApplied(ctx, m)
			if err != nil {
				return StatusFail, err.Error()
			}
			if !ok {
				return StatusFail, fmt.Sprintf("migration %s is NOT in %s of database %s", m, database.DefaultSchemaVersionsTable, dbName)
			}
			return StatusPass, fmt.Sprintf("migration %s is in %s of database %s", m, database.DefaultSchemaVersionsTable, dbName)
		}))
	}
	return checks
}
