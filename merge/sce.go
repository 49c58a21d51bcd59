package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// sce (select, calculate, erase): keep the entries where the models
// disagree most (top select_topk of the variance across models), weight
// each task vector by its mean square, erase the entries against the
// elected sign, and average what is left.
func init() {
	Register(Method{
		Name:      "sce",
		Summary:   "keep the select_topk entries of highest variance across models, weight each τ_i by its mean square, drop entries against the elected sign, average",
		Paper:     "https://arxiv.org/abs/2408.07990",
		Base:      BaseRequired,
		MinModels: 1,
		Global: map[string]ParamSpec{
			"select_topk": withDefault(unitParam, "1"),
			"int8_mask":   boolParam,
		},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				tp := p.Tensor(t.Name)
				n, _ := t.NumElements()
				return stream.Passes(NewSCEKernel(tp.Models(), n, tp.Float(-1, "select_topk", 1))), nil
			}, nil
		},
	})
}

// SCEKernel is sce on one tensor: in[0] the base, in[1..n] the models, τ_i
// their differences. With select_topk < 1 the k = ⌊nonzero·select_topk⌋
// entries of largest population variance of the τ_i across models (ranked
// in float32, ties by index) are kept in every τ_i (none when k = 0); the
// weights are w_i = mean(τ_i²)/Σ_j mean(τ_j²) (uniform when that sum is
// below 1e-6); an entry of τ_i takes part only when its sign is the sign
// of Σ_j τ_j (a zero sum counting as positive, a zero entry never); the
// result is base + Σ w_i·τ_i / max(Σ w_i, 1e-6) over the parts.
type SCEKernel struct {
	models   int
	topk     float64
	n        int64
	hist     *sparsify.Histogram
	nonzero  int64
	cnt      sparsify.Counter
	keepAll  bool
	keepNone bool
	sq       []float64 // Σ τ_i² over kept entries
	w        []float64
	pass     int
	vars     []float32
}

const (
	scePassCoarse = iota
	scePassFine
	scePassWeights
	scePassDone
)

// NewSCEKernel builds the kernel for a tensor of n entries.
func NewSCEKernel(models int, n int64, topk float64) *SCEKernel {
	k := &SCEKernel{models: models, topk: topk, n: n, sq: make([]float64, models)}
	switch {
	case topk >= 1:
		k.keepAll, k.pass = true, scePassWeights
	case topk <= 0:
		k.keepNone, k.pass = true, scePassWeights
	}
	return k
}

// NextPass: the variance histogram (coarse, fine) when selecting, then
// the weights.
func (k *SCEKernel) NextPass() (int, bool) { return k.pass, k.pass < scePassDone }

// variances fills the float32 variance of the τ_i per entry.
func (k *SCEKernel) variances(in [][]float64) []float32 {
	m := len(in[0])
	if cap(k.vars) < m {
		k.vars = make([]float32, m)
	}
	v := k.vars[:m]
	for e := range v {
		var mean float64
		for i := 1; i <= k.models; i++ {
			mean += in[i][e] - in[0][e]
		}
		mean /= float64(k.models)
		var s float64
		for i := 1; i <= k.models; i++ {
			d := in[i][e] - in[0][e] - mean
			s += d * d
		}
		v[e] = float32(s / float64(k.models))
	}
	return v
}

// kept reports whether the next entry (in index order) is selected.
func (k *SCEKernel) kept(v float32) bool {
	switch {
	case k.keepAll:
		return true
	case k.keepNone:
		return false
	}
	return k.cnt.In(sparsify.MagBits(v))
}

// Observe runs the current pass over a chunk.
func (k *SCEKernel) Observe(p int, in [][]float64) error {
	switch p {
	case scePassCoarse:
		if k.hist == nil {
			k.hist = sparsify.NewHistogram() // the rank is known after counting non-zeros
		}
		v := k.variances(in)
		for _, x := range v {
			if x != 0 {
				k.nonzero++
			}
		}
		k.hist.AddCoarseValues(v)
	case scePassFine:
		k.hist.AddFineValues(k.variances(in))
	case scePassWeights:
		var v []float32
		if !k.keepAll && !k.keepNone {
			v = k.variances(in)
		}
		for e := range in[0] {
			keep := k.keepAll || (!k.keepNone && k.kept(v[e]))
			if !keep {
				continue
			}
			for i := 1; i <= k.models; i++ {
				d := in[i][e] - in[0][e]
				k.sq[i-1] += d * d
			}
		}
	}
	return nil
}

// EndPass closes a pass: the cut after the histogram, the weights after
// their pass.
func (k *SCEKernel) EndPass(p int) error {
	switch p {
	case scePassCoarse:
		kk := int64(float64(k.nonzero) * k.topk)
		if kk == 0 {
			k.keepNone, k.pass = true, scePassWeights
			return nil
		}
		k.hist.SetRanks(kk)
		if k.hist.EndCoarse() {
			k.pass = scePassFine
			return nil
		}
		k.cnt = sparsify.Counter{Cut: k.hist.Cuts()[0]}
		k.pass = scePassWeights
	case scePassFine:
		k.cnt = sparsify.Counter{Cut: k.hist.Cuts()[0]}
		k.pass = scePassWeights
	case scePassWeights:
		k.w = make([]float64, k.models)
		var sum float64
		for i, s := range k.sq {
			k.w[i] = s / float64(k.n)
			sum += k.w[i]
		}
		for i := range k.w {
			if math.Abs(sum) < 1e-6 {
				k.w[i] = 1 / float64(k.models)
			} else {
				k.w[i] /= sum
			}
		}
		k.pass = scePassDone
		k.cnt = sparsify.Counter{Cut: k.cnt.Cut} // the mask again, from the start
	}
	return nil
}

// Compute merges a chunk.
func (k *SCEKernel) Compute(in, out [][]float64) error {
	var v []float32
	if !k.keepAll && !k.keepNone {
		v = k.variances(in)
	}
	base := in[0]
	for e := range out[0] {
		keep := k.keepAll || (!k.keepNone && k.kept(v[e]))
		if !keep {
			out[0][e] = base[e]
			continue
		}
		var total float64
		for i := 1; i <= k.models; i++ {
			total += in[i][e] - base[e]
		}
		var merged, div float64
		for i := 1; i <= k.models; i++ {
			d := in[i][e] - base[e]
			if (d > 0 && total >= 0) || (d < 0 && total < 0) {
				merged += k.w[i-1] * d
				div += k.w[i-1]
			}
		}
		out[0][e] = base[e] + merged/math.Max(div, 1e-6)
	}
	return nil
}
