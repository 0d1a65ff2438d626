package prometheus

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/source"
)

// TestQueryMatchesClientGolang checks the hand-written decoder against
// client_golang's reading of the same vector bodies.
func TestQueryMatchesClientGolang(t *testing.T) {
	bodies := map[string]string{
		"bench shape": vectorBody(3000),
		"escapes and unicode": `{"status":"success","data":{"resultType":"vector","result":[
			{"metric":{"a\"b":"x\\y","n\u00e9":"caf\u00e9 \ud83d\ude00","path":"/a/b"},"value":[1700000000.5,"1e+06"]},
			{"metric":{"a\"b":"x\\y","path":"é"},"value":[1700000000.5,"-0.5"]}]}}`,
		"whitespace, field order, extra fields": "{ \"data\" : { \"result\" : [ { \"value\" : [ 1700000000 , \"2\" ] ,\n\t\"extra\" : {\"x\":[1,{\"y\":\"}\"}]}, \"metric\" : { \"job\" : \"api\" } } ] , \"resultType\" : \"vector\" } , \"status\" : \"success\" }",
		"null and empty metric":                 `{"status":"success","data":{"resultType":"vector","result":[{"metric":null,"value":[1,"3"]},{"metric":{},"value":[1,"4"]},{"value":[1,"5"]}]}}`,
		"native histogram dropped":              `{"status":"success","data":{"resultType":"vector","result":[{"metric":{"job":"a"},"histogram":[1,{"count":"1","sum":"2","buckets":[[0,"0","1","1"]]}]},{"metric":{"job":"b"},"value":[1,"7"]}]}}`,
		"many values of one name": func() string {
			s := `{"status":"success","data":{"resultType":"vector","result":[`
			for i := range 200 {
				if i > 0 {
					s += ","
				}
				s += fmt.Sprintf(`{"metric":{"pod":"p-%d","ns":"n-%d"},"value":[1,"%d"]}`, i, i%3, i)
			}
			return s + `]}}`
		}(),
	}
	for name, body := range bodies {
		t.Run(name, func(t *testing.T) {
			srv := answer(t, 200, body)
			s := newSource(t, srv.URL, time.Second)
			want, err := legacyQuery(context.Background(), s, "up", time.Time{})
			if err != nil {
				t.Fatalf("client_golang: %v", err)
			}
			got, err := s.Query(context.Background(), "up", time.Time{})
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if len(want) == 0 || !reflect.DeepEqual(got, want) {
				t.Errorf("got %v\nwant %v", got, want)
			}
		})
	}
}

func TestQueryMalformedSamples(t *testing.T) {
	for name, data := range map[string]string{
		"unquoted value":      `{"resultType":"vector","result":[{"metric":{},"value":[1,2]}]}`,
		"not a number":        `{"resultType":"vector","result":[{"metric":{},"value":[1,"abc"]}]}`,
		"metric not object":   `{"resultType":"vector","result":[{"metric":[],"value":[1,"1"]}]}`,
		"label value number":  `{"resultType":"vector","result":[{"metric":{"a":1},"value":[1,"1"]}]}`,
		"scalar not a number": `{"resultType":"scalar","result":[1,"x"]}`,
		"no data":             ``,
	} {
		t.Run(name, func(t *testing.T) {
			body := `{"status":"success"}`
			if data != "" {
				body = `{"status":"success","data":` + data + `}`
			}
			_, err := newSource(t, answer(t, 200, body).URL, time.Second).Query(context.Background(), "up", time.Time{})
			if !errors.Is(err, source.ErrUnreachable) {
				t.Fatalf("err = %v, want ErrUnreachable", err)
			}
		})
	}
}

// TestQueryGetFallback: like client_golang, a server that refuses POST
// (405, or 501 from some proxies) is asked again with GET.
func TestQueryGetFallback(t *testing.T) {
	for _, refuse := range []int{http.StatusMethodNotAllowed, http.StatusNotImplemented} {
		t.Run(http.StatusText(refuse), func(t *testing.T) {
			var methods []string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				methods = append(methods, r.Method)
				if r.Method != http.MethodGet {
					w.WriteHeader(refuse)
					return
				}
				if r.URL.Path != "/prom/api/v1/query" || r.URL.Query().Get("query") != "up" || r.URL.Query().Get("timeout") != "2s" {
					w.WriteHeader(http.StatusBadRequest)
					fmt.Fprint(w, `{"status":"error","errorType":"bad_data","error":"wrong request"}`)
					return
				}
				fmt.Fprint(w, `{"status":"success","data":{"resultType":"scalar","result":[1,"9"]}}`)
			}))
			defer srv.Close()
			got, err := newSource(t, srv.URL+"/prom/", 2*time.Second).Query(context.Background(), "up", time.Time{})
			if err != nil {
				t.Fatalf("Query: %v", err)
			}
			if want := []source.Series{{Labels: map[string]string{}, Value: 9}}; !reflect.DeepEqual(got, want) {
				t.Errorf("got %v, want %v", got, want)
			}
			if !reflect.DeepEqual(methods, []string{"POST", "GET"}) {
				t.Errorf("methods %v, want POST then GET", methods)
			}
		})
	}
}
