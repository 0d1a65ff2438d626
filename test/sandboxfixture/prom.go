package sandboxfixture

import (
	"context"
	"encoding/json"
	"fmt"
	"strconv"
	"time"

	"github.com/rollguard/rollguard/test/promquery"
)

// PromValue runs an instant query against the Prometheus at base and
// returns its single sample; ok is false when the result is empty, and more
// than one series is an error because the caller asked about one thing.
func PromValue(ctx context.Context, base, query string) (v float64, ok bool, err error) {
	return PromValueAt(ctx, base, query, time.Time{})
}

// PromValueAt is PromValue evaluated at the instant at.
func PromValueAt(ctx context.Context, base, query string, at time.Time) (v float64, ok bool, err error) {
	var result []struct {
		Value [2]json.RawMessage `json:"value"`
	}
	if err := promquery.Instant(ctx, base, query, at, &result); err != nil {
		return 0, false, err
	}
	switch len(result) {
	case 0:
		return 0, false, nil
	case 1:
	default:
		return 0, false, fmt.Errorf("prometheus query %q: %d series, want 1", query, len(result))
	}
	var s string
	if err := json.Unmarshal(result[0].Value[1], &s); err != nil {
		return 0, false, fmt.Errorf("prometheus query %q: value: %w", query, err)
	}
	v, err = strconv.ParseFloat(s, 64)
	if err != nil {
		return 0, false, fmt.Errorf("prometheus query %q: value %q: %w", query, s, err)
	}
	return v, true, nil
}
