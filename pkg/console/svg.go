package console

import (
	"encoding/json"
	"fmt"
	"html/template"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/rollguard/rollguard/pkg/incident"
	"github.com/rollguard/rollguard/pkg/window"
)

// The SVG is built from numbers and escaped text only; colours come from
// classes in console.css (the CSP forbids inline style).

type sparkSize struct{ W, H float64 }

var (
	sparkSmall = sparkSize{W: 160, H: 36}
	sparkLarge = sparkSize{W: 320, H: 64}
)

// scale maps [lo, hi] to [a, b].
type scale struct{ lo, hi, a, b float64 }

func (s scale) at(v float64) float64 {
	if s.hi == s.lo {
		return (s.a + s.b) / 2
	}
	return s.a + (v-s.lo)*(s.b-s.a)/(s.hi-s.lo)
}

// valueRange is the y domain: every finite value and the threshold, with
// a margin, so the threshold line is always inside the picture.
func valueRange(values []float64, threshold float64) (lo, hi float64) {
	lo, hi = threshold, threshold
	for _, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			continue
		}
		lo, hi = math.Min(lo, v), math.Max(hi, v)
	}
	pad := (hi - lo) * 0.12
	if pad == 0 {
		pad = math.Max(math.Abs(hi)*0.1, 0.01)
	}
	lo, hi = lo-pad, hi+pad
	if lo < 0 && threshold >= 0 && minFinite(values) >= 0 {
		lo = 0 // rates and ratios are never negative: keep zero the floor
	}
	return lo, hi
}

func minFinite(vs []float64) float64 {
	m := math.Inf(1)
	for _, v := range vs {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			m = math.Min(m, v)
		}
	}
	return m
}

func breaches(v, threshold float64, op string) bool {
	switch op {
	case "above":
		return v > threshold
	case "below":
		return v < threshold
	}
	return false
}

func f1(v float64) string { return fmt.Sprintf("%.1f", v) }

// sparkline draws a trigger's window: the samples as a line (broken where
// there was no data), breaching samples as dots, no-data samples as ticks
// on the floor, and the threshold as a dashed line. The overview draws
// thousands, so it appends bytes instead of formatting.
func sparkline(samples []window.Sample, threshold float64, op string, sz sparkSize, label string) template.HTML {
	nBreach, nNoData := 0, 0
	for _, s := range samples {
		switch s.Kind {
		case window.Breach:
			nBreach++
		case window.NoData:
			nNoData++
		}
	}
	desc := fmt.Sprintf("%s: %d samples in the window, %d breaching, %d without data; threshold %s %s",
		label, len(samples), nBreach, nNoData, opSign(op), fmtNum(threshold))
	if len(samples) > 0 {
		desc += "; last " + fmtValue(samples[len(samples)-1].Value)
	}
	b := make([]byte, 0, 512+len(samples)*48)
	b = append(b, `<svg class="spark" viewBox="0 0 `...)
	b = num(b, sz.W, ' ')
	b = num(b, sz.H, '"')
	b = append(b, ` width="`...)
	b = num(b, sz.W, '"')
	b = append(b, ` height="`...)
	b = num(b, sz.H, '"')
	b = append(b, ` role="img" aria-label="`...)
	b = append(b, template.HTMLEscapeString(desc)...)
	b = append(b, `"><rect class="spark-bg" x="0" y="0" width="`...)
	b = num(b, sz.W, '"')
	b = append(b, ` height="`...)
	b = num(b, sz.H, '"')
	b = append(b, ` rx="3"/>`...)
	if len(samples) == 0 {
		b = append(b, `<text class="spark-empty" x="`...)
		b = num(b, sz.W/2, '"')
		b = append(b, ` y="`...)
		b = num(b, sz.H/2+4, '"')
		b = append(b, ` text-anchor="middle">no samples yet</text></svg>`...)
		return template.HTML(b)
	}
	lo, hi := valueRangeOf(samples, threshold)
	const padX, padY = 4.0, 4.0
	t0, t1 := samples[0].Time, samples[len(samples)-1].Time
	xs := scale{0, float64(t1.Sub(t0)), padX, sz.W - padX}
	ys := scale{lo, hi, sz.H - padY, padY}
	x := func(t time.Time) float64 { return xs.at(float64(t.Sub(t0))) }
	ty := ys.at(threshold)
	b = append(b, `<line class="spark-threshold" x1="0" x2="`...)
	b = num(b, sz.W, '"')
	b = append(b, ` y1="`...)
	b = num(b, ty, '"')
	b = append(b, ` y2="`...)
	b = num(b, ty, '"')
	b = append(b, `/>`...)
	inLine, n := false, 0
	end := func() {
		if inLine {
			b = append(b, `"/>`...)
		}
		inLine, n = false, 0
	}
	for i, s := range samples {
		if s.Kind == window.NoData || math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			end()
			continue
		}
		// A run of one point draws no line (its dot or nothing).
		if !inLine {
			if i+1 >= len(samples) || !drawable(samples[i+1]) {
				continue
			}
			b = append(b, `<polyline class="spark-line" points="`...)
			inLine = true
		}
		if n > 0 {
			b = append(b, ' ')
		}
		b = num(b, x(s.Time), ',')
		b = num(b, ys.at(s.Value), 0)
		n++
	}
	end()
	for _, s := range samples {
		switch {
		case s.Kind == window.NoData:
			b = append(b, `<rect class="spark-nodata" x="`...)
			b = num(b, x(s.Time)-1, '"')
			b = append(b, ` y="`...)
			b = num(b, sz.H-7, '"')
			b = append(b, ` width="2" height="6"/>`...)
		case s.Kind == window.Breach && !math.IsNaN(s.Value):
			b = append(b, `<circle class="spark-breach" cx="`...)
			b = num(b, x(s.Time), '"')
			b = append(b, ` cy="`...)
			b = num(b, ys.at(s.Value), '"')
			b = append(b, ` r="2.2"/>`...)
		case s.Kind == window.Breach:
			// An error counted as a breach (onError: breach) has no value.
			b = append(b, `<rect class="spark-breach" x="`...)
			b = num(b, x(s.Time)-1, '"')
			b = append(b, ` y="`...)
			b = num(b, padY, '"')
			b = append(b, ` width="2" height="6"/>`...)
		}
	}
	b = append(b, `</svg>`...)
	return template.HTML(b)
}

func drawable(s window.Sample) bool {
	return s.Kind != window.NoData && !math.IsNaN(s.Value) && !math.IsInf(s.Value, 0)
}

// num appends v with one decimal and then sep (none when 0).
func num(b []byte, v float64, sep byte) []byte {
	b = strconv.AppendFloat(b, v, 'f', 1, 64)
	if sep != 0 {
		b = append(b, sep)
	}
	return b
}

func valueRangeOf(samples []window.Sample, threshold float64) (lo, hi float64) {
	values := make([]float64, len(samples))
	for i, s := range samples {
		values[i] = s.Value
	}
	return valueRange(values, threshold)
}

// evidenceChart draws the samples that fired the trigger: the value over
// time, the threshold, and the window the breach held (from its first
// breaching sample to detection).
func evidenceChart(r *incident.Record) template.HTML {
	ev := r.Evidence
	if len(ev.Samples) == 0 {
		return ""
	}
	const W, H = 720.0, 260.0
	const left, right, top, bottom = 64.0, 16.0, 16.0, 36.0
	values := make([]float64, len(ev.Samples))
	for i, s := range ev.Samples {
		values[i] = s.Value
	}
	lo, hi := valueRange(values, ev.Threshold)
	t0, t1 := ev.Samples[0].Time, ev.Samples[len(ev.Samples)-1].Time
	if !r.DetectedAt.IsZero() && r.DetectedAt.After(t1) && r.DetectedAt.Sub(t1) < time.Minute {
		t1 = r.DetectedAt
	}
	xs := scale{0, float64(t1.Sub(t0)), left, W - right}
	ys := scale{lo, hi, H - bottom, top}
	x := func(t time.Time) float64 { return xs.at(float64(t.Sub(t0))) }
	var b strings.Builder
	n := 0
	for _, v := range values {
		if breaches(v, ev.Threshold, ev.Op) {
			n++
		}
	}
	desc := fmt.Sprintf("Evidence: %d samples from %s to %s, %d breaching the threshold %s %s",
		len(ev.Samples), t0.UTC().Format("15:04:05"), ev.Samples[len(ev.Samples)-1].Time.UTC().Format("15:04:05"), n, opSign(ev.Op), fmtNum(ev.Threshold))
	fmt.Fprintf(&b, `<svg class="chart" viewBox="0 0 %s %s" role="img" aria-label="%s"><title>%s</title>`,
		f1(W), f1(H), template.HTMLEscapeString(desc), template.HTMLEscapeString(desc))
	fmt.Fprintf(&b, `<rect class="chart-bg" x="%s" y="%s" width="%s" height="%s"/>`, f1(left), f1(top), f1(W-left-right), f1(H-top-bottom))
	// The window the breach held.
	if bs := r.BreachStartedAt; !bs.IsZero() {
		end := r.DetectedAt
		if end.IsZero() || end.Before(bs) {
			end = ev.Samples[len(ev.Samples)-1].Time
		}
		x0, x1 := math.Max(left, x(bs)), math.Min(W-right, x(end))
		if x1 > x0 {
			fmt.Fprintf(&b, `<rect class="chart-window" x="%s" y="%s" width="%s" height="%s"/>`, f1(x0), f1(top), f1(x1-x0), f1(H-top-bottom))
			label := "breach held " + fmtDur(end.Sub(bs))
			if ev.Window != "" {
				label += " (window " + ev.Window + ")"
			}
			fmt.Fprintf(&b, `<text class="chart-window-label" x="%s" y="%s">%s</text>`, f1(x0+4), f1(top+14), template.HTMLEscapeString(label))
			fmt.Fprintf(&b, `<line class="chart-window-edge" x1="%s" x2="%s" y1="%s" y2="%s"/>`, f1(x0), f1(x0), f1(top), f1(H-bottom))
			fmt.Fprintf(&b, `<line class="chart-window-edge" x1="%s" x2="%s" y1="%s" y2="%s"/>`, f1(x1), f1(x1), f1(top), f1(H-bottom))
		}
	}
	// y axis: four ticks.
	for i := 0; i <= 3; i++ {
		v := lo + (hi-lo)*float64(i)/3
		y := ys.at(v)
		fmt.Fprintf(&b, `<line class="chart-grid" x1="%s" x2="%s" y1="%s" y2="%s"/>`, f1(left), f1(W-right), f1(y), f1(y))
		fmt.Fprintf(&b, `<text class="chart-tick" x="%s" y="%s" text-anchor="end">%s</text>`, f1(left-6), f1(y+4), fmtTick(v, hi-lo))
	}
	// x axis: up to five time ticks.
	span := t1.Sub(t0)
	for i := 0; i <= 4 && span > 0; i++ {
		t := t0.Add(span * time.Duration(i) / 4)
		anchor := "middle"
		if i == 0 {
			anchor = "start"
		} else if i == 4 {
			anchor = "end"
		}
		fmt.Fprintf(&b, `<text class="chart-tick" x="%s" y="%s" text-anchor="%s">%s</text>`, f1(x(t)), f1(H-bottom+18), anchor, t.UTC().Format("15:04:05"))
	}
	ty := ys.at(ev.Threshold)
	fmt.Fprintf(&b, `<line class="chart-threshold" x1="%s" x2="%s" y1="%s" y2="%s"/>`, f1(left), f1(W-right), f1(ty), f1(ty))
	fmt.Fprintf(&b, `<text class="chart-threshold-label" x="%s" y="%s" text-anchor="end">threshold %s %s</text>`,
		f1(W-right-4), f1(ty-6), opSign(ev.Op), template.HTMLEscapeString(fmtNum(ev.Threshold)))
	var pts []string
	flush := func() {
		if len(pts) > 1 {
			fmt.Fprintf(&b, `<polyline class="chart-line" points="%s"/>`, strings.Join(pts, " "))
		}
		pts = pts[:0]
	}
	for _, s := range ev.Samples {
		if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			flush()
			continue
		}
		pts = append(pts, f1(x(s.Time))+","+f1(ys.at(s.Value)))
	}
	flush()
	for _, s := range ev.Samples {
		if math.IsNaN(s.Value) || math.IsInf(s.Value, 0) {
			continue
		}
		cls := "chart-point"
		if breaches(s.Value, ev.Threshold, ev.Op) {
			cls = "chart-point breach"
		}
		fmt.Fprintf(&b, `<circle class="%s" cx="%s" cy="%s" r="3.5"/>`, cls, f1(x(s.Time)), f1(ys.at(s.Value)))
	}
	b.WriteString(`</svg>`)
	return template.HTML(b.String())
}

func marshalRecord(r *incident.Record) ([]byte, error) {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("incident %s: encode: %w", r.ID, err)
	}
	return append(b, '\n'), nil
}

// fmtTick prints an axis value with as many decimals as the axis span
// needs to tell ticks apart, and no more.
func fmtTick(v, span float64) string {
	if span <= 0 || v == 0 {
		return fmtNum(v)
	}
	dec := max(0, int(math.Ceil(-math.Log10(span/3)))+1)
	return strconv.FormatFloat(v, 'f', min(dec, 8), 64)
}
