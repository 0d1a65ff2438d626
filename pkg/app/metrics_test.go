package app

import (
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	"go.uber.org/zap"
	"k8s.io/client-go/kubernetes/fake"

	"github.com/rollguard/rollguard/pkg/evaluator"
	"github.com/rollguard/rollguard/pkg/gitops"
	"github.com/rollguard/rollguard/pkg/guard"
	"github.com/rollguard/rollguard/pkg/leader"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/response"
)

// describing records the full name of every metric a collector describes
// as it is registered, so vectors with no series yet are listed too.
type describing struct {
	prometheus.Registerer
	names []string
}

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

// The metric names are an interface: dashboards, alerting rules, the Helm
// chart and runbooks query them. Every component registers on the
// daemon's registerer as newDaemon does, and the full list of names is
// pinned, so moving a declaration or its prefix cannot rename a metric.
func TestExposedMetricNames(t *testing.T) {
	reg := newRegistry()
	rec := &describing{Registerer: reg}
	r := metricsRegisterer(rec)

	registerBuildAndReload(r)
	newReloadMetrics(r)
	notify.NewQueue(notify.Options{}, nil, zap.NewNop(), r)
	if _, err := leader.New(fake.NewSimpleClientset(), leader.Options{Namespace: "ns", Name: "lease", Identity: "a"}, zap.NewNop(), r); err != nil {
		t.Fatal(err)
	}
	response.New(nil, nil, nil, guard.New(guard.Options{}), response.Options{}, zap.NewNop(), r)
	gitops.NewWatcher(nil, nil, nil, gitops.WatchOptions{}, zap.NewNop(), r)
	evaluator.New(evaluator.Options{}, nil, nil, zap.NewNop(), r)

	got := slices.Clone(rec.names)
	sort.Strings(got)
	want := []string{
		"rollguard_build_info",
		"rollguard_config_last_reload_success_timestamp_seconds",
		"rollguard_config_last_reload_successful",
		"rollguard_config_reloads_total",
		"rollguard_config_restart_required",
		"rollguard_evaluations_total",
		"rollguard_gitops_suspended",
		"rollguard_leader",
		"rollguard_notification_queue_length",
		"rollguard_notifications_total",
		"rollguard_rollback_step_duration_seconds",
		"rollguard_rollbacks_total",
		"rollguard_source_errors_total",
		"rollguard_source_query_duration_seconds",
		"rollguard_trigger_breach_seconds",
		"rollguard_trigger_for_seconds",
		"rollguard_trigger_last_value",
		"rollguard_trigger_state",
		"rollguard_trigger_threshold",
	}
	if !slices.Equal(got, want) {
		t.Errorf("registered metric names:\n%s\nwant:\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	// The runtime's collectors keep their standard names.
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var goroutines bool
	for _, mf := range mfs {
		if mf.GetName() == "go_goroutines" {
			goroutines = true
		}
		if strings.HasPrefix(mf.GetName(), "rollguard_go_") || strings.HasPrefix(mf.GetName(), "rollguard_process_") {
			t.Errorf("runtime metric %s got rollguard's prefix", mf.GetName())
		}
	}
	if !goroutines {
		t.Error("go_goroutines is not exposed")
	}
}
