package promql

import (
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	for _, tc := range []struct {
		name     string
		query    string
		typ      string
		lookback time.Duration
		pinned   bool
	}{
		{name: "instant selector", query: `up`, typ: "vector"},
		{name: "scalar", query: `1 + 1`, typ: "scalar"},
		{name: "range vector", query: `up[5m]`, typ: "matrix", lookback: 5 * time.Minute},
		{name: "rate", query: `rate(http_requests_total[1m])`, typ: "vector", lookback: time.Minute},
		{name: "longest of two", query: `rate(a[30s]) / rate(b[2m])`, typ: "vector", lookback: 2 * time.Minute},
		{name: "offset adds", query: `rate(a[1m] offset 5m)`, typ: "vector", lookback: 6 * time.Minute},
		{name: "offset on an instant selector", query: `a offset 90s`, typ: "vector", lookback: 90 * time.Second},
		{name: "subquery adds its inner range", query: `max_over_time(rate(a[1m])[10m:30s])`, typ: "vector", lookback: 11 * time.Minute},
		{name: "subquery offset", query: `max_over_time(rate(a[1m])[10m:30s] offset 1m)`, typ: "vector", lookback: 12 * time.Minute},
		{name: "at pins", query: `rate(a[1m] @ 1700000000)`, typ: "vector", lookback: time.Minute, pinned: true},
		{name: "at start pins", query: `a @ start()`, typ: "vector", pinned: true},
		{name: "production error rate", typ: "vector", lookback: time.Minute,
			query: `(sum by (namespace, deployment) (rate(http_requests_total{status=~"5.."}[1m])) or 0 * sum by (namespace, deployment) (rate(http_requests_total[1m]))) / sum by (namespace, deployment) (rate(http_requests_total[1m]))`},
		{name: "production p99", typ: "vector", lookback: time.Minute,
			query: `histogram_quantile(0.99, sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[1m])))`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			q, err := Parse(tc.query)
			if err != nil {
				t.Fatalf("Parse: %v", err)
			}
			if q.Type != tc.typ || q.Lookback != tc.lookback || q.Pinned != tc.pinned {
				t.Errorf("Parse = %+v, want type %s lookback %s pinned %v", q, tc.typ, tc.lookback, tc.pinned)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	for _, tc := range []struct {
		name, query, want string
	}{
		{name: "unclosed", query: `sum(rate(x[1m]`, want: "PromQL parse error at column 15: unclosed left parenthesis"},
		{name: "bad duration", query: `rate(x[1x])`, want: `PromQL parse error at column 8: bad number or duration syntax: "1"`},
		{name: "unknown function", query: `rat(x[1m])`, want: `PromQL parse error at column 1: unknown function with name "rat"`},
		{name: "second line", query: "sum(\n  rate(x[1m]) +)", want: "PromQL parse error at line 2, column 16: unexpected \")\" in aggregation"},
		{name: "empty", query: ``, want: "PromQL parse error at column 1: no expression found in input"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse(tc.query)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("Parse(%q) error = %v, want %q", tc.query, err, tc.want)
			}
		})
	}
}
