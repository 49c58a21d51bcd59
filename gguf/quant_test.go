package gguf

import (
	"encoding/binary"
	"math"
	"os"
	"path/filepath"
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
