package merge

import (
	"context"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// passthrough copies each tensor from its one source, optionally scaled:
// with slices it stacks layers of several models into one (a
// "frankenmerge"), renumbering the blocks.
func init() {
	Register(Method{
		Name:      "passthrough",
		Summary:   "each tensor copied from its single source (× scale when given); with slices, layers stacked from several models",
		Base:      BaseNone,
		MinModels: 1, MaxModels: 1,
		Tensor: map[string]ParamSpec{"scale": numberParam},
		Single: func(tp *TensorPlan) bool {
			_, scaled := tp.Param(0, "scale")
			return !scaled
		},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				s := p.Tensor(t.Name).Float(0, "scale", 1)
				return stream.Passes(stream.ElementwiseFunc(func(in, out [][]float64) {
					for e, x := range in[0] {
						out[0][e] = s * x
					}
				})), nil
			}, nil
		},
	})
}
