// Package pgerror is rollguard's one reading of PostgreSQL's errors: the
// SQLSTATEs it branches on and which running-out-of-connections sentinel
// an error is. Both PostgreSQL clients (the metric source and the
// rollback's database handle) classify through it, so "too many
// connections" means the same thing to a trigger and to a plan. The
// sentinels themselves are pkg/source's, the signal vocabulary the trigger
// reads: declared once there, so errors.Is agrees across both clients
// without the trigger depending on a PostgreSQL driver.
package pgerror

import (
	"errors"
	"strings"

	"github.com/jackc/pgx/v5/pgconn"

	"github.com/rollguard/rollguard/pkg/source"
)

// SQLSTATEs rollguard branches on.
const (
	// CodeTooManyConnections (too_many_connections) is raised for the
	// server out of slots, the reserved slots, and a database's or role's
	// CONNECTION LIMIT alike.
	CodeTooManyConnections = "53300"
	// CodeQueryCanceled (query_canceled) is what statement_timeout raises.
	CodeQueryCanceled = "57014"
	// CodeUndefinedObject (undefined_object): e.g. a subscription or slot
	// that does not exist.
	CodeUndefinedObject = "42704"
	// CodeObjectInUse (object_in_use): e.g. a replication slot a walsender
	// still holds.
	CodeObjectInUse = "55006"
	// ClassSyntaxOrAccess prefixes syntax errors and access rule
	// violations: the query itself is wrong, retrying will not help.
	ClassSyntaxOrAccess = "42"
)

// Code is err's SQLSTATE, or "" when err carries no PostgreSQL error.
func Code(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// ConnectionLimit classifies a SQLSTATE 53300, nil for any other error.
// The server out of slots ("sorry, too many clients already", the
// reserved slots) or the database at its CONNECTION LIMIT is
// source.ErrTooManyConnections: the pool exhaustion a trigger watches.
// The connecting role at its CONNECTION LIMIT is
// source.ErrRoleConnectionLimit: the application's sessions do not count
// against rollguard's role, so that is rollguard unable to connect, never
// evidence. PostgreSQL tells them apart only in the message, which this
// reads in English (lc_messages C or en); a translated message counts as
// the server's.
func ConnectionLimit(err error) error {
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) || pgErr.Code != CodeTooManyConnections {
		return nil
	}
	if strings.HasPrefix(pgErr.Message, "too many connections for role") {
		return source.ErrRoleConnectionLimit
	}
	return source.ErrTooManyConnections
}
