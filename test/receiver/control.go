package receiver

import (
	"errors"
	"fmt"
	"net/http"
	"strings"

	"github.com/rollguard/rollguard/test/jsonhttp"
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
			jsonhttp.Write(w, http.StatusOK, rc.Faults())
		default:
			jsonhttp.Error(w, http.StatusMethodNotAllowed, errors.New("use GET or POST"))
		}
	case "received":
		if r.Method != http.MethodGet {
			jsonhttp.Error(w, http.StatusMethodNotAllowed, errors.New("use GET"))
			return
		}
		jsonhttp.Write(w, http.StatusOK, rc.Received(r.URL.Query().Get("path")))
	case "reset":
		if r.Method != http.MethodPost {
			jsonhttp.Error(w, http.StatusMethodNotAllowed, errors.New("use POST"))
			return
		}
		rc.Reset()
		jsonhttp.Write(w, http.StatusOK, map[string]string{"status": "reset"})
	default:
		jsonhttp.Error(w, http.StatusNotFound, fmt.Errorf("no control endpoint %s", r.URL.Path))
	}
}

func (rc *Receiver) postFaults(w http.ResponseWriter, r *http.Request) {
	var req FaultRequest
	if err := jsonhttp.Decode(w, r, &req, maxBody); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, fmt.Errorf("decode faults: %w", err))
		return
	}
	if err := rc.SetFaults(req.Path, req.Responses); err != nil {
		jsonhttp.Error(w, http.StatusBadRequest, err)
		return
	}
	jsonhttp.Write(w, http.StatusOK, map[string]any{"path": req.Path, "queued": len(req.Responses)})
}
