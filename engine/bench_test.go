package engine_test

import (
	"context"
	"path/filepath"
	"syscall"
	"testing"
	"time"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/weights"
)

// BenchmarkEvalLM100M is eval-lm's job on a 98.7M-parameter synthetic
// LLaMA (weightops synth --hidden 768 --vocab 32000 --size 400MiB: 7
// layers, MLP 2048, 12 heads; config.json beside it) in F32 or BF16,
// scoring 2,048 random token ids in one window: tokens/s of the pass, and
// CPU-seconds of the pass (user + system) per run. Compare with
// llama-bench -p 2048 -n 0 on the same model converted to GGUF F32.
func BenchmarkEvalLM100M(b *testing.B) {
	for _, dt := range []weights.DType{weights.F32, weights.BF16} {
		b.Run(dt.String(), func(b *testing.B) {
			dir := filepath.Join(b.TempDir(), "m")
			o := weights.SynthOptions{Bytes: 400 << 20 * int64(dt.Size()) / 4, DType: dt, Seed: 1, Hidden: 768, Vocab: 32000}
			if _, err := weights.Synthesize(context.Background(), dir, o); err != nil {
				b.Fatal(err)
			}
			m, err := engine.LoadLlama(dir)
			if err != nil {
				b.Fatal(err)
			}
			r := dataset.NewRand(1)
			toks := make([]int, 2048)
			for i := range toks {
				toks[i] = r.Intn(32000)
			}
			cpu0 := cpuTime()
			b.ResetTimer()
			for b.Loop() {
				if _, err := m.Perplexity(toks, 2048); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(b.N*len(toks))/b.Elapsed().Seconds(), "tokens/s")
			b.ReportMetric((cpuTime()-cpu0).Seconds()/float64(b.N), "CPU-s/op")
		})
	}
}

// cpuTime is the process's user + system time so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
