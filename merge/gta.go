package merge

import (
	"context"
	"fmt"
	"math"
	"strings"
	"sync"

	"github.com/weightops/weightops/internal/vec"
	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// The generalized task arithmetic family (mergekit's GTA methods): a
// sparsification of each task vector, an optional sign election, and a
// weighted sum added to the base.
func init() {
	for _, m := range []struct {
		name, summary      string
		paper              string
		sp                 sparsify.Method
		consensus          bool
		normalize, rescale bool
	}{
		{"task_arithmetic", "θ_base + λ·Σ w_i·τ_i", "https://arxiv.org/abs/2212.04089", sparsify.None, false, false, false},
		{"ties", "trim each τ_i to its top density by magnitude, elect the sign of Σ w_i·τ_i per entry, average the agreeing entries (disjoint mean)", "https://arxiv.org/abs/2306.01708", sparsify.Magnitude, true, true, false},
		{"dare_ties", "drop entries of each τ_i with probability 1−density, rescale; sign election as ties", "https://arxiv.org/abs/2311.03099", sparsify.Random, true, false, true},
		{"dare_linear", "drop entries of each τ_i with probability 1−density, rescale; weighted sum", "https://arxiv.org/abs/2311.03099", sparsify.Random, false, false, true},
		{"breadcrumbs", "drop the top gamma fraction of |τ_i| (outliers) and keep the next density fraction; weighted sum", "https://arxiv.org/abs/2312.06795", sparsify.MagnitudeOutliers, false, false, false},
		{"breadcrumbs_ties", "breadcrumbs with the sign election of ties", "https://arxiv.org/abs/2312.06795", sparsify.MagnitudeOutliers, true, false, false},
		{"della", "keep each entry of τ_i with a probability rising with its magnitude rank in its row, from density − ε to density + ε (MAGPRUNE), rescale; sign election as ties", "https://arxiv.org/abs/2406.11617", sparsify.DellaMagprune, true, true, true},
		{"della_linear", "della's MAGPRUNE without the sign election; weighted sum", "https://arxiv.org/abs/2406.11617", sparsify.DellaMagprune, false, false, true},
	} {
		Register(gtaMethod(m.name, m.summary, m.paper, m.sp, m.consensus, m.normalize, m.rescale))
	}
}

// gta describes one GTA method: its sparsification and defaults.
type gta struct {
	sp                 sparsify.Method
	consensus          bool
	normalize, rescale bool // defaults
}

func gtaMethod(name, summary, paper string, sp sparsify.Method, consensus, normalize, rescale bool) Method {
	g := gta{sp: sp, consensus: consensus, normalize: normalize, rescale: rescale}
	m := Method{Name: name, Summary: summary, Paper: paper, Base: BaseRequired,
		Global: map[string]ParamSpec{
			"normalize": withDefault(boolParam, fmt.Sprint(normalize)), "rescale": withDefault(boolParam, fmt.Sprint(rescale)),
			"int8_mask": boolParam, "lambda": withDefault(numberParam, "1"),
			// weightops extensions:
			"rescale_norm": {Type: "string", Choices: []string{"none", "density", "l1", "l2", "linf"}},
			"seed":         numberParam,
			"granularity":  {Type: "string", Choices: []string{"per_tensor", "per_row"}, Default: "per_tensor"},
			"trim_scope":   {Type: "string", Choices: []string{"tensor", "model"}, Default: "tensor"},
		},
		Tensor:      map[string]ParamSpec{"weight": required(numberParam), "density": withDefault(unitParam, "1")},
		Check:       g.check,
		Build:       g.build,
		StreamCost:  g.streamCost,
		Elementwise: g.elementwise,
	}
	if sp == sparsify.MagnitudeOutliers {
		m.Tensor["gamma"] = withDefault(unitParam, "0.01")
		m.CheckPlan = breadcrumbsNote
	}
	if sp == sparsify.DellaMagprune {
		m.Tensor["epsilon"] = withDefault(unitParam, "0.15")
		m.CheckPlan = dellaCheck
	}
	return m
}

// breadcrumbsNote says where this recipe meets mergekit's bug: when
// ⌊γ·n⌋ = 0 for a tensor of n entries (with density < 1), mergekit's mask
// slice [n_bot:-0] is empty and zeroes the task vector; weightops drops
// nothing from the top and keeps the top density fraction.
func breadcrumbsNote(p *Plan, _ *Problems) {
	var hit []string
	for _, t := range p.Tensors {
		tp := p.Tensor(t.Name)
		n, _ := t.NumElements()
		if !t.DType.IsFloat() || len(tp.Sources) <= 1 {
			continue
		}
		for i := range tp.Models() {
			g, d := tp.Float(i, "gamma", 0.01), tp.Float(i, "density", 1)
			if g > 0 && d < 1 && int64(g*float64(n)) == 0 {
				hit = append(hit, t.Name)
				break
			}
		}
	}
	if len(hit) == 0 {
		return
	}
	more := ""
	if len(hit) > 3 {
		more = fmt.Sprintf(" and %d more", len(hit)-3)
		hit = hit[:3]
	}
	p.Warnings = append(p.Warnings, fmt.Sprintf("gamma·n < 1 for %s%s: mergekit zeroes these task vectors (an empty slice [n_bot:-0]); weightops drops no outlier there and keeps the top density fraction, as the method intends", strings.Join(hit, ", "), more))
}

// dellaCheck refuses, as mergekit does, a density and ε whose keep
// probabilities leave (0, 1): density ± ε must stay inside it.
func dellaCheck(p *Plan, pr *Problems) {
	for _, t := range p.Tensors {
		tp := p.Tensor(t.Name)
		if !t.DType.IsFloat() || len(tp.Sources) <= 1 {
			continue
		}
		for i := range tp.Models() {
			d, e := tp.Float(i, "density", 1), tp.Float(i, "epsilon", 0.15)
			if d > 0 && d < 1 && (d+e >= 1 || d-e <= 0) {
				pr.add("model %q: tensor %q: density %g ± epsilon %g leaves (0, 1); choose epsilon < min(density, 1 − density)", p.Refs[tp.model(i).Model], tp.model(i).Tensor, d, e)
				return
			}
		}
	}
}

// check: trim_scope: model is for magnitude trimming, with one density
// and gamma per model.
func (g gta) check(r *Recipe, pr *Problems) {
	ts, ok := r.Params["trim_scope"]
	if !ok || ts.Str == nil || *ts.Str != "model" {
		return
	}
	if g.sp != sparsify.Magnitude && g.sp != sparsify.MagnitudeOutliers {
		pr.add("line %d: trim_scope: model applies to magnitude trimming (ties, breadcrumbs), not %s", ts.Line, r.Method)
	}
	scalar := func(params map[string]Param) {
		for _, name := range []string{"density", "gamma"} {
			if v, ok := params[name]; ok && (v.Grad != nil || v.Filters != nil) {
				pr.add("line %d: trim_scope: model needs a single %s per model, not a gradient or filter list", v.Line, name)
			}
		}
	}
	if len(r.Slices) > 0 {
		pr.add("line %d: trim_scope: model ranks whole models; it does not apply to slices", ts.Line)
	}
	scalar(r.Params)
	for _, m := range r.Models {
		scalar(m.Params)
	}
}

func (g gta) build(ctx context.Context, p *Plan, o stream.Options) (KernelFactory, error) {
	var global [][2]sparsify.Cut
	if ts, ok := p.Recipe.Params["trim_scope"]; ok && ts.Str != nil && *ts.Str == "model" {
		var err error
		if global, err = g.globalCuts(ctx, p, o); err != nil {
			return nil, err
		}
	}
	return func(t weights.TensorInfo) (stream.Kernel, error) {
		return stream.Passes(NewGTAKernel(t.Name, t.Shape, g.config(p, t, global))), nil
	}, nil
}

// config is tensor t's GTA configuration from the plan; global holds the
// model-wide cuts of trim_scope: model (nil: per tensor).
func (g gta) config(p *Plan, t weights.TensorInfo, global [][2]sparsify.Cut) GTAConfig {
	tp := p.Tensor(t.Name)
	rescale := sparsify.NoRescale
	if tp.Bool("rescale", g.rescale) {
		rescale = sparsify.L1 // mergekit's norm matching
	}
	if s := tp.Str("rescale_norm", ""); s != "" {
		rescale, _ = sparsify.ParseRescale(s)
	}
	cfg := GTAConfig{
		Consensus: g.consensus,
		Normalize: tp.Bool("normalize", g.normalize),
		Lambda:    tp.Float(-1, "lambda", 1),
	}
	seed := uint64(tp.Float(-1, "seed", 0))
	perRow := tp.Str("granularity", "per_tensor") == "per_row"
	for i := range tp.Models() {
		var gc *[2]sparsify.Cut
		if global != nil {
			gc = &global[i]
		}
		cfg.Weights = append(cfg.Weights, tp.Float(i, "weight", 0))
		cfg.Sparsify = append(cfg.Sparsify, sparsify.Spec{
			Method:  g.sp,
			Density: tp.Float(i, "density", 1),
			Gamma:   tp.Float(i, "gamma", 0.01),
			Epsilon: tp.Float(i, "epsilon", 0.15),
			PerRow:  perRow,
			Rescale: rescale,
			Seed:    seed,
			Global:  gc,
		})
	}
	return cfg
}

// elementwise: a GTA merge that sparsifies nothing (task arithmetic, or
// density 1) computes each entry from its own position: τ_i, the sign
// election and the sum are per entry. A sparsification ranks, draws a
// random stream or keeps counts along the tensor.
func (g gta) elementwise(p *Plan, t weights.TensorInfo) bool {
	for _, s := range g.config(p, t, nil).Sparsify {
		if s.Active() {
			return false
		}
	}
	return true
}

// streamCost is what a GTA kernel holds for a streamed tensor besides the
// job's chunk buffers: each model's sparsifier state and its chunk of τ,
// keys and mask (no task vector is cached: τ is recomputed per pass).
func (g gta) streamCost(p *Plan, t weights.TensorInfo) int64 {
	n, _ := t.NumElements()
	rowLen := n
	if len(t.Shape) >= 2 {
		rowLen = t.Shape[len(t.Shape)-1]
	}
	var c int64
	for _, s := range g.config(p, t, nil).Sparsify {
		c += s.StreamBytes(n, rowLen) + 16*stream.ChunkElems
	}
	return c
}

// globalCuts computes, per model, the magnitude cuts of its task vector
// over every floating tensor of the model at once (the TIES paper's
// model-wide top-k), with two streaming histogram passes over the model.
func (g gta) globalCuts(ctx context.Context, p *Plan, o stream.Options) ([][2]sparsify.Cut, error) {
	var floats []weights.TensorInfo
	var total int64
	for _, t := range p.Tensors {
		if t.DType.IsFloat() {
			floats = append(floats, t)
			n, _ := t.NumElements()
			total += n
		}
	}
	// The models: form: every tensor has the same base and models.
	var tp0 *TensorPlan
	for _, t := range floats {
		tp0 = p.Tensor(t.Name)
		break
	}
	if tp0 == nil || !tp0.HasBase {
		return nil, fmt.Errorf("trim_scope: model needs a base and floating tensors")
	}
	out := make([][2]sparsify.Cut, tp0.Models())
	for i := range out {
		m := p.source(tp0.model(i).Model)
		sp := sparsify.Spec{
			Method:  g.sp,
			Density: tp0.Float(i, "density", 1),
			Gamma:   tp0.Float(i, "gamma", 0.01),
		}
		nTop, nKeep := sp.Counts(total)
		h := sparsify.NewHistogram(nTop, nTop+nKeep)
		pass := func(fine bool, phase string) error {
			var mu sync.Mutex
			job := &stream.Job{
				Inputs:  []weights.Checkpoint{p.source(tp0.Sources[0].Model), m},
				Tensors: floats,
				Kernel: func(weights.TensorInfo) (stream.Kernel, error) {
					var local *sparsify.Histogram
					if fine {
						local = h.FineCopy()
					} else {
						local = sparsify.NewHistogram(nTop, nTop+nKeep)
					}
					var tau []float32
					count := stream.ElementwiseFunc(func(in, _ [][]float64) {
						b, mv := in[0], in[1]
						if cap(tau) < len(b) {
							tau = make([]float32, len(b))
						}
						t := tau[:len(b)]
						for k := range t {
							t[k] = float32(mv[k] - b[k])
						}
						if fine {
							local.AddFineValues(t)
						} else {
							local.AddCoarseValues(t)
						}
					})
					return stream.KernelFunc(func(ctx context.Context, t *stream.Tensor) error {
						if err := stream.Passes(count).Compute(ctx, t); err != nil {
							return err
						}
						mu.Lock()
						h.Merge(local)
						mu.Unlock()
						local.Free()
						return nil
					}), nil
				},
				Phase:   phase,
				Options: o,
			}
			_, err := job.Run(ctx)
			return err
		}
		label := fmt.Sprintf("model-wide trim, model %d/%d", i+1, len(out))
		if err := pass(false, label+", pass 1/2"); err != nil {
			return nil, err
		}
		if h.EndCoarse() {
			if err := pass(true, label+", pass 2/2"); err != nil {
				return nil, err
			}
		}
		c := h.Cuts()
		out[i] = [2]sparsify.Cut{sparsify.GlobalCut(c[0]), sparsify.GlobalCut(c[1])}
	}
	return out, nil
}

// GTAKernel is mergekit's generalized task arithmetic on one tensor: in[0]
// is the base, in[i] (i ≥ 1) the models. Each model's task vector
// τ_i = θ_i − θ_base is sparsified, weighted (w_i·τ_i), optionally filtered
// by sign consensus (TIES: keep entries whose sign agrees with the sign of
// Σ w_i·τ_i, zero counting as positive), summed, optionally divided by the
// sum of the weights that contributed, scaled by λ and added to the base.
type GTAKernel struct {
	sp        []*sparsify.TensorSparsifier
	w         []float64
	consensus bool
	normalize bool
	lambda    float64
	tau       [][]float32
	raw       []weights.Tensor // raw bytes of the current chunk, per input (0: the base)
	// rawBase decodes the base's chunk when a pass needs it in float64
	// (the mix unless it reads bfloat16; the deltas when a dtype has no
	// pair path).
	rawBase rawChunk
	// τ is recomputed for each pass, a chunk at a time, rather than kept
	// for the whole tensor: from the raw bytes in cache it is cheaper than
	// reading a tensor-sized float32 copy back from memory (a TIES merge of
	// three 1 GiB models: 6.1 → 5.4 s, peak RSS 135 → 45 MB).
	scratch [][]float32
}

// RawInput: every input is read raw. The task vectors are differences of
// the raw bytes (a pre-pass needs no float64 base at all); the base is
// decoded only for the mix.
func (k *GTAKernel) RawInput(int) bool { return true }

// SetRaw receives an input's raw bytes of the next chunk.
func (k *GTAKernel) SetRaw(i int, t weights.Tensor) {
	if k.raw == nil {
		k.raw = make([]weights.Tensor, len(k.sp)+1)
	}
	k.raw[i] = t
	if i == 0 {
		k.rawBase.set(t)
	}
}

// base returns the base's chunk in float64: in[0] when the pass decoded
// it (a missing base reads as zeros), else its raw bytes decoded once per
// chunk.
func (k *GTAKernel) base(in [][]float64, n int) ([]float64, error) {
	return k.rawBase.float64s(in[0], n)
}

// chunkLen is the current chunk's number of elements.
func (k *GTAKernel) chunkLen(in [][]float64) int {
	if in[0] != nil {
		return len(in[0])
	}
	return k.rawBase.elems()
}

// GTAConfig is the per-tensor configuration of a GTA merge.
type GTAConfig struct {
	Sparsify  []sparsify.Spec // per model
	Weights   []float64       // per model
	Consensus bool
	Normalize bool
	Lambda    float64
}

// NewGTAKernel builds the kernel for tensor name of the given shape.
func NewGTAKernel(name string, shape []int64, c GTAConfig) *GTAKernel {
	k := &GTAKernel{w: c.Weights, consensus: c.Consensus, normalize: c.Normalize, lambda: c.Lambda}
	for i, s := range c.Sparsify {
		k.sp = append(k.sp, s.ForTensor(name, shape, i))
	}
	k.tau = make([][]float32, len(c.Sparsify))
	k.scratch = make([][]float32, len(c.Sparsify))
	return k
}

// NextPass returns the first pass any model still needs.
func (k *GTAKernel) NextPass() (int, bool) {
	best := -1
	for _, s := range k.sp {
		if ps := s.Needs(); len(ps) > 0 && (best < 0 || int(ps[0]) < best) {
			best = int(ps[0])
		}
	}
	return best, best >= 0
}

func (k *GTAKernel) deltas(in [][]float64) error {
	n := k.chunkLen(in)
	for i := range k.sp {
		if cap(k.scratch[i]) < n {
			k.scratch[i] = make([]float32, n)
		}
		t := k.scratch[i][:n]
		k.tau[i] = t
		var r weights.Tensor
		if k.raw != nil {
			r = k.raw[i+1]
		}
		if r.Data == nil {
			b, err := k.base(in, n)
			if err != nil {
				return err
			}
			m := in[i+1][:n]
			for e := range t {
				t[e] = float32(m[e] - b[e])
			}
			continue
		}
		// τ = float32(m − b), one rounding as from decoded inputs, straight
		// from the bytes: from both inputs' when they share a dtype with a
		// pair path, else from the model's and the decoded base.
		if in[0] == nil && k.raw[0].DType == r.DType {
			if ok, err := weights.DeltaPairFloat32(r.DType, r.Data, k.raw[0].Data, t); ok || err != nil {
				if err != nil {
					return err
				}
				continue
			}
		}
		b, err := k.base(in, n)
		if err != nil {
			return err
		}
		if err := weights.DeltaFloat32(r.DType, r.Data, b, t); err != nil {
			return err
		}
	}
	return nil
}

// Release hands the sparsifiers' pooled masks back once the tensor is
// written.
func (k *GTAKernel) Release() {
	for _, s := range k.sp {
		s.Release()
	}
}

// Observe feeds the models that need pass p.
func (k *GTAKernel) Observe(p int, in [][]float64) error {
	if err := k.deltas(in); err != nil {
		return err
	}
	for i, s := range k.sp {
		if needs(s, p) {
			s.Observe(sparsify.Pass(p), k.tau[i])
		}
	}
	return nil
}

// EndPass closes pass p for the models that needed it.
func (k *GTAKernel) EndPass(p int) error {
	for _, s := range k.sp {
		if needs(s, p) {
			s.EndPass(sparsify.Pass(p))
		}
	}
	return nil
}

func needs(s *sparsify.TensorSparsifier, p int) bool {
	for _, q := range s.Needs() {
		if int(q) == p {
			return true
		}
	}
	return false
}

// Fork is a kernel for the final pass from entry first on, sharing the
// sparsifiers' cuts, scales and cached masks (see
// sparsify.TensorSparsifier.Fork): not when one takes ties in index order
// or is DELLA's without a cached mask.
func (k *GTAKernel) Fork(first int64) (stream.PassKernel, bool) {
	return k.fork(func(s *sparsify.TensorSparsifier) (*sparsify.TensorSparsifier, bool) { return s.Fork(first) })
}

// fork is a kernel sharing k's weights, with the sparsifiers' forks.
func (k *GTAKernel) fork(of func(*sparsify.TensorSparsifier) (*sparsify.TensorSparsifier, bool)) (stream.PassKernel, bool) {
	f := &GTAKernel{w: k.w, consensus: k.consensus, normalize: k.normalize, lambda: k.lambda,
		tau: make([][]float32, len(k.sp)), scratch: make([][]float32, len(k.sp))}
	for _, s := range k.sp {
		fs, ok := of(s)
		if !ok {
			return nil, false
		}
		f.sp = append(f.sp, fs)
	}
	return f, true
}

// ForkBack is a kernel for the final pass over chunks from the tensor's
// end down (see stream.BackForker): a per-tensor magnitude cut counts
// the ties after each chunk; not for a random or DELLA mask.
func (k *GTAKernel) ForkBack() (stream.PassKernel, bool) {
	return k.fork((*sparsify.TensorSparsifier).ForkBack)
}

// SplitPass is a kernel that counts pre-pass p over other chunks for
// JoinPass (see stream.PassSplitter): it computes the task vectors and
// feeds the models that need p a split of their histogram; not while one
// of them cannot split (a norm pass, a histogram taking its sample).
func (k *GTAKernel) SplitPass(p int) (stream.PassKernel, bool) {
	var sp []*sparsify.TensorSparsifier // allocated at the first split: asked every chunk
	for i, s := range k.sp {
		if !needs(s, p) {
			continue
		}
		fs, ok := s.SplitPass(sparsify.Pass(p))
		if !ok {
			k.join(sp) // hands back the splits taken so far
			return nil, false
		}
		if sp == nil {
			sp = make([]*sparsify.TensorSparsifier, len(k.sp))
		}
		sp[i] = fs
	}
	if sp == nil {
		return nil, false
	}
	for i, fs := range sp {
		if fs == nil {
			sp[i] = &sparsify.TensorSparsifier{} // needs no pass: fed nothing
		}
	}
	return &GTAKernel{sp: sp, w: k.w, tau: make([][]float32, len(sp)), scratch: make([][]float32, len(sp))}, true
}

// JoinPass adds a SplitPass kernel's counts to the models' current pass.
func (k *GTAKernel) JoinPass(part stream.PassKernel) error {
	f, ok := part.(*GTAKernel)
	if !ok || len(f.sp) != len(k.sp) {
		return fmt.Errorf("internal error: joining a %T that is not a split of this kernel", part)
	}
	k.join(f.sp)
	return nil
}

// join adds the counts of splits of k's sparsifiers (nil or passless
// entries: none).
func (k *GTAKernel) join(sp []*sparsify.TensorSparsifier) {
	for i, fs := range sp {
		if fs != nil && len(fs.Needs()) > 0 {
			k.sp[i].JoinPass(fs)
		}
	}
}

// Compute mixes the sparsified task vectors of one chunk into the base.
func (k *GTAKernel) Compute(in [][]float64, out [][]float64) error {
	return k.mix(in, out)
}

func (k *GTAKernel) mix(in [][]float64, out [][]float64) error {
	if err := k.deltas(in); err != nil {
		return err
	}
	for i, s := range k.sp {
		s.Apply(k.tau[i])
	}
	o := out[0]
	// Two task vectors over a bfloat16 base read it straight from its
	// bytes; otherwise it is decoded.
	var braw []uint16
	if len(k.w) == 2 && in[0] == nil && k.raw[0].DType == weights.BF16 {
		braw = weights.Uint16View(k.raw[0].Data)[:len(o)]
	}
	var base []float64
	if braw == nil {
		var err error
		if base, err = k.base(in, len(o)); err != nil {
			return err
		}
	}
	var wsum float64
	for _, w := range k.w {
		wsum += w
	}
	if !k.consensus {
		// Without consensus the divisor is the same for every entry:
		// out = base + Σ c_i·τ_i with c_i = λ·w_i/div, one fused loop.
		div := 1.0
		if k.normalize && math.Abs(wsum) >= 1e-8 {
			div = wsum
		}
		c := make([]float64, len(k.w))
		for i, w := range k.w {
			c[i] = k.lambda * w / div
		}
		if braw != nil {
			vec.Mix2BF16(o, braw, k.tau[0], k.tau[1], c[0], c[1])
			return nil
		}
		if len(c) == 2 {
			vec.Mix2(o, base, k.tau[0], k.tau[1], c[0], c[1])
			return nil
		}
		for e := range o {
			acc := base[e]
			for i := range c {
				acc += c[i] * float64(k.tau[i][e])
			}
			o[e] = acc
		}
		return nil
	}
	if braw != nil {
		vec.Consensus2BF16(o, braw, k.tau[0], k.tau[1], k.w[0], k.w[1], k.lambda, k.normalize)
		return nil
	}
	k.consensusMix(base, o)
	return nil
}

// consensusMix is TIES's disjoint merge: per entry, the sign of Σ w_i·τ_i
// elects a majority (+ on ties); only the terms x_i = w_i·τ_i of that
// sign are summed, and divided (when normalising) by the sum of their
// weights (1 if none). The selection is done with bit masks instead of
// branches — the signs are data, so branches mispredict about half the
// time — and adds x_i or +0, which leaves the float64 sums exactly as
// adding only the agreeing terms would (a sum of same-sign nonzero terms
// is never −0, so adding +0 never changes it).
func (k *GTAKernel) consensusMix(base, o []float64) {
	n := len(k.w)
	if n == 2 || n == 3 {
		k.consensusSmall(base, o)
		return
	}
	xs := make([]float64, n)
	for e := range o {
		var total float64
		for i, w := range k.w {
			xs[i] = w * float64(k.tau[i][e])
			total += xs[i]
		}
		// neg is all ones when the majority is negative (total < 0).
		neg := -b2u(total < 0)
		var mixed, div float64
		for i, w := range k.w {
			// x agrees when it is nonzero with the majority's sign (NaN
			// never agrees: x > 0 and x < 0 are both false for it).
			m := vec.AgreeMask(xs[i], neg)
			mixed += math.Float64frombits(math.Float64bits(xs[i]) & m)
			div += math.Float64frombits(math.Float64bits(w) & m)
		}
		if k.normalize {
			mixed /= vec.OrOne(div)
		}
		o[e] = base[e] + k.lambda*mixed
	}
}

// consensusSmall is consensusMix for two or three task vectors (TIES
// over two or three fine-tunes, the common recipes) with the loop
// unrolled: the same operations in the same order, so the same bits. The
// divisor's "none agreed: 1" is a mask too: after trimming, half the
// entries of a task vector are zero, so it is taken a quarter of the time
// or more, unpredictably.
func (k *GTAKernel) consensusSmall(base, o []float64) {
	if len(k.w) == 2 {
		k.consensusTwo(base, o)
		return
	}
	t0, t1, t2 := k.tau[0][:len(o)], k.tau[1][:len(o)], k.tau[2][:len(o)]
	base = base[:len(o)]
	w0, w1, w2 := k.w[0], k.w[1], k.w[2]
	wb0, wb1, wb2 := math.Float64bits(w0), math.Float64bits(w1), math.Float64bits(w2)
	lambda, normalize := k.lambda, k.normalize
	for e := range o {
		x0, x1, x2 := w0*float64(t0[e]), w1*float64(t1[e]), w2*float64(t2[e])
		total := 0.0
		total += x0
		total += x1
		total += x2
		neg := -b2u(total < 0)
		m0, m1, m2 := vec.AgreeMask(x0, neg), vec.AgreeMask(x1, neg), vec.AgreeMask(x2, neg)
		mixed, div := 0.0, 0.0
		mixed += math.Float64frombits(math.Float64bits(x0) & m0)
		mixed += math.Float64frombits(math.Float64bits(x1) & m1)
		mixed += math.Float64frombits(math.Float64bits(x2) & m2)
		div += math.Float64frombits(wb0 & m0)
		div += math.Float64frombits(wb1 & m1)
		div += math.Float64frombits(wb2 & m2)
		if normalize {
			mixed /= vec.OrOne(div)
		}
		o[e] = base[e] + lambda*mixed
	}
}

// consensusTwo is consensusSmall for two task vectors.
func (k *GTAKernel) consensusTwo(base, o []float64) {
	vec.Consensus2(o, base, k.tau[0], k.tau[1], k.w[0], k.w[1], k.lambda, k.normalize)
}

// b2u is 1 for true, 0 for false (compiled without a branch).
func b2u(b bool) uint64 {
	var u uint64
	if b {
		u = 1
	}
	return u
}
