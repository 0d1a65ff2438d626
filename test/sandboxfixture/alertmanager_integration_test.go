package sandboxfixture

import (
	"bytes"
	"context"
	"encoding/json"
	"net/http"
	"testing"
	"time"

	"github.com/rollguard/rollguard/test/sandboxenv"
)

// TestAlertmanager starts two private Alertmanagers, posts an alert to one
// through the v2 API and reads it back there and only there: each test's
// Alertmanager is its own (no gossip between them).
func TestAlertmanager(t *testing.T) {
	env := sandboxenv.Load(t)
	a := Alertmanager(t, env, "")
	b := Alertmanager(t, env, "")
	if a == b {
		t.Fatalf("two Alertmanagers on one address %s", a)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	body := []byte(`[{"labels":{"alertname":"FixtureCheck","test":"` + t.Name() + `"}}]`)
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, a+"/api/v2/alerts", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("post alert: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("post alert: %s, want 200 OK", resp.Status)
	}

	names := func(base string) []string {
		t.Helper()
		req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v2/alerts", nil)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatalf("get alerts from %s: %v", base, err)
		}
		defer resp.Body.Close()
		var alerts []struct {
			Labels map[string]string `json:"labels"`
		}
		if err := json.NewDecoder(resp.Body).Decode(&alerts); err != nil {
			t.Fatalf("decode alerts from %s: %v", base, err)
		}
		var out []string
		for _, a := range alerts {
			out = append(out, a.Labels["alertname"])
		}
		return out
	}
	if got := names(a); len(got) != 1 || got[0] != "FixtureCheck" {
		t.Errorf("alerts on %s = %q, want [FixtureCheck]", a, got)
	}
	if got := names(b); len(got) != 0 {
		t.Errorf("alerts on the other Alertmanager %s = %q, want none", b, got)
	}
}
