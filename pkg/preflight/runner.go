package preflight

import (
	"context"
	"fmt"
	"net/http"
	"strings"
	"time"

	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/rollguard/rollguard/pkg/backup"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/database"
	"github.com/rollguard/rollguard/pkg/kube"
)

// runner holds what the checks share: the config, the target, the clients
// opened on demand (and closed at the end).
type runner struct {
	opts       Options
	cfg        *config.Config
	t          *config.Target
	secretErrs []*config.Error
	nextImages map[string]string
	migrations []string
	now        func() time.Time
	logger     *zap.Logger
	httpClient *http.Client

	dbs       map[string]*database.DB
	dbErrs    map[string]error
	pgSources map[string]querier
	prom      querier
	closers   []func()
}

func newRunner(opts Options) (*runner, error) {
	cfg, secretErrs, err := loadConfig(opts)
	if err != nil {
		return nil, err
	}
	t, err := backup.FindTarget(cfg, opts.Target)
	if err != nil {
		return nil, err
	}
	next, err := parseNextImages(opts.NextImage)
	if err != nil {
		return nil, err
	}
	var migrations []string
	seen := map[string]bool{}
	for _, m := range opts.RequireMigrations {
		m = strings.TrimSpace(m)
		if m == "" {
			return nil, fmt.Errorf("%w: --require-migration: empty name", ErrUsage)
		}
		if !seen[m] {
			seen[m] = true
			migrations = append(migrations, m)
		}
	}
	if db := t.Rollback.Database; db != nil && db.Migration != "" && !seen[db.Migration] {
		migrations = append(migrations, db.Migration)
	}
	if opts.CheckTimeout <= 0 {
		opts.CheckTimeout = DefaultCheckTimeout
	}
	if opts.RestoreTimeout <= 0 {
		opts.RestoreTimeout = DefaultRestoreTimeout
	}
	now := opts.Now
	if now == nil {
		now = time.Now
	}
	logger := opts.Logger
	if logger == nil {
		logger = zap.NewNop()
	}
	hc := opts.HTTPClient
	if hc == nil {
		hc = &http.Client{Timeout: opts.CheckTimeout}
	}
	return &runner{
		opts: opts, cfg: cfg, t: t, secretErrs: secretErrs, nextImages: next, migrations: migrations,
		now: now, logger: logger.With(zap.String("target", t.Name)), httpClient: hc,
		dbs: map[string]*database.DB{}, dbErrs: map[string]error{}, pgSources: map[string]querier{},
	}, nil
}

func (r *runner) close() {
	for _, db := range r.dbs {
		db.Close()
	}
	for _, c := range r.closers {
		c()
	}
}

// check times fn under its own timeout and fills Item and Name.
func (r *runner) check(ctx context.Context, item, name string, timeout time.Duration, fn func(ctx context.Context) (Status, string)) Check {
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	start := time.Now()
	st, ev := fn(ctx)
	return Check{Item: item, Name: name, Status: st, Evidence: ev, Took: time.Since(start)}
}

// db opens (once) the named global database. It does not connect:
// database.Open is lazy, so a server that is down shows up in the check
// that uses it, with its own error.
func (r *runner) db(ctx context.Context, name string) (*database.DB, error) {
	if db, ok := r.dbs[name]; ok {
		return db, nil
	}
	if err, ok := r.dbErrs[name]; ok {
		return nil, err
	}
	db, err := r.openDB(ctx, name)
	if err != nil {
		r.dbErrs[name] = err
		return nil, err
	}
	r.dbs[name] = db
	return db, nil
}

func (r *runner) openDB(ctx context.Context, name string) (*database.DB, error) {
	g, ok := r.cfg.Global.Database(name)
	if !ok {
		return nil, fmt.Errorf("database %q is not in global.databases", name)
	}
	if g.DSN == "" {
		for i := range r.cfg.Global.Databases {
			if r.cfg.Global.Databases[i].Name != name {
				continue
			}
			if msg, bad := secretProblem(r.secretErrs, fmt.Sprintf("global.databases[%d]", i)); bad {
				return nil, fmt.Errorf("database %q: %s", name, msg)
			}
		}
		return nil, fmt.Errorf("database %q: connection string not resolved", name)
	}
	// One connection: the checks run one at a time.
	return database.Open(ctx, database.Options{
		Name: name, DSN: string(g.DSN), BinDir: g.BinDir,
		MaxConns: 1, Timeout: time.Duration(g.StatementTimeout),
	}, r.logger)
}

// dsn returns the resolved connection string of a global database.
func (r *runner) dsn(name string) (string, error) {
	if _, err := r.db(context.Background(), name); err != nil {
		return "", err
	}
	g, _ := r.cfg.Global.Database(name)
	return string(g.DSN), nil
}

// kube returns the clientset: the injected one, else one built from the
// kubeconfig (empty: the in-cluster service account).
func (r *runner) kube() (kubernetes.Interface, error) {
	if r.opts.Kube != nil {
		return r.opts.Kube, nil
	}
	rc, err := r.restConfig()
	if err != nil {
		return nil, err
	}
	cs, err := kubernetes.NewForConfig(rc)
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	r.opts.Kube = cs
	return cs, nil
}

// restConfig is the kubeconfig's client config, each request bounded by
// the check timeout.
func (r *runner) restConfig() (*rest.Config, error) {
	k := r.cfg.Global.Kubernetes
	rc, err := kube.RESTConfig(kube.ClientOptions{
		Kubeconfig: k.Kubeconfig, KubeconfigFrom: "global.kubernetes.kubeconfig",
		Context: k.Context, ContextFrom: "global.kubernetes.context",
	}.Overlay(r.opts.Kubeconfig, r.opts.KubeContext))
	if err != nil {
		return nil, fmt.Errorf("kubernetes client: %w", err)
	}
	rc.Timeout = r.opts.CheckTimeout
	return rc, nil
}

func (r *runner) manualChecks(context.Context) []Check {
	return []Check{
		{Item: ItemResponders, Name: "responders", Status: StatusManual, Evidence: "confirm on-call and the escalation path are staffed for the deploy window"},
		{Item: ItemSlack, Name: "slack-channel", Status: StatusManual, Evidence: "confirm the incident channel exists and the responders are in it"},
	}
}
