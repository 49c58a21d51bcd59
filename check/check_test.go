package check

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

func problems(r *Report) string {
	var s []string
	for _, p := range r.Problems {
		s = append(s, p.Check+":"+p.Tensor)
	}
	return strings.Join(s, " ")
}

// mergeRecipe merges a recipe written into dir to dir/out and returns
// the output's path.
func mergeRecipe(t *testing.T, dir, recipe, out string) string {
	t.Helper()
	rp := filepath.Join(dir, "r.yaml")
	if err := os.WriteFile(rp, []byte(recipe), 0o644); err != nil {
		t.Fatal(err)
	}
	rec, err := merge.ParseRecipe(rp)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := rec.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	out = filepath.Join(dir, out)
	if _, err := plan.Merge(context.Background(), out, merge.Options{}); err != nil {
		t.Fatal(err)
	}
	return out
}

func run(t *testing.T, model string, o Options) *Report {
	t.Helper()
	if o.MaxAbsDiff == 0 {
		o.MaxAbsDiff = -1
	}
	r, err := Run(context.Background(), testutil.Open(t, model)[0], o)
	if err != nil {
		t.Fatal(err)
	}
	return r
}

// TestNonFiniteAndReference: NaN/Inf counts per tensor (hand-placed), and
// every difference from a reference in names, dtypes and shapes; the
// largest value difference is the hand-computed one.
func TestNonFiniteAndReference(t *testing.T) {
	d := t.TempDir()
	ref := testutil.Write(t, filepath.Join(d, "ref.safetensors"), nil,
		testutil.Tensor{Name: "a", Values: []float64{1, 2, 3, 4}},
		testutil.Tensor{Name: "b", Values: []float64{1, 1}},
		testutil.Tensor{Name: "c", Values: []float64{0, 0}, Shape: []int64{1, 2}},
		testutil.Tensor{Name: "gone", Values: []float64{1}})
	m := testutil.Write(t, filepath.Join(d, "m.safetensors"), nil,
		testutil.Tensor{Name: "a", Values: []float64{1, 2.5, 3, 3.75}},
		testutil.Tensor{Name: "b", DType: weights.BF16, Values: []float64{math.NaN(), math.Inf(-1)}},
		testutil.Tensor{Name: "c", Values: []float64{0, 0}},
		testutil.Tensor{Name: "new", Values: []float64{math.NaN()}})
	r := run(t, m, Options{})
	if r.OK || r.NaNTotal != 2 || r.InfTotal != 1 || problems(r) != "nonfinite:b nonfinite:new" {
		t.Errorf("alone: ok %v nan %d inf %d, problems %s", r.OK, r.NaNTotal, r.InfTotal, problems(r))
	}
	r = run(t, m, Options{Reference: testutil.Open(t, ref)[0], MaxAbsDiff: 0.4})
	want := "dtype:b shape:c extra:new missing:gone diff:a nonfinite:b nonfinite:new"
	if problems(r) != want {
		t.Errorf("with a reference: %s, want %s", problems(r), want)
	}
	if r.MaxAbsDiff == nil || *r.MaxAbsDiff != 0.5 || r.MaxAbsDiffTensor != "a" {
		t.Errorf("max abs diff %v in %q, want 0.5 in a", r.MaxAbsDiff, r.MaxAbsDiffTensor)
	}
	if r := run(t, ref, Options{Reference: testutil.Open(t, ref)[0], MaxAbsDiff: 0}); !r.OK || *r.MaxAbsDiff != 0 {
		t.Errorf("a model against itself: %s", problems(r))
	}
}

// TestConfigShapes: a LLaMA-layout checkpoint is checked against the
// shapes its config.json implies (GQA heads, layers, vocabulary, tying).
func TestConfigShapes(t *testing.T) {
	d := t.TempDir()
	cfg := `{"architectures": ["LlamaForCausalLM"], "hidden_size": 8, "intermediate_size": 12, "num_hidden_layers": 2,
		"num_attention_heads": 4, "num_key_value_heads": 2, "vocab_size": 10, "tie_word_embeddings": true}`
	os.WriteFile(filepath.Join(d, "config.json"), []byte(cfg), 0o644)
	shapes := map[string][]int64{"model.embed_tokens.weight": {10, 8}, "model.norm.weight": {8}}
	for i := range 2 {
		p := fmt.Sprintf("model.layers.%d.", i)
		for n, s := range map[string][]int64{"input_layernorm.weight": {8}, "post_attention_layernorm.weight": {8},
			"self_attn.q_proj.weight": {8, 8}, "self_attn.k_proj.weight": {4, 8}, "self_attn.v_proj.weight": {4, 8},
			"self_attn.o_proj.weight": {8, 8}, "mlp.gate_proj.weight": {12, 8}, "mlp.up_proj.weight": {12, 8}, "mlp.down_proj.weight": {8, 12}} {
			shapes[p+n] = s
		}
	}
	write := func(edit func(map[string][]int64)) string {
		s := map[string][]int64{}
		for k, v := range shapes {
			s[k] = v
		}
		edit(s)
		vals := map[string][]float64{}
		for k, v := range s {
			n := int64(1)
			for _, x := range v {
				n *= x
			}
			vals[k] = make([]float64, n)
		}
		return testutil.WriteF32(t, filepath.Join(d, "model.safetensors"), vals, s)
	}
	if r := run(t, write(func(map[string][]int64) {}), Options{}); !r.OK || !strings.Contains(strings.Join(r.Checked, ","), "config") {
		t.Errorf("a matching model: %s (checked %v)", problems(r), r.Checked)
	}
	r := run(t, write(func(s map[string][]int64) {
		s["model.layers.1.self_attn.k_proj.weight"] = []int64{8, 8} // heads, not KV heads
		delete(s, "model.layers.0.mlp.up_proj.weight")
		s["model.layers.2.input_layernorm.weight"] = []int64{8} // a third layer
		s["lm_head.weight"] = []int64{10, 8}                    // tied: allowed
	}), Options{})
	want := "config:model.layers.0.mlp.up_proj.weight config:model.layers.1.self_attn.k_proj.weight config:model.layers.2.input_layernorm.weight"
	if problems(r) != want {
		t.Errorf("got %s, want %s", problems(r), want)
	}
}

// TestProvenance: a merge's recorded input digests match the inputs given,
// and a changed input is caught; a patched model's patches likewise, and
// broken undo records fail.
func TestProvenance(t *testing.T) {
	d := t.TempDir()
	base := testutil.WriteF32(t, filepath.Join(d, "base.safetensors"), map[string][]float64{"w": {1, 2}}, nil)
	ft := testutil.WriteF32(t, filepath.Join(d, "ft.safetensors"), map[string][]float64{"w": {1.5, 2}}, nil)
	out := mergeRecipe(t, d, "merge_method: task_arithmetic\nbase_model: base.safetensors\nmodels: [{model: ft.safetensors, parameters: {weight: 1}}]\n", "merged.safetensors")
	if r := run(t, out, Options{Inputs: []string{base, ft}}); !r.OK {
		t.Errorf("true inputs: %s %v", problems(r), r.Problems)
	}
	other := testutil.WriteF32(t, filepath.Join(d, "sub", "ft.safetensors"), map[string][]float64{"w": {9, 9}}, nil)
	if r := run(t, out, Options{Inputs: []string{other}}); problems(r) != "provenance:" || !strings.Contains(r.Problems[0].Message, "records") {
		t.Errorf("a changed input: %s %v", problems(r), r.Problems)
	}
	// A patched model.
	pp := filepath.Join(d, "p.wpatch")
	w, _ := wpatch.Create(pp, "rws", nil, wpatch.Encoding{})
	w.Add("w", []int64{2}, weights.F32, []float32{0.25, 0})
	w.Commit()
	pt, _ := wpatch.Open(pp)
	patched := filepath.Join(d, "patched.safetensors")
	if _, err := wpatch.Apply(context.Background(), testutil.Open(t, base)[0], []*wpatch.Patch{pt}, patched, wpatch.ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	pt.Close()
	if r := run(t, patched, Options{Inputs: []string{pp}}); !r.OK || !strings.Contains(strings.Join(r.Checked, ","), "patches") {
		t.Errorf("patched model: %s", problems(r))
	}
	ck := testutil.Open(t, patched)[0]
	md := ck.Metadata()
	md[wpatch.MetaUndoRecords] = "not JSON!"
	var ts []weights.Tensor
	for _, info := range ck.Tensors() {
		ten, _ := ck.ReadTensor(info.Name, nil)
		ts = append(ts, ten)
	}
	bad := filepath.Join(d, "bad.safetensors")
	if err := weights.WriteSafetensors(bad, ts, md); err != nil {
		t.Fatal(err)
	}
	if r := run(t, bad, Options{}); problems(r) != "patches:" {
		t.Errorf("broken undo records: %s", problems(r))
	}
}

// TestReportJSONKeys: the documented keys are present, counts included
// when zero.
func TestReportJSONKeys(t *testing.T) {
	d := t.TempDir()
	m := testutil.WriteF32(t, filepath.Join(d, "m.safetensors"), map[string][]float64{"w": {1, 2}}, nil)
	b, _ := json.Marshal(run(t, m, Options{}))
	var got map[string]any
	json.Unmarshal(b, &got)
	for _, k := range []string{"schema_version", "model", "files", "ok", "problems", "checked", "tensors", "nan_total", "inf_total", "reference", "config", "max_abs_diff", "max_abs_diff_tensor", "max_abs_diff_limit"} {
		if _, ok := got[k]; !ok {
			t.Errorf("key %q missing from %s", k, b)
		}
	}
}

// TestProvenanceModelDirectories: inputs that are model directories all
// hold model.safetensors; each matches its own record by content, and a
// changed one is reported against the record at its path.
func TestProvenanceModelDirectories(t *testing.T) {
	d := t.TempDir()
	var dirs []string
	for i, name := range []string{"base", "a", "b"} {
		testutil.WriteF32(t, filepath.Join(d, name, "model.safetensors"), map[string][]float64{"w": {1, float64(i)}}, nil)
		dirs = append(dirs, filepath.Join(d, name))
	}
	out := mergeRecipe(t, d, "merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 1}}]\n", "merged")
	if r := run(t, out, Options{Inputs: dirs}); !r.OK {
		t.Errorf("true inputs: %v", r.Problems)
	}
	testutil.WriteF32(t, filepath.Join(d, "a", "model.safetensors"), map[string][]float64{"w": {7, 7}}, nil)
	r := run(t, out, Options{Inputs: dirs})
	if len(r.Problems) != 1 || !strings.Contains(r.Problems[0].Message, filepath.Join(d, "a", "model.safetensors")+" has SHA-256") {
		t.Errorf("changed input a: %v", r.Problems)
	}
}

// TestScanStreamed: tensors read a chunk at a time (the model's and the
// reference's) give the counts and differences placed by hand, the same
// as read whole: NaN and Inf in a late chunk, a largest difference
// against a BF16 reference in the last chunk, a NaN difference.
func TestScanStreamed(t *testing.T) {
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	d := t.TempDir()
	n, sh := 3*70000, []int64{3, 70000} // three chunks
	vals := func(f func(i int) float64) []float64 {
		v := make([]float64, n)
		for i := range v {
			v[i] = f(i)
		}
		return v
	}
	base := func(i int) float64 { return float64(i%97) / 8 }
	bad := vals(base)
	bad[150001], bad[150002], bad[209999] = math.NaN(), math.Inf(1), math.Inf(-1)
	far := vals(base)
	far[5] += 0.25
	far[200000] -= 1.5 // the largest difference, in the last chunk
	nan := vals(base)
	m := testutil.Write(t, filepath.Join(d, "m.safetensors"), nil,
		testutil.Tensor{Name: "bad", Values: bad, Shape: sh},
		testutil.Tensor{Name: "far", Values: far, Shape: sh},
		testutil.Tensor{Name: "nan", Values: nan, Shape: sh})
	refNaN := vals(base)
	refNaN[123456] = math.NaN()
	ref := testutil.Write(t, filepath.Join(d, "ref.safetensors"), nil,
		testutil.Tensor{Name: "bad", Values: vals(base), Shape: sh},
		testutil.Tensor{Name: "far", DType: weights.BF16, Values: vals(base), Shape: sh},
		testutil.Tensor{Name: "nan", Values: refNaN, Shape: sh})
	var whole string
	for _, above := range []int64{1 << 62, -1} {
		stream.StreamAbove = above
		r := run(t, m, Options{Reference: testutil.Open(t, ref)[0], MaxAbsDiff: 2})
		got := map[string]TensorCheck{}
		for _, c := range r.Tensors {
			got[c.Name] = c
		}
		if c := got["bad"]; c.NaN != 1 || c.Inf != 2 || c.MaxAbsDiff != nil {
			t.Errorf("above %d: bad: %d NaN %d Inf, diff %v", above, c.NaN, c.Inf, c.MaxAbsDiff)
		}
		if c := got["far"]; c.MaxAbsDiff == nil || *c.MaxAbsDiff != 1.5 {
			t.Errorf("above %d: far: diff %v, want 1.5", above, c.MaxAbsDiff)
		}
		if c := got["nan"]; c.MaxAbsDiff == nil || !math.IsNaN(*c.MaxAbsDiff) {
			t.Errorf("above %d: nan: diff %v, want NaN", above, c.MaxAbsDiff)
		}
		js, _ := json.Marshal(r)
		if whole == "" {
			whole = string(js)
		} else if string(js) != whole {
			t.Errorf("streamed report differs:\n%s\n%s", js, whole)
		}
	}
}
