package jsonhttp

import (
	"errors"
	"io"
	"net/http/httptest"
	"strings"
	"testing"
)

func TestDecode(t *testing.T) {
	type body struct {
		N int `json:"n"`
	}
	tests := []struct {
		name    string
		body    string
		want    body
		wantErr string
	}{
		{name: "ok", body: `{"n":3}`, want: body{N: 3}},
		{name: "unknown field", body: `{"m":1}`, wantErr: `json: unknown field "m"`},
		{name: "empty", body: ``, wantErr: io.EOF.Error()},
		{name: "over the limit", body: `{"n":1234567890}`, wantErr: "http: request body too large"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got body
			err := Decode(httptest.NewRecorder(), httptest.NewRequest("POST", "/", strings.NewReader(tt.body)), &got, 12)
			if tt.wantErr != "" {
				if err == nil || err.Error() != tt.wantErr {
					t.Fatalf("err %v, want %s", err, tt.wantErr)
				}
				return
			}
			if err != nil || got != tt.want {
				t.Fatalf("%+v, %v; want %+v", got, err, tt.want)
			}
		})
	}
}

func TestError(t *testing.T) {
	rec := httptest.NewRecorder()
	Error(rec, 400, errors.New(`n must be > 0, got "x"`))
	if rec.Code != 400 || rec.Header().Get("Content-Type") != "application/json" || rec.Body.String() != `{"error":"n must be \u003e 0, got \"x\""}`+"\n" {
		t.Fatalf("%d %v %q", rec.Code, rec.Header(), rec.Body)
	}
}
