package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/PagerDuty/go-pagerduty"
)

var t0 = time.Date(2026, 11, 25, 12, 0, 0, 0, time.UTC)

func newTestReceiver() *Receiver {
	rc := New(nil)
	rc.now = func() time.Time { return t0 }
	rc.newKey = func() string { return "generated-key" }
	return rc
}

func post(t *testing.T, url, contentType, body string) (int, http.Header, string) {
	t.Helper()
	resp, err := http.Post(url, contentType, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, resp.Header, strings.TrimSpace(string(b))
}

func TestPagerDutyEvents(t *testing.T) {
	long := strings.Repeat("x", 1025)
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"trigger", `{"routing_key":"k","event_action":"trigger","dedup_key":"inc-1","payload":{"summary":"s","source":"rollguard","severity":"critical"}}`,
			202, `{"status":"success","message":"Event processed","dedup_key":"inc-1"}`},
		{"trigger without dedup key", `{"routing_key":"k","event_action":"trigger","payload":{"summary":"s","source":"x","severity":"info"}}`,
			202, `{"status":"success","message":"Event processed","dedup_key":"generated-key"}`},
		{"resolve", `{"routing_key":"k","event_action":"resolve","dedup_key":"inc-1"}`,
			202, `{"status":"success","message":"Event processed","dedup_key":"inc-1"}`},
		{"acknowledge without dedup key", `{"routing_key":"k","event_action":"acknowledge"}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'dedup_key' is missing or blank (required for acknowledge)"]}`},
		{"empty object", `{}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'routing_key' is missing or blank","'event_action' is missing or blank"]}`},
		{"bad action", `{"routing_key":"k","event_action":"open"}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'event_action' is invalid (must be one of: trigger, acknowledge, resolve)"]}`},
		{"trigger without payload", `{"routing_key":"k","event_action":"trigger"}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'payload' is missing"]}`},
		{"trigger with bad payload", `{"routing_key":"k","event_action":"trigger","payload":{"summary":"` + long + `","severity":"fatal"}}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'payload.summary' is too long (max 1024 characters)","'payload.source' is missing or blank","'payload.severity' is invalid (must be one of: critical, error, warning, info)"]}`},
		{"long dedup key", `{"routing_key":"k","event_action":"resolve","dedup_key":"` + strings.Repeat("d", 256) + `"}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'dedup_key' is too long (max 255 characters)"]}`},
		{"not json", `routing_key=k`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["Invalid JSON: invalid character 'r' looking for beginning of value"]}`},
		{"too large", `{"routing_key":"` + strings.Repeat("k", maxEventBytes) + `"}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["Event object is too large (max 512 KB)"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newTestReceiver()
			srv := httptest.NewServer(rc)
			defer srv.Close()
			code, hdr, body := post(t, srv.URL+PagerDutyEventsPath, "application/json", tc.body)
			if code != tc.code || body != tc.want {
				t.Fatalf("POST = %d %s, want %d %s", code, body, tc.code, tc.want)
			}
			if ct := hdr.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q", ct)
			}
			got := rc.Received(PagerDutyEventsPath)
			if len(got) != 1 || got[0].Status != tc.code || got[0].Body != tc.body || !got[0].Time.Equal(t0) ||
				got[0].Method != "POST" || got[0].Headers.Get("Content-Type") != "application/json" {
				t.Fatalf("Received = %+v", got)
			}
		})
	}
}

func TestPagerDutyChangeEvents(t *testing.T) {
	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"ok", `{"routing_key":"k","payload":{"summary":"rolled back pggit-api","source":"rollguard"}}`,
			202, `{"status":"success","message":"Change event processed"}`},
		{"no summary", `{"routing_key":"k","payload":{"source":"rollguard"}}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'payload.summary' is missing or blank"]}`},
		{"nothing", `{}`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["'routing_key' is missing or blank","'payload' is missing"]}`},
		{"not json", `[`,
			400, `{"status":"invalid event","message":"Event object is invalid","errors":["Invalid JSON"]}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(newTestReceiver())
			defer srv.Close()
			if code, _, body := post(t, srv.URL+PagerDutyChangePath, "application/json", tc.body); code != tc.code || body != tc.want {
				t.Fatalf("POST = %d %s, want %d %s", code, body, tc.code, tc.want)
			}
		})
	}
}

func TestSlackWebhook(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		code                    int
		want                    string
	}{
		{"text", "application/json", `{"text":"ROLLBACK INITIATED"}`, 200, "ok"},
		{"blocks", "application/json", `{"blocks":[{"type":"section"}]}`, 200, "ok"},
		{"form", "application/x-www-form-urlencoded", `payload=%7B%22text%22%3A%22hi%22%7D`, 200, "ok"},
		{"empty text", "application/json", `{"text":"  "}`, 400, "invalid_payload"},
		{"no text", "application/json", `{"username":"rollguard"}`, 400, "invalid_payload"},
		{"text not a string", "application/json", `{"text":5}`, 400, "invalid_payload"},
		{"not json", "application/json", `ROLLBACK`, 400, "invalid_payload"},
		{"null", "application/json", `null`, 400, "invalid_payload"},
		{"form without payload", "application/x-www-form-urlencoded", `text=hi`, 400, "invalid_payload"},
		{"curl -d json", "application/x-www-form-urlencoded", `{"text":"hi"}`, 200, "ok"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newTestReceiver()
			srv := httptest.NewServer(rc)
			defer srv.Close()
			if code, _, body := post(t, srv.URL+SlackWebhookPath, tc.contentType, tc.body); code != tc.code || body != tc.want {
				t.Fatalf("POST = %d %s, want %d %s", code, body, tc.code, tc.want)
			}
			if got := rc.Received(SlackWebhookPath); len(got) != 1 || got[0].Status != tc.code {
				t.Fatalf("Received = %+v", got)
			}
		})
	}
}

func TestGenericWebhook(t *testing.T) {
	for _, tc := range []struct {
		name, contentType, body string
		code                    int
		want                    string
	}{
		{"object", "application/json", `{"version":"1","kind":"test"}`, 200, `{"ok":true}`},
		{"with a charset", "application/json; charset=utf-8", `{}`, 200, `{"ok":true}`},
		{"not an object", "application/json", `[1]`, 400, `{"error":"want a JSON object"}`},
		{"null", "application/json", `null`, 400, `{"error":"want a JSON object"}`},
		{"not json", "application/json", `hello`, 400, `{"error":"want a JSON object"}`},
		{"form", "application/x-www-form-urlencoded", `a=b`, 415, `{"error":"want application/json"}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newTestReceiver()
			srv := httptest.NewServer(rc)
			defer srv.Close()
			if code, _, body := post(t, srv.URL+"/t/x"+GenericWebhookPath, tc.contentType, tc.body); code != tc.code || body != tc.want {
				t.Fatalf("POST = %d %s, want %d %s", code, body, tc.code, tc.want)
			}
		})
	}
}

func TestUnknownPathAndMethod(t *testing.T) {
	rc := newTestReceiver()
	srv := httptest.NewServer(rc)
	defer srv.Close()
	if code, _, _ := post(t, srv.URL+"/v1/enqueue", "application/json", `{}`); code != 404 {
		t.Errorf("POST /v1/enqueue = %d, want 404", code)
	}
	resp, err := http.Get(srv.URL + SlackWebhookPath)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 405 {
		t.Errorf("GET %s = %d, want 405", SlackWebhookPath, resp.StatusCode)
	}
	got := rc.Received("")
	if len(got) != 2 || got[0].Status != 404 || got[1].Status != 405 {
		t.Fatalf("Received = %+v", got)
	}
}

// TestGoPagerDutyClient checks the receiver against the client rollguard
// uses, including how a scripted 429 reaches it.
func TestGoPagerDutyClient(t *testing.T) {
	rc := newTestReceiver()
	srv := httptest.NewServer(rc)
	defer srv.Close()
	c := pagerduty.NewClient("", pagerduty.WithV2EventsAPIEndpoint(srv.URL))
	ctx := context.Background()
	ev := &pagerduty.V2Event{RoutingKey: "0123456789abcdef0123456789abcdef", Action: "trigger", DedupKey: "rollguard/production/pggit-api/1",
		Payload: &pagerduty.V2Payload{Summary: "error rate 21% > 5% for 60s", Source: "rollguard", Severity: "critical"}}

	if err := rc.SetFaults(PagerDutyEventsPath, []Response{{Status: 429, RetryAfter: "1"}}); err != nil {
		t.Fatal(err)
	}
	_, err := c.ManageEventWithContext(ctx, ev)
	var apiErr pagerduty.APIError
	if !errors.As(err, &apiErr) || !apiErr.RateLimited() {
		t.Fatalf("first send error = %v, want a rate-limited APIError", err)
	}
	resp, err := c.ManageEventWithContext(ctx, ev)
	if err != nil {
		t.Fatalf("second send: %v", err)
	}
	if resp.Status != "success" || resp.DedupKey != ev.DedupKey {
		t.Fatalf("response = %+v", resp)
	}
	if _, err := c.CreateChangeEventWithContext(ctx, pagerduty.ChangeEvent{RoutingKey: "k",
		Payload: pagerduty.ChangeEventPayload{Summary: "rollback of pggit-api", Source: "rollguard"}}); err != nil {
		t.Fatalf("change event: %v", err)
	}

	got := rc.Received(PagerDutyEventsPath)
	if len(got) != 2 || got[0].Status != 429 || !got[0].Fault || got[1].Status != 202 || got[1].Fault {
		t.Fatalf("Received = %+v", got)
	}
	var sent pagerduty.V2Event
	if err := json.Unmarshal([]byte(got[1].Body), &sent); err != nil || sent.Payload.Summary != ev.Payload.Summary {
		t.Fatalf("recorded body %q (%v)", got[1].Body, err)
	}
	if n := len(rc.Received(PagerDutyChangePath)); n != 1 {
		t.Fatalf("change events received = %d, want 1", n)
	}
}

func TestFaultsPlayInOrder(t *testing.T) {
	rc := newTestReceiver()
	srv := httptest.NewServer(rc)
	defer srv.Close()
	err := rc.SetFaults(SlackWebhookPath, []Response{
		{Status: 429, RetryAfter: "3"},
		{Status: 503, Body: `{"error":"down"}`},
		{Status: 500},
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []struct {
		code              int
		retryAfter, ctype string
		body              string
	}{
		{429, "3", "text/plain; charset=utf-8", "Too Many Requests"},
		{503, "", "application/json", `{"error":"down"}`},
		{500, "", "text/plain; charset=utf-8", "Internal Server Error"},
		{200, "", "text/html", "ok"},
		{200, "", "text/html", "ok"},
	} {
		code, hdr, body := post(t, srv.URL+SlackWebhookPath, "application/json", `{"text":"x"}`)
		if code != want.code || hdr.Get("Retry-After") != want.retryAfter || hdr.Get("Content-Type") != want.ctype || body != want.body {
			t.Fatalf("request %d = %d Retry-After %q %q %q, want %+v", i, code, hdr.Get("Retry-After"), hdr.Get("Content-Type"), body, want)
		}
	}
	// Faults on one path leave the others alone.
	if err := rc.SetFaults(PagerDutyEventsPath, []Response{{Status: 502}}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := post(t, srv.URL+SlackWebhookPath, "application/json", `{"text":"x"}`); code != 200 {
		t.Fatalf("slack after PagerDuty fault = %d, want 200", code)
	}
	rc.Reset()
	if code, _, _ := post(t, srv.URL+PagerDutyEventsPath, "application/json", `{"routing_key":"k","event_action":"resolve","dedup_key":"d"}`); code != 202 {
		t.Fatalf("after Reset = %d, want 202 (faults cleared)", code)
	}
	if got := rc.Received(""); len(got) != 1 {
		t.Fatalf("after Reset, Received = %+v, want only the last request", got)
	}
}

func TestHangEndsWhenClientGivesUp(t *testing.T) {
	rc := newTestReceiver()
	entered := make(chan time.Duration, 1)
	rc.after = func(d time.Duration) <-chan time.Time {
		entered <- d
		return nil // never fires: only the client can end the hang
	}
	if err := rc.SetFaults(PagerDutyEventsPath, []Response{{Hang: 10 * time.Second}}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	req := httptest.NewRequestWithContext(ctx, "POST", PagerDutyEventsPath, strings.NewReader(`{}`))
	w := httptest.NewRecorder()
	done := make(chan struct{})
	go func() {
		rc.ServeHTTP(w, req)
		close(done)
	}()
	if d := <-entered; d != 10*time.Second {
		t.Fatalf("hang = %v, want 10s", d)
	}
	cancel()
	<-done
	got := rc.Received(PagerDutyEventsPath)
	if len(got) != 1 || !got[0].Aborted || got[0].Status != 0 || !got[0].Fault {
		t.Fatalf("Received = %+v, want one aborted request", got)
	}
}

func TestHangThenAnswer(t *testing.T) {
	fired := make(chan time.Time)
	close(fired)
	for _, tc := range []struct {
		name  string
		fault Response
		code  int
		body  string
	}{
		{"then status", Response{Hang: time.Second, Status: 503}, 503, "Service Unavailable"},
		{"then normal", Response{Hang: time.Second}, 400, "invalid_payload"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			rc := newTestReceiver()
			rc.after = func(time.Duration) <-chan time.Time { return fired }
			if err := rc.SetFaults(SlackWebhookPath, []Response{tc.fault}); err != nil {
				t.Fatal(err)
			}
			w := httptest.NewRecorder()
			rc.ServeHTTP(w, httptest.NewRequest("POST", SlackWebhookPath, strings.NewReader(`{}`)))
			if w.Code != tc.code || w.Body.String() != tc.body {
				t.Fatalf("answer = %d %q, want %d %q", w.Code, w.Body.String(), tc.code, tc.body)
			}
			if got := rc.Received(SlackWebhookPath); len(got) != 1 || got[0].Status != tc.code || !got[0].Fault {
				t.Fatalf("Received = %+v", got)
			}
		})
	}
}

func TestControlEndpoints(t *testing.T) {
	rc := newTestReceiver()
	srv := httptest.NewServer(rc)
	defer srv.Close()

	for _, tc := range []struct {
		name, body string
		code       int
		want       string
	}{
		{"ok", `{"path":"/v2/enqueue","responses":[{"status":429,"retryAfter":"1"},{"status":503},{"hang":"10s"}]}`,
			200, `{"path":"/v2/enqueue","queued":3}`},
		{"bad hang", `{"path":"/v2/enqueue","responses":[{"hang":"soon"}]}`,
			400, `{"error":"decode faults: invalid fault: hang \"soon\": time: invalid duration \"soon\""}`},
		{"empty fault", `{"path":"/v2/enqueue","responses":[{}]}`,
			400, `{"error":"fault 0 of /v2/enqueue: invalid fault: neither status nor hang"}`},
		{"bad status", `{"path":"/v2/enqueue","responses":[{"status":99}]}`,
			400, `{"error":"fault 0 of /v2/enqueue: invalid fault: status 99"}`},
		{"control path", `{"path":"/_/reset","responses":[{"status":500}]}`,
			400, `{"error":"invalid fault: path \"/_/reset\""}`},
		{"unknown field", `{"path":"/v2/enqueue","responses":[{"code":500}]}`,
			400, `{"error":"decode faults: json: unknown field \"code\""}`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if code, _, body := post(t, srv.URL+"/_/faults", "application/json", tc.body); code != tc.code || body != tc.want {
				t.Fatalf("POST /_/faults = %d %s, want %d %s", code, body, tc.code, tc.want)
			}
		})
	}
	// Only the valid script was kept.
	faults := rc.Faults()
	if len(faults) != 1 || len(faults[PagerDutyEventsPath]) != 3 || faults[PagerDutyEventsPath][2].Hang != 10*time.Second {
		t.Fatalf("Faults = %+v", faults)
	}
	resp, err := http.Get(srv.URL + "/_/faults")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if want := `{"/v2/enqueue":[{"status":429,"retryAfter":"1"},{"status":503},{"hang":"10s"}]}`; strings.TrimSpace(string(b)) != want {
		t.Fatalf("GET /_/faults = %s, want %s", b, want)
	}

	post(t, srv.URL+PagerDutyEventsPath, "application/json", `{}`) // consumes the 429
	post(t, srv.URL+SlackWebhookPath, "application/json", `{"text":"hi"}`)
	var got []Request
	resp, err = http.Get(srv.URL + "/_/received?path=" + PagerDutyEventsPath)
	if err != nil {
		t.Fatal(err)
	}
	if err := json.NewDecoder(resp.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(got) != 1 || got[0].Status != 429 || got[0].Body != `{}` || got[0].Path != PagerDutyEventsPath || !got[0].Time.Equal(t0) {
		t.Fatalf("GET /_/received = %+v", got)
	}

	if code, _, body := post(t, srv.URL+"/_/reset", "application/json", ``); code != 200 || body != `{"status":"reset"}` {
		t.Fatalf("POST /_/reset = %d %s", code, body)
	}
	resp, err = http.Get(srv.URL + "/_/received")
	if err != nil {
		t.Fatal(err)
	}
	b, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	if strings.TrimSpace(string(b)) != "[]" || len(rc.Faults()) != 0 {
		t.Fatalf("after reset: received %s, faults %v", b, rc.Faults())
	}
}

// TestPathPrefixesIsolateTests: tests sharing the sandbox's receiver use
// their own prefix, so faults and records do not mix.
func TestPathPrefixesIsolateTests(t *testing.T) {
	rc := newTestReceiver()
	srv := httptest.NewServer(rc)
	defer srv.Close()
	a, b := "/t/a"+SlackWebhookPath, "/t/b"+SlackWebhookPath
	if err := rc.SetFaults(a, []Response{{Status: 503}}); err != nil {
		t.Fatal(err)
	}
	if code, _, _ := post(t, srv.URL+b, "application/json", `{"text":"b"}`); code != 200 {
		t.Fatalf("POST %s = %d, want 200", b, code)
	}
	if code, _, _ := post(t, srv.URL+a, "application/json", `{"text":"a"}`); code != 503 {
		t.Fatalf("POST %s = %d, want 503", a, code)
	}
	c := pagerduty.NewClient("", pagerduty.WithV2EventsAPIEndpoint(srv.URL+"/t/c"))
	if _, err := c.ManageEventWithContext(context.Background(), &pagerduty.V2Event{RoutingKey: "k", Action: "resolve", DedupKey: "d"}); err != nil {
		t.Fatalf("prefixed PagerDuty event: %v", err)
	}
	if got := rc.Received(a); len(got) != 1 || got[0].Body != `{"text":"a"}` {
		t.Fatalf("Received(%s) = %+v", a, got)
	}
	if got := rc.Received("/t/c" + PagerDutyEventsPath); len(got) != 1 || got[0].Status != 202 {
		t.Fatalf("Received(/t/c/v2/enqueue) = %+v", got)
	}
	if got := rc.Received(SlackWebhookPath); len(got) != 0 {
		t.Fatalf("Received(%s) = %+v, want none", SlackWebhookPath, got)
	}
}
