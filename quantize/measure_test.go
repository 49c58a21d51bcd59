package quantize

import (
	"math"
	"math/rand/v2"
	"testing"
)

func TestMeasureHandWorked(t *testing.T) {
	// x = (3, 4), x̂ = (3, 3): ‖x‖² = 25, ‖e‖² = 1 → RelL2 1/5,
	// SNR 10·log10(25) = 13.979 dB, MaxAbs 1.
	r := Measure([]float32{3, 4}, []float32{3, 3})
	if r.N != 2 || r.RelL2 != 0.2 || r.MaxAbs != 1 || math.Abs(r.SNRdB-13.979400086720377) > 1e-12 ||
		r.DenseF32Bytes != 8 || r.DenseF16Bytes != 4 || r.Bytes != 0 {
		t.Fatalf("%+v", r)
	}
}

func TestMeasureZeroSignals(t *testing.T) {
	for _, c := range []struct {
		name     string
		x, y     []float32
		rel, snr float64
		maxAbs   float64
	}{
		{"empty", nil, nil, 0, math.Inf(1), 0},
		{"zero exact", []float32{0, 0}, []float32{0, 0}, 0, math.Inf(1), 0},
		{"zero signal, nonzero error", []float32{0, 0}, []float32{0, -0.5}, math.Inf(1), math.Inf(-1), 0.5},
		{"exact", []float32{1, -2}, []float32{1, -2}, 0, math.Inf(1), 0},
	} {
		r := Measure(c.x, c.y)
		if r.RelL2 != c.rel || r.SNRdB != c.snr || r.MaxAbs != c.maxAbs {
			t.Errorf("%s: %+v", c.name, r)
		}
	}
	if r := Measure([]float32{1, float32(math.NaN())}, []float32{1, 1}); !math.IsNaN(r.RelL2) || !math.IsNaN(r.SNRdB) {
		t.Errorf("NaN input: %+v", r)
	}
}

// TestMeasureAgainstTwoPass compares with a separately written float64
// computation: compensated (Kahan) sums of squares.
func TestMeasureAgainstTwoPass(t *testing.T) {
	rng := rand.New(rand.NewPCG(11, 12))
	x, y := make([]float32, 10007), make([]float32, 10007)
	for i := range x {
		x[i] = float32(rng.NormFloat64())
		y[i] = x[i] + float32(rng.NormFloat64()*0.01)
	}
	kahan := func(f func(i int) float64) float64 {
		var s, c float64
		for i := range x {
			v := f(i) - c
			t := s + v
			c = (t - s) - v
			s = t
		}
		return s
	}
	sx := kahan(func(i int) float64 { return float64(x[i]) * float64(x[i]) })
	se := kahan(func(i int) float64 { d := float64(x[i]) - float64(y[i]); return d * d })
	var maxAbs float64
	for i := range x {
		if d := math.Abs(float64(x[i]) - float64(y[i])); d > maxAbs {
			maxAbs = d
		}
	}
	r := Measure(x, y)
	if math.Abs(r.RelL2/math.Sqrt(se/sx)-1) > 1e-12 || math.Abs(r.SNRdB-10*math.Log10(sx/se)) > 1e-10 || r.MaxAbs != maxAbs {
		t.Fatalf("Measure %+v; reference relL2 %v snr %v maxAbs %v", r, math.Sqrt(se/sx), 10*math.Log10(sx/se), maxAbs)
	}
}

func TestEvaluate(t *testing.T) {
	rng := rand.New(rand.NewPCG(13, 14))
	vals := make([]float32, 128*256)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64())
	}
	cfg := Config{Bits: 8, Scheme: Symmetric, Granularity: PerBlock, BlockSize: 32}
	q := mustQuantize(t, vals, []int64{128, 256}, cfg)
	r, err := q.Evaluate(vals)
	if err != nil {
		t.Fatal(err)
	}
	if r.Bytes != q.Size() || r.DenseF32Bytes != int64(4*len(vals)) {
		t.Fatalf("bytes %d (size %d), dense %d", r.Bytes, q.Size(), r.DenseF32Bytes)
	}
	// 8-bit absmax on Gaussian blocks of 32: the step is ≈ 2.3σ/127, so
	// the error is ≈ step/√12 and SNR ≈ 20·log10(127·√12/2.3) ≈ 45 dB.
	if r.SNRdB < 40 || r.SNRdB > 50 {
		t.Fatalf("8-bit SNR %.1f dB", r.SNRdB)
	}
	if _, err := q.Evaluate(vals[1:]); err == nil {
		t.Fatal("Evaluate with the wrong length succeeded")
	}
	if s := r.String(); s == "" {
		t.Fatal("empty String")
	}
}
