// Package vec holds the inner loops of a merge's hot path over bfloat16
// tensors — decoding to float64, task-vector deltas, weighted sums and
// rounding back to bfloat16 — in AVX2 assembly on amd64 CPUs that have it
// (chosen at run time) and in Go elsewhere. The assembly performs the same
// IEEE operations as the Go loops, element by element in the same order
// (no fused multiply-add), so both give the same bits; the tests hold them
// to that on special values, rounding ties and every length.
package vec

import "math"

// useAsm chooses the assembly loops (set on amd64 with AVX2; tests turn
// it off to compare).
var useAsm bool

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
			i += encodeBF16Asm(dst[i:n], src[i:n])
		}
		// The group the assembly stopped at, or the tail.
		for e := min(n, i+8); i < e; i++ {
			dst[i] = scalar(src[i])
		}
	}
}
