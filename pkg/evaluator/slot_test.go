package evaluator

import (
	"testing"
	"time"
)

func TestSlot(t *testing.T) {
	base := time.Date(2026, 11, 25, 22, 17, 56, 380e6, time.UTC)
	iv := 5 * time.Second
	tests := []struct {
		name string
		now  time.Duration // after base
		want time.Duration
	}{
		{"on time", 60 * time.Second, 60 * time.Second},
		{"early by timer jitter", 60*time.Second - 3*time.Millisecond, 60 * time.Second},
		{"late by scheduling", 60*time.Second + 40*time.Millisecond, 60 * time.Second},
		{"after a dropped tick", 70*time.Second + time.Millisecond, 70 * time.Second},
		{"just under half an interval late", 62499 * time.Millisecond, 60 * time.Second},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := slot(base, base.Add(tt.now), iv); !got.Equal(base.Add(tt.want)) {
				t.Errorf("slot(+%s) = +%s, want +%s", tt.now, got.Sub(base), tt.want)
			}
		})
	}
}
