package notify

import (
	"fmt"
	"maps"
	"time"
)

// Who asked for an action: Requester.Kind.
const (
	// RequestedByTrigger: a trigger fired; its evidence is the event's.
	RequestedByTrigger = "trigger"
	// RequestedByAlertmanager: an Alertmanager alert asked.
	RequestedByAlertmanager = "alertmanager"
	// RequestedByAPI: a human through the authenticated API (the CLI's
	// rollback, freeze); Name is the token's name when the token file
	// names its tokens.
	RequestedByAPI = "api"
	// RequestedByCLI: a human at a terminal (`rollback --local`).
	RequestedByCLI = "cli"
	// RequestedByResume: a leader finishing what an earlier one started.
	RequestedByResume = "resume"
)

// Requester is who asked for an action and why: every event of an action
// carries it (Details.Requester), so the incident record is an
// audit trail.
type Requester struct {
	Kind string `json:"kind"`
	// Name is the trigger's, the alert's alertname, or the caller's.
	Name   string    `json:"name,omitempty"`
	Reason string    `json:"reason,omitempty"`
	At     time.Time `json:"at"`
	// The Alertmanager alert that asked.
	Fingerprint string            `json:"fingerprint,omitempty"`
	StartsAt    time.Time         `json:"startsAt,omitzero"`
	Labels      map[string]string `json:"labels,omitempty"`
}

// Key identifies one request: the same request seen in two events (or
// redelivered) is recorded once.
func (r Requester) Key() string {
	return fmt.Sprintf("%s|%s|%s|%d|%s", r.Kind, r.Name, r.Fingerprint, r.StartsAt.UnixNano(), r.At.UTC().Format(time.RFC3339Nano))
}

// String is one line for pages and logs.
func (r Requester) String() string {
	s := r.Kind
	if r.Name != "" {
		s += " " + r.Name
	}
	if r.Fingerprint != "" {
		s += " (fingerprint " + r.Fingerprint + ")"
	}
	return s
}

// Clone returns a copy that shares nothing with r.
func (r Requester) Clone() Requester {
	r.Labels = maps.Clone(r.Labels)
	return r
}
