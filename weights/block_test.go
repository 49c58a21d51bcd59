package weights

import (
	"encoding/binary"
	"strings"
	"testing"

	"github.com/x448/float16"
)

// TestBlockDTypesDescribeTheirLayout: sizes come from the table — whole
// blocks per row, overflow and partial blocks refused.
func TestBlockDTypesDescribeTheirLayout(t *testing.T) {
	for _, c := range []struct {
		dt    DType
		shape []int64
		want  int64
	}{
		{Q8_0, []int64{4, 64}, 4 * 2 * 34},
		{Q4_0, []int64{3, 32}, 3 * 18},
		{F32, []int64{3, 5}, 60},
		{BF16, []int64{}, 2},
	} {
		got, err := TensorInfo{DType: c.dt, Shape: c.shape}.ByteSize()
		if err != nil || got != c.want {
			t.Errorf("%s %v: %d, %v; want %d", c.dt, c.shape, got, err, c.want)
		}
	}
	if _, err := (TensorInfo{DType: Q8_0, Shape: []int64{2, 40}}).ByteSize(); err == nil {
		t.Error("a row of 40 values in blocks of 32 was accepted")
	}
	if _, err := (TensorInfo{DType: Q4_0, Shape: []int64{}}).ByteSize(); err == nil {
		t.Error("a scalar of a block type was accepted")
	}
	if Q8_0.Size() != 0 || !Q8_0.IsBlock() || Q8_0.Writable() || !Q8_0.IsFloat() || Q8_0.InSafetensors() {
		t.Error("Q8_0 properties")
	}
	if _, ok := SafetensorsDType("Q8_0"); ok {
		t.Error("Q8_0 is not a safetensors dtype")
	}
	if _, ok := SafetensorsDType("f32"); ok {
		t.Error("safetensors dtype names are exact")
	}
}

// TestDecodeBlocksHandWorked decodes a Q8_0 and a Q4_0 block built by hand
// from ggml's layouts: an F16 scale, then the codes.
func TestDecodeBlocksHandWorked(t *testing.T) {
	q8 := make([]byte, 34)
	binary.LittleEndian.PutUint16(q8, float16.Fromfloat32(0.5).Bits())
	want8 := make([]float64, 32)
	for j := range 32 {
		q := int8(j*9 - 128)
		q8[2+j] = byte(q)
		want8[j] = 0.5 * float64(q)
	}
	q4 := make([]byte, 18)
	binary.LittleEndian.PutUint16(q4, float16.Fromfloat32(-2).Bits())
	want4 := make([]float64, 32)
	for j := range 16 {
		lo, hi := byte(j), byte(15-j)
		q4[2+j] = lo | hi<<4
		want4[j] = -2 * float64(int(lo)-8)
		want4[j+16] = -2 * float64(int(hi)-8)
	}
	for _, c := range []struct {
		dt   DType
		b    []byte
		want []float64
	}{{Q8_0, q8, want8}, {Q4_0, q4, want4}} {
		got := make([]float64, 32)
		if err := Decode(c.dt, c.b, got); err != nil {
			t.Fatal(err)
		}
		got32 := make([]float32, 32)
		if err := DecodeFloat32(c.dt, c.b, got32); err != nil {
			t.Fatal(err)
		}
		for j := range got {
			if got[j] != c.want[j] || float64(got32[j]) != c.want[j] {
				t.Fatalf("%s value %d: %g / %g, want %g", c.dt, j, got[j], got32[j], c.want[j])
			}
		}
		f32, err := ConvertBytes(c.dt, F32, c.b)
		if err != nil || len(f32) != 128 {
			t.Fatalf("%s → F32: %d bytes, %v", c.dt, len(f32), err)
		}
		if err := Decode(c.dt, c.b[:len(c.b)-1], got); err == nil || !strings.Contains(err.Error(), "bytes") {
			t.Errorf("%s: a short block decoded: %v", c.dt, err)
		}
	}
	if err := Decode(Q8_0, make([]byte, 34), make([]float64, 31)); err == nil {
		t.Error("31 values of a 32-value block type decoded")
	}
}
