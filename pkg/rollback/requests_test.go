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

// A check without database handles plans a rolling plan's deployment part
// to see its pin: that part must roll too, be plannable on a target with no
// database, and take no step the whole plan would not take.
func TestDeploymentPart(t *testing.T) {
	want := map[Action]Action{
		ActionQuick:        ActionQuick,
		ActionRevert:       ActionRevert,
		ActionFull:         ActionQuick,
		ActionPoolRecovery: ActionPoolRecovery,
		ActionMultiRegion:  ActionQuick,
	}
	noDatabase := Target{Namespace: "prod", Deployment: "api"}
	for plan, w := range want {
		t.Run(string(plan), func(t *testing.T) {
			if !IsPlan(string(plan)) {
				t.Fatalf("%s is not a plan", plan)
			}
			part := plan.DeploymentPart()
			if part != w {
				t.Fatalf("DeploymentPart = %s, want %s", part, w)
			}
			if part.Rolls() != plan.Rolls() {
				t.Errorf("%s rolls %v, its part %s rolls %v", plan, plan.Rolls(), part, part.Rolls())
			}
			if !plan.Rolls() {
				return
			}
			if err := noDatabase.check(part); err != nil {
				t.Errorf("part %s cannot be planned without a database: %v", part, err)
			}
			whole := map[string]bool{}
			for _, s := range Steps(plan, Shape{Restore: true, MultiRegion: true}) {
				whole[s] = true
			}
			for _, s := range Steps(part, Shape{}) {
				if !whole[s] {
					t.Errorf("part %s takes step %s, which %s does not", part, s, plan)
				}
			}
		})
	}
}
