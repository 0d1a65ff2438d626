package app

import (
	"path/filepath"
	"reflect"
	"testing"
	"time"

	"github.com/rollguard/rollguard/pkg/backtest"
	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/rules"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// A backtest answers "what would the daemon have done" only if it judges
// with the daemon's rules: for every shipped configuration, the rule the
// backtest replays for each trigger must equal, field for field, the rule
// of the evaluator spec the daemon sets.
func TestBacktestRulesEqualDaemonRules(t *testing.T) {
	forShippedConfigs(t, func(t *testing.T, cfg *config.Config) {
		var daemon []trigger.Rule
		for _, s := range rules.Specs(cfg) {
			daemon = append(daemon, s.Rule)
		}
		var bt []trigger.Rule
		for _, tg := range cfg.Targets {
			for _, tr := range tg.Triggers {
				bt = append(bt, backtest.RuleFor(tg, tr, time.Duration(cfg.Global.Interval)))
			}
		}
		if len(daemon) == 0 {
			t.Fatal("the configuration has no triggers")
		}
		if !reflect.DeepEqual(bt, daemon) {
			t.Fatalf("backtest rules differ from the daemon's:\nbacktest %+v\ndaemon   %+v", bt, daemon)
		}
		for _, r := range daemon {
			// A MaxGap of 0 would be defaulted again by the evaluator;
			// loading fills it, so both run the same gap.
			if r.MaxGap <= 0 {
				t.Errorf("%s/%s: maxGap %s, want the loaded default", r.Target, r.Name, r.MaxGap)
			}
			if err := r.Validate(); err != nil {
				t.Errorf("%s/%s: %v", r.Target, r.Name, err)
			}
		}
	})
}

// forShippedConfigs runs check on each configuration in configs/, loaded
// as the daemon loads it, in a subtest named after its file.
func forShippedConfigs(t *testing.T, check func(t *testing.T, cfg *config.Config)) {
	t.Helper()
	files, err := filepath.Glob("../../configs/*.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no configurations in configs/")
	}
	for _, f := range files {
		t.Run(filepath.Base(f), func(t *testing.T) {
			cfg, err := config.LoadFile(f)
			if err != nil {
				t.Fatalf("LoadFile: %v", err)
			}
			check(t, cfg)
		})
	}
}
