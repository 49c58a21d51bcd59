package quantize

import (
	"bytes"
	"math/rand/v2"
	"strings"
	"testing"

	"github.com/weightops/weightops/gguf"
)

// encodeInSegments quantizes vals with an Encoder, seg·Align elements at a
// time (the last segment shorter), and returns the encoding and the
// dequantized values.
func encodeInSegments(t *testing.T, vals []float32, shape []int64, cfg Config, seg int) ([]byte, []float32) {
	t.Helper()
	e, err := NewEncoder(shape, cfg)
	if err != nil {
		t.Fatal(err)
	}
	if e.NeedsRange() {
		mn, mx, err := Extremes(vals, 0)
		if err != nil {
			t.Fatal(err)
		}
		if err := e.SetRange(mn, mx); err != nil {
			t.Fatal(err)
		}
	}
	step := seg * e.Align()
	var codes []byte
	deq := make([]float32, len(vals))
	for lo := 0; lo < len(vals); lo += step {
		hi := min(lo+step, len(vals))
		if codes, err = e.Encode(vals[lo:hi], deq[lo:hi], codes); err != nil {
			t.Fatal(err)
		}
	}
	var out bytes.Buffer
	n, err := e.Finish(&out, bytes.NewReader(codes))
	if err != nil {
		t.Fatal(err)
	}
	if n != int64(out.Len()) || n != e.Size() {
		t.Fatalf("Finish reported %d bytes, wrote %d, Size %d", n, out.Len(), e.Size())
	}
	return out.Bytes(), deq
}

// TestEncoderEqualsQuantize: quantizing in segments gives Quantize's
// encoding byte for byte and Dequantize's values bit for bit, for every
// scheme, granularity (blocks that straddle rows, channels, one group),
// scale format, MSE clipping and ggml codec, whatever the segment length.
func TestEncoderEqualsQuantize(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var cfgs []Config
	for _, c := range allConfigs() {
		if c.Bits == 2 || c.Bits == 4 || c.Bits == 8 || c.Bits == 3 {
			cfgs = append(cfgs, c)
		}
	}
	for _, sch := range []Scheme{Log, Tanh} {
		cfgs = append(cfgs, Config{Bits: 4, Scheme: sch, Granularity: PerBlock, BlockSize: 64},
			Config{Bits: 3, Scheme: sch, Granularity: PerTensor})
	}
	cfgs = append(cfgs, Config{Bits: 4, Scheme: Symmetric, Granularity: PerBlock, BlockSize: 64, MSE: true},
		Config{Bits: 3, Scheme: Asymmetric, Granularity: PerChannel, MSE: true})
	for _, ty := range []gguf.Type{gguf.Q8_0, gguf.Q4_0, gguf.Q4_1, gguf.Q5_0, gguf.Q5_1, gguf.Q4_K, gguf.Q6_K} {
		c, err := GGMLConfig(ty)
		if err != nil {
			t.Fatal(err)
		}
		cfgs = append(cfgs, c)
	}
	shapes := [][]int64{{13, 301}, {7, 3, 41}, {5000}, {2, 1536}}
	for _, cfg := range cfgs {
		for _, shape := range shapes {
			n := 1
			for _, d := range shape {
				n *= int(d)
			}
			vals := testInputs(rng, n)["heavy"]
			want := mustQuantize(t, vals, shape, cfg)
			wantBytes, err := want.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			wantDeq := mustDequantize(t, want)
			for _, seg := range []int{1, 3, 1 << 20} {
				got, deq := encodeInSegments(t, vals, shape, cfg, seg)
				if !bytes.Equal(got, wantBytes) {
					t.Fatalf("%s %v, segments of %d×Align: encoding differs from Quantize's", cfg, shape, seg)
				}
				if !equalF32(deq, wantDeq) {
					t.Fatalf("%s %v, segments of %d×Align: dequantized values differ", cfg, shape, seg)
				}
			}
		}
	}
}

// TestEncoderRefusals: misuse is an error, not a wrong encoding.
func TestEncoderRefusals(t *testing.T) {
	vals := make([]float32, 100)
	for i := range vals {
		vals[i] = float32(i)
	}
	deq := make([]float32, 100)
	blocks := Config{Bits: 4, Granularity: PerBlock, BlockSize: 10}
	e, _ := NewEncoder([]int64{100}, blocks)
	if e.Align() != 40 {
		t.Fatalf("Align %d, want lcm(10, 8) = 40", e.Align())
	}
	if _, err := e.Encode(vals[:30], deq[:30], nil); err == nil || !strings.Contains(err.Error(), "multiple of 40") {
		t.Errorf("misaligned segment: %v", err)
	}
	if _, err := e.Encode(make([]float32, 120), make([]float32, 120), nil); err == nil || !strings.Contains(err.Error(), "past") {
		t.Errorf("overlong segment: %v", err)
	}
	if _, err := e.Finish(&bytes.Buffer{}, bytes.NewReader(nil)); err == nil || !strings.Contains(err.Error(), "0 of 100") {
		t.Errorf("early Finish: %v", err)
	}
	codes, err := e.Encode(vals, deq, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := e.Finish(&bytes.Buffer{}, bytes.NewReader(codes[:len(codes)-1])); err == nil {
		t.Error("Finish with codes missing: no error")
	}
	one, _ := NewEncoder([]int64{100}, Config{Bits: 4})
	if !one.NeedsRange() {
		t.Fatal("a per-tensor codec needs its range")
	}
	if _, err := one.Encode(vals, deq, nil); err == nil || !strings.Contains(err.Error(), "SetRange") {
		t.Errorf("no SetRange: %v", err)
	}
	if err := e.SetRange(0, 1); err == nil {
		t.Error("SetRange on a many-group tensor: no error")
	}
	nan := append([]float32{}, vals...)
	nan[57] = float32(0) / float32(zero)
	b, _ := NewEncoder([]int64{100}, blocks)
	if _, err := b.Encode(nan, deq, nil); err == nil || !strings.Contains(err.Error(), "57") {
		t.Errorf("NaN: %v", err)
	}
}

var zero float32

// TestDequantizeRange: any range decodes to Dequantize's values there.
func TestDequantizeRange(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 1))
	q4k, _ := GGMLConfig(gguf.Q4_K)
	q8, _ := GGMLConfig(gguf.Q8_0)
	for _, cfg := range []Config{
		{Bits: 4, Scheme: Symmetric, Granularity: PerBlock, BlockSize: 64},
		{Bits: 3, Scheme: Asymmetric, Granularity: PerChannel},
		{Bits: 5, Scheme: Asymmetric, Granularity: PerTensor, F16Scales: true},
		{Bits: 4, Scheme: Log, Granularity: PerBlock, BlockSize: 10},
		q4k, q8,
	} {
		shape := []int64{7, 1001}
		vals := testInputs(rng, 7*1001)["heavy"]
		q := mustQuantize(t, vals, shape, cfg)
		want := mustDequantize(t, q)
		for range 200 {
			lo := rng.IntN(len(vals))
			hi := lo + rng.IntN(len(vals)-lo+1)
			got := make([]float32, hi-lo)
			if err := q.DequantizeRange(got, lo); err != nil {
				t.Fatal(err)
			}
			if !equalF32(got, want[lo:hi]) {
				t.Fatalf("%s: range %d..%d differs from Dequantize", cfg, lo, hi)
			}
		}
		if err := q.DequantizeRange(make([]float32, 2), len(vals)-1); err == nil {
			t.Errorf("%s: a range past the end: no error", cfg)
		}
	}
}
