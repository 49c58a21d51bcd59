package weights

import (
	"errors"
	"fmt"
	"math/bits"
	"sort"
	"strings"
)

// TensorInfo describes one tensor of a checkpoint without its data.
type TensorInfo struct {
	Name  string
	DType DType
	Shape []int64
}

// ErrOverflow reports a shape whose element or byte count does not fit in an
// int64 (a hostile or corrupt header).
var ErrOverflow = errors.New("shape overflows int64")

// NumElements is the product of the shape (1 for a scalar), checked for
// overflow and negative dimensions.
func (t TensorInfo) NumElements() (int64, error) {
	n := uint64(1)
	for _, d := range t.Shape {
		if d < 0 {
			return 0, fmt.Errorf("negative dimension %d in shape %v", d, t.Shape)
		}
		hi, lo := bits.Mul64(n, uint64(d))
		if hi != 0 || lo > 1<<62 {
			return 0, fmt.Errorf("%w: %v", ErrOverflow, t.Shape)
		}
		n = lo
	}
	return int64(n), nil
}

// ByteSize is the tensor's size in bytes: NumElements × the dtype's
// size, or for a block type the number of blocks × the block's bytes (the
// last dimension must then be a whole number of blocks), checked for
// overflow.
func (t TensorInfo) ByteSize() (int64, error) {
	n, err := t.NumElements()
	if err != nil {
		return 0, err
	}
	be, bb := t.DType.BlockElems(), t.DType.BlockBytes()
	if be == 0 {
		return 0, fmt.Errorf("unknown dtype %v", t.DType)
	}
	if be > 1 {
		if len(t.Shape) == 0 || t.Shape[len(t.Shape)-1]%be != 0 {
			return 0, fmt.Errorf("%s stores blocks of %d values: the last dimension of %v is not a multiple", t.DType, be, t.Shape)
		}
	}
	if n/be > (1<<62)/bb {
		return 0, fmt.Errorf("%w: %v × %d bytes per %d values", ErrOverflow, t.Shape, bb, be)
	}
	return n / be * bb, nil
}

// bytes is ByteSize for infos already validated when opened.
func (t TensorInfo) bytes() int64 {
	b, _ := t.ByteSize()
	return b
}

// ShapeString formats a shape as [a, b, c].
func (t TensorInfo) ShapeString() string {
	parts := make([]string, len(t.Shape))
	for i, d := range t.Shape {
		parts[i] = fmt.Sprint(d)
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

// SameShape reports whether two shapes are equal.
func SameShape(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// Tensor is a tensor's description with its raw little-endian bytes,
// contiguous in row-major order.
type Tensor struct {
	TensorInfo
	Data []byte
}

// Float32s decodes the tensor's elements to float32.
func (t Tensor) Float32s() ([]float32, error) {
	n, err := t.NumElements()
	if err != nil {
		return nil, err
	}
	out := make([]float32, n)
	return out, DecodeFloat32(t.DType, t.Data, out)
}

// Float64s decodes the tensor's elements to float64.
func (t Tensor) Float64s() ([]float64, error) {
	n, err := t.NumElements()
	if err != nil {
		return nil, err
	}
	out := make([]float64, n)
	return out, Decode(t.DType, t.Data, out)
}

// NaturalLess orders names with embedded numbers by value, so
// "layers.9.w" < "layers.10.w" — the order a network's layers run in.
func NaturalLess(a, b string) bool {
	for a != "" && b != "" {
		ca, cb := a[0], b[0]
		if isDigit(ca) && isDigit(cb) {
			na, ra := leadingDigits(a)
			nb, rb := leadingDigits(b)
			ta, tb := strings.TrimLeft(na, "0"), strings.TrimLeft(nb, "0")
			if len(ta) != len(tb) {
				return len(ta) < len(tb)
			}
			if ta != tb {
				return ta < tb
			}
			if len(na) != len(nb) {
				return len(na) < len(nb)
			}
			a, b = ra, rb
			continue
		}
		if ca != cb {
			return ca < cb
		}
		a, b = a[1:], b[1:]
	}
	return len(a) < len(b)
}

func isDigit(c byte) bool { return c >= '0' && c <= '9' }

func leadingDigits(s string) (string, string) {
	i := 0
	for i < len(s) && isDigit(s[i]) {
		i++
	}
	return s[:i], s[i:]
}

// SortNatural sorts tensor infos by NaturalLess on their names.
func SortNatural(infos []TensorInfo) {
	sort.SliceStable(infos, func(i, j int) bool { return NaturalLess(infos[i].Name, infos[j].Name) })
}
