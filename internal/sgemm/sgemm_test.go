package sgemm

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/x448/float16"
)

// naive is C = op(A)·op(B) + beta·C in float64, the independent reference.
func naive(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int) []float64 {
	out := make([]float64, m*n)
	for i := range m {
		for j := range n {
			var s float64
			for p := range k {
				var av, bv float32
				if tA {
					av = a[p*lda+i]
				} else {
					av = a[i*lda+p]
				}
				if tB {
					bv = b[j*ldb+p]
				} else {
					bv = b[p*ldb+j]
				}
				s += float64(av) * float64(bv)
			}
			if beta != 0 {
				s += float64(beta) * float64(c[i*ldc+j])
			}
			out[i*n+j] = s
		}
	}
	return out
}

func randVec(rng *rand.Rand, n int) []float32 {
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	return v
}

// Every shape class (partial tiles, several k blocks, one or two rows,
// transposes, strides wider than the matrix, beta 0/1/other) against the
// float64 reference; and the same bits for any worker count.
func TestGemmAgainstFloat64(t *testing.T) {
	checkGemm(t)
	if useAsm {
		useAsm = false // the portable kernels too
		defer func() { useAsm = true }()
		checkGemm(t)
	}
}

func checkGemm(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	sizes := [][3]int{{1, 1, 1}, {1, 37, 300}, {2, 130, 513}, {3, 5, 7}, {6, 16, 256}, {7, 17, 257}, {13, 100, 600}, {121, 33, 80}, {64, 4000, 64}, {250, 70, 1000}}
	for _, s := range sizes {
		m, n, k := s[0], s[1], s[2]
		for _, tA := range []bool{false, true} {
			for _, tB := range []bool{false, true} {
				for _, beta := range []float32{0, 1, -0.5} {
					lda, ldb, ldc := k+3, n+1, n+5
					if tA {
						lda = m + 2
					}
					if tB {
						ldb = k + 4
					}
					rowsA, rowsB := m, k
					if tA {
						rowsA = k
					}
					if tB {
						rowsB = n
					}
					a := randVec(rng, rowsA*lda)
					b := randVec(rng, rowsB*ldb)
					c0 := randVec(rng, m*ldc)
					want := naive(tA, tB, m, n, k, a, lda, b, ldb, beta, c0, ldc)
					var first []float32
					for _, w := range []int{1, 2, 5} {
						c := append([]float32(nil), c0...)
						if beta == 0 {
							for i := range c {
								c[i] = float32(math.NaN()) // ignored with beta 0
							}
						}
						Gemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, ldc, w)
						for i := range m {
							for j := range n {
								got, ref := float64(c[i*ldc+j]), want[i*n+j]
								if math.Abs(got-ref) > 1e-5*math.Sqrt(float64(k))*4+1e-6 || math.IsNaN(got) {
									t.Fatalf("m=%d n=%d k=%d tA=%v tB=%v beta=%v workers=%d: C[%d,%d] = %v, float64 gives %v", m, n, k, tA, tB, beta, w, i, j, got, ref)
								}
							}
							for j := n; j < ldc && beta != 0; j++ {
								if c[i*ldc+j] != c0[i*ldc+j] {
									t.Fatalf("padding C[%d,%d] written", i, j)
								}
							}
						}
						if first == nil {
							first = c
						} else {
							for i := range c {
								if math.Float32bits(c[i]) != math.Float32bits(first[i]) && !(beta == 0 && i%ldc >= n) {
									t.Fatalf("m=%d n=%d k=%d: workers %d differ from workers 1 at %d", m, n, k, w, i)
								}
							}
						}
					}
				}
			}
		}
	}
}

// A row of C has the same bits whether its row of A is multiplied alone
// or in a batch (a sample's logits do not depend on its batch; a decoding
// step gives what the prompt pass gave).
func TestBatchInvariant(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	m, n, k := 37, 300, 700
	a, w := randVec(rng, m*k), randVec(rng, n*k)
	batch := make([]float32, m*n)
	Gemm(false, true, m, n, k, a, k, w, k, 0, batch, n, 2)
	for _, i := range []int{0, 5, 36} {
		alone := make([]float32, n)
		Gemm(false, true, 1, n, k, a[i*k:], k, w, k, 0, alone, n, 1)
		for j := range alone {
			if math.Float32bits(alone[j]) != math.Float32bits(batch[i*n+j]) {
				t.Fatalf("row %d column %d: alone %v, in a batch %v", i, j, alone[j], batch[i*n+j])
			}
		}
	}
}

// The assembly and Go kernels compute the same sums (to rounding: FMA
// rounds once).
func TestKernelsAgree(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	for _, kb := range []int{0, 1, 5, 256} {
		a, b := randVec(rng, kb*mr+1), randVec(rng, kb*nr+1)
		c1, c2 := randVec(rng, mr*20), make([]float32, mr*20)
		copy(c2, c1)
		kernel(kb, a, b, c1, 20)
		kernelGo(kb, a, b, c2, 20)
		for i := range c1 {
			if math.Abs(float64(c1[i]-c2[i])) > 1e-4 {
				t.Fatalf("kb=%d: kernels differ at %d: %v vs %v", kb, i, c1[i], c2[i])
			}
		}
	}
	t.Logf("assembly kernels in use: %v", Accelerated())
}

func BenchmarkGemm(b *testing.B) {
	rng := rand.New(rand.NewPCG(1, 1))
	for _, s := range []struct {
		name    string
		m, n, k int
	}{{"prompt512x768x768", 512, 768, 768}, {"prompt512x2048x768", 512, 2048, 768}, {"decode1x2048x768", 1, 2048, 768}} {
		a, w, c := randVec(rng, s.m*s.k), randVec(rng, s.n*s.k), make([]float32, s.m*s.n)
		b.Run(s.name, func(b *testing.B) {
			for b.Loop() {
				Gemm(false, true, s.m, s.n, s.k, a, s.k, w, s.k, 0, c, s.n, 0)
			}
			b.ReportMetric(2*float64(s.m*s.n*s.k)*float64(b.N)/b.Elapsed().Seconds()/1e9, "GFLOPS")
		})
	}
}

// GemmPacked on a packed B equals Gemm on the same sub-matrix, bit for
// bit, for aligned column and depth ranges, either transposition.
func TestGemmPacked(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	k, n := 700, 90
	for _, tB := range []bool{false, true} {
		ldb := n + 3
		rows := k
		if tB {
			ldb, rows = k+1, n
		}
		b := randVec(rng, rows*ldb)
		var p PackedB
		p.Pack(tB, k, n, b, ldb)
		for _, r := range [][4]int{{0, k, 0, n}, {256, 600, 16, 90}, {512, 700, 32, 48}, {0, 1, 80, 81}} {
			p0, p1, j0, j1 := r[0], r[1], r[2], r[3]
			m := 13
			a := randVec(rng, m*k)
			got := make([]float32, m*(j1-j0))
			GemmPacked(false, m, a[p0:], k, &p, p0, p1, j0, j1, 0, got, j1-j0)
			// The same product by Gemm on copies of the sub-matrices.
			sa := make([]float32, m*(p1-p0))
			for i := range m {
				copy(sa[i*(p1-p0):], a[i*k+p0:i*k+p1])
			}
			sb := make([]float32, (p1-p0)*(j1-j0))
			for pp := p0; pp < p1; pp++ {
				for j := j0; j < j1; j++ {
					var v float32
					if tB {
						v = b[j*ldb+pp]
					} else {
						v = b[pp*ldb+j]
					}
					sb[(pp-p0)*(j1-j0)+j-j0] = v
				}
			}
			want := make([]float32, len(got))
			Gemm(false, false, m, j1-j0, p1-p0, sa, p1-p0, sb, j1-j0, 0, want, j1-j0, 1)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("tB=%v range %v: element %d: packed %v, Gemm %v", tB, r, i, got[i], want[i])
				}
			}
		}
	}
}

// GemmHalf equals Gemm on the widened weights, bit for bit.
func TestGemmHalf(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	m, n, k := 70, 45, 530
	a := randVec(rng, m*k)
	for _, h := range []Half{BF16, F16} {
		bits := make([]uint16, n*k)
		wide := make([]float32, n*k)
		for i := range bits {
			f := float32(rng.NormFloat64())
			if h == BF16 {
				bits[i] = uint16(math.Float32bits(f) >> 16)
				wide[i] = math.Float32frombits(uint32(bits[i]) << 16)
			} else {
				bits[i] = float16.Fromfloat32(f).Bits()
				wide[i] = float16.Frombits(bits[i]).Float32()
			}
		}
		got, want := make([]float32, m*n), make([]float32, m*n)
		GemmHalf(m, n, k, a, k, bits, k, h, 0, got, n, 2)
		Gemm(false, true, m, n, k, a, k, wide, k, 0, want, n, 1)
		for i := range got {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("format %d: element %d: %v, widened %v", h, i, got[i], want[i])
			}
		}
	}
}

// GemmPackedCols over any column range and worker count equals Gemm.
func TestGemmPackedCols(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	m, n, k := 5, 300, 520
	a, w := randVec(rng, m*k), randVec(rng, n*k)
	var p PackedB
	p.Pack(true, k, n, w, k)
	for _, r := range [][2]int{{0, n}, {32, 290}} {
		want := make([]float32, m*(r[1]-r[0]))
		Gemm(false, true, m, r[1]-r[0], k, a, k, w[r[0]*k:], k, 0, want, r[1]-r[0], 1)
		for _, workers := range []int{1, 3} {
			got := make([]float32, len(want))
			GemmPackedCols(m, a, k, &p, r[0], r[1], 0, got, r[1]-r[0], workers)
			for i := range got {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("columns %v, workers %d: element %d %v, Gemm %v", r, workers, i, got[i], want[i])
				}
			}
		}
	}
}

// One row through a packed B (the decoding step's path: four panels at a
// time, edge panels through the 6×16 kernel) has the bits that row gets
// in a batch, with the assembly and with the portable kernels.
func TestPackedRowAloneMatchesBatch(t *testing.T) {
	check := func() {
		rng := rand.New(rand.NewPCG(13, 14))
		m, n, k := 9, 200, 600 // 12.5 panels: the row4 path and edge panels
		a, w := randVec(rng, m*k), randVec(rng, n*k)
		var p PackedB
		p.Pack(true, k, n, w, k)
		batch := make([]float32, m*n)
		GemmPacked(false, m, a, k, &p, 0, k, 0, n, 0, batch, n)
		for _, i := range []int{0, 4, 8} {
			alone := make([]float32, n)
			GemmPackedCols(1, a[i*k:], k, &p, 0, n, 0, alone, n, 2)
			for j := range alone {
				if math.Float32bits(alone[j]) != math.Float32bits(batch[i*n+j]) {
					t.Fatalf("asm %v: row %d column %d: alone %v, in a batch %v", useAsm, i, j, alone[j], batch[i*n+j])
				}
			}
		}
	}
	check()
	if useAsm {
		useAsm = false
		defer func() { useAsm = true }()
		check()
	}
}
