package merge

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// model writes a small F32 checkpoint of named 1-D or 2-D tensors as
// dir/name/model.safetensors and returns dir/name.
func model(t *testing.T, dir, name string, tensors map[string][]float64, shapes map[string][]int64) string {
	t.Helper()
	testutil.WriteF32(t, filepath.Join(dir, name, "model.safetensors"), tensors, shapes)
	return filepath.Join(dir, name)
}

// openRecipe writes a recipe into dir and opens its plan (closed when
// the test ends).
func openRecipe(t *testing.T, dir, yaml string) *Plan {
	t.Helper()
	rp := filepath.Join(dir, fmt.Sprintf("recipe-%d.yaml", rand.IntN(1<<30)))
	if err := os.WriteFile(rp, []byte(yaml), 0o644); err != nil {
		t.Fatal(err)
	}
	r, err := ParseRecipe(rp)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := r.Open()
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { plan.Close() })
	return plan
}

func runRecipe(t *testing.T, dir, yaml string, workers int) string {
	t.Helper()
	plan := openRecipe(t, dir, yaml)
	out := filepath.Join(dir, fmt.Sprintf("out-%d", rand.IntN(1<<30)))
	if _, err := plan.Merge(context.Background(), out, Options{Options: stream.Options{Workers: workers}}); err != nil {
		t.Fatal(err)
	}
	return out
}

func read(t *testing.T, path, name string) []float64 { return testutil.Read(t, path, name) }

// near allows the float32 rounding of the true value (outputs are F32).
func near(t *testing.T, what string, got, want []float64) { testutil.Near(t, what, got, want, 1e-6) }

func TestTaskArithmeticHandWorked(t *testing.T) {
	d := t.TempDir()
	model(t, d, "base", map[string][]float64{"w": {1, 2, 3, 4}}, nil)
	model(t, d, "m1", map[string][]float64{"w": {2, 2, 3, 5}}, nil) // τ1 = [1,0,0,1]
	model(t, d, "m2", map[string][]float64{"w": {1, 4, 2, 4}}, nil) // τ2 = [0,2,-1,0]
	y := `merge_method: task_arithmetic
base_model: base
models:
  - model: m1
    parameters: {weight: 0.5}
  - model: m2
    parameters: {weight: 1.0}
`
	out := runRecipe(t, d, y, 1)
	near(t, "task_arithmetic", read(t, out, "w"), []float64{1.5, 4, 2, 4.5})
	out = runRecipe(t, d, y+"parameters: {normalize: true, lambda: 2}\n", 1)
	// base + 2·(0.5τ1 + τ2)/1.5
	near(t, "normalized λ=2", read(t, out, "w"), []float64{1 + 2*0.5/1.5, 2 + 2*2/1.5, 3 - 2/1.5, 4 + 2*0.5/1.5})
}

func TestTIESHandWorked(t *testing.T) {
	d := t.TempDir()
	model(t, d, "base", map[string][]float64{"w": {0, 0, 0, 0}}, nil)
	model(t, d, "m1", map[string][]float64{"w": {0.5, -0.2, 0.3, -0.1}}, nil)
	model(t, d, "m2", map[string][]float64{"w": {-0.4, -0.3, 0.1, 0.2}}, nil)
	// Trim to density 0.5: τ1 → [0.5, 0, 0.3, 0], τ2 → [-0.4, -0.3, 0, 0].
	// Elected sign of the sum [0.1, -0.3, 0.3, 0]: + - + + (zero counts +).
	// Disjoint mean over agreeing entries: [0.5, -0.3, 0.3, 0].
	out := runRecipe(t, d, `merge_method: ties
base_model: base
models:
  - model: base
  - model: m1
    parameters: {weight: 1, density: 0.5}
  - model: m2
    parameters: {weight: 1, density: 0.5}
`, 1)
	near(t, "ties", read(t, out, "w"), []float64{0.5, -0.3, 0.3, 0})
}

func TestBreadcrumbsSingleModelAndGradients(t *testing.T) {
	d := t.TempDir()
	base := []float64{0, 0, 0, 0, 0, 0, 0, 0, 0, 0}
	ft := []float64{0.1, -0.5, 0.3, 0.9, -0.2, 0, 0.7, -0.4, 0.6, 0.05}
	model(t, d, "base", map[string][]float64{"model.layers.0.w": base, "model.layers.1.w": base, "model.layers.2.w": base}, nil)
	model(t, d, "ft", map[string][]float64{"model.layers.0.w": ft, "model.layers.1.w": ft, "model.layers.2.w": ft}, nil)
	// weight gradient [0, 1] over 3 layers: 0, 0.5, 1. γ = 0.1 drops 0.9;
	// density 0.5 keeps 0.7, 0.6, -0.5, -0.4, 0.3.
	out := runRecipe(t, d, `merge_method: breadcrumbs
base_model: base
models:
  - model: ft
    parameters:
      weight: [0, 1]
      density: 0.5
      gamma: 0.1
`, 1)
	kept := []float64{0, -0.5, 0.3, 0, 0, 0, 0.7, -0.4, 0.6, 0}
	for l, w := range []float64{0, 0.5, 1} {
		want := make([]float64, len(kept))
		for i := range kept {
			want[i] = w * kept[i]
		}
		near(t, fmt.Sprintf("layer %d", l), read(t, out, fmt.Sprintf("model.layers.%d.w", l)), want)
	}
}

func TestFilterParamsAndLinear(t *testing.T) {
	d := t.TempDir()
	model(t, d, "a", map[string][]float64{"mlp.w": {1, 1}, "attn.w": {1, 1}}, nil)
	model(t, d, "b", map[string][]float64{"mlp.w": {3, 5}, "attn.w": {3, 5}}, nil)
	out := runRecipe(t, d, `merge_method: linear
models:
  - model: a
    parameters:
      weight: [{filter: mlp, value: 3}, {value: 1}]
  - model: b
    parameters: {weight: 1}
`, 1)
	near(t, "mlp (3a+b)/4", read(t, out, "mlp.w"), []float64{1.5, 2})
	near(t, "attn (a+b)/2", read(t, out, "attn.w"), []float64{2, 3})
}

func TestSlerpAgainstFormula(t *testing.T) {
	d := t.TempDir()
	a := []float64{1, 0, 0, 2}
	b := []float64{0, 1, 1, -1}
	model(t, d, "a", map[string][]float64{"w": a}, nil)
	model(t, d, "b", map[string][]float64{"w": b}, nil)
	out := runRecipe(t, d, "merge_method: slerp\nbase_model: a\nmodels: [a, b]\nparameters: {t: 0.3}\n", 1)
	// Independent float64 derivation.
	na, nb := math.Sqrt(5), math.Sqrt(3)
	dot := (1*0 + 0*1 + 0*1 + 2*-1) / (na * nb)
	th := math.Acos(dot)
	s0, s1 := math.Sin(th*0.7)/math.Sin(th), math.Sin(th*0.3)/math.Sin(th)
	want := make([]float64, 4)
	for i := range want {
		want[i] = s0*a[i] + s1*b[i]
	}
	near(t, "slerp", read(t, out, "w"), want)
	// Parallel vectors fall back to lerp.
	model(t, d, "c", map[string][]float64{"w": {2, 0, 0, 4}}, nil)
	out = runRecipe(t, d, "merge_method: slerp\nbase_model: a\nmodels: [a, c]\nparameters: {t: 0.25}\n", 1)
	near(t, "lerp fallback", read(t, out, "w"), []float64{1.25, 0, 0, 2.5})
}

func TestModelStockAgainstFormula(t *testing.T) {
	d := t.TempDir()
	w0 := []float64{0, 0, 0}
	w1 := []float64{1, 0, 1}
	w2 := []float64{1, 1, 0}
	model(t, d, "base", map[string][]float64{"w": w0}, nil)
	model(t, d, "m1", map[string][]float64{"w": w1}, nil)
	model(t, d, "m2", map[string][]float64{"w": w2}, nil)
	out := runRecipe(t, d, "merge_method: model_stock\nbase_model: base\nmodels: [base, m1, m2]\n", 1)
	// cos between offsets = 1/2; N = 2: t = 2·0.5/(1+0.5) = 2/3.
	tt := 2.0 / 3
	near(t, "model_stock", read(t, out, "w"), []float64{tt * 1, tt * 0.5, tt * 0.5})
}

func TestDAREDeterministicAndRescaled(t *testing.T) {
	d := t.TempDir()
	n := 4096
	base, ft := make([]float64, n), make([]float64, n)
	for i := range ft {
		ft[i] = float64(i%7) - 3
	}
	model(t, d, "base", map[string][]float64{"w": base}, nil)
	model(t, d, "ft", map[string][]float64{"w": ft}, nil)
	y := `merge_method: dare_linear
base_model: base
models:
  - model: ft
    parameters: {weight: 0.5, density: 0.25}
parameters: {seed: 42, rescale_norm: density}
`
	a := read(t, runRecipe(t, d, y, 1), "w")
	b := read(t, runRecipe(t, d, y, 2), "w")
	kept := 0
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("same seed gave different masks")
		}
		if a[i] != 0 {
			kept++
			if a[i] != 0.5*ft[i]/0.25 {
				t.Fatalf("kept entry %v, want %v", a[i], 0.5*ft[i]/0.25)
			}
		}
	}
	nonzero := n - n/7
	if exp := 0.25 * float64(nonzero); math.Abs(float64(kept)-exp) > 5*math.Sqrt(exp*0.75) {
		t.Errorf("kept %d of %d non-zero, expected ≈ %.0f", kept, nonzero, exp)
	}
	// Density 1 is plain task arithmetic.
	c := read(t, runRecipe(t, d, strings.Replace(y, "density: 0.25", "density: 1", 1), 1), "w")
	for i := range c {
		if c[i] != 0.5*ft[i] {
			t.Fatalf("density 1: %v, want %v", c[i], 0.5*ft[i])
		}
	}
}

// TestBitIdenticalAcrossRunsAndWorkers: a merge with sparsification over a
// BF16 model with many tensors gives the same bytes twice and with 1 or 2
// workers.
func TestBitIdenticalAcrossRunsAndWorkers(t *testing.T) {
	d := t.TempDir()
	for i, name := range []string{"base", "m1", "m2"} {
		if _, err := weights.Synthesize(context.Background(), filepath.Join(d, name+".safetensors"), weights.SynthOptions{Bytes: 600_000, Hidden: 64, Vocab: 300, Seed: uint64(i + 1)}); err != nil {
			t.Fatal(err)
		}
	}
	y := `merge_method: breadcrumbs_ties
base_model: base.safetensors
models:
  - model: m1.safetensors
    parameters: {weight: 0.7, density: 0.8, gamma: 0.02}
  - model: m2.safetensors
    parameters: {weight: [0.2, 0.9], density: 0.6}
parameters: {normalize: true}
`
	var outs [][]byte
	for _, w := range []int{1, 2, 2} {
		out := runRecipe(t, d, y, w)
		b, err := os.ReadFile(filepath.Join(out, "model.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		outs = append(outs, b)
	}
	for i := 1; i < len(outs); i++ {
		if !bytes.Equal(outs[0], outs[i]) {
			t.Fatalf("run %d differs from run 0", i)
		}
	}
}

func TestProvenanceAndModelFiles(t *testing.T) {
	d := t.TempDir()
	bp := model(t, d, "base", map[string][]float64{"w": {1, 2}}, nil)
	model(t, d, "m1", map[string][]float64{"w": {2, 3}}, nil)
	os.WriteFile(filepath.Join(bp, "config.json"), []byte(`{"model_type":"llama", "torch_dtype": "float32"}`), 0o644)
	os.WriteFile(filepath.Join(bp, "tokenizer.json"), []byte(`{}`), 0o644)
	out := runRecipe(t, d, "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: m1\n    parameters: {weight: 1}\n", 2)
	for _, f := range []string{"config.json", "tokenizer.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s not copied: %v", f, err)
		}
	}
	c, _ := weights.Open(out)
	defer c.Close()
	md := c.Metadata()
	if !strings.Contains(md["weightops.recipe"], "merge_method: task_arithmetic") || md["weightops.method"] != "task_arithmetic" {
		t.Errorf("recipe not recorded: %v", md)
	}
	var recs []InputRecord
	if err := json.Unmarshal([]byte(md["weightops.inputs"]), &recs); err != nil || len(recs) != 2 {
		t.Fatalf("inputs record %q: %v", md["weightops.inputs"], err)
	}
	// The config is copied as it was: the output is F32 like the base.
	if cfg, _ := os.ReadFile(filepath.Join(out, "config.json")); string(cfg) != `{"model_type":"llama", "torch_dtype": "float32"}` {
		t.Errorf("config.json changed: %s", cfg)
	}
	raw, _ := os.ReadFile(filepath.Join(bp, "model.safetensors"))
	sum := sha256.Sum256(raw)
	if recs[0].Role != "base" || recs[0].Files[0].SHA256 != hex.EncodeToString(sum[:]) {
		t.Errorf("base record %+v, want sha256 %x", recs[0], sum)
	}
}

func TestRecipeValidationErrors(t *testing.T) {
	d := t.TempDir()
	model(t, d, "base", map[string][]float64{"w": {1, 2}, "b": {1}}, nil)
	model(t, d, "m1", map[string][]float64{"w": {1, 2}, "b": {1}}, nil)
	model(t, d, "wide", map[string][]float64{"w": {1, 2, 3}, "b": {1}}, nil)
	model(t, d, "less", map[string][]float64{"w": {1, 2}}, nil)
	cases := []struct{ name, yaml, want string }{
		{"unknown key", "merge_methd: ties\nmodels: [m1]\n", `unknown key "merge_methd" (did you mean "merge_method"?)`},
		{"unknown method", "merge_method: tiez\nbase_model: base\nmodels: [m1]\n", `unknown merge_method "tiez" (did you mean "ties"?)`},
		{"missing method", "models: [m1]\n", "merge_method is missing"},
		{"missing base", "merge_method: ties\nmodels:\n  - model: m1\n    parameters: {weight: 1}\n", "ties needs base_model"},
		{"missing weight", "merge_method: ties\nbase_model: base\nmodels: [m1]\n", `needs parameter "weight"`},
		{"unknown param", "merge_method: ties\nbase_model: base\nmodels:\n  - model: m1\n    parameters: {weight: 1, densty: 0.5}\n", `unknown parameter "densty" for ties (did you mean "density"?)`},
		{"range", "merge_method: ties\nbase_model: base\nmodels:\n  - model: m1\n    parameters: {weight: 1, density: [0.5, 1.5]}\n", "density = 1.5 is outside [0, 1]"},
		{"type", "merge_method: ties\nbase_model: base\nmodels:\n  - model: m1\n    parameters: {weight: heavy}\n", "weight must be a number"},
		{"choice", "merge_method: breadcrumbs\nbase_model: base\nmodels:\n  - model: m1\n    parameters: {weight: 1}\nparameters: {granularity: per_rows}\n", `granularity "per_rows" is not one of per_tensor, per_row (did you mean "per_row"?)`},
		{"slices and models", "merge_method: ties\nslices: []\nbase_model: base\nmodels: [m1]\n", "give either models or slices, not both"},
		{"slerp arity", "merge_method: slerp\nbase_model: base\nmodels: [base]\nparameters: {t: 0.5}\n", "slerp merges base_model and exactly 1 other model(s) (got 0)"},
		{"stock arity", "merge_method: model_stock\nbase_model: base\nmodels: [base, m1]\n", "model_stock needs base_model and at least 2 other model(s) (got 1)"},
		{"bad dtype", "merge_method: linear\nmodels:\n  - model: m1\n    parameters: {weight: 1}\nout_dtype: int8\n", `out_dtype "int8"`},
		{"not yaml", "merge_method: [\n", "invalid YAML"},
		{"missing model", "merge_method: linear\nmodels:\n  - model: nowhere\n    parameters: {weight: 1}\n", `model "nowhere" not found`},
		{"linear base not listed", "merge_method: linear\nbase_model: m1\nmodels:\n  - model: m2\n    parameters: {weight: 1}\n", `base_model "m1" is not among them`},
		{"shape", "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: wide\n    parameters: {weight: 1}\n", `model "wide": tensor "w" has shape [3], base ("w") has [2]`},
		{"missing tensor", "merge_method: task_arithmetic\nbase_model: base\nmodels:\n  - model: less\n    parameters: {weight: 1}\n", "tensors missing from it but present in base: b"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			rp := filepath.Join(d, strings.ReplaceAll(c.name, " ", "_")+".yaml")
			os.WriteFile(rp, []byte(c.yaml), 0o644)
			r, err := ParseRecipe(rp)
			if err == nil {
				var p *Plan
				p, err = r.Open()
				if err == nil {
					p.Close()
					t.Fatal("accepted")
				}
			}
			if !strings.Contains(err.Error(), c.want) || !strings.HasPrefix(err.Error(), rp) {
				t.Errorf("error %q\nwant it to start with the recipe path and contain %q", err, c.want)
			}
		})
	}
	// Every problem at once.
	rp := filepath.Join(d, "many.yaml")
	os.WriteFile(rp, []byte("merge_method: ties\nbase_modle: base\nmodels:\n  - model: m1\n    parameters: {densit: 2}\n"), 0o644)
	_, err := ParseRecipe(rp)
	if err == nil || !strings.Contains(err.Error(), "problems") || !strings.Contains(err.Error(), "base_modle") || !strings.Contains(err.Error(), "densit") || !strings.Contains(err.Error(), "needs base_model") {
		t.Errorf("not every problem reported: %v", err)
	}
}

func TestTIESModelWideTrim(t *testing.T) {
	d := t.TempDir()
	// Two tensors; density 0.5 over the model's 8 entries keeps the 4
	// largest |τ| wherever they are: all of "a", none of "b" — whereas
	// per-tensor trimming keeps 2 of each.
	model(t, d, "base", map[string][]float64{"a": {0, 0, 0, 0}, "b": {0, 0, 0, 0}}, nil)
	model(t, d, "m1", map[string][]float64{"a": {5, -6, 7, 8}, "b": {1, -2, 3, 0.5}}, nil)
	y := "merge_method: ties\nbase_model: base\nmodels:\n  - model: m1\n    parameters: {weight: 1, density: 0.5}\n"
	out := runRecipe(t, d, y+"parameters: {trim_scope: model}\n", 2)
	near(t, "a global", read(t, out, "a"), []float64{5, -6, 7, 8})
	near(t, "b global", read(t, out, "b"), []float64{0, 0, 0, 0})
	out = runRecipe(t, d, y, 2)
	near(t, "a per tensor", read(t, out, "a"), []float64{0, 0, 7, 8})
	near(t, "b per tensor", read(t, out, "b"), []float64{0, -2, 3, 0})
}

// A merge written in another dtype says so in its config.json, as
// save_pretrained would; the rest of the file stays byte for byte.
func TestConfigFollowsOutputDType(t *testing.T) {
	d := t.TempDir()
	bp := model(t, d, "base", map[string][]float64{"w": {1, 2}}, nil)
	model(t, d, "m1", map[string][]float64{"w": {2, 3}}, nil)
	cfg := "{\n  \"model_type\": \"llama\",\n  \"torch_dtype\": \"float32\",\n  \"vocab_size\": 2\n}\n"
	os.WriteFile(filepath.Join(bp, "config.json"), []byte(cfg), 0o644)
	out := runRecipe(t, d, "merge_method: linear\ndtype: float16\nbase_model: base\nmodels:\n  - model: base\n    parameters: {weight: 1}\n  - model: m1\n    parameters: {weight: 1}\n", 2)
	got, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if want := strings.Replace(cfg, "float32", "float16", 1); string(got) != want {
		t.Errorf("config.json = %q, want %q", got, want)
	}
	c, _ := weights.Open(out)
	defer c.Close()
	if ti, _ := c.Info("w"); ti.DType != weights.F16 {
		t.Errorf("w written as %s", ti.DType)
	}
	// The base listed among linear's models is merged once, with its
	// weight: (1·[1 2] + 1·[2 3]) / 2.
	near(t, "w", read(t, out, "w"), []float64{1.5, 2.5})
}

// TestModelCard: a directory output gets a model card naming the method,
// every model with its parameters and every input file with its SHA-256
// (computed here), and the recipe byte for byte; NoCard and a lone
// .safetensors output get neither.
func TestModelCard(t *testing.T) {
	d := t.TempDir()
	model(t, d, "base", map[string][]float64{"w": {1, 2}}, nil)
	model(t, d, "m|1", map[string][]float64{"w": {2, 3}}, nil)
	model(t, d, "m2", map[string][]float64{"w": {0, 3}}, nil)
	recipe := "merge_method: ties\nbase_model: base\nmodels:\n  - model: m|1\n    parameters: {weight: 0.7, density: 0.5}\n  - model: m2\n    parameters: {weight: [0.1, 0.9], density: 1}\nparameters: {lambda: 0.8}\ndtype: float32\n"
	plan := openRecipe(t, d, recipe)
	out := filepath.Join(d, "merged")
	files, err := plan.Merge(context.Background(), out, Options{Version: "9.9.9"})
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Contains(files, filepath.Join(out, CardName)) || !slices.Contains(files, filepath.Join(out, RecipeName)) {
		t.Errorf("files written: %v", files)
	}
	if got, _ := os.ReadFile(filepath.Join(out, RecipeName)); string(got) != recipe {
		t.Errorf("recipe copy %q", got)
	}
	card, _ := os.ReadFile(filepath.Join(out, CardName))
	want := []string{"---\nlibrary_name: transformers\n", "weightops 9.9.9", "[`ties`](https://arxiv.org/abs/2306.01708)",
		"| `base` | base | — |", "| `m\\|1` | merged | density = 0.5, weight = 0.7 |", "| `m2` | merged | density = 1, weight = [0.1, 0.9] |",
		"Method parameters: lambda = 0.8.", "Written in float32.", "```yaml\n" + strings.TrimSpace(recipe) + "\n```",
		"weightops check " + out + " --inputs base --inputs m|1 --inputs m2"}
	for _, name := range []string{"base", "m|1", "m2"} {
		raw, _ := os.ReadFile(filepath.Join(d, name, "model.safetensors"))
		want = append(want, fmt.Sprintf("`%x`", sha256.Sum256(raw)))
	}
	for _, w := range want {
		if !strings.Contains(string(card), w) {
			t.Errorf("card lacks %q:\n%s", w, card)
		}
	}
	for _, c := range []struct {
		out string
		o   Options
	}{{filepath.Join(d, "nocard"), Options{NoCard: true}}, {filepath.Join(d, "lone.safetensors"), Options{}}} {
		if _, err := plan.Merge(context.Background(), c.out, c.o); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{CardName, RecipeName} {
			if _, err := os.Stat(filepath.Join(weights.ModelDir(c.out), f)); err == nil {
				t.Errorf("%s: %s written", c.out, f)
			}
		}
	}
	// Without hashes, the card says so.
	nohash := filepath.Join(d, "nohash")
	if _, err := plan.Merge(context.Background(), nohash, Options{NoHash: true}); err != nil {
		t.Fatal(err)
	}
	if card, _ := os.ReadFile(filepath.Join(nohash, CardName)); !strings.Contains(string(card), "not hashed") || strings.Contains(string(card), "weightops check") {
		t.Errorf("no-hash card:\n%s", card)
	}
}
