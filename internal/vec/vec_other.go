//go:build !amd64

package vec

func decodeBF16Asm(dst []float64, src []uint16) int                { return 0 }
func deltaBF16Asm(dst []float32, src []uint16, base []float64) int { return 0 }
func deltaPairBF16(dst []float32, src, base []uint16) int          { return 0 }
func l1Sums(x []float32, keep []bool, before, after float64) (done int, b, a float64) {
	return 0, before, after
}

func linear2BF16(o []float64, a, b []uint16, w0, w1, div float64, recip bool) int {
	return 0
}

func scale2BF16(o []float64, a, b []uint16, s0, s1 float64) int { return 0 }

func mix2Asm(o, base []float64, t0, t1 []float32, c0, c1 float64) int { return 0 }
func encodeBF16Asm(dst []uint16, src []float64) int                   { return 0 }

func consensus2Asm(o, base []float64, t0, t1 []float32, w0, w1, lambda float64, normalize bool) int {
	return 0
}

func consensus2(o, base []float64, t0, t1 []float32, w0, w1, lambda float64, normalize bool) int {
	return 0
}

func consensus2BF16(o []float64, base []uint16, t0, t1 []float32, w0, w1, lambda float64, normalize bool) int {
	return 0
}

func mix2BF16(o []float64, base []uint16, t0, t1 []float32, c0, c1 float64) int { return 0 }

func encodeBF16(dst []uint16, src []float64) int { return 0 }

func clearRunAsm(data []byte, exp, one, top uint64) int { return 0 }

func keepBandAsm(x []float32, low, top uint32) (done, kept int) { return 0, 0 }

func keepBand(x []float32, low, top uint32) (done, kept int) { return 0, 0 }

func scaleKeepAsm(x []float32, keep []bool, s float64) (done, kept int) { return 0, 0 }

func splitBandsAsm(x []float32, lo0, hi0, lo1, hi1 uint32, idx []uint32) (done, n, above0, above1 int) {
	return 0, 0, 0, 0
}

func splitBands(x []float32, lo0, hi0, lo1, hi1 uint32, idx []uint32) (done, n, above0, above1 int) {
	return 0, 0, 0, 0
}

func countBelowAsm(keys []uint32, k uint32) (done, n int) { return 0, 0 }

func magKeysAsm(dst []uint32, src []float32) (done int, top uint32) { return 0, 0 }

func bandKeepAsm(keys []uint32, draws []uint64, bounds []uint64, base uint32, keep []bool, undec []int32) (done, n int) {
	return 0, 0
}

func bucketCountAsm(keys []uint32, base uint32, counts []int32) int { return 0 }

func bucketBoundsAsm(pos []int32, thr []uint64, bounds []uint64) int { return 0 }

func packBoolsAsm(bits []uint64, keep []bool) int { return 0 }

func unpackBoolsAsm(keep []bool, bits []uint64) int { return 0 }

func bucketBoundsAffineAsm(pos []int32, last uint32, a, b, m float64, bounds []uint64) int {
	return 0
}
