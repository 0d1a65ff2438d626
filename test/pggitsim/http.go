package pggitsim

import (
	"errors"
	"fmt"
	"io"
	"net/http"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/test/jsonhttp"
)

// The Deployment that plain /health answers for, as the runbook's curl does.
const (
	healthNamespace  = "production"
	healthDeployment = "pggit-api"
	maxBody          = 1 << 20
)

// Handler serves /metrics, /health and the /control endpoints.
func (s *Simulator) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /health", func(w http.ResponseWriter, r *http.Request) {
		s.serveHealth(w, healthNamespace, healthDeployment)
	})
	mux.HandleFunc("GET /health/{ns}/{deploy}", func(w http.ResponseWriter, r *http.Request) {
		s.serveHealth(w, r.PathValue("ns"), r.PathValue("deploy"))
	})
	mux.HandleFunc("GET /control/versions", s.serveVersions)
	mux.HandleFunc("GET /control/profiles", func(w http.ResponseWriter, r *http.Request) {
		jsonhttp.Write(w, http.StatusOK, s.Profiles())
	})
	mux.HandleFunc("PUT /control/profiles/{tag}", s.putProfile)
	mux.HandleFunc("DELETE /control/profiles/{tag}", func(w http.ResponseWriter, r *http.Request) {
		s.ResetProfile(r.PathValue("tag"))
		jsonhttp.Write(w, http.StatusOK, s.profiles.get(r.PathValue("tag")))
	})
	mux.HandleFunc("POST /control/pg/hold", s.pgHold)
	mux.HandleFunc("POST /control/pg/release", func(w http.ResponseWriter, r *http.Request) {
		jsonhttp.Write(w, http.StatusOK, map[string]int{"released": s.pg.release()})
	})
	mux.HandleFunc("POST /control/pg/write", s.pgWrite)
	return mux
}

func (s *Simulator) serveHealth(w http.ResponseWriter, ns, name string) {
	h, err := s.Health(ns, name)
	if err != nil {
		s.logger.Debug("health check failed", zap.String("namespace", ns), zap.String("deployment", name), zap.Error(err))
		jsonhttp.Write(w, http.StatusServiceUnavailable, h)
		return
	}
	jsonhttp.Write(w, http.StatusOK, h)
}

func (s *Simulator) serveVersions(w http.ResponseWriter, _ *http.Request) {
	vs, err := s.Versions()
	if err != nil {
		jsonhttp.Error(w, http.StatusInternalServerError, err)
		return
	}
	jsonhttp.Write(w, http.StatusOK, vs)
}

func (s *Simulator) putProfile(w http.ResponseWriter, r *http.Request) {
	var p Profile
	if err := decodeJSON(w, r, &p); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err)
		return
	}
	if err := s.SetProfile(r.PathValue("tag"), p); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err)
		return
	}
	jsonhttp.Write(w, http.StatusOK, p)
}

// HoldRequest is the body of POST /control/pg/hold.
type HoldRequest struct {
	N int `json:"n"`
}

// pgHold answers 200 with the counts even when the server refused part of
// the hold: a refusal (53300) is the expected outcome of an exhaustion
// test, and the body says how far it got.
func (s *Simulator) pgHold(w http.ResponseWriter, r *http.Request) {
	var req HoldRequest
	if err := decodeJSON(w, r, &req); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err)
		return
	}
	if req.N <= 0 {
		jsonhttp.Error(w, http.StatusBadRequest, fmt.Errorf("n must be > 0, got %d", req.N))
		return
	}
	res, err := s.pg.hold(r.Context(), req.N)
	if errors.Is(err, ErrPGNotConfigured) {
		jsonhttp.Error(w, http.StatusServiceUnavailable, err)
		return
	}
	jsonhttp.Write(w, http.StatusOK, res)
}

// WriteRequest is the body of POST /control/pg/write.
type WriteRequest struct {
	Rows   int    `json:"rows"`
	Status string `json:"status"` // delivery_status, "pending" when empty
}

// WriteResult is the answer of POST /control/pg/write.
type WriteResult struct {
	Inserted int64  `json:"inserted"`
	Error    string `json:"error,omitempty"`
	SQLState string `json:"sqlstate,omitempty"`
}

func (s *Simulator) pgWrite(w http.ResponseWriter, r *http.Request) {
	var req WriteRequest
	if err := decodeJSON(w, r, &req); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err)
		return
	}
	if req.Rows <= 0 {
		jsonhttp.Error(w, http.StatusBadRequest, fmt.Errorf("rows must be > 0, got %d", req.Rows))
		return
	}
	if req.Status == "" {
		req.Status = "pending"
	}
	n, err := s.pg.write(r.Context(), req.Rows, req.Status)
	switch {
	case errors.Is(err, ErrPGNotConfigured):
		jsonhttp.Error(w, http.StatusServiceUnavailable, err)
	case err != nil:
		s.logger.Warn("writing alert delivery queue rows failed", zap.Error(err))
		jsonhttp.Write(w, http.StatusServiceUnavailable, WriteResult{Inserted: n, Error: err.Error(), SQLState: sqlState(err)})
	default:
		jsonhttp.Write(w, http.StatusOK, WriteResult{Inserted: n})
	}
}

func decodeJSON(w http.ResponseWriter, r *http.Request, v any) error {
	if err := jsonhttp.Decode(w, r, v, maxBody); err != nil {
		if errors.Is(err, io.EOF) {
			return errors.New("decode request body: empty body")
		}
		return fmt.Errorf("decode request body: %w", err)
	}
	return nil
}
