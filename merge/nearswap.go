package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// nearswap takes the other model's value where it is near the base's:
// w = clamp(t / max(|a − b|, 1e-6), 0, 1), out = w·b + (1 − w)·a, with a
// the base and b the other model.
func init() {
	Register(Method{
		Name:      "nearswap",
		Summary:   "the other model's value where it is within t of the base's, blended by w = clamp(t/|a−b|, 0, 1) elsewhere",
		Paper:     "https://huggingface.co/alchemonaut/QuartetAnemoi-70B-t0.0001",
		Base:      BaseRequired,
		MinModels: 1, MaxModels: 1,
		Global: map[string]ParamSpec{"t": required(numberParam)},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				return stream.Passes(NearSwapKernel(p.Tensor(t.Name).Float(-1, "t", 0))), nil
			}, nil
		},
	})
}

// NearSwapKernel is nearswap at t: in[0] the base, in[1] the other model.
func NearSwapKernel(t float64) stream.PassKernel {
	return stream.ElementwiseFunc(func(in, out [][]float64) {
		a, b := in[0], in[1]
		for e := range out[0] {
			w := math.Max(0, math.Min(1, t/math.Max(math.Abs(a[e]-b[e]), 1e-6)))
			out[0][e] = w*b[e] + (1-w)*a[e]
		}
	})
}
