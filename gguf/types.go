// Package gguf reads and writes GGUF, the file format of ggml, llama.cpp
// and Ollama: the container (key-value metadata, tensor infos, aligned
// data), ggml's tensor types with quantizers that are ports of ggml's
// reference functions (the same bytes as llama-quantize without an
// importance matrix) and dequantizers, and the LLaMA-family mapping
// between Hugging Face checkpoints and llama.cpp's tensor names.
package gguf

import (
	"encoding/binary"
	"fmt"
	"math"
	"strings"

	"github.com/x448/float16"
)

// Type is a ggml tensor type (GGUF's tensor info type id).
type Type uint32

// The ggml types weightops reads; all but the K-quants Q2_K, Q3_K, Q5_K
// and Q8_K it also writes.
const (
	F32  Type = 0
	F16  Type = 1
	Q4_0 Type = 2
	Q4_1 Type = 3
	Q5_0 Type = 6
	Q5_1 Type = 7
	Q8_0 Type = 8
	Q2_K Type = 10
	Q3_K Type = 11
	Q4_K Type = 12
	Q5_K Type = 13
	Q6_K Type = 14
	Q8_K Type = 15
	BF16 Type = 30
)

type typeInfo struct {
	name       string
	block      int // elements per block
	size       int // bytes per block
	dequantize func(src []byte, dst []float32)
	quantize   func(x []float32, dst []byte)
}

var types = map[Type]typeInfo{
	F32:  {"F32", 1, 4, deqF32, qF32},
	F16:  {"F16", 1, 2, deqF16, qF16},
	BF16: {"BF16", 1, 2, deqBF16, qBF16},
	Q4_0: {"Q4_0", QK, 18, deqQ4_0, QuantizeQ4_0},
	Q4_1: {"Q4_1", QK, 20, deqQ4_1, QuantizeQ4_1},
	Q5_0: {"Q5_0", QK, 22, deqQ5_0, QuantizeQ5_0},
	Q5_1: {"Q5_1", QK, 24, deqQ5_1, QuantizeQ5_1},
	Q8_0: {"Q8_0", QK, 34, deqQ8_0, QuantizeQ8_0},
	Q2_K: {"Q2_K", QKK, 84, deqQ2_K, nil},
	Q3_K: {"Q3_K", QKK, 110, deqQ3_K, nil},
	Q4_K: {"Q4_K", QKK, 144, deqQ4_K, QuantizeQ4_K},
	Q5_K: {"Q5_K", QKK, 176, deqQ5_K, nil},
	Q6_K: {"Q6_K", QKK, 210, deqQ6_K, QuantizeQ6_K},
	Q8_K: {"Q8_K", QKK, 292, deqQ8_K, nil},
}

// String is ggml's name of the type.
func (t Type) String() string {
	if i, ok := types[t]; ok {
		return i.name
	}
	return fmt.Sprintf("type %d", uint32(t))
}

// Known reports whether weightops reads the type.
func (t Type) Known() bool { _, ok := types[t]; return ok }

// BlockSize is the elements per block.
func (t Type) BlockSize() int { return types[t].block }

// RowSize is the bytes n elements take (n a multiple of BlockSize).
func (t Type) RowSize(n int) int { i := types[t]; return n / i.block * i.size }

// CanQuantize reports whether weightops writes the type.
func (t Type) CanQuantize() bool { return types[t].quantize != nil }

// ParseType reads a type name as the convert command takes it (q8_0,
// Q4_K, bf16, …).
func ParseType(s string) (Type, error) {
	for t, i := range types {
		if strings.EqualFold(i.name, s) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("unknown GGUF type %q (f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k)", s)
}

// Dequantize decodes n = len(dst) elements of type t.
func Dequantize(t Type, src []byte, dst []float32) error {
	i, ok := types[t]
	if !ok {
		return fmt.Errorf("unknown ggml type %d", uint32(t))
	}
	if len(dst)%i.block != 0 || len(src) != len(dst)/i.block*i.size {
		return fmt.Errorf("%s: %d bytes for %d values", i.name, len(src), len(dst))
	}
	i.dequantize(src, dst)
	return nil
}

// Quantize encodes x as type t into dst (RowSize(len(x)) bytes).
func Quantize(t Type, x []float32, dst []byte) error {
	i, ok := types[t]
	if !ok || i.quantize == nil {
		return fmt.Errorf("weightops does not write %s", t)
	}
	if err := checkLen(t, len(x), dst); err != nil {
		return err
	}
	i.quantize(x, dst[:t.RowSize(len(x))])
	return nil
}

func deqF32(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(binary.LittleEndian.Uint32(src[4*i:]))
	}
}

func qF32(x []float32, dst []byte) {
	for i, v := range x {
		binary.LittleEndian.PutUint32(dst[4*i:], math.Float32bits(v))
	}
}

func deqF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = f16to32(src[2*i:])
	}
}

func qF16(x []float32, dst []byte) {
	for i, v := range x {
		binary.LittleEndian.PutUint16(dst[2*i:], float16.Fromfloat32(v).Bits())
	}
}

func deqBF16(src []byte, dst []float32) {
	for i := range dst {
		dst[i] = math.Float32frombits(uint32(binary.LittleEndian.Uint16(src[2*i:])) << 16)
	}
}

// BF16FromFloat32 rounds to nearest even; a NaN stays a (quiet) NaN, as
// ggml's ggml_compute_fp32_to_bf16.
func BF16FromFloat32(v float32) uint16 {
	u := math.Float32bits(v)
	if u&0x7fffffff > 0x7f800000 {
		return uint16(u>>16 | 64)
	}
	return uint16((u + (0x7fff + (u>>16)&1)) >> 16)
}

func qBF16(x []float32, dst []byte) {
	for i, v := range x {
		binary.LittleEndian.PutUint16(dst[2*i:], BF16FromFloat32(v))
	}
}

func deqQ8_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK; b++ {
		blk := src[b*34:]
		d := f16to32(blk)
		for j := 0; j < QK; j++ {
			dst[b*QK+j] = float32(int8(blk[2+j])) * d
		}
	}
}

func deqQ4_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK; b++ {
		blk := src[b*18:]
		d := f16to32(blk)
		for j := 0; j < QK/2; j++ {
			dst[b*QK+j] = float32(int(blk[2+j]&0xF)-8) * d
			dst[b*QK+j+QK/2] = float32(int(blk[2+j]>>4)-8) * d
		}
	}
}

func deqQ4_1(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK; b++ {
		blk := src[b*20:]
		d, m := f16to32(blk), f16to32(blk[2:])
		for j := 0; j < QK/2; j++ {
			dst[b*QK+j] = float32(float32(blk[4+j]&0xF)*d) + m
			dst[b*QK+j+QK/2] = float32(float32(blk[4+j]>>4)*d) + m
		}
	}
}

func deqQ5_0(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK; b++ {
		blk := src[b*22:]
		d := f16to32(blk)
		qh := binary.LittleEndian.Uint32(blk[2:])
		for j := 0; j < QK/2; j++ {
			h0 := uint8((qh>>uint(j))<<4) & 0x10
			h1 := uint8(qh>>uint(j+12)) & 0x10
			dst[b*QK+j] = float32(int32(blk[6+j]&0xF|h0)-16) * d
			dst[b*QK+j+QK/2] = float32(int32(blk[6+j]>>4|h1)-16) * d
		}
	}
}

func deqQ5_1(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QK; b++ {
		blk := src[b*24:]
		d, m := f16to32(blk), f16to32(blk[2:])
		qh := binary.LittleEndian.Uint32(blk[4:])
		for j := 0; j < QK/2; j++ {
			h0 := uint8((qh>>uint(j))<<4) & 0x10
			h1 := uint8(qh>>uint(j+12)) & 0x10
			dst[b*QK+j] = float32(float32(blk[8+j]&0xF|h0)*d) + m
			dst[b*QK+j+QK/2] = float32(float32(blk[8+j]>>4|h1)*d) + m
		}
	}
}

func deqQ2_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QKK; b++ {
		blk := src[b*84:]
		scales, q := blk[0:16], blk[16:80]
		d, mn := f16to32(blk[80:]), f16to32(blk[82:])
		y := dst[b*QKK:]
		is := 0
		for n := 0; n < QKK; n += 128 {
			shift := uint(0)
			for j := 0; j < 4; j++ {
				for half := 0; half < 2; half++ {
					sc := scales[is]
					is++
					dl, ml := float32(d*float32(sc&0xF)), float32(mn*float32(sc>>4))
					for l := 0; l < 16; l++ {
						y[0] = float32(dl*float32(int8((q[l+16*half]>>shift)&3))) - ml
						y = y[1:]
					}
				}
				shift += 2
			}
			q = q[32:]
		}
	}
}

func deqQ3_K(src []byte, dst []float32) {
	const kmask1, kmask2 = 0x03030303, 0x0f0f0f0f
	for b := 0; b < len(dst)/QKK; b++ {
		blk := src[b*110:]
		hm, q, raw := blk[0:32], blk[32:96], blk[96:108]
		dAll := f16to32(blk[108:])
		var aux [4]uint32
		for i := 0; i < 3; i++ {
			aux[i] = binary.LittleEndian.Uint32(raw[4*i:])
		}
		tmp := aux[2]
		aux[2] = ((aux[0] >> 4) & kmask2) | (((tmp >> 4) & kmask1) << 4)
		aux[3] = ((aux[1] >> 4) & kmask2) | (((tmp >> 6) & kmask1) << 4)
		aux[0] = (aux[0] & kmask2) | (((tmp >> 0) & kmask1) << 4)
		aux[1] = (aux[1] & kmask2) | (((tmp >> 2) & kmask1) << 4)
		var scales [16]int8
		for i := 0; i < 16; i++ {
			scales[i] = int8(aux[i/4] >> (8 * uint(i%4)))
		}
		y := dst[b*QKK:]
		is := 0
		m := uint8(1)
		for n := 0; n < QKK; n += 128 {
			shift := uint(0)
			for j := 0; j < 4; j++ {
				for half := 0; half < 2; half++ {
					dl := float32(dAll * float32(int(scales[is])-32))
					is++
					for l := 0; l < 16; l++ {
						v := int(int8((q[l+16*half] >> shift) & 3))
						if hm[l+16*half]&m == 0 {
							v -= 4
						}
						y[0] = dl * float32(v)
						y = y[1:]
					}
				}
				shift += 2
				m <<= 1
			}
			q = q[32:]
		}
	}
}

func deqQ4_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QKK; b++ {
		blk := src[b*144:]
		d, mn := f16to32(blk), f16to32(blk[2:])
		sc, q := blk[4:16], blk[16:144]
		y := dst[b*QKK:]
		is := 0
		for j := 0; j < QKK; j += 64 {
			s1, m1 := scaleMinK4(is, sc)
			s2, m2 := scaleMinK4(is+1, sc)
			d1, mm1 := float32(d*float32(s1)), float32(mn*float32(m1))
			d2, mm2 := float32(d*float32(s2)), float32(mn*float32(m2))
			for l := 0; l < 32; l++ {
				y[l] = float32(d1*float32(q[l]&0xF)) - mm1
				y[32+l] = float32(d2*float32(q[l]>>4)) - mm2
			}
			y, q, is = y[64:], q[32:], is+2
		}
	}
}

func deqQ5_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QKK; b++ {
		blk := src[b*176:]
		d, mn := f16to32(blk), f16to32(blk[2:])
		sc, qh, ql := blk[4:16], blk[16:48], blk[48:176]
		y := dst[b*QKK:]
		is := 0
		u1, u2 := uint8(1), uint8(2)
		for j := 0; j < QKK; j += 64 {
			s1, m1 := scaleMinK4(is, sc)
			s2, m2 := scaleMinK4(is+1, sc)
			d1, mm1 := float32(d*float32(s1)), float32(mn*float32(m1))
			d2, mm2 := float32(d*float32(s2)), float32(mn*float32(m2))
			for l := 0; l < 32; l++ {
				h1, h2 := 0, 0
				if qh[l]&u1 != 0 {
					h1 = 16
				}
				if qh[l]&u2 != 0 {
					h2 = 16
				}
				y[l] = float32(d1*float32(int(ql[l]&0xF)+h1)) - mm1
				y[32+l] = float32(d2*float32(int(ql[l]>>4)+h2)) - mm2
			}
			y, ql, is = y[64:], ql[32:], is+2
			u1 <<= 2
			u2 <<= 2
		}
	}
}

func deqQ6_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QKK; b++ {
		blk := src[b*210:]
		ql, qh, sc := blk[0:128], blk[128:192], blk[192:208]
		d := f16to32(blk[208:])
		y := dst[b*QKK:]
		for n := 0; n < QKK; n += 128 {
			for l := 0; l < 32; l++ {
				is := l / 16
				q1 := int8(ql[l]&0xF|((qh[l]>>0)&3)<<4) - 32
				q2 := int8(ql[l+32]&0xF|((qh[l]>>2)&3)<<4) - 32
				q3 := int8(ql[l]>>4|((qh[l]>>4)&3)<<4) - 32
				q4 := int8(ql[l+32]>>4|((qh[l]>>6)&3)<<4) - 32
				y[l] = float32(d*float32(int8(sc[is]))) * float32(q1)
				y[l+32] = float32(d*float32(int8(sc[is+2]))) * float32(q2)
				y[l+64] = float32(d*float32(int8(sc[is+4]))) * float32(q3)
				y[l+96] = float32(d*float32(int8(sc[is+6]))) * float32(q4)
			}
			y, ql, qh, sc = y[128:], ql[64:], qh[32:], sc[8:]
		}
	}
}

// deqQ8_K decodes ggml's Q8_K (float32 d, 256 int8 levels, 16 int16 sums).
func deqQ8_K(src []byte, dst []float32) {
	for b := 0; b < len(dst)/QKK; b++ {
		blk := src[b*292:]
		d := math.Float32frombits(binary.LittleEndian.Uint32(blk))
		for j := 0; j < QKK; j++ {
			dst[b*QKK+j] = d * float32(int8(blk[4+j]))
		}
	}
}
