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
		// The common two-model average unrolled: the general loop's per
		// element walk over the weights and input slices costs 5× the
		// arithmetic. The same operations in the same order: identical bits.
		w0, w1 := w[0], w[1]
		return stream.ElementwiseFunc(func(in [][]float64, out [][]float64) {
			o := out[0]
			a, b := in[0][:len(o)], in[1][:len(o)]
			for e := range o {
				var s float64
				s += w0 * a[e]
				s += w1 * b[e]
				o[e] = s / div
			}
		})
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
