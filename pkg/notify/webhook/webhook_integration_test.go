package webhook

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	commoncfg "github.com/prometheus/common/config"
	"go.uber.org/zap/zaptest"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/notify/notifytest"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

type received struct {
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
	Status  int         `json:"status"`
	Fault   bool        `json:"fault"`
}

func receivedOn(ctx context.Context, base, path string) ([]received, error) {
	return notifytest.GetJSON[[]received](ctx, base+"/_/received?path="+url.QueryEscape(path))
}

// TestIntegrationWebhookThroughQueue delivers an incident through
// rollguard's retry queue to the sandbox's JSON webhook receiver, with a
// bearer token from a file (prometheus/common's client) and a 503 and a
// 429 scripted first: every event arrives once accepted, in order,
// retried events with the same id, each matching the documented schema.
func TestIntegrationWebhookThroughQueue(t *testing.T) {
	env := sandboxenv.Load(t)
	began := time.Now()
	defer func() { t.Logf("wall time %v", time.Since(began).Round(time.Millisecond)) }()
	s := schema(t)
	base := env.Get(t, "RECEIVER_URL")
	path := fmt.Sprintf("/t/webhook-%d/webhook", time.Now().UnixNano())
	faults := fmt.Sprintf(`{"path":%q,"responses":[{"status":503},{"status":429,"retryAfter":"1"}]}`, path)
	resp, err := http.Post(base+"/_/faults", "application/json", bytes.NewReader([]byte(faults)))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode/100 != 2 {
		t.Fatalf("scripting faults: %s", resp.Status)
	}

	tokenFile := filepath.Join(t.TempDir(), "token")
	if err := os.WriteFile(tokenFile, []byte("tok-webhook-1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	client, err := commoncfg.NewClientFromConfig(commoncfg.HTTPClientConfig{Authorization: &commoncfg.Authorization{Type: "Bearer", CredentialsFile: tokenFile}}, "test")
	if err != nil {
		t.Fatal(err)
	}
	n, err := New(Options{Name: "tickets", URL: base + path, Client: client})
	if err != nil {
		t.Fatal(err)
	}
	q := notify.NewQueue(notify.Options{BaseBackoff: 50 * time.Millisecond}, []notify.Notifier{n}, zaptest.NewLogger(t), prometheus.NewRegistry())
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { defer close(done); q.Run(ctx) }()
	defer func() { cancel(); <-done }()

	evs := events()[:5] // detected → rollback_succeeded
	for _, e := range evs {
		q.Enqueue(e)
	}
	var got []received
	sandboxfixture.WaitFor(t, "every event accepted", 15*time.Second, 100*time.Millisecond, func(ctx context.Context) (bool, string, error) {
		all, err := receivedOn(ctx, base, path)
		got = all
		accepted := 0
		for _, r := range all {
			if r.Status == http.StatusOK {
				accepted++
			}
		}
		return accepted == len(evs), fmt.Sprintf("%d requests, %d accepted", len(all), accepted), err
	})
	if len(got) != len(evs)+2 || !got[0].Fault || !got[1].Fault {
		t.Fatalf("%d requests (want %d: the two faults first): %+v", len(got), len(evs)+2, got)
	}
	var ids []string
	for _, r := range got {
		if a := r.Headers.Get("Authorization"); a != "Bearer tok-webhook-1" {
			t.Errorf("Authorization %q, want the token from the file", a)
		}
		if err := validate(t, s, []byte(r.Body)); err != nil {
			t.Errorf("payload does not match the schema: %v\n%s", err, r.Body)
		}
		var p Payload
		if err := json.Unmarshal([]byte(r.Body), &p); err != nil {
			t.Fatal(err)
		}
		ids = append(ids, p.ID)
	}
	if ids[0] != ids[1] || ids[1] != ids[2] || ids[0] != EventID(evs[0]) {
		t.Errorf("the retried event's ids %v, want the same, %s", ids[:3], EventID(evs[0]))
	}
	for i, e := range evs {
		if ids[i+2] != EventID(e) {
			t.Errorf("delivery %d is %s, want %s (%s): out of order", i, ids[i+2], EventID(e), e.Kind)
		}
	}
}
