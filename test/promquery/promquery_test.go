package promquery

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"reflect"
	"testing"
	"time"
)

func TestInstant(t *testing.T) {
	at := time.Date(2026, 11, 25, 21, 30, 5, 250_000_000, time.UTC)
	tests := []struct {
		name      string
		at        time.Time
		answer    string
		wantQuery string
		want      []string
		wantErr   string
	}{
		{name: "now", answer: `{"status":"success","data":{"resultType":"vector","result":[{"value":[1,"0.2"]}]}}`,
			wantQuery: "query=up%7Bjob%3D%22sim%22%7D", want: []string{"0.2"}},
		{name: "at an instant", at: at, answer: `{"status":"success","data":{"result":[]}}`,
			wantQuery: "query=up%7Bjob%3D%22sim%22%7D&time=1795642205.250"},
		{name: "prometheus refuses", answer: `{"status":"error","error":"parse error"}`,
			wantQuery: "query=up%7Bjob%3D%22sim%22%7D", wantErr: `prometheus query "up{job=\"sim\"}": parse error`},
		{name: "not JSON", answer: `<html>`,
			wantQuery: "query=up%7Bjob%3D%22sim%22%7D", wantErr: `prometheus query "up{job=\"sim\"}": decode (HTTP 200): invalid character '<' looking for beginning of value`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var gotQuery string
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if r.URL.Path != "/api/v1/query" {
					t.Errorf("path %s", r.URL.Path)
				}
				gotQuery = r.URL.RawQuery
				_, _ = io.WriteString(w, tt.answer)
			}))
			defer srv.Close()
			var result []struct {
				Value [2]any `json:"value"`
			}
			err := Instant(context.Background(), srv.URL, `up{job="sim"}`, tt.at, &result)
			if gotQuery != tt.wantQuery {
				t.Errorf("query %q, want %q", gotQuery, tt.wantQuery)
			}
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			var got []string
			for _, r := range result {
				got = append(got, r.Value[1].(string))
			}
			if !reflect.DeepEqual(got, tt.want) {
				t.Errorf("values %v, want %v", got, tt.want)
			}
		})
	}
}
