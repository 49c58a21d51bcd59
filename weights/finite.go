package weights

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/weightops/weightops/internal/vec"
)

// CountNonFinite counts the NaN and ±Inf values of a floating tensor's
// bytes (0, 0 for other dtypes), straight from the bit patterns for the
// common dtypes.
func CountNonFinite(dt DType, data []byte) (nan, inf int64, err error) {
	err = eachNonFinite(dt, data, func(_ int, isNaN bool) {
		if isNaN {
			nan++
		} else {
			inf++
		}
	})
	return nan, inf, err
}

// MarkNonFinite sets mark[i] for every element i of data that is NaN or
// ±Inf and reports how many it found.
func MarkNonFinite(dt DType, data []byte, mark []bool) (int64, error) {
	var n int64
	err := eachNonFinite(dt, data, func(i int, _ bool) {
		mark[i] = true
		n++
	})
	return n, err
}

// HasNonFinite reports whether a floating tensor's bytes hold a NaN or
// ±Inf (false for other dtypes; block types and the F8s are decoded).
func HasNonFinite(dt DType, data []byte) bool {
	if w, ok := swarLanes[dt]; ok {
		return swarFirst(w, data) < len(data)
	}
	found := false
	_ = eachNonFinite(dt, data, func(int, bool) { found = true })
	return found
}

// swar describes a dtype's exponent field for a SIMD-within-a-register
// scan of 8 bytes at a time: lanes of size bytes, exp the exponent mask of
// one lane repeated, one the lowest exponent bit repeated, top the lanes'
// top bits. A lane's exponent is all ones (NaN or Inf) exactly when
// (x&exp)+one carries into its top bit: exp+one is the top bit, anything
// less stays below it, and no lane carries into the next.
type swar struct {
	size          int
	exp, one, top uint64
}

var swarLanes = map[DType]swar{
	BF16: {2, 0x7f807f807f807f80, 0x0080008000800080, 0x8000800080008000},
	F16:  {2, 0x7c007c007c007c00, 0x0400040004000400, 0x8000800080008000},
	F32:  {4, 0x7f8000007f800000, 0x0080000000800000, 0x8000000080000000},
	F64:  {8, 0x7ff0000000000000, 0x0010000000000000, 0x8000000000000000},
}

// swarFirst returns the byte offset of the first 8-byte word of data
// holding a non-finite lane (rounded down to a whole word), or len(data)
// when there is none. A tail shorter than a word is reported as a
// candidate (its offset) when non-empty, for the caller's exact scan.
func swarFirst(w swar, data []byte) int {
	le := binary.LittleEndian
	i := vec.SkipClear(data, w.exp, w.one, w.top)
	for ; i+32 <= len(data); i += 32 {
		a := (le.Uint64(data[i:])&w.exp + w.one) | (le.Uint64(data[i+8:])&w.exp + w.one) |
			(le.Uint64(data[i+16:])&w.exp + w.one) | (le.Uint64(data[i+24:])&w.exp + w.one)
		if a&w.top != 0 {
			break
		}
	}
	for ; i+8 <= len(data); i += 8 {
		if (le.Uint64(data[i:])&w.exp+w.one)&w.top != 0 {
			return i
		}
	}
	if i < len(data) && w.size < 8 {
		var tail [8]byte
		copy(tail[:], data[i:])
		if (le.Uint64(tail[:])&w.exp+w.one)&w.top != 0 {
			return i
		}
	}
	return len(data)
}

func eachNonFinite(dt DType, data []byte, fn func(i int, isNaN bool)) error {
	le := binary.LittleEndian
	if w, ok := swarLanes[dt]; ok {
		// Skip the (usual) finite words 32 bytes at a time; scan exactly
		// from the first word that holds a candidate.
		start := swarFirst(w, data)
		data = data[start:]
		base := start / w.size
		switch dt {
		case BF16:
			for i, u := range u16(data) {
				if u&0x7f80 == 0x7f80 {
					fn(base+i, u&0x007f != 0)
				}
			}
		case F16:
			for i, u := range u16(data) {
				if u&0x7c00 == 0x7c00 {
					fn(base+i, u&0x03ff != 0)
				}
			}
		case F32:
			for i := 0; i+4 <= len(data); i += 4 {
				if u := le.Uint32(data[i:]); u&0x7f800000 == 0x7f800000 {
					fn(base+i/4, u&0x007fffff != 0)
				}
			}
		case F64:
			for i := 0; i+8 <= len(data); i += 8 {
				if u := le.Uint64(data[i:]); u&0x7ff0000000000000 == 0x7ff0000000000000 {
					fn(base+i/8, u&0x000fffffffffffff != 0)
				}
			}
		}
		return nil
	}
	switch dt {
	default:
		if !dt.IsFloat() {
			return nil
		}
		// The rest (F8, block types) through decoding, in row-sized
		// chunks of whole blocks.
		var buf [1024]float32
		n := int(int64(len(data)) / dt.BlockBytes() * dt.BlockElems())
		for s := 0; s < n; s += len(buf) {
			e := min(n, s+len(buf))
			if err := DecodeFloat32(dt, data[dt.Bytes(int64(s)):dt.Bytes(int64(e))], buf[:e-s]); err != nil {
				return err
			}
			for j, v := range buf[:e-s] {
				if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
					fn(s+j, math.IsNaN(float64(v)))
				}
			}
		}
	}
	return nil
}

// ZeroMarked sets the marked elements of an element-type tensor's bytes to
// zero. Block types cannot change one value of a block and are refused.
func ZeroMarked(dt DType, data []byte, mark []bool) error {
	es := dt.Size()
	if es == 0 {
		return fmt.Errorf("%s: cannot zero single values of a block type", dt)
	}
	for i, m := range mark {
		if m {
			clear(data[i*es : (i+1)*es])
		}
	}
	return nil
}

// SetNaNMarked writes a quiet NaN at the marked elements of a floating
// tensor's bytes (writable float dtypes; others are left alone).
func SetNaNMarked(dt DType, data []byte, mark []bool) {
	le := binary.LittleEndian
	for i, m := range mark {
		if !m {
			continue
		}
		switch dt {
		case BF16:
			le.PutUint16(data[2*i:], 0x7fc0)
		case F16:
			le.PutUint16(data[2*i:], 0x7e00)
		case F32:
			le.PutUint32(data[4*i:], 0x7fc00000)
		case F64:
			le.PutUint64(data[8*i:], 0x7ff8000000000000)
		}
	}
}
