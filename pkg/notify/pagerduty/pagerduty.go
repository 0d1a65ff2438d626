// Package pagerduty pages through the PagerDuty Events API v2 with
// go-pagerduty's Client. An incident is one alert (one dedup_key):
// triggered when the trigger fires, updated with the rollback's outcome
// (succeeded, unverified, failed, cannot roll back) and resolved when
// configured; the steps in between are not paged (they go to the incident
// record and Slack). A change event records the rollback itself on the
// service.
package pagerduty

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	pd "github.com/PagerDuty/go-pagerduty"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/notify"
)

// Limits of the Events API v2.
const (
	maxSummary  = 1024
	maxDedupKey = 255
	// The API takes 512 KB per event; keep a margin for the envelope.
	maxDetails = 400 * 1024
)

// Sentinel errors.
var (
	// ErrRejected: PagerDuty refused the event (400 and other 4xx); a retry
	// would be refused too.
	ErrRejected = errors.New("pagerduty rejected the event")
	// ErrNoRoutingKey: the notifier was built without a routing key.
	ErrNoRoutingKey = errors.New("pagerduty routing key is empty")
)

// Options configures the notifier. The routing keys are secrets: the
// caller reads them from files or the environment; they never appear in
// logs or errors.
type Options struct {
	// Endpoint is the Events API base URL, without /v2/enqueue
	// [https://events.pagerduty.com]. Events go to Endpoint+"/v2/enqueue",
	// change events to Endpoint+"/v2/change/enqueue" (go-pagerduty appends
	// both paths to the same base).
	Endpoint           string
	RoutingKey         string
	SecurityRoutingKey string
	// Source is payload.source [rollguard/<cluster or namespace>].
	Source string
	// StatusURL is rollguard's externally reachable base URL; when set,
	// each alert links to StatusURL/api/v1/incidents/{id}.
	StatusURL string
	// ResolveOnSuccess resolves the alert after a successful rollback.
	// Off by default: a human acknowledges what a machine did to production.
	ResolveOnSuccess bool
	// DisableChangeEvents stops the change events sent when a rollback
	// starts and succeeds.
	DisableChangeEvents bool
	// Timeout bounds each HTTP request [10s]; go-pagerduty's default client
	// has no overall timeout.
	Timeout time.Duration
	// Transport is for tests and proxies [http.DefaultTransport].
	Transport http.RoundTripper
	// Now is injectable for tests.
	Now func() time.Time
}

// Notifier sends notify.Events to PagerDuty.
type Notifier struct {
	opts    Options
	client  *pd.Client
	logger  *zap.Logger
	secrets []string

	// sent remembers the parts of an event already accepted, so a retry of
	// an event that went to two routing keys (or also made a change event)
	// does not repeat what succeeded: change events are not deduplicated.
	mu   sync.Mutex
	sent map[string]bool
}

// New returns a PagerDuty notifier.
func New(opts Options, logger *zap.Logger) (*Notifier, error) {
	if opts.RoutingKey == "" {
		return nil, ErrNoRoutingKey
	}
	if opts.Endpoint == "" {
		opts.Endpoint = "https://events.pagerduty.com"
	}
	opts.Endpoint = strings.TrimSuffix(opts.Endpoint, "/")
	if _, err := url.Parse(opts.Endpoint); err != nil {
		return nil, fmt.Errorf("pagerduty endpoint: %w", err)
	}
	opts.StatusURL = strings.TrimSuffix(opts.StatusURL, "/")
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	c := pd.NewClient("", pd.WithV2EventsAPIEndpoint(opts.Endpoint))
	c.HTTPClient = &recordingClient{c: notify.HTTPClient(opts.Timeout, opts.Transport)}
	return &Notifier{
		opts:    opts,
		client:  c,
		logger:  logger,
		secrets: []string{opts.RoutingKey, opts.SecurityRoutingKey},
		sent:    map[string]bool{},
	}, nil
}

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "pagerduty" }

// Notify sends e: an alert event to the routing key, and to the security
// routing key too for a security event, when e is one on-call acts on (see
// Events); plus a change event when a rollback starts or ends having
// rolled back.
func (n *Notifier) Notify(ctx context.Context, e notify.Event) error {
	keys := []string{n.opts.RoutingKey}
	if e.Security && n.opts.SecurityRoutingKey != "" && n.opts.SecurityRoutingKey != n.opts.RoutingKey {
		keys = append(keys, n.opts.SecurityRoutingKey)
	}
	type part struct {
		id   string
		send func(ctx context.Context) error
	}
	var parts []part
	for i, key := range keys {
		for _, ev := range n.Events(e, key) {
			parts = append(parts, part{
				id:   fmt.Sprintf("k%d/%s", i, ev.Action),
				send: func(ctx context.Context) error { return n.send(ctx, ev) },
			})
		}
	}
	if ce, ok := n.ChangeEvent(e); ok {
		parts = append(parts, part{id: "change", send: func(ctx context.Context) error { return n.sendChange(ctx, ce) }})
	}

	eventKey := fmt.Sprintf("%s|%s|%d", e.IncidentID, e.Kind, e.Time.UnixNano())
	for _, p := range parts {
		pk := eventKey + "|" + p.id
		if n.wasSent(pk) {
			notify.Sent(ctx) // by an earlier attempt of this event
			continue
		}
		if err := p.send(ctx); err != nil {
			return err
		}
		notify.Sent(ctx)
		n.markSent(pk)
	}
	n.forget(eventKey)
	return nil
}

func (n *Notifier) wasSent(k string) bool {
	n.mu.Lock()
	defer n.mu.Unlock()
	return n.sent[k]
}

func (n *Notifier) markSent(k string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if len(n.sent) > 1024 {
		// Bounded: only events being retried live here.
		clear(n.sent)
	}
	n.sent[k] = true
}

func (n *Notifier) forget(eventKey string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	for k := range n.sent {
		if strings.HasPrefix(k, eventKey+"|") {
			delete(n.sent, k)
		}
	}
}

// DedupKey is the alert key of e: the incident for every milestone of a
// rollback, a key of its own for blindness, dry-run and test events so
// they never update (or get resolved with) a real incident's alert.
func DedupKey(e notify.Event) string {
	base := e.IncidentID
	if base == "" {
		base = e.Target.String()
	}
	var k string
	switch e.Kind {
	case notify.KindBlind, notify.KindBlindResolved:
		k = fmt.Sprintf("%s/%s/blind", e.Target, e.Trigger)
	case notify.KindWouldRollback:
		k = base + "/dry-run"
	case notify.KindRecordFailed:
		// About the record, not the incident: it must not replace the
		// incident alert's summary, nor be resolved with it.
		k = base + "/record"
	case notify.KindTest:
		k = fmt.Sprintf("rollguard/test/%d", e.Time.UnixNano())
	default:
		k = base
	}
	if len(k) > maxDedupKey {
		// Keep it unique: a prefix and a hash of the whole key.
		sum := sha256.Sum256([]byte(k))
		h := hex.EncodeToString(sum[:])[:32]
		k = k[:maxDedupKey-len(h)-1] + "~" + h
	}
	return k
}

func severity(e notify.Event) string {
	switch e.Kind {
	case notify.KindBlind:
		return string(notify.SeverityWarning)
	case notify.KindWouldRollback, notify.KindTest:
		return string(notify.SeverityInfo)
	case notify.KindRecordFailed:
		return string(notify.SeverityError)
	case notify.KindCannotRollback:
		if e.Severity == notify.SeverityError {
			return string(notify.SeverityError)
		}
		return string(notify.SeverityCritical)
	}
	if e.Severity.Valid() {
		return string(e.Severity)
	}
	return string(notify.SeverityCritical)
}

func (n *Notifier) source(e notify.Event) string {
	if n.opts.Source != "" {
		return n.opts.Source
	}
	if e.Target.Cluster != "" {
		return "rollguard/" + e.Target.Cluster
	}
	if e.Target.Namespace != "" {
		return "rollguard/" + e.Target.Namespace
	}
	return "rollguard"
}

func (n *Notifier) incidentLink(e notify.Event) (notify.Link, bool) {
	if n.opts.StatusURL == "" || e.IncidentID == "" {
		return notify.Link{}, false
	}
	return notify.Link{
		Href: n.opts.StatusURL + "/api/v1/incidents/" + url.PathEscape(e.IncidentID),
		Text: "rollguard incident " + e.IncidentID,
	}, true
}

// paged reports whether e is an alert event: a page is what on-call acts
// on, so an incident is triggered (detected, or a run resumed by another
// rollguard), updated with its outcome, and resolved; the steps in between
// go to the incident record and Slack. A page per step (14 for a quick
// rollback) buries the outcome in the alert's log.
// Takes implements notify.Taker: the events it pages or sends as change
// events.
func (n *Notifier) Takes(e notify.Event) bool {
	_, change := n.ChangeEvent(e)
	return Pages(e) || change
}

// Pages reports whether e becomes an Events API v2 event (a trigger or a
// resolve); step progress does not.
func Pages(e notify.Event) bool {
	switch e.Kind {
	case notify.KindStepStarted, notify.KindStepFinished:
		return false
	case notify.KindRollbackStarted:
		// The detection already triggered the alert; a resumed run is
		// taken up by a rollguard that may never have paged it.
		return e.Details.Resumed
	}
	return true
}

// Events returns the Events API v2 events e maps to for routingKey: none
// for progress that is not paged (see paged), a resolve for a blind
// trigger with data again, else a trigger (and a resolve after a success
// when configured).
func (n *Notifier) Events(e notify.Event, routingKey string) []*pd.V2Event {
	if !Pages(e) {
		return nil
	}
	if e.Kind == notify.KindBlindResolved {
		return []*pd.V2Event{{RoutingKey: routingKey, Action: "resolve", DedupKey: DedupKey(e), Client: "rollguard"}}
	}
	summary := e.Summary
	if summary == "" {
		summary = notify.DefaultSummary(e)
	}
	when := e.Time
	if when.IsZero() {
		when = n.opts.Now()
	}
	details := map[string]any{
		"kind":   string(e.Kind),
		"target": e.Target.String(),
	}
	if e.IncidentID != "" {
		details["incident_id"] = e.IncidentID
	}
	if e.Trigger != "" {
		details["trigger"] = e.Trigger
	}
	if e.Security {
		details["security"] = true
	}
	details = fitDetails(addDetails(details, e.Details))

	var links []any
	if l, ok := n.incidentLink(e); ok {
		links = append(links, l)
	}
	for _, l := range e.Links {
		links = append(links, l)
	}
	dedup := DedupKey(e)
	trigger := &pd.V2Event{
		RoutingKey: routingKey,
		Action:     "trigger",
		DedupKey:   dedup,
		Client:     "rollguard",
		Links:      links,
		Payload: &pd.V2Payload{
			Summary:   notify.Truncate(summary, maxSummary),
			Source:    n.source(e),
			Severity:  severity(e),
			Timestamp: when.UTC().Format(time.RFC3339Nano),
			Component: e.Target.Deployment,
			Group:     e.Target.Namespace,
			Class:     e.Trigger,
			Details:   details,
		},
	}
	if l, ok := n.incidentLink(e); ok {
		trigger.ClientURL = l.Href
	}
	out := []*pd.V2Event{trigger}
	if e.Kind == notify.KindRollbackSucceeded && n.opts.ResolveOnSuccess {
		out = append(out, &pd.V2Event{RoutingKey: routingKey, Action: "resolve", DedupKey: dedup})
	}
	return out
}

// addDetails adds e's details to custom_details under their JSON keys.
func addDetails(to map[string]any, d notify.Details) map[string]any {
	b, err := json.Marshal(d)
	var fields map[string]json.RawMessage
	if err == nil {
		err = json.Unmarshal(b, &fields)
	}
	if err != nil {
		// A threshold that is not a number: the record has the rest.
		return map[string]any{"omitted": "details too large or not JSON; see the incident record"}
	}
	for k, v := range fields {
		to[k] = v
	}
	if d.Window != 0 {
		// Nanoseconds mean nothing to a human reading the alert.
		to["window"] = d.Window.String()
	}
	return to
}

// fitDetails keeps custom_details under the API's size limit by dropping
// the bulkiest evidence (the window's samples, then step results) first.
func fitDetails(d map[string]any) map[string]any {
	// The JSON keys of Details.Samples, Steps and Plan.
	for _, k := range []string{"samples", "steps", "plan"} {
		b, err := json.Marshal(d)
		if err == nil && len(b) <= maxDetails {
			return d
		}
		if _, ok := d[k]; ok {
			delete(d, k)
			d[k+"_omitted"] = "too large for PagerDuty; see the incident record"
		}
	}
	if b, err := json.Marshal(d); err != nil || len(b) > maxDetails {
		return map[string]any{"omitted": "details too large or not JSON; see the incident record"}
	}
	return d
}

// ChangeEvent returns the change event for e, if it deserves one: a
// rollback starting and succeeding are changes to the service.
func (n *Notifier) ChangeEvent(e notify.Event) (pd.ChangeEvent, bool) {
	if n.opts.DisableChangeEvents {
		return pd.ChangeEvent{}, false
	}
	var what string
	switch e.Kind {
	case notify.KindRollbackStarted:
		what = "started"
	case notify.KindRollbackSucceeded:
		what = "succeeded"
	case notify.KindRollbackUnverified:
		what = "done, unverified"
	default:
		return pd.ChangeEvent{}, false
	}
	bad, good := e.Details.BadVersion, e.Details.RestoredVersion
	summary := fmt.Sprintf("rollguard rollback of %s %s", e.Target, what)
	if bad != "" || good != "" {
		summary += fmt.Sprintf(" (%s -> %s)", orUnknown(bad), orUnknown(good))
	}
	when := e.Time
	if when.IsZero() {
		when = n.opts.Now()
	}
	ce := pd.ChangeEvent{
		RoutingKey: n.opts.RoutingKey,
		Payload: pd.ChangeEventPayload{
			Summary:   notify.Truncate(summary, maxSummary),
			Source:    n.source(e),
			Timestamp: when.UTC().Format(time.RFC3339Nano),
			CustomDetails: map[string]any{
				"incident_id": e.IncidentID,
				"target":      e.Target.String(),
				"trigger":     e.Trigger,
				"bad_version": bad, "restored_version": good,
			},
		},
	}
	if l, ok := n.incidentLink(e); ok {
		ce.Links = []pd.ChangeEventLink{{Href: l.Href, Text: l.Text}}
	}
	return ce, true
}

func orUnknown(s string) string {
	if s == "" {
		return "unknown"
	}
	return s
}

func (n *Notifier) send(ctx context.Context, ev *pd.V2Event) error {
	rec := &exchange{}
	_, err := n.client.ManageEventWithContext(withExchange(ctx, rec), ev)
	if err != nil {
		return n.classify(fmt.Sprintf("pagerduty %s event %q", ev.Action, ev.DedupKey), rec, err)
	}
	return nil
}

func (n *Notifier) sendChange(ctx context.Context, ce pd.ChangeEvent) error {
	rec := &exchange{}
	_, err := n.client.CreateChangeEventWithContext(withExchange(ctx, rec), ce)
	if err != nil {
		return n.classify("pagerduty change event", rec, err)
	}
	return nil
}

// classify turns go-pagerduty's error into a scrubbed one that says
// whether to retry. go-pagerduty formats transport errors with %v, losing
// the cause, so the transport's own error is taken from the exchange.
func (n *Notifier) classify(what string, rec *exchange, err error) error {
	msg := err.Error()
	if r := rec.reason(); r != "" {
		msg += " (" + r + ")"
	}
	msg = notify.Scrub(msg, n.secrets...)
	var apiErr pd.APIError
	switch {
	case rec.status >= 200 && rec.status < 300:
		// Accepted; only the response body did not decode. Not worth a
		// duplicate page.
		n.logger.Warn("pagerduty accepted the event but its answer did not decode",
			zap.String("what", what), zap.String("error", msg))
		return nil
	case errors.As(err, &apiErr):
		if apiErr.Temporary() || apiErr.StatusCode == http.StatusRequestTimeout {
			return fmt.Errorf("%s: %w", what, notify.Retryable(errors.New(msg), rec.retryAfter))
		}
		return fmt.Errorf("%s: %w: %s", what, ErrRejected, msg)
	case rec.transportErr != nil:
		// Timeouts, refused and reset connections: the event may not have
		// arrived, and dedup_key makes a repeat harmless.
		return fmt.Errorf("%s: %w", what, notify.Retryable(errors.New(msg), 0))
	}
	return fmt.Errorf("%s: %s", what, msg)
}

// exchange records what go-pagerduty does not return: the status, the
// Retry-After header and the transport's error.
type exchange struct {
	status       int
	retryAfter   time.Duration
	body         []byte
	transportErr error
}

type exchangeKey struct{}

func withExchange(ctx context.Context, x *exchange) context.Context {
	return context.WithValue(ctx, exchangeKey{}, x)
}

// recordingClient is the pd.HTTPClient; it fills the request's exchange.
type recordingClient struct{ c *http.Client }

func (r *recordingClient) Do(req *http.Request) (*http.Response, error) {
	resp, err := r.c.Do(req)
	x, _ := req.Context().Value(exchangeKey{}).(*exchange)
	if x == nil {
		return resp, err
	}
	if err != nil {
		x.transportErr = err
		return resp, err
	}
	x.status = resp.StatusCode
	x.retryAfter = notify.ParseRetryAfter(resp.Header.Get("Retry-After"), time.Now())
	if resp.StatusCode >= 400 {
		// The Events API answers errors as {"status","message","errors"},
		// which go-pagerduty's APIError (it expects {"error":{...}}) drops:
		// keep the body so the reason of a 400 reaches the operator.
		b, _ := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
		_ = resp.Body.Close()
		x.body = b
		resp.Body = io.NopCloser(bytes.NewReader(b))
	}
	return resp, nil
}

// reason is the Events API's explanation of a rejected event, if any.
func (x *exchange) reason() string {
	var r pd.V2EventResponse
	if len(x.body) == 0 || json.Unmarshal(x.body, &r) != nil || (r.Message == "" && len(r.Errors) == 0) {
		return ""
	}
	s := strings.TrimSpace(r.Status + ": " + r.Message)
	if len(r.Errors) > 0 {
		s += ": " + strings.Join(r.Errors, "; ")
	}
	return s
}
