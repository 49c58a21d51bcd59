package gguf

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
)

// Magic is the first four bytes of a GGUF file.
const Magic = "GGUF"

// DefaultAlignment is the data alignment when general.alignment is absent.
const DefaultAlignment = 32

// ValueType is a GGUF metadata value's type id.
type ValueType uint32

// The metadata value types.
const (
	TypeUint8   ValueType = 0
	TypeInt8    ValueType = 1
	TypeUint16  ValueType = 2
	TypeInt16   ValueType = 3
	TypeUint32  ValueType = 4
	TypeInt32   ValueType = 5
	TypeFloat32 ValueType = 6
	TypeBool    ValueType = 7
	TypeString  ValueType = 8
	TypeArray   ValueType = 9
	TypeUint64  ValueType = 10
	TypeInt64   ValueType = 11
	TypeFloat64 ValueType = 12
)

var scalarSize = map[ValueType]int{
	TypeUint8: 1, TypeInt8: 1, TypeBool: 1, TypeUint16: 2, TypeInt16: 2,
	TypeUint32: 4, TypeInt32: 4, TypeFloat32: 4, TypeUint64: 8, TypeInt64: 8, TypeFloat64: 8,
}

// KV is one metadata entry. Value holds uint8 … float64, bool, string, or
// for an array an Array.
type KV struct {
	Key   string
	Type  ValueType
	Value any
}

// Array is an array value: its element type and elements (Go values as
// in KV).
type Array struct {
	Elem   ValueType
	Values []any
}

// TensorInfo is one tensor of a GGUF file: dims in ggml order (the
// fastest-varying first), the offset from the start of the data section.
type TensorInfo struct {
	Name   string
	Dims   []uint64
	Type   Type
	Offset uint64
	Size   uint64
}

// Elements is the product of the dims.
func (t TensorInfo) Elements() uint64 {
	n := uint64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// File is a parsed GGUF header.
type File struct {
	Version   uint32
	KV        []KV
	Tensors   []TensorInfo
	Alignment uint64
	// DataOffset is where the data section starts in the file.
	DataOffset int64
	kv         map[string]int
}

// Get returns a metadata value.
func (f *File) Get(key string) (any, bool) {
	i, ok := f.kv[key]
	if !ok {
		return nil, false
	}
	return f.KV[i].Value, true
}

// String returns a string value ("" when absent or not a string).
func (f *File) String(key string) string {
	v, _ := f.Get(key)
	s, _ := v.(string)
	return s
}

// Uint returns an integer value as uint64 (false when absent, negative or
// not an integer).
func (f *File) Uint(key string) (uint64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case uint8:
		return uint64(x), true
	case uint16:
		return uint64(x), true
	case uint32:
		return uint64(x), true
	case uint64:
		return x, true
	case int8:
		return uint64(x), x >= 0
	case int16:
		return uint64(x), x >= 0
	case int32:
		return uint64(x), x >= 0
	case int64:
		return uint64(x), x >= 0
	}
	return 0, false
}

// Float returns a numeric value as float64.
func (f *File) Float(key string) (float64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	switch x := v.(type) {
	case float32:
		return float64(x), true
	case float64:
		return x, true
	}
	if u, ok := f.Uint(key); ok {
		return float64(u), true
	}
	return 0, false
}

// reader reads the header with bounds: no read or allocation past the
// file's size.
type reader struct {
	r    io.ReaderAt
	off  int64
	size int64
	buf  [8]byte
}

var errTruncated = errors.New("truncated")

func (r *reader) read(n int) ([]byte, error) {
	if n < 0 || int64(n) > r.size-r.off {
		return nil, errTruncated
	}
	var b []byte
	if n <= len(r.buf) {
		b = r.buf[:n]
	} else {
		b = make([]byte, n)
	}
	if _, err := r.r.ReadAt(b, r.off); err != nil {
		return nil, err
	}
	r.off += int64(n)
	return b, nil
}

func (r *reader) u32() (uint32, error) {
	b, err := r.read(4)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint32(b), nil
}

func (r *reader) u64() (uint64, error) {
	b, err := r.read(8)
	if err != nil {
		return 0, err
	}
	return binary.LittleEndian.Uint64(b), nil
}

// maxString bounds a metadata string or tensor name (llama.cpp's
// vocabulary strings are short; a longer one is a corrupt file).
const maxString = 1 << 24

func (r *reader) str() (string, error) {
	n, err := r.u64()
	if err != nil {
		return "", err
	}
	if n > maxString || int64(n) > r.size-r.off {
		return "", fmt.Errorf("a string of %d bytes at offset %d runs past the file", n, r.off-8)
	}
	b, err := r.read(int(n))
	return string(b), err
}

func (r *reader) value(t ValueType, depth int) (any, error) {
	switch t {
	case TypeUint8, TypeInt8, TypeBool, TypeUint16, TypeInt16, TypeUint32, TypeInt32, TypeFloat32, TypeUint64, TypeInt64, TypeFloat64:
		b, err := r.read(scalarSize[t])
		if err != nil {
			return nil, err
		}
		switch t {
		case TypeUint8:
			return b[0], nil
		case TypeInt8:
			return int8(b[0]), nil
		case TypeBool:
			if b[0] > 1 {
				return nil, fmt.Errorf("bool value %d", b[0])
			}
			return b[0] == 1, nil
		case TypeUint16:
			return binary.LittleEndian.Uint16(b), nil
		case TypeInt16:
			return int16(binary.LittleEndian.Uint16(b)), nil
		case TypeUint32:
			return binary.LittleEndian.Uint32(b), nil
		case TypeInt32:
			return int32(binary.LittleEndian.Uint32(b)), nil
		case TypeFloat32:
			return math.Float32frombits(binary.LittleEndian.Uint32(b)), nil
		case TypeUint64:
			return binary.LittleEndian.Uint64(b), nil
		case TypeInt64:
			return int64(binary.LittleEndian.Uint64(b)), nil
		default:
			return math.Float64frombits(binary.LittleEndian.Uint64(b)), nil
		}
	case TypeString:
		return r.str()
	case TypeArray:
		if depth > 2 {
			return nil, errors.New("arrays nested too deep")
		}
		et, err := r.u32()
		if err != nil {
			return nil, err
		}
		n, err := r.u64()
		if err != nil {
			return nil, err
		}
		// Every element takes at least a byte (a string 8): the count is
		// bounded by what is left of the file before anything is allocated.
		least := int64(1)
		if s, ok := scalarSize[ValueType(et)]; ok {
			least = int64(s)
		} else if ValueType(et) == TypeString || ValueType(et) == TypeArray {
			least = 8
		} else {
			return nil, fmt.Errorf("array of unknown type %d", et)
		}
		if n > uint64((r.size-r.off)/least) {
			return nil, fmt.Errorf("an array of %d elements runs past the file", n)
		}
		a := Array{Elem: ValueType(et), Values: make([]any, 0, n)}
		for i := uint64(0); i < n; i++ {
			v, err := r.value(ValueType(et), depth+1)
			if err != nil {
				return nil, err
			}
			a.Values = append(a.Values, v)
		}
		return a, nil
	}
	return nil, fmt.Errorf("unknown value type %d", t)
}

// maxDims is ggml's GGML_MAX_DIMS.
const maxDims = 4

// Parse reads and validates a GGUF header from r (size bytes long):
// counts, string and array lengths, value types, tensor dims (at most 4,
// no overflow), type ids, block alignment of the first dim, the data
// alignment and every tensor's extent within the file. Nothing is
// allocated beyond what the file's bytes can hold.
func Parse(r io.ReaderAt, size int64) (*File, error) {
	rd := &reader{r: r, size: size}
	magic, err := rd.read(4)
	if err != nil || string(magic) != Magic {
		return nil, errors.New("not a GGUF file (no GGUF magic)")
	}
	f := &File{kv: map[string]int{}, Alignment: DefaultAlignment}
	if f.Version, err = rd.u32(); err != nil {
		return nil, err
	}
	if f.Version != 2 && f.Version != 3 {
		return nil, fmt.Errorf("GGUF version %d (versions 2 and 3 are read)", f.Version)
	}
	nt, err := rd.u64()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	nkv, err := rd.u64()
	if err != nil {
		return nil, fmt.Errorf("header: %w", err)
	}
	// A KV takes at least 8+4+1 bytes, a tensor info 8+4+8+4+8.
	if nkv > uint64(size/13) || nt > uint64(size/32) {
		return nil, fmt.Errorf("header claims %d metadata entries and %d tensors, more than the %d-byte file holds", nkv, nt, size)
	}
	for i := uint64(0); i < nkv; i++ {
		key, err := rd.str()
		if err != nil {
			return nil, fmt.Errorf("metadata entry %d: key: %w", i, err)
		}
		if _, dup := f.kv[key]; dup {
			return nil, fmt.Errorf("metadata key %q appears twice", key)
		}
		t, err := rd.u32()
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		v, err := rd.value(ValueType(t), 0)
		if err != nil {
			return nil, fmt.Errorf("metadata %q: %w", key, err)
		}
		f.kv[key] = len(f.KV)
		f.KV = append(f.KV, KV{Key: key, Type: ValueType(t), Value: v})
	}
	if v, ok := f.Get("general.alignment"); ok {
		a, isU32 := v.(uint32)
		if !isU32 || a == 0 || a&(a-1) != 0 {
			return nil, fmt.Errorf("general.alignment %v is not a power of two (uint32)", v)
		}
		f.Alignment = uint64(a)
	}
	names := map[string]bool{}
	for i := uint64(0); i < nt; i++ {
		var ti TensorInfo
		if ti.Name, err = rd.str(); err != nil {
			return nil, fmt.Errorf("tensor info %d: name: %w", i, err)
		}
		if names[ti.Name] {
			return nil, fmt.Errorf("tensor %q appears twice", ti.Name)
		}
		names[ti.Name] = true
		nd, err := rd.u32()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", ti.Name, err)
		}
		if nd == 0 || nd > maxDims {
			return nil, fmt.Errorf("tensor %q: %d dims (1 to %d)", ti.Name, nd, maxDims)
		}
		n := uint64(1)
		for j := uint32(0); j < nd; j++ {
			d, err := rd.u64()
			if err != nil {
				return nil, fmt.Errorf("tensor %q: %w", ti.Name, err)
			}
			if d > math.MaxInt64 || (d != 0 && n > math.MaxInt64/d) {
				return nil, fmt.Errorf("tensor %q: dims overflow", ti.Name)
			}
			n *= d
			ti.Dims = append(ti.Dims, d)
		}
		t, err := rd.u32()
		if err != nil {
			return nil, fmt.Errorf("tensor %q: %w", ti.Name, err)
		}
		ti.Type = Type(t)
		if !ti.Type.Known() {
			return nil, fmt.Errorf("tensor %q: ggml type %d is not one weightops reads", ti.Name, t)
		}
		bs := uint64(ti.Type.BlockSize())
		if ti.Dims[0]%bs != 0 {
			return nil, fmt.Errorf("tensor %q: first dim %d is not a multiple of %s's block of %d", ti.Name, ti.Dims[0], ti.Type, bs)
		}
		if ti.Offset, err = rd.u64(); err != nil {
			return nil, fmt.Errorf("tensor %q: %w", ti.Name, err)
		}
		if n/bs > math.MaxInt64/uint64(types[ti.Type].size) {
			return nil, fmt.Errorf("tensor %q: size overflows", ti.Name)
		}
		ti.Size = n / bs * uint64(types[ti.Type].size)
		f.Tensors = append(f.Tensors, ti)
	}
	f.DataOffset = int64((uint64(rd.off) + f.Alignment - 1) / f.Alignment * f.Alignment)
	if f.DataOffset > size {
		return nil, fmt.Errorf("the data section starts at %d, past the %d-byte file", f.DataOffset, size)
	}
	avail := uint64(size - f.DataOffset)
	for _, ti := range f.Tensors {
		if ti.Offset%f.Alignment != 0 {
			return nil, fmt.Errorf("tensor %q: offset %d is not aligned to %d", ti.Name, ti.Offset, f.Alignment)
		}
		if ti.Offset > avail || ti.Size > avail-ti.Offset {
			return nil, fmt.Errorf("tensor %q: %d bytes at offset %d run past the file's %d data bytes", ti.Name, ti.Size, ti.Offset, avail)
		}
	}
	return f, nil
}

// Describe renders a metadata value for display: arrays by their type and
// length (and first elements), strings quoted.
func Describe(v any) string {
	switch x := v.(type) {
	case string:
		if len(x) > 80 {
			return fmt.Sprintf("%q… (%d bytes)", x[:80], len(x))
		}
		return fmt.Sprintf("%q", x)
	case Array:
		var head []string
		for i, e := range x.Values {
			if i == 3 {
				head = append(head, "…")
				break
			}
			head = append(head, Describe(e))
		}
		return fmt.Sprintf("[%d × %s: %s]", len(x.Values), x.Elem, strings.Join(head, ", "))
	}
	return fmt.Sprint(v)
}

func (t ValueType) String() string {
	names := map[ValueType]string{TypeUint8: "uint8", TypeInt8: "int8", TypeUint16: "uint16", TypeInt16: "int16",
		TypeUint32: "uint32", TypeInt32: "int32", TypeFloat32: "float32", TypeBool: "bool", TypeString: "string",
		TypeArray: "array", TypeUint64: "uint64", TypeInt64: "int64", TypeFloat64: "float64"}
	if n, ok := names[t]; ok {
		return n
	}
	return fmt.Sprintf("type %d", uint32(t))
}
