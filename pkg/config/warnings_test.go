package config

import (
	"slices"
	"testing"
)

// TestLoadWarnsAboutOddChoices: legal choices that are probably not meant
// load, with a warning each.
func TestLoadWarnsAboutOddChoices(t *testing.T) {
	for _, tc := range []struct {
		name string
		p    parts
		want []string
	}{
		{name: "none for the base"},
		{
			name: "error rate without a volume guard",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        above: 0.05
`},
			want: []string{"targets[0].triggers[0].minRate: 0 (no volume guard): a handful of requests with one failure can fire this errorRate; set minRate (requests per second)"},
		},
		{
			name: "window not a multiple of the interval",
			p: parts{global: "  interval: 5s\n", triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: 0.05
        for: 62s
`},
			want: []string{"targets[0].triggers[0].for: 1m2s is not a multiple of global.interval 5s: the trigger fires at the first sample at or after 1m2s, 1m5s after the breach began"},
		},
		{
			name: "any error fires",
			p: parts{triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: 0
`},
			want: []string{"targets[0].triggers[0].above: 0: a single failed request in the window is a breach"},
		},
		{
			name: "pinned query",
			p: parts{triggers: `      - name: custom
        kind: prometheus
        query: 'up @ 1700000000'
        below: 1
`},
			want: []string{"targets[0].triggers[0].query: uses the @ modifier: part of the query reads a fixed instant and never changes"},
		},
		{
			name: "verify window shorter than the queries' range",
			p: parts{target: `    rollback:
      rampPause: 1s
      verifyWindow: 5s
`, triggers: `      - name: errors
        kind: errorRate
        minRate: 1
        above: 0.05
`},
			want: []string{"targets[0].rollback.verifyWindow: 5s, with rampPause 1s, cannot see the recovery in the trigger queries, which read 1m of history (targets[0].triggers[0]): verify waits until 1m after the rollout before it judges, so it takes up to 1m5s"},
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			cfg, err := Load([]byte(tc.p.yaml()))
			if err != nil {
				t.Fatalf("Load: %v", err)
			}
			var got []string
			for _, w := range cfg.Warnings() {
				got = append(got, w.Error())
			}
			if !slices.Equal(got, tc.want) {
				t.Errorf("warnings:\n got %q\nwant %q", got, tc.want)
			}
		})
	}
}
