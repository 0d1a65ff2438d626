package guard

import (
	"testing"
	"time"

	"pgregory.net/rapid"
)

func TestState(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	g := New(Options{Cooldown: 30 * time.Minute, MaxRollbacksPerHour: 3, MaxRevisionAge: 2 * time.Hour})
	g.Record("api", "7", t0.Add(-70*time.Minute), true)
	g.Record("api", "8", t0.Add(-10*time.Minute), true)
	g.Record("web", "3", t0.Add(-5*time.Minute), true)
	s := g.State("api", t0)
	if s.LastRollback != t0.Add(-10*time.Minute) || s.CooldownLeft != 20*time.Minute {
		t.Errorf("last %v cooldown left %v, want 10m ago and 20m", s.LastRollback, s.CooldownLeft)
	}
	if s.RollbacksLastHour != 2 || s.BudgetLeft != 1 {
		t.Errorf("last hour %d budget left %d, want 2 and 1 (across targets)", s.RollbacksLastHour, s.BudgetLeft)
	}
	if len(s.ActedOn) != 2 || s.ActedOn["8"] != t0.Add(-10*time.Minute) {
		t.Errorf("acted on %v", s.ActedOn)
	}
	if s := g.State("db", t0); !s.LastRollback.IsZero() || s.CooldownLeft != 0 || s.ActedOn != nil {
		t.Errorf("a target with no history: %+v", s)
	}
	g.SetOptions(Options{})
	if s := g.State("api", t0); s.CooldownLeft != 0 || s.BudgetLeft != -1 {
		t.Errorf("interlocks off: cooldown left %v budget left %d, want 0 and -1", s.CooldownLeft, s.BudgetLeft)
	}
}

// State is a read: it agrees with Check on the cooldown and the budget
// and never changes what Check decides.
func TestStateAgreesWithCheck(t *testing.T) {
	rapid.Check(t, func(rt *rapid.T) {
		t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
		opts := Options{Cooldown: time.Duration(rapid.IntRange(0, 60).Draw(rt, "cooldownMin")) * time.Minute,
			MaxRollbacksPerHour: rapid.IntRange(0, 4).Draw(rt, "budget")}
		g := New(opts)
		targets := []string{"a", "b"}
		for i, n := 0, rapid.IntRange(0, 6).Draw(rt, "records"); i < n; i++ {
			ago := time.Duration(rapid.IntRange(0, 120).Draw(rt, "agoMin")) * time.Minute
			g.Record(rapid.SampledFrom(targets).Draw(rt, "target"), "", t0.Add(-ago), true)
		}
		now := t0.Add(time.Duration(rapid.IntRange(0, 30).Draw(rt, "laterMin")) * time.Minute)
		req := Request{Target: "a", Leader: true, Manual: true}
		before := g.Check(req, now)
		s := g.State("a", now)
		if after := g.Check(req, now); after != before {
			rt.Fatalf("State changed Check: %v then %v", before, after)
		}
		switch {
		case s.CooldownLeft > 0:
			if before.Reason != Cooldown {
				rt.Fatalf("state says %v of cooldown left, Check says %v", s.CooldownLeft, before)
			}
		case s.BudgetLeft == 0:
			if before.Reason != Budget {
				rt.Fatalf("state says no budget left, Check says %v", before)
			}
		default:
			if !before.Allowed() {
				rt.Fatalf("state says free (%+v), Check says %v", s, before)
			}
		}
	})
}
