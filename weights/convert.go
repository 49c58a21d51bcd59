package weights

import (
	"encoding/binary"
	"fmt"
	"math"
	"unsafe"

	"github.com/weightops/weightops/internal/vec"
	"github.com/x448/float16"
)

// Decode converts n = len(dst) elements of dtype dt stored little-endian in
// src into float64. Integer and BOOL values convert exactly up to 2^53; NaN
// and ±Inf are preserved.
func Decode(dt DType, src []byte, dst []float64) error {
	if err := checkLen("decode", dt, len(src), len(dst)); err != nil {
		return err
	}
	le := binary.LittleEndian
	switch dt {
	case Q8_0, Q4_0:
		var blk [32]float32
		bb := int(dt.BlockBytes())
		for b := 0; b*32 < len(dst); b++ {
			decodeBlock(dt, src[b*bb:(b+1)*bb], blk[:])
			for j, v := range blk {
				dst[b*32+j] = float64(v)
			}
		}
	case F64:
		for i := range dst {
			dst[i] = math.Float64frombits(le.Uint64(src[8*i:]))
		}
	case F32:
		for i, v := range f32(src)[:len(dst)] {
			dst[i] = float64(v)
		}
	case F16:
		for i, u := range u16(src)[:len(dst)] {
			dst[i] = float64(float16.Frombits(u).Float32())
		}
	case BF16:
		vec.DecodeBF16(dst, u16(src)[:len(dst)])
	case F8E4M3:
		for i := range dst {
			dst[i] = f8e4m3ToFloat64(src[i])
		}
	case F8E5M2:
		for i := range dst {
			// E5M2 is the top byte of an IEEE half.
			dst[i] = float64(float16.Frombits(uint16(src[i]) << 8).Float32())
		}
	case I64:
		for i := range dst {
			dst[i] = float64(int64(le.Uint64(src[8*i:])))
		}
	case U64:
		for i := range dst {
			dst[i] = float64(le.Uint64(src[8*i:]))
		}
	case I32:
		for i := range dst {
			dst[i] = float64(int32(le.Uint32(src[4*i:])))
		}
	case U32:
		for i := range dst {
			dst[i] = float64(le.Uint32(src[4*i:]))
		}
	case I16:
		for i := range dst {
			dst[i] = float64(int16(le.Uint16(src[2*i:])))
		}
	case U16:
		for i := range dst {
			dst[i] = float64(le.Uint16(src[2*i:]))
		}
	case I8:
		for i := range dst {
			dst[i] = float64(int8(src[i]))
		}
	case U8, Bool:
		for i := range dst {
			dst[i] = float64(src[i])
		}
	default:
		return fmt.Errorf("decode: unsupported dtype %s", dt)
	}
	return nil
}

// DecodeFloat32 converts elements of dtype dt into float32, the working
// precision of merges. F64 values round to nearest even.
func DecodeFloat32(dt DType, src []byte, dst []float32) error {
	if err := checkLen("decode", dt, len(src), len(dst)); err != nil {
		return err
	}
	le := binary.LittleEndian
	switch dt {
	case Q8_0, Q4_0:
		bb := int(dt.BlockBytes())
		for b := 0; b*32 < len(dst); b++ {
			decodeBlock(dt, src[b*bb:(b+1)*bb], dst[b*32:(b+1)*32])
		}
	case F32:
		copy(dst, f32(src))
	case BF16:
		// The hot path of every merge: a shift per element on a uint16 view.
		u := u16(src)
		for i := range dst {
			dst[i] = math.Float32frombits(uint32(u[i]) << 16)
		}
	case F16:
		for i := range dst {
			dst[i] = float16.Frombits(le.Uint16(src[2*i:])).Float32()
		}
	default:
		// Rare paths go through float64 in chunks to avoid a second full copy.
		var buf [256]float64
		for i := 0; i < len(dst); i += len(buf) {
			n := min(len(buf), len(dst)-i)
			if err := Decode(dt, src[dt.Bytes(int64(i)):dt.Bytes(int64(i+n))], buf[:n]); err != nil {
				return err
			}
			for j := 0; j < n; j++ {
				dst[i+j] = float32(buf[j])
			}
		}
	}
	return nil
}

// Encode converts float64 values into dtype dt, little-endian, into dst
// (len(dst) must be len(src)*dt.Size()). Floating formats round to nearest,
// ties to even, directly from float64 (no double rounding through float32);
// NaN and ±Inf are preserved; values beyond a format's range become ±Inf.
// Integer formats round to nearest even and saturate; NaN becomes 0.
func Encode(dt DType, src []float64, dst []byte) error {
	if len(dst) != len(src)*dt.Size() {
		return fmt.Errorf("encode %s: %d bytes for %d elements", dt, len(dst), len(src))
	}
	le := binary.LittleEndian
	switch dt {
	case F64:
		for i, v := range src {
			le.PutUint64(dst[8*i:], math.Float64bits(v))
		}
	case F32:
		for i, v := range src {
			le.PutUint32(dst[4*i:], math.Float32bits(float32(v)))
		}
	case F16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], float16.Fromfloat32(roundToOdd32(v)).Bits())
		}
	case BF16:
		// u16 views the bytes in host order: little-endian (endian.go).
		vec.EncodeBF16(u16(dst), src, bf16FromFloat64)
	case I64:
		for i, v := range src {
			le.PutUint64(dst[8*i:], uint64(toInt64(v)))
		}
	case U64:
		for i, v := range src {
			le.PutUint64(dst[8*i:], toUint64(v))
		}
	case I32:
		for i, v := range src {
			le.PutUint32(dst[4*i:], uint32(int32(saturate(v, math.MinInt32, math.MaxInt32))))
		}
	case U32:
		for i, v := range src {
			le.PutUint32(dst[4*i:], uint32(saturate(v, 0, math.MaxUint32)))
		}
	case I16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], uint16(int16(saturate(v, math.MinInt16, math.MaxInt16))))
		}
	case U16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], uint16(saturate(v, 0, math.MaxUint16)))
		}
	case I8:
		for i, v := range src {
			dst[i] = byte(int8(saturate(v, math.MinInt8, math.MaxInt8)))
		}
	case U8:
		for i, v := range src {
			dst[i] = byte(saturate(v, 0, math.MaxUint8))
		}
	case Bool:
		for i, v := range src {
			if v != 0 && !math.IsNaN(v) {
				dst[i] = 1
			} else {
				dst[i] = 0
			}
		}
	default:
		return fmt.Errorf("encode: cannot write dtype %s", dt)
	}
	return nil
}

// EncodeFloat32 converts float32 values into dtype dt (see Encode).
func EncodeFloat32(dt DType, src []float32, dst []byte) error {
	if len(dst) != len(src)*dt.Size() {
		return fmt.Errorf("encode %s: %d bytes for %d elements", dt, len(dst), len(src))
	}
	le := binary.LittleEndian
	switch dt {
	case F32:
		for i, v := range src {
			le.PutUint32(dst[4*i:], math.Float32bits(v))
		}
	case BF16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], bf16FromFloat32(v))
		}
	case F16:
		for i, v := range src {
			le.PutUint16(dst[2*i:], float16.Fromfloat32(v).Bits())
		}
	default:
		var buf [256]float64
		es := dt.Size()
		for i := 0; i < len(src); i += len(buf) {
			n := min(len(buf), len(src)-i)
			for j := 0; j < n; j++ {
				buf[j] = float64(src[i+j])
			}
			if err := Encode(dt, buf[:n], dst[i*es:(i+n)*es]); err != nil {
				return err
			}
		}
	}
	return nil
}

// ConvertBytes re-encodes a whole tensor's bytes from one dtype to another.
// Same-dtype conversion copies bytes unchanged (NaN payloads included).
func ConvertBytes(from, to DType, src []byte) ([]byte, error) {
	return ConvertBytesInto(from, to, src, nil)
}

// ConvertBytesInto is ConvertBytes writing into buf when its capacity
// suffices, so a streaming loop reuses one output buffer per worker.
func ConvertBytesInto(from, to DType, src, buf []byte) ([]byte, error) {
	bb := int(from.BlockBytes())
	if bb == 0 || len(src)%bb != 0 {
		return nil, fmt.Errorf("convert %s: %d bytes is not a whole number of elements", from, len(src))
	}
	n := len(src) / bb * int(from.BlockElems())
	if from == to {
		if cap(buf) < len(src) {
			buf = make([]byte, len(src))
		}
		dst := buf[:len(src)]
		copy(dst, src)
		return dst, nil
	}
	if !to.Writable() {
		return nil, fmt.Errorf("convert: cannot write dtype %s", to)
	}
	if cap(buf) < n*to.Size() {
		buf = make([]byte, n*to.Size())
	}
	dst := buf[:n*to.Size()]
	switch {
	case from == BF16 && to == F32:
		// Widening is a byte shuffle: BF16 is the top half of an F32.
		for i := 0; i < n; i++ {
			d := dst[4*i : 4*i+4 : 4*i+4]
			d[0], d[1], d[2], d[3] = 0, 0, src[2*i], src[2*i+1]
		}
		return dst, nil
	case from == F32 && to == BF16:
		le := binary.LittleEndian
		for i := 0; i < n; i++ {
			le.PutUint16(dst[2*i:], bf16FromFloat32(math.Float32frombits(le.Uint32(src[4*i:]))))
		}
		return dst, nil
	}
	if from == F32 || from == BF16 || from == F16 {
		if to == F32 || to == BF16 || to == F16 {
			// Exact widening or single rounding: float32 is wide enough.
			var f32 [1024]float32
			fs, ts := from.Size(), to.Size()
			for i := 0; i < n; i += len(f32) {
				k := min(len(f32), n-i)
				if err := DecodeFloat32(from, src[i*fs:(i+k)*fs], f32[:k]); err != nil {
					return nil, err
				}
				if err := EncodeFloat32(to, f32[:k], dst[i*ts:(i+k)*ts]); err != nil {
					return nil, err
				}
			}
			return dst, nil
		}
	}
	var f64 [1024]float64
	ts := to.Size()
	for i := 0; i < n; i += len(f64) {
		k := min(len(f64), n-i)
		if err := Decode(from, src[from.Bytes(int64(i)):from.Bytes(int64(i+k))], f64[:k]); err != nil {
			return nil, err
		}
		if err := Encode(to, f64[:k], dst[i*ts:(i+k)*ts]); err != nil {
			return nil, err
		}
	}
	return dst, nil
}

// u16 and f32 view little-endian bytes as elements without copying; the
// host is little-endian (see endian.go), so the bits are already in place.
func u16(b []byte) []uint16 {
	if len(b) < 2 {
		return nil
	}
	return unsafe.Slice((*uint16)(unsafe.Pointer(&b[0])), len(b)/2)
}

// Float32View views little-endian F32 bytes as float32 values without
// copying (the host is little-endian, see endian.go); the slices share
// memory.
func Float32View(b []byte) []float32 { return f32(b) }

// Uint16View views little-endian 16-bit elements (BF16, F16 bits) as
// uint16 values without copying, as Float32View does for F32.
func Uint16View(b []byte) []uint16 { return u16(b) }

func f32(b []byte) []float32 {
	if len(b) < 4 {
		return nil
	}
	return unsafe.Slice((*float32)(unsafe.Pointer(&b[0])), len(b)/4)
}

// bf16FromFloat32 rounds a float32 to bfloat16, nearest even. NaNs keep
// their sign and top payload bits and are forced quiet so that truncation
// cannot turn them into infinities.
func bf16FromFloat32(f float32) uint16 {
	b := math.Float32bits(f)
	if b&0x7fffffff > 0x7f800000 {
		return uint16(b>>16) | 0x0040
	}
	b += 0x7fff + (b>>16)&1
	return uint16(b >> 16)
}

// bf16FromFloat64 rounds a float64 to bfloat16, nearest even, in one step
// on the bits for the normal range (the merge output hot path); zeros,
// subnormals, overflow and NaN take the general round-to-odd path.
func bf16FromFloat64(x float64) uint16 {
	b := math.Float64bits(x)
	e := (b >> 52) & 0x7ff
	// BF16 normals have float32's exponents 1..254: float64 897..1150.
	if e < 897 || e > 1150 {
		return bf16FromFloat32(roundToOdd32(x))
	}
	// Keep 7 mantissa bits: add just under half a unit of bit 45, plus
	// one more when bit 45 is set, so exact halves go to even. A carry out
	// of the mantissa bumps the exponent, as it should.
	r := b + (1<<44 - 1) + ((b >> 45) & 1)
	sign := uint16(b>>48) & 0x8000
	e2 := (r >> 52) & 0x7ff
	if e2 > 1150 {
		return sign | 0x7f80 // rounded past the largest finite: ±Inf
	}
	return sign | uint16(e2-896)<<7 | uint16((r>>45)&0x7f)
}

// roundToOdd32 converts a float64 to float32 with round-to-odd: truncate,
// then set the last bit if anything was lost. Rounding that result to a
// format of at most 22 significant bits (F16: 11, BF16: 8) gives the same
// answer as rounding the float64 directly, so F64 → F16/BF16 is correctly
// rounded without a big-float path.
func roundToOdd32(x float64) float32 {
	f := float32(x)
	if float64(f) == x || math.IsNaN(x) {
		return f
	}
	if math.Abs(float64(f)) > math.Abs(x) {
		// float32(x) rounded away from zero (possibly to Inf): step back.
		f = math.Nextafter32(f, 0)
	}
	return math.Float32frombits(math.Float32bits(f) | 1)
}

// f8e4m3ToFloat64 decodes the FN variant used by PyTorch's float8_e4m3fn:
// bias 7, no infinities, S.1111.111 is NaN.
func f8e4m3ToFloat64(b byte) float64 {
	sign := 1.0
	if b&0x80 != 0 {
		sign = -1
	}
	e := int(b>>3) & 0xf
	m := float64(b & 7)
	switch {
	case e == 0xf && b&7 == 7:
		return math.NaN()
	case e == 0:
		return sign * m / 8 * math.Ldexp(1, -6)
	default:
		return sign * (1 + m/8) * math.Ldexp(1, e-7)
	}
}

// saturate rounds to nearest even and clamps to [lo, hi]; both bounds are
// exactly representable for integer types up to 32 bits. NaN becomes 0.
func saturate(v, lo, hi float64) float64 {
	if math.IsNaN(v) {
		return 0
	}
	return math.Max(lo, math.Min(hi, math.RoundToEven(v)))
}

// toInt64 is saturate for int64, whose maximum is not a float64.
func toInt64(v float64) int64 {
	switch {
	case math.IsNaN(v):
		return 0
	case v >= 0x1p63:
		return math.MaxInt64
	case v <= -0x1p63:
		return math.MinInt64
	}
	return int64(math.RoundToEven(v))
}

// toUint64 is saturate for uint64.
func toUint64(v float64) uint64 {
	switch {
	case math.IsNaN(v) || v <= 0:
		return 0
	case v >= 0x1p64:
		return math.MaxUint64
	}
	return uint64(math.RoundToEven(v))
}

// DeltaFloat32 computes dst[i] = float32(x_i − base[i]) for the elements x
// of dtype dt in src: a task vector entry rounded once, decoded and
// subtracted in one loop.
func DeltaFloat32(dt DType, src []byte, base []float64, dst []float32) error {
	n := len(dst)
	if len(base) < n || checkLen("delta", dt, len(src), n) != nil {
		return fmt.Errorf("delta %s: %d bytes, %d base values for %d elements", dt, len(src), len(base), n)
	}
	switch dt {
	case BF16:
		vec.DeltaBF16(dst, u16(src)[:n], base)
	case F32:
		for i, x := range f32(src)[:n] {
			dst[i] = float32(float64(x) - base[i])
		}
	default:
		var buf [256]float64
		for i := 0; i < n; i += len(buf) {
			k := min(len(buf), n-i)
			if err := Decode(dt, src[dt.Bytes(int64(i)):dt.Bytes(int64(i+k))], buf[:k]); err != nil {
				return err
			}
			for j := 0; j < k; j++ {
				dst[i+j] = float32(buf[j] - base[i+j])
			}
		}
	}
	return nil
}

// DeltaPairFloat32 is DeltaFloat32 with the base still in its bytes (of the
// same dtype as src), bit for bit: dst[i] = float32(x_i − b_i), computed
// in float32 (x − b rounded once, as float64 then float32 rounds it). It
// reports false, doing nothing, for a dtype it has no such path for; the
// caller then decodes the base.
func DeltaPairFloat32(dt DType, src, base []byte, dst []float32) (bool, error) {
	n := len(dst)
	if dt != BF16 && dt != F32 {
		return false, nil
	}
	if checkLen("delta", dt, len(src), n) != nil || checkLen("delta", dt, len(base), n) != nil {
		return false, fmt.Errorf("delta %s: %d and %d bytes for %d elements", dt, len(src), len(base), n)
	}
	if dt == BF16 {
		vec.DeltaPairBF16(dst, u16(src)[:n], u16(base)[:n])
		return true, nil
	}
	b := f32(base)[:n]
	for i, x := range f32(src)[:n] {
		dst[i] = x - b[i]
	}
	return true, nil
}

// Linear2 sets o[i] = ((0 + w0·a_i) + w1·b_i) / div for the values of a
// and b, both of dtype dt, straight from their bytes (vec.Linear2BF16),
// bit for bit what decoding them first gives. It reports false, doing
// nothing, for a dtype it has no such path for.
func Linear2(dt DType, a, b []byte, w0, w1, div float64, o []float64) (bool, error) {
	n := len(o)
	if dt != BF16 {
		return false, nil
	}
	if checkLen("linear", dt, len(a), n) != nil || checkLen("linear", dt, len(b), n) != nil {
		return false, fmt.Errorf("linear %s: %d and %d bytes for %d elements", dt, len(a), len(b), n)
	}
	vec.Linear2BF16(o, u16(a)[:n], u16(b)[:n], w0, w1, div)
	return true, nil
}

// checkLen verifies that nbytes hold exactly n values of dt (whole blocks
// for a block type).
func checkLen(op string, dt DType, nbytes, n int) error {
	be := dt.BlockElems()
	if be == 0 {
		return fmt.Errorf("%s: unsupported dtype %s", op, dt)
	}
	if int64(n)%be != 0 || int64(nbytes) != dt.Bytes(int64(n)) {
		return fmt.Errorf("%s %s: %d bytes for %d elements", op, dt, nbytes, n)
	}
	return nil
}

// decodeBlock expands one Q8_0 or Q4_0 block (see the DType constants for
// the layouts, which are ggml's block_q8_0 and block_q4_0) into 32 values.
func decodeBlock(dt DType, b []byte, out []float32) {
	d := float16.Frombits(binary.LittleEndian.Uint16(b)).Float32()
	switch dt {
	case Q8_0:
		for j := range 32 {
			out[j] = d * float32(int8(b[2+j]))
		}
	case Q4_0:
		for j := range 16 {
			q := b[2+j]
			out[j] = d * float32(int(q&0x0f)-8)
			out[j+16] = d * float32(int(q>>4)-8)
		}
	}
}
