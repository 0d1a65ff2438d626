package app

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/source/prometheus"
)

func verifierFor(t *testing.T, promURL string) *verifier {
	t.Helper()
	cfg, err := config.Load([]byte(`global:
  prometheus: {url: "` + promURL + `", timeout: 100ms}
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers:
      - {name: errors, kind: errorRate, above: 0.05, minRate: 1}
      - {name: p99, kind: latencyP99, above: 5}
`))
	if err != nil {
		t.Fatal(err)
	}
	src, err := prometheus.New(prometheus.Options{URL: promURL, Timeout: 100 * time.Millisecond}, zap.NewNop())
	if err != nil {
		t.Fatal(err)
	}
	return &verifier{d: &daemon{cfg: cfg, src: &sources{prom: src}}}
}

// A stalled Prometheus gives no data, and no data is never "under
// threshold": each trigger reads nodata, with why.
func TestVerifierWithoutDataSaysNoData(t *testing.T) {
	release := make(chan struct{})
	stalled := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer stalled.Close()
	defer close(release)
	v := verifierFor(t, stalled.URL)
	got := v.Verify(context.Background(), "prod", "api", time.Now())
	if len(got) != 2 {
		t.Fatalf("signals %+v, want one per trigger", got)
	}
	for _, s := range got {
		if s.State != rollback.SignalNoData || !strings.Contains(s.Detail, "timed out") {
			t.Errorf("%s: %s %q, want nodata with the timeout", s.Trigger, s.State, s.Detail)
		}
	}
}

// Each trigger is classified as the evaluator would: a breach, a value
// under its threshold, or low volume (below minRate) when the ratio has no
// traffic to go by; and the lookback is the templates' range, 1m.
func TestVerifierReadsEachTrigger(t *testing.T) {
	for _, tc := range []struct {
		name          string
		ratio, volume string // JSON values; "" for no series
		p99           string
		want          []string
	}{
		{name: "healthy", ratio: "0.001", volume: "20", p99: "0.05",
			want: []string{"errors ok = 0.001 (above 0.05)", "p99 ok = 0.05 (above 5)"}},
		{name: "still breaching", ratio: "0.2", volume: "20", p99: "8",
			want: []string{"errors breach = 0.2 (above 0.05)", "p99 breach = 8 (above 5)"}},
		{name: "quiet: 0/0 is no ratio, but the volume says why", ratio: "", volume: "0", p99: "",
			want: []string{"errors lowvolume 0 requests/s < minRate 1", "p99 nodata prometheus query \"histogram_quantile(0.99, sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[1m])))\" match map[deployment:api namespace:prod]: no data"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			prom := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_ = r.ParseForm()
				q := r.Form.Get("query")
				val := tc.p99
				switch {
				case strings.HasPrefix(q, "(sum"):
					val = tc.ratio
				case strings.HasPrefix(q, "sum by"):
					val = tc.volume
				}
				res := "[]"
				if val != "" {
					res = fmt.Sprintf(`[{"metric":{"namespace":"prod","deployment":"api"},"value":[1700000000,%q]}]`, val)
				}
				w.Header().Set("Content-Type", "application/json")
				fmt.Fprintf(w, `{"status":"success","data":{"resultType":"vector","result":%s}}`, res)
			}))
			defer prom.Close()
			v := verifierFor(t, prom.URL)
			var got []string
			for _, s := range v.Verify(context.Background(), "prod", "api", time.Now()) {
				got = append(got, fmt.Sprintf("%s %s %s", s.Trigger, s.State, s.Detail))
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("signals:\n got %q\nwant %q", got, tc.want)
			}
			if lb := v.Lookback("prod", "api"); lb != time.Minute {
				t.Errorf("lookback %s, want 1m", lb)
			}
		})
	}
}
