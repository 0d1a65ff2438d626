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
	Alerts(ctx context.Context, reqs []alertmanager.Request) ([]ActionResult, error)
	Reload(ctx context.Context) error
	AlertOptions() alertmanager.Options
}

// ErrUnknownTarget is returned (and mapped to 404) for a target that is not
// in the config.
var ErrUnknownTarget = errors.New("unknown target")

// ErrRefused is returned (and mapped to 409) when an interlock blocked the
// request.
var ErrRefused = errors.New("refused")

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
}

// ActionResult says what became of a request.
type ActionResult struct {
	Target   string `json:"target"`
	Action   string `json:"action"`
	Accepted bool   `json:"accepted"`
	Detail   string `json:"detail"`
}

// FreezeRequest is the body of the freeze endpoints.
type FreezeRequest struct {
	Reason string `json:"reason"`
}

// Options configure the handler.
type Options struct {
	// Token is the bearer token for mutating endpoints; empty disables them.
	Token     []byte
	Gatherer  prometheus.Gatherer
	Incidents http.Handler // serves /api/v1/incidents and /api/v1/incidents/{id}
	// RequestTimeout bounds each mutating request's work.
	RequestTimeout time.Duration
	// Console serves the web console at / (nil: none).
	Console http.Handler
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
	mux.HandleFunc("POST /api/v1/targets/{target}/rollback", h.auth(h.rollback))
	mux.HandleFunc("POST /api/v1/targets/{target}/freeze", h.auth(h.freeze(true)))
	mux.HandleFunc("POST /api/v1/targets/{target}/unfreeze", h.auth(h.freeze(false)))
	mux.HandleFunc("POST /api/v1/alerts/alertmanager", h.auth(h.alerts))
	if o.GitOps != nil {
		mux.HandleFunc("POST /api/v1/targets/{target}/resume-gitops", h.auth(h.resumeGitOps))
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

func (h *handler) auth(next http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		if len(h.o.Token) == 0 {
			writeError(w, http.StatusForbidden, "mutating endpoints are disabled: no API token configured (global.api.tokenFile)")
			return
		}
		got, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || got == "" {
			w.Header().Set("WWW-Authenticate", `Bearer realm="rollguard"`)
			writeError(w, http.StatusUnauthorized, "missing bearer token")
			return
		}
		if subtle.ConstantTimeCompare([]byte(got), h.o.Token) != 1 {
			h.log.Warn("api request with a wrong token", zap.String("path", r.URL.Path), zap.String("remote", r.RemoteAddr))
			writeError(w, http.StatusForbidden, "wrong bearer token")
			return
		}
		next(w, r)
	}
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
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusBadRequest, "reason: must not be empty")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	defer cancel()
	res, err := h.c.Rollback(ctx, req)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusAccepted, res)
}

func (h *handler) freeze(frozen bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		var req FreezeRequest
		if !decode(w, r, &req) {
			return
		}
		if strings.TrimSpace(req.Reason) == "" {
			writeError(w, http.StatusBadRequest, "reason: must not be empty")
			return
		}
		ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
		defer cancel()
		if err := h.c.SetFreeze(ctx, r.PathValue("target"), frozen, req.Reason); err != nil {
			writeError(w, statusOf(err), err.Error())
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"target": r.PathValue("target"), "frozen": frozen})
	}
}

func (h *handler) resumeGitOps(w http.ResponseWriter, r *http.Request) {
	var req ResumeRequest
	if !decode(w, r, &req) {
		return
	}
	if strings.TrimSpace(req.Reason) == "" {
		writeError(w, http.StatusBadRequest, "reason: must not be empty")
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	defer cancel()
	detail, err := h.o.GitOps.ResumeGitOps(ctx, r.PathValue("target"), req.Reason)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"target": r.PathValue("target"), "detail": detail})
}

func (h *handler) alerts(w http.ResponseWriter, r *http.Request) {
	reqs, err := alertmanager.Parse(r.Body, h.c.AlertOptions())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), h.o.RequestTimeout)
	defer cancel()
	res, err := h.c.Alerts(ctx, reqs)
	if err != nil {
		writeError(w, statusOf(err), err.Error())
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"results": res})
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

func statusOf(err error) int {
	switch {
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
