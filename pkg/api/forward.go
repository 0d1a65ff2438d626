package api

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"

	"go.uber.org/zap"
)

// Leadership says whether this replica acts on requests, and where the
// one that does answers. Of two replicas behind one Service, the follower
// gets about half of the requests: it hands each to the leader instead of
// answering for it.
type Leadership interface {
	// Leading reports whether this replica acts on requests now.
	Leading() bool
	// Leader returns the base URL of the replica that leads.
	Leader(ctx context.Context) (string, error)
	// Identity names this replica (in the forwarding header).
	Identity() string
}

// HeaderForwardedBy marks a request a follower handed to the leader. A
// replica that gets one and does not lead answers 503 instead of handing
// it on: two replicas never pass a request back and forth.
const HeaderForwardedBy = "X-Rollguard-Forwarded-By"

// maxForwardedAnswer bounds the leader's answer a follower passes on.
const maxForwardedAnswer = 4 << 20

// atLeader runs next here when this replica leads; otherwise it hands
// the authenticated request to the leader and passes its answer back, or
// answers 503 with Retry-After when no leader can be reached (the request
// was not done, and the sender may send it again).
func (h *handler) atLeader(limit int64, next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		l := h.o.Leadership
		if l == nil || l.Leading() {
			next(w, r)
			return
		}
		if by := r.Header.Get(HeaderForwardedBy); by != "" {
			writeStatusError(w, fmt.Errorf("%w: %s handed this request on, and %s does not lead (a leader change is under way)", ErrNotLeader, by, l.Identity()))
			return
		}
		body, err := io.ReadAll(io.LimitReader(r.Body, limit+1))
		if err != nil {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("read body: %v", err))
			return
		}
		if int64(len(body)) > limit {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("body larger than %d bytes", limit))
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
		defer cancel()
		base, err := l.Leader(ctx)
		if err != nil {
			h.log.Warn("request not handed to the leader: none known", zap.String("path", r.URL.Path), zap.Error(err))
			writeStatusError(w, fmt.Errorf("%w: %s does not lead and knows no leader: %v", ErrNotLeader, l.Identity(), err))
			return
		}
		if err := h.forward(ctx, w, r, base, body); err != nil {
			h.log.Warn("request not handed to the leader", zap.String("path", r.URL.Path), zap.String("leader", base), zap.Error(err))
			writeStatusError(w, fmt.Errorf("%w: the leader at %s did not answer: %v", ErrNotLeader, base, err))
		}
	}
}

// forward sends the request to the leader at base and copies its answer;
// an error means nothing was written to w.
func (h *handler) forward(ctx context.Context, w http.ResponseWriter, r *http.Request, base string, body []byte) error {
	u := strings.TrimRight(base, "/") + r.URL.RequestURI()
	req, err := http.NewRequestWithContext(ctx, r.Method, u, bytes.NewReader(body))
	if err != nil {
		return err
	}
	for _, k := range []string{"Authorization", "Content-Type", "User-Agent"} {
		if v := r.Header.Get(k); v != "" {
			req.Header.Set(k, v)
		}
	}
	req.Header.Set(HeaderForwardedBy, h.o.Leadership.Identity())
	resp, err := h.o.Forward.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	answer, err := io.ReadAll(io.LimitReader(resp.Body, maxForwardedAnswer+1))
	if err != nil {
		return fmt.Errorf("read the leader's answer: %w", err)
	}
	if len(answer) > maxForwardedAnswer {
		return errors.New("the leader's answer is too large")
	}
	for _, k := range []string{"Content-Type", "Retry-After", "WWW-Authenticate"} {
		if v := resp.Header.Get(k); v != "" {
			w.Header().Set(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	_, _ = w.Write(answer)
	h.log.Info("request handed to the leader", zap.String("path", r.URL.Path), zap.String("leader", base), zap.Int("status", resp.StatusCode))
	return nil
}
