package notify

import (
	"context"
	"sync"
	"sync/atomic"
	"time"
)

type sentKey struct{}

// Sent notes, from inside Notify, that a message went out to the peer. A
// notifier that has nothing to say about an event (Slack posts no line
// per step) returns nil without calling it, and the delivery log shows no
// page for that event.
func Sent(ctx context.Context) {
	if f, ok := ctx.Value(sentKey{}).(*atomic.Bool); ok {
		f.Store(true)
	}
}

func withSentFlag(ctx context.Context) (context.Context, *atomic.Bool) {
	f := &atomic.Bool{}
	return context.WithValue(ctx, sentKey{}, f), f
}

// Delivery is the final outcome of one event at one notifier: what a
// human reads as "pages sent".
type Delivery struct {
	Time       time.Time `json:"time"`
	Notifier   string    `json:"notifier"`
	Kind       Kind      `json:"kind"`
	IncidentID string    `json:"incidentId,omitempty"`
	Summary    string    `json:"summary,omitempty"`
	// Result is ResultDelivered, ResultFailed or ResultDropped.
	Result   string `json:"result"`
	Attempts int    `json:"attempts"`
	// Error is the notifier's last error (scrubbed of secrets by it).
	Error string `json:"error,omitempty"`
}

// DeliveryLog keeps the most recent deliveries (events a notifier sent,
// or failed or dropped) in memory (bounded; lost
// on restart), for the console's incident page.
type DeliveryLog struct {
	mu      sync.Mutex
	max     int
	entries []Delivery
}

// NewDeliveryLog keeps the last max deliveries (1,000 when max <= 0).
func NewDeliveryLog(max int) *DeliveryLog {
	if max <= 0 {
		max = 1000
	}
	return &DeliveryLog{max: max}
}

func (l *DeliveryLog) add(d Delivery) {
	if l == nil {
		return
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.entries) >= l.max {
		// Drop the oldest half at once: amortised O(1) per add.
		n := copy(l.entries, l.entries[len(l.entries)-l.max/2:])
		l.entries = l.entries[:n]
	}
	l.entries = append(l.entries, d)
}

// ForIncident returns the deliveries of incident id, oldest first.
func (l *DeliveryLog) ForIncident(id string) []Delivery {
	l.mu.Lock()
	defer l.mu.Unlock()
	var out []Delivery
	for _, d := range l.entries {
		if d.IncidentID == id {
			out = append(out, d)
		}
	}
	return out
}
