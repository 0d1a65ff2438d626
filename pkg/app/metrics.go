package app

import (
	"fmt"
	"regexp"
	"sort"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/rest"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/leader"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/response"
)

// MetricNames lists the full name of every metric of rollguard's own that
// the daemon exposes, sorted: each component registers on
// metricsRegisterer as in newDaemon, and the names are read from what
// they describe, so a vector with no series yet is listed too. The
// dashboards' and alerting rules' tests check their queries against it.
func MetricNames() ([]string, error) {
	rec := &describing{Registerer: prometheus.NewRegistry()}
	reg := metricsRegisterer(rec)
	registerBuildAndReload(reg)
	newReloadMetrics(reg)
	notify.NewQueue(notify.Options{}, nil, zap.NewNop(), reg)
	// A client that is never used (building one does no I/O) and valid
	// options, so New registers its gauge.
	client, err := kubernetes.NewForConfig(&rest.Config{Host: "http://127.0.0.1:1"})
	if err != nil {
		return nil, fmt.Errorf("metric names: %w", err)
	}
	if _, err := leader.New(client, leader.Options{Namespace: "-", Name: "-", Identity: "-"}, zap.NewNop(), reg); err != nil {
		return nil, fmt.Errorf("metric names: %w", err)
	}
	response.New(nil, nil, nil, guard.New(guard.Options{}), response.Options{}, zap.NewNop(), reg)
	gitops.NewWatcher(nil, nil, nil, gitops.WatchOptions{}, zap.NewNop(), reg)
	evaluator.New(evaluator.Options{}, nil, nil, zap.NewNop(), reg)
	sort.Strings(rec.names)
	return rec.names, nil
}

// describing records the full name of every metric a collector describes
// as it is registered.
type describing struct {
	prometheus.Registerer
	names []string
}

// A Desc shows its full name only in its String form.
var fqNameRE = regexp.MustCompile(`fqName: "([^"]+)"`)

func (d *describing) Register(c prometheus.Collector) error {
	ch := make(chan *prometheus.Desc)
	go func() {
		c.Describe(ch)
		close(ch)
	}()
	for desc := range ch {
		if m := fqNameRE.FindStringSubmatch(desc.String()); m != nil {
			d.names = append(d.names, m[1])
		}
	}
	return d.Registerer.Register(c)
}

func (d *describing) MustRegister(cs ...prometheus.Collector) {
	for _, c := range cs {
		if err := d.Register(c); err != nil {
			panic(err)
		}
	}
}
