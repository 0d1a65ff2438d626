// Package backtest replays a configuration's triggers over Prometheus
// history ("would have rolled back at 14:35:10") through the daemon's own
// trigger and interlock code, so a what-if answer is the answer the daemon
// would have given (docs/design.md §2).
//
// The replay is exact by construction: Prometheus evaluates a range query
// as instant queries at start + k·step, so each step's instant result is
// rebuilt from the range result and the trigger's series is selected from
// it with evaluator.Select, the function the evaluator's ticks use; the
// observation then goes through pkg/trigger (and its pkg/window) as a tick
// at that instant would. What cannot be replayed from metrics alone is said
// so in the report: PostgreSQL triggers (no history), the revision age
// (no deploy times), and one rollback per revision when the series carry
// no version label.
package backtest

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"net/http"
	"slices"
	"sort"
	"strings"
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/output"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/source/prometheus"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// RangeQuerier runs a range query; *prometheus.Source satisfies it (and
// chunks long ranges under Prometheus's points limit).
type RangeQuerier interface {
	QueryRange(ctx context.Context, query string, start, end time.Time, step time.Duration) ([]source.Range, error)
}

// ErrIncomplete is returned after the report was written when some
// replayable trigger's history could not be fetched.
var ErrIncomplete = errors.New("backtest incomplete")

// Output formats (the -o values every read command takes).
const (
	OutputTable = string(output.Table)
	OutputJSON  = string(output.JSON)
	OutputYAML  = string(output.YAML)
)

// MaxSteps bounds the instants of one backtest (per trigger), which bounds
// its memory: 1e6 steps is 11.5 days at 1 s, and about 20 MB per trigger.
const MaxSteps = 1_000_000

// Options configure Run. Config is required; the rest have defaults.
type Options struct {
	// Config is the loaded configuration; Run applies Sets to it in place.
	Config *config.Config
	// From and To bound the replay; From must be before To.
	From, To time.Time
	// Step between evaluations; 0 means the daemon's own sampling:
	// global.prometheus.resolution, or global.interval when that is 0s.
	// The instants are the multiples of Step (Unix time) in [From, To], as
	// the daemon's are. It must not exceed a replayed trigger's maxGap, or
	// every sample would count as a gap.
	Step time.Duration
	// Target limits the replay to one target by name; "" means all.
	Target string
	// Sets are --set PATH=VALUE what-if overrides (see ApplySets).
	Sets []string
	// Output is OutputTable (default), OutputJSON or OutputYAML.
	Output string
	// PlotFile, when set, is written as a PNG or SVG by its extension.
	PlotFile string
	// Stdout receives the report.
	Stdout io.Writer
	// Source answers the range queries; nil means a Prometheus source
	// built from global.prometheus.
	Source RangeQuerier
	// Retention is how far back Prometheus keeps data; a range starting
	// earlier is refused. 0 asks global.prometheus.url's
	// /api/v1/status/flags (and skips the check when that fails or there
	// is no URL); < 0 skips the check.
	Retention time.Duration
	// Now is the clock for the retention check; default time.Now.
	Now func() time.Time
	// HTTPClient is used for the retention lookup; default a client with
	// the Prometheus timeout.
	HTTPClient *http.Client
	// Logger defaults to a no-op logger.
	Logger *zap.Logger
}

// Run replays the configuration's triggers over [From, To] and writes the
// report (and the plot). Bad input returns an error wrapping ErrUsage.
func Run(ctx context.Context, o Options) error {
	if err := o.defaults(); err != nil {
		return err
	}
	rep, err := Backtest(ctx, o)
	if rep == nil {
		return err
	}
	if werr := rep.Write(o.Stdout, o.Output); werr != nil {
		return fmt.Errorf("writing backtest report: %w", werr)
	}
	if o.PlotFile != "" {
		if perr := rep.Plot(o.PlotFile); perr != nil {
			return errors.Join(err, perr)
		}
	}
	return err
}

func (o *Options) defaults() error {
	if o.Config == nil {
		return errors.New("backtest: no configuration")
	}
	if o.Output == "" {
		o.Output = OutputTable
	}
	var f output.Format
	if err := f.Set(o.Output); err != nil {
		return usagef("--output %q: %v", o.Output, err)
	}
	if o.PlotFile != "" {
		if _, err := plotFormat(o.PlotFile); err != nil {
			return err
		}
	}
	if o.Stdout == nil {
		o.Stdout = io.Discard
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	if o.Logger == nil {
		o.Logger = zap.NewNop()
	}
	return nil
}

// Backtest replays and returns the report without writing it. A non-nil
// report comes with ErrIncomplete when some trigger's history could not be
// fetched; bad input returns a nil report and an ErrUsage error.
func Backtest(ctx context.Context, o Options) (*Report, error) {
	if err := o.defaults(); err != nil {
		return nil, err
	}
	cfg := o.Config
	if err := ApplySets(cfg, o.Sets); err != nil {
		return nil, err
	}
	if o.Step == 0 {
		o.Step = time.Duration(cfg.Global.Interval)
		if r := time.Duration(cfg.Global.Prometheus.Resolution); r > 0 {
			o.Step = r
		}
	}
	// Prometheus stamps points in milliseconds; so must the grid. Its
	// instants are multiples of the step, like the daemon's samples.
	from, to := o.From.Truncate(time.Millisecond).UTC(), o.To.Truncate(time.Millisecond).UTC()
	if o.Step >= time.Millisecond && o.Step%time.Millisecond == 0 {
		if off := from.UnixNano() % int64(o.Step); off != 0 {
			from = from.Add(o.Step - time.Duration(off))
		}
	}
	switch {
	case o.From.IsZero() || o.To.IsZero():
		return nil, usagef("--from and --to are required")
	case !from.Before(to):
		return nil, usagef("--from %s is not before --to %s", from.Format(time.RFC3339), to.Format(time.RFC3339))
	}
	if err := o.checkRetention(ctx, from); err != nil {
		return nil, err
	}
	switch {
	case o.Step < time.Millisecond:
		return nil, usagef("--step %s: must be at least 1ms", o.Step)
	case steps(from, to, o.Step) > MaxSteps:
		return nil, usagef("range %s at step %s is %d evaluations, more than %d: use a larger --step or a shorter range",
			to.Sub(from), o.Step, steps(from, to, o.Step), MaxSteps)
	}

	targets := cfg.Targets
	if o.Target != "" {
		i := slices.IndexFunc(targets, func(t config.Target) bool { return t.Name == o.Target })
		if i < 0 {
			return nil, usagef("--target %q: no such target in the configuration", o.Target)
		}
		targets = targets[i : i+1]
	}
	for _, t := range targets {
		for _, tr := range t.Triggers {
			if config.IsPrometheusKind(tr.Kind) && time.Duration(tr.MaxGap) > 0 && o.Step > time.Duration(tr.MaxGap) {
				return nil, usagef("--step %s is larger than the maxGap %s of trigger %s/%s: every sample would be a gap",
					o.Step, time.Duration(tr.MaxGap), t.Name, tr.Name)
			}
		}
	}

	src := o.Source
	if src == nil {
		p, err := prometheus.New(prometheus.Options{URL: cfg.Global.Prometheus.URL, Timeout: time.Duration(cfg.Global.Prometheus.Timeout), HTTPConfig: &cfg.Global.Prometheus.HTTPConfig}, o.Logger)
		if err != nil {
			return nil, fmt.Errorf("backtest: prometheus source: %w", err)
		}
		src = p
	}

	rep := &Report{
		From:  from,
		To:    to,
		Step:  model.Duration(o.Step),
		Steps: steps(from, to, o.Step),
		Sets:  append([]string{}, o.Sets...),
		Interlocks: Interlocks{
			Cooldown:            cfg.Global.Interlocks.Cooldown,
			MaxRollbacksPerHour: cfg.Global.Interlocks.MaxRollbacksPerHour,
		},
	}
	f := &fetcher{src: src, from: from, to: to, step: o.Step, cache: map[string]fetched{}}
	var failed int
	for _, t := range targets {
		tr := TargetReport{Name: t.Name, Namespace: t.Namespace, Deployment: t.Deployment, DryRun: t.DryRunEnabled(),
			Triggers: []TriggerReport{}, Fires: []Fire{}}
		for _, c := range t.Triggers {
			r := o.replayTrigger(ctx, f, cfg, t, c, from, to)
			if r.Error != "" {
				failed++
			}
			tr.Triggers = append(tr.Triggers, r)
		}
		rep.Targets = append(rep.Targets, tr)
	}
	rep.judge(cfg)
	if failed > 0 {
		return rep, fmt.Errorf("%w: %d trigger(s) could not be fetched", ErrIncomplete, failed)
	}
	return rep, nil
}

type fetched struct {
	ranges []source.Range
	err    error
}

// fetcher runs each distinct query once: the built-in templates are shared
// by every target, as in the daemon.
type fetcher struct {
	src      RangeQuerier
	from, to time.Time
	step     time.Duration
	cache    map[string]fetched
}

func (f *fetcher) fetch(ctx context.Context, q string) ([]source.Range, error) {
	if r, ok := f.cache[q]; ok {
		return r.ranges, r.err
	}
	r, err := f.src.QueryRange(ctx, q, f.from, f.to, f.step)
	f.cache[q] = fetched{r, err}
	return r, err
}

// RuleFor is the rule the daemon runs for trigger c of target t, from the
// one translation the daemon uses (pkg/rules). interval is global.interval.
func RuleFor(t config.Target, c config.Trigger, interval time.Duration) trigger.Rule {
	return rules.Rule(t.Name, &c, interval)
}

func (o *Options) replayTrigger(ctx context.Context, f *fetcher, cfg *config.Config, t config.Target, c config.Trigger, from, to time.Time) TriggerReport {
	rule := RuleFor(t, c, time.Duration(cfg.Global.Interval))
	r := TriggerReport{
		Name: c.Name, Kind: c.Kind, Query: c.Query, VolumeQuery: c.VolumeQuery, Match: c.Match,
		Op: rule.Op, Threshold: rule.Threshold, For: model.Duration(rule.For), MaxGap: model.Duration(rule.MaxGap),
		MinRate: rule.MinRate, Action: c.Action, Spans: []Span{}, Blind: []trigger.Blind{},
	}
	if !config.IsPrometheusKind(c.Kind) {
		r.Reason = fmt.Sprintf("kind %s queries PostgreSQL database %q, which keeps no history to replay", c.Kind, c.Database)
		return r
	}
	if err := rule.Validate(); err != nil {
		r.Error = err.Error()
		return r
	}
	values, err := f.fetch(ctx, c.Query)
	if err != nil {
		r.Error = err.Error()
		o.Logger.Error("backtest query failed", zap.String("target", t.Name), zap.String("trigger", c.Name), zap.Error(err))
		return r
	}
	var volume []source.Range
	if c.VolumeQuery != "" {
		volume, err = f.fetch(ctx, c.VolumeQuery)
		if err != nil {
			r.Error = err.Error()
			o.Logger.Error("backtest volume query failed", zap.String("target", t.Name), zap.String("trigger", c.Name), zap.Error(err))
			return r
		}
	}
	interval := time.Duration(cfg.Global.Interval)
	var spacing time.Duration
	if o.Step < interval {
		spacing = interval // the daemon's evidence at a resolution
	}
	rp := Replay(Input{
		Rule:     rule,
		Capacity: window.CapacityFor(rule.For, interval),
		Spacing:  spacing,
		Match:    rules.Match(&c),
		Values:   values,
		Volume:   volume,
		From:     from,
		To:       to,
		Step:     o.Step,
	})
	r.Replayable = true
	r.replayed = rp
	r.HasVersion = rp.HasVersion
	for _, k := range rp.Kinds {
		switch k {
		case window.Breach:
			r.Breaches++
		case window.NoData:
			r.NoData++
		}
	}
	r.Samples = len(rp.Kinds)
	r.Spans = append(r.Spans, rp.Spans(window.StatePending, window.StateFiring, window.StateNoData, window.StateLowVolume)...)
	for _, b := range rp.Blinds {
		// The pages: an episode's end closes one, it is not another.
		if !b.Resolved {
			r.Blind = append(r.Blind, b)
		}
	}
	for i, d := range rp.Decisions {
		r.fires = append(r.fires, Fire{
			At: d.FiredAt, Trigger: c.Name, Value: finite(d.Value), Op: d.Op, Threshold: d.Threshold,
			FirstBreach: d.FirstBreach, Action: d.Action, Plan: PlanFor(t, d.Action),
			Revision: rp.Revisions[i], Evidence: d.Samples,
		})
	}
	return r
}

func finite(v float64) *float64 {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return nil
	}
	return &v
}

// judge passes every would-fire instant, across targets in time order (the
// budget is global), through the daemon's interlocks.
func (rep *Report) judge(cfg *config.Config) {
	il := cfg.Global.Interlocks
	g := guard.New(guard.Options{
		Cooldown:            time.Duration(il.Cooldown),
		MaxRollbacksPerHour: il.MaxRollbacksPerHour,
		// Manual requests skip the age check: history has no deploy times.
		MaxRevisionAge: time.Duration(il.MaxRevisionAge),
	})
	type ref struct{ t, r, f int }
	var all []ref
	hasVersion := false
	for ti := range rep.Targets {
		for ri := range rep.Targets[ti].Triggers {
			tr := &rep.Targets[ti].Triggers[ri]
			hasVersion = hasVersion || tr.HasVersion
			for fi := range tr.fires {
				all = append(all, ref{ti, ri, fi})
			}
		}
	}
	fire := func(x ref) *Fire { return &rep.Targets[x.t].Triggers[x.r].fires[x.f] }
	sort.SliceStable(all, func(i, j int) bool {
		a, b := fire(all[i]), fire(all[j])
		if !a.At.Equal(b.At) {
			return a.At.Before(b.At)
		}
		if all[i].t != all[j].t {
			return all[i].t < all[j].t
		}
		return a.Trigger < b.Trigger
	})
	for _, x := range all {
		f := fire(x)
		target := rep.Targets[x.t].Name
		if f.Action == plan.RequestPage {
			f.Verdict = VerdictPageOnly
			f.Detail = "action page: a human decides; no interlock applies"
			continue
		}
		v := g.Check(guard.Request{Target: target, Revision: f.Revision, Action: f.Action, Leader: true, Manual: true}, f.At)
		if !v.Allowed() {
			f.Verdict, f.BlockedBy, f.Detail = VerdictBlocked, v.Reason, v.Detail+"; degrades to a page"
			continue
		}
		g.Record(target, f.Revision, f.At, true)
		f.Verdict = VerdictWouldAct
		f.Detail = "would run " + f.Action
	}
	for ti := range rep.Targets {
		t := &rep.Targets[ti]
		for ri := range t.Triggers {
			t.Fires = append(t.Fires, t.Triggers[ri].fires...)
		}
		sort.SliceStable(t.Fires, func(i, j int) bool { return t.Fires[i].At.Before(t.Fires[j].At) })
	}
	if hasVersion {
		rep.Interlocks.OnePerRevision = "judged: revisions read from the series' version label"
	} else {
		rep.Interlocks.OnePerRevision = "not judged: the series carry no version label, so the revision is unknown from metrics alone"
	}
	rep.Interlocks.RevisionAge = "not judged: history has no deploy times"
}

// Verdicts of a would-fire instant.
const (
	VerdictWouldAct = "would-act"
	VerdictBlocked  = "blocked"
	VerdictPageOnly = "page-only"
)

// PlanFor lists the steps the action's plan would run for the target, by
// the names pkg/rollback journals. Database steps of the quick plan run
// only when the migration is applied at the time, which history cannot
// tell; they are marked "(if migration applied)". Likewise revert's surge
// steps are skipped when the Deployment already has that maxSurge.
func PlanFor(t config.Target, action string) []string {
	shape := rollback.Shape{Restore: t.Rollback.Database != nil, Surge: t.Rollback.RevertMaxSurge != ""}
	stepsOf := func(a plan.Name) []string {
		steps := rollback.Steps(a, shape)
		if a == plan.Quick || a == plan.MultiRegion {
			for i, s := range steps {
				switch s {
				case rollback.StepDBDump, rollback.StepDBRestore, rollback.StepDBVerify:
					steps[i] = s + " (if migration applied)"
				}
			}
		}
		return steps
	}
	configured := t.Rollback.Plan()
	switch action {
	case plan.RequestRollback, plan.RequestFullRollback:
		p, _ := plan.For(action, configured, false)
		return stepsOf(p)
	case plan.RequestRestartThenRollback:
		first, _ := plan.For(action, configured, false)
		then, _ := plan.For(action, configured, true)
		out := append(stepsOf(first), "then, if it fires again:")
		return append(out, stepsOf(then)...)
	}
	return []string{}
}

// checkRetention refuses a range that starts before Prometheus's retention.
func (o *Options) checkRetention(ctx context.Context, from time.Time) error {
	ret := o.Retention
	if ret < 0 {
		return nil
	}
	if ret == 0 {
		url := o.Config.Global.Prometheus.URL
		if url == "" {
			return nil
		}
		c, err := o.httpClient()
		if err != nil {
			return err
		}
		ret, err = PrometheusRetention(ctx, c, url)
		if err != nil {
			o.Logger.Warn("cannot read prometheus retention; range not checked", zap.Error(err))
			return nil
		}
	}
	if earliest := o.Now().Add(-ret); from.Before(earliest) {
		return usagef("--from %s is older than Prometheus's retention of %s (earliest data about %s)",
			from.Format(time.RFC3339), model.Duration(ret), earliest.UTC().Format(time.RFC3339))
	}
	return nil
}

func (o *Options) httpClient() (*http.Client, error) {
	if o.HTTPClient != nil {
		return o.HTTPClient, nil
	}
	// The same credentials and TLS settings as the queries.
	c, err := commoncfg.NewClientFromConfig(o.Config.Global.Prometheus.HTTPConfig, prometheus.ClientName, commoncfg.WithUserAgent(prometheus.ClientName))
	if err != nil {
		return nil, fmt.Errorf("prometheus http client (global.prometheus.httpConfig): %w", err)
	}
	c.Timeout = time.Duration(o.Config.Global.Prometheus.Timeout)
	return c, nil
}

// PrometheusRetention reads storage.tsdb.retention.time from the server's
// /api/v1/status/flags.
func PrometheusRetention(ctx context.Context, c *http.Client, baseURL string) (time.Duration, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	u := strings.TrimSuffix(baseURL, "/") + "/api/v1/status/flags"
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return 0, fmt.Errorf("prometheus flags %s: %w", u, err)
	}
	resp, err := c.Do(req)
	if err != nil {
		return 0, fmt.Errorf("prometheus flags %s: %w", u, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return 0, fmt.Errorf("prometheus flags %s: status %s", u, resp.Status)
	}
	var body struct {
		Data map[string]string `json:"data"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return 0, fmt.Errorf("prometheus flags %s: decoding: %w", u, err)
	}
	s, ok := body.Data["storage.tsdb.retention.time"]
	if !ok {
		return 0, fmt.Errorf("prometheus flags %s: no storage.tsdb.retention.time", u)
	}
	d, err := model.ParseDuration(s)
	if err != nil || d <= 0 {
		return 0, fmt.Errorf("prometheus flags %s: retention %q is not a positive duration", u, s)
	}
	return time.Duration(d), nil
}
