package prometheus

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	v1 "github.com/prometheus/client_golang/api/prometheus/v1"

	"github.com/rollguard/rollguard/pkg/source"
)

const (
	// maxErrorDetail bounds how much of a non-API error body is kept: it
	// is only read to tell Prometheus's 503 timeout answer from a proxy's
	// page, and is never put in an error text.
	maxErrorDetail = 4 << 10

	// maxPooledBody is the largest body buffer kept for the next query; a
	// rare huge answer should not pin its memory for good.
	maxPooledBody = 64 << 20
)

// instantResponse is the /api/v1/query envelope. Only what Query needs is
// decoded; unknown fields (stats, infos) are skipped.
type instantResponse struct {
	Status    string       `json:"status"`
	ErrorType v1.ErrorType `json:"errorType"`
	Error     string       `json:"error"`
	Warnings  []string     `json:"warnings"`
	Data      *instantData `json:"data"`
}

type instantData struct {
	ResultType string        `json:"resultType"`
	Result     instantResult `json:"result"`
}

// instantResult holds either a vector or a scalar. Its shape is told apart
// by the JSON itself, because "result" may precede "resultType".
type instantResult struct {
	vector []vectorSample
	// scalar is the raw [ts, "value"] pair of a scalar or string result;
	// it is parsed once resultType says it is a number.
	scalar []byte
	// scalarValue is scalar parsed, set by decodeInstant.
	scalarValue sampleValue
}

// vectorSample decodes one vector element. Metric is handed to the Series
// as is: it is the only labels map the sample ever gets.
type vectorSample struct {
	Metric map[string]string `json:"metric"`
	Value  sampleValue       `json:"value"`
	// Values are a matrix element's finite points (a range query).
	Values []source.Point
	matrix bool
	key    string // labelKey of Metric, for a matrix element
}

// sampleValue is a [ts, "value"] pair parsed without the intermediate
// values encoding/json would allocate for a two-element mixed array.
type sampleValue struct {
	v   float64
	set bool
}

func (r *instantResult) UnmarshalJSON(b []byte) error {
	b = bytes.TrimSpace(b)
	if bytes.Equal(b, []byte("null")) {
		return nil
	}
	if len(b) > 0 && b[0] == '[' {
		// A vector (and a matrix, rejected later by its resultType) is
		// an array of objects; a scalar or a string is [ts, "value"].
		if rest := bytes.TrimSpace(b[1:]); len(rest) > 0 && (rest[0] == '{' || rest[0] == ']') {
			v, err := parseVector(b)
			if err != nil {
				return err
			}
			r.vector = v
			return nil
		}
	}
	r.scalar = append(r.scalar[:0], b...)
	return nil
}

func (p *sampleValue) UnmarshalJSON(b []byte) error {
	v, err := parsePair(b)
	if err != nil {
		return err
	}
	p.v, p.set = v, true
	return nil
}

// parsePair reads the value of a [ts, "value"] pair. Prometheus writes the
// value as a plain quoted float ("1", "0.25", "NaN", "+Inf"), never with
// escapes.
func parsePair(b []byte) (float64, error) {
	b = bytes.TrimSpace(b)
	if len(b) < 2 || b[0] != '[' || b[len(b)-1] != ']' {
		return 0, errors.New("sample: want a [timestamp, \"value\"] pair")
	}
	b = b[1 : len(b)-1]
	c := bytes.IndexByte(b, ',')
	if c < 0 {
		return 0, errors.New("sample: want a [timestamp, \"value\"] pair")
	}
	v := bytes.TrimSpace(b[c+1:])
	if len(v) < 2 || v[0] != '"' || v[len(v)-1] != '"' || bytes.IndexByte(v[1:len(v)-1], '\\') >= 0 || bytes.IndexByte(v[1:len(v)-1], '"') >= 0 {
		return 0, errors.New("sample: value is not a quoted number")
	}
	f, err := strconv.ParseFloat(string(v[1:len(v)-1]), 64)
	if err != nil {
		return 0, fmt.Errorf("sample value: %w", err)
	}
	return f, nil
}

// instant sends an instant query the way client_golang does (POST form,
// falling back to GET on 405 or 501) and decodes the answer. A non-nil
// error is what client_golang would have returned for the same answer: a
// transport error, a context error, or a *v1.Error. Warnings are returned
// with the error too, as client_golang does.
func (s *Source) instant(ctx context.Context, query string, ts time.Time) (instantResponse, error) {
	form := url.Values{}
	if s.serverTimeout > 0 {
		form.Set("timeout", s.serverTimeout.String())
	}
	form.Set("query", query)
	if !ts.IsZero() {
		form.Set("time", formatTime(ts))
	}
	return s.request(ctx, s.queryURL, form.Encode())
}

// rangeRequest sends a query_range the way client_golang does and decodes
// the answer like instant does.
func (s *Source) rangeRequest(ctx context.Context, query string, start, end time.Time, step time.Duration) (instantResponse, error) {
	form := url.Values{}
	if s.serverTimeout > 0 {
		form.Set("timeout", s.serverTimeout.String())
	}
	form.Set("query", query)
	form.Set("start", formatTime(start))
	form.Set("end", formatTime(end))
	form.Set("step", strconv.FormatFloat(step.Seconds(), 'f', -1, 64))
	return s.request(ctx, s.rangeURL, form.Encode())
}

// request POSTs args to an API endpoint (falling back to GET on 405 or
// 501) and decodes the answer.
func (s *Source) request(ctx context.Context, endpoint, args string) (instantResponse, error) {

	buf := s.bodies.Get().(*bytes.Buffer)
	defer func() {
		if buf.Cap() <= maxPooledBody {
			s.bodies.Put(buf)
		}
	}()

	code, err := s.send(ctx, endpoint, http.MethodPost, args, buf)
	if err == nil && (code == http.StatusMethodNotAllowed || code == http.StatusNotImplemented) {
		code, err = s.send(ctx, endpoint, http.MethodGet, args, buf)
	}
	if err != nil {
		return instantResponse{}, err
	}
	return decodeInstant(code, buf.Bytes())
}

// send does one request and reads the whole body into buf.
func (s *Source) send(ctx context.Context, endpoint, method, args string, buf *bytes.Buffer) (int, error) {
	var (
		req *http.Request
		err error
	)
	if method == http.MethodGet {
		req, err = http.NewRequestWithContext(ctx, method, endpoint+"?"+args, nil)
	} else {
		req, err = http.NewRequestWithContext(ctx, method, endpoint, strings.NewReader(args))
	}
	if err != nil {
		// The URL was checked in New; do not echo it (credentials).
		return 0, errors.New("cannot build the request")
	}
	if method == http.MethodPost {
		req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
		// Lets the transport retry the POST on a stale keep-alive
		// connection, as for a GET, without sending the header.
		req.Header["Idempotency-Key"] = nil
	}
	resp, err := s.client.Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	buf.Reset()
	if _, err := buf.ReadFrom(resp.Body); err != nil {
		// A deadline during the body read surfaces as a transport error;
		// report the context's own error so it is classified a timeout.
		if cerr := ctx.Err(); cerr != nil {
			return 0, cerr
		}
		return 0, err
	}
	return resp.StatusCode, nil
}

// decodeInstant mirrors client_golang's reading of an answer: only 2xx,
// 400 and 422 bodies are API JSON; any other status is a server_error or
// client_error carrying the raw body as Detail (never printed by Error()).
func decodeInstant(code int, body []byte) (instantResponse, error) {
	apiErrorCode := code == http.StatusBadRequest || code == http.StatusUnprocessableEntity
	if code/100 != 2 && !apiErrorCode {
		typ, msg := v1.ErrBadResponse, fmt.Sprintf("bad response code %d", code)
		switch code / 100 {
		case 4:
			typ, msg = v1.ErrClient, fmt.Sprintf("client error: %d", code)
		case 5:
			typ, msg = v1.ErrServer, fmt.Sprintf("server error: %d", code)
		}
		return instantResponse{}, &v1.Error{Type: typ, Msg: msg, Detail: string(body[:min(len(body), maxErrorDetail)])}
	}
	var res instantResponse
	if code == http.StatusNoContent {
		return res, &v1.Error{Type: v1.ErrBadResponse, Msg: "no content"}
	}
	if err := json.Unmarshal(body, &res); err != nil {
		// Detail (never printed) keeps the start of the body so classify
		// can tell what answered, e.g. a TLS server spoken to in plain HTTP.
		return instantResponse{Warnings: res.Warnings}, &v1.Error{Type: v1.ErrBadResponse, Msg: err.Error(), Detail: string(body[:min(len(body), maxErrorDetail)])}
	}
	if apiErrorCode && res.Status == "success" {
		return res, &v1.Error{Type: v1.ErrBadResponse, Msg: "inconsistent body for response code"}
	}
	if res.Status == "error" {
		return res, &v1.Error{Type: res.ErrorType, Msg: res.Error}
	}
	if res.Data == nil {
		return res, &v1.Error{Type: v1.ErrBadResponse, Msg: "no data in the response"}
	}
	if res.Data.ResultType == "scalar" {
		var sv sampleValue
		if err := sv.UnmarshalJSON(res.Data.Result.scalar); err != nil {
			return res, &v1.Error{Type: v1.ErrBadResponse, Msg: err.Error()}
		}
		res.Data.Result.scalarValue = sv
	}
	return res, nil
}

// formatTime is client_golang's: Unix seconds with a fraction.
func formatTime(t time.Time) string {
	return strconv.FormatFloat(float64(t.Unix())+float64(t.Nanosecond())/1e9, 'f', -1, 64)
}
