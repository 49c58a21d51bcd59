package merge

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/weights"
)

// everyMethodFixture writes three synthetic BF16 models into a temp dir and
// returns it with a recipe per merge method over them, for the tests that
// compare whole outputs between ways of running a merge.
func everyMethodFixture(t *testing.T) (string, map[string]string) {
	t.Helper()
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
		"breadcrumbs":      two("breadcrumbs", "{weight: 0.7, density: 0.8, gamma: 0.02}", "{}"),
		"della_linear":     two("della_linear", "{weight: 0.4, density: 0.6, epsilon: 0.1}", "{seed: 2}"),
		"ties_l1_dare":     two("dare_ties", "{weight: [0.2, 0.9], density: 0.4}", "{seed: 8, normalize: true}"),
		"ram":              two("ram", "{}", "{epsilon: 1e-5}"),
		"arcee_fusion":     "merge_method: arcee_fusion\nbase_model: base.safetensors\nmodels:\n  - model: m1.safetensors\n",
		"nearswap":         "merge_method: nearswap\nbase_model: base.safetensors\nmodels:\n  - model: m1.safetensors\nparameters: {t: 0.001}\n",
		"multislerp":       "merge_method: multislerp\nmodels:\n  - model: base.safetensors\n    parameters: {weight: 0.2}\n  - model: m1.safetensors\n    parameters: {weight: 0.3}\n  - model: m2.safetensors\n    parameters: {weight: 0.5}\n",
		"passthrough":      "merge_method: passthrough\nslices:\n  - sources: [{model: m1.safetensors, layer_range: [0, 1]}]\n  - sources: [{model: m2.safetensors, layer_range: [0, 1]}]\n",
	}
	return d, recipes
}

// tensorDigest is the SHA-256 of a checkpoint's tensors (name, dtype,
// shape and bytes, in name order), leaving out the metadata, which names
// the temp paths of the inputs.
func tensorDigest(t *testing.T, path string) string {
	t.Helper()
	ck, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	h := sha256.New()
	for _, ti := range ck.Tensors() {
		ten, err := ck.ReadTensor(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		fmt.Fprintf(h, "%s %s %v %d\n", ti.Name, ti.DType, ti.Shape, len(ten.Data))
		h.Write(ten.Data)
	}
	return hex.EncodeToString(h.Sum(nil))
}
