package sandboxfixture

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// SimulatorDo sends in as JSON (none when nil) to the pggit-api
// simulator's control endpoint path at simURL and decodes its answer into
// out (unless nil).
func SimulatorDo(ctx context.Context, simURL, method, path string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, simURL+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return fmt.Errorf("simulator %s %s: %w", method, path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(io.LimitReader(resp.Body, 1<<20))
	if resp.StatusCode/100 != 2 {
		return fmt.Errorf("simulator %s %s: %s: %s", method, path, resp.Status, strings.TrimSpace(string(b)))
	}
	if out != nil {
		if err := json.Unmarshal(b, out); err != nil {
			return fmt.Errorf("simulator %s %s: decode %q: %w", method, path, b, err)
		}
	}
	return nil
}

// FaultImage defines the simulator's fault profile (a pggitsim.Profile)
// under tag, deletes it when the test ends, and returns the image that
// runs it. A tag of the test's own keeps other tests' profile changes
// from moving its signal.
func FaultImage(t testing.TB, simURL, tag string, profile any) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := SimulatorDo(ctx, simURL, http.MethodPut, "/control/profiles/"+tag, profile, nil); err != nil {
		t.Fatalf("define profile %s: %v", tag, err)
	}
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := SimulatorDo(ctx, simURL, http.MethodDelete, "/control/profiles/"+tag, nil, nil); err != nil {
			t.Logf("cleanup: delete profile %s: %v", tag, err)
		}
	})
	t.Logf("profile %s: %+v", tag, profile)
	return "pggit-api:" + tag
}
