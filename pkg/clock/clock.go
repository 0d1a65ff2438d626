// Package clock holds the waiting rollguard does between attempts: a
// sleep that the caller's context cuts short, so a drain or a shutdown
// never waits out a backoff.
package clock

import (
	"context"
	"time"
)

// Sleep waits d, or returns ctx's error as soon as ctx ends.
func Sleep(ctx context.Context, d time.Duration) error {
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return ctx.Err()
	case <-t.C:
		return nil
	}
}
