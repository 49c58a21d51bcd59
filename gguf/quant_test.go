package gguf

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func readF32(t *testing.T, path string) []float32 {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	out := make([]float32, len(b)/4)
	for i := range out {
		out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
	}
	return out
}

// TestQuantFixtures compares with ggml's own reference functions, run on
// testdata/gguf/inputs.f32 by quant-fixtures.c: 16 rows of 256 — zeros, a
// constant, a negative constant, a ±max tie with + first and with −
// first, values so small the F16 scale underflows to zero, values giving
// subnormal F16 scales, N(0,1), weight-like N(0,0.02), outliers, large
// values, all positive, all negative, integers −8..7, values whose scaled
// levels fall on .5, and sub-blocks of very different scales. Every
// quantizer must give ggml's bytes; every dequantizer ggml's floats, bit
// for bit.
func TestQuantFixtures(t *testing.T) {
	dir := "../testdata/gguf"
	x := readF32(t, filepath.Join(dir, "inputs.f32"))
	for _, typ := range []Type{F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q2_K, Q3_K, Q4_K, Q5_K, Q6_K} {
		name := map[Type]string{F16: "f16", BF16: "bf16"}[typ]
		if name == "" {
			name = typ.String()
			if name[len(name)-1] != 'K' {
				name = "q" + name[1:]
			} else {
				name = "q" + name[1:len(name)-1] + "K"
			}
		}
		want, err := os.ReadFile(filepath.Join(dir, name+".q"))
		if err != nil {
			t.Fatal(err)
		}
		if typ.CanQuantize() {
			got := make([]byte, typ.RowSize(len(x)))
			if err := Quantize(typ, x, got); err != nil {
				t.Fatal(err)
			}
			bs := typ.RowSize(typ.BlockSize())
			for b := 0; b < len(got)/bs; b++ {
				if string(got[b*bs:(b+1)*bs]) != string(want[b*bs:(b+1)*bs]) {
					t.Errorf("%s: block %d (row %d) differs from ggml's:\n got %x\nwant %x", typ, b, b*typ.BlockSize()/256, got[b*bs:(b+1)*bs], want[b*bs:(b+1)*bs])
					break
				}
			}
		}
		wantF := readF32(t, filepath.Join(dir, name+".f32"))
		gotF := make([]float32, len(x))
		if err := Dequantize(typ, want, gotF); err != nil {
			t.Fatal(err)
		}
		for i := range gotF {
			if math.Float32bits(gotF[i]) != math.Float32bits(wantF[i]) {
				t.Errorf("%s: dequantized [%d] = %v, ggml %v", typ, i, gotF[i], wantF[i])
				break
			}
		}
	}
}

// TestGGMLWrittenFile reads testdata/gguf/ggml.gguf, written by ggml's own
// GGUF writer (ggml-write.c): every metadata value comes back with its
// type, every tensor's blocks are ggml's quantizer's, and writing the same
// metadata and tensors with our writer gives the file byte for byte.
func TestGGMLWrittenFile(t *testing.T) {
	dir := "../testdata/gguf"
	raw, err := os.ReadFile(filepath.Join(dir, "ggml.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := Parse(bytes.NewReader(raw), int64(len(raw)))
	if err != nil {
		t.Fatal(err)
	}
	want := []KV{
		{"general.architecture", TypeString, "llama"},
		{"test.u8", TypeUint8, uint8(200)}, {"test.i8", TypeInt8, int8(-100)},
		{"test.u16", TypeUint16, uint16(60000)}, {"test.i16", TypeInt16, int16(-30000)},
		{"test.u32", TypeUint32, uint32(4000000000)}, {"test.i32", TypeInt32, int32(-2000000000)},
		{"test.f32", TypeFloat32, float32(0.1)}, {"test.bool", TypeBool, true},
		{"test.u64", TypeUint64, uint64(18000000000000000000)}, {"test.i64", TypeInt64, int64(-9000000000000000000)},
		{"test.f64", TypeFloat64, 0.1},
		{"test.strings", TypeArray, Strings([]string{"a", "βγ", ""})},
		{"test.i32s", TypeArray, Int32s([]int32{1, -2, 3})},
	}
	if fmt.Sprint(f.KV) != fmt.Sprint(want) {
		t.Errorf("metadata:\n got %v\nwant %v", f.KV, want)
	}
	h := &Header{KV: want}
	var data []byte
	for _, c := range []struct {
		typ  Type
		file string
	}{{F32, "inputs.f32"}, {F16, "f16.q"}, {Q8_0, "q8_0.q"}, {Q4_0, "q4_0.q"}, {Q4_K, "q4_K.q"}, {Q6_K, "q6_K.q"}} {
		name := "t_" + strings.ToLower(c.typ.String())
		if c.typ == Q4_K || c.typ == Q6_K {
			name = "t_" + strings.ToLower(c.typ.String()[:2]) + "_K"
		}
		b, err := os.ReadFile(filepath.Join(dir, c.file))
		if err != nil {
			t.Fatal(err)
		}
		h.Tensors = append(h.Tensors, TensorInfo{Name: name, Dims: []uint64{256, 16}, Type: c.typ})
		var ti *TensorInfo
		for i := range f.Tensors {
			if f.Tensors[i].Name == name {
				ti = &f.Tensors[i]
			}
		}
		if ti == nil {
			t.Fatalf("ggml.gguf has no %s", name)
		}
		got := raw[f.DataOffset+int64(ti.Offset) : f.DataOffset+int64(ti.Offset+ti.Size)]
		if !bytes.Equal(got, b) {
			t.Errorf("%s: the blocks differ from %s", name, c.file)
		}
		for len(data)%DefaultAlignment != 0 {
			data = append(data, 0)
		}
		data = append(data, b...)
	}
	h.Layout()
	var out bytes.Buffer
	if _, err := h.Write(&out); err != nil {
		t.Fatal(err)
	}
	out.Write(data)
	for out.Len()%DefaultAlignment != 0 {
		out.WriteByte(0)
	}
	if !bytes.Equal(out.Bytes(), raw) {
		n := 0
		for n < min(out.Len(), len(raw)) && out.Bytes()[n] == raw[n] {
			n++
		}
		t.Errorf("our writer's file differs from ggml's at byte %d (%d vs %d bytes)", n, out.Len(), len(raw))
	}
}
