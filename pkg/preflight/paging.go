package preflight

import (
	"context"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/pagerduty"
)

// routingKeyRE is the shape of an Events API v2 integration (routing)
// key: 32 letters and digits.
var routingKeyRE = regexp.MustCompile(`^[A-Za-z0-9]{32}$`)

// pagingChecks: the routing key and webhook files hold well-formed
// secrets, and (on request) PagerDuty accepts a test event.
func (r *runner) pagingChecks(ctx context.Context) []Check {
	pd := &r.cfg.Global.Notify.PagerDuty
	checks := []Check{r.routingKey("paging.routing-key", "global.notify.pagerduty.routingKeyFile", pd.RoutingKeyFile, string(pd.RoutingKey), true)}
	if pd.SecurityRoutingKeyFile != "" {
		checks = append(checks, r.routingKey("paging.security-routing-key", "global.notify.pagerduty.securityRoutingKeyFile",
			pd.SecurityRoutingKeyFile, string(pd.SecurityRoutingKey), false))
	}
	if r.t.Notify.PagerDuty != nil && !*r.t.Notify.PagerDuty {
		checks = append(checks, Check{Item: ItemPaging, Name: "paging.target", Status: StatusFail,
			Evidence: fmt.Sprintf("target %s has notify.pagerduty: false: its incidents page nobody", r.t.Name)})
	}
	checks = append(checks, r.slackWebhook())
	if !r.opts.TestPage {
		return append(checks, Check{Item: ItemPaging, Name: "paging.test-page", Status: StatusSkip, Evidence: "not requested (--test-page)"})
	}
	if checks[0].Status != StatusPass {
		return append(checks, Check{Item: ItemPaging, Name: "paging.test-page", Status: StatusFail, Evidence: "no usable routing key to send a test page with"})
	}
	return append(checks, r.check(ctx, ItemPaging, "paging.test-page", r.opts.CheckTimeout, r.testPage))
}

func (r *runner) routingKey(name, path, file, key string, required bool) Check {
	c := Check{Item: ItemPaging, Name: name}
	switch msg, bad := secretProblem(r.secretErrs, path); {
	case file == "" && required:
		c.Status, c.Evidence = StatusFail, path+" is not set: nobody is paged"
	case bad:
		c.Status, c.Evidence = StatusFail, msg
	case !routingKeyRE.MatchString(key):
		// Say what is wrong with it, never what it is.
		c.Status, c.Evidence = StatusFail, fmt.Sprintf("file %s does not hold an Events API v2 routing key (32 letters and digits; it holds %d characters)", file, len(key))
	default:
		c.Status, c.Evidence = StatusPass, fmt.Sprintf("file %s holds a 32-character routing key; events go to %s/v2/enqueue", file, r.cfg.Global.Notify.PagerDuty.Endpoint)
	}
	return c
}

func (r *runner) slackWebhook() Check {
	sl := &r.cfg.Global.Notify.Slack
	c := Check{Item: ItemPaging, Name: "paging.slack-webhook"}
	const path = "global.notify.slack.webhookURLFile"
	if msg, bad := secretProblem(r.secretErrs, path); bad {
		c.Status, c.Evidence = StatusFail, msg
		return c
	}
	if sl.WebhookURLFile == "" {
		c.Status, c.Evidence = StatusWarn, path+" is not set: no Slack messages (the runbook's ROLLBACK INITIATED)"
		return c
	}
	u, err := url.Parse(string(sl.WebhookURL))
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		c.Status, c.Evidence = StatusFail, fmt.Sprintf("file %s does not hold an http(s) URL", sl.WebhookURLFile)
		return c
	}
	// The URL is the credential: show only where it points.
	c.Status, c.Evidence = StatusPass, fmt.Sprintf("file %s holds a %s webhook URL on host %s", sl.WebhookURLFile, u.Scheme, u.Host)
	if r.t.Notify.Slack != nil && !*r.t.Notify.Slack {
		c.Status, c.Evidence = StatusWarn, c.Evidence+fmt.Sprintf("; but target %s has notify.slack: false", r.t.Name)
	}
	return c
}

// testPage sends an info event through the same notifier the daemon uses
// and reads the HTTP status from the transport: the notifier only says
// whether it failed, and the Events API's answer to a good event is 202.
func (r *runner) testPage(ctx context.Context) (Status, string) {
	pd := &r.cfg.Global.Notify.PagerDuty
	rec := &statusRecorder{next: r.opts.PagerDutyTransport}
	if rec.next == nil {
		rec.next = http.DefaultTransport
	}
	n, err := pagerduty.New(pagerduty.Options{
		Endpoint: pd.Endpoint, RoutingKey: string(pd.RoutingKey),
		Timeout: r.opts.CheckTimeout, Transport: rec, DisableChangeEvents: true, Now: r.now,
	}, r.logger)
	if err != nil {
		return StatusFail, err.Error()
	}
	now := r.now()
	ev := notify.Event{
		Kind: notify.KindTest, Time: now, Severity: notify.SeverityInfo,
		Target:  notify.Target{Namespace: r.t.Namespace, Deployment: r.t.Deployment},
		Summary: fmt.Sprintf("rollguard preflight test page for target %s (%s/%s): no action needed", r.t.Name, r.t.Namespace, r.t.Deployment),
		Details: notify.Details{Preflight: true, TargetName: r.t.Name},
	}
	err = n.Notify(ctx, ev)
	status, path := rec.last()
	if err != nil {
		return StatusFail, fmt.Sprintf("test page to %s failed (HTTP %d): %v", pd.Endpoint, status, err)
	}
	if status != http.StatusAccepted {
		return StatusFail, fmt.Sprintf("test page to %s%s answered %d, want 202", pd.Endpoint, path, status)
	}
	return StatusPass, fmt.Sprintf("info test event accepted by %s%s (202) at %s, dedup_key %s",
		pd.Endpoint, path, now.UTC().Format(time.RFC3339), pagerduty.DedupKey(ev))
}

// statusRecorder remembers the last response's status code.
type statusRecorder struct {
	next   http.RoundTripper
	mu     sync.Mutex
	status int
	path   string
}

func (s *statusRecorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := s.next.RoundTrip(req)
	if err == nil {
		s.mu.Lock()
		s.status, s.path = resp.StatusCode, req.URL.Path
		s.mu.Unlock()
	}
	return resp, err
}

func (s *statusRecorder) last() (int, string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.status, strings.TrimSpace(s.path)
}
