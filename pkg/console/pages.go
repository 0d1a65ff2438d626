package console

import (
	"context"
	"errors"
	"fmt"
	"html/template"
	"math"
	"net/http"
	"slices"
	"strings"
	"time"

	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/window"
)

// page is what every template gets: the header's facts and the body's.
type page struct {
	Title   string
	Heading string
	Now     time.Time
	Snap    Snapshot
	Refresh int // seconds between the script's refreshes; 0: none
	// NoScriptRefresh is the slower meta refresh without the script.
	NoScriptRefresh int
	Actions         bool
	Body            any
	AppTitle        string
}

func (c *Console) page(snap Snapshot, heading string, refresh time.Duration, body any) page {
	secs := int(refresh.Round(time.Second) / time.Second)
	return page{Title: heading + " · " + c.opts.Title, Heading: heading, Now: c.opts.Now(), Snap: snap,
		Refresh: secs, NoScriptRefresh: max(10, secs*5), Actions: len(c.opts.Token) > 0, Body: body, AppTitle: c.opts.Title}
}

// Trigger row states, the CSS classes and words of the state column.
var stateWords = map[window.State]string{
	window.StateOK: "OK", window.StatePending: "PENDING", window.StateFiring: "FIRING", window.StateNoData: "NO DATA",
}

// row is one trigger as a table row.
type row struct {
	Target, Trigger string
	State           string // ok, pending, firing, nodata
	Word            string
	Value           string
	Condition       string // "> 0.05"
	// Progress of the current breach over the window.
	HeldText string
	Percent  int
	Blind    string // "blind for 2m 05s" when nodata
	Error    string
	Spark    template.HTML
	Stale    string
}

// rank orders states by urgency for the attention list.
func rank(s window.State) int {
	switch s {
	case window.StateFiring:
		return 0
	case window.StatePending:
		return 1
	case window.StateNoData:
		return 2
	}
	return 3
}

func (c *Console) row(v evaluator.View, now time.Time, interval time.Duration, spark sparkSize) row {
	st := v.Status
	r := row{Target: st.Target, Trigger: st.Trigger, State: st.State.String(), Word: stateWords[st.State],
		Value: fmtValue(st.Value), Condition: opSign(string(st.Op)) + " " + fmtNum(st.Threshold), Error: st.LastError}
	forDur := v.Rule.For
	switch st.State {
	case window.StatePending, window.StateFiring:
		// Held is measured between samples, as the window judges it: at
		// 40 s of 60 s the trigger fires 20 s of breaching samples later.
		held := st.LastSample.Sub(st.BreachStart)
		if held < 0 {
			held = 0
		}
		switch {
		case forDur > 0 && st.State == window.StateFiring:
			r.Percent = 100
			r.HeldText = fmt.Sprintf("held %s, window %s: fired", fmtDur(held), fmtDur(forDur))
		case forDur > 0:
			r.Percent = int(math.Min(100, float64(held)*100/float64(forDur)))
			r.HeldText = fmt.Sprintf("%s of %s", fmtDur(held), fmtDur(forDur))
		default:
			r.Percent, r.HeldText = 100, "fires on the first breach"
		}
	case window.StateNoData:
		if !st.NoDataSince.IsZero() {
			r.Blind = "blind for " + fmtDur(now.Sub(st.NoDataSince))
		} else if st.LastSample.IsZero() {
			r.Blind = "no sample yet"
		} else {
			r.Blind = "blind"
		}
		r.HeldText = "window reset: no data is never a breach"
	default:
		r.HeldText = "0 s of " + fmtDur(forDur)
	}
	if !st.LastSample.IsZero() && interval > 0 && now.Sub(st.LastSample) > 3*interval {
		r.Stale = "last sample " + fmtDur(now.Sub(st.LastSample)) + " ago"
	}
	r.Spark = sparkline(v.Samples, v.Rule.Threshold, string(v.Rule.Op), spark, st.Target+"/"+st.Trigger)
	return r
}

// targetView is one target in the overview.
type targetView struct {
	Target
	Rows  []row
	Worst string // the most urgent trigger state
}

type overviewBody struct {
	Counts    []count
	Attention []row
	Targets   []targetView
	// Calm are the all-OK targets shown as one line each (a large fleet,
	// unless ?show=all): a thousand calm tables would bury the few that
	// matter and weigh megabytes every refresh.
	Calm     []targetView
	Show     string
	Hidden   int
	Total    int
	Triggers int
}

// compactAbove is the fleet size from which calm targets are listed
// compactly.
const compactAbove = 50

type count struct {
	State, Word string
	N           int
}

func (c *Console) overview(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	snap := c.fleet.Snapshot(ctx)
	now := c.opts.Now()
	show := r.URL.Query().Get("show")
	n := map[window.State]int{}
	b := overviewBody{Show: show, Total: len(snap.Targets)}
	compact := len(snap.Targets) > compactAbove && show != "all"
	for _, t := range snap.Targets {
		t.Follower = snap.LeaderElection && !snap.Leader
		tv := targetView{Target: t, Worst: "ok"}
		worst := window.StateOK
		for _, v := range t.Triggers {
			n[v.Status.State]++
			b.Triggers++
			if rank(v.Status.State) < rank(worst) {
				worst = v.Status.State
			}
			if v.Status.State != window.StateOK {
				b.Attention = append(b.Attention, c.row(v, now, snap.Interval, sparkSmall))
			}
		}
		if len(t.Triggers) > 0 {
			tv.Worst = worst.String()
		}
		calm := worst == window.StateOK && t.Running == "" && t.Freeze == "" && !t.FreezeUnknown
		if show == "attention" && calm {
			b.Hidden++
			continue
		}
		if compact && calm {
			b.Calm = append(b.Calm, tv)
			continue
		}
		// Rows (and their sparklines) only for the targets shown.
		for _, v := range t.Triggers {
			tv.Rows = append(tv.Rows, c.row(v, now, snap.Interval, sparkSmall))
		}
		b.Targets = append(b.Targets, tv)
	}
	slices.SortStableFunc(b.Attention, func(a, b row) int { return rankWord(a.State) - rankWord(b.State) })
	for _, s := range []window.State{window.StateFiring, window.StatePending, window.StateNoData, window.StateOK} {
		b.Counts = append(b.Counts, count{State: s.String(), Word: stateWords[s], N: n[s]})
	}
	c.render(w, http.StatusOK, "overview.html", c.page(snap, "Targets", c.opts.Refresh, b))
}

func rankWord(s string) int {
	var st window.State
	_ = st.UnmarshalText([]byte(s))
	return rank(st)
}

type targetBody struct {
	TargetDetail
	Rows      []row
	Incidents []incident.Summary
	IncErr    string
}

func (c *Console) target(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	name := r.PathValue("name")
	snap := c.fleet.Snapshot(ctx)
	d, err := c.targets.Target(ctx, name)
	if errors.Is(err, ErrUnknownTarget) {
		c.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("No target named %q is configured.", name))
		return
	}
	if err != nil {
		c.log.Warn("console: target read failed", zap.String("target", name), zap.Error(err))
		c.errorPage(w, r, http.StatusInternalServerError, "Cannot read target "+name+": "+err.Error())
		return
	}
	now := c.opts.Now()
	d.Follower = snap.LeaderElection && !snap.Leader
	b := targetBody{TargetDetail: d}
	for _, v := range d.Triggers {
		b.Rows = append(b.Rows, c.row(v, now, snap.Interval, sparkLarge))
	}
	if c.incidents != nil {
		list, err := c.incidents.List(ctx)
		if err != nil {
			b.IncErr = err.Error()
		}
		for _, s := range list {
			if s.Target == d.Namespace+"/"+d.Deployment && len(b.Incidents) < 10 {
				b.Incidents = append(b.Incidents, s)
			}
		}
	}
	c.render(w, http.StatusOK, "target.html", c.page(snap, d.Name, max(c.opts.Refresh, 5*time.Second), b))
}

type planBody struct {
	Name   string
	Action string
	Plan   *rollback.PlanView
	Error  string
}

// plan is the plan a rollback of the target would run now, the
// confirmation dialog's content (a page of its own without the script).
func (c *Console) plan(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	name, action := r.PathValue("name"), r.URL.Query().Get("action")
	snap := c.fleet.Snapshot(ctx)
	pv, err := c.targets.Plan(ctx, name, action)
	if errors.Is(err, ErrUnknownTarget) {
		c.errorPage(w, r, http.StatusNotFound, fmt.Sprintf("No target named %q is configured.", name))
		return
	}
	b := planBody{Name: name, Action: action, Plan: pv}
	if err != nil {
		b.Error = err.Error()
	}
	c.render(w, http.StatusOK, "plan.html", c.page(snap, "Plan for "+name, 0, b))
}

func (c *Console) incidentList(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	snap := c.fleet.Snapshot(ctx)
	var list []incident.Summary
	var msg string
	if c.incidents == nil {
		msg = "No incident store is configured (global.notify.incidentDir)."
	} else if l, err := c.incidents.List(ctx); err != nil {
		msg = "Cannot list incidents: " + err.Error()
	} else {
		list = l
	}
	c.render(w, http.StatusOK, "incidents.html", c.page(snap, "Incidents", c.opts.Refresh*5, map[string]any{"List": list, "Error": msg}))
}

type incidentBody struct {
	R          *incident.Record
	Chart      template.HTML
	Timeline   []timelineEntry
	Steps      []stepView
	Deliveries []notify.Delivery
	Duration   string
	HasPages   bool
}

type timelineEntry struct {
	Time   time.Time
	Offset string
	What   string
	Class  string
}

type stepView struct {
	notify.StepResult
	Duration string
	Percent  int
}

func (c *Console) incident(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), timeout)
	defer cancel()
	snap := c.fleet.Snapshot(ctx)
	if c.incidents == nil {
		c.errorPage(w, r, http.StatusNotFound, "No incident store is configured (global.notify.incidentDir).")
		return
	}
	rec, err := c.incidents.Get(ctx, r.PathValue("id"))
	if code, ok := incidentError(err); !ok {
		c.errorPage(w, r, code, err.Error())
		return
	}
	b := incidentBody{R: rec, Chart: evidenceChart(rec)}
	if len(rec.Timeline) > 0 {
		t0 := rec.Timeline[0].Time
		for _, e := range rec.Timeline {
			b.Timeline = append(b.Timeline, timelineEntry{Time: e.Time, Offset: "+" + fmtClockDur(e.Time.Sub(t0)), What: e.What, Class: timelineClass(e.What)})
		}
	}
	var longest time.Duration
	for _, s := range rec.Steps {
		if !s.Finished.IsZero() {
			longest = max(longest, s.Finished.Sub(s.Started))
		}
	}
	for _, s := range rec.Steps {
		sv := stepView{StepResult: s, Duration: "running"}
		if !s.Finished.IsZero() {
			d := s.Finished.Sub(s.Started)
			sv.Duration = fmtDurPrecise(d)
			if longest > 0 {
				sv.Percent = max(1, int(d*100/longest))
			}
		}
		b.Steps = append(b.Steps, sv)
	}
	if d := rec.Duration(); d > 0 {
		b.Duration = fmtDur(d)
	}
	if c.deliveries != nil {
		for _, d := range c.deliveries.ForIncident(rec.ID) {
			if d.Notifier == "incident" {
				continue // the record itself, not a page
			}
			b.Deliveries = append(b.Deliveries, d)
		}
		b.HasPages = true
	}
	c.render(w, http.StatusOK, "incident.html", c.page(snap, "Incident "+rec.ID, c.opts.Refresh*2, b))
}

func timelineClass(what string) string {
	switch {
	case strings.Contains(what, "FAILED"), strings.HasPrefix(what, "Cannot"):
		return "bad"
	case strings.Contains(what, "detected"), strings.HasPrefix(what, "Breach"):
		return "warn"
	case strings.HasPrefix(what, "Rollback succeeded"), strings.HasPrefix(what, "System stable"), strings.Contains(what, "restored"):
		return "good"
	}
	return ""
}

// incidentError maps a store error to a status; ok is true for no error.
func incidentError(err error) (int, bool) {
	switch {
	case err == nil:
		return 0, true
	case errors.Is(err, incident.ErrNotFound):
		return http.StatusNotFound, false
	case errors.Is(err, incident.ErrInvalidID):
		return http.StatusBadRequest, false
	}
	return http.StatusInternalServerError, false
}

func (c *Console) download(asJSON bool) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		ctx, cancel := context.WithTimeout(r.Context(), timeout)
		defer cancel()
		if c.incidents == nil {
			http.Error(w, "no incident store configured", http.StatusNotFound)
			return
		}
		id := r.PathValue("id")
		var body []byte
		var err error
		if asJSON {
			var rec *incident.Record
			if rec, err = c.incidents.Get(ctx, id); err == nil {
				body, err = marshalRecord(rec)
			}
		} else {
			body, err = c.incidents.Markdown(ctx, id)
		}
		if code, ok := incidentError(err); !ok {
			http.Error(w, err.Error(), code)
			return
		}
		name, ctype := "incident-"+id+".md", "text/markdown; charset=utf-8"
		if asJSON {
			name, ctype = "incident-"+id+".json", "application/json"
		}
		w.Header().Set("Content-Type", ctype)
		// The id passed the store's check ([A-Za-z0-9._-]): safe in a
		// quoted filename.
		w.Header().Set("Content-Disposition", `attachment; filename="`+name+`"`)
		_, _ = w.Write(body)
	}
}

// --- formatting ---------------------------------------------------------

func fmtValue(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "—"
	}
	return fmtNum(v)
}

func fmtNum(v float64) string {
	s := fmt.Sprintf("%.4g", v)
	if strings.ContainsAny(s, "e") {
		return fmt.Sprintf("%g", v)
	}
	return s
}

func opSign(op string) string {
	switch op {
	case "above":
		return ">"
	case "below":
		return "<"
	}
	return op
}

// fmtDur is a duration at a glance: "40 s", "2m 05s", "3h 10m".
func fmtDur(d time.Duration) string {
	if d < 0 {
		d = 0
	}
	switch {
	case d < 2*time.Minute:
		// Seconds up to two minutes: "40 s of 60 s" reads at a glance.
		return fmt.Sprintf("%d s", int(d.Round(time.Second)/time.Second))
	case d < time.Hour:
		d = d.Round(time.Second)
		return fmt.Sprintf("%dm %02ds", int(d/time.Minute), int(d%time.Minute/time.Second))
	case d < 48*time.Hour:
		d = d.Round(time.Minute)
		return fmt.Sprintf("%dh %02dm", int(d/time.Hour), int(d%time.Hour/time.Minute))
	}
	return fmt.Sprintf("%dd", int(d/(24*time.Hour)))
}

func fmtDurPrecise(d time.Duration) string {
	if d < 10*time.Second {
		return fmt.Sprintf("%.1f s", d.Seconds())
	}
	return fmtDur(d)
}

func fmtClockDur(d time.Duration) string {
	d = d.Round(time.Second)
	return fmt.Sprintf("%d:%02d", int(d/time.Minute), int(d%time.Minute/time.Second))
}

var funcs = template.FuncMap{
	"clock": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("15:04:05")
	},
	"stamp": func(t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return t.UTC().Format("2006-01-02 15:04:05 UTC")
	},
	"iso": func(t time.Time) string { return t.UTC().Format(time.RFC3339) },
	"ago": func(now, t time.Time) string {
		if t.IsZero() {
			return "—"
		}
		return fmtDur(now.Sub(t)) + " ago"
	},
	"dur":    fmtDur,
	"images": kube.FormatImages,
	"lower":  strings.ToLower,
	"statusClass": func(s incident.Status) string {
		switch s {
		case incident.StatusResolved:
			return "ok"
		case incident.StatusFailed, incident.StatusCannotRollback:
			return "firing"
		case incident.StatusInProgress, incident.StatusDetected:
			return "pending"
		case incident.StatusBlind:
			return "nodata"
		}
		return "info"
	},
	"resultClass": func(s string) string {
		switch s {
		case notify.ResultDelivered:
			return "ok"
		case notify.ResultFailed, notify.ResultDropped:
			return "firing"
		}
		return "info"
	},
	"stepClass": func(s string) string {
		switch s {
		case "", "running":
			return "pending"
		case notify.OutcomeOK:
			return "ok"
		case "skipped":
			return "info"
		}
		return "firing"
	},
	"add": func(a, b int) int { return a + b },
	"dict": func(kv ...any) map[string]any {
		m := make(map[string]any, len(kv)/2)
		for i := 0; i+1 < len(kv); i += 2 {
			m[kv[i].(string)] = kv[i+1]
		}
		return m
	},
}
