// Package alertmanager pushes rollguard's incidents to Alertmanager's v2 API
// (POST /api/v2/alerts) as alerts, so they reach people through the routes,
// receivers (Opsgenie, Teams, email, ...), silences and inhibitions an
// organisation already runs.
//
// One incident is one alert: every event of it is sent with the same
// labels, so Alertmanager updates the alert instead of opening another;
// the annotations carry the latest milestone. A successful rollback
// resolves it (endsAt = now). Anything else keeps it firing for ActiveFor
// after its last event: rollguard sends on events, not on a timer like
// Prometheus, so an alert without endsAt would resolve itself after
// Alertmanager's resolve_timeout while a failed rollback still needs a
// human. Like Prometheus, it sends every alert to every configured
// Alertmanager (the members of one HA cluster deduplicate).
package alertmanager

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
)

// Alert names.
const (
	// AlertIncident is an incident: a trigger fired and what rollguard did.
	AlertIncident = "RollguardIncident"
	// AlertBlind is a trigger without data for blindAfter.
	AlertBlind = "RollguardBlind"
	// AlertTest is an operator's test notification.
	AlertTest = "RollguardTest"
	// AlertRecordFailed is an incident record rollguard could not store.
	AlertRecordFailed = "RollguardRecordFailed"
)

// Labels rollguard sets; static labels of the config must not use them.
const (
	LabelAlertname  = "alertname"
	LabelCluster    = "cluster"
	LabelNamespace  = "namespace"
	LabelDeployment = "deployment"
	LabelTrigger    = "trigger"
	LabelSeverity   = "severity"
	LabelIncident   = "rollguard_incident"
	LabelSecurity   = "security"
)

// ReservedLabels are the labels rollguard sets on every alert.
var ReservedLabels = []string{LabelAlertname, LabelCluster, LabelNamespace, LabelDeployment, LabelTrigger, LabelSeverity, LabelIncident, LabelSecurity}

// testAlertFor is how long a test alert fires.
const testAlertFor = 5 * time.Minute

// maxTracked bounds the incidents remembered for their alert identity.
const maxTracked = 256

// Alert is one element of the POST /api/v2/alerts body (Alertmanager's
// postableAlert).
type Alert struct {
	Labels       map[string]string `json:"labels"`
	Annotations  map[string]string `json:"annotations,omitempty"`
	StartsAt     time.Time         `json:"startsAt"`
	EndsAt       time.Time         `json:"endsAt"`
	GeneratorURL string            `json:"generatorURL,omitempty"`
}

// Options configure a Notifier.
type Options struct {
	// URLs are the Alertmanagers' base URLs; alerts go to
	// <url>/api/v2/alerts of each.
	URLs []string
	// Client carries the requests (authentication, TLS, proxy); nil means
	// a plain client.
	Client *http.Client
	// Labels are added to every alert (routing: team, service...).
	Labels map[string]string
	// ActiveFor is how long an alert fires after its last event unless a
	// successful rollback resolves it [24h].
	ActiveFor time.Duration
	// StatusURL is rollguard's external base URL; alerts link to the
	// incident record under it (generatorURL).
	StatusURL string
	// Now is the clock for Retry-After dates.
	Now func() time.Time
}

// Notifier pushes events to Alertmanager as alerts.
type Notifier struct {
	opts      Options
	endpoints []string
	secrets   []string

	mu      sync.Mutex
	tracked map[string]tracked // by incident ID
	order   []string
}

// tracked is an incident's alert identity: its labels and start, fixed by
// its first event.
type tracked struct {
	labels   map[string]string
	startsAt time.Time
}

// New checks opts and returns a Notifier. It sends nothing.
func New(opts Options) (*Notifier, error) {
	if len(opts.URLs) == 0 {
		return nil, errors.New("alertmanager: no URL")
	}
	n := &Notifier{opts: opts, tracked: map[string]tracked{}}
	for i, raw := range opts.URLs {
		u, err := url.Parse(raw)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return nil, fmt.Errorf("alertmanager: url %d is not an http(s) URL", i)
		}
		u.Path = strings.TrimSuffix(u.Path, "/") + "/api/v2/alerts"
		n.endpoints = append(n.endpoints, u.String())
		if u.User != nil {
			n.secrets = append(n.secrets, notify.URLSecrets(raw)...)
		}
	}
	for _, l := range ReservedLabels {
		if _, ok := opts.Labels[l]; ok {
			return nil, fmt.Errorf("alertmanager: label %q is set by rollguard", l)
		}
	}
	if n.opts.Client == nil {
		n.opts.Client = &http.Client{}
	}
	if n.opts.ActiveFor <= 0 {
		n.opts.ActiveFor = 24 * time.Hour
	}
	if n.opts.Now == nil {
		n.opts.Now = time.Now
	}
	return n, nil
}

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "alertmanager" }

// Notify implements notify.Notifier: it posts e's alert to every
// Alertmanager. An error from any is returned (retryable when any is); a
// retry posts to all again, which Alertmanager takes as the same update.
func (n *Notifier) Notify(ctx context.Context, e notify.Event) error {
	a := n.Alert(e)
	body, err := json.Marshal([]Alert{a})
	if err != nil {
		return fmt.Errorf("alertmanager: encode: %w", err)
	}
	var errs []error
	for i, ep := range n.endpoints {
		what := "alertmanager"
		if len(n.endpoints) > 1 {
			what = fmt.Sprintf("alertmanager %d", i)
		}
		if err := notify.Post(ctx, n.opts.Client, what, ep, nil, body, n.opts.Now(), n.secrets...); err != nil {
			errs = append(errs, err)
		}
	}
	if len(errs) == 0 {
		if e.Kind == notify.KindRollbackSucceeded {
			n.forget(e.IncidentID)
		}
		return nil
	}
	err = errors.Join(errs...)
	for _, e := range errs {
		if notify.IsRetryable(e) {
			return notify.Retryable(err, maxRetryAfter(errs))
		}
	}
	return err
}

func maxRetryAfter(errs []error) time.Duration {
	var d time.Duration
	for _, e := range errs {
		if a, ok := notify.RetryAfter(e); ok && a > d {
			d = a
		}
	}
	return d
}

// Alert is e as the alert sent for it.
func (n *Notifier) Alert(e notify.Event) Alert {
	labels, startsAt := n.identity(e)
	summary := e.Summary
	if summary == "" {
		summary = notify.DefaultSummary(e)
	}
	a := Alert{
		Labels:      labels,
		Annotations: map[string]string{"summary": summary, "description": description(e), "rollguard_kind": string(e.Kind)},
		StartsAt:    startsAt,
		EndsAt:      e.Time.Add(n.opts.ActiveFor),
	}
	switch e.Kind {
	case notify.KindRollbackSucceeded, notify.KindBlindResolved:
		// Resolved: Alertmanager sends the resolved notification to
		// receivers with send_resolved.
		a.EndsAt = e.Time
	case notify.KindTest:
		a.EndsAt = e.Time.Add(testAlertFor)
	}
	if !a.EndsAt.After(a.StartsAt) {
		a.EndsAt = a.StartsAt.Add(time.Millisecond)
	}
	if n.opts.StatusURL != "" && e.IncidentID != "" {
		a.GeneratorURL = strings.TrimSuffix(n.opts.StatusURL, "/") + "/api/v1/incidents/" + url.PathEscape(e.IncidentID)
	}
	for _, l := range e.Links {
		if l.Href != "" {
			key := "link"
			if l.Text != "" {
				key = "link_" + strings.ToLower(strings.ReplaceAll(l.Text, " ", "_"))
			}
			a.Annotations[key] = l.Href
		}
	}
	return a
}

// identity returns the labels and start of e's alert: an incident's first
// event fixes them, so every later event updates the same alert even when
// it carries less (a step event names no trigger).
func (n *Notifier) identity(e notify.Event) (map[string]string, time.Time) {
	if e.IncidentID != "" && e.Kind != notify.KindTest && e.Kind != notify.KindBlind && e.Kind != notify.KindBlindResolved && e.Kind != notify.KindRecordFailed {
		n.mu.Lock()
		defer n.mu.Unlock()
		if t, ok := n.tracked[e.IncidentID]; ok {
			return maps.Clone(t.labels), t.startsAt
		}
		t := tracked{labels: n.labels(e), startsAt: e.Time}
		if len(n.order) >= maxTracked {
			delete(n.tracked, n.order[0])
			n.order = n.order[1:]
		}
		n.tracked[e.IncidentID] = t
		n.order = append(n.order, e.IncidentID)
		return maps.Clone(t.labels), t.startsAt
	}
	return n.labels(e), e.Time
}

func (n *Notifier) labels(e notify.Event) map[string]string {
	l := maps.Clone(n.opts.Labels)
	if l == nil {
		l = map[string]string{}
	}
	switch e.Kind {
	case notify.KindBlind, notify.KindBlindResolved:
		l[LabelAlertname] = AlertBlind
	case notify.KindTest:
		l[LabelAlertname] = AlertTest
	case notify.KindRecordFailed:
		// An alert of its own: it must not reopen, or hold open, the
		// incident's alert.
		l[LabelAlertname] = AlertRecordFailed
		l[LabelIncident] = e.IncidentID
	default:
		l[LabelAlertname] = AlertIncident
		if e.IncidentID != "" {
			l[LabelIncident] = e.IncidentID
		}
	}
	l[LabelNamespace], l[LabelDeployment] = e.Target.Namespace, e.Target.Deployment
	if e.Target.Cluster != "" {
		l[LabelCluster] = e.Target.Cluster
	}
	if e.Trigger != "" {
		l[LabelTrigger] = e.Trigger
	}
	sev := e.Severity
	if sev == "" {
		sev = notify.SeverityCritical
		if e.Kind == notify.KindTest || e.Kind == notify.KindWouldRollback {
			sev = notify.SeverityInfo
		}
	}
	l[LabelSeverity] = string(sev)
	if e.Security {
		l[LabelSecurity] = "true"
	}
	return l
}

func (n *Notifier) forget(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.tracked[id]; !ok {
		return
	}
	delete(n.tracked, id)
	for i, o := range n.order {
		if o == id {
			n.order = append(n.order[:i], n.order[i+1:]...)
			break
		}
	}
}

// description is the event's evidence and progress, one fact a line.
func description(e notify.Event) string {
	var lines []string
	add := func(k, v string) {
		if v != "" {
			lines = append(lines, k+": "+v)
		}
	}
	add("milestone", string(e.Kind))
	d := e.Details
	add("query", d.Query)
	if d.Threshold != nil {
		add("threshold", fmt.Sprintf("%s %g", d.Op, *d.Threshold))
	}
	if d.Window != 0 {
		add("window", d.Window.String())
	}
	add("bad version", d.BadVersion)
	add("restored version", d.RestoredVersion)
	if len(d.Plan) > 0 {
		add("plan", strings.Join(d.Plan, " → "))
	}
	add("step", d.Step)
	add("step result", d.StepOutcome)
	add("step error", d.StepError)
	add("reason", d.Reason)
	add("error", d.Error)
	// The other text details under their JSON keys, in key order.
	add("gitops", d.GitOps)
	add("run_id", d.RunID)
	add("state_left_behind", d.StateLeftBehind)
	add("step_detail", d.StepDetail)
	add("target_name", d.TargetName)
	return strings.Join(lines, "\n")
}
