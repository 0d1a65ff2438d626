package main

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"time"
)

// Markers of the generated section in docs/benchmarks.md; everything
// outside them is kept as written.
const (
	beginMarker = "<!-- make bench: generated, do not edit between these markers -->"
	endMarker   = "<!-- make bench: end -->"
)

type report struct {
	started, finished time.Time
	machine           string
	sandboxNote       string
	outDir            string
	// repoDir and stateDir: what the report's paths are shown relative to
	// (shown).
	repoDir, stateDir string
	latency           []*latencyResult
	rollback          *rollbackResult
	anchor            *anchorResult
	database          *dbResult
	scale             *scaleRun
}

// machineInfo: CPUs, model, memory, load, Go, OS.
func machineInfo() string {
	model := "unknown CPU"
	if b, err := os.ReadFile("/proc/cpuinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if v, ok := strings.CutPrefix(l, "model name"); ok {
				model = strings.TrimSpace(strings.TrimPrefix(strings.TrimSpace(v), ":"))
				break
			}
		}
	}
	mem := "?"
	if b, err := os.ReadFile("/proc/meminfo"); err == nil {
		var kb int64
		fmt.Sscanf(strings.TrimSpace(strings.TrimPrefix(strings.Split(string(b), "\n")[0], "MemTotal:")), "%d", &kb)
		mem = fmt.Sprintf("%.1f GiB", float64(kb)/(1<<20))
	}
	load := "?"
	if b, err := os.ReadFile("/proc/loadavg"); err == nil {
		f := strings.Fields(string(b))
		if len(f) >= 3 {
			load = strings.Join(f[:3], " ")
		}
	}
	return fmt.Sprintf("%d CPUs (nproc) %q, %s RAM, load average %s at start, %s %s/%s",
		runtime.NumCPU(), model, mem, load, runtime.Version(), runtime.GOOS, runtime.GOARCH)
}

func gitHead() string {
	b, err := exec.Command("git", "rev-parse", "--short", "HEAD").Output()
	if err != nil {
		return "unknown"
	}
	head := strings.TrimSpace(string(b))
	if out, err := exec.Command("git", "status", "--porcelain", "--untracked-files=no").Output(); err == nil && len(bytes.TrimSpace(out)) > 0 {
		head += " (with uncommitted changes)"
	}
	return head
}

type stats struct{ min, med, max time.Duration }

func statsOf(ds []time.Duration) stats {
	if len(ds) == 0 {
		return stats{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	return stats{min: s[0], med: median(s), max: s[len(s)-1]}
}

func secs(d time.Duration) string { return fmt.Sprintf("%.2f s", d.Seconds()) }

func (s stats) String() string {
	return fmt.Sprintf("%.2f / %.2f / %.2f s", s.min.Seconds(), s.med.Seconds(), s.max.Seconds())
}

func (r *report) markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "## Results of `make bench` (generated)\n\n")
	fmt.Fprintf(&b, "- Date: %s (took %s)\n", r.started.UTC().Format("2006-01-02 15:04 MST"), r.finished.Sub(r.started).Round(time.Second))
	fmt.Fprintf(&b, "- Commit: `%s`\n", gitHead())
	fmt.Fprintf(&b, "- Machine: %s\n", r.machine)
	if r.sandboxNote != "" {
		fmt.Fprintf(&b, "- Sandbox: %s\n", r.sandboxNote)
	}
	fmt.Fprintf(&b, "- Logs, configs and profiles: `%s`\n\n", r.shown(r.outDir))

	if len(r.latency) > 0 {
		b.WriteString("### Detection latency (fault injected at t0 → the rollback's first step starts)\n\n")
		b.WriteString("The simulator's profile of the running tag turns to 20 % errors at t0; the error-rate trigger is `> 5 %` " +
			"over `rate(...[5s])` (the sandbox scrapes every 1 s). \"Scrape\" is the first Prometheus sample after t0 in which a 5xx counter " +
			"of the Deployment had grown. Floor = window + scrape interval + 0.1 s (rollguard samples " +
			"every second, its default `global.prometheus.resolution`, and the second before a run's first sample every 100 ms; a window is " +
			"evaluated when it completes, not at the next poll) + the rate window's lag " +
			"(5 % / 20 % of 5 s = 1.25 s); goal = window + poll interval + 2 s after the first faulty scrape.\n\n")
		b.WriteString("| configuration | runs | t0 → first step, min / median / max | floor | first faulty scrape → first step, min / median / max | goal | runs within goal |\n")
		b.WriteString("|---|---|---|---|---|---|---|\n")
		for _, l := range r.latency {
			var ff, fs []time.Duration
			within := 0
			for _, run := range l.runs {
				ff = append(ff, run.fromFault())
				fs = append(fs, run.fromScrape())
				if run.fromScrape() <= l.goal {
					within++
				}
			}
			fmt.Fprintf(&b, "| %s: `for: %s`, interval %s | %d | %s | %s | %s | %s | %d / %d |\n",
				l.cfg.name, l.cfg.window, l.cfg.interval, len(l.runs), statsOf(ff), secs(l.floor), statsOf(fs), secs(l.goal), within, len(l.runs))
		}
		b.WriteString("\nPer run (seconds after t0): first faulty scrape, trigger fired, first step started.\n\n")
		b.WriteString("| configuration | run | scrape | fired | first step | plan finished |\n|---|---|---|---|---|---|\n")
		for _, l := range r.latency {
			for i, run := range l.runs {
				fmt.Fprintf(&b, "| %s | %d | %.2f | %.2f | %.2f | %v |\n", l.cfg.name, i+1, run.firstScrape.Sub(run.t0).Seconds(),
					run.fired.Sub(run.t0).Seconds(), run.fromFault().Seconds(), run.planFinished)
			}
		}
		b.WriteString("\n")
	}

	if rb := r.rollback; rb != nil {
		fmt.Fprintf(&b, "### Rollback duration (4 replicas, %s ramp pause and rollguard's verify step excluded, started %s after the bad version rolled out)\n\n", rb.pause, rb.settle)
		b.WriteString("`script` is `test/bench/quick-rollback.sh`, the runbook's Quick Rollback kubectl commands (scale 0, set image, " +
			"rollout status, scale 2, pause, scale 4); `quick` and `revert` are `rollguard rollback --local --action …` " +
			"(preflight pin and journal, the steps, health checks between ramp steps; verify, which waits for data from after the rollout " +
			"and holds verifyWindow, is timed out of wall and plan: the script verifies nothing); `revert` runs with the default " +
			"`revertMaxSurge: 100%` (every pod of the good version at once, the bad ones serve until it is available, maxSurge put " +
			"back after), `revert-paced` with `revertMaxSurge: \"\"` (the Deployment's own 25 % / 25 %). Same cluster, one run, rotating order. " +
			"\"wall\" is the command from exec to exit; \"plan\" is rollguard's plan started → finished; \"4 ready\" is exec → 4 available " +
			"replicas of the good image, polled every 100 ms (the script exits before its last scale-up is ready).\n\n")
		b.WriteString("| method | runs | wall, min / median / max | plan, median | exec → 4 ready, min / median / max | ratio to script (median wall) | ratio to script (median 4 ready) |\n")
		b.WriteString("|---|---|---|---|---|---|---|\n")
		by := map[string][]rollbackRun{}
		for _, run := range rb.runs {
			by[run.method] = append(by[run.method], run)
		}
		scriptWall := statsOf(field(by[methodScript], func(r rollbackRun) time.Duration { return r.wall })).med
		scriptReady := statsOf(field(by[methodScript], func(r rollbackRun) time.Duration { return r.ready })).med
		for _, m := range methods {
			runs := by[m]
			w := statsOf(field(runs, func(r rollbackRun) time.Duration { return r.wall }))
			p := statsOf(field(runs, func(r rollbackRun) time.Duration { return r.plan }))
			rd := statsOf(field(runs, func(r rollbackRun) time.Duration { return r.ready }))
			plan := "-"
			if m != methodScript {
				plan = secs(p.med)
			}
			fmt.Fprintf(&b, "| %s | %d | %s | %s | %s | %.2f | %.2f |\n", m, len(runs), w, plan, rd,
				ratio(w.med, scriptWall), ratio(rd.med, scriptReady))
		}
		b.WriteString("\n")
	}

	if an := r.anchor; an != nil && len(an.runs) > 0 {
		an.markdown(&b)
	}

	if db := r.database; db != nil && len(db.runs) > 0 {
		db.markdown(&b)
	}

	if sc := r.scale; sc != nil && len(sc.results) > 0 {
		b.WriteString("### Scale (one evaluator tick of N targets × 4 triggers)\n\n")
		fmt.Fprintf(&b, "Real sources: `pkg/source/prometheus` against a Prometheus of the bench's own (%s, scrape %s) scraping "+
			"`test/cmd/seriesgen` (N deployments; `http_requests_total{namespace,deployment,version,status}` and "+
			"`http_request_duration_seconds_bucket{…,le}` with test/pggitsim's 12 buckets; one deployment in 50 unhealthy), and "+
			"`pkg/source/postgres` against the sandbox's primary. Triggers per target: error rate and P99 on rollguard's default "+
			"templates (`[1m]` rates, matched by `{namespace, deployment}`), pool (`builtin:connections`), lag "+
			"(`builtin:replication_lag`). The Prometheus triggers are sampled at rollguard's default `global.prometheus.resolution` of 1 s: "+
			"each tick is one `query_range` per query over the instants since the previous tick (5 points per series at the 5 s interval); "+
			"the row \"(resolution 5s)\" is the largest N again with `resolution: 5s`, the interval: one point per series and tick, as an "+
			"instant query per tick was before. "+
			"`pkg/evaluator` is driven by a harness process of its own per N (so RSS is that N's); "+
			"interval %s; %d ticks measured after %d warm-up ticks. CPU is the process's user+system time per interval, "+
			"whatever ran in it (tick, GC, HTTP); \"evaluator\" is the tick minus its slowest query. The harness runs with the "+
			"Deployment's `GOMEMLIMIT=%s` (`deploy/base/deployment.yaml`). RSS: after the last tick / peak during the ticks "+
			"(VmHWM, reset after the start) / peak of the start (config parse, specs, `SetTriggers`) / before the start.\n\n",
			sc.promVersion, scaleInterval, scaleInterval, sc.results[0].Ticks, warmupTicks, sc.results[0].MemLimit)
		b.WriteString("| targets | triggers | queries per tick (Prometheus + PostgreSQL) | Prometheus-counted API queries per tick | tick, median / max | slowest query, median | evaluator, median | CPU per tick (share of a core) | RSS after / peak in ticks / peak at start / before | Go heap live | states after the last tick |\n")
		b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|\n")
		for _, s := range sc.results {
			var st []string
			for _, k := range []string{"ok", "pending", "firing", "nodata", "fired", "blind"} {
				if v := s.States[k]; v > 0 {
					st = append(st, fmt.Sprintf("%s %d", k, v))
				}
			}
			fmt.Fprintf(&b, "| %d%s | %d | %d + %d (plan: %d distinct) | %.1f | %s / %s | %s | %s | %s (%.1f %%) | %.0f / %s / %.0f / %.0f MiB | %.0f MiB | %s |\n",
				s.Targets, s.label(), s.Triggers, s.QueriesPerTick["prometheus"], s.QueriesPerTick["postgres"], s.PlanQueries, s.PromRequestsPerTick,
				ms(s.TickMedian), ms(s.TickMax), ms(s.QueryMedian), ms(s.EvalMedian), ms(s.CPUPerTick),
				100*s.CPUPerTick.Seconds()/scaleInterval.Seconds(), mib(s.RSS), tickPeak(s), mib(s.RSSPeakStart), mib(s.RSSStart), mib(s.HeapLive), strings.Join(st, ", "))
		}
		b.WriteString("\n")
		for _, s := range sc.results {
			if s.ConfigError != "" {
				fmt.Fprintf(&b, "At %d targets `pkg/config` refused the generated config (%s); the harness then loaded a one-target config "+
					"through `pkg/config` and cloned its specs %d times (same templates and defaults, one Match per target).\n\n",
					s.Targets, "`"+s.ConfigError+"`", s.Targets)
			}
		}
		var last *scaleResult // the profiled run
		for _, s := range sc.results {
			if s.P99Query != "" {
				fmt.Fprintf(&b, "\"P99 recorded\": the same %d targets, with the bench's Prometheus also running `%s` "+
					"(its rule records the default P99 template every 5 s) and `templates.latencyP99` set to `%s`; "+
					"Prometheus' cost of the rule is outside the tick.\n\n", s.Targets, fleetRulesPath, s.P99Query)
			}
			if s.TopCPU != "" {
				last = s
			}
		}
		if last != nil {
			fmt.Fprintf(&b, "CPU profile of the %d measured ticks at %d targets (`go tool pprof -top %s/cpu.pprof`):\n\n```\n%s```\n\n",
				last.Ticks, last.Targets, r.shown(last.Profile), trimPprof(last.TopCPU))
			fmt.Fprintf(&b, "Allocations during those ticks (`go tool pprof -top -sample_index=alloc_space -diff_base=heap-before.pprof heap-after.pprof`):\n\n```\n%s```\n\n",
				trimPprof(last.TopHeap))
		}
	}
	return b.String()
}

type fstats struct{ min, med, max float64 }

func fstatsOf(fs []float64) fstats {
	if len(fs) == 0 {
		return fstats{}
	}
	s := append([]float64(nil), fs...)
	sort.Float64s(s)
	med := s[len(s)/2]
	if len(s)%2 == 0 {
		med = (s[len(s)/2-1] + s[len(s)/2]) / 2
	}
	return fstats{s[0], med, s[len(s)-1]}
}

func (f fstats) String() string { return fmt.Sprintf("%.3f / %.3f / %.3f", f.min, f.med, f.max) }

func ms(d time.Duration) string { return fmt.Sprintf("%.0f ms", float64(d)/float64(time.Millisecond)) }

func ratio(a, b time.Duration) float64 {
	if b <= 0 {
		return 0
	}
	return a.Seconds() / b.Seconds()
}

func field(runs []rollbackRun, f func(rollbackRun) time.Duration) []time.Duration {
	out := make([]time.Duration, 0, len(runs))
	for _, r := range runs {
		out = append(out, f(r))
	}
	return out
}

// shownPath is how the report names a file of the run: relative to the
// repository when it is inside it, else relative to the sandbox's state
// directory ($SANDBOX_STATE_DIR/...), else by its name alone: the
// generated section is committed and must not carry this machine's paths.
func shownPath(p, repo, state string) string {
	within := func(root string) (string, bool) {
		if root == "" || !filepath.IsAbs(p) {
			return "", false
		}
		rel, err := filepath.Rel(root, p)
		if err != nil || rel == ".." || strings.HasPrefix(rel, ".."+string(filepath.Separator)) {
			return "", false
		}
		return rel, true
	}
	if !filepath.IsAbs(p) {
		return filepath.Clean(p)
	}
	if rel, ok := within(repo); ok {
		return rel
	}
	if rel, ok := within(state); ok {
		if rel == "." {
			return "$SANDBOX_STATE_DIR"
		}
		return "$SANDBOX_STATE_DIR/" + filepath.ToSlash(rel)
	}
	return filepath.Base(p)
}

func (r *report) shown(p string) string { return shownPath(p, r.repoDir, r.stateDir) }

// trimPprof drops pprof's file/type header lines that name temp paths.
func trimPprof(s string) string {
	var keep []string
	for _, l := range strings.Split(s, "\n") {
		if strings.HasPrefix(l, "File: ") || strings.HasPrefix(l, "Build ID: ") {
			continue
		}
		keep = append(keep, l)
	}
	return strings.TrimLeft(strings.Join(keep, "\n"), "\n")
}

// spliceSection puts section between the markers of doc, or appends the
// markers and section when doc has none.
func spliceSection(doc, section string) string {
	block := beginMarker + "\n" + strings.TrimRight(section, "\n") + "\n" + endMarker
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	if i >= 0 && j > i {
		return doc[:i] + block + doc[j+len(endMarker):]
	}
	return strings.TrimRight(doc, "\n") + "\n\n" + block + "\n"
}

func updateDoc(path, section string) error {
	b, err := os.ReadFile(path)
	if err != nil && !os.IsNotExist(err) {
		return err
	}
	doc := string(b)
	if old, ok := currentSection(doc); ok {
		section = mergeSection(old, section)
	}
	return os.WriteFile(path, []byte(spliceSection(doc, section)), 0o644)
}

// currentSection is the text between doc's markers.
func currentSection(doc string) (string, bool) {
	i := strings.Index(doc, beginMarker)
	j := strings.Index(doc, endMarker)
	if i < 0 || j <= i {
		return "", false
	}
	return doc[i+len(beginMarker) : j], true
}

// mergeSection keeps the benchmarks a run did not repeat (--only): each
// subsection ("### Name ...") of the new run replaces the old one of the
// same name; an old one the run did not repeat is kept, saying which run
// it comes from, so every table in the file still names its date and
// commit.
func mergeSection(old, new string) string {
	oldHead, oldSubs := subsections(old)
	newHead, newSubs := subsections(new)
	ran := map[string]bool{}
	for _, s := range newSubs {
		ran[s.name] = true
	}
	date, _, _ := strings.Cut(headField(oldHead, "Date"), " (took")
	from := fmt.Sprintf("_From an earlier run (%s, commit %s): this run did not repeat it._", date, headField(oldHead, "Commit"))
	var kept []string
	out := newSubs
	for _, s := range oldSubs {
		if ran[s.name] {
			continue
		}
		if !strings.Contains(s.text, "\n_From an earlier run (") {
			heading, body, _ := strings.Cut(s.text, "\n")
			s.text = heading + "\n\n" + from + "\n" + body
		}
		kept = append(kept, s.name)
		out = append(out, s)
	}
	var b strings.Builder
	b.WriteString(strings.TrimRight(newHead, "\n"))
	if len(kept) > 0 {
		fmt.Fprintf(&b, "\n- Kept from earlier runs: %s", strings.Join(kept, ", "))
	}
	b.WriteString("\n\n")
	for _, s := range out {
		b.WriteString(strings.TrimRight(s.text, "\n"))
		b.WriteString("\n\n")
	}
	return b.String()
}

type subsection struct{ name, text string }

// subsections splits a generated section at its "### " headings; a
// subsection's name is its heading up to the first " (" or ":".
func subsections(s string) (head string, subs []subsection) {
	parts := strings.Split("\n"+s, "\n### ")
	head = strings.TrimPrefix(parts[0], "\n")
	for _, p := range parts[1:] {
		heading, _, _ := strings.Cut(p, "\n")
		name := heading
		if i := strings.IndexAny(name, "(:"); i >= 0 {
			name = strings.TrimSpace(name[:i])
		}
		subs = append(subs, subsection{name: name, text: "### " + p})
	}
	return head, subs
}

// headField is the value of a "- Name: value" line of a section's head.
func headField(head, name string) string {
	for _, l := range strings.Split(head, "\n") {
		if v, ok := strings.CutPrefix(l, "- "+name+": "); ok {
			return v
		}
	}
	return "unknown"
}

// tickPeak is the ticks' own RSS peak, or says it could not be separated
// from the start's.
func tickPeak(s *scaleResult) string {
	if !s.PeakReset {
		return fmt.Sprintf("%.0f (whole run: VmHWM not reset)", mib(s.RSSPeak))
	}
	return fmt.Sprintf("%.0f", mib(s.RSSPeak))
}
