package pagerduty

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	dto "github.com/prometheus/client_model/go"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/notifytest"
)

const (
	routingKey  = "R0UTINGKEY-primary-0123456789abcdef"
	securityKey = "SECURITYKEY-0123456789abcdef0123"
)

type received struct {
	path string
	body map[string]any
}

// fakePD speaks enough of the Events API v2: scripted answers first, then
// 202 the way PagerDuty answers.
type fakePD struct {
	script *notifytest.Script
	mu     sync.Mutex
	got    []received
}

func newFakePD(t *testing.T, script ...notifytest.Answer) (*fakePD, *httptest.Server) {
	f := &fakePD{script: notifytest.NewScript(script...)}
	return f, f.script.Serve(t, f)
}

func (f *fakePD) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	b, _ := io.ReadAll(r.Body)
	var body map[string]any
	_ = json.Unmarshal(b, &body)
	f.mu.Lock()
	f.got = append(f.got, received{path: r.URL.Path, body: body})
	f.mu.Unlock()
	if a := f.script.Next(); a != nil {
		if !f.script.Answer(w, r, a) {
			return
		}
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(a.Status)
		fmt.Fprintf(w, `{"status":"error","message":"scripted %d","error":{"message":"event rejected","code":2001,"errors":["routing_key %s is bad"]}}`, a.Status, body["routing_key"])
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(http.StatusAccepted)
	fmt.Fprintf(w, `{"status":"success","message":"Event processed","dedup_key":%q}`, body["dedup_key"])
}

func (f *fakePD) requests() []received {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]received(nil), f.got...)
}

// wantFields fails the test for each field of want that got (a decoded
// JSON object, named by prefix in errors) does not hold.
func wantFields(t *testing.T, prefix string, got, want map[string]any) {
	t.Helper()
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s%s = %v, want %v", prefix, k, got[k], v)
		}
	}
}

func detected() notify.Event {
	return notify.Event{
		Kind:       notify.KindDetected,
		Time:       time.Date(2026, 11, 25, 14, 35, 10, 0, time.UTC),
		Target:     notify.Target{Namespace: "production", Deployment: "pggit-api"},
		Trigger:    "error-rate",
		IncidentID: "production_pggit-api_7",
		Severity:   notify.SeverityCritical,
		Summary:    "error rate 0.2 > 0.05 for 60s",
		Details: notify.Details{
			Query:      `sum(rate(http_requests_total{status="500"}[1m]))/sum(rate(http_requests_total[1m]))`,
			Threshold:  new(0.05),
			BadVersion: "v1.1.0",
		},
	}
}

func TestPayloadFields(t *testing.T) {
	f, srv := newFakePD(t)
	n, err := New(Options{Endpoint: srv.URL, RoutingKey: routingKey, StatusURL: "http://rollguard:8080/"}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	if err := n.Notify(context.Background(), detected()); err != nil {
		t.Fatalf("Notify: %v", err)
	}
	got := f.requests()
	if len(got) != 1 || got[0].path != "/v2/enqueue" {
		t.Fatalf("requests = %+v, want one to /v2/enqueue", got)
	}
	b := got[0].body
	wantFields(t, "", b, map[string]any{
		"routing_key":  routingKey,
		"event_action": "trigger",
		"dedup_key":    "production_pggit-api_7",
		"client":       "rollguard",
		"client_url":   "http://rollguard:8080/api/v1/incidents/production_pggit-api_7",
	})
	p := b["payload"].(map[string]any)
	wantFields(t, "payload.", p, map[string]any{
		"summary":   "error rate 0.2 > 0.05 for 60s",
		"source":    "rollguard/production",
		"severity":  "critical",
		"component": "pggit-api",
		"group":     "production",
		"class":     "error-rate",
		"timestamp": "2026-11-25T14:35:10Z",
	})
	cd := p["custom_details"].(map[string]any)
	if cd["threshold"] != 0.05 || cd["bad_version"] != "v1.1.0" || !strings.Contains(cd["query"].(string), "http_requests_total") ||
		cd["incident_id"] != "production_pggit-api_7" || cd["kind"] != "detected" {
		t.Errorf("custom_details = %v", cd)
	}
	links := b["links"].([]any)
	if len(links) != 1 || links[0].(map[string]any)["href"] != "http://rollguard:8080/api/v1/incidents/production_pggit-api_7" {
		t.Errorf("links = %v", links)
	}
}

func TestEventMapping(t *testing.T) {
	type sent struct{ path, action, dedup, severity, key string }
	base := detected()
	with := func(k notify.Kind, mod func(*notify.Event)) notify.Event {
		e := base
		e.Kind = k
		if mod != nil {
			mod(&e)
		}
		return e
	}
	inc := "production_pggit-api_7"
	cases := []struct {
		name    string
		opts    Options
		e       notify.Event
		want    []sent
		summary string
	}{
		{name: "rollback started: a change event, the detection paged", e: with(notify.KindRollbackStarted, nil),
			want: []sent{{"/v2/change/enqueue", "", "", "", routingKey}}},
		{name: "rollback resumed: trigger and change event", e: with(notify.KindRollbackStarted, func(e *notify.Event) { e.Details.Resumed = true }),
			want: []sent{{"/v2/enqueue", "trigger", inc, "critical", routingKey}, {"/v2/change/enqueue", "", "", "", routingKey}}},
		{name: "a step is not paged", e: with(notify.KindStepFinished, func(e *notify.Event) { e.Severity = "" }),
			want: nil},
		{name: "unverified: trigger and change event, never resolved", opts: Options{ResolveOnSuccess: true}, e: with(notify.KindRollbackUnverified, nil),
			want: []sent{{"/v2/enqueue", "trigger", inc, "critical", routingKey}, {"/v2/change/enqueue", "", "", "", routingKey}}},
		{name: "success without resolve", e: with(notify.KindRollbackSucceeded, nil),
			want: []sent{{"/v2/enqueue", "trigger", inc, "critical", routingKey}, {"/v2/change/enqueue", "", "", "", routingKey}}},
		{name: "success with resolve", opts: Options{ResolveOnSuccess: true, DisableChangeEvents: true}, e: with(notify.KindRollbackSucceeded, nil),
			want: []sent{{"/v2/enqueue", "trigger", inc, "critical", routingKey}, {"/v2/enqueue", "resolve", inc, "", routingKey}}},
		{name: "blind is a warning with its own key", e: with(notify.KindBlind, nil),
			want: []sent{{"/v2/enqueue", "trigger", "production/pggit-api/error-rate/blind", "warning", routingKey}}},
		{name: "data back resolves the blind page", e: with(notify.KindBlindResolved, nil),
			want: []sent{{"/v2/enqueue", "resolve", "production/pggit-api/error-rate/blind", "", routingKey}}},
		{name: "cannot roll back", e: with(notify.KindCannotRollback, func(e *notify.Event) { e.Severity = notify.SeverityError }),
			want: []sent{{"/v2/enqueue", "trigger", inc, "error", routingKey}}},
		{name: "would roll back is info", e: with(notify.KindWouldRollback, nil),
			want: []sent{{"/v2/enqueue", "trigger", inc + "/dry-run", "info", routingKey}}},
		{name: "security goes to both keys", opts: Options{SecurityRoutingKey: securityKey}, e: with(notify.KindDetected, func(e *notify.Event) { e.Security = true }),
			want: []sent{{"/v2/enqueue", "trigger", inc, "critical", routingKey}, {"/v2/enqueue", "trigger", inc, "critical", securityKey}}},
		{name: "non-security skips the security key", opts: Options{SecurityRoutingKey: securityKey}, e: with(notify.KindDetected, nil),
			want: []sent{{"/v2/enqueue", "trigger", inc, "critical", routingKey}}},
		{name: "summary truncated rune-safe", e: with(notify.KindDetected, func(e *notify.Event) { e.Summary = strings.Repeat("ü", 1000) }),
			want:    []sent{{"/v2/enqueue", "trigger", inc, "critical", routingKey}},
			summary: strings.Repeat("ü", 510) + "…"},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			f, srv := newFakePD(t)
			tc.opts.Endpoint, tc.opts.RoutingKey = srv.URL, routingKey
			n, err := New(tc.opts, zap.NewNop())
			if err != nil {
				t.Fatal(err)
			}
			if err := n.Notify(context.Background(), tc.e); err != nil {
				t.Fatalf("Notify: %v", err)
			}
			var got []sent
			for _, r := range f.requests() {
				s := sent{path: r.path, key: fmt.Sprint(r.body["routing_key"])}
				if r.path == "/v2/enqueue" {
					s.action, s.dedup = r.body["event_action"].(string), r.body["dedup_key"].(string)
					if p, ok := r.body["payload"].(map[string]any); ok {
						s.severity = p["severity"].(string)
						if tc.summary != "" && p["summary"] != tc.summary {
							t.Errorf("summary = %q (%d bytes)", p["summary"], len(p["summary"].(string)))
						}
					}
				}
				got = append(got, s)
			}
			if fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("sent\n %v\nwant\n %v", got, tc.want)
			}
		})
	}
}

func TestChangeEventBody(t *testing.T) {
	f, srv := newFakePD(t)
	n, _ := New(Options{Endpoint: srv.URL, RoutingKey: routingKey, Source: "rollguard/eu1"}, zap.NewNop())
	e := detected()
	e.Kind = notify.KindRollbackStarted
	e.Details.RestoredVersion = "v1.0.3"
	if err := n.Notify(context.Background(), e); err != nil {
		t.Fatal(err)
	}
	r := f.requests()[0]
	p := r.body["payload"].(map[string]any)
	if r.body["routing_key"] != routingKey || p["summary"] != "rollguard rollback of production/pggit-api started (v1.1.0 -> v1.0.3)" || p["source"] != "rollguard/eu1" {
		t.Errorf("change event = %v", r.body)
	}
}

func TestErrorClassification(t *testing.T) {
	cases := []struct {
		name      string
		a         notifytest.Answer
		retryable bool
		after     time.Duration
		sentinel  error
	}{
		{name: "429 with retry-after", a: notifytest.Answer{Status: 429, RetryAfter: "3"}, retryable: true, after: 3 * time.Second},
		{name: "500", a: notifytest.Answer{Status: 500}, retryable: true},
		{name: "503", a: notifytest.Answer{Status: 503}, retryable: true},
		{name: "400", a: notifytest.Answer{Status: 400}, sentinel: ErrRejected},
		{name: "403", a: notifytest.Answer{Status: 403}, sentinel: ErrRejected},
		{name: "timeout", a: notifytest.Answer{Hang: true}, retryable: true},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			_, srv := newFakePD(t, tc.a)
			n, _ := New(Options{Endpoint: srv.URL, RoutingKey: routingKey, Timeout: 50 * time.Millisecond}, zap.NewNop())
			err := n.Notify(context.Background(), detected())
			if err == nil {
				t.Fatal("Notify succeeded")
			}
			if notify.IsRetryable(err) != tc.retryable {
				t.Errorf("retryable = %v, want %v: %v", !tc.retryable, tc.retryable, err)
			}
			if d, _ := notify.RetryAfter(err); d != tc.after {
				t.Errorf("retry after = %v, want %v", d, tc.after)
			}
			if tc.sentinel != nil && !errors.Is(err, tc.sentinel) {
				t.Errorf("err = %v, want %v", err, tc.sentinel)
			}
			if strings.Contains(err.Error(), routingKey) {
				t.Errorf("routing key in error: %v", err)
			}
			if tc.a.Status != 0 && !strings.Contains(err.Error(), fmt.Sprintf("(error: scripted %d)", tc.a.Status)) {
				t.Errorf("err = %v, want the Events API's reason", err)
			}
		})
	}
}

func counter(t *testing.T, reg *prometheus.Registry, result string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != "rollguard_notifications_total" {
			continue
		}
		for _, m := range mf.GetMetric() {
			if labels(m)["result"] == result {
				return m.GetCounter().GetValue()
			}
		}
	}
	return 0
}

func labels(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

type sleepRecorder struct {
	mu sync.Mutex
	d  []time.Duration
}

func (s *sleepRecorder) sleep(ctx context.Context, d time.Duration) error {
	s.mu.Lock()
	s.d = append(s.d, d)
	s.mu.Unlock()
	return ctx.Err()
}

// Through the queue: 429 three times, then 202, is one delivery with one
// dedup_key, waiting as PagerDuty asked and never for real.
func TestQueueRetriesRateLimit(t *testing.T) {
	f, srv := newFakePD(t, notifytest.Answer{Status: 429, RetryAfter: "2"}, notifytest.Answer{Status: 429}, notifytest.Answer{Status: 429, RetryAfter: "5"})
	n, _ := New(Options{Endpoint: srv.URL, RoutingKey: routingKey}, zap.NewNop())
	sl := &sleepRecorder{}
	reg := prometheus.NewRegistry()
	q := notify.NewQueue(notify.Options{
		BaseBackoff: time.Second, MaxBackoff: 8 * time.Second, Sleep: sl.sleep,
		Jitter: func(d time.Duration) time.Duration { return d },
	}, []notify.Notifier{n}, zap.NewNop(), prefixed(reg))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go q.Run(ctx)
	q.Enqueue(detected())
	deadline := time.Now().Add(5 * time.Second)
	for counter(t, reg, "delivered") == 0 && counter(t, reg, "failed") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no outcome")
		}
		time.Sleep(time.Millisecond)
	}
	if d, r, fl := counter(t, reg, "delivered"), counter(t, reg, "retried"), counter(t, reg, "failed"); d != 1 || r != 3 || fl != 0 {
		t.Errorf("delivered %v retried %v failed %v, want 1 3 0", d, r, fl)
	}
	got := f.requests()
	if len(got) != 4 {
		t.Fatalf("requests = %d, want 4", len(got))
	}
	for _, r := range got {
		if r.body["dedup_key"] != "production_pggit-api_7" {
			t.Errorf("dedup_key = %v", r.body["dedup_key"])
		}
	}
	sl.mu.Lock()
	defer sl.mu.Unlock()
	if fmt.Sprint(sl.d) != "[2s 2s 5s]" {
		t.Errorf("sleeps = %v, want [2s 2s 5s] (retry-after, backoff, retry-after)", sl.d)
	}
}

func TestQueueDoesNotRetry400(t *testing.T) {
	f, srv := newFakePD(t, notifytest.Answer{Status: 400})
	n, _ := New(Options{Endpoint: srv.URL, RoutingKey: routingKey}, zap.NewNop())
	core, logs := observer.New(zapcore.DebugLevel)
	reg := prometheus.NewRegistry()
	q := notify.NewQueue(notify.Options{Sleep: (&sleepRecorder{}).sleep}, []notify.Notifier{n}, zap.New(core), prefixed(reg))
	ctx, cancel := context.WithCancel(context.Background())
	go q.Run(ctx)
	q.Enqueue(detected())
	deadline := time.Now().Add(5 * time.Second)
	for counter(t, reg, "failed") == 0 {
		if time.Now().After(deadline) {
			t.Fatal("no give-up")
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if len(f.requests()) != 1 || counter(t, reg, "retried") != 0 {
		t.Errorf("requests %d retried %v, want 1 and 0", len(f.requests()), counter(t, reg, "retried"))
	}
	// The fake echoes the routing key in its error body: it must not reach
	// the logs or the status API.
	for _, l := range logs.All() {
		line := l.Message + fmt.Sprint(l.ContextMap())
		if strings.Contains(line, routingKey) {
			t.Errorf("routing key logged: %s", line)
		}
	}
	for _, s := range q.Status() {
		if strings.Contains(s.LastError, routingKey) || s.LastError == "" {
			t.Errorf("status last error = %q", s.LastError)
		}
	}
}

func TestDedupKeyLength(t *testing.T) {
	e := detected()
	e.IncidentID = strings.Repeat("x", 400)
	k := DedupKey(e)
	if len(k) != maxDedupKey {
		t.Errorf("len = %d, want %d", len(k), maxDedupKey)
	}
	e2 := e
	e2.IncidentID += "y"
	if DedupKey(e2) == k {
		t.Error("long keys collide")
	}
}

func TestNewRequiresRoutingKey(t *testing.T) {
	if _, err := New(Options{}, nil); !errors.Is(err, ErrNoRoutingKey) {
		t.Errorf("err = %v, want %v", err, ErrNoRoutingKey)
	}
}

// prefixed registers on reg as the daemon does, with rollguard's prefix
// added to every name, so tests read the names the daemon exposes.
func prefixed(reg *prometheus.Registry) prometheus.Registerer {
	return prometheus.WrapRegistererWithPrefix("rollguard_", reg)
}
