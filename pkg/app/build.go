package app

import (
	"context"
	"errors"
	"fmt"
	"time"

	"go.uber.org/zap"
	"k8s.io/apimachinery/pkg/util/intstr"
	"k8s.io/client-go/dynamic"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/database"
	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/kube"
	"github.com/rollguard/rollguard/pkg/response"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/source/postgres"
	"github.com/rollguard/rollguard/pkg/source/prometheus"
)

// ErrUsage marks bad input from the command line (an unknown target, an
// unknown action): the CLI exits 2.
var ErrUsage = errors.New("usage")

// loadConfig reads, validates and resolves a config file: the daemon never
// starts on a config whose secrets cannot be read.
func loadConfig(path string) (*config.Config, error) {
	cfg, err := config.LoadFile(path)
	if err != nil {
		return nil, err
	}
	if err := cfg.ResolveSecrets(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return cfg, nil
}

// kubeClient builds the clientset the way kubectl finds a cluster: the
// command line's --kubeconfig and --context, else the config's
// global.kubernetes, else $KUBECONFIG, ~/.kube/config or in-cluster.
func kubeClient(cfg *config.Config, opts Options) (kubernetes.Interface, *rest.Config, error) {
	rc, err := kube.RESTConfig(KubeClientOptions(cfg, opts.Kubeconfig, opts.KubeContext))
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client config: %w", err)
	}
	rc.UserAgent = "rollguard"
	rc.QPS, rc.Burst = 20, 40
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, rc, nil
}

// clientWithLimits is another clientset on rc with its own rate limiter.
func clientWithLimits(rc *rest.Config, qps float32, burst int) (kubernetes.Interface, error) {
	c := rest.CopyConfig(rc)
	c.QPS, c.Burst = qps, burst
	cs, err := kubernetes.NewForConfig(c)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	return cs, nil
}

// KubeClientOptions merges the command line's --kubeconfig and --context
// (when set) over the config's global.kubernetes.
func KubeClientOptions(cfg *config.Config, kubeconfig, kubeContext string) kube.ClientOptions {
	return kube.ClientOptions{
		Kubeconfig: cfg.Global.Kubernetes.Kubeconfig, KubeconfigFrom: "global.kubernetes.kubeconfig",
		Context: cfg.Global.Kubernetes.Context, ContextFrom: "global.kubernetes.context",
	}.Overlay(kubeconfig, kubeContext)
}

// sources are the metric backends, by evaluator backend name.
type sources struct {
	prom *prometheus.Source
	pg   map[string]*postgres.Source
}

func (s *sources) queriers() map[string]evaluator.Querier {
	q := map[string]evaluator.Querier{}
	if s.prom != nil {
		q[rules.BackendPrometheus] = s.prom
	}
	for name, src := range s.pg {
		q[rules.BackendPostgres(name)] = src
	}
	return q
}

func (s *sources) close() {
	for _, p := range s.pg {
		p.Close()
	}
}

func buildSources(cfg *config.Config, logger *zap.Logger) (*sources, error) {
	s := &sources{pg: map[string]*postgres.Source{}}
	if cfg.Global.Prometheus.URL != "" {
		p, err := prometheus.New(prometheus.Options{URL: cfg.Global.Prometheus.URL, Timeout: time.Duration(cfg.Global.Prometheus.Timeout), HTTPConfig: &cfg.Global.Prometheus.HTTPConfig}, logger.Named("prometheus"))
		if err != nil {
			return nil, fmt.Errorf("prometheus source: %w", err)
		}
		s.prom = p
	}
	for _, db := range cfg.Global.Databases {
		p, err := postgres.New(postgres.Options{
			Name: db.Name, DSN: string(db.DSN), MaxConns: int32(db.MaxConns),
			ConnectTimeout: time.Duration(db.ConnectTimeout), StatementTimeout: time.Duration(db.StatementTimeout),
		}, logger.Named("postgres").With(zap.String("database", db.Name)))
		if err != nil {
			s.close()
			return nil, fmt.Errorf("postgres source %q: %w", db.Name, err)
		}
		s.pg[db.Name] = p
	}
	return s, nil
}

// databases opens the rollback's database handles (lazily connecting).
func openDatabases(ctx context.Context, cfg *config.Config, logger *zap.Logger) (map[string]*database.DB, error) {
	dbs := map[string]*database.DB{}
	for _, d := range cfg.Global.Databases {
		db, err := database.Open(ctx, database.Options{
			Name: d.Name, DSN: string(d.DSN), BinDir: d.BinDir, MaxConns: int32(d.MaxConns),
			Timeout: time.Duration(d.StatementTimeout),
		}, logger.Named("database")) // database.Open adds the database field
		if err != nil {
			for _, o := range dbs {
				o.Close()
			}
			return nil, fmt.Errorf("database %q: %w", d.Name, err)
		}
		dbs[d.Name] = db
	}
	return dbs, nil
}

// rollbackTarget maps a configured target to the executor's settings.
func rollbackTarget(t *config.Target, dbs map[string]*database.DB, v rollback.Verifier) rollback.Target {
	rb := t.Rollback
	out := rollback.Target{
		Namespace: t.Namespace, Deployment: t.Deployment, Containers: t.Containers, HealthURL: t.HealthURL,
		Strategy: rb.Plan(), StableImage: rb.StableImage,
		RampPause: time.Duration(rb.RampPause), RolloutTimeout: time.Duration(rb.RolloutTimeout),
		VerifyWindow: time.Duration(rb.VerifyWindow), Verifier: v,
	}
	if rb.RevertMaxSurge != "" {
		// Validated by pkg/config: a count or a percentage.
		v := intstr.Parse(rb.RevertMaxSurge)
		out.RevertMaxSurge = &v
	}
	if rb.RampSteps != nil {
		out.RampSteps = make([]int32, 0, len(rb.RampSteps))
		for _, n := range rb.RampSteps {
			out.RampSteps = append(out.RampSteps, int32(n))
		}
	}
	if d := rb.Database; d != nil {
		if db := dbs[d.Name]; db != nil {
			out.Database = &rollback.DatabaseSettings{DB: db, Migration: d.Migration, PreDeployDump: d.DumpPath,
				ForensicDir: d.ForensicDir, Tables: d.VerifyTables}
		}
	}
	pr := rb.PoolRecovery
	out.PoolRecovery = rollback.PoolRecoverySettings{Role: pr.Role, ApplicationName: pr.ApplicationName, OlderThan: time.Duration(pr.IdleInTransactionAge)}
	if out.Database == nil && pr.Database != "" && dbs[pr.Database] != nil {
		// Pool recovery needs only a connection, not the dump settings.
		out.Database = &rollback.DatabaseSettings{DB: dbs[pr.Database]}
	}
	if mr := rb.MultiRegion; mr != nil {
		m := &rollback.MultiRegionSettings{MaxLag: time.Duration(mr.MaxLag), LagTimeout: time.Duration(mr.Timeout)}
		for _, name := range mr.Secondaries {
			if db := dbs[name]; db != nil {
				m.Secondaries = append(m.Secondaries, rollback.Secondary{Name: name, DB: db, Subscription: mr.Subscription})
			}
		}
		out.MultiRegion = m
	}
	return out
}

// gitopsManager reads and suspends the GitOps owners of targets through
// the dynamic client.
func gitopsManager(rc *rest.Config, logger *zap.Logger) (*gitops.Manager, error) {
	dc, err := dynamic.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes dynamic client: %w", err)
	}
	return gitops.NewManager(dc, gitops.Options{}, logger.Named("gitops")), nil
}

// gitopsPolicy is a target's GitOps policy for the executor.
func gitopsPolicy(t *config.Target, owners rollback.GitOpsOwners) rollback.GitOpsPolicy {
	return rollback.GitOpsPolicy{Mode: t.GitOps.Mode, ArgoNamespace: t.GitOps.ArgoCDNamespace, Target: t.Name, Owners: owners}
}

// watchTargets maps the config's targets with gitops.mode suspend for the
// GitOps watcher: only they can hold a suspension to show and lift, and
// reading every target's Deployment each interval would spend the client's
// rate limit (shared with rollbacks) on a fleet of thousands.
func watchTargets(cfg *config.Config) []gitops.WatchTarget {
	var out []gitops.WatchTarget
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		if t.GitOps.Mode != config.GitOpsSuspend {
			continue
		}
		out = append(out, gitops.WatchTarget{Name: t.Name, Namespace: t.Namespace, Deployment: t.Deployment,
			Mode: t.GitOps.Mode, ArgoNamespace: t.GitOps.ArgoCDNamespace})
	}
	return out
}

// responderTargets maps the config's targets for the responder.
func responderTargets(cfg *config.Config, dbs map[string]*database.DB, v rollback.Verifier, owners rollback.GitOpsOwners) []response.Target {
	out := make([]response.Target, 0, len(cfg.Targets))
	for i := range cfg.Targets {
		t := &cfg.Targets[i]
		dry := cfg.Global.DryRun
		if t.DryRun != nil {
			dry = dry || *t.DryRun
		}
		rt := rollbackTarget(t, dbs, v)
		rt.GitOps = gitopsPolicy(t, owners)
		out = append(out, response.Target{
			Name: t.Name, Rollback: rt, DryRun: dry, Frozen: t.Freeze,
			Severity:      t.Notify.Severity,
			RestartMemory: time.Duration(cfg.Global.Interlocks.Cooldown),
		})
	}
	return out
}

func findTarget(ts []config.Target, name string) (*config.Target, bool) {
	for i := range ts {
		if ts[i].Name == name {
			return &ts[i], true
		}
	}
	return nil, false
}
