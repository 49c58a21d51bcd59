package vec

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// bf16Ref rounds a float64 to bfloat16, nearest even, through big
// arithmetic on the exact value: the definition the encoder must meet
// (NaNs are only required to stay NaN with their sign).
func bf16Ref(x float64) uint16 {
	if math.IsNaN(x) {
		return 0x7fc0 | uint16(math.Float64bits(x)>>48)&0x8000
	}
	sign := uint16(math.Float64bits(x)>>48) & 0x8000
	a := math.Abs(x)
	// Candidates: the bfloat16 values around a, found by walking bits.
	best, bestErr := uint16(0), math.Inf(1)
	f := float32(a)
	u := math.Float32bits(f) >> 16
	for _, c := range []uint32{u - 1, u, u + 1} {
		if c > 0x7f80 {
			continue
		}
		v := float64(math.Float32frombits(c << 16))
		err := math.Abs(v - a)
		if math.IsInf(v, 1) {
			// Inf is the rounding of values at or past the halfway point
			// between the largest finite and 2^128.
			if a >= 0x1.ffp127 && !(a < 0x1.ffp127) {
				err = 0
			} else {
				continue
			}
		}
		if err < bestErr || err == bestErr && c&1 == 0 {
			best, bestErr = uint16(c), err
		}
	}
	return sign | best
}

func scalarBF16(x float64) uint16 {
	// The Go loop's rounding (weights.bf16FromFloat64's): the reference
	// for bits, including NaN payloads, which bf16Ref does not pin.
	b := math.Float64bits(x)
	if math.IsNaN(x) {
		return uint16(b>>48)&0x8000 | 0x7fc0 | uint16(b>>45)&0x3f
	}
	return bf16Ref(x)
}

// specialValues are the float64s around every boundary of the encoder's
// fast path: zeros, bfloat16's smallest normals and subnormals, the
// largest finite and the overflow threshold, exact ties, Inf, NaN.
func specialValues() []float64 {
	v := []float64{0, math.Copysign(0, -1), 1, -1, 0x1p-126, 0x1p-127, 0x1.fep-127, 0x1.fffp-127, 0x1p-133, 0x1p-134, 0x1p-140,
		0x1.fep127, 0x1.ffp127, math.Nextafter(0x1.ffp127, 0), 0x1p128, math.MaxFloat64, math.SmallestNonzeroFloat64,
		math.Inf(1), math.Inf(-1), math.NaN(), 1 + 0x1p-8, 1 + 0x1p-8 + 0x1p-40, 1 + 3*0x1p-8, 1 - 0x1p-9, 0x1.01p0}
	for _, x := range v[:len(v):len(v)] {
		v = append(v, -x, math.Nextafter(x, 0), math.Nextafter(x, math.Inf(1)))
	}
	return v
}

func randomValues(r *rand.Rand, n int, specials bool) []float64 {
	sp := specialValues()
	out := make([]float64, n)
	for i := range out {
		switch {
		case specials && r.IntN(8) == 0:
			out[i] = sp[r.IntN(len(sp))]
		case r.IntN(3) == 0:
			// Exact bfloat16 ties and near ties.
			out[i] = float64(math.Float32frombits(r.Uint32()&0x3fffffff|0x00008000)) * float64(1-2*r.IntN(2))
		default:
			out[i] = r.NormFloat64() * math.Ldexp(1, r.IntN(40)-20)
		}
	}
	return out
}

func both(t *testing.T, f func()) {
	t.Helper()
	saved := useAsm
	defer func() { useAsm = saved }()
	for _, a := range []bool{false, saved} {
		useAsm = a
		f()
	}
}

func TestEncodeBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, v := range specialValues() {
		if math.IsNaN(v) {
			continue
		}
		if got, want := scalarBF16(v), bf16Ref(v); got != want {
			t.Fatalf("reference disagrees with itself at %g", v)
		}
	}
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	for _, a := range []bool{false, saved} {
		useAVX512 = a
		for n := 0; n < 200; n++ {
			for _, specials := range []bool{false, true} {
				src := randomValues(r, n+3, specials)[3:] // unaligned start
				var got [2][]uint16
				k := 0
				both(t, func() {
					got[k] = make([]uint16, n)
					EncodeBF16(got[k], src, scalarBF16)
					k++
				})
				for i, x := range src {
					want := scalarBF16(x)
					for m := range got {
						if got[m][i] != want {
							t.Fatalf("n=%d asm=%v avx512=%v: %g (%#x) → %#04x, want %#04x", n, m == 1, a, x, math.Float64bits(x), got[m][i], want)
						}
					}
				}
			}
		}
	}
}

func TestDecodeDeltaMix(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for n := 0; n < 80; n++ {
		src := make([]uint16, n+1)
		for i := range src {
			src[i] = uint16(r.Uint32())
		}
		src = src[1:]
		base := randomValues(r, n, true)
		t0, t1 := make([]float32, n), make([]float32, n)
		for i := range t0 {
			t0[i], t1[i] = float32(base[(i+1)%n]), float32(r.NormFloat64())
		}
		c0, c1 := 0.37, -1.25
		var dec [2][]float64
		var del [2][]float32
		var mix [2][]float64
		k := 0
		both(t, func() {
			dec[k], del[k], mix[k] = make([]float64, n), make([]float32, n), make([]float64, n)
			DecodeBF16(dec[k], src)
			DeltaBF16(del[k], src, base)
			Mix2(mix[k], base, t0, t1, c0, c1)
			k++
		})
		for i := 0; i < n; i++ {
			x := float64(math.Float32frombits(uint32(src[i]) << 16))
			d := float32(x - base[i])
			m := base[i] + c0*float64(t0[i]) + c1*float64(t1[i])
			for a := range dec {
				if math.Float64bits(dec[a][i]) != math.Float64bits(x) && !(math.IsNaN(x) && math.IsNaN(dec[a][i])) {
					t.Fatalf("n=%d asm=%v: decode %#04x → %g, want %g", n, a == 1, src[i], dec[a][i], x)
				}
				if math.Float32bits(del[a][i]) != math.Float32bits(d) && !(isNaN32(d) && isNaN32(del[a][i])) {
					t.Fatalf("n=%d asm=%v: delta %g − %g → %g, want %g", n, a == 1, x, base[i], del[a][i], d)
				}
				if math.Float64bits(mix[a][i]) != math.Float64bits(m) && !(math.IsNaN(m) && math.IsNaN(mix[a][i])) {
					t.Fatalf("n=%d asm=%v: mix → %g, want %g", n, a == 1, mix[a][i], m)
				}
			}
		}
	}
}

func isNaN32(f float32) bool { return f != f }

func TestAsmChosen(t *testing.T) {
	t.Logf("assembly loops in use: %v", useAsm)
}

func BenchmarkEncodeBF16(b *testing.B) {
	src := randomValues(rand.New(rand.NewPCG(5, 6)), 1<<16, false)
	dst := make([]uint16, len(src))
	for _, a := range []bool{false, true} {
		name := "go"
		if a {
			name = "asm"
		}
		b.Run(name, func(b *testing.B) {
			saved := useAsm
			useAsm = a && saved
			defer func() { useAsm = saved }()
			for b.Loop() {
				EncodeBF16(dst, src, scalarBF16)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(src)), "ns/entry")
		})
	}
}

// TestConsensus2 holds the assembly to the Go loop, bit for bit, on
// every length (tails included) with zeros, ±0, Inf, NaN and subnormals
// in the task vectors and signed, zero and −0 weights. (The Go loop is
// held to the branchy definition by merge's tests.)
func TestConsensus2(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-45, -1e-45}
	draw := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			switch r.IntN(6) {
			case 0:
				v[i] = special[r.IntN(len(special))]
			case 1, 2:
				v[i] = 0
			default:
				v[i] = float32(r.NormFloat64())
			}
		}
		return v
	}
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	ws := [][2]float64{{0.5, 0.5}, {1, -1}, {0, 2}, {math.Copysign(0, -1), 1}, {-0.3, 0.7},
		{1, 1}, {2, -1}, {0.25, 0.75}, {0.5, -0.5}, {1e-310, 1}, {0x1p-1022, 0x1p-1022}, {0x1p1022, 0}, {0x1p1023, 0}}
	for _, a := range []bool{false, saved} {
		useAVX512 = a
		for _, w := range ws {
			for _, norm := range []bool{true, false} {
				for _, n := range []int{0, 1, 3, 4, 7, 8, 9, 15, 16, 17, 31, 33, 39, 100, 1001} {
					t0, t1, base := draw(n), draw(n), randomValues(r, n, false)
					cancel(r, t0, t1, w[0], w[1])
					var got [2][]float64
					k := 0
					both(t, func() {
						got[k] = make([]float64, n)
						Consensus2(got[k], base, t0, t1, w[0], w[1], 0.7, norm)
						k++
					})
					for i := range got[0] {
						if math.Float64bits(got[0][i]) != math.Float64bits(got[1][i]) {
							t.Fatalf("avx512=%v w=%v normalize=%v n=%d entry %d: Go %v, asm %v", a, w, norm, n, i, got[0][i], got[1][i])
						}
					}
				}
			}
		}
	}
}

func TestDivisorsPow2(t *testing.T) {
	for _, c := range []struct {
		w0, w1 float64
		want   bool
	}{{0.5, 0.5, true}, {1, 1, true}, {2, -1, true}, {0.5, -0.5, true}, {0, 0, true}, {math.Copysign(0, -1), 4, true},
		{0.3, 0.7, false}, {0.25, 0.75, false}, {1, 2, false}, {0x1p1022, 0, true}, {0x1p1023, 0, false}, {0x1p-1022, 0, true},
		{0x1p-1023, 0, false}, {math.Inf(1), 0, false}, {math.NaN(), 0, false}} {
		if got := divisorsPow2(c.w0, c.w1); got != c.want {
			t.Errorf("divisorsPow2(%v, %v) = %v, want %v", c.w0, c.w1, got, c.want)
		}
	}
}

// cancel makes every fourth pair of entries cancel exactly in
// w0·t0 + w1·t1 when the weights allow it (w1 = ±w0): the tie that
// elects the positive sign.
func cancel(r *rand.Rand, t0, t1 []float32, w0, w1 float64) {
	for i := range t0 {
		if r.IntN(4) != 0 {
			continue
		}
		switch {
		case w1 == w0:
			t1[i] = -t0[i]
		case w1 == -w0:
			t1[i] = t0[i]
		}
	}
}

// TestKeepBand holds KeepBand to its definition entry by entry — what it
// did is zeroed outside (low, top) and kept inside, it stopped only before
// a group of eight holding a bound, what it did not do is untouched — on
// every length up to 80 from unaligned starts, with keys equal to the
// bounds sprinkled in, NaN, Inf and signed zeros, and the bounds at 0,
// 0x7fffffff and EmptyCut's 0xffffffff.
func TestKeepBand(t *testing.T) {
	if !useAsm {
		t.Skip("no AVX2: KeepBand does nothing and the caller's loop is the only one")
	}
	r := rand.New(rand.NewPCG(9, 10))
	bounds := [][2]uint32{{magKey(0.01), magKey(0.03)}, {0, magKey(0.02)}, {magKey(0.02), 0xffffffff}, {0xffffffff, 0xffffffff}, {0, 0x7fffffff}, {magKey(0.03), magKey(0.01)}}
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	for k, b := range append(bounds, bounds...) {
		useAVX512 = saved && k >= len(bounds)
		low, top := b[0], b[1]
		for n := 0; n < 80; n++ {
			for _, ties := range []bool{false, true} {
				x := make([]float32, n+1)[1:]
				for i := range x {
					switch r.IntN(12) {
					case 0:
						x[i] = float32(math.NaN())
					case 1:
						x[i] = float32(math.Inf(1 - 2*r.IntN(2)))
					case 2:
						x[i] = float32(math.Copysign(0, -1))
					case 3:
						if ties && n > 40 && low != 0xffffffff {
							x[i] = math.Float32frombits(low | uint32(r.IntN(2))<<31)
							continue
						}
						fallthrough
					default:
						x[i] = float32(r.NormFloat64() * 0.02)
					}
				}
				orig := append([]float32(nil), x...)
				done, kept := KeepBand(x, low, top)
				if done%8 != 0 || done > n || (done < n-n%8 && !hasBound(orig[done:done+8], low, top)) {
					t.Fatalf("bounds %#x,%#x n=%d: stopped at %d", low, top, n, done)
				}
				if n >= 8 && done == 0 && !hasBound(orig[:8], low, top) {
					t.Fatalf("bounds %#x,%#x n=%d: did nothing", low, top, n)
				}
				want := 0
				for i, v := range orig {
					k := magKey(v)
					if i >= done {
						if math.Float32bits(x[i]) != math.Float32bits(v) {
							t.Fatalf("bounds %#x,%#x n=%d: entry %d past done changed", low, top, n, i)
						}
						continue
					}
					if k == low || k == top {
						t.Fatalf("bounds %#x,%#x n=%d: entry %d on a bound was done", low, top, n, i)
					}
					w := v
					if !(k > low && k < top) {
						w = 0
					} else {
						want++
					}
					if math.Float32bits(x[i]) != math.Float32bits(w) {
						t.Fatalf("bounds %#x,%#x n=%d: entry %d (%g) = %g, want %g", low, top, n, i, v, x[i], w)
					}
				}
				if kept != want {
					t.Fatalf("bounds %#x,%#x n=%d: kept %d, want %d", low, top, n, kept, want)
				}
			}
		}
	}
}

// magKey is the bits of |v|, the key KeepBand compares.
func magKey(v float32) uint32 { return math.Float32bits(v) &^ (1 << 31) }

func hasBound(x []float32, low, top uint32) bool {
	for _, v := range x {
		if k := magKey(v); k == low || k == top {
			return true
		}
	}
	return false
}

// TestScaleKeep holds ScaleKeep, assembly and Go, to
// float32(float64(x)·s) masked by keep, bit for bit (NaN payloads too), on
// every length up to 80 from unaligned starts: subnormals, NaN, Inf, ±0,
// products that overflow or underflow float32 and round at ties.
func TestScaleKeep(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	specials := []float32{0, float32(math.Copysign(0, -1)), math.Float32frombits(1), math.Float32frombits(0x807fffff), float32(math.Inf(1)), float32(math.Inf(-1)), math.Float32frombits(0x7fc00001), math.Float32frombits(0xff800001), math.MaxFloat32, 1e-38, 1 + 0x1p-23}
	for _, s := range []float64{1 / 0.3, 2, 0.5, 1e30, 1e-30, -1.7, 1 + 0x1p-30} {
		for n := 0; n < 80; n++ {
			x := make([]float32, n+1)[1:]
			keep := make([]bool, n+3)[3:]
			for i := range x {
				if r.IntN(4) == 0 {
					x[i] = specials[r.IntN(len(specials))]
				} else {
					x[i] = float32(r.NormFloat64() * 0.02)
				}
				keep[i] = r.IntN(3) > 0
			}
			var got [2][]float32
			var kept [2]int
			m := 0
			both(t, func() {
				got[m] = append([]float32(nil), x...)
				kept[m] = ScaleKeep(got[m], keep, s)
				m++
			})
			want := 0
			for i, v := range x {
				w := float32(0)
				if keep[i] {
					w = float32(float64(v) * s)
					want++
				}
				for a := range got {
					if math.Float32bits(got[a][i]) != math.Float32bits(w) {
						t.Fatalf("s=%g n=%d asm=%v: entry %d %g (%#x) → %#x, want %#x", s, n, a == 1, i, v, math.Float32bits(v), math.Float32bits(got[a][i]), math.Float32bits(w))
					}
				}
			}
			if kept[0] != want || kept[1] != want {
				t.Fatalf("s=%g n=%d: kept %v, want %d", s, n, kept, want)
			}
		}
	}
}

// TestSplitBands holds SplitBands, with and without the assembly, to its
// definition on every length up to 80 and a long slice: keys on the
// bounds, NaN, ±Inf and ±0, empty, overlapping, single-key and unbounded
// bands.
func TestSplitBands(t *testing.T) {
	r := rand.New(rand.NewPCG(11, 12))
	none := uint32(0xffffffff)
	bands := [][2][2]uint32{
		{{magKey(0.01), magKey(0.03)}, {none, none}},
		{{none, none}, {magKey(0.02), magKey(0.04)}},
		{{magKey(0.005), magKey(0.01)}, {magKey(0.02), magKey(0.03)}},
		{{magKey(0.01), magKey(0.03)}, {magKey(0.02), magKey(0.04)}},
		{{0, magKey(0.001)}, {magKey(0.05), 0x7fffffff}},
		{{magKey(0.02), magKey(0.02)}, {0, 0}},
		{{none, none}, {none, none}},
	}
	asm := keepAsm(t)
	lengths := testLengths(100003)
	for _, b := range bands {
		lo, hi := [2]uint32{b[0][0], b[1][0]}, [2]uint32{b[0][1], b[1][1]}
		bound := []uint32{lo[0], hi[0], lo[1], hi[1]}
		for _, n := range lengths {
			x := make([]float32, n+1)[1:]
			for i := range x {
				switch r.IntN(12) {
				case 0:
					x[i] = float32(math.NaN())
				case 1:
					x[i] = float32(math.Inf(1 - 2*r.IntN(2)))
				case 2:
					x[i] = float32(math.Copysign(0, -1))
				case 3:
					if k := bound[r.IntN(4)]; k <= 0x7fffffff {
						x[i] = math.Float32frombits(k | uint32(r.IntN(2))<<31)
						continue
					}
					fallthrough
				default:
					x[i] = float32(r.NormFloat64() * 0.02)
				}
			}
			var wantAbove [2]int64
			var wantIdx []uint32
			for i, v := range x {
				k, in := magKey(v), false
				for j := range lo {
					if k > hi[j] {
						wantAbove[j]++
					}
					if k >= lo[j] && k <= hi[j] {
						in = true
					}
				}
				if in {
					wantIdx = append(wantIdx, uint32(i))
				}
			}
			saved512 := useAVX512
			for _, mode := range [][2]bool{{false, false}, {asm, false}, {asm, saved512}} {
				useAsm, useAVX512 = mode[0], mode[1]
				idx := make([]uint32, n)
				above, m := SplitBands(x, lo, hi, idx)
				if above != wantAbove || !slices.Equal(idx[:m], wantIdx) {
					t.Fatalf("asm %v bands %#x–%#x n=%d: above %v, %d in bands; want %v, %d (first differing position %d)", mode, lo, hi, n, above, m, wantAbove, len(wantIdx), firstDiff(idx[:m], wantIdx))
				}
			}
			useAVX512 = saved512
		}
	}
}

func firstDiff(a, b []uint32) int {
	for i := range min(len(a), len(b)) {
		if a[i] != b[i] {
			return i
		}
	}
	return min(len(a), len(b))
}

// TestCountBelow holds CountBelow, with and without the assembly, to a
// plain count on every length up to 80 and a long slice, for bounds at
// and around keys, 0, 2^31 and the largest uint32.
func TestCountBelow(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	asm := keepAsm(t)
	lengths := testLengths(4099)
	for _, n := range lengths {
		keys := make([]uint32, n+1)[1:]
		for i := range keys {
			switch r.IntN(6) {
			case 0:
				keys[i] = uint32(r.IntN(3)) // 0, 1, 2
			case 1:
				keys[i] = 0x7fffffff - uint32(r.IntN(2))
			default:
				keys[i] = magKey(float32(r.NormFloat64()))
			}
		}
		bounds := []uint32{0, 1, 2, 0x7fffffff, 0x80000000, 0xffffffff, magKey(0.5)}
		if n > 0 {
			k := keys[r.IntN(n)]
			bounds = append(bounds, k, k+1)
		}
		for _, k := range bounds {
			want := 0
			for _, x := range keys {
				if x < k {
					want++
				}
			}
			for _, a := range []bool{false, asm} {
				useAsm = a
				if got := CountBelow(keys, k); got != want {
					t.Fatalf("asm %v n=%d k=%#x: %d below, want %d", a, n, k, got, want)
				}
			}
		}
	}
}

// TestMagKeys holds MagKeys, with and without the assembly, to the keys
// and largest key of their definition on every length up to 80 and a
// long slice, NaN payloads, ±Inf and ±0 included.
func TestMagKeys(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	asm := keepAsm(t)
	lengths := testLengths(1003)
	for _, n := range lengths {
		src := make([]float32, n+1)[1:]
		for i := range src {
			switch r.IntN(8) {
			case 0:
				src[i] = math.Float32frombits(0xffc00000 | uint32(r.IntN(1<<22))) // negative NaN
			case 1:
				src[i] = float32(math.Inf(1 - 2*r.IntN(2)))
			case 2:
				src[i] = float32(math.Copysign(0, -1))
			default:
				src[i] = float32(r.NormFloat64())
			}
		}
		want, wantTop := make([]uint32, n), uint32(0)
		for i, v := range src {
			want[i] = magKey(v)
			wantTop = max(wantTop, want[i])
		}
		for _, a := range []bool{false, asm} {
			useAsm = a
			dst := make([]uint32, n)
			if top := MagKeys(dst, src); top != wantTop || !slices.Equal(dst, want) {
				t.Fatalf("asm %v n=%d: top %#x (want %#x), keys equal %v", a, n, top, wantTop, slices.Equal(dst, want))
			}
		}
	}
}

// keepAsm returns the assembly choice and restores it when the test ends,
// for tests that run both ways.
func keepAsm(t *testing.T) bool {
	asm := useAsm
	t.Cleanup(func() { useAsm = asm })
	return asm
}

// testLengths is a long length and every length up to 80: each remainder
// the assembly's groups leave, on either side of a group.
func testLengths(long int) []int {
	lengths := []int{long}
	for n := 0; n <= 80; n++ {
		lengths = append(lengths, n)
	}
	return lengths
}

// BandKeep against the definition written out here, with and without the
// AVX-512 loop, on every length around its groups of sixteen: buckets
// below base, at the top, bounds with lo = hi and lo < hi, thresholds 0
// and 2^53, draws on the bounds and draws whose high bits must be
// ignored. Every decision it takes must also be right for the exact
// 53-bit bounds.
func TestBandKeep(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 9))
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	t.Logf("AVX-512 in use: %v", saved)
	const unit = 1 << 22
	for _, n := range []int{0, 1, 15, 16, 17, 31, 32, 33, 100, 1000, 4099} {
		for _, base := range []uint32{0, 5, 0x3f00} {
			nb := 64
			exact := make([][2]uint64, nb)
			bounds := make([]uint64, nb)
			for b := range exact {
				lo := r.Uint64N(1<<53 + 1)
				hi := lo + r.Uint64N(1<<53-lo+1)
				switch b % 5 {
				case 0:
					hi = lo
				case 1:
					lo, hi = 0, 0
				case 2:
					hi = 1 << 53
				}
				exact[b] = [2]uint64{lo, hi}
				bounds[b] = BandBounds(lo, hi)
			}
			keys := make([]uint32, n)
			draws := make([]uint64, n)
			for i := range keys {
				keys[i] = (base+uint32(r.IntN(nb)))<<16 | uint32(r.IntN(1<<16))
				if i%7 == 0 && base > 0 {
					keys[i] = uint32(r.IntN(int(base) << 16)) // below base: bucket 0
				}
				draws[i] = r.Uint64()
				if i%11 == 0 {
					draws[i] = draws[i]&^(1<<53-1) | min(exact[max(keys[i]>>16, base)-base][i%2], 1<<53-1)
				}
			}
			var wantKeep []bool
			var wantUndec []int32
			for i, k := range keys {
				b := uint32(0)
				if k>>16 > base {
					b = k>>16 - base
				}
				u := draws[i] % (1 << 53)
				lo, hi := exact[b][0], exact[b][1]
				loF, hiC := lo/unit, (hi+unit-1)/unit
				keep := u/unit < loF
				undec := loF <= u/unit && u/unit < hiC
				if keep && u >= lo || !keep && !undec && u < hi {
					t.Fatalf("bucket (%#x, %#x), draw %#x: decided wrongly", lo, hi, u)
				}
				wantKeep = append(wantKeep, keep)
				if undec {
					wantUndec = append(wantUndec, int32(i))
				}
			}
			for _, a := range []bool{false, saved} {
				useAVX512 = a
				keep := make([]bool, n)
				undec := make([]int32, n)
				m := BandKeep(keys, draws, bounds, base, keep, undec)
				if !slices.Equal(keep, wantKeep) || !slices.Equal(undec[:m], wantUndec) {
					t.Fatalf("avx512=%v n %d base %#x: keep or undecided differ (%d undecided, want %d)", a, n, base, m, len(wantUndec))
				}
			}
		}
	}
}

func BenchmarkBandKeep(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	n := 4096
	bounds := make([]uint64, 2048)
	for i := range bounds {
		lo := uint64(i) << 42
		bounds[i] = BandBounds(lo, lo+1<<30)
	}
	keys, draws := make([]uint32, n), make([]uint64, n)
	for i := range keys {
		keys[i] = uint32(r.IntN(2048)) << 16
		draws[i] = r.Uint64()
	}
	keep, undec := make([]bool, n), make([]int32, n)
	for _, a := range []bool{false, useAVX512} {
		saved := useAVX512
		useAVX512 = a
		b.Run(fmt.Sprint("avx512=", a), func(b *testing.B) {
			for b.Loop() {
				BandKeep(keys, draws, bounds, 0, keep, undec)
			}
		})
		useAVX512 = saved
	}
}

// BucketCounts and BucketBounds against their definitions, with and
// without AVX-512, on every length around sixteen: keys all in one bucket
// (every lane conflicting), a few buckets, keys below base; empty buckets
// and ones holding every rank.
func TestBucketCountsAndBounds(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 3))
	s1, s2 := useAVX512, useConflict
	defer func() { useAVX512, useConflict = s1, s2 }()
	for _, n := range []int{1, 15, 16, 17, 33, 100, 4099} {
		for _, spread := range []int{1, 3, 40, 2048} {
			for _, base := range []uint32{0, 7} {
				nb := spread
				keys := make([]uint32, n)
				want := make([]int32, nb+1)
				for i := range keys {
					keys[i] = (base+uint32(r.IntN(spread)))<<16 | uint32(r.IntN(1<<16))
					if i%5 == 0 && base > 0 {
						keys[i] = uint32(r.IntN(int(base) << 16))
					}
					b := int64(keys[i]>>16) - int64(base)
					want[max(b, 0)+1]++
				}
				thr := make([]uint64, n)
				for i := range thr {
					thr[i] = r.Uint64N(1<<53 + 1)
				}
				slices.Sort(thr)
				wantPos := slices.Clone(want)
				for b := 1; b <= nb; b++ {
					wantPos[b] += wantPos[b-1]
				}
				wantBounds := make([]uint64, nb)
				for b := range wantBounds {
					lo, hi := wantPos[b], wantPos[b+1]-1
					lo, hi = min(lo, int32(n-1)), max(hi, 0)
					wantBounds[b] = BandBounds(thr[lo], thr[hi])
				}
				for _, a := range []bool{false, s1 && s2} {
					useAVX512, useConflict = a, a
					pos := make([]int32, nb+1)
					BucketCounts(keys, base, pos[1:])
					if !slices.Equal(pos, want) {
						t.Fatalf("asm=%v n %d spread %d base %d: counts %v, want %v", a, n, spread, base, pos[:min(len(pos), 8)], want[:min(len(want), 8)])
					}
					bounds := make([]uint64, nb)
					BucketBounds(pos, thr, bounds)
					if !slices.Equal(pos, wantPos) || !slices.Equal(bounds, wantBounds) {
						t.Fatalf("asm=%v n %d spread %d base %d: rank ranges or bounds differ", a, n, spread, base)
					}
				}
			}
		}
	}
}

func BenchmarkBucketCounts(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	keys := make([]uint32, 4096)
	for i := range keys {
		keys[i] = uint32(min(2047, int(math.Abs(r.NormFloat64())*600))) << 16
	}
	counts := make([]int32, 2048)
	for _, a := range []bool{false, useConflict} {
		saved := useConflict
		useConflict = a
		b.Run(fmt.Sprint("avx512=", a), func(b *testing.B) {
			for b.Loop() {
				BucketCounts(keys, 0, counts)
			}
		})
		useConflict = saved
	}
}

func BenchmarkBucketBounds(b *testing.B) {
	thr := make([]uint64, 4096)
	for i := range thr {
		thr[i] = uint64(i) << 40
	}
	counts := make([]int32, 2049)
	for i := range counts[1:] {
		counts[1+i] = int32(i % 3)
	}
	pos := make([]int32, 2049)
	bounds := make([]uint64, 2048)
	for _, a := range []bool{false, useAVX512} {
		saved := useAVX512
		useAVX512 = a
		b.Run(fmt.Sprint("avx512=", a), func(b *testing.B) {
			for b.Loop() {
				copy(pos, counts)
				BucketBounds(pos, thr, bounds)
			}
		})
		useAVX512 = saved
	}
}

// A bucket past the table counts as its last, in the assembly as in Go:
// a wrong caller gets wrong answers, never a read or write outside.
func TestBucketsPastTheTableClamp(t *testing.T) {
	s1, s2 := useAVX512, useConflict
	defer func() { useAVX512, useConflict = s1, s2 }()
	keys := make([]uint32, 40)
	for i := range keys {
		keys[i] = uint32(i) << 16 // buckets 0..39 into a table of 4
	}
	for _, a := range []bool{false, s1 && s2} {
		useAVX512, useConflict = a, a
		counts := make([]int32, 4)
		BucketCounts(keys, 0, counts)
		if !slices.Equal(counts, []int32{1, 1, 1, 37}) {
			t.Fatalf("asm=%v: counts %v", a, counts)
		}
		bounds := []uint64{BandBounds(1<<53, 1<<53), BandBounds(1<<53, 1<<53), BandBounds(1<<53, 1<<53), BandBounds(0, 0)}
		keep, undec := make([]bool, 40), make([]int32, 40)
		draws := make([]uint64, 40)
		if n := BandKeep(keys, draws, bounds, 0, keep, undec); n != 0 || !keep[2] || keep[3] || keep[39] {
			t.Fatalf("asm=%v: %d undecided, keep %v", a, n, keep[:5])
		}
	}
}

// PackBools and UnpackBools against the bits set one at a time: whole
// words only, as many as both sides hold, bits already set kept.
func TestPackUnpackBools(t *testing.T) {
	if !useBW {
		t.Skip("no AVX-512 BW: the callers' loops do every word")
	}
	r := rand.New(rand.NewPCG(2, 5))
	for _, n := range []int{64, 65, 127, 128, 1000} {
		for _, words := range []int{1, n / 64, n/64 + 1} {
			keep := make([]bool, n)
			for i := range keep {
				keep[i] = r.IntN(2) == 0
			}
			bits := make([]uint64, words)
			bits[0] = 1 << 40
			want := slices.Clone(bits)
			wantW := min(words, n/64)
			for i := range 64 * wantW {
				if keep[i] {
					want[i/64] |= 1 << (i % 64)
				}
			}
			if w := PackBools(bits, keep); w != wantW || !slices.Equal(bits, want) {
				t.Fatalf("n %d words %d: packed %d words, %x; want %d, %x", n, words, w, bits, wantW, want)
			}
			back := make([]bool, n)
			if w := UnpackBools(back, want); w != wantW {
				t.Fatalf("n %d words %d: unpacked %d words, want %d", n, words, w, wantW)
			}
			for i := range 64 * wantW {
				if back[i] != (want[i/64]>>(i%64)&1 == 1) {
					t.Fatalf("n %d words %d: bool %d unpacked wrong", n, words, i)
				}
			}
			for _, b := range back[64*wantW:] {
				if b {
					t.Fatalf("n %d words %d: a bool past the words was set", n, words)
				}
			}
		}
	}
}

// TestDeltaPairBF16 checks the float32 difference of two bfloat16 inputs
// against DeltaBF16's float64 one, bit for bit, NaN payloads included:
// random bit patterns (every exponent, subnormals, Inf, NaN) and pairs of
// near values, at lengths that leave tails, on each instruction set.
func TestDeltaPairBF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	special := []uint16{0, 0x8000, 0x7f80, 0xff80, 0x7fc0, 0xffc1, 0x7f81, 0x0001, 0x8001, 0x007f, 0x7f7f, 0xff7f, 0x3f80, 0xbf80}
	saved, savedAsm := useAVX512, useAsm
	defer func() { useAVX512, useAsm = saved, savedAsm }()
	for _, mode := range []struct{ asm, avx512 bool }{{false, false}, {savedAsm, false}, {savedAsm, saved}} {
		useAsm, useAVX512 = mode.asm, mode.avx512
		for _, n := range []int{0, 1, 15, 16, 17, 40, 1000, 4099} {
			src, base := make([]uint16, n), make([]uint16, n)
			for i := range src {
				switch rng.IntN(4) {
				case 0:
					src[i], base[i] = uint16(rng.Uint32()), uint16(rng.Uint32())
				case 1:
					src[i], base[i] = special[rng.IntN(len(special))], special[rng.IntN(len(special))]
				default: // a fine-tune: base and model a few ulps apart
					base[i] = uint16(rng.Uint32())
					src[i] = base[i] + uint16(rng.IntN(9)) - 4
				}
			}
			b64 := make([]float64, n)
			for i, b := range base {
				b64[i] = float64(math.Float32frombits(uint32(b) << 16))
			}
			want, got := make([]float32, n), make([]float32, n)
			for i := range want {
				want[i] = float32(float64(math.Float32frombits(uint32(src[i])<<16)) - b64[i])
			}
			DeltaPairBF16(got, src, base)
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("asm %v avx512 %v n %d: entry %d (%#04x − %#04x): %#08x, want %#08x", mode.asm, mode.avx512, n, i, src[i], base[i], math.Float32bits(got[i]), math.Float32bits(want[i]))
				}
			}
		}
	}
}

// l1Ref is L1Sums' definition: one entry at a time, in index order.
func l1Ref(x []float32, keep []bool, before, after float64) (float64, float64) {
	for i, v := range x {
		a := math.Abs(float64(v))
		before += a
		if keep[i] {
			after += a
		}
	}
	return before, after
}

// TestL1Sums checks the blocked sums against adding one entry at a time,
// bit for bit, on data where every block can be taken (Gaussian task
// vectors, bfloat16 differences), where none can (tiny entries after a
// large sum), and on zeros, powers of two, subnormals, huge values, Inf
// and NaN; and that the blocks are taken where they can be.
func TestL1Sums(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	gen := map[string]func(i int) float32{
		"gaussian": func(int) float32 { return float32(rng.NormFloat64() * 0.02) },
		"bf16diff": func(int) float32 {
			b := math.Float32frombits(uint32(uint16(math.Float32bits(float32(rng.NormFloat64()*0.02))>>16)) << 16)
			m := math.Float32frombits((math.Float32bits(b)>>16 + uint32(rng.IntN(5)) - 2) << 16)
			return m - b
		},
		"mixed": func(i int) float32 {
			switch rng.IntN(8) {
			case 0:
				return 0
			case 1:
				return float32(math.Ldexp(1, rng.IntN(60)-40))
			case 2:
				return math.Float32frombits(uint32(rng.IntN(1 << 23))) // subnormal
			case 3:
				return float32(rng.NormFloat64() * 1e30)
			}
			return float32(rng.NormFloat64())
		},
		"tiny": func(int) float32 { return float32(rng.NormFloat64() * 1e-30) },
		"nonfinite": func(i int) float32 {
			switch rng.IntN(200) {
			case 0:
				return float32(math.Inf(1))
			case 1:
				return float32(math.NaN())
			}
			return float32(rng.NormFloat64())
		},
	}
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	for name, g := range gen {
		for _, n := range []int{0, 5, 63, 64, 65, 640, 4097, 1 << 16} {
			x, keep := make([]float32, n), make([]bool, n)
			for i := range x {
				x[i] = g(i)
				keep[i] = rng.IntN(2) == 0
			}
			for _, start := range [][2]float64{{0, 0}, {1e6, 3e5}, {1e-3, 0}, {3, 3}} {
				wb, wa := l1Ref(x, keep, start[0], start[1])
				for _, a := range []bool{false, saved} {
					useAVX512 = a
					gb, ga := L1Sums(x, keep, start[0], start[1])
					if math.Float64bits(gb) != math.Float64bits(wb) || math.Float64bits(ga) != math.Float64bits(wa) {
						t.Fatalf("%s n %d start %v avx512 %v: sums %v %v, want %v %v", name, n, start, a, gb, ga, wb, wa)
					}
				}
			}
		}
	}
	if !saved {
		t.Skip("no AVX-512: only the scalar path was checked")
	}
	// The blocks are taken on task-vector data: the assembly gets through
	// a Gaussian chunk at once.
	x, keep := make([]float32, 1<<16), make([]bool, 1<<16)
	for i := range x {
		x[i] = gen["bf16diff"](i)
		keep[i] = i%3 == 0
	}
	if done, _, _ := l1Sums(x, keep, 0, 0); done < len(x)*9/10 {
		t.Fatalf("the assembly took %d of %d entries of bfloat16 differences", done, len(x))
	}
}

// TestLinear2BF16 holds linear's two-model average on bfloat16 bytes to
// its definition on the decoded values, bit for bit: random bit patterns
// (Inf, NaN, subnormals included), divisors that are powers of two (the
// multiplication by the reciprocal) and others, every tail length.
func TestLinear2BF16(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	for _, c := range [][3]float64{{0.5, 0.5, 1}, {1, 1, 2}, {0.3, 0.7, 1}, {0.3, 0.6, 0.8999999999999999}, {2, -3, -1}, {1, 1, 0x1p-1022}, {1, 1, 0x1p1023}, {1, 1, 3}, {1, -1, 0}} {
		for _, n := range []int{0, 1, 7, 8, 9, 16, 31, 100, 1000} {
			a, b := make([]uint16, n), make([]uint16, n)
			for i := range a {
				a[i], b[i] = uint16(rng.Uint32()), uint16(rng.Uint32())
				if rng.IntN(3) == 0 { // ordinary weights
					a[i] = uint16(math.Float32bits(float32(rng.NormFloat64()*0.02)) >> 16)
				}
			}
			want := make([]float64, n)
			for i := range want {
				x := float64(math.Float32frombits(uint32(a[i]) << 16))
				y := float64(math.Float32frombits(uint32(b[i]) << 16))
				var s float64
				s += c[0] * x
				s += c[1] * y
				want[i] = s / c[2]
			}
			for _, av := range []bool{false, saved} {
				useAVX512 = av
				got := make([]float64, n)
				Linear2BF16(got, a, b, c[0], c[1], c[2])
				for i := range got {
					if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
						t.Fatalf("avx512 %v w %v n %d: entry %d (%#04x, %#04x): %v, want %v", av, c, n, i, a[i], b[i], got[i], want[i])
					}
				}
			}
		}
	}
}

// TestBF16BaseVariants holds Mix2BF16 and Consensus2BF16 to Mix2 and
// Consensus2 (the Go loops) on the decoded base, bit for bit: random
// bfloat16 bases with Inf, NaN and subnormals, task vectors with zeros and
// specials, pow2 and other weights, every tail, each instruction set.
func TestBF16BaseVariants(t *testing.T) {
	r := rand.New(rand.NewPCG(15, 16))
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.NaN()), 1e-45}
	draw := func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			switch r.IntN(5) {
			case 0:
				v[i] = special[r.IntN(len(special))]
			case 1:
				v[i] = 0
			default:
				v[i] = float32(r.NormFloat64())
			}
		}
		return v
	}
	savedAsm, saved512 := useAsm, useAVX512
	defer func() { useAsm, useAVX512 = savedAsm, saved512 }()
	for _, w := range [][2]float64{{0.5, 0.5}, {1, 1}, {0.3, 0.7}, {-1, 2}} {
		for _, n := range []int{0, 1, 7, 8, 9, 17, 100, 513, 1200} {
			braw := make([]uint16, n)
			for i := range braw {
				braw[i] = uint16(r.Uint32())
			}
			bdec := make([]float64, n)
			for i, b := range braw {
				bdec[i] = float64(math.Float32frombits(uint32(b) << 16))
			}
			t0, t1 := draw(n), draw(n)
			for _, norm := range []bool{false, true} {
				useAsm = false
				wantC, wantM := make([]float64, n), make([]float64, n)
				Consensus2(wantC, bdec, t0, t1, w[0], w[1], 0.9, norm)
				Mix2(wantM, bdec, t0, t1, w[0], w[1])
				for _, mode := range [][2]bool{{false, false}, {savedAsm, false}, {savedAsm, saved512}} {
					useAsm, useAVX512 = mode[0], mode[1]
					gotC, gotM := make([]float64, n), make([]float64, n)
					Consensus2BF16(gotC, braw, t0, t1, w[0], w[1], 0.9, norm)
					Mix2BF16(gotM, braw, t0, t1, w[0], w[1])
					for i := range gotC {
						if math.Float64bits(gotC[i]) != math.Float64bits(wantC[i]) {
							t.Fatalf("consensus, mode %v w %v n %d norm %v: entry %d: %v, want %v", mode, w, n, norm, i, gotC[i], wantC[i])
						}
						if math.Float64bits(gotM[i]) != math.Float64bits(wantM[i]) {
							t.Fatalf("mix, mode %v w %v n %d: entry %d: %v, want %v", mode, w, n, i, gotM[i], wantM[i])
						}
					}
				}
			}
		}
	}
}

// TestBucketBoundsAffine holds the assembly to the Go loop, bit for bit,
// and both to the gathered bounds of MAGPRUNE's threshold table: never
// tighter, so BandKeep never decides what the table would leave open.
func TestBucketBoundsAffine(t *testing.T) {
	r := rand.New(rand.NewPCG(17, 18))
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	for _, c := range [][2]float64{{0.7, 0.15}, {0.5, 0.5}, {0.1, 0.3}, {0.95, 0.1}, {0.3, 0}} {
		for _, rl := range []int{1024, 4096, 11008} {
			d, eps := c[0], c[1]
			thr := make([]uint64, rl)
			for i := range thr {
				p := (d - eps) + 2*eps*(float64(i)/float64(rl-1))
				switch {
				case !(p > 0):
				case p >= 1:
					thr[i] = 1 << 53
				default:
					thr[i] = uint64(math.Ceil(p * (1 << 53)))
				}
			}
			a, b := (d-eps)*(1<<53), 2*eps/float64(rl-1)*(1<<53)
			for _, nb := range []int{16, 33, 2048} {
				counts := make([]int32, nb+1)
				for i := 0; i < rl; i++ {
					counts[1+r.IntN(nb)]++
				}
				want, wantPos := make([]uint64, nb), slices.Clone(counts)
				useAVX512 = false
				BucketBounds(wantPos, thr, want)
				var got [2][]uint64
				var gotPos [2][]int32
				for k, av := range []bool{false, saved} {
					useAVX512 = av
					gotPos[k], got[k] = slices.Clone(counts), make([]uint64, nb)
					BucketBoundsAffine(gotPos[k], int32(rl-1), a, b, 1<<12, got[k])
				}
				if !slices.Equal(got[0], got[1]) || !slices.Equal(gotPos[0], gotPos[1]) || !slices.Equal(gotPos[0], wantPos) {
					t.Fatalf("d %v eps %v rl %d nb %d: the assembly and the Go loop differ", d, eps, rl, nb)
				}
				for k := range want {
					if got[0][k]&0xffffffff > want[k]&0xffffffff || got[0][k]>>32 < want[k]>>32 {
						t.Fatalf("d %v eps %v rl %d nb %d: bucket %d: bounds %#x tighter than the table's %#x", d, eps, rl, nb, k, got[0][k], want[k])
					}
				}
			}
		}
	}
}

// BenchmarkEncodeBF16Wide times the encoder on model-like values (no
// special groups) with and without AVX-512.
func BenchmarkEncodeBF16Wide(b *testing.B) {
	r := rand.New(rand.NewPCG(5, 6))
	src := make([]float64, 1<<16)
	for i := range src {
		src[i] = r.NormFloat64() * 0.02
	}
	dst := make([]uint16, len(src))
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	for _, a := range []bool{false, saved} {
		useAVX512 = a
		b.Run(fmt.Sprint("avx512=", a), func(b *testing.B) {
			for b.Loop() {
				EncodeBF16(dst, src, scalarBF16)
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(src)), "ns/entry")
		})
	}
}

// TestSlerpBF16 holds Scale2BF16 and Dot3BF16 to the same loops on the
// decoded values, bit for bit (Inf, NaN and subnormal bit patterns
// included), on each instruction set.
func TestSlerpBF16(t *testing.T) {
	r := rand.New(rand.NewPCG(19, 20))
	saved := useAVX512
	defer func() { useAVX512 = saved }()
	for _, n := range []int{0, 1, 7, 8, 9, 100, 1001} {
		a, b := make([]uint16, n), make([]uint16, n)
		x, y := make([]float64, n), make([]float64, n)
		for i := range a {
			a[i], b[i] = uint16(r.Uint32()), uint16(r.Uint32())
			x[i], y[i] = float64(math.Float32frombits(uint32(a[i])<<16)), float64(math.Float32frombits(uint32(b[i])<<16))
		}
		want := make([]float64, n)
		var aa, bb, ab float64 = 1, 2, 3
		for i := range want {
			want[i] = 0.3*x[i] + 0.8*y[i]
			aa += x[i] * x[i]
			bb += y[i] * y[i]
			ab += x[i] * y[i]
		}
		for _, av := range []bool{false, saved} {
			useAVX512 = av
			got := make([]float64, n)
			Scale2BF16(got, a, b, 0.3, 0.8)
			for i := range got {
				if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
					t.Fatalf("avx512 %v n %d: entry %d: %v, want %v", av, n, i, got[i], want[i])
				}
			}
		}
		ga, gb, gc := Dot3BF16(a, b, 1, 2, 3)
		for k, p := range [][2]float64{{ga, aa}, {gb, bb}, {gc, ab}} {
			if math.Float64bits(p[0]) != math.Float64bits(p[1]) {
				t.Fatalf("n %d: sum %d is %v, want %v", n, k, p[0], p[1])
			}
		}
	}
}
