// Package notifytest holds what the notifiers' tests share: a fake peer's
// scripted answers (errors, Retry-After, a peer that never answers) and a
// wait for what a queue does in the background.
package notifytest

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"sync"
	"testing"
	"time"
)

// Answer is one scripted answer of a fake peer.
type Answer struct {
	Status     int
	Body       string
	RetryAfter string
	// Hang holds the request until the client gives up or the test ends.
	Hang bool
}

// Script hands a fake peer its answers in order; once they are spent the
// peer answers as the real one does when all is well.
type Script struct {
	mu      sync.Mutex
	answers []Answer
	release chan struct{}
}

// NewScript returns a script of answers.
func NewScript(answers ...Answer) *Script {
	return &Script{answers: answers, release: make(chan struct{})}
}

// Serve starts h, the fake peer answering from s; hanging requests are let
// go before the server closes at the end of the test.
func (s *Script) Serve(t *testing.T, h http.Handler) *httptest.Server {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(func() { close(s.release); srv.Close() })
	return srv
}

// Next takes the next scripted answer; nil when the script is spent.
func (s *Script) Next() *Answer {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.answers) == 0 {
		return nil
	}
	a := s.answers[0]
	s.answers = s.answers[1:]
	return &a
}

// Answer writes a's Retry-After and status, or holds the request when a
// hangs; it reports whether the handler may still write a body.
func (s *Script) Answer(w http.ResponseWriter, r *http.Request, a *Answer) bool {
	if a.Hang {
		select {
		case <-s.release:
		case <-r.Context().Done():
		}
		return false
	}
	if a.RetryAfter != "" {
		w.Header().Set("Retry-After", a.RetryAfter)
	}
	return true
}

// WaitFor fails the test when cond does not hold within 5 s.
func WaitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(5 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// GetJSON decodes the answer to a GET of u: what a sandbox peer (an
// Alertmanager, a webhook receiver) says it was sent.
func GetJSON[T any](ctx context.Context, u string) (T, error) {
	var out T
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return out, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return out, err
	}
	defer resp.Body.Close()
	return out, json.NewDecoder(resp.Body).Decode(&out)
}
