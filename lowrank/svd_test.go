package lowrank

import (
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/weightops/weightops/internal/testutil"

	"gonum.org/v1/gonum/mat"
)

// orthonormal is testutil.Orthonormal: built without LAPACK, so the tests
// do not check the code with itself.
func orthonormal(rng *rand.Rand, m, k int) [][]float64 { return testutil.Orthonormal(rng, m, k) }

// known builds A = U·diag(s)·Vᵀ (m×n, row-major) from random orthonormal
// U, V and the given singular values, and returns A and the rank-r
// truncation builder.
type knownMatrix struct {
	m, n int
	s    []float64
	u, v [][]float64 // columns
}

func newKnown(rng *rand.Rand, m, n int, s []float64) *knownMatrix {
	return &knownMatrix{m: m, n: n, s: s, u: orthonormal(rng, m, len(s)), v: orthonormal(rng, n, len(s))}
}

// truncated is Σ_{i<r} s_i·u_i·v_iᵀ by plain loops.
func (k *knownMatrix) truncated(r int) []float64 {
	out := make([]float64, k.m*k.n)
	for l := 0; l < min(r, len(k.s)); l++ {
		for i := 0; i < k.m; i++ {
			f := k.s[l] * k.u[l][i]
			for j := 0; j < k.n; j++ {
				out[i*k.n+j] += f * k.v[l][j]
			}
		}
	}
	return out
}

func (k *knownMatrix) full() []float64 { return k.truncated(len(k.s)) }

// expectedRelError is √(Σ_{i≥r} s_i²) / √(Σ s_i²) from the chosen values.
func expectedRelError(s []float64, r int) float64 {
	var tail, total float64
	for i, v := range s {
		total += v * v
		if i >= r {
			tail += v * v
		}
	}
	return math.Sqrt(tail / total)
}

func frobDiff(a, b []float64) float64 {
	var d float64
	for i := range a {
		d += (a[i] - b[i]) * (a[i] - b[i])
	}
	return math.Sqrt(d)
}

func frob(a []float64) float64 { return frobDiff(a, make([]float64, len(a))) }

func decaying(k int, base float64) []float64 {
	s := make([]float64, k)
	for i := range s {
		s[i] = 10 * math.Pow(base, float64(i))
	}
	return s
}

func TestExactSVDKnownSpectrum(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, dims := range [][2]int{{24, 16}, {16, 40}, {7, 7}} {
		m, n := dims[0], dims[1]
		k := min(m, n)
		s := decaying(k, 0.8)
		km := newKnown(rng, m, n, s)
		a := km.full()
		svd, err := Exact(mat.NewDense(m, n, slices.Clone(a)))
		if err != nil {
			t.Fatal(err)
		}
		for i := range s {
			if math.Abs(svd.S[i]-s[i]) > 1e-12*s[0] {
				t.Fatalf("%dx%d: σ_%d = %g, want %g", m, n, i, svd.S[i], s[i])
			}
		}
		for _, r := range []int{0, 1, 3, k / 2, k} {
			want := expectedRelError(s, r)
			if got := svd.RelError(r); math.Abs(got-want) > 1e-12 {
				t.Errorf("%dx%d r=%d: RelError %g, want %g", m, n, r, got, want)
			}
			// The reconstruction is the known truncation, entry by entry.
			rec := svd.Reconstruct(r).RawMatrix().Data
			if d := frobDiff(rec, km.truncated(r)); d > 1e-12*frob(a) {
				t.Errorf("%dx%d r=%d: reconstruction off by %g", m, n, r, d)
			}
			if d := frobDiff(rec, a) / frob(a); math.Abs(d-want) > 1e-12 {
				t.Errorf("%dx%d r=%d: direct error %g, identity says %g", m, n, r, d, want)
			}
		}
	}
}

func TestRandomizedCloseToExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	m, n, r := 300, 200, 12
	for _, spectrum := range []struct {
		name string
		s    []float64
	}{
		{"geometric 0.9", decaying(n, 0.9)},
		{"harmonic", func() []float64 {
			s := make([]float64, n)
			for i := range s {
				s[i] = 1 / float64(i+1)
			}
			return s
		}()},
	} {
		km := newKnown(rng, m, n, spectrum.s)
		a := mat.NewDense(m, n, km.full())
		res, err := Factorize(mat.DenseCopyOf(a), Rule{Rank: r}, Method{Randomized: true, Rand: DefaultRandOptions})
		if err != nil {
			t.Fatal(err)
		}
		if res.Method != "randomized" || res.Rank != r {
			t.Fatalf("%s: method %s rank %d", spectrum.name, res.Method, res.Rank)
		}
		exact := expectedRelError(spectrum.s, r)
		got := res.RelError()
		if got < exact*(1-1e-9) || got > exact*1.03 {
			t.Errorf("%s: randomized rank-%d error %g, exact %g (ratio %.4f)", spectrum.name, r, got, exact, got/exact)
		}
		// The reported error is the true error of the reconstruction.
		direct := frobDiff(res.Reconstruct().RawMatrix().Data, a.RawMatrix().Data) / frob(a.RawMatrix().Data)
		if math.Abs(direct-got) > 1e-9 {
			t.Errorf("%s: reported %g, direct %g", spectrum.name, got, direct)
		}
		t.Logf("%s: rank %d randomized error %.6g vs exact %.6g (+%.3f%%)", spectrum.name, r, got, exact, 100*(got/exact-1))
	}
}

func TestRandomizedDeterministic(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	a := mat.NewDense(120, 90, nil)
	for i := range a.RawMatrix().Data {
		a.RawMatrix().Data[i] = rng.NormFloat64()
	}
	run := func(seed uint64) *SVD {
		s, err := Randomized(a, 8, RandOptions{Oversample: 5, PowerIters: 1, Seed: seed})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	x, y, z := run(7), run(7), run(8)
	if !slices.Equal(x.S, y.S) || !slices.Equal(x.U.RawMatrix().Data, y.U.RawMatrix().Data) || !slices.Equal(x.Vt.RawMatrix().Data, y.Vt.RawMatrix().Data) {
		t.Error("same seed, different results")
	}
	if slices.Equal(x.S, z.S) {
		t.Error("different seeds, identical singular values")
	}
}

func TestEnergyAndRatioRules(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	m, n := 200, 150
	s := decaying(n, 0.85)
	km := newKnown(rng, m, n, s)
	var total float64
	for _, v := range s {
		total += v * v
	}
	for _, e := range []float64{0.5, 0.9, 0.95, 0.999, 1} {
		// Independent answer: the smallest r with Σ_{i<r} s_i² ≥ e·total.
		want, acc := 0, 0.0
		for want < n && acc < e*total*(1-1e-12) {
			acc += s[want] * s[want]
			want++
		}
		for _, how := range []Method{{}, {Randomized: true, Rand: RandOptions{Oversample: 4, PowerIters: 2, Seed: 1}}} {
			res, err := Factorize(mat.NewDense(m, n, km.full()), Rule{Energy: e}, how)
			if err != nil {
				t.Fatal(err)
			}
			if e == 1 {
				// Rounding leaves tiny singular values; all must be kept.
				if res.Rank < n-1 {
					t.Errorf("energy 1 (%s): rank %d", res.Method, res.Rank)
				}
				continue
			}
			if res.Rank != want || res.Energy() < e {
				t.Errorf("energy %g (%s): rank %d (energy %g), want %d", e, res.Method, res.Rank, res.Energy(), want)
			}
			if how.Randomized && res.Method != "randomized" {
				t.Errorf("energy %g: randomized request ran %s", e, res.Method)
			}
		}
	}
	for _, c := range []struct {
		m, n int
		c    float64
		want int
	}{{4096, 4096, 4, 512}, {4096, 11008, 2, 1492}, {24, 16, 1, 9}, {10, 10, 1000, 1}, {10, 10, 0.01, 10}} {
		if got := RatioRank(c.m, c.n, c.c); got != c.want {
			t.Errorf("RatioRank(%d, %d, %g) = %d, want %d", c.m, c.n, c.c, got, c.want)
		}
	}
	// The factors of the PELA rank hold at most 1/c of the parameters.
	if r := RatioRank(4096, 11008, 3); r*(4096+11008)*3 > 4096*11008 {
		t.Errorf("ratio rank %d too large", r)
	}
}

func TestFactorsSplit(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	km := newKnown(rng, 9, 7, decaying(7, 0.7))
	for _, split := range []Split{SplitSqrt, SplitLeft} {
		for _, tr := range []bool{false, true} {
			res, err := Factorize(mat.NewDense(9, 7, km.full()), Rule{Rank: 4}, Method{})
			if err != nil {
				t.Fatal(err)
			}
			l, r := res.Factors(split, tr)
			var prod mat.Dense
			prod.Mul(l, r)
			if d := frobDiff(prod.RawMatrix().Data, km.truncated(4)); d > 1e-12 {
				t.Errorf("split %v transposed %v: L·R off by %g", split, tr, d)
			}
			// SplitLeft puts σ on the factor that becomes LoRA B: the other
			// one has orthonormal rows/columns.
			if split == SplitLeft {
				plain := r
				if tr {
					plain = mat.DenseCopyOf(l.T())
				}
				var g mat.Dense
				g.Mul(plain, plain.T())
				if !mat.EqualApprox(&g, identity(4), 1e-12) {
					t.Errorf("transposed %v: A factor is not orthonormal", tr)
				}
			}
		}
	}
}

func identity(n int) *mat.Dense {
	d := mat.NewDense(n, n, nil)
	for i := 0; i < n; i++ {
		d.Set(i, i, 1)
	}
	return d
}

func TestRejectsBadInput(t *testing.T) {
	a := mat.NewDense(3, 3, []float64{1, 2, 3, 4, math.NaN(), 6, 7, 8, 9})
	if _, err := Factorize(a, Rule{Rank: 1}, Method{}); err == nil {
		t.Error("NaN factorised")
	}
	for _, r := range []Rule{{}, {Rank: -1}, {Energy: 1.5}, {Ratio: -2}, {Rank: 2, Energy: 0.5}} {
		if r.Validate() == nil {
			t.Errorf("rule %+v accepted", r)
		}
	}
	zero := mat.NewDense(4, 3, nil)
	res, err := Factorize(zero, Rule{Rank: 2}, Method{})
	if err != nil || res.Rank != 0 || res.RelError() != 0 || res.Energy() != 1 {
		t.Errorf("zero matrix: %+v %v", res, err)
	}
}

func TestMethodAuto(t *testing.T) {
	auto := Method{Auto: true}
	for _, c := range []struct {
		m, n int
		want bool
	}{{1023, 4096, false}, {1024, 4096, true}, {4096, 1024, true}, {64, 64, false}, {11008, 4096, true}} {
		if got := auto.For(c.m, c.n).Randomized; got != c.want {
			t.Errorf("auto %d×%d: randomized %v, want %v", c.m, c.n, got, c.want)
		}
	}
	// Without Auto the caller's choice stands.
	if (Method{}).For(4096, 4096).Randomized || !(Method{Randomized: true}).For(8, 8).Randomized {
		t.Error("For overrode an explicit method")
	}
}
