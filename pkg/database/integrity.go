package database

import (
	"context"
	"errors"

	"github.com/jackc/pgx/v5"
)

// Integrity is the runbook's "Data Integrity Check" after a rollback: how
// many deliveries are queued, how many replication conflicts are
// unresolved, and the latest applied schema versions.
type Integrity struct {
	AlertDeliveryQueue   int64
	UnresolvedConflicts  int64
	LatestSchemaVersions []string
}

// ErrNoIntegrityTables: the database has none of the pggit tables the
// runbook's check reads.
var ErrNoIntegrityTables = errors.New("no pggit tables to check")

// Integrity runs the runbook's post-rollback data check in one read-only
// snapshot. Tables that do not exist are skipped (their figures read 0);
// when none exists the check says so instead of reporting zeros.
func (d *DB) Integrity(ctx context.Context) (Integrity, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	tx, err := d.pool.BeginTx(ctx, pgx.TxOptions{IsoLevel: pgx.RepeatableRead, AccessMode: pgx.ReadOnly})
	if err != nil {
		return Integrity{}, d.wrap("integrity check: begin", err)
	}
	defer tx.Rollback(context.WithoutCancel(ctx)) //nolint:errcheck // read-only
	var queue, conflicts, versions bool
	err = tx.QueryRow(ctx, `SELECT to_regclass('pggit.alert_delivery_queue') IS NOT NULL,
	                               to_regclass('pggit.replication_conflict_log') IS NOT NULL,
	                               to_regclass('pggit.schema_versions') IS NOT NULL`).Scan(&queue, &conflicts, &versions)
	if err != nil {
		return Integrity{}, d.wrap("integrity check: catalog", err)
	}
	if !queue && !conflicts && !versions {
		return Integrity{}, ErrNoIntegrityTables
	}
	var out Integrity
	if queue {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pggit.alert_delivery_queue`).Scan(&out.AlertDeliveryQueue); err != nil {
			return Integrity{}, d.wrap("integrity check: alert_delivery_queue", err)
		}
	}
	if conflicts {
		if err := tx.QueryRow(ctx, `SELECT count(*) FROM pggit.replication_conflict_log WHERE resolved = FALSE`).Scan(&out.UnresolvedConflicts); err != nil {
			return Integrity{}, d.wrap("integrity check: replication_conflict_log", err)
		}
	}
	if versions {
		rows, err := tx.Query(ctx, `SELECT name || ' ' || coalesce(version::text, '') FROM pggit.schema_versions ORDER BY applied_at DESC LIMIT 5`)
		if err != nil {
			return Integrity{}, d.wrap("integrity check: schema_versions", err)
		}
		out.LatestSchemaVersions, err = pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			return Integrity{}, d.wrap("integrity check: schema_versions", err)
		}
	}
	return out, nil
}
