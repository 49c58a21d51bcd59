package gguf

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/x448/float16"
)

// Every quantizer here is a port of ggml's reference function of the same
// name (quantize_row_*_ref), operation for operation in float32: ggml's
// llama-quantize uses them when no importance matrix is given, so our
// blocks are the same bytes. Products are converted to float32 before
// they are added, because Go may otherwise fuse them (FMA) where C, built
// as ggml builds its reference code, does not.

// QK is the elements per block of the 32-element types; QKK of the
// K-quants' super-blocks.
const (
	QK  = 32
	QKK = 256
)

func f16(x float32) uint16 { return float16.Fromfloat32(x).Bits() }
func f16to32(b []byte) float32 {
	return float16.Frombits(binary.LittleEndian.Uint16(b)).Float32()
}

// nearestInt is ggml's nearest_int: round half to even through the
// float32 bit trick (valid for |x| ≤ 4194303).
func nearestInt(x float32) int {
	v := x + 12582912
	return int(math.Float32bits(v)&0x007fffff) - 0x00400000
}

// absMax is the largest magnitude of xs and the value that has it (the
// first of equals), as ggml's reference quantizers find them.
func absMax(xs []float32) (amax, v float32) {
	for _, x := range xs {
		if a := float32(math.Abs(float64(x))); a > amax {
			amax, v = a, x
		}
	}
	return amax, v
}

// roundf rounds half away from zero, as C's roundf.
func roundf(x float32) float32 { return float32(math.Round(float64(x))) }

// QuantizeQ8_0 is quantize_row_q8_0_ref: per block of 32, d = amax/127
// (F16), q = round(x/d), half away from zero.
func QuantizeQ8_0(x []float32, dst []byte) {
	for b := 0; b < len(x)/QK; b++ {
		xs := x[b*QK : (b+1)*QK]
		out := dst[b*34 : (b+1)*34]
		var amax float32
		for _, v := range xs {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(out, f16(d))
		for j, v := range xs {
			out[2+j] = byte(int8(roundf(float32(v * id))))
		}
	}
}

// QuantizeQ4_0 is quantize_row_q4_0_ref: d = max/−8 where max is the
// value of largest magnitude (the first of equals), q = min(15, trunc(x/d
// + 8.5)), two per byte (element j low, j+16 high).
func QuantizeQ4_0(x []float32, dst []byte) {
	for b := 0; b < len(x)/QK; b++ {
		xs := x[b*QK : (b+1)*QK]
		out := dst[b*18 : (b+1)*18]
		_, mx := absMax(xs)
		d := mx / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(out, f16(d))
		for j := 0; j < QK/2; j++ {
			x0 := float32(xs[j] * id)
			x1 := float32(xs[QK/2+j] * id)
			q0 := min(15, uint8(int8(x0+8.5)))
			q1 := min(15, uint8(int8(x1+8.5)))
			out[2+j] = q0 | q1<<4
		}
	}
}

// makeQKX2Quants is ggml's make_qkx2_quants: a scale and a (non-positive)
// min for n values on levels 0..nmax, refined over nstep+1 trial scales
// by weighted least squares.
func makeQKX2Quants(nmax int, x, weights []float32, L, Laux []uint8, rmin, rdelta float32, nstep int) (scale, theMin float32) {
	n := len(x)
	mn, mx := x[0], x[0]
	sumW := weights[0]
	sumX := float32(sumW * x[0])
	for i := 1; i < n; i++ {
		if x[i] < mn {
			mn = x[i]
		}
		if x[i] > mx {
			mx = x[i]
		}
		w := weights[i]
		sumW += w
		sumX += float32(w * x[i])
	}
	if mn > 0 {
		mn = 0
	}
	if mx == mn {
		for i := range L[:n] {
			L[i] = 0
		}
		return 0, -mn
	}
	iscale := float32(nmax) / (mx - mn)
	scale = 1 / iscale
	var bestError float32
	for i := 0; i < n; i++ {
		l := nearestInt(float32(iscale * (x[i] - mn)))
		L[i] = uint8(max(0, min(nmax, l)))
		diff := float32(float32(scale*float32(L[i]))+mn) - x[i]
		diff = float32(diff * diff)
		bestError += float32(weights[i] * diff)
	}
	if nstep < 1 {
		return scale, -mn
	}
	for is := 0; is <= nstep; is++ {
		iscale = (float32(rmin+float32(rdelta*float32(is))) + float32(nmax)) / (mx - mn)
		var sumL, sumL2, sumXL float32
		for i := 0; i < n; i++ {
			l := nearestInt(float32(iscale * (x[i] - mn)))
			l = max(0, min(nmax, l))
			Laux[i] = uint8(l)
			w := weights[i]
			fl := float32(l)
			sumL += float32(w * fl)
			sumL2 += float32(float32(w*fl) * fl)
			sumXL += float32(float32(w*fl) * x[i])
		}
		D := float32(sumW*sumL2) - float32(sumL*sumL)
		if D > 0 {
			thisScale := (float32(sumW*sumXL) - float32(sumX*sumL)) / D
			thisMin := (float32(sumL2*sumX) - float32(sumL*sumXL)) / D
			if thisMin > 0 {
				thisMin = 0
				thisScale = sumXL / sumL2
			}
			var cur float32
			for i := 0; i < n; i++ {
				diff := float32(float32(thisScale*float32(Laux[i]))+thisMin) - x[i]
				diff = float32(diff * diff)
				cur += float32(weights[i] * diff)
			}
			if cur < bestError {
				copy(L[:n], Laux[:n])
				bestError = cur
				scale = thisScale
				mn = thisMin
			}
		}
	}
	return scale, -mn
}

func scaleMinK4(j int, q []byte) (d, m uint8) {
	if j < 4 {
		return q[j] & 63, q[j+4] & 63
	}
	return (q[j+4] & 0xF) | ((q[j-4] >> 6) << 4), (q[j+4] >> 4) | ((q[j] >> 6) << 4)
}

// QuantizeQ4_K is quantize_row_q4_K_ref: super-blocks of 256 in 8
// sub-blocks of 32, each with a 6-bit scale and min under two F16
// super-scales, 4-bit levels.
func QuantizeQ4_K(x []float32, dst []byte) {
	const size = 144
	var L [QKK]uint8
	var Laux [32]uint8
	var weights [32]float32
	var mins, scales [QKK / 32]float32
	for b := 0; b < len(x)/QKK; b++ {
		xs := x[b*QKK : (b+1)*QKK]
		out := dst[b*size : (b+1)*size]
		clear(out)
		sc := out[4:16]
		var maxScale, maxMin float32
		for j := 0; j < QKK/32; j++ {
			sub := xs[32*j : 32*j+32]
			var sumX2 float32
			for _, v := range sub {
				sumX2 += float32(v * v)
			}
			avX := float32(math.Sqrt(float64(sumX2 / 32)))
			for l, v := range sub {
				weights[l] = avX + float32(math.Abs(float64(v)))
			}
			scales[j], mins[j] = makeQKX2Quants(15, sub, weights[:], L[32*j:32*j+32], Laux[:], -1, 0.1, 20)
			maxScale = max(maxScale, scales[j])
			maxMin = max(maxMin, mins[j])
		}
		var invScale, invMin float32
		if maxScale > 0 {
			invScale = 63 / maxScale
		}
		if maxMin > 0 {
			invMin = 63 / maxMin
		}
		for j := 0; j < QKK/32; j++ {
			ls := min(63, uint8(nearestInt(float32(invScale*scales[j]))))
			lm := min(63, uint8(nearestInt(float32(invMin*mins[j]))))
			if j < 4 {
				sc[j] = ls
				sc[j+4] = lm
			} else {
				sc[j+4] = (ls & 0xF) | ((lm & 0xF) << 4)
				sc[j-4] |= (ls >> 4) << 6
				sc[j] |= (lm >> 4) << 6
			}
		}
		binary.LittleEndian.PutUint16(out[0:], f16(maxScale/63))
		binary.LittleEndian.PutUint16(out[2:], f16(maxMin/63))
		dAll, dmAll := f16to32(out[0:]), f16to32(out[2:])
		for j := 0; j < QKK/32; j++ {
			s, m := scaleMinK4(j, sc)
			d := float32(dAll * float32(s))
			if d == 0 {
				continue
			}
			dm := float32(dmAll * float32(m))
			for ii := 0; ii < 32; ii++ {
				l := nearestInt((xs[32*j+ii] + dm) / d)
				L[32*j+ii] = uint8(max(0, min(15, l)))
			}
		}
		q := out[16:]
		for j := 0; j < QKK; j += 64 {
			for l := 0; l < 32; l++ {
				q[l] = L[j+l] | L[j+l+32]<<4
			}
			q = q[32:]
		}
	}
}

// groupMaxEps is ggml's GROUP_MAX_EPS: below it a group counts as zero.
const groupMaxEps = 1e-15

// makeQXQuants is ggml's make_qx_quants with rmse_type 1 and no
// importance weights (what q6_K uses): symmetric levels −nmax..nmax−1,
// the scale refined over 18 trial scales.
func makeQXQuants(nmax int, x []float32, L []int8) float32 {
	amax, mx := absMax(x)
	if amax < groupMaxEps {
		for i := range L[:len(x)] {
			L[i] = 0
		}
		return 0
	}
	iscale := float32(-nmax) / mx
	var sumLX, sumL2 float32
	for i, v := range x {
		l := nearestInt(float32(iscale * v))
		l = max(-nmax, min(nmax-1, l))
		L[i] = int8(l + nmax)
		w := float32(v * v)
		fl := float32(l)
		sumLX += float32(float32(w*v) * fl)
		sumL2 += float32(float32(w*fl) * fl)
	}
	var scale float32
	if sumL2 != 0 {
		scale = sumLX / sumL2
	}
	best := float32(scale * sumLX)
	for is := -9; is <= 9; is++ {
		if is == 0 {
			continue
		}
		iscale = -(float32(nmax) + float32(0.1*float32(is))) / mx
		sumLX, sumL2 = 0, 0
		for _, v := range x {
			l := nearestInt(float32(iscale * v))
			l = max(-nmax, min(nmax-1, l))
			w := float32(v * v)
			fl := float32(l)
			sumLX += float32(float32(w*v) * fl)
			sumL2 += float32(float32(w*fl) * fl)
		}
		if sumL2 > 0 && float32(sumLX*sumLX) > float32(best*sumL2) {
			for i, v := range x {
				l := nearestInt(float32(iscale * v))
				L[i] = int8(nmax + max(-nmax, min(nmax-1, l)))
			}
			scale = sumLX / sumL2
			best = float32(scale * sumLX)
		}
	}
	return scale
}

// QuantizeQ6_K is quantize_row_q6_K_ref: super-blocks of 256 in 16
// sub-blocks of 16 with 8-bit scales under one F16 super-scale, 6-bit
// levels (4 low bits in ql, 2 high in qh).
func QuantizeQ6_K(x []float32, dst []byte) {
	const size = 210
	var L [QKK]int8
	var scales [QKK / 16]float32
	for b := 0; b < len(x)/QKK; b++ {
		xs := x[b*QKK : (b+1)*QKK]
		out := dst[b*size : (b+1)*size]
		clear(out)
		ql, qh, sc := out[0:128], out[128:192], out[192:208]
		var maxScale, maxAbs float32
		for ib := 0; ib < QKK/16; ib++ {
			s := makeQXQuants(32, xs[16*ib:16*ib+16], L[16*ib:16*ib+16])
			scales[ib] = s
			if a := float32(math.Abs(float64(s))); a > maxAbs {
				maxAbs, maxScale = a, s
			}
		}
		if maxAbs < groupMaxEps {
			binary.LittleEndian.PutUint16(out[208:], f16(0))
			continue
		}
		iscale := -128 / maxScale
		binary.LittleEndian.PutUint16(out[208:], f16(1/iscale))
		for ib := 0; ib < QKK/16; ib++ {
			sc[ib] = byte(int8(min(127, nearestInt(float32(iscale*scales[ib])))))
		}
		dAll := f16to32(out[208:])
		for j := 0; j < QKK/16; j++ {
			d := float32(dAll * float32(int8(sc[j])))
			if d == 0 {
				continue
			}
			for ii := 0; ii < 16; ii++ {
				l := nearestInt(xs[16*j+ii] / d)
				l = max(-32, min(31, l))
				L[16*j+ii] = int8(l + 32)
			}
		}
		for j := 0; j < QKK; j += 128 {
			for l := 0; l < 32; l++ {
				q1 := uint8(L[j+l]) & 0xF
				q2 := uint8(L[j+l+32]) & 0xF
				q3 := uint8(L[j+l+64]) & 0xF
				q4 := uint8(L[j+l+96]) & 0xF
				ql[l] = q1 | q3<<4
				ql[l+32] = q2 | q4<<4
				qh[l] = uint8(L[j+l])>>4 | (uint8(L[j+l+32])>>4)<<2 | (uint8(L[j+l+64])>>4)<<4 | (uint8(L[j+l+96])>>4)<<6
			}
			ql = ql[64:]
			qh = qh[32:]
		}
	}
}

// check panics-free precondition for the exported quantizers.
func checkLen(t Type, n int, dst []byte) error {
	if n%t.BlockSize() != 0 {
		return fmt.Errorf("%s: %d values are not whole blocks of %d", t, n, t.BlockSize())
	}
	if len(dst) < t.RowSize(n) {
		return fmt.Errorf("%s: %d-byte buffer for %d bytes", t, len(dst), t.RowSize(n))
	}
	return nil
}

// QuantizeQ4_1 is quantize_row_q4_1_ref: d = (max − min)/15 and m = min
// (F16), q = min(15, trunc((x − min)/d + 0.5)).
func QuantizeQ4_1(x []float32, dst []byte) {
	for b := 0; b < len(x)/QK; b++ {
		xs := x[b*QK : (b+1)*QK]
		out := dst[b*20 : (b+1)*20]
		mn, mx := float32(math.MaxFloat32), float32(-math.MaxFloat32)
		for _, v := range xs {
			mn, mx = min(mn, v), max(mx, v)
		}
		d := (mx - mn) / 15
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(out, f16(d))
		binary.LittleEndian.PutUint16(out[2:], f16(mn))
		for j := 0; j < QK/2; j++ {
			x0 := float32((xs[j] - mn) * id)
			x1 := float32((xs[QK/2+j] - mn) * id)
			out[4+j] = min(15, uint8(int8(x0+0.5))) | min(15, uint8(int8(x1+0.5)))<<4
		}
	}
}

// QuantizeQ5_0 is quantize_row_q5_0_ref: d = max/−16, q = min(31,
// trunc(x/d + 16.5)), the fifth bits gathered in qh.
func QuantizeQ5_0(x []float32, dst []byte) {
	for b := 0; b < len(x)/QK; b++ {
		xs := x[b*QK : (b+1)*QK]
		out := dst[b*22 : (b+1)*22]
		_, mx := absMax(xs)
		d := mx / -16
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(out, f16(d))
		var qh uint32
		for j := 0; j < QK/2; j++ {
			q0 := min(31, uint8(int8(float32(xs[j]*id)+16.5)))
			q1 := min(31, uint8(int8(float32(xs[QK/2+j]*id)+16.5)))
			out[6+j] = q0&0xF | (q1&0xF)<<4
			qh |= uint32(q0&0x10) >> 4 << uint(j)
			qh |= uint32(q1&0x10) >> 4 << uint(j+QK/2)
		}
		binary.LittleEndian.PutUint32(out[2:], qh)
	}
}

// QuantizeQ5_1 is quantize_row_q5_1_ref: d = (max − min)/31, m = min,
// q = trunc((x − min)/d + 0.5).
func QuantizeQ5_1(x []float32, dst []byte) {
	for b := 0; b < len(x)/QK; b++ {
		xs := x[b*QK : (b+1)*QK]
		out := dst[b*24 : (b+1)*24]
		mn, mx := float32(math.MaxFloat32), float32(-math.MaxFloat32)
		for _, v := range xs {
			mn, mx = min(mn, v), max(mx, v)
		}
		d := (mx - mn) / 31
		var id float32
		if d != 0 {
			id = 1 / d
		}
		binary.LittleEndian.PutUint16(out, f16(d))
		binary.LittleEndian.PutUint16(out[2:], f16(mn))
		var qh uint32
		for j := 0; j < QK/2; j++ {
			q0 := uint8(float32((xs[j]-mn)*id) + 0.5)
			q1 := uint8(float32((xs[QK/2+j]-mn)*id) + 0.5)
			out[8+j] = q0&0xF | (q1&0xF)<<4
			qh |= uint32(q0&0x10) >> 4 << uint(j)
			qh |= uint32(q1&0x10) >> 4 << uint(j+QK/2)
		}
		binary.LittleEndian.PutUint32(out[4:], qh)
	}
}
