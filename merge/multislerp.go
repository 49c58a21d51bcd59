package merge

import (
	"context"
	"fmt"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// multislerp is barycentric interpolation on the hypersphere of any number
// of models (or of their task vectors, with a base), over the flattened
// tensor, as mergekit computes it: the weighted mean of the unit vectors
// projected back to the sphere through the tangent space, scaled by the
// weighted mean norm.
func init() {
	Register(Method{
		Name:       "multislerp",
		Summary:    "barycentric spherical interpolation of any number of models (or task vectors, with a base), scaled by their weighted mean norm",
		Paper:      "https://goddard.blog/posts/multislerp-wow-what-a-cool-idea",
		Base:       BaseOptional,
		MinModels:  1,
		StreamCost: chunkScratch,
		Global: map[string]ParamSpec{
			"normalize_weights": withDefault(boolParam, "true"),
			"eps":               withDefault(numberParam, "1e-8"),
		},
		Tensor: map[string]ParamSpec{"weight": required(numberParam)},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				tp := p.Tensor(t.Name)
				w := make([]float64, tp.Models())
				for i := range w {
					w[i] = tp.Float(i, "weight", 0)
				}
				return stream.Passes(NewMultiSlerpKernel(w, tp.HasBase, tp.Bool("normalize_weights", true), tp.Float(-1, "eps", 1e-8))), nil
			}, nil
		},
	})
}

// MultiSlerpKernel is multislerp of one tensor. With τ_i the models (minus
// the base, when given), n_i = ‖τ_i‖, u_i = τ_i/(n_i + ε) and weights w
// (normalised to sum 1 unless asked not to): m = Σ w_i·u_i, m̂ = m/‖m‖,
// the tangent g = Σ w_i·(u_i − (u_i·m̂)·m̂), ‖g‖' = ‖g‖ + ε, and the result
// (m̂·cos‖g‖' + g·sin‖g‖'/‖g‖')·Σ w_i·n_i (+ base). When ‖m‖ < ε, two
// models are interpolated linearly and more are an error (they cancel).
// One pass measures the Gram matrix of the τ_i, a second ‖g‖.
type MultiSlerpKernel struct {
	w          []float64
	base       bool
	eps        float64
	gram       []float64 // Gram matrix of τ_i
	norms      []float64
	a          []float64 // u_i = a_i·τ_i
	mhat       []float64 // m̂ = Σ mhat_i·τ_i
	dots       []float64 // u_i·m̂
	gg         float64   // ‖g‖²
	cosG, sinG float64   // cos‖g‖', sin‖g‖'/‖g‖'
	avgNorm    float64
	linear     bool
	pass       int
}

// NewMultiSlerpKernel builds the kernel for models of weights w.
func NewMultiSlerpKernel(w []float64, base, normalize bool, eps float64) *MultiSlerpKernel {
	w = append([]float64(nil), w...)
	if normalize {
		var s float64
		for _, x := range w {
			s += x
		}
		for i := range w {
			w[i] /= s
		}
	}
	n := len(w)
	return &MultiSlerpKernel{w: w, base: base, eps: eps, gram: make([]float64, n*n)}
}

// NextPass: the Gram matrix, then the tangent's norm (one model: none).
func (k *MultiSlerpKernel) NextPass() (int, bool) {
	return k.pass, len(k.w) > 1 && k.pass < 2 && !k.linear
}

func (k *MultiSlerpKernel) tau(in [][]float64, i, e int) float64 {
	if k.base {
		return in[i+1][e] - in[0][e]
	}
	return in[i][e]
}

// Observe: pass 0 accumulates the Gram matrix, pass 1 ‖g‖².
func (k *MultiSlerpKernel) Observe(p int, in [][]float64) error {
	n := len(k.w)
	m := len(in[0])
	if p == 0 {
		for e := range m {
			for i := range n {
				ti := k.tau(in, i, e)
				for j := i; j < n; j++ {
					k.gram[i*n+j] += ti * k.tau(in, j, e)
				}
			}
		}
		return nil
	}
	for e := range m {
		g := k.tangent(in, e)
		k.gg += g * g
	}
	return nil
}

// tangent is entry e of g = Σ w_i·(u_i − (u_i·m̂)·m̂).
func (k *MultiSlerpKernel) tangent(in [][]float64, e int) float64 {
	var mh float64
	for i, c := range k.mhat {
		mh += c * k.tau(in, i, e)
	}
	var g float64
	for i, w := range k.w {
		g += w * (k.a[i]*k.tau(in, i, e) - k.dots[i]*mh)
	}
	return g
}

// EndPass derives the mean direction (pass 0) or the exponential map's
// coefficients (pass 1).
func (k *MultiSlerpKernel) EndPass(p int) error {
	n := len(k.w)
	k.pass = p + 1
	if p == 1 {
		norm := math.Sqrt(k.gg) + k.eps
		k.cosG, k.sinG = math.Cos(norm), math.Sin(norm)/norm
		return nil
	}
	g := func(i, j int) float64 {
		if i > j {
			i, j = j, i
		}
		return k.gram[i*n+j]
	}
	k.norms, k.a = make([]float64, n), make([]float64, n)
	for i := range n {
		k.norms[i] = math.Sqrt(g(i, i))
		k.a[i] = 1 / (k.norms[i] + k.eps)
		k.avgNorm += k.norms[i] * k.w[i]
	}
	// m = Σ w_i·a_i·τ_i; ‖m‖² from the Gram matrix.
	var mm float64
	for i := range n {
		for j := range n {
			mm += k.w[i] * k.a[i] * k.w[j] * k.a[j] * g(i, j)
		}
	}
	mn := math.Sqrt(math.Max(mm, 0))
	if mn < k.eps {
		if n == 2 {
			k.linear = true
			return nil
		}
		return fmt.Errorf("multislerp: the weighted sum of the unit vectors is zero (antipodal models with balancing weights); change the weights")
	}
	k.mhat, k.dots = make([]float64, n), make([]float64, n)
	for i := range n {
		k.mhat[i] = k.w[i] * k.a[i] / mn
	}
	for i := range n {
		var d float64
		for j := range n {
			d += k.mhat[j] * g(i, j)
		}
		k.dots[i] = k.a[i] * d
	}
	return nil
}

// Compute writes the interpolated tensor.
func (k *MultiSlerpKernel) Compute(in, out [][]float64) error {
	o := out[0]
	if len(k.w) == 1 {
		// One model: itself, as mergekit returns it.
		copy(o, in[len(in)-1][:len(o)])
		return nil
	}
	for e := range o {
		var r float64
		if k.linear {
			r = k.w[0]*k.tau(in, 0, e) + k.w[1]*k.tau(in, 1, e)
		} else {
			var mh float64
			for i, c := range k.mhat {
				mh += c * k.tau(in, i, e)
			}
			r = (mh*k.cosG + k.tangent(in, e)*k.sinG) * k.avgNorm
		}
		if k.base {
			r += in[0][e]
		}
		o[e] = r
	}
	return nil
}

// Fork: the last pass reads only what the pre-passes found, so the kernel
// itself serves every part.
func (k *MultiSlerpKernel) Fork(int64) (stream.PassKernel, bool) {
	_, more := k.NextPass()
	return k, !more
}
