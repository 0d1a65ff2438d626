package notify

import "context"

// Filter returns a Notifier that passes to n only the events keep accepts
// and reports the others delivered; e.g. per-target opt-outs
// (targets[].notify.slack: false) or dry-run notifications turned off.
func Filter(n Notifier, keep func(Event) bool) Notifier {
	return &filtered{n: n, keep: keep}
}

type filtered struct {
	n    Notifier
	keep func(Event) bool
}

func (f *filtered) Name() string { return f.n.Name() }

func (f *filtered) Notify(ctx context.Context, e Event) error {
	if !f.keep(e) {
		return nil
	}
	return f.n.Notify(ctx, e)
}

// AtMostOnce passes on the filtered notifier's delivery guarantee.
func (f *filtered) AtMostOnce() bool { return atMostOnce(f.n) }
