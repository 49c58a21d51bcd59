package weights

import (
	"context"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
)

// benchFile returns a synthetic BF16 checkpoint of WEIGHTOPS_BENCH_BYTES
// (default 1 GiB), made once and kept in the temp dir between runs since
// making it costs more than reading it.
var benchOnce sync.Once
var benchPath string

func benchFile(b *testing.B) string {
	benchOnce.Do(func() {
		size := int64(1 << 30)
		if s := os.Getenv("WEIGHTOPS_BENCH_BYTES"); s != "" {
			if n, err := strconv.ParseInt(s, 10, 64); err == nil {
				size = n
			}
		}
		benchPath = filepath.Join(os.TempDir(), "weightops-bench-"+strconv.FormatInt(size, 10)+".safetensors")
		if _, err := os.Stat(benchPath); err == nil {
			return
		}
		if _, err := Synthesize(context.Background(), benchPath, SynthOptions{Bytes: size, DType: BF16, Seed: 1}); err != nil {
			b.Fatal(err)
		}
	})
	return benchPath
}

// BenchmarkOpen measures opening a large checkpoint: header only.
func BenchmarkOpen(b *testing.B) {
	p := benchFile(b)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c, err := Open(p)
		if err != nil {
			b.Fatal(err)
		}
		c.Close()
	}
}

// BenchmarkStreamAll reads every tensor one by one into one reused buffer;
// MB/s compares with `cat file > /dev/null`.
func BenchmarkStreamAll(b *testing.B) {
	p := benchFile(b)
	c, err := Open(p)
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	b.SetBytes(TotalBytes(c.Tensors()))
	b.ResetTimer()
	var buf []byte
	for i := 0; i < b.N; i++ {
		for _, t := range c.Tensors() {
			ten, err := c.ReadTensor(t.Name, buf)
			if err != nil {
				b.Fatal(err)
			}
			buf = ten.Data
		}
	}
}

// BenchmarkHasNonFinite is the non-finite check every chunk a merge reads
// goes through (a clean 1 MiB BF16 chunk).
func BenchmarkHasNonFinite(b *testing.B) {
	data := make([]byte, 1<<20)
	for i := range data {
		data[i] = byte(i * 7 % 120)
	}
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if HasNonFinite(BF16, data) {
			b.Fatal("clean data reported non-finite")
		}
	}
}
