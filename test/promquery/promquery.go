// Package promquery asks Prometheus' instant-query API, for the sandbox's
// tests and tools: the request, Prometheus' own error, and the result
// decoded into the caller's type (a vector's or a matrix's series).
package promquery

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"time"
)

// Instant runs query against the Prometheus at base, evaluated at the
// instant at (now when at is zero), and decodes data.result into result.
func Instant(ctx context.Context, base, query string, at time.Time, result any) error {
	u := base + "/api/v1/query?query=" + url.QueryEscape(query)
	if !at.IsZero() {
		u += "&time=" + strconv.FormatFloat(float64(at.UnixMilli())/1000, 'f', 3, 64)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return fmt.Errorf("prometheus query %q: %w", query, err)
	}
	// The timeout bounds a query that the caller's context does not.
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return fmt.Errorf("prometheus query %q: %w", query, err)
	}
	defer resp.Body.Close()
	var body struct {
		Status string `json:"status"`
		Error  string `json:"error"`
		Data   struct {
			Result json.RawMessage `json:"result"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&body); err != nil {
		return fmt.Errorf("prometheus query %q: decode (HTTP %d): %w", query, resp.StatusCode, err)
	}
	if body.Status != "success" {
		return fmt.Errorf("prometheus query %q: %s", query, body.Error)
	}
	if err := json.Unmarshal(body.Data.Result, result); err != nil {
		return fmt.Errorf("prometheus query %q: decode the result: %w", query, err)
	}
	return nil
}
