package rollback

import "testing"

func TestPlanFor(t *testing.T) {
	for _, tc := range []struct {
		request    string
		configured Action
		restarted  bool
		want       Action
		ok         bool
	}{
		{RequestRollback, "", false, ActionQuick, true},
		{RequestRollback, ActionRevert, false, ActionRevert, true},
		{RequestRollback, ActionMultiRegion, false, ActionMultiRegion, true},
		{RequestFullRollback, ActionRevert, false, ActionFull, true},
		{RequestRestartThenRollback, ActionRevert, false, ActionPoolRecovery, true},
		{RequestRestartThenRollback, ActionRevert, true, ActionRevert, true},
		{RequestRestartThenRollback, "", true, ActionQuick, true},
		{string(ActionPoolRecovery), ActionRevert, true, ActionPoolRecovery, true},
		{string(ActionFull), ActionQuick, false, ActionFull, true},
		{RequestPage, ActionQuick, false, "", false},
	} {
		t.Run(tc.request, func(t *testing.T) {
			got, ok := PlanFor(tc.request, tc.configured, tc.restarted)
			if got != tc.want || ok != tc.ok {
				t.Errorf("PlanFor(%q, %q, %v) = %q, %v; want %q, %v", tc.request, tc.configured, tc.restarted, got, ok, tc.want, tc.ok)
			}
		})
	}
}
