package signature

import (
	"context"
	"fmt"
	"math"
	"regexp"
	"strings"
	"sync"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

// Sources are the checkpoints a signature is computed from: the
// pretrained model both fine-tunes started from (nil for none), the clean
// fine-tune (the model the signature patches) and the robust fine-tune.
type Sources struct{ Pre, Clean, Robust weights.Checkpoint }

// inputs lists the sources in kernel order: pre (when given), clean,
// robust.
func (s Sources) inputs() []weights.Checkpoint {
	if s.Pre == nil {
		return []weights.Checkpoint{s.Clean, s.Robust}
	}
	return []weights.Checkpoint{s.Pre, s.Clean, s.Robust}
}

// floats checks that pre and robust hold every floating tensor of clean
// with its shape, and returns those tensors.
func (s Sources) floats() ([]weights.TensorInfo, error) {
	var out []weights.TensorInfo
	for _, t := range s.Clean.Tensors() {
		if !t.DType.IsFloat() {
			continue
		}
		for _, o := range []weights.Checkpoint{s.Pre, s.Robust} {
			if o == nil {
				continue
			}
			info, ok := o.Info(t.Name)
			if !ok {
				return nil, &weights.TensorError{File: o.Path(), Tensor: t.Name, Err: fmt.Errorf("missing (present in %s)", s.Clean.Path())}
			}
			if !weights.SameShape(info.Shape, t.Shape) {
				return nil, &weights.TensorError{File: o.Path(), Tensor: t.Name, Err: fmt.Errorf("shape %s, %s has %s", info.ShapeString(), s.Clean.Path(), t.ShapeString())}
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// TensorStat holds the inner products of one tensor that Robust Weight
// Signature extraction needs, all in float64:
//
//	δ_c = θ_robust − θ_pre, δ_0 = θ_clean − θ_pre
//	RWS = δ_c − (⟨δ_c, δ_0⟩ / ⟨δ_0, δ_0⟩)·δ_0, or δ_c when δ_0 = 0
//
// so ‖RWS‖² = ‖δ_c‖² − ⟨δ_c, δ_0⟩²/‖δ_0‖² needs no extra pass. Without a
// pretrained model, δ_c = θ_robust − θ_clean and δ_0 = 0.
type TensorStat struct {
	Name     string
	Elements int64
	Theta2   float64 // ‖θ_clean‖²
	DC2      float64 // ‖δ_c‖²
	D02      float64 // ‖δ_0‖²
	Dot      float64 // ⟨δ_c, δ_0⟩
}

// Coef is the projection coefficient ⟨δ_c, δ_0⟩ / ⟨δ_0, δ_0⟩ (0 if δ_0 = 0).
func (s TensorStat) Coef() float64 {
	if s.D02 == 0 {
		return 0
	}
	return s.Dot / s.D02
}

// RWS2 is ‖RWS‖².
func (s TensorStat) RWS2() float64 {
	if s.D02 == 0 {
		return s.DC2
	}
	return math.Max(0, s.DC2-s.Dot*s.Dot/s.D02)
}

// Statistics are every floating tensor's TensorStat and their sums per
// layer, in network order.
type Statistics struct {
	Tensors []TensorStat
	Layers  []LayerStat
}

// ComputeStats reads each floating tensor of the three sources once and
// computes its TensorStat, then groups them into layers.
func ComputeStats(ctx context.Context, src Sources, o stream.Options) (*Statistics, error) {
	infos, err := src.floats()
	if err != nil {
		return nil, err
	}
	stats := make([]TensorStat, len(infos))
	pos := map[string]int{}
	for i, t := range infos {
		pos[t.Name] = i
	}
	var mu sync.Mutex
	hasPre := src.Pre != nil
	job := &stream.Job{
		Inputs:  src.inputs(),
		Tensors: infos,
		Kernel: func(weights.TensorInfo) (stream.Kernel, error) {
			return stream.KernelFunc(func(ctx context.Context, t *stream.Tensor) error {
				s := TensorStat{Name: t.Name}
				s.Elements, _ = t.NumElements()
				acc := stream.ElementwiseFunc(func(in, _ [][]float64) {
					c, r := in[0], in[1]
					var p []float64
					if hasPre {
						p, c, r = in[0], in[1], in[2]
					}
					for i := range c {
						s.Theta2 += c[i] * c[i]
						var dc, d0 float64
						if p != nil {
							dc, d0 = r[i]-p[i], c[i]-p[i]
						} else {
							dc = r[i] - c[i]
						}
						s.DC2 += dc * dc
						s.D02 += d0 * d0
						s.Dot += dc * d0
					}
				})
				if err := stream.Passes(acc).Compute(ctx, t); err != nil {
					return err
				}
				mu.Lock()
				stats[pos[t.Name]] = s
				mu.Unlock()
				return nil
			}), nil
		},
		Phase:   "measuring",
		Options: o,
	}
	if _, err := job.Run(ctx); err != nil {
		return nil, err
	}
	return &Statistics{Tensors: stats, Layers: GroupStats(src.Clean.Tensors(), stats)}, nil
}

// LayerStat sums TensorStats over a layer.
type LayerStat struct {
	Layer
	Theta2, DC2, RWS2 float64
	Elements          int64
}

// RelNorm is ‖δ_c‖/‖θ‖ over the layer: where the difference lives.
func (l LayerStat) RelNorm() float64 { return safeRatio(math.Sqrt(l.DC2), math.Sqrt(l.Theta2)) }

// RelRWS is ‖RWS‖/‖θ‖ over the layer.
func (l LayerStat) RelRWS() float64 { return safeRatio(math.Sqrt(l.RWS2), math.Sqrt(l.Theta2)) }

func safeRatio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// GroupStats sums tensor statistics into layers in network order.
func GroupStats(infos []weights.TensorInfo, stats []TensorStat) []LayerStat {
	byName := map[string]TensorStat{}
	for _, s := range stats {
		byName[s.Name] = s
	}
	var floats []weights.TensorInfo
	for _, t := range infos {
		if _, ok := byName[t.Name]; ok {
			floats = append(floats, t)
		}
	}
	var out []LayerStat
	for _, l := range OrderLayers(floats) {
		ls := LayerStat{Layer: l}
		for _, n := range l.Tensors {
			s := byName[n]
			ls.Theta2 += s.Theta2
			ls.DC2 += s.DC2
			ls.RWS2 += s.RWS2()
			ls.Elements += s.Elements
		}
		out = append(out, ls)
	}
	return out
}

// Selection chooses the layers a signature keeps.
type Selection struct {
	// Layers > 0 keeps the first Layers weight layers in network order
	// (their weights and biases).
	Layers int
	// Energy in (0, 1] keeps the shallowest weight layers holding that
	// fraction of the signature's squared norm.
	Energy float64
	// Include and Exclude filter tensor names by regular expression,
	// after Layers/Energy (alone, Include selects directly).
	Include, Exclude *regexp.Regexp
	// WithNorms keeps, with Layers/Energy, the layers without a ≥2-D weight
	// (batchnorms, layer norms) that come before the first weight layer
	// left out: the early feature statistics a corruption shifts.
	WithNorms bool
}

// String describes the selection as the patch metadata records it.
func (sel Selection) String() string {
	re := func(r *regexp.Regexp) string {
		if r == nil {
			return ""
		}
		return r.String()
	}
	return fmt.Sprintf("layers=%d energy=%g with_norms=%t include=%q exclude=%q", sel.Layers, sel.Energy, sel.WithNorms, re(sel.Include), re(sel.Exclude))
}

// Select returns the tensors kept, in network order.
func (sel Selection) Select(layers []LayerStat) []string {
	var total float64
	for _, l := range layers {
		if l.Weight {
			total += l.RWS2
		}
	}
	var out []string
	taken, acc := 0, 0.0
	limit := sel.Layers > 0 || sel.Energy > 0
	for _, l := range layers {
		if limit {
			if !l.Weight && !sel.WithNorms {
				continue
			}
			if l.Weight {
				done := (sel.Layers > 0 && taken >= sel.Layers) || (sel.Energy > 0 && total > 0 && acc >= sel.Energy*total*(1-1e-12))
				if done {
					break
				}
				taken++
				acc += l.RWS2
			}
		}
		for _, n := range l.Tensors {
			if sel.Include != nil && !sel.Include.MatchString(n) {
				continue
			}
			if sel.Exclude != nil && sel.Exclude.MatchString(n) {
				continue
			}
			out = append(out, n)
		}
	}
	return out
}

// Options control Extract.
type Options struct {
	stream.Options
	// Selection chooses the layers kept, unless Tensors lists them.
	Selection Selection
	// Tensors, when set, are the tensors kept (any order).
	Tensors []string
	// RunningStats is how batchnorm running statistics are treated:
	// StatsDifference (default), StatsProject or StatsSkip.
	RunningStats string
	// Encoding is how the patch stores values.
	Encoding wpatch.Encoding
	// Metadata is added to the patch's metadata.
	Metadata map[string]string
	// Stats are the sources' statistics when already computed
	// (ComputeStats); otherwise Extract computes them.
	Stats *Statistics
}

// Extraction is what Extract wrote.
type Extraction struct {
	*wpatch.Summary
	// Selected are the tensors in the patch, in network order.
	Selected []string
	// Stats are the sources' statistics.
	Stats *Statistics
	// Errors measure what quantizing each tensor lost (quantized
	// encodings only).
	Errors map[string]wpatch.QuantError `json:"-"`
}

// Extract writes the Robust Weight Signature of the selected tensors as a
// patch at out: per tensor RWS = δ_c − coef·δ_0 computed in float64 and
// rounded once to float32, with batchnorm running statistics treated as
// o.RunningStats says. The patch records the sources' paths and SHA-256,
// and the clean model's digest as its base.
func Extract(ctx context.Context, src Sources, out string, o Options) (*Extraction, error) {
	if o.RunningStats == "" {
		o.RunningStats = StatsDifference
	}
	st := o.Stats
	if st == nil {
		var err error
		if st, err = ComputeStats(ctx, src, o.Options.WithPhasePrefix("pass 1/2: ")); err != nil {
			return nil, err
		}
	}
	sel := o.Tensors
	if sel == nil {
		sel = o.Selection.Select(st.Layers)
	}
	stats, sel, err := AdjustRunningStats(o.RunningStats, st.Tensors, sel)
	if err != nil {
		return nil, err
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("signature %s: the selection keeps no tensor", out)
	}
	md := map[string]string{"clean": src.Clean.Path(), "robust": src.Robust.Path()}
	if src.Pre != nil {
		md["base"] = src.Pre.Path()
	}
	var sums []string
	var cleanSHA string
	for _, ck := range []weights.Checkpoint{src.Pre, src.Clean, src.Robust} {
		if ck == nil {
			continue
		}
		d, err := o.Digest(ck)
		if err != nil {
			return nil, err
		}
		if ck == src.Clean {
			cleanSHA = d
		}
		sums = append(sums, ck.Path()+"="+d)
	}
	md["sources_sha256"] = strings.Join(sums, ",")
	for k, v := range o.Metadata {
		md[k] = v
	}
	coef := map[string]float64{}
	for _, s := range stats {
		coef[s.Name] = s.Coef()
	}
	var infos []weights.TensorInfo
	for _, n := range sel {
		t, ok := src.Clean.Info(n)
		if !ok {
			return nil, &weights.TensorError{File: src.Clean.Path(), Tensor: n, Err: weights.ErrNotFound}
		}
		infos = append(infos, t)
	}
	w, err := wpatch.Create(out, "rws", md, o.Encoding)
	if err != nil {
		return nil, err
	}
	// The signature patches the clean model: that is its base.
	w.SetBase(cleanSHA)
	hasPre := src.Pre != nil
	job := &stream.Job{
		Inputs:  src.inputs(),
		Tensors: infos,
		Outputs: []stream.Output{w.Output()},
		Kernel: func(t weights.TensorInfo) (stream.Kernel, error) {
			a := coef[t.Name]
			return stream.Passes(stream.ElementwiseFunc(func(in, out [][]float64) {
				o := out[0]
				if !hasPre {
					c, r := in[0], in[1]
					for i := range o {
						o[i] = r[i] - c[i]
					}
					return
				}
				p, c, r := in[0], in[1], in[2]
				for i := range o {
					o[i] = (r[i] - p[i]) - a*(c[i]-p[i])
				}
			})), nil
		},
		Phase:   "pass 2/2: extracting",
		Options: o.Options,
	}
	if _, err := job.Run(ctx); err != nil {
		return nil, fmt.Errorf("signature %s: %w", out, err)
	}
	ex := &Extraction{Selected: sel, Stats: st, Errors: w.Errors()}
	if ex.Summary, err = wpatch.Summarize(out, src.Clean, ex.Errors); err != nil {
		return nil, err
	}
	return ex, nil
}
