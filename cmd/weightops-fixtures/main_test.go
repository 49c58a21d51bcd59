package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"
)

const committed = "../../testdata/engine"

// TestRegenerate reruns the generator with the committed seed and expects
// the committed files byte for byte: the weights (bit-identical training),
// the arch file and the metrics the training loop measured. The CNN, the
// slowest (about 10 s on two cores), is skipped with -short.
func TestRegenerate(t *testing.T) {
	for _, name := range recipeNames() {
		if name == "cnn" && testing.Short() {
			t.Log("cnn skipped in -short mode")
			continue
		}
		var tm struct {
			Seed uint64 `json:"seed"`
		}
		tm.Seed = 1
		if b, err := os.ReadFile(filepath.Join(committed, name, "train_metrics.json")); err == nil {
			if err := json.Unmarshal(b, &tm); err != nil {
				t.Fatal(err)
			}
		}
		out := t.TempDir()
		if err := make1(name, out, filepath.Join(committed, "data"), tm.Seed, nil); err != nil {
			t.Fatal(name, err)
		}
		files, _ := filepath.Glob(filepath.Join(committed, name, "*"))
		if len(files) < 3 {
			t.Fatalf("%s: committed fixture has %d files", name, len(files))
		}
		for _, f := range files {
			want, _ := os.ReadFile(f)
			got, err := os.ReadFile(filepath.Join(out, name, filepath.Base(f)))
			if err != nil || !bytes.Equal(got, want) {
				t.Errorf("%s/%s: regenerated file differs from the committed one (%v)", name, filepath.Base(f), err)
			}
		}
	}
}
