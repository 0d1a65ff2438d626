// Package api owns rollguard's HTTP interface: health, readiness, metrics,
// the status and incident API, and the authenticated endpoints that change
// something (manual rollback, freeze, the Alertmanager webhook, reload).
// It mounts the web console (pkg/console) at / and sets the console's
// security headers (a strict Content-Security-Policy) on every response.
//
// Every mutating endpoint requires a bearer token compared in constant
// time: 401 without one, 403 with a wrong one, and in both cases nothing
// happens. With no token configured, mutating endpoints answer 403: an
// unauthenticated control plane is never the default.
package api

import (
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/alertmanager"
	"github.com/rollguard/rollguard/pkg/console"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// Controller is what the API drives; the app implements it.
type Controller interface {
	Status() Status
	// Ready reports whether the daemon has a config and every source has
	// answered at least once, and why not.
	Ready() (bool, string)
	// Rollback asks for an action on a configured target, through the
	// interlocks. It returns once the request is accepted or refused, not
	// when the plan finishes.
	Rollback(ctx context.Context, req ActionRequest) (ActionResult, error)
	SetFreeze(ctx context.Context, target string, frozen bool, reason string) error
	// Alerts acts on a webhook notification: its requests, its rejected
	// alerts (reported and paged), its resolved ones. A result with Retry
	// set was not judged (the caller must send it again).
	Alerts(ctx context.Context, n *alertmanager.Notification) ([]ActionResult, error)
	Reload(ctx context.Context) error
	AlertOptions() alertmanager.Options
}

// ErrUnknownTarget is returned (and mapped to 404) for a target that is not
// in the config.
var ErrUnknownTarget = errors.New("unknown target")

// ErrRefused is returned (and mapped to 409) when an interlock blocked the
// request.
var ErrRefused = errors.New("refused")

// ErrNotLeader is returned (and mapped to 503 with Retry-After) when this
// replica does not lead and the request could not be handed to the one
// that does: nothing was done, and the same request may be sent again.
var ErrNotLeader = errors.New("not the leader")

// ErrUnavailable is returned (and mapped to 503 with Retry-After) when the
// request could not be judged now (the cluster could not be read).
var ErrUnavailable = errors.New("unavailable")

// Status is the body of GET /api/v1/status.
type Status struct {
	Version    string           `json:"version"`
	Leader     bool             `json:"leader"`
	DryRun     bool             `json:"dryRun"`
	ConfigHash string           `json:"configHash"`
	LoadedAt   time.Time        `json:"loadedAt"`
	Targets    []TargetStatus   `json:"targets"`
	Triggers   []trigger.Status `json:"triggers"`
}

// TargetStatus is one target's summary.
type TargetStatus struct {
	Name       string `json:"name"`
	Namespace  string `json:"namespace"`
	Deployment string `json:"deployment"`
	DryRun     bool   `json:"dryRun"`
	Frozen     bool   `json:"frozen"`
	// Running is the plan in flight, if any.
	Running string `json:"running,omitempty"`
	// LastResult is the outcome of the last action on this target.
	LastResult string `json:"lastResult,omitempty"`
	// GitOps is the Flux or Argo CD object reconciling the Deployment and
	// whether rollguard holds its reconciliation suspended (nil: none).
	GitOps *gitops.Status `json:"gitops,omitempty"`
}

// GitOpsResumer lifts rollguard's suspension of a target's GitOps owner.
type GitOpsResumer interface {
	ResumeGitOps(ctx context.Context, target, reason string) (string, error)
}

// ResumeRequest is the body of POST /api/v1/targets/{target}/resume-gitops.
type ResumeRequest struct {
	Reason string `json:"reason"`
}

// ActionRequest is the body of POST /api/v1/targets/{target}/rollback.
type ActionRequest struct {
	Target string `json:"-"`
	Action string `json:"action"`
	Reason string `json:"reason"`
	// Caller is the name of the token the request came with (empty for
	// an unnamed token).
	Caller string `json:"-"`
}

// ActionResult says what became of a request.
type ActionResult struct {
	Target   string `json:"target"`
	Action   string `json:"action"`
	Accepted bool   `json:"accepted"`
	Detail   string `json:"detail"`
	// Fingerprint is the alert's, for a result of the webhook.
	Fingerprint string `json:"fingerprint,omitempty"`
	// Rejected: an alert rollguard cannot act on (unknown target or
	// action); it was paged.
	Rejected bool `json:"rejected,omitempty"`
	// Retry: not judged now (no leader, the cluster unreadable); the
	// answer is 503 and the sender should send it again.
	Retry bool `json:"retry,omitempty"`
}

// FreezeRequest is the body of the freeze endpoints.
type FreezeRequest struct {
	Reason string `json:"reason"`
}

// Options configure the handler.
type Options struct {
	// Token is the bearer token for mutating endpoints; empty disables them
	// unless Tokens has some.
	Token []byte
	// Tokens are named bearer tokens, any of which is accepted; the name
	// of the one a request came with is its caller (Caller).
	Tokens []Token
	// TokenFunc, when set, is asked for the tokens on every request
	// instead of Token and Tokens, so a rotated token file takes effect on
	// reload. The unnamed token has an empty Name.
	TokenFunc func() []Token
	Gatherer  prometheus.Gatherer
	Incidents http.Handler // serves /api/v1/incidents and /api/v1/incidents/{id}
	// RequestTimeout bounds each mutating request's work.
	RequestTimeout time.Duration
	// Console serves the web console at / (nil: none).
	Console http.Handler
	// Leadership, when set, hands the mutating requests a follower gets
	// to the leader (see Leadership); nil: this process always acts.
	Leadership Leadership
	// Forward is the client requests are handed to the leader with
	// [a client with RequestTimeout].
	Forward *http.Client
	// GitOps serves POST /api/v1/targets/{target}/resume-gitops (nil: no
	// such endpoint).
	GitOps GitOpsResumer
}

// maxBody bounds request bodies of the JSON endpoints.
const maxBody = 64 << 10

// NewHandler returns the HTTP handler.
func NewHandler(c Controller, o Options, logger *zap.Logger) http.Handler {
	if o.RequestTimeout <= 0 {
		o.RequestTimeout = 30 * time.Second
	}
	if o.Forward == nil {
		o.Forward = &http.Client{Timeout: o.RequestTimeout}
	}
	h := &handler{c: c, o: o, log: logger}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) { io.WriteString(w, "ok\n") })
	mux.HandleFunc("GET /readyz", h.ready)
	if o.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(o.Gatherer, promhttp.HandlerOpts{}))
	}
	mux.HandleFunc("GET /api/v1/status", h.status)
	if o.Incidents != nil {
		mux.Handle("GET /api/v1/incidents", o.Incidents)
		mux.Handle("GET /api/v1/incidents/{id}", o.Incidents)
	}
	mux.HandleFunc("POST /api/v1/targets/{target}/rollback", h.auth(h.atLeader(maxBody, h.rollback)))
	mux.HandleFunc("POST /api/v1/targets/{target}/freeze", h.auth(h.atLeader(maxBody, h.freeze(true))))
	mux.HandleFunc("POST /api/v1/targets/{target}/unfreeze", h.auth(h.atLeader(maxBody, h.freeze(false))))
	mux.HandleFunc("POST /api/v1/alerts/alertmanager", h.auth(h.atLeader(alertmanager.MaxBodyBytes, h.alerts)))
	if o.GitOps != nil {
		mux.HandleFunc("POST /api/v1/targets/{target}/resume-gitops", h.auth(h.atLeader(maxBody, h.resumeGitOps)))
	}
	mux.HandleFunc("POST /-/reload", h.auth(h.reload))
	if o.Console != nil {
		mux.Handle("/", o.Console)
	}
	return console.SecureHeaders(mux)
}

type handler struct {
	c   Controller
	o   Options
	log *zap.Logger
}

// tokens are the tokens accepted now.
func (h *handler) tokens() []Token {
	if h.o.TokenFunc != nil {
		return h.o.TokenFunc()
	}
	toks := h.o.Tokens
	if len(h.o.Token) > 0 {
		toks = append([]Token{{Secret: h.o.Token}}, toks...)
	}
	return toks
}

func (h *handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		toks := h.tokens()
		if len(toks) == 0 {
			writeError(w, http.StatusForbidden, "mutating endpoints are disabled: no API token configured (global.api.tokenFile)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || got == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rollguard"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		name, ok := match(toks, []byte(got))
		if !ok {
			h.log.Warn("api request with a wrong token", zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
			writeError(w, http.StatusForbidden, "wrong bearer token")
			return
		}
		next(w, r.WithContext(withCaller(r.Context(), name)))
	}
}

// match compares got with every token, all of them, in constant time
// each: which token matched, or whether any did, shows in no timing.
func match(toks []Token, got []byte) (string, bool) {
	name, ok := "", false
	for _, t := range toks {
		if len(t.Secret) > 0 && subtle.ConstantTimeCompare(got, t.Secret) == 1 && !ok {
			name, ok = t.Name, true
		}
	}
	return name, ok
}

func (h *handler) ready(w http.ResponseWriter, _ *http.Request) {
	ok, why := h.c.Ready()
	if !ok {
		writeError(w, http.StatusServiceUnavailable, "not ready: "+why)
		return
	}
	io.WriteString(w, "ready\n")
}

func (h *handler) status(w http.ResponseWriter, _ *http.Request) {
	writeJSON(w, http.StatusOK, h.c.Status())
}

func (h *handler) rollback(w http.ResponseWriter, r *http.Request) {
	var req ActionRequest
	if !decode(w, r, &req) {
		return
	}
	req.Target = r.PathValue("target")
	req.Caller = Caller(r.Context())
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusBadRequest, "reason: must not be empty")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	defer cancel()
	res, err := h.c.Rollback(ctx, req)
	if err != nil {
		writeStatusError(w, err)
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

func (h *handler) freeze(frozen bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		reason, ok := decodeReason(w, r)
		if !ok {
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
		defer cancel()
		if err := h.c.SetFreeze(ctx, r.PathValue("target"), frozen, reason); err != nil {
			writeStatusError(w, err)
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"target": r.PathValue("target"), "frozen": frozen})
	}
}

// decodeReason reads a body whose only field is a reason (FreezeRequest,
// ResumeRequest) and refuses an empty one.
func decodeReason(w http.ResponseWriter, r *http.Request) (string, bool) {
	var req FreezeRequest
	if !decode(w, r, &req) {
		return "", false
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusBadRequest, "reason: must not be empty")
		return "", false
	}
	return req.Reason, true
}

func (h *handler) resumeGitOps(w http.ResponseWriter, r *http.Request) {
	reason, ok := decodeReason(w, r)
	if !ok {
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	defer cancel()
	detail, err := h.o.GitOps.ResumeGitOps(ctx, r.PathValue("target"), reason)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"target": r.PathValue("target"), "detail": detail})
}

// alerts takes an Alertmanager notification. Alertmanager retries a 5xx
// and never a 4xx, so: a payload it cannot read is 400; alerts it cannot
// act on (unknown target or action) are reported and paged without
// failing the valid alerts of the same group (400 only when none was
// valid); anything not judged now (no leader, the cluster unreadable) is
// 503 with Retry-After, never 200, so it comes again.
func (h *handler) alerts(w http.ResponseWriter, r *http.Request) {
	n, err := alertmanager.Parse(r.Body, h.c.AlertOptions())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	defer cancel()
	res, err := h.c.Alerts(ctx, n)
	if err != nil {
		writeStatusError(w, err)
		return
	}
	code := http.StatusOK
	for _, x := range res {
		if x.Retry {
			code = http.StatusServiceUnavailable
		}
	}
	if code == http.StatusOK && len(n.Requests) == 0 && len(n.Rejected) > 0 {
		code = http.StatusBadRequest
	}
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeJSON(w, code, map[string]any{"results": res})
}

func (h *handler) reload(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	defer cancel()
	if err := h.c.Reload(ctx); err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	io.WriteString(w, "reloaded\n")
}

// retryAfter is what a 503 asks the sender to wait, in seconds: about
// one leader election.
const retryAfter = "5"

// writeStatusError writes err with its status; a 503 says when to retry.
func writeStatusError(w http.ResponseWriter, err error) {
	code := statusOf(err)
	if code == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfter)
	}
	writeError(w, code, err.Error())
}

func statusOf(err error) int {
	switch {
	case errors.Is(err, ErrNotLeader), errors.Is(err, ErrUnavailable):
		return http.StatusServiceUnavailable
	case errors.Is(err, ErrUnknownTarget):
		return http.StatusNotFound
	case errors.Is(err, ErrRefused):
		return http.StatusConflict
	case errors.Is(err, context.DeadlineExceeded):
		return http.StatusGatewayTimeout
	}
	return http.StatusInternalServerError
}

func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("invalid JSON body: %v", err))
		return false
	}
	return true
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	_ = enc.Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
