package quantize

import (
	"bytes"
	"math"
	"math/rand/v2"
	"testing"
)

// TestHandWorkedLog: 4-bit log codes (sign + 3-bit exponent, L = 7
// levels 1, 1/2, …, 1/64 of the absmax 1).
func TestHandWorkedLog(t *testing.T) {
	vals := []float32{1, -0.5, 0.3, 0.0078125, 0.004, 0, -0.7}
	q := mustQuantize(t, vals, []int64{7}, Config{Bits: 4, Scheme: Log})
	// 0.3: log2 = −1.74, nearest −2 → 1/4. 2^−7 lies below the smallest
	// level 2^−6 but not below half of it → 2^−6; 0.004 → 0. −0.7: log2 =
	// −0.51, nearer −1 by ratio (0.7/0.5 = 1.4 < 1/0.7 = 1.43) → −1/2.
	want := []float32{1, -0.5, 0.25, 0.015625, 0, 0, -0.5}
	if q.Scales[0] != 1 {
		t.Fatalf("scale %v", q.Scales[0])
	}
	got := make([]float32, len(vals))
	if err := q.Dequantize(got); err != nil {
		t.Fatal(err)
	}
	if !equalF32(got, want) {
		t.Fatalf("decoded %v, want %v", got, want)
	}
	codes := make([]uint8, len(vals))
	unpack(codes, q.Codes, 4)
	if want := []uint8{1, 2 | 8, 3, 7, 0, 0, 2 | 8}; !bytes.Equal(codes, want) {
		t.Fatalf("codes %v, want %v", codes, want)
	}
}

// TestHandWorkedTanh: 3-bit tanh codes (L = 3) of absmax 1, the values
// worked out with Python's math.tanh/atanh.
func TestHandWorkedTanh(t *testing.T) {
	vals := []float32{1, 0.5, -0.25, 0.9, 0}
	q := mustQuantize(t, vals, []int64{5}, Config{Bits: 3, Scheme: Tanh})
	// 0.5: tanh(1)/tanh(2) = 0.790 → code 2 → atanh(tanh(2)·2/3)/2 = 0.38137.
	// −0.25: −0.479 → −1 → −0.16657. 0.9: 0.982 → 3 → 1.
	want := []float64{1, 0.3813674533554389, -0.1665717554227255, 1, 0}
	got := make([]float32, len(vals))
	if err := q.Dequantize(got); err != nil {
		t.Fatal(err)
	}
	for i := range want {
		if float32(want[i]) != got[i] {
			t.Fatalf("value %d: decoded %v, want %v", i, got[i], want[i])
		}
	}
}

// TestLogTanhAgainstBruteForce re-derives every code by searching all
// levels: for log the level nearest by ratio (linear between zero and
// the smallest level), for tanh the code nearest in the companded domain.
func TestLogTanhAgainstBruteForce(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	vals := make([]float32, 4096)
	for i := range vals {
		// Laplace-like, heavy-tailed: the distribution of weight deltas.
		e := rng.ExpFloat64() * 1e-3
		if rng.IntN(2) == 0 {
			e = -e
		}
		vals[i] = float32(e)
	}
	for _, cfg := range []Config{{Bits: 4, Scheme: Log, Granularity: PerBlock, BlockSize: 64},
		{Bits: 3, Scheme: Log, Granularity: PerBlock, BlockSize: 100},
		{Bits: 4, Scheme: Tanh, Granularity: PerBlock, BlockSize: 64},
		{Bits: 6, Scheme: Tanh, Granularity: PerTensor}} {
		q := mustQuantize(t, vals, []int64{int64(len(vals))}, cfg)
		got := make([]float32, len(vals))
		if err := q.Dequantize(got); err != nil {
			t.Fatal(err)
		}
		group := len(vals)
		if cfg.Granularity == PerBlock {
			group = cfg.BlockSize
		}
		L := 1<<(cfg.Bits-1) - 1
		for lo := 0; lo < len(vals); lo += group {
			hi := min(lo+group, len(vals))
			var m float64
			for _, v := range vals[lo:hi] {
				m = math.Max(m, math.Abs(float64(v)))
			}
			for i := lo; i < hi; i++ {
				x := float64(vals[i])
				var want float64
				if cfg.Scheme == Log {
					a := math.Abs(x)
					small := m * math.Pow(2, -float64(L-1))
					best := 0.0
					switch {
					case a >= small:
						bd := math.Inf(1)
						for j := 0; j < L; j++ {
							lv := m * math.Pow(2, -float64(j))
							if d := math.Abs(math.Log2(a / lv)); d < bd {
								best, bd = lv, d
							}
						}
					case a >= small/2: // nearer the smallest level than zero
						best = small
					}
					want = math.Copysign(best, x)
				} else {
					y := math.Tanh(TanhKnee*x/m) / math.Tanh(TanhKnee)
					bq, bd := 0, math.Inf(1)
					for c := -L; c <= L; c++ {
						if d := math.Abs(y - float64(c)/float64(L)); d < bd {
							bq, bd = c, d
						}
					}
					want = m / TanhKnee * math.Atanh(math.Tanh(TanhKnee)*float64(bq)/float64(L))
				}
				if float32(want) != got[i] && !(want == 0 && got[i] == 0) {
					t.Fatalf("%s element %d (%g, group absmax %g): decoded %g, brute force %g", cfg, i, x, m, got[i], want)
				}
			}
		}
		// Round trip through the container format, bit for bit.
		b, err := q.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		var back Quantized
		if err := back.UnmarshalBinary(b); err != nil {
			t.Fatal(err)
		}
		if b2, _ := back.MarshalBinary(); !bytes.Equal(b, b2) {
			t.Fatalf("%s: container round trip changed the bytes", cfg)
		}
	}
}

// TestLogTanhConfig covers parsing, sizes and what is refused.
func TestLogTanhConfig(t *testing.T) {
	for s, want := range map[string]Config{
		"4bit-log-block64":      {Bits: 4, Scheme: Log, Granularity: PerBlock, BlockSize: 64},
		"3bit-tanh-channel":     {Bits: 3, Scheme: Tanh, Granularity: PerChannel},
		"8bit-log-tensor-f16":   {Bits: 8, Scheme: Log, F16Scales: true},
		"4bit-tanh-block32-f16": {Bits: 4, Scheme: Tanh, Granularity: PerBlock, BlockSize: 32, F16Scales: true},
	} {
		got, err := ParseConfig(s)
		if err != nil || got != want || got.String() != s {
			t.Errorf("ParseConfig(%q) = %+v (%q), %v", s, got, got.String(), err)
		}
	}
	for _, s := range []string{"1bit-log-tensor", "1bit-tanh-tensor", "4bit-log-block64-mse", "4bit-tanh-block64-mse"} {
		if _, err := ParseConfig(s); err == nil {
			t.Errorf("ParseConfig(%q) succeeded", s)
		}
	}
	// One stored value per group, as sym: 4 + 32/64 bits.
	if b := (Config{Bits: 4, Scheme: Log, Granularity: PerBlock, BlockSize: 64}).BitsPerElement(); b != 4.5 {
		t.Errorf("4bit-log-block64: %v bits per element", b)
	}
	// A tanh code above 2L is refused when read.
	q := mustQuantize(t, []float32{1, -1, 0.5}, []int64{3}, Config{Bits: 3, Scheme: Tanh})
	b, _ := q.MarshalBinary()
	codeAt := len(b) - trailer - len(q.Codes)
	b[codeAt] |= 0x7 // the first code: 7 > 2·3
	var back Quantized
	if err := back.UnmarshalBinary(reseal(b)); err == nil {
		t.Error("tanh code 7 of 3 bits accepted")
	}
}
