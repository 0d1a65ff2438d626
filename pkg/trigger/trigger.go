// Package trigger turns a rule and its window into a state, and on the edge
// into firing, a Decision carrying the evidence (docs/design.md §2).
//
// Classification of one observation:
//   - NaN, ±Inf, source.ErrNoData, and any other error → nodata;
//   - except with OnError breach, where too many connections (SQLSTATE
//     53300) and a timeout are breaches: they are the saturation being
//     watched. Everything else stays nodata even then: an unreachable
//     source, an admin restart or an unclassified error says nothing about
//     the Deployment, and ErrNoData, ErrBadQuery and ErrAmbiguous describe
//     our query; a typo or a database restart must never roll production
//     back;
//   - with MinRate > 0, a known volume below MinRate → lowvolume (2
//     requests, 1 failed, is not a 50 % error rate; and no request at all,
//     a 0/0 ratio Prometheus returns as nothing, is a quiet night, not
//     blindness); an unknown (NaN) volume → nodata;
//   - otherwise strictly above / strictly below the threshold is a breach.
package trigger

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"time"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/window"
)

// Op is the comparison with the threshold.
type Op string

const (
	// Above breaches when the value is strictly greater than the threshold.
	Above Op = "above"
	// Below breaches when the value is strictly less than the threshold.
	Below Op = "below"
)

// OnError says what a failed query means for the trigger.
type OnError string

const (
	// OnErrorNoData (the default, also for "") treats errors as nodata.
	OnErrorNoData OnError = "nodata"
	// OnErrorBreach treats errors of the watched system as a breach.
	OnErrorBreach OnError = "breach"
)

// Rule is one trigger's configuration.
type Rule struct {
	Target    string
	Name      string
	Op        Op
	Threshold float64
	// For is how long the breach must hold; 0 fires on the first breach.
	For time.Duration
	// MaxGap is the largest distance between consecutive samples of a run;
	// 0 disables the check.
	MaxGap time.Duration
	// BlindAfter is how long nodata must last before a Blind report; 0
	// disables the report.
	BlindAfter time.Duration
	OnError    OnError
	// MinRate is the volume guard; 0 turns it off.
	MinRate  float64
	Action   string
	Severity notify.Severity
	Security bool
	// Query is carried into the evidence for humans.
	Query string
}

// Validate reports a rule the trigger cannot evaluate.
func (r Rule) Validate() error {
	switch {
	case r.Op != Above && r.Op != Below:
		return fmt.Errorf("trigger %s/%s: op %q: must be %q or %q", r.Target, r.Name, r.Op, Above, Below)
	case r.OnError != "" && r.OnError != OnErrorNoData && r.OnError != OnErrorBreach:
		return fmt.Errorf("trigger %s/%s: onError %q: must be %q or %q", r.Target, r.Name, r.OnError, OnErrorNoData, OnErrorBreach)
	case r.For < 0 || r.MaxGap < 0 || r.BlindAfter < 0:
		return fmt.Errorf("trigger %s/%s: durations must be >= 0", r.Target, r.Name)
	case math.IsNaN(r.Threshold) || math.IsInf(r.Threshold, 0):
		return fmt.Errorf("trigger %s/%s: threshold must be finite", r.Target, r.Name)
	case math.IsNaN(r.MinRate) || r.MinRate < 0:
		return fmt.Errorf("trigger %s/%s: minRate must be >= 0", r.Target, r.Name)
	}
	return nil
}

// Observation is one tick's result for a trigger.
type Observation struct {
	Value float64
	// Volume is the request rate behind a ratio; NaN when there is no
	// volume query.
	Volume float64
	Err    error
}

// Status is a trigger's state for the API and metrics.
type Status struct {
	Target    string       `json:"target"`
	Trigger   string       `json:"trigger"`
	State     window.State `json:"state"`
	Op        Op           `json:"op"`
	Threshold float64      `json:"threshold"`
	// For is the rule's window (exported as a metric, so dashboards can
	// show how far a breach has got).
	For time.Duration `json:"-"`
	// Value is the last observation's value; NaN when it had none.
	Value float64 `json:"-"`
	// LastSample is the time of the last accepted observation.
	LastSample time.Time `json:"lastSample,omitzero"`
	// BreachStart is the first breaching sample of the current run
	// (pending, firing).
	BreachStart time.Time `json:"breachStart,omitzero"`
	// NoDataSince is the start of the current nodata episode.
	NoDataSince time.Time `json:"noDataSince,omitzero"`
	// LastError is the last observation's error message, if any.
	LastError string `json:"lastError,omitempty"`
}

// MarshalJSON writes a non-finite Value as null.
func (s Status) MarshalJSON() ([]byte, error) {
	type plain Status
	return json.Marshal(struct {
		plain
		Value *float64 `json:"value"`
	}{plain(s), finite(s.Value)})
}

// UnmarshalJSON reads what MarshalJSON writes (null value → NaN).
func (s *Status) UnmarshalJSON(b []byte) error {
	type plain Status
	var v struct {
		plain
		Value *float64 `json:"value"`
	}
	if err := json.Unmarshal(b, &v); err != nil {
		return err
	}
	*s = Status(v.plain)
	s.Value = math.NaN()
	if v.Value != nil {
		s.Value = *v.Value
	}
	return nil
}

// Decision is emitted once, on the edge into firing.
type Decision struct {
	Target    string          `json:"target"`
	Trigger   string          `json:"trigger"`
	Action    string          `json:"action"`
	Severity  notify.Severity `json:"severity"`
	Security  bool            `json:"security"`
	Query     string          `json:"query"`
	Op        Op              `json:"op"`
	Threshold float64         `json:"threshold"`
	// Value is the firing sample's value; NaN when an error fired it
	// (OnError breach).
	Value       float64   `json:"-"`
	FirstBreach time.Time `json:"firstBreach"`
	FiredAt     time.Time `json:"firedAt"`
	// Samples are the most recent samples, oldest first (the window's
	// evidence ring).
	Samples []window.Sample `json:"samples"`
	// Error is the firing sample's error message when an error fired it.
	Error string `json:"error,omitempty"`
}

// MarshalJSON writes a non-finite Value as null.
func (d Decision) MarshalJSON() ([]byte, error) {
	type plain Decision
	return json.Marshal(struct {
		plain
		Value *float64 `json:"value"`
	}{plain(d), finite(d.Value)})
}

// Blind is emitted once per nodata episode, when it has lasted BlindAfter,
// and once more, Resolved, when that episode ends (the trigger has data
// again: ok, pending, firing or lowvolume).
type Blind struct {
	Target    string    `json:"target"`
	Trigger   string    `json:"trigger"`
	Since     time.Time `json:"since"`
	LastError string    `json:"lastError,omitempty"`
	// Resolved: the episode is over; Until is the first sample with data.
	Resolved bool      `json:"resolved,omitempty"`
	Until    time.Time `json:"until,omitzero"`
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// Trigger is a rule with its window. Not safe for concurrent use.
type Trigger struct {
	rule Rule
	win  *window.Window

	lastValue float64
	lastErr   error
	// fired latches after a Decision until the window resets to ok or
	// nodata: a run restarted by a gap (firing → pending → firing) is the
	// same incident and must not roll back twice.
	fired bool
	// blinded latches after a Blind report until the episode ends;
	// blindSince is that episode's start, for its resolution.
	blinded    bool
	blindSince time.Time
	// lookedFrom is the first live observation. Blindness is this
	// process's: a nodata episode replayed from history (a new target, a
	// gap before a restart) counts toward BlindAfter only from here, so a
	// rebuilt window does not page blind at the first tick.
	lookedFrom time.Time
}

// New returns a trigger for r whose window keeps capacity samples of
// evidence (window.DefaultCapacity when ≤ 0).
func New(r Rule, capacity int) *Trigger {
	return NewWithEvidence(r, capacity, 0)
}

// NewWithEvidence is New with the evidence ring thinned to a sample every
// spacing (see window.Config.Spacing): for a trigger sampled more often
// than its evaluation interval, so the evidence still spans the window.
func NewWithEvidence(r Rule, capacity int, spacing time.Duration) *Trigger {
	if r.OnError == "" {
		r.OnError = OnErrorNoData
	}
	return &Trigger{
		rule:      r,
		win:       window.New(window.Config{For: r.For, MaxGap: r.MaxGap, Capacity: capacity, Spacing: spacing}),
		lastValue: math.NaN(),
	}
}

// Rule returns the trigger's rule.
func (t *Trigger) Rule() Rule { return t.rule }

// Window exposes the window read-only state (tests, benchmarks).
func (t *Trigger) Window() *window.Window { return t.win }

// Classify maps an observation to a window sample kind.
func (t *Trigger) Classify(o Observation) window.Kind {
	if t.rule.MinRate > 0 && !math.IsNaN(o.Volume) && o.Volume < t.rule.MinRate && (o.Err == nil || errors.Is(o.Err, source.ErrNoData)) {
		// Checked first: with no traffic the ratio itself is 0/0, which
		// Prometheus answers with no series.
		return window.LowVolume
	}
	if o.Err != nil {
		if t.rule.OnError == OnErrorBreach && errorIsSignal(o.Err) {
			return window.Breach
		}
		return window.NoData
	}
	if math.IsNaN(o.Value) || math.IsInf(o.Value, 0) {
		return window.NoData
	}
	if t.rule.MinRate > 0 && math.IsNaN(o.Volume) {
		return window.NoData
	}
	switch t.rule.Op {
	case Above:
		if o.Value > t.rule.Threshold {
			return window.Breach
		}
	case Below:
		if o.Value < t.rule.Threshold {
			return window.Breach
		}
	}
	return window.OK
}

// errorIsSignal lists the errors that, with OnError breach, are evidence of
// the failure being watched: the server refusing connections for lack of
// slots (SQLSTATE 53300) or too saturated to answer in time. Anything
// else (the source down, an admin restart, an unclassified error, our own
// query's fault) says nothing about the Deployment and stays nodata: a
// database restart must never roll the application back.
func errorIsSignal(err error) bool {
	return errors.Is(err, source.ErrTooManyConnections) || errors.Is(err, source.ErrTimeout)
}

// Observe feeds the observation made at now. It returns the new status, a
// Decision on the edge into firing, and a Blind report once per nodata
// episode after BlindAfter. An observation not after the previous one is
// ignored (see window.Observe) and returns the unchanged status.
func (t *Trigger) Observe(now time.Time, o Observation) (Status, *Decision, *Blind) {
	_, d, b := t.observe(now, o, true)
	return t.Status(), d, b
}

// Step is Observe returning only the new state: the evaluator's hot loop
// builds a Status only when someone asks for it (API, scrape), which saves
// most of a tick's cost at 10,000 triggers.
func (t *Trigger) Step(now time.Time, o Observation) (window.State, *Decision, *Blind) {
	return t.observe(now, o, true)
}

// Replay feeds a historical observation: it updates the window exactly as
// Observe does but emits nothing and does not latch. Decisions are for
// instants that are now, so a past firing must not act; and a replay that
// ends firing leaves the trigger unlatched, so the next live breach fires
// at once (the point of rebuilding the window after a restart).
func (t *Trigger) Replay(at time.Time, o Observation) Status {
	t.observe(at, o, false)
	return t.Status()
}

func (t *Trigger) observe(now time.Time, o Observation, live bool) (window.State, *Decision, *Blind) {
	kind := t.Classify(o)
	value := o.Value
	if o.Err != nil {
		value = math.NaN()
	}
	if !t.win.Observe(window.Sample{Time: now, Value: value, Kind: kind}) {
		return t.win.State(), nil, nil
	}
	t.lastValue = value
	t.lastErr = o.Err
	if live && t.lookedFrom.IsZero() {
		t.lookedFrom = now
	}

	var d *Decision
	var b *Blind
	if st := t.win.State(); st != window.StateNoData && t.blinded {
		// Data again after a reported episode: say it is over, once.
		t.blinded = false
		if live {
			b = &Blind{Target: t.rule.Target, Trigger: t.rule.Name, Since: t.blindSince, Resolved: true, Until: now}
		}
	}
	switch t.win.State() {
	case window.StateOK, window.StateLowVolume:
		t.fired = false
	case window.StateNoData:
		t.fired = false
		since, ok := t.win.NoDataSince()
		blindFrom := since
		if t.lookedFrom.After(blindFrom) {
			blindFrom = t.lookedFrom
		}
		if live && ok && !t.blinded && t.rule.BlindAfter > 0 && now.Sub(blindFrom) >= t.rule.BlindAfter {
			t.blinded, t.blindSince = true, since
			b = &Blind{Target: t.rule.Target, Trigger: t.rule.Name, Since: since, LastError: errString(o.Err)}
		}
	case window.StatePending:
	case window.StateFiring:
		if live && !t.fired {
			t.fired = true
			d = t.decision(now, value, o.Err)
		}
	}
	return t.win.State(), d, b
}

func (t *Trigger) decision(at time.Time, value float64, err error) *Decision {
	first, _ := t.win.BreachStart()
	return &Decision{
		Target:      t.rule.Target,
		Trigger:     t.rule.Name,
		Action:      t.rule.Action,
		Severity:    t.rule.Severity,
		Security:    t.rule.Security,
		Query:       t.rule.Query,
		Op:          t.rule.Op,
		Threshold:   t.rule.Threshold,
		Value:       value,
		FirstBreach: first,
		FiredAt:     at,
		Samples:     t.win.Samples(make([]window.Sample, 0, t.win.Len())),
		Error:       errString(err),
	}
}

// Firing returns the Decision of the current firing run, as the edge into
// it would have (FiredAt is the last sample's time), or nil when the
// trigger is not firing. A replica that gains leadership acts on it: the
// edge may have passed while it was a follower, or in a rebuilt window.
func (t *Trigger) Firing() *Decision {
	if t.win.State() != window.StateFiring {
		return nil
	}
	last, _ := t.win.Last()
	return t.decision(last.Time, t.lastValue, t.lastErr)
}

// Blinded returns the Blind report of the current nodata episode once it
// has been reported (it lasted BlindAfter), or nil.
func (t *Trigger) Blinded() *Blind {
	since, ok := t.win.NoDataSince()
	if !ok || !t.blinded {
		return nil
	}
	return &Blind{Target: t.rule.Target, Trigger: t.rule.Name, Since: since, LastError: errString(t.lastErr)}
}

// Rearm makes a firing (or pending) run start again at at and clears the
// fired latch: if the breach holds for a whole window after at, the
// trigger fires again. The responder calls it after a pool recovery, so
// that "still exhausted after the restart" escalates to a rollback.
func (t *Trigger) Rearm(at time.Time) {
	t.win.Restart(at)
	t.fired = false
}

// Status returns the current status.
func (t *Trigger) Status() Status {
	s := Status{
		Target:    t.rule.Target,
		Trigger:   t.rule.Name,
		State:     t.win.State(),
		Op:        t.rule.Op,
		Threshold: t.rule.Threshold,
		For:       t.rule.For,
		Value:     t.lastValue,
		LastError: errString(t.lastErr),
	}
	if last, ok := t.win.Last(); ok {
		s.LastSample = last.Time
	}
	s.BreachStart, _ = t.win.BreachStart()
	s.NoDataSince, _ = t.win.NoDataSince()
	return s
}

func errString(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
