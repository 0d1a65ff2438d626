// Package promql reads a trigger's PromQL with Prometheus' own parser, for
// what rollguard must know about a query before it runs it: whether
// Prometheus will accept it (checked when a config is loaded, so a typo is
// a config error and not a trigger that never fires), and how far back in
// time one evaluation reads (its lookback), so the verify step judges only
// data that postdates a rollback.
//
// Prometheus' parser is the reference: a second implementation (a regular
// expression, a hand-written parser, or a superset dialect such as
// MetricsQL) would accept queries Prometheus rejects, or the reverse.
package promql

import (
	"errors"
	"fmt"
	"time"

	"github.com/prometheus/prometheus/promql/parser"
)

// Error is a query Prometheus would reject, with where the parser stopped.
type Error struct {
	// Line and Column are 1-based positions in the query (bytes), 0 when
	// the parser gave none.
	Line, Column int
	// Msg is the parser's message, without its position.
	Msg string
}

func (e *Error) Error() string {
	switch {
	case e.Column == 0:
		return "PromQL: " + e.Msg
	case e.Line > 1:
		return fmt.Sprintf("PromQL parse error at line %d, column %d: %s", e.Line, e.Column, e.Msg)
	}
	return fmt.Sprintf("PromQL parse error at column %d: %s", e.Column, e.Msg)
}

// Query is what rollguard knows about a parsed query.
type Query struct {
	// Type is the type of the query's result: "vector", "scalar",
	// "matrix" or "string".
	Type string
	// Lookback is how far before its evaluation time one evaluation reads
	// samples: the longest sum of range selector, subquery range and
	// offsets along any path of the expression. A query without a range
	// selector reads only the latest sample (0).
	Lookback time.Duration
	// Pinned: a selector or subquery uses the @ modifier, so part of the
	// query reads a fixed instant whatever the evaluation time.
	Pinned bool
}

// Parse parses q as Prometheus does. A rejected query is an *Error.
func Parse(q string) (Query, error) {
	expr, err := parser.ParseExpr(q)
	if err != nil {
		return Query{}, parseError(q, err)
	}
	out := Query{Type: string(expr.Type())}
	out.Lookback, out.Pinned = lookback(expr)
	return out, nil
}

// parseError turns the parser's error into an *Error with a line and
// column computed from the byte offset it reports.
func parseError(q string, err error) *Error {
	var pe *parser.ParseErr
	var pes parser.ParseErrors
	switch {
	case errors.As(err, &pes) && len(pes) > 0:
		pe = &pes[0]
	case errors.As(err, &pe):
	default:
		return &Error{Msg: err.Error()}
	}
	msg := "parse error"
	if pe.Err != nil {
		msg = pe.Err.Error()
	}
	pos := int(pe.PositionRange.Start)
	if pos < 0 || pos > len(q) {
		return &Error{Msg: msg}
	}
	line, col := 1, pos+1
	for i := 0; i < pos; i++ {
		if q[i] == '\n' {
			line, col = line+1, pos-i
		}
	}
	return &Error{Line: line, Column: col, Msg: msg}
}

// lookback is the longest time before the evaluation instant that n reads,
// and whether any part of it is pinned by @.
func lookback(n parser.Node) (time.Duration, bool) {
	switch n := n.(type) {
	case *parser.MatrixSelector:
		d, pinned := lookback(n.VectorSelector)
		return max(0, d+n.Range), pinned
	case *parser.VectorSelector:
		// An instant selector reads the latest sample at t − offset.
		return max(0, n.OriginalOffset), n.Timestamp != nil || n.StartOrEnd != 0
	case *parser.SubqueryExpr:
		d, pinned := lookback(n.Expr)
		return max(0, d+n.Range+n.OriginalOffset), pinned || n.Timestamp != nil || n.StartOrEnd != 0
	}
	var longest time.Duration
	var pinned bool
	for _, c := range parser.Children(n) {
		d, p := lookback(c)
		longest = max(longest, d)
		pinned = pinned || p
	}
	return longest, pinned
}
