package receiver

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net/url"
	"strings"
)

// Limits of the PagerDuty Events API v2.
const (
	maxEventBytes   = 512 * 1024
	maxDedupKeyLen  = 255
	maxSummaryLen   = 1024
	eventsInvalid   = "invalid event"
	eventsInvalidMs = "Event object is invalid"
)

// pdEvent is the part of an Events API v2 event the receiver checks.
// Pointers tell "absent" from "empty".
type pdEvent struct {
	RoutingKey  *string    `json:"routing_key"`
	EventAction *string    `json:"event_action"`
	DedupKey    *string    `json:"dedup_key"`
	Payload     *pdPayload `json:"payload"`
}

type pdPayload struct {
	Summary  *string `json:"summary"`
	Source   *string `json:"source"`
	Severity *string `json:"severity"`
}

// EventResponse is the body PagerDuty answers to /v2/enqueue.
type EventResponse struct {
	Status   string   `json:"status"`
	Message  string   `json:"message"`
	DedupKey string   `json:"dedup_key,omitempty"`
	Errors   []string `json:"errors,omitempty"`
}

func blank(s *string) bool { return s == nil || strings.TrimSpace(*s) == "" }

// validateEvent returns PagerDuty's error strings for an invalid event.
// The routing key is only required non-empty: real keys are 32 characters,
// but tests use readable ones.
func validateEvent(body []byte) (pdEvent, []string) {
	var ev pdEvent
	if len(body) > maxEventBytes {
		return ev, []string{"Event object is too large (max 512 KB)"}
	}
	if err := json.Unmarshal(body, &ev); err != nil {
		return ev, []string{"Invalid JSON: " + err.Error()}
	}
	var errs []string
	if blank(ev.RoutingKey) {
		errs = append(errs, "'routing_key' is missing or blank")
	}
	action := ""
	if ev.EventAction != nil {
		action = *ev.EventAction
	}
	switch action {
	case "trigger", "acknowledge", "resolve":
	case "":
		errs = append(errs, "'event_action' is missing or blank")
	default:
		errs = append(errs, "'event_action' is invalid (must be one of: trigger, acknowledge, resolve)")
	}
	if ev.DedupKey != nil && len(*ev.DedupKey) > maxDedupKeyLen {
		errs = append(errs, "'dedup_key' is too long (max 255 characters)")
	}
	if (action == "acknowledge" || action == "resolve") && blank(ev.DedupKey) {
		errs = append(errs, "'dedup_key' is missing or blank (required for "+action+")")
	}
	if action == "trigger" {
		errs = append(errs, validatePayload(ev.Payload)...)
	}
	return ev, errs
}

func validatePayload(p *pdPayload) []string {
	if p == nil {
		return []string{"'payload' is missing"}
	}
	var errs []string
	switch {
	case blank(p.Summary):
		errs = append(errs, "'payload.summary' is missing or blank")
	case len(*p.Summary) > maxSummaryLen:
		errs = append(errs, "'payload.summary' is too long (max 1024 characters)")
	}
	if blank(p.Source) {
		errs = append(errs, "'payload.source' is missing or blank")
	}
	switch {
	case blank(p.Severity):
		errs = append(errs, "'payload.severity' is missing or blank")
	case !validSeverity(*p.Severity):
		errs = append(errs, "'payload.severity' is invalid (must be one of: critical, error, warning, info)")
	}
	return errs
}

func validSeverity(s string) bool {
	switch s {
	case "critical", "error", "warning", "info":
		return true
	}
	return false
}

func (rc *Receiver) pagerDutyEvent(body []byte) answer {
	ev, errs := validateEvent(body)
	if len(errs) > 0 {
		return jsonAnswer(400, EventResponse{Status: eventsInvalid, Message: eventsInvalidMs, Errors: errs})
	}
	key := ""
	if ev.DedupKey != nil {
		key = *ev.DedupKey
	}
	if key == "" {
		// PagerDuty makes one up for a trigger without a dedup_key.
		key = rc.newKey()
	}
	return jsonAnswer(202, EventResponse{Status: "success", Message: "Event processed", DedupKey: key})
}

func pagerDutyChange(body []byte) answer {
	var ev pdEvent
	var errs []string
	switch {
	case len(body) > maxEventBytes:
		errs = []string{"Event object is too large (max 512 KB)"}
	case json.Unmarshal(body, &ev) != nil:
		errs = []string{"Invalid JSON"}
	default:
		if blank(ev.RoutingKey) {
			errs = append(errs, "'routing_key' is missing or blank")
		}
		switch {
		case ev.Payload == nil:
			errs = append(errs, "'payload' is missing")
		case blank(ev.Payload.Summary):
			errs = append(errs, "'payload.summary' is missing or blank")
		case len(*ev.Payload.Summary) > maxSummaryLen:
			errs = append(errs, "'payload.summary' is too long (max 1024 characters)")
		}
	}
	if len(errs) > 0 {
		return jsonAnswer(400, EventResponse{Status: eventsInvalid, Message: eventsInvalidMs, Errors: errs})
	}
	return jsonAnswer(202, EventResponse{Status: "success", Message: "Change event processed"})
}

// slackWebhook accepts what Slack's incoming webhooks accept: a JSON object
// with a non-empty text or blocks, as the body or as the form field
// payload.
func slackWebhook(contentType string, body []byte) answer {
	if strings.HasPrefix(contentType, "application/x-www-form-urlencoded") && !json.Valid(body) {
		// curl -d sends JSON with this content type too: only a body that
		// is not JSON is read as a form.
		vals, err := url.ParseQuery(string(body))
		if err != nil {
			return textAnswer(400, "invalid_payload")
		}
		body = []byte(vals.Get("payload"))
	}
	var msg struct {
		Text   *string           `json:"text"`
		Blocks []json.RawMessage `json:"blocks"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	if err := dec.Decode(&msg); err != nil || (blank(msg.Text) && len(msg.Blocks) == 0) {
		return textAnswer(400, "invalid_payload")
	}
	return textAnswer(200, "ok")
}

// genericWebhook accepts what a typical JSON webhook endpoint accepts: a
// JSON object sent as application/json.
func genericWebhook(contentType string, body []byte) answer {
	var obj map[string]json.RawMessage
	switch {
	case !strings.HasPrefix(contentType, "application/json"):
		return jsonAnswer(415, map[string]string{"error": "want application/json"})
	case json.Unmarshal(body, &obj) != nil || obj == nil:
		return jsonAnswer(400, map[string]string{"error": "want a JSON object"})
	}
	return jsonAnswer(200, map[string]bool{"ok": true})
}

func jsonAnswer(status int, v any) answer {
	b, err := json.Marshal(v)
	if err != nil {
		return textAnswer(500, "encode response: "+err.Error())
	}
	return answer{status: status, contentType: "application/json", body: b}
}

func textAnswer(status int, body string) answer {
	return answer{status: status, contentType: "text/html", body: []byte(body)}
}

// randomKey is a dedup key like PagerDuty's: 32 hex characters.
func randomKey() string {
	b := make([]byte, 16)
	_, _ = rand.Read(b) // crypto/rand.Read never fails on Linux
	return hex.EncodeToString(b)
}
