package prometheus

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/source"
)

// vectorBody is a success answer with n series labelled like the scale
// bench's grouped queries: 2,500 targets per namespace.
func vectorBody(n int) string {
	var b strings.Builder
	b.WriteString(`{"status":"success","data":{"resultType":"vector","result":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"metric":{"namespace":"bench-%d","deployment":"svc-%05d"},"value":[1700000000.123,"%g"]}`, i/2500, i, float64(i)/1000)
	}
	b.WriteString(`]}}`)
	return b.String()
}

// legacyQuery is the pre-issue-8 instant query path (client_golang's
// decode into model.Vector, then a copy of each label set), kept to compare
// against in BenchmarkQueryDecode and TestQueryMatchesClientGolang.
func legacyQuery(ctx context.Context, s *Source, query string, ts time.Time) ([]source.Series, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	val, _, err := s.api.Query(ctx, query, ts, v1.WithTimeout(s.serverTimeout))
	if err != nil {
		return nil, classify("prometheus query", query, err)
	}
	v, ok := val.(model.Vector)
	if !ok {
		return nil, fmt.Errorf("not a vector: %s", typeName(val))
	}
	out := make([]source.Series, 0, len(v))
	for _, smp := range v {
		if smp.Histogram != nil || !finite(float64(smp.Value)) {
			continue
		}
		out = append(out, source.Series{Labels: labels(smp.Metric), Value: float64(smp.Value)})
	}
	return out, nil
}

func BenchmarkQueryDecode(b *testing.B) {
	const n = 10000
	body := vectorBody(n)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		fmt.Fprint(w, body)
	}))
	defer srv.Close()
	s, err := New(Options{URL: srv.URL, Timeout: 10 * time.Second}, nil)
	if err != nil {
		b.Fatal(err)
	}
	for _, bc := range []struct {
		name string
		run  func(context.Context, string, time.Time) ([]source.Series, error)
	}{
		{"client_golang", func(ctx context.Context, q string, ts time.Time) ([]source.Series, error) {
			return legacyQuery(ctx, s, q, ts)
		}},
		{"direct", s.Query},
	} {
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				got, err := bc.run(context.Background(), "up", time.Time{})
				if err != nil {
					b.Fatal(err)
				}
				if len(got) != n {
					b.Fatalf("%d series, want %d", len(got), n)
				}
			}
		})
	}
}
