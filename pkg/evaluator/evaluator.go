// Package evaluator is the tick loop: every interval it runs each distinct
// source query once, fans the results out to the triggers by label match,
// feeds each trigger's window and hands decisions and blind reports to the
// handler (docs/design.md §1, §2).
//
// A trigger with a Resolution (PromQL, whose history Prometheus keeps) is
// sampled at every multiple of its resolution since its previous sample,
// not once per tick: each evaluation runs one query_range over the time
// since the last, so a breach is seen to within one resolution of its
// start whatever the interval. And when a pending window will complete
// before the next tick (its first breaching sample + for), Run evaluates
// that trigger's queries at that very moment instead of up to one interval
// later. Together a trigger fires at its first breach + for, to within the
// query's own latency, at any interval, on exactly the samples a backtest
// at the same resolution replays.
package evaluator

import (
	"context"
	"errors"
	"fmt"
	"hash/maphash"
	"math"
	"slices"
	"sort"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// Querier runs an instant query. Both source backends satisfy it.
type Querier interface {
	Query(ctx context.Context, query string, ts time.Time) ([]source.Series, error)
}

// RangeQuerier also evaluates a query at start, start+step, ... end (a
// Prometheus query_range). The Prometheus source satisfies it; a trigger
// with a Resolution needs its backend to.
type RangeQuerier interface {
	QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]source.Range, error)
}

// Handler receives what the triggers emit. It must not block: it is called
// from the tick, so a slow handler delays every trigger's next sample.
type Handler interface {
	Fire(trigger.Decision)
	Blind(trigger.Blind)
}

// ErrUnknownTrigger is returned by Seed for an ID not set by SetTriggers.
var ErrUnknownTrigger = errors.New("unknown trigger")

// Options configure the evaluator. Zero values take the defaults noted.
type Options struct {
	// Interval between ticks; default 5 s.
	Interval time.Duration
	// Parallelism bounds the queries in flight; default 4.
	Parallelism int
	// QueryTimeout bounds each query; default 80 % of Interval, so a slow
	// source cannot push the tick past the next one.
	QueryTimeout time.Duration
	// Now is the clock that stamps Run's ticks; default time.Now.
	Now func() time.Time
	// After waits d on Now's clock; default time.After. Tests drive Run
	// with a fake clock through Now and After.
	After func(d time.Duration) <-chan time.Time
}

// Spec is one trigger as the evaluator runs it.
type Spec struct {
	// ID is unique and stable across reloads (e.g. "target/trigger").
	ID string
	// Backend names the querier.
	Backend string
	Query   string
	// VolumeQuery, when set, is run on the same backend and matched the
	// same way; its value is the observation's Volume for the MinRate guard.
	VolumeQuery string
	// Match selects this trigger's series from a grouped query: the series
	// whose labels contain every pair. Empty means the query must return
	// exactly one series.
	Match map[string]string
	// Rule is the trigger's rule; a MaxGap of 0 means
	// window.DefaultMaxGap(Interval).
	Rule trigger.Rule
	// Resolution, when > 0, samples the trigger at every multiple of it
	// (Unix time) since its previous sample, with one range query per
	// evaluation, instead of once per tick; the backend must be a
	// RangeQuerier, and Resolution a whole number of milliseconds no
	// larger than the interval. 0 samples once per tick, at the tick.
	Resolution time.Duration
	// Fingerprint identifies the spec's content; a reload keeps the window
	// of a trigger whose ID and Fingerprint are unchanged. Empty means the
	// evaluator derives one from every field.
	Fingerprint string
}

func (s Spec) fingerprint() string {
	if s.Fingerprint != "" {
		return s.Fingerprint
	}
	// fmt prints maps with sorted keys, so this is deterministic.
	return fmt.Sprintf("%q|%q|%q|%v|%#v|%s", s.Backend, s.Query, s.VolumeQuery, s.Match, s.Rule, s.Resolution)
}

// queryKey identifies one distinct query of a plan: a query sampled at a
// resolution is a different request from the same text sampled per tick.
type queryKey struct {
	backend, query string
	step           time.Duration
}

// group indexes one query's result by the values of one set of label
// names, so fan-out is a map lookup instead of a scan of every series for
// every trigger (10,000 triggers × 2,500 series per tick otherwise).
type group struct {
	names []string // sorted
	index map[uint64]int32
}

const (
	slotAmbiguous = -1 // two series with the same values: ambiguous
	slotScan      = -2 // hash collision between different values: scan
)

type query struct {
	key     queryKey
	querier Querier
	ranger  RangeQuerier // set when key.step > 0
	groups  []*group
	// comp numbers the set of queries that are always evaluated together:
	// a trigger's query and its volume query must sample the same
	// instants, so every query linked to another by a trigger is in its
	// set.
	comp int32
	// through is the last instant a range query was evaluated at; zero
	// before its first evaluation. Guarded by tickMu.
	through time.Time

	// Per-evaluation state, written by one worker, read after wg.Wait.
	run bool
	// from and n are a range query's instants: from + k·step, k < n.
	from time.Time
	n    int
	// extra is an instant after the grid's, set by a due evaluation whose
	// window completes between two instants of the grid: it is sampled
	// there (one instant query) and fed after the grid's instants.
	// extraErr is its query's error; the grid's instants are fed anyway.
	extra    time.Time
	extraErr error
	series   []source.Series
	ranges   []source.Range
	err      error
	dur      time.Duration
}

// entry is a trigger's state that survives a reload. Its metrics are not
// gauge children updated every tick: the collector reads the triggers at
// scrape time, which costs nothing between scrapes and needs no cleanup
// when a trigger goes away.
type entry struct {
	spec    Spec
	fp      string
	trig    *trigger.Trigger
	dropped bool
	// due is when the pending window completes (its first breaching
	// sample + for): Run evaluates the trigger then rather than at the
	// next tick. Zero when not pending.
	due time.Time
}

// binding ties an entry to one plan's queries.
type binding struct {
	e         *entry
	q, vq     int32 // query index; vq -1 without volume query
	g, vg     int32 // group index in the query; -1 without Match
	key, vkey uint64
	// values are the Match values in the group's sorted name order, to
	// verify an index hit without iterating the Match map.
	values []string
}

// plan is immutable once built, apart from the per-evaluation state of
// its queries (guarded by tickMu); SetTriggers swaps it.
type plan struct {
	queries  []*query
	bindings []binding
	backends []string // sorted, those used by at least one trigger
}

// maxRangeIntervals bounds how far back a range evaluation reaches after a
// stall (a tick that overran, a suspended process): at most this many
// intervals. Older instants are skipped, and the trigger sees the gap as
// any evaluator stall (a gap above maxGap restarts its run).
const maxRangeIntervals = 3

// Evaluator runs the tick loop.
type Evaluator struct {
	opts     Options
	queriers map[string]Querier
	handler  Handler
	logger   *zap.Logger
	m        *metrics
	seed     maphash.Seed

	tickMu sync.Mutex // serialises evaluations
	// scratch holds the range cursors of the trigger being fed (its query
	// and its volume query, on the grid and between two of its instants),
	// reused from trigger to trigger. Guarded by mu.
	scratch [4]rangeCursor

	mu       sync.Mutex // guards everything below
	plan     *plan
	entries  map[string]*entry
	ticked   bool
	answered map[string]bool
	lastErr  map[string]string   // per backend, for Ready
	qErr     map[queryKey]string // per query error kind, to log once per change
}

// New returns an evaluator with no triggers.
func New(opts Options, queriers map[string]Querier, handler Handler, logger *zap.Logger, reg prometheus.Registerer) *Evaluator {
	if opts.Interval <= 0 {
		opts.Interval = 5 * time.Second
	}
	if opts.Parallelism <= 0 {
		opts.Parallelism = 4
	}
	if opts.QueryTimeout <= 0 {
		opts.QueryTimeout = opts.Interval * 4 / 5
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.After == nil {
		opts.After = time.After
	}
	if logger == nil {
		logger = zap.NewNop()
	}
	e := &Evaluator{
		opts:     opts,
		queriers: queriers,
		handler:  handler,
		logger:   logger,
		m:        newMetrics(),
		seed:     maphash.MakeSeed(),
		plan:     &plan{},
		entries:  map[string]*entry{},
		answered: map[string]bool{},
		lastErr:  map[string]string{},
		qErr:     map[queryKey]string{},
	}
	if reg != nil {
		reg.MustRegister(e.m.evals, e.m.qdur, e.m.serr, triggerCollector{e})
	}
	return e
}

// SetTriggers replaces the trigger set. Triggers whose ID and Fingerprint
// are unchanged keep their window (hot reload); changed ones restart from
// an empty window; removed ones are dropped with their metrics. An invalid
// set is rejected as a whole and the current one kept.
func (e *Evaluator) SetTriggers(specs []Spec) error {
	var errs []error
	ids := make(map[string]bool, len(specs))
	names := make(map[[2]string]bool, len(specs))
	for i, s := range specs {
		switch {
		case s.ID == "":
			errs = append(errs, fmt.Errorf("trigger %d: empty id", i))
		case ids[s.ID]:
			errs = append(errs, fmt.Errorf("trigger %q: duplicate id", s.ID))
		}
		ids[s.ID] = true
		tn := [2]string{s.Rule.Target, s.Rule.Name}
		if names[tn] {
			errs = append(errs, fmt.Errorf("trigger %q: duplicate target/name %s/%s", s.ID, tn[0], tn[1]))
		}
		names[tn] = true
		q, ok := e.queriers[s.Backend]
		if !ok {
			errs = append(errs, fmt.Errorf("trigger %q: unknown backend %q", s.ID, s.Backend))
		}
		switch _, ranges := q.(RangeQuerier); {
		case s.Resolution < 0 || s.Resolution%time.Millisecond != 0:
			errs = append(errs, fmt.Errorf("trigger %q: resolution %s: must be a whole number of milliseconds >= 0", s.ID, s.Resolution))
		case s.Resolution > e.opts.Interval:
			errs = append(errs, fmt.Errorf("trigger %q: resolution %s: must not exceed the interval %s", s.ID, s.Resolution, e.opts.Interval))
		case s.Resolution > 0 && ok && !ranges:
			errs = append(errs, fmt.Errorf("trigger %q: resolution %s: backend %q cannot evaluate ranges", s.ID, s.Resolution, s.Backend))
		}
		if s.Query == "" {
			errs = append(errs, fmt.Errorf("trigger %q: empty query", s.ID))
		}
		if err := s.Rule.Validate(); err != nil {
			errs = append(errs, fmt.Errorf("trigger %q: %w", s.ID, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("set triggers: %w", err)
	}

	sorted := slices.Clone(specs)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })

	e.mu.Lock()
	defer e.mu.Unlock()

	next := make(map[string]*entry, len(sorted))
	p := &plan{bindings: make([]binding, 0, len(sorted))}
	qIdx := map[queryKey]int32{}
	backends := map[string]bool{}
	addQuery := func(backend, q string, step time.Duration, match map[string]string) (int32, int32, uint64) {
		k := queryKey{backend, q, step}
		i, ok := qIdx[k]
		if !ok {
			i = int32(len(p.queries))
			qIdx[k] = i
			qq := &query{key: k, querier: e.queriers[backend]}
			if step > 0 {
				qq.ranger = e.queriers[backend].(RangeQuerier)
			}
			p.queries = append(p.queries, qq)
		}
		if len(match) == 0 {
			return i, -1, 0
		}
		ns := make([]string, 0, len(match))
		for n := range match {
			ns = append(ns, n)
		}
		sort.Strings(ns)
		qq := p.queries[i]
		gi := slices.IndexFunc(qq.groups, func(g *group) bool { return slices.Equal(g.names, ns) })
		if gi < 0 {
			gi = len(qq.groups)
			qq.groups = append(qq.groups, &group{names: ns, index: map[uint64]int32{}})
		}
		return i, int32(gi), e.hashValues(matchValues(ns, match))
	}

	for _, s := range sorted {
		fp := s.fingerprint()
		en, ok := e.entries[s.ID]
		if !ok || en.fp != fp || en.spec.Resolution != s.Resolution {
			en = e.newEntry(s, fp)
		}
		next[s.ID] = en
		b := binding{e: en, vq: -1, vg: -1}
		b.q, b.g, b.key = addQuery(s.Backend, s.Query, s.Resolution, s.Match)
		if b.g >= 0 {
			b.values = matchValues(p.queries[b.q].groups[b.g].names, s.Match)
		}
		if s.VolumeQuery != "" {
			b.vq, b.vg, b.vkey = addQuery(s.Backend, s.VolumeQuery, s.Resolution, s.Match)
		}
		p.bindings = append(p.bindings, b)
		backends[s.Backend] = true
	}
	p.components()
	// A range query keeps its place in time across a reload, so the
	// unchanged triggers bound to it are not sampled twice or skipped.
	for _, q := range e.plan.queries {
		if i, ok := qIdx[q.key]; ok && q.key.step > 0 {
			p.queries[i].through = q.through
		}
	}
	for b := range backends {
		p.backends = append(p.backends, b)
	}
	sort.Strings(p.backends)

	for id, old := range e.entries {
		if next[id] != old {
			old.dropped = true
		}
	}
	for k := range e.qErr {
		if _, ok := qIdx[k]; !ok {
			delete(e.qErr, k)
		}
	}
	e.entries = next
	e.plan = p
	e.logger.Info("triggers set", zap.Int("triggers", len(p.bindings)), zap.Int("queries", len(p.queries)))
	return nil
}

// newEntry builds a fresh trigger. A MaxGap of 0 takes
// window.DefaultMaxGap of the interval here, where the interval is known:
// the window itself would read 0 as "no gap check", and a stalled
// evaluator must not count as a continuous breach.
func (e *Evaluator) newEntry(s Spec, fp string) *entry {
	r := s.Rule
	if r.MaxGap == 0 {
		r.MaxGap = window.DefaultMaxGap(e.opts.Interval)
	}
	// Sampled at a resolution, a trigger gets interval/resolution samples
	// per tick; the evidence keeps one per interval (and every change of
	// kind), so it spans the window in the same memory.
	var spacing time.Duration
	if s.Resolution > 0 && s.Resolution < e.opts.Interval {
		spacing = e.opts.Interval
	}
	return &entry{
		spec: s,
		fp:   fp,
		trig: trigger.NewWithEvidence(r, window.CapacityFor(r.For, e.opts.Interval), spacing),
	}
}

// components numbers the sets of queries that must be evaluated together
// (union-find over the triggers' query and volume query).
func (p *plan) components() {
	parent := make([]int32, len(p.queries))
	for i := range parent {
		parent[i] = int32(i)
	}
	var find func(int32) int32
	find = func(i int32) int32 {
		for parent[i] != i {
			parent[i] = parent[parent[i]]
			i = parent[i]
		}
		return i
	}
	for _, b := range p.bindings {
		if b.vq >= 0 {
			parent[find(b.q)] = find(b.vq)
		}
	}
	for i, q := range p.queries {
		q.comp = find(int32(i))
	}
}

func matchValues(names []string, match map[string]string) []string {
	vs := make([]string, len(names))
	for i, n := range names {
		vs[i] = match[n]
	}
	return vs
}

func (e *Evaluator) hashValues(values []string) uint64 {
	var h maphash.Hash
	h.SetSeed(e.seed)
	for _, v := range values {
		h.WriteString(v)
		h.WriteByte(0xff)
	}
	return h.Sum64()
}

// Run ticks at once and then every Interval until ctx is cancelled, and in
// between evaluates a trigger at the moment its pending window completes
// (see NextDue). A tick that overruns the interval drops the ticks it ran
// over rather than queueing them. Run returns when the evaluation in
// flight has finished.
func (e *Evaluator) Run(ctx context.Context) error {
	iv := e.opts.Interval
	base := e.opts.Now()
	e.Tick(ctx, base)
	next := base.Add(iv)
	for {
		wake := next
		if due, ok := e.NextDue(); ok && due.Before(wake) {
			wake = due
		}
		select {
		case <-ctx.Done():
			return nil
		case <-e.opts.After(wake.Sub(e.opts.Now())):
		}
		now := e.opts.Now()
		if now.Before(next) {
			e.EvaluateDue(ctx, now)
			continue
		}
		e.Tick(ctx, slot(base, now, iv))
		for after := e.opts.Now(); !next.After(after); {
			next = next.Add(iv)
		}
	}
}

// slot stamps a tick with the point of the schedule base + k·interval
// nearest to now. Stamped with the raw clock, timer and scheduling jitter
// made the sample one window after the first breach a few milliseconds
// short of the window, and the trigger fired one whole interval late
// (make bench: 65 s instead of 60 s in 1 run of 3 at a 5 s interval).
//
// Both are read on the wall clock (Round(0) drops the monotonic reading):
// base + monotonic time since would keep a clock that was wrong at start
// (and stepped right by NTP since) in every query for the life of the
// process. A stepped clock moves the stamps with it: a step back repeats
// instants the windows ignore, a step forward is a gap (above maxGap it
// restarts a run), which is what they are.
func slot(base, now time.Time, interval time.Duration) time.Time {
	b, n := base.Round(0), now.Round(0)
	k := (n.Sub(b) + interval/2) / interval
	return b.Add(k * interval)
}

// floorStep is the last multiple of step (since the Unix epoch) at or
// before t: the instants a trigger with that resolution is sampled at, the
// same for every process and for a backtest at that step.
func floorStep(t time.Time, step time.Duration) time.Time {
	ns := t.UnixNano()
	return time.Unix(0, ns-ns%int64(step)).UTC()
}

// ceilStep is the first multiple of step at or after t.
func ceilStep(t time.Time, step time.Duration) time.Time {
	f := floorStep(t, step)
	if f.Before(t) {
		return f.Add(step)
	}
	return f
}

// Tick runs one evaluation stamped now: every distinct (backend, query)
// once, with bounded parallelism and a per-query timeout, then the fan-out
// to every trigger. A query sampled per tick is asked for now; one with a
// resolution for every instant since its previous evaluation up to now. A
// tick interrupted by ctx feeds nothing: a shutdown is not missing data.
func (e *Evaluator) Tick(ctx context.Context, now time.Time) {
	e.evaluate(ctx, now, nil)
}

// NextDue returns the earliest moment a pending window completes: its first
// breaching sample + for. Run evaluates then, at that very instant even
// when it falls between two instants of a resolution's grid.
func (e *Evaluator) NextDue() (time.Time, bool) {
	e.mu.Lock()
	defer e.mu.Unlock()
	var due time.Time
	for _, b := range e.plan.bindings {
		if d := b.e.due; !d.IsZero() && (due.IsZero() || d.Before(due)) {
			due = d
		}
	}
	return due, !due.IsZero()
}

// EvaluateDue evaluates, at now, the queries of every trigger whose
// pending window completes at or before now (and the queries evaluated
// together with them), and feeds every trigger bound to those queries. It
// does nothing when no window is due.
func (e *Evaluator) EvaluateDue(ctx context.Context, now time.Time) {
	e.mu.Lock()
	p := e.plan
	var comps map[int32]time.Time // the latest due window of each
	for _, b := range p.bindings {
		if d := b.e.due; !b.e.dropped && !d.IsZero() && !d.After(now) {
			if comps == nil {
				comps = map[int32]time.Time{}
			}
			if c := p.queries[b.q].comp; d.After(comps[c]) {
				comps[c] = d
			}
		}
	}
	e.mu.Unlock()
	if comps == nil {
		return
	}
	e.evaluate(ctx, now, comps)
}

// evaluate runs the queries of the components in only (all when nil) at
// now and feeds the triggers bound to them. only maps a component to the
// latest moment one of its windows completes: a component sampled at a
// resolution is also sampled at that moment when it falls after the last
// instant of its grid.
func (e *Evaluator) evaluate(ctx context.Context, now time.Time, only map[int32]time.Time) {
	e.tickMu.Lock()
	defer e.tickMu.Unlock()
	start := time.Now()

	e.mu.Lock()
	p := e.plan
	e.mu.Unlock()

	e.schedule(p, now, only)
	e.runQueries(ctx, p)
	if ctx.Err() != nil {
		for _, q := range p.queries {
			q.run, q.series, q.ranges = false, nil, nil
		}
		return
	}
	ran := 0
	for _, q := range p.queries {
		if !q.run {
			continue
		}
		ran++
		if q.key.step > 0 && q.n > 0 {
			q.through = q.from.Add(time.Duration(q.n-1) * q.key.step)
		}
		if q.err == nil {
			q.buildIndex(e.seed)
		}
	}

	var decisions []trigger.Decision
	var blinds []timedBlind
	var held []heldFeed
	e.mu.Lock()
	e.recordQueries(p)
	fed := 0
	for i := range p.bindings {
		b := &p.bindings[i]
		q := p.queries[b.q]
		if b.e.dropped || !q.run {
			continue
		}
		fed++
		obs := trigger.Observation{Volume: math.NaN()}
		if q.key.step == 0 {
			obs.Value, obs.Err = q.pick(b.g, b.key, b.values, b.e.spec.Match)
			if b.vq >= 0 {
				if v, err := p.queries[b.vq].pick(b.vg, b.vkey, b.values, b.e.spec.Match); err == nil {
					obs.Volume = v
				}
			}
			e.step(b.e, now, obs, &decisions, &blinds)
			continue
		}
		if q.err != nil {
			// A failed range query is one failed sample, at its last
			// instant: what a failed instant query is to a tick.
			obs.Value, obs.Err = math.NaN(), q.err
			e.step(b.e, q.through, obs, &decisions, &blinds)
			continue
		}
		if k := e.feedRange(p, b, 0, true, &decisions, &blinds); k >= 0 {
			held = append(held, heldFeed{b: b, k: k, at: q.instant(k)})
		}
	}
	if len(held) > 0 {
		// Sources are not queried under mu: the API and the console read
		// the triggers meanwhile. tickMu still keeps the queries' results.
		e.mu.Unlock()
		between := e.fetchBetween(ctx, p, held)
		e.mu.Lock()
		for _, h := range held {
			if h.b.e.dropped {
				continue
			}
			e.feedBetween(h, between, &decisions, &blinds)
			e.feedRange(p, h.b, h.k, false, &decisions, &blinds)
		}
	}
	if only == nil {
		e.ticked = true
	}
	e.mu.Unlock()
	// The results are read only by this evaluation's fan-out: dropping
	// them now lets the GC take them before the next one instead of
	// keeping every series of every query alive in between (~15 MB at
	// 10,000 targets, make bench).
	for _, q := range p.queries {
		q.run, q.series, q.ranges = false, nil, nil
	}

	e.m.evals.Inc()
	if e.handler != nil {
		// Triggers are fed one after the other, each over every instant of
		// the evaluation: hand over in time order, as one tick per instant
		// would have.
		slices.SortStableFunc(decisions, func(a, b trigger.Decision) int { return a.FiredAt.Compare(b.FiredAt) })
		slices.SortStableFunc(blinds, func(a, b timedBlind) int { return a.at.Compare(b.at) })
		for _, d := range decisions {
			e.handler.Fire(d)
		}
		for _, bl := range blinds {
			e.handler.Blind(bl.Blind)
		}
	}
	msg := "tick"
	if only != nil {
		msg = "due evaluation"
	}
	e.logger.Debug(msg, zap.Time("at", now), zap.Int("queries", ran),
		zap.Int("triggers", fed), zap.Duration("took", time.Since(start)))
}

// timedBlind is a blind report with the instant that emitted it.
type timedBlind struct {
	at time.Time
	trigger.Blind
}

// step feeds one observation to a trigger, logs what changed and collects
// what it emits. Called with e.mu held.
func (e *Evaluator) step(en *entry, at time.Time, obs trigger.Observation, decisions *[]trigger.Decision, blinds *[]timedBlind) {
	prev := en.trig.Window().State()
	hadSample := en.trig.Window().Len() > 0
	st, d, bl := en.trig.Step(at, obs)
	if st != prev && hadSample {
		e.logStateChange(en, prev)
	}
	en.due = e.dueOf(en)
	if d != nil {
		*decisions = append(*decisions, *d)
		e.logger.Info("trigger fired", zap.String("target", d.Target), zap.String("trigger", d.Trigger),
			zap.Float64("value", d.Value), zap.Time("firstBreach", d.FirstBreach), zap.Time("at", d.FiredAt), zap.String("action", d.Action))
	}
	if bl != nil {
		*blinds = append(*blinds, timedBlind{at, *bl})
		if bl.Resolved {
			e.logger.Info("trigger has data again", zap.String("target", bl.Target), zap.String("trigger", bl.Trigger),
				zap.Time("blindSince", bl.Since))
		} else {
			e.logger.Warn("trigger blind", zap.String("target", bl.Target), zap.String("trigger", bl.Trigger),
				zap.Time("since", bl.Since), zap.String("lastError", bl.LastError))
		}
	}
}

// dueOf is when the entry's pending window completes, zero when it is
// not pending.
func (e *Evaluator) dueOf(en *entry) time.Time {
	w := en.trig.Window()
	if w.State() != window.StatePending {
		return time.Time{}
	}
	first, _ := w.BreachStart()
	return first.Add(en.trig.Rule().For)
}

// schedule marks the queries to run at now and, for range queries, the
// instants to ask for: from just after the component's last evaluated
// instant (its earliest, should its queries differ after a reload) to the
// last instant at or before now, at most maxRangeIntervals back.
func (e *Evaluator) schedule(p *plan, now time.Time, only map[int32]time.Time) {
	type span struct {
		from time.Time
		set  bool
	}
	var spans map[int32]*span
	for _, q := range p.queries {
		q.run, q.err, q.series, q.ranges, q.n = false, nil, nil, nil, 0
		q.extra, q.extraErr = time.Time{}, nil
		if !inOnly(only, q.comp) {
			continue
		}
		if q.key.step == 0 {
			q.from, q.n, q.run = now, 1, true
			continue
		}
		end := floorStep(now, q.key.step)
		from := q.through.Add(q.key.step)
		if q.through.IsZero() {
			from = end
		}
		if oldest := end.Add(-time.Duration(maxRangeIntervals) * e.opts.Interval).Add(q.key.step); from.Before(oldest) {
			from = ceilStep(oldest, q.key.step)
		}
		if spans == nil {
			spans = map[int32]*span{}
		}
		sp := spans[q.comp]
		if sp == nil {
			sp = &span{}
			spans[q.comp] = sp
		}
		if !sp.set || from.Before(sp.from) {
			sp.from, sp.set = from, true
		}
	}
	for _, q := range p.queries {
		if q.key.step == 0 || !inOnly(only, q.comp) {
			continue
		}
		end := floorStep(now, q.key.step)
		from := spans[q.comp].from
		var extra time.Time
		if due := only[q.comp]; due.After(end) {
			extra = due // a window completes between two instants of the grid
		}
		switch {
		case !end.Before(from):
			q.from, q.n, q.extra, q.run = from, int(end.Sub(from)/q.key.step)+1, extra, true
		case !extra.IsZero():
			q.from, q.n, q.extra, q.run = from, 0, extra, true
		}
	}
}

func inOnly(only map[int32]time.Time, comp int32) bool {
	if only == nil {
		return true
	}
	_, ok := only[comp]
	return ok
}

// runQueries runs the marked queries on min(Parallelism, n) workers. Each
// query has its own timeout, so a hanging source holds one worker for at
// most QueryTimeout while the others go on.
func (e *Evaluator) runQueries(ctx context.Context, p *plan) {
	var todo []*query
	for _, q := range p.queries {
		if q.run {
			todo = append(todo, q)
		}
	}
	n := len(todo)
	e.each(ctx, n, func(i int) {
		q := todo[i]
		qctx, cancel := context.WithTimeout(ctx, e.opts.QueryTimeout)
		t0 := time.Now()
		switch {
		case q.key.step == 0:
			q.series, q.err = q.querier.Query(qctx, q.key.query, q.from)
		case q.n == 0: // only the extra instant
		case q.n == 1:
			// One instant (a resolution equal to the interval, a
			// due evaluation right after a tick): an instant query
			// at it answers the same and costs Prometheus about half
			// a one-point query_range (make bench, 1,000 targets).
			var series []source.Series
			series, q.err = q.querier.Query(qctx, q.key.query, q.from)
			q.ranges = asRanges(series, q.from)
		default:
			end := q.from.Add(time.Duration(q.n-1) * q.key.step)
			q.ranges, q.err = q.ranger.QueryRange(qctx, q.key.query, q.from, end, q.key.step)
		}
		if q.key.step > 0 && !q.extra.IsZero() && q.err == nil {
			var series []source.Series
			if series, q.extraErr = q.querier.Query(qctx, q.key.query, q.extra); q.extraErr == nil {
				q.ranges = withInstant(q.ranges, series, q.extra)
			}
		}
		q.dur = time.Since(t0)
		if q.err != nil && errors.Is(q.err, context.DeadlineExceeded) && !errors.Is(q.err, source.ErrTimeout) && !errors.Is(q.err, source.ErrUnreachable) {
			q.err = fmt.Errorf("%s query %q: %w: %w", q.key.backend, q.key.query, source.ErrTimeout, q.err)
		}
		cancel()
	})
}

// each runs f(0..n-1) on min(Parallelism, n) workers and returns when all
// have run or ctx is done (the indexes not started by then are skipped).
func (e *Evaluator) each(ctx context.Context, n int, f func(i int)) {
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(e.opts.Parallelism, n) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= n || ctx.Err() != nil {
					return
				}
				f(i)
			}
		})
	}
	wg.Wait()
}

// asRanges is an instant result as a range result of one instant.
func asRanges(series []source.Series, at time.Time) []source.Range {
	if series == nil {
		return nil
	}
	out := make([]source.Range, len(series))
	pts := make([]source.Point, len(series))
	for i, s := range series {
		pts[i] = source.Point{Time: at, Value: s.Value}
		out[i] = source.Range{Labels: s.Labels, Points: pts[i : i+1 : i+1]}
	}
	return out
}

// recordQueries updates readiness, metrics and the once-per-change source
// error log for the queries that ran. Called with e.mu held.
func (e *Evaluator) recordQueries(p *plan) {
	for _, q := range p.queries {
		if !q.run {
			continue
		}
		b := q.key.backend
		e.m.qdur.WithLabelValues(b).Observe(q.dur.Seconds())
		kind := errKind(q.err)
		if answered(q.err) {
			e.answered[b] = true
		}
		if q.err != nil {
			e.lastErr[b] = q.err.Error()
			if kind != "nodata" {
				e.m.serr.WithLabelValues(b, kind).Inc()
			}
		}
		prev := e.qErr[q.key]
		if kind == prev {
			continue
		}
		e.qErr[q.key] = kind
		switch {
		case kind == "" || kind == "nodata":
			if prev != "" && prev != "nodata" {
				e.logger.Info("source query recovered", zap.String("backend", b), zap.String("query", q.key.query))
			}
		default:
			e.logger.Warn("source query failed", zap.String("backend", b), zap.String("query", q.key.query),
				zap.String("kind", kind), zap.Error(q.err))
		}
	}
}

// logStateChange logs at Info. The first sample of a new trigger (out of
// the initial nodata) is not logged: that would be a line per trigger at
// every start.
func (e *Evaluator) logStateChange(en *entry, prev window.State) {
	st := en.trig.Status()
	e.logger.Info("trigger state changed", zap.String("target", st.Target), zap.String("trigger", st.Trigger),
		zap.Stringer("from", prev), zap.Stringer("to", st.State), zap.Float64("value", st.Value),
		zap.Time("at", st.LastSample), zap.String("lastError", st.LastError))
}

// labelsOf returns the labels of the i-th series of the evaluation's result.
func (q *query) labelsOf(i int) map[string]string {
	if q.key.step > 0 {
		return q.ranges[i].Labels
	}
	return q.series[i].Labels
}

func (q *query) results() int {
	if q.key.step > 0 {
		return len(q.ranges)
	}
	return len(q.series)
}

// buildIndex fills each group's index from the evaluation's series.
func (q *query) buildIndex(seed maphash.Seed) {
	if len(q.groups) == 0 {
		return
	}
	var h maphash.Hash
	h.SetSeed(seed) // the triggers' keys were hashed with it
	n := q.results()
	for _, g := range q.groups {
		clear(g.index)
		for i := range n {
			lbls := q.labelsOf(i)
			h.Reset()
			for _, name := range g.names {
				h.WriteString(lbls[name])
				h.WriteByte(0xff)
			}
			k := h.Sum64()
			prev, ok := g.index[k]
			switch {
			case !ok:
				g.index[k] = int32(i)
			case prev >= 0 && sameValues(q.labelsOf(int(prev)), lbls, g.names):
				g.index[k] = slotAmbiguous
			default:
				g.index[k] = slotScan
			}
		}
	}
}

// rangeCursor reads one trigger's series out of a range result, instant
// by instant in time order. Its candidates are the series whose labels
// contain the trigger's match, usually one; at each instant the value is
// that of the one candidate with a point there, exactly as an instant
// query at that instant would have been picked (two versions of one
// Deployment reporting at once are ambiguous there and only there).
type rangeCursor struct {
	q     *query
	match map[string]string
	any   bool // empty match: every series is a candidate
	cands []int32
	pos   []int
	none  error // the answer at an instant without a candidate point
}

// cursor prepares c to read the trigger's series (see pick for g, key and
// values). c's slices are reused between triggers.
func (q *query) cursor(g int32, key uint64, values []string, match map[string]string, c *rangeCursor) *rangeCursor {
	c.q, c.match, c.any = q, match, g < 0
	c.cands, c.pos = c.cands[:0], c.pos[:0]
	if g < 0 {
		c.none = fmt.Errorf("%s query %q: %w", q.key.backend, q.key.query, source.ErrNoData)
		for i := range q.ranges {
			c.cands = append(c.cands, int32(i))
		}
	} else {
		c.none = nil
		slot, ok := q.groups[g].index[key]
		switch {
		case !ok:
		case slot >= 0:
			if hasValues(q.ranges[slot].Labels, q.groups[g].names, values) {
				c.cands = append(c.cands, slot)
			}
		default: // ambiguous or a hash collision: find every true match
			for i, r := range q.ranges {
				if containsAll(r.Labels, match) {
					c.cands = append(c.cands, int32(i))
				}
			}
		}
	}
	for range c.cands {
		c.pos = append(c.pos, 0)
	}
	return c
}

// at returns the trigger's value at t; instants must come in time order.
func (c *rangeCursor) at(t time.Time) (float64, error) {
	ms := t.UnixMilli()
	present, found, unlabelled, nUnlabelled := 0, -1, -1, 0
	for i, ri := range c.cands {
		pts := c.q.ranges[ri].Points
		p := c.pos[i]
		for p < len(pts) && pts[p].Time.UnixMilli() < ms {
			p++
		}
		c.pos[i] = p
		if p == len(pts) || pts[p].Time.UnixMilli() != ms {
			continue
		}
		present++
		found = i
		if c.any && len(c.q.ranges[ri].Labels) == 0 {
			unlabelled, nUnlabelled = i, nUnlabelled+1
		}
	}
	value := func(i int) float64 { return c.q.ranges[c.cands[i]].Points[c.pos[i]].Value }
	switch {
	case present == 1:
		return value(found), nil
	case present == 0:
		if c.none == nil {
			c.none = fmt.Errorf("%s query %q match %v: %w", c.q.key.backend, c.q.key.query, c.match, source.ErrNoData)
		}
		return math.NaN(), c.none
	case c.any && nUnlabelled == 1:
		return value(unlabelled), nil
	case c.any:
		return math.NaN(), fmt.Errorf("%s query %q: %d series: %w", c.q.key.backend, c.q.key.query, present, source.ErrAmbiguous)
	default:
		return math.NaN(), fmt.Errorf("%s query %q match %v: %w", c.q.key.backend, c.q.key.query, c.match, source.ErrAmbiguous)
	}
}

func hasValues(labels map[string]string, names, values []string) bool {
	for i, n := range names {
		if labels[n] != values[i] {
			return false
		}
	}
	return true
}

func sameValues(a, b map[string]string, names []string) bool {
	for _, n := range names {
		if a[n] != b[n] {
			return false
		}
	}
	return true
}

// pick selects one trigger's value from the tick's result; values are the
// match values in the group's name order.
func (q *query) pick(g int32, key uint64, values []string, match map[string]string) (float64, error) {
	if q.err != nil {
		return math.NaN(), q.err
	}
	if g < 0 {
		switch len(q.series) {
		case 0:
			return math.NaN(), fmt.Errorf("%s query %q: %w", q.key.backend, q.key.query, source.ErrNoData)
		case 1:
			return q.series[0].Value, nil
		default:
			if i := unlabelled(len(q.series), func(i int) map[string]string { return q.series[i].Labels }); i >= 0 {
				return q.series[i].Value, nil
			}
			return math.NaN(), fmt.Errorf("%s query %q: %d series: %w", q.key.backend, q.key.query, len(q.series), source.ErrAmbiguous)
		}
	}
	slot, ok := q.groups[g].index[key]
	switch {
	case !ok:
	case slot == slotAmbiguous:
		return math.NaN(), fmt.Errorf("%s query %q match %v: %w", q.key.backend, q.key.query, match, source.ErrAmbiguous)
	case slot == slotScan:
		v, err := Select(q.series, match)
		if err != nil {
			return math.NaN(), fmt.Errorf("%s query %q match %v: %w", q.key.backend, q.key.query, match, err)
		}
		return v, nil
	case hasValues(q.series[slot].Labels, q.groups[g].names, values):
		return q.series[slot].Value, nil
	}
	// Not indexed, or the indexed series only shares the hash: any series
	// that truly matched would have collided into a scan slot.
	return math.NaN(), fmt.Errorf("%s query %q match %v: %w", q.key.backend, q.key.query, match, source.ErrNoData)
}

// unlabelled returns the index of the only series with no labels among n,
// or -1. With an empty match it is the series meant: the PostgreSQL
// built-ins answer a total as {} beside per-application and per-state
// breakdowns, and the total is what a trigger without match watches.
func unlabelled(n int, labels func(int) map[string]string) int {
	found := -1
	for i := 0; i < n; i++ {
		if len(labels(i)) == 0 {
			if found >= 0 {
				return -1
			}
			found = i
		}
	}
	return found
}

// Select returns the value of the one series whose labels contain every
// pair of match (ErrNoData for none, ErrAmbiguous for several); with an
// empty match the result must hold exactly one series, or exactly one
// series with no labels. A label absent from a series reads as "", as in
// PromQL.
func Select(series []source.Series, match map[string]string) (float64, error) {
	if len(match) == 0 && len(series) > 1 {
		if i := unlabelled(len(series), func(i int) map[string]string { return series[i].Labels }); i >= 0 {
			return series[i].Value, nil
		}
	}
	found := -1
	for i, s := range series {
		if !containsAll(s.Labels, match) {
			continue
		}
		if found >= 0 {
			return math.NaN(), source.ErrAmbiguous
		}
		found = i
	}
	if found < 0 {
		return math.NaN(), source.ErrNoData
	}
	return series[found].Value, nil
}

// SelectRange is Select for a range query, to seed a trigger's window
// after a restart.
func SelectRange(ranges []source.Range, match map[string]string) ([]source.Point, error) {
	if len(match) == 0 && len(ranges) > 1 {
		if i := unlabelled(len(ranges), func(i int) map[string]string { return ranges[i].Labels }); i >= 0 {
			return ranges[i].Points, nil
		}
	}
	found := -1
	for i, r := range ranges {
		if !containsAll(r.Labels, match) {
			continue
		}
		if found >= 0 {
			return nil, source.ErrAmbiguous
		}
		found = i
	}
	if found < 0 {
		return nil, source.ErrNoData
	}
	return ranges[found].Points, nil
}

func containsAll(labels, match map[string]string) bool {
	for k, v := range match {
		if labels[k] != v {
			return false
		}
	}
	return true
}

// Seed replays historical points (oldest first, e.g. a query_range over
// the last `for`) through a trigger to rebuild its window after a restart.
// It emits no Decision and no Blind: those instants are past. A replay that
// ends firing leaves the trigger unlatched, so the next live breaching tick
// fires at once, and a live non-breaching one resets it. Points not after
// the window's last sample are ignored. For a trigger with MinRate use
// SeedWithVolume: without volume its samples are nodata.
func (e *Evaluator) Seed(id string, points []source.Point) error {
	return e.SeedWithVolume(id, points, nil)
}

// SeedWithVolume is Seed with the volume query's points; a point without a
// volume point at the same time has an unknown volume.
func (e *Evaluator) SeedWithVolume(id string, points, volume []source.Point) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.entries[id]
	if !ok {
		return fmt.Errorf("seed trigger %q: %w", id, ErrUnknownTrigger)
	}
	j := 0
	for _, pt := range points {
		obs := trigger.Observation{Value: pt.Value, Volume: math.NaN()}
		for j < len(volume) && volume[j].Time.Before(pt.Time) {
			j++
		}
		if j < len(volume) && volume[j].Time.Equal(pt.Time) {
			obs.Volume = volume[j].Value
		}
		en.trig.Replay(pt.Time, obs)
	}
	en.due = e.dueOf(en)
	e.logger.Debug("trigger seeded", zap.String("id", id), zap.Int("points", len(points)),
		zap.Stringer("state", en.trig.Window().State()))
	return nil
}

// SeedRange rebuilds a trigger's window from a range query after a
// restart: it replays, at each evaluation instant of at (a query_range's
// start + k·step, oldest first), the point of points at that instant, as
// live evaluation would have observed it then. An instant without a point
// is what an instant query there answers, an empty result: nodata, which
// resets the run as it does live. Replaying only the points would bridge
// every hole no longer than maxGap, and a restart could fire at once where
// live evaluation would not. volume is the volume query's points (nil
// without one); an instant without a volume point has an unknown volume.
// Instants match points to the millisecond, Prometheus' resolution. It
// emits no Decision and no Blind (see Seed).
func (e *Evaluator) SeedRange(id string, at []time.Time, points, volume []source.Point) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	en, ok := e.entries[id]
	if !ok {
		return fmt.Errorf("seed trigger %q: %w", id, ErrUnknownTrigger)
	}
	match := en.spec.Match
	i, j := 0, 0
	for _, t := range at {
		ms := t.UnixMilli()
		obs := trigger.Observation{Volume: math.NaN()}
		for i < len(points) && points[i].Time.UnixMilli() < ms {
			i++
		}
		if i < len(points) && points[i].Time.UnixMilli() == ms {
			obs.Value = points[i].Value
		} else {
			obs.Value = math.NaN()
			obs.Err = fmt.Errorf("%s query %q match %v at %s: %w", en.spec.Backend, en.spec.Query, match, t.UTC().Format(time.RFC3339), source.ErrNoData)
		}
		for j < len(volume) && volume[j].Time.UnixMilli() < ms {
			j++
		}
		if j < len(volume) && volume[j].Time.UnixMilli() == ms {
			obs.Volume = volume[j].Value
		}
		en.trig.Replay(t, obs)
	}
	e.logger.Debug("trigger seeded", zap.String("id", id), zap.Int("instants", len(at)), zap.Int("points", len(points)),
		zap.Stringer("state", en.trig.Window().State()))
	return nil
}

// Firing returns the Decision of every trigger firing now, for a replica
// that has just become leader: the edges into firing it saw as a follower
// (or in a rebuilt window) were not acted on.
func (e *Evaluator) Firing() []trigger.Decision {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []trigger.Decision
	for _, b := range e.plan.bindings {
		if d := b.e.trig.Firing(); d != nil && !b.e.dropped {
			out = append(out, *d)
		}
	}
	return out
}

// Blinded returns the Blind report of every trigger in a reported nodata
// episode, for a replica that has just become leader.
func (e *Evaluator) Blinded() []trigger.Blind {
	e.mu.Lock()
	defer e.mu.Unlock()
	var out []trigger.Blind
	for _, b := range e.plan.bindings {
		if bl := b.e.trig.Blinded(); bl != nil && !b.e.dropped {
			out = append(out, *bl)
		}
	}
	return out
}

// Rearm restarts the breaching run of target's trigger at at (see
// trigger.Rearm); an unknown trigger is ignored (reloaded away).
func (e *Evaluator) Rearm(target, name string, at time.Time) {
	e.mu.Lock()
	defer e.mu.Unlock()
	for _, en := range e.entries {
		if r := en.trig.Rule(); r.Target == target && r.Name == name {
			en.trig.Rearm(at)
		}
	}
}

// Status returns every trigger's status, ordered by ID.
func (e *Evaluator) Status() []trigger.Status {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]trigger.Status, 0, len(e.plan.bindings))
	for _, b := range e.plan.bindings {
		out = append(out, b.e.trig.Status())
	}
	return out
}

// Ready reports whether every backend used by a trigger has answered at
// least once (an empty result or a rejected query is an answer; a timeout
// or a refused connection is not), and if not, why.
func (e *Evaluator) Ready() (bool, string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if !e.ticked {
		return false, "no evaluation has completed yet"
	}
	for _, b := range e.plan.backends {
		if !e.answered[b] {
			if msg := e.lastErr[b]; msg != "" {
				return false, fmt.Sprintf("backend %q has not answered yet: %s", b, msg)
			}
			return false, fmt.Sprintf("backend %q has not been queried yet", b)
		}
	}
	return true, ""
}

func answered(err error) bool {
	return err == nil || errors.Is(err, source.ErrNoData) || errors.Is(err, source.ErrBadQuery) ||
		errors.Is(err, source.ErrTooManyConnections) || errors.Is(err, source.ErrAmbiguous)
}

// errKind is the `kind` label of rollguard_source_errors_total.
func errKind(err error) string {
	switch {
	case err == nil:
		return ""
	case errors.Is(err, source.ErrNoData):
		return "nodata"
	case errors.Is(err, source.ErrTimeout):
		return "timeout"
	case errors.Is(err, source.ErrUnauthorized):
		return "unauthorized"
	case errors.Is(err, source.ErrTLS):
		return "tls"
	case errors.Is(err, source.ErrRoleConnectionLimit):
		return "role_connection_limit"
	case errors.Is(err, source.ErrUnreachable):
		return "unreachable"
	case errors.Is(err, source.ErrTooManyConnections):
		return "too_many_connections"
	case errors.Is(err, source.ErrBadQuery):
		return "bad_query"
	case errors.Is(err, source.ErrAmbiguous):
		return "ambiguous"
	case errors.Is(err, context.Canceled):
		return "canceled"
	default:
		return "other"
	}
}

// View is one trigger as a human looks at it: its status, its rule (with
// the defaults the evaluator applied) and the samples of its window.
type View struct {
	Status  trigger.Status
	Rule    trigger.Rule
	Samples []window.Sample
}

// Views returns every trigger's view, ordered by ID. The samples are
// copies: the caller may keep them.
func (e *Evaluator) Views() []View {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := make([]View, 0, len(e.plan.bindings))
	for _, b := range e.plan.bindings {
		w := b.e.trig.Window()
		out = append(out, View{Status: b.e.trig.Status(), Rule: b.e.trig.Rule(), Samples: w.Samples(make([]window.Sample, 0, w.Len()))})
	}
	return out
}
