// Package receiver is a local stand-in for PagerDuty's Events API v2, a
// Slack incoming webhook and a generic JSON webhook endpoint. It validates what it gets the way those services
// do, records every request, and plays scripted faults (429 with
// Retry-After, 5xx, hangs) so notification retries can be tested for real.
package receiver

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"
)

// Paths the receiver serves.
const (
	PagerDutyEventsPath = "/v2/enqueue"
	PagerDutyChangePath = "/v2/change/enqueue"
	SlackWebhookPath    = "/slack/webhook"
	// GenericWebhookPath stands for any JSON webhook endpoint (rollguard's
	// generic webhook notifier posts there in tests).
	GenericWebhookPath = "/webhook"
	controlPrefix      = "/_/"
	// maxBody is read in full; PagerDuty rejects events over 512 KB, and
	// reading more lets the receiver say so instead of truncating.
	maxBody = 4 << 20
	// maxRecords bounds memory in a long sandbox session; the oldest
	// requests are dropped first.
	maxRecords = 10000
)

// ErrInvalidFault is returned for a fault that cannot be played.
var ErrInvalidFault = errors.New("invalid fault")

// Request is one request the receiver got, with the answer it gave.
type Request struct {
	Time    time.Time   `json:"time"`
	Method  string      `json:"method"`
	Path    string      `json:"path"`
	Headers http.Header `json:"headers"`
	Body    string      `json:"body"`
	// Status is the status code returned; 0 when the client gave up first.
	Status int `json:"status"`
	// Fault is set when a scripted fault answered the request.
	Fault bool `json:"fault,omitempty"`
	// Aborted is set when the client went away during a hang.
	Aborted bool `json:"aborted,omitempty"`
}

// Response is a scripted fault, played once for the next request on its
// path. With Hang, the receiver first waits that long (or until the client
// gives up); then it answers Status, or normally when Status is 0.
type Response struct {
	Status     int           `json:"status,omitempty"`
	RetryAfter string        `json:"retryAfter,omitempty"`
	Body       string        `json:"body,omitempty"`
	Hang       time.Duration `json:"-"`
}

type responseJSON struct {
	Status     int    `json:"status,omitempty"`
	RetryAfter string `json:"retryAfter,omitempty"`
	Body       string `json:"body,omitempty"`
	Hang       string `json:"hang,omitempty"`
}

// MarshalJSON writes Hang as a Go duration string ("10s").
func (r Response) MarshalJSON() ([]byte, error) {
	j := responseJSON{Status: r.Status, RetryAfter: r.RetryAfter, Body: r.Body}
	if r.Hang > 0 {
		j.Hang = r.Hang.String()
	}
	return json.Marshal(j)
}

// UnmarshalJSON reads Hang as a Go duration string ("10s", "500ms").
func (r *Response) UnmarshalJSON(b []byte) error {
	var j responseJSON
	dec := json.NewDecoder(bytes.NewReader(b))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&j); err != nil {
		return err
	}
	*r = Response{Status: j.Status, RetryAfter: j.RetryAfter, Body: j.Body}
	if j.Hang != "" {
		d, err := time.ParseDuration(j.Hang)
		if err != nil {
			return fmt.Errorf("%w: hang %q: %w", ErrInvalidFault, j.Hang, err)
		}
		r.Hang = d
	}
	return nil
}

func (r Response) validate() error {
	switch {
	case r.Status != 0 && (r.Status < 100 || r.Status > 599):
		return fmt.Errorf("%w: status %d", ErrInvalidFault, r.Status)
	case r.Hang < 0:
		return fmt.Errorf("%w: negative hang %s", ErrInvalidFault, r.Hang)
	case r.Status == 0 && r.Hang == 0:
		return fmt.Errorf("%w: neither status nor hang", ErrInvalidFault)
	}
	return nil
}

// Receiver is the HTTP handler. The zero value is not usable: call New.
type Receiver struct {
	logger *zap.Logger
	now    func() time.Time
	// after makes the hang timer; tests replace it.
	after  func(time.Duration) <-chan time.Time
	newKey func() string

	mu       sync.Mutex
	received []Request
	faults   map[string][]Response
}

// New returns an empty Receiver; logger may be nil.
func New(logger *zap.Logger) *Receiver {
	if logger == nil {
		logger = zap.NewNop()
	}
	return &Receiver{
		logger: logger,
		now:    time.Now,
		after:  time.After,
		newKey: randomKey,
		faults: map[string][]Response{},
	}
}

// Received returns the requests recorded on path, oldest first; an empty
// path returns all of them.
func (rc *Receiver) Received(path string) []Request {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := []Request{}
	for _, r := range rc.received {
		if path == "" || r.Path == path {
			out = append(out, cloneRequest(r))
		}
	}
	return out
}

// SetFaults replaces the fault script of path; the faults are played in
// order, one per request, before normal answers resume.
func (rc *Receiver) SetFaults(path string, faults []Response) error {
	if !strings.HasPrefix(path, "/") || strings.HasPrefix(path, controlPrefix) {
		return fmt.Errorf("%w: path %q", ErrInvalidFault, path)
	}
	for i, f := range faults {
		if err := f.validate(); err != nil {
			return fmt.Errorf("fault %d of %s: %w", i, path, err)
		}
	}
	rc.mu.Lock()
	defer rc.mu.Unlock()
	if len(faults) == 0 {
		delete(rc.faults, path)
	} else {
		rc.faults[path] = append([]Response(nil), faults...)
	}
	rc.logger.Info("faults scripted", zap.String("path", path), zap.Int("count", len(faults)))
	return nil
}

// Reset forgets every recorded request and every pending fault.
func (rc *Receiver) Reset() {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.received = nil
	rc.faults = map[string][]Response{}
	rc.logger.Info("receiver reset")
}

func (rc *Receiver) nextFault(path string) (Response, bool) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	q := rc.faults[path]
	if len(q) == 0 {
		return Response{}, false
	}
	if len(q) == 1 {
		delete(rc.faults, path)
	} else {
		rc.faults[path] = q[1:]
	}
	return q[0], true
}

func (rc *Receiver) record(r Request) {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	rc.received = append(rc.received, r)
	if n := len(rc.received); n > maxRecords {
		rc.received = append([]Request(nil), rc.received[n-maxRecords:]...)
	}
}

// answer is a response before it is written, so it can be recorded.
type answer struct {
	status      int
	contentType string
	retryAfter  string
	body        []byte
}

func (a answer) write(w http.ResponseWriter) {
	if a.contentType != "" {
		w.Header().Set("Content-Type", a.contentType)
	}
	if a.retryAfter != "" {
		w.Header().Set("Retry-After", a.retryAfter)
	}
	w.WriteHeader(a.status)
	_, _ = w.Write(a.body) // a client that left needs nothing more
}

// ServeHTTP records the request, plays the next scripted fault of its
// path if any, and otherwise answers like the real service.
func (rc *Receiver) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if strings.HasPrefix(r.URL.Path, controlPrefix) {
		rc.serveControl(w, r)
		return
	}
	body, err := io.ReadAll(io.LimitReader(r.Body, maxBody))
	rec := Request{
		Time:    rc.now(),
		Method:  r.Method,
		Path:    r.URL.Path,
		Headers: r.Header.Clone(),
		Body:    string(body),
	}
	if err != nil {
		// Most likely the client went away while sending.
		rec.Status = http.StatusBadRequest
		rc.record(rec)
		http.Error(w, "read body failed", http.StatusBadRequest)
		return
	}

	a, fault, aborted := rc.play(r, body)
	rec.Fault = fault
	if aborted {
		rec.Aborted = true
		rc.record(rec)
		rc.logger.Info("client gave up during hang", zap.String("path", rec.Path))
		return
	}
	rec.Status = a.status
	rc.record(rec)
	a.write(w)
	rc.logger.Debug("request answered", zap.String("method", rec.Method), zap.String("path", rec.Path),
		zap.Int("status", a.status), zap.Bool("fault", fault))
}

// play picks the answer: a scripted fault, or the service's own.
func (rc *Receiver) play(r *http.Request, body []byte) (a answer, fault, aborted bool) {
	f, ok := rc.nextFault(r.URL.Path)
	if !ok {
		return rc.handle(r, body), false, false
	}
	if f.Hang > 0 {
		select {
		case <-r.Context().Done():
			return answer{}, true, true
		case <-rc.after(f.Hang):
		}
	}
	if f.Status == 0 {
		return rc.handle(r, body), true, false
	}
	a = answer{status: f.Status, retryAfter: f.RetryAfter, body: []byte(f.Body), contentType: "text/plain; charset=utf-8"}
	if f.Body == "" {
		a.body = []byte(http.StatusText(f.Status))
	} else if json.Valid(a.body) {
		a.contentType = "application/json"
	}
	return a, true, false
}

// handle answers like the real service. A path may carry a prefix
// (/t/<test>/v2/enqueue) so that tests sharing one receiver each get
// their own faults and records: the service is chosen by the path's end.
func (rc *Receiver) handle(r *http.Request, body []byte) answer {
	var serve func() answer
	switch p := r.URL.Path; {
	case strings.HasSuffix(p, PagerDutyEventsPath):
		serve = func() answer { return rc.pagerDutyEvent(body) }
	case strings.HasSuffix(p, PagerDutyChangePath):
		serve = func() answer { return pagerDutyChange(body) }
	case strings.HasSuffix(p, SlackWebhookPath):
		serve = func() answer { return slackWebhook(r.Header.Get("Content-Type"), body) }
	case strings.HasSuffix(p, GenericWebhookPath):
		serve = func() answer { return genericWebhook(r.Header.Get("Content-Type"), body) }
	default:
		return answer{status: http.StatusNotFound, contentType: "text/plain; charset=utf-8", body: []byte("not found")}
	}
	if r.Method != http.MethodPost {
		return answer{status: http.StatusMethodNotAllowed, contentType: "text/plain; charset=utf-8",
			body: []byte("method not allowed")}
	}
	return serve()
}

func cloneRequest(r Request) Request {
	r.Headers = r.Headers.Clone()
	return r
}
