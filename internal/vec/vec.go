// Package vec holds the inner loops of a merge's hot path over bfloat16
// tensors — decoding to float64, task-vector deltas, weighted sums,
// rounding back to bfloat16, a magnitude cut's band mask and a random
// mask's rescale — in AVX2 assembly on amd64 CPUs that have it (chosen
// at run time) and in Go elsewhere. The assembly performs the same IEEE
// operations as the Go loops, element by element in the same order (no
// fused multiply-add), so both give the same bits; the tests hold them
// to that on special values, rounding ties and every length.
package vec

import (
	"math"
	"unsafe"
)

// useAsm chooses the assembly loops (set on amd64 with AVX2; tests turn
// it off to compare).
var useAsm bool

// useAVX512 chooses the AVX-512 loops (F, DQ, and BMI2's PDEP; tests turn
// it off).
var useAVX512 bool

// useConflict chooses the AVX-512 histogram (also CD's VPCONFLICTD and
// VPOPCNTDQ).
var useConflict bool

// useBW chooses the AVX-512 byte-mask loops (also BW).
var useBW bool

// DecodeBF16 sets dst[i] to the bfloat16 src[i] as a float64, for
// i < min(len(dst), len(src)).
func DecodeBF16(dst []float64, src []uint16) {
	n := min(len(dst), len(src))
	i := 0
	if useAsm && n >= 8 {
		i = decodeBF16Asm(dst[:n], src[:n])
	}
	for ; i < n; i++ {
		dst[i] = float64(math.Float32frombits(uint32(src[i]) << 16))
	}
}

// DeltaBF16 sets dst[i] = float32(x_i − base[i]) for the bfloat16 values
// x_i of src, i < len(dst) (src and base at least as long).
func DeltaBF16(dst []float32, src []uint16, base []float64) {
	n := len(dst)
	src, base = src[:n], base[:n]
	i := 0
	if useAsm && n >= 8 {
		i = deltaBF16Asm(dst, src, base)
	}
	for ; i < n; i++ {
		dst[i] = float32(float64(math.Float32frombits(uint32(src[i])<<16)) - base[i])
	}
}

// DeltaPairBF16 sets dst[i] = x_i − b_i in float32 for the bfloat16
// values x_i of src and b_i of base, i < len(dst) (src and base at least as
// long). It is DeltaBF16 with the base still in bfloat16, bit for bit:
// float32(float64(x) − float64(b)) is x − b rounded once to float32, since
// float64 has more than 2·24 + 2 bits (a double rounding of the exact
// difference through float64 is innocuous), and NaNs propagate the same
// operand either way.
func DeltaPairBF16(dst []float32, src, base []uint16) {
	n := len(dst)
	src, base = src[:n], base[:n]
	i := 0
	if useAsm && n >= 16 {
		i = deltaPairBF16(dst, src, base)
	}
	for ; i < n; i++ {
		dst[i] = math.Float32frombits(uint32(src[i])<<16) - math.Float32frombits(uint32(base[i])<<16)
	}
}

// L1Sums adds |x_i| to before and the kept ones (keep[i]) to after, one
// at a time in index order in float64 — or what gives the same bits: the
// assembly adds blocks of 64 at once where it can prove every addition of
// the block exact (see l1SumsAsm), and this loop does the blocks it
// cannot. keep is at least as long as x.
func L1Sums(x []float32, keep []bool, before, after float64) (float64, float64) {
	keep = keep[:len(x)]
	for len(x) > 0 {
		done := 0
		if useAsm && len(x) >= 64 {
			done, before, after = l1Sums(x, keep, before, after)
		}
		x, keep = x[done:], keep[done:]
		// The next block (or the tail) one entry at a time; the dropped
		// entries add +0, the same sums without a branch on the mask.
		m := min(len(x), 64)
		for i, v := range x[:m] {
			a := math.Abs(float64(v))
			before += a
			after += math.Float64frombits(math.Float64bits(a) & -b2u(keep[i]))
		}
		x, keep = x[m:], keep[m:]
	}
	return before, after
}

// Scale2BF16 sets o[i] = s0·a_i + s1·b_i for the bfloat16 values a_i, b_i
// of a and b, i < len(o), widened to float64: slerp's mix from the bytes.
func Scale2BF16(o []float64, a, b []uint16, s0, s1 float64) {
	n := len(o)
	a, b = a[:n], b[:n]
	i := 0
	if useAsm && n >= 8 {
		i = scale2BF16(o, a, b, s0, s1)
	}
	for ; i < n; i++ {
		x := float64(math.Float32frombits(uint32(a[i]) << 16))
		y := float64(math.Float32frombits(uint32(b[i]) << 16))
		o[i] = s0*x + s1*y
	}
}

// Dot3BF16 adds a_i², b_i² and a_i·b_i to aa, bb and ab for the bfloat16
// values of a and b, one i at a time in index order, in float64: slerp's
// norms and angle from the bytes (b at least as long as a).
func Dot3BF16(a, b []uint16, aa, bb, ab float64) (float64, float64, float64) {
	b = b[:len(a)]
	for e, u := range a {
		x := float64(math.Float32frombits(uint32(u) << 16))
		y := float64(math.Float32frombits(uint32(b[e]) << 16))
		aa += x * x
		bb += y * y
		ab += x * y
	}
	return aa, bb, ab
}

// Linear2BF16 sets o[i] = ((0 + w0·a_i) + w1·b_i) / div for the bfloat16
// values a_i, b_i of a and b, i < len(o): linear's two-model average,
// widened to float64, in its order. Where div is ±2^k with a normal
// reciprocal the assembly multiplies by that instead, the same real
// number rounded the same way.
func Linear2BF16(o []float64, a, b []uint16, w0, w1, div float64) {
	n := len(o)
	a, b = a[:n], b[:n]
	i := 0
	if useAsm && n >= 8 {
		if r, ok := exactRecip(div); ok {
			i = linear2BF16(o, a, b, w0, w1, r, true)
		} else {
			i = linear2BF16(o, a, b, w0, w1, div, false)
		}
	}
	for ; i < n; i++ {
		var s float64
		s += w0 * float64(math.Float32frombits(uint32(a[i])<<16))
		s += w1 * float64(math.Float32frombits(uint32(b[i])<<16))
		o[i] = s / div
	}
}

// exactRecip returns 1/d when d is ±2^k and 1/d a normal float64 (then
// x/d = x·(1/d) exactly, for every x).
func exactRecip(d float64) (float64, bool) {
	e := math.Float64bits(d) >> 52 & 0x7ff
	if math.Float64bits(d)&(1<<52-1) != 0 || e < 1 || e > 2045 {
		return 0, false
	}
	return 1 / d, true
}

// widen is how many bfloat16 values the ...BF16 variants decode at a time
// where their assembly is missing.
const widen = 512

// widened calls f on the entries [from, len(base)) in pieces [lo, hi),
// with b the piece of base decoded: the ...BF16 variants' way past their
// assembly.
func widened(base []uint16, from int, f func(lo, hi int, b []float64)) {
	var b [widen]float64
	for lo := from; lo < len(base); lo += widen {
		hi := min(len(base), lo+widen)
		DecodeBF16(b[:hi-lo], base[lo:hi])
		f(lo, hi, b[:hi-lo])
	}
}

// Mix2BF16 is Mix2 with the base in bfloat16, bit for bit: decoding is
// exact, and the operations are Mix2's.
func Mix2BF16(o []float64, base []uint16, t0, t1 []float32, c0, c1 float64) {
	n := len(o)
	base, t0, t1 = base[:n], t0[:n], t1[:n]
	i := 0
	if useAsm && n >= 8 {
		i = mix2BF16(o, base, t0, t1, c0, c1)
	}
	widened(base, i, func(lo, hi int, b []float64) {
		Mix2(o[lo:hi], b, t0[lo:hi], t1[lo:hi], c0, c1)
	})
}

// Consensus2BF16 is Consensus2 with the base in bfloat16, bit for bit.
func Consensus2BF16(o []float64, base []uint16, t0, t1 []float32, w0, w1, lambda float64, normalize bool) {
	n := len(o)
	base, t0, t1 = base[:n], t0[:n], t1[:n]
	i := 0
	if useAsm && n >= 8 {
		i = consensus2BF16(o, base, t0, t1, w0, w1, lambda, normalize)
	}
	widened(base, i, func(lo, hi int, b []float64) {
		Consensus2(o[lo:hi], b, t0[lo:hi], t1[lo:hi], w0, w1, lambda, normalize)
	})
}

// Mix2 sets o[i] = base[i] + c0·t0[i] + c1·t1[i] (left to right, the
// task vectors widened to float64), i < len(o).
func Mix2(o, base []float64, t0, t1 []float32, c0, c1 float64) {
	n := len(o)
	base, t0, t1 = base[:n], t0[:n], t1[:n]
	i := 0
	if useAsm && n >= 4 {
		i = mix2Asm(o, base, t0, t1, c0, c1)
	}
	for ; i < n; i++ {
		o[i] = base[i] + c0*float64(t0[i]) + c1*float64(t1[i])
	}
}

// EncodeBF16 rounds each src[i] to bfloat16 into dst[i], nearest even,
// i < min(len(dst), len(src)), as scalar does: the assembly takes groups
// of eight whose values are zeros or round to bfloat16 normals and leaves
// the rest (subnormals, overflow, Inf, NaN) to scalar.
func EncodeBF16(dst []uint16, src []float64, scalar func(float64) uint16) {
	n := min(len(dst), len(src))
	i := 0
	for i < n {
		if useAsm && n-i >= 8 {
			i += encodeBF16(dst[i:n], src[i:n])
		}
		// The group the assembly stopped at, or the tail.
		for e := min(n, i+8); i < e; i++ {
			dst[i] = scalar(src[i])
		}
	}
}

// Consensus2 is TIES's disjoint merge of two task vectors (see
// merge.GTAKernel): per entry, with x_i = w_i·t_i, the sign of
// (0 + x_0) + x_1 elects a majority (+ on ties); the agreeing x_i are
// summed, divided when normalize by the sum of their weights (1 if none),
// and o = base + lambda·that. Selections are bit masks (AgreeMask), so
// adding a dropped term adds +0 and leaves every sum as adding only the
// agreeing terms would.
func Consensus2(o, base []float64, t0, t1 []float32, w0, w1, lambda float64, normalize bool) {
	n := len(o)
	base, t0, t1 = base[:n], t0[:n], t1[:n]
	i := 0
	if useAsm && n >= 4 {
		i = consensus2(o, base, t0, t1, w0, w1, lambda, normalize)
	}
	wb0, wb1 := math.Float64bits(w0), math.Float64bits(w1)
	if !normalize {
		for e := i; e < n; e++ {
			x0, x1 := w0*float64(t0[e]), w1*float64(t1[e])
			total := 0.0
			total += x0
			total += x1
			neg := -b2u(total < 0)
			mixed := 0.0
			mixed += math.Float64frombits(math.Float64bits(x0) & AgreeMask(x0, neg))
			mixed += math.Float64frombits(math.Float64bits(x1) & AgreeMask(x1, neg))
			o[e] = base[e] + lambda*mixed
		}
		return
	}
	for e := i; e < n; e++ {
		x0, x1 := w0*float64(t0[e]), w1*float64(t1[e])
		total := 0.0
		total += x0
		total += x1
		neg := -b2u(total < 0)
		m0, m1 := AgreeMask(x0, neg), AgreeMask(x1, neg)
		mixed, div := 0.0, 0.0
		mixed += math.Float64frombits(math.Float64bits(x0) & m0)
		mixed += math.Float64frombits(math.Float64bits(x1) & m1)
		div += math.Float64frombits(wb0 & m0)
		div += math.Float64frombits(wb1 & m1)
		o[e] = base[e] + lambda*(mixed/OrOne(div))
	}
}

// divisorsPow2 reports whether every divisor Consensus2 can form from
// w0 and w1 — 0 + w0, 0 + w1 and (0 + w0) + w1, 1 for those that are ±0 —
// is ±2^k with a normal reciprocal, 2^-1022 ≤ |d| ≤ 2^1022: dividing by
// it is then multiplying by its exact reciprocal, the same real number
// rounded the same way (TIES over weights 0.5 and 0.5, or 1 and 1).
func divisorsPow2(w0, w1 float64) bool {
	for _, d := range []float64{0 + w0, 0 + w1, (0 + w0) + w1} {
		if _, ok := exactRecip(d); d != 0 && !ok {
			return false
		}
	}
	return true
}

// OrOne is d, or 1 when d is ±0 (no weight agreed), without a branch.
func OrOne(d float64) float64 {
	z := -b2u(d == 0)
	return math.Float64frombits(math.Float64bits(d)&^z | 0x3ff0000000000000&z)
}

// AgreeMask is all ones when x is nonzero and not NaN with the sign neg
// marks (all ones: negative), else 0: one unsigned compare finds
// 0 < |x| ≤ +Inf, since |x|'s bits minus one wrap around for ±0 and
// exceed Inf's for NaN.
func AgreeMask(x float64, neg uint64) uint64 {
	xb := math.Float64bits(x)
	abs := xb &^ (1 << 63)
	return ^(-(xb >> 63) ^ neg) & -b2u(abs-1 < 0x7ff0000000000000)
}

// b2u is 1 for true, 0 for false (compiled without a branch).
func b2u(b bool) uint64 {
	var u uint64
	if b {
		u = 1
	}
	return u
}

// SkipClear returns a prefix length of data, a multiple of 128 bytes, in
// which no little-endian 64-bit word w has (w&exp + one) & top ≠ 0: the
// SWAR test of a float dtype's lanes for an all-ones exponent (NaN or Inf)
// when exp, one and top repeat its exponent mask, lowest exponent bit and
// top bit per lane. It may stop early (0 without AVX2); the caller scans
// the rest.
func SkipClear(data []byte, exp, one, top uint64) int {
	if !useAsm || len(data) < 128 {
		return 0
	}
	return clearRunAsm(data, exp, one, top)
}

// KeepBand zeroes the entries of x whose magnitude key k (the bits of
// |v|) lies outside the open band (low, top), k ≤ low or k ≥ top, and
// leaves the others; it goes eight entries at a time from the start and
// stops before the first eight holding a key equal to low or top (those
// need the caller's tie counting in index order), returning how many
// entries it did and how many of them it kept. It may stop early (0
// without AVX2); the caller does the rest. Keys are at most 0x7fffffff, so
// a bound of 0xffffffff is never met: as top it keeps everything above
// low, as low it keeps nothing.
func KeepBand(x []float32, low, top uint32) (done, kept int) {
	if !useAsm || len(x) < 8 {
		return 0, 0
	}
	return keepBand(x, low, top)
}

// ScaleKeep sets x[i] = float32(float64(x[i])·s) where keep[i] and +0
// where not, for i < len(x) (keep at least as long), and returns how many
// it kept: a random mask's rescale. The assembly does eight at a time with
// the same conversions and multiply.
func ScaleKeep(x []float32, keep []bool, s float64) int {
	keep = keep[:len(x)]
	i, kept := 0, 0
	if useAsm && len(x) >= 8 {
		i, kept = scaleKeepAsm(x, keep, s)
	}
	for ; i < len(x); i++ {
		m := -uint32(b2u(keep[i]))
		kept += int(b2u(keep[i]))
		x[i] = math.Float32frombits(math.Float32bits(float32(float64(x[i])*s)) & m)
	}
	return kept
}

// SplitBands places the magnitude key k (the bits of |v|) of each entry of
// x against two inclusive key bands [lo[j], hi[j]]: it returns, for each
// band, how many keys lie above it, and writes to idx, in index order, the
// positions of the entries whose key lies in either band, returning how
// many it wrote. idx must hold len(x) positions and x be shorter than
// 2^31. Keys are at most 0x7fffffff, so a band with lo = hi = 0xffffffff
// holds no key and has none above it. The assembly does eight at a time.
func SplitBands(x []float32, lo, hi [2]uint32, idx []uint32) (above [2]int64, n int) {
	idx = idx[:len(x)]
	i := 0
	if useAsm && len(x) >= 8 {
		var a0, a1 int
		i, n, a0, a1 = splitBands(x, lo[0], hi[0], lo[1], hi[1], idx)
		above = [2]int64{int64(a0), int64(a1)}
	}
	for ; i < len(x); i++ {
		k := math.Float32bits(x[i]) &^ (1 << 31)
		in := false
		for j := range lo {
			switch {
			case k > hi[j]:
				above[j]++
			case k >= lo[j]:
				in = true
			}
		}
		if in {
			idx[n] = uint32(i)
			n++
		}
	}
	return above, n
}

// KeysAsValues views magnitude keys (the bits of |v|) as the float32
// values whose bits they are, so the functions here that key values by
// magnitude (SplitBands, MagKeys) take keys as well: a key is its own
// magnitude key.
func KeysAsValues(keys []uint32) []float32 {
	if len(keys) == 0 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&keys[0])), len(keys))
}

// CountBelow returns how many of keys are below k, unsigned; the assembly
// compares eight at a time, in pieces its 32-bit counts cannot overflow.
func CountBelow(keys []uint32, k uint32) int {
	n := 0
	for len(keys) > 0 {
		p := keys[:min(len(keys), 1<<30)]
		keys = keys[len(p):]
		i := 0
		if useAsm && len(p) >= 8 {
			var c int
			i, c = countBelowAsm(p, k^1<<31)
			n += c
		}
		for _, x := range p[i:] {
			n += int(b2u(x < k))
		}
	}
	return n
}

// MagKeys sets dst[i] to the magnitude key of src[i] (the bits of |v|:
// the sign bit cleared), for i < len(dst) (src at least as long), and
// returns the largest key, 0 for none; the assembly does eight at a time.
func MagKeys(dst []uint32, src []float32) uint32 {
	src = src[:len(dst)]
	i, top := 0, uint32(0)
	if useAsm && len(dst) >= 8 {
		i, top = magKeysAsm(dst, src)
	}
	for ; i < len(dst); i++ {
		k := math.Float32bits(src[i]) &^ (1 << 31)
		dst[i] = k
		top = max(top, k)
	}
	return top
}

// BandKeep is the bulk of a MAGPRUNE row's decisions (see sparsify's
// bandRow). Each key's bucket is max(key>>16, base) − base, and
// bounds[bucket] packs BandBounds of the lowest and highest threshold of
// the ranks the bucket holds. For each i, with u the low 53 bits of
// draws[i], it sets keep[i] when u is surely below the lowest, and appends
// i to undec unless u is surely at or above the highest: the decision
// then needs the entry's rank. It returns how many it appended; undec
// must be as long as keys. A bucket past bounds counts as the last (a
// wrong caller gets wrong decisions, never a read outside bounds). With
// AVX-512 sixteen at a time, the bounds gathered.
func BandKeep(keys []uint32, draws []uint64, bounds []uint64, base uint32, keep []bool, undec []int32) int {
	draws, keep, undec = draws[:len(keys)], keep[:len(keys)], undec[:len(keys)]
	last := uint32(len(bounds) - 1)
	i, n := 0, 0
	if useAVX512 && len(keys) >= 16 && len(bounds) > 0 {
		i, n = bandKeepAsm(keys, draws, bounds, base, keep, undec)
	}
	for ; i < len(keys); i++ {
		u := draws[i] & (1<<53 - 1) >> bandDrop
		bd := bounds[min(max(keys[i]>>16, base)-base, last)]
		lo, hi := bd&(1<<32-1), bd>>32
		keep[i] = u < lo
		// lo ≤ u < hi in one unsigned compare (lo ≤ hi): true a few
		// times a row, a branch predicted well.
		if u-lo < hi-lo {
			undec[n] = int32(i)
			n++
		}
	}
	return n
}

// bandDrop is how many low bits of a 53-bit draw BandKeep ignores: what
// is left, and the bounds, fit in 32 bits (two bounds to a gathered
// quadword). An entry within 2^22 of a bound is undecided, a chance of
// 2^-31 per bound.
const bandDrop = 22

// BandBounds packs the lowest and highest thresholds (at most 2^53) of a
// bucket for BandKeep: lo rounded down and hi rounded up to 2^22, so a
// draw below the first is below lo and one at or above the second is at
// or above hi.
func BandBounds(lo, hi uint64) uint64 {
	return (hi+(1<<bandDrop-1))>>bandDrop<<32 | lo>>bandDrop
}

// BucketCounts adds one to counts[max(k>>16, base) − base] for each key
// k: BandKeep's buckets (one past counts counts as the last). With AVX-512
// sixteen keys at a time.
func BucketCounts(keys []uint32, base uint32, counts []int32) {
	i := 0
	if useConflict && len(keys) >= 16 && len(counts) > 0 {
		i = bucketCountAsm(keys, base, counts)
	}
	last := uint32(len(counts) - 1)
	for _, k := range keys[i:] {
		counts[min(max(k>>16, base)-base, last)]++
	}
}

// BucketBounds turns bucket counts into rank ranges and BandKeep's
// bounds: on entry pos[b+1] is bucket b's count (pos[0] the first rank,
// usually 0); on return pos[b] is bucket b's first rank and pos[b+1] its
// end, and bounds[b] = BandBounds(thr[min(pos[b], last)],
// thr[max(pos[b+1]−1, 0)]) with last = len(thr)−1 (an empty bucket's
// bounds are never read: the clamps stand in for a branch), for b <
// len(bounds); pos must hold len(bounds)+1, thr at least one. With
// AVX-512 sixteen buckets at a time.
func BucketBounds(pos []int32, thr []uint64, bounds []uint64) {
	pos = pos[:len(bounds)+1]
	b := 0
	if useAVX512 && len(bounds) >= 16 {
		b = bucketBoundsAsm(pos, thr, bounds)
	}
	last := int32(len(thr) - 1)
	for ; b < len(bounds); b++ {
		pos[b+1] += pos[b]
		bounds[b] = BandBounds(thr[min(pos[b], last)], thr[min(max(pos[b+1]-1, 0), last)])
	}
}

// BucketBoundsAffine is BucketBounds for thresholds known to lie within
// m of a + b·rank (a line, as MAGPRUNE's are) for ranks 0..last: the
// bounds are taken from the line, widened by m, instead of gathered from
// a table — lo = a − m + b·start and hi = a + m + b·(end − 1), clamped to
// [0, 2^53], lo truncated and hi truncated plus one, packed as BandBounds.
// They are looser than BucketBounds' by at most about m, so BandKeep
// leaves a few more entries undecided (a chance of about m·2^-53 more per
// entry) and decides the rest the same. With AVX-512 sixteen buckets at a
// time.
func BucketBoundsAffine(pos []int32, last int32, a, b, m float64, bounds []uint64) {
	pos = pos[:len(bounds)+1]
	k := 0
	if useAVX512 && len(bounds) >= 16 && last >= 0 {
		k = bucketBoundsAffineAsm(pos, uint32(last), a, b, m, bounds)
	}
	line := func(r int32, off float64) float64 {
		return min(max(b*float64(r)+off, 0), 1<<53)
	}
	for ; k < len(bounds); k++ {
		pos[k+1] += pos[k]
		lo := uint64(line(min(pos[k], last), a-m))
		hi := uint64(line(min(max(pos[k+1]-1, 0), last), a+m)) + 1
		bounds[k] = BandBounds(lo, hi)
	}
}

// PackBools ORs keep[64w+j] into bit j of bits[w], for the whole words
// of keep that bits has room for, and returns how many words it did; the
// bools must be 0 or 1 bytes, as Go stores them. With AVX-512 a word per
// instruction pair; without, none (the caller's loop does them).
func PackBools(bits []uint64, keep []bool) int {
	if useBW && len(keep) >= 64 && len(bits) > 0 {
		return packBoolsAsm(bits, keep)
	}
	return 0
}

// UnpackBools sets keep[64w+j] to bit j of bits[w], for the whole words
// of keep that bits holds, and returns how many words it did: PackBools'
// inverse, a word at a time with AVX-512, else none.
func UnpackBools(keep []bool, bits []uint64) int {
	if useBW && len(keep) >= 64 && len(bits) > 0 {
		return unpackBoolsAsm(keep, bits)
	}
	return 0
}
