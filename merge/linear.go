package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func init() {
	Register(Method{
		Name:    "linear",
		Summary: "Σ w_i·θ_i / Σ w_i",
		Paper:   "https://arxiv.org/abs/2203.05482",
		Base:    BaseNone,
		Global:  map[string]ParamSpec{"normalize": withDefault(boolParam, "true")},
		Tensor:  map[string]ParamSpec{"weight": required(numberParam)},
		// linear averages the models listed; a base_model not among them
		// would take no part, which is not what its author meant.
		Check: func(r *Recipe, pr *Problems) {
			if r.BaseModel != "" && len(r.Models) > 0 && len(r.others()) == len(r.Models) {
				pr.add("linear averages the models listed: base_model %q is not among them (list it with a weight, or drop base_model)", r.BaseModel)
			}
		},
		// Normalizing divides by Σ w_i: a sum of (nearly) zero for any
		// tensor would give an infinite or NaN model.
		CheckPlan: func(p *Plan, pr *Problems) {
			for _, t := range p.Tensors {
				tp := p.Tensor(t.Name)
				if !t.DType.IsFloat() || len(tp.Sources) <= 1 || !tp.Bool("normalize", true) {
					continue
				}
				var sum float64
				for i := range tp.Models() {
					sum += tp.Float(i, "weight", 0)
				}
				if math.Abs(sum) < 1e-8 {
					pr.add("linear with normalize: the weights of tensor %q sum to %g; normalize divides by it (set normalize: false or change the weights)", t.Name, sum)
					return
				}
			}
		},
		Elementwise: func(*Plan, weights.TensorInfo) bool { return true },
		StreamCost:  chunkScratch,
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				tp := p.Tensor(t.Name)
				w := make([]float64, tp.Models())
				for i := range w {
					w[i] = tp.Float(i, "weight", 0)
				}
				return stream.Passes(LinearKernel(w, tp.Bool("normalize", true))), nil
			}, nil
		},
	})
}

// LinearKernel: the weighted average Σ w_i·in[i] / Σ w_i (normalize) or
// the plain weighted sum.
func LinearKernel(w []float64, normalize bool) stream.PassKernel {
	div := 1.0
	if normalize {
		div = 0
		for _, x := range w {
			div += x
		}
	}
	if len(w) == 2 {
		return &linear2{w0: w[0], w1: w[1], div: div}
	}
	return stream.ElementwiseFunc(func(in [][]float64, out [][]float64) {
		o := out[0]
		for e := range o {
			var s float64
			for i, wi := range w {
				s += wi * in[i][e]
			}
			o[e] = s / div
		}
	})
}

// linear2 is the common two-model average unrolled (the general loop's
// per-element walk over the weights and input slices costs 5× the
// arithmetic), read raw: two bfloat16 inputs go straight from their bytes
// through vec.Linear2BF16, others are decoded. The same operations in
// the same order: identical bits.
type linear2 struct {
	w0, w1, div float64
	raw         [2]rawChunk
}

// RawInput: both inputs are read raw.
func (k *linear2) RawInput(int) bool { return true }

// SetRaw receives an input's bytes of the next chunk.
func (k *linear2) SetRaw(i int, t weights.Tensor) { k.raw[i].set(t) }

// NextPass reports that there are no pre-passes.
func (k *linear2) NextPass() (int, bool) { return 0, false }

// Observe is never called.
func (k *linear2) Observe(int, [][]float64) error { return nil }

// EndPass is never called.
func (k *linear2) EndPass(int) error { return nil }

// Compute averages one chunk.
func (k *linear2) Compute(in, out [][]float64) error {
	o := out[0]
	x, y := k.raw[0].t, k.raw[1].t
	if in[0] == nil && in[1] == nil && x.DType == y.DType {
		if ok, err := weights.Linear2(x.DType, x.Data, y.Data, k.w0, k.w1, k.div, o); ok || err != nil {
			return err
		}
	}
	a, err := k.raw[0].float64s(in[0], len(o))
	if err != nil {
		return err
	}
	b, err := k.raw[1].float64s(in[1], len(o))
	if err != nil {
		return err
	}
	for e := range o {
		var s float64
		s += k.w0 * a[e]
		s += k.w1 * b[e]
		o[e] = s / k.div
	}
	return nil
}

// chunkScratch is the stream cost of a kernel that holds no more than a
// chunk's decoded copy of each source (linear, slerp).
func chunkScratch(p *Plan, t weights.TensorInfo) int64 {
	return int64(len(p.Tensor(t.Name).Sources)) * 16 * stream.ChunkElems
}
