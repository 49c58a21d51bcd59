package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// RAM (Reinforced Agent Merging) sums the task vectors' entries that only
// one model changes (|τ| > epsilon) and averages those several change;
// RAM+ (tensor-local) scales each model's unique entries by
// 1 + r·clamp(shared/unique, 0, alpha), its counts of entries shared with
// other models and of its own.
func init() {
	common := map[string]ParamSpec{"epsilon": withDefault(numberParam, "1e-5")}
	Register(Method{
		Name:    "ram",
		Summary: "entries one model changes (|τ| > epsilon) added, entries several change averaged",
		Paper:   "https://arxiv.org/abs/2601.13572",
		Base:    BaseRequired, MinModels: 1,
		StreamCost: chunkScratch,
		Global:     common,
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				tp := p.Tensor(t.Name)
				return stream.Passes(&RAMKernel{Models: tp.Models(), Epsilon: tp.Float(-1, "epsilon", 1e-5)}), nil
			}, nil
		},
	})
	plus := map[string]ParamSpec{"epsilon": withDefault(numberParam, "1e-5"), "r": withDefault(numberParam, "0.1"), "alpha": withDefault(numberParam, "0.2")}
	Register(Method{
		Name:    "ramplus_tl",
		Summary: "ram with each model's unique entries scaled by 1 + r·clamp(shared/unique, 0, alpha), counted per tensor",
		Paper:   "https://arxiv.org/abs/2601.13572",
		Base:    BaseRequired, MinModels: 1,
		StreamCost: chunkScratch,
		Global:     plus,
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				tp := p.Tensor(t.Name)
				return stream.Passes(&RAMKernel{Models: tp.Models(), Epsilon: tp.Float(-1, "epsilon", 1e-5),
					Plus: true, R: tp.Float(-1, "r", 0.1), Alpha: tp.Float(-1, "alpha", 0.2)}), nil
			}, nil
		},
	})
}

// RAMKernel is ram (Plus false) or ramplus_tl on one tensor: in[0] is the
// base, in[1..Models] the models.
type RAMKernel struct {
	Models   int
	Epsilon  float64
	Plus     bool
	R, Alpha float64
	// shared and unique count, per model, its changed entries that other
	// models also change, and those only it changes (Plus).
	shared, unique []int64
	lambda         []float64
	counted        bool
}

// NextPass: RAM+ counts shared and unique entries first.
func (k *RAMKernel) NextPass() (int, bool) { return 0, k.Plus && !k.counted }

func (k *RAMKernel) changed(in [][]float64, i, e int) bool {
	return math.Abs(in[i+1][e]-in[0][e]) > k.Epsilon
}

// Observe counts, per model, shared and unique changed entries.
func (k *RAMKernel) Observe(_ int, in [][]float64) error {
	if k.shared == nil {
		k.shared, k.unique = make([]int64, k.Models), make([]int64, k.Models)
	}
	for e := range in[0] {
		count := 0
		for i := range k.Models {
			if k.changed(in, i, e) {
				count++
			}
		}
		for i := range k.Models {
			if k.changed(in, i, e) {
				if count > 1 {
					k.shared[i]++
				} else {
					k.unique[i]++
				}
			}
		}
	}
	return nil
}

// EndPass derives each model's scale of its unique entries.
func (k *RAMKernel) EndPass(int) error {
	k.counted = true
	k.lambda = make([]float64, k.Models)
	for i := range k.lambda {
		rho := float64(k.shared[i]) / math.Max(float64(k.unique[i]), k.Epsilon)
		k.lambda[i] = 1 + k.R*math.Max(0, math.Min(rho, k.Alpha))
	}
	return nil
}

// Compute merges: unique entries added (scaled by λ for RAM+), shared
// ones averaged over the models that change them.
func (k *RAMKernel) Compute(in, out [][]float64) error {
	for e := range out[0] {
		count := 0
		for i := range k.Models {
			if k.changed(in, i, e) {
				count++
			}
		}
		var merged float64
		for i := range k.Models {
			if !k.changed(in, i, e) {
				continue
			}
			tau := in[i+1][e] - in[0][e]
			switch {
			case count == 1 && k.Plus:
				merged += tau * k.lambda[i]
			case count == 1:
				merged += tau
			default:
				merged += tau / float64(count)
			}
		}
		out[0][e] = in[0][e] + merged
	}
	return nil
}

// Fork: the last pass reads only the counts and λ, so the kernel itself
// serves every part.
func (k *RAMKernel) Fork(int64) (stream.PassKernel, bool) {
	_, more := k.NextPass()
	return k, !more
}
