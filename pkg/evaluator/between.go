package evaluator

import (
	"context"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// A trigger sampled at a resolution sees the signal on a grid, and a
// breach that begins between two instants of the grid is first seen at
// the later one: up to one resolution late, whatever the poll interval.
// An alerting rule evaluated on another phase of the same second sees it
// that much earlier (make bench, anchor: 0.4 s behind a rule evaluated
// every second, at a resolution of 1 s).
//
// So where a run starts on the grid right after a sample that did not
// breach, the evaluator looks between the two: it samples the trigger's
// queries every betweenStep over that step (one query_range per query,
// only where a run starts, which is rare) and starts the run at the
// earliest of those instants from which every one breached. The window's
// rule is unchanged: every sample fed is a real sample at its instant, fed
// in time order, and the window fires when a sample at least `for` after
// the run's first breaching sample breaches; Run evaluates at exactly that
// moment (EvaluateDue samples it even between two grid instants). So a
// rollback starts within betweenStep of breach + for.
//
// What is never done: a run is not started earlier after a sample without
// data (missing data is never a breach, and a source that failed then
// proves nothing now), instants that did not breach are not fed (they
// would only repeat the sample before the run), and a failed fetch just
// leaves the run where the grid put it. A backtest and a window rebuilt
// from history stay on the grid: their runs may start up to one
// resolution later than the live one did.
const betweenStep = 100 * time.Millisecond

// heldFeed is a range binding whose feeding stopped before instant k (at)
// because a run starts there: the instants before it are fetched first.
type heldFeed struct {
	b  *binding
	k  int
	at time.Time
}

type betweenKey struct {
	q  int32
	at int64
}

// instant is the k-th instant a range query was evaluated at: the grid's,
// then the extra one.
func (q *query) instant(k int) time.Time {
	if k < q.n {
		return q.from.Add(time.Duration(k) * q.key.step)
	}
	return q.extra
}

func (q *query) instants() int {
	if q.extra.IsZero() {
		return q.n
	}
	return q.n + 1
}

// feedRange feeds binding b the instants of its range result from index k
// on. With hold set, it stops at an instant where a run starts right after
// a sample that did not breach and returns that index, so that the caller
// can look between the two first; -1 once every instant is fed. Called with
// e.mu held.
func (e *Evaluator) feedRange(p *plan, b *binding, k int, hold bool, decisions *[]trigger.Decision, blinds *[]timedBlind) int {
	q := p.queries[b.q]
	main := q.cursor(b.g, b.key, b.values, b.e.spec.Match, &e.scratch[0])
	var vol *rangeCursor
	if b.vq >= 0 && p.queries[b.vq].err == nil {
		vol = p.queries[b.vq].cursor(b.vg, b.vkey, b.values, b.e.spec.Match, &e.scratch[1])
	}
	for n := q.instants(); k < n; k++ {
		t := q.instant(k)
		if k == q.n && q.extraErr != nil {
			// A failed sample at its instant, as a failed grid query is.
			e.step(b.e, t, trigger.Observation{Value: math.NaN(), Volume: math.NaN(), Err: q.extraErr}, decisions, blinds)
			continue
		}
		obs := observeAt(main, vol, t)
		if hold && q.key.step > betweenStep && startsRun(b.e.trig, t, q.key.step, obs) {
			return k
		}
		e.step(b.e, t, obs, decisions, blinds)
	}
	return -1
}

func observeAt(main, vol *rangeCursor, t time.Time) trigger.Observation {
	obs := trigger.Observation{Volume: math.NaN()}
	obs.Value, obs.Err = main.at(t)
	if vol != nil {
		if v, err := vol.at(t); err == nil {
			obs.Volume = v
		}
	}
	return obs
}

// startsRun reports whether obs at t starts a breaching run right after a
// sample with data that did not breach, at most step and more than
// betweenStep before t.
func startsRun(tr *trigger.Trigger, t time.Time, step time.Duration, obs trigger.Observation) bool {
	last, ok := tr.Window().Last()
	if !ok || (last.Kind != window.OK && last.Kind != window.LowVolume) {
		return false
	}
	gap := t.Sub(last.Time)
	return gap > betweenStep && gap <= step && tr.Classify(obs) == window.Breach
}

// fetchBetween samples, for each held instant, every range query of its
// component every betweenStep over the step before it. A query that fails
// is left out (its triggers' runs stay where the grid put them).
func (e *Evaluator) fetchBetween(ctx context.Context, p *plan, held []heldFeed) map[betweenKey]*query {
	var todo []betweenKey
	seen := map[betweenKey]bool{}
	for _, h := range held {
		comp := p.queries[h.b.q].comp
		for i, q := range p.queries {
			k := betweenKey{int32(i), h.at.UnixNano()}
			if q.comp == comp && q.key.step > 0 && !seen[k] {
				seen[k] = true
				todo = append(todo, k)
			}
		}
	}
	out := make(map[betweenKey]*query, len(todo))
	var mu sync.Mutex
	e.each(ctx, len(todo), func(i int) {
		w := todo[i]
		q, at := p.queries[w.q], time.Unix(0, w.at).UTC()
		from := floorStep(at.Add(-q.key.step), betweenStep).Add(betweenStep)
		to := ceilStep(at, betweenStep).Add(-betweenStep)
		if to.Before(from) {
			return
		}
		qctx, cancel := context.WithTimeout(ctx, e.opts.QueryTimeout)
		rs, err := q.ranger.QueryRange(qctx, q.key.query, from, to, betweenStep)
		cancel()
		if err != nil {
			e.logger.Debug("sampling before a run's start failed", zap.String("backend", q.key.backend),
				zap.String("query", q.key.query), zap.Error(err))
			return
		}
		d := &query{key: q.key, ranges: rs, from: from, n: int(to.Sub(from)/betweenStep) + 1, groups: make([]*group, len(q.groups))}
		d.key.step = betweenStep
		for gi, g := range q.groups {
			d.groups[gi] = &group{names: g.names, index: map[uint64]int32{}}
		}
		d.buildIndex(e.seed)
		mu.Lock()
		out[w] = d
		mu.Unlock()
	})
	return out
}

// feedBetween feeds a held binding the breaching instants between its last
// sample and the held one that run without a break up to the held one: the
// run's first breaching sample, found to within betweenStep. Called with
// e.mu held.
func (e *Evaluator) feedBetween(h heldFeed, between map[betweenKey]*query, decisions *[]trigger.Decision, blinds *[]timedBlind) {
	b := h.b
	fq := between[betweenKey{b.q, h.at.UnixNano()}]
	if fq == nil {
		return
	}
	var fv *query
	if b.vq >= 0 {
		if fv = between[betweenKey{b.vq, h.at.UnixNano()}]; fv == nil {
			return // without its volume a ratio cannot be judged
		}
	}
	last, ok := b.e.trig.Window().Last()
	if !ok {
		return
	}
	main := fq.cursor(b.g, b.key, b.values, b.e.spec.Match, &e.scratch[2])
	var vol *rangeCursor
	if fv != nil {
		vol = fv.cursor(b.vg, b.vkey, b.values, b.e.spec.Match, &e.scratch[3])
	}
	type sample struct {
		t   time.Time
		obs trigger.Observation
	}
	var run []sample
	for k := range fq.n {
		t := fq.from.Add(time.Duration(k) * betweenStep)
		obs := observeAt(main, vol, t) // every instant, in order: the cursors only go forward
		if !t.After(last.Time) || !t.Before(h.at) {
			continue
		}
		if b.e.trig.Classify(obs) != window.Breach {
			run = run[:0]
			continue
		}
		run = append(run, sample{t, obs})
	}
	for _, s := range run {
		e.step(b.e, s.t, s.obs, decisions, blinds)
	}
}

// withInstant adds an instant query's result to a range result, each point
// to the series with the same labels (a new one for a series the range did
// not have). Points are copied, never appended in place: a decoder may back
// many series' points with one array.
func withInstant(ranges []source.Range, series []source.Series, at time.Time) []source.Range {
	idx := make(map[string]int, len(ranges))
	for i, r := range ranges {
		idx[labelKey(r.Labels)] = i
	}
	for _, s := range series {
		pt := source.Point{Time: at, Value: s.Value}
		if i, ok := idx[labelKey(s.Labels)]; ok {
			pts := ranges[i].Points
			ranges[i].Points = append(pts[:len(pts):len(pts)], pt)
			continue
		}
		ranges = append(ranges, source.Range{Labels: s.Labels, Points: []source.Point{pt}})
	}
	return ranges
}

func labelKey(l map[string]string) string {
	names := make([]string, 0, len(l))
	for n := range l {
		names = append(names, n)
	}
	slices.Sort(names)
	var b strings.Builder
	for _, n := range names {
		b.WriteString(n)
		b.WriteByte(0xff)
		b.WriteString(l[n])
		b.WriteByte(0xff)
	}
	return b.String()
}
