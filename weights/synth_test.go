package weights

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestTinyLlamaFixtureIsReproducible: the sharded fixture the README's
// first command runs on is exactly what `weightops synth --hidden 64
// --vocab 256 --size 400KB --shard-size 200KB --seed 1` writes, so the
// generator and the sharded writer are stable across changes.
func TestTinyLlamaFixtureIsReproducible(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tiny")
	files, err := Synthesize(context.Background(), dir, SynthOptions{Bytes: 400_000, DType: BF16, Seed: 1, Hidden: 64, Vocab: 256, ShardSize: 200_000})
	if err != nil {
		t.Fatal(err)
	}
	if len(files) != 4 { // two shards, the index, config.json
		t.Fatalf("files %v", files)
	}
	for _, f := range files {
		got, _ := os.ReadFile(f)
		want, err := os.ReadFile(filepath.Join("..", "testdata", "tiny-llama", filepath.Base(f)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Errorf("%s differs from the committed fixture", filepath.Base(f))
		}
	}
	// Values: matrices ~ N(0, 0.02), norms exactly one.
	c, err := Open(filepath.Join("..", "testdata", "tiny-llama"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	q, _ := c.ReadTensor("model.layers.0.self_attn.q_proj.weight", nil)
	s, _ := ComputeStats(q)
	if s.Std < 0.018 || s.Std > 0.022 || s.Mean > 0.002 || s.Mean < -0.002 {
		t.Errorf("q_proj stats %+v, want N(0, 0.02)", s)
	}
	n, _ := c.ReadTensor("model.norm.weight", nil)
	if s, _ := ComputeStats(n); s.Min != 1 || s.Max != 1 {
		t.Errorf("norm stats %+v, want ones", s)
	}
}
