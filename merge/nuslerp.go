package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// nuslerp is mergekit's newer spherical interpolation of two models at
// t = w₂/(w₁ + w₂) (½ when the weights sum to 0): over the whole flattened
// tensor (nuslerp_flatten, the default), or vector by vector along the
// last dimension (rows), or with nuslerp_row_wise along the first
// (columns of a matrix). With a base it interpolates the two task vectors
// and adds the result to the base.
func init() {
	Register(Method{
		Name:      "nuslerp",
		Summary:   "spherical interpolation of two models (or their task vectors, with a base) at t = w₂/(w₁+w₂), flattened, by rows or by columns",
		Base:      BaseOptional,
		MinModels: 2, MaxModels: 2,
		StreamCost: chunkScratch,
		Global: map[string]ParamSpec{
			"nuslerp_flatten":  withDefault(boolParam, "true"),
			"nuslerp_row_wise": withDefault(boolParam, "false"),
		},
		Tensor: map[string]ParamSpec{"weight": required(numberParam)},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				tp := p.Tensor(t.Name)
				w0, w1 := tp.Float(0, "weight", 0), tp.Float(1, "weight", 0)
				ti := 0.5
				if math.Abs(w0+w1) >= 1e-6 {
					ti = w1 / (w0 + w1)
				}
				return stream.Passes(NewNuSlerpKernel(ti, tp.HasBase, t.Shape, tp.Bool("nuslerp_flatten", true), tp.Bool("nuslerp_row_wise", false))), nil
			}, nil
		},
	})
}

// NuSlerpKernel interpolates spherically between two vectors per group of
// entries: in[0], in[1] the models (or in[1], in[2] with the base in[0],
// on their task vectors). Each vector is normalised (norm clamped at
// 1e-7), θ = acos(clamp(û₀·û₁, −1, 1)), and the result is
// (sin((1−t)θ)·v₀ + sin(tθ)·v₁)/sin θ, or the linear interpolation where
// |sin θ| < 1e-8.
type NuSlerpKernel struct {
	t       float64
	base    bool
	flatten bool
	// groups of entries forming one vector: the whole tensor (flatten),
	// each row of rowLen (by rows), or each column (every stride-th entry,
	// by columns); for columns a pre-pass measures them.
	rowLen   int
	columns  bool
	stride   int // entries per index of the first dimension
	aa, bb   []float64
	ab       []float64
	c0, c1   []float64
	pos      int
	measured bool
}

// NewNuSlerpKernel builds the kernel for a tensor of the given shape.
func NewNuSlerpKernel(t float64, base bool, shape []int64, flatten, rowWise bool) *NuSlerpKernel {
	k := &NuSlerpKernel{t: t, base: base, flatten: flatten || len(shape) < 2}
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	switch {
	case k.flatten:
		k.aa, k.bb, k.ab = make([]float64, 1), make([]float64, 1), make([]float64, 1)
	case rowWise:
		// Along the first dimension: one vector per combination of the
		// other indices.
		k.columns = true
		k.stride = int(n / shape[0])
		k.aa, k.bb, k.ab = make([]float64, k.stride), make([]float64, k.stride), make([]float64, k.stride)
	default:
		k.rowLen = int(shape[len(shape)-1])
	}
	return k
}

// NextPass: a pass measures the vectors unless they are rows (each in one
// chunk).
func (k *NuSlerpKernel) NextPass() (int, bool) { return 0, k.rowLen == 0 && !k.measured }

func (k *NuSlerpKernel) vectors(in [][]float64) (v0, v1 []float64, base []float64) {
	if k.base {
		return in[1], in[2], in[0]
	}
	return in[0], in[1], nil
}

func (k *NuSlerpKernel) at(v []float64, base []float64, e int) float64 {
	if base != nil {
		return v[e] - base[e]
	}
	return v[e]
}

// Observe accumulates each vector's norms and dot product.
func (k *NuSlerpKernel) Observe(_ int, in [][]float64) error {
	v0, v1, base := k.vectors(in)
	for e := range v0 {
		a, b := k.at(v0, base, e), k.at(v1, base, e)
		g := 0
		if k.columns {
			g = (k.pos + e) % k.stride
		}
		k.aa[g] += a * a
		k.bb[g] += b * b
		k.ab[g] += a * b
	}
	k.pos += len(v0)
	return nil
}

// EndPass turns each vector's measures into its coefficients.
func (k *NuSlerpKernel) EndPass(int) error {
	k.measured, k.pos = true, 0
	k.c0, k.c1 = make([]float64, len(k.aa)), make([]float64, len(k.aa))
	for g := range k.aa {
		k.c0[g], k.c1[g] = k.coefficients(k.aa[g], k.bb[g], k.ab[g])
	}
	return nil
}

// coefficients are (c₀, c₁) for one vector of the given norms and dot.
func (k *NuSlerpKernel) coefficients(aa, bb, ab float64) (float64, float64) {
	na, nb := math.Max(math.Sqrt(aa), 1e-7), math.Max(math.Sqrt(bb), 1e-7)
	cos := math.Max(-1, math.Min(1, ab/(na*nb)))
	theta := math.Acos(cos)
	sin := math.Sin(theta)
	if math.Abs(sin) < 1e-8 {
		return 1 - k.t, k.t
	}
	return math.Sin((1-k.t)*theta) / sin, math.Sin(k.t*theta) / sin
}

// Compute writes the interpolation (plus the base).
func (k *NuSlerpKernel) Compute(in, out [][]float64) error {
	v0, v1, base := k.vectors(in)
	o := out[0]
	write := func(from, to int, c0, c1 float64) {
		for e := from; e < to; e++ {
			r := c0*k.at(v0, base, e) + c1*k.at(v1, base, e)
			if base != nil {
				r += base[e]
			}
			o[e] = r
		}
	}
	switch {
	case k.rowLen > 0:
		for r := 0; r < len(o); r += k.rowLen {
			end := min(len(o), r+k.rowLen)
			var aa, bb, ab float64
			for e := r; e < end; e++ {
				a, b := k.at(v0, base, e), k.at(v1, base, e)
				aa, bb, ab = aa+a*a, bb+b*b, ab+a*b
			}
			c0, c1 := k.coefficients(aa, bb, ab)
			write(r, end, c0, c1)
		}
	case k.columns:
		for e := range o {
			g := (k.pos + e) % k.stride
			write(e, e+1, k.c0[g], k.c1[g])
		}
		k.pos += len(o)
	default:
		write(0, len(o), k.c0[0], k.c1[0])
	}
	return nil
}

// Fork: the last pass reads the coefficients and, by columns, counts its
// position from first.
func (k *NuSlerpKernel) Fork(first int64) (stream.PassKernel, bool) {
	_, more := k.NextPass()
	f := *k
	f.pos = int(first)
	return &f, !more
}
