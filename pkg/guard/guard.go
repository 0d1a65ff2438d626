// Package guard holds the safety interlocks every automatic action must
// pass before rollguard writes anything (docs/design.md §5). An automated rollback
// that fires wrongly is an outage rollguard caused, so each check here errs
// on the side of paging a human instead of acting.
package guard

import (
	"fmt"
	"sync"
	"time"
)

// Reason names the interlock that blocked an action. The zero value means
// the action may run.
type Reason string

// The interlocks, in the order Check applies them.
const (
	NotLeader     Reason = "not-leader"
	DryRun        Reason = "dry-run"
	Frozen        Reason = "frozen"
	AlreadyActed  Reason = "already-rolled-back"
	RevisionAge   Reason = "revision-too-old"
	Cooldown      Reason = "cooldown"
	Budget        Reason = "budget-exhausted"
	UnknownTarget Reason = "unknown-target"
)

// Options are the interlock settings; zero durations and counts disable the
// matching check.
type Options struct {
	Cooldown            time.Duration // per target, since the last rollback started
	MaxRollbacksPerHour int           // across all targets
	MaxRevisionAge      time.Duration // act only on a deploy younger than this
	Freeze              bool          // global freeze from config
	// MaxResumeAge bounds how old an unfinished run may be and still be
	// resumed automatically (the executor enforces it).
	MaxResumeAge time.Duration
}

// Request describes one intended action.
type Request struct {
	Target   string
	Revision string // the bad revision (ReplicaSet pod-template-hash or revision number)
	Action   string
	// DeployedAt is when the current revision started (its ReplicaSet's
	// creation); zero when unknown, which blocks automatic actions because
	// the age check cannot be proven.
	DeployedAt time.Time
	Frozen     bool   // the Deployment carries rollguard.io/freeze
	FreezeNote string // the annotation's value, for the page
	// FrozenInConfig is the target's own freeze in the config file.
	FrozenInConfig bool
	DryRun         bool // global or per-target dry-run
	Leader         bool
	// Manual requests come from a human (CLI, API): the revision-age check
	// does not apply, since the human has judged the revision bad.
	Manual bool
	// Own is the start of the run a resume continues: the history entry
	// that run made is its own, not an earlier action's, so it neither
	// counts as "already rolled back" nor as cooldown or budget against it.
	// The revision age was judged when the run started.
	Own time.Time
	// Force passes the stateful interlocks (one rollback per revision,
	// revision age, cooldown, budget): a human's explicit override, which
	// the caller logs. Leadership, dry-run and freeze still hold.
	Force bool
}

// Verdict is the outcome of Check.
type Verdict struct {
	Reason Reason // empty when allowed
	Detail string
}

// Allowed reports whether the action may run.
func (v Verdict) Allowed() bool { return v.Reason == "" }

func (v Verdict) String() string {
	if v.Allowed() {
		return "allowed"
	}
	return fmt.Sprintf("cannot roll back: %s: %s", v.Reason, v.Detail)
}

// start is one action's start, for the budget.
type start struct {
	at     time.Time
	target string
}

// Guard keeps the history the stateful interlocks need. Its memory is
// bounded: one timestamp per target, the starts within the last hour, and
// the revisions acted on per target (pruned after a day).
//
// Only actions that started writing are recorded (the caller records when
// the executor's first write succeeded): a refusal or a failed preflight
// consumes nothing.
type Guard struct {
	opts Options

	mu      sync.Mutex
	last    map[string]time.Time            // target → last rollback start
	starts  []start                         // action starts within the last hour, oldest first
	actedOn map[string]map[string]time.Time // target → revision → when
}

// New returns a Guard with no history.
func New(opts Options) *Guard {
	return &Guard{
		opts:    opts,
		last:    map[string]time.Time{},
		actedOn: map[string]map[string]time.Time{},
	}
}

// SetOptions swaps the settings (hot reload) and keeps the history.
func (g *Guard) SetOptions(opts Options) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.opts = opts
}

// Options returns the current settings.
func (g *Guard) Options() Options {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.opts
}

// Check applies every interlock to req at time now. It never writes: a
// caller that goes on to act must call Record.
func (g *Guard) Check(req Request, now time.Time) Verdict {
	g.mu.Lock()
	defer g.mu.Unlock()
	o := g.opts
	switch {
	case !req.Leader:
		return Verdict{NotLeader, "this replica does not hold the leader lease"}
	case req.DryRun:
		return Verdict{DryRun, "dry-run is on; would run " + req.Action}
	case o.Freeze:
		return Verdict{Frozen, "frozen in config (global.interlocks.freeze)"}
	case req.FrozenInConfig:
		return Verdict{Frozen, "target frozen in config (targets[].freeze)"}
	case req.Frozen:
		d := "Deployment annotated rollguard.io/freeze"
		if req.FreezeNote != "" && req.FreezeNote != "true" {
			d += ": " + req.FreezeNote
		}
		return Verdict{Frozen, d}
	}
	if req.Force {
		return Verdict{}
	}
	own := func(at time.Time) bool { return !req.Own.IsZero() && at.Equal(req.Own) }
	if at, ok := g.actedOn[req.Target][req.Revision]; ok && req.Revision != "" && !own(at) {
		return Verdict{AlreadyActed, fmt.Sprintf("revision %s already rolled back at %s", req.Revision, at.UTC().Format(time.RFC3339))}
	}
	if !req.Manual && req.Own.IsZero() && o.MaxRevisionAge > 0 {
		if req.DeployedAt.IsZero() {
			return Verdict{RevisionAge, "deploy time of the current revision is unknown"}
		}
		if age := now.Sub(req.DeployedAt); age > o.MaxRevisionAge {
			return Verdict{RevisionAge, fmt.Sprintf("current revision is %s old (max %s): page only", age.Round(time.Second), o.MaxRevisionAge)}
		}
	}
	if last, ok := g.last[req.Target]; ok && o.Cooldown > 0 && !own(last) {
		if since := now.Sub(last); since < o.Cooldown {
			return Verdict{Cooldown, fmt.Sprintf("last rollback of %s started %s ago (cooldown %s)", req.Target, since.Round(time.Second), o.Cooldown)}
		}
	}
	if o.MaxRollbacksPerHour > 0 {
		g.pruneLocked(now)
		n := 0
		for _, st := range g.starts {
			if !(st.target == req.Target && own(st.at)) {
				n++
			}
		}
		if n >= o.MaxRollbacksPerHour {
			return Verdict{Budget, fmt.Sprintf("%d rollbacks in the last hour (budget %d)", n, o.MaxRollbacksPerHour)}
		}
	}
	return Verdict{}
}

// Record notes that an action on target's revision started writing at
// at. A rollback consumes one rollback per revision, the cooldown and the
// budget; any other action (a pool recovery's restart) only the budget:
// it is not a verdict on the revision, and the rollback it may escalate to
// must not be held back by it. It also seeds the history from the journals
// after a restart, so a failover does not reset the interlocks.
func (g *Guard) Record(target, revision string, at time.Time, rollback bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	i := len(g.starts)
	for i > 0 && g.starts[i-1].at.After(at) {
		i--
	}
	for j := i - 1; j >= 0 && g.starts[j].at.Equal(at); j-- {
		if g.starts[j].target == target {
			// Seeding again (every leadership term reads the journals)
			// must not count one start twice.
			return
		}
	}
	g.starts = append(g.starts, start{})
	copy(g.starts[i+1:], g.starts[i:])
	g.starts[i] = start{at: at, target: target}
	if rollback {
		if at.After(g.last[target]) {
			g.last[target] = at
		}
		if revision != "" {
			if g.actedOn[target] == nil {
				g.actedOn[target] = map[string]time.Time{}
			}
			g.actedOn[target][revision] = at
		}
	}
	g.pruneLocked(at)
}

// pruneLocked drops budget entries older than an hour. Revisions acted on
// are kept for a day (a bad revision is not redeployed and re-judged within
// that time without a human), which bounds the map by deploys per day.
func (g *Guard) pruneLocked(now time.Time) {
	n := 0
	for n < len(g.starts) && now.Sub(g.starts[n].at) >= time.Hour {
		n++
	}
	g.starts = g.starts[n:]
	for target, revs := range g.actedOn {
		for rev, at := range revs {
			if now.Sub(at) > 24*time.Hour {
				delete(revs, rev)
			}
		}
		if len(revs) == 0 {
			delete(g.actedOn, target)
		}
	}
}

// TargetState is what the stateful interlocks hold for one target at an
// instant: the console shows it; Check stays the only judge.
type TargetState struct {
	Options Options
	// LastRollback is when the target's last rollback started (zero: none
	// remembered).
	LastRollback time.Time
	// CooldownLeft is how long the cooldown still blocks (0: it does not).
	CooldownLeft time.Duration
	// RollbacksLastHour counts rollback starts across all targets within
	// the hour before now; BudgetLeft is what the hourly budget still
	// allows (-1 when the budget is off).
	RollbacksLastHour int
	BudgetLeft        int
	// ActedOn maps the target's revisions rolled back within the last day
	// to when.
	ActedOn map[string]time.Time
}

// State reports target's interlock state at now without changing the
// history (nothing is pruned: a read must not move the budget).
func (g *Guard) State(target string, now time.Time) TargetState {
	g.mu.Lock()
	defer g.mu.Unlock()
	s := TargetState{Options: g.opts, LastRollback: g.last[target], BudgetLeft: -1}
	if !s.LastRollback.IsZero() && g.opts.Cooldown > 0 {
		if left := g.opts.Cooldown - now.Sub(s.LastRollback); left > 0 {
			s.CooldownLeft = left
		}
	}
	for _, st := range g.starts {
		if now.Sub(st.at) < time.Hour {
			s.RollbacksLastHour++
		}
	}
	if g.opts.MaxRollbacksPerHour > 0 {
		s.BudgetLeft = max(g.opts.MaxRollbacksPerHour-s.RollbacksLastHour, 0)
	}
	if revs := g.actedOn[target]; len(revs) > 0 {
		s.ActedOn = make(map[string]time.Time, len(revs))
		for rev, at := range revs {
			if now.Sub(at) <= 24*time.Hour {
				s.ActedOn[rev] = at
			}
		}
	}
	return s
}
