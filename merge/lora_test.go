package merge

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/lowrank"
)

// TestModelPlusLoRA: a MODEL+ADAPTER reference merges the adapter as the
// model is read: the merge gives, byte for byte, what merging the adapter
// first (lora merge) and then the recipe gives.
func TestModelPlusLoRA(t *testing.T) {
	f := newFixture(t, []string{"base", "ft", "other"}, 21, map[string][]int64{
		"model.layers.0.self_attn.q_proj.weight": {6, 5}, "model.layers.0.mlp.up_proj.weight": {4, 5}, "model.norm.weight": {5},
	}, randomFT)
	cks := testutil.Open(t, filepath.Join(f.dir, "ft"), filepath.Join(f.dir, "base"))
	adapter := filepath.Join(f.dir, "adapter")
	if _, err := lowrank.Compress(context.Background(), cks[0], cks[1], adapter, lowrank.Options{Rule: lowrank.Rule{Rank: 2}, Format: lowrank.FormatLoRA}); err != nil {
		t.Fatal(err)
	}
	a, err := lowrank.OpenAdapter(adapter)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	merged := filepath.Join(f.dir, "base-lora")
	if _, err := a.Merge(context.Background(), cks[1], merged, lowrank.MergeOptions{Scale: 1}); err != nil {
		t.Fatal(err)
	}
	recipe := "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: %s\n    parameters: {weight: 0.7}\n  - model: other\n    parameters: {weight: 0.4}\n"
	viaRef := f.merge(t, fmt.Sprintf(recipe, "base+adapter"))
	viaFile := f.merge(t, fmt.Sprintf(recipe, "base-lora"))
	x, _ := os.ReadFile(filepath.Join(viaRef, "model.safetensors"))
	y, _ := os.ReadFile(filepath.Join(viaFile, "model.safetensors"))
	// The metadata differs (recipe, input hashes); the tensors must not.
	for name := range f.shapes {
		if !bytes.Equal(f64bytes(read(t, viaRef, name)), f64bytes(read(t, viaFile, name))) {
			t.Errorf("%s differs between base+adapter and the merged adapter", name)
		}
	}
	if len(x) == 0 || len(y) == 0 {
		t.Fatal("no output")
	}
	// The adapter's files are part of the recorded inputs.
	c := testOpen(t, viaRef)
	if !bytes.Contains([]byte(c.Metadata()["weightops.inputs"]), []byte("adapter_model.safetensors")) {
		t.Errorf("inputs record lacks the adapter: %s", c.Metadata()["weightops.inputs"])
	}
}

func f64bytes(v []float64) []byte {
	var b bytes.Buffer
	for _, x := range v {
		fmt.Fprintf(&b, "%x,", x)
	}
	return b.Bytes()
}
