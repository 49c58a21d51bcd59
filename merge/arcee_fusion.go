package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// arcee_fusion keeps the other model's changes only where they matter
// most: an entry's importance is |b − a| times the KL divergence between
// the softmax of its row in the model and in the base; changes of
// importance at or above median + 1.5·IQR are taken, the rest dropped.
func init() {
	Register(Method{
		Name:      "arcee_fusion",
		Summary:   "the other model's changes where their importance |b−a|·KL(softmax rows) reaches median + 1.5·IQR, the base elsewhere",
		Paper:     "https://arcee.ai",
		Base:      BaseRequired,
		MinModels: 1, MaxModels: 1,
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				n, _ := t.NumElements()
				rl := n
				if len(t.Shape) > 0 {
					rl = t.Shape[len(t.Shape)-1]
				}
				return stream.Passes(NewArceeFusionKernel(n, int(max(rl, 1)))), nil
			}, nil
		},
	})
}

// ArceeFusionKernel is arcee_fusion on one tensor: in[0] the base a, in[1]
// the model b. Per row r (the last dimension; a 1-D tensor is one row),
// KL_r = Σ_j p_j·log(p_j/q_j) with p = softmax(b_r) + 1e-8 and
// q = softmax(a_r) + 1e-8; importance = |b − a|·KL_r, rounded to float32.
// The quartiles are taken exactly over every entry, as
// sorted[⌊q·(n−1)⌋] (mergekit samples a million entries of larger
// tensors), and the threshold is median + 1.5·(q₃ − q₁).
type ArceeFusionKernel struct {
	n, rowLen int
	hist      *sparsify.Histogram
	ranks     [3]int64
	threshold float32
	min       float32
	pass      int
	imp       []float32
}

// NewArceeFusionKernel builds the kernel for n entries in rows of rowLen.
func NewArceeFusionKernel(n int64, rowLen int) *ArceeFusionKernel {
	k := &ArceeFusionKernel{n: int(n), rowLen: rowLen, min: float32(math.Inf(1))}
	// Ascending index i is the (n−i)-th largest.
	for j, q := range []float64{0.25, 0.5, 0.75} {
		k.ranks[j] = n - int64(q*float64(n-1))
	}
	k.hist = sparsify.NewHistogram(k.ranks[:]...)
	return k
}

// NextPass: the coarse and fine histograms of the importances.
func (k *ArceeFusionKernel) NextPass() (int, bool) { return k.pass, k.pass < 2 }

// importance fills the importances of a chunk (whole rows).
func (k *ArceeFusionKernel) importance(in [][]float64) []float32 {
	a, b := in[0], in[1]
	m := len(a)
	if cap(k.imp) < m {
		k.imp = make([]float32, m)
	}
	imp := k.imp[:m]
	for r := 0; r < m; r += k.rowLen {
		end := min(m, r+k.rowLen)
		kl := klRow(b[r:end], a[r:end])
		for e := r; e < end; e++ {
			// KL with the 1e-8 floor can dip below 0 by rounding; the
			// ranks are of magnitudes, so such an importance counts as 0.
			imp[e] = float32(math.Max(0, math.Abs(b[e]-a[e])*kl))
		}
	}
	return imp
}

// klRow is Σ p·log(p/q) for p = softmax(x) + 1e-8, q = softmax(y) + 1e-8.
func klRow(x, y []float64) float64 {
	soft := func(v []float64) (mx, sum float64) {
		mx = math.Inf(-1)
		for _, t := range v {
			mx = math.Max(mx, t)
		}
		for _, t := range v {
			sum += math.Exp(t - mx)
		}
		return mx, sum
	}
	mx, sx := soft(x)
	my, sy := soft(y)
	var kl float64
	for i := range x {
		p := math.Exp(x[i]-mx)/sx + 1e-8
		q := math.Exp(y[i]-my)/sy + 1e-8
		kl += p * math.Log(p/q)
	}
	return kl
}

// Observe feeds the importances to the histogram.
func (k *ArceeFusionKernel) Observe(p int, in [][]float64) error {
	imp := k.importance(in)
	if p == 0 {
		k.hist.AddCoarseValues(imp)
		for _, v := range imp {
			k.min = min(k.min, v)
		}
	} else {
		k.hist.AddFineValues(imp)
	}
	return nil
}

// EndPass finds the quartiles and the threshold.
func (k *ArceeFusionKernel) EndPass(p int) error {
	if p == 0 && k.hist.EndCoarse() {
		k.pass = 1
		return nil
	}
	k.pass = 2
	cuts := k.hist.Cuts()
	q := func(j int) float64 {
		if k.ranks[j] >= int64(k.n) {
			return float64(k.min) // the smallest: no cut holds it
		}
		return float64(math.Float32frombits(cuts[j].V))
	}
	k.threshold = float32(q(1) + 1.5*(q(2)-q(0)))
	return nil
}

// Compute takes b where the importance reaches the threshold, a elsewhere.
func (k *ArceeFusionKernel) Compute(in, out [][]float64) error {
	imp := k.importance(in)
	a, b := in[0], in[1]
	for e := range out[0] {
		if imp[e] >= k.threshold {
			out[0][e] = a[e] + (b[e] - a[e])
		} else {
			out[0][e] = a[e]
		}
	}
	return nil
}
