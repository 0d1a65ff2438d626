// Package prometheus samples a Prometheus server through its HTTP API and
// turns the answers into source.Series and source.Range values. Range
// queries go through client_golang's api/prometheus/v1; instant queries,
// run every tick, are sent and decoded here to keep their garbage low.
//
// Everything that is not a finite number is "no data": NaN and ±Inf samples
// are dropped, so a histogram_quantile over an idle service reads as an
// empty result rather than as a value that every comparison gets wrong.
package prometheus

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/url"
	"path"
	"sort"
	"strings"
	"sync"
	"time"

	promapi "github.com/prometheus/client_golang/api"
	v1 "github.com/prometheus/client_golang/api/prometheus/v1"
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
)

const (
	// DefaultTimeout bounds one HTTP request when Options.Timeout is zero.
	DefaultTimeout = 10 * time.Second

	// maxPointsPerSeries is Prometheus's own query_range limit: it refuses
	// a request whose (end-start)/step exceeds 11,000.
	maxPointsPerSeries = 11000

	// maxRememberedWarnings bounds the set of warning texts already logged.
	// Warnings usually repeat verbatim every tick; when the set is full it
	// is cleared, which at worst logs a warning again.
	maxRememberedWarnings = 256
)

// Options configure a Source.
type Options struct {
	// URL is the Prometheus base URL, e.g. http://prometheus:9090.
	URL string
	// Timeout bounds each HTTP request, client and server side.
	// Zero means DefaultTimeout.
	Timeout time.Duration
	// HTTPConfig is how to reach the server (basic auth, authorization
	// credentials, OAuth2, TLS, headers, proxy), built by prometheus/common:
	// credential and certificate files are read on use, so rotating them
	// needs no restart. nil means no authentication and the system CAs.
	HTTPConfig *commoncfg.HTTPClientConfig
	// RoundTripper is optional (tests); nil means client_golang's default
	// transport. Not together with HTTPConfig.
	RoundTripper http.RoundTripper
}

// ClientName is the name of rollguard's HTTP client to prometheus/common
// (its connection tracking) and its User-Agent.
const ClientName = "rollguard"

// Source queries one Prometheus server. It is safe for concurrent use.
type Source struct {
	api           v1.API // range queries
	client        *http.Client
	queryURL      string // {URL}/api/v1/query, userinfo kept for basic auth
	rangeURL      string // {URL}/api/v1/query_range
	bodies        sync.Pool
	timeout       time.Duration
	serverTimeout time.Duration
	logger        *zap.Logger

	mu     sync.Mutex
	warned map[string]struct{}
}

// New builds a Source. It does not contact the server: Prometheus being down
// at start-up is a runtime condition (ErrUnreachable), not a config error.
func New(opts Options, logger *zap.Logger) (*Source, error) {
	if logger == nil {
		logger = zap.NewNop()
	}
	if opts.Timeout < 0 {
		return nil, fmt.Errorf("prometheus source: timeout %s: must not be negative", opts.Timeout)
	}
	if opts.Timeout == 0 {
		opts.Timeout = DefaultTimeout
	}
	// url.Parse errors echo the whole URL, which may carry a password in
	// its userinfo: report what is wrong without it.
	u, err := url.Parse(opts.URL)
	if err != nil {
		return nil, errors.New("prometheus source: invalid URL (not shown: it may hold credentials)")
	}
	if (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return nil, fmt.Errorf("prometheus source: URL %q: want http(s)://host[:port][/path]", u.Redacted())
	}
	var hc *http.Client
	switch {
	case opts.HTTPConfig != nil && opts.RoundTripper != nil:
		return nil, errors.New("prometheus source: HTTPConfig and RoundTripper are mutually exclusive")
	case opts.HTTPConfig != nil:
		// Reads the CA file now (an unreadable one is an error here);
		// secrets are read on each request.
		hc, err = commoncfg.NewClientFromConfig(*opts.HTTPConfig, ClientName, commoncfg.WithUserAgent(ClientName))
		if err != nil {
			return nil, fmt.Errorf("prometheus source %q: http client: %w", u.Redacted(), err)
		}
	default:
		rt := opts.RoundTripper
		if rt == nil {
			rt = promapi.DefaultRoundTripper
		}
		hc = &http.Client{Transport: rt}
	}
	client, err := promapi.NewClient(promapi.Config{Address: opts.URL, Client: hc})
	if err != nil {
		return nil, fmt.Errorf("prometheus source %q: %w", u.Redacted(), err)
	}
	// The same endpoint client_golang would build, and the same transport,
	// so instant and range queries share connections.
	qu := *u
	qu.Path = path.Join(strings.TrimRight(u.Path, "/"), "/api/v1/query")
	qu.RawPath = ""
	ru := qu
	ru.Path += "_range"
	return &Source{
		api:           v1.NewAPI(client),
		client:        hc,
		queryURL:      qu.String(),
		rangeURL:      ru.String(),
		bodies:        sync.Pool{New: func() any { return new(bytes.Buffer) }},
		timeout:       opts.Timeout,
		serverTimeout: serverTimeout(opts.Timeout),
		logger:        logger.With(zap.String("prometheus", u.Redacted())),
		warned:        make(map[string]struct{}),
	}, nil
}

// Query runs an instant query at ts (zero means the server's now). A vector
// gives one Series per finite sample with its labels (__name__ included when
// Prometheus returns it); a scalar gives one Series without labels; an empty
// result gives an empty slice and no error. Matrix and string results are
// ErrBadQuery: a trigger needs one number per series.
//
// Instant queries are the per-tick hot path, so Query does not go through
// client_golang (whose json-iterator decode into model.Vector and the copy
// into Series made about 75 MB of garbage per tick at 10,000 targets): it
// sends the same request itself and decodes the body straight into Series.
// The errors are the *v1.Error values client_golang would have returned, so
// classify reads both paths alike.
func (s *Source) Query(ctx context.Context, query string, ts time.Time) ([]source.Series, error) {
	// The timeout parameter only tells the server when to give up; the
	// client needs its own deadline or a hung connection blocks the tick.
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()

	began := time.Now()
	res, err := s.instant(ctx, query, ts)
	s.logWarnings(query, res.Warnings)
	if err != nil {
		return nil, classify("prometheus query", query, err)
	}
	s.logger.Debug("prometheus query done", zap.String("query", query), zap.String("type", res.Data.ResultType), zap.Duration("took", time.Since(began)))
	switch res.Data.ResultType {
	case "vector":
		out := make([]source.Series, 0, len(res.Data.Result.vector))
		for _, smp := range res.Data.Result.vector {
			// A native histogram sample has "histogram" instead of
			// "value" and so no float value.
			if !smp.Value.set || !finite(smp.Value.v) {
				continue
			}
			lbls := smp.Metric
			if lbls == nil {
				lbls = map[string]string{}
			}
			out = append(out, source.Series{Labels: lbls, Value: smp.Value.v})
		}
		return out, nil
	case "scalar":
		sv := res.Data.Result.scalarValue
		if !sv.set || !finite(sv.v) {
			return []source.Series{}, nil
		}
		return []source.Series{{Labels: map[string]string{}, Value: sv.v}}, nil
	case "":
		return nil, fmt.Errorf("prometheus query %q: %w: empty result type", query, source.ErrBadQuery)
	default:
		return nil, fmt.Errorf("prometheus query %q: %w: result is a %s, want a vector or a scalar", query, source.ErrBadQuery, res.Data.ResultType)
	}
}

// QueryRange runs a range query over [start, end] at step. Prometheus
// refuses more than 11,000 points per series in one request, so long ranges
// are split into chunks that each ask for at most that many; the chunks are
// aligned on start + k·step and do not overlap, and the merge drops any
// repeated timestamp anyway. Each chunk request has its own timeout; ctx
// bounds the whole. NaN and ±Inf points are dropped; series left with no
// points are omitted. Series are sorted by their labels.
//
// A range that fits one request (the evaluator's every tick: the seconds
// since its previous one) is sent and decoded here, like Query, rather
// than through client_golang.
func (s *Source) QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]source.Range, error) {
	chunks, err := splitRange(start, end, step, maxPointsPerSeries)
	if err != nil {
		return nil, fmt.Errorf("prometheus range query %q: %w: %w", query, source.ErrBadQuery, err)
	}
	if len(chunks) == 1 {
		return s.queryRangeOnce(ctx, query, start, end, step)
	}
	m := newMerger(start, end)
	for _, r := range chunks {
		val, err := s.queryRangeChunk(ctx, query, r)
		if err != nil {
			return nil, err
		}
		matrix, ok := val.(model.Matrix)
		if !ok {
			return nil, fmt.Errorf("prometheus range query %q: %w: result is a %s, want a matrix", query, source.ErrBadQuery, typeName(val))
		}
		m.add(matrix)
	}
	return m.result(), nil
}

func (s *Source) queryRangeOnce(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]source.Range, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	began := time.Now()
	res, err := s.rangeRequest(ctx, query, start, end, step)
	s.logWarnings(query, res.Warnings)
	if err != nil {
		return nil, classify("prometheus range query", query, err)
	}
	if t := res.Data.ResultType; t != "matrix" {
		if t == "" {
			t = "nil"
		}
		return nil, fmt.Errorf("prometheus range query %q: %w: result is a %s, want a matrix", query, source.ErrBadQuery, t)
	}
	lo, hi := start.UnixMilli(), end.UnixMilli()
	out := make([]source.Range, 0, len(res.Data.Result.vector))
	keys := make([]string, 0, len(res.Data.Result.vector))
	for _, smp := range res.Data.Result.vector {
		pts := smp.Values[:0]
		for _, p := range smp.Values {
			if ms := p.Time.UnixMilli(); ms >= lo && ms <= hi {
				pts = append(pts, p)
			}
		}
		if len(pts) == 0 {
			continue
		}
		lbls := smp.Metric
		if lbls == nil {
			lbls = map[string]string{}
		}
		out = append(out, source.Range{Labels: lbls, Points: pts})
		keys = append(keys, smp.key)
	}
	sortByKey(out, keys)
	s.logger.Debug("prometheus range query done", zap.String("query", query), zap.Int("series", len(out)), zap.Duration("took", time.Since(began)))
	return out, nil
}

func (s *Source) queryRangeChunk(ctx context.Context, query string, r v1.Range) (model.Value, error) {
	ctx, cancel := context.WithTimeout(ctx, s.timeout)
	defer cancel()
	val, warnings, err := s.api.QueryRange(ctx, query, r, v1.WithTimeout(s.serverTimeout))
	s.logWarnings(query, warnings)
	if err != nil {
		return nil, classify("prometheus range query", query, err)
	}
	return val, nil
}

// logWarnings logs each distinct warning text once: the same warning
// (e.g. "PromQL info: metric might not be a counter") comes back on every
// tick and would flood the log.
func (s *Source) logWarnings(query string, warnings v1.Warnings) {
	if len(warnings) == 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, w := range warnings {
		if _, seen := s.warned[w]; seen {
			continue
		}
		if len(s.warned) >= maxRememberedWarnings {
			clear(s.warned)
		}
		s.warned[w] = struct{}{}
		s.logger.Warn("prometheus query warning", zap.String("query", query), zap.String("warning", w))
	}
}

// classify wraps err with the source sentinel that fits it. The API
// client only parses 400 and 422 bodies; every other status arrives as a
// bare server_error/client_error whose Detail is the raw body.
func classify(what, query string, err error) error {
	// *url.Error prints the request URL; drop it (the query is named
	// instead), so nothing from the server address leaks into logs.
	var uerr *url.Error
	if errors.As(err, &uerr) {
		err = uerr.Err
	}

	// client_golang decodes only scalar, vector and matrix results; a
	// string result (a bare string literal as the query) fails to decode
	// with this untyped error.
	if strings.Contains(err.Error(), "unexpected value type") {
		return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrBadQuery, err)
	}

	if tlsFailure(err) {
		return fmt.Errorf("%s %q: %w: %w: %w", what, query, source.ErrUnreachable, source.ErrTLS, err)
	}
	var apiErr *v1.Error
	if errors.As(err, &apiErr) {
		if apiErr.Type == v1.ErrClient && (strings.HasSuffix(apiErr.Msg, " 401") || strings.HasSuffix(apiErr.Msg, " 403")) {
			// Wrong or missing credentials: say so rather than "client
			// error", which reads like a bad query.
			return fmt.Errorf("%s %q: %w: %w: %w", what, query, source.ErrUnreachable, source.ErrUnauthorized, err)
		}
		if apiErr.Type == v1.ErrBadResponse && strings.Contains(apiErr.Detail, "HTTP request to an HTTPS server") {
			// Go's TLS server answers plain HTTP with a 400 and this text.
			return fmt.Errorf("%s %q: %w: %w: the server speaks HTTPS, use an https:// URL", what, query, source.ErrUnreachable, source.ErrTLS)
		}
		switch apiErr.Type {
		case v1.ErrBadData, v1.ErrExec:
			// 400 bad_data: the query does not parse or has a bad
			// argument. 422 execution: it parsed but cannot be evaluated
			// (many-to-many matching, too many samples): retrying the same
			// text will fail the same way.
			return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrBadQuery, err)
		case v1.ErrTimeout, v1.ErrCanceled:
			return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrTimeout, err)
		case v1.ErrServer:
			// Prometheus answers a query timeout with 503 and a JSON body
			// of errorType "timeout"; any other 5xx (not ready, a proxy's
			// bad gateway) means we cannot get data from it.
			if isTimeoutBody(apiErr.Detail) {
				return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrTimeout, err)
			}
			return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrUnreachable, err)
		default:
			// client_error (401, 403, 404: wrong URL or credentials) and
			// bad_response (not a Prometheus API answer).
			return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrUnreachable, err)
		}
	}
	if errors.Is(err, context.DeadlineExceeded) || errors.Is(err, context.Canceled) {
		return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrTimeout, err)
	}
	var nerr net.Error
	if errors.As(err, &nerr) && nerr.Timeout() {
		return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrTimeout, err)
	}
	// Connection refused, DNS, TLS, reset: the server cannot be reached.
	return fmt.Errorf("%s %q: %w: %w", what, query, source.ErrUnreachable, err)
}

// tlsFailure reports whether err is a failed or impossible TLS handshake:
// the server's certificate did not verify, the server refused the client
// certificate (a TLS alert), or the server did not speak TLS at all.
func tlsFailure(err error) bool {
	var (
		verify   *tls.CertificateVerificationError
		unknown  x509.UnknownAuthorityError
		hostname x509.HostnameError
		invalid  x509.CertificateInvalidError
		alert    tls.AlertError
		record   tls.RecordHeaderError
	)
	if errors.As(err, &verify) || errors.As(err, &unknown) || errors.As(err, &hostname) ||
		errors.As(err, &invalid) || errors.As(err, &alert) || errors.As(err, &record) {
		return true
	}
	// A TLS alert from the peer arrives as a *net.OpError wrapping an
	// unexported type whose text is "remote error: tls: ..."; net/http
	// reports a plain HTTP answer to a TLS hello by text only.
	msg := err.Error()
	return strings.Contains(msg, "remote error: tls:") || strings.Contains(msg, "server gave HTTP response to HTTPS client")
}

// isTimeoutBody reports whether a non-2xx body is Prometheus's JSON error
// of type timeout or canceled.
func isTimeoutBody(body string) bool {
	var r struct {
		Status    string `json:"status"`
		ErrorType string `json:"errorType"`
	}
	if err := json.Unmarshal([]byte(body), &r); err != nil {
		return false
	}
	return r.Status == "error" && (r.ErrorType == string(v1.ErrTimeout) || r.ErrorType == string(v1.ErrCanceled))
}

// serverTimeout is the timeout sent to Prometheus. client_golang sends
// time.Duration.String(), and Prometheus cannot parse a fraction ("1.5s" is
// a 400 bad_data for every query), so round down to whole seconds, or to
// milliseconds under a second ("500ms" parses). Rounding down also lets the
// server give up first, with a clean timeout error, before the client does.
func serverTimeout(d time.Duration) time.Duration {
	if d >= time.Second {
		return d.Truncate(time.Second)
	}
	return d.Truncate(time.Millisecond)
}

func finite(v float64) bool { return !math.IsNaN(v) && !math.IsInf(v, 0) }

func labels(m model.Metric) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[string(k)] = string(v)
	}
	return out
}

func typeName(v model.Value) string {
	if v == nil {
		return "nil"
	}
	return v.Type().String()
}

// splitRange cuts [start, end] into requests of at most maxPoints points
// each. A request over [a, b] at step returns floor((b-a)/step)+1 points,
// so a chunk spans (maxPoints-1) steps and the next one starts one step
// later: every evaluation timestamp start + k·step falls in exactly one
// chunk.
func splitRange(start, end time.Time, step time.Duration, maxPoints int) ([]v1.Range, error) {
	if step <= 0 {
		return nil, fmt.Errorf("step %s: must be positive", step)
	}
	if end.Before(start) {
		return nil, fmt.Errorf("end %s is before start %s", end.Format(time.RFC3339), start.Format(time.RFC3339))
	}
	if maxPoints < 1 {
		return nil, fmt.Errorf("max points %d: must be positive", maxPoints)
	}
	span := time.Duration(maxPoints-1) * step
	var out []v1.Range
	for a := start; !a.After(end); a = a.Add(span + step) {
		b := a.Add(span)
		if b.After(end) {
			b = end
		}
		out = append(out, v1.Range{Start: a, End: b, Step: step})
	}
	return out, nil
}

// merger joins the matrices of consecutive chunks series by series.
type merger struct {
	start, end time.Time
	byKey      map[model.Fingerprint]*source.Range
}

func newMerger(start, end time.Time) *merger {
	return &merger{start: start, end: end, byKey: make(map[model.Fingerprint]*source.Range)}
}

func (m *merger) add(matrix model.Matrix) {
	for _, ss := range matrix {
		fp := ss.Metric.Fingerprint()
		r, ok := m.byKey[fp]
		if !ok {
			r = &source.Range{Labels: labels(ss.Metric)}
			m.byKey[fp] = r
		}
		for _, p := range ss.Values {
			v := float64(p.Value)
			if !finite(v) {
				continue
			}
			t := p.Timestamp.Time()
			if t.Before(m.start) || t.After(m.end) {
				continue
			}
			// Chunks arrive in time order; a point at or before the last
			// one kept is an edge duplicate.
			if n := len(r.Points); n > 0 && !t.After(r.Points[n-1].Time) {
				continue
			}
			r.Points = append(r.Points, source.Point{Time: t, Value: v})
		}
	}
}

func (m *merger) result() []source.Range {
	out := make([]source.Range, 0, len(m.byKey))
	keys := make([]string, 0, len(m.byKey))
	for _, r := range m.byKey {
		if len(r.Points) == 0 {
			continue
		}
		out = append(out, *r)
		keys = append(keys, labelKey(r.Labels))
	}
	sortByKey(out, keys)
	return out
}

// labelKey orders label sets: by name, then value, pair after pair (a set
// that is a prefix of another comes first).
func labelKey(m map[string]string) string {
	names := make([]string, 0, len(m))
	n := 0
	for k, v := range m {
		names = append(names, k)
		n += len(k) + len(v) + 2
	}
	sort.Strings(names)
	b := make([]byte, 0, n)
	for _, k := range names {
		b = append(append(append(append(b, k...), 0), m[k]...), 0)
	}
	return string(b)
}

// sortByKey sorts rs by keys (parallel slices).
func sortByKey(rs []source.Range, keys []string) {
	sort.Sort(byKey{rs, keys})
}

type byKey struct {
	rs   []source.Range
	keys []string
}

func (b byKey) Len() int           { return len(b.rs) }
func (b byKey) Less(i, j int) bool { return b.keys[i] < b.keys[j] }
func (b byKey) Swap(i, j int) {
	b.rs[i], b.rs[j] = b.rs[j], b.rs[i]
	b.keys[i], b.keys[j] = b.keys[j], b.keys[i]
}
