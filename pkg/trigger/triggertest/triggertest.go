// Package triggertest holds what tests comparing trigger decisions made
// two ways (the backtest against the daemon, range queries against
// instants) share.
package triggertest

import (
	"math"

	"github.com/rollguard/rollguard/pkg/trigger"
	"github.com/rollguard/rollguard/pkg/window"
)

// Comparable returns d with every NaN value (its own and its samples')
// set to -1, so reflect.DeepEqual can compare it; d is not changed.
func Comparable(d trigger.Decision) trigger.Decision {
	if math.IsNaN(d.Value) {
		d.Value = -1
	}
	s := make([]window.Sample, len(d.Samples))
	for i, x := range d.Samples {
		if math.IsNaN(x.Value) {
			x.Value = -1
		}
		s[i] = x
	}
	d.Samples = s
	return d
}
