package main

import (
	"testing"
	"time"
)

func TestSpliceSection(t *testing.T) {
	tests := []struct {
		name, doc, section, want string
	}{
		{
			name:    "no markers: appended after the hand-written text",
			doc:     "# Benchmarks\n\n## Evaluator tick\n\ntext\n",
			section: "## Results\n",
			want:    "# Benchmarks\n\n## Evaluator tick\n\ntext\n\n" + beginMarker + "\n## Results\n" + endMarker + "\n",
		},
		{
			name:    "markers: only the text between them is replaced",
			doc:     "head\n" + beginMarker + "\nold\n" + endMarker + "\ntail\n",
			section: "new\n\n",
			want:    "head\n" + beginMarker + "\nnew\n" + endMarker + "\ntail\n",
		},
		{
			name:    "empty file",
			doc:     "",
			section: "x",
			want:    "\n\n" + beginMarker + "\nx\n" + endMarker + "\n",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := spliceSection(tt.doc, tt.section); got != tt.want {
				t.Errorf("spliceSection() =\n%q\nwant\n%q", got, tt.want)
			}
		})
	}
}

func TestStatsOf(t *testing.T) {
	s := time.Second
	tests := []struct {
		name string
		in   []time.Duration
		want stats
	}{
		{"empty", nil, stats{}},
		{"odd count, unsorted", []time.Duration{5 * s, 1 * s, 3 * s}, stats{1 * s, 3 * s, 5 * s}},
		{"even count takes the mean of the middle two", []time.Duration{4 * s, 1 * s, 2 * s, 10 * s}, stats{1 * s, 3 * s, 10 * s}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := statsOf(tt.in); got != tt.want {
				t.Errorf("statsOf(%v) = %+v, want %+v", tt.in, got, tt.want)
			}
		})
	}
}

func TestRateLag(t *testing.T) {
	// 5 % of 20 % faulty traffic over a 5 s range: a quarter of the range.
	if got, want := rateLag(), 1250*time.Millisecond; got != want {
		t.Errorf("rateLag() = %s, want %s", got, want)
	}
}

func TestLogLineTime(t *testing.T) {
	l := logLine{TS: "2026-11-25T22:10:15.434Z"}
	want := time.Date(2026, 11, 25, 22, 10, 15, 434e6, time.UTC)
	if got := l.time(); !got.Equal(want) {
		t.Errorf("time() = %s, want %s", got, want)
	}
	if got := (logLine{TS: "garbage"}).time(); !got.IsZero() {
		t.Errorf("time() of garbage = %s, want zero", got)
	}
}
