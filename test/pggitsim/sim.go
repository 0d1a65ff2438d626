package pggitsim

import (
	"context"
	"errors"
	"fmt"
	"math"
	"sort"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
)

// Defaults of Options.
const (
	DefaultTick           = 100 * time.Millisecond
	DefaultRequestsPerPod = 10
	DefaultSyncTimeout    = 30 * time.Second
	// maxStep bounds the traffic one step may add, so a process that was
	// stopped for a while does not emit a burst of an hour's requests.
	maxStep = time.Minute
	// eps absorbs float error in the fractional accumulators: 400 × 0.2
	// must give exactly 80 errors.
	eps = 1e-9
)

// Buckets of http_request_duration_seconds: .005 .. 10 with 5 and 10, so
// a P99 above the runbook's 5 s threshold is visible.
func durationBuckets() []float64 {
	return []float64{.005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10}
}

// Options configures a Simulator. Zero values take the defaults.
type Options struct {
	// Profiles by image tag; nil means DefaultProfiles().
	Profiles map[string]Profile
	// Tick is the traffic loop period.
	Tick time.Duration
	// RequestsPerPod is the request rate of one Ready Pod, per second.
	RequestsPerPod int
	// PGDSN is the application role's DSN for the /control/pg endpoints;
	// empty disables them.
	PGDSN string
	// SyncTimeout bounds the wait for the first list of Deployments and Pods.
	SyncTimeout time.Duration
	// NewTicker makes the loop's ticker; tests inject a channel. The
	// returned func stops it.
	NewTicker func(time.Duration) (<-chan time.Time, func())
}

// accum holds the fractional parts carried from step to step, so counts
// are exact over time instead of random.
type accum struct {
	reqNanos int64   // request·nanoseconds not yet a whole request
	errs     float64 // fraction of an error request not yet emitted
	slow     float64 // fraction of a slow request not yet emitted
}

// Simulator serves the pggit-api traffic of the Ready Pods it watches.
type Simulator struct {
	logger   *zap.Logger
	opts     Options
	cluster  *cluster
	profiles *profiles
	pg       *pgControl

	registry *prometheus.Registry
	requests *prometheus.CounterVec
	duration *prometheus.HistogramVec
	ready    *prometheus.GaugeVec

	mu    sync.Mutex
	last  time.Time
	acc   map[Key]*accum
	known map[Key]bool // keys that ever had Ready Pods, to zero the gauge
}

// New builds a Simulator on a clientset (the fake one works). Its metrics
// live in its own registry.
func New(cs kubernetes.Interface, opts Options, logger *zap.Logger) *Simulator {
	if logger == nil {
		logger = zap.NewNop()
	}
	if opts.Tick <= 0 {
		opts.Tick = DefaultTick
	}
	if opts.RequestsPerPod <= 0 {
		opts.RequestsPerPod = DefaultRequestsPerPod
	}
	if opts.SyncTimeout <= 0 {
		opts.SyncTimeout = DefaultSyncTimeout
	}
	if opts.NewTicker == nil {
		opts.NewTicker = func(d time.Duration) (<-chan time.Time, func()) {
			t := time.NewTicker(d)
			return t.C, t.Stop
		}
	}
	labels := []string{"namespace", "deployment", "version"}
	s := &Simulator{
		logger:   logger,
		opts:     opts,
		cluster:  newCluster(cs, logger),
		profiles: newProfiles(opts.Profiles),
		pg:       newPGControl(opts.PGDSN, logger),
		registry: prometheus.NewRegistry(),
		requests: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "http_requests_total",
			Help: "Requests served by the simulated pggit-api, by status code.",
		}, append(labels, "status")),
		duration: prometheus.NewHistogramVec(prometheus.HistogramOpts{
			Name:    "http_request_duration_seconds",
			Help:    "Latency of the requests served by the simulated pggit-api.",
			Buckets: durationBuckets(),
		}, labels),
		ready: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "pggitsim_ready_pods",
			Help: "Ready Pods the simulator counts, by image tag.",
		}, labels),
		acc:   map[Key]*accum{},
		known: map[Key]bool{},
	}
	s.registry.MustRegister(s.requests, s.duration, s.ready)
	return s
}

// Registry is the simulator's own metrics registry.
func (s *Simulator) Registry() *prometheus.Registry { return s.registry }

// Start runs the informers until ctx ends and waits for their first sync.
func (s *Simulator) Start(ctx context.Context) error {
	return s.cluster.start(ctx, s.opts.SyncTimeout)
}

// Run starts the informers and drives the traffic loop until ctx ends;
// then it releases held PostgreSQL connections.
func (s *Simulator) Run(ctx context.Context) error {
	if err := s.Start(ctx); err != nil {
		return err
	}
	defer s.cluster.shutdown()
	defer s.pg.close()
	ticks, stop := s.opts.NewTicker(s.opts.Tick)
	defer stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case now := <-ticks:
			if err := s.Step(now); err != nil {
				s.logger.Warn("traffic step failed", zap.Error(err))
			}
		}
	}
}

// Step adds the traffic of the Ready Pods for the time since the previous
// step. The first step only sets the starting time.
func (s *Simulator) Step(now time.Time) error {
	counts, err := s.cluster.readyPods()
	if err != nil {
		return err
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for k := range s.known {
		if counts[k] > 0 {
			continue
		}
		if s.cluster.deploymentExists(k.Namespace, k.Deployment) {
			s.ready.WithLabelValues(k.Namespace, k.Deployment, k.Version).Set(0)
			continue
		}
		// The Deployment is gone (tests delete their namespaces): drop its
		// series, as a restarted process would, so memory and /metrics do
		// not grow with every test run against the sandbox.
		s.forget(k)
	}
	for k, n := range counts {
		if !s.known[k] {
			s.known[k] = true
			// Both status series exist from the first Ready Pod on, so an
			// error ratio of a healthy version reads 0, not "no data".
			s.requests.WithLabelValues(k.Namespace, k.Deployment, k.Version, "200")
			s.requests.WithLabelValues(k.Namespace, k.Deployment, k.Version, "500")
			s.duration.WithLabelValues(k.Namespace, k.Deployment, k.Version)
			s.logger.Info("version has ready pods", zap.String("namespace", k.Namespace),
				zap.String("deployment", k.Deployment), zap.String("version", k.Version), zap.Int("ready", n))
		}
		s.ready.WithLabelValues(k.Namespace, k.Deployment, k.Version).Set(float64(n))
	}
	if s.last.IsZero() {
		s.last = now
		return nil
	}
	elapsed := now.Sub(s.last)
	if elapsed <= 0 {
		return nil
	}
	s.last = now
	elapsed = min(elapsed, maxStep)
	for k, n := range counts {
		s.serve(k, n, elapsed)
	}
	s.logger.Debug("traffic step", zap.Duration("elapsed", elapsed), zap.Int("versions", len(counts)))
	return nil
}

func (s *Simulator) forget(k Key) {
	l := prometheus.Labels{"namespace": k.Namespace, "deployment": k.Deployment, "version": k.Version}
	s.requests.DeletePartialMatch(l)
	s.duration.Delete(l)
	s.ready.Delete(l)
	delete(s.known, k)
	delete(s.acc, k)
	s.logger.Info("deployment gone, series dropped", zap.String("namespace", k.Namespace),
		zap.String("deployment", k.Deployment), zap.String("version", k.Version))
}

// serve emits the requests of ready Pods of one version over elapsed.
func (s *Simulator) serve(k Key, ready int, elapsed time.Duration) {
	a := s.acc[k]
	if a == nil {
		a = &accum{}
		s.acc[k] = a
	}
	a.reqNanos += int64(ready) * int64(s.opts.RequestsPerPod) * elapsed.Nanoseconds()
	n := a.reqNanos / int64(time.Second)
	a.reqNanos %= int64(time.Second)
	if n == 0 {
		return
	}
	p := s.profiles.get(k.Version)
	errs := take(&a.errs, float64(n)*p.ErrorRate, n)
	slow := take(&a.slow, float64(n)*p.SlowFraction, n)

	s.requests.WithLabelValues(k.Namespace, k.Deployment, k.Version, "500").Add(float64(errs))
	s.requests.WithLabelValues(k.Namespace, k.Deployment, k.Version, "200").Add(float64(n - errs))
	h := s.duration.WithLabelValues(k.Namespace, k.Deployment, k.Version)
	for i := int64(0); i < n-slow; i++ {
		h.Observe(p.LatencySeconds)
	}
	for i := int64(0); i < slow; i++ {
		h.Observe(p.SlowSeconds)
	}
}

// take adds add to the accumulator and removes the whole part, at most limit.
func take(acc *float64, add float64, limit int64) int64 {
	*acc += add
	whole := min(int64(math.Floor(*acc+eps)), limit)
	if whole < 0 {
		whole = 0
	}
	*acc -= float64(whole)
	if *acc < 0 {
		*acc = 0
	}
	return whole
}

// Version is the ready Pods of one version of a Deployment.
type Version struct {
	Key
	Ready   int  `json:"ready"`
	Healthy bool `json:"healthy"`
}

// Health is the answer of /health.
type Health struct {
	Status    string         `json:"status"`
	Version   string         `json:"version,omitempty"`
	ReadyPods map[string]int `json:"readyPods,omitempty"`
	Reason    string         `json:"reason,omitempty"`
}

// ErrUnhealthy is why /health answers 503.
var ErrUnhealthy = errors.New("unhealthy")

// Health reports on ns/name: ok when at least one Ready Pod runs a healthy
// version (the one with most Ready Pods is named), an error otherwise.
func (s *Simulator) Health(ns, name string) (Health, error) {
	counts, err := s.cluster.readyPods()
	if err != nil {
		return Health{Status: "unavailable", Reason: err.Error()}, err
	}
	if !s.cluster.deploymentExists(ns, name) {
		h := Health{Status: "unavailable", Reason: "deployment not found or not simulated"}
		return h, fmt.Errorf("deployment %s/%s: %w: not found", ns, name, ErrUnhealthy)
	}
	byVersion := map[string]int{}
	for k, n := range counts {
		if k.Namespace == ns && k.Deployment == name {
			byVersion[k.Version] = n
		}
	}
	if len(byVersion) == 0 {
		h := Health{Status: "unavailable", Reason: "no ready pods"}
		return h, fmt.Errorf("deployment %s/%s: %w: no ready pods", ns, name, ErrUnhealthy)
	}
	versions := sortedVersions(byVersion)
	for _, v := range versions {
		if s.profiles.get(v).Healthy() {
			return Health{Status: "ok", Version: v, ReadyPods: byVersion}, nil
		}
	}
	h := Health{Status: "unavailable", Version: versions[0], ReadyPods: byVersion,
		Reason: "no ready pod runs a healthy version"}
	return h, fmt.Errorf("deployment %s/%s: %w: version %s", ns, name, ErrUnhealthy, versions[0])
}

// Versions lists the Ready Pods of every simulated Deployment by version.
func (s *Simulator) Versions() ([]Version, error) {
	counts, err := s.cluster.readyPods()
	if err != nil {
		return nil, err
	}
	out := make([]Version, 0, len(counts))
	for k, n := range counts {
		out = append(out, Version{Key: k, Ready: n, Healthy: s.profiles.get(k.Version).Healthy()})
	}
	sortVersions(out)
	return out, nil
}

// Profiles returns the current profile table.
func (s *Simulator) Profiles() map[string]Profile { return s.profiles.all() }

// SetProfile changes the profile of tag from the next step on.
func (s *Simulator) SetProfile(tag string, p Profile) error {
	if err := s.profiles.set(tag, p); err != nil {
		return fmt.Errorf("profile %s: %w", tag, err)
	}
	s.logger.Info("profile changed", zap.String("version", tag), zap.Float64("errorRate", p.ErrorRate),
		zap.Float64("latencySeconds", p.LatencySeconds), zap.Float64("slowFraction", p.SlowFraction),
		zap.Float64("slowSeconds", p.SlowSeconds))
	return nil
}

// ResetProfile puts tag back to its configured profile.
func (s *Simulator) ResetProfile(tag string) {
	s.profiles.reset(tag)
	s.logger.Info("profile reset", zap.String("version", tag))
}

func sortVersions(vs []Version) {
	sort.Slice(vs, func(i, j int) bool {
		a, b := vs[i].Key, vs[j].Key
		if a.Namespace != b.Namespace {
			return a.Namespace < b.Namespace
		}
		if a.Deployment != b.Deployment {
			return a.Deployment < b.Deployment
		}
		return a.Version < b.Version
	})
}
