package receiver

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"net/url"
	"os"
	"testing"
	"time"

	"github.com/PagerDuty/go-pagerduty"

	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// TestSandboxReceiverIntegration drives the sandbox's receiver process
// through its control endpoints. The receiver is shared by every test of
// the run, so this one works under its own path prefix and never resets.
func TestSandboxReceiverIntegration(t *testing.T) {
	env := sandboxenv.Load(t)
	base := env["RECEIVER_URL"]
	if base == "" && os.Getenv("CI") == "" {
		t.Skip("sandbox runs without the receiver (no RECEIVER_URL)")
	}
	base = env.Get(t, "RECEIVER_URL")
	prefix := "/t/receiver-it-" + sandboxfixture.RandomHex(t, 4)
	path := prefix + PagerDutyEventsPath

	code, body := postJSON(t, base+"/_/faults", `{"path":"`+path+`","responses":[{"status":429,"retryAfter":"1"}]}`)
	if code != 200 {
		t.Fatalf("POST /_/faults = %d %s", code, body)
	}
	c := pagerduty.NewClient("", pagerduty.WithV2EventsAPIEndpoint(base+prefix))
	c.HTTPClient = &http.Client{Timeout: 5 * time.Second}
	ev := &pagerduty.V2Event{RoutingKey: "0123456789abcdef0123456789abcdef", Action: "trigger", DedupKey: "receiver-it",
		Payload: &pagerduty.V2Payload{Summary: "receiver integration", Source: "rollguard", Severity: "warning"}}
	_, err := c.ManageEventWithContext(context.Background(), ev)
	var apiErr pagerduty.APIError
	if !errors.As(err, &apiErr) || !apiErr.RateLimited() {
		t.Fatalf("first event error = %v, want rate limited", err)
	}
	resp, err := c.ManageEventWithContext(context.Background(), ev)
	if err != nil || resp.DedupKey != "receiver-it" {
		t.Fatalf("second event = %+v, %v", resp, err)
	}

	hr, err := http.Get(base + "/_/received?path=" + url.QueryEscape(path))
	if err != nil {
		t.Fatal(err)
	}
	defer hr.Body.Close()
	var got []Request
	if err := json.NewDecoder(hr.Body).Decode(&got); err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got[0].Status != 429 || got[1].Status != 202 || got[1].Headers.Get("Content-Type") != "application/json" {
		t.Fatalf("received = %+v", got)
	}
}

func postJSON(t *testing.T, u, body string) (int, string) {
	t.Helper()
	code, _, b := post(t, u, "application/json", body)
	return code, b
}
