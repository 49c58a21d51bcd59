// Package lowrank factorises weight matrices and task vectors into low-rank
// products — exact (LAPACK's Gesvd through gonum) or randomized
// (Halko–Martinsson–Tropp) truncated SVDs — and reads, writes and merges
// PEFT LoRA adapters built from them.
//
// A checkpoint pass (Compress, Merge) is a job of the stream engine: one
// tensor per worker, within the memory bound; nothing holds the whole
// model.
package lowrank

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/lapack"
	"gonum.org/v1/gonum/lapack/lapack64"
	"gonum.org/v1/gonum/mat"
)

// SVD is a (possibly truncated) singular value decomposition A ≈ U·diag(S)·Vt
// of an m×n matrix: U is m×k with orthonormal columns, Vt is k×n with
// orthonormal rows, S holds k values in descending order.
type SVD struct {
	U  *mat.Dense
	S  []float64
	Vt *mat.Dense
	// Total is ‖A‖_F² = Σ σ_i² over the whole spectrum, including the
	// values beyond k a truncated decomposition did not compute.
	Total float64
	// Exact reports a full thin SVD (k = min(m, n)), for which the tail
	// energy Σ_{i>r} σ_i² is known value by value.
	Exact bool
}

// RandOptions control the randomized SVD.
type RandOptions struct {
	// Oversample p: the sketch has rank+p columns (Halko et al. suggest 5–10).
	Oversample int
	// PowerIters q: subspace iterations, each one multiplication by A and
	// one by Aᵀ, re-orthonormalised by QR; 1–2 suffice for the slowly
	// decaying spectra of weight deltas.
	PowerIters int
	// Seed of the Gaussian test matrix; equal seeds give bit-identical
	// results (gonum's parallel matrix product sums each entry in a fixed
	// order).
	Seed uint64
}

// DefaultRandOptions are p = 10, q = 2, seed 1.
var DefaultRandOptions = RandOptions{Oversample: 10, PowerIters: 2, Seed: 1}

// ErrNotFinite is returned for matrices holding NaN or ±Inf, which no SVD
// routine can factorise meaningfully.
var ErrNotFinite = errors.New("matrix holds NaN or Inf; cannot factorise")

// Exact computes the thin SVD of a (k = min(m, n) values), leaving a
// unchanged.
func Exact(a *mat.Dense) (*SVD, error) {
	return exactInPlace(mat.DenseCopyOf(a))
}

// exactInPlace is Exact destroying a, which saves a copy of a large matrix.
func exactInPlace(a *mat.Dense) (*SVD, error) {
	m, n := a.Dims()
	total, err := frob2(a)
	if err != nil {
		return nil, err
	}
	k := min(m, n)
	u := mat.NewDense(m, k, nil)
	vt := mat.NewDense(k, n, nil)
	s := make([]float64, k)
	ar, ur, vr := a.RawMatrix(), u.RawMatrix(), vt.RawMatrix()
	work := []float64{0}
	lapack64.Gesvd(lapack.SVDStore, lapack.SVDStore, ar, ur, vr, s, work, -1)
	work = make([]float64, int(work[0]))
	if !lapack64.Gesvd(lapack.SVDStore, lapack.SVDStore, ar, ur, vr, s, work, len(work)) {
		return nil, fmt.Errorf("SVD of %d×%d matrix did not converge", m, n)
	}
	return &SVD{U: u, S: s, Vt: vt, Total: total, Exact: true}, nil
}

// Randomized computes an approximate rank-(rank+p) SVD of a by randomized
// subspace iteration (Halko, Martinsson & Tropp 2011, algorithms 4.4 and
// 5.1): Y = A·Ω for an n×(rank+p) Gaussian Ω; q rounds of Q = qr(Y),
// Q' = qr(Aᵀ·Q), Y = A·Q'; then B = Qᵀ·A, a small SVD B = Û·Σ·Vᵀ, U = Q·Û.
// When rank+p reaches min(m, n) the sketch would span everything, so the
// exact SVD is computed instead.
//
// Every rank-r truncation U_r·Σ_r·V_rᵀ equals (QÛ_r)(QÛ_r)ᵀ·A, an orthogonal
// projection of A, so ‖A − A_r‖_F² = ‖A‖_F² − Σ_{i≤r} σ̂_i² holds exactly
// for the computed values: the reported errors are true errors, not
// estimates.
func Randomized(a *mat.Dense, rank int, o RandOptions) (*SVD, error) {
	m, n := a.Dims()
	if rank < 1 {
		return nil, fmt.Errorf("randomized SVD: rank %d < 1", rank)
	}
	if o.Oversample < 0 || o.PowerIters < 0 {
		return nil, fmt.Errorf("randomized SVD: negative oversampling (%d) or power iterations (%d)", o.Oversample, o.PowerIters)
	}
	l := rank + o.Oversample
	if l >= min(m, n) {
		return Exact(a)
	}
	total, err := frob2(a)
	if err != nil {
		return nil, err
	}
	rng := rand.New(rand.NewPCG(o.Seed, 0x9e3779b97f4a7c15))
	omega := mat.NewDense(n, l, nil)
	od := omega.RawMatrix().Data
	for i := range od {
		od[i] = rng.NormFloat64()
	}
	y := mat.NewDense(m, l, nil)
	y.Mul(a, omega)
	q, err := orthonormalize(y)
	if err != nil {
		return nil, err
	}
	z := omega // reuse: Aᵀ·Q is n×l like Ω
	for it := 0; it < o.PowerIters; it++ {
		z.Mul(a.T(), q)
		qz, err := orthonormalize(z)
		if err != nil {
			return nil, err
		}
		y.Mul(a, qz)
		if q, err = orthonormalize(y); err != nil {
			return nil, err
		}
	}
	// B = Qᵀ·A (l×n), factorised exactly; it is small in one dimension.
	b := mat.NewDense(l, n, nil)
	b.Mul(q.T(), a)
	small, err := exactInPlace(b)
	if err != nil {
		return nil, err
	}
	u := mat.NewDense(m, l, nil)
	u.Mul(q, small.U)
	return &SVD{U: u, S: small.S, Vt: small.Vt, Total: total}, nil
}

// orthonormalize returns an orthonormal basis of y's columns (thin
// Householder QR), overwriting y.
func orthonormalize(y *mat.Dense) (*mat.Dense, error) {
	g := y.RawMatrix()
	if g.Rows < g.Cols {
		return nil, fmt.Errorf("QR: %d×%d matrix is wider than tall", g.Rows, g.Cols)
	}
	tau := make([]float64, g.Cols)
	work := []float64{0}
	lapack64.Geqrf(g, tau, work, -1)
	lwork := int(work[0])
	work = []float64{0}
	lapack64.Orgqr(g, tau, work, -1)
	lwork = max(lwork, int(work[0]), g.Cols)
	work = make([]float64, lwork)
	lapack64.Geqrf(g, tau, work, lwork)
	lapack64.Orgqr(g, tau, work, lwork)
	return y, nil
}

// frob2 is ‖A‖_F², or ErrNotFinite.
func frob2(a *mat.Dense) (float64, error) {
	g := a.RawMatrix()
	var total float64
	for i := 0; i < g.Rows; i++ {
		// Per-row partial sums keep the rounding error near √rows·ε rather
		// than growing with every element.
		var row float64
		for _, v := range g.Data[i*g.Stride : i*g.Stride+g.Cols] {
			row += v * v
		}
		total += row
	}
	if math.IsNaN(total) || math.IsInf(total, 0) {
		return 0, ErrNotFinite
	}
	return total, nil
}

// TailEnergy is Σ_{i>r} σ_i², the squared Frobenius error of the rank-r
// truncation. For an exact SVD it sums the discarded values (no
// cancellation); otherwise it is Total − Σ_{i≤r} σ_i², clamped at 0.
func (s *SVD) TailEnergy(r int) float64 {
	r = max(0, min(r, len(s.S)))
	if s.Exact {
		var tail float64
		for i := len(s.S) - 1; i >= r; i-- {
			tail += s.S[i] * s.S[i]
		}
		return tail
	}
	var head float64
	for _, v := range s.S[:r] {
		head += v * v
	}
	return max(0, s.Total-head)
}

// RelError is ‖A − A_r‖_F / ‖A‖_F for the rank-r truncation (0 for A = 0).
func (s *SVD) RelError(r int) float64 {
	if s.Total == 0 {
		return 0
	}
	return math.Sqrt(s.TailEnergy(r) / s.Total)
}

// Reconstruct returns U_r·diag(S_r)·Vt_r, the rank-r truncation (m×n).
func (s *SVD) Reconstruct(r int) *mat.Dense {
	m, _ := s.U.Dims()
	_, n := s.Vt.Dims()
	out := mat.NewDense(m, n, nil)
	if r = min(r, len(s.S)); r <= 0 {
		return out
	}
	us := scaledColumns(s.U, s.S[:r], 1)
	blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, us.RawMatrix(), s.Vt.Slice(0, r, 0, n).(*mat.Dense).RawMatrix(), 0, out.RawMatrix())
	return out
}

// scaledColumns returns the first len(d) columns of u, column j multiplied
// by d[j]^pow (pow 1 or 0.5).
func scaledColumns(u *mat.Dense, d []float64, pow float64) *mat.Dense {
	m, _ := u.Dims()
	out := mat.NewDense(m, len(d), nil)
	for i := 0; i < m; i++ {
		for j, v := range d {
			out.Set(i, j, u.At(i, j)*scalePow(v, pow))
		}
	}
	return out
}

// scaledRows returns the first len(d) rows of vt, row i multiplied by
// d[i]^pow.
func scaledRows(vt *mat.Dense, d []float64, pow float64) *mat.Dense {
	_, n := vt.Dims()
	out := mat.NewDense(len(d), n, nil)
	for i, v := range d {
		f := scalePow(v, pow)
		row := out.RawRowView(i)
		for j, x := range vt.RawRowView(i) {
			row[j] = x * f
		}
	}
	return out
}

func scalePow(v, pow float64) float64 {
	switch pow {
	case 0:
		return 1
	case 1:
		return v
	}
	return math.Pow(v, pow)
}
