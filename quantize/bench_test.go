package quantize

import (
	"fmt"
	"math/rand/v2"
	"runtime"
	"testing"
)

const benchRows, benchCols = 4096, 4096

var benchVals = func() []float32 {
	rng := rand.New(rand.NewPCG(1, 1))
	v := make([]float32, benchRows*benchCols)
	for i := range v {
		v[i] = float32(rng.NormFloat64() * 0.02)
	}
	return v
}()

// benchWorkers is one worker, then all cores when there are several.
func benchWorkers() []int {
	if p := runtime.GOMAXPROCS(0); p > 1 {
		return []int{1, p}
	}
	return []int{1}
}

func reportPerElement(b *testing.B, n int) {
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(n), "ns/elem")
}

// benchQuantize times a 4096×4096 tensor on one worker and on all cores.
func benchQuantize(b *testing.B, spec string) {
	cfg, err := ParseConfig(spec)
	if err != nil {
		b.Fatal(err)
	}
	for _, w := range benchWorkers() {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			b.SetBytes(4 * int64(len(benchVals)))
			for b.Loop() {
				if _, err := quantize(benchVals, []int64{benchRows, benchCols}, cfg, w); err != nil {
					b.Fatal(err)
				}
			}
			reportPerElement(b, len(benchVals))
		})
	}
}

func benchDequantize(b *testing.B, spec string) {
	cfg, err := ParseConfig(spec)
	if err != nil {
		b.Fatal(err)
	}
	q, err := Quantize(benchVals, []int64{benchRows, benchCols}, cfg)
	if err != nil {
		b.Fatal(err)
	}
	out := make([]float32, q.N)
	for _, w := range benchWorkers() {
		b.Run(fmt.Sprintf("workers=%d", w), func(b *testing.B) {
			b.SetBytes(4 * int64(len(out)))
			for b.Loop() {
				if err := q.dequantize(out, w); err != nil {
					b.Fatal(err)
				}
			}
			reportPerElement(b, len(out))
		})
	}
}

func BenchmarkQuantize4bitBlock64(b *testing.B)     { benchQuantize(b, "4bit-sym-block64") }
func BenchmarkQuantize4bitAsymBlock64(b *testing.B) { benchQuantize(b, "4bit-asym-block64") }
func BenchmarkQuantize3bitChannel(b *testing.B)     { benchQuantize(b, "3bit-asym-channel") }
func BenchmarkQuantize8bitTensor(b *testing.B)      { benchQuantize(b, "8bit-sym-tensor") }
func BenchmarkDequantize4bitBlock64(b *testing.B)   { benchDequantize(b, "4bit-sym-block64") }
func BenchmarkDequantize3bitChannel(b *testing.B)   { benchDequantize(b, "3bit-asym-channel") }
func BenchmarkDequantize8bitTensor(b *testing.B)    { benchDequantize(b, "8bit-sym-tensor") }
