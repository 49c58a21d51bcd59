package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// karcher is the Riemannian (Karcher) mean of the models' directions on
// the unit sphere, with equal weights, scaled by their mean norm; the base,
// when given, is one of the models, as mergekit merges it.
func init() {
	Register(Method{
		Name:       "karcher",
		Summary:    "Riemannian (Karcher) mean of the models' directions on the sphere, scaled by their mean norm",
		Paper:      "https://en.wikipedia.org/wiki/Karcher_mean",
		Base:       BaseNone,
		MinModels:  1,
		StreamCost: chunkScratch,
		Global: map[string]ParamSpec{
			"max_iter": withDefault(numberParam, "10"),
			"tol":      withDefault(numberParam, "1e-5"),
		},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				tp := p.Tensor(t.Name)
				return stream.Passes(NewKarcherKernel(tp.Models(), int(tp.Float(-1, "max_iter", 10)), tp.Float(-1, "tol", 1e-5))), nil
			}, nil
		},
	})
}

// KarcherKernel computes the Karcher mean of n tensors: with norms n_i and
// unit vectors u_i (zero for a zero tensor), start from the normalised mean
// of the units with norm above tol, then up to maxIter times move along
// T = Σ a_i·(θ_i/sin θ_i)·(u_i − cos θ_i·u) (θ_i = acos(u·u_i), terms with
// θ_i < tol skipped) by the exponential map, stopping when ‖T‖ < tol; the
// result is (Σ n_i/N)·u. The iteration runs on coefficients over the u_i,
// from their Gram matrix (one pass), in float64.
type KarcherKernel struct {
	n       int
	maxIter int
	tol     float64
	gram    []float64
	coef    []float64 // result = Σ coef_i·x_i (x_i the raw tensors)
	done    bool
}

// NewKarcherKernel builds the kernel for n tensors.
func NewKarcherKernel(n, maxIter int, tol float64) *KarcherKernel {
	return &KarcherKernel{n: n, maxIter: maxIter, tol: tol, gram: make([]float64, n*n)}
}

// NextPass: one pass for the Gram matrix.
func (k *KarcherKernel) NextPass() (int, bool) { return 0, !k.done && k.n > 1 }

// Observe accumulates the Gram matrix.
func (k *KarcherKernel) Observe(_ int, in [][]float64) error {
	for e := range in[0] {
		for i := range k.n {
			xi := in[i][e]
			for j := i; j < k.n; j++ {
				k.gram[i*k.n+j] += xi * in[j][e]
			}
		}
	}
	return nil
}

// EndPass iterates the mean in coefficient space.
func (k *KarcherKernel) EndPass(int) error {
	k.done = true
	n := k.n
	g := func(i, j int) float64 {
		if i > j {
			i, j = j, i
		}
		return k.gram[i*n+j]
	}
	norms := make([]float64, n)
	for i := range n {
		norms[i] = math.Sqrt(g(i, i))
	}
	// U_ij = u_i·u_j.
	U := func(i, j int) float64 {
		if norms[i] == 0 || norms[j] == 0 {
			return 0
		}
		return g(i, j) / (norms[i] * norms[j])
	}
	var valid []int
	for i := range n {
		if norms[i] > k.tol {
			valid = append(valid, i)
		}
	}
	k.coef = make([]float64, n)
	if len(valid) == 0 {
		return nil // all (nearly) zero: the zero tensor
	}
	alpha := 1 / float64(len(valid))
	// u = Σ c_i·u_i, c over all n (zero outside valid).
	dot := func(c []float64, i int) float64 { // u·u_i
		var s float64
		for j, cj := range c {
			if cj != 0 {
				s += cj * U(j, i)
			}
		}
		return s
	}
	norm := func(c []float64) float64 {
		var s float64
		for i, ci := range c {
			if ci != 0 {
				s += ci * dot(c, i)
			}
		}
		return math.Sqrt(math.Max(s, 0))
	}
	c := make([]float64, n)
	for _, i := range valid {
		c[i] = alpha
	}
	if nu := norm(c); nu < k.tol {
		clear(c)
		c[valid[0]] = 1
	} else {
		for i := range c {
			c[i] /= nu
		}
	}
	for range k.maxIter {
		T := make([]float64, n)
		for _, i := range valid {
			d := math.Max(-1, math.Min(1, dot(c, i)))
			theta := math.Acos(d)
			if theta < k.tol {
				continue
			}
			f := alpha * theta / math.Sin(theta)
			T[i] += f
			for j := range c {
				T[j] -= f * d * c[j]
			}
		}
		nT := norm(T)
		if nT < k.tol {
			break
		}
		cs, sn := math.Cos(nT), math.Sin(nT)
		for j := range c {
			c[j] = cs*c[j] + sn*T[j]/nT
		}
		if nu := norm(c); nu > k.tol {
			for j := range c {
				c[j] /= nu
			}
		}
	}
	// Scale: the mean norm over all n tensors (zero ones included).
	var s float64
	for _, ni := range norms {
		s += ni / float64(n)
	}
	for i := range c {
		if norms[i] > 0 {
			k.coef[i] = s * c[i] / norms[i]
		}
	}
	return nil
}

// Compute writes Σ coef_i·x_i.
func (k *KarcherKernel) Compute(in, out [][]float64) error {
	o := out[0]
	if k.n == 1 {
		copy(o, in[0][:len(o)])
		return nil
	}
	for e := range o {
		var r float64
		for i, c := range k.coef {
			r += c * in[i][e]
		}
		o[e] = r
	}
	return nil
}

// Fork: the last pass reads only the coefficients, so the kernel itself
// serves every part.
func (k *KarcherKernel) Fork(int64) (stream.PassKernel, bool) { return k, k.done }
