// Package app builds rollguard from its config and runs it: the sources,
// the evaluator, the responder with its interlocks and executor, the
// notifiers, leader election, the HTTP API and hot reload. Nothing below
// imports it; each package gets only the settings it needs.
package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/signal"
	"reflect"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"go.uber.org/zap"
	"go.uber.org/zap/zapcore"
	"k8s.io/client-go/kubernetes"
	coordinationv1client "k8s.io/client-go/kubernetes/typed/coordination/v1"
	"k8s.io/client-go/rest"

	"github.com/rollguard/rollguard/pkg/api"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/database"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/leader"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/source"
	"github.com/rollguard/rollguard/pkg/version"
)

// Options are the command line's settings.
type Options struct {
	ConfigFile      string
	ShutdownTimeout time.Duration
	LogOutput       io.Writer
	// Identity names this replica in the leader lease ($POD_NAME, else the
	// host name and pid).
	Identity string
	// ReloadInterval is how often the config file is checked for changes
	// (default 5s; a mounted ConfigMap changes in place).
	ReloadInterval time.Duration
	// CrashAt is fault injection for the crash tests: "STEP:start" or
	// "STEP:done" kills the process (SIGKILL, no cleanup) right after that
	// journal write. Set from $ROLLGUARD_CRASH_AT; never in production.
	CrashAt string
	// Kubeconfig and KubeContext override global.kubernetes (the command
	// line's --kubeconfig and --context).
	Kubeconfig, KubeContext string
}

func (o *Options) defaults() {
	if o.ShutdownTimeout <= 0 {
		o.ShutdownTimeout = 20 * time.Second
	}
	if o.LogOutput == nil {
		o.LogOutput = os.Stderr
	}
	if o.Identity == "" {
		o.Identity = os.Getenv("POD_NAME")
	}
	if o.Identity == "" {
		h, _ := os.Hostname()
		o.Identity = fmt.Sprintf("%s-%d", h, os.Getpid())
	}
	if o.ReloadInterval <= 0 {
		o.ReloadInterval = 5 * time.Second
	}
	if o.CrashAt == "" {
		o.CrashAt = os.Getenv("ROLLGUARD_CRASH_AT")
	}
}

// crashAt returns the executor's Journaled hook for CrashAt.
func crashAt(spec string, logger *zap.Logger) func(step string, done bool) {
	if spec == "" {
		return nil
	}
	logger.Warn("fault injection: this process kills itself at a journal write", zap.String("crashAt", spec))
	return func(step string, done bool) {
		phase := "start"
		if done {
			phase = "done"
		}
		if step+":"+phase == spec {
			_ = syscall.Kill(os.Getpid(), syscall.SIGKILL)
			select {} // the signal is delivered; nothing else runs
		}
	}
}

// NewLogger returns a JSON zap logger at level.
func NewLogger(level string, out io.Writer) (*zap.Logger, error) {
	var lvl zapcore.Level
	if err := lvl.UnmarshalText([]byte(level)); err != nil {
		return nil, fmt.Errorf("log level %q: %w", level, err)
	}
	enc := zap.NewProductionEncoderConfig()
	enc.EncodeTime = zapcore.ISO8601TimeEncoder
	core := zapcore.NewCore(zapcore.NewJSONEncoder(enc), zapcore.Lock(zapcore.AddSync(out)), lvl)
	return zap.New(core), nil
}

// daemon is a running rollguard.
type daemon struct {
	opts   Options
	log    *zap.Logger
	reg    *prometheus.Registry
	client kubernetes.Interface
	kube   *kube.Deployments
	src    *sources
	dbs    map[string]*database.DB
	eval   *evaluator.Evaluator
	queue  *notify.Queue
	guard  *guard.Guard
	resp   *response.Responder
	exec   *rollback.Executor
	elect  *leader.Elector
	// records keeps incident records, pending notifications and the
	// alerts taken up (global.notify.incidentStore).
	records *records
	// leases reads the Lease to find the leader (not on the election's
	// client, whose rate limiter is the renewals').
	leases coordinationv1client.LeasesGetter
	// deliveries remembers what was paged, for the console.
	deliveries *notify.DeliveryLog
	gitops     *gitops.Manager
	watch      *gitops.Watcher

	mu       sync.RWMutex
	cfg      *config.Config
	cfgHash  string
	loadedAt time.Time

	reloadOK prometheus.Gauge
	reloadTS prometheus.Gauge
	reloads  *reloadMetrics
	// tokens are the API's bearer tokens, swapped by a reload that
	// rotates the token file.
	tokens atomic.Pointer[[]api.Token]
}

// Run loads the config and runs the daemon until ctx is done.
func Run(ctx context.Context, opts Options) error {
	opts.defaults()
	cfg, err := loadConfig(opts.ConfigFile)
	if err != nil {
		return err
	}
	logger, err := NewLogger(cfg.Global.LogLevel, opts.LogOutput)
	if err != nil {
		return err
	}
	defer func() { _ = logger.Sync() }()
	logWarnings(logger, cfg)
	d, err := newDaemon(ctx, cfg, opts, logger)
	if err != nil {
		logger.Error("cannot start", zap.Error(err))
		return err
	}
	defer d.close()
	return d.run(ctx)
}

func newDaemon(ctx context.Context, cfg *config.Config, opts Options, logger *zap.Logger) (*daemon, error) {
	d := &daemon{opts: opts, log: logger, reg: newRegistry()}
	reg := metricsRegisterer(d.reg)
	d.reloadOK, d.reloadTS = registerBuildAndReload(reg)
	d.reloads = newReloadMetrics(reg)

	var (
		err error
		rc  *rest.Config
	)
	if d.client, rc, err = kubeClient(cfg, opts); err != nil {
		return nil, err
	}
	if d.gitops, err = gitopsManager(rc, logger); err != nil {
		return nil, err
	}
	// The lease and rollguard's own state get clients of their own: each
	// client has its own rate limiter, and a burst of bookkeeping (twenty
	// alerts at once) must neither delay the lease renewal past its
	// deadline nor a rollback's writes.
	electClient, err := clientWithLimits(rc, 10, 20)
	if err != nil {
		return nil, err
	}
	stateClient, err := clientWithLimits(rc, 20, 40)
	if err != nil {
		return nil, err
	}
	d.leases = stateClient.CoordinationV1()
	d.kube = kube.New(d.client, kube.Options{Instance: opts.Identity}, logger.Named("kube"))
	if d.src, err = buildSources(cfg, logger); err != nil {
		return nil, err
	}
	if d.dbs, err = openDatabases(ctx, cfg, logger); err != nil {
		d.src.close()
		return nil, err
	}
	notifiers, err := buildNotifiers(cfg, logger)
	if err != nil {
		d.close()
		return nil, err
	}
	if d.records, err = buildRecords(cfg, stateClient, logger); err != nil {
		d.close()
		return nil, err
	}
	notifiers = append(notifiers, d.records.recorder)
	d.deliveries = notify.NewDeliveryLog(0)
	d.queue = notify.NewQueue(notify.Options{Log: d.deliveries, Outbox: d.records.outbox(), Owner: opts.Identity},
		notifiers, logger.Named("notify"), reg)
	d.records.alarm = d.queue.Enqueue

	if cfg.Global.LeaderElection.Enabled {
		le := cfg.Global.LeaderElection
		d.elect, err = leader.New(electClient, leader.Options{
			Namespace: le.Namespace, Name: le.LeaseName, Identity: opts.Identity,
			LeaseDuration: time.Duration(le.LeaseDuration), RenewDeadline: time.Duration(le.RenewDeadline), RetryPeriod: time.Duration(le.RetryPeriod),
		}, logger.Named("leader"), reg)
		if err != nil {
			d.close()
			return nil, err
		}
	}
	d.guard = guard.New(guardOptions(cfg))
	d.exec = rollback.NewExecutor(d.kube, d.client.CoreV1(), rollback.Options{Journaled: crashAt(opts.CrashAt, logger)}, logger.Named("rollback"))
	// The evaluator hands decisions to the responder, and the responder
	// asks the evaluator what fires when it becomes leader.
	triggers := &lateTriggers{}
	d.resp = response.New(d.exec, d.kube, d.queue, d.guard, response.Options{
		WouldRollback: cfg.Global.Notify.WouldRollback != "off", StatusURL: cfg.Global.Notify.StatusURL,
		Integrity: d.integrity, Triggers: triggers, Alerts: d.records.alerts,
		// The drain must end before the shutdown stops waiting for it.
		DrainTimeout: opts.ShutdownTimeout * 3 / 4,
	}, logger.Named("response"), reg)
	d.watch = gitops.NewWatcher(d.gitops, d.kube, d.queue, gitops.WatchOptions{Interval: time.Duration(cfg.Global.Interval), IsLeader: d.isLeader},
		logger.Named("gitops"), reg)
	d.eval = evaluator.New(evaluator.Options{
		Interval: time.Duration(cfg.Global.Interval), Parallelism: cfg.Global.QueryParallelism,
		QueryTimeout: queryTimeout(cfg),
	}, d.src.queriers(), d.resp, logger.Named("evaluator"), reg)
	triggers.Triggers = d.eval
	if err := d.apply(cfg); err != nil {
		d.close()
		return nil, err
	}
	return d, nil
}

// newRegistry is the registry /metrics serves, with the Go runtime's and
// the process's collectors under their standard names.
func newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// metricsPrefix starts the name of every metric of rollguard's own. It is
// added here, once, where the registry is built: the packages declare
// their metrics without it, so the prefix is written in one place.
const metricsPrefix = "rollguard_"

// metricsRegisterer is what every component registers rollguard's own
// metrics on: reg, with metricsPrefix added to every name.
func metricsRegisterer(reg prometheus.Registerer) prometheus.Registerer {
	return prometheus.WrapRegistererWithPrefix(metricsPrefix, reg)
}

// registerBuildAndReload registers the build info and the gauges of the
// last config load.
func registerBuildAndReload(reg prometheus.Registerer) (ok, ts prometheus.Gauge) {
	v := version.Get()
	info := prometheus.NewGauge(prometheus.GaugeOpts{Name: "build_info", Help: "Build information.",
		ConstLabels: prometheus.Labels{"version": v.Version, "revision": v.Revision, "goversion": v.GoVersion}})
	info.Set(1)
	ok = prometheus.NewGauge(prometheus.GaugeOpts{Name: "config_last_reload_successful", Help: "1 when the last config (re)load succeeded."})
	ts = prometheus.NewGauge(prometheus.GaugeOpts{Name: "config_last_reload_success_timestamp_seconds", Help: "Time of the last successful config load."})
	reg.MustRegister(info, ok, ts)
	return ok, ts
}

func queryTimeout(cfg *config.Config) time.Duration {
	t := time.Duration(cfg.Global.Prometheus.Timeout)
	if iv := time.Duration(cfg.Global.Interval); t <= 0 || t > iv {
		// A query may not outlive its tick, or one slow source would stall
		// the next evaluation.
		t = iv
	}
	return t
}

func guardOptions(cfg *config.Config) guard.Options {
	il := cfg.Global.Interlocks
	return guard.Options{Cooldown: time.Duration(il.Cooldown), MaxRollbacksPerHour: il.MaxRollbacksPerHour,
		MaxRevisionAge: time.Duration(il.MaxRevisionAge), Freeze: il.Freeze, MaxResumeAge: time.Duration(il.MaxResumeAge)}
}

// lateTriggers lets the responder be built before the evaluator it asks.
type lateTriggers struct{ response.Triggers }

// apply installs a config's hot-reloadable parts: triggers (keeping the
// windows of unchanged ones), targets, interlocks. It fails without
// changing anything when the evaluator rejects the triggers.
func (d *daemon) apply(cfg *config.Config) error {
	if err := d.eval.SetTriggers(rules.Specs(cfg)); err != nil {
		return fmt.Errorf("triggers: %w", err)
	}
	d.resp.SetTargets(responderTargets(cfg, d.dbs, &verifier{d: d}, d.gitops))
	d.watch.SetTargets(watchTargets(cfg))
	d.guard.SetOptions(guardOptions(cfg))
	toks := apiTokens(cfg)
	d.tokens.Store(&toks)
	sum := sha256.Sum256([]byte(cfg.String()))
	d.mu.Lock()
	d.cfg, d.cfgHash, d.loadedAt = cfg, hex.EncodeToString(sum[:6]), time.Now()
	d.mu.Unlock()
	d.reloadOK.Set(1)
	d.reloadTS.SetToCurrentTime()
	return nil
}

func (d *daemon) config() *config.Config {
	d.mu.RLock()
	defer d.mu.RUnlock()
	return d.cfg
}

// integrity runs the runbook's data integrity check on the database of the
// target's rollback; a target without one is not checked.
func (d *daemon) integrity(ctx context.Context, ns, name string) (*notify.DataIntegrity, error) {
	for _, t := range d.config().Targets {
		if t.Namespace != ns || t.Deployment != name || t.Rollback.Database == nil {
			continue
		}
		db := d.dbs[t.Rollback.Database.Name]
		if db == nil {
			return nil, nil
		}
		in, err := db.Integrity(ctx)
		if errors.Is(err, database.ErrNoIntegrityTables) {
			return nil, nil
		}
		if err != nil {
			return nil, err
		}
		return &notify.DataIntegrity{AlertDeliveryQueue: in.AlertDeliveryQueue, UnresolvedConflicts: in.UnresolvedConflicts,
			LatestSchemaVersions: in.LatestSchemaVersions}, nil
	}
	return nil, nil
}

func (d *daemon) isLeader() bool { return d.elect == nil || d.elect.IsLeader() }

func (d *daemon) close() {
	if d.src != nil {
		d.src.close()
	}
	for _, db := range d.dbs {
		db.Close()
	}
}

// run serves until ctx is done or the lease is lost. Shutdown order: stop
// acting (responder, leader work), then evaluating, then notifying (the
// queue drains what it can), then the HTTP server.
func (d *daemon) run(ctx context.Context) error {
	cfg := d.config()
	ln, err := net.Listen("tcp", cfg.Global.ListenAddress)
	if err != nil {
		return fmt.Errorf("listen on %s (global.listenAddress): %w", cfg.Global.ListenAddress, err)
	}
	apiOpts := api.Options{TokenFunc: d.apiTokens, Gatherer: d.reg, Incidents: d.records.handler(d.log.Named("incident")),
		Console: d.newConsole(cfg), GitOps: &controller{d: d}}
	if d.elect != nil {
		// Followers hand mutating requests to the leader, found at the
		// address it publishes on the Lease.
		d.elect.Advertise(advertiseURL(ln.Addr()))
		apiOpts.Leadership = leadership{d: d}
	}
	srv := &http.Server{
		Handler:           api.NewHandler(&controller{d: d}, apiOpts, d.log.Named("api")),
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       30 * time.Second,
		WriteTimeout:      2 * time.Minute,
	}
	d.log.Info("rollguard started", zap.String("version", version.Get().Version), zap.String("listen", ln.Addr().String()),
		zap.Int("targets", len(cfg.Targets)), zap.Bool("dryRun", cfg.Global.DryRun), zap.Bool("leaderElection", d.elect != nil))

	d.rebuildWindows(ctx)

	runCtx, cancel := context.WithCancel(ctx)
	defer cancel()
	var wg sync.WaitGroup
	goFn := func(f func()) { wg.Add(1); go func() { defer wg.Done(); f() }() }

	queueCtx, stopQueue := context.WithCancel(context.Background())
	queueDone := make(chan struct{})
	go func() { defer close(queueDone); d.queue.Run(queueCtx) }()

	serveErr := make(chan error, 1)
	go func() {
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			serveErr <- err
		}
	}()
	goFn(func() { _ = d.eval.Run(runCtx) })
	goFn(func() { d.resp.Run(runCtx) })
	goFn(func() { d.watchReload(runCtx) })
	goFn(func() { d.watch.Run(runCtx) })

	// Each leadership term is one call of Lead, which returns only once
	// its plans have stopped (at a step boundary, or cancelled after the
	// drain timeout): the elector releases the lease after that.
	leaderErr := make(chan error, 1)
	if d.elect != nil {
		goFn(func() { leaderErr <- d.elect.Run(runCtx, d.term) })
	} else {
		goFn(func() { d.term(runCtx) })
	}

	var result error
	select {
	case <-ctx.Done():
		d.log.Info("shutting down")
	case err := <-serveErr:
		result = fmt.Errorf("http server: %w", err)
	case err := <-leaderErr:
		if errors.Is(err, leader.ErrLost) {
			d.log.Error("leader lease lost: exiting so a fresh process rejoins the election", zap.Error(err))
			result = err
		}
	}
	cancel()
	done := make(chan struct{})
	go func() { wg.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(d.opts.ShutdownTimeout):
		d.log.Error("shutdown timed out; some work did not stop", zap.Duration("timeout", d.opts.ShutdownTimeout))
	}
	stopQueue()
	<-queueDone
	sctx, scancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer scancel()
	_ = srv.Shutdown(sctx)
	return result
}

// rebuildWindows refills Prometheus triggers' windows from query_range
// over their last window, so a restart or failover does not add a whole
// window to detection time. PostgreSQL has no history: those triggers
// start empty (logged).
func (d *daemon) rebuildWindows(ctx context.Context) {
	cfg := d.config()
	if d.src.prom == nil {
		return
	}
	ctx, cancel := context.WithTimeout(ctx, 15*time.Second)
	defer cancel()
	interval := time.Duration(cfg.Global.Interval)
	// Prometheus stamps points in milliseconds: so are the instants the
	// window is rebuilt at.
	now := time.Now().Truncate(time.Millisecond)
	cache := map[string][]rangeResult{}
	seeded, empty := 0, 0
	for _, s := range rules.Specs(cfg) {
		if s.Backend != rules.BackendPrometheus {
			empty++
			continue
		}
		start := now.Add(-s.Rule.For - interval)
		get := func(q string) rangeResult {
			for _, r := range cache[q] {
				if r.start.Equal(start) {
					return r
				}
			}
			rs, err := d.src.prom.QueryRange(ctx, q, start, now, interval)
			r := rangeResult{start: start, ranges: rs, err: err}
			cache[q] = append(cache[q], r)
			return r
		}
		main := get(s.Query)
		if main.err != nil {
			d.log.Warn("window rebuild failed; the trigger starts empty", zap.String("trigger", s.ID), zap.Error(main.err))
			continue
		}
		// Every evaluation instant is replayed, with or without a point:
		// a step Prometheus has no value for is the empty result live
		// evaluation saw there (no series matched, several did, NaN), and
		// it resets the run; a volume that cannot be read is unknown.
		pts, _ := evaluator.SelectRange(main.ranges, s.Match)
		var vpts []source.Point
		if s.VolumeQuery != "" {
			if vol := get(s.VolumeQuery); vol.err == nil {
				vpts, _ = evaluator.SelectRange(vol.ranges, s.Match)
			}
		}
		var at []time.Time
		for t := start; !t.After(now); t = t.Add(interval) {
			at = append(at, t)
		}
		if err := d.eval.SeedRange(s.ID, at, pts, vpts); err == nil {
			seeded++
		}
	}
	d.log.Info("windows rebuilt from Prometheus history", zap.Int("seeded", seeded), zap.Int("postgresStartEmpty", empty))
}

type rangeResult struct {
	start  time.Time
	ranges []source.Range
	err    error
}

// reload loads the config file again; an invalid one is rejected with its
// errors logged and the old one keeps running.
func (d *daemon) reload(_ context.Context) error {
	cfg, err := loadConfig(d.opts.ConfigFile)
	var rotated []string
	if err == nil {
		rotated = rotatedSecrets(d.config(), cfg)
		err = d.checkRestartOnly(cfg)
	}
	if err == nil {
		err = d.apply(cfg)
	}
	if err != nil {
		d.reloadOK.Set(0)
		result := reloadInvalid
		var rr *restartRequiredError
		if errors.As(err, &rr) {
			result = reloadRestartRequired
		}
		d.reloads.record(result)
		d.log.Error("config reload rejected; keeping the running config", zap.String("file", d.opts.ConfigFile),
			zap.String("result", result), zap.Strings("secretsRotated", rotated), zap.Error(err))
		return err
	}
	d.reloads.record(reloadApplied)
	d.log.Info("config reloaded", zap.String("file", d.opts.ConfigFile), zap.String("hash", d.cfgHash),
		zap.Strings("secretsRotated", rotated))
	logWarnings(d.log, cfg)
	return nil
}

// apiTokens are the API's bearer tokens now.
func (d *daemon) apiTokens() []api.Token {
	if p := d.tokens.Load(); p != nil {
		return *p
	}
	return nil
}

// apiTokens are cfg's bearer tokens: the unnamed one (empty Name) and the
// named ones of global.api.tokenFile.
func apiTokens(cfg *config.Config) []api.Token {
	var toks []api.Token
	if cfg.Global.API.Token != "" {
		toks = append(toks, api.Token{Secret: []byte(cfg.Global.API.Token)})
	}
	for _, t := range cfg.Global.API.Tokens {
		toks = append(toks, api.Token{Name: t.Name, Secret: []byte(t.Token)})
	}
	return toks
}

// logWarnings logs what validation found legal but probably unintended.
func logWarnings(log *zap.Logger, cfg *config.Config) {
	for _, w := range cfg.Warnings() {
		log.Warn("config warning", zap.String("path", w.Path), zap.String("warning", w.Msg))
	}
}

// checkRestartOnly refuses a reload that changes what is built once at
// start (connections, listeners, the lease): those need a restart, and a
// half-applied config would be worse than the old one.
func (d *daemon) checkRestartOnly(next *config.Config) error {
	cur := d.config().Global
	n := next.Global
	var changed []string
	// DeepEqual: the HTTP client settings hold pointers and maps. Rotated
	// credential and certificate files need no reload: prometheus/common
	// reads them on use.
	if !reflect.DeepEqual(cur.Prometheus, n.Prometheus) {
		changed = append(changed, "global.prometheus")
	}
	// DeepEqual compares the DSNs themselves: printed, a Secret is
	// "<secret>" and a rotated DSN looked unchanged.
	if !reflect.DeepEqual(cur.Databases, n.Databases) {
		changed = append(changed, "global.databases")
	}
	if cur.ListenAddress != n.ListenAddress {
		changed = append(changed, "global.listenAddress")
	}
	if cur.LeaderElection != n.LeaderElection {
		changed = append(changed, "global.leaderElection")
	}
	if cur.Kubernetes != n.Kubernetes {
		changed = append(changed, "global.kubernetes")
	}
	if !reflect.DeepEqual(cur.Notify, n.Notify) {
		changed = append(changed, "global.notify")
	}
	if cur.Interval != n.Interval {
		changed = append(changed, "global.interval")
	}
	if len(changed) > 0 {
		return &restartRequiredError{changed: changed, rotated: restartOnlySecrets(rotatedSecrets(d.config(), next))}
	}
	return nil
}

// watchReload reloads on SIGHUP and when the file's content changes.
func (d *daemon) watchReload(ctx context.Context) {
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	last, _ := d.watchedHash()
	t := time.NewTicker(d.opts.ReloadInterval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-hup:
			d.log.Info("SIGHUP: reloading config")
			_ = d.reload(ctx)
			last, _ = d.watchedHash()
		case <-t.C:
			h, err := d.watchedHash()
			if err != nil || h == last {
				continue
			}
			last = h
			d.log.Info("config file or a secret file changed: reloading")
			_ = d.reload(ctx)
		}
	}
}
