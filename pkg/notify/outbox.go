package notify

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"time"
)

// DeliveryState is where one event stands at one notifier.
type DeliveryState string

// Delivery states kept in the Outbox.
const (
	// StatePending: not delivered yet; whoever owns the entry delivers it.
	StatePending DeliveryState = "pending"
	// StateClaimed: an attempt of an at-most-once notifier is in flight.
	// Whoever finds it claimed after a crash does not try again: the peer
	// may have the message already.
	StateClaimed DeliveryState = "claimed"
	// StateDone: delivered, given up or dropped; nobody delivers it again.
	StateDone DeliveryState = "done"
)

// Pending is one stored event and where each notifier stands with it.
type Pending struct {
	Event Event `json:"event"`
	// Owner is the identity of the rollguard delivering it.
	Owner string `json:"owner"`
	// Notifiers maps each notifier that has not finished with the event to
	// its state; a notifier that is done is removed, and an entry with
	// none left is deleted.
	Notifiers map[string]DeliveryState `json:"notifiers"`
	Updated   time.Time                `json:"updated"`
}

// Flush waits until a change handed to the Outbox is stored, or ctx ends.
type Flush func(ctx context.Context) error

// Outbox keeps the events a Queue has not delivered yet, outside the
// process, so that the next leader delivers what a crash left pending.
// Changes are applied in the order they are handed over; each returns a
// Flush to wait for it, and a caller that must not wait does not.
type Outbox interface {
	Add(entries []Pending) Flush
	Mark(e Event, notifier string, state DeliveryState) Flush
	// Own makes owner the deliverer of entries (a new leader adopting
	// what its predecessor left).
	Own(entries []Pending, owner string) Flush
	// Pending lists the stored entries, oldest event first.
	Pending(ctx context.Context) ([]Pending, error)
}

// AtMostOnce is implemented by a notifier whose peer cannot tell a repeat
// from a new message (a Slack webhook posts whatever it gets). With an
// Outbox, its attempts are claimed before they start, and an event found
// claimed after a crash is not sent again: a lost message is paged
// elsewhere (PagerDuty, whose dedup_key makes a repeat harmless), a
// duplicate in a channel is not taken back.
type AtMostOnce interface {
	AtMostOnce() bool
}

func atMostOnce(n Notifier) bool {
	a, ok := n.(AtMostOnce)
	return ok && a.AtMostOnce()
}

// NewEventID returns a random event identity.
func NewEventID() string {
	var b [12]byte
	_, _ = rand.Read(b[:])
	return hex.EncodeToString(b[:])
}
