package prometheus

import (
	"context"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/zap"
	"go.uber.org/zap/zaptest/observer"

	"github.com/rollguard/rollguard/pkg/source"
)

// answer serves a fixed status and body for every API call.
func answer(t *testing.T, status int, body string) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		fmt.Fprint(w, body)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func newSource(t *testing.T, url string, timeout time.Duration) *Source {
	t.Helper()
	s, err := New(Options{URL: url, Timeout: timeout}, zap.NewNop())
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return s
}

func TestQueryResults(t *testing.T) {
	const ts = 1700000000
	tests := []struct {
		name string
		data string
		want []source.Series
	}{
		{
			name: "vector keeps labels, drops NaN and Inf",
			data: `{"resultType":"vector","result":[
				{"metric":{"__name__":"up","job":"api","instance":"a"},"value":[1700000000,"1"]},
				{"metric":{"job":"api","instance":"b"},"value":[1700000000,"0.25"]},
				{"metric":{"instance":"c"},"value":[1700000000,"NaN"]},
				{"metric":{"instance":"d"},"value":[1700000000,"+Inf"]},
				{"metric":{"instance":"e"},"value":[1700000000,"-Inf"]}]}`,
			want: []source.Series{
				{Labels: map[string]string{"__name__": "up", "job": "api", "instance": "a"}, Value: 1},
				{Labels: map[string]string{"job": "api", "instance": "b"}, Value: 0.25},
			},
		},
		{
			name: "empty vector is an empty result, not an error",
			data: `{"resultType":"vector","result":[]}`,
			want: []source.Series{},
		},
		{
			name: "scalar has no labels",
			data: `{"resultType":"scalar","result":[1700000000,"0.05"]}`,
			want: []source.Series{{Labels: map[string]string{}, Value: 0.05}},
		},
		{
			name: "NaN scalar is no data",
			data: `{"resultType":"scalar","result":[1700000000,"NaN"]}`,
			want: []source.Series{},
		},
		{
			name: "vector of an empty label set",
			data: `{"resultType":"vector","result":[{"metric":{},"value":[1700000000,"0.07"]}]}`,
			want: []source.Series{{Labels: map[string]string{}, Value: 0.07}},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var gotQuery, gotTime, gotTimeout string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				gotQuery, gotTime, gotTimeout = r.FormValue("query"), r.FormValue("time"), r.FormValue("timeout")
				fmt.Fprintf(w, `{"status":"success","data":%s}`, tc.data)
			}))
			defer srv.Close()
			s := newSource(t, srv.URL, 3*time.Second)
			got, err := s.Query(context.Background(), "up", time.Unix(ts, 0))
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if !reflect.DeepEqual(got, tc.want) {
				t.Errorf("got %#v, want %#v", got, tc.want)
			}
			if gotQuery != "up" || gotTime != strconv.Itoa(ts) || gotTimeout != "3s" {
				t.Errorf("request query=%q time=%q timeout=%q, want up, %d, 3s", gotQuery, gotTime, gotTimeout, ts)
			}
		})
	}
}

func TestServerTimeoutParses(t *testing.T) {
	// Prometheus accepts only integer amounts per unit ("1m30s", "500ms").
	tests := []struct {
		timeout time.Duration
		want    string
	}{
		{10 * time.Second, "10s"},
		{1500 * time.Millisecond, "1s"},
		{90*time.Second + 250*time.Millisecond, "1m30s"},
		{300 * time.Millisecond, "300ms"},
		{300*time.Millisecond + 700*time.Microsecond, "300ms"},
		{500 * time.Microsecond, ""}, // rounds to 0: not sent
	}
	for _, tc := range tests {
		t.Run(tc.timeout.String(), func(t *testing.T) {
			got := make(chan string, 1)
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				got <- r.FormValue("timeout")
				fmt.Fprint(w, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
			}))
			defer srv.Close()
			// The client deadline stays the configured one; only a
			// sub-millisecond one would fire before the answer, so give
			// the server a generous one in that case.
			s := newSource(t, srv.URL, max(tc.timeout, time.Second))
			s.serverTimeout = serverTimeout(tc.timeout)
			if _, err := s.Query(context.Background(), "up", time.Time{}); err != nil {
				t.Fatalf("Query: %v", err)
			}
			if g := <-got; g != tc.want {
				t.Errorf("timeout parameter %q, want %q", g, tc.want)
			}
		})
	}
}

func TestQueryErrors(t *testing.T) {
	const q = `sum(rate(http_requests_total{status="500"}[1m]))`
	tests := []struct {
		name   string
		status int
		body   string
		want   error
		notIn  string // must not appear in the error text
	}{
		{"matrix result", 200, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{},"values":[[1700000000,"1"]]}]}}`, source.ErrBadQuery, ""},
		{"string result", 200, `{"status":"success","data":{"resultType":"string","result":[1700000000,"hello"]}}`, source.ErrBadQuery, ""},
		{"400 bad_data", 400, `{"status":"error","errorType":"bad_data","error":"1:6: parse error: unexpected end of input"}`, source.ErrBadQuery, ""},
		{"422 execution", 422, `{"status":"error","errorType":"execution","error":"found duplicate series for the match group"}`, source.ErrBadQuery, ""},
		{"503 query timeout", 503, `{"status":"error","errorType":"timeout","error":"query timed out in expression evaluation"}`, source.ErrTimeout, ""},
		{"503 canceled", 503, `{"status":"error","errorType":"canceled","error":"query was canceled"}`, source.ErrTimeout, ""},
		{"503 not ready", 503, `Service Unavailable`, source.ErrUnreachable, ""},
		{"502 from a proxy", 502, `<html>bad gateway</html>`, source.ErrUnreachable, "<html>"},
		{"404 wrong path", 404, `404 page not found`, source.ErrUnreachable, ""},
		{"200 not JSON", 200, `hello`, source.ErrUnreachable, ""},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			srv := answer(t, tc.status, tc.body)
			s := newSource(t, srv.URL, time.Second)
			got, err := s.Query(context.Background(), q, time.Time{})
			if !errors.Is(err, tc.want) {
				t.Fatalf("err = %v, want %v", err, tc.want)
			}
			if got != nil {
				t.Errorf("got series %v with an error", got)
			}
			if !strings.Contains(err.Error(), strconv.Quote(q)) {
				t.Errorf("error %q does not name the query", err)
			}
			if tc.notIn != "" && strings.Contains(err.Error(), tc.notIn) {
				t.Errorf("error %q contains %q", err, tc.notIn)
			}
			for _, other := range []error{source.ErrBadQuery, source.ErrTimeout, source.ErrUnreachable} {
				if other != tc.want && errors.Is(err, other) {
					t.Errorf("error %q also matches %v", err, other)
				}
			}
		})
	}
}

func TestQueryHangsPastTimeout(t *testing.T) {
	release := make(chan struct{})
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-release:
		}
	}))
	defer srv.Close()
	defer close(release)

	s := newSource(t, srv.URL, 50*time.Millisecond)
	start := time.Now()
	_, err := s.Query(context.Background(), "up", time.Time{})
	if !errors.Is(err, source.ErrTimeout) || !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err = %v, want ErrTimeout wrapping context.DeadlineExceeded", err)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Errorf("Query returned after %s, want about the 50ms timeout", d)
	}
}

func TestQueryCallerCancel(t *testing.T) {
	s := newSource(t, answer(t, 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`).URL, time.Second)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err := s.Query(ctx, "up", time.Time{})
	if !errors.Is(err, source.ErrTimeout) || !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want ErrTimeout wrapping context.Canceled", err)
	}
}

func TestQueryConnectionRefused(t *testing.T) {
	// A port that was just free: nothing listens there.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()

	s := newSource(t, "http://admin:s3cret-pass@"+addr, time.Second)
	_, err = s.Query(context.Background(), "up", time.Time{})
	if !errors.Is(err, source.ErrUnreachable) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
	if strings.Contains(err.Error(), "s3cret") {
		t.Errorf("error %q leaks the password", err)
	}
	if !strings.Contains(err.Error(), `"up"`) {
		t.Errorf("error %q does not name the query", err)
	}
}

func TestQueryDNSFailure(t *testing.T) {
	s := newSource(t, "http://prometheus.invalid:9090", 2*time.Second)
	_, err := s.Query(context.Background(), "up", time.Time{})
	// .invalid never resolves (RFC 6761); without a resolver the lookup may
	// also time out, which is the only other acceptable reading.
	if !errors.Is(err, source.ErrUnreachable) && !errors.Is(err, source.ErrTimeout) {
		t.Fatalf("err = %v, want ErrUnreachable", err)
	}
}

func TestNewRejectsBadURLWithoutEchoingIt(t *testing.T) {
	for _, u := range []string{"http://user:pa ss@host:9090/%zz", "ftp://user:secret@host", "no-scheme", ""} {
		_, err := New(Options{URL: u}, zap.NewNop())
		if err == nil {
			t.Errorf("New(%q): no error", u)
			continue
		}
		if strings.Contains(err.Error(), "pa ss") || strings.Contains(err.Error(), "secret") {
			t.Errorf("New(%q): error %q leaks the password", u, err)
		}
	}
	if _, err := New(Options{URL: "http://127.0.0.1:9090", Timeout: -time.Second}, zap.NewNop()); err == nil {
		t.Error("negative timeout accepted")
	}
}

func TestWarningsLoggedOncePerText(t *testing.T) {
	srv := answer(t, 200, `{"status":"success","warnings":["PromQL info: metric might not be a counter","second"],"data":{"resultType":"vector","result":[]}}`)
	core, logs := observer.New(zap.DebugLevel)
	s, err := New(Options{URL: srv.URL}, zap.New(core))
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if _, err := s.Query(context.Background(), "rate(x[1m])", time.Time{}); err != nil {
			t.Fatalf("Query: %v", err)
		}
	}
	got := logs.FilterMessage("prometheus query warning").All()
	if len(got) != 2 {
		t.Fatalf("got %d warning logs, want 2 (one per distinct text)", len(got))
	}
	for _, e := range got {
		if e.Level != zap.WarnLevel {
			t.Errorf("level %s, want warn", e.Level)
		}
		if e.ContextMap()["query"] != "rate(x[1m])" {
			t.Errorf("log fields %v lack the query", e.ContextMap())
		}
	}
}

func TestSplitRange(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	tests := []struct {
		name       string
		start, end time.Time
		step       time.Duration
		max        int
		want       [][2]time.Duration // offsets from t0
		wantErr    bool
	}{
		{name: "single point", start: t0, end: t0, step: time.Second, max: 11000, want: [][2]time.Duration{{0, 0}}},
		{name: "fits exactly 11000 points", start: t0, end: t0.Add(10999 * time.Second), step: time.Second, max: 11000,
			want: [][2]time.Duration{{0, 10999 * time.Second}}},
		{name: "11001 points need two chunks", start: t0, end: t0.Add(11000 * time.Second), step: time.Second, max: 11000,
			want: [][2]time.Duration{{0, 10999 * time.Second}, {11000 * time.Second, 11000 * time.Second}}},
		{name: "small max", start: t0, end: t0.Add(25 * time.Second), step: 5 * time.Second, max: 2,
			want: [][2]time.Duration{{0, 5 * time.Second}, {10 * time.Second, 15 * time.Second}, {20 * time.Second, 25 * time.Second}}},
		{name: "end off the step grid", start: t0, end: t0.Add(12 * time.Second), step: 5 * time.Second, max: 2,
			want: [][2]time.Duration{{0, 5 * time.Second}, {10 * time.Second, 12 * time.Second}}},
		{name: "zero step", start: t0, end: t0.Add(time.Minute), step: 0, max: 11000, wantErr: true},
		{name: "end before start", start: t0, end: t0.Add(-time.Second), step: time.Second, max: 11000, wantErr: true},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := splitRange(tc.start, tc.end, tc.step, tc.max)
			if tc.wantErr {
				if err == nil {
					t.Fatalf("no error, got %v", got)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var offs [][2]time.Duration
			for _, r := range got {
				if r.Step != tc.step {
					t.Errorf("step %s, want %s", r.Step, tc.step)
				}
				if n := int(r.End.Sub(r.Start)/r.Step) + 1; n > tc.max {
					t.Errorf("chunk %v asks %d points, max %d", r, n, tc.max)
				}
				offs = append(offs, [2]time.Duration{r.Start.Sub(t0), r.End.Sub(t0)})
			}
			if !reflect.DeepEqual(offs, tc.want) {
				t.Errorf("chunks %v, want %v", offs, tc.want)
			}
		})
	}
}

// rangeServer evaluates "t" (value = unix seconds) for two series at every
// requested step like Prometheus would, refusing more than 11,000 points.
// The value at a multiple of 7 s is NaN; overlap repeats the previous
// step's point at the start of each chunk, as a sloppy server might.
func rangeServer(t *testing.T, overlap bool, requests *atomic.Int32) *httptest.Server {
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		requests.Add(1)
		start, _ := strconv.ParseFloat(r.FormValue("start"), 64)
		end, _ := strconv.ParseFloat(r.FormValue("end"), 64)
		step, _ := strconv.ParseFloat(r.FormValue("step"), 64)
		if (end-start)/step > 11000 {
			w.WriteHeader(400)
			fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"exceeded maximum resolution of 11,000 points per timeseries. Try decreasing the query resolution (?step=XX)"}`)
			return
		}
		if overlap {
			start -= step
		}
		var vals []string
		for ts := start; ts <= end; ts += step {
			v := strconv.FormatFloat(ts, 'f', -1, 64)
			if math.Mod(ts, 7) == 0 {
				v = "NaN"
			}
			vals = append(vals, fmt.Sprintf(`[%s,"%s"]`, strconv.FormatFloat(ts, 'f', -1, 64), v))
		}
		joined := strings.Join(vals, ",")
		fmt.Fprintf(w, `{"status":"success","data":{"resultType":"matrix","result":[{"metric":{"pod":"b"},"values":[%s]},{"metric":{"pod":"a"},"values":[%s]}]}}`, joined, joined)
	}))
	t.Cleanup(srv.Close)
	return srv
}

func TestQueryRangeChunksAndMerges(t *testing.T) {
	start := time.Unix(1700000000, 0)
	const steps = 25000 // 25,001 points: three requests
	end := start.Add(steps * time.Second)
	for _, overlap := range []bool{false, true} {
		t.Run(fmt.Sprintf("overlap=%v", overlap), func(t *testing.T) {
			var requests atomic.Int32
			s := newSource(t, rangeServer(t, overlap, &requests).URL, 5*time.Second)
			got, err := s.QueryRange(context.Background(), "t", start, end, time.Second)
			if err != nil {
				t.Fatalf("QueryRange: %v", err)
			}
			if n := requests.Load(); n != 3 {
				t.Errorf("%d requests, want 3", n)
			}
			if len(got) != 2 || got[0].Labels["pod"] != "a" || got[1].Labels["pod"] != "b" {
				t.Fatalf("series %v, want pod=a then pod=b", labelsOf(got))
			}
			nan := 0
			for ts := start.Unix(); ts <= end.Unix(); ts++ {
				if ts%7 == 0 {
					nan++
				}
			}
			for _, r := range got {
				if want := steps + 1 - nan; len(r.Points) != want {
					t.Errorf("%v: %d points, want %d", r.Labels, len(r.Points), want)
				}
				if first := r.Points[0].Time; !first.Equal(start) && !(start.Unix()%7 == 0 && first.Equal(start.Add(time.Second))) {
					t.Errorf("first point at %s, want %s", first, start)
				}
				for i, p := range r.Points {
					if math.IsNaN(p.Value) {
						t.Fatalf("NaN point kept at %s", p.Time)
					}
					if p.Value != float64(p.Time.Unix()) {
						t.Fatalf("point %d: value %v at %s", i, p.Value, p.Time)
					}
					if i > 0 && !p.Time.After(r.Points[i-1].Time) {
						t.Fatalf("point %d at %s not after %s", i, p.Time, r.Points[i-1].Time)
					}
				}
			}
		})
	}
}

func TestQueryRangeErrors(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	t.Run("bad step", func(t *testing.T) {
		s := newSource(t, "http://127.0.0.1:1", time.Second)
		_, err := s.QueryRange(context.Background(), "up", t0, t0.Add(time.Minute), 0)
		if !errors.Is(err, source.ErrBadQuery) {
			t.Fatalf("err = %v, want ErrBadQuery", err)
		}
	})
	t.Run("vector result", func(t *testing.T) {
		srv := answer(t, 200, `{"status":"success","data":{"resultType":"vector","result":[]}}`)
		_, err := newSource(t, srv.URL, time.Second).QueryRange(context.Background(), "up", t0, t0.Add(time.Minute), time.Second)
		if !errors.Is(err, source.ErrBadQuery) {
			t.Fatalf("err = %v, want ErrBadQuery", err)
		}
	})
	t.Run("server error stops the chunks", func(t *testing.T) {
		srv := answer(t, 503, `{"status":"error","errorType":"timeout","error":"query timed out"}`)
		_, err := newSource(t, srv.URL, time.Second).QueryRange(context.Background(), "up", t0, t0.Add(time.Hour), time.Second)
		if !errors.Is(err, source.ErrTimeout) || !strings.Contains(err.Error(), `"up"`) {
			t.Fatalf("err = %v, want ErrTimeout naming the query", err)
		}
	})
}

func labelsOf(rs []source.Range) []map[string]string {
	out := make([]map[string]string, len(rs))
	for i, r := range rs {
		out[i] = r.Labels
	}
	return out
}
