package quantize

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestMSEClippingNeverWorse: the clipped search includes the full range,
// so its squared error is never larger, and on heavy-tailed data (where
// one outlier stretches a block's range) it is clearly smaller.
func TestMSEClippingNeverWorse(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	n := 64 * 200
	gauss, heavy := make([]float32, n), make([]float32, n)
	for i := range gauss {
		gauss[i] = float32(rng.NormFloat64())
		// Student-t-like: a Gaussian over a random scale.
		heavy[i] = float32(rng.NormFloat64() / math.Max(0.05, math.Abs(rng.NormFloat64())))
	}
	for _, spec := range []string{"4bit-sym-block64", "4bit-asym-block64", "3bit-asym-channel", "8bit-sym-block32-f16"} {
		plain, _ := ParseConfig(spec)
		mse, err := ParseConfig(spec + "-mse")
		if err != nil || !mse.MSE || mse.String() != spec+"-mse" {
			t.Fatalf("%s-mse: %v %v", spec, mse, err)
		}
		for name, data := range map[string][]float32{"gauss": gauss, "heavy": heavy} {
			shape := []int64{200, 64}
			e := func(cfg Config) float64 {
				q, err := Quantize(data, shape, cfg)
				if err != nil {
					t.Fatal(err)
				}
				back := make([]float32, n)
				if err := q.Dequantize(back); err != nil {
					t.Fatal(err)
				}
				// Round trip through the container: same values.
				b, _ := q.MarshalBinary()
				var r Quantized
				if err := r.UnmarshalBinary(b); err != nil {
					t.Fatal(err)
				}
				again := make([]float32, n)
				r.Dequantize(again)
				var s float64
				for i := range data {
					if again[i] != back[i] {
						t.Fatal("container changed values")
					}
					d := float64(data[i]) - float64(back[i])
					s += d * d
				}
				return s
			}
			ep, em := e(plain), e(mse)
			if em > ep*(1+1e-12) {
				t.Errorf("%s %s: MSE search error %g > plain %g", spec, name, em, ep)
			}
			t.Logf("%s %s: squared error %.4g plain, %.4g with -mse (%.1f%% less)", spec, name, ep, em, 100*(1-em/ep))
			if spec == "4bit-sym-block64" && em >= ep {
				t.Errorf("%s %s: MSE search %g not below plain %g", spec, name, em, ep)
			}
		}
	}
	if _, err := ParseConfig("4bit-sym-tensor-mse"); err == nil {
		t.Error("mse with per-tensor granularity accepted")
	}
}
