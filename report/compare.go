package report

import (
	"context"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/weightops/weightops/taskvec"
	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/weights"
)

// CompareOptions configure BuildCompare.
type CompareOptions struct {
	// CompareOptions: the top-k density, workers, memory bound, progress.
	taskvec.CompareOptions
	// Out receives report.html, report.md, report.json and charts/
	// (required).
	Out string
	// Version is weightops' version, named on the page.
	Version string
}

// CompareReport is what BuildCompare measured and wrote; report.json
// holds it.
type CompareReport struct {
	*taskvec.Comparison
	// Labels name the base and the models on the page (file or directory
	// names, or the paths when those collide).
	Labels  []string `json:"labels"`
	Out     string   `json:"out"`
	Files   []string `json:"files"`
	Seconds float64  `json:"seconds"`
}

// TopTensors is how many tensors the table of largest changes lists.
const TopTensors = 15

// BuildCompare compares models with their base (taskvec.Compare, streamed
// tensor by tensor) and writes the report into o.Out.
func BuildCompare(ctx context.Context, base weights.Checkpoint, models []weights.Checkpoint, o CompareOptions) (*CompareReport, error) {
	start := time.Now()
	if o.Out == "" {
		return nil, errors.New("report: no output directory")
	}
	cmp, err := taskvec.Compare(ctx, base, models, o.CompareOptions)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Out, ChartsDir), 0o755); err != nil {
		return nil, err
	}
	r := &CompareReport{Comparison: cmp, Out: o.Out, Files: []string{}, Labels: labels(append([]string{cmp.Base}, cmp.Models...))}
	cb := &compareBuild{r: r, out: o.Out}
	for _, f := range []func() error{cb.norms, cb.similarity, cb.conflict, cb.unchanged, cb.largest} {
		if err := f(); err != nil {
			return nil, err
		}
	}
	r.Seconds = time.Since(start).Seconds()
	p := &Page{Title: "weightops report: " + strings.Join(r.Labels[1:], ", ") + " against " + r.Labels[0],
		Intro: fmt.Sprintf("Task vectors τ = θ_model − θ_base of %d model(s) against the base %s, over %d tensors (%s values), streamed tensor by tensor by weightops report %s in %.1f s.%s",
			len(models), cmp.Base, len(cmp.Tensors), humanCount(cmp.Total.Params), o.Version, r.Seconds, cb.legend()),
		Sections: cb.sections}
	if err := p.write(o.Out, r); err != nil {
		return nil, err
	}
	return r, nil
}

type compareBuild struct {
	r        *CompareReport
	out      string
	sections []section
}

// legend names the models by label and path.
func (b *compareBuild) legend() string {
	var s []string
	for i, m := range b.r.Models {
		if b.r.Labels[i+1] != m {
			s = append(s, b.r.Labels[i+1]+" = "+m)
		}
	}
	if len(s) == 0 {
		return ""
	}
	return " Models: " + strings.Join(s, "; ") + "."
}

func (b *compareBuild) model(i int) string { return b.r.Labels[i+1] }

func (b *compareBuild) pair(p int) string {
	pr := b.r.Pairs[p]
	return b.model(pr.A) + " · " + b.model(pr.B)
}

// layerLabels are the x axis: block numbers, or the module's last name.
func (b *compareBuild) layerLabels() []string {
	out := make([]string, len(b.r.Layers))
	for i, l := range b.r.Layers {
		if n, ok := tensorname.Layer(l.Name + "."); ok {
			out[i] = strconv.Itoa(n)
		} else {
			out[i] = tensorname.Leaf(l.Name)
		}
	}
	return out
}

// perModel and perPair make the series of a per-layer figure, coloured
// by model or pair the same way in every chart; undefined values (an
// unchanged layer has no direction) are drawn at 0.
func (b *compareBuild) perModel(f func(taskvec.DeltaStats) []taskvec.Ratio) (series []Series, undefined bool) {
	return b.layerSeries(len(b.r.Models), b.model, thingColour, f)
}

func (b *compareBuild) perPair(f func(taskvec.DeltaStats) []taskvec.Ratio) (series []Series, undefined bool) {
	colour := otherColour
	if len(b.r.Pairs) == 1 {
		colour = thingColour // one pair: the chart's only line
	}
	return b.layerSeries(len(b.r.Pairs), b.pair, colour, f)
}

// layerSeries makes n series, the i-th named name(i), of f's i-th value
// per layer.
func (b *compareBuild) layerSeries(n int, name func(int) string, colour func(int) (int, bool), f func(taskvec.DeltaStats) []taskvec.Ratio) (series []Series, undefined bool) {
	for i := range n {
		col, dash := colour(i)
		s := Series{Name: name(i), Colour: col, Dashed: dash}
		for _, l := range b.r.Layers {
			v := f(l)[i]
			undefined = undefined || !v.Defined()
			s.Values = append(s.Values, defined(v))
		}
		series = append(series, s)
	}
	return series, undefined
}

func defined(r taskvec.Ratio) float64 {
	if !r.Defined() {
		return 0
	}
	return float64(r)
}

// layerChart draws a per-layer figure: bars for a few layers, lines for
// an LLM's dozens.
func (b *compareBuild) layerChart(sec *section, file, title, ylabel string, series []Series, ymin, ymax float64) error {
	labels := b.layerLabels()
	if len(labels) <= 12 {
		return b.addChart(sec, file, title, func() ([]byte, error) {
			return groupedBars(title, ylabel, labels, series, len(labels) > 6, 18, 10)
		})
	}
	xs := make([]float64, len(labels))
	for i := range xs {
		xs[i] = float64(i)
	}
	return b.addChart(sec, file, title, func() ([]byte, error) {
		return lines(title, "layer", ylabel, xs, labels, series, ymin, ymax, 20, 10)
	})
}

func (b *compareBuild) addChart(sec *section, file, title string, draw func() ([]byte, error)) error {
	svg, err := draw()
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	c := chart{File: filepath.ToSlash(filepath.Join(ChartsDir, file)), Title: title, SVG: svg}
	if err := weights.WriteFileAtomic(filepath.Join(b.out, c.File), svg); err != nil {
		return err
	}
	sec.Charts = append(sec.Charts, c)
	b.r.Files = append(b.r.Files, c.File)
	return nil
}

func undefinedNote(undefined bool) string {
	if undefined {
		return " A layer a model leaves unchanged has no direction; it is drawn at 0 (null in report.json)."
	}
	return ""
}

// norms: where the difference lives.
func (b *compareBuild) norms() error {
	r := b.r
	sec := section{ID: "norms", Title: "Where the difference lives",
		Text:   "Per layer (numbered block, or module outside the blocks) in network order, ‖τ‖ / ‖θ_base‖: how far each model moved from the base relative to the size of the weights there.",
		Header: []string{"model", "‖τ‖ / ‖θ_base‖", "values unchanged", "largest in", "smallest in"}}
	series, _ := b.perModel(func(d taskvec.DeltaStats) []taskvec.Ratio { return d.RelDelta })
	labels := b.layerLabels()
	var most []string
	for i, s := range series {
		hi, lo := argmax(s.Values), argmin(s.Values)
		sec.Rows = append(sec.Rows, cells(b.model(i), fmt.Sprintf("%.4g", defined(r.Total.RelDelta[i])), pctOf(r.Total.Unchanged[i]),
			fmt.Sprintf("%s (%.4g)", r.Layers[hi].Name, s.Values[hi]), fmt.Sprintf("%s (%.4g)", r.Layers[lo].Name, s.Values[lo])))
		most = append(most, fmt.Sprintf("%s changes %s most (%.3g)", b.model(i), layerWord(r.Layers[hi].Name, labels[hi]), s.Values[hi]))
	}
	if same(series) {
		hi := argmax(series[0].Values)
		sec.Takeaway = fmt.Sprintf("Every model changes %s most relative to its weights (up to %.3g).", layerWord(r.Layers[hi].Name, labels[hi]), maxAt(series, hi))
	} else {
		sec.Takeaway = strings.Join(most, "; ") + "."
	}
	if err := b.layerChart(&sec, "norms.svg", "‖τ‖ / ‖θ_base‖ per layer", "relative norm", series, 0, 0); err != nil {
		return err
	}
	b.sections = append(b.sections, sec)
	return nil
}

// same reports whether every series peaks at the same layer.
func same(series []Series) bool {
	for _, s := range series[1:] {
		if argmax(s.Values) != argmax(series[0].Values) {
			return false
		}
	}
	return true
}

func maxAt(series []Series, i int) float64 {
	m := math.Inf(-1)
	for _, s := range series {
		m = math.Max(m, s.Values[i])
	}
	return m
}

func layerWord(name, label string) string {
	if _, ok := tensorname.Layer(name + "."); ok {
		return "block " + label
	}
	return name
}

// similarity: cosines between task vectors.
func (b *compareBuild) similarity() error {
	r := b.r
	if len(r.Pairs) == 0 {
		return nil
	}
	sec := section{ID: "similarity", Title: "How alike the task vectors are",
		Text:   "Per layer, the cosine ⟨τ_a, τ_b⟩ / (‖τ_a‖·‖τ_b‖) between two models' task vectors: near 1 they moved the same way, near 0 independently, below 0 against each other.",
		Header: []string{"pair", "cosine (whole model)", "lowest in", "highest in"}}
	series, undef := b.perPair(func(d taskvec.DeltaStats) []taskvec.Ratio { return d.Cosine })
	sec.Text += undefinedNote(undef)
	lo, hi := 0, 0
	for p, s := range series {
		l, h := b.extremeLayer(p, -1), b.extremeLayer(p, 1)
		sec.Rows = append(sec.Rows, cells(b.pair(p), fmt.Sprintf("%.3f", defined(r.Total.Cosine[p])),
			fmt.Sprintf("%s (%.3f)", r.Layers[l].Name, s.Values[l]), fmt.Sprintf("%s (%.3f)", r.Layers[h].Name, s.Values[h])))
		if defined(r.Total.Cosine[p]) < defined(r.Total.Cosine[lo]) {
			lo = p
		}
		if defined(r.Total.Cosine[p]) > defined(r.Total.Cosine[hi]) {
			hi = p
		}
	}
	labels := b.layerLabels()
	l := b.extremeLayer(lo, -1)
	if len(series) == 1 {
		sec.Takeaway = fmt.Sprintf("The two task vectors have cosine %.3f over the whole model, lowest in %s (%.3f): that is where averaging them cancels most.",
			defined(r.Total.Cosine[0]), layerWord(r.Layers[l].Name, labels[l]), series[0].Values[l])
	} else {
		sec.Takeaway = fmt.Sprintf("%s are the most alike (cosine %.3f) and %s the least (%.3f, lowest in %s).",
			b.pair(hi), defined(r.Total.Cosine[hi]), b.pair(lo), defined(r.Total.Cosine[lo]), layerWord(r.Layers[l].Name, labels[l]))
	}
	if err := b.layerChart(&sec, "cosine.svg", "cos(τ_a, τ_b) per layer", "cosine", series, -0.2, 1); err != nil {
		return err
	}
	b.sections = append(b.sections, sec)
	return nil
}

// extremeLayer is the layer of the lowest (sign −1) or highest (+1)
// defined cosine of pair p.
func (b *compareBuild) extremeLayer(p int, sign float64) int {
	best := 0
	for i, l := range b.r.Layers {
		v := l.Cosine[p]
		if !v.Defined() {
			continue
		}
		if c := b.r.Layers[best].Cosine[p]; !c.Defined() || sign*float64(v) > sign*float64(c) {
			best = i
		}
	}
	return best
}

// conflict: sign agreement and top-k mask overlap.
func (b *compareBuild) conflict() error {
	r := b.r
	if len(r.Pairs) == 0 {
		return nil
	}
	d := r.Density
	sec := section{ID: "conflict", Title: "Where a merge will conflict",
		Text: fmt.Sprintf("Sign agreement: of the values both models change, the share changed in the same direction. "+
			"Mask overlap: each task vector trimmed to its top %g by magnitude per tensor (as TIES and Breadcrumbs trim; ties by index), the share of the kept values both keep; "+
			"sign conflict: the share of that overlap where the signs differ — the values a sign election zeroes in one model.", d),
		Header: []string{"pair", "sign agreement", fmt.Sprintf("top-%g overlap", d), "sign conflict in the overlap"}}
	sign, u1 := b.perPair(func(d taskvec.DeltaStats) []taskvec.Ratio { return d.SignAgreement })
	overlap, u2 := b.perPair(func(d taskvec.DeltaStats) []taskvec.Ratio { return d.MaskOverlap })
	sec.Text += undefinedNote(u1 || u2)
	worst := 0
	for p := range r.Pairs {
		t := r.Total
		sec.Rows = append(sec.Rows, cells(b.pair(p), pctOf(t.SignAgreement[p]), pctOf(t.MaskOverlap[p]), pctOf(t.MaskSignConflict[p])))
		if defined(t.MaskOverlap[p])*defined(t.MaskSignConflict[p]) > defined(t.MaskOverlap[worst])*defined(t.MaskSignConflict[worst]) {
			worst = p
		}
	}
	t := r.Total
	sec.Takeaway = fmt.Sprintf("At density %g, %s keep %s of their top values in common and disagree in sign on %s of those, so a TIES merge drops %s of one model's kept values to the sign election.",
		d, b.pair(worst), pctOf(t.MaskOverlap[worst]), pctOf(t.MaskSignConflict[worst]),
		pct(defined(t.MaskOverlap[worst])*defined(t.MaskSignConflict[worst])))
	if len(r.Models) > 2 && t.AllAgree.Defined() {
		sec.Notes = append(sec.Notes, fmt.Sprintf("Of the values at least two models change, all changes share one sign in %s.", pctOf(t.AllAgree)))
	}
	if err := b.layerChart(&sec, "sign-agreement.svg", "sign agreement per layer", "share of values", sign, 0, 1); err != nil {
		return err
	}
	if err := b.layerChart(&sec, "mask-overlap.svg", fmt.Sprintf("top-%g mask overlap per layer", d), "share of kept values", overlap, 0, 1); err != nil {
		return err
	}
	b.sections = append(b.sections, sec)
	return nil
}

// unchanged: how sparse the task vectors are.
func (b *compareBuild) unchanged() error {
	r := b.r
	sec := section{ID: "unchanged", Title: "Unchanged values",
		Text:   "Per layer, the share of values a model leaves exactly as in the base (τ = 0): a fine-tune that froze parts of the network, a LoRA merged into some modules, or a merge that kept the base.",
		Header: []string{"model", "values unchanged", "tensors unchanged", "first unchanged tensors"}}
	series, _ := b.perModel(func(d taskvec.DeltaStats) []taskvec.Ratio { return d.Unchanged })
	var parts []string
	for i := range r.Models {
		var whole []string
		for _, t := range r.Tensors {
			if defined(t.Unchanged[i]) == 1 {
				whole = append(whole, t.Name)
			}
		}
		first := whole
		if len(first) > 3 {
			first = append(first[:3:3], fmt.Sprintf("and %d more", len(whole)-3))
		}
		sec.Rows = append(sec.Rows, cells(b.model(i), pctOf(r.Total.Unchanged[i]), fmt.Sprintf("%d of %d", len(whole), len(r.Tensors)), strings.Join(first, ", ")))
		if len(whole) > 0 {
			parts = append(parts, fmt.Sprintf("%s leaves %d of %d tensors exactly as in the base", b.model(i), len(whole), len(r.Tensors)))
		}
	}
	if len(parts) == 0 {
		hi := 0
		for i := range r.Models {
			if defined(r.Total.Unchanged[i]) > defined(r.Total.Unchanged[hi]) {
				hi = i
			}
		}
		sec.Takeaway = fmt.Sprintf("Every model changes every tensor; at most %s of a model's values (%s) stay exactly as in the base.", pctOf(r.Total.Unchanged[hi]), b.model(hi))
	} else {
		sec.Takeaway = strings.Join(parts, "; ") + "."
	}
	if err := b.layerChart(&sec, "unchanged.svg", "values unchanged per layer", "share of values", series, 0, 1); err != nil {
		return err
	}
	if len(r.Skipped) > 0 {
		for _, s := range r.Skipped {
			sec.Notes = append(sec.Notes, fmt.Sprintf("not compared: %s (%s)", s.Tensor, s.Reason))
		}
	}
	b.sections = append(b.sections, sec)
	return nil
}

// largest: the tensors that changed most.
func (b *compareBuild) largest() error {
	r := b.r
	idx := make([]int, len(r.Tensors))
	score := make([]float64, len(r.Tensors))
	for i, t := range r.Tensors {
		idx[i] = i
		for _, v := range t.RelDelta {
			score[i] = math.Max(score[i], defined(v))
		}
	}
	sort.SliceStable(idx, func(a, c int) bool { return score[idx[a]] > score[idx[c]] })
	n := min(TopTensors, len(idx))
	sec := section{ID: "tensors", Title: "Tensors that changed most",
		Text:   fmt.Sprintf("The %d tensors with the largest ‖τ‖ / ‖θ_base‖ in any model; report.json has every tensor.", n),
		Header: []string{"tensor", "values"}}
	for i := range r.Models {
		sec.Header = append(sec.Header, "‖τ‖/‖θ‖ "+b.model(i))
	}
	for p := range r.Pairs {
		sec.Header = append(sec.Header, "cos "+b.pair(p))
	}
	for _, i := range idx[:n] {
		t := r.Tensors[i]
		row := cells(t.Name, humanCount(t.Params))
		for m := range r.Models {
			row = append(row, Cell{Text: fmt.Sprintf("%.4g", defined(t.RelDelta[m]))})
		}
		for p := range r.Pairs {
			c := "—"
			if t.Cosine[p].Defined() {
				c = fmt.Sprintf("%.3f", float64(t.Cosine[p]))
			}
			row = append(row, Cell{Text: c})
		}
		sec.Rows = append(sec.Rows, row)
	}
	if n > 0 {
		t := r.Tensors[idx[0]]
		sec.Takeaway = fmt.Sprintf("%s moved most: ‖τ‖/‖θ‖ = %.3g.", t.Name, score[idx[0]])
	}
	b.sections = append(b.sections, sec)
	return nil
}

// pctOf formats a share as a percentage ("—" when undefined).
func pctOf(r taskvec.Ratio) string {
	if !r.Defined() {
		return "—"
	}
	return pct(float64(r))
}

func pct(x float64) string {
	switch v := 100 * x; {
	case v == 0 || v == 100:
		return fmt.Sprintf("%.0f%%", v)
	case v < 0.1 || v > 99.9:
		return fmt.Sprintf("%.3f%%", v)
	default:
		return fmt.Sprintf("%.1f%%", v)
	}
}

// humanCount writes a count as 6.74 B, 131 M, 4.1 K.
func humanCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.3g B", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.3g M", float64(n)/1e6)
	case n >= 1e4:
		return fmt.Sprintf("%.3g K", float64(n)/1e3)
	}
	return strconv.FormatInt(n, 10)
}

// labels names checkpoints by their directory or file stem, or by the
// whole path where two would share a name.
func labels(paths []string) []string {
	out := make([]string, len(paths))
	seen := map[string]int{}
	for i, p := range paths {
		base := filepath.Base(p)
		switch {
		case base == "model.safetensors" || strings.HasSuffix(base, ".index.json") || strings.HasPrefix(base, "pytorch_model"):
			base = filepath.Base(filepath.Dir(p))
		default:
			base = strings.TrimSuffix(base, filepath.Ext(base))
		}
		out[i] = base
		seen[base]++
	}
	for i, l := range out {
		if seen[l] > 1 {
			out[i] = paths[i]
		}
	}
	return out
}
