package rules

import (
	"reflect"
	"testing"
	"time"

	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/trigger"
)

func TestRule(t *testing.T) {
	above, below := 0.05, 10.0
	for _, tc := range []struct {
		name     string
		tr       config.Trigger
		interval time.Duration
		want     trigger.Rule
	}{
		{
			name: "above, maxGap given",
			tr: config.Trigger{Name: "error-rate", Kind: config.KindErrorRate, Above: &above, For: model.Duration(time.Minute),
				MaxGap: model.Duration(7 * time.Second), BlindAfter: model.Duration(2 * time.Minute), OnError: trigger.OnErrorNoData,
				MinRate: 1, Action: plan.RequestRollback, Severity: notify.SeverityCritical, Query: "q"},
			interval: 5 * time.Second,
			want: trigger.Rule{Target: "api", Name: "error-rate", Op: trigger.Above, Threshold: 0.05, For: time.Minute,
				MaxGap: 7 * time.Second, BlindAfter: 2 * time.Minute, OnError: trigger.OnErrorNoData,
				MinRate: 1, Action: plan.RequestRollback, Severity: notify.SeverityCritical, Query: "q"},
		},
		{
			name:     "below, maxGap 0 takes the default of the interval",
			tr:       config.Trigger{Name: "low", Below: &below, Security: true},
			interval: 3 * time.Second,
			want:     trigger.Rule{Target: "api", Name: "low", Op: trigger.Below, Threshold: 10, MaxGap: 6 * time.Second, Security: true},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := Rule("api", &tc.tr, tc.interval); !reflect.DeepEqual(got, tc.want) {
				t.Errorf("Rule = %+v\nwant %+v", got, tc.want)
			}
		})
	}
}

func TestSpec(t *testing.T) {
	cfg := &config.Config{}
	cfg.Global.Interval = model.Duration(5 * time.Second)
	cfg.Global.Prometheus.Resolution = model.Duration(time.Second)
	for _, tc := range []struct {
		name       string
		tr         config.Trigger
		backend    string
		match      map[string]string
		resolution time.Duration
	}{
		{"promql at the resolution", config.Trigger{Name: "e", Kind: config.KindErrorRate, Match: map[string]string{"deployment": "api"}},
			BackendPrometheus, map[string]string{"deployment": "api"}, time.Second},
		{"connections of an application", config.Trigger{Name: "c", Kind: config.KindConnections, Database: "main", Application: "api",
			Match: map[string]string{"x": "y"}}, "postgres:main", map[string]string{"application_name": "api"}, 0},
		{"replication lag", config.Trigger{Name: "l", Kind: config.KindReplicationLag, Database: "main"}, "postgres:main", nil, 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := Spec(cfg, "api", &tc.tr)
			if s.ID != "api/"+tc.tr.Name || s.Backend != tc.backend || !reflect.DeepEqual(s.Match, tc.match) || s.Resolution != tc.resolution {
				t.Errorf("Spec = id %q backend %q match %v resolution %s, want %q %q %v %s",
					s.ID, s.Backend, s.Match, s.Resolution, "api/"+tc.tr.Name, tc.backend, tc.match, tc.resolution)
			}
		})
	}
}
