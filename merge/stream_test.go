package merge

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/internal/parallel"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// TestStreamedMatchesWhole: every method, with its tensors streamed chunk
// by chunk from the input files (several chunks per tensor, multi-pass
// sparsifiers re-reading them on each pass), writes the same bytes as with
// the tensors read whole, with one worker or two.
func TestStreamedMatchesWhole(t *testing.T) {
	d := t.TempDir()
	for i, name := range []string{"base", "m1", "m2"} {
		// Hidden 256: the MLP matrices are 256×768, three chunks each.
		if _, err := weights.Synthesize(context.Background(), filepath.Join(d, name+".safetensors"), weights.SynthOptions{Bytes: 3_000_000, Hidden: 256, Vocab: 700, Seed: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	two := func(method, params, top string) string {
		return "merge_method: " + method + "\nbase_model: base.safetensors\nmodels:\n  - model: m1.safetensors\n    parameters: " + params +
			"\n  - model: m2.safetensors\n    parameters: " + params + "\nparameters: " + top + "\ndtype: bfloat16\n"
	}
	recipes := map[string]string{
		"task_arithmetic":  two("task_arithmetic", "{weight: 0.5}", "{normalize: false}"),
		"ties":             two("ties", "{weight: 0.5, density: 0.5}", "{normalize: true}"),
		"dare_ties":        two("dare_ties", "{weight: 0.5, density: 0.5}", "{seed: 3}"),
		"dare_linear":      two("dare_linear", "{weight: 0.6, density: 0.7}", "{seed: 3}"),
		"breadcrumbs_ties": two("breadcrumbs_ties", "{weight: 0.5, density: 0.9, gamma: 0.01}", "{normalize: true}"),
		"della":            two("della", "{weight: 0.5, density: 0.7, epsilon: 0.15}", "{seed: 5, lambda: 1.1}"),
		"model_stock":      two("model_stock", "{}", "{}"),
		"sce":              two("sce", "{}", "{select_topk: 0.5}"),
		"linear":           "merge_method: linear\nmodels:\n  - model: m1.safetensors\n    parameters: {weight: 0.3}\n  - model: m2.safetensors\n    parameters: {weight: 0.7}\ndtype: float16\n",
		"slerp":            "merge_method: slerp\nbase_model: base.safetensors\nmodels:\n  - model: base.safetensors\n  - model: m1.safetensors\nparameters: {t: [0, 0.3, 1]}\n",
		"nuslerp":          "merge_method: nuslerp\nmodels:\n  - model: m1.safetensors\n    parameters: {weight: 0.4}\n  - model: m2.safetensors\n    parameters: {weight: 0.6}\n",
		"karcher":          "merge_method: karcher\nmodels:\n  - model: base.safetensors\n  - model: m1.safetensors\n  - model: m2.safetensors\n",
		"passthrough":      "merge_method: passthrough\nslices:\n  - sources: [{model: m1.safetensors, layer_range: [0, 1]}]\n  - sources: [{model: m2.safetensors, layer_range: [0, 1]}]\n",
	}
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	for name, y := range recipes {
		t.Run(name, func(t *testing.T) {
			stream.StreamAbove = 1 << 62
			whole := mergedBytes(t, d, y, 2)
			stream.StreamAbove = -1
			plan := openRecipe(t, d, y)
			for _, ti := range plan.Tensors {
				for k, in := range plan.Inputs() {
					if _, ok := in.Info(ti.Name); !ok {
						continue
					}
					if _, ok := weights.TensorSection(in, ti.Name); !ok {
						t.Fatalf("input %d cannot stream %s: the streamed path would not be tested", k, ti.Name)
					}
				}
			}
			for _, w := range []int{1, 2} {
				if got := mergedBytes(t, d, y, w); !bytes.Equal(got, whole) {
					t.Fatalf("streamed with %d workers: output differs from the whole-tensor merge", w)
				}
			}
		})
	}
}

func mergedBytes(t *testing.T, dir, y string, workers int) []byte {
	t.Helper()
	plan := openRecipe(t, dir, y)
	out := filepath.Join(dir, "out-stream")
	os.RemoveAll(out)
	if _, err := plan.Merge(context.Background(), out, Options{Options: stream.Options{Workers: workers}}); err != nil {
		var pe *parallel.PanicError
		if errors.As(err, &pe) {
			t.Fatalf("%v\n%s", err, pe.Stack)
		}
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(out, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	return b
}
