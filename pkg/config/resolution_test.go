package config

import (
	"slices"
	"strings"
	"testing"
	"time"
)

func TestPrometheusResolution(t *testing.T) {
	doc := func(global string) string {
		return strings.Replace(parts{}.yaml(), `  prometheus: {url: "http://prometheus:9090"}`, global, 1)
	}
	for _, tc := range []struct {
		name, global string
		want         time.Duration
		errs         []string
	}{
		{"default", `  prometheus: {url: "http://prometheus:9090"}`, time.Second, nil},
		{"default capped at a shorter interval", "  interval: 500ms\n  prometheus: {url: \"http://prometheus:9090\"}", 500 * time.Millisecond, nil},
		{"per tick", `  prometheus: {url: "http://prometheus:9090", resolution: 0s}`, 0, nil},
		{"explicit", `  prometheus: {url: "http://prometheus:9090", resolution: 250ms}`, 250 * time.Millisecond, nil},
		{"above the interval", "  interval: 2s\n  prometheus: {url: \"http://prometheus:9090\", resolution: 5s}", 0,
			[]string{"global.prometheus.resolution: must be between 0s and global.interval (2s), got 5s"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			src := doc(tc.global)
			if got := loadErrors(t, src); !slices.Equal(got, tc.errs) {
				t.Fatalf("errors %q, want %q", got, tc.errs)
			}
			if tc.errs != nil {
				return
			}
			cfg, err := Load([]byte(src))
			if err != nil {
				t.Fatal(err)
			}
			if got := time.Duration(cfg.Global.Prometheus.Resolution); got != tc.want {
				t.Errorf("resolution %s, want %s", got, tc.want)
			}
		})
	}
}
