package incident

import (
	"encoding/json"
	"errors"
	"fmt"
)

// Size bounds of a stored record. A record is folded from events as they
// come, and a trigger that flaps for days or a plan retried many times
// could grow it without end; the bound keeps it storable (a ConfigMap
// holds 1 MiB) and the rule is fixed so a reader knows what is missing:
//
//   - timeline: at most MaxTimeline entries, the first FirstTimeline and
//     the newest ones; the entries between are cut;
//   - evidence samples: the newest MaxSamples (the end of the window is
//     what fired);
//   - requests (who asked): the first FirstRequests and the newest ones,
//     at most MaxRequests;
//   - free text (summary, reason, error, verification, each step's error):
//     MaxText bytes each, cut at a rune with an ellipsis.
//
// Record.Omitted counts what was cut, by field, and the Markdown report
// says so. A record still over MaxJSONBytes (JSON) or MaxMarkdownBytes
// (the rendered report) after that is refused with ErrTooLarge.
const (
	MaxTimeline      = 500
	FirstTimeline    = 100
	MaxSamples       = 720
	MaxRequests      = 100
	FirstRequests    = 10
	MaxText          = 4 << 10
	MaxJSONBytes     = 512 << 10
	MaxMarkdownBytes = 320 << 10
)

// Sentinel errors of stored records.
var (
	// ErrTooLarge: the record is over its size bound even after Bound.
	ErrTooLarge = errors.New("incident record too large")
	// ErrInvalidRecord: the record lacks what identifies it.
	ErrInvalidRecord = errors.New("invalid incident record")
)

// Bound applies the size rule above to r, counting what it cuts in
// r.Omitted.
func (r *Record) Bound() {
	if n := len(r.Timeline); n > MaxTimeline {
		keep := append(r.Timeline[:FirstTimeline:FirstTimeline], r.Timeline[n-(MaxTimeline-FirstTimeline):]...)
		r.omit("timeline", n-len(keep))
		r.Timeline = keep
	}
	if n := len(r.Evidence.Samples); n > MaxSamples {
		r.omit("evidence.samples", n-MaxSamples)
		r.Evidence.Samples = append(r.Evidence.Samples[:0:0], r.Evidence.Samples[n-MaxSamples:]...)
	}
	if n := len(r.Requests); n > MaxRequests {
		keep := append(r.Requests[:FirstRequests:FirstRequests], r.Requests[n-(MaxRequests-FirstRequests):]...)
		r.omit("requests", n-len(keep))
		r.Requests = keep
	}
	for _, f := range []struct {
		name string
		s    *string
	}{{"summary", &r.Summary}, {"reason", &r.Reason}, {"error", &r.Error}, {"verification", &r.Verification}} {
		if len(*f.s) > MaxText {
			*f.s = truncate(*f.s, MaxText)
			r.omit(f.name+".bytes", 1)
		}
	}
	for i := range r.Steps {
		if len(r.Steps[i].Error) > MaxText {
			r.Steps[i].Error = truncate(r.Steps[i].Error, MaxText)
			r.omit("steps.error.bytes", 1)
		}
	}
}

func (r *Record) omit(field string, n int) {
	if r.Omitted == nil {
		r.Omitted = map[string]int{}
	}
	r.Omitted[field] += n
}

func truncate(s string, n int) string {
	const ell = "…"
	cut := n - len(ell)
	for cut > 0 && s[cut]&0xC0 == 0x80 {
		cut--
	}
	return s[:cut] + ell
}

// Validate checks what a stored record must have.
func (r *Record) Validate() error {
	if err := checkID(r.ID); err != nil {
		return fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	if r.Target == "" {
		return fmt.Errorf("%w: incident %s: no target", ErrInvalidRecord, r.ID)
	}
	if r.OpenedAt.IsZero() {
		return fmt.Errorf("%w: incident %s: no openedAt", ErrInvalidRecord, r.ID)
	}
	return nil
}

// Encode bounds r, renders it and checks the sizes: the stored JSON and
// the Markdown report.
func Encode(r *Record, tmpl Template) (js []byte, md string, err error) {
	if err := r.Validate(); err != nil {
		return nil, "", err
	}
	r.Bound()
	r.EmailEscalation = EmailText(r, tmpl)
	js, err = json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, "", fmt.Errorf("incident %s: encode: %w", r.ID, err)
	}
	if len(js) > MaxJSONBytes {
		return nil, "", fmt.Errorf("incident %s: %d bytes of JSON, at most %d: %w", r.ID, len(js), MaxJSONBytes, ErrTooLarge)
	}
	md = Markdown(r, tmpl)
	if len(md) > MaxMarkdownBytes {
		return nil, "", fmt.Errorf("incident %s: %d bytes of Markdown, at most %d: %w", r.ID, len(md), MaxMarkdownBytes, ErrTooLarge)
	}
	return js, md, nil
}

// Decode reads a stored record, checking it is one.
func Decode(b []byte) (*Record, error) {
	var r Record
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%w: %w", ErrInvalidRecord, err)
	}
	if err := r.Validate(); err != nil {
		return nil, err
	}
	return &r, nil
}
