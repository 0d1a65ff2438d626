package app

import (
	"testing"

	"github.com/rollguard/rollguard/pkg/config"
	"github.com/rollguard/rollguard/pkg/notify"
	"github.com/rollguard/rollguard/pkg/rollback"
	"github.com/rollguard/rollguard/pkg/trigger"
)

// The configuration is the schema: it imports none of the packages that
// act (rollback, notify) or judge (trigger), so it spells the words they
// declare, and the daemon passes them through as text. Each pair must be
// the same word.
func TestConfigWordsAreTheRuntimeWords(t *testing.T) {
	for _, tc := range []struct{ config, runtime string }{
		{config.ActionRollback, rollback.RequestRollback},
		{config.ActionRestartThenRollback, rollback.RequestRestartThenRollback},
		{config.ActionFullRollback, rollback.RequestFullRollback},
		{config.ActionPage, rollback.RequestPage},
		{config.StrategyQuick, string(rollback.ActionQuick)},
		{config.StrategyRevert, string(rollback.ActionRevert)},
		{config.StrategyFull, string(rollback.ActionFull)},
		{config.PlanMultiRegion, string(rollback.ActionMultiRegion)},
		{config.SeverityCritical, string(notify.SeverityCritical)},
		{config.SeverityError, string(notify.SeverityError)},
		{config.SeverityWarning, string(notify.SeverityWarning)},
		{config.SeverityInfo, string(notify.SeverityInfo)},
		{config.OnErrorNoData, string(trigger.OnErrorNoData)},
		{config.OnErrorBreach, string(trigger.OnErrorBreach)},
	} {
		if tc.config != tc.runtime {
			t.Errorf("config says %q where the runtime says %q", tc.config, tc.runtime)
		}
	}
}
