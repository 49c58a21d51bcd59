package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func init() {
	Register(Method{
		Name:      "slerp",
		Summary:   "spherical interpolation from the base (t = 0) to the other model, lerp when nearly parallel",
		Paper:     "https://en.wikipedia.org/wiki/Slerp",
		Base:      BaseRequired,
		MinModels: 1, MaxModels: 1,
		Global: map[string]ParamSpec{"t": required(unitParam)},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				return stream.Passes(NewSlerpKernel(p.Tensor(t.Name).Float(-1, "t", 0.5))), nil
			}, nil
		},
	})
}

// SlerpKernel interpolates spherically between in[0] (the base, t = 0) and
// in[1] (t = 1) over the flattened tensor, as mergekit does: directions
// are normalised (when their norm exceeds 1e-8), and when |cos| > 0.9995
// the vectors are treated as colinear and linearly interpolated.
type SlerpKernel struct {
	t          float64
	aa, bb, ab float64
	s0, s1     float64
	lerp       bool
	done       bool
}

// NewSlerpKernel interpolates at t.
func NewSlerpKernel(t float64) *SlerpKernel { return &SlerpKernel{t: t} }

// NextPass asks for one pass to measure norms and the angle.
func (k *SlerpKernel) NextPass() (int, bool) { return 0, !k.done }

// Observe accumulates ‖a‖², ‖b‖² and a·b in float64.
func (k *SlerpKernel) Observe(_ int, in [][]float64) error {
	// The sums in locals: through k each add waited on a store and a
	// reload as well. The same additions in the same order.
	aa, bb, ab := k.aa, k.bb, k.ab
	x, y := in[0], in[1][:len(in[0])]
	for e, a := range x {
		b := y[e]
		aa += a * a
		bb += b * b
		ab += a * b
	}
	k.aa, k.bb, k.ab = aa, bb, ab
	return nil
}

// EndPass derives the interpolation coefficients.
func (k *SlerpKernel) EndPass(int) error {
	k.done = true
	k.coefficients()
	return nil
}

func (k *SlerpKernel) coefficients() {
	na, nb := math.Sqrt(k.aa), math.Sqrt(k.bb)
	dot := k.ab
	if na > 1e-8 {
		dot /= na
	}
	if nb > 1e-8 {
		dot /= nb
	}
	if math.Abs(dot) > 0.9995 {
		k.lerp = true
		k.s0, k.s1 = 1-k.t, k.t
		return
	}
	theta0 := math.Acos(dot)
	sin0 := math.Sin(theta0)
	thetaT := theta0 * k.t
	k.s0 = math.Sin(theta0-thetaT) / sin0
	k.s1 = math.Sin(thetaT) / sin0
}

// Compute writes s0·a + s1·b.
func (k *SlerpKernel) Compute(in [][]float64, out [][]float64) error {
	o := out[0]
	x, y := in[0][:len(o)], in[1][:len(o)]
	s0, s1 := k.s0, k.s1
	for e := range o {
		o[e] = s0*x[e] + s1*y[e]
	}
	return nil
}
