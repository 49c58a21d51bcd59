package lowrank

import (
	"math"
	"math/rand/v2"
	"sync"
	"testing"

	"gonum.org/v1/gonum/mat"
)

// benchMatrix is a 4096×11008 matrix (a LLaMA-7B MLP delta's shape) with
// known singular values s_i = 1/(i+1), i < 256 — a slowly decaying
// spectrum — built as U·diag(s)·Vᵀ from orthonormalised Gaussian U, V.
// The exact rank-r error is then √(Σ_{i≥r} s_i²)/‖s‖ without an SVD.
var benchMatrix = sync.OnceValues(func() (*mat.Dense, []float64) {
	const m, n, k = 4096, 11008, 256
	rng := rand.New(rand.NewPCG(2024, 1))
	gauss := func(r, c int) *mat.Dense {
		d := mat.NewDense(r, c, nil)
		for i := range d.RawMatrix().Data {
			d.RawMatrix().Data[i] = rng.NormFloat64()
		}
		return d
	}
	u, _ := orthonormalize(gauss(m, k))
	v, _ := orthonormalize(gauss(n, k))
	s := make([]float64, k)
	for i := range s {
		s[i] = 1 / float64(i+1)
	}
	a := mat.NewDense(m, n, nil)
	a.Mul(scaledColumns(u, s, 1), v.T())
	return a, s
})

func BenchmarkRandomized4096x11008Rank64(b *testing.B) {
	a, s := benchMatrix()
	const r = 64
	b.ResetTimer()
	var res *Result
	for i := 0; i < b.N; i++ {
		var err error
		res, err = Factorize(a, Rule{Rank: r}, Method{Randomized: true, Rand: DefaultRandOptions})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(res.RelError(), "rel_error")
	b.ReportMetric(expectedRelError(s, r), "exact_rel_error")
}

// BenchmarkExact4096x11008 is the full thin SVD of the same matrix
// (LAPACK Gesvd in pure Go): expect minutes, not seconds.
func BenchmarkExact4096x11008(b *testing.B) {
	a, s := benchMatrix()
	const r = 64
	b.ResetTimer()
	var res *Result
	for i := 0; i < b.N; i++ {
		var err error
		res, err = Factorize(mat.DenseCopyOf(a), Rule{Rank: r}, Method{})
		if err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(res.RelError(), "rel_error")
	b.ReportMetric(math.Abs(res.RelError()-expectedRelError(s, r)), "abs_diff_from_known")
}
