package main

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/test/alertmanager"
	"github.com/rollguard/rollguard/test/jsonlog"
	"github.com/rollguard/rollguard/test/localproc"
	"github.com/rollguard/rollguard/test/sandboxenv"
	"github.com/rollguard/rollguard/test/sandboxfixture"
)

// The anchor benchmark: the same fault, seen side by side by what users
// run instead (a Prometheus alerting rule with rollguard's expression,
// routed by Alertmanager to a webhook: a human gets paged) and by
// rollguard with the production config (which rolls back).

// anchorSetup is one row: how Prometheus scrapes and evaluates the rule,
// and how long Alertmanager waits before its first notification.
type anchorSetup struct {
	key, name               string
	scrape, eval, groupWait time.Duration
}

var anchorSetups = []anchorSetup{
	{key: "1s", name: "rule every 1s", scrape: time.Second, eval: time.Second, groupWait: 0},
	{key: "defaults", name: "common defaults", scrape: 30 * time.Second, eval: 30 * time.Second, groupWait: 30 * time.Second},
}

// anchorIntervals are rollguard's evaluation intervals compared: the
// default and 1 s. Each run watches one Deployment per interval, all of
// them on the same tag, so one profile change is the same fault for all.
var anchorIntervals = []time.Duration{5 * time.Second, time.Second}

// production is what the bench takes from configs/production.yaml: the
// templates and the error-rate trigger (the rule gets the same expression,
// threshold and window) and the rollback's ramp and verification.
type production struct {
	Resolution             string
	ErrorRate, Volume, P99 string
	Above                  float64
	For, MinRate           string
	RampSteps              []int
	RampPause, Rollout     string
	VerifyWindow           string
	forDur, rampPause      time.Duration
}

const productionConfig = "configs/production.yaml"

func readProduction() (*production, error) {
	b, err := os.ReadFile(productionConfig)
	if err != nil {
		return nil, err
	}
	var doc struct {
		Global struct {
			Prometheus struct {
				Resolution string `json:"resolution"`
			} `json:"prometheus"`
			Templates struct {
				ErrorRate  struct{ Query, VolumeQuery string } `json:"errorRate"`
				LatencyP99 struct{ Query string }              `json:"latencyP99"`
			} `json:"templates"`
		} `json:"global"`
		Targets []struct {
			Triggers []struct {
				Name    string  `json:"name"`
				Kind    string  `json:"kind"`
				Above   float64 `json:"above"`
				For     string  `json:"for"`
				MinRate float64 `json:"minRate"`
			} `json:"triggers"`
			Rollback struct {
				RampSteps      []int  `json:"rampSteps"`
				RampPause      string `json:"rampPause"`
				RolloutTimeout string `json:"rolloutTimeout"`
				VerifyWindow   string `json:"verifyWindow"`
			} `json:"rollback"`
		} `json:"targets"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		return nil, fmt.Errorf("%s: %w", productionConfig, err)
	}
	t := doc.Global.Templates
	p := &production{ErrorRate: t.ErrorRate.Query, Volume: t.ErrorRate.VolumeQuery, P99: t.LatencyP99.Query, Resolution: doc.Global.Prometheus.Resolution}
	if p.Resolution == "" {
		p.Resolution = "1s" // rollguard's default
	}
	if len(doc.Targets) == 0 {
		return nil, fmt.Errorf("%s: no target", productionConfig)
	}
	for _, tr := range doc.Targets[0].Triggers {
		if tr.Kind == "errorRate" {
			p.Above, p.For, p.MinRate = tr.Above, tr.For, fmt.Sprint(tr.MinRate)
		}
	}
	rb := doc.Targets[0].Rollback
	p.RampSteps, p.RampPause, p.Rollout, p.VerifyWindow = rb.RampSteps, rb.RampPause, rb.RolloutTimeout, rb.VerifyWindow
	if p.ErrorRate == "" || p.Volume == "" || p.P99 == "" || p.Above == 0 || p.For == "" || p.RampPause == "" {
		return nil, fmt.Errorf("%s: templates, the errorRate trigger or the rollback's ramp not found", productionConfig)
	}
	if p.forDur, err = time.ParseDuration(p.For); err != nil {
		return nil, fmt.Errorf("%s: for %q: %w", productionConfig, p.For, err)
	}
	if p.rampPause, err = time.ParseDuration(p.RampPause); err != nil {
		return nil, fmt.Errorf("%s: rampPause %q: %w", productionConfig, p.RampPause, err)
	}
	return p, nil
}

// ruleExpr is the alerting rule's expression: the production error-rate
// trigger's query, threshold and volume guard.
func (p *production) ruleExpr() string {
	return fmt.Sprintf("(%s) > %g and on (namespace, deployment) (%s) >= %s", p.ErrorRate, p.Above, p.Volume, p.MinRate)
}

// anchorRun is one Deployment of one run, seconds after t0.
type anchorRun struct {
	setup    string
	interval time.Duration
	run      int
	t0       time.Time
	// series5xx: the Deployment's 5xx series was in Prometheus before t0.
	series5xx bool
	// activeAt: the rule's alert went pending (activeAt in Prometheus' alerts API);
	// startsAt: the alert's startsAt in the notification.
	activeAt, startsAt time.Time
	webhook            time.Time
	detection
	serving, finished time.Time
}

func (r anchorRun) since(t time.Time) time.Duration {
	if t.IsZero() {
		return -1
	}
	return t.Sub(r.t0)
}

func (r anchorRun) ratio(t time.Time) float64 {
	w := r.since(r.webhook)
	if w <= 0 || t.IsZero() {
		return 0
	}
	return r.since(t).Seconds() / w.Seconds()
}

type anchorResult struct {
	prod *production
	runs []anchorRun
	// per setup, for the report
	setups []anchorSetup
}

// webhookSink is the Alertmanager webhook receiver: the first firing
// notification per Deployment.
type webhookSink struct {
	mu       sync.Mutex
	first    map[string]time.Time
	startsAt map[string]time.Time
	url      string
	srv      *http.Server
}

func newWebhookSink() (*webhookSink, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, err
	}
	s := &webhookSink{first: map[string]time.Time{}, startsAt: map[string]time.Time{}, url: "http://" + ln.Addr().String() + "/alerts"}
	s.srv = &http.Server{Handler: http.HandlerFunc(s.serve), ReadHeaderTimeout: 5 * time.Second}
	go func() { _ = s.srv.Serve(ln) }()
	return s, nil
}

func (s *webhookSink) serve(w http.ResponseWriter, r *http.Request) {
	now := time.Now()
	var msg struct {
		Alerts []struct {
			Status   string            `json:"status"`
			Labels   map[string]string `json:"labels"`
			StartsAt time.Time         `json:"startsAt"`
		} `json:"alerts"`
	}
	if err := json.NewDecoder(r.Body).Decode(&msg); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	s.mu.Lock()
	for _, a := range msg.Alerts {
		d := a.Labels["deployment"]
		if a.Status != "firing" || d == "" {
			continue
		}
		if _, ok := s.first[d]; !ok {
			s.first[d], s.startsAt[d] = now, a.StartsAt
		}
	}
	s.mu.Unlock()
	w.WriteHeader(http.StatusOK)
}

func (s *webhookSink) get(d string) (time.Time, time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.first[d], s.startsAt[d]
}

func (s *webhookSink) close() { _ = s.srv.Close() }

// anchorDeployment is one Deployment of a run with its rollguard.
type anchorDeployment struct {
	name     string
	interval time.Duration
	proc     *rollguardProc
	client   *api.Client
}

// anchorBatch is one run's Deployments, all on one tag: one per rollguard
// interval, and the control, which nothing rolls back: its notification is
// the page a human gets. (On a rolled-back Deployment the rule may never
// fire: with 30 s evaluation rollguard's rollback ends the breach before
// the rule's window has held.)
type anchorBatch struct {
	run     int
	tag     string
	deps    []*anchorDeployment
	control string
	ready   time.Time // the bad tag's Pods were all Ready
	err     error
}

func (b *anchorBatch) stop(ctx context.Context, c *cluster) {
	for _, d := range b.deps {
		if d.proc != nil {
			d.proc.stop()
		}
		c.remove(context.WithoutCancel(ctx), d.name)
	}
	if b.control != "" {
		c.remove(context.WithoutCancel(ctx), b.control)
	}
}

func runAnchor(ctx context.Context, c *cluster, env sandboxenv.Env, o options) (*anchorResult, error) {
	if err := c.ensureNamespace(ctx); err != nil {
		return nil, err
	}
	prod, err := readProduction()
	if err != nil {
		return nil, err
	}
	if o.anchorRes != "" {
		prod.Resolution = o.anchorRes
	}
	res := &anchorResult{prod: prod}
	for _, setup := range anchorSetups {
		if !o.anchorSetups[setup.key] {
			continue
		}
		res.setups = append(res.setups, setup)
		if err := anchorSetupRuns(ctx, c, env, o, prod, setup, res); err != nil {
			return nil, fmt.Errorf("%s: %w", setup.name, err)
		}
	}
	return res, nil
}

func anchorSetupRuns(ctx context.Context, c *cluster, env sandboxenv.Env, o options, prod *production, setup anchorSetup, res *anchorResult) error {
	dir := filepath.Join(o.outDir, "anchor-"+strings.ReplaceAll(setup.name, " ", "-"))
	_ = os.RemoveAll(dir)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	sink, err := newWebhookSink()
	if err != nil {
		return err
	}
	defer sink.close()
	am, err := alertmanager.Start(ctx, env["ALERTMANAGER_BIN"], filepath.Join(dir, "alertmanager"), alertmanagerConfig(sink.url, setup.groupWait), 30*time.Second)
	if err != nil {
		return err
	}
	defer am.Stop()
	simAddr := strings.TrimPrefix(env["SIM_URL"], "http://")
	prom, promURL, err := startPrometheusConfig(ctx, env["PROMETHEUS_BIN"], dir, anchorPrometheusConfig(setup, simAddr, strings.TrimPrefix(am.URL, "http://")),
		map[string]string{"anchor.rules.yaml": anchorRules(prod, setup)})
	if err != nil {
		return err
	}
	defer stopProc(prom)
	say("== anchor, %s (scrape %s, rule every %s, group_wait %s): %d runs, rollguard at %v with the production templates; Prometheus %s, Alertmanager %s",
		setup.name, setup.scrape, setup.eval, setup.groupWait, o.anchorRuns, anchorIntervals, promURL, am.URL)

	// The next run's Deployments are prepared while the current one runs:
	// their healthy history (a whole rate window and more) builds up
	// during the current fault instead of after it.
	prepare := func(run int) <-chan *anchorBatch {
		ch := make(chan *anchorBatch, 1)
		go func() { ch <- prepareAnchorBatch(ctx, c, env, o, prod, setup, promURL, dir, run) }()
		return ch
	}
	next := prepare(1)
	for run := 1; run <= o.anchorRuns; run++ {
		b := <-next
		if b.err != nil {
			b.stop(ctx, c)
			return fmt.Errorf("run %d: %w", run, b.err)
		}
		runs, err := anchorOnce(ctx, c, env, o, prod, setup, promURL, sink, b, func() {
			if run < o.anchorRuns {
				next = prepare(run + 1)
			}
		})
		b.stop(ctx, c)
		if err != nil {
			if run < o.anchorRuns {
				if nb := <-next; nb != nil {
					nb.stop(ctx, c)
				}
			}
			return fmt.Errorf("run %d: %w", run, err)
		}
		for _, r := range runs {
			res.runs = append(res.runs, r)
			say("   run %d, rollguard every %s: webhook %.2fs, first step %.2fs, previous version serving %.2fs (%.3f× the webhook), finished %.2fs (%.3f×); rule pending %.2fs, rollguard's first breach %.2fs",
				run, r.interval, r.since(r.webhook).Seconds(), r.since(r.stepStart).Seconds(), r.since(r.serving).Seconds(), r.ratio(r.serving),
				r.since(r.finished).Seconds(), r.ratio(r.finished), r.since(r.activeAt).Seconds(), r.since(r.firstBreach).Seconds())
		}
	}
	return nil
}

func alertmanagerConfig(webhook string, groupWait time.Duration) string {
	return fmt.Sprintf(`# Generated by make bench (anchor).
route:
  receiver: bench
  group_by: [alertname, namespace, deployment]
  group_wait: %s
  group_interval: 5m
  repeat_interval: 4h
receivers:
  - name: bench
    webhook_configs:
      - url: %q
        send_resolved: false
`, model(groupWait), webhook)
}

// model renders a duration as Prometheus and Alertmanager read it.
func model(d time.Duration) string {
	if d%time.Second == 0 {
		return fmt.Sprintf("%ds", int(d/time.Second))
	}
	return fmt.Sprintf("%dms", d.Milliseconds())
}

func anchorPrometheusConfig(setup anchorSetup, sim, am string) string {
	return fmt.Sprintf(`# Generated by make bench (anchor).
global:
  scrape_interval: %s
  scrape_timeout: 1s
  evaluation_interval: %s
rule_files: [anchor.rules.yaml]
alerting:
  alertmanagers:
    - static_configs:
        - targets: [%q]
scrape_configs:
  - job_name: pggit-api
    honor_labels: true
    static_configs:
      - targets: [%q]
`, model(setup.scrape), model(setup.eval), am, sim)
}

func anchorRules(prod *production, setup anchorSetup) string {
	expr, _ := json.Marshal(prod.ruleExpr())
	return fmt.Sprintf(`# Generated by make bench (anchor): rollguard's error-rate trigger as an
# alerting rule (configs/production.yaml: its template, threshold, volume
# guard and window).
groups:
  - name: rollguard-anchor
    interval: %s
    rules:
      - alert: ErrorRateHigh
        expr: %s
        for: %s
        labels: {severity: critical}
`, model(setup.eval), expr, prod.For)
}

// prepareAnchorBatch creates one Deployment per rollguard interval on a
// fresh tag, starts a rollguard on each, and returns once they are all
// serving the tag.
func prepareAnchorBatch(ctx context.Context, c *cluster, env sandboxenv.Env, o options, prod *production, setup anchorSetup, promURL, dir string, run int) *anchorBatch {
	stamp := time.Now().Format("150405")
	b := &anchorBatch{run: run, tag: fmt.Sprintf("anchor-%s-%d", stamp, run)}
	b.control = fmt.Sprintf("anc-%d-ctl-%s", run, stamp)
	var wg sync.WaitGroup
	errs := make([]error, len(anchorIntervals)+1)
	names := []string{b.control}
	for _, iv := range anchorIntervals {
		d := &anchorDeployment{name: fmt.Sprintf("anc-%d-%s-%s", run, model(iv), stamp), interval: iv}
		b.deps = append(b.deps, d)
		names = append(names, d.name)
	}
	for i, name := range names {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.prepare(ctx, name, "pggit-api:"+b.tag)
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			b.err = err
			return b
		}
	}
	b.ready = time.Now()
	for _, d := range b.deps {
		ddir := filepath.Join(dir, d.name)
		port, err := localproc.FreePort()
		if err != nil {
			b.err = err
			return b
		}
		cfg, token, err := writeAnchorConfig(ddir, env, prod, d.name, promURL, port, d.interval)
		if err != nil {
			b.err = err
			return b
		}
		base := fmt.Sprintf("http://127.0.0.1:%d", port)
		d.proc, err = startRollguard(ctx, o.rollguard, cfg, filepath.Join(ddir, "rollguard.log"), base)
		if err != nil {
			b.err = err
			return b
		}
		d.client = &api.Client{BaseURL: base, Token: token, HTTP: &http.Client{Timeout: 5 * time.Second}}
	}
	return b
}

// anchorOnce waits until the batch has a healthy history on both sides,
// injects the fault and times both sides. started is called right after
// the fault is injected.
func anchorOnce(ctx context.Context, c *cluster, env sandboxenv.Env, o options, prod *production, setup anchorSetup, promURL string,
	sink *webhookSink, b *anchorBatch, started func()) ([]anchorRun, error) {
	// A whole rate window of healthy samples of the tag's own series (its
	// 5xx counter included, at 0) before the fault, plus two scrapes, so
	// rate() reads the fault as it would in a long-running service; and
	// every rollguard reporting its error-rate trigger ok.
	healthyFrom := b.ready.Add(time.Minute + 2*setup.scrape)
	for deadline := time.Now().Add(5 * time.Minute); ; sleep(ctx, 500*time.Millisecond) {
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if time.Now().After(deadline) {
			return nil, fmt.Errorf("deployments %s not healthy on both sides within 5m", b.tag)
		}
		if time.Now().Before(healthyFrom) {
			continue
		}
		ok := true
		for _, d := range b.deps {
			if !triggerOK(ctx, d.client, "error-rate") {
				ok = false
			}
		}
		if ok {
			break
		}
	}
	// Both sides read the same Prometheus; the 5xx series must be there
	// already (a series born at t0 changes what rate() extrapolates).
	runs := make([]anchorRun, len(b.deps))
	for i, d := range b.deps {
		runs[i] = anchorRun{setup: setup.name, interval: d.interval, run: b.run, series5xx: true}
		for _, name := range []string{d.name, b.control} {
			q := fmt.Sprintf(`http_requests_total{namespace=%q,deployment=%q,status=~"5.."}`, benchNamespace, name)
			n, err := promCount(ctx, promURL, q)
			if err != nil {
				return nil, err
			}
			runs[i].series5xx = runs[i].series5xx && n > 0
		}
	}
	tails := make([]*jsonlog.Tail[logLine], len(b.deps))
	for i, d := range b.deps {
		tails[i] = jsonlog.NewTail[logLine](d.proc.log)
		tails[i].Next() // skip what came before t0
	}
	wctx, cancel := context.WithCancel(ctx)
	defer cancel()
	timelines := make([]*podTimeline, len(b.deps))
	for i, d := range b.deps {
		timelines[i] = c.watchPods(wctx, d.name, goodImage, "pggit-api:"+b.tag, replicas)
	}

	t0 := time.Now()
	if err := httpDo(ctx, http.MethodPut, env["SIM_URL"]+"/control/profiles/"+b.tag,
		fmt.Sprintf(`{"errorRate":%g,"latencySeconds":0.05}`, faultErrorRate)); err != nil {
		return nil, err
	}
	for i := range runs {
		runs[i].t0 = t0
	}
	started()

	// The webhook comes at most a window, a rule interval, a few scrapes
	// and group_wait after the fault; the rollback's ramp pause follows
	// rollguard's own detection.
	deadline := t0.Add(prod.forDur + setup.eval + 4*setup.scrape + setup.groupWait + prod.rampPause + 90*time.Second)
	for {
		done := true
		for i, d := range b.deps {
			r := &runs[i]
			for _, l := range tails[i].Next() {
				if err := r.read(l); err != nil {
					return nil, fmt.Errorf("rollguard %s: %w (log %s)", d.name, err, d.proc.log)
				}
			}
			r.webhook, r.startsAt = sink.get(b.control)
			r.serving, r.finished = timelines[i].get()
			if r.webhook.IsZero() || r.finished.IsZero() || r.stepStart.IsZero() {
				done = false
			}
		}
		if done {
			break
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			for i, d := range b.deps {
				r := runs[i]
				if r.webhook.IsZero() || r.finished.IsZero() || r.stepStart.IsZero() {
					return nil, fmt.Errorf("%s (rollguard every %s): after %s: webhook %v, first step %v, 4 ready %v (logs %s, %s)",
						d.name, d.interval, time.Since(t0).Round(time.Second), !r.webhook.IsZero(), !r.stepStart.IsZero(), !r.finished.IsZero(),
						d.proc.log, filepath.Dir(d.proc.log))
				}
			}
			return nil, ctx.Err()
		}
		sleep(ctx, 100*time.Millisecond)
	}
	if at, err := alertActiveAt(ctx, promURL, "ErrorRateHigh", b.control); err == nil {
		for i := range runs {
			runs[i].activeAt = at
		}
	}
	return runs, nil
}

// alertActiveAt is when the rule's alert for deployment went pending, as
// Prometheus' alerts API has it. ALERTS_FOR_STATE holds the same instant
// cut to whole seconds (its value is ActiveAt.Unix()), which made the
// rule look up to a second earlier than it was.
func alertActiveAt(ctx context.Context, base, alertname, deployment string) (time.Time, error) {
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, base+"/api/v1/alerts", nil)
	if err != nil {
		return time.Time{}, err
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return time.Time{}, fmt.Errorf("prometheus alerts: %w", err)
	}
	defer resp.Body.Close()
	var out struct {
		Data struct {
			Alerts []struct {
				Labels   map[string]string `json:"labels"`
				ActiveAt time.Time         `json:"activeAt"`
			} `json:"alerts"`
		} `json:"data"`
	}
	if err := json.NewDecoder(resp.Body).Decode(&out); err != nil {
		return time.Time{}, fmt.Errorf("prometheus alerts: %w", err)
	}
	for _, a := range out.Data.Alerts {
		if a.Labels["alertname"] == alertname && a.Labels["deployment"] == deployment {
			return a.ActiveAt, nil
		}
	}
	return time.Time{}, fmt.Errorf("prometheus alerts: no %s alert for %s", alertname, deployment)
}

func triggerOK(ctx context.Context, client *api.Client, name string) bool {
	s, err := client.Status(ctx)
	if err != nil || !s.Leader {
		return false
	}
	for _, t := range s.Triggers {
		if t.Trigger == name {
			return t.State.String() == "ok"
		}
	}
	return false
}

// writeAnchorConfig is the production configuration for one bench
// Deployment: its resolution, templates and triggers, its quick rollback
// with the ramp pause and verification window, at the given interval; the
// rest of global at rollguard's defaults.
func writeAnchorConfig(dir string, env sandboxenv.Env, prod *production, name, promURL string, port int, interval time.Duration) (string, string, error) {
	token, err := writeToken(dir)
	if err != nil {
		return "", "", err
	}
	steps := make([]string, len(prod.RampSteps))
	for i, s := range prod.RampSteps {
		steps[i] = fmt.Sprint(s)
	}
	queries := sandboxfixture.Queries{ErrorRate: prod.ErrorRate, Volume: prod.Volume, LatencyP99: prod.P99}
	cfg := fmt.Sprintf(`# Generated by make bench (anchor) from %s.
global:
  interval: %s
  listenAddress: 127.0.0.1:%d
  logLevel: info
  prometheus: {url: %q, resolution: %s}
%s  api: {tokenFile: token}
  notify:
    incidentDir: %q
%s%s    triggers:
      - {name: error-rate, kind: errorRate, above: %g, for: %s, minRate: %s, action: rollback}
      - {name: latency-p99, kind: latencyP99, above: 5, for: %s, action: rollback}
    rollback:
      strategy: quick
      rampSteps: [%s]
      rampPause: %s
      rolloutTimeout: %s
      verifyWindow: %s
`, productionConfig, model(interval), port, promURL, prod.Resolution, benchGlobal(env), filepath.Join(dir, "incidents"),
		queries.YAML(), benchTarget(env, name),
		prod.Above, prod.For, prod.MinRate, prod.For, strings.Join(steps, ", "), prod.RampPause, prod.Rollout, prod.VerifyWindow)
	path := filepath.Join(dir, "rollguard.yaml")
	return path, token, os.WriteFile(path, []byte(cfg), 0o644)
}

func (an *anchorResult) markdown(b *strings.Builder) {
	p := an.prod
	b.WriteString("### Anchor: rollguard against Prometheus + Alertmanager on the same fault\n\n")
	fmt.Fprintf(b, "Each run turns one tag's profile to 20 %% errors at t0. %d Deployments of 4 replicas run that tag: one per rollguard "+
		"interval (%s), each watched by its own rollguard, and a control that nothing rolls back, whose notification is the page a human "+
		"gets (on a Deployment rollguard rolls back the rule may never fire: its rollback can end the breach before the rule's window has "+
		"held). One profile change is the same fault for all, at the same instant. Both sides read the same Prometheus (the sandbox's "+
		"binary, a process of the bench's own so that each row's scrape and rule intervals can be set; it scrapes the sandbox's simulator). "+
		"Alerting rule: the error-rate trigger of `%s` (its template, threshold and volume guard) with `for: %s`: `%s`; routed by "+
		"Debian's Alertmanager (`group_by: [alertname, namespace, deployment]`) to a webhook receiver in the bench. rollguard: that "+
		"configuration's `global.prometheus.resolution` (%s), templates and triggers and its quick rollback (ramp %v, pause %s, verify "+
		"window %s), the rest at rollguard's defaults. The Deployments' 5xx series exist (at 0) before t0 in every run (column \"5xx before t0\"), "+
		"and a whole rate window of healthy samples plus two scrapes precedes the fault. \"Webhook\": the control's first firing notification "+
		"reached the receiver. \"First step\": rollguard's first rollback step started. \"Serving\": no Pod of the bad version serving "+
		"(Ready and not terminating) and one of the previous version Ready. \"Finished\": 4 Ready on the previous version, the ramp pause "+
		"included. Times from t0 in seconds (a Pod watch, the logs, the receiver); ratios per run, then min / median / max.\n\n",
		len(anchorIntervals)+1, fmtIntervals(), productionConfig, p.For, p.ruleExpr(), p.Resolution, p.RampSteps, p.RampPause, p.VerifyWindow)
	b.WriteString("| Prometheus + Alertmanager | rollguard interval | runs | t0 → webhook | t0 → first step | first step − webhook | t0 → serving | t0 → finished | serving / webhook (goal ≤ 1.0) | finished / webhook |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|\n")
	for _, setup := range an.setups {
		for _, iv := range anchorIntervals {
			var wh, st, diff, sv, fin []time.Duration
			var rs, rf []float64
			for _, r := range an.runs {
				if r.setup != setup.name || r.interval != iv {
					continue
				}
				wh = append(wh, r.since(r.webhook))
				st = append(st, r.since(r.stepStart))
				diff = append(diff, r.stepStart.Sub(r.webhook))
				sv = append(sv, r.since(r.serving))
				fin = append(fin, r.since(r.finished))
				rs = append(rs, r.ratio(r.serving))
				rf = append(rf, r.ratio(r.finished))
			}
			if len(wh) == 0 {
				continue
			}
			fmt.Fprintf(b, "| %s: scrape %s, rule every %s, `group_wait: %s` | %s | %d | %s | %s | %s | %s | %s | %s | %s |\n",
				setup.name, model(setup.scrape), model(setup.eval), model(setup.groupWait), model(iv), len(wh),
				statsOf(wh), statsOf(st), signedStats(diff), statsOf(sv), statsOf(fin), fstatsOf(rs), fstatsOf(rf))
		}
	}
	b.WriteString("\nPer run (seconds after t0): the rule's alert pending (its `activeAt` in Prometheus' alerts API) and rollguard's first breaching sample, " +
		"the webhook, the trigger fired, the first step, serving, finished.\n\n")
	b.WriteString("| setup | run | rollguard | 5xx before t0 | rule pending | rollguard first breach | webhook | fired | first step | serving | finished | serving / webhook | finished / webhook |\n")
	b.WriteString("|---|---|---|---|---|---|---|---|---|---|---|---|---|\n")
	for _, r := range an.runs {
		fmt.Fprintf(b, "| %s | %d | %s | %s | %s | %s | %s | %s | %s | %s | %s | %.3f | %.3f |\n", r.setup, r.run, model(r.interval),
			map[bool]string{true: "yes", false: "no"}[r.series5xx], secsOf(r.since(r.activeAt)), secsOf(r.since(r.firstBreach)),
			secsOf(r.since(r.webhook)), secsOf(r.since(r.fired)), secsOf(r.since(r.stepStart)), secsOf(r.since(r.serving)),
			secsOf(r.since(r.finished)), r.ratio(r.serving), r.ratio(r.finished))
	}
	b.WriteString("\n")
}

func fmtIntervals() string {
	var s []string
	for _, iv := range anchorIntervals {
		s = append(s, model(iv))
	}
	return strings.Join(s, " and ")
}

func secsOf(d time.Duration) string {
	if d < 0 {
		return "-"
	}
	return fmt.Sprintf("%.2f", d.Seconds())
}

// signedStats is stats of durations that may be negative (rollguard
// before the webhook).
func signedStats(ds []time.Duration) string {
	s := statsOf(ds)
	return fmt.Sprintf("%+.2f / %+.2f / %+.2f s", s.min.Seconds(), s.med.Seconds(), s.max.Seconds())
}
