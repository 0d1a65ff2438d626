package backtest

import (
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/model"
	"github.com/spf13/pflag"

	"github.com/rollguard/rollguard/pkg/config"
)

func TestParseTime(t *testing.T) {
	now := time.Date(2026, 11, 25, 14, 35, 10, 0, time.UTC)
	tests := []struct {
		in      string
		want    time.Time
		wantErr string
	}{
		{"2026-11-25T14:00:00Z", time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC), ""},
		{"2026-11-25T15:00:00+01:00", time.Date(2026, 11, 25, 14, 0, 0, 0, time.UTC), ""},
		{"2026-11-25T14:00:00.250Z", time.Date(2026, 11, 25, 14, 0, 0, 250e6, time.UTC), ""},
		{"1764081310", time.Unix(1764081310, 0), ""},
		{"1764081310.5", time.Unix(1764081310, 5e8), ""},
		{"now", now, ""},
		{"now-2h", now.Add(-2 * time.Hour), ""},
		{"now-1d", now.Add(-24 * time.Hour), ""},
		{"now-1h30m", now.Add(-90 * time.Minute), ""},
		{"now+30s", now.Add(30 * time.Second), ""},
		{" now-5m ", now.Add(-5 * time.Minute), ""},
		{"", time.Time{}, "usage: time is empty"},
		{"yesterday", time.Time{}, `usage: time "yesterday": want RFC 3339 (2026-11-25T14:35:10Z), unix seconds, or now-DURATION (now-2h)`},
		{"now-2x", time.Time{}, `usage: time "now-2x": duration "2x": unknown unit "x" in duration "2x"`},
		{"2026-11-25 14:00", time.Time{}, `usage: time "2026-11-25 14:00": want RFC 3339 (2026-11-25T14:35:10Z), unix seconds, or now-DURATION (now-2h)`},
		{"-5", time.Time{}, `usage: time "-5": want RFC 3339 (2026-11-25T14:35:10Z), unix seconds, or now-DURATION (now-2h)`},
		{"NaN", time.Time{}, `usage: time "NaN": want RFC 3339 (2026-11-25T14:35:10Z), unix seconds, or now-DURATION (now-2h)`},
	}
	for _, tc := range tests {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseTime(tc.in, now)
			if tc.wantErr != "" {
				if err == nil || err.Error() != tc.wantErr || !errors.Is(err, ErrUsage) {
					t.Fatalf("error: got %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil || !got.Equal(tc.want) {
				t.Fatalf("got %v, %v; want %v", got, err, tc.want)
			}
		})
	}
}

func TestApplySets(t *testing.T) {
	tests := []struct {
		name    string
		sets    []string
		check   func(t *testing.T, c *config.Config)
		wantErr string
	}{
		{"above", []string{"targets.api.triggers.error-rate.above=0.03"}, func(t *testing.T, c *config.Config) {
			if tr := c.Targets[0].Triggers[0]; tr.Above == nil || *tr.Above != 0.03 || tr.Below != nil {
				t.Errorf("above: %v below: %v", tr.Above, tr.Below)
			}
		}, ""},
		{"below flips the comparison", []string{"targets.api.triggers.error-rate.below=0.5"}, func(t *testing.T, c *config.Config) {
			if tr := c.Targets[0].Triggers[0]; tr.Above != nil || tr.Below == nil || *tr.Below != 0.5 {
				t.Errorf("above: %v below: %v", tr.Above, tr.Below)
			}
		}, ""},
		{"windows and guard", []string{
			"targets.api.triggers.error-rate.for=30s", "targets.api.triggers.error-rate.maxGap=4s",
			"targets.api.triggers.error-rate.minRate=0.5", "targets.api.triggers.error-rate.blindAfter=1m",
			"targets.web.triggers.error-rate.action=page", "targets.web.triggers.error-rate.onError=breach",
		}, func(t *testing.T, c *config.Config) {
			tr := c.Targets[0].Triggers[0]
			if tr.For != model.Duration(30*time.Second) || tr.MaxGap != model.Duration(4*time.Second) || tr.MinRate != 0.5 || tr.BlindAfter != model.Duration(time.Minute) {
				t.Errorf("api trigger: %+v", tr)
			}
			if w := c.Targets[1].Triggers[0]; w.Action != "page" || w.OnError != "breach" {
				t.Errorf("web trigger: %+v", w)
			}
			if c.Targets[1].Triggers[0].For != model.Duration(3*time.Second) {
				t.Errorf("web's for changed")
			}
		}, ""},
		{"interlocks", []string{"global.interlocks.cooldown=10m", "global.interlocks.maxRollbacksPerHour=5", "global.interlocks.maxRevisionAge=1h"},
			func(t *testing.T, c *config.Config) {
				il := c.Global.Interlocks
				if il.Cooldown != model.Duration(10*time.Minute) || il.MaxRollbacksPerHour != 5 || il.MaxRevisionAge != model.Duration(time.Hour) {
					t.Errorf("interlocks: %+v", il)
				}
			}, ""},
		{"unknown root", []string{"global.interval=1s"}, nil,
			"usage: --set global.interval: unknown path (settable: global.interlocks.cooldown, global.interlocks.maxRollbacksPerHour, global.interlocks.maxRevisionAge, targets.TARGET.triggers.TRIGGER.above, targets.TARGET.triggers.TRIGGER.below, targets.TARGET.triggers.TRIGGER.for, targets.TARGET.triggers.TRIGGER.maxGap, targets.TARGET.triggers.TRIGGER.minRate, targets.TARGET.triggers.TRIGGER.blindAfter, targets.TARGET.triggers.TRIGGER.onError, targets.TARGET.triggers.TRIGGER.action)"},
		{"unknown interlock", []string{"global.interlocks.freeze=true"}, nil, "usage: --set global.interlocks.freeze: unknown path (settable: "},
		{"unknown trigger", []string{"targets.api.triggers.latency.above=1"}, nil,
			`usage: --set targets.api.triggers.latency.above: target "api" has no trigger "latency" (triggers: error-rate, pool)`},
		{"no equals", []string{"targets.api.triggers.error-rate.above"}, nil,
			`usage: --set "targets.api.triggers.error-rate.above": want PATH=VALUE, e.g. targets.pggit-api.triggers.error-rate.above=0.03`},
		{"bad number", []string{"targets.api.triggers.error-rate.above=lots"}, nil,
			`usage: --set targets.api.triggers.error-rate.above: "lots" is not a finite number`},
		{"bad duration", []string{"targets.api.triggers.error-rate.for=soon"}, nil,
			`usage: --set targets.api.triggers.error-rate.for: "soon" is not a duration: not a valid duration string: "soon"`},
		{"minRate without volume", []string{"targets.web.triggers.error-rate.minRate=1"}, nil,
			`usage: --set targets.web.triggers.error-rate.minRate: trigger "error-rate" has no volumeQuery, so minRate cannot apply`},
		{"bad action", []string{"targets.api.triggers.error-rate.action=panic"}, nil,
			`usage: --set targets.api.triggers.error-rate.action: "panic": want rollback, restart-then-rollback, full-rollback or page`},
		{"every error at once", []string{"a=1", "targets.api.triggers.error-rate.above=x"}, nil,
			"usage: --set a: unknown path"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			c := loadConfig(t)
			err := ApplySets(c, tc.sets)
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) || !errors.Is(err, ErrUsage) {
					t.Fatalf("error:\n got %v\nwant %s", err, tc.wantErr)
				}
				if tc.name == "every error at once" && !strings.Contains(err.Error(), `"x" is not a finite number`) {
					t.Errorf("second error missing: %v", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			tc.check(t, c)
		})
	}
}

func TestFlags(t *testing.T) {
	now := time.Date(2026, 11, 25, 14, 35, 10, 0, time.UTC)
	tests := []struct {
		args    []string
		want    string
		wantErr string
	}{
		{[]string{"--from", "now-2h", "--set", "targets.api.triggers.error-rate.above=0.03", "--set", "global.interlocks.cooldown=10m", "--output", "json", "--plot", "x.svg", "--step", "2s"},
			"2026-11-25T12:35:10Z 2026-11-25T14:35:10Z 2s json x.svg [targets.api.triggers.error-rate.above=0.03 global.interlocks.cooldown=10m]", ""},
		{[]string{"--from", "1764081310", "--to", "2026-11-25T14:00:00Z"}, "2025-11-25T14:35:10Z 2026-11-25T14:00:00Z 0s table  []", ""},
		{[]string{}, "", "usage: --from is required"},
		{[]string{"--from", "now-2h", "--to", "later"}, "", `--to: usage: time "later": want RFC 3339`},
		{[]string{"--from", "now-2h", "--set", "nonsense"}, "", `invalid argument "nonsense" for "--set" flag: usage: --set "nonsense": want PATH=VALUE`},
	}
	for _, tc := range tests {
		t.Run(strings.Join(tc.args, " "), func(t *testing.T) {
			var f Flags
			fs := pflag.NewFlagSet("backtest", pflag.ContinueOnError)
			fs.SetOutput(io.Discard)
			f.Register(fs)
			err := fs.Parse(tc.args)
			var o Options
			if err == nil {
				o, err = f.Options(&config.Config{}, now, io.Discard)
			}
			if tc.wantErr != "" {
				if err == nil || !strings.HasPrefix(err.Error(), tc.wantErr) {
					t.Fatalf("error: got %v, want %s", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := fmt.Sprintf("%s %s %s %s %s %v", o.From.UTC().Format(time.RFC3339), o.To.UTC().Format(time.RFC3339), o.Step, o.Output, o.PlotFile, o.Sets)
			if got != tc.want {
				t.Errorf("got  %s\nwant %s", got, tc.want)
			}
		})
	}
}
