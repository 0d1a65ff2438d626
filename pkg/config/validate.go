package config

import (
	"fmt"
	"math"
	"net"
	"net/url"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/prometheus/common/model"

	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/plan"
	"github.com/rollguard/rollguard/pkg/promql"
	"github.com/rollguard/rollguard/pkg/trigger"
)

var (
	// surgeRE is a maxSurge rollguard may write: a count or a percentage,
	// at least 1 (0 with maxUnavailable 0 would stall the rollout).
	surgeRE        = regexp.MustCompile(`^[1-9][0-9]{0,5}%?$`)
	dns1123LabelRE = regexp.MustCompile(`^[a-z0-9]([-a-z0-9]*[a-z0-9])?$`)
	labelNameRE    = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)
	envNameRE      = regexp.MustCompile(`^[A-Za-z_][A-Za-z0-9_]*$`)
)

var (
	kinds       = []string{KindErrorRate, KindLatencyP99, KindConnections, KindReplicationLag, KindPrometheus, KindSQL}
	actions     = []string{plan.RequestRollback, plan.RequestRestartThenRollback, plan.RequestFullRollback, plan.RequestPage}
	strategies  = []plan.Name{plan.Quick, plan.Revert, plan.Full}
	severities  = []notify.Severity{notify.SeverityCritical, notify.SeverityError, notify.SeverityWarning, notify.SeverityInfo}
	onErrors    = []trigger.OnError{trigger.OnErrorNoData, trigger.OnErrorBreach}
	logLevels   = []string{"debug", "info", "warn", "error"}
	wouldValues = []string{"info", "off"}
	// incidentStoreKinds are global.notify.incidentStore.kind's values.
	incidentStoreKinds = []string{IncidentStoreCluster, IncidentStoreDir}
	gitopsModes        = []string{GitOpsRefuse, GitOpsSuspend, GitOpsIgnore}
)

// IsPrometheusKind reports whether a trigger kind queries Prometheus (the
// others query a named database).
func IsPrometheusKind(kind string) bool {
	switch kind {
	case KindErrorRate, KindLatencyP99, KindPrometheus:
		return true
	}
	return false
}

// validate checks the decoded, defaulted configuration. given reports
// whether the file had a key at a path: an inherited value is checked once,
// where it was written, not again at every trigger that inherits it.
func (c *Config) validate(errs *errList, given func(path string) bool) {
	c.Global.validate(errs)
	c.validateTemplates(errs)
	atLeastTwoIntervals(errs, "global.for", c.Global.For, c.Global.Interval)
	if g := &c.Global; g.For > 0 && g.Interval > 0 && g.For%g.Interval != 0 {
		c.warnf("global.for", "%s is not a multiple of global.interval %s: a trigger fires at the first sample at or after %s, %s after the breach began",
			g.For, g.Interval, g.For, (g.For/g.Interval+1)*g.Interval)
	}
	validateHTTPConfig(errs, "global.prometheus.httpConfig", &c.Global.Prometheus.HTTPConfig, given)
	c.validateNotifiers(errs, given)

	if len(c.Targets) == 0 {
		errs.addf("targets", "at least one target is required")
	}
	names := map[string]int{}
	deployments := map[string]int{}
	usesPrometheus := ""
	for i := range c.Targets {
		t := &c.Targets[i]
		p := indexPath("targets", i)
		if j, dup := names[t.Name]; dup && t.Name != "" {
			errs.addf(p+".name", "duplicate target name %q (also targets[%d])", t.Name, j)
		} else {
			names[t.Name] = i
		}
		key := t.Namespace + "/" + t.Deployment
		if j, dup := deployments[key]; dup && t.Namespace != "" && t.Deployment != "" {
			errs.addf(p+".deployment", "Deployment %s is already watched by targets[%d]", key, j)
		} else {
			deployments[key] = i
		}
		c.validateTarget(t, p, errs, given)
		for j := range t.Triggers {
			if usesPrometheus == "" && IsPrometheusKind(t.Triggers[j].Kind) {
				usesPrometheus = fmt.Sprintf("%s.triggers[%d] (kind %s)", p, j, t.Triggers[j].Kind)
			}
		}
	}
	if usesPrometheus != "" && c.Global.Prometheus.URL == "" {
		errs.addf("global.prometheus.url", "required by %s", usesPrometheus)
	}
}

func (g *Global) validate(errs *errList) {
	positive(errs, "global.interval", g.Interval)
	positive(errs, "global.for", g.For)
	atLeast(errs, "global.maxGap", g.MaxGap, "interval", g.Interval)
	positive(errs, "global.blindAfter", g.BlindAfter)
	oneOf(errs, "global.logLevel", g.LogLevel, logLevels)
	loopback, err := isLoopback(g.ListenAddress)
	if err != nil {
		errs.addf("global.listenAddress", "%v, got %q", err, g.ListenAddress)
	}
	if g.QueryParallelism < 1 {
		errs.addf("global.queryParallelism", "must be >= 1, got %d", g.QueryParallelism)
	}

	if g.Prometheus.URL != "" {
		httpURL(errs, "global.prometheus.url", g.Prometheus.URL)
	}
	positive(errs, "global.prometheus.timeout", g.Prometheus.Timeout)
	if r := g.Prometheus.Resolution; r < 0 || r > g.Interval {
		errs.addf("global.prometheus.resolution", "must be between 0s and global.interval (%s), got %s", g.Interval, r)
	}

	dbs := map[string]int{}
	for i := range g.Databases {
		db := &g.Databases[i]
		p := indexPath("global.databases", i)
		if j, dup := dbs[db.Name]; dup && db.Name != "" {
			errs.addf(p+".name", "duplicate database name %q (also global.databases[%d])", db.Name, j)
		} else {
			dbs[db.Name] = i
		}
		dnsLabel(errs, p+".name", db.Name)
		switch {
		case db.DSNFile == "" && db.DSNEnv == "":
			errs.addf(p, "one of dsnFile and dsnEnv is required")
		case db.DSNFile != "" && db.DSNEnv != "":
			errs.addf(p, "only one of dsnFile and dsnEnv is allowed")
		case db.DSNEnv != "" && !envNameRE.MatchString(db.DSNEnv):
			errs.addf(p+".dsnEnv", "not a valid environment variable name, got %q", db.DSNEnv)
		}
		if db.MaxConns < 1 || db.MaxConns > 2 {
			errs.addf(p+".maxConns", "must be 1 or 2, got %d", db.MaxConns)
		}
		positive(errs, p+".connectTimeout", db.ConnectTimeout)
		positive(errs, p+".statementTimeout", db.StatementTimeout)
		if db.BinDir != "" && !filepath.IsAbs(db.BinDir) {
			errs.addf(p+".binDir", "must be an absolute path, got %q", db.BinDir)
		}
	}

	le := &g.LeaderElection
	dnsLabel(errs, "global.leaderElection.namespace", le.Namespace)
	dnsLabel(errs, "global.leaderElection.leaseName", le.LeaseName)
	positive(errs, "global.leaderElection.leaseDuration", le.LeaseDuration)
	positive(errs, "global.leaderElection.renewDeadline", le.RenewDeadline)
	positive(errs, "global.leaderElection.retryPeriod", le.RetryPeriod)
	// client-go's NewLeaderElector refuses anything else.
	if le.RenewDeadline > 0 && le.LeaseDuration > 0 && le.LeaseDuration <= le.RenewDeadline {
		errs.addf("global.leaderElection.leaseDuration", "must be greater than renewDeadline (%s), got %s", le.RenewDeadline, le.LeaseDuration)
	}
	if le.RetryPeriod > 0 && le.RenewDeadline > 0 && float64(le.RenewDeadline) <= 1.2*float64(le.RetryPeriod) {
		errs.addf("global.leaderElection.renewDeadline", "must be greater than 1.2 × retryPeriod (%s), got %s", le.RetryPeriod, le.RenewDeadline)
	}

	if g.Interlocks.MaxRollbacksPerHour < 1 {
		errs.addf("global.interlocks.maxRollbacksPerHour", "must be >= 1 (use freeze to stop every rollback), got %d", g.Interlocks.MaxRollbacksPerHour)
	}
	positive(errs, "global.interlocks.maxRevisionAge", g.Interlocks.MaxRevisionAge)
	positive(errs, "global.interlocks.maxResumeAge", g.Interlocks.MaxResumeAge)

	if err == nil && !loopback && g.API.TokenFile == "" {
		errs.addf("global.api.tokenFile", "required when listenAddress is not a loopback address, got listenAddress %q", g.ListenAddress)
	}

	n := &g.Notify
	httpURL(errs, "global.notify.pagerduty.endpoint", n.PagerDuty.Endpoint)
	positive(errs, "global.notify.pagerduty.timeout", n.PagerDuty.Timeout)
	positive(errs, "global.notify.slack.timeout", n.Slack.Timeout)
	is := &n.IncidentStore
	oneOf(errs, "global.notify.incidentStore.kind", is.Kind, incidentStoreKinds)
	if is.Kind == IncidentStoreDir && n.IncidentDir == "" {
		errs.addf("global.notify.incidentDir", "must not be empty with incidentStore.kind dir")
	}
	if is.Namespace != "" {
		dnsLabel(errs, "global.notify.incidentStore.namespace", is.Namespace)
	}
	if is.MaxRecords < 1 {
		errs.addf("global.notify.incidentStore.maxRecords", "must be >= 1, got %d", is.MaxRecords)
	}
	positive(errs, "global.notify.incidentStore.maxAge", is.MaxAge)
	oneOf(errs, "global.notify.wouldRollback", n.WouldRollback, wouldValues)
	if n.StatusURL != "" {
		httpURL(errs, "global.notify.statusURL", n.StatusURL)
	}
}

func (c *Config) validateTarget(t *Target, p string, errs *errList, given func(string) bool) {
	g := &c.Global
	dnsLabel(errs, p+".name", t.Name)
	dnsLabel(errs, p+".namespace", t.Namespace)
	dnsSubdomain(errs, p+".deployment", t.Deployment)
	containers := map[string]bool{}
	for i, name := range t.Containers {
		cp := indexPath(p+".containers", i)
		if containers[name] {
			errs.addf(cp, "duplicate container %q", name)
		}
		containers[name] = true
		dnsLabel(errs, cp, name)
	}
	if t.HealthURL != "" {
		httpURL(errs, p+".healthURL", t.HealthURL)
	}
	labelNames(errs, p+".match", t.Match)

	if len(t.Triggers) == 0 {
		errs.addf(p+".triggers", "at least one trigger is required")
	}
	triggers := map[string]int{}
	lookbacks := map[int]time.Duration{}
	for i := range t.Triggers {
		tr := &t.Triggers[i]
		tp := indexPath(p+".triggers", i)
		if j, dup := triggers[tr.Name]; dup && tr.Name != "" {
			errs.addf(tp+".name", "duplicate trigger name %q (also %s.triggers[%d])", tr.Name, p, j)
		} else {
			triggers[tr.Name] = i
		}
		lookbacks[i] = c.validateTrigger(t, tr, tp, errs, given)
	}
	c.validateVerifyWindow(t, p, lookbacks)

	r := &t.Rollback
	rp := p + ".rollback"
	oneOf(errs, rp+".strategy", r.Strategy, strategies)
	if r.Strategy == plan.Full && r.Database == nil {
		errs.addf(rp+".strategy", "full requires %s.database", rp)
	}
	for _, name := range sortedKeys(r.StableImage) {
		kp := keyPath(rp+".stableImage", name)
		if len(t.Containers) > 0 && !containers[name] {
			errs.addf(kp, "container %q is not in %s.containers", name, p)
		}
		if r.StableImage[name] == "" {
			errs.addf(kp, "image must not be empty")
		}
	}
	for i, n := range r.RampSteps {
		if n < 1 {
			errs.addf(indexPath(rp+".rampSteps", i), "must be >= 1, got %d", n)
		} else if i > 0 && n <= r.RampSteps[i-1] {
			errs.addf(indexPath(rp+".rampSteps", i), "must be greater than the previous step (%d), got %d", r.RampSteps[i-1], n)
		}
	}
	positive(errs, rp+".rolloutTimeout", r.RolloutTimeout)
	if r.RevertMaxSurge != "" && !surgeRE.MatchString(r.RevertMaxSurge) {
		errs.addf(rp+".revertMaxSurge", "must be a count >= 1 or a percentage such as 100%%, got %q", r.RevertMaxSurge)
	}
	positive(errs, rp+".verifyWindow", r.VerifyWindow)
	if db := r.Database; db != nil {
		dp := rp + ".database"
		c.databaseRef(errs, dp+".name", db.Name, true)
		if db.Migration == "" {
			errs.addf(dp+".migration", "must not be empty")
		}
		absPath(errs, dp+".dumpPath", db.DumpPath)
		absPath(errs, dp+".forensicDir", db.ForensicDir)
		for i, tbl := range db.VerifyTables {
			if strings.TrimSpace(tbl) == "" {
				errs.addf(indexPath(dp+".verifyTables", i), "must not be empty")
			}
		}
		positive(errs, dp+".maxDumpAge", db.MaxDumpAge)
	}
	pr := &r.PoolRecovery
	if pr.Database != "" {
		c.databaseRef(errs, rp+".poolRecovery.database", pr.Database, true)
	}
	positive(errs, rp+".poolRecovery.idleInTransactionAge", pr.IdleInTransactionAge)
	if mr := r.MultiRegion; mr != nil {
		mp := rp + ".multiRegion"
		if len(mr.Secondaries) == 0 {
			errs.addf(mp+".secondaries", "at least one secondary database is required")
		}
		for i, name := range mr.Secondaries {
			c.databaseRef(errs, indexPath(mp+".secondaries", i), name, true)
		}
		if mr.Subscription == "" {
			errs.addf(mp+".subscription", "must not be empty")
		}
		if r.Database == nil && pr.Database == "" {
			// Lag is read on the primary before and after the rollback.
			errs.addf(mp, "needs the primary's database: set %s.database or %s.poolRecovery.database", rp, rp)
		}
		positive(errs, mp+".maxLag", mr.MaxLag)
		positive(errs, mp+".timeout", mr.Timeout)
	}

	oneOf(errs, p+".gitops.mode", t.GitOps.Mode, gitopsModes)
	dnsLabel(errs, p+".gitops.argocdNamespace", t.GitOps.ArgoCDNamespace)

	np := p + ".notify"
	oneOf(errs, np+".severity", t.Notify.Severity, severities)
	if t.Notify.PagerDuty != nil && *t.Notify.PagerDuty && g.Notify.PagerDuty.RoutingKeyFile == "" {
		errs.addf(np+".pagerduty", "requires global.notify.pagerduty.routingKeyFile")
	}
	if t.Notify.Slack != nil && *t.Notify.Slack && g.Notify.Slack.WebhookURLFile == "" {
		errs.addf(np+".slack", "requires global.notify.slack.webhookURLFile")
	}
}

// validateTrigger checks one trigger and returns how much history its
// PromQL reads (0 for the other kinds).
func (c *Config) validateTrigger(t *Target, tr *Trigger, p string, errs *errList, given func(string) bool) time.Duration {
	g := &c.Global
	dnsLabel(errs, p+".name", tr.Name)
	if tr.Kind == "" {
		errs.addf(p+".kind", "required, one of %s", strings.Join(kinds, "|"))
	} else {
		oneOf(errs, p+".kind", tr.Kind, kinds)
	}
	known := slices.Contains(kinds, tr.Kind)
	prom := IsPrometheusKind(tr.Kind)

	if known && strings.TrimSpace(tr.Query) == "" {
		errs.addf(p+".query", "required for kind %s", tr.Kind)
	}
	if known && !prom {
		if tr.Database == "" {
			errs.addf(p+".database", "required for kind %s", tr.Kind)
		} else {
			c.databaseRef(errs, p+".database", tr.Database, false)
		}
		if tr.VolumeQuery != "" {
			errs.addf(p+".volumeQuery", "not used by kind %s", tr.Kind)
		}
	}
	if prom && tr.Database != "" {
		errs.addf(p+".database", "not used by kind %s, got %q", tr.Kind, tr.Database)
	}
	if tr.Application != "" && tr.Kind != KindConnections {
		errs.addf(p+".application", "only used by kind connections, got %q", tr.Application)
	}
	if given(p + ".match") {
		labelNames(errs, p+".match", tr.Match)
	}

	switch {
	case tr.Above == nil && tr.Below == nil:
		errs.addf(p, "one of above and below is required")
	case tr.Above != nil && tr.Below != nil:
		errs.addf(p, "only one of above and below is allowed")
	}
	finite(errs, p+".above", tr.Above)
	finite(errs, p+".below", tr.Below)

	if given(p + ".for") {
		positive(errs, p+".for", tr.For)
	}
	if given(p+".maxGap") && positive(errs, p+".maxGap", tr.MaxGap) {
		atLeast(errs, p+".maxGap", tr.MaxGap, "global.interval", g.Interval)
	}
	if given(p + ".blindAfter") {
		positive(errs, p+".blindAfter", tr.BlindAfter)
	}
	oneOf(errs, p+".onError", tr.OnError, onErrors)
	switch {
	case math.IsNaN(tr.MinRate) || math.IsInf(tr.MinRate, 0) || tr.MinRate < 0:
		errs.addf(p+".minRate", "must be a finite number >= 0, got %v", tr.MinRate)
	case tr.MinRate > 0 && tr.VolumeQuery == "":
		errs.addf(p+".minRate", "requires a volumeQuery, got minRate %v", tr.MinRate)
	}
	if given(p + ".severity") {
		oneOf(errs, p+".severity", tr.Severity, severities)
	}
	oneOf(errs, p+".action", tr.Action, actions)
	tp := p[:strings.LastIndex(p, ".triggers[")]
	switch tr.Action {
	case plan.RequestFullRollback:
		if t.Rollback.Database == nil {
			errs.addf(p+".action", "full-rollback requires %s.rollback.database", tp)
		}
	case plan.RequestRestartThenRollback:
		if t.Rollback.PoolRecovery.Database == "" {
			errs.addf(p+".action", "restart-then-rollback requires %s.rollback.poolRecovery.database (or rollback.database)", tp)
		}
		if t.Rollback.PoolRecovery.Role == "" {
			errs.addf(p+".action", "restart-then-rollback requires %s.rollback.poolRecovery.role", tp)
		}
	}
	if tr.Security && g.Notify.PagerDuty.SecurityRoutingKeyFile == "" {
		errs.addf(p+".security", "requires global.notify.pagerduty.securityRoutingKeyFile")
	}
	if known {
		c.validateSignal(tr, p, errs, given)
	}
	if !prom {
		return 0
	}
	// The built-in kinds' inherited queries were parsed once at
	// global.templates; what the trigger itself gives is parsed here.
	var lookback time.Duration
	for _, q := range []struct{ field, q string }{{"query", tr.Query}, {"volumeQuery", tr.VolumeQuery}} {
		var pq promql.Query
		var ok bool
		if given(p+"."+q.field) || tr.Kind == KindPrometheus && q.field == "query" {
			pq, ok = c.checkPromQL(errs, p+"."+q.field, q.q)
		} else if q.q != "" {
			pq, ok = parsedQuiet(q.q)
		}
		if ok {
			lookback = max(lookback, pq.Lookback)
		}
	}
	return lookback
}

// parsedQuiet parses a query already checked where it was written.
func parsedQuiet(q string) (promql.Query, bool) {
	pq, err := promql.Parse(q)
	return pq, err == nil
}

// databaseRef checks that name is a global database. empty says whether an
// empty name is reported (callers that already reported it pass false).
func (c *Config) databaseRef(errs *errList, path, name string, empty bool) {
	if name == "" {
		if empty {
			errs.addf(path, "must not be empty")
		}
		return
	}
	if _, ok := c.Global.Database(name); ok {
		return
	}
	defined := make([]string, 0, len(c.Global.Databases))
	for _, db := range c.Global.Databases {
		defined = append(defined, db.Name)
	}
	if len(defined) == 0 {
		errs.addf(path, "unknown database %q (global.databases is empty)", name)
		return
	}
	errs.addf(path, "unknown database %q (defined: %s)", name, strings.Join(defined, ", "))
}

// Database returns the global database of that name.
func (g *Global) Database(name string) (*Database, bool) {
	for i := range g.Databases {
		if g.Databases[i].Name == name {
			return &g.Databases[i], true
		}
	}
	return nil, false
}

// positive reports d <= 0 and returns whether d was positive.
func positive(errs *errList, path string, d model.Duration) bool {
	if d <= 0 {
		errs.addf(path, "must be > 0, got %s", d)
		return false
	}
	return true
}

func atLeast(errs *errList, path string, d model.Duration, what string, min model.Duration) {
	if d < min {
		errs.addf(path, "must be >= %s (%s), got %s", what, min, d)
	}
}

func finite(errs *errList, path string, f *float64) {
	if f != nil && (math.IsNaN(*f) || math.IsInf(*f, 0)) {
		errs.addf(path, "must be a finite number, got %v", *f)
	}
}

func oneOf[S ~string](errs *errList, path string, v S, allowed []S) {
	if !slices.Contains(allowed, v) {
		words := make([]string, len(allowed))
		for i, a := range allowed {
			words[i] = string(a)
		}
		errs.addf(path, "must be one of %s, got %q", strings.Join(words, "|"), v)
	}
}

func dnsLabel(errs *errList, path, v string) {
	switch {
	case v == "":
		errs.addf(path, "must not be empty")
	case len(v) > 63 || !dns1123LabelRE.MatchString(v):
		errs.addf(path, "must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got %q", v)
	}
}

func dnsSubdomain(errs *errList, path, v string) {
	ok := v != "" && len(v) <= 253
	for _, l := range strings.Split(v, ".") {
		ok = ok && dns1123LabelRE.MatchString(l)
	}
	switch {
	case v == "":
		errs.addf(path, "must not be empty")
	case !ok:
		errs.addf(path, "must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253), got %q", v)
	}
}

func labelNames(errs *errList, path string, m map[string]string) {
	for _, k := range sortedKeys(m) {
		if !labelNameRE.MatchString(k) {
			errs.addf(keyPath(path, k), "not a valid label name, got %q", k)
		}
	}
}

func httpURL(errs *errList, path, v string) {
	u, err := url.Parse(v)
	switch {
	case v == "":
		errs.addf(path, "must not be empty")
	case err != nil:
		errs.addf(path, "not a valid URL, got %q", v)
	case u.Scheme != "http" && u.Scheme != "https":
		errs.addf(path, "must be an http or https URL, got %q", v)
	case u.Host == "":
		errs.addf(path, "must have a host, got %q", v)
	case u.User != nil:
		// Credentials belong in secret files, not in the config.
		errs.addf(path, "must not hold credentials (user info)")
	}
}

func absPath(errs *errList, path, v string) {
	switch {
	case v == "":
		errs.addf(path, "must not be empty")
	case !filepath.IsAbs(v):
		errs.addf(path, "must be an absolute path, got %q", v)
	}
}

// isLoopback reports whether a listen address binds only loopback.
func isLoopback(addr string) (bool, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return false, fmt.Errorf("must be host:port")
	}
	if n, err := strconv.Atoi(port); err != nil || n < 0 || n > 65535 {
		return false, fmt.Errorf("port must be a number 0-65535")
	}
	if host == "localhost" {
		return true, nil
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback(), nil
}

func sortedKeys(m map[string]string) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}
