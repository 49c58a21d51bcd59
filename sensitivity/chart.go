package sensitivity

import (
	"bytes"
	"fmt"

	"gonum.org/v1/plot"
	"gonum.org/v1/plot/plotter"
	"gonum.org/v1/plot/plotutil"
	"gonum.org/v1/plot/vg"
)

// Chart draws the mean accuracy drop per module (bars grouped by γ, error
// bars one standard deviation) as an SVG.
func (r *Report) Chart(rels []float64) ([]byte, error) {
	var modules []string
	seen := map[string]bool{}
	for _, res := range r.Results {
		if !seen[res.Module] {
			seen[res.Module] = true
			modules = append(modules, res.Module)
		}
	}
	p := plot.New()
	p.Title.Text = fmt.Sprintf("Accuracy drop per module (base accuracy %.1f%%)", 100*r.BaseAccuracy)
	p.Y.Label.Text = "accuracy drop (points)"
	w := vg.Points(float64(60) / float64(max(1, len(rels))))
	for gi, rel := range rels {
		vals := make(plotter.Values, len(modules))
		errs := make(plotter.YErrors, len(modules))
		for mi, m := range modules {
			for _, res := range r.Results {
				if res.Module == m && res.Rel == rel {
					vals[mi] = 100 * res.MeanDrop
					errs[mi].Low, errs[mi].High = 100*res.StdDrop, 100*res.StdDrop
				}
			}
		}
		bars, err := plotter.NewBarChart(vals, w)
		if err != nil {
			return nil, err
		}
		bars.Offset = w * vg.Length(gi-len(rels)/2)
		bars.Color = plotutil.Color(gi)
		bars.LineStyle.Width = 0
		p.Add(bars)
		p.Legend.Add(fmt.Sprintf("γ = %g", rel), bars)
	}
	p.Legend.Top = true
	p.NominalX(modules...)
	wt, err := p.WriterTo(vg.Length(max(6, len(modules)))*vg.Inch, 4*vg.Inch, "svg")
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	if _, err := wt.WriteTo(&b); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}
