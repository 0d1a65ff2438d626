package config

import (
	"errors"
	"slices"
	"strings"
	"testing"
)

// doc builds a small valid configuration; each part, when set, is spliced
// in at its place (already indented). triggers replaces the one trigger.
type parts struct {
	global   string // lines under global:, 2 spaces
	target   string // lines under the target, 4 spaces
	triggers string // list items under triggers:, 6 spaces
	extra    string // more top-level YAML
}

func (p parts) yaml() string {
	triggers := p.triggers
	if triggers == "" {
		triggers = `      - name: errors
        kind: errorRate
        above: 0.05
        minRate: 1
`
	}
	return `global:
  prometheus: {url: "http://prometheus:9090"}
  databases:
    - name: primary
      dsnFile: /secrets/primary-dsn
` + p.global + `targets:
  - name: api
    namespace: prod
    deployment: api
` + p.target + `    triggers:
` + triggers + p.extra
}

func loadErrors(t *testing.T, src string) []string {
	t.Helper()
	_, err := Load([]byte(src))
	if err == nil {
		return nil
	}
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("Load error %T %v, want *Errors", err, err)
	}
	if !errors.Is(err, ErrInvalid) {
		t.Errorf("errors.Is(err, ErrInvalid) = false")
	}
	out := make([]string, len(errs.List))
	for i, e := range errs.List {
		out[i] = e.Error()
	}
	return out
}

func TestLoadValidBase(t *testing.T) {
	if errs := loadErrors(t, parts{}.yaml()); errs != nil {
		t.Fatalf("base config invalid: %q", errs)
	}
}

func TestLoadErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		src  string
		want []string
	}{
		// Strictness and decoding.
		{
			name: "unknown field with its path",
			src: parts{triggers: `      - name: errors
        kind: errorRate
        above: 0.05
      - name: latency
        kind: latencyP99
        above: 5
        forr: 60s
`}.yaml(),
			want: []string{"targets[0].triggers[1].forr: unknown field"},
		},
		{
			name: "unknown top-level and nested fields",
			src:  parts{global: "  prometheus2: {}\n", target: "    rollback: {strategy: quick, stratgy: revert}\n"}.yaml() + "extra: 1\n",
			want: []string{
				"global.prometheus2: unknown field",
				"targets[0].rollback.stratgy: unknown field",
				"extra: unknown field",
			},
		},
		{
			name: "duplicate field",
			src: parts{triggers: `      - name: errors
        kind: errorRate
        above: 0.05
        for: 30s
        for: 60s
`}.yaml(),
			want: []string{"targets[0].triggers[0].for: duplicate field (first at line 14)"},
		},
		{
			// A null key is no field name, in a struct as in a map.
			name: "null key",
			src:  parts{global: "  ~: 1\n"}.yaml(),
			want: []string{`global: expected a string key, got "~"`},
		},
		{
			name: "number that is not a number",
			src: parts{triggers: `      - name: errors
        kind: errorRate
        above: high
`}.yaml(),
			want: []string{`targets[0].triggers[0].above: cannot parse "high" as a number`},
		},
		{
			name: "bad duration",
			src:  parts{global: "  interval: 5x\n"}.yaml(),
			want: []string{`global.interval: unknown unit "x" in duration "5x"`},
		},
		{
			name: "integer that is not an integer",
			src:  parts{global: "  queryParallelism: many\n"}.yaml(),
			want: []string{`global.queryParallelism: cannot parse "many" as an integer`},
		},
		{
			name: "list where a list is wanted is not",
			src:  "targets: pggit-api\n",
			want: []string{`targets: expected a list, got "pggit-api"`},
		},
		{
			name: "mapping wanted",
			src:  parts{target: "    rollback: quick\n"}.yaml(),
			want: []string{`targets[0].rollback: expected a mapping, got "quick"`},
		},
		{
			name: "string wanted",
			src:  parts{target: "    healthURL: {url: x}\n"}.yaml(),
			want: []string{`targets[0].healthURL: expected a string, got a mapping`},
		},
		{
			name: "invalid YAML",
			src:  "global:\n  interval: 5s\n targets: []\n",
			want: []string{"yaml: line 2: did not find expected key"},
		},
		{
			name: "two documents",
			src:  parts{}.yaml() + "---\nglobal: {}\n",
			want: []string{"yaml: line 15: a second YAML document; the configuration is one document"},
		},
		{
			name: "empty document",
			src:  "",
			want: []string{"targets: at least one target is required"},
		},

		// Global.
		{
			name: "zero interval",
			src:  parts{global: "  interval: 0s\n"}.yaml(),
			want: []string{"global.interval: must be > 0, got 0s"},
		},
		{
			name: "global maxGap below interval",
			src:  parts{global: "  interval: 10s\n  maxGap: 5s\n"}.yaml(),
			want: []string{"global.maxGap: must be >= interval (10s), got 5s"},
		},
		{
			name: "log level",
			src:  parts{global: "  logLevel: verbose\n"}.yaml(),
			want: []string{`global.logLevel: must be one of debug|info|warn|error, got "verbose"`},
		},
		{
			name: "listen address",
			src:  parts{global: "  listenAddress: 9847\n"}.yaml(),
			want: []string{`global.listenAddress: must be host:port, got "9847"`},
		},
		{
			name: "non-loopback listen address needs a token",
			src:  parts{global: "  listenAddress: 0.0.0.0:9847\n"}.yaml(),
			want: []string{`global.api.tokenFile: required when listenAddress is not a loopback address, got listenAddress "0.0.0.0:9847"`},
		},
		{
			name: "loopback listen addresses need no token",
			src:  parts{global: "  listenAddress: localhost:9847\n"}.yaml(),
		},
		{
			name: "off is a string, not a YAML 1.1 boolean",
			src:  parts{global: "  notify: {wouldRollback: off}\n"}.yaml(),
		},
		{
			name: "query parallelism",
			src:  parts{global: "  queryParallelism: 0\n"}.yaml(),
			want: []string{"global.queryParallelism: must be >= 1, got 0"},
		},
		{
			name: "prometheus url required by a PromQL trigger",
			src:  strings.Replace(parts{}.yaml(), `  prometheus: {url: "http://prometheus:9090"}`+"\n", "", 1),
			want: []string{"global.prometheus.url: required by targets[0].triggers[0] (kind errorRate)"},
		},
		{
			name: "prometheus url not a URL",
			src:  strings.Replace(parts{}.yaml(), `http://prometheus:9090`, `prometheus:9090`, 1),
			want: []string{`global.prometheus.url: must be an http or https URL, got "prometheus:9090"`},
		},
		{
			name: "url with credentials",
			src:  strings.Replace(parts{}.yaml(), `http://prometheus:9090`, `http://admin:hunter2@prometheus:9090`, 1),
			want: []string{`global.prometheus.url: must not hold credentials (user info)`},
		},
		{
			name: "database: maxConns, both secret sources, timeouts, binDir",
			src: `global:
  prometheus: {url: "http://prometheus:9090"}
  databases:
    - name: primary
      dsnFile: /secrets/primary-dsn
      dsnEnv: PRIMARY_DSN
      maxConns: 3
      connectTimeout: 0s
      binDir: usr/lib
    - name: primary
      dsnEnv: 1BAD
targets:
  - {name: api, namespace: prod, deployment: api, triggers: [{name: errors, kind: errorRate, above: 0.05}]}
`,
			want: []string{
				"global.databases[0]: only one of dsnFile and dsnEnv is allowed",
				"global.databases[0].maxConns: must be 1 or 2, got 3",
				"global.databases[0].connectTimeout: must be > 0, got 0s",
				`global.databases[0].binDir: must be an absolute path, got "usr/lib"`,
				`global.databases[1].name: duplicate database name "primary" (also global.databases[0])`,
				`global.databases[1].dsnEnv: not a valid environment variable name, got "1BAD"`,
			},
		},
		{
			name: "database without a secret source",
			src:  strings.Replace(parts{}.yaml(), "      dsnFile: /secrets/primary-dsn\n", "", 1),
			want: []string{"global.databases[0]: one of dsnFile and dsnEnv is required"},
		},
		{
			name: "leader election ordering",
			src:  parts{global: "  leaderElection: {enabled: true, leaseDuration: 10s, renewDeadline: 10s, retryPeriod: 9s}\n"}.yaml(),
			want: []string{
				"global.leaderElection.leaseDuration: must be greater than renewDeadline (10s), got 10s",
				"global.leaderElection.renewDeadline: must be greater than 1.2 × retryPeriod (9s), got 10s",
			},
		},
		{
			name: "leader election names",
			src:  parts{global: "  leaderElection: {namespace: Rollguard, leaseName: \"\"}\n"}.yaml(),
			want: []string{
				`global.leaderElection.namespace: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got "Rollguard"`,
				"global.leaderElection.leaseName: must not be empty",
			},
		},
		{
			name: "interlocks",
			src:  parts{global: "  interlocks: {maxRollbacksPerHour: 0, maxRevisionAge: 0s}\n"}.yaml(),
			want: []string{
				"global.interlocks.maxRollbacksPerHour: must be >= 1 (use freeze to stop every rollback), got 0",
				"global.interlocks.maxRevisionAge: must be > 0, got 0s",
			},
		},
		{
			name: "notify",
			src:  parts{global: "  notify: {pagerduty: {endpoint: \"\", timeout: 0s}, wouldRollback: loud, statusURL: \"/status\", incidentDir: \"\", incidentStore: {kind: dir}}\n"}.yaml(),
			want: []string{
				"global.notify.pagerduty.endpoint: must not be empty",
				"global.notify.pagerduty.timeout: must be > 0, got 0s",
				"global.notify.incidentDir: must not be empty with incidentStore.kind dir",
				`global.notify.wouldRollback: must be one of info|off, got "loud"`,
				`global.notify.statusURL: must be an http or https URL, got "/status"`,
			},
		},
		{
			name: "incident store",
			src:  parts{global: "  notify: {incidentStore: {kind: disk, namespace: Rollguard_NS, maxRecords: 0, maxAge: 0s}}\n"}.yaml(),
			want: []string{
				`global.notify.incidentStore.kind: must be one of cluster|dir, got "disk"`,
				`global.notify.incidentStore.namespace: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got "Rollguard_NS"`,
				"global.notify.incidentStore.maxRecords: must be >= 1, got 0",
				"global.notify.incidentStore.maxAge: must be > 0, got 0s",
			},
		},

		// Targets.
		{
			name: "no targets",
			src:  "global: {}\ntargets: []\n",
			want: []string{"targets: at least one target is required"},
		},
		{
			name: "target names and Kubernetes names",
			src: `global: {prometheus: {url: "http://p:9090"}}
targets:
  - {name: api, namespace: Prod_1, deployment: "api..v2", triggers: [{name: errors, kind: errorRate, above: 0.05}]}
  - {name: api, namespace: prod, deployment: api, triggers: [{name: errors, kind: errorRate, above: 0.05}]}
  - {name: api2, namespace: prod, deployment: api, triggers: [{name: errors, kind: errorRate, above: 0.05}]}
  - {name: "", namespace: "", deployment: "", triggers: []}
`,
			want: []string{
				`targets[0].namespace: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got "Prod_1"`,
				`targets[0].deployment: must be a DNS-1123 subdomain (lower-case letters, digits, '-' and '.', at most 253), got "api..v2"`,
				`targets[1].name: duplicate target name "api" (also targets[0])`,
				"targets[2].deployment: Deployment prod/api is already watched by targets[1]",
				"targets[3].name: must not be empty",
				"targets[3].namespace: must not be empty",
				"targets[3].deployment: must not be empty",
				"targets[3].triggers: at least one trigger is required",
			},
		},
		{
			name: "containers, health URL, match labels",
			src:  parts{target: "    containers: [api, api, Side_car]\n    healthURL: ftp://api/health\n    match: {namespace: prod, 0bad: x}\n"}.yaml(),
			want: []string{
				`targets[0].containers[1]: duplicate container "api"`,
				`targets[0].containers[2]: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got "Side_car"`,
				`targets[0].healthURL: must be an http or https URL, got "ftp://api/health"`,
				`targets[0].match.0bad: not a valid label name, got "0bad"`,
			},
		},
		{
			name: "target notify needs the global notifiers",
			src:  parts{target: "    notify: {severity: urgent, pagerduty: true, slack: true}\n"}.yaml(),
			want: []string{
				`targets[0].notify.severity: must be one of critical|error|warning|info, got "urgent"`,
				"targets[0].notify.pagerduty: requires global.notify.pagerduty.routingKeyFile",
				"targets[0].notify.slack: requires global.notify.slack.webhookURLFile",
			},
		},

		// Triggers.
		{
			name: "zero window",
			src: parts{triggers: `      - name: errors
        kind: errorRate
        above: 0.05
      - name: latency
        kind: latencyP99
        above: 5
        for: 0s
`}.yaml(),
			want: []string{"targets[0].triggers[1].for: must be > 0, got 0s"},
		},
		{
			name: "zero global window is reported once, where it is written",
			src:  parts{global: "  for: 0s\n"}.yaml(),
			want: []string{"global.for: must be > 0, got 0s"},
		},
		{
			name: "maxGap and blindAfter",
			src: parts{triggers: `      - {name: errors, kind: errorRate, above: 0.05, maxGap: 1s, blindAfter: 0s}
      - {name: errors2, kind: errorRate, above: 0.05, maxGap: 0s}
`}.yaml(),
			want: []string{
				"targets[0].triggers[0].maxGap: must be >= global.interval (5s), got 1s",
				"targets[0].triggers[0].blindAfter: must be > 0, got 0s",
				"targets[0].triggers[1].maxGap: must be > 0, got 0s",
			},
		},
		{
			name: "threshold: NaN, infinity, both, neither",
			src: parts{triggers: `      - {name: a, kind: errorRate, above: .nan}
      - {name: b, kind: errorRate, below: -.inf}
      - {name: c, kind: errorRate, above: 0.5, below: 0.1}
      - {name: d, kind: errorRate}
      - {name: e, kind: errorRate, above: null}
`}.yaml(),
			want: []string{
				"targets[0].triggers[0].above: must be a finite number, got NaN",
				"targets[0].triggers[1].below: must be a finite number, got -Inf",
				"targets[0].triggers[2]: only one of above and below is allowed",
				"targets[0].triggers[3]: one of above and below is required",
				"targets[0].triggers[4]: one of above and below is required",
			},
		},
		{
			name: "trigger names",
			src: parts{triggers: `      - {name: errors, kind: errorRate, above: 0.05}
      - {name: errors, kind: latencyP99, above: 5}
      - {name: Latency, kind: latencyP99, above: 5}
`}.yaml(),
			want: []string{
				`targets[0].triggers[1].name: duplicate trigger name "errors" (also targets[0].triggers[0])`,
				`targets[0].triggers[2].name: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got "Latency"`,
			},
		},
		{
			name: "kind",
			src: parts{triggers: `      - {name: a, kind: errorrate, above: 1}
      - {name: b, above: 1}
`}.yaml(),
			want: []string{
				`targets[0].triggers[0].kind: must be one of errorRate|latencyP99|connections|replicationLag|prometheus|sql, got "errorrate"`,
				"targets[0].triggers[1].kind: required, one of errorRate|latencyP99|connections|replicationLag|prometheus|sql",
			},
		},
		{
			name: "queries and databases by kind",
			src: parts{triggers: `      - {name: a, kind: prometheus, above: 1}
      - {name: b, kind: sql, above: 1}
      - {name: c, kind: sql, query: "SELECT 1", database: replica, above: 1}
      - {name: d, kind: connections, above: 0.95, volumeQuery: "x"}
      - {name: e, kind: errorRate, above: 0.05, database: primary, application: api}
      - {name: f, kind: replicationLag, database: primary, above: 30, application: api, match: {slot: sub}}
      - {name: g, kind: connections, database: primary, application: pggit-api, above: 0.5}
`}.yaml(),
			want: []string{
				"targets[0].triggers[0].query: required for kind prometheus",
				"targets[0].triggers[1].query: required for kind sql",
				"targets[0].triggers[1].database: required for kind sql",
				`targets[0].triggers[2].database: unknown database "replica" (defined: primary)`,
				"targets[0].triggers[3].database: required for kind connections",
				"targets[0].triggers[3].volumeQuery: not used by kind connections",
				`targets[0].triggers[4].database: not used by kind errorRate, got "primary"`,
				`targets[0].triggers[4].application: only used by kind connections, got "api"`,
				`targets[0].triggers[5].application: only used by kind connections, got "api"`,
			},
		},
		{
			name: "minRate needs a volume query",
			src: parts{triggers: `      - {name: a, kind: latencyP99, above: 5, minRate: 1}
      - {name: b, kind: errorRate, above: 0.05, minRate: -1}
      - {name: c, kind: errorRate, above: 0.05, minRate: 1}
`}.yaml(),
			want: []string{
				"targets[0].triggers[0].minRate: requires a volumeQuery, got minRate 1",
				"targets[0].triggers[1].minRate: must be a finite number >= 0, got -1",
			},
		},
		{
			name: "enums",
			src: parts{triggers: `      - {name: a, kind: errorRate, above: 0.05, onError: ignore, action: nuke, severity: high}
`, target: "    rollback: {strategy: yolo}\n"}.yaml(),
			want: []string{
				`targets[0].triggers[0].onError: must be one of nodata|breach, got "ignore"`,
				`targets[0].triggers[0].severity: must be one of critical|error|warning|info, got "high"`,
				`targets[0].triggers[0].action: must be one of rollback|restart-then-rollback|full-rollback|page, got "nuke"`,
				`targets[0].rollback.strategy: must be one of quick|revert|full, got "yolo"`,
			},
		},
		{
			name: "actions that need rollback settings",
			src: parts{triggers: `      - {name: a, kind: errorRate, above: 0.05, action: full-rollback}
      - {name: b, kind: connections, database: primary, above: 0.95, action: restart-then-rollback}
      - {name: c, kind: errorRate, above: 0.05, security: true}
`, target: "    rollback: {strategy: full}\n"}.yaml(),
			want: []string{
				"targets[0].triggers[0].action: full-rollback requires targets[0].rollback.database",
				"targets[0].triggers[1].action: restart-then-rollback requires targets[0].rollback.poolRecovery.database (or rollback.database)",
				"targets[0].triggers[1].action: restart-then-rollback requires targets[0].rollback.poolRecovery.role",
				"targets[0].triggers[2].security: requires global.notify.pagerduty.securityRoutingKeyFile",
				"targets[0].rollback.strategy: full requires targets[0].rollback.database",
			},
		},

		{
			name: "gitops policy",
			src:  parts{target: "    gitops: {mode: fight, argocdNamespace: Argo_CD}\n"}.yaml(),
			want: []string{
				`targets[0].gitops.mode: must be one of refuse|suspend|ignore, got "fight"`,
				`targets[0].gitops.argocdNamespace: must be a DNS-1123 label (lower-case letters, digits and '-', at most 63), got "Argo_CD"`,
			},
		},

		// Rollback.
		{
			name: "rollback settings",
			src: parts{target: `    containers: [api]
    rollback:
      stableImage: {api: "", sidecar: "img:1"}
      rampSteps: [2, 2, 0]
      rolloutTimeout: 0s
      revertMaxSurge: 0%
      verifyWindow: 0s
      database: {name: replica, dumpPath: backups/x.dump, verifyTables: [" "], maxDumpAge: 0s}
      poolRecovery: {idleInTransactionAge: 0s}
      multiRegion: {secondaries: [], maxLag: 0s}
`}.yaml(),
			want: []string{
				`targets[0].rollback.stableImage.api: image must not be empty`,
				`targets[0].rollback.stableImage.sidecar: container "sidecar" is not in targets[0].containers`,
				"targets[0].rollback.rampSteps[1]: must be greater than the previous step (2), got 2",
				"targets[0].rollback.rampSteps[2]: must be >= 1, got 0",
				"targets[0].rollback.rolloutTimeout: must be > 0, got 0s",
				`targets[0].rollback.revertMaxSurge: must be a count >= 1 or a percentage such as 100%, got "0%"`,
				"targets[0].rollback.verifyWindow: must be > 0, got 0s",
				`targets[0].rollback.database.name: unknown database "replica" (defined: primary)`,
				"targets[0].rollback.database.migration: must not be empty",
				`targets[0].rollback.database.dumpPath: must be an absolute path, got "backups/x.dump"`,
				"targets[0].rollback.database.forensicDir: must not be empty",
				"targets[0].rollback.database.verifyTables[0]: must not be empty",
				"targets[0].rollback.database.maxDumpAge: must be > 0, got 0s",
				// poolRecovery.database defaults to rollback.database.name.
				`targets[0].rollback.poolRecovery.database: unknown database "replica" (defined: primary)`,
				"targets[0].rollback.poolRecovery.idleInTransactionAge: must be > 0, got 0s",
				"targets[0].rollback.multiRegion.secondaries: at least one secondary database is required",
				"targets[0].rollback.multiRegion.subscription: must not be empty",
				"targets[0].rollback.multiRegion.maxLag: must be > 0, got 0s",
			},
		},
		{
			name: "multi-region without the primary's database",
			src: parts{target: `    rollback:
      multiRegion: {secondaries: [primary], subscription: sub}
`}.yaml(),
			want: []string{
				"targets[0].rollback.multiRegion: needs the primary's database: set targets[0].rollback.database or targets[0].rollback.poolRecovery.database",
			},
		},
		{
			name: "a value that failed to decode is not reported again as invalid",
			src:  parts{global: "  interval: soon\n  leaderElection: {retryPeriod: often}\n"}.yaml(),
			want: []string{
				`global.interval: not a valid duration string: "soon"`,
				`global.leaderElection.retryPeriod: not a valid duration string: "often"`,
			},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadErrors(t, tc.src)
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n got  %q\n want %q\nconfig:\n%s", got, tc.want, tc.src)
			}
		})
	}
}

// Every problem comes back from one Load, decoding and validation alike,
// and LoadFile names the file and the lines.
func TestLoadReportsEveryErrorAtOnce(t *testing.T) {
	src := `global:
  interval: 0s
  prometheus: {url: "http://prometheus:9090", timeoutt: 5s}
  databases:
    - {name: primary, dsnFile: /s/dsn, maxConns: 5}
targets:
  - name: api
    namespace: prod
    deployment: api
    triggers:
      - {name: errors, kind: errorRate, above: .nan, for: 0s}
      - {name: lag, kind: replicationLag, database: nope, above: 30, action: nuke, match: {slot: sub}}
`
	path := t.TempDir() + "/rollguard.yaml"
	if err := writeFile(path, src); err != nil {
		t.Fatal(err)
	}
	_, err := LoadFile(path)
	var errs *Errors
	if !errors.As(err, &errs) {
		t.Fatalf("LoadFile = %v, want *Errors", err)
	}
	want := []string{
		path + ":3: global.prometheus.timeoutt: unknown field",
		path + ": global.interval: must be > 0, got 0s",
		path + ": global.databases[0].maxConns: must be 1 or 2, got 5",
		path + ": targets[0].triggers[0].above: must be a finite number, got NaN",
		path + ": targets[0].triggers[0].for: must be > 0, got 0s",
		path + `: targets[0].triggers[1].database: unknown database "nope" (defined: primary)`,
		path + `: targets[0].triggers[1].action: must be one of rollback|restart-then-rollback|full-rollback|page, got "nuke"`,
	}
	if got := errs.Lines(); !slices.Equal(got, want) {
		t.Errorf("Lines():\n got  %q\n want %q", got, want)
	}
	if msg := err.Error(); !strings.HasPrefix(msg, path+": 7 errors: global.prometheus.timeoutt: unknown field; global.interval: ") {
		t.Errorf("Error() = %q", msg)
	}
	var one *Error
	if !errors.As(err, &one) || one.Path != "global.prometheus.timeoutt" || one.Line != 3 {
		t.Errorf("errors.As(*Error) = %+v", one)
	}
}

func TestLoadFileMissing(t *testing.T) {
	_, err := LoadFile("/nonexistent/rollguard.yaml")
	if err == nil || err.Error() != "reading config file: open /nonexistent/rollguard.yaml: no such file or directory" {
		t.Errorf("LoadFile = %v", err)
	}
}
