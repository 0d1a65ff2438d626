package postgres

import (
	"sort"
	"time"
)

// lagHistoryCap bounds the history. At a 5 s tick 256 entries cover about
// 21 minutes at full resolution; past that, thinning halves the resolution
// of the older part, so memory stays fixed however long a slot is stuck.
const lagHistoryCap = 256

// lagPoint is a flushed WAL position of the primary and the first and last
// times it was seen there.
type lagPoint struct {
	first, last time.Time
	lsn         uint64
}

// lagHistory remembers when the primary's WAL reached which position, so a
// slot's confirmed position can be turned into an age: if the subscriber
// has confirmed position P, and the primary's WAL was at or before P at
// time T, the subscriber has everything written up to T and its data is at
// most now − T old.
//
// PostgreSQL 15 has no such clock itself: pg_stat_replication's lag
// columns go NULL on an idle caught-up link and disappear with the
// walsender when a subscription is disabled, and pg_replication_slots has
// no "inactive since" (PostgreSQL 17 adds one).
type lagHistory struct {
	cap    int
	points []lagPoint // time and lsn both non-decreasing
}

func newLagHistory(capacity int) *lagHistory {
	return &lagHistory{cap: max(capacity, 3)}
}

// record adds an observation. A position lower than the last one (a
// restored or replaced primary) starts the history afresh.
func (h *lagHistory) record(at time.Time, lsn uint64) {
	if n := len(h.points); n > 0 {
		last := &h.points[n-1]
		if lsn < last.lsn || at.Before(last.last) {
			h.points = h.points[:0]
		} else if lsn == last.lsn {
			// An idle primary: it was still at this position now, so a
			// subscriber that confirmed it was current until now.
			last.last = at
			return
		}
	}
	if len(h.points) == h.cap {
		h.thin()
	}
	h.points = append(h.points, lagPoint{first: at, last: at, lsn: lsn})
}

// thin drops every second point but keeps the first, so the oldest time,
// which the lower bound is measured from, is never lost. Dropping a point
// only makes later answers more pessimistic (an older time), never hides lag.
func (h *lagHistory) thin() {
	kept := h.points[:1]
	for i := 2; i < len(h.points); i += 2 {
		kept = append(kept, h.points[i])
	}
	h.points = kept
}

// confirmedAt estimates when the primary's flushed position passed lsn:
// the subscriber has everything written up to then. Between two
// observations the position is interpolated linearly (WAL written at an
// even rate between two queries), so a busy, healthy link reads a lag of
// about its real delay rather than a whole query interval. When lsn is
// older than the whole history, it returns the first time the primary was
// seen past it (a lower bound on the lag that grows as long as the slot
// stays behind). When lsn is at or past the newest position, it returns
// that position's last time.
func (h *lagHistory) confirmedAt(lsn uint64) time.Time {
	if len(h.points) == 0 {
		return time.Time{}
	}
	// First point with a position past lsn.
	i := sort.Search(len(h.points), func(i int) bool { return h.points[i].lsn > lsn })
	switch i {
	case 0:
		return h.points[0].first
	case len(h.points):
		return h.points[i-1].last
	}
	a, b := h.points[i-1], h.points[i]
	frac := float64(lsn-a.lsn) / float64(b.lsn-a.lsn)
	return a.last.Add(time.Duration(frac * float64(b.first.Sub(a.last))))
}
