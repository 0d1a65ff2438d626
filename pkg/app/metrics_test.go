package app

import (
	"slices"
	"strings"
	"testing"
)

// The metric names are an interface: dashboards, alerting rules, the Helm
// chart and runbooks query them. The full list of names is pinned, so
// moving a declaration or its prefix cannot rename a metric.
func TestExposedMetricNames(t *testing.T) {
	got, err := MetricNames()
	if err != nil {
		t.Fatal(err)
	}
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
	mfs, err := newRegistry().Gather()
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
