// Package notify tells humans what rollguard saw and did. It defines the
// Event that every milestone of an incident produces, the Notifier a
// delivery backend implements (PagerDuty, Slack, the incident record), and
// a delivery Queue that never blocks its producer and retries only what is
// worth retrying.
//
// The rollback must never wait on a pager: producers call Queue.Enqueue,
// which returns at once, and one goroutine per notifier delivers in order.
package notify

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"regexp"
	"strings"
	"time"
)

// Kind is the milestone an Event reports.
type Kind string

// The milestones of an incident, in the order a successful rollback
// produces them, then the ones outside that path.
const (
	KindDetected          Kind = "detected"
	KindRollbackStarted   Kind = "rollback_started"
	KindStepStarted       Kind = "step_started"
	KindStepFinished      Kind = "step_finished"
	KindRollbackSucceeded Kind = "rollback_succeeded"
	KindRollbackFailed    Kind = "rollback_failed"
	// KindRollbackUnverified: the plan ran to its end but its verify step
	// had no data to judge the recovery by (a source down, too little
	// traffic): never a success, a human checks. Details.Verification says
	// what is known.
	KindRollbackUnverified Kind = "rollback_unverified"
	// KindCannotRollback: a trigger fired but an interlock (freeze, budget,
	// no distinct older revision, paused Deployment...) blocked the action,
	// so a human must decide.
	KindCannotRollback Kind = "cannot_rollback"
	// KindWouldRollback: dry-run; the plan in Details is what would run.
	KindWouldRollback Kind = "would_rollback"
	// KindBlind: a trigger has had no data for blindAfter.
	KindBlind Kind = "blind"
	// KindBlindResolved: a trigger paged as blind has data again; it
	// closes the blind page.
	KindBlindResolved Kind = "blind_resolved"
	// KindTest: an operator asked for a test notification.
	KindTest Kind = "test"
	// KindRecordFailed: an incident record could not be stored; the
	// rollback went on without it, and a human should know.
	KindRecordFailed Kind = "record_failed"
)

// Severity follows PagerDuty's four levels, which Slack and the incident
// record reuse.
type Severity string

// Severities.
const (
	SeverityCritical Severity = "critical"
	SeverityError    Severity = "error"
	SeverityWarning  Severity = "warning"
	SeverityInfo     Severity = "info"
)

// Valid reports whether s is one of the four severities.
func (s Severity) Valid() bool {
	switch s {
	case SeverityCritical, SeverityError, SeverityWarning, SeverityInfo:
		return true
	}
	return false
}

// Target names the Deployment an event is about.
type Target struct {
	// Cluster is optional; set when one PagerDuty service receives events
	// from several rollguard instances.
	Cluster    string `json:"cluster,omitempty"`
	Namespace  string `json:"namespace"`
	Deployment string `json:"deployment"`
}

// String is "namespace/deployment".
func (t Target) String() string { return t.Namespace + "/" + t.Deployment }

// Link points a human at more detail.
type Link struct {
	Href string `json:"href"`
	Text string `json:"text,omitempty"`
}

// Event is one milestone of one incident. Producers fill what they know;
// consumers tolerate missing fields.
type Event struct {
	// ID names this one event across processes (the outbox, a redelivery
	// by the next leader); the Queue sets it when empty.
	ID      string    `json:"id,omitempty"`
	Kind    Kind      `json:"kind"`
	Time    time.Time `json:"time"`
	Target  Target    `json:"target"`
	Trigger string    `json:"trigger,omitempty"`
	// IncidentID groups every event of one incident; build it with
	// IncidentID(target, badRevision) so a second detection of the same bad
	// revision lands on the same PagerDuty alert and incident record. It is
	// safe as a file name and a URL path segment.
	IncidentID string   `json:"incidentID,omitempty"`
	Severity   Severity `json:"severity,omitempty"`
	// Security events also go to the security routing key.
	Security bool   `json:"security,omitempty"`
	Summary  string `json:"summary,omitempty"`
	// Details is the evidence and progress. Every notifier reads the same
	// slices concurrently: never modify them after Enqueue.
	Details Details `json:"details,omitzero"`
	Links   []Link  `json:"links,omitempty"`
}

// Milestones a StepFinished event may mark, for the runbook's timeline
// ("previous version restored", "system stable").
const (
	MilestoneRestored = "restored"
	MilestoneStable   = "stable"
)

// Step outcomes.
const (
	OutcomeOK      = "ok"
	OutcomeFailed  = "failed"
	OutcomeSkipped = "skipped"
	// OutcomeUnverified: the verify step ran to its end without data.
	OutcomeUnverified = "unverified"
)

// Sample is one observation of a trigger's window. Value is NaN when the
// observation had no number (an error fired the trigger, e.g. SQLSTATE
// 53300); JSON writes it as null, which encoding/json would otherwise
// refuse, losing the evidence and the incident record with it.
type Sample struct {
	Time  time.Time `json:"time"`
	Value float64   `json:"value"`
}

type sampleJSON struct {
	Time  time.Time `json:"time"`
	Value *float64  `json:"value"`
}

// MarshalJSON writes a non-finite Value as null.
func (s Sample) MarshalJSON() ([]byte, error) {
	out := sampleJSON{Time: s.Time}
	if !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) {
		out.Value = &s.Value
	}
	return json.Marshal(out)
}

// UnmarshalJSON reads null as NaN.
func (s *Sample) UnmarshalJSON(b []byte) error {
	var in sampleJSON
	if err := json.Unmarshal(b, &in); err != nil {
		return err
	}
	s.Time, s.Value = in.Time, math.NaN()
	if in.Value != nil {
		s.Value = *in.Value
	}
	return nil
}

// StepResult is how one step of a plan went.
type StepResult struct {
	Name     string    `json:"name"`
	Started  time.Time `json:"started"`
	Finished time.Time `json:"finished,omitzero"`
	Outcome  string    `json:"outcome,omitempty"`
	Error    string    `json:"error,omitempty"`
	// Detail is what the step did (replicas available, rows restored,
	// what verify saw).
	Detail string `json:"detail,omitempty"`
}

// DataIntegrity is the runbook's post-rollback data check.
type DataIntegrity struct {
	AlertDeliveryQueue   int64    `json:"alertDeliveryQueue"`
	UnresolvedConflicts  int64    `json:"unresolvedConflicts"`
	LatestSchemaVersions []string `json:"latestSchemaVersions,omitempty"`
}

// Notifier delivers events to one destination. Notify must honour ctx and
// return an error wrapping ErrRetryable (or a *RetryableError) only when a
// retry may succeed; any other error is final. Errors must not contain
// secrets: they are logged and served by the status API.
type Notifier interface {
	Name() string
	Notify(ctx context.Context, e Event) error
}

// Taker is a Notifier that acts on some events only (PagerDuty pages the
// detection and the outcome, not every step). The outbox keeps an event
// pending only for the notifiers that take it: a next leader has nothing
// to deliver to the others.
type Taker interface {
	Takes(e Event) bool
}

var unsafeID = regexp.MustCompile(`[^a-z0-9.-]+`)

// IncidentID is the identity of an incident: the target and the revision
// that went bad. It contains only [a-z0-9._-] so it is a file name, a URL
// segment and a PagerDuty dedup_key as is.
func IncidentID(t Target, badRevision string) string {
	parts := []string{t.Namespace, t.Deployment, badRevision}
	if t.Cluster != "" {
		parts = append([]string{t.Cluster}, parts...)
	}
	for i, p := range parts {
		p = strings.Trim(unsafeID.ReplaceAllString(strings.ToLower(p), "-"), "-.")
		if p == "" {
			p = "unknown"
		}
		parts[i] = p
	}
	// "_" cannot appear in Kubernetes names, so the parts stay unambiguous.
	return strings.Join(parts, "_")
}

// DefaultSummary is a one-line description for events whose producer left
// Summary empty.
func DefaultSummary(e Event) string {
	t := e.Target.String()
	switch e.Kind {
	case KindDetected:
		return fmt.Sprintf("%s: trigger %s fired", t, e.Trigger)
	case KindRollbackStarted:
		return fmt.Sprintf("ROLLBACK INITIATED: %s (trigger %s)", t, e.Trigger)
	case KindStepStarted:
		return fmt.Sprintf("%s: rollback step %s started", t, e.Details.Step)
	case KindStepFinished:
		return fmt.Sprintf("%s: rollback step %s finished", t, e.Details.Step)
	case KindRollbackSucceeded:
		return fmt.Sprintf("%s rolled back (trigger %s)", t, e.Trigger)
	case KindRollbackFailed:
		return fmt.Sprintf("ROLLBACK FAILED: %s (trigger %s)", t, e.Trigger)
	case KindRollbackUnverified:
		return fmt.Sprintf("ROLLBACK DONE, UNVERIFIED: %s (trigger %s)", t, e.Trigger)
	case KindCannotRollback:
		return fmt.Sprintf("%s: trigger %s fired but rollguard cannot roll back", t, e.Trigger)
	case KindWouldRollback:
		return fmt.Sprintf("dry-run: would roll back %s (trigger %s)", t, e.Trigger)
	case KindBlind:
		return fmt.Sprintf("%s: trigger %s has no data (rollguard is blind)", t, e.Trigger)
	case KindBlindResolved:
		return fmt.Sprintf("%s: trigger %s has data again", t, e.Trigger)
	case KindTest:
		return "rollguard test notification"
	case KindRecordFailed:
		return fmt.Sprintf("%s: the incident record %s could not be stored", t, e.IncidentID)
	}
	return fmt.Sprintf("%s: %s", t, e.Kind)
}

// Truncate cuts s to at most n bytes without splitting a UTF-8 rune,
// marking the cut with an ellipsis.
func Truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	const ell = "…"
	cut := n - len(ell)
	if cut < 0 {
		cut = 0
	}
	for cut > 0 && !isRuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + ell
}

func isRuneStart(b byte) bool { return b&0xC0 != 0x80 }

// Scrub replaces every occurrence of each non-empty secret in s.
func Scrub(s string, secrets ...string) string {
	for _, sec := range secrets {
		if len(sec) < 4 {
			// Replacing a very short string would mangle innocent text and
			// such a value is no secret anyway.
			continue
		}
		s = strings.ReplaceAll(s, sec, "[REDACTED]")
	}
	return s
}
