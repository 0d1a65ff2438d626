package main

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/test/jsonlog"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// The fault: the simulator's profile for the running tag turns to 20 %
// errors. The error-rate trigger's threshold is 5 %.
const (
	faultErrorRate = 0.2
	threshold      = 0.05
	// rateWindow is the range of the rate() in the bench's templates: the
	// sandbox scrapes every second, so 5 s holds 5 samples.
	rateWindow = 5 * time.Second
)

type latencyConfig struct {
	name     string
	window   time.Duration
	interval time.Duration
}

// latencyRun is one injected fault.
type latencyRun struct {
	detection
	firstScrape time.Time // first scrape that carried the fault's errors
	t0          time.Time
}

func (r latencyRun) fromFault() time.Duration  { return r.stepStart.Sub(r.t0) }
func (r latencyRun) fromScrape() time.Duration { return r.stepStart.Sub(r.firstScrape) }

type latencyResult struct {
	cfg         latencyConfig
	scrape      time.Duration
	runs        []latencyRun
	floor, goal time.Duration
}

// rateLag is how long after the first faulty scrape rate()'s ratio needs
// to cross the threshold: the faulty share of the range must reach
// threshold / fault.
func rateLag() time.Duration {
	return time.Duration(threshold / faultErrorRate * float64(rateWindow))
}

func runLatency(ctx context.Context, c *cluster, env sandboxenv.Env, o options, lc latencyConfig) (*latencyResult, error) {
	if err := c.ensureNamespace(ctx); err != nil {
		return nil, err
	}
	scrape := time.Second // test/sandbox/up's scrape_interval
	res := &latencyResult{cfg: lc, scrape: scrape,
		// The window starts within 100 ms after the rate crossed (the
		// second before a run's first sample on the grid is sampled every
		// 100 ms), and Run evaluates it when it completes: the poll
		// interval does not add.
		floor: lc.window + scrape + 100*time.Millisecond + rateLag(),
		goal:  lc.window + lc.interval + 2*time.Second,
	}
	say("== detection latency, %s window (for %s, interval %s): %d runs; floor %s (window + scrape %s + 0.1s + rate lag %s)",
		lc.name, lc.window, lc.interval, o.runs, res.floor, scrape, rateLag())
	for i := 1; i <= o.runs; i++ {
		r, err := latencyOnce(ctx, c, env, o, lc, i)
		if err != nil {
			return nil, fmt.Errorf("run %d: %w", i, err)
		}
		res.runs = append(res.runs, r)
		say("   run %d: first step %.2fs after the fault, %.2fs after the first faulty scrape (scrape +%.2fs, fired +%.2fs)%s",
			i, r.fromFault().Seconds(), r.fromScrape().Seconds(), r.firstScrape.Sub(r.t0).Seconds(), r.fired.Sub(r.t0).Seconds(),
			map[bool]string{false: "; plan did not finish", true: ""}[r.planFinished])
	}
	return res, nil
}

func latencyOnce(ctx context.Context, c *cluster, env sandboxenv.Env, o options, lc latencyConfig, i int) (latencyRun, error) {
	var r latencyRun
	stamp := time.Now().Format("150405")
	name := fmt.Sprintf("lat-%s-%d-%s", lc.name, i, stamp)
	tag := "bench-" + stamp + fmt.Sprint(i)
	badImage := "pggit-api:" + tag
	defer c.remove(context.WithoutCancel(ctx), name)
	if err := c.prepare(ctx, name, badImage); err != nil {
		return r, err
	}
	dir := filepath.Join(o.outDir, name)
	port, err := localproc.FreePort()
	if err != nil {
		return r, err
	}
	cfg, token, err := writeDaemonConfig(dir, env, name, port, lc)
	if err != nil {
		return r, err
	}
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	p, err := startRollguard(ctx, o.rollguard, cfg, filepath.Join(dir, "rollguard.log"), base)
	if err != nil {
		return r, err
	}
	defer p.stop()

	// Inject only once the trigger has sampled healthy traffic of the new
	// tag over a full rate window, so the run starts from "ok".
	client := &api.Client{BaseURL: base, Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
	okSince := time.Time{}
	for deadline := time.Now().Add(60 * time.Second); ; sleep(ctx, 250*time.Millisecond) {
		if time.Now().After(deadline) || ctx.Err() != nil {
			return r, fmt.Errorf("error-rate trigger not ok within 60s (log %s)", p.log)
		}
		s, err := client.Status(ctx)
		if err != nil || !s.Leader {
			continue
		}
		ok := false
		for _, t := range s.Triggers {
			if t.Trigger == "error-rate" && t.State.String() == "ok" {
				ok = true
			}
		}
		if !ok {
			okSince = time.Time{}
			continue
		}
		if okSince.IsZero() {
			okSince = time.Now()
		}
		if time.Since(okSince) >= max(rateWindow+time.Second, 2*lc.interval) {
			break
		}
	}

	r.t0 = time.Now()
	if err := httpDo(ctx, http.MethodPut, env["SIM_URL"]+"/control/profiles/"+tag,
		fmt.Sprintf(`{"errorRate":%g,"latencySeconds":0.05}`, faultErrorRate)); err != nil {
		return r, err
	}

	tail := jsonlog.NewTail[logLine](p.log)
	deadline := time.Now().Add(lc.window + 60*time.Second)
	for ctx.Err() == nil && time.Now().Before(deadline) && !r.planFinished {
		for _, l := range tail.Next() {
			if err := r.read(l); err != nil {
				return r, fmt.Errorf("rollguard: %w (log %s)", err, p.log)
			}
		}
		// Latency is measured at the first step; the rest of the plan only
		// has to finish so the next run starts on a quiet cluster.
		if !r.stepStart.IsZero() && time.Since(r.stepStart) > 45*time.Second {
			break
		}
		sleep(ctx, 200*time.Millisecond)
	}
	if r.stepStart.IsZero() {
		return r, fmt.Errorf("no rollback step started within %s of the fault (log %s)", lc.window+60*time.Second, p.log)
	}
	fs, err := firstFaultyScrape(ctx, env["PROMETHEUS_URL"], name, r.t0)
	if err != nil {
		return r, err
	}
	r.firstScrape = fs
	return r, nil
}

// firstFaultyScrape finds the first sample after t0 at which a 5xx
// counter of the deployment had grown: the first scrape that carried the
// fault (a counter's series is created on its first increment, so a series
// born after t0 counts from its first sample).
func firstFaultyScrape(ctx context.Context, prom, name string, t0 time.Time) (time.Time, error) {
	q := fmt.Sprintf(`http_requests_total{namespace=%q,deployment=%q,status=~"5.."}[5m]`, benchNamespace, name)
	m, err := promMatrix(ctx, prom, q, time.Now())
	if err != nil {
		return time.Time{}, err
	}
	var first time.Time
	for _, ss := range m {
		base := 0.0
		for _, s := range ss {
			if s.t.Before(t0) {
				base = s.v
				continue
			}
			if s.v > base {
				if first.IsZero() || s.t.Before(first) {
					first = s.t
				}
				break
			}
		}
	}
	if first.IsZero() {
		return first, fmt.Errorf("no faulty 5xx sample of %s/%s in Prometheus after %s", benchNamespace, name, t0.Format(time.RFC3339Nano))
	}
	return first, nil
}

// writeDaemonConfig writes a config for one bench Deployment: the
// runbook's error-rate and P99 triggers with the sandbox's 5 s rate range.
func writeDaemonConfig(dir string, env sandboxenv.Env, name string, port int, lc latencyConfig) (string, string, error) {
	token, err := writeToken(dir)
	if err != nil {
		return "", "", err
	}
	cfg := fmt.Sprintf(`# Generated by make bench (test/bench).
global:
  interval: %s
  for: %s
  blindAfter: 2m
  listenAddress: 127.0.0.1:%d
  logLevel: info
  prometheus: {url: %q, timeout: 1s}
%s  api: {tokenFile: token}
  notify:
    incidentDir: %q
    incidentStore: {kind: dir}
%s%s    triggers:
      - {name: error-rate, kind: errorRate, above: %g, minRate: 1, action: rollback}
      - {name: latency-p99, kind: latencyP99, above: 5, action: rollback}
    rollback:
      strategy: quick
      rampSteps: [2]
      rampPause: 1s
      rolloutTimeout: 30s
      verifyWindow: 30s
`, lc.interval, lc.window, port, env["PROMETHEUS_URL"], benchGlobal(env), filepath.Join(dir, "incidents"),
		sandboxfixture.ExampleQueries(model(rateWindow)).YAML(), benchTarget(env, name), threshold)
	path := filepath.Join(dir, "rollguard.yaml")
	return path, token, os.WriteFile(path, []byte(cfg), 0o644)
}
