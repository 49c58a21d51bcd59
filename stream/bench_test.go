package stream

import (
	"context"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/weights"
)

// BenchmarkConvertToF32 streams a 128 MB BF16 checkpoint through BF16→F32
// conversion into a new file with the default worker pool.
func BenchmarkConvertToF32(b *testing.B) {
	src := filepath.Join(b.TempDir(), "in.safetensors")
	if _, err := weights.Synthesize(context.Background(), src, weights.SynthOptions{Bytes: 128 << 20, Seed: 1}); err != nil {
		b.Fatal(err)
	}
	c, err := weights.Open(src)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(weights.TotalBytes(c.Tensors()))
	out := filepath.Join(b.TempDir(), "out.safetensors")
	f32 := weights.F32
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := Convert(context.Background(), c, out, ConvertOptions{Options: Options{DType: &f32}}); err != nil {
			b.Fatal(err)
		}
	}
}
