package main

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// scaleInterval is the evaluation interval of the scale benchmark (the
// daemon's default) and its Prometheus' scrape interval.
const scaleInterval = 5 * time.Second

// scaleResult is one N, measured in a child process of its own so its
// RSS is not the leftovers of a smaller N.
type scaleResult struct {
	Targets  int `json:"targets"`
	Triggers int `json:"triggers"`
	// Distinct queries in the evaluator's plan, and those counted per tick
	// by backend.
	PlanQueries    int            `json:"planQueries"`
	QueriesPerTick map[string]int `json:"queriesPerTick"`
	// Prometheus' own count of /api/v1/query requests over the measured
	// ticks, divided by the ticks: an independent check.
	PromRequestsPerTick float64 `json:"promRequestsPerTick"`
	Ticks               int     `json:"ticks"`
	// Wall time of Tick (median, max) and the slowest query in it.
	TickMedian  time.Duration `json:"tickMedian"`
	TickMax     time.Duration `json:"tickMax"`
	QueryMedian time.Duration `json:"slowestQueryMedian"`
	// Evaluator time: the tick minus its slowest query (fan-out, windows).
	EvalMedian time.Duration `json:"evalMedian"`
	// Process CPU (user+system) per interval, over the measured span.
	CPUPerTick time.Duration `json:"cpuPerTick"`
	// RSS after the last tick; its peak (VmHWM) over the ticks (over the
	// whole process when PeakReset is false); the peak of the start
	// (config, specs, SetTriggers); and RSS before any of it (runtime,
	// libraries).
	RSS          int64 `json:"rss"`
	RSSPeak      int64 `json:"rssPeak"`
	RSSPeakStart int64 `json:"rssPeakStart"`
	PeakReset    bool  `json:"peakReset"`
	RSSStart     int64 `json:"rssStart"`
	// MemLimit is the child's GOMEMLIMIT: the Deployment's.
	MemLimit string `json:"memLimit"`
	HeapLive int64  `json:"heapLive"`
	// Fired triggers and states after the last tick.
	States map[string]int `json:"states"`
	// ConfigError: pkg/config refused the N-target config (the specs were
	// then cloned from a one-target config).
	ConfigError string `json:"configError,omitempty"`
	// P99Query is the latencyP99 template when it is not the default: the
	// fleet rule's recorded series.
	P99Query string `json:"p99Query,omitempty"`
	// Resolution is global.prometheus.resolution: each tick reads
	// interval/resolution points per series (0: one instant per tick).
	Resolution time.Duration `json:"resolution"`
	Profile    string        `json:"profile,omitempty"`
	TopCPU     string        `json:"topCPU,omitempty"`
	TopHeap    string        `json:"topAlloc,omitempty"`
}

// label marks a row measured with the recorded P99, or sampled once per
// tick.
func (r *scaleResult) label() string {
	switch {
	case r.P99Query != "" && r.Resolution != time.Second:
		return fmt.Sprintf(" (P99 recorded, resolution %s)", r.Resolution)
	case r.P99Query != "":
		return " (P99 recorded)"
	case r.Resolution != time.Second:
		return fmt.Sprintf(" (resolution %s)", r.Resolution)
	}
	return ""
}

type scaleRun struct {
	promVersion string
	results     []*scaleResult
}

func runScale(ctx context.Context, env sandboxenv.Env, o options) (*scaleRun, error) {
	say("== scale: %v targets × 4 triggers against a Prometheus of its own (%s, scrape %s) and the sandbox's PostgreSQL; %d ticks each, interval %s",
		o.scaleN, env["PROMETHEUS_BIN"], scaleInterval, o.scaleTicks, scaleInterval)
	self, err := os.Executable()
	if err != nil {
		return nil, err
	}
	out := &scaleRun{promVersion: promVersion(env["PROMETHEUS_BIN"])}
	// Every N; then, unless --recorded=false, the largest N once more with
	// the P99 template reading the series deploy/monitoring/fleet records.
	type size struct {
		n          int
		profile    bool
		rules      *fleetRules
		resolution string
	}
	var sizes []size
	for i, n := range o.scaleN {
		sizes = append(sizes, size{n: n, profile: i == len(o.scaleN)-1})
	}
	// The largest N once more sampled once per tick (resolution 5s, the
	// interval: what a large fleet is advised to set): what sampling every
	// second costs at that size.
	sizes = append(sizes, size{n: o.scaleN[len(o.scaleN)-1], resolution: "5s"})
	if o.recorded {
		rules, err := readFleetRules()
		if err != nil {
			return nil, err
		}
		// As README advises a large fleet: the fleet rule and a resolution
		// of the interval.
		sizes = append(sizes, size{n: o.scaleN[len(o.scaleN)-1], rules: rules, resolution: "5s"})
	}
	for _, sz := range sizes {
		r, err := scaleOnce(ctx, env, o, self, sz.n, sz.profile, sz.rules, sz.resolution)
		if err != nil {
			return nil, fmt.Errorf("%d targets: %w", sz.n, err)
		}
		out.results = append(out.results, r)
		say("   %6d targets%s: %d queries/tick (Prometheus counted %.1f), tick median %s max %s (slowest query %s), CPU/tick %s, RSS %.1f MiB (peak %.1f in ticks, %.1f at start; GOMEMLIMIT %s)",
			sz.n, r.label(), sumQueries(r.QueriesPerTick), r.PromRequestsPerTick, r.TickMedian.Round(time.Millisecond), r.TickMax.Round(time.Millisecond),
			r.QueryMedian.Round(time.Millisecond), r.CPUPerTick.Round(time.Millisecond), mib(r.RSS), mib(r.RSSPeak), mib(r.RSSPeakStart), r.MemLimit)
	}
	return out, nil
}

// fleetRules is deploy/monitoring/fleet's PrometheusRule as a Prometheus
// rule file, and the series it records.
type fleetRules struct {
	file   []byte
	record string
}

const fleetRulesPath = "deploy/monitoring/fleet/prometheusrule.yaml"

func readFleetRules() (*fleetRules, error) {
	b, err := os.ReadFile(fleetRulesPath)
	if err != nil {
		return nil, err
	}
	// The spec is the rule file; the record name is read from it.
	var pr struct {
		Spec json.RawMessage `json:"spec"`
	}
	var groups struct {
		Groups []struct {
			Rules []struct {
				Record string `json:"record"`
			} `json:"rules"`
		} `json:"groups"`
	}
	if err := yaml.Unmarshal(b, &pr); err != nil {
		return nil, fmt.Errorf("%s: %w", fleetRulesPath, err)
	}
	if err := json.Unmarshal(pr.Spec, &groups); err != nil {
		return nil, fmt.Errorf("%s: spec: %w", fleetRulesPath, err)
	}
	if len(groups.Groups) == 0 || len(groups.Groups[0].Rules) == 0 || groups.Groups[0].Rules[0].Record == "" {
		return nil, fmt.Errorf("%s: no recording rule", fleetRulesPath)
	}
	file, err := yaml.JSONToYAML(pr.Spec)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fleetRulesPath, err)
	}
	return &fleetRules{file: file, record: groups.Groups[0].Rules[0].Record}, nil
}

// scaleOnce measures n targets; with rules, its Prometheus records the
// fleet rule and the targets' P99 template reads the recorded series.
func scaleOnce(ctx context.Context, env sandboxenv.Env, o options, self string, n int, profile bool, rules *fleetRules, resolution string) (*scaleResult, error) {
	dir := filepath.Join(o.outDir, fmt.Sprintf("scale-%d", n))
	if rules != nil {
		dir += "-recorded"
	}
	if resolution != "" {
		dir += "-resolution-" + resolution
	}
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	gen, genAddr, err := startSeriesgen(o.seriesgen, n, filepath.Join(dir, "seriesgen.log"))
	if err != nil {
		return nil, err
	}
	defer stopProc(gen)
	prom, promURL, err := startPrometheus(ctx, env["PROMETHEUS_BIN"], dir, genAddr, rules)
	if err != nil {
		return nil, err
	}
	defer stopProc(prom)

	args := []string{"--scale-child", fmt.Sprint(n), "--prom", promURL, "--out", dir, "--ticks", fmt.Sprint(o.scaleTicks)}
	if profile {
		args = append(args, "--profile")
	}
	if rules != nil {
		args = append(args, "--p99-query", rules.record)
	}
	if resolution != "" {
		args = append(args, "--child-resolution", resolution)
	}
	limit, err := deployedMemLimit()
	if err != nil {
		return nil, err
	}
	cmd := exec.CommandContext(ctx, self, args...)
	// The harness runs as the daemon is deployed: with the Deployment's
	// soft memory limit (Prometheus and seriesgen keep their defaults).
	cmd.Env = append(os.Environ(), "GOMEMLIMIT="+limit)
	cmd.Stderr = os.Stderr
	b, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("scale child: %w", err)
	}
	var r scaleResult
	if err := json.Unmarshal(lastLine(b), &r); err != nil {
		return nil, fmt.Errorf("scale child output %q: %w", lastLine(b), err)
	}
	return &r, nil
}

func startSeriesgen(bin string, n int, logPath string) (*exec.Cmd, string, error) {
	cmd := exec.Command(bin, "--deployments", fmt.Sprint(n))
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		return nil, "", err
	}
	lf, err := os.Create(logPath)
	if err != nil {
		return nil, "", err
	}
	cmd.Stderr = lf
	if err := cmd.Start(); err != nil {
		lf.Close()
		return nil, "", fmt.Errorf("start %s: %w", bin, err)
	}
	lf.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil {
		stopProc(cmd)
		return nil, "", fmt.Errorf("seriesgen: no address: %w", err)
	}
	addr := strings.TrimSpace(strings.TrimPrefix(line, "listening on "))
	return cmd, addr, nil
}

// startPrometheus runs a Prometheus of the bench's own, scraping only the
// synthetic exporter: the sandbox's stays as the tests expect it.
func startPrometheus(ctx context.Context, bin, dir, target string, rules *fleetRules) (*exec.Cmd, string, error) {
	ruleFiles := ""
	files := map[string]string{}
	if rules != nil {
		files["fleet.rules.yaml"] = string(rules.file)
		ruleFiles = "rule_files: [fleet.rules.yaml]\n"
	}
	cfg := fmt.Sprintf(`# Generated by make bench (scale).
global:
  scrape_interval: %s
  scrape_timeout: 4s
  evaluation_interval: 1m
scrape_configs:
  - job_name: seriesgen
    honor_labels: true
    static_configs:
      - targets: [%q]
%s`, scaleInterval, target, ruleFiles)
	return startPrometheusConfig(ctx, bin, dir, cfg, files)
}

// startPrometheusConfig runs a Prometheus of the bench's own with the
// configuration cfg and the files (rule files) beside it in dir.
func startPrometheusConfig(ctx context.Context, bin, dir, cfg string, files map[string]string) (*exec.Cmd, string, error) {
	port, err := localproc.FreePort()
	if err != nil {
		return nil, "", err
	}
	for name, body := range files {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(body), 0o644); err != nil {
			return nil, "", err
		}
	}
	cfgPath := filepath.Join(dir, "prometheus.yml")
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o644); err != nil {
		return nil, "", err
	}
	lf, err := os.Create(filepath.Join(dir, "prometheus.log"))
	if err != nil {
		return nil, "", err
	}
	defer lf.Close()
	cmd := exec.Command(bin, "--config.file="+cfgPath, "--storage.tsdb.path="+filepath.Join(dir, "tsdb"),
		fmt.Sprintf("--web.listen-address=127.0.0.1:%d", port), "--storage.tsdb.retention.time=1h")
	cmd.Stdout, cmd.Stderr = lf, lf
	if err := cmd.Start(); err != nil {
		return nil, "", fmt.Errorf("start %s: %w", bin, err)
	}
	u := fmt.Sprintf("http://127.0.0.1:%d", port)
	if err := waitHTTP200(ctx, u+"/-/ready", 30*time.Second); err != nil {
		stopProc(cmd)
		return nil, "", err
	}
	return cmd, u, nil
}

func stopProc(cmd *exec.Cmd) {
	if cmd == nil || cmd.Process == nil {
		return
	}
	_ = cmd.Process.Signal(syscall.SIGTERM)
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = cmd.Process.Kill()
		<-done
	}
}

func promVersion(bin string) string {
	b, err := exec.Command(bin, "--version").CombinedOutput()
	if err != nil {
		return "unknown"
	}
	first, _, _ := strings.Cut(string(b), "\n")
	return strings.TrimSpace(first)
}

func lastLine(b []byte) []byte {
	s := strings.TrimSpace(string(b))
	if i := strings.LastIndexByte(s, '\n'); i >= 0 {
		s = s[i+1:]
	}
	return []byte(s)
}

func sumQueries(m map[string]int) int {
	n := 0
	for _, v := range m {
		n += v
	}
	return n
}

func mib(b int64) float64 { return float64(b) / (1 << 20) }

// promQueryRequests reads Prometheus' own counter of query API requests
// (instant and range) from its /metrics (not through the query API, so reading it
// does not count).
func promQueryRequests(ctx context.Context, base string) (float64, error) {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/metrics", nil)
	if err != nil {
		return 0, err
	}
	resp, err := (&http.Client{Timeout: 10 * time.Second}).Do(req)
	if err != nil {
		return 0, err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return 0, err
	}
	total := 0.0
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasPrefix(l, "prometheus_http_requests_total{") && (strings.Contains(l, `handler="/api/v1/query"`) || strings.Contains(l, `handler="/api/v1/query_range"`)) {
			var v float64
			if _, err := fmt.Sscan(l[strings.LastIndexByte(l, ' ')+1:], &v); err == nil {
				total += v
			}
		}
	}
	return total, nil
}

// deploymentManifest is where the daemon's GOMEMLIMIT is set.
const deploymentManifest = "deploy/base/deployment.yaml"

var memLimitRE = regexp.MustCompile(`(?m)- name: GOMEMLIMIT\s*\n\s*value: "?([0-9]+[KMGT]?i?B?)"?\s*$`)

// deployedMemLimit reads the GOMEMLIMIT the Deployment gives the daemon.
func deployedMemLimit() (string, error) {
	b, err := os.ReadFile(deploymentManifest)
	if err != nil {
		return "", fmt.Errorf("the daemon's GOMEMLIMIT: %w", err)
	}
	m := memLimitRE.FindSubmatch(b)
	if m == nil {
		return "", fmt.Errorf("the daemon's GOMEMLIMIT: no GOMEMLIMIT env in %s", deploymentManifest)
	}
	return string(m[1]), nil
}
