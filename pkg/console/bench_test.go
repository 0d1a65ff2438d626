package console

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkOverview1000 renders the overview of 1,000 targets with four
// triggers each (every window full: 14 samples; 11 targets firing), the
// page a browser refreshes every 2 s: the targets needing attention in
// full, the calm ones one line each. docs/benchmarks.md quotes it.
func BenchmarkOverview1000(b *testing.B) { benchPage(b, "/") }

// BenchmarkOverviewAll1000 is every trigger of every target (?show=all).
func BenchmarkOverviewAll1000(b *testing.B) { benchPage(b, "/?show=all") }

func benchPage(b *testing.B, path string) {
	c := newTestConsole(manyTargets(1000), "s3cret")
	req := httptest.NewRequest(http.MethodGet, path, nil)
	var size int
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			b.Fatalf("status %d", rec.Code)
		}
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size)/1024, "KiB/page")
}

// BenchmarkAttention1000 is the same fleet filtered to the targets that
// need attention.
func BenchmarkAttention1000(b *testing.B) { benchPage(b, "/?show=attention") }
