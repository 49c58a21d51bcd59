package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func init() {
	Register(Method{
		Name:        "linear",
		Summary:     "Σ w_i·θ_i / Σ w_i",
		Paper:       "https://arxiv.org/abs/2203.05482",
		BaseIsModel: true,
		Global:      map[string]ParamSpec{"normalize": withDefault(boolParam, "true")},
		Tensor:      map[string]ParamSpec{"weight": required(numberParam)},
		// linear averages the models listed; a base_model not among them
		// would take no part, which is not what its author meant.
		Check: func(r *Recipe, pr *Problems) {
			if r.BaseModel != "" && len(r.others()) == len(r.Models) {
				pr.add("linear averages the models listed: base_model %q is not among them (list it with a weight, or drop base_model)", r.BaseModel)
			}
		},
		// Normalizing divides by Σ w_i: a sum of (nearly) zero for any
		// tensor would give an infinite or NaN model.
		CheckPlan: func(p *Plan, pr *Problems) {
			if !p.boolParam("normalize", true) {
				return
			}
			for _, t := range p.Tensors {
				if !t.DType.IsFloat() {
					continue
				}
				pos := p.LayerT(t.Name)
				var sum float64
				for i := range p.Models {
					sum += p.param(i, "weight").Float(t.Name, pos, 0)
				}
				if math.Abs(sum) < 1e-8 {
					pr.add("linear with normalize: the weights of tensor %q sum to %g; normalize divides by it (set normalize: false or change the weights)", t.Name, sum)
					return
				}
			}
		},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			normalize := p.boolParam("normalize", true)
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				pos := p.LayerT(t.Name)
				w := make([]float64, len(p.Models))
				for i := range w {
					w[i] = p.param(i, "weight").Float(t.Name, pos, 0)
				}
				return stream.Passes(LinearKernel(w, normalize)), nil
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
	return stream.ElementwiseFunc(func(in [][]float64, out [][]float64) {
		o := out[0]
		for e := range o {
			var s float64
			for i := range in {
				s += w[i] * in[i][e]
			}
			o[e] = s / div
		}
	})
}
