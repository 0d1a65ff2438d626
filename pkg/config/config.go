// Package config holds rollguard's YAML configuration: the types, their
// defaults, a strict loader that reports every problem at once with its
// path, validation, and secrets read from files or the environment.
//
// Loading is two steps on purpose. Load and LoadFile decode, apply defaults
// and validate the structure without touching any secret file, so
// `rollguard validate` and the tests work on a machine that has none of the
// production secrets. (*Config).ResolveSecrets then reads every secret file
// and environment variable and checks their contents (a DSN must parse);
// the daemon calls it once after loading and on every reload.
package config

import (
	commoncfg "github.com/prometheus/common/config"
	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// Trigger kinds.
const (
	// KindErrorRate is the ratio of 5xx responses to all responses, from the
	// global errorRate template (volume-guarded).
	KindErrorRate = "errorRate"
	// KindLatencyP99 is the 99th percentile latency, from the global
	// latencyP99 template.
	KindLatencyP99 = "latencyP99"
	// KindConnections is the share of max_connections used by client
	// backends, from a named database.
	KindConnections = "connections"
	// KindReplicationLag is the replication lag in seconds, from a named
	// database.
	KindReplicationLag = "replicationLag"
	// KindPrometheus is a custom PromQL query.
	KindPrometheus = "prometheus"
	// KindSQL is a custom SQL query against a named database; its last
	// numeric column is the value.
	KindSQL = "sql"
)

// Built-in queries of the PostgreSQL source (pkg/source/postgres).
const (
	BuiltinConnections    = "builtin:connections"
	BuiltinReplicationLag = "builtin:replication_lag"
)

// Where incident records are kept (global.notify.incidentStore.kind).
const (
	IncidentStoreCluster = "cluster"
	IncidentStoreDir     = "dir"
)

// Default queries of the built-in Prometheus templates. They are grouped by
// namespace and deployment so one query per tick serves every target; each
// trigger picks its series with its match labels.
//
// The error rate's numerator falls back to 0 × the request rate: a
// deployment that has served no 5xx yet has no 5xx series at all, and a
// bare ratio would then have no result, which reads as no data (and
// eventually a "blind" page) instead of a healthy 0.
const (
	DefaultErrorRateQuery       = `(sum by (namespace, deployment) (rate(http_requests_total{status=~"5.."}[1m])) or 0 * sum by (namespace, deployment) (rate(http_requests_total[1m]))) / sum by (namespace, deployment) (rate(http_requests_total[1m]))`
	DefaultErrorRateVolumeQuery = `sum by (namespace, deployment) (rate(http_requests_total[1m]))`
	DefaultLatencyP99Query      = `histogram_quantile(0.99, sum by (namespace, deployment, le) (rate(http_request_duration_seconds_bucket[1m])))`
)

// Config is the whole configuration file.
type Config struct {
	// Settings shared by every target, and the defaults of per-trigger
	// settings.
	Global Global `yaml:"global"`
	// The Deployments rollguard watches; at least one is required.
	Targets []Target `yaml:"targets"`

	// baseDir is the directory of the loaded file; relative secret file
	// paths are read relative to it, like Prometheus does.
	baseDir string
	// file is the loaded file's path, named in secret errors.
	file string
	// warnings are legal but probably unintended choices (see Warnings).
	warnings errList
}

// Global holds the settings shared by every target.
type Global struct {
	// Interval between evaluations of every trigger. Default 5s.
	Interval model.Duration `yaml:"interval"`
	// Default window of a trigger: how long a threshold must be breached
	// before the trigger fires. Default 60s (the runbook's).
	For model.Duration `yaml:"for"`
	// Default largest allowed gap between two consecutive samples of a run;
	// a larger gap resets it. Default 2 × interval.
	MaxGap model.Duration `yaml:"maxGap"`
	// Default time without data after which a trigger pages that it is
	// blind (once, at warning severity). Default 2m.
	BlindAfter model.Duration `yaml:"blindAfter"`
	// Default dry-run switch: evaluate and notify "would roll back" but
	// write nothing to the cluster or the database. Default false.
	DryRun bool `yaml:"dryRun"`
	// Log level: debug, info, warn or error. Default info.
	LogLevel string `yaml:"logLevel"`
	// Address of the HTTP server (metrics, status, API). Default
	// 127.0.0.1:9847. Any non-loopback address requires api.tokenFile.
	ListenAddress string `yaml:"listenAddress"`
	// Largest number of source queries run at once per tick. Default 16.
	QueryParallelism int `yaml:"queryParallelism"`
	// The Prometheus server the PromQL triggers query.
	Prometheus Prometheus `yaml:"prometheus"`
	// Named PostgreSQL connections, referred to by triggers and rollback
	// steps. Default none.
	Databases []Database `yaml:"databases"`
	// How to reach the Kubernetes API.
	Kubernetes Kubernetes `yaml:"kubernetes"`
	// Leader election between replicas of rollguard on a Lease.
	LeaderElection LeaderElection `yaml:"leaderElection"`
	// Safety interlocks that can stop an automated rollback (docs/design.md §5).
	Interlocks Interlocks `yaml:"interlocks"`
	// The HTTP API's authentication.
	API API `yaml:"api"`
	// Where pages, messages and incident records go.
	Notify Notify `yaml:"notify"`
	// Queries of the built-in Prometheus trigger kinds.
	Templates Templates `yaml:"templates"`
}

// Prometheus is the Prometheus server of the PromQL triggers.
type Prometheus struct {
	// Base URL of the Prometheus HTTP API, e.g. http://prometheus:9090.
	// Default empty; required when any trigger uses PromQL.
	URL string `yaml:"url"`
	// Timeout of each query. Default 10s.
	Timeout model.Duration `yaml:"timeout"`
	// Step at which PromQL triggers are sampled: every evaluation asks for
	// each multiple of it (Unix time) since the trigger's previous sample,
	// one query_range per query, and a pending window is evaluated again at
	// the moment it completes. A trigger so fires at its first breach + for
	// whatever the interval, like a Prometheus alerting rule evaluated at
	// this step; where a run starts between two of these instants, the step
	// before it is sampled every 100 ms (one extra query_range per query,
	// only there), so the run starts within 100 ms of the breach and the
	// trigger fires within 100 ms of breach + for. Set it to the scrape
	// interval (or the rule evaluation interval to compare with); each query
	// then reads interval/resolution points per series and tick, which for
	// thousands of targets costs Prometheus about twice the tick (make
	// bench): there, set it to the interval. 0s samples once per tick, at
	// the tick, and never evaluates between ticks. At most global.interval.
	// Default 1s (global.interval if shorter).
	Resolution model.Duration `yaml:"resolution"`
	// How to reach it: basic auth, authorization (bearer) credentials,
	// OAuth2, TLS (CA, client certificate), custom headers and a proxy, in
	// prometheus/common's HTTP client shape and snake_case keys (the same
	// block as a Prometheus scrape config or an Alertmanager receiver's
	// http_config; see the global.prometheus.httpConfig section). Secrets
	// only from files (password_file, credentials_file, ...); relative
	// paths are relative to the config file. Files are read on use, so a
	// rotated credential or certificate needs neither reload nor restart.
	// Default: no authentication, system CAs, redirects followed, HTTP/2.
	HTTPConfig commoncfg.HTTPClientConfig `yaml:"httpConfig"`
}

// Database is a named PostgreSQL connection.
type Database struct {
	// Name referred to by triggers and rollback steps; a DNS label, unique.
	// Required.
	Name string `yaml:"name"`
	// File holding the connection string (URL or key=value). Exactly one
	// of dsnFile and dsnEnv is required. Relative paths are relative to the
	// config file.
	DSNFile string `yaml:"dsnFile,omitempty"`
	// Environment variable holding the connection string. Exactly one of
	// dsnFile and dsnEnv is required.
	DSNEnv string `yaml:"dsnEnv,omitempty"`
	// Largest number of pooled connections, 1 or 2: rollguard must stay
	// connectable when the application has used every slot. Default 2.
	MaxConns int `yaml:"maxConns"`
	// Timeout of establishing a connection. Default 5s.
	ConnectTimeout model.Duration `yaml:"connectTimeout"`
	// Server-side statement_timeout of every query. Default 5s.
	StatementTimeout model.Duration `yaml:"statementTimeout"`
	// Directory of pg_dump and pg_restore, absolute. Default empty, which
	// means the PATH.
	BinDir string `yaml:"binDir,omitempty"`

	// DSN is the connection string, set by ResolveSecrets.
	DSN Secret `yaml:"-"`
}

// Kubernetes says how to reach the Kubernetes API. The command line's
// --kubeconfig and --context override it.
type Kubernetes struct {
	// Path of a kubeconfig file. Default empty, which means kubectl's
	// rules: the files of $KUBECONFIG, else ~/.kube/config, else the
	// in-cluster service account (what a Pod has).
	Kubeconfig string `yaml:"kubeconfig"`
	// Context of the kubeconfig to use; it must exist. Default empty: the
	// kubeconfig's current-context.
	Context string `yaml:"context,omitempty"`
}

// LeaderElection configures client-go leader election on a Lease. The lease
// is not a fence: every Deployment write carries a resourceVersion
// precondition as well.
type LeaderElection struct {
	// Run leader election; required with more than one replica. Default
	// false.
	Enabled bool `yaml:"enabled"`
	// Namespace of the Lease. Default rollguard.
	Namespace string `yaml:"namespace"`
	// Name of the Lease. Default rollguard.
	LeaseName string `yaml:"leaseName"`
	// How long a non-leader waits before taking over. Must be greater than
	// renewDeadline. Default 15s.
	LeaseDuration model.Duration `yaml:"leaseDuration"`
	// How long the leader keeps trying to renew before it gives up. Must be
	// greater than 1.2 × retryPeriod. Default 10s.
	RenewDeadline model.Duration `yaml:"renewDeadline"`
	// Interval between attempts to acquire or renew. Default 2s.
	RetryPeriod model.Duration `yaml:"retryPeriod"`
}

// Interlocks are the safety switches that can stop an automated rollback;
// a blocked action degrades to a page.
type Interlocks struct {
	// Least time between two rollbacks of the same target. Default 30m.
	Cooldown model.Duration `yaml:"cooldown"`
	// Global budget of rollbacks in any hour, across targets. Default 3.
	MaxRollbacksPerHour int `yaml:"maxRollbacksPerHour"`
	// Act only when the current ReplicaSet is younger than this; an older
	// version is paged, not rolled back. Default 2h.
	MaxRevisionAge model.Duration `yaml:"maxRevisionAge"`
	// Resume a rollback left unfinished (a crash, a leader change, a failed
	// step) only while it started less than this ago; an older one is
	// closed and paged for a human. Default 30m.
	MaxResumeAge model.Duration `yaml:"maxResumeAge"`
	// Freeze every target: page instead of acting. Default false.
	Freeze bool `yaml:"freeze"`
}

// API configures the authentication of the HTTP API.
type API struct {
	// File holding the bearer token of the mutating endpoints (manual
	// rollback, freeze, reload): one line, the token; or one NAME:TOKEN
	// line per caller, whose name is recorded with what it asks for.
	// Default empty; required when listenAddress is not a loopback
	// address.
	TokenFile string `yaml:"tokenFile,omitempty"`

	// Token is the unnamed bearer token, set by ResolveSecrets.
	Token Secret `yaml:"-"`
	// Tokens are the named bearer tokens, set by ResolveSecrets.
	Tokens []NamedToken `yaml:"-"`
}

// NamedToken is one caller's bearer token (a NAME:TOKEN line).
type NamedToken struct {
	Name  string
	Token Secret
}

// Notify says where pages, messages and incident records go.
type Notify struct {
	// PagerDuty Events API v2.
	PagerDuty PagerDuty `yaml:"pagerduty"`
	// Slack incoming webhook.
	Slack Slack `yaml:"slack"`
	// Directory of the incident records (JSON and Markdown) when
	// incidentStore.kind is dir. Default /var/lib/rollguard/incidents.
	IncidentDir string `yaml:"incidentDir"`
	// Where incident records and the notifications not yet delivered are
	// kept.
	IncidentStore IncidentStore `yaml:"incidentStore"`
	// What a dry-run "would roll back" notification does: info (sent at
	// info severity) or off. Default info.
	WouldRollback string `yaml:"wouldRollback"`
	// External base URL of rollguard, for links in pages. Default empty
	// (no links).
	StatusURL string `yaml:"statusURL,omitempty"`
	// Generic webhooks: every milestone POSTed as one versioned JSON
	// document (docs/webhook.md), through the same retry queue as
	// PagerDuty and Slack. Default none.
	Webhooks []Webhook `yaml:"webhooks,omitempty"`
	// Alertmanager's v2 API: each incident pushed as one alert, routed by
	// the Alertmanager an organisation already runs (Opsgenie, Teams,
	// email, silences). Default none.
	Alertmanager *Alertmanager `yaml:"alertmanager,omitempty"`
}

// IncidentStore says where incident records, and the notifications not
// yet delivered, are kept.
type IncidentStore struct {
	// cluster: ConfigMaps in namespace, one per incident, labelled with its
	// target and incident; every replica reads the same records, and a
	// page not yet delivered when a replica dies is delivered by the next
	// leader. dir: files in incidentDir on this replica's disk, and pending
	// pages only in memory (a single replica, or rollguard outside a
	// cluster). Default cluster.
	Kind string `yaml:"kind"`
	// Namespace of the ConfigMaps: rollguard's own. Default the leader
	// election's namespace (global.leaderElection.namespace).
	Namespace string `yaml:"namespace,omitempty"`
	// How many records are kept: the newest, by last update. Default 200.
	MaxRecords int `yaml:"maxRecords"`
	// Records not updated for this long are deleted. Default 2160h (90
	// days).
	MaxAge model.Duration `yaml:"maxAge"`
}

// Webhook is one generic JSON webhook.
type Webhook struct {
	// Name in logs and metrics (notifier webhook:<name>): a DNS label,
	// unique. Required.
	Name string `yaml:"name"`
	// URL the events are POSTed to, http or https. Exactly one of url and
	// urlFile is required.
	URL string `yaml:"url,omitempty"`
	// File holding the URL, when the URL itself is the credential (a token
	// in its path or query). Exactly one of url and urlFile is required.
	URLFile string `yaml:"urlFile,omitempty"`
	// Event kinds sent: detected, rollback_started, step_started,
	// step_finished, rollback_succeeded, rollback_failed,
	// rollback_unverified, cannot_rollback, would_rollback, blind,
	// blind_resolved, test, record_failed. Default empty: every kind.
	Kinds []string `yaml:"kinds,omitempty"`
	// Timeout of each request. Default 10s.
	Timeout model.Duration `yaml:"timeout"`
	// Authentication, TLS and proxy of the requests: the keys of
	// global.prometheus.httpConfig (e.g. authorization.credentials_file
	// for a bearer token). Default: none, system CAs.
	HTTPConfig commoncfg.HTTPClientConfig `yaml:"httpConfig"`

	// URLSecret is the URL read from urlFile, set by ResolveSecrets.
	URLSecret Secret `yaml:"-"`
}

// Alertmanager pushes incidents to Alertmanager's v2 API as alerts: one
// alert an incident (labels alertname RollguardIncident, namespace,
// deployment, trigger, severity, rollguard_incident), resolved by a
// successful rollback; RollguardBlind for a blind trigger.
type Alertmanager struct {
	// Base URLs of the Alertmanagers, e.g. http://alertmanager:9093; every
	// alert goes to each (the members of an HA cluster deduplicate).
	// Required, at least one.
	URLs []string `yaml:"urls"`
	// Labels added to every alert, for routing (team, service). The labels
	// rollguard sets are refused. Default none.
	Labels map[string]string `yaml:"labels,omitempty"`
	// How long an alert stays firing after its incident's last event
	// unless a successful rollback resolves it: a failed or blocked
	// rollback, or a blind trigger, stays visible this long. Default 24h.
	ActiveFor model.Duration `yaml:"activeFor"`
	// Timeout of each request. Default 10s.
	Timeout model.Duration `yaml:"timeout"`
	// Authentication, TLS and proxy of the requests: the keys of
	// global.prometheus.httpConfig. Default: none, system CAs.
	HTTPConfig commoncfg.HTTPClientConfig `yaml:"httpConfig"`
}

// PagerDuty configures the PagerDuty Events API v2.
type PagerDuty struct {
	// File holding the integration's routing key. Default empty: no
	// PagerDuty.
	RoutingKeyFile string `yaml:"routingKeyFile,omitempty"`
	// File holding the security team's routing key, paged as well by
	// triggers with security: true. Default empty.
	SecurityRoutingKeyFile string `yaml:"securityRoutingKeyFile,omitempty"`
	// Base URL of the Events API (events go to /v2/enqueue). Default
	// https://events.pagerduty.com.
	Endpoint string `yaml:"endpoint"`
	// Timeout of each request. Default 10s.
	Timeout model.Duration `yaml:"timeout"`
	// Resolve the incident when the trigger recovers. Default false: a
	// human resolves it.
	ResolveOnRecovery bool `yaml:"resolveOnRecovery"`

	// RoutingKey is the routing key, set by ResolveSecrets.
	RoutingKey Secret `yaml:"-"`
	// SecurityRoutingKey is the security routing key, set by
	// ResolveSecrets.
	SecurityRoutingKey Secret `yaml:"-"`
}

// Slack configures a Slack incoming webhook.
type Slack struct {
	// File holding the incoming-webhook URL (the URL is the credential).
	// Default empty: no Slack.
	WebhookURLFile string `yaml:"webhookURLFile,omitempty"`
	// Channel override, e.g. "#pggit-incidents". Default empty: the
	// webhook's own channel.
	Channel string `yaml:"channel,omitempty"`
	// Timeout of each request. Default 10s.
	Timeout model.Duration `yaml:"timeout"`

	// WebhookURL is the webhook URL, set by ResolveSecrets.
	WebhookURL Secret `yaml:"-"`
}

// Templates holds the queries of the built-in Prometheus trigger kinds.
type Templates struct {
	// Query of errorRate triggers. Default: the 5xx ratio of
	// http_requests_total by namespace and deployment, volume-guarded by
	// the request rate.
	ErrorRate Template `yaml:"errorRate"`
	// Query of latencyP99 triggers. Default: histogram_quantile(0.99) of
	// http_request_duration_seconds by namespace and deployment. With
	// thousands of targets, deploy/monitoring/fleet records it every 5 s;
	// query its series namespace_deployment:http_request_duration_seconds:p99_rate1m
	// instead.
	LatencyP99 Template `yaml:"latencyP99"`
}

// Template is a query shared by every trigger of one kind.
type Template struct {
	// PromQL query, grouped by the labels of the targets' match. Default:
	// the built-in query of the kind. When set, volumeQuery is taken as
	// given (empty: no volume guard).
	Query string `yaml:"query"`
	// PromQL query of the request rate behind the ratio, for minRate.
	// Default: the built-in volume query when query is not set, else none.
	VolumeQuery string `yaml:"volumeQuery,omitempty"`
}

// Target is one watched Deployment.
type Target struct {
	// Name of the target in pages, metrics and the API: a DNS label,
	// unique. Required.
	Name string `yaml:"name"`
	// Namespace of the Deployment. Required.
	Namespace string `yaml:"namespace"`
	// Name of the Deployment. Required.
	Deployment string `yaml:"deployment"`
	// Containers whose image is rolled back. Default empty: all.
	Containers []string `yaml:"containers,omitempty"`
	// URL that answers 200 when the service is healthy, checked between
	// ramp steps and at verification. Default empty: no HTTP check.
	HealthURL string `yaml:"healthURL,omitempty"`
	// Dry-run for this target; overrides global.dryRun. Default: the
	// global value.
	DryRun *bool `yaml:"dryRun"`
	// Freeze this target: page instead of acting. Default false.
	Freeze bool `yaml:"freeze"`
	// Labels that select this target's series from grouped PromQL results.
	// Default {namespace: <namespace>, deployment: <deployment>}.
	Match map[string]string `yaml:"match"`
	// The health signals that can fire; at least one is required.
	Triggers []Trigger `yaml:"triggers"`
	// How this target is rolled back.
	Rollback Rollback `yaml:"rollback"`
	// Who hears about this target.
	Notify TargetNotify `yaml:"notify"`
	// What happens when a GitOps controller (Flux, Argo CD) reconciles the
	// Deployment and would undo a rollback.
	GitOps GitOps `yaml:"gitops"`
}

// GitOps is the policy for a Deployment that Flux (a Kustomization or a
// HelmRelease, named by the kustomize.toolkit.fluxcd.io or
// helm.toolkit.fluxcd.io labels) or Argo CD (an Application, named by its
// tracking annotation or instance label) reconciles.
type GitOps struct {
	// refuse: do not roll back a Deployment whose owner reconciles, page
	// "cannot roll back: managed by ...; revert commit ... in Git".
	// suspend: suspend exactly the owning object (Flux spec.suspend, Argo
	// CD automated sync off) before the first write, journaled; lifted by
	// `rollguard resume-gitops` or by itself when the source's revision
	// moves on. ignore: roll back as if nothing reconciled it. Default
	// refuse.
	Mode string `yaml:"mode"`
	// Namespace of Argo CD's Applications (a tracking value without a
	// namespace refers to it). Default argocd.
	ArgoCDNamespace string `yaml:"argocdNamespace"`
}

// GitOps policies.
const (
	GitOpsRefuse  = "refuse"
	GitOpsSuspend = "suspend"
	GitOpsIgnore  = "ignore"
)

// Trigger is a query, a comparison and a window, and the action to take
// when the comparison has held for the whole window.
type Trigger struct {
	// Name, unique within the target: a DNS label. Required.
	Name string `yaml:"name"`
	// Kind: errorRate, latencyP99, connections, replicationLag, prometheus
	// or sql. Required.
	Kind string `yaml:"kind"`
	// The query: PromQL for errorRate, latencyP99 and prometheus, SQL for
	// sql, connections and replicationLag. Default: the global template for
	// errorRate and latencyP99, builtin:connections and
	// builtin:replication_lag for those kinds; required for prometheus and
	// sql.
	Query string `yaml:"query"`
	// PromQL query of the request volume, for minRate. Default: the
	// template's volume query for errorRate when the query is the
	// template's, else none.
	VolumeQuery string `yaml:"volumeQuery,omitempty"`
	// Labels that select this trigger's series from the query's result.
	// Default: the target's match for errorRate and latencyP99; none (the
	// query must return exactly one series) for other kinds. Required for
	// replicationLag: {slot: NAME}, the slot of the subscription watched.
	Match map[string]string `yaml:"match,omitempty"`
	// Name of the global database queried by connections, replicationLag
	// and sql. Required for those kinds, not allowed for the others.
	Database string `yaml:"database,omitempty"`
	// For connections: count only sessions of this application_name.
	// Default empty: every client backend.
	Application string `yaml:"application,omitempty"`
	// Breach when the value is above this; exactly one of above and below
	// is required.
	Above *float64 `yaml:"above,omitempty"`
	// Breach when the value is below this; exactly one of above and below
	// is required.
	Below *float64 `yaml:"below,omitempty"`
	// Window: how long every sample must breach before the trigger fires;
	// at least two intervals. Default: global.for.
	For model.Duration `yaml:"for"`
	// Largest allowed gap between consecutive samples of a run. Default:
	// global.maxGap.
	MaxGap model.Duration `yaml:"maxGap"`
	// What a query error, timeout or empty result counts as: nodata (resets
	// the run) or breach (the error is the signal, e.g. SQLSTATE 53300
	// too_many_connections, not rollguard's own role at its connection
	// limit). breach only for connections, replicationLag and sql.
	// Default nodata.
	OnError trigger.OnError `yaml:"onError"`
	// Volume guard in requests per second: below it a sample is low volume
	// (state lowvolume: the run resets, nothing pages; not blindness).
	// Requires a volume query. Default 0 (no guard; a warning on
	// errorRate).
	MinRate float64 `yaml:"minRate,omitempty"`
	// Time without data after which the trigger pages that it is blind.
	// Default: global.blindAfter.
	BlindAfter model.Duration `yaml:"blindAfter"`
	// Action when the trigger fires: rollback, restart-then-rollback,
	// full-rollback or page. Default page, so a trigger never rolls back
	// unless it says so.
	Action string `yaml:"action"`
	// Severity of the page: critical, error, warning or info. Default: the
	// target's notify.severity.
	Severity notify.Severity `yaml:"severity"`
	// Also page the security routing key. Default false.
	Security bool `yaml:"security,omitempty"`
}

// Rollback says how a target is rolled back (docs/design.md §4).
type Rollback struct {
	// quick (scale to 0, restore, ramp up: the runbook's), revert (patch the
	// template and let the rolling update keep serving: no downtime, but
	// the bad version keeps running until replaced) or full (also restores
	// the database). Default quick.
	Strategy plan.Name `yaml:"strategy"`
	// Container name to the image to roll back to. Default empty: the
	// template of the previous ReplicaSet by revision.
	StableImage map[string]string `yaml:"stableImage,omitempty"`
	// Replica counts of the ramp up, strictly increasing, after which the
	// recorded count is restored. Default [2] (the runbook's).
	RampSteps []int `yaml:"rampSteps"`
	// Pause between ramp steps. Default 30s.
	RampPause model.Duration `yaml:"rampPause"`
	// Longest wait for a rollout to complete. Default 30s (the runbook's
	// kubectl rollout status --timeout).
	RolloutTimeout model.Duration `yaml:"rolloutTimeout"`
	// maxSurge that revert gives the Deployment for its rollout, then puts
	// back: a count or a percentage. 100% starts every pod of the pinned
	// version at once while the bad ones keep serving (it needs room for
	// a second copy of the Deployment for a moment; without it the
	// rollout goes as fast as pods fit). Empty: the Deployment's own
	// strategy paces revert. Default 100%.
	RevertMaxSurge string `yaml:"revertMaxSurge"`
	// How long every check (health 200, SELECT 1, each trigger with data
	// and under threshold) must keep passing to call the rollback
	// verified, once the trigger queries read only data from after the
	// rollout (verify first waits out their longest range selector). A
	// trigger without data makes the rollback unverified, never
	// successful. Default 30s.
	VerifyWindow model.Duration `yaml:"verifyWindow"`
	// The database restore step of quick and full. Default none (no
	// database step); required by strategy full and action full-rollback.
	Database *RollbackDatabase `yaml:"database,omitempty"`
	// Connection pool recovery, the first step of restart-then-rollback.
	PoolRecovery PoolRecovery `yaml:"poolRecovery"`
	// Multi-region rollback: with strategy quick, secondaries'
	// subscriptions are disabled while the primary rolls back, then
	// enabled (resynced after a restore) and waited for. Needs database or
	// poolRecovery.database (the primary). Default none.
	MultiRegion *MultiRegion `yaml:"multiRegion,omitempty"`
}

// Plan is the executor plan a rollback of the target runs: the strategy,
// except that quick with multiRegion is the multi-region plan (the
// runbook's Multi-Region Rollback wraps its quick rollback).
func (r *Rollback) Plan() plan.Name {
	if r.Strategy == plan.Quick && r.MultiRegion != nil {
		return plan.MultiRegion
	}
	return r.Strategy
}

// RollbackDatabase is the database restore step of a rollback.
type RollbackDatabase struct {
	// Name of the global database to restore. Required.
	Name string `yaml:"name"`
	// Name in pggit.schema_versions of the migration the deploy applied;
	// the restore runs only when it is applied. Required.
	Migration string `yaml:"migration"`
	// Absolute path of the pre-deploy dump (pg_dump -Fc). Required.
	DumpPath string `yaml:"dumpPath"`
	// Absolute directory of the forensic dump taken before the restore.
	// Required.
	ForensicDir string `yaml:"forensicDir"`
	// Tables whose row counts are checked after the restore. Default none.
	VerifyTables []string `yaml:"verifyTables,omitempty"`
	// Refuse a dump older than this. Default 24h.
	MaxDumpAge model.Duration `yaml:"maxDumpAge"`
}

// PoolRecovery terminates the application's sessions stuck idle in
// transaction (never superuser, walsender or rollguard's own sessions).
type PoolRecovery struct {
	// Global database to clean up. Default: rollback.database.name.
	// Required by action restart-then-rollback.
	Database string `yaml:"database,omitempty"`
	// Terminate sessions idle in transaction for longer than this. Default
	// 5m (the runbook's).
	IdleInTransactionAge model.Duration `yaml:"idleInTransactionAge"`
	// Only sessions of this role (the application's). Required by action
	// restart-then-rollback.
	Role string `yaml:"role,omitempty"`
	// Only sessions of this application_name. Default empty: any.
	ApplicationName string `yaml:"applicationName,omitempty"`
}

// MultiRegion is the runbook's multi-region rollback.
type MultiRegion struct {
	// Global databases of the secondary regions (subscribers). At least one
	// is required.
	Secondaries []string `yaml:"secondaries"`
	// Name of the subscription disabled on each secondary. Required.
	Subscription string `yaml:"subscription"`
	// Lag under which a re-enabled secondary counts as caught up. Default
	// 1s (the runbook's).
	MaxLag model.Duration `yaml:"maxLag"`
	// Longest wait for a secondary to catch up. Default 2m.
	Timeout model.Duration `yaml:"timeout"`
}

// TargetNotify says who hears about a target.
type TargetNotify struct {
	// Default severity of the target's triggers. Default critical.
	Severity notify.Severity `yaml:"severity"`
	// Page PagerDuty. Default: true when global.notify.pagerduty has a
	// routingKeyFile.
	PagerDuty *bool `yaml:"pagerduty"`
	// Post to Slack. Default: true when global.notify.slack has a
	// webhookURLFile.
	Slack *bool `yaml:"slack"`
	// Send to the generic webhooks. Default: true when
	// global.notify.webhooks has any.
	Webhooks *bool `yaml:"webhooks,omitempty"`
	// Push to Alertmanager. Default: true when global.notify.alertmanager
	// is set.
	Alertmanager *bool `yaml:"alertmanager,omitempty"`
}
