package sandboxfixture

import (
	"context"
	"fmt"
	"testing"
	"time"
)

// WaitFor polls check every poll until it reports done, logging progress
// every 5 s, and fails the test at the deadline with the last status. Each
// check gets its own 5 s context so one hung call cannot eat the deadline.
func WaitFor(t testing.TB, what string, timeout, poll time.Duration, check func(ctx context.Context) (done bool, status string, err error)) {
	t.Helper()
	start := time.Now()
	deadline := start.Add(timeout)
	lastLog := start
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		done, status, err := check(ctx)
		cancel()
		if err != nil {
			status = fmt.Sprintf("%s (error: %v)", status, err)
		}
		if done {
			t.Logf("%s: ok after %v (%s)", what, time.Since(start).Round(time.Millisecond), status)
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("%s: not reached within %v; last: %s", what, timeout, status)
		}
		if time.Since(lastLog) >= 5*time.Second {
			t.Logf("%s: waiting %v: %s", what, time.Since(start).Round(time.Second), status)
			lastLog = time.Now()
		}
		time.Sleep(poll)
	}
}
