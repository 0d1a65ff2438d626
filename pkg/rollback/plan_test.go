package rollback

import (
	"testing"

	"github.com/rollguard/rollguard/pkg/plan"
)

// A check without database handles plans a rolling plan's deployment part
// to see its pin: that part must roll too, be plannable on a target with no
// database, and take no step the whole plan would not take.
func TestDeploymentPart(t *testing.T) {
	want := map[plan.Name]plan.Name{
		plan.Quick:        plan.Quick,
		plan.Revert:       plan.Revert,
		plan.Full:         plan.Quick,
		plan.PoolRecovery: plan.PoolRecovery,
		plan.MultiRegion:  plan.Quick,
	}
	noDatabase := Target{Namespace: "prod", Deployment: "api"}
	for p, w := range want {
		t.Run(string(p), func(t *testing.T) {
			if !plan.Known(string(p)) {
				t.Fatalf("%s is not a plan", p)
			}
			part := p.DeploymentPart()
			if part != w {
				t.Fatalf("DeploymentPart = %s, want %s", part, w)
			}
			if part.Rolls() != p.Rolls() {
				t.Errorf("%s rolls %v, its part %s rolls %v", p, p.Rolls(), part, part.Rolls())
			}
			if !p.Rolls() {
				return
			}
			if err := noDatabase.check(part); err != nil {
				t.Errorf("part %s cannot be planned without a database: %v", part, err)
			}
			whole := map[string]bool{}
			for _, s := range Steps(p, Shape{Restore: true, MultiRegion: true}) {
				whole[s] = true
			}
			for _, s := range Steps(part, Shape{}) {
				if !whole[s] {
					t.Errorf("part %s takes step %s, which %s does not", part, s, p)
				}
			}
		})
	}
}
