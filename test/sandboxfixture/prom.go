package sandboxfixture

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// PromValue runs an instant query against the Prometheus at base and
// returns its single sample; ok is false when the result is empty, and more
// than one series is an error because the caller asked about one thing.
func PromValue(ctx context.Context, base, query string) (v float64, ok bool, err error) {
	return promValue(ctx, base+"/api/v1/query?query="+url.QueryEscape(query))
}

// PromValueAt is PromValue evaluated at the instant at.
func PromValueAt(ctx context.Context, base, query string, at time.Time) (v float64, ok bool, err error) {
	return promValue(ctx, fmt.Sprintf("%s/api/v1/query?time=%.3f&query=%s", base, float64(at.UnixMilli())/1000, url.QueryEscape(query)))
}

func promValue(ctx context.Context, u string) (v float64, ok bool, err error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, false, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus query: %w", err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result []struct {
				Value [2]json.RawMessage `json:"value"`
			} `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return 0, false, fmt.Errorf("prometheus query: decode (HTTP %d): %w", resp.StatusCode, err)
	}
	if body.Status != "success" {
		return 0, false, fmt.Errorf("prometheus query: %s", body.Error)
	}
	switch len(body.Data.Result) {
	case 0:
		return 0, false, nil
	case 1:
	default:
		return 0, false, fmt.Errorf("prometheus query: %d series, want 1", len(body.Data.Result))
	}
	var s string
	if err := json.Unmarshal(body.Data.Result[0].Value[1], &s); err != nil {
		return 0, false, fmt.Errorf("prometheus query: value: %w", err)
	}
	v, err = strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus query: value %q: %w", s, err)
	}
	return v, true, nil
}
