package config

import (
	"slices"
	"testing"
)

// TestLoadRefusesTriggersThatCannotFireOrAlwaysFire: a query Prometheus
// rejects, a ratio threshold out of [0, 1), a window of fewer than two
// samples, onError: breach on a Prometheus kind and a replication lag
// trigger that reads every slot of the primary are configuration errors,
// each with its path.
func TestLoadRefusesTriggersThatCannotFireOrAlwaysFire(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    parts
		want []string
	}{
		{
			name: "unparseable PromQL with the parser's column",
			p: parts{triggers: `      - name: custom
        kind: prometheus
        query: 'sum(rate(x[1m]'
        above: 1
`},
			want: []string{"targets[0].triggers[0].query: PromQL parse error at column 15: unclosed left parenthesis"},
		},
		{
			name: "unparseable volume query",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        query: 'sum(rate(a[1m])) / sum(rate(b[1m]))'
        volumeQuery: 'sum(rate(b[1m])'
        minRate: 1
        above: 0.05
`},
			want: []string{"targets[0].triggers[0].volumeQuery: PromQL parse error at column 16: unclosed left parenthesis"},
		},
		{
			name: "unparseable template, reported once where it is written",
			p: parts{global: `  templates:
    latencyP99:
      query: 'histogram_quantile(0.99, rate(x[1m])'
`, triggers: `      - name: p99
        kind: latencyP99
        above: 5
      - name: p99-again
        kind: latencyP99
        above: 8
`},
			want: []string{"global.templates.latencyP99.query: PromQL parse error at column 37: unclosed left parenthesis"},
		},
		{
			name: "a range vector is no trigger value",
			p: parts{triggers: `      - name: custom
        kind: prometheus
        query: 'http_requests_total[1m]'
        above: 1
`},
			want: []string{"targets[0].triggers[0].query: must return an instant vector or a scalar, got a range vector"},
		},
		{
			name: "error rate above a negative threshold always breaches",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: -1
`},
			want: []string{"targets[0].triggers[0].above: an errorRate is a ratio in [0, 1]: above must be in [0, 1), got -1 (it would always breach)"},
		},
		{
			name: "error rate above 5 never fires",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: 5
`},
			want: []string{"targets[0].triggers[0].above: an errorRate is a ratio in [0, 1]: above must be in [0, 1), got 5 (it could never fire)"},
		},
		{
			name: "error rate above 1 never fires",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: 1
`},
			want: []string{"targets[0].triggers[0].above: an errorRate is a ratio in [0, 1]: above must be in [0, 1), got 1 (it could never fire)"},
		},
		{
			name: "error rate below 0 never fires",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        below: 0
`},
			want: []string{"targets[0].triggers[0].below: an errorRate is a ratio in [0, 1]: below must be in (0, 1], got 0 (it could never fire)"},
		},
		{
			name: "connections above 1.5",
			p: parts{triggers: `      - name: pool
        kind: connections
        database: primary
        above: 1.5
`},
			want: []string{"targets[0].triggers[0].above: connections is a ratio in [0, 1]: above must be in [0, 1), got 1.5 (it could never fire)"},
		},
		{
			name: "a window of one interval",
			p: parts{global: "  interval: 5s\n", triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: 0.05
        for: 1s
`},
			want: []string{"targets[0].triggers[0].for: must be at least two intervals (10s with global.interval 5s), got 1s: a shorter window holds two samples at most, one interval apart"},
		},
		{
			name: "the global window too",
			p:    parts{global: "  interval: 5s\n  for: 5s\n"},
			want: []string{"global.for: must be at least two intervals (10s with global.interval 5s), got 5s: a shorter window holds two samples at most, one interval apart"},
		},
		{
			name: "onError breach on a Prometheus kind",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: 0.05
        onError: breach
`},
			want: []string{"targets[0].triggers[0].onError: breach is for PostgreSQL kinds (connections, replicationLag, sql), got kind errorRate: a Prometheus timeout or error says nothing about the Deployment"},
		},
		{
			name: "replication lag without a slot reads every slot of the primary",
			p: parts{triggers: `      - name: lag
        kind: replicationLag
        database: primary
        above: 30
`},
			want: []string{"targets[0].triggers[0].match: replicationLag needs match.slot, the replication slot of the subscriber it watches (SELECT subslotname FROM pg_subscription on the subscriber): without it the trigger reads the worst slot on the primary, and an abandoned or unrelated slot fires it"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := loadErrors(t, tc.p.yaml())
			if !slices.Equal(got, tc.want) {
				t.Errorf("errors:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
