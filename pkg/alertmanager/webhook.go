// Package alertmanager parses Alertmanager webhook notifications (payload
// version 4) into action requests. It is the runbook's "critical security
// vulnerability" path: an alert a human or a scanner raised names the
// target and the action in its labels, and the request then passes the
// same interlocks as a firing trigger.
package alertmanager

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"time"
)

// Labels an alert carries to ask rollguard for an action.
const (
	LabelTarget   = "rollguard_target"
	LabelAction   = "rollguard_action"
	LabelSecurity = "rollguard_security"
)

// MaxBodyBytes bounds a webhook body; Alertmanager's own are far smaller.
const MaxBodyBytes = 1 << 20

// ErrInvalid marks a payload that is not a valid version 4 notification.
var ErrInvalid = errors.New("invalid alertmanager payload")

// Message is the webhook body (only the fields rollguard reads).
type Message struct {
	Version  string  `json:"version"`
	GroupKey string  `json:"groupKey"`
	Status   string  `json:"status"`
	Receiver string  `json:"receiver"`
	Alerts   []Alert `json:"alerts"`
}

// Alert is one alert of a notification.
type Alert struct {
	Status       string            `json:"status"`
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations"`
	StartsAt     time.Time         `json:"startsAt"`
	GeneratorURL string            `json:"generatorURL"`
	Fingerprint  string            `json:"fingerprint"`
}

// Request is an action an alert asks for.
type Request struct {
	Target      string
	Action      string
	Security    bool
	Reason      string
	Fingerprint string
	StartsAt    time.Time
}

// Options says which targets and actions exist; anything else is refused,
// so nothing in a request can make rollguard touch an unconfigured target.
type Options struct {
	Targets map[string]bool
	Actions map[string]bool
	// DefaultAction applies when the alert has no rollguard_action label.
	DefaultAction string
}

// Parse reads one notification from r and returns the requests of its
// firing alerts. Resolved alerts and alerts without rollguard_target are
// ignored. Any malformed part fails the whole payload: a half-understood
// notification must not act.
func Parse(r io.Reader, opts Options) ([]Request, error) {
	body, err := io.ReadAll(io.LimitReader(r, MaxBodyBytes+1))
	if err != nil {
		return nil, fmt.Errorf("%w: read body: %w", ErrInvalid, err)
	}
	if len(body) > MaxBodyBytes {
		return nil, fmt.Errorf("%w: body larger than %d bytes", ErrInvalid, MaxBodyBytes)
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	var m Message
	if err := dec.Decode(&m); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
	}
	if dec.More() {
		return nil, fmt.Errorf("%w: trailing data after the JSON object", ErrInvalid)
	}
	if m.Version != "4" {
		return nil, fmt.Errorf("%w: version %q: want \"4\"", ErrInvalid, m.Version)
	}
	var reqs []Request
	for i, a := range m.Alerts {
		switch a.Status {
		case "resolved":
			continue
		case "firing":
		default:
			return nil, fmt.Errorf("%w: alerts[%d].status %q: want firing or resolved", ErrInvalid, i, a.Status)
		}
		target, ok := a.Labels[LabelTarget]
		if !ok {
			continue
		}
		if !opts.Targets[target] {
			return nil, fmt.Errorf("%w: alerts[%d].labels.%s %q: not a configured target", ErrInvalid, i, LabelTarget, clip(target))
		}
		action := a.Labels[LabelAction]
		if action == "" {
			action = opts.DefaultAction
		}
		if !opts.Actions[action] {
			return nil, fmt.Errorf("%w: alerts[%d].labels.%s %q: unknown action", ErrInvalid, i, LabelAction, clip(action))
		}
		reason := a.Labels["alertname"]
		if s := a.Annotations["summary"]; s != "" {
			reason += ": " + s
		}
		reqs = append(reqs, Request{
			Target:      target,
			Action:      action,
			Security:    a.Labels[LabelSecurity] == "true",
			Reason:      clip(strings.TrimSpace("alertmanager " + reason)),
			Fingerprint: a.Fingerprint,
			StartsAt:    a.StartsAt,
		})
	}
	return reqs, nil
}

// clip bounds strings from outside before they reach logs and pages.
func clip(s string) string {
	const max = 256
	if len(s) <= max {
		return s
	}
	r := []rune(s)
	if len(r) > max {
		r = r[:max]
	}
	return string(r) + "…"
}
