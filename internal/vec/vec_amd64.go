package vec

import "golang.org/x/sys/cpu"

func init() {
	useAsm = cpu.X86.HasAVX2
	useAVX512 = cpu.X86.HasAVX512F && cpu.X86.HasAVX512DQ && cpu.X86.HasBMI2 && cpu.X86.HasPOPCNT
	useConflict = useAVX512 && cpu.X86.HasAVX512CD && cpu.X86.HasAVX512VPOPCNTDQ
	useBW = useAVX512 && cpu.X86.HasAVX512BW
}

// The assembly loops handle whole groups (eight elements; four for mix2)
// from the start and return how many elements they did.

//go:noescape
func decodeBF16Asm(dst []float64, src []uint16) int

//go:noescape
func deltaBF16Asm(dst []float32, src []uint16, base []float64) int

//go:noescape
func deltaPairBF16Asm(dst []float32, src, base []uint16) int

//go:noescape
func deltaPairBF16AVX2(dst []float32, src, base []uint16) int

// deltaPairBF16 picks the widest of them.
func deltaPairBF16(dst []float32, src, base []uint16) int {
	if useAVX512 {
		return deltaPairBF16Asm(dst, src, base)
	}
	return deltaPairBF16AVX2(dst, src, base)
}

//go:noescape
func l1SumsAsm(x []float32, keep []bool, before, after float64) (done int, b, a float64)

// l1Sums runs l1SumsAsm where AVX-512 is.
func l1Sums(x []float32, keep []bool, before, after float64) (done int, b, a float64) {
	if useAVX512 {
		return l1SumsAsm(x, keep, before, after)
	}
	return 0, before, after
}

//go:noescape
func linear2BF16Asm(o []float64, a, b []uint16, w0, w1, div float64, recip bool) int

// linear2BF16 runs linear2BF16Asm where AVX-512 is.
func linear2BF16(o []float64, a, b []uint16, w0, w1, div float64, recip bool) int {
	if useAVX512 {
		return linear2BF16Asm(o, a, b, w0, w1, div, recip)
	}
	return 0
}

//go:noescape
func scale2BF16Asm(o []float64, a, b []uint16, s0, s1 float64) int

// scale2BF16 runs scale2BF16Asm where AVX-512 is (0 without).
func scale2BF16(o []float64, a, b []uint16, s0, s1 float64) int {
	if useAVX512 {
		return scale2BF16Asm(o, a, b, s0, s1)
	}
	return 0
}

//go:noescape
func mix2Asm(o, base []float64, t0, t1 []float32, c0, c1 float64) int

// encodeBF16Asm stops at the first group of eight holding a value it does
// not round itself.
//
//go:noescape
func encodeBF16Asm(dst []uint16, src []float64) int

// encodeBF16AVX512 is encodeBF16Asm sixteen entries a step; it stops at
// the first such group holding a value it does not round itself.
//
//go:noescape
func encodeBF16AVX512(dst []uint16, src []float64) int

// encodeBF16 runs the widest encoder there is.
func encodeBF16(dst []uint16, src []float64) int {
	if useAVX512 {
		if i := encodeBF16AVX512(dst, src); i > 0 || len(src) < 16 {
			return i
		}
	}
	return encodeBF16Asm(dst, src)
}

//go:noescape
func consensus2Asm(o, base []float64, t0, t1 []float32, w0, w1, lambda float64, normalize bool) int

//go:noescape
func consensus2AVX512(o, base []float64, braw []uint16, t0, t1 []float32, w0, w1, lambda float64, normalize, pow2 bool) int

// consensus2 runs the widest consensus2 loop there is.
func consensus2(o, base []float64, t0, t1 []float32, w0, w1, lambda float64, normalize bool) int {
	if useAVX512 {
		return consensus2AVX512(o, base, nil, t0, t1, w0, w1, lambda, normalize, divisorsPow2(w0, w1))
	}
	return consensus2Asm(o, base, t0, t1, w0, w1, lambda, normalize)
}

// consensus2BF16 is consensus2 with the base in bfloat16, AVX-512 only
// (0 without: the caller decodes the base).
func consensus2BF16(o []float64, base []uint16, t0, t1 []float32, w0, w1, lambda float64, normalize bool) int {
	if useAVX512 && len(base) > 0 {
		return consensus2AVX512(o, nil, base, t0, t1, w0, w1, lambda, normalize, divisorsPow2(w0, w1))
	}
	return 0
}

//go:noescape
func mix2BF16Asm(o []float64, base []uint16, t0, t1 []float32, c0, c1 float64) int

// mix2BF16 runs mix2BF16Asm where AVX-512 is (0 without).
func mix2BF16(o []float64, base []uint16, t0, t1 []float32, c0, c1 float64) int {
	if useAVX512 {
		return mix2BF16Asm(o, base, t0, t1, c0, c1)
	}
	return 0
}

//go:noescape
func clearRunAsm(data []byte, exp, one, top uint64) int

// keepBandAsm takes low and top biased by the sign bit (see KeepBand).
//
//go:noescape
func keepBandAsm(x []float32, low, top uint32) (done, kept int)

// keepBandAVX512 is keepBandAsm sixteen entries a step, its bounds
// unbiased.
//
//go:noescape
func keepBandAVX512(x []float32, low, top uint32) (done, kept int)

// keepBand runs the widest of them on unbiased bounds; where the wide one
// stops (a key on a bound in the next sixteen), the narrow one takes the
// eight before it if they are clear, so either way it stops only before
// eight holding a bound.
func keepBand(x []float32, low, top uint32) (done, kept int) {
	if useAVX512 {
		done, kept = keepBandAVX512(x, low, top)
	}
	// Biased by the sign bit, unsigned order becomes the signed order the
	// assembly compares in (a key with its sign bit set is key + 2^31).
	d, k := keepBandAsm(x[done:], low^1<<31, top^1<<31)
	return done + d, kept + k
}

//go:noescape
func scaleKeepAsm(x []float32, keep []bool, s float64) (done, kept int)

// splitBandsAsm takes the bounds biased by the sign bit (see SplitBands).
//
//go:noescape
func splitBandsAsm(x []float32, lo0, hi0, lo1, hi1 uint32, idx []uint32) (done, n, above0, above1 int)

// splitBandsAVX512 is splitBandsAsm sixteen keys a step, its bounds
// unbiased.
//
//go:noescape
func splitBandsAVX512(x []float32, lo0, hi0, lo1, hi1 uint32, idx []uint32) (done, n, above0, above1 int)

// splitBands runs the widest of them on unbiased bounds.
func splitBands(x []float32, lo0, hi0, lo1, hi1 uint32, idx []uint32) (done, n, above0, above1 int) {
	if useAVX512 {
		return splitBandsAVX512(x, lo0, hi0, lo1, hi1, idx)
	}
	// Biased by the sign bit, as in KeepBand.
	const b = 1 << 31
	return splitBandsAsm(x, lo0^b, hi0^b, lo1^b, hi1^b, idx)
}

// countBelowAsm takes k biased by the sign bit (see CountBelow).
//
//go:noescape
func countBelowAsm(keys []uint32, k uint32) (done, n int)

//go:noescape
func magKeysAsm(dst []uint32, src []float32) (done int, top uint32)

// bandKeepAsm does BandKeep's groups of sixteen. Like bucketCountAsm it
// clamps bucket numbers to the table: a broken caller gets wrong
// decisions, never a read or write outside it.
//
//go:noescape
func bandKeepAsm(keys []uint32, draws []uint64, bounds []uint64, base uint32, keep []bool, undec []int32) (done, n int)

// bucketCountAsm does BucketCounts' groups of sixteen.
//
//go:noescape
func bucketCountAsm(keys []uint32, base uint32, counts []int32) int

// bucketBoundsAsm does BucketBounds' groups of sixteen buckets.
//
//go:noescape
func bucketBoundsAsm(pos []int32, thr []uint64, bounds []uint64) int

// bucketBoundsAffineAsm does BucketBoundsAffine's groups of sixteen
// buckets.
//
//go:noescape
func bucketBoundsAffineAsm(pos []int32, last uint32, a, b, m float64, bounds []uint64) int

// packBoolsAsm does PackBools' whole words.
//
//go:noescape
func packBoolsAsm(bits []uint64, keep []bool) int

// unpackBoolsAsm does UnpackBools' whole words.
//
//go:noescape
func unpackBoolsAsm(keep []bool, bits []uint64) int
