package plan

import "testing"

func TestFor(t *testing.T) {
	for _, tc := range []struct {
		request    string
		configured Name
		restarted  bool
		want       Name
		ok         bool
	}{
		{RequestRollback, "", false, Quick, true},
		{RequestRollback, Revert, false, Revert, true},
		{RequestRollback, MultiRegion, false, MultiRegion, true},
		{RequestFullRollback, Revert, false, Full, true},
		{RequestRestartThenRollback, Revert, false, PoolRecovery, true},
		{RequestRestartThenRollback, Revert, true, Revert, true},
		{RequestRestartThenRollback, "", true, Quick, true},
		{string(PoolRecovery), Revert, true, PoolRecovery, true},
		{string(Full), Quick, false, Full, true},
		{RequestPage, Quick, false, "", false},
	} {
		t.Run(tc.request, func(t *testing.T) {
			got, ok := For(tc.request, tc.configured, tc.restarted)
			if got != tc.want || ok != tc.ok {
				t.Errorf("For(%q, %q, %v) = %q, %v; want %q, %v", tc.request, tc.configured, tc.restarted, got, ok, tc.want, tc.ok)
			}
		})
	}
}
