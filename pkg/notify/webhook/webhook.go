// Package webhook posts every rollguard milestone as one JSON document to
// an HTTP endpoint of the operator's choosing: a chat bridge, a ticketing
// system, an in-house pager. The document is versioned and described by a
// JSON Schema (docs/webhook.schema.json, explained in docs/webhook.md);
// delivery goes through the same retry queue as PagerDuty and Slack, and a
// retried event carries the same id so the receiver can drop duplicates.
package webhook

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
)

// SchemaVersion is the payload's "version"; it changes only when a field
// changes meaning or goes away (new fields may appear in any version).
const SchemaVersion = "1"

// Payload is the JSON document of one event.
type Payload struct {
	// Version is SchemaVersion.
	Version string `json:"version"`
	// ID identifies the event: the same on every retry of it.
	ID         string          `json:"id"`
	Kind       notify.Kind     `json:"kind"`
	Time       time.Time       `json:"time"`
	Severity   notify.Severity `json:"severity,omitempty"`
	Security   bool            `json:"security"`
	IncidentID string          `json:"incidentID,omitempty"`
	Target     notify.Target   `json:"target"`
	Trigger    string          `json:"trigger,omitempty"`
	// Summary is one line for a human; never empty.
	Summary string         `json:"summary"`
	Details notify.Details `json:"details,omitzero"`
	Links   []notify.Link  `json:"links,omitempty"`
}

// Options configure a Notifier.
type Options struct {
	// Name tells webhooks apart in metrics and logs (the notifier is
	// "webhook:<name>").
	Name string
	// URL receives the POSTs. It may hold a token: it never appears in
	// errors or logs.
	URL string
	// Client carries the requests (authentication, TLS, proxy); nil means
	// a plain client.
	Client *http.Client
	// Kinds are the event kinds sent; empty means every kind.
	Kinds []notify.Kind
	// Now is the clock for Retry-After dates.
	Now func() time.Time
}

// Notifier posts events to one webhook.
type Notifier struct {
	opts    Options
	secrets []string
}

// New checks opts and returns a Notifier. It sends nothing.
func New(opts Options) (*Notifier, error) {
	if opts.Name == "" {
		return nil, errors.New("webhook: name is empty")
	}
	u, err := url.Parse(opts.URL)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		// Never echo the URL: it may be the credential.
		return nil, fmt.Errorf("webhook %s: url is not an http(s) URL", opts.Name)
	}
	if opts.Client == nil {
		opts.Client = &http.Client{}
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Notifier{opts: opts, secrets: notify.URLSecrets(opts.URL)}, nil
}

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "webhook:" + n.opts.Name }

// Notify implements notify.Notifier: it posts e's payload, unless its kind
// is not wanted.
func (n *Notifier) Notify(ctx context.Context, e notify.Event) error {
	if len(n.opts.Kinds) > 0 && !slices.Contains(n.opts.Kinds, e.Kind) {
		return nil
	}
	body, err := json.Marshal(NewPayload(e))
	if err != nil {
		return fmt.Errorf("%s: encode: %w", n.Name(), err)
	}
	return notify.Post(ctx, n.opts.Client, n.Name(), n.opts.URL, nil, body, n.opts.Now(), n.secrets...)
}

// NewPayload is e as the webhook sends it.
func NewPayload(e notify.Event) Payload {
	s := e.Summary
	if s == "" {
		s = notify.DefaultSummary(e)
	}
	return Payload{
		Version: SchemaVersion, ID: EventID(e), Kind: e.Kind, Time: e.Time.UTC(), Severity: e.Severity,
		Security: e.Security, IncidentID: e.IncidentID, Target: e.Target, Trigger: e.Trigger,
		Summary: s, Details: e.Details, Links: e.Links,
	}
}

// EventID identifies an event by what makes it one milestone: its
// incident, kind, time, trigger and step. Retries of an event, and the
// same event sent to two webhooks, have the same id.
func EventID(e notify.Event) string {
	h := sha256.New()
	step := e.Details.Step
	if step == "" {
		// What an absent step hashed as when details were a map: the ids
		// of events without a step stay what receivers already have.
		step = "<nil>"
	}
	for _, s := range []string{e.IncidentID, string(e.Kind), e.Trigger, e.Target.String(), step} {
		var n [8]byte
		binary.BigEndian.PutUint64(n[:], uint64(len(s)))
		h.Write(n[:])
		h.Write([]byte(s))
	}
	var t [8]byte
	binary.BigEndian.PutUint64(t[:], uint64(e.Time.UnixNano()))
	h.Write(t[:])
	return hex.EncodeToString(h.Sum(nil)[:16])
}
