package backtest

import (
	"fmt"
	"image/color"
	"io"
	"math"
	"os"
	"path/filepath"
	"strings"
	"time"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
	"gonum.org/v1/plot/vg/vgimg"
	"gonum.org/v1/plot/vg/vgsvg"

	"github.com/rollguard/rollguard/pkg/window"
)

// Colours chosen to read at a glance and in greyscale: the series dark,
// the threshold a dashed red, spans as light fills behind them.
var (
	colSeries    = color.NRGBA{R: 0x1f, G: 0x4e, B: 0x99, A: 0xff}
	colThreshold = color.NRGBA{R: 0xd0, G: 0x1c, B: 0x1c, A: 0xff}
	colPending   = color.NRGBA{R: 0xff, G: 0xc8, B: 0x30, A: 0x80}
	colFiring    = color.NRGBA{R: 0xff, G: 0x50, B: 0x50, A: 0x70}
	colNoData    = color.NRGBA{R: 0xa0, G: 0xa0, B: 0xa0, A: 0x70}
	colLowVolume = color.NRGBA{R: 0x90, G: 0xb0, B: 0xd0, A: 0x60}
	colFire      = color.NRGBA{R: 0x8b, A: 0xff}
)

func plotFormat(file string) (string, error) {
	switch strings.ToLower(filepath.Ext(file)) {
	case ".png":
		return "png", nil
	case ".svg":
		return "svg", nil
	}
	return "", usagef("--plot %q: the file must end in .png or .svg", file)
}

// Plot writes one panel per replayed trigger: its series against its
// threshold, pending and firing spans shaded, no-data spans grey, and a
// vertical mark at each would-fire instant.
func (rep *Report) Plot(file string) error {
	format, err := plotFormat(file)
	if err != nil {
		return err
	}
	var plots [][]*plot.Plot
	for _, t := range rep.Targets {
		for i := range t.Triggers {
			tr := &t.Triggers[i]
			if tr.replayed == nil {
				continue
			}
			p, err := panel(t.Name, tr)
			if err != nil {
				return fmt.Errorf("plot %s/%s: %w", t.Name, tr.Name, err)
			}
			plots = append(plots, []*plot.Plot{p})
		}
	}
	if len(plots) == 0 {
		return fmt.Errorf("plot %s: no replayable trigger to draw", file)
	}
	w, h := 12*vg.Inch, vg.Length(len(plots))*3*vg.Inch
	var c interface {
		vg.CanvasSizer
		io.WriterTo
	}
	if format == "svg" {
		c = vgsvg.New(w, h)
	} else {
		c = vgimg.PngCanvas{Canvas: vgimg.NewWith(vgimg.UseWH(w, h), vgimg.UseDPI(100))}
	}
	dc := draw.New(c)
	tiles := draw.Tiles{Rows: len(plots), Cols: 1, PadTop: vg.Points(4), PadBottom: vg.Points(4),
		PadLeft: vg.Points(4), PadRight: vg.Points(8), PadY: vg.Points(14)}
	canvases := plot.Align(plots, tiles, dc)
	for i := range plots {
		plots[i][0].Draw(canvases[i][0])
	}
	f, err := os.Create(file)
	if err != nil {
		return fmt.Errorf("plot: %w", err)
	}
	if _, err := c.WriteTo(f); err != nil {
		f.Close()
		return fmt.Errorf("plot %s: %w", file, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("plot %s: %w", file, err)
	}
	return nil
}

func unix(t time.Time) float64 { return float64(t.UnixNano()) / 1e9 }

func panel(target string, tr *TriggerReport) (*plot.Plot, error) {
	rp := tr.replayed
	p := plot.New()
	p.Title.Text = fmt.Sprintf("%s / %s: %s %s for %s (%d would-fire)", target, tr.Name, tr.Op, num(tr.Threshold), tr.For, len(tr.fires))
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.X.Tick.Marker = plot.TimeTicks{Format: "15:04:05"}
	p.X.Label.Text = "time (UTC)"
	p.Y.Label.Text = "value"
	p.Add(plotter.NewGrid())

	// The y range covers the data and the threshold, with a margin, so the
	// spans can be drawn as full-height bands.
	lo, hi := tr.Threshold, tr.Threshold
	for _, v := range rp.Values {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	if hi == lo {
		hi, lo = hi+1, lo-1
	}
	pad := (hi - lo) * 0.08
	lo, hi = lo-pad, hi+pad
	p.Y.Min, p.Y.Max = lo, hi
	p.X.Min, p.X.Max = unix(rp.From), unix(rp.At(len(rp.States)))

	band := func(s Span, c color.Color) (*plotter.Polygon, error) {
		x0, x1 := unix(s.From), unix(s.To)
		poly, err := plotter.NewPolygon(plotter.XYs{{X: x0, Y: lo}, {X: x1, Y: lo}, {X: x1, Y: hi}, {X: x0, Y: hi}})
		if err != nil {
			return nil, err
		}
		poly.Color = c
		poly.LineStyle.Width = 0
		return poly, nil
	}
	legend := map[window.State]*plotter.Polygon{}
	for _, s := range tr.Spans {
		c := map[window.State]color.Color{window.StatePending: colPending, window.StateFiring: colFiring, window.StateNoData: colNoData, window.StateLowVolume: colLowVolume}[s.State]
		poly, err := band(s, c)
		if err != nil {
			return nil, err
		}
		p.Add(poly)
		legend[s.State] = poly
	}

	// The series is drawn as runs of consecutive points: a gap stays a gap.
	var first *plotter.Line
	var run plotter.XYs
	flush := func() error {
		if len(run) == 0 {
			return nil
		}
		l, err := plotter.NewLine(run)
		if err != nil {
			return err
		}
		l.Color, l.Width = colSeries, vg.Points(1.5)
		p.Add(l)
		if first == nil {
			first = l
		}
		run = nil
		return nil
	}
	for i, v := range rp.Values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			if err := flush(); err != nil {
				return nil, err
			}
			continue
		}
		run = append(run, plotter.XY{X: unix(rp.At(i)), Y: v})
	}
	if err := flush(); err != nil {
		return nil, err
	}

	th, err := plotter.NewLine(plotter.XYs{{X: p.X.Min, Y: tr.Threshold}, {X: p.X.Max, Y: tr.Threshold}})
	if err != nil {
		return nil, err
	}
	th.Color, th.Width, th.Dashes = colThreshold, vg.Points(1.5), []vg.Length{vg.Points(6), vg.Points(4)}
	p.Add(th)

	var mark *plotter.Line
	var pts plotter.XYs
	for _, f := range tr.fires {
		x := unix(f.At)
		l, err := plotter.NewLine(plotter.XYs{{X: x, Y: lo}, {X: x, Y: hi}})
		if err != nil {
			return nil, err
		}
		l.Color, l.Width = colFire, vg.Points(2)
		p.Add(l)
		mark = l
		y := tr.Threshold
		if f.Value != nil {
			y = *f.Value
		}
		pts = append(pts, plotter.XY{X: x, Y: y})
	}
	var sc *plotter.Scatter
	if len(pts) > 0 {
		if sc, err = plotter.NewScatter(pts); err != nil {
			return nil, err
		}
		sc.GlyphStyle = draw.GlyphStyle{Color: colFire, Radius: vg.Points(5), Shape: draw.PyramidGlyph{}}
		p.Add(sc)
		lbl, err := plotter.NewLabels(fireLabels(tr.fires, pts))
		if err != nil {
			return nil, err
		}
		for i := range lbl.TextStyle {
			lbl.TextStyle[i].Color = colFire
			lbl.TextStyle[i].Font.Size = vg.Points(9)
		}
		lbl.Offset = vg.Point{X: vg.Points(4), Y: vg.Points(6)}
		p.Add(lbl)
	}

	p.Legend.Top, p.Legend.Left = true, true
	p.Legend.TextStyle.Font.Size = vg.Points(9)
	if first != nil {
		p.Legend.Add("value", first)
	}
	p.Legend.Add("threshold", th)
	for _, st := range []window.State{window.StatePending, window.StateFiring, window.StateNoData, window.StateLowVolume} {
		if poly := legend[st]; poly != nil {
			p.Legend.Add(st.String(), poly)
		}
	}
	if mark != nil {
		p.Legend.Add("would fire", mark, sc)
	}
	return p, nil
}

func fireLabels(fires []Fire, pts plotter.XYs) plotter.XYLabels {
	out := plotter.XYLabels{XYs: pts, Labels: make([]string, len(fires))}
	for i, f := range fires {
		out.Labels[i] = f.At.UTC().Format("15:04:05") + " " + f.Verdict
	}
	return out
}
