package backtest

import (
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"
	"github.com/spf13/pflag"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/output"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// ErrUsage marks bad input from the command line (a time that does not
// parse, an empty or reversed range, a --set path that does not exist): the
// CLI maps it to exit code 2.
var ErrUsage = errors.New("usage")

func usagef(format string, args ...any) error {
	return fmt.Errorf("%w: %s", ErrUsage, fmt.Sprintf(format, args...))
}

// ParseTime reads a --from or --to value: RFC 3339 ("2026-11-25T14:35:10Z"),
// unix seconds with an optional fraction ("1764081310", "1764081310.5"),
// "now", or now minus or plus a Prometheus duration ("now-2h", "now-1d",
// "now+30s"). Relative times are taken from now, so both ends of a range
// agree on it.
func ParseTime(s string, now time.Time) (time.Time, error) {
	s = strings.TrimSpace(s)
	switch {
	case s == "":
		return time.Time{}, usagef("time is empty")
	case s == "now":
		return now, nil
	case strings.HasPrefix(s, "now-") || strings.HasPrefix(s, "now+"):
		d, err := model.ParseDuration(s[4:])
		if err != nil {
			return time.Time{}, usagef("time %q: duration %q: %v", s, s[4:], err)
		}
		if s[3] == '-' {
			return now.Add(-time.Duration(d)), nil
		}
		return now.Add(time.Duration(d)), nil
	}
	if t, err := time.Parse(time.RFC3339Nano, s); err == nil {
		return t, nil
	}
	if f, err := strconv.ParseFloat(s, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) && f >= 0 && f < 1e11 {
		sec, frac := math.Modf(f)
		return time.Unix(int64(sec), int64(math.Round(frac*1e9))).UTC(), nil
	}
	return time.Time{}, usagef("time %q: want RFC 3339 (2026-11-25T14:35:10Z), unix seconds, or now-DURATION (now-2h)", s)
}

// Set is one --set PATH=VALUE override.
type Set struct {
	Path  string
	Value string
}

// String renders the set as given.
func (s Set) String() string { return s.Path + "=" + s.Value }

// ParseSet splits a --set argument at its first "=".
func ParseSet(arg string) (Set, error) {
	p, v, ok := strings.Cut(arg, "=")
	p = strings.TrimSpace(p)
	if !ok || p == "" {
		return Set{}, usagef("--set %q: want PATH=VALUE, e.g. targets.pggit-api.triggers.error-rate.above=0.03", arg)
	}
	return Set{Path: p, Value: strings.TrimSpace(v)}, nil
}

// The fields --set may change; everything else is what the history is
// replayed against and stays as configured.
var settableTrigger = []string{"above", "below", "for", "maxGap", "minRate", "blindAfter", "onError", "action"}

var settableGlobal = []string{"global.interlocks.cooldown", "global.interlocks.maxRollbacksPerHour", "global.interlocks.maxRevisionAge"}

// SettablePaths returns the path forms --set accepts.
func SettablePaths() []string {
	out := slices.Clone(settableGlobal)
	for _, f := range settableTrigger {
		out = append(out, "targets.TARGET.triggers.TRIGGER."+f)
	}
	return out
}

// ApplySets applies what-if overrides to a loaded (defaulted, validated)
// configuration, in order. It edits the effective values, after defaults
// were inherited: setting a trigger's `for` changes that trigger only.
// Setting `above` on a `below` trigger (or the reverse) flips its
// comparison. Every bad override is reported, each naming its path.
func ApplySets(cfg *config.Config, args []string) error {
	var errs []error
	for _, a := range args {
		s, err := ParseSet(a)
		if err == nil {
			err = applySet(cfg, s)
		}
		if err != nil {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}

func applySet(cfg *config.Config, s Set) error {
	parts := strings.Split(s.Path, ".")
	switch {
	case len(parts) == 3 && parts[0] == "global" && parts[1] == "interlocks":
		return setInterlock(&cfg.Global.Interlocks, s, parts[2])
	case len(parts) == 5 && parts[0] == "targets" && parts[2] == "triggers":
		ti := slices.IndexFunc(cfg.Targets, func(t config.Target) bool { return t.Name == parts[1] })
		if ti < 0 {
			names := make([]string, 0, len(cfg.Targets))
			for _, t := range cfg.Targets {
				names = append(names, t.Name)
			}
			return usagef("--set %s: no target %q (targets: %s)", s.Path, parts[1], strings.Join(names, ", "))
		}
		t := &cfg.Targets[ti]
		ri := slices.IndexFunc(t.Triggers, func(tr config.Trigger) bool { return tr.Name == parts[3] })
		if ri < 0 {
			names := make([]string, 0, len(t.Triggers))
			for _, tr := range t.Triggers {
				names = append(names, tr.Name)
			}
			return usagef("--set %s: target %q has no trigger %q (triggers: %s)", s.Path, t.Name, parts[3], strings.Join(names, ", "))
		}
		return setTrigger(&t.Triggers[ri], s, parts[4])
	}
	return usagef("--set %s: unknown path (settable: %s)", s.Path, strings.Join(SettablePaths(), ", "))
}

func setInterlock(il *config.Interlocks, s Set, field string) error {
	switch field {
	case "cooldown":
		return setDuration(&il.Cooldown, s)
	case "maxRevisionAge":
		return setDuration(&il.MaxRevisionAge, s)
	case "maxRollbacksPerHour":
		n, err := strconv.Atoi(s.Value)
		if err != nil || n < 0 {
			return usagef("--set %s: %q is not a count >= 0", s.Path, s.Value)
		}
		il.MaxRollbacksPerHour = n
		return nil
	}
	return usagef("--set %s: unknown path (settable: %s)", s.Path, strings.Join(SettablePaths(), ", "))
}

func setTrigger(tr *config.Trigger, s Set, field string) error {
	switch field {
	case "above", "below":
		f, err := strconv.ParseFloat(s.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) {
			return usagef("--set %s: %q is not a finite number", s.Path, s.Value)
		}
		if field == "above" {
			tr.Above, tr.Below = &f, nil
		} else {
			tr.Above, tr.Below = nil, &f
		}
		return nil
	case "for":
		return setDuration(&tr.For, s)
	case "maxGap":
		return setDuration(&tr.MaxGap, s)
	case "blindAfter":
		return setDuration(&tr.BlindAfter, s)
	case "minRate":
		f, err := strconv.ParseFloat(s.Value, 64)
		if err != nil || math.IsNaN(f) || math.IsInf(f, 0) || f < 0 {
			return usagef("--set %s: %q is not a rate >= 0", s.Path, s.Value)
		}
		if f > 0 && tr.VolumeQuery == "" {
			return usagef("--set %s: trigger %q has no volumeQuery, so minRate cannot apply", s.Path, tr.Name)
		}
		tr.MinRate = f
		return nil
	case "onError":
		v := trigger.OnError(s.Value)
		if v != trigger.OnErrorNoData && v != trigger.OnErrorBreach {
			return usagef("--set %s: %q: want %s or %s", s.Path, s.Value, trigger.OnErrorNoData, trigger.OnErrorBreach)
		}
		tr.OnError = v
		return nil
	case "action":
		switch s.Value {
		case plan.RequestRollback, plan.RequestRestartThenRollback, plan.RequestFullRollback, plan.RequestPage:
			tr.Action = s.Value
			return nil
		}
		return usagef("--set %s: %q: want %s, %s, %s or %s", s.Path, s.Value,
			plan.RequestRollback, plan.RequestRestartThenRollback, plan.RequestFullRollback, plan.RequestPage)
	}
	return usagef("--set %s: unknown trigger field %q (settable: %s)", s.Path, field, strings.Join(settableTrigger, ", "))
}

func setDuration(d *model.Duration, s Set) error {
	v, err := model.ParseDuration(s.Value)
	if err != nil {
		return usagef("--set %s: %q is not a duration: %v", s.Path, s.Value, err)
	}
	*d = v
	return nil
}

// SetList collects repeated --set flags; it is a pflag.Value.
type SetList []string

// String renders the list for flag's help.
func (l *SetList) String() string { return strings.Join(*l, " ") }

// Set adds one PATH=VALUE, checking its form at parse time.
func (l *SetList) Set(v string) error {
	if _, err := ParseSet(v); err != nil {
		return err
	}
	*l = append(*l, v)
	return nil
}

// Type names the value in help.
func (l *SetList) Type() string { return "PATH=VALUE" }

// Flags are the command-line flags of `rollguard backtest`, so the CLI only
// registers, parses and calls Run.
type Flags struct {
	ConfigFile string
	From, To   string
	Step       time.Duration
	Target     string
	Sets       SetList
	Output     output.Format
	Plot       string
}

// Register binds the flags to fs.
func (f *Flags) Register(fs *pflag.FlagSet) {
	fs.StringVar(&f.ConfigFile, "config", "rollguard.yaml", "config file")
	fs.StringVar(&f.From, "from", "", "start: RFC 3339, unix seconds, or now-DURATION (e.g. now-2h); required")
	fs.StringVar(&f.To, "to", "now", "end: RFC 3339, unix seconds, or now-DURATION")
	fs.DurationVar(&f.Step, "step", 0, "evaluation step (default global.interval, the daemon's tick)")
	fs.StringVar(&f.Target, "target", "", "replay only this target (default all)")
	fs.Var(&f.Sets, "set", "what-if override PATH=VALUE, repeatable, e.g. targets.pggit-api.triggers.error-rate.above=0.03")
	output.Register(fs, &f.Output)
	fs.StringVar(&f.Plot, "plot", "", "also draw the triggers to this .png or .svg file")
}

// Options turns the parsed flags into Run's options. Relative times are
// read against one now, so --from now-2h --to now is exactly two hours.
func (f *Flags) Options(cfg *config.Config, now time.Time, stdout io.Writer) (Options, error) {
	if f.From == "" {
		return Options{}, usagef("--from is required")
	}
	from, err := ParseTime(f.From, now)
	if err != nil {
		return Options{}, fmt.Errorf("--from: %w", err)
	}
	to, err := ParseTime(f.To, now)
	if err != nil {
		return Options{}, fmt.Errorf("--to: %w", err)
	}
	return Options{
		Config: cfg, From: from, To: to, Step: f.Step, Target: f.Target,
		Sets: []string(f.Sets), Output: string(f.Output), PlotFile: f.Plot, Stdout: stdout,
	}, nil
}
