package merge

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestLinearKernelTwoModels checks the unrolled two-model average against
// Σ w_i·x_i / Σ w_i worked left to right in float64 (0 + w0·a + w1·b, so a
// −0 product still sums to +0), on values with signed zeros, subnormals,
// infinities and NaN, normalized and not.
func TestLinearKernelTwoModels(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	special := []float64{0, math.Copysign(0, -1), 5e-324, -1e-310, math.Inf(1), math.Inf(-1), math.NaN(), 1, -1}
	val := func() float64 {
		if r.IntN(4) == 0 {
			return special[r.IntN(len(special))]
		}
		return r.NormFloat64() * 0.02
	}
	for _, w := range [][]float64{{0.5, 0.5}, {0.3, -0.7}, {1, 0}, {-0.25, 2}} {
		for _, normalize := range []bool{true, false} {
			if normalize && w[0]+w[1] == 0 {
				continue
			}
			const n = 1000
			a, b, o := make([]float64, n), make([]float64, n), make([]float64, n)
			for i := range a {
				a[i], b[i] = val(), val()
			}
			k := LinearKernel(w, normalize)
			if err := k.Compute([][]float64{a, b}, [][]float64{o}); err != nil {
				t.Fatal(err)
			}
			div := 1.0
			if normalize {
				div = w[0] + w[1]
			}
			for i := range o {
				want := (0 + float64(w[0]*a[i]) + float64(w[1]*b[i])) / div
				if math.Float64bits(o[i]) != math.Float64bits(want) && !(math.IsNaN(o[i]) && math.IsNaN(want)) {
					t.Fatalf("w %v normalize %v: %g·%g + %g·%g = %g, want %g", w, normalize, w[0], a[i], w[1], b[i], o[i], want)
				}
			}
		}
	}
}
