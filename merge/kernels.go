package merge

import (
	"math"

	"github.com/weightops/weightops/weights"

	"github.com/weightops/weightops/signature"
)

// elementwise adapts a per-chunk function with no pre-passes.
type elementwise func(in [][]float64, out [][]float64)

func (elementwise) NextPass() (int, bool)                     { return 0, false }
func (elementwise) Observe(int, [][]float64)                  {}
func (elementwise) EndPass(int)                               {}
func (f elementwise) Compute(in [][]float64, out [][]float64) { f(in, out) }

// DiffKernel: out = in[0] − in[1] (fine-tune minus base: a task vector).
func DiffKernel() TensorKernel {
	return elementwise(func(in [][]float64, out [][]float64) {
		a, b, o := in[0], in[1], out[0]
		for e := range o {
			o[e] = a[e] - b[e]
		}
	})
}

// AddKernel: out = in[0] + λ·Σ_{i≥1} s_i·in[i] (apply task vectors).
func AddKernel(lambda float64, scales []float64) TensorKernel {
	return elementwise(func(in [][]float64, out [][]float64) {
		o := out[0]
		for e := range o {
			var sum float64
			for i := 1; i < len(in); i++ {
				sum += scales[i-1] * in[i][e]
			}
			o[e] = in[0][e] + lambda*sum
		}
	})
}

// ScaleKernel: out = s·in[0] (s = −1 negates a task vector).
func ScaleKernel(s float64) TensorKernel {
	return elementwise(func(in [][]float64, out [][]float64) {
		for e := range out[0] {
			out[0][e] = s * in[0][e]
		}
	})
}

// InterpolateKernel: out[k] = (1−α_k)·in[0] + α_k·in[1], one output per α
// so a sweep reads its two inputs once.
func InterpolateKernel(alphas []float64) TensorKernel {
	return elementwise(func(in [][]float64, out [][]float64) {
		a, b := in[0], in[1]
		for k, al := range alphas {
			o := out[k]
			for e := range o {
				o[e] = (1-al)*a[e] + al*b[e]
			}
		}
	})
}

// LinearKernel: the weighted average Σ w_i·in[i] / Σ w_i (normalize) or
// the plain weighted sum.
func LinearKernel(w []float64, normalize bool) TensorKernel {
	div := 1.0
	if normalize {
		div = 0
		for _, x := range w {
			div += x
		}
	}
	return elementwise(func(in [][]float64, out [][]float64) {
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

// GTAKernel is mergekit's generalized task arithmetic on one tensor: in[0]
// is the base, in[i] (i ≥ 1) the models. Each model's task vector
// τ_i = θ_i − θ_base is sparsified, weighted (w_i·τ_i), optionally filtered
// by sign consensus (TIES: keep entries whose sign agrees with the sign of
// Σ w_i·τ_i, zero counting as positive), summed, optionally divided by the
// sum of the weights that contributed, scaled by λ and added to the base.
type GTAKernel struct {
	sp        []*signature.TensorSparsifier
	w         []float64
	consensus bool
	normalize bool
	lambda    float64
	tau       [][]float32
	raw       []weights.Tensor // models' raw bytes (input i+1)
	pos       int64            // index of the next chunk's first element
	// cache keeps every model's τ for the whole tensor after the first
	// pass when that fits in cacheLimit, so later passes skip recomputing.
	cache   [][]float32
	cached  bool
	scratch [][]float32
}

// Release returns the task-vector cache to the pool (the executor calls
// it when the tensor is written).
func (k *GTAKernel) Release() {
	for i, c := range k.cache {
		f32Pool.put(c)
		k.cache[i] = nil
	}
	k.cache = nil
}

const cacheLimit = 64 << 20

// RawInput: the models are read raw, the base decoded.
func (k *GTAKernel) RawInput(i int) bool { return i >= 1 }

// SetRaw receives a model's raw tensor.
func (k *GTAKernel) SetRaw(i int, t weights.Tensor) {
	if k.raw == nil {
		k.raw = make([]weights.Tensor, len(k.sp))
	}
	k.raw[i-1] = t
}

// GTAConfig is the per-tensor configuration of a GTA merge.
type GTAConfig struct {
	Sparsify  []signature.Sparsify // per model
	Weights   []float64            // per model
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
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	if _, more := k.NextPass(); more && n*4*int64(len(c.Sparsify)) <= cacheLimit {
		k.cache = make([][]float32, len(c.Sparsify))
		for i := range k.cache {
			k.cache[i] = f32Pool.get(int(n))
		}
	}
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

func (k *GTAKernel) deltas(in [][]float64) {
	b := in[0]
	n := int64(len(b))
	if k.cached {
		for i := range k.sp {
			k.tau[i] = k.cache[i][k.pos : k.pos+n]
		}
		k.pos += n
		return
	}
	for i := range k.sp {
		// The first pass writes τ straight into the cache when there is one.
		var t []float32
		if k.cache != nil {
			t = k.cache[i][k.pos : k.pos+n]
		} else {
			if cap(k.scratch[i]) < len(b) {
				k.scratch[i] = make([]float32, len(b))
			}
			t = k.scratch[i][:len(b)]
		}
		if k.raw != nil && k.raw[i].Data != nil {
			// τ = float32(m − b): the float64 difference of float32-or-
			// narrower values is exact, so one rounding, as from decoded
			// inputs, straight from the model's bytes.
			r := k.raw[i]
			es := int64(r.DType.Size())
			_ = weights.DeltaFloat32(r.DType, r.Data[k.pos*es:(k.pos+n)*es], b, t)
		} else {
			m := in[i+1][:len(t)]
			for e := range t {
				t[e] = float32(m[e] - b[e])
			}
		}
		k.tau[i] = t
	}
	k.pos += n
}

// Observe feeds the models that need pass p.
func (k *GTAKernel) Observe(p int, in [][]float64) {
	k.deltas(in)
	for i, s := range k.sp {
		if needs(s, p) {
			s.Observe(signature.Pass(p), k.tau[i])
		}
	}
}

// EndPass closes pass p for the models that needed it.
func (k *GTAKernel) EndPass(p int) {
	k.pos = 0
	k.cached = k.cache != nil
	for _, s := range k.sp {
		if needs(s, p) {
			s.EndPass(signature.Pass(p))
		}
	}
}

func needs(s *signature.TensorSparsifier, p int) bool {
	for _, q := range s.Needs() {
		if int(q) == p {
			return true
		}
	}
	return false
}

// Compute mixes the sparsified task vectors of one chunk into the base.
func (k *GTAKernel) Compute(in [][]float64, out [][]float64) {
	k.deltas(in)
	for i, s := range k.sp {
		s.Apply(k.tau[i])
	}
	base, o := in[0], out[0]
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
		if len(c) == 2 {
			t0, t1 := k.tau[0][:len(o)], k.tau[1][:len(o)]
			for e := range o {
				o[e] = base[e] + c[0]*float64(t0[e]) + c[1]*float64(t1[e])
			}
			return
		}
		for e := range o {
			acc := base[e]
			for i := range c {
				acc += c[i] * float64(k.tau[i][e])
			}
			o[e] = acc
		}
		return
	}
	for e := range o {
		var mixed, div float64
		if k.consensus {
			var total float64
			for i, w := range k.w {
				total += w * float64(k.tau[i][e])
			}
			majority := 1.0
			if total < 0 {
				majority = -1
			}
			for i, w := range k.w {
				x := w * float64(k.tau[i][e])
				if (x > 0 && majority > 0) || (x < 0 && majority < 0) {
					mixed += x
					div += w
				}
			}
			if div == 0 {
				div = 1
			}
		} else {
			for i, w := range k.w {
				mixed += w * float64(k.tau[i][e])
			}
			div = wsum
			if math.Abs(div) < 1e-8 {
				div = 1
			}
		}
		if k.normalize {
			mixed /= div
		}
		o[e] = base[e] + k.lambda*mixed
	}
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
func (k *SlerpKernel) Observe(_ int, in [][]float64) {
	for e := range in[0] {
		a, b := in[0][e], float64(in[1][e])
		k.aa += a * a
		k.bb += b * b
		k.ab += a * b
	}
}

// EndPass derives the interpolation coefficients.
func (k *SlerpKernel) EndPass(int) {
	k.done = true
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
func (k *SlerpKernel) Compute(in [][]float64, out [][]float64) {
	for e := range out[0] {
		out[0][e] = k.s0*in[0][e] + k.s1*float64(in[1][e])
	}
}

// ModelStockKernel averages models and pulls the average towards the base
// by the Model Stock ratio t = N·cosθ / (1 + (N−1)·cosθ), with cosθ the
// mean pairwise cosine between the models' offsets from the base (over the
// flattened tensor, or per row when filterWise). in[0] is the base.
type ModelStockKernel struct {
	filterWise bool
	rowLen     int
	n          int       // inputs, base included
	dots       []float64 // n×n Gram matrix of offsets (upper triangle used)
	t          float64
	done       bool
}

// NewModelStockKernel builds the kernel; rowLen is the last dimension.
func NewModelStockKernel(filterWise bool, rowLen int) *ModelStockKernel {
	return &ModelStockKernel{filterWise: filterWise, rowLen: max(1, rowLen)}
}

// NextPass asks for one pass to measure the angles (per tensor only).
func (k *ModelStockKernel) NextPass() (int, bool) { return 0, !k.filterWise && !k.done }

// Observe accumulates the Gram matrix of offsets.
func (k *ModelStockKernel) Observe(_ int, in [][]float64) {
	if k.dots == nil {
		k.n = len(in)
		k.dots = make([]float64, k.n*k.n)
	}
	gram(in, 0, len(in[0]), k.dots)
}

func gram(in [][]float64, from, to int, g []float64) {
	n := len(in)
	base := in[0]
	for e := from; e < to; e++ {
		b := base[e]
		for i := 1; i < n; i++ {
			oi := in[i][e] - b
			for j := i; j < n; j++ {
				g[i*n+j] += oi * (in[j][e] - b)
			}
		}
	}
}

func stockRatio(g []float64, n int) float64 {
	var sum float64
	var pairs int
	for i := 1; i < n; i++ {
		for j := i + 1; j < n; j++ {
			norm := math.Max(math.Sqrt(g[i*n+i])*math.Sqrt(g[j*n+j]), 1e-6)
			sum += math.Max(-1, math.Min(1, g[i*n+j]/norm))
			pairs++
		}
	}
	cos := sum / float64(pairs)
	m := float64(n - 1)
	return m * cos / (1 + (m-1)*cos)
}

// EndPass computes t.
func (k *ModelStockKernel) EndPass(int) {
	k.done = true
	k.t = stockRatio(k.dots, k.n)
}

// Compute writes t·mean(models) + (1−t)·base.
func (k *ModelStockKernel) Compute(in [][]float64, out [][]float64) {
	n := len(in)
	o := out[0]
	apply := func(from, to int, t float64) {
		for e := from; e < to; e++ {
			var avg float64
			for i := 1; i < n; i++ {
				avg += in[i][e]
			}
			avg /= float64(n - 1)
			o[e] = t*avg + (1-t)*in[0][e]
		}
	}
	if !k.filterWise {
		apply(0, len(o), k.t)
		return
	}
	g := make([]float64, n*n)
	for r := 0; r < len(o); r += k.rowLen {
		clear(g)
		end := min(len(o), r+k.rowLen)
		gram(in, r, end, g)
		apply(r, end, stockRatio(g, n))
	}
}
