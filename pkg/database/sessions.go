package database

import (
	"context"
	"fmt"
	"time"

	"go.uber.org/zap"
)

// terminateWait is how long pg_terminate_backend waits for a backend to
// exit, so its slot is really free when we return (pool recovery restarts
// the application right after).
const terminateWait = 5 * time.Second

// Idle sessions are selected by state_change, not query_start as the
// runbook's query does: for a session that is idle in transaction,
// query_start is when its last statement began, so a session whose
// six-minute statement finished a second ago would match "query_start older
// than 5 minutes" although it has been idle for one second. state_change is
// when it became idle: the "idle since" that idle_in_transaction_session_timeout
// also measures.
//
// Only client backends of exactly this role and application_name in this
// database qualify; never a superuser (joined on pg_roles), never a
// walsender or other background process, never our own session.
const listIdleInTransaction = `
SELECT a.pid, a.backend_start, extract(epoch FROM now() - a.state_change)::float8
FROM pg_stat_activity a
JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.state = 'idle in transaction'
  AND a.backend_type = 'client backend'
  AND a.datname = current_database()
  AND a.usename = $1
  AND a.application_name = $2
  AND a.state_change < now() - $3::float8 * interval '1 second'
  AND a.pid <> pg_backend_pid()
  AND NOT r.rolsuper
ORDER BY a.state_change`

// terminateIfStill re-reads the session in a new statement (a new snapshot
// of pg_stat_activity, which is cached per transaction) and signals it only
// if it is the same backend (pid and backend_start: pids are reused) and is
// still idle in transaction for long enough. A session that woke up in
// between is spared.
const terminateIfStill = `
SELECT pg_terminate_backend(a.pid, $3)
FROM pg_stat_activity a
JOIN pg_roles r ON r.oid = a.usesysid
WHERE a.pid = $1
  AND a.backend_start = $2
  AND a.state = 'idle in transaction'
  AND a.backend_type = 'client backend'
  AND a.state_change < now() - $4::float8 * interval '1 second'
  AND NOT r.rolsuper`

// TerminateIdleInTransaction ends the sessions of role with application_name
// applicationName that have been idle in a transaction for longer than
// olderThan (the runbook's connection pool recovery, step 2), and returns how
// many ended. Idle sessions run nothing, so there is nothing to cancel first.
// The DSN's role needs pg_signal_backend (or to be role) and pg_monitor to
// see the sessions.
func (d *DB) TerminateIdleInTransaction(ctx context.Context, role, applicationName string, olderThan time.Duration) (int, error) {
	if role == "" || applicationName == "" {
		return 0, fmt.Errorf("database %s: terminate idle sessions: %w: role and application name are required", d.name, ErrInvalidArgument)
	}
	if olderThan <= 0 {
		return 0, fmt.Errorf("database %s: terminate idle sessions: %w: age %s must be > 0", d.name, ErrInvalidArgument, olderThan)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	age := olderThan.Seconds()

	type session struct {
		pid   int32
		start time.Time
		idle  float64
	}
	rows, err := d.pool.Query(ctx, listIdleInTransaction, role, applicationName, age)
	if err != nil {
		return 0, d.wrap("list idle sessions of "+role, err)
	}
	var found []session
	for rows.Next() {
		var s session
		if err := rows.Scan(&s.pid, &s.start, &s.idle); err != nil {
			rows.Close()
			return 0, d.wrap("list idle sessions of "+role, err)
		}
		found = append(found, s)
	}
	if err := rows.Err(); err != nil {
		return 0, d.wrap("list idle sessions of "+role, err)
	}
	d.logger.Debug("idle in transaction sessions found", zap.String("role", role), zap.String("application", applicationName), zap.Int("count", len(found)))

	wait := min(terminateWait, d.timeout/2)
	terminated := 0
	for _, s := range found {
		var ok bool
		err := d.pool.QueryRow(ctx, terminateIfStill, s.pid, s.start, wait.Milliseconds(), age).Scan(&ok)
		switch {
		case isNoRows(err):
			d.logger.Info("idle session changed before termination, spared", zap.Int32("pid", s.pid))
			continue
		case err != nil:
			return terminated, d.wrap(fmt.Sprintf("terminate session %d of %s", s.pid, role), err)
		case !ok:
			// Signalled but still alive after the wait (a WARNING on the
			// server); it will exit, but do not count it as freed.
			d.logger.Warn("idle session did not exit in time", zap.Int32("pid", s.pid), zap.Duration("wait", wait))
			continue
		}
		terminated++
		d.logger.Info("idle in transaction session terminated",
			zap.Int32("pid", s.pid), zap.String("role", role), zap.String("application", applicationName),
			zap.Duration("idle", time.Duration(s.idle*float64(time.Second))))
	}
	return terminated, nil
}
