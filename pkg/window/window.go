// Package window is the sliding "for" window of one trigger (docs/design.md §2).
//
// It is pure: it has no clock of its own; every observation carries its
// time, so tests and backtests are exact. A window FIRES at t only when
// every sample in [t−for, t] breached, the first breaching sample of the
// current run is at or before t−for, and no two consecutive samples are
// further apart than maxGap.
//
// Memory is O(1) plus a ring of the most recent samples kept as evidence;
// the ring's capacity is fixed at construction (see Config.Capacity), so
// nothing grows with uptime. When samples come faster than the ring can
// hold a whole window (a trigger sampled every second with a 60 s window),
// Config.Spacing thins the evidence; the state is always computed from
// every sample.
package window

import (
	"encoding/json"
	"fmt"
	"math"
	"time"
)

// Kind classifies one observation.
type Kind uint8

const (
	// OK is a sample that did not breach the threshold. It resets the run.
	OK Kind = iota
	// Breach is a sample that breached the threshold.
	Breach
	// NoData is a missing, non-finite or failed sample. It resets the
	// run, like Prometheus `for`: missing data is never evidence of a
	// breach.
	NoData
	// LowVolume is a sample taken while the traffic was below the
	// trigger's volume guard: too little to judge a ratio by. It resets
	// the run like NoData, but the trigger is not blind: it knows the
	// traffic, and that it is low.
	LowVolume
)

var kindNames = [...]string{OK: "ok", Breach: "breach", NoData: "nodata", LowVolume: "lowvolume"}

func (k Kind) String() string {
	if int(k) < len(kindNames) {
		return kindNames[k]
	}
	return "unknown"
}

// MarshalText renders the kind by name in JSON and YAML.
func (k Kind) MarshalText() ([]byte, error) { return []byte(k.String()), nil }

// State is the derived state of a window.
type State uint8

const (
	// StateNoData is the state before the first sample and after a NoData
	// sample: the trigger is blind.
	StateNoData State = iota
	// StateOK follows a non-breaching sample.
	StateOK
	// StatePending is a breaching run shorter than `for`.
	StatePending
	// StateFiring is a breaching run of at least `for`.
	StateFiring
	// StateLowVolume follows a LowVolume sample: the traffic is below the
	// volume guard (a quiet night), which is not blindness.
	StateLowVolume
)

// States lists every state, for metrics that export one series per state.
var States = [...]State{StateNoData, StateOK, StatePending, StateFiring, StateLowVolume}

var stateNames = [...]string{StateNoData: "nodata", StateOK: "ok", StatePending: "pending", StateFiring: "firing", StateLowVolume: "lowvolume"}

func (s State) String() string {
	if int(s) < len(stateNames) {
		return stateNames[s]
	}
	return "unknown"
}

// MarshalText renders the state by name in JSON and YAML.
func (s State) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// UnmarshalText reads a state name (the status API's clients).
func (s *State) UnmarshalText(b []byte) error {
	for i, n := range stateNames {
		if n == string(b) {
			*s = State(i)
			return nil
		}
	}
	return fmt.Errorf("unknown window state %q", b)
}

// Sample is one observation as kept for evidence.
type Sample struct {
	Time time.Time
	// Value is the observed number; NaN when the observation had none
	// (an error, an empty result).
	Value float64
	Kind  Kind
}

// MarshalJSON writes NaN and ±Inf as null: encoding/json refuses them, and
// evidence must always serialise into the incident record.
func (s Sample) MarshalJSON() ([]byte, error) {
	var v *float64
	if !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0) {
		v = &s.Value
	}
	return json.Marshal(struct {
		Time  time.Time `json:"time"`
		Value *float64  `json:"value"`
		Kind  Kind      `json:"kind"`
	}{s.Time, v, s.Kind})
}

const (
	// DefaultCapacity is the evidence ring size when Config.Capacity is 0.
	DefaultCapacity = 32
	// MaxCapacity bounds the ring whatever the configuration: evidence is
	// for humans, and 10,000 triggers × 64 samples × 24 B is 15 MB.
	MaxCapacity = 64
)

// DefaultMaxGap is the maxGap of a trigger sampled every interval that
// names none: one missed sample (a slow query, a skipped tick) still
// counts as a continuous run, two in a row restart it, so a stalled
// sampler never reads as a breach held for the whole window. The config's
// defaults, the evaluator and the backtest all take it from here.
func DefaultMaxGap(interval time.Duration) time.Duration { return 2 * interval }

// Config parameterises a window.
type Config struct {
	// For is how long a breach must hold. 0 fires on the first breach
	// (immediate triggers).
	For time.Duration
	// MaxGap is the largest distance between consecutive samples that
	// still counts as a continuous run; a larger gap restarts the run at
	// the new sample. 0 disables the check: callers that sample on an
	// interval pass DefaultMaxGap(interval) instead of 0.
	MaxGap time.Duration
	// Capacity is the number of recent samples kept as evidence:
	// DefaultCapacity when ≤ 0, at most MaxCapacity. for/interval + 2
	// covers the whole window plus the sample before it.
	Capacity int
	// Spacing thins the evidence ring: when > 0, consecutive samples of
	// one kind closer than Spacing share one ring slot (the newer one
	// replaces the older), so the ring keeps a sample every Spacing, every
	// change of kind, and the newest sample. 0 keeps every sample. It does
	// not affect the state.
	Spacing time.Duration
}

// CapacityFor returns the evidence capacity that covers a window of length
// forDur sampled every interval, plus one sample on each side, bounded by
// MaxCapacity.
func CapacityFor(forDur, interval time.Duration) int {
	if interval <= 0 {
		return DefaultCapacity
	}
	n := int(forDur/interval) + 2
	if n > MaxCapacity {
		return MaxCapacity
	}
	return n
}

// rec is the compact form of a Sample in the ring: 24 bytes instead of 40,
// since time.Time carries a location pointer and a monotonic reading that
// evidence does not need.
type rec struct {
	t int64
	v float64
	k Kind
}

// Window is the state of one trigger's window. It is not safe for
// concurrent use; the evaluator serialises access.
type Window struct {
	forNs, maxGapNs, spacingNs int64

	state State
	// hasLast is false until the first accepted sample.
	hasLast bool
	last    rec
	// runStart is the time of the first breaching sample of the current
	// run; valid in StatePending and StateFiring.
	runStart int64
	// nodataSince is the time of the first NoData sample of the current
	// NoData episode; valid in StateNoData when hasNoData is set.
	nodataSince int64
	hasNoData   bool

	ring []rec
	head int // index of the next write
	n    int // samples in the ring
}

// New returns an empty window in StateNoData.
func New(c Config) *Window {
	capacity := c.Capacity
	if capacity <= 0 {
		capacity = DefaultCapacity
	}
	if capacity > MaxCapacity {
		capacity = MaxCapacity
	}
	return &Window{
		forNs:     int64(c.For),
		maxGapNs:  int64(c.MaxGap),
		spacingNs: int64(c.Spacing),
		ring:      make([]rec, capacity),
	}
}

// Observe feeds one sample and reports whether it was accepted. A sample
// whose time is not after the last accepted one (out of order, duplicate)
// is ignored and leaves the state untouched: a replay overlapping live
// samples, or a clock step backwards, must not corrupt the run.
func (w *Window) Observe(s Sample) bool {
	t := s.Time.UnixNano()
	if w.hasLast && t <= w.last.t {
		return false
	}
	gapped := w.hasLast && w.maxGapNs > 0 && t-w.last.t > w.maxGapNs

	switch s.Kind {
	case Breach:
		if (w.state != StatePending && w.state != StateFiring) || gapped {
			w.runStart = t
		}
		if t-w.runStart >= w.forNs {
			w.state = StateFiring
		} else {
			w.state = StatePending
		}
		w.hasNoData = false
	case NoData:
		if w.state != StateNoData || !w.hasNoData {
			w.nodataSince = t
			w.hasNoData = true
		}
		w.state = StateNoData
	case LowVolume:
		w.state = StateLowVolume
		w.hasNoData = false
	default:
		w.state = StateOK
		w.hasNoData = false
	}

	r := rec{t: t, v: s.Value, k: s.Kind}
	w.last = r
	w.hasLast = true
	w.record(r)
	return true
}

// record puts r in the evidence ring. With a spacing, r replaces the
// newest entry when that entry and the one before it are of r's kind and
// r is within Spacing of the one before it: a run of one kind keeps an
// entry every Spacing (its first sample, then one per Spacing) and its
// newest sample, and a change of kind is never thinned away.
func (w *Window) record(r rec) {
	if w.spacingNs > 0 && w.n >= 2 {
		newest := (w.head - 1 + len(w.ring)) % len(w.ring)
		prev := (w.head - 2 + len(w.ring)) % len(w.ring)
		if w.ring[newest].k == r.k && w.ring[prev].k == r.k && r.t-w.ring[prev].t <= w.spacingNs {
			w.ring[newest] = r
			return
		}
	}
	w.ring[w.head] = r
	w.head = (w.head + 1) % len(w.ring)
	if w.n < len(w.ring) {
		w.n++
	}
}

// State returns the current state.
func (w *Window) State() State { return w.state }

// Restart makes a breaching run start again at at (when at is later than
// its start): the breach must then hold a whole `for` from at before the
// window fires again. It is how an action that may have cured the
// condition (a restart) gets a fair chance to show it did. Outside a run it
// does nothing.
func (w *Window) Restart(at time.Time) {
	if w.state != StatePending && w.state != StateFiring {
		return
	}
	t := at.UnixNano()
	if t <= w.runStart {
		return
	}
	w.runStart = t
	if w.last.t-w.runStart >= w.forNs {
		w.state = StateFiring
	} else {
		w.state = StatePending
	}
}

// BreachStart returns the first breaching sample's time of the current run,
// if a run is in progress.
func (w *Window) BreachStart() (time.Time, bool) {
	if w.state != StatePending && w.state != StateFiring {
		return time.Time{}, false
	}
	return time.Unix(0, w.runStart).UTC(), true
}

// NoDataSince returns when the current NoData episode began, if the window
// is in one. Before the first sample it reports false: the episode's start
// is unknown, and the caller's first NoData sample will set it.
func (w *Window) NoDataSince() (time.Time, bool) {
	if w.state != StateNoData || !w.hasNoData {
		return time.Time{}, false
	}
	return time.Unix(0, w.nodataSince).UTC(), true
}

// Last returns the last accepted sample.
func (w *Window) Last() (Sample, bool) {
	if !w.hasLast {
		return Sample{}, false
	}
	return w.last.sample(), true
}

// Len returns the number of samples in the evidence ring.
func (w *Window) Len() int { return w.n }

// Cap returns the evidence ring's capacity.
func (w *Window) Cap() int { return len(w.ring) }

// Samples appends the ring's samples to dst, oldest first, and returns it.
func (w *Window) Samples(dst []Sample) []Sample {
	start := (w.head - w.n + len(w.ring)) % len(w.ring)
	for i := 0; i < w.n; i++ {
		dst = append(dst, w.ring[(start+i)%len(w.ring)].sample())
	}
	return dst
}

func (r rec) sample() Sample {
	return Sample{Time: time.Unix(0, r.t).UTC(), Value: r.v, Kind: r.k}
}
