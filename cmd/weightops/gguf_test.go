package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/gguf"
	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/weights"
)

// TestGGUFOutputs: merge and patch apply write .gguf outputs through a
// working directory that is gone afterwards; convert reads the GGUF back;
// patch remove refuses a .gguf output.
func TestGGUFOutputs(t *testing.T) {
	d := t.TempDir()
	if _, e, code := run(t, "synth", "-q", "--family", d, "--size", "2MiB", "--hidden", "64", "--vocab", "128"); code != 0 {
		t.Fatal(e)
	}
	recipe := filepath.Join(d, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: ties\nbase_model: llama\nmodels:\n  - model: llama-math\n    parameters: {weight: 1, density: 0.5}\n  - model: llama-code\n    parameters: {weight: 1, density: 0.5}\n"), 0o644)
	out := filepath.Join(d, "merged.gguf")
	if o, e, code := run(t, "merge", recipe, out, "--type", "q8_0", "--no-vocab", "--json"); code != 0 || !strings.Contains(o, `"type":"Q8_0"`) {
		t.Fatalf("merge to gguf: %s %s", o, e)
	}
	g, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.File.String("general.architecture") != "llama" || len(g.Tensors()) == 0 {
		t.Errorf("merged.gguf: %q, %d tensors", g.File.String("general.architecture"), len(g.Tensors()))
	}
	g.Close()
	// The merge's provenance goes along: check --inputs verifies it.
	if o, e, code := run(t, "check", out, "--inputs", filepath.Join(d, "llama"), "--inputs", filepath.Join(d, "llama-math"), "--inputs", filepath.Join(d, "llama-code")); code != 0 || !strings.Contains(o+e, "provenance") {
		t.Errorf("check --inputs on merged.gguf: %s %s", o, e)
	}
	patch := filepath.Join(d, "math.wpatch")
	if _, e, code := run(t, "diff", filepath.Join(d, "llama-math"), filepath.Join(d, "llama"), "-o", patch); code != 0 {
		t.Fatal(e)
	}
	applied := filepath.Join(d, "applied.gguf")
	if _, e, code := run(t, "patch", "apply", filepath.Join(d, "llama"), patch, "-o", applied, "--type", "f32", "--no-vocab"); code != 0 {
		t.Fatal(e)
	}
	// The applied model in GGUF F32 reads back as the fine-tune: the
	// patch is exact, F32 holds BF16 values exactly.
	ga, err := weights.Open(applied)
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	ft := testutil.Open(t, filepath.Join(d, "llama-math"))[0]
	for _, ti := range ft.Tensors() {
		a, _ := ft.ReadTensor(ti.Name, nil)
		b, err := ga.ReadTensor(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		x, _ := a.Float64s()
		y, _ := b.Float64s()
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("%s[%d]: %v in the fine-tune, %v in applied.gguf", ti.Name, i, x[i], y[i])
			}
		}
	}
	if _, e, code := run(t, "patch", "remove", applied, patch, "-o", filepath.Join(d, "x.gguf")); code == 0 || !strings.Contains(e, "undo records") {
		t.Errorf("patch remove to gguf: %d %s", code, e)
	}
	if _, e, code := run(t, "merge", recipe, filepath.Join(d, "m.safetensors"), "--type", "q8_0"); code == 0 || !strings.Contains(e, "for a .gguf output") {
		t.Errorf("--type without gguf: %d %s", code, e)
	}
	q := filepath.Join(d, "q.gguf")
	if _, e, code := run(t, "quantize", filepath.Join(d, "llama"), "-o", q, "--type", "q4_0", "--no-vocab"); code != 0 {
		t.Errorf("quantize to gguf: %s", e)
	}
	if _, e, code := run(t, "quantize", filepath.Join(d, "llama"), "-o", q, "--bits", "4"); code == 0 || !strings.Contains(e, "ggml's --type") {
		t.Errorf("quantize --bits to gguf: %d %s", code, e)
	}
	if _, e, code := run(t, "convert", filepath.Join(d, "llama"), filepath.Join(d, "w.gguf"), "--workers", "1"); code != 2 || !strings.Contains(e, "does not apply to a .gguf output") {
		t.Errorf("convert --workers to gguf: %d %s", code, e)
	}
	entries, _ := os.ReadDir(d)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}
