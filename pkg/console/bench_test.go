package console

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// BenchmarkOverview1000 renders the overview of 1,000 targets with four
// triggers each (every window full: 14 samples), the page a browser
// refreshes every 2 s. docs/benchmarks.md quotes it.
func BenchmarkOverview1000(b *testing.B) {
	c := newTestConsole(manyTargets(1000), "s3cret")
	req := httptest.NewRequest(http.MethodGet, "/", nil)
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
// need attention, the page to keep open on a large fleet.
func BenchmarkAttention1000(b *testing.B) {
	c := newTestConsole(manyTargets(1000), "s3cret")
	req := httptest.NewRequest(http.MethodGet, "/?show=attention", nil)
	var size int
	b.ReportAllocs()
	for b.Loop() {
		rec := httptest.NewRecorder()
		c.ServeHTTP(rec, req)
		size = rec.Body.Len()
	}
	b.ReportMetric(float64(size)/1024, "KiB/page")
}
