// Package source holds the types and sentinel errors shared by every metric
// backend (Prometheus, PostgreSQL) and by their consumer, the evaluator.
//
// Backends wrap the sentinels so callers can branch with errors.Is without
// knowing which backend answered, e.g.
//
//	fmt.Errorf("prometheus query %q: %w: %w", q, source.ErrTimeout, err)
package source

import (
	"errors"
	"time"
)

// Series is one labelled sample of an instant query.
type Series struct {
	// Labels identify the series; the evaluator matches triggers against
	// them. Never nil-checked by consumers: a nil map reads as empty.
	Labels map[string]string
	// Value is a finite number. Backends drop NaN and ±Inf, which mean
	// "no data", rather than passing them on.
	Value float64
}

// Point is one sample of a range query.
type Point struct {
	Time  time.Time
	Value float64
}

// Range is one labelled series of a range query, points in time order.
// It is used to rebuild trigger windows after a restart.
type Range struct {
	Labels map[string]string
	Points []Point
}

// Sentinel errors. Triggers classify observations with errors.Is against
// these, so a backend must wrap (%w) the one that fits.
var (
	// ErrNoData means the query ran and returned nothing usable (empty
	// vector, no rows, NaN). It is never treated as a breach.
	ErrNoData = errors.New("no data")
	// ErrUnreachable means the backend could not be contacted
	// (connection refused, DNS, TLS, 5xx from a proxy).
	ErrUnreachable = errors.New("source unreachable")
	// ErrUnauthorized means the backend refused rollguard's credentials
	// (HTTP 401 or 403). Backends wrap ErrUnreachable with it: no data,
	// never a breach.
	ErrUnauthorized = errors.New("unauthorized")
	// ErrTLS means the TLS handshake failed or was never tried: an unknown
	// CA, a certificate for another name, a client certificate refused or
	// missing, plain HTTP spoken to a TLS server or the other way round.
	// Backends wrap ErrUnreachable with it: no data, never a breach.
	ErrTLS = errors.New("TLS handshake failed")
	// ErrTimeout means the query did not finish within its deadline.
	ErrTimeout = errors.New("source query timed out")
	// ErrBadQuery means the backend rejected the query itself (syntax,
	// unknown function, wrong result type); retrying will not help.
	ErrBadQuery = errors.New("bad query")
	// ErrTooManyConnections is PostgreSQL SQLSTATE 53300: the server has no
	// free connection slot. For a connection-pool trigger this is itself
	// evidence of the failure being watched (onError: breach).
	ErrTooManyConnections = errors.New("too many connections")
	// ErrAmbiguous means several series matched where exactly one was
	// wanted; the trigger's query or match labels are too loose.
	ErrAmbiguous = errors.New("ambiguous result: several series")
)
