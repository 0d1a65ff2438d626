package receiver

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"strings"
)

// FaultRequest is the body of POST /_/faults.
type FaultRequest struct {
	Path      string     `json:"path"`
	Responses []Response `json:"responses"`
}

// Faults returns the faults still to be played, by path.
func (rc *Receiver) Faults() map[string][]Response {
	rc.mu.Lock()
	defer rc.mu.Unlock()
	out := make(map[string][]Response, len(rc.faults))
	for p, q := range rc.faults {
		out[p] = append([]Response(nil), q...)
	}
	return out
}

// serveControl serves the /_/ endpoints tests drive the receiver with.
// They are not recorded.
func (rc *Receiver) serveControl(w http.ResponseWriter, r *http.Request) {
	switch strings.TrimPrefix(r.URL.Path, controlPrefix) {
	case "faults":
		switch r.Method {
		case http.MethodPost:
			rc.postFaults(w, r)
		case http.MethodGet:
			writeJSON(w, http.StatusOK, rc.Faults())
		default:
			writeError(w, http.StatusMethodNotAllowed, errors.New("use GET or POST"))
		}
	case "received":
		if r.Method != http.MethodGet {
			writeError(w, http.StatusMethodNotAllowed, errors.New("use GET"))
			return
		}
		writeJSON(w, http.StatusOK, rc.Received(r.URL.Query().Get("path")))
	case "reset":
		if r.Method != http.MethodPost {
			writeError(w, http.StatusMethodNotAllowed, errors.New("use POST"))
			return
		}
		rc.Reset()
		writeJSON(w, http.StatusOK, map[string]string{"status": "reset"})
	default:
		writeError(w, http.StatusNotFound, fmt.Errorf("no control endpoint %s", r.URL.Path))
	}
}

func (rc *Receiver) postFaults(w http.ResponseWriter, r *http.Request) {
	var req FaultRequest
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, fmt.Errorf("decode faults: %w", err))
		return
	}
	if err := rc.SetFaults(req.Path, req.Responses); err != nil {
		writeError(w, http.StatusBadRequest, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"path": req.Path, "queued": len(req.Responses)})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

func writeError(w http.ResponseWriter, code int, err error) {
	writeJSON(w, code, map[string]string{"error": err.Error()})
}
