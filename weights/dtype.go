// Package weights holds tensors, dtypes and checkpoint file formats:
// safetensors (single file and sharded), PyTorch zip and legacy pickle
// checkpoints, streaming writers with atomic commit, file digests and the
// side files of a model directory.
package weights

import (
	"fmt"
	"strings"
)

// DType is an element type: a safetensors dtype, or a block-quantized type
// (a run of BlockElems values stored in BlockBytes bytes, as ggml's Q8_0).
//
// The numeric order of the safetensors dtypes matches the official Rust
// library's Dtype enum, whose derived ordering decides where each tensor
// goes in a written file (sorted by descending dtype, then by name), so
// files written here lay out exactly as safetensors.torch.save_file lays
// them out. Block types come after them and are never written to
// safetensors.
type DType uint8

// The dtypes weightops knows.
const (
	Bool DType = iota
	U8
	I8
	F8E5M2
	F8E4M3
	I16
	U16
	F16
	BF16
	I32
	U32
	F32
	F64
	I64
	U64
	// Q8_0 is ggml's 8-bit block type: per 32 values an F16 scale d and
	// 32 int8 codes q, value = d·q.
	Q8_0
	// Q4_0 is ggml's 4-bit block type: per 32 values an F16 scale d and 16
	// bytes of 4-bit codes (value j in the low nibble of byte j for
	// j < 16, in the high nibble of byte j−16 after), value = d·(q − 8).
	Q4_0
	numDTypes
)

// dtypeInfo is one row of the dtype table: everything the rest of the code
// asks of a dtype. Adding a dtype is one row here (and its codec).
type dtypeInfo struct {
	name string
	// blockElems values are stored in blockBytes bytes; 1 and the element
	// size for plain types.
	blockElems, blockBytes int64
	float                  bool
	// writable: Encode can produce it from float64.
	writable bool
	// safetensors: the safetensors format names it.
	safetensors bool
	// torch is the torch dtype's name (config.json's torch_dtype), "" when
	// torch has none.
	torch string
}

var dtypes = [numDTypes]dtypeInfo{
	Bool:   {"BOOL", 1, 1, false, true, true, "bool"},
	U8:     {"U8", 1, 1, false, true, true, "uint8"},
	I8:     {"I8", 1, 1, false, true, true, "int8"},
	F8E5M2: {"F8_E5M2", 1, 1, true, false, true, "float8_e5m2"},
	F8E4M3: {"F8_E4M3", 1, 1, true, false, true, "float8_e4m3fn"},
	I16:    {"I16", 1, 2, false, true, true, "int16"},
	U16:    {"U16", 1, 2, false, true, true, "uint16"},
	F16:    {"F16", 1, 2, true, true, true, "float16"},
	BF16:   {"BF16", 1, 2, true, true, true, "bfloat16"},
	I32:    {"I32", 1, 4, false, true, true, "int32"},
	U32:    {"U32", 1, 4, false, true, true, "uint32"},
	F32:    {"F32", 1, 4, true, true, true, "float32"},
	F64:    {"F64", 1, 8, true, true, true, "float64"},
	I64:    {"I64", 1, 8, false, true, true, "int64"},
	U64:    {"U64", 1, 8, false, true, true, "uint64"},
	Q8_0:   {"Q8_0", 32, 34, true, false, false, ""},
	Q4_0:   {"Q4_0", 32, 18, true, false, false, ""},
}

func (d DType) info() dtypeInfo {
	if d < numDTypes {
		return dtypes[d]
	}
	return dtypeInfo{}
}

// AllDTypes lists every dtype in ascending order.
func AllDTypes() []DType {
	out := make([]DType, numDTypes)
	for i := range out {
		out[i] = DType(i)
	}
	return out
}

// String returns the dtype's name, e.g. "BF16" (the safetensors name for
// the safetensors dtypes).
func (d DType) String() string {
	if d < numDTypes {
		return dtypes[d].name
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// TorchName is torch's name of the dtype ("bfloat16"), as config.json's
// torch_dtype spells it; "" for the block types.
func (d DType) TorchName() string { return d.info().torch }

// Size is the number of bytes of one element, or 0 for a block type (whose
// elements have no whole byte size; see BlockElems, BlockBytes) and an
// unknown dtype.
func (d DType) Size() int {
	if i := d.info(); i.blockElems == 1 {
		return int(i.blockBytes)
	}
	return 0
}

// BlockElems is the number of values stored together: 1 for plain types,
// 32 for Q8_0. A tensor's last dimension must be a multiple of it.
func (d DType) BlockElems() int64 { return d.info().blockElems }

// BlockBytes is the number of bytes a block of BlockElems values takes.
func (d DType) BlockBytes() int64 { return d.info().blockBytes }

// IsBlock reports whether the dtype stores values in blocks of more than
// one.
func (d DType) IsBlock() bool { return d.info().blockElems > 1 }

// Bytes is the size of n values, n a multiple of BlockElems (callers
// chunk by whole rows, which are).
func (d DType) Bytes(n int64) int64 {
	i := d.info()
	if i.blockElems == 0 {
		return 0
	}
	return n / i.blockElems * i.blockBytes
}

// IsFloat reports whether the dtype holds floating-point values, the ones
// weight arithmetic applies to (block types decode to floats).
func (d DType) IsFloat() bool { return d.info().float }

// Writable reports whether values can be encoded into this dtype from
// float64. The 8-bit float formats and the block types are read-only here.
func (d DType) Writable() bool { return d.info().writable }

// InSafetensors reports whether the safetensors format has this dtype.
func (d DType) InSafetensors() bool { return d.info().safetensors }

// SafetensorsDType finds a dtype by its exact safetensors name, as the
// official parser does (case-sensitive, no aliases).
func SafetensorsDType(name string) (DType, bool) {
	for i, t := range dtypes {
		if t.safetensors && t.name == name {
			return DType(i), true
		}
	}
	return 0, false
}

// ParseDType reads a dtype name ("F32", "BF16", "Q8_0", ...). It also
// accepts the lower-case short forms a user types on a command line
// (f32, bf16, f16, fp16, float16, bfloat16, float32).
func ParseDType(s string) (DType, error) {
	for i, t := range dtypes {
		if s == t.name {
			return DType(i), nil
		}
	}
	switch strings.ToLower(s) {
	case "f64", "fp64", "float64", "double":
		return F64, nil
	case "f32", "fp32", "float32", "float":
		return F32, nil
	case "f16", "fp16", "float16", "half":
		return F16, nil
	case "bf16", "bfloat16":
		return BF16, nil
	case "i64", "int64":
		return I64, nil
	case "i32", "int32":
		return I32, nil
	case "i16", "int16":
		return I16, nil
	case "i8", "int8":
		return I8, nil
	case "u8", "uint8":
		return U8, nil
	case "bool":
		return Bool, nil
	}
	return 0, fmt.Errorf("unknown dtype %q", s)
}

// ParseFloatDType reads an output dtype for floating tensors as a user
// gives it (--dtype, a recipe's out_dtype): one of the writable float
// types.
func ParseFloatDType(s string) (DType, error) {
	dt, err := ParseDType(s)
	if err != nil || !dt.IsFloat() || !dt.Writable() {
		return 0, fmt.Errorf("dtype %q: use f32, bf16, f16 or f64", s)
	}
	return dt, nil
}

// OutputDType is the dtype a tensor is written in: to, when set (non-nil)
// and the tensor is floating; otherwise its own dtype, with read-only
// floating types (F8, block types) widened to F32 since they cannot be
// written. Integer and bool tensors always keep theirs.
func OutputDType(t DType, to *DType) DType {
	if !t.IsFloat() {
		return t
	}
	if to != nil {
		return *to
	}
	if !t.Writable() {
		return F32
	}
	return t
}
