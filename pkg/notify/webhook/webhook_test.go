package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/notify"
)

const schemaPath = "../../../docs/webhook.schema.json"

// schema compiles the documented JSON Schema.
func schema(t *testing.T) *jsonschema.Schema {
	t.Helper()
	f, err := os.Open(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	doc, err := jsonschema.UnmarshalJSON(f)
	if err != nil {
		t.Fatalf("%s: %v", schemaPath, err)
	}
	c := jsonschema.NewCompiler()
	c.AssertFormat()
	if err := c.AddResource("webhook.schema.json", doc); err != nil {
		t.Fatal(err)
	}
	s, err := c.Compile("webhook.schema.json")
	if err != nil {
		t.Fatalf("compile %s: %v", schemaPath, err)
	}
	return s
}

func validate(t *testing.T, s *jsonschema.Schema, body []byte) error {
	t.Helper()
	v, err := jsonschema.UnmarshalJSON(bytes.NewReader(body))
	if err != nil {
		t.Fatalf("payload is not JSON: %v\n%s", err, body)
	}
	return s.Validate(v)
}

var at = time.Date(2026, 11, 25, 14, 35, 0, 0, time.UTC)

// events are one of every kind, with the details the producers attach.
func events() []notify.Event {
	tgt := notify.Target{Namespace: "production", Deployment: "pggit-api"}
	id := notify.IncidentID(tgt, "7")
	thr := 0.05
	return []notify.Event{
		{Kind: notify.KindDetected, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Query: "sum(rate(x[1m]))", Threshold: new(thr), Op: "above",
				Window: time.Minute, Samples: []notify.Sample{{Time: at, Value: 0.2}, {Time: at.Add(time.Second), Value: math.NaN()}},
				BadVersion: "pggit-api:v1.1.0", DeployedAt: at.Add(-time.Hour), BreachStartedAt: at.Add(-time.Minute)}},
		{Kind: notify.KindRollbackStarted, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Plan: []string{"preflight", "stop", "application"}, Strategy: "quick"}},
		{Kind: notify.KindStepStarted, Time: at, Target: tgt, IncidentID: id, Details: notify.Details{Step: "stop"}},
		{Kind: notify.KindStepFinished, Time: at, Target: tgt, IncidentID: id,
			Details: notify.Details{Step: "application", StepOutcome: notify.OutcomeOK, Milestone: notify.MilestoneRestored,
				StepDetail: "template set to api=pggit-api:v1.0.3 (generation 3)"}},
		{Kind: notify.KindRollbackSucceeded, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Steps: []notify.StepResult{{Name: "stop", Started: at, Finished: at, Outcome: notify.OutcomeOK}},
				RestoredVersion: "pggit-api:v1.0.3", DataIntegrity: &notify.DataIntegrity{AlertDeliveryQueue: 3}},
			Links: []notify.Link{{Href: "https://rollguard.example/api/v1/incidents/" + id, Text: "incident"}}},
		{Kind: notify.KindRollbackFailed, Time: at, Target: tgt, IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Error: "rollout timed out", StepError: "wait-rollout: timeout",
				StateLeftBehind: "production/pggit-api api=pggit-api:v1.0.2, 2 replicas asked, 2 updated, 1 ready, 1 available"}},
		{Kind: notify.KindRollbackUnverified, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Verification: "no data to judge by: error-rate no data at 6 of 6 polls (prometheus unreachable)",
				RestoredVersion: "pggit-api:v1.0.3"}},
		{Kind: notify.KindCannotRollback, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityCritical,
			Details: notify.Details{Reason: "frozen"}},
		{Kind: notify.KindWouldRollback, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityInfo},
		{Kind: notify.KindBlind, Time: at, Target: tgt, Trigger: "latency-p99", Severity: notify.SeverityWarning, Security: true},
		{Kind: notify.KindBlindResolved, Time: at, Target: tgt, Trigger: "latency-p99", Severity: notify.SeverityWarning},
		{Kind: notify.KindTest, Time: at, Target: notify.Target{Cluster: "eu-1", Namespace: "production", Deployment: "pggit-api"}, Summary: "hello"},
		{Kind: notify.KindRecordFailed, Time: at, Target: tgt, Trigger: "error-rate", IncidentID: id, Severity: notify.SeverityError,
			Details: notify.Details{Error: "configmap is full"}},
	}
}

// receiver records what a webhook posted and answers from a script.
type receiver struct {
	mu      sync.Mutex
	bodies  [][]byte
	headers []http.Header
	answers []int
}

func (r *receiver) ServeHTTP(w http.ResponseWriter, req *http.Request) {
	b, _ := io.ReadAll(req.Body)
	r.mu.Lock()
	defer r.mu.Unlock()
	r.bodies = append(r.bodies, b)
	r.headers = append(r.headers, req.Header.Clone())
	code := http.StatusOK
	if len(r.answers) > 0 {
		code, r.answers = r.answers[0], r.answers[1:]
	}
	if code == http.StatusTooManyRequests {
		w.Header().Set("Retry-After", "7")
	}
	w.WriteHeader(code)
	_, _ = w.Write([]byte(`{"answer":"` + http.StatusText(code) + `"}`))
}

// Every kind of event produces a payload that the documented schema
// accepts, and the schema is strict enough to refuse a wrong one.
func TestPayloadsMatchTheSchema(t *testing.T) {
	s := schema(t)
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	n, err := New(Options{Name: "tickets", URL: srv.URL + "/hook"})
	if err != nil {
		t.Fatal(err)
	}
	evs := events()
	for _, e := range evs {
		if err := n.Notify(context.Background(), e); err != nil {
			t.Fatalf("%s: %v", e.Kind, err)
		}
	}
	if len(rec.bodies) != len(evs) {
		t.Fatalf("%d posts, want %d", len(rec.bodies), len(evs))
	}
	for i, b := range rec.bodies {
		if err := validate(t, s, b); err != nil {
			t.Errorf("%s payload does not match the schema: %v\n%s", evs[i].Kind, err, b)
		}
		if ct := rec.headers[i].Get("Content-Type"); ct != "application/json" {
			t.Errorf("Content-Type %q", ct)
		}
	}
	var p Payload
	if err := json.Unmarshal(rec.bodies[0], &p); err != nil {
		t.Fatal(err)
	}
	if p.Version != "1" || p.Kind != notify.KindDetected || p.Summary != "production/pggit-api: trigger error-rate fired" || p.IncidentID != "production_pggit-api_7" {
		t.Errorf("detected payload = %+v", p)
	}

	for _, bad := range []string{
		`{"version":"1","id":"00000000000000000000000000000000","kind":"exploded","time":"2026-11-25T14:35:00Z","security":false,"target":{"namespace":"a","deployment":"b"},"summary":"x"}`,
		`{"version":"2","id":"00000000000000000000000000000000","kind":"test","time":"2026-11-25T14:35:00Z","security":false,"target":{"namespace":"a","deployment":"b"},"summary":"x"}`,
		`{"version":"1","id":"00000000000000000000000000000000","kind":"test","time":"yesterday","security":false,"target":{"namespace":"a","deployment":"b"},"summary":"x"}`,
		`{"version":"1","id":"00000000000000000000000000000000","kind":"test","time":"2026-11-25T14:35:00Z","security":false,"target":{"namespace":"a"},"summary":"x"}`,
		`{"version":"1","id":"00000000000000000000000000000000","kind":"test","time":"2026-11-25T14:35:00Z","security":false,"target":{"namespace":"a","deployment":"b"},"summary":"x","extra":1}`,
	} {
		if validate(t, s, []byte(bad)) == nil {
			t.Errorf("schema accepts %s", bad)
		}
	}
}

func TestEventID(t *testing.T) {
	evs := events()
	seen := map[string]notify.Kind{}
	for _, e := range evs {
		id := EventID(e)
		if k, dup := seen[id]; dup {
			t.Errorf("%s and %s share id %s", k, e.Kind, id)
		}
		seen[id] = e.Kind
		if EventID(e) != id {
			t.Errorf("%s: id not stable", e.Kind)
		}
	}
	a, b := evs[2], evs[2]
	b.Details = notify.Details{Step: "application"}
	if EventID(a) == EventID(b) {
		t.Errorf("two steps' events share an id")
	}
}

func TestDeliveryAnswers(t *testing.T) {
	for _, tc := range []struct {
		code      int
		retryable bool
		after     time.Duration
		wantErr   string
	}{
		{http.StatusOK, false, 0, ""},
		{http.StatusAccepted, false, 0, ""},
		{http.StatusTooManyRequests, true, 7 * time.Second, `webhook:tickets post: 429 {"answer":"Too Many Requests"}`},
		{http.StatusServiceUnavailable, true, 0, `webhook:tickets post: 503 {"answer":"Service Unavailable"}`},
		{http.StatusBadRequest, false, 0, `webhook:tickets post: rejected: 400 {"answer":"Bad Request"}`},
		{http.StatusUnauthorized, false, 0, `webhook:tickets post: rejected: 401 {"answer":"Unauthorized"}`},
	} {
		rec := &receiver{answers: []int{tc.code}}
		srv := httptest.NewServer(rec)
		n, err := New(Options{Name: "tickets", URL: srv.URL + "/hook/s3cr3t-token"})
		if err != nil {
			t.Fatal(err)
		}
		err = n.Notify(context.Background(), events()[0])
		srv.Close()
		if tc.wantErr == "" {
			if err != nil {
				t.Errorf("%d: %v", tc.code, err)
			}
			continue
		}
		if err == nil || err.Error() != tc.wantErr {
			t.Errorf("%d: error %v, want %s", tc.code, err, tc.wantErr)
		}
		if notify.IsRetryable(err) != tc.retryable {
			t.Errorf("%d: retryable %v, want %v", tc.code, notify.IsRetryable(err), tc.retryable)
		}
		if d, _ := notify.RetryAfter(err); d != tc.after {
			t.Errorf("%d: Retry-After %v, want %v", tc.code, d, tc.after)
		}
		if !tc.retryable && !errors.Is(err, notify.ErrRejected) {
			t.Errorf("%d: not ErrRejected", tc.code)
		}
	}
}

// A URL that holds a token never shows in an error.
func TestErrorsHideTheURL(t *testing.T) {
	n, err := New(Options{Name: "tickets", URL: "http://127.0.0.1:1/hooks/s3cr3t-token?key=also-s3cr3t"})
	if err != nil {
		t.Fatal(err)
	}
	err = n.Notify(context.Background(), events()[0])
	if err == nil || !notify.IsRetryable(err) {
		t.Fatalf("refused connection: %v, want retryable", err)
	}
	if strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("error holds the URL's secret: %v", err)
	}
	if _, err := New(Options{Name: "x", URL: "ftp://host/s3cr3t"}); err == nil || strings.Contains(err.Error(), "s3cr3t") {
		t.Errorf("bad URL: %v", err)
	}
}

func TestKindsFilter(t *testing.T) {
	rec := &receiver{}
	srv := httptest.NewServer(rec)
	defer srv.Close()
	n, err := New(Options{Name: "tickets", URL: srv.URL, Kinds: []notify.Kind{notify.KindRollbackFailed, notify.KindCannotRollback}})
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range events() {
		if err := n.Notify(context.Background(), e); err != nil {
			t.Fatal(err)
		}
	}
	var kinds []string
	for _, b := range rec.bodies {
		var p Payload
		_ = json.Unmarshal(b, &p)
		kinds = append(kinds, string(p.Kind))
	}
	if strings.Join(kinds, ",") != "rollback_failed,cannot_rollback" {
		t.Errorf("sent %v, want only rollback_failed and cannot_rollback", kinds)
	}
}

// The kinds a config may select, the schema's and the events' are one list.
func TestKindListsAgree(t *testing.T) {
	b, err := os.ReadFile(schemaPath)
	if err != nil {
		t.Fatal(err)
	}
	var doc struct {
		Properties struct {
			Kind struct {
				Enum []string `json:"enum"`
			} `json:"kind"`
		} `json:"properties"`
	}
	if err := json.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var produced []string
	for _, e := range events() {
		produced = append(produced, string(e.Kind))
	}
	if !slices.Equal(doc.Properties.Kind.Enum, config.EventKinds) || !slices.Equal(produced, config.EventKinds) {
		t.Errorf("schema kinds %v, config.EventKinds %v, event kinds %v: want one list", doc.Properties.Kind.Enum, config.EventKinds, produced)
	}
}
