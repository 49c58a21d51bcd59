package merge

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"syscall"
	"testing"

	"github.com/weightops/weightops/weights"
)

// BenchmarkBreadcrumbsMerge merges three synthetic BF16 checkpoints of
// WEIGHTOPS_BENCH_MERGE_BYTES each (default 128 MB); MB/s counts input
// bytes. The full-size, RSS-measured run is bench/merge.sh.
func BenchmarkBreadcrumbsMerge(b *testing.B) {
	size := int64(128 << 20)
	if s := os.Getenv("WEIGHTOPS_BENCH_MERGE_BYTES"); s != "" {
		size, _ = strconv.ParseInt(s, 10, 64)
	}
	d := b.TempDir()
	var total int64
	for i, n := range []string{"m1", "m2", "m3"} {
		p := filepath.Join(d, n+".safetensors")
		if _, err := weights.Synthesize(context.Background(), p, weights.SynthOptions{Bytes: size, Seed: uint64(i + 1), Vocab: 8000}); err != nil {
			b.Fatal(err)
		}
		st, _ := os.Stat(p)
		total += st.Size()
	}
	y := []byte("merge_method: breadcrumbs\nbase_model: m1.safetensors\nmodels:\n" +
		"  - model: m2.safetensors\n    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}\n" +
		"  - model: m3.safetensors\n    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}\n")
	rp := filepath.Join(d, "r.yaml")
	os.WriteFile(rp, y, 0o644)
	b.SetBytes(total)
	cpu0 := cpuSeconds()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := ParseRecipe(rp)
		if err != nil {
			b.Fatal(err)
		}
		p, err := r.Open()
		if err != nil {
			b.Fatal(err)
		}
		if _, err := p.Merge(context.Background(), filepath.Join(d, "out.safetensors"), Options{NoHash: true}); err != nil {
			b.Fatal(err)
		}
		p.Close()
	}
	b.StopTimer()
	// CPU seconds per merge: steadier than wall time on a shared machine.
	b.ReportMetric((cpuSeconds()-cpu0)/float64(b.N), "cpu-s/op")
}

func cpuSeconds() float64 {
	var ru syscall.Rusage
	_ = syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return float64(ru.Utime.Nano()+ru.Stime.Nano()) / 1e9
}
