package backtest

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"
)

func TestPrometheusRetention(t *testing.T) {
	tests := []struct {
		name    string
		status  int
		body    string
		want    time.Duration
		wantErr string
	}{
		{"1d", 200, `{"status":"success","data":{"storage.tsdb.retention.time":"1d"}}`, 24 * time.Hour, ""},
		{"15d", 200, `{"status":"success","data":{"storage.tsdb.retention.time":"15d","storage.tsdb.retention":"0s"}}`, 15 * 24 * time.Hour, ""},
		{"zero", 200, `{"status":"success","data":{"storage.tsdb.retention.time":"0s"}}`, 0, `retention "0s" is not a positive duration`},
		{"missing", 200, `{"status":"success","data":{}}`, 0, "no storage.tsdb.retention.time"},
		{"status", 503, ``, 0, "status 503 Service Unavailable"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v1/status/flags" {
					http.NotFound(w, r)
					return
				}
				w.WriteHeader(tc.status)
				_, _ = w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			got, err := PrometheusRetention(context.Background(), srv.Client(), srv.URL+"/")
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error: got %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

// The lookup runs when the configuration names a Prometheus and Retention
// is 0; a server that cannot tell does not block the backtest.
func TestBacktestAsksRetention(t *testing.T) {
	body := `{"status":"success","data":{"storage.tsdb.retention.time":"1h"}}`
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte(body)) }))
	defer srv.Close()

	o := baseOptions(t)
	o.Config.Global.Prometheus.URL = srv.URL
	o.Retention = 0
	o.Now = func() time.Time { return at(2 * 3600) }
	if _, err := Backtest(context.Background(), o); !errors.Is(err, ErrUsage) || !strings.Contains(err.Error(), "older than Prometheus's retention of 1h") {
		t.Fatalf("error: %v", err)
	}
	o.Now = func() time.Time { return at(n) }
	if _, err := Backtest(context.Background(), o); err != nil {
		t.Fatalf("inside retention: %v", err)
	}
	body = `{"status":"success","data":{}}`
	o.Now = func() time.Time { return at(2 * 3600) }
	if _, err := Backtest(context.Background(), o); err != nil {
		t.Fatalf("unknown retention must not block: %v", err)
	}
}
