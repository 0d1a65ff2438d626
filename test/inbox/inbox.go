// Package inbox is a test's share of the sandbox's receiver (test/receiver,
// which speaks PagerDuty's and Slack's protocols): a path prefix of the
// test's own, so the requests recorded there and the faults scripted there
// are its alone, and what rollguard sent there, decoded.
package inbox

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/test/receiver"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// Inbox is the prefix Prefix ("/t/<unique>") on the receiver at Base.
type Inbox struct {
	Base   string // the receiver's URL, $RECEIVER_URL
	Prefix string
}

// PagerDutyEndpoint is notify.pagerduty.endpoint for the inbox.
func (ib Inbox) PagerDutyEndpoint() string { return ib.Base + ib.Prefix }

// SlackURL is the Slack webhook URL of the inbox.
func (ib Inbox) SlackURL() string { return ib.Base + ib.Prefix + receiver.SlackWebhookPath }

// Received returns the requests recorded on the inbox's path (a receiver
// path such as receiver.PagerDutyEventsPath), oldest first.
func (ib Inbox) Received(ctx context.Context, path string) ([]receiver.Request, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, ib.Base+"/_/received?path="+url.QueryEscape(ib.Prefix+path), nil)
	if err != nil {
		return nil, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("receiver: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("receiver: GET /_/received: %s", resp.Status)
	}
	var out []receiver.Request
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return nil, fmt.Errorf("receiver: decode: %w", err)
	}
	return out, nil
}

// PagerDutyEvent is a PagerDuty Events API v2 event as rollguard sent it.
type PagerDutyEvent struct {
	RoutingKey  string `json:"routing_key"`
	EventAction string `json:"event_action"`
	DedupKey    string `json:"dedup_key"`
	Payload     struct {
		Summary       string                     `json:"summary"`
		Source        string                     `json:"source"`
		Severity      string                     `json:"severity"`
		Timestamp     time.Time                  `json:"timestamp"`
		Component     string                     `json:"component"`
		Group         string                     `json:"group"`
		Class         string                     `json:"class"`
		CustomDetails map[string]json.RawMessage `json:"custom_details"`
	} `json:"payload"`
	// Received, Status and Fault are the receiver's record, not the
	// event: when it came, the status answered, and whether a fault the
	// test scripted answered it.
	Received time.Time `json:"-"`
	Status   int       `json:"-"`
	Fault    bool      `json:"-"`
}

// String is a readable one-line form for failure messages.
func (e PagerDutyEvent) String() string {
	details := make([]string, 0, len(e.Payload.CustomDetails))
	for k, v := range e.Payload.CustomDetails {
		if len(v) > 80 {
			v = append(v[:77:77], "..."...)
		}
		details = append(details, k+"="+string(v))
	}
	sort.Strings(details)
	return fmt.Sprintf("{%s %s dedup_key=%q severity=%s class=%s summary=%q details: %s}",
		e.Received.UTC().Format("15:04:05.000"), e.EventAction, e.DedupKey, e.Payload.Severity, e.Payload.Class, e.Payload.Summary, strings.Join(details, " "))
}

// Detail decodes custom_details[key] into v and says whether it was
// there; a value that does not decode into v fails the test.
func (e PagerDutyEvent) Detail(t testing.TB, key string, v any) bool {
	t.Helper()
	raw, ok := e.Payload.CustomDetails[key]
	if !ok {
		return false
	}
	if err := json.Unmarshal(raw, v); err != nil {
		t.Fatalf("custom_details.%s = %s: %v", key, raw, err)
	}
	return true
}

// Kind is custom_details.kind: what the page is about (detected,
// rollback_started, ...).
func (e PagerDutyEvent) Kind(t testing.TB) string {
	t.Helper()
	var k string
	e.Detail(t, "kind", &k)
	return k
}

// PagerDuty returns the alert events received, oldest first, answered or
// not.
func (ib Inbox) PagerDuty(ctx context.Context) ([]PagerDutyEvent, error) {
	reqs, err := ib.Received(ctx, receiver.PagerDutyEventsPath)
	if err != nil {
		return nil, err
	}
	out := make([]PagerDutyEvent, 0, len(reqs))
	for _, r := range reqs {
		var e PagerDutyEvent
		if err := json.Unmarshal([]byte(r.Body), &e); err != nil {
			return nil, fmt.Errorf("pagerduty event %q: %w", r.Body, err)
		}
		e.Received, e.Status, e.Fault = r.Time, r.Status, r.Fault
		out = append(out, e)
	}
	return out, nil
}

// SlackMessage is a webhook body as rollguard posted it.
type SlackMessage struct {
	Text     string    `json:"text"`
	Received time.Time `json:"-"`
	Status   int       `json:"-"`
}

// Slack returns the Slack messages received, oldest first.
func (ib Inbox) Slack(ctx context.Context) ([]SlackMessage, error) {
	reqs, err := ib.Received(ctx, receiver.SlackWebhookPath)
	if err != nil {
		return nil, err
	}
	out := make([]SlackMessage, 0, len(reqs))
	for _, r := range reqs {
		var m SlackMessage
		if err := json.Unmarshal([]byte(r.Body), &m); err != nil {
			return nil, fmt.Errorf("slack message %q: %w", r.Body, err)
		}
		m.Received, m.Status = r.Time, r.Status
		out = append(out, m)
	}
	return out, nil
}

// WaitPagerDuty polls the PagerDuty events until done says so, failing
// the test at timeout, and returns the last events seen.
func (ib Inbox) WaitPagerDuty(t testing.TB, what string, timeout time.Duration, done func([]PagerDutyEvent) bool) []PagerDutyEvent {
	t.Helper()
	var got []PagerDutyEvent
	sandboxfixture.WaitFor(t, what, timeout, 200*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		evs, err := ib.PagerDuty(ctx)
		if err != nil {
			return false, "", err
		}
		got = evs
		return done(evs), fmt.Sprintf("%d pagerduty events", len(evs)), nil
	})
	return got
}

// OnlyPagerDuty returns the one PagerDuty event received, failing the test
// when there is none or more than one (what names the page expected).
func (ib Inbox) OnlyPagerDuty(t testing.TB, what string) PagerDutyEvent {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	evs, err := ib.PagerDuty(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 1 {
		t.Fatalf("pagerduty got %d events, want exactly 1 (%s): %+v", len(evs), what, evs)
	}
	return evs[0]
}
