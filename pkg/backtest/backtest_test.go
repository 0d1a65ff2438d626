package backtest

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/window"
)

var update = flag.Bool("update", false, "rewrite golden files")

const n = 120

// history is the scenario of testdata/config.yaml, one point a second:
//
//	api: 20..29 breach (fires at 25), 35..44 breach (fires at 40, cooldown),
//	     50..69 flapping (3 breach, 1 ok: never fires), 70..79 no points
//	     (gap), 80..89 breach at low volume (volume-guarded: nodata),
//	     90..99 breach (fires at 95), 105..115 at 0.08, under the
//	     threshold (a lower one finds it); version v1 up to 37, v2 from 38.
//	web: 100..110 breach (fires at 103, budget exhausted).
func history() *fakeRange {
	api := fill(n, 0.01, span{20, 30, 0.3}, span{35, 45, 0.4}, span{80, 90, 0.9}, span{90, 100, 0.5}, span{105, 116, 0.08})
	for i := 50; i < 70; i++ {
		if (i-50)%4 != 3 {
			api[i] = 0.3
		}
	}
	for i := 70; i < 80; i++ {
		api[i] = math.NaN()
	}
	vol := fill(n, 20, span{80, 90, 0.5})
	for i := 70; i < 80; i++ {
		vol[i] = math.NaN()
	}
	web := fill(n, 0, span{100, 111, 0.3})
	lbl := func(d, v string) map[string]string {
		m := map[string]string{"namespace": "prod", "deployment": d}
		if v != "" {
			m["version"] = v
		}
		return m
	}
	return &fakeRange{data: map[string][]source.Range{
		"errors_ratio": {
			rng(lbl("api", "v1"), only(api, 0, 38)),
			rng(lbl("api", "v2"), only(api, 38, n)),
			rng(lbl("web", ""), web),
		},
		"requests_rate": {rng(lbl("api", ""), vol), rng(lbl("web", ""), fill(n, 20))},
	}}
}

func loadConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg, err := config.LoadFile("testdata/config.yaml")
	if err != nil {
		t.Fatal(err)
	}
	return cfg
}

func baseOptions(t *testing.T) Options {
	return Options{
		Config:    loadConfig(t),
		From:      t0,
		To:        at(n - 1),
		Source:    history(),
		Retention: -1,
	}
}

type fireSummary struct {
	At       int
	Trigger  string
	Revision string
	Verdict  string
	Blocked  guard.Reason
}

func summarize(rep *Report, target string) []fireSummary {
	var out []fireSummary
	for _, tr := range rep.Targets {
		if tr.Name != target {
			continue
		}
		for _, f := range tr.Fires {
			out = append(out, fireSummary{int(f.At.Sub(t0) / time.Second), f.Trigger, f.Revision, f.Verdict, f.BlockedBy})
		}
	}
	return out
}

func TestBacktestScenario(t *testing.T) {
	rep, err := Backtest(context.Background(), baseOptions(t))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]fireSummary{
		"api": {
			{25, "error-rate", "v1", VerdictWouldAct, ""},
			{40, "error-rate", "v2", VerdictBlocked, guard.Cooldown},
			{95, "error-rate", "v2", VerdictWouldAct, ""},
		},
		"web": {{103, "error-rate", "", VerdictBlocked, guard.Budget}},
	}
	for target, w := range want {
		got := summarize(rep, target)
		if len(got) != len(w) {
			t.Fatalf("%s fires: got %+v, want %+v", target, got, w)
		}
		for i := range w {
			if got[i] != w[i] {
				t.Errorf("%s fire %d: got %+v, want %+v", target, i, got[i], w[i])
			}
		}
	}

	api := rep.Targets[0]
	er := api.Triggers[0]
	var nodata []Span
	for _, s := range er.Spans {
		if s.State == window.StateNoData {
			nodata = append(nodata, s)
		}
	}
	// The gap (70..79) and the volume-guarded stretch (80..89) are one
	// nodata span; nothing before the first sample is nodata.
	if len(nodata) != 1 || !nodata[0].From.Equal(at(70)) || !nodata[0].To.Equal(at(90)) {
		t.Errorf("nodata spans: got %+v, want one [70s, 90s)", nodata)
	}
	if len(er.Blind) != 1 || !er.Blind[0].Since.Equal(at(70)) {
		t.Errorf("blind: got %+v, want one since 70s", er.Blind)
	}
	for _, s := range er.Spans {
		if s.State == window.StateFiring && s.From.After(at(49)) && s.From.Before(at(70)) {
			t.Errorf("flapping stretch reached firing: %+v", s)
		}
	}
	f := api.Fires[0]
	if !f.FirstBreach.Equal(at(20)) || f.Value == nil || *f.Value != 0.3 || f.Action != "rollback" {
		t.Errorf("first fire: %+v", f)
	}
	if len(f.Evidence) != window.CapacityFor(5*time.Second, time.Second) || !f.Evidence[len(f.Evidence)-1].Time.Equal(at(25)) {
		t.Errorf("evidence: %d samples ending %v", len(f.Evidence), f.Evidence[len(f.Evidence)-1].Time)
	}
	if got := strings.Join(f.Plan, ","); got != "preflight,stop,application,wait-rollout,ramp,verify" {
		t.Errorf("plan: %s", got)
	}
	pool := api.Triggers[1]
	if pool.Replayable || !strings.Contains(pool.Reason, "PostgreSQL") {
		t.Errorf("pool trigger: replayable %v reason %q", pool.Replayable, pool.Reason)
	}
	if !strings.HasPrefix(rep.Interlocks.OnePerRevision, "judged") {
		t.Errorf("onePerRevision: %q", rep.Interlocks.OnePerRevision)
	}
}

func TestBacktestQueriesOnce(t *testing.T) {
	o := baseOptions(t)
	src := o.Source.(*fakeRange)
	if _, err := Backtest(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	if src.calls["errors_ratio"] != 1 || src.calls["requests_rate"] != 1 {
		t.Errorf("calls: %v, want each query once", src.calls)
	}
}

func TestBacktestSetLowerThresholdFindsMore(t *testing.T) {
	o := baseOptions(t)
	o.Sets = []string{"targets.api.triggers.error-rate.above=0.05", "global.interlocks.cooldown=10s"}
	rep, err := Backtest(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	want := []fireSummary{
		{25, "error-rate", "v1", VerdictWouldAct, ""},
		{40, "error-rate", "v2", VerdictWouldAct, ""}, // cooldown 10s has passed
		{95, "error-rate", "v2", VerdictBlocked, guard.AlreadyActed},
		{110, "error-rate", "v2", VerdictBlocked, guard.AlreadyActed},
	}
	got := summarize(rep, "api")
	if len(got) != len(want) {
		t.Fatalf("fires with a lower threshold: %+v, want %+v", got, want)
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("fire %d: got %+v, want %+v", i, got[i], want[i])
		}
	}
}

func TestBacktestSetForLonger(t *testing.T) {
	o := baseOptions(t)
	o.Sets = []string{"targets.api.triggers.error-rate.for=10s"}
	rep, err := Backtest(context.Background(), o)
	if err != nil {
		t.Fatal(err)
	}
	// Runs 20..29 and 35..44 and 90..99 are 10 samples: t−first reaches 9 s, never 10 s.
	if got := summarize(rep, "api"); len(got) != 0 {
		t.Errorf("fires with for=10s: %+v, want none", got)
	}
}

func TestBacktestUsageErrors(t *testing.T) {
	tests := []struct {
		name string
		edit func(o *Options)
		want string
	}{
		{"reversed", func(o *Options) { o.From, o.To = o.To, o.From }, "usage: --from 2026-11-25T10:01:59Z is not before --to 2026-11-25T10:00:00Z"},
		{"empty", func(o *Options) { o.To = o.From }, "usage: --from 2026-11-25T10:00:00Z is not before --to 2026-11-25T10:00:00Z"},
		{"step over maxGap", func(o *Options) { o.Step = 5 * time.Second }, "usage: --step 5s is larger than the maxGap 2s of trigger api/error-rate: every sample would be a gap"},
		{"unknown set path", func(o *Options) { o.Sets = []string{"targets.api.triggers.error-rate.threshold=1"} },
			"usage: --set targets.api.triggers.error-rate.threshold: unknown trigger field \"threshold\" (settable: above, below, for, maxGap, minRate, blindAfter, onError, action)"},
		{"unknown target in set", func(o *Options) { o.Sets = []string{"targets.nope.triggers.error-rate.above=1"} },
			"usage: --set targets.nope.triggers.error-rate.above: no target \"nope\" (targets: api, web)"},
		{"unknown target", func(o *Options) { o.Target = "nope" }, "usage: --target \"nope\": no such target in the configuration"},
		{"output", func(o *Options) { o.Output = "xml" }, "usage: --output \"xml\": want table, json or yaml"},
		{"plot ext", func(o *Options) { o.PlotFile = "x.gif" }, "usage: --plot \"x.gif\": the file must end in .png or .svg"},
		{"retention", func(o *Options) {
			o.Retention = time.Hour
			o.Now = func() time.Time { return at(3600 + 60) }
		}, "usage: --from 2026-11-25T10:00:00Z is older than Prometheus's retention of 1h (earliest data about 2026-11-25T10:01:00Z)"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			o := baseOptions(t)
			tc.edit(&o)
			rep, err := Backtest(context.Background(), o)
			if err == nil || err.Error() != tc.want {
				t.Fatalf("error:\n got %v\nwant %s", err, tc.want)
			}
			if !errors.Is(err, ErrUsage) || rep != nil {
				t.Errorf("want ErrUsage and no report, got %v, %v", err, rep)
			}
		})
	}
}

func TestBacktestFetchErrorIsIncomplete(t *testing.T) {
	o := baseOptions(t)
	src := o.Source.(*fakeRange)
	src.err = map[string]error{"requests_rate": source.ErrTimeout}
	var out bytes.Buffer
	o.Stdout = &out
	err := Run(context.Background(), o)
	if !errors.Is(err, ErrIncomplete) || errors.Is(err, ErrUsage) {
		t.Fatalf("error: %v, want ErrIncomplete", err)
	}
	if !strings.Contains(out.String(), "not replayed: error: source query timed out") {
		t.Errorf("table does not show the failure:\n%s", out.String())
	}
	// web has no volume query and is still replayed.
	if !strings.Contains(out.String(), "WOULD FIRE 2026-11-25T10:01:43Z  error-rate") {
		t.Errorf("table lacks web's fire:\n%s", out.String())
	}
}

func TestRunTable(t *testing.T) {
	o := baseOptions(t)
	var out bytes.Buffer
	o.Stdout = &out
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/report.txt", out.Bytes())
}

func TestRunJSON(t *testing.T) {
	o := baseOptions(t)
	o.Output = OutputJSON
	o.Sets = []string{"global.interlocks.maxRollbacksPerHour=2"} // as configured: shows the key
	var out bytes.Buffer
	o.Stdout = &out
	if err := Run(context.Background(), o); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/report.json", out.Bytes())

	// The documented structure: every key path and its JSON type. A change
	// here is a change of the format and of docs/backtest.md.
	var v any
	if err := json.Unmarshal(out.Bytes(), &v); err != nil {
		t.Fatal(err)
	}
	golden(t, "testdata/report.shape", []byte(strings.Join(Shape(v), "\n")+"\n"))
}

// Shape lists every key path of a decoded JSON value with its type,
// arrays collapsed to [], sorted: the structure without the data.
func Shape(v any) []string {
	set := map[string]bool{}
	var walk func(p string, v any)
	walk = func(p string, v any) {
		switch x := v.(type) {
		case map[string]any:
			set[p+" object"] = true
			for k, e := range x {
				walk(p+"."+k, e)
			}
		case []any:
			set[p+" array"] = true
			for _, e := range x {
				walk(p+"[]", e)
			}
		case string:
			set[p+" string"] = true
		case float64:
			set[p+" number"] = true
		case bool:
			set[p+" bool"] = true
		case nil:
			set[p+" null"] = true
		}
	}
	walk("", v)
	out := make([]string, 0, len(set))
	for k := range set {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

func golden(t *testing.T, file string, got []byte) {
	t.Helper()
	if *update {
		if err := os.WriteFile(file, got, 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(file)
	if err != nil {
		t.Fatalf("%v (run with -update to create it)", err)
	}
	if !bytes.Equal(got, want) {
		t.Errorf("%s differs (run with -update after checking):\n%s", file, got)
	}
}

func TestRunPlot(t *testing.T) {
	for _, ext := range []string{"png", "svg"} {
		t.Run(ext, func(t *testing.T) {
			o := baseOptions(t)
			o.PlotFile = filepath.Join(t.TempDir(), "bt."+ext)
			if os.Getenv("BACKTEST_PLOT_DIR") != "" {
				o.PlotFile = filepath.Join(os.Getenv("BACKTEST_PLOT_DIR"), "bt."+ext)
			}
			if err := Run(context.Background(), o); err != nil {
				t.Fatal(err)
			}
			b, err := os.ReadFile(o.PlotFile)
			if err != nil {
				t.Fatal(err)
			}
			magic := map[string]string{"png": "\x89PNG", "svg": "<?xml"}[ext]
			if !bytes.HasPrefix(b, []byte(magic)) || len(b) < 10_000 {
				t.Errorf("%s: %d bytes starting %q", o.PlotFile, len(b), b[:min(len(b), 8)])
			}
		})
	}
}
