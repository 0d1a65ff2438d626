package config

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// The example configurations in configs/ must load, and must say what the
// runbook says.
func TestLoadExampleConfigs(t *testing.T) {
	t.Run("production", func(t *testing.T) {
		cfg, err := LoadFile("../../configs/production.yaml")
		if err != nil {
			t.Fatalf("LoadFile: %v", err)
		}
		if got := len(cfg.Targets); got != 1 {
			t.Fatalf("targets = %d, want 1", got)
		}
		tg := cfg.Targets[0]
		if tg.Namespace != "production" || tg.Deployment != "pggit-api" || tg.DryRunEnabled() {
			t.Errorf("target = %s/%s dryRun=%v, want production/pggit-api live", tg.Namespace, tg.Deployment, tg.DryRunEnabled())
		}
		want := map[string]struct {
			kind    string
			above   float64
			onError trigger.OnError
			action  string
		}{
			"error-rate":      {KindErrorRate, 0.05, trigger.OnErrorNoData, plan.RequestRollback},
			"latency-p99":     {KindLatencyP99, 5, trigger.OnErrorNoData, plan.RequestRollback},
			"connection-pool": {KindConnections, 0.95, trigger.OnErrorBreach, plan.RequestRestartThenRollback},
			"replication-lag": {KindReplicationLag, 30, trigger.OnErrorNoData, plan.RequestRollback},
		}
		for _, tr := range tg.Triggers {
			w, ok := want[tr.Name]
			if !ok {
				continue
			}
			delete(want, tr.Name)
			if tr.Kind != w.kind || tr.Above == nil || *tr.Above != w.above || tr.OnError != w.onError || tr.Action != w.action {
				t.Errorf("trigger %s = %s %s onError=%s action=%s, want %s > %v onError=%s action=%s",
					tr.Name, tr.Kind, tr.Comparison(), tr.OnError, tr.Action, w.kind, w.above, w.onError, w.action)
			}
			if time.Duration(tr.For) != 60*time.Second {
				t.Errorf("trigger %s for = %s, want 60s", tr.Name, tr.For)
			}
		}
		if len(want) > 0 {
			t.Errorf("runbook triggers missing: %v", want)
		}
		er := tg.Triggers[0]
		if er.MinRate != 1 || er.VolumeQuery != DefaultErrorRateVolumeQuery {
			t.Errorf("error-rate minRate=%v volumeQuery=%q, want the volume guard", er.MinRate, er.VolumeQuery)
		}
		if er.Match["namespace"] != "production" || er.Match["deployment"] != "pggit-api" {
			t.Errorf("error-rate match = %v", er.Match)
		}
		rb := tg.Rollback
		if rb.Strategy != plan.Quick || len(rb.RampSteps) != 1 || rb.RampSteps[0] != 2 ||
			time.Duration(rb.RampPause) != 30*time.Second || time.Duration(rb.RolloutTimeout) != 30*time.Second {
			t.Errorf("rollback = %+v, want the runbook's quick rollback", rb)
		}
		if rb.Database == nil || rb.Database.Migration != "phase8_analytics_dashboard" || rb.Database.DumpPath != "/backups/pggit_pre-phase8.dump" {
			t.Errorf("rollback.database = %+v", rb.Database)
		}
		if rb.PoolRecovery.Role != "pggit_app" || time.Duration(rb.PoolRecovery.IdleInTransactionAge) != 5*time.Minute {
			t.Errorf("poolRecovery = %+v", rb.PoolRecovery)
		}
		pd := cfg.Global.Notify.PagerDuty
		if !strings.HasPrefix(pd.RoutingKeyFile, "/etc/rollguard/secrets/") || !strings.HasPrefix(cfg.Global.Notify.Slack.WebhookURLFile, "/etc/rollguard/secrets/") {
			t.Errorf("notify secret files = %q, %q", pd.RoutingKeyFile, cfg.Global.Notify.Slack.WebhookURLFile)
		}
		// Structure is valid; the secret files do not exist here, and
		// ResolveSecrets says so naming each field and file.
		err = cfg.ResolveSecrets()
		var errs *Errors
		if !errors.As(err, &errs) {
			t.Fatalf("ResolveSecrets = %v, want *Errors", err)
		}
		if errs.File != "../../configs/production.yaml" || len(errs.List) != 6 {
			t.Errorf("ResolveSecrets errors = %v", err)
		}
	})
	t.Run("staging", func(t *testing.T) {
		cfg, err := LoadFile("../../configs/staging.yaml")
		if err != nil {
			t.Fatalf("LoadFile: %v", err)
		}
		tg := cfg.Targets[0]
		if tg.Namespace != "staging" || !tg.DryRunEnabled() || !cfg.Global.DryRun {
			t.Errorf("target %s dryRun=%v global=%v, want staging in dry-run", tg.Namespace, tg.DryRunEnabled(), cfg.Global.DryRun)
		}
		if *tg.Notify.PagerDuty {
			t.Errorf("staging pages PagerDuty")
		}
		if got := tg.Rollback.PoolRecovery.Database; got != "primary" {
			t.Errorf("poolRecovery.database = %q, want primary (from rollback.database)", got)
		}
	})
}

// Both example configs resolve with their secret files present (written to
// a temp dir), and the rendered config never holds a secret.
func TestExampleConfigsWithSecrets(t *testing.T) {
	for _, name := range []string{"production.yaml", "staging.yaml"} {
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("../../configs", name))
			if err != nil {
				t.Fatal(err)
			}
			dir := t.TempDir()
			secrets := map[string]string{
				"primary-dsn":                    "postgres://rollguard:pw-primary-zz@db:5432/pggit",
				"replica-eu-dsn":                 "host=replica user=rollguard password=pw-replica-zz dbname=pggit",
				"api-token":                      "tok-api-zz",
				"pagerduty-routing-key":          "rk-zz",
				"pagerduty-security-routing-key": "srk-zz",
				"slack-webhook-url":              "https://hooks.slack.com/services/T/B/hook-zz",
			}
			for f, v := range secrets {
				if err := os.WriteFile(filepath.Join(dir, f), []byte(v+"\n"), 0o600); err != nil {
					t.Fatal(err)
				}
			}
			// Relative secret paths are read relative to the config file.
			rel := strings.ReplaceAll(string(data), "/etc/rollguard/secrets/", "")
			path := filepath.Join(dir, name)
			if err := os.WriteFile(path, []byte(rel), 0o600); err != nil {
				t.Fatal(err)
			}
			cfg, err := LoadFile(path)
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			if err := cfg.ResolveSecrets(); err != nil {
				t.Fatalf("ResolveSecrets: %v", err)
			}
			if got := string(cfg.Global.Databases[0].DSN); got != secrets["primary-dsn"] {
				t.Errorf("primary DSN not resolved (len %d)", len(got))
			}
			if got := string(cfg.Global.API.Token); got != "tok-api-zz" {
				t.Errorf("api token not resolved (len %d)", len(got))
			}
			out := cfg.String() + cfg.Summary()
			if strings.Contains(out, "-zz") {
				t.Errorf("rendered config leaks a secret:\n%s", out)
			}
			// The rendering is itself a valid configuration.
			if _, err := Load([]byte(cfg.String())); err != nil {
				t.Errorf("Load(String()) = %v", err)
			}
		})
	}
}

func writeFile(path, content string) error { return os.WriteFile(path, []byte(content), 0o600) }
