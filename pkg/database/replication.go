package database

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/pgerror"
)

// DisableSubscription stops a secondary applying changes from the primary
// (multi-region rollback, step 2: ALTER SUBSCRIPTION ... DISABLE). The slot
// on the primary keeps the WAL, so ENABLE later resumes where it stopped.
// Disabling a disabled subscription is a no-op.
func (d *DB) DisableSubscription(ctx context.Context, name string) error {
	return d.alterSubscription(ctx, name, "DISABLE")
}

// EnableSubscription resumes a disabled subscription (step 4).
func (d *DB) EnableSubscription(ctx context.Context, name string) error {
	return d.alterSubscription(ctx, name, "ENABLE")
}

func (d *DB) alterSubscription(ctx context.Context, name, action string) error {
	id, err := parseName(name)
	if err != nil {
		return fmt.Errorf("database %s: subscription: %w", d.name, err)
	}
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	if _, err := d.pool.Exec(ctx, "ALTER SUBSCRIPTION "+id.Sanitize()+" "+action); err != nil {
		return d.subErr(strings.ToLower(action)+" subscription "+name, err)
	}
	d.logger.Info("subscription altered", zap.String("subscription", name), zap.String("action", action))
	return nil
}

func (d *DB) subErr(op string, err error) error {
	if pgerror.Code(err) == pgerror.CodeUndefinedObject {
		return fmt.Errorf("database %s: %s: %w: %w", d.name, op, ErrSubscriptionNotFound, err)
	}
	return d.wrap(op, err)
}

// subscription is what ResyncSubscription must keep to recreate one.
type subscription struct {
	oid          uint32
	conninfo     string // holds the publisher's password: never log it
	publications []string
	slot         string
	tables       []pgx.Identifier
}

// ResyncSubscription rebuilds a subscription from scratch: the repair after
// an in-place restore of the publisher, which recreates the publication and
// leaves the subscriber looping on "publication ... does not exist" (and
// with rows the restore removed). Steps, run on the subscriber:
//
//  1. read the subscription (conninfo, publications, slot, tables) and
//     connect to the publisher with that conninfo, checking every
//     publication exists there and publishes at least one table
//     (ErrPublicationNotFound, ErrPublicationEmpty). Nothing has changed
//     yet if this fails.
//  2. ALTER SUBSCRIPTION ... DISABLE.
//  3. TRUNCATE the subscribed tables (those of pg_subscription_rel and of
//     the publications, that exist here) in one statement, so the copy does
//     not collide with stale rows. If this fails the subscription is left
//     disabled and nothing else changed.
//  4. SET (slot_name = NONE) and DROP SUBSCRIPTION: without a slot the drop
//     does not reach out to the publisher.
//  5. drop the old slot (and leftover table-sync slots) on the publisher,
//     retrying while its walsender is still exiting.
//  6. CREATE SUBSCRIPTION with the same connection, publications and slot
//     name and copy_data = true: a new slot at the current position and a
//     fresh copy of every table.
//
// rollguard connects to the publisher with the subscription's own conninfo
// (read from pg_subscription, which needs a superuser on the subscriber), so
// that conninfo must work from where rollguard runs too. Other subscription
// options (binary, streaming, two_phase ...) are not carried over; they take
// their defaults.
//
//  7. wait until every table has finished its initial copy and caught up
//     (pg_subscription_rel state 'r'); this wait is bounded by ctx only.
//     The primary's StreamingLag cannot see the copy: it reads near zero
//     while the secondary's tables are still empty.
func (d *DB) ResyncSubscription(ctx context.Context, name string) error {
	id, err := parseName(name)
	if err != nil {
		return fmt.Errorf("database %s: resync subscription: %w", d.name, err)
	}
	start := time.Now()
	// The initial copy grows with the database: like a restore it is
	// bounded only by the caller's ctx; the catalog work before it gets a
	// fixed budget.
	copyCtx := ctx
	ctx, cancel := context.WithTimeout(ctx, 3*d.timeout)
	defer cancel()

	sub, err := d.readSubscription(ctx, name)
	if err != nil {
		return err
	}
	pub, err := d.connectPublisher(ctx, sub.conninfo)
	if err != nil {
		return fmt.Errorf("database %s: resync subscription %s: connect to publisher: %w", d.name, name, err)
	}
	defer pub.Close(context.WithoutCancel(ctx))
	pubTables, err := publicationTables(ctx, pub, sub.publications)
	if err != nil {
		return fmt.Errorf("database %s: resync subscription %s: %w", d.name, name, err)
	}

	if _, err := d.pool.Exec(ctx, "ALTER SUBSCRIPTION "+id.Sanitize()+" DISABLE"); err != nil {
		return d.subErr("resync subscription "+name+": disable", err)
	}
	d.logger.Info("subscription disabled for resync", zap.String("subscription", name))

	tables, err := d.existingTables(ctx, append(sub.tables, pubTables...))
	if err != nil {
		return fmt.Errorf("database %s: resync subscription %s (left disabled): %w", d.name, name, err)
	}
	if len(tables) > 0 {
		names := make([]string, len(tables))
		for i, t := range tables {
			names[i] = t.Sanitize()
		}
		if _, err := d.pool.Exec(ctx, "TRUNCATE TABLE "+strings.Join(names, ", ")); err != nil {
			return d.wrap("resync subscription "+name+" (left disabled): truncate", err)
		}
	}
	d.logger.Info("subscribed tables truncated", zap.String("subscription", name), zap.Int("tables", len(tables)))

	if _, err := d.pool.Exec(ctx, "ALTER SUBSCRIPTION "+id.Sanitize()+" SET (slot_name = NONE)"); err != nil {
		return d.subErr("resync subscription "+name+" (left disabled): detach slot", err)
	}
	if _, err := d.pool.Exec(ctx, "DROP SUBSCRIPTION "+id.Sanitize()); err != nil {
		return d.subErr("resync subscription "+name+" (left disabled, slot detached): drop", err)
	}
	d.logger.Info("subscription dropped for resync", zap.String("subscription", name))

	// From here on the subscription is gone: errors must say what to do.
	if err := dropSlots(ctx, pub, sub); err != nil {
		d.logger.Warn("old replication slot not dropped", zap.String("subscription", name), zap.String("slot", sub.slot), zap.Error(err))
		// A leftover slot only matters if it has the new one's name.
	}
	create := "CREATE SUBSCRIPTION " + id.Sanitize() +
		" CONNECTION " + quoteLiteral(sub.conninfo) +
		" PUBLICATION " + joinIdents(sub.publications) +
		" WITH (copy_data = true, slot_name = " + quoteLiteral(sub.slot) + ")"
	if _, err := d.pool.Exec(ctx, create); err != nil {
		// Never include the statement: the conninfo holds a password.
		return d.wrap(fmt.Sprintf("resync subscription %s: SUBSCRIPTION DROPPED, recreate failed (publications %s, slot %s)",
			name, strings.Join(sub.publications, ","), sub.slot), err)
	}
	d.logger.Info("subscription recreated",
		zap.String("subscription", name), zap.Strings("publications", sub.publications),
		zap.Int("tables", len(tables)), zap.Duration("duration", time.Since(start)))
	if err := d.waitCopied(copyCtx, name); err != nil {
		return err
	}
	d.logger.Info("subscription resynced", zap.String("subscription", name), zap.Duration("duration", time.Since(start)))
	return nil
}

// waitCopied waits until every table of the subscription has finished its
// initial copy and caught up (pg_subscription_rel state 'r'). The
// publisher's lag cannot tell: right after CREATE SUBSCRIPTION its slot is
// streaming with no lag while the secondary's tables are still empty.
func (d *DB) waitCopied(ctx context.Context, name string) error {
	const q = `
SELECT count(*) FILTER (WHERE sr.srsubstate <> 'r'), count(*)
FROM pg_subscription s
JOIN pg_subscription_rel sr ON sr.srsubid = s.oid
WHERE s.subname = $1 AND s.subdbid = (SELECT oid FROM pg_database WHERE datname = current_database())`
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		qctx, cancel := context.WithTimeout(ctx, d.timeout)
		var pending, total int64
		err := d.pool.QueryRow(qctx, q, name).Scan(&pending, &total)
		cancel()
		if err != nil {
			return d.wrap("resync subscription "+name+" (recreated): wait for the initial copy", err)
		}
		if pending == 0 {
			return nil
		}
		d.logger.Debug("initial copy in progress", zap.String("subscription", name), zap.Int64("pending", pending), zap.Int64("tables", total))
		select {
		case <-ctx.Done():
			return fmt.Errorf("database %s: resync subscription %s (recreated): initial copy of %d of %d tables not finished: %w",
				d.name, name, pending, total, ctx.Err())
		case <-tick.C:
		}
	}
}

func (d *DB) readSubscription(ctx context.Context, name string) (*subscription, error) {
	var s subscription
	err := d.pool.QueryRow(ctx, `
SELECT s.oid, s.subconninfo, s.subpublications, coalesce(s.subslotname::text, s.subname::text)
FROM pg_subscription s
JOIN pg_database db ON db.oid = s.subdbid
WHERE s.subname = $1 AND db.datname = current_database()`, name).Scan(&s.oid, &s.conninfo, &s.publications, &s.slot)
	if isNoRows(err) {
		return nil, fmt.Errorf("database %s: resync subscription %s: %w", d.name, name, ErrSubscriptionNotFound)
	}
	if err != nil {
		return nil, d.wrap("resync subscription "+name+": read", err)
	}
	rows, err := d.pool.Query(ctx, `
SELECT n.nspname, c.relname
FROM pg_subscription_rel sr
JOIN pg_class c ON c.oid = sr.srrelid
JOIN pg_namespace n ON n.oid = c.relnamespace
WHERE sr.srsubid = $1`, s.oid)
	if err != nil {
		return nil, d.wrap("resync subscription "+name+": read tables", err)
	}
	s.tables, err = scanIdents(rows)
	if err != nil {
		return nil, d.wrap("resync subscription "+name+": read tables", err)
	}
	return &s, nil
}

func (d *DB) connectPublisher(ctx context.Context, conninfo string) (*pgx.Conn, error) {
	cfg, err := pgx.ParseConfig(conninfo)
	if err != nil {
		// The parse error quotes the conninfo: do not pass it on.
		return nil, errors.New("subscription conninfo cannot be parsed")
	}
	if cfg.ConnectTimeout == 0 || cfg.ConnectTimeout > d.timeout {
		cfg.ConnectTimeout = d.timeout
	}
	cfg.RuntimeParams["application_name"] = "rollguard"
	return pgx.ConnectConfig(ctx, cfg)
}

func publicationTables(ctx context.Context, pub *pgx.Conn, pubs []string) ([]pgx.Identifier, error) {
	var found []string
	rows, err := pub.Query(ctx, "SELECT pubname::text FROM pg_publication WHERE pubname = ANY($1)", pubs)
	if err != nil {
		return nil, fmt.Errorf("read publications: %w", err)
	}
	found, err = pgx.CollectRows(rows, pgx.RowTo[string])
	if err != nil {
		return nil, fmt.Errorf("read publications: %w", err)
	}
	for _, p := range pubs {
		if !contains(found, p) {
			return nil, fmt.Errorf("publication %s: %w", p, ErrPublicationNotFound)
		}
	}
	rows, err = pub.Query(ctx, "SELECT DISTINCT schemaname::text, tablename::text FROM pg_publication_tables WHERE pubname = ANY($1)", pubs)
	if err != nil {
		return nil, fmt.Errorf("read publication tables: %w", err)
	}
	tables, err := scanIdents(rows)
	if err != nil {
		return nil, fmt.Errorf("read publication tables: %w", err)
	}
	if len(tables) == 0 {
		// Seen after a restore with --no-publications: the publication
		// survives but lost its tables. Resyncing would truncate the
		// secondary and copy nothing back.
		return nil, fmt.Errorf("publications %s: %w", strings.Join(pubs, ","), ErrPublicationEmpty)
	}
	return tables, nil
}

// existingTables dedups ids and keeps those that exist on this server.
func (d *DB) existingTables(ctx context.Context, ids []pgx.Identifier) ([]pgx.Identifier, error) {
	seen := map[string]bool{}
	var out []pgx.Identifier
	for _, id := range ids {
		q := id.Sanitize()
		if seen[q] {
			continue
		}
		seen[q] = true
		var exists bool
		if err := d.pool.QueryRow(ctx, "SELECT to_regclass($1) IS NOT NULL", q).Scan(&exists); err != nil {
			return nil, d.wrap("look up table "+strings.Join(id, "."), err)
		}
		if exists {
			out = append(out, id)
		}
	}
	return out, nil
}

// dropSlots drops the subscription's slot and any table-sync slots it left
// (pg_<suboid>_sync_<relid>_<sysid>) on the publisher. A slot stays active
// for a moment after DISABLE while its walsender exits: retry until then.
func dropSlots(ctx context.Context, pub *pgx.Conn, sub *subscription) error {
	const q = `
SELECT count(pg_drop_replication_slot(slot_name))
FROM pg_replication_slots
WHERE slot_name = $1 OR slot_name LIKE $2`
	syncPrefix := fmt.Sprintf("pg\\_%d\\_sync\\_%%", sub.oid)
	tick := time.NewTicker(200 * time.Millisecond)
	defer tick.Stop()
	for {
		var n int64
		err := pub.QueryRow(ctx, q, sub.slot, syncPrefix).Scan(&n)
		if err == nil || pgerror.Code(err) != pgerror.CodeObjectInUse {
			if err != nil {
				return fmt.Errorf("drop slot %s: %w", sub.slot, err)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("drop slot %s: still active: %w", sub.slot, ctx.Err())
		case <-tick.C:
		}
	}
}

// StreamingLag returns the largest replication lag of this server's
// subscribers and standbys (multi-region rollback, steps 1 and 5); with
// slots, only of the links using those replication slots, so an unrelated
// stale slot on the primary does not hold a rollback's wait for ever.
//
// It measures what the links report now (pg_stat_replication's
// write/flush/replay lag), which is what a plan waiting for "caught up"
// needs: a fresh answer from one query, and "unknown" whenever the links
// cannot say. The replicationLag trigger (builtin:replication_lag in
// pkg/source/postgres) measures something else on purpose: the age of the
// data each slot has confirmed, from a history of WAL positions kept
// across ticks, so it keeps growing when a subscription is disabled and
// its pg_stat_replication row is gone; one query cannot give that, and a
// trigger must see it (docs/design.md, "Two replication lags")..
//
// pg_stat_replication's lag columns go NULL about a second after a link
// catches up and WAL stops flowing: NULL on a streaming link whose peer has
// confirmed everything sent is zero lag, not unknown. A link that has not
// reported yet, and a slot with no walsender (a disabled or disconnected
// subscriber) that is behind the current WAL position, have no measurable
// lag: StreamingLag returns ErrLagUnknown so a caller waiting for
// "lag < 1s" keeps waiting instead of seeing a false zero. No link and no
// slot at all (of those asked for) is ErrNoReplication.
func (d *DB) StreamingLag(ctx context.Context, slots ...string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	// A walsender is named by its slot when it has one (a subscription's
	// application_name may be anything), by its application_name if not.
	rows, err := d.pool.Query(ctx, `
SELECT coalesce(s.slot_name::text, r.application_name, '') AS name, r.state,
       extract(epoch FROM greatest(r.write_lag, r.flush_lag, r.replay_lag))::float8 AS lag,
       pg_wal_lsn_diff(r.sent_lsn, coalesce(r.replay_lsn, r.flush_lsn))::float8 AS behind
FROM pg_stat_replication r
LEFT JOIN pg_replication_slots s ON s.active_pid = r.pid
UNION ALL
SELECT s.slot_name::text, 'inactive', NULL,
       pg_wal_lsn_diff(pg_current_wal_lsn(), coalesce(s.confirmed_flush_lsn, s.restart_lsn))::float8
FROM pg_replication_slots s
WHERE NOT s.active`)
	if err != nil {
		return 0, d.wrap("replication lag", err)
	}
	var links []link
	for rows.Next() {
		var l link
		if err := rows.Scan(&l.name, &l.state, &l.lag, &l.behind); err != nil {
			rows.Close()
			return 0, d.wrap("replication lag", err)
		}
		if len(slots) == 0 || slices.Contains(slots, l.name) {
			links = append(links, l)
		}
	}
	if err := rows.Err(); err != nil {
		return 0, d.wrap("replication lag", err)
	}
	lag, err := maxLag(links)
	if err != nil {
		if len(slots) > 0 {
			return 0, fmt.Errorf("database %s: slots %s: %w", d.name, strings.Join(slots, ", "), err)
		}
		return 0, fmt.Errorf("database %s: %w", d.name, err)
	}
	d.logger.Debug("replication lag", zap.Duration("lag", lag), zap.Int("links", len(links)))
	return lag, nil
}

// SubscriptionSlot is the replication slot a subscription of this server
// uses on its publisher (its name unless created with another slot_name).
func (d *DB) SubscriptionSlot(ctx context.Context, name string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, d.timeout)
	defer cancel()
	var slot string
	err := d.pool.QueryRow(ctx, `
SELECT coalesce(s.subslotname::text, s.subname::text)
FROM pg_subscription s
JOIN pg_database db ON db.oid = s.subdbid
WHERE s.subname = $1 AND db.datname = current_database()`, name).Scan(&slot)
	if isNoRows(err) {
		return "", fmt.Errorf("database %s: subscription %s: %w", d.name, name, ErrSubscriptionNotFound)
	}
	if err != nil {
		return "", d.wrap("subscription "+name+": slot", err)
	}
	return slot, nil
}

// link is one walsender, or one slot without a walsender.
type link struct {
	name   string
	state  *string
	lag    *float64 // seconds; nil when PostgreSQL shows NULL
	behind *float64 // bytes sent (or written) but not confirmed; nil if unknown
}

// maxLag applies StreamingLag's rules to the rows.
func maxLag(links []link) (time.Duration, error) {
	if len(links) == 0 {
		return 0, ErrNoReplication
	}
	var worst float64
	for _, l := range links {
		state := ""
		if l.state != nil {
			state = *l.state
		}
		switch {
		case l.lag != nil:
			worst = math.Max(worst, *l.lag)
		case state == "streaming" && l.behind != nil && *l.behind <= 0:
			// Caught up and idle: the lag columns have gone NULL.
		case state == "inactive":
			if l.behind == nil || *l.behind > 0 {
				return 0, fmt.Errorf("%w: slot %s has no walsender", ErrLagUnknown, l.name)
			}
		default:
			return 0, fmt.Errorf("%w: %s is %s and has not reported", ErrLagUnknown, l.name, state)
		}
	}
	return time.Duration(worst * float64(time.Second)), nil
}

func scanIdents(rows pgx.Rows) ([]pgx.Identifier, error) {
	var out []pgx.Identifier
	for rows.Next() {
		var schema, name string
		if err := rows.Scan(&schema, &name); err != nil {
			rows.Close()
			return nil, err
		}
		out = append(out, pgx.Identifier{schema, name})
	}
	return out, rows.Err()
}

func joinIdents(names []string) string {
	q := make([]string, len(names))
	for i, n := range names {
		q[i] = pgx.Identifier{n}.Sanitize()
	}
	return strings.Join(q, ", ")
}

// quoteLiteral renders s as an SQL string literal that means s whatever
// standard_conforming_strings is: an E-string with backslashes and quotes
// doubled.
func quoteLiteral(s string) string {
	s = strings.ReplaceAll(s, `\`, `\\`)
	s = strings.ReplaceAll(s, `'`, `''`)
	return "E'" + s + "'"
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
