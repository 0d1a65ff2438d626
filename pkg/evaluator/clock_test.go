package evaluator

import (
	"testing"
	"time"
	"unsafe"
)

// stepped returns a reading of time.Now as it is after the system clock
// was stepped: the wall clock of wall, the monotonic clock of mono. Go has
// no API to build one (Add moves both), so the two halves of time.Time are
// spliced; the checks below catch a change of its layout.
func stepped(t *testing.T, mono, wall time.Time) time.Time {
	t.Helper()
	type rep struct {
		wall uint64
		ext  int64
		loc  *time.Location
	}
	if unsafe.Sizeof(time.Time{}) != unsafe.Sizeof(rep{}) {
		t.Skip("time.Time layout changed: cannot build a stepped clock reading")
	}
	r := *(*rep)(unsafe.Pointer(&wall))
	r.ext = (*rep)(unsafe.Pointer(&mono)).ext
	out := *(*time.Time)(unsafe.Pointer(&r))
	if !out.Round(0).Equal(wall.Round(0)) || out.Sub(mono) != 0 {
		t.Skip("time.Time layout changed: cannot build a stepped clock reading")
	}
	return out
}

// A clock that was wrong when rollguard started (and stepped right by NTP
// since) must not shift every query for the life of the process: a tick is
// stamped by the wall clock it is evaluated at, on the interval's phase,
// not by the start's wall clock plus the monotonic time since.
func TestTickStampFollowsTheWallClock(t *testing.T) {
	iv := 5 * time.Second
	base := time.Now() // with a monotonic reading, as Run's first one
	for _, step := range []time.Duration{time.Hour, -10 * time.Minute, 7 * time.Second} {
		t.Run("clock stepped "+step.String(), func(t *testing.T) {
			elapsed := 10*time.Minute + 20*time.Millisecond
			mono := base.Add(elapsed)
			now := stepped(t, mono, mono.Add(step))
			got := slot(base, now, iv)
			if d := got.Round(0).Sub(now.Round(0)); d < -iv/2 || d > iv/2 {
				t.Errorf("stamped %v from the wall clock %v: the start's clock, not the current one", d, now.Round(0).Format(time.RFC3339Nano))
			}
			// Still on the interval's phase.
			if off := got.Round(0).Sub(base.Round(0)) % iv; off != 0 {
				t.Errorf("stamp off the interval's phase by %v", off)
			}
		})
	}
}
