package main

import (
	"fmt"
	"strings"
	"testing"
	"time"
)

func TestSpliceSection(t *testing.T) {
	tests := []struct {
		name, doc, section, want string
	}{
		{
			name:    "no markers: appended after the hand-written text",
			doc:     "# Benchmarks\n\n## Evaluator tick\n\ntext\n",
			section: "## Results\n",
			want:    "# Benchmarks\n\n## Evaluator tick\n\ntext\n\n" + beginMarker + "\n## Results\n" + endMarker + "\n",
		},
		{
			name:    "markers: only the text between them is replaced",
			doc:     "head\n" + beginMarker + "\nold\n" + endMarker + "\ntail\n",
			section: "new\n\n",
			want:    "head\n" + beginMarker + "\nnew\n" + endMarker + "\ntail\n",
		},
		{
			name:    "empty file",
			doc:     "",
			section: "x",
			want:    "\n\n" + beginMarker + "\nx\n" + endMarker + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spliceSection(tt.doc, tt.section); got != tt.want {
				t.Errorf("spliceSection() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestStatsOf(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		in   []time.Duration
		want stats
	}{
		{"empty", nil, stats{}},
		{"odd count, unsorted", []time.Duration{5 * s, 1 * s, 3 * s}, stats{1 * s, 3 * s, 5 * s}},
		{"even count takes the mean of the middle two", []time.Duration{4 * s, 1 * s, 2 * s, 10 * s}, stats{1 * s, 3 * s, 10 * s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statsOf(tt.in); got != tt.want {
				t.Errorf("statsOf(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestRateLag(t *testing.T) {
	// 5 % of 20 % faulty traffic over a 5 s range: a quarter of the range.
	if got, want := rateLag(), 1250*time.Millisecond; got != want {
		t.Errorf("rateLag() = %s, want %s", got, want)
	}
}

func TestLogLineTime(t *testing.T) {
	l := logLine{TS: "2026-11-25T22:10:15.434Z"}
	want := time.Date(2026, 11, 25, 22, 10, 15, 434e6, time.UTC)
	if got := l.time(); !got.Equal(want) {
		t.Errorf("time() = %s, want %s", got, want)
	}
	if got := (logLine{TS: "garbage"}).time(); !got.IsZero() {
		t.Errorf("time() of garbage = %s, want zero", got)
	}
}

func TestFstatsOf(t *testing.T) {
	tests := []struct {
		in   []float64
		want fstats
	}{
		{nil, fstats{}},
		{[]float64{1.02, 0.98, 1.5}, fstats{0.98, 1.02, 1.5}},
		{[]float64{0.5, 1, 0.7, 0.9}, fstats{0.5, 0.8, 1}},
	}
	for _, tt := range tests {
		if got := fstatsOf(tt.in); got != tt.want {
			t.Errorf("fstatsOf(%v) = %+v, want %+v", tt.in, got, tt.want)
		}
	}
}

// TestAnchorRatios: a run's ratios are its times over the webhook's, both
// from t0; a missing time gives 0, not a ratio.
func TestAnchorRatios(t *testing.T) {
	t0 := time.Date(2026, 12, 3, 10, 0, 0, 0, time.UTC)
	r := anchorRun{t0: t0, webhook: t0.Add(75 * time.Second), serving: t0.Add(60 * time.Second), finished: t0.Add(90 * time.Second)}
	if got := r.ratio(r.serving); got != 0.8 {
		t.Errorf("serving / webhook = %v, want 0.8", got)
	}
	if got := r.ratio(r.finished); got != 1.2 {
		t.Errorf("finished / webhook = %v, want 1.2", got)
	}
	if got := r.ratio(time.Time{}); got != 0 {
		t.Errorf("ratio of a missing time = %v, want 0", got)
	}
	if got := r.since(time.Time{}); got != -1 {
		t.Errorf("since a missing time = %v, want -1", got)
	}
}

func TestScriptPhases(t *testing.T) {
	r := dbRun{phases: map[string]time.Duration{}}
	scriptPhases("3\nphase dump 100.5 110.75\nnoise\nphase restore 111 131.5\nphase ramp 140 140.25\nphase ramp 150 150.5\n", &r)
	want := map[string]time.Duration{"dump": 10250 * time.Millisecond, "restore": 20500 * time.Millisecond, "ramp": 750 * time.Millisecond}
	for k, v := range want {
		if got := r.phases[k]; got != v {
			t.Errorf("phase %s = %s, want %s", k, got, v)
		}
	}
	if got := fmt.Sprint(r.order); got != "[dump restore ramp]" {
		t.Errorf("order %s, want [dump restore ramp]", got)
	}
}

func TestShownPath(t *testing.T) {
	const repo, state = "/src/rollguard", "/var/lib/sandbox"
	tests := []struct{ name, path, want string }{
		{"inside the repository", "/src/rollguard/test/sandbox/.state/bench", "test/sandbox/.state/bench"},
		{"the profile of a scale run", "/src/rollguard/test/sandbox/.state/bench/scale-10000", "test/sandbox/.state/bench/scale-10000"},
		{"the repository itself", "/src/rollguard", "."},
		{"a sibling with the repository's name as prefix", "/src/rollguard2/bench", "bench"},
		{"inside the state directory", "/var/lib/sandbox/bench/scale-100", "$SANDBOX_STATE_DIR/bench/scale-100"},
		{"the state directory itself", "/var/lib/sandbox", "$SANDBOX_STATE_DIR"},
		{"elsewhere: its name only", "/home/someone/out", "out"},
		{"already relative", "test/sandbox/.state/bench/", "test/sandbox/.state/bench"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := shownPath(tt.path, repo, state); got != tt.want {
				t.Errorf("shownPath(%q) = %q, want %q", tt.path, got, tt.want)
			}
		})
	}
}

// The generated section names no absolute path of the machine that ran
// it, whatever the directories.
func TestMarkdownNamesNoMachinePath(t *testing.T) {
	r := &report{
		started: time.Unix(0, 0), finished: time.Unix(60, 0), machine: "2 CPUs",
		sandboxNote: "the running sandbox (test/sandbox/.state/env), left up",
		outDir:      "/src/rollguard/test/sandbox/.state/bench", repoDir: "/src/rollguard", stateDir: "/src/rollguard/test/sandbox/.state",
		scale: &scaleRun{results: []*scaleResult{{Targets: 10, Ticks: 6, Profile: "/src/rollguard/test/sandbox/.state/bench/scale-10", TopCPU: "x\n"}}},
	}
	md := r.markdown()
	if strings.Contains(md, "/src/") {
		t.Errorf("markdown names a machine path:\n%s", md)
	}
	if !strings.Contains(md, "`test/sandbox/.state/bench`") || !strings.Contains(md, "go tool pprof -top test/sandbox/.state/bench/scale-10/cpu.pprof") {
		t.Errorf("markdown does not name the run's files relative to the repository:\n%s", md)
	}
}

func TestNothingToResume(t *testing.T) {
	tests := []struct {
		l    logLine
		want bool
	}{
		{logLine{Msg: "rollback refused", Error: "rollback of deployment ns/d refused: no unfinished run to resume"}, true},
		{logLine{Msg: "rollback refused", Error: "rollback of deployment ns/d refused: cooldown"}, false},
		{logLine{Msg: "rollback plan stopped", Error: "no unfinished run to resume"}, false},
	}
	for _, tt := range tests {
		if got := tt.l.nothingToResume(); got != tt.want {
			t.Errorf("%+v.nothingToResume() = %v, want %v", tt.l, got, tt.want)
		}
	}
}

func TestMergeSection(t *testing.T) {
	old := "## Results\n\n- Date: 2026-12-01 10:00 UTC (took 1h)\n- Commit: `aaa`\n\n" +
		"### Detection latency (x)\n\nold latency\n\n### Anchor: y\n\nold anchor\n\n| a |\n\n### Scale (z)\n\nold scale\n"
	new := "## Results\n\n- Date: 2026-12-03 18:00 UTC (took 40m)\n- Commit: `bbb`\n\n### Anchor: y2\n\nnew anchor\n"
	want := "## Results\n\n- Date: 2026-12-03 18:00 UTC (took 40m)\n- Commit: `bbb`\n- Kept from earlier runs: Detection latency, Scale\n\n" +
		"### Anchor: y2\n\nnew anchor\n\n" +
		"### Detection latency (x)\n\n_From an earlier run (2026-12-01 10:00 UTC, commit `aaa`): this run did not repeat it._\n\nold latency\n\n" +
		"### Scale (z)\n\n_From an earlier run (2026-12-01 10:00 UTC, commit `aaa`): this run did not repeat it._\n\nold scale\n\n"
	if got := mergeSection(old, new); got != want {
		t.Errorf("mergeSection =\n%s\nwant\n%s", got, want)
	}
	// Merged again: a kept subsection keeps the run it came from.
	newer := "## Results\n\n- Date: 2026-12-04 09:00 UTC (took 30m)\n- Commit: `ccc`\n\n### Scale (z)\n\nnew scale\n"
	got := mergeSection(want, newer)
	if !strings.Contains(got, "### Detection latency (x)\n\n_From an earlier run (2026-12-01 10:00 UTC, commit `aaa`)") ||
		!strings.Contains(got, "### Anchor: y2\n\n_From an earlier run (2026-12-03 18:00 UTC, commit `bbb`)") ||
		!strings.Contains(got, "### Scale (z)\n\nnew scale") || strings.Contains(got, "old scale") {
		t.Errorf("merged twice:\n%s", got)
	}
}
