package merge

import (
	"context"
	"math"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func init() {
	Register(Method{
		Name:       "model_stock",
		Summary:    "average of the models pulled towards the base by t = N·cosθ/(1+(N−1)·cosθ)",
		Paper:      "https://arxiv.org/abs/2403.19522",
		Base:       BaseRequired,
		MinModels:  2,
		StreamCost: chunkScratch,
		Global:     map[string]ParamSpec{"filter_wise": withDefault(boolParam, "false")},
		Build: func(_ context.Context, p *Plan, _ stream.Options) (KernelFactory, error) {
			return func(t weights.TensorInfo) (stream.Kernel, error) {
				fw := p.Tensor(t.Name).Bool("filter_wise", false)
				rl := 1
				if len(t.Shape) > 0 {
					rl = int(t.Shape[len(t.Shape)-1])
				}
				return stream.Passes(NewModelStockKernel(fw, rl)), nil
			}, nil
		},
	})
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
func (k *ModelStockKernel) Observe(_ int, in [][]float64) error {
	if k.dots == nil {
		k.n = len(in)
		k.dots = make([]float64, k.n*k.n)
	}
	gram(in, 0, len(in[0]), k.dots)
	return nil
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
func (k *ModelStockKernel) EndPass(int) error {
	k.done = true
	k.t = stockRatio(k.dots, k.n)
	return nil
}

// Compute writes t·mean(models) + (1−t)·base.
func (k *ModelStockKernel) Compute(in [][]float64, out [][]float64) error {
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
		return nil
	}
	g := make([]float64, n*n)
	for r := 0; r < len(o); r += k.rowLen {
		clear(g)
		end := min(len(o), r+k.rowLen)
		gram(in, r, end, g)
		apply(r, end, stockRatio(g, n))
	}
	return nil
}

// Fork: the last pass reads only the ratio (or measures each row in its
// chunk), so the kernel itself serves every part.
func (k *ModelStockKernel) Fork(int64) (stream.PassKernel, bool) {
	_, more := k.NextPass()
	return k, !more
}
