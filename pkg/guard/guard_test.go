package guard

import (
	"testing"
	"time"
)

func TestCheck(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC)
	opts := Options{Cooldown: 30 * time.Minute, MaxRollbacksPerHour: 3, MaxRevisionAge: 2 * time.Hour}
	fresh := Request{Target: "pggit-api", Revision: "7", Action: "rollback", DeployedAt: t0.Add(-3 * time.Minute), Leader: true}
	with := func(f func(*Request)) Request { r := fresh; f(&r); return r }

	type rec struct {
		target, rev string
		at          time.Time
		restart     bool // a pool recovery's restart, not a rollback
	}
	tests := []struct {
		name    string
		opts    Options
		history []rec
		req     Request
		want    Reason
		detail  string
	}{
		{name: "fresh deploy allowed", opts: opts, req: fresh},
		{name: "follower never acts", opts: opts, req: with(func(r *Request) { r.Leader = false }), want: NotLeader,
			detail: "this replica does not hold the leader lease"},
		{name: "dry-run", opts: opts, req: with(func(r *Request) { r.DryRun = true }), want: DryRun,
			detail: "dry-run is on; would run rollback"},
		{name: "config freeze", opts: Options{Freeze: true}, req: fresh, want: Frozen,
			detail: "frozen in config (global.interlocks.freeze)"},
		{name: "target frozen in config", opts: opts, req: with(func(r *Request) { r.FrozenInConfig = true }), want: Frozen,
			detail: "target frozen in config (targets[].freeze)"},
		{name: "annotation freeze with note", opts: opts, req: with(func(r *Request) { r.Frozen = true; r.FreezeNote = "db migration in progress" }), want: Frozen,
			detail: "Deployment annotated rollguard.io/freeze: db migration in progress"},
		{name: "one rollback per revision", opts: opts, history: []rec{{"pggit-api", "7", t0.Add(-25 * time.Hour / 24), false}},
			req: fresh, want: AlreadyActed, detail: "revision 7 already rolled back at 2026-11-25T12:57:30Z"},
		{name: "old revision pages only", opts: opts, req: with(func(r *Request) { r.DeployedAt = t0.Add(-3 * time.Hour) }), want: RevisionAge,
			detail: "current revision is 3h0m0s old (max 2h0m0s): page only"},
		{name: "unknown deploy time blocks", opts: opts, req: with(func(r *Request) { r.DeployedAt = time.Time{} }), want: RevisionAge,
			detail: "deploy time of the current revision is unknown"},
		{name: "manual skips revision age", opts: opts, req: with(func(r *Request) { r.DeployedAt = t0.Add(-72 * time.Hour); r.Manual = true })},
		{name: "cooldown", opts: opts, history: []rec{{"pggit-api", "6", t0.Add(-10 * time.Minute), false}}, req: fresh, want: Cooldown,
			detail: "last rollback of pggit-api started 10m0s ago (cooldown 30m0s)"},
		{name: "cooldown over", opts: opts, history: []rec{{"pggit-api", "6", t0.Add(-31 * time.Minute), false}}, req: fresh},
		{name: "cooldown is per target", opts: opts, history: []rec{{"other", "1", t0.Add(-1 * time.Minute), false}}, req: fresh},
		{name: "budget", opts: opts, history: []rec{{"a", "1", t0.Add(-50 * time.Minute), false}, {"b", "1", t0.Add(-40 * time.Minute), false}, {"c", "1", t0.Add(-5 * time.Minute), false}},
			req: fresh, want: Budget, detail: "3 rollbacks in the last hour (budget 3)"},
		{name: "budget refills after an hour", opts: opts, history: []rec{{"a", "1", t0.Add(-61 * time.Minute), false}, {"b", "1", t0.Add(-40 * time.Minute), false}, {"c", "1", t0.Add(-5 * time.Minute), false}},
			req: fresh},
		// A pool recovery's restart is no verdict on the revision: the
		// rollback it escalates to is held back by neither one per
		// revision nor the cooldown; it does use the budget.
		{name: "restart consumes no revision or cooldown", opts: opts, history: []rec{{"pggit-api", "7", t0.Add(-2 * time.Minute), true}}, req: fresh},
		{name: "restart counts in the budget", opts: opts,
			history: []rec{{"a", "1", t0.Add(-50 * time.Minute), false}, {"b", "1", t0.Add(-40 * time.Minute), false}, {"pggit-api", "7", t0.Add(-2 * time.Minute), true}},
			req:     fresh, want: Budget, detail: "3 rollbacks in the last hour (budget 3)"},
		// A resume continues its own run: that run's record is no
		// obstacle, anything else still is.
		{name: "resume is not blocked by its own run", opts: opts,
			history: []rec{{"b", "1", t0.Add(-40 * time.Minute), false}, {"c", "1", t0.Add(-30 * time.Minute), false}, {"pggit-api", "7", t0.Add(-5 * time.Minute), false}},
			req:     with(func(r *Request) { r.Own = t0.Add(-5 * time.Minute); r.DeployedAt = t0.Add(-72 * time.Hour) })},
		{name: "resume still frozen", opts: opts, history: []rec{{"pggit-api", "7", t0.Add(-5 * time.Minute), false}},
			req: with(func(r *Request) { r.Own = t0.Add(-5 * time.Minute); r.Frozen = true }), want: Frozen, detail: "Deployment annotated rollguard.io/freeze"},
		{name: "resume blocked by another run's cooldown", opts: opts, history: []rec{{"pggit-api", "6", t0.Add(-10 * time.Minute), false}},
			req: with(func(r *Request) { r.Own = t0.Add(-5 * time.Minute); r.Revision = "8" }), want: Cooldown,
			detail: "last rollback of pggit-api started 10m0s ago (cooldown 30m0s)"},
		{name: "force passes the stateful interlocks", opts: opts,
			history: []rec{{"pggit-api", "7", t0.Add(-time.Minute), false}, {"a", "1", t0.Add(-50 * time.Minute), false}, {"b", "1", t0.Add(-40 * time.Minute), false}},
			req:     with(func(r *Request) { r.Force = true; r.DeployedAt = time.Time{} })},
		{name: "force does not pass a freeze", opts: opts, req: with(func(r *Request) { r.Force = true; r.FrozenInConfig = true }), want: Frozen,
			detail: "target frozen in config (targets[].freeze)"},
		{name: "zero options disable checks", opts: Options{}, history: []rec{{"pggit-api", "6", t0.Add(-time.Minute), false}},
			req: with(func(r *Request) { r.DeployedAt = time.Time{} })},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			g := New(tt.opts)
			for _, h := range tt.history {
				g.Record(h.target, h.rev, h.at, !h.restart)
			}
			v := g.Check(tt.req, t0)
			if v.Reason != tt.want || v.Detail != tt.detail {
				t.Fatalf("Check = {%q, %q}, want {%q, %q}", v.Reason, v.Detail, tt.want, tt.detail)
			}
			if v.Allowed() != (tt.want == "") {
				t.Fatalf("Allowed() = %v with reason %q", v.Allowed(), v.Reason)
			}
		})
	}
}

func TestRecordBoundsHistory(t *testing.T) {
	t0 := time.Date(2026, 11, 25, 0, 0, 0, 0, time.UTC)
	g := New(Options{MaxRollbacksPerHour: 1000})
	for i := 0; i < 10000; i++ {
		g.Record("t", "r"+time.Duration(i).String(), t0.Add(time.Duration(i)*time.Minute), true)
	}
	if n := len(g.starts); n > 60 {
		t.Fatalf("starts keeps %d entries, want at most an hour's worth", n)
	}
	if n := len(g.actedOn["t"]); n > 24*60+1 {
		t.Fatalf("actedOn keeps %d revisions, want at most a day's worth", n)
	}
}

func TestVerdictString(t *testing.T) {
	if got := (Verdict{}).String(); got != "allowed" {
		t.Fatalf("got %q", got)
	}
	if got := (Verdict{Cooldown, "x"}).String(); got != "cannot roll back: cooldown: x" {
		t.Fatalf("got %q", got)
	}
}
