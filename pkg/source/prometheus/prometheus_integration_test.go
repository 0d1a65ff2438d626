package prometheus

import (
	"context"
	"errors"
	"testing"
	"time"

	"go.uber.org/zap/zaptest"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

func sandboxSource(t *testing.T) *Source {
	t.Helper()
	env := sandboxenv.Load(t)
	s, err := New(Options{URL: env.Get(t, "PROMETHEUS_URL"), Timeout: 10 * time.Second}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestIntegrationQueryUp(t *testing.T) {
	s := sandboxSource(t)
	// The first scrape comes about 5 s after Prometheus starts.
	var got []source.Series
	deadline := time.Now().Add(30 * time.Second)
	for {
		var err error
		got, err = s.Query(context.Background(), "up", time.Now())
		if err != nil {
			t.Fatalf("Query(up): %v", err)
		}
		if len(got) > 0 || time.Now().After(deadline) {
			break
		}
		time.Sleep(500 * time.Millisecond)
	}
	if len(got) == 0 {
		t.Fatal("up: no series after 30s")
	}
	for _, ser := range got {
		if ser.Labels["__name__"] != "up" || ser.Labels["job"] == "" || ser.Labels["instance"] == "" {
			t.Errorf("series labels %v, want __name__=up with job and instance", ser.Labels)
		}
		if ser.Value != 0 && ser.Value != 1 {
			t.Errorf("up = %v", ser.Value)
		}
	}

	scalar, err := s.Query(context.Background(), "scalar(count(up)) / 2", time.Now())
	if err != nil || len(scalar) != 1 || scalar[0].Value != float64(len(got))/2 || len(scalar[0].Labels) != 0 {
		t.Errorf("scalar: %v, %v; want one unlabelled %v", scalar, err, float64(len(got))/2)
	}
	nan, err := s.Query(context.Background(), "vector(0) / 0", time.Now())
	if err != nil || len(nan) != 0 {
		t.Errorf("NaN: %v, %v; want no series", nan, err)
	}
	empty, err := s.Query(context.Background(), `up{job="no-such-job"}`, time.Now())
	if err != nil || len(empty) != 0 {
		t.Errorf("empty: %v, %v; want no series", empty, err)
	}
	for _, q := range []string{"sum(", "up[1m]", `"a string"`} {
		if _, err := s.Query(context.Background(), q, time.Now()); !errors.Is(err, source.ErrBadQuery) {
			t.Errorf("Query(%s) err = %v, want ErrBadQuery", q, err)
		}
	}
}

func TestIntegrationFractionalTimeout(t *testing.T) {
	env := sandboxenv.Load(t)
	// Prometheus rejects "1.5s" as a timeout parameter.
	s, err := New(Options{URL: env.Get(t, "PROMETHEUS_URL"), Timeout: 1500 * time.Millisecond}, zaptest.NewLogger(t))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.Query(context.Background(), "up", time.Now()); err != nil {
		t.Fatalf("Query with a 1.5s timeout: %v", err)
	}
}

func TestIntegrationQueryRangeChunked(t *testing.T) {
	s := sandboxSource(t)
	// 30 s at a 2 ms step is 15,001 points per series: two requests,
	// the first at Prometheus's 11,000 limit. up has a value at every
	// step (5 min lookback) once the target has been scraped for 30 s.
	end := time.Now().Truncate(time.Second)
	start := end.Add(-30 * time.Second)
	step := 2 * time.Millisecond
	got, err := s.QueryRange(context.Background(), "up", start, end, step)
	if err != nil {
		t.Fatalf("QueryRange: %v", err)
	}
	if len(got) == 0 {
		t.Fatal("got no series")
	}
	pts := got[0].Points
	const want = 15001
	if len(pts) != want {
		t.Logf("points %d, want %d (fewer if Prometheus is younger than 30 s)", len(pts), want)
		if len(pts) < 2 {
			t.Fatal("too few points")
		}
	}
	for i := 1; i < len(pts); i++ {
		if d := pts[i].Time.Sub(pts[i-1].Time); d != step {
			t.Fatalf("point %d at %s, %s after the previous one, want %s (gap or duplicate at a chunk edge)", i, pts[i].Time, d, step)
		}
	}
	if !pts[len(pts)-1].Time.Equal(end) {
		t.Errorf("last point at %s, want %s", pts[len(pts)-1].Time, end)
	}
}
