// Package jsonhttp is the JSON over HTTP of the sandbox's fake services'
// control endpoints (the simulator's, the receiver's): a request body
// decoded strictly, an answer or an error as a JSON body.
package jsonhttp

import (
	"encoding/json"
	"net/http"
)

// Decode decodes r's body into v, refusing unknown fields and a body over
// limit bytes. An empty body is io.EOF.
func Decode(w http.ResponseWriter, r *http.Request, v any, limit int64) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, limit))
	dec.DisallowUnknownFields()
	return dec.Decode(v)
}

// Write answers code with v as JSON.
func Write(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v) // the client may be gone; nothing to do
}

// Error answers code with {"error": err}.
func Error(w http.ResponseWriter, code int, err error) {
	Write(w, code, map[string]string{"error": err.Error()})
}
