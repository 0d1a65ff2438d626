package backtest

import (
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/output"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// Report is a backtest's result; its JSON form is documented in
// docs/backtest.md and kept stable.
type Report struct {
	From       time.Time      `json:"from"`
	To         time.Time      `json:"to"`
	Step       model.Duration `json:"step"`
	Steps      int            `json:"steps"`
	Sets       []string       `json:"sets"`
	Interlocks Interlocks     `json:"interlocks"`
	Targets    []TargetReport `json:"targets"`
}

// Interlocks are the interlock settings the fires were judged with, and
// what could not be judged from metrics.
type Interlocks struct {
	Cooldown            model.Duration `json:"cooldown"`
	MaxRollbacksPerHour int            `json:"maxRollbacksPerHour"`
	OnePerRevision      string         `json:"onePerRevision"`
	RevisionAge         string         `json:"revisionAge"`
}

// TargetReport is one target's triggers and would-fire instants.
type TargetReport struct {
	Name       string          `json:"name"`
	Namespace  string          `json:"namespace"`
	Deployment string          `json:"deployment"`
	DryRun     bool            `json:"dryRun"`
	Triggers   []TriggerReport `json:"triggers"`
	// Fires are every trigger's would-fire instants, in time order.
	Fires []Fire `json:"fires"`
}

// TriggerReport is one trigger's replay.
type TriggerReport struct {
	Name        string            `json:"name"`
	Kind        string            `json:"kind"`
	Replayable  bool              `json:"replayable"`
	Reason      string            `json:"reason,omitempty"` // why not replayable
	Error       string            `json:"error,omitempty"`  // fetching failed
	Query       string            `json:"query"`
	VolumeQuery string            `json:"volumeQuery,omitempty"`
	Match       map[string]string `json:"match,omitempty"`
	Op          trigger.Op        `json:"op"`
	Threshold   float64           `json:"threshold"`
	For         model.Duration    `json:"for"`
	MaxGap      model.Duration    `json:"maxGap"`
	MinRate     float64           `json:"minRate"`
	Action      string            `json:"action"`
	HasVersion  bool              `json:"-"`
	// Samples counts the evaluated steps; Breaches and NoData those of
	// each kind.
	Samples  int `json:"samples"`
	Breaches int `json:"breaches"`
	NoData   int `json:"noData"`
	// Spans are the pending, firing and nodata stretches.
	Spans []Span `json:"spans"`
	// Blind are the "blind" pages the daemon would have sent.
	Blind []trigger.Blind `json:"blind"`

	fires    []Fire
	replayed *Replayed
}

// Fire is one would-fire instant.
type Fire struct {
	At          time.Time  `json:"at"`
	Trigger     string     `json:"trigger"`
	Value       *float64   `json:"value"`
	Op          trigger.Op `json:"op"`
	Threshold   float64    `json:"threshold"`
	FirstBreach time.Time  `json:"firstBreach"`
	Action      string     `json:"action"`
	Plan        []string   `json:"plan"`
	// Revision is the firing series' version label, "" when it has none.
	Revision string `json:"revision"`
	// Verdict is would-act, blocked or page-only.
	Verdict   string       `json:"verdict"`
	BlockedBy guard.Reason `json:"blockedBy,omitempty"`
	Detail    string       `json:"detail"`
	// Evidence is the window's samples at the firing instant, oldest first.
	Evidence []window.Sample `json:"evidence"`
}

// Write renders the report as a table, JSON or YAML.
func (rep *Report) Write(w io.Writer, format string) error {
	return output.Write(w, output.Format(format), rep, rep.writeTable)
}

const tsFormat = "2006-01-02T15:04:05Z07:00"

func ts(t time.Time) string {
	if t.Nanosecond() != 0 {
		return t.UTC().Format(time.RFC3339Nano)
	}
	return t.UTC().Format(tsFormat)
}

func num(v float64) string {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return "-"
	}
	return strconv.FormatFloat(v, 'g', 4, 64)
}

// writeTable is the human form: per target, the triggers' summaries, then
// every would-fire instant with its evidence, plan and interlock verdict.
func (rep *Report) writeTable(out io.Writer) error {
	var b strings.Builder
	fmt.Fprintf(&b, "backtest %s .. %s, step %s (%d evaluations)\n", ts(rep.From), ts(rep.To), rep.Step, rep.Steps)
	if len(rep.Sets) > 0 {
		fmt.Fprintf(&b, "what-if: %s\n", strings.Join(rep.Sets, ", "))
	}
	il := rep.Interlocks
	fmt.Fprintf(&b, "interlocks: cooldown %s, budget %d rollbacks/hour; one rollback per revision %s; revision age %s\n",
		il.Cooldown, il.MaxRollbacksPerHour, il.OnePerRevision, il.RevisionAge)

	for _, t := range rep.Targets {
		fmt.Fprintf(&b, "\ntarget %s (%s/%s)", t.Name, t.Namespace, t.Deployment)
		if t.DryRun {
			b.WriteString(" [dry-run: the daemon would only notify]")
		}
		b.WriteString("\n")
		tw := tabwriter.NewWriter(&b, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "  TRIGGER\tKIND\tRULE\tFIRES\tBREACHING\tNODATA\tNOTE")
		for _, tr := range t.Triggers {
			rule := fmt.Sprintf("%s %s for %s", tr.Op, num(tr.Threshold), tr.For)
			if tr.MinRate > 0 {
				rule += fmt.Sprintf(" minRate %s", num(tr.MinRate))
			}
			if !tr.Replayable {
				note := tr.Reason
				if tr.Error != "" {
					note = "error: " + tr.Error
				}
				fmt.Fprintf(tw, "  %s\t%s\t%s\t-\t-\t-\tnot replayed: %s\n", tr.Name, tr.Kind, rule, note)
				continue
			}
			pend, nod := spanTotal(tr.Spans, window.StatePending, window.StateFiring), spanTotal(tr.Spans, window.StateNoData)
			note := fmt.Sprintf("%d samples, %d breaching", tr.Samples, tr.Breaches)
			if len(tr.Blind) > 0 {
				note += fmt.Sprintf(", %d blind page(s)", len(tr.Blind))
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%d\t%s\t%s\t%s\n", tr.Name, tr.Kind, rule, len(tr.fires), pend, nod, note)
		}
		if err := tw.Flush(); err != nil {
			return err
		}

		if len(t.Fires) == 0 {
			b.WriteString("  no trigger would have fired\n")
		}
		for _, f := range t.Fires {
			fmt.Fprintf(&b, "  WOULD FIRE %s  %s: value %s %s %s, breaching since %s (%s)\n",
				ts(f.At), f.Trigger, numPtr(f.Value), f.Op, num(f.Threshold), ts(f.FirstBreach), f.At.Sub(f.FirstBreach))
			switch f.Verdict {
			case VerdictWouldAct:
				fmt.Fprintf(&b, "    action %s: WOULD RUN, plan: %s\n", f.Action, strings.Join(f.Plan, " > "))
			case VerdictBlocked:
				fmt.Fprintf(&b, "    action %s: BLOCKED by %s: %s\n", f.Action, f.BlockedBy, f.Detail)
			default:
				fmt.Fprintf(&b, "    action %s: page only\n", f.Action)
			}
			if f.Revision != "" {
				fmt.Fprintf(&b, "    revision %s\n", f.Revision)
			}
			fmt.Fprintf(&b, "    evidence: %s\n", evidence(f.Evidence))
		}
		for _, tr := range t.Triggers {
			for _, s := range tr.Spans {
				if s.State == window.StateNoData {
					fmt.Fprintf(&b, "  no data   %s .. %s (%s)  %s\n", ts(s.From), ts(s.To), s.To.Sub(s.From), tr.Name)
				}
			}
			for _, bl := range tr.Blind {
				fmt.Fprintf(&b, "  blind     %s: no data since %s would page (warning)\n", tr.Name, ts(bl.Since))
			}
		}
	}
	_, err := io.WriteString(out, b.String())
	return err
}

func numPtr(v *float64) string {
	if v == nil {
		return "-"
	}
	return num(*v)
}

func spanTotal(spans []Span, states ...window.State) string {
	var d time.Duration
	n := 0
	for _, s := range spans {
		for _, st := range states {
			if s.State == st {
				d += s.To.Sub(s.From)
				if st != window.StateFiring {
					n++
				}
			}
		}
	}
	if n == 0 && d == 0 {
		return "-"
	}
	return fmt.Sprintf("%dx %s", n, d)
}

// evidence summarises the window's samples: range, kinds and the last few
// values, enough to judge the fire without the JSON.
func evidence(ss []window.Sample) string {
	if len(ss) == 0 {
		return "none"
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	kinds := map[window.Kind]int{}
	for _, s := range ss {
		kinds[s.Kind]++
		if !math.IsNaN(s.Value) {
			lo, hi = math.Min(lo, s.Value), math.Max(hi, s.Value)
		}
	}
	last := ss[max(0, len(ss)-3):]
	vals := make([]string, len(last))
	for i, s := range last {
		vals[i] = num(s.Value)
	}
	return fmt.Sprintf("%d samples %s..%s, min %s max %s, %d breach %d ok %d nodata; last %s",
		len(ss), ss[0].Time.UTC().Format("15:04:05"), ss[len(ss)-1].Time.UTC().Format("15:04:05"),
		num(lo), num(hi), kinds[window.Breach], kinds[window.OK], kinds[window.NoData], strings.Join(vals, " "))
}
