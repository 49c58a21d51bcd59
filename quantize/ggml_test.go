package quantize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/gguf"
)

// The ggml codecs against bytes and floats ggml itself produced:
// testdata/gguf/<type>.q are quantize_row_*_ref outputs of inputs.f32 (16
// rows of 256 hostile and ordinary values) and <type>.f32 ggml's
// dequantization of them (see testdata/gguf/quant-fixtures.c).
func TestGGMLCodecsMatchGGML(t *testing.T) {
	dir := "../testdata/gguf"
	raw, err := os.ReadFile(filepath.Join(dir, "inputs.f32"))
	if err != nil {
		t.Fatal(err)
	}
	x := make([]float32, len(raw)/4)
	for i := range x {
		x[i] = math.Float32frombits(binary.LittleEndian.Uint32(raw[4*i:]))
	}
	for name, file := range map[string]string{"q8_0": "q8_0", "Q4_0": "q4_0", "q4_1": "q4_1", "q5_0": "q5_0", "q5_1": "q5_1", "q4_k": "q4_K", "Q6_K": "q6_K"} {
		cfg, err := ParseConfig(name)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		want, err := os.ReadFile(filepath.Join(dir, file+".q"))
		if err != nil {
			t.Fatal(err)
		}
		wantDeq, err := os.ReadFile(filepath.Join(dir, file+".f32"))
		if err != nil {
			t.Fatal(err)
		}
		for _, workers := range []int{1, 2, 7} {
			q, err := quantize(x, []int64{16, 256}, cfg, workers)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if !bytes.Equal(q.Codes, want) {
				t.Fatalf("%s (workers %d): blocks differ from ggml's", name, workers)
			}
			got := make([]float32, len(x))
			if err := q.dequantize(got, workers); err != nil {
				t.Fatal(err)
			}
			for i, v := range got {
				if math.Float32bits(v) != binary.LittleEndian.Uint32(wantDeq[4*i:]) {
					t.Fatalf("%s: element %d dequantizes to %v, ggml gives %v", name, i, v, math.Float32frombits(binary.LittleEndian.Uint32(wantDeq[4*i:])))
				}
			}
		}
		if s := cfg.String(); s != file && s != map[string]string{"q4_K": "q4_k", "q6_K": "q6_k"}[file] {
			t.Errorf("%s: String() = %q", name, s)
		}
	}
}

// Hand-worked Q8_0 and Q4_0 blocks from ggml's reference algorithm:
// d = amax/127 (Q8_0) or max/−8 with max the signed value of largest
// magnitude (Q4_0), codes round(x/d) (Q4_0: min(15, trunc(x/d + 8.5))).
func TestGGMLHandWorked(t *testing.T) {
	x := make([]float32, 32)
	x[0], x[1], x[2] = 127, -63.5, 1
	q8, _ := GGMLConfig(gguf.Q8_0)
	q, err := Quantize(x, []int64{32}, q8)
	if err != nil {
		t.Fatal(err)
	}
	// d = 127/127 = 1 → F16 0x3c00; codes 127, round(−63.5) = −64 (away from zero), 1.
	if want := []byte{0x00, 0x3c, 127, 0xc0, 1}; !bytes.Equal(q.Codes[:5], want) {
		t.Fatalf("Q8_0 block starts % x, want % x", q.Codes[:5], want)
	}
	x = make([]float32, 32)
	x[0], x[1] = 2, -8 // max = −8 → d = 1; −8/1+8.5 = 0.5 → 0; 2+8.5 → 10
	q4, _ := GGMLConfig(gguf.Q4_0)
	if q, err = Quantize(x, []int64{32}, q4); err != nil {
		t.Fatal(err)
	}
	// d = 1 → 0x3c00; byte 0 packs element 0 (low nibble 10) and element 16 (high nibble 8).
	if want := []byte{0x00, 0x3c, 0x8a, 0x80}; !bytes.Equal(q.Codes[:4], want) {
		t.Fatalf("Q4_0 block starts % x, want % x", q.Codes[:4], want)
	}
}

// A container round trip, a partial last block, the size and refusals.
func TestGGMLContainer(t *testing.T) {
	x := make([]float32, 300) // one whole Q4_K block and a partial one
	for i := range x {
		x[i] = float32(math.Sin(float64(i)))
	}
	cfg, _ := ParseConfig("q4_k")
	q, err := Quantize(x, []int64{3, 100}, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if len(q.Codes) != 2*144 {
		t.Fatalf("%d code bytes, want 2 blocks of 144", len(q.Codes))
	}
	// The whole first block is ggml's own quantization of those 256 values.
	want := make([]byte, 144)
	if err := gguf.Quantize(gguf.Q4_K, x[:256], want); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(q.Codes[:144], want) {
		t.Fatal("first block differs from gguf.Quantize")
	}
	b, err := q.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(b)) != q.Size() {
		t.Fatalf("Size %d, encoding %d bytes", q.Size(), len(b))
	}
	var back Quantized
	if err := back.UnmarshalBinary(b); err != nil {
		t.Fatal(err)
	}
	if back.Config != q.Config || !bytes.Equal(back.Codes, q.Codes) || back.N != 300 {
		t.Fatalf("round trip changed the tensor: %+v", back.Config)
	}
	got := make([]float32, 300)
	if err := back.Dequantize(got); err != nil {
		t.Fatal(err)
	}
	r := Measure(x, got)
	if r.RelL2 > 0.1 || r.RelL2 == 0 {
		t.Fatalf("q4_k relative L2 error %v", r.RelL2)
	}
	if bpe := cfg.BitsPerElement(); bpe != 4.5 {
		t.Fatalf("q4_k costs %v bits per element, want 4.5", bpe)
	}

	// A block whose F16 scale is NaN is refused, as is a truncated body.
	bad := append([]byte(nil), b...)
	off := len(b) - 4 - len(q.Codes)
	bad[off], bad[off+1] = 0xff, 0x7f
	fixCRC(bad)
	if err := new(Quantized).UnmarshalBinary(bad); !errors.Is(err, ErrFormat) {
		t.Fatalf("NaN scale: %v", err)
	}
	short := append([]byte(nil), b[:len(b)-10]...)
	fixCRC(short)
	if err := new(Quantized).UnmarshalBinary(short); !errors.Is(err, ErrFormat) {
		t.Fatalf("truncated: %v", err)
	}
	if _, err := Quantize([]float32{float32(math.Inf(1))}, []int64{1}, cfg); err == nil {
		t.Fatal("Inf quantized")
	}
	for _, s := range []string{"f16", "q2_k", "q8_k"} {
		if _, err := ParseConfig(s); err == nil {
			t.Errorf("%s accepted as a codec", s)
		}
	}
	if err := (Config{Bits: 4, Scheme: GGML, Granularity: PerBlock, BlockSize: 64, Type: gguf.Q4_0}).Validate(); err == nil {
		t.Error("a Q4_0 codec with block size 64 validated")
	}
}

func fixCRC(b []byte) {
	body := b[:len(b)-4]
	binary.LittleEndian.PutUint32(b[len(body):], crc32.Checksum(body, castagnoli))
}
