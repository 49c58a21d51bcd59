package report

import (
	"bytes"
	"fmt"
	"image/color"
	"math"
	"strconv"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/font"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/vg"
	"gonum.org/v1/plot/vg/draw"
)

// Series is one named sequence of values, one per category (bars) or per
// x value (lines). Its colour is fixed by the caller (a palette index),
// so the same thing has the same colour in every chart of a report.
type Series struct {
	Name   string    `json:"name"`
	Values []float64 `json:"values"`
	// Colour is the palette index; Dashed draws a line dashed (for more
	// series than the palette has colours).
	Colour int  `json:"-"`
	Dashed bool `json:"-"`
}

// Palette indices reports give their series: the things compared (models,
// the clean model and the corruptions) take the first ones in a fixed
// order; pairs of them and parameter values take the rest, so they never
// wear a colour that means a model.
const (
	// thingColours are the palette entries for compared things.
	thingColours = 5
	// otherColours start after them.
	otherColours = thingColours
)

// thingColour is the colour of the i-th compared thing.
func thingColour(i int) (colour int, dashed bool) {
	return i % thingColours, i >= thingColours
}

// otherColour is the colour of the i-th pair or parameter value.
func otherColour(i int) (colour int, dashed bool) {
	n := len(palette) - otherColours
	return otherColours + i%n, i >= n
}

// chart is one rendered figure.
type chart struct {
	// File is the SVG's file name; SVG its bytes.
	File    string
	Title   string
	Caption string
	SVG     []byte
}

// palette is Okabe and Ito's colour-blind-safe palette.
var palette = []color.Color{
	color.RGBA{0, 114, 178, 255},   // blue
	color.RGBA{230, 159, 0, 255},   // orange
	color.RGBA{0, 158, 115, 255},   // green
	color.RGBA{204, 121, 167, 255}, // purple
	color.RGBA{213, 94, 0, 255},    // vermillion
	color.RGBA{86, 180, 233, 255},  // sky
	color.RGBA{120, 120, 120, 255}, // grey
	color.RGBA{240, 228, 66, 255},  // yellow
	color.RGBA{0, 0, 0, 255},       // black
}

func colorOf(i int) color.Color { return palette[i%len(palette)] }

// newPlot makes a plot with sans-serif text (the default serif face reads
// poorly at small sizes).
func newPlot(title, xlabel, ylabel string) *plot.Plot {
	p := plot.New()
	p.Title.Text, p.X.Label.Text, p.Y.Label.Text = title, xlabel, ylabel
	sans := func(f *font.Font) { f.Variant = "Sans" }
	sans(&p.Title.TextStyle.Font)
	sans(&p.X.Label.TextStyle.Font)
	sans(&p.Y.Label.TextStyle.Font)
	sans(&p.X.Tick.Label.Font)
	sans(&p.Y.Tick.Label.Font)
	sans(&p.Legend.TextStyle.Font)
	p.Title.TextStyle.Font.Size = vg.Points(13)
	p.Legend.Top = true
	p.Add(plotter.NewGrid())
	return p
}

// render writes the plot as SVG of the given size in centimetres.
func render(p *plot.Plot, wcm, hcm float64) ([]byte, error) {
	wt, err := p.WriterTo(vg.Length(wcm)*vg.Centimeter, vg.Length(hcm)*vg.Centimeter, "svg")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// checkSeries rejects series that do not fit the categories or hold
// non-finite values (a chart of NaN draws nothing and says nothing).
func checkSeries(n int, series []Series) error {
	if len(series) == 0 || n == 0 {
		return fmt.Errorf("chart: no data")
	}
	for _, s := range series {
		if len(s.Values) != n {
			return fmt.Errorf("chart: series %q has %d values for %d categories", s.Name, len(s.Values), n)
		}
		for _, v := range s.Values {
			if math.IsNaN(v) || math.IsInf(v, 0) {
				return fmt.Errorf("chart: series %q has a non-finite value", s.Name)
			}
		}
	}
	return nil
}

// groupedBars draws one group of bars per category, one bar per series.
func groupedBars(title, ylabel string, categories []string, series []Series, rotate bool, wcm, hcm float64) ([]byte, error) {
	if err := checkSeries(len(categories), series); err != nil {
		return nil, fmt.Errorf("%s: %w", title, err)
	}
	p := newPlot(title, "", ylabel)
	groupW := vg.Length(wcm) * vg.Centimeter * 0.8 / vg.Length(len(categories))
	w := groupW * 0.85 / vg.Length(len(series))
	for i, s := range series {
		b, err := plotter.NewBarChart(plotter.Values(s.Values), w)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", title, err)
		}
		b.Color = colorOf(s.Colour)
		b.LineStyle.Width = 0
		b.Offset = w * (vg.Length(i) - vg.Length(len(series)-1)/2)
		p.Add(b)
		p.Legend.Add(s.Name, b)
	}
	p.NominalX(categories...)
	// Half a category of room on each side, so the outer groups' bars are
	// not cut at the axis ends.
	p.X.Min, p.X.Max = -0.5, float64(len(categories))-0.5
	p.Y.Min = math.Min(0, p.Y.Min)
	if len(series) > 1 {
		// Room for the legend above the tallest bars.
		p.Y.Max *= 1.1 + 0.09*float64(len(series))
	} else {
		p.Legend = plot.NewLegend() // one series needs no legend
	}
	if rotate {
		p.X.Tick.Label.Rotation = math.Pi / 5
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
	}
	return render(p, wcm, hcm)
}

// lines draws one line with points per series over the x values.
func lines(title, xlabel, ylabel string, xs []float64, xticks []string, series []Series, ymin, ymax float64, wcm, hcm float64) ([]byte, error) {
	if err := checkSeries(len(xs), series); err != nil {
		return nil, fmt.Errorf("%s: %w", title, err)
	}
	p := newPlot(title, xlabel, ylabel)
	for _, s := range series {
		pts := make(plotter.XYs, len(xs))
		for j := range xs {
			pts[j] = plotter.XY{X: xs[j], Y: s.Values[j]}
		}
		l, sc, err := plotter.NewLinePoints(pts)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", title, err)
		}
		l.Color, sc.Color = colorOf(s.Colour), colorOf(s.Colour)
		l.Width = vg.Points(1.5)
		if s.Dashed {
			l.Dashes = []vg.Length{vg.Points(5), vg.Points(3)}
		}
		sc.Shape = draw.CircleGlyph{}
		p.Add(l, sc)
		p.Legend.Add(s.Name, l, sc)
	}
	if xticks != nil {
		ticks := make([]plot.Tick, len(xs))
		for i := range xs {
			ticks[i] = plot.Tick{Value: xs[i], Label: xticks[i]}
		}
		p.X.Tick.Marker = plot.ConstantTicks(ticks)
		p.X.Tick.Label.Rotation = math.Pi / 5
		p.X.Tick.Label.XAlign = draw.XRight
		p.X.Tick.Label.YAlign = draw.YCenter
		p.X.Min, p.X.Max = xs[0]-0.3, xs[len(xs)-1]+0.3
	}
	// The legend sits in the top left, above the data: extend the y axis
	// by one legend row per series.
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, s := range series {
		for _, v := range s.Values {
			lo, hi = math.Min(lo, v), math.Max(hi, v)
		}
	}
	// A little room below the lowest point, 5% of the data's span (or of
	// the axis asked for).
	span := math.Max(hi, ymax) - math.Min(lo, ymin)
	if span == 0 {
		span = 1
	}
	ymin, ymax = math.Min(ymin, lo-0.05*span), math.Max(ymax, hi)
	top := ymax
	p.Y.Min, p.Y.Max = ymin, ymax+(ymax-ymin)*(0.05+0.075*float64(len(series)))
	// Ticks at a round step up to the data's top only: the space above is
	// the legend's, and a tick at 1.25 on a cosine or accuracy axis
	// misleads.
	step := niceStep((top - ymin) / 4)
	var ticks []plot.Tick
	for i := math.Ceil(ymin/step - 1e-9); i*step <= top+step*1e-6; i++ {
		v := i * step
		if v == 0 {
			v = 0 // +0: no "-0" label
		}
		ticks = append(ticks, plot.Tick{Value: v, Label: strconv.FormatFloat(v, 'g', 4, 64)})
	}
	p.Y.Tick.Marker = plot.ConstantTicks(ticks)
	p.Legend.Left = true
	return render(p, wcm, hcm)
}

// niceStep is the round number (1, 2, 2.5 or 5 times a power of ten)
// nearest to x on a log scale: 0.25 for axes spanning about one unit.
func niceStep(x float64) float64 {
	if !(x > 0) || math.IsInf(x, 0) {
		return 1
	}
	p := math.Pow(10, math.Floor(math.Log10(x)))
	best := p
	for _, m := range []float64{1, 2, 2.5, 5, 10} {
		if math.Abs(math.Log(m*p/x)) < math.Abs(math.Log(best/x)) {
			best = m * p
		}
	}
	return best
}
