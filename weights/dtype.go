// Package weights holds tensors, dtypes and checkpoint file formats:
// safetensors (single file and sharded), PyTorch zip and legacy pickle
// checkpoints, and a streaming safetensors writer.
package weights

import (
	"fmt"
	"strings"
)

// DType is an element type as named in the safetensors format.
//
// The numeric order matches the official Rust library's Dtype enum, whose
// derived ordering decides where each tensor goes in a written file (sorted by
// descending dtype, then by name), so files written here lay out exactly as
// safetensors.torch.save_file lays them out.
type DType uint8

// The dtypes weightops reads and writes.
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
	numDTypes
)

var dtypeNames = [numDTypes]string{
	Bool: "BOOL", U8: "U8", I8: "I8", F8E5M2: "F8_E5M2", F8E4M3: "F8_E4M3",
	I16: "I16", U16: "U16", F16: "F16", BF16: "BF16", I32: "I32", U32: "U32",
	F32: "F32", F64: "F64", I64: "I64", U64: "U64",
}

var dtypeSizes = [numDTypes]int{
	Bool: 1, U8: 1, I8: 1, F8E5M2: 1, F8E4M3: 1, I16: 2, U16: 2, F16: 2, BF16: 2,
	I32: 4, U32: 4, F32: 4, F64: 8, I64: 8, U64: 8,
}

// AllDTypes lists every supported dtype in ascending order.
func AllDTypes() []DType {
	out := make([]DType, numDTypes)
	for i := range out {
		out[i] = DType(i)
	}
	return out
}

// String returns the safetensors name of the dtype, e.g. "BF16".
func (d DType) String() string {
	if d < numDTypes {
		return dtypeNames[d]
	}
	return fmt.Sprintf("DType(%d)", uint8(d))
}

// Size is the number of bytes of one element.
func (d DType) Size() int {
	if d < numDTypes {
		return dtypeSizes[d]
	}
	return 0
}

// IsFloat reports whether the dtype holds floating-point values, the ones
// weight arithmetic applies to.
func (d DType) IsFloat() bool {
	switch d {
	case F8E5M2, F8E4M3, F16, BF16, F32, F64:
		return true
	}
	return false
}

// Writable reports whether values can be encoded into this dtype from
// float64. The 8-bit float formats are read-only here.
func (d DType) Writable() bool { return d < numDTypes && d != F8E5M2 && d != F8E4M3 }

// ParseDType reads a safetensors dtype name ("F32", "BF16", ...). It also
// accepts the lower-case short forms a user types on a command line
// (f32, bf16, f16, fp16, float16, bfloat16, float32).
func ParseDType(s string) (DType, error) {
	for i, n := range dtypeNames {
		if s == n {
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
