package config

import (
	"time"

	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// Static defaults are set on a struct before its YAML mapping is decoded
// over it, the way Alertmanager's UnmarshalYAML methods do: a value the file
// gives replaces the default, so an explicit `for: 0s` stays 0 and is
// reported, instead of being mistaken for "unset". Defaults that depend on
// other fields (a trigger's window from global.for) are filled after
// decoding by inherit, which knows which keys the file gave.

// defaulter is implemented by every struct with static defaults.
type defaulter interface{ setDefaults() }

func dur(d time.Duration) model.Duration { return model.Duration(d) }

func (c *Config) setDefaults() {
	c.Global.setDefaults()
}

func (g *Global) setDefaults() {
	*g = Global{
		Interval:         dur(5 * time.Second),
		For:              dur(60 * time.Second),
		BlindAfter:       dur(2 * time.Minute),
		LogLevel:         "info",
		ListenAddress:    "127.0.0.1:9847",
		QueryParallelism: 16,
	}
	g.Prometheus.setDefaults()
	g.LeaderElection.setDefaults()
	g.Interlocks.setDefaults()
	g.Notify.setDefaults()
}

func (p *Prometheus) setDefaults() {
	*p = Prometheus{Timeout: dur(10 * time.Second), Resolution: dur(time.Second), HTTPConfig: commoncfg.DefaultHTTPClientConfig}
}

func (d *Database) setDefaults() {
	*d = Database{
		MaxConns:         2,
		ConnectTimeout:   dur(5 * time.Second),
		StatementTimeout: dur(5 * time.Second),
	}
}

func (l *LeaderElection) setDefaults() {
	*l = LeaderElection{
		Namespace:     "rollguard",
		LeaseName:     "rollguard",
		LeaseDuration: dur(15 * time.Second),
		RenewDeadline: dur(10 * time.Second),
		RetryPeriod:   dur(2 * time.Second),
	}
}

func (i *Interlocks) setDefaults() {
	*i = Interlocks{
		Cooldown:            dur(30 * time.Minute),
		MaxRollbacksPerHour: 3,
		MaxRevisionAge:      dur(2 * time.Hour),
		MaxResumeAge:        dur(30 * time.Minute),
	}
}

func (n *Notify) setDefaults() {
	*n = Notify{
		IncidentDir:   "/var/lib/rollguard/incidents",
		WouldRollback: string(notify.SeverityInfo),
	}
	n.IncidentStore.setDefaults()
	n.PagerDuty.setDefaults()
	n.Slack.setDefaults()
}

func (s *IncidentStore) setDefaults() {
	*s = IncidentStore{Kind: IncidentStoreCluster, MaxRecords: 200, MaxAge: dur(90 * 24 * time.Hour)}
}

func (p *PagerDuty) setDefaults() {
	*p = PagerDuty{
		Endpoint: "https://events.pagerduty.com",
		Timeout:  dur(10 * time.Second),
	}
}

func (s *Slack) setDefaults() {
	*s = Slack{Timeout: dur(10 * time.Second)}
}

func (t *Target) setDefaults() {
	*t = Target{}
	t.Rollback.setDefaults()
	t.Notify.setDefaults()
	t.GitOps.setDefaults()
}

func (g *GitOps) setDefaults() {
	*g = GitOps{Mode: GitOpsRefuse, ArgoCDNamespace: "argocd"}
}

func (t *Trigger) setDefaults() {
	*t = Trigger{OnError: trigger.OnErrorNoData, Action: plan.RequestPage}
}

func (r *Rollback) setDefaults() {
	*r = Rollback{
		Strategy:       plan.Quick,
		RampSteps:      []int{2},
		RampPause:      dur(30 * time.Second),
		RolloutTimeout: dur(30 * time.Second),
		RevertMaxSurge: "100%",
		VerifyWindow:   dur(30 * time.Second),
	}
	r.PoolRecovery.setDefaults()
}

func (d *RollbackDatabase) setDefaults() {
	*d = RollbackDatabase{MaxDumpAge: dur(24 * time.Hour)}
}

func (p *PoolRecovery) setDefaults() {
	*p = PoolRecovery{IdleInTransactionAge: dur(5 * time.Minute)}
}

func (m *MultiRegion) setDefaults() {
	*m = MultiRegion{MaxLag: dur(time.Second), Timeout: dur(2 * time.Minute)}
}

func (n *TargetNotify) setDefaults() {
	*n = TargetNotify{Severity: notify.SeverityCritical}
}

// inherit fills the defaults that depend on other fields. given reports
// whether the file had a key at a path (e.g. "targets[0].triggers[1].for").
func (c *Config) inherit(given func(path string) bool) {
	g := &c.Global
	if g.MaxGap == 0 {
		g.MaxGap = dur(window.DefaultMaxGap(time.Duration(g.Interval)))
	}
	if !given("global.prometheus.resolution") && g.Prometheus.Resolution > g.Interval {
		g.Prometheus.Resolution = g.Interval
	}
	tpl := func(t Template, query, volume string) Template {
		if t.Query == "" {
			return Template{Query: query, VolumeQuery: volume}
		}
		return t
	}
	g.Templates.ErrorRate = tpl(g.Templates.ErrorRate, DefaultErrorRateQuery, DefaultErrorRateVolumeQuery)
	g.Templates.LatencyP99 = tpl(g.Templates.LatencyP99, DefaultLatencyP99Query, "")

	for i := range c.Targets {
		t := &c.Targets[i]
		tp := indexPath("targets", i)
		if t.DryRun == nil {
			v := g.DryRun
			t.DryRun = &v
		}
		if t.Match == nil && (t.Namespace != "" || t.Deployment != "") {
			t.Match = map[string]string{"namespace": t.Namespace, "deployment": t.Deployment}
		}
		if t.Notify.PagerDuty == nil {
			v := g.Notify.PagerDuty.RoutingKeyFile != ""
			t.Notify.PagerDuty = &v
		}
		if t.Notify.Slack == nil {
			v := g.Notify.Slack.WebhookURLFile != ""
			t.Notify.Slack = &v
		}
		if pr := &t.Rollback.PoolRecovery; pr.Database == "" && t.Rollback.Database != nil {
			pr.Database = t.Rollback.Database.Name
		}
		for j := range t.Triggers {
			tr := &t.Triggers[j]
			p := indexPath(tp+".triggers", j)
			if !given(p + ".for") {
				tr.For = g.For
			}
			if !given(p + ".maxGap") {
				tr.MaxGap = g.MaxGap
			}
			if !given(p + ".blindAfter") {
				tr.BlindAfter = g.BlindAfter
			}
			if tr.Severity == "" {
				tr.Severity = t.Notify.Severity
			}
			switch tr.Kind {
			case KindErrorRate, KindLatencyP99:
				tmpl := g.Templates.ErrorRate
				if tr.Kind == KindLatencyP99 {
					tmpl = g.Templates.LatencyP99
				}
				if tr.Query == "" {
					tr.Query = tmpl.Query
					if tr.VolumeQuery == "" {
						tr.VolumeQuery = tmpl.VolumeQuery
					}
				}
				if tr.Match == nil && t.Match != nil {
					tr.Match = copyMap(t.Match)
				}
			case KindConnections:
				if tr.Query == "" {
					tr.Query = BuiltinConnections
				}
			case KindReplicationLag:
				if tr.Query == "" {
					tr.Query = BuiltinReplicationLag
				}
			}
		}
	}
}

func copyMap(m map[string]string) map[string]string {
	out := make(map[string]string, len(m))
	for k, v := range m {
		out[k] = v
	}
	return out
}

func (w *Webhook) setDefaults() {
	*w = Webhook{Timeout: dur(10 * time.Second), HTTPConfig: commoncfg.DefaultHTTPClientConfig}
}

func (a *Alertmanager) setDefaults() {
	*a = Alertmanager{ActiveFor: dur(24 * time.Hour), Timeout: dur(10 * time.Second), HTTPConfig: commoncfg.DefaultHTTPClientConfig}
}
