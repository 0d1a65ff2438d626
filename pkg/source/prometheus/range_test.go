package prometheus

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/source"
)

// legacyRange is the range path through client_golang (the chunked
// QueryRange), for one chunk.
func legacyRange(ctx context.Context, s *Source, q string, start, end time.Time, step time.Duration) ([]source.Range, error) {
	chunks, err := splitRange(start, end, step, maxPointsPerSeries)
	if err != nil {
		return nil, err
	}
	m := newMerger(start, end)
	for _, r := range chunks {
		v, err := s.queryRangeChunk(ctx, q, r)
		if err != nil {
			return nil, err
		}
		mat, ok := v.(model.Matrix)
		if !ok {
			return nil, fmt.Errorf("result %T", v)
		}
		m.add(mat)
	}
	return m.result(), nil
}

// matrixBody is a range answer of n series × k points from 1700000000.
func matrixBody(n, k int) string {
	var b strings.Builder
	b.WriteString(`{"status":"success","data":{"resultType":"matrix","result":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"metric":{"namespace":"ns-%d","deployment":"app-%d"},"values":[`, i%50, i)
		for j := range k {
			if j > 0 {
				b.WriteByte(',')
			}
			fmt.Fprintf(&b, `[%d,"%g"]`, 1700000000+j, float64(i)/1000+float64(j))
		}
		b.WriteString(`]}`)
	}
	b.WriteString(`]}}`)
	return b.String()
}

// TestQueryRangeOnceMatchesClientGolang: the hand-written matrix decoder
// of a one-request range gives what client_golang's decoding and the merge
// give for the same bodies.
func TestQueryRangeOnceMatchesClientGolang(t *testing.T) {
	start := time.Unix(1700000000, 0)
	end := start.Add(4 * time.Second)
	bodies := map[string]string{
		"bench shape": matrixBody(300, 5),
		"escapes, NaN, out of range, unsorted, empty": `{"status":"success","data":{"resultType":"matrix","result":[
			{"metric":{"pod":"b","a\"b":"x\\y"},"values":[[1699999999,"1"],[1700000000,"NaN"],[1700000001.5,"2"],[1700000004,"+Inf"],[1700000005,"3"]]},
			{"metric":{"pod":"a","n\u00e9":"caf\u00e9"},"values":[[1700000000,"1e+06"],[1700000003.25,"-0.5"]]},
			{"metric":{},"values":[[1700000002,"7"]]},
			{"metric":{"pod":"c"},"values":[[1700000001,"NaN"]]},
			{"metric":{"pod":"d"},"values":[]}]}}`,
		"whitespace and field order": "{ \"data\" : { \"result\" : [ { \"values\" : [ [ 1700000001 , \"2\" ] ] , \"metric\" : { \"job\" : \"api\" } } ] , \"resultType\" : \"matrix\" } , \"status\" : \"success\" }",
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			var path string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				path = r.URL.Path
				fmt.Fprint(w, body)
			}))
			t.Cleanup(srv.Close)
			s := newSource(t, srv.URL, time.Second)
			want, err := legacyRange(context.Background(), s, "up", start, end, time.Second)
			if err != nil {
				t.Fatalf("client_golang: %v", err)
			}
			got, err := s.QueryRange(context.Background(), "up", start, end, time.Second)
			if err != nil {
				t.Fatalf("QueryRange: %v", err)
			}
			if path != "/api/v1/query_range" {
				t.Errorf("asked %s, want /api/v1/query_range", path)
			}
			if len(want) == 0 || !reflect.DeepEqual(norm(got), norm(want)) {
				t.Errorf("got  %v\nwant %v", got, want)
			}
		})
	}
}

// norm makes points comparable: client_golang's times carry the local zone.
func norm(rs []source.Range) []source.Range {
	out := make([]source.Range, len(rs))
	for i, r := range rs {
		out[i] = source.Range{Labels: r.Labels}
		for _, p := range r.Points {
			out[i].Points = append(out[i].Points, source.Point{Time: p.Time.UTC(), Value: p.Value})
		}
	}
	return out
}

func BenchmarkQueryRangeDecode(b *testing.B) {
	body := matrixBody(10000, 5)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, body) }))
	b.Cleanup(srv.Close)
	s, err := New(Options{URL: srv.URL, Timeout: 10 * time.Second}, nil)
	if err != nil {
		b.Fatal(err)
	}
	start := time.Unix(1700000000, 0)
	for _, path := range []string{"client_golang", "direct"} {
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				var err error
				if path == "direct" {
					_, err = s.QueryRange(context.Background(), "up", start, start.Add(4*time.Second), time.Second)
				} else {
					_, err = legacyRange(context.Background(), s, "up", start, start.Add(4*time.Second), time.Second)
				}
				if err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
