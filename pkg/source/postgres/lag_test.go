package postgres

import (
	"math"
	"testing"
	"time"
)

func TestSlotLag(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	at := func(s float64) time.Time { return t0.Add(time.Duration(s * float64(time.Second))) }
	ptr := func(v float64) *float64 { return &v }

	type obs struct {
		at        float64 // seconds after t0
		current   uint64  // primary's flushed position
		confirmed uint64  // slot's confirmed position
		serverLag *float64
		want      float64
	}
	tests := []struct {
		name string
		obs  []obs
	}{
		{
			name: "idle caught-up link with NULL lag columns reads 0",
			obs: []obs{
				{at: 0, current: 1000, confirmed: 1000, want: 0},
				{at: 5, current: 1000, confirmed: 1000, want: 0},
				{at: 3600, current: 1000, confirmed: 1000, want: 0},
			},
		},
		{
			name: "caught up wins over a lingering lag column",
			obs:  []obs{{at: 0, current: 1000, confirmed: 1000, serverLag: ptr(0.8), want: 0}},
		},
		{
			name: "disabled subscription: lag grows from the last caught-up time",
			obs: []obs{
				{at: 0, current: 1000, confirmed: 1000, want: 0},
				// Idle for an hour, then writes arrive while disabled: the
				// primary was still at 1000 at 3600 s.
				{at: 3600, current: 1000, confirmed: 1000, want: 0},
				{at: 3605, current: 5000, confirmed: 1000, want: 5},
				{at: 3610, current: 9000, confirmed: 1000, want: 10},
				{at: 3640, current: 9000, confirmed: 1000, want: 40},
			},
		},
		{
			name: "re-enabled: catches up to 0",
			obs: []obs{
				{at: 0, current: 1000, confirmed: 1000, want: 0},
				{at: 5, current: 5000, confirmed: 1000, want: 5},
				{at: 10, current: 9000, confirmed: 5000, want: 5},
				{at: 15, current: 9000, confirmed: 9000, want: 0},
			},
		},
		{
			name: "behind since before the first read: lower bound that grows",
			obs: []obs{
				{at: 0, current: 9000, confirmed: 1000, want: 0},
				{at: 5, current: 9500, confirmed: 1000, want: 5},
				{at: 65, current: 9500, confirmed: 1000, want: 65},
			},
		},
		{
			name: "walsender's own larger measurement is taken",
			obs: []obs{
				{at: 0, current: 9000, confirmed: 1000, serverLag: ptr(120), want: 120},
				{at: 5, current: 9000, confirmed: 1000, serverLag: ptr(math.NaN()), want: 5},
			},
		},
		{
			name: "busy healthy link: interpolated, not a whole interval",
			obs: []obs{
				{at: 0, current: 0, confirmed: 0, want: 0},
				{at: 10, current: 10000, confirmed: 9900, want: 0.1},
				{at: 20, current: 20000, confirmed: 19000, want: 1},
			},
		},
		{
			name: "a primary whose WAL goes backwards (restored) starts afresh",
			obs: []obs{
				{at: 0, current: 9000, confirmed: 9000, want: 0},
				{at: 5, current: 500, confirmed: 100, want: 0},
				{at: 8, current: 600, confirmed: 100, want: 3},
			},
		},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			h := newLagHistory(lagHistoryCap)
			for i, o := range tc.obs {
				now := at(o.at)
				h.record(now, o.current)
				got := slotLag(now, o.current, o.confirmed, o.serverLag, h)
				if math.Abs(got-o.want) > 1e-6 {
					t.Errorf("read %d at +%vs: lag %v, want %v", i, o.at, got, o.want)
				}
			}
		})
	}
}

func TestLagHistoryBounded(t *testing.T) {
	t0 := time.Unix(1700000000, 0)
	h := newLagHistory(16)
	// A slot stuck at position 10 while the primary writes for a day at
	// one read every 5 s: memory stays bounded and the lag keeps growing
	// from the first time the primary passed 10.
	const reads = 24 * 3600 / 5
	for i := 1; i <= reads; i++ {
		now := t0.Add(time.Duration(i) * 5 * time.Second)
		h.record(now, uint64(100*i))
		if len(h.points) > 16 {
			t.Fatalf("history grew to %d points", len(h.points))
		}
		if i == reads {
			got := slotLag(now, uint64(100*i), 10, nil, h)
			if want := float64(reads-1) * 5; got != want {
				t.Errorf("lag after a day %v, want %v", got, want)
			}
			// A slot that confirmed a recent position still reads a small
			// lag after thinning (one thinned interval at most).
			if got := slotLag(now, uint64(100*i), uint64(100*(i-1)), nil, h); got > 5+1e-6 || got < 0 {
				t.Errorf("recent slot lag %v, want within one read", got)
			}
		}
	}
}
