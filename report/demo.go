package report

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/weightops/weightops/demo"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/sensitivity"
	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/taskvec"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

// DemoOptions configure BuildDemo. Zero values take the defaults noted.
type DemoOptions struct {
	// Data is the demo data directory; when empty, Embedded is unpacked
	// into Out/data and used.
	Data string
	// Embedded is the demo data carried by the binary (weightops.DemoData).
	Embedded fs.FS
	// From is an optional `weightops demo` output directory whose
	// results and signature patches the report reuses.
	From string
	// Out receives report.html, report.md, report.json and charts/
	// (required).
	Out string
	// Alphas is the interpolation sweep (default "0:1:0.25").
	Alphas string
	// Layers is the signature selection when the report makes its own
	// signature patches (default 2, as the demo).
	Layers int
	// TVDensity and TVGamma sparsify the Breadcrumbs task-vector patches
	// of the sparsity section (defaults 0.1 and 0.01, the README's
	// example).
	TVDensity, TVGamma float64
	// EvalSeed seeds the test-time corruptions (default 1, as the demo).
	EvalSeed uint64
	// Workers is the number of tensors processed at once (0: default).
	Workers int
	// Log receives step headers (nil: silent).
	Log io.Writer
}

func (o *DemoOptions) defaults() error {
	if o.Out == "" {
		return errors.New("report: no output directory")
	}
	if o.Alphas == "" {
		o.Alphas = "0:1:0.25"
	}
	if o.Layers == 0 {
		o.Layers = 2
	}
	if o.Layers < 0 {
		return fmt.Errorf("report: layers %d: want a positive number", o.Layers)
	}
	if o.TVDensity == 0 {
		o.TVDensity = 0.1
	}
	if o.TVGamma == 0 {
		o.TVGamma = 0.01
	}
	if !(o.TVDensity > 0 && o.TVDensity <= 1) || o.TVGamma < 0 || o.TVGamma >= 1 {
		return fmt.Errorf("report: task-vector density %g, gamma %g: want density in (0, 1] and gamma in [0, 1)", o.TVDensity, o.TVGamma)
	}
	if o.EvalSeed == 0 {
		o.EvalSeed = 1
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	// Unpacked last, once every option is known to be good.
	if o.Data == "" {
		if o.Embedded == nil {
			return errors.New("report: no data: give a data directory or the embedded data")
		}
		d, err := demo.Unpack(o.Embedded, filepath.Join(o.Out, "data"))
		if err != nil {
			return fmt.Errorf("report: unpacking the embedded data: %w", err)
		}
		o.Data = d
	}
	return nil
}

// Files the report writes into its output directory.
const (
	HTMLFile     = "report.html"
	MarkdownFile = "report.md"
	JSONFile     = "report.json"
	ChartsDir    = "charts"
)

// LayerNorms is one checkpoint pair's per-layer relative norms.
type LayerNorms struct {
	// Name is the fine-tune compared with the base.
	Name string `json:"name"`
	// RelDelta is ‖θ_ft − θ_base‖/‖θ_clean‖ per layer; RelRWS is
	// ‖RWS‖/‖θ_clean‖ (robust fine-tunes only).
	RelDelta []float64 `json:"rel_delta"`
	RelRWS   []float64 `json:"rel_rws"`
}

// Cosine is the per-layer cosine similarity of two task vectors.
type Cosine struct {
	A, B   string    `json:"-"`
	Pair   string    `json:"pair"`
	Values []float64 `json:"values"`
}

// TensorSparsity counts one patch tensor's non-zero values.
type TensorSparsity struct {
	Name     string `json:"name"`
	Elements int64  `json:"elements"`
	NonZero  int64  `json:"non_zero"`
	Encoding string `json:"encoding"` // dense | sparse
	Values   string `json:"values"`   // f32 | f16 | quantization
}

// PatchSparsity is one patch's non-zero counts.
type PatchSparsity struct {
	Label    string           `json:"label"`
	File     string           `json:"file"`
	Kind     string           `json:"kind"`
	Bytes    int64            `json:"bytes"`
	Elements int64            `json:"elements"`
	NonZero  int64            `json:"non_zero"`
	Tensors  []TensorSparsity `json:"tensors"`
}

// Fraction is NonZero/Elements.
func (p PatchSparsity) Fraction() float64 {
	if p.Elements == 0 {
		return 0
	}
	return float64(p.NonZero) / float64(p.Elements)
}

// Sweep is the accuracy along an interpolation between the clean model
// (α = 0) and one robust fine-tune (α = 1).
type Sweep struct {
	Robust string        `json:"robust"`
	Alphas []float64     `json:"alphas"`
	Scores []demo.Scores `json:"scores"`
}

// DemoReport is what BuildDemo computed and wrote; report.json holds it.
type DemoReport struct {
	Data        string            `json:"data"`
	From        string            `json:"from"`
	Out         string            `json:"out"`
	Corruptions []demo.Corruption `json:"corruptions"`
	// Layers are the layer names in network order (the x axis of the
	// per-layer charts).
	Layers  []string        `json:"layers"`
	Norms   []LayerNorms    `json:"layer_norms"`
	Cosines []Cosine        `json:"cosines"`
	Patches []PatchSparsity `json:"patches"`
	Sweeps  []Sweep         `json:"sweeps"`
	// Sensitivity is the clean model's per-module weight-noise
	// sensitivity (package sensitivity).
	Sensitivity *sensitivity.Report `json:"sensitivity"`
	Demo        *demo.Result        `json:"-"`
	Files       []string            `json:"files"`
	Seconds     float64             `json:"seconds"`
	sections    []section
}

type build struct {
	ctx    context.Context
	o      DemoOptions
	alphas []float64
	man    *demo.Manifest
	rep    *DemoReport
}

func (b *build) step(format string, a ...any) { fmt.Fprintf(b.o.Log, "== "+format+"\n", a...) }

func (b *build) model(name string) string { return filepath.Join(b.o.Data, name, "model.safetensors") }

// BuildDemo computes the demo report's numbers, draws the charts and
// writes report.html (self-contained: charts inline as SVG), report.md
// (charts as SVG files in charts/ beside it) and report.json into o.Out.
func BuildDemo(ctx context.Context, o DemoOptions) (*DemoReport, error) {
	start := time.Now()
	if err := o.defaults(); err != nil {
		return nil, err
	}
	alphas, err := taskvec.ParseAlphas(o.Alphas)
	if err != nil {
		return nil, fmt.Errorf("report: %w", err)
	}
	if len(alphas) < 2 {
		return nil, fmt.Errorf("report: alphas %q: want at least two values", o.Alphas)
	}
	man, err := demo.ReadManifest(o.Data)
	if err != nil {
		return nil, err
	}
	if err := os.MkdirAll(filepath.Join(o.Out, ChartsDir), 0o755); err != nil {
		return nil, err
	}
	b := &build{ctx: ctx, o: o, alphas: alphas, man: man, rep: &DemoReport{Data: o.Data, From: o.From, Out: o.Out, Corruptions: man.Corruptions}}
	if o.From != "" {
		if b.rep.Demo, err = demo.ReadResult(filepath.Join(o.From, demo.ResultsJSON)); err != nil {
			return nil, fmt.Errorf("report: --from: %w", err)
		}
	}
	for _, f := range []func() error{b.norms, b.cosines, b.sparsity, b.sweeps, b.sensitivity} {
		if err := f(); err != nil {
			return nil, err
		}
	}
	b.rep.Seconds = time.Since(start).Seconds()
	if err := b.rep.page().write(o.Out, b.rep); err != nil {
		return nil, err
	}
	return b.rep, nil
}

// colour is the palette entry of the clean model (0) or a corruption (by
// name, in the manifest's order): the same in every chart.
func (b *build) colour(key string) (int, bool) {
	key = strings.TrimPrefix(key, "robust-")
	for i, c := range b.man.Corruptions {
		if c.Name == key || c.Spec == key {
			return thingColour(1 + i)
		}
	}
	return thingColour(0)
}

// series makes a series coloured by its key.
func (b *build) series(key, name string, values []float64) Series {
	c, d := b.colour(key)
	return Series{Name: name, Values: values, Colour: c, Dashed: d}
}

// norms: where the difference lives.
func (b *build) norms() error {
	b.step("per-layer relative norms of the fine-tunes' differences")
	base, _ := b.man.Role(demo.RoleBase, "")
	clean, _ := b.man.Role(demo.RoleClean, "")
	// The clean fine-tune against the base: a two-checkpoint stats pass
	// (δ = clean − base, normalised by ‖θ_base‖, which differs from
	// ‖θ_clean‖ by a few percent at most here).
	cks, err := weights.OpenAll(b.model(base.Name), b.model(clean.Name))
	if err != nil {
		return err
	}
	st, err := signature.ComputeStats(b.ctx, signature.Sources{Clean: cks[0], Robust: cks[1]}, stream.Options{Workers: b.o.Workers})
	if err != nil {
		weights.CloseAll(cks)
		return err
	}
	ls := st.Layers
	weights.CloseAll(cks)
	for _, l := range ls {
		b.rep.Layers = append(b.rep.Layers, l.Name)
	}
	cn := LayerNorms{Name: clean.Name}
	for _, l := range ls {
		cn.RelDelta = append(cn.RelDelta, l.RelNorm())
	}
	b.rep.Norms = append(b.rep.Norms, cn)
	for _, c := range b.man.Corruptions {
		rb, _ := b.man.Role(demo.RoleRobust, c.Name)
		src, done, err := demo.OpenSources(b.model(base.Name), b.model(clean.Name), b.model(rb.Name))
		if err != nil {
			return err
		}
		st, err := signature.ComputeStats(b.ctx, src, stream.Options{Workers: b.o.Workers})
		done()
		if err != nil {
			return err
		}
		layers := st.Layers
		if err := sameLayers(b.rep.Layers, layers); err != nil {
			return fmt.Errorf("%s: %w", rb.Name, err)
		}
		n := LayerNorms{Name: rb.Name}
		for _, l := range layers {
			n.RelDelta = append(n.RelDelta, l.RelNorm())
			n.RelRWS = append(n.RelRWS, l.RelRWS())
		}
		b.rep.Norms = append(b.rep.Norms, n)
	}
	var delta, rws []Series
	for _, n := range b.rep.Norms {
		delta = append(delta, b.series(n.Name, n.Name, n.RelDelta))
		if n.RelRWS != nil {
			rws = append(rws, b.series(n.Name, strings.TrimPrefix(n.Name, "robust-"), n.RelRWS))
		}
	}
	sec := section{ID: "norms", Title: "Where the difference lives",
		Text: "Per layer (network order), the norm of each fine-tune's change from the base relative to the clean model's weights, " +
			"and the same for the Robust Weight Signature (the robust change with its component along the clean change projected out). " +
			"Batchnorm layers (features.1, features.5) hold running statistics, which a corruption shifts most. " +
			"(The RWS here is the plain formula for every tensor; the demo's patches use θ_robust − θ_clean for running statistics.)"}
	sec.Takeaway = normsTakeaway(b.rep.Layers, delta, rws)
	if err := b.addChart(&sec, "norms-delta.svg", "‖θ_ft − θ_base‖ / ‖θ_clean‖ per layer", "", func() ([]byte, error) {
		return groupedBars("‖θ_ft − θ_base‖ / ‖θ_clean‖", "relative norm", b.rep.Layers, delta, false, 18, 10)
	}); err != nil {
		return err
	}
	if err := b.addChart(&sec, "norms-rws.svg", "‖RWS‖ / ‖θ_clean‖ per layer", "", func() ([]byte, error) {
		return groupedBars("‖RWS‖ / ‖θ_clean‖ (robust vs clean, base as pretrained)", "relative norm", b.rep.Layers, rws, false, 18, 10)
	}); err != nil {
		return err
	}
	b.rep.sections = append(b.rep.sections, sec)
	return nil
}

func sameLayers(names []string, layers []signature.LayerStat) error {
	if len(names) != len(layers) {
		return fmt.Errorf("%d layers, the base has %d", len(layers), len(names))
	}
	for i, l := range layers {
		if l.Name != names[i] {
			return fmt.Errorf("layer %d is %q, the base's is %q", i, l.Name, names[i])
		}
	}
	return nil
}

// cosines: per-layer cosine similarity between task vectors.
func (b *build) cosines() error {
	b.step("per-layer cosine similarity of the task vectors")
	base, _ := b.man.Role(demo.RoleBase, "")
	var names, paths []string
	for _, e := range b.man.Models {
		if e.Role != demo.RoleBase {
			names = append(names, e.Name)
			paths = append(paths, b.model(e.Name))
		}
	}
	cks, err := weights.OpenAll(append([]string{b.model(base.Name)}, paths...)...)
	if err != nil {
		return err
	}
	defer weights.CloseAll(cks)
	var floats []weights.TensorInfo
	for _, t := range cks[0].Tensors() {
		if t.DType.IsFloat() {
			floats = append(floats, t)
		}
	}
	layers := signature.OrderLayers(floats)
	k := len(names)
	// dots[l][i][j] = Σ over layer l of τ_i·τ_j.
	dots := make([][][]float64, len(layers))
	for li, l := range layers {
		dots[li] = make([][]float64, k)
		for i := range dots[li] {
			dots[li][i] = make([]float64, k)
		}
		for _, name := range l.Tensors {
			taus, err := taskVectors(cks, name)
			if err != nil {
				return err
			}
			for i := 0; i < k; i++ {
				for j := i; j < k; j++ {
					var s float64
					for e := range taus[i] {
						s += taus[i][e] * taus[j][e]
					}
					dots[li][i][j] += s
					dots[li][j][i] = dots[li][i][j]
				}
			}
		}
	}
	cos := func(li, i, j int) float64 {
		d := math.Sqrt(dots[li][i][i] * dots[li][j][j])
		if d == 0 {
			return 0
		}
		return dots[li][i][j] / d
	}
	cleanIdx := -1
	for i, n := range names {
		if e, _ := b.man.Role(demo.RoleClean, ""); e.Name == n {
			cleanIdx = i
		}
	}
	var withClean, between []Series
	for i := 0; i < k; i++ {
		for j := i + 1; j < k; j++ {
			c := Cosine{A: names[i], B: names[j], Pair: names[i] + " · " + names[j]}
			for li := range layers {
				c.Values = append(c.Values, cos(li, i, j))
			}
			b.rep.Cosines = append(b.rep.Cosines, c)
			short := func(s string) string { return strings.TrimPrefix(s, "robust-") }
			switch {
			case i == cleanIdx:
				withClean = append(withClean, b.series(names[j], short(names[j]), c.Values))
			case j == cleanIdx:
				withClean = append(withClean, b.series(names[i], short(names[i]), c.Values))
			default:
				col, dash := otherColour(len(between))
				between = append(between, Series{Name: short(names[i]) + " · " + short(names[j]), Values: c.Values, Colour: col, Dashed: dash})
			}
		}
	}
	xs := make([]float64, len(layers))
	labels := make([]string, len(layers))
	for i, l := range layers {
		xs[i], labels[i] = float64(i), l.Name
	}
	sec := section{ID: "cosine", Title: "Task vector similarity",
		Text: "Cosine similarity, per layer, between task vectors τ = θ_ft − θ_base of the fine-tunes. " +
			"All fine-tunes share the clean learning signal (same data order, same start), so similarity is high where that dominates; " +
			"where the corruptions pull apart, it drops — that is where merges interfere and signatures differ."}
	if len(withClean) > 0 {
		mean := make([]float64, len(labels))
		for _, sr := range withClean {
			for i, v := range sr.Values {
				mean[i] += v / float64(len(withClean))
			}
		}
		hi, lo := argmax(mean), argmin(mean)
		sec.Takeaway = fmt.Sprintf("The robust task vectors point most like the clean one in %s (mean cosine %.2f) and least in %s (%.2f): merges interfere most there.",
			labels[hi], mean[hi], labels[lo], mean[lo])
	}
	if err := b.addChart(&sec, "cosine-clean.svg", "cos(τ_robust, τ_clean) per layer", "", func() ([]byte, error) {
		return lines("cos(τ_robust, τ_clean) per layer", "", "cosine similarity", xs, labels, withClean, -0.2, 1, 16, 10)
	}); err != nil {
		return err
	}
	if err := b.addChart(&sec, "cosine-robust.svg", "cos(τ_robust_i, τ_robust_j) per layer", "", func() ([]byte, error) {
		return lines("cos(τ_robust_i, τ_robust_j) per layer", "", "cosine similarity", xs, labels, between, -0.2, 1, 16, 10)
	}); err != nil {
		return err
	}
	b.rep.sections = append(b.rep.sections, sec)
	return nil
}

// taskVectors reads one tensor from the base (cks[0]) and each fine-tune
// and returns the fine-tunes' differences from the base in float64.
func taskVectors(cks []weights.Checkpoint, name string) ([][]float64, error) {
	read := func(c weights.Checkpoint) ([]float64, error) {
		t, err := c.ReadTensor(name, nil)
		if err != nil {
			return nil, err
		}
		n, err := t.NumElements()
		if err != nil {
			return nil, err
		}
		v := make([]float64, n)
		if err := weights.Decode(t.DType, t.Data, v); err != nil {
			return nil, &weights.TensorError{File: c.Path(), Tensor: name, Err: err}
		}
		return v, nil
	}
	base, err := read(cks[0])
	if err != nil {
		return nil, err
	}
	var out [][]float64
	for _, c := range cks[1:] {
		v, err := read(c)
		if err != nil {
			return nil, err
		}
		if len(v) != len(base) {
			return nil, &weights.TensorError{File: c.Path(), Tensor: name, Err: fmt.Errorf("%d values, the base has %d", len(v), len(base))}
		}
		for i := range v {
			v[i] -= base[i]
		}
		out = append(out, v)
	}
	return out, nil
}

// sparsity: the non-zero fraction of each patch, per tensor.
func (b *build) sparsity() error {
	b.step("patch sparsity")
	dir := filepath.Join(b.o.Out, "patches")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	base, _ := b.man.Role(demo.RoleBase, "")
	type item struct{ label, path string }
	var items []item
	for _, c := range b.man.Corruptions {
		rb, _ := b.man.Role(demo.RoleRobust, c.Name)
		f32, q := "", ""
		if b.o.From != "" {
			f32 = filepath.Join(b.o.From, "patches", "rws-"+c.Name+".wpatch")
			q = filepath.Join(b.o.From, "patches", "rws-"+c.Name+".q4.wpatch")
		} else {
			var err error
			if f32, q, err = b.signatures(c.Name, rb.Name, dir); err != nil {
				return err
			}
		}
		tv := filepath.Join(dir, "tv-"+c.Name+"-breadcrumbs.wpatch")
		if err := b.taskVectorPatch(b.model(rb.Name), b.model(base.Name), tv); err != nil {
			return err
		}
		items = append(items, item{"rws " + c.Name, f32}, item{"rws " + c.Name + " 4-bit", q},
			item{"τ " + c.Name + " breadcrumbs", tv})
	}
	for _, it := range items {
		ps, err := countNonZero(it.path)
		if err != nil {
			return err
		}
		ps.Label = it.label
		b.rep.Patches = append(b.rep.Patches, *ps)
	}
	// Chart 1: whole patches.
	var labels []string
	var fr []float64
	for _, p := range b.rep.Patches {
		labels = append(labels, p.Label)
		fr = append(fr, p.Fraction())
	}
	// Chart 2: per tensor, for the task-vector patches (they cover every
	// tensor; the signatures only the shallow ones, all dense).
	var tensors []string
	for _, t := range b.rep.Patches[len(b.rep.Patches)-1].Tensors {
		tensors = append(tensors, t.Name)
	}
	var per []Series
	for _, p := range b.rep.Patches {
		if p.Kind != "breadcrumbs" {
			continue
		}
		key := strings.TrimSuffix(strings.TrimPrefix(p.Label, "τ "), " breadcrumbs")
		s := b.series(key, key, nil)
		byName := map[string]TensorSparsity{}
		for _, t := range p.Tensors {
			byName[t.Name] = t
		}
		for _, n := range tensors {
			t := byName[n]
			f := 0.0
			if t.Elements > 0 {
				f = float64(t.NonZero) / float64(t.Elements)
			}
			s.Values = append(s.Values, f)
		}
		per = append(per, s)
	}
	sec := section{ID: "sparsity", Title: "Patch sparsity",
		Text: fmt.Sprintf("Fraction of non-zero values, counted from the values the patch files give back (4-bit values dequantized). "+
			"The signatures are dense; the task vectors θ_robust − θ_base are sparsified with Breadcrumbs (drop the top %g of |τ|, keep the next %g of each tensor). "+
			"Counts round down per tensor (⌊density·n⌋), so a tensor of fewer than %d values keeps nothing: the biases and batchnorm vectors vanish.",
			b.o.TVGamma, b.o.TVDensity, int(math.Ceil(1/b.o.TVDensity)))}
	minRWS, tvSum, tvN := 1.0, 0.0, 0
	for _, p := range b.rep.Patches {
		if p.Kind == "breadcrumbs" {
			tvSum += p.Fraction()
			tvN++
		} else {
			minRWS = math.Min(minRWS, p.Fraction())
		}
	}
	if tvN > 0 {
		sec.Takeaway = fmt.Sprintf("The signatures are dense (at least %.1f%% of their values non-zero); the Breadcrumbs task vectors keep %.1f%% of theirs.", 100*minRWS, 100*tvSum/float64(tvN))
	}
	if err := b.addChart(&sec, "sparsity-patches.svg", "non-zero fraction per patch", "", func() ([]byte, error) {
		col, _ := otherColour(1)
		return groupedBars("non-zero fraction per patch", "fraction non-zero", labels, []Series{{Name: "non-zero", Values: fr, Colour: col}}, true, 18, 11)
	}); err != nil {
		return err
	}
	if err := b.addChart(&sec, "sparsity-tensors.svg", "non-zero fraction per tensor of the Breadcrumbs task vectors", "", func() ([]byte, error) {
		return groupedBars("non-zero fraction per tensor (Breadcrumbs task vectors)", "fraction non-zero", tensors, per, true, 18, 11)
	}); err != nil {
		return err
	}
	b.rep.sections = append(b.rep.sections, sec)
	return nil
}

// signatures makes F32 and 4-bit RWS patches as the demo does (when the
// report is not given the demo's).
func (b *build) signatures(c, robust, dir string) (f32, q string, err error) {
	base, _ := b.man.Role(demo.RoleBase, "")
	clean, _ := b.man.Role(demo.RoleClean, "")
	src, done, err := demo.OpenSources(b.model(base.Name), b.model(clean.Name), b.model(robust))
	if err != nil {
		return "", "", err
	}
	defer done()
	st, err := signature.ComputeStats(b.ctx, src, stream.Options{Workers: b.o.Workers})
	if err != nil {
		return "", "", err
	}
	sel := demo.ShallowTensors(st.Layers, b.o.Layers)
	qc, err := quantize.ParseConfig("4bit-asym-block64")
	if err != nil {
		return "", "", err
	}
	f32, q = filepath.Join(dir, "rws-"+c+".wpatch"), filepath.Join(dir, "rws-"+c+".q4.wpatch")
	// As the demo does by default: running statistics as θ_robust − θ_clean.
	mode := signature.StatsDifference
	if _, err := demo.WriteSignature(b.ctx, src, st, sel, mode, wpatch.Encoding{Values: "f32"}, f32, b.o.Workers); err != nil {
		return "", "", err
	}
	if _, err := demo.WriteSignature(b.ctx, src, st, sel, mode, wpatch.Encoding{Values: "q", Quant: qc}, q, b.o.Workers); err != nil {
		return "", "", err
	}
	return f32, q, nil
}

func (b *build) taskVectorPatch(ft, base, out string) error {
	cks, err := weights.OpenAll(ft, base)
	if err != nil {
		return err
	}
	defer weights.CloseAll(cks)
	_, err = taskvec.Diff(b.ctx, cks[0], cks[1], out, taskvec.DiffOptions{
		Options:  stream.Options{Workers: b.o.Workers},
		Sparsify: sparsify.Spec{Method: sparsify.MagnitudeOutliers, Density: b.o.TVDensity, Gamma: b.o.TVGamma},
		Patch:    &wpatch.Encoding{Values: "f32"},
		Metadata: map[string]string{"sparsify": fmt.Sprintf("breadcrumbs density=%g gamma=%g", b.o.TVDensity, b.o.TVGamma)},
	})
	return err
}

// countNonZero loads every tensor of a patch and counts its non-zero
// values. (A patch entry's nnz is the number of values stored, which for
// a dense tensor is every element, zero or not.)
func countNonZero(path string) (*PatchSparsity, error) {
	p, err := wpatch.Open(path)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	ps := &PatchSparsity{File: path, Kind: p.Kind, Bytes: st.Size()}
	for _, t := range p.Tensors {
		n := t.Elements()
		v := make([]float32, n)
		if err := p.Load(t.Name, v); err != nil {
			return nil, err
		}
		ts := TensorSparsity{Name: t.Name, Elements: n, Encoding: t.Encoding, Values: t.Values}
		if t.Quant != "" {
			ts.Values = t.Quant
		}
		for _, x := range v {
			if x != 0 {
				ts.NonZero++
			}
		}
		ps.Elements += n
		ps.NonZero += ts.NonZero
		ps.Tensors = append(ps.Tensors, ts)
	}
	return ps, nil
}

// sweeps: accuracy against α between the clean model and each robust
// fine-tune.
func (b *build) sweeps() error {
	alphas := b.alphas
	b.step("interpolation sweeps clean → robust, α = %s", b.o.Alphas)
	data, err := b.man.LoadData(b.o.Data)
	if err != nil {
		return err
	}
	ev, err := demo.NewEvaluator(data.Test, b.man.Corruptions, b.o.EvalSeed)
	if err != nil {
		return err
	}
	clean, _ := b.man.Role(demo.RoleClean, "")
	arch := filepath.Join(b.o.Data, clean.Name, "arch.yaml")
	sec := section{ID: "sweeps", Title: "Accuracy along the interpolation clean → robust",
		Text: fmt.Sprintf("θ(α) = (1−α)·θ_clean + α·θ_robust (weightops interpolate), α = %s, evaluated on the %d clean test images and under each corruption.", b.o.Alphas, ev.Samples())}
	var gains, cleanCost []float64
	for _, c := range b.man.Corruptions {
		rb, _ := b.man.Role(demo.RoleRobust, c.Name)
		cks, err := weights.OpenAll(b.model(clean.Name), b.model(rb.Name))
		if err != nil {
			return err
		}
		dir := filepath.Join(b.o.Out, "sweep", c.Name)
		if err := os.MkdirAll(dir, 0o755); err != nil {
			weights.CloseAll(cks)
			return err
		}
		outs := make([]string, len(alphas))
		for i, a := range alphas {
			outs[i] = filepath.Join(dir, fmt.Sprintf("alpha-%g.safetensors", a))
		}
		_, err = taskvec.Interpolate(b.ctx, cks[0], cks[1], alphas, outs, taskvec.ScaleOptions{Options: stream.Options{Workers: b.o.Workers}})
		weights.CloseAll(cks)
		if err != nil {
			return err
		}
		sw := Sweep{Robust: rb.Name, Alphas: alphas}
		for _, p := range outs {
			m, err := engine.Load(p, arch)
			if err != nil {
				return err
			}
			s, err := ev.Model(m)
			if err != nil {
				return fmt.Errorf("%s: %w", p, err)
			}
			sw.Scores = append(sw.Scores, s)
		}
		series := []Series{b.series("clean", "clean data", nil)}
		for _, cc := range b.man.Corruptions {
			series = append(series, b.series(cc.Name, cc.Spec, nil))
		}
		for _, s := range sw.Scores {
			series[0].Values = append(series[0].Values, s.Clean)
			for i, cc := range b.man.Corruptions {
				series[i+1].Values = append(series[i+1].Values, s.Corrupted[cc.Name])
			}
		}
		b.rep.Sweeps = append(b.rep.Sweeps, sw)
		first, last := sw.Scores[0], sw.Scores[len(sw.Scores)-1]
		gains = append(gains, last.Corrupted[c.Name]-first.Corrupted[c.Name])
		cleanCost = append(cleanCost, first.Clean-last.Clean)
		if err := b.addChart(&sec, "sweep-"+c.Name+".svg", "clean → "+rb.Name, "", func() ([]byte, error) {
			return lines("clean (α=0) → "+rb.Name+" (α=1)", "α", "accuracy", alphas, nil, series, 0, 1, 13, 10)
		}); err != nil {
			return err
		}
	}
	if len(gains) > 0 {
		sec.Takeaway = fmt.Sprintf("Moving from the clean model to a robust one raises accuracy on its own corruption by %+.1f to %+.1f points, for %.1f to %.1f points of clean accuracy.",
			100*slices.Min(gains), 100*slices.Max(gains), 100*slices.Min(cleanCost), 100*slices.Max(cleanCost))
	}
	b.rep.sections = append(b.rep.sections, sec)
	return nil
}

// normsTakeaway says where the fine-tunes change most relative to the
// weights on average, and where the signatures are largest.
func normsTakeaway(layers []string, delta, rws []Series) string {
	mean := func(ss []Series) []float64 {
		m := make([]float64, len(layers))
		for _, s := range ss {
			for i, v := range s.Values {
				m[i] += v / float64(len(ss))
			}
		}
		return m
	}
	if len(delta) == 0 || len(layers) == 0 {
		return ""
	}
	d := mean(delta)
	hi := argmax(d)
	out := fmt.Sprintf("The fine-tunes change %s most relative to the weights (%.3g on average)", layers[hi], d[hi])
	if len(rws) > 0 {
		r := mean(rws)
		if rh := argmax(r); rh == hi {
			out += ", and the signatures are largest there too"
		} else {
			out += fmt.Sprintf("; the signatures are largest in %s (%.3g on average)", layers[rh], r[rh])
		}
	}
	return out + "."
}

func (b *build) addChart(sec *section, file, title, caption string, draw func() ([]byte, error)) error {
	svg, err := draw()
	if err != nil {
		return fmt.Errorf("report: %w", err)
	}
	c := chart{File: filepath.ToSlash(filepath.Join(ChartsDir, file)), Title: title, Caption: caption, SVG: svg}
	if err := weights.WriteFileAtomic(filepath.Join(b.o.Out, c.File), svg); err != nil {
		return err
	}
	sec.Charts = append(sec.Charts, c)
	b.rep.Files = append(b.rep.Files, c.File)
	return nil
}

// sensitivityRel are the relative noise norms γ the report tries.
var sensitivityRel = []float64{0.05, 0.2, 0.5}

// sensitivity: which modules of the clean model a patch may touch safely.
func (b *build) sensitivity() error {
	b.step("weight-noise sensitivity of the clean model, γ = %v", sensitivityRel)
	data, err := b.man.LoadData(b.o.Data)
	if err != nil {
		return err
	}
	clean, _ := b.man.Role(demo.RoleClean, "")
	m, err := engine.Load(b.model(clean.Name), filepath.Join(b.o.Data, clean.Name, "arch.yaml"))
	if err != nil {
		return err
	}
	const trials = 3
	rep, err := sensitivity.Analyze(m, data.Test, sensitivity.Options{Rel: sensitivityRel, Trials: trials, Seed: b.o.EvalSeed})
	if err != nil {
		return fmt.Errorf("report: sensitivity: %w", err)
	}
	b.rep.Sensitivity = rep
	sec := section{ID: "sensitivity", Title: "Weight-noise sensitivity of the clean model",
		Text:   fmt.Sprintf("Each weight module in turn gets seeded Gaussian noise v with ‖v‖ = γ·‖W‖ (%d trials); the accuracy drop on the %d clean test images from %.1f%%, mean ± standard deviation, most sensitive module first (weightops sensitivity).", trials, data.Test.Len(), 100*rep.BaseAccuracy),
		Header: []string{"module", "parameters", "γ", "accuracy drop (points)"}}
	var modules []string
	seen := map[string]bool{}
	for _, r := range rep.Results {
		sec.Rows = append(sec.Rows, cells(r.Module, fmt.Sprint(r.Params), fmt.Sprint(r.Rel), fmt.Sprintf("%.1f ± %.1f", 100*r.MeanDrop, 100*r.StdDrop)))
		if !seen[r.Module] {
			seen[r.Module] = true
			modules = append(modules, r.Module)
		}
	}
	var series []Series
	for _, rel := range sensitivityRel {
		col, dash := otherColour(len(series))
		sr := Series{Name: fmt.Sprintf("γ = %g", rel), Colour: col, Dashed: dash}
		for _, mod := range modules {
			for _, r := range rep.Results {
				if r.Module == mod && r.Rel == rel {
					sr.Values = append(sr.Values, 100*r.MeanDrop)
				}
			}
		}
		series = append(series, sr)
	}
	if last := series[len(series)-1]; len(last.Values) == len(modules) && len(modules) > 0 {
		hi, lo := argmax(last.Values), argmin(last.Values)
		sec.Takeaway = fmt.Sprintf("%s is the most sensitive module (noise of %s costs %.1f points) and %s the least (%.1f points): a patch is safest where the model is least sensitive.",
			modules[hi], last.Name, last.Values[hi], modules[lo], last.Values[lo])
	}
	if err := b.addChart(&sec, "sensitivity.svg", "accuracy drop per module", "", func() ([]byte, error) {
		return groupedBars("accuracy drop under relative weight noise", "points", modules, series, false, 16, 9)
	}); err != nil {
		return err
	}
	b.rep.sections = append(b.rep.sections, sec)
	return nil
}

// page assembles the demo report's page: the demo's results (with a demo
// output directory) and the computed sections, each with its takeaway.
func (r *DemoReport) page() *Page {
	var cs []string
	for _, c := range r.Corruptions {
		cs = append(cs, c.Spec)
	}
	p := &Page{Title: "weightops report: the demo models",
		Intro: fmt.Sprintf("Demo models from %s: a base CNN trained briefly on a Fashion-MNIST subset, a clean fine-tune, and robust fine-tunes for %s. Made by weightops report in %.1f s.",
			r.Data, strings.Join(cs, ", "), r.Seconds)}
	if r.Demo != nil {
		p.Sections = append(p.Sections, demoSection(r.Demo))
	}
	for _, s := range r.sections {
		if s.ID == "sparsity" && s.Header == nil {
			r.sparsityTable(&s)
		}
		p.Sections = append(p.Sections, s)
	}
	return p
}

// sparsityTable summarises the patches.
func (r *DemoReport) sparsityTable(sec *section) {
	sec.Header = []string{"patch", "kind", "values", "tensors", "non-zero", "fraction", "size"}
	for _, p := range r.Patches {
		vals := map[string]bool{}
		for _, t := range p.Tensors {
			vals[t.Values] = true
		}
		var vs []string
		for v := range vals {
			vs = append(vs, v)
		}
		sort.Strings(vs)
		sec.Rows = append(sec.Rows, cells(p.Label, p.Kind, strings.Join(vs, ", "), fmt.Sprint(len(p.Tensors)),
			fmt.Sprintf("%d of %d", p.NonZero, p.Elements), fmt.Sprintf("%.3f", p.Fraction()), weights.HumanBytes(p.Bytes)))
	}
}

// demoSection turns the demo's results into a table section; each
// signature's own corruption is in bold.
func demoSection(d *demo.Result) section {
	sec := section{ID: "results", Title: "Demo results",
		Text: fmt.Sprintf("From weightops demo (%s, training seed %d): accuracy (%%) on %d test images, clean and corrupted; "+
			"signatures cover the first %d weight layers with their batchnorms; composed signatures at scale %g (chosen on held-out training images). "+
			"Bold: a signature's own corruption.",
			d.Out, d.Seed, d.TestSamples, d.Layers, d.ComposeScale)}
	sec.Header = []string{"model", "clean"}
	for _, c := range d.Corruptions {
		sec.Header = append(sec.Header, c.Spec)
	}
	sec.Header = append(sec.Header, "mean corrupted", "patch size")
	pct := func(x float64) string { return fmt.Sprintf("%.1f", 100*x) }
	var clean *demo.Row
	best := -1
	for i, row := range d.Rows {
		if row.Group == demo.GroupAblation {
			continue
		}
		if row.Name == "clean" {
			clean = &d.Rows[i]
		}
		row := cells(row.Name)
		r := d.Rows[i]
		if r.Invalid != "" {
			row = append(row, Cell{Text: "invalid: " + r.Invalid})
			for range d.Corruptions {
				row = append(row, Cell{})
			}
			sec.Rows = append(sec.Rows, append(row, Cell{}, Cell{}))
			continue
		}
		if best < 0 || r.MeanCorrupted > d.Rows[best].MeanCorrupted {
			best = i
		}
		row = append(row, Cell{Text: pct(r.Clean)})
		for _, c := range d.Corruptions {
			row = append(row, Cell{Text: pct(r.Corrupted[c.Name]), Bold: r.Group == demo.GroupSignature && r.Corruption == c.Name})
		}
		size := ""
		if r.PatchBytes > 0 {
			size = weights.HumanBytes(r.PatchBytes)
		}
		sec.Rows = append(sec.Rows, append(row, Cell{Text: pct(r.MeanCorrupted)}, Cell{Text: size}))
	}
	if best >= 0 && clean != nil {
		b := d.Rows[best]
		sec.Takeaway = fmt.Sprintf("Under corruption, %s does best (%s%% on average, clean %s%%), against %s%% for the clean model.",
			b.Name, pct(b.MeanCorrupted), pct(b.Clean), pct(clean.MeanCorrupted))
	}
	for _, c := range d.Claims {
		verdict := "held"
		if !c.Held {
			verdict = "DID NOT HOLD"
		}
		sec.Notes = append(sec.Notes, fmt.Sprintf("%s — %s: %s", c.Statement, verdict, c.Detail))
	}
	return sec
}

// argmax is the index of the largest value (−1 for none).
func argmax(v []float64) int {
	best := -1
	for i, x := range v {
		if best < 0 || x > v[best] {
			best = i
		}
	}
	return best
}

// argmin is the index of the smallest value (−1 for none).
func argmin(v []float64) int {
	best := -1
	for i, x := range v {
		if best < 0 || x < v[best] {
			best = i
		}
	}
	return best
}
