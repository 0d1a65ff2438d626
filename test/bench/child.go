package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/pprof"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	promclient "github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/source/postgres"
	"github.com/rollguard/rollguard/pkg/source/prometheus"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/test/sandboxenv"
)

// warmupTicks are run before measuring: the first tick opens the
// PostgreSQL pool and the HTTP connections.
const warmupTicks = 2

// countingQuerier counts the queries a backend is sent and keeps the
// slowest of the current tick.
type countingQuerier struct {
	q       evaluator.Querier
	n       atomic.Int64
	mu      sync.Mutex
	slowest time.Duration
}

func (c *countingQuerier) Query(ctx context.Context, q string, ts time.Time) ([]source.Series, error) {
	c.n.Add(1)
	t0 := time.Now()
	s, err := c.q.Query(ctx, q, ts)
	d := time.Since(t0)
	c.mu.Lock()
	c.slowest = max(c.slowest, d)
	c.mu.Unlock()
	return s, err
}

// countingRanger is countingQuerier for a backend that also answers range
// queries (Prometheus): triggers sampled at a resolution use them.
type countingRanger struct {
	*countingQuerier
	r evaluator.RangeQuerier
}

func (c countingRanger) QueryRange(ctx context.Context, q string, start, end time.Time, step time.Duration) ([]source.Range, error) {
	c.n.Add(1)
	t0 := time.Now()
	rs, err := c.r.QueryRange(ctx, q, start, end, step)
	d := time.Since(t0)
	c.mu.Lock()
	c.slowest = max(c.slowest, d)
	c.mu.Unlock()
	return rs, err
}

func (c *countingQuerier) reset() (int, time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	s := c.slowest
	c.slowest = 0
	return int(c.n.Swap(0)), s
}

type countingHandler struct{ fired, blind atomic.Int64 }

func (h *countingHandler) Fire(trigger.Decision) { h.fired.Add(1) }
func (h *countingHandler) Blind(trigger.Blind)   { h.blind.Add(1) }

// scaleChild measures N targets in this process and prints one JSON line.
func scaleChild(ctx context.Context, n int, promURL, dir string, ticks int, profile bool, p99Query, resolution string) error {
	rssStart := procStatus("VmRSS")
	env, err := sandboxenv.Read(sandboxenv.Path())
	if err != nil {
		return err
	}
	cfgPath, err := writeScaleConfig(dir, env, promURL, n, n, p99Query, resolution)
	if err != nil {
		return err
	}
	// The daemon's own path first: the whole config through pkg/config.
	// When pkg/config refuses it, the specs are one target's (same
	// defaults and templates, loaded through pkg/config) cloned N times,
	// and the report says so.
	var configErr string
	cfg, err := config.LoadFile(cfgPath)
	if err != nil {
		configErr = err.Error()
		if len(configErr) > 300 {
			configErr = configErr[:300] + "…"
		}
		one, err2 := writeScaleConfig(filepath.Join(dir, "one"), env, promURL, n, 1, p99Query, resolution)
		if err2 != nil {
			return err2
		}
		if cfg, err = config.LoadFile(one); err != nil {
			return err
		}
	}
	if err := cfg.ResolveSecrets(); err != nil {
		return err
	}
	specs := specsOf(cfg)
	if configErr != "" {
		specs = cloneSpecs(cfg, n)
	}
	interval := time.Duration(cfg.Global.Interval)

	psrc, err := prometheus.New(prometheus.Options{URL: promURL, Timeout: time.Duration(cfg.Global.Prometheus.Timeout)}, zap.NewNop())
	if err != nil {
		return err
	}
	db := cfg.Global.Databases[0]
	pgsrc, err := postgres.New(postgres.Options{Name: db.Name, DSN: string(db.DSN), MaxConns: int32(db.MaxConns),
		ConnectTimeout: time.Duration(db.ConnectTimeout), StatementTimeout: time.Duration(db.StatementTimeout)}, zap.NewNop())
	if err != nil {
		return err
	}
	defer pgsrc.Close()
	cq := map[string]*countingQuerier{"prometheus": {q: psrc}, "postgres:" + db.Name: {q: pgsrc}}
	queriers := map[string]evaluator.Querier{}
	for k, v := range cq {
		queriers[k] = v
	}
	queriers["prometheus"] = countingRanger{cq["prometheus"], psrc}
	// Wait until Prometheus has two scrapes of every deployment, so rate()
	// answers for all N (and, with a recording rule, until it has recorded
	// all N).
	waitFor := []string{config.DefaultErrorRateVolumeQuery}
	if p99Query != "" {
		waitFor = append(waitFor, p99Query)
	}
	for _, q := range waitFor {
		for deadline := time.Now().Add(3 * time.Minute); ; sleep(ctx, 2*time.Second) {
			s, err := psrc.Query(ctx, q, time.Now())
			if err == nil && len(s) >= n {
				break
			}
			if time.Now().After(deadline) || ctx.Err() != nil {
				return fmt.Errorf("prometheus at %s: %s: %d of %d deployments after 3m (%v)", promURL, q, len(s), n, err)
			}
		}
	}

	h := &countingHandler{}
	qt := min(time.Duration(cfg.Global.Prometheus.Timeout), interval)
	ev := evaluator.New(evaluator.Options{Interval: interval, Parallelism: cfg.Global.QueryParallelism, QueryTimeout: qt},
		queriers, h, zap.NewNop(), promclient.NewRegistry())
	if err := ev.SetTriggers(specs); err != nil {
		return err
	}
	res := &scaleResult{Targets: n, Triggers: len(specs), Ticks: ticks, QueriesPerTick: map[string]int{}, RSSStart: rssStart, ConfigError: configErr,
		MemLimit: os.Getenv("GOMEMLIMIT"), P99Query: p99Query, Resolution: time.Duration(cfg.Global.Prometheus.Resolution)}
	// The specs stay referenced to the end, as the daemon keeps its config.
	cfg = nil
	// The start (config parse, specs, SetTriggers) happens once; the ticks
	// repeat. Their peaks are reported apart: VmHWM now, then reset (5 to
	// clear_refs, Linux ≥ 4.0) so the end's VmHWM is the ticks' own.
	res.RSSPeakStart = procStatus("VmHWM")
	res.PeakReset = os.WriteFile("/proc/self/clear_refs", []byte("5"), 0) == nil
	res.PlanQueries = distinctQueries(specs)

	var (
		durs, slow []time.Duration
		ru0        syscall.Rusage
		prom0      float64
		heap0      string
	)
	next := time.Now()
	for i := 0; i < warmupTicks+ticks; i++ {
		sleep(ctx, time.Until(next))
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if i == warmupTicks {
			if profile {
				heap0 = filepath.Join(dir, "heap-before.pprof")
				if err := writeHeap(heap0); err != nil {
					return err
				}
				f, err := os.Create(filepath.Join(dir, "cpu.pprof"))
				if err != nil {
					return err
				}
				defer f.Close()
				if err := pprof.StartCPUProfile(f); err != nil {
					return err
				}
			}
			prom0, _ = promQueryRequests(ctx, promURL)
			_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru0)
		}
		for _, c := range cq {
			c.reset()
		}
		t0 := time.Now()
		ev.Tick(ctx, t0)
		d := time.Since(t0)
		if i >= warmupTicks {
			var worst time.Duration
			for name, c := range cq {
				k, s := c.reset()
				res.QueriesPerTick[strings.SplitN(name, ":", 2)[0]] = k
				worst = max(worst, s)
			}
			durs = append(durs, d)
			slow = append(slow, worst)
		}
		next = next.Add(interval)
	}
	// The CPU of the last interval includes what follows its tick (GC).
	sleep(ctx, time.Until(next))
	var ru1 syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru1)
	prom1, _ := promQueryRequests(ctx, promURL)
	if profile {
		pprof.StopCPUProfile()
	}
	res.PromRequestsPerTick = (prom1 - prom0) / float64(ticks)
	cpu := time.Duration(ru1.Utime.Nano()+ru1.Stime.Nano()-ru0.Utime.Nano()-ru0.Stime.Nano()) * time.Nanosecond
	res.CPUPerTick = cpu / time.Duration(ticks)
	res.TickMedian, res.TickMax = median(durs), maxOf(durs)
	res.QueryMedian = median(slow)
	evals := make([]time.Duration, len(durs))
	for i := range durs {
		evals[i] = durs[i] - slow[i]
	}
	res.EvalMedian = median(evals)
	res.RSS, res.RSSPeak = procStatus("VmRSS"), procStatus("VmHWM")
	// Live heap: after a collection, so it is what the triggers, windows
	// and the last results hold, not garbage awaiting the next GC.
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	res.HeapLive = int64(ms.HeapAlloc)
	res.States = map[string]int{"fired": int(h.fired.Load()), "blind": int(h.blind.Load())}
	for _, st := range ev.Status() {
		res.States[st.State.String()]++
	}
	if profile {
		heap1 := filepath.Join(dir, "heap-after.pprof")
		if err := writeHeap(heap1); err != nil {
			return err
		}
		res.Profile = dir
		res.TopCPU = pprofTop("-top", "-nodecount=18", filepath.Join(dir, "cpu.pprof"))
		res.TopHeap = pprofTop("-top", "-nodecount=12", "-sample_index=alloc_space", "-diff_base="+heap0, heap1)
	}
	runtime.KeepAlive(ev)
	runtime.KeepAlive(specs)
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	fmt.Println(string(b))
	return nil
}

func writeHeap(path string) error {
	runtime.GC()
	f, err := os.Create(path)
	if err != nil {
		return err
	}
	defer f.Close()
	return pprof.WriteHeapProfile(f)
}

// pprofTop runs `go tool pprof` on a profile; the report says so when it
// cannot (the profile files stay for a look by hand).
func pprofTop(args ...string) string {
	b, err := exec.Command("go", append([]string{"tool", "pprof"}, args...)...).CombinedOutput()
	if err != nil {
		return fmt.Sprintf("go tool pprof %s: %v\n%s", strings.Join(args, " "), err, b)
	}
	return string(b)
}

// procStatus reads a kB field of /proc/self/status, in bytes.
func procStatus(field string) int64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return -1
	}
	for _, l := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(l, field+":"); ok {
			kb, _ := strconv.ParseInt(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), 10, 64)
			return kb << 10
		}
	}
	return -1
}

// writeScaleConfig generates N targets with the runbook's four triggers
// (error rate, P99, pool, lag) on rollguard's default templates: the
// Prometheus triggers of every target share one query each, the
// PostgreSQL built-ins one query each per database.
func writeScaleConfig(dir string, env sandboxenv.Env, promURL string, n, write int, p99Query, resolution string) (string, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", err
	}
	dsn := filepath.Join(dir, "monitor-dsn")
	if err := os.WriteFile(dsn, []byte(env["PG_PRIMARY_MONITOR_DSN"]), 0o600); err != nil {
		return "", err
	}
	var b strings.Builder
	fmt.Fprintf(&b, `# Generated by make bench (scale): %d targets.
global:
  interval: %s
  prometheus: {url: %q, timeout: 4s%s}
  databases:
    - {name: primary, dsnFile: %q}
  notify: {incidentDir: %q, incidentStore: {kind: dir}}
`, n, scaleInterval, promURL, resolutionKey(resolution), dsn, filepath.Join(dir, "incidents"))
	if p99Query != "" {
		fmt.Fprintf(&b, "  templates:\n    latencyP99: {query: %q}\n", p99Query)
	}
	b.WriteString("targets:\n")
	for i := range write {
		name, ns := "app-"+strconv.Itoa(i), "ns-"+strconv.Itoa(i/100)
		fmt.Fprintf(&b, `  - name: %s-%s
    namespace: %s
    deployment: %s
    triggers:
      - {name: error-rate, kind: errorRate, above: 0.05, minRate: 1, action: rollback}
      - {name: latency-p99, kind: latencyP99, above: 5, action: rollback}
      - {name: pool, kind: connections, database: primary, above: 0.95, onError: breach, action: page}
      - {name: lag, kind: replicationLag, database: primary, above: 30, action: page, match: {slot: sub_from_primary}}
`, ns, name, ns, name)
	}
	path := filepath.Join(dir, "rollguard.yaml")
	return path, os.WriteFile(path, []byte(b.String()), 0o644)
}

// resolutionKey is the config's global.prometheus.resolution, empty for
// rollguard's default.
func resolutionKey(r string) string {
	if r == "" {
		return ""
	}
	return ", resolution: " + r
}

// specsOf maps the config to evaluator specs the way pkg/app's spec()
// does (it is unexported there), fingerprint and sampling included.
func specsOf(cfg *config.Config) []evaluator.Spec {
	var out []evaluator.Spec
	for _, t := range cfg.Targets {
		for _, tr := range t.Triggers {
			out = append(out, rules.Spec(cfg, t.Name, &tr))
		}
	}
	return out
}

// cloneSpecs repeats the first target's triggers for targets 0..n-1, named
// and matched as writeScaleConfig would have.
func cloneSpecs(cfg *config.Config, n int) []evaluator.Spec {
	one := cfg.Targets[0].Triggers
	out := make([]evaluator.Spec, 0, n*len(one))
	for i := range n {
		name, ns := "app-"+strconv.Itoa(i), "ns-"+strconv.Itoa(i/100)
		for _, tr := range one {
			if tr.Match != nil {
				tr.Match = map[string]string{"namespace": ns, "deployment": name}
			}
			out = append(out, rules.Spec(cfg, ns+"-"+name, &tr))
		}
	}
	return out
}

func distinctQueries(specs []evaluator.Spec) int {
	seen := map[[2]string]bool{}
	for _, s := range specs {
		seen[[2]string{s.Backend, s.Query}] = true
		if s.VolumeQuery != "" {
			seen[[2]string{s.Backend, s.VolumeQuery}] = true
		}
	}
	return len(seen)
}

func median(ds []time.Duration) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func maxOf(ds []time.Duration) time.Duration {
	var m time.Duration
	for _, d := range ds {
		m = max(m, d)
	}
	return m
}
