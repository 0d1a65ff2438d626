// Package slack posts rollguard's milestones to a Slack incoming webhook:
// "ROLLBACK INITIATED" when a plan starts, the runbook's incident template
// filled in when it ends, a failure message when it stops.
package slack

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/notify"
)

// Sentinel errors.
var (
	// ErrRejected: Slack refused the message for good (400
	// invalid_payload, 403, 404 channel_not_found, 410 channel_is_archived).
	ErrRejected = errors.New("slack rejected the message")
	// ErrNoWebhook: the notifier was built without a webhook URL.
	ErrNoWebhook = errors.New("slack webhook url is empty")
)

// Options configures the notifier. WebhookURL is a secret (its path is the
// credential): it never appears in logs or errors.
type Options struct {
	WebhookURL string
	// Channel overrides the webhook's default channel (legacy webhooks
	// only; app webhooks ignore it).
	Channel  string
	Username string
	// Template fills the runbook's placeholders (impact, on-call, status
	// page, link to rollguard).
	Template incident.Template
	// Timeout bounds each request [10s].
	Timeout   time.Duration
	Transport http.RoundTripper
	Now       func() time.Time
}

// Notifier posts to a Slack incoming webhook.
type Notifier struct {
	opts    Options
	client  *http.Client
	logger  *zap.Logger
	secrets []string

	// The final message is the runbook's template, which needs the whole
	// timeline: the notifier folds the events it sees into records (the
	// same fold as the incident store) and forgets them when they end.
	mu      sync.Mutex
	records map[string]*incident.Record
	order   []string
}

const maxRecords = 64

// New returns a Slack notifier.
func New(opts Options, logger *zap.Logger) (*Notifier, error) {
	if opts.WebhookURL == "" {
		return nil, ErrNoWebhook
	}
	u, err := url.Parse(opts.WebhookURL)
	if err != nil || u.Host == "" {
		// Never echo the URL: it is the credential.
		return nil, errors.New("slack webhook url: not an absolute URL")
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Notifier{
		opts:    opts,
		client:  notify.HTTPClient(opts.Timeout, opts.Transport),
		logger:  logger,
		secrets: notify.URLSecrets(opts.WebhookURL),
		records: map[string]*incident.Record{},
	}, nil
}

// Name implements notify.Notifier.
func (n *Notifier) Name() string { return "slack" }

// AtMostOnce implements notify.AtMostOnce: a webhook posts every message
// it gets, so a message whose attempt a crash interrupted is not posted
// again by the next leader.
func (n *Notifier) AtMostOnce() bool { return true }

// Message is the webhook's JSON body.
type Message struct {
	Text      string  `json:"text"`
	Channel   string  `json:"channel,omitempty"`
	Username  string  `json:"username,omitempty"`
	Mrkdwn    bool    `json:"mrkdwn"`
	IconEmoji string  `json:"icon_emoji,omitempty"`
	Blocks    []Block `json:"blocks,omitempty"`
}

// Block is a Block Kit section or header.
type Block struct {
	Type string     `json:"type"`
	Text *BlockText `json:"text,omitempty"`
}

// BlockText is a Block Kit text object.
type BlockText struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

// Notify implements notify.Notifier. Detection and step events update the
// notifier's view of the incident without posting: a channel that gets a
// line per step stops being read.
func (n *Notifier) Notify(ctx context.Context, e notify.Event) error {
	text, post := n.Render(e)
	if !post {
		return nil
	}
	msg := Message{Text: text, Channel: n.opts.Channel, Username: n.opts.Username, Mrkdwn: true}
	msg.Blocks = blocks(text)
	err := n.post(ctx, msg)
	if err == nil {
		notify.Sent(ctx)
	}
	if terminal(e.Kind) && (err == nil || !notify.IsRetryable(err)) {
		// Keep the record while the queue may retry, so the retry renders
		// the same full template.
		n.forget(e.IncidentID)
	}
	return err
}

func terminal(k notify.Kind) bool {
	switch k {
	case notify.KindRollbackSucceeded, notify.KindRollbackFailed, notify.KindRollbackUnverified, notify.KindCannotRollback, notify.KindWouldRollback:
		return true
	}
	return false
}

// Render returns the message for e and whether e deserves one.
func (n *Notifier) Render(e notify.Event) (string, bool) {
	rec := n.track(e)
	t := e.Target.String()
	summary := e.Summary
	if summary == "" {
		summary = notify.DefaultSummary(e)
	}
	switch e.Kind {
	case notify.KindRollbackStarted:
		var b strings.Builder
		fmt.Fprintf(&b, "⚠️ ROLLBACK INITIATED: %s", t)
		if rec != nil {
			if rec.BadVersion != "" || rec.RestoredVersion != "" {
				fmt.Fprintf(&b, " (%s → %s)", orUnknown(rec.BadVersion), orUnknown(rec.RestoredVersion))
			}
			if rec.Trigger != "" {
				fmt.Fprintf(&b, "\nTrigger: %s", rec.Trigger)
			}
			if rec.Summary != "" {
				fmt.Fprintf(&b, "\nEvidence: %s", rec.Summary)
			}
			if len(rec.Plan) > 0 {
				fmt.Fprintf(&b, "\nPlan: %s", strings.Join(rec.Plan, " → "))
			}
		}
		n.appendLinks(&b, e)
		return b.String(), true
	case notify.KindRollbackSucceeded:
		return n.final(e, rec), true
	case notify.KindRollbackUnverified:
		var b strings.Builder
		fmt.Fprintf(&b, "⚠️ ROLLBACK DONE, UNVERIFIED: %s\nrollguard rolled back but had no data to judge the recovery by; a human must check.", t)
		if v := e.Details.Verification; v != "" {
			fmt.Fprintf(&b, "\nWhat is known: %s", v)
		}
		if rec != nil {
			b.WriteString("\n\n" + incident.SlackText(rec, n.opts.Template))
		}
		n.appendLinks(&b, e)
		return b.String(), true
	case notify.KindRollbackFailed:
		var b strings.Builder
		fmt.Fprintf(&b, "🔥 ROLLBACK FAILED: %s: %s\nA human must take over now; rollguard has stopped.", t, summary)
		if v := e.Details.StateLeftBehind; v != "" {
			fmt.Fprintf(&b, "\nLeft behind: %s", v)
		}
		if rec != nil {
			if step := failedStep(rec); step != "" {
				fmt.Fprintf(&b, "\nFailed step: %s", step)
			}
			b.WriteString("\n\n" + incident.SlackText(rec, n.opts.Template))
		}
		n.appendLinks(&b, e)
		return b.String(), true
	case notify.KindCannotRollback:
		var b strings.Builder
		fmt.Fprintf(&b, "🚨 ROLLBACK NEEDED, NOT POSSIBLE: %s: %s", t, summary)
		if r := e.Details.Reason; r != "" {
			fmt.Fprintf(&b, "\nReason: %s", r)
		}
		b.WriteString("\nA human must decide.")
		n.appendLinks(&b, e)
		return b.String(), true
	case notify.KindWouldRollback:
		var b strings.Builder
		fmt.Fprintf(&b, "🧪 DRY-RUN: would roll back %s: %s", t, summary)
		if plan := e.Details.Plan; len(plan) > 0 {
			fmt.Fprintf(&b, "\nPlan: %s", strings.Join(plan, " → "))
		}
		n.appendLinks(&b, e)
		return b.String(), true
	case notify.KindBlind:
		return fmt.Sprintf("👁️ rollguard is BLIND on %s: trigger %s has had no data; it cannot roll back on it until data returns.", t, e.Trigger), true
	case notify.KindBlindResolved:
		return fmt.Sprintf("✅ rollguard sees again on %s: trigger %s has data again.", t, e.Trigger), true
	case notify.KindTest:
		return "✅ rollguard test notification: " + summary, true
	case notify.KindRecordFailed:
		return "📝 " + summary, true
	}
	return "", false
}

func (n *Notifier) final(e notify.Event, rec *incident.Record) string {
	if rec == nil {
		return "✅ " + notify.DefaultSummary(e)
	}
	var b strings.Builder
	b.WriteString(incident.SlackText(rec, n.opts.Template))
	n.appendLinks(&b, e)
	return b.String()
}

func failedStep(r *incident.Record) string {
	for _, s := range r.Steps {
		if s.Outcome == notify.OutcomeFailed {
			if s.Error != "" {
				return s.Name + " (" + s.Error + ")"
			}
			return s.Name
		}
	}
	return ""
}

func (n *Notifier) appendLinks(b *strings.Builder, e notify.Event) {
	if n.opts.Template.StatusURL != "" && e.IncidentID != "" {
		fmt.Fprintf(b, "\nIncident: %s/api/v1/incidents/%s", strings.TrimSuffix(n.opts.Template.StatusURL, "/"), url.PathEscape(e.IncidentID))
	}
	for _, l := range e.Links {
		fmt.Fprintf(b, "\n%s: %s", orDefault(l.Text, "link"), l.Href)
	}
}

// track folds e into its incident's record and returns it (nil for events
// outside an incident).
func (n *Notifier) track(e notify.Event) *incident.Record {
	if e.IncidentID == "" || e.Kind == notify.KindTest || e.Kind == notify.KindBlind || e.Kind == notify.KindBlindResolved {
		return nil
	}
	n.mu.Lock()
	defer n.mu.Unlock()
	r, ok := n.records[e.IncidentID]
	if !ok {
		if len(n.order) >= maxRecords {
			delete(n.records, n.order[0])
			n.order = n.order[1:]
		}
		r = &incident.Record{}
		n.records[e.IncidentID] = r
		n.order = append(n.order, e.IncidentID)
	}
	incident.Apply(r, e)
	cp := *r
	return &cp
}

func (n *Notifier) forget(id string) {
	n.mu.Lock()
	defer n.mu.Unlock()
	if _, ok := n.records[id]; !ok {
		return
	}
	delete(n.records, id)
	for i, o := range n.order {
		if o == id {
			n.order = append(n.order[:i], n.order[i+1:]...)
			break
		}
	}
}

// Slack renders at most 3000 characters in a section block.
const maxSection = 2900

func blocks(text string) []Block {
	var out []Block
	for len(text) > 0 {
		chunk := notify.Truncate(text, maxSection)
		if len(chunk) < len(text) {
			// Split on a line boundary so code and lists stay readable.
			cut := strings.LastIndex(text[:len(chunk)-len("…")], "\n")
			if cut <= 0 {
				cut = len(chunk) - len("…")
			}
			chunk = text[:cut]
		}
		out = append(out, Block{Type: "section", Text: &BlockText{Type: "mrkdwn", Text: chunk}})
		text = strings.TrimPrefix(text[len(chunk):], "\n")
		if len(out) == 40 {
			break
		}
	}
	return out
}

func (n *Notifier) post(ctx context.Context, msg Message) error {
	body, err := json.Marshal(msg)
	if err != nil {
		return fmt.Errorf("slack message: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, n.opts.WebhookURL, bytes.NewReader(body))
	if err != nil {
		return fmt.Errorf("slack request: %s", n.scrub(err))
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := n.client.Do(req)
	if err != nil {
		// Transport errors (timeouts, refused, reset) may clear; the
		// *url.Error text holds the webhook URL, so only the scrubbed
		// cause goes on.
		return fmt.Errorf("slack post: %w", notify.Retryable(errors.New(n.scrub(err)), 0))
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
	answer := strings.TrimSpace(notify.Scrub(string(b), n.secrets...))
	switch {
	case resp.StatusCode == http.StatusOK:
		if answer != "ok" && answer != "" {
			n.logger.Warn("slack accepted the message with an unexpected answer", zap.String("answer", answer))
		}
		return nil
	case resp.StatusCode == http.StatusTooManyRequests:
		after := notify.ParseRetryAfter(resp.Header.Get("Retry-After"), n.opts.Now())
		return fmt.Errorf("slack post: %w", notify.Retryable(fmt.Errorf("429 %s", answer), after))
	case resp.StatusCode >= 500, resp.StatusCode == http.StatusRequestTimeout:
		after := notify.ParseRetryAfter(resp.Header.Get("Retry-After"), n.opts.Now())
		return fmt.Errorf("slack post: %w", notify.Retryable(fmt.Errorf("%d %s", resp.StatusCode, answer), after))
	default:
		// 400 invalid_payload, 403 action_prohibited/invalid_token, 404
		// channel_not_found, 410 channel_is_archived: resending the same
		// message to the same webhook cannot succeed.
		return fmt.Errorf("slack post: %w: %d %s", ErrRejected, resp.StatusCode, answer)
	}
}

func (n *Notifier) scrub(err error) string {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	return notify.Scrub(err.Error(), n.secrets...)
}

func orUnknown(s string) string { return orDefault(s, "unknown") }

func orDefault(s, d string) string {
	if s == "" {
		return d
	}
	return s
}
