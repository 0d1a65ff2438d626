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
	"maps"
	"slices"
	"strings"
	"time"

	"github.com/prometheus/common/model"
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
	Target   string
	Action   string
	Security bool
	Reason   string
	// Fingerprint identifies the alert (its label set) across repeats;
	// with StartsAt it identifies one firing of it.
	Fingerprint string
	StartsAt    time.Time
	AlertName   string
	// Labels are the alert's, clipped (MaxLabels, each value clipped).
	Labels map[string]string
}

// Rejected is a firing alert that names rollguard_target but that
// rollguard cannot act on: an unknown target or action. It does not fail
// the notification (Alertmanager does not retry a 4xx, and the valid
// alerts of the same group must not be dropped with it); the caller
// reports and pages it.
type Rejected struct {
	// Index is the alert's position in the payload.
	Index       int
	Target      string
	Action      string
	Fingerprint string
	AlertName   string
	Labels      map[string]string
	StartsAt    time.Time
	// Err says why, naming the label and value; it wraps ErrRejected.
	Err error
}

// ErrRejected marks an alert rollguard cannot act on.
var ErrRejected = errors.New("alert rejected")

// Notification is what one webhook payload asks of rollguard.
type Notification struct {
	Requests []Request
	Rejected []Rejected
	// Resolved are the fingerprints of resolved alerts that name
	// rollguard_target: each ends the request its firing made.
	Resolved []string
}

// MaxLabels bounds the labels kept from one alert.
const MaxLabels = 64

// Options says which targets and actions exist; anything else is refused,
// so nothing in a request can make rollguard touch an unconfigured target.
type Options struct {
	Targets map[string]bool
	Actions map[string]bool
	// DefaultAction applies when the alert has no rollguard_action label.
	DefaultAction string
}

// Parse reads one notification from r: the requests of its firing alerts,
// the alerts it cannot act on, the alerts that resolved. Alerts without
// rollguard_target are ignored. A payload that is not a valid version 4
// notification (malformed JSON, a wrong version, an alert status that is
// neither firing nor resolved) fails as a whole: a half-understood
// notification must not act.
func Parse(r io.Reader, opts Options) (*Notification, error) {
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
	n := &Notification{}
	for i, a := range m.Alerts {
		if a.Status != "resolved" && a.Status != "firing" {
			return nil, fmt.Errorf("%w: alerts[%d].status %q: want firing or resolved", ErrInvalid, i, a.Status)
		}
		target, ok := a.Labels[LabelTarget]
		if !ok {
			continue
		}
		fp := a.Fingerprint
		if fp == "" {
			// What Alertmanager itself sends: a hash of the label set.
			fp = model.LabelSet(toLabelSet(a.Labels)).Fingerprint().String()
		}
		fp = clip(fp)
		if a.Status == "resolved" {
			n.Resolved = append(n.Resolved, fp)
			continue
		}
		action := a.Labels[LabelAction]
		if action == "" {
			action = opts.DefaultAction
		}
		name, labels := clip(a.Labels["alertname"]), clipLabels(a.Labels)
		var rejected error
		switch {
		case !opts.Targets[target]:
			rejected = fmt.Errorf("%w: alerts[%d].labels.%s %q: not a configured target", ErrRejected, i, LabelTarget, clip(target))
		case !opts.Actions[action]:
			rejected = fmt.Errorf("%w: alerts[%d].labels.%s %q: unknown action", ErrRejected, i, LabelAction, clip(action))
		}
		if rejected != nil {
			n.Rejected = append(n.Rejected, Rejected{Index: i, Target: clip(target), Action: clip(action), Fingerprint: fp,
				AlertName: name, Labels: labels, StartsAt: a.StartsAt, Err: rejected})
			continue
		}
		reason := a.Labels["alertname"]
		if s := a.Annotations["summary"]; s != "" {
			reason += ": " + s
		}
		n.Requests = append(n.Requests, Request{
			Target:      target,
			Action:      action,
			Security:    a.Labels[LabelSecurity] == "true",
			Reason:      clip(strings.TrimSpace("alertmanager " + reason)),
			Fingerprint: fp,
			StartsAt:    a.StartsAt,
			AlertName:   name,
			Labels:      labels,
		})
	}
	return n, nil
}

func toLabelSet(l map[string]string) model.LabelSet {
	out := make(model.LabelSet, len(l))
	for k, v := range l {
		out[model.LabelName(k)] = model.LabelValue(v)
	}
	return out
}

// clipLabels keeps at most MaxLabels labels (by name), values clipped.
func clipLabels(l map[string]string) map[string]string {
	if len(l) == 0 {
		return nil
	}
	names := slices.Sorted(maps.Keys(l))
	if len(names) > MaxLabels {
		names = names[:MaxLabels]
	}
	out := make(map[string]string, len(names))
	for _, k := range names {
		out[clip(k)] = clip(l[k])
	}
	return out
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
