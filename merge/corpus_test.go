package merge

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"

	"gopkg.in/yaml.v3"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

// The corpus: recipes in mergekit's format (testdata/recipes/mergekit,
// mergekit's examples and the configurations its tests merge, plus the
// keys they leave out), each run on a small LLaMA-shaped family and
// compared with a float64 computation written here from mergekit's
// definitions. The random methods (DARE, DELLA) are checked for
// determinism here and statistically in TestDELLAStatistics and
// TestDAREDeterministicAndRescaled.

const corpusDir = "../testdata/recipes/mergekit"

// corpusFixture is model_base and model_a, model_b, model_c (the base
// plus noise), LLaMA-shaped with 4 blocks, config.json and one tokenizer,
// and lora_a, a rank-1 adapter of model_a's first q_proj.
type corpusFixture struct {
	dir    string
	vals   map[string]map[string][]float64
	shapes map[string][]int64
	names  []string
	loraB  []float64 // [H, 1]
	loraA  []float64 // [1, H]
}

const cH, cV, cL = 10, 6, 4

func newCorpusFixture(t *testing.T) *corpusFixture {
	t.Helper()
	f := &corpusFixture{dir: t.TempDir(), vals: map[string]map[string][]float64{}, shapes: map[string][]int64{
		"model.embed_tokens.weight": {cV, cH}, "model.norm.weight": {cH}, "lm_head.weight": {cV, cH},
	}}
	for l := range cL {
		p := fmt.Sprintf("model.layers.%d.", l)
		f.shapes[p+"self_attn.q_proj.weight"] = []int64{cH, cH}
		f.shapes[p+"self_attn.o_proj.weight"] = []int64{cH, cH}
		f.shapes[p+"mlp.up_proj.weight"] = []int64{6, cH}
		f.shapes[p+"input_layernorm.weight"] = []int64{cH}
	}
	for n := range f.shapes {
		f.names = append(f.names, n)
	}
	sort.Strings(f.names)
	r := rand.New(rand.NewPCG(17, 3))
	models := []string{"model_base", "model_a", "model_b", "model_c"}
	for _, m := range models {
		f.vals[m] = map[string][]float64{}
	}
	for _, n := range f.names {
		size := int(f.shapes[n][0])
		if len(f.shapes[n]) == 2 {
			size *= int(f.shapes[n][1])
		}
		for _, m := range models {
			v := make([]float64, size)
			for i := range v {
				x := r.NormFloat64()
				if m != "model_base" {
					x = f.vals["model_base"][n][i] + 0.3*x
				}
				v[i] = float64(float32(x))
			}
			f.vals[m][n] = v
		}
	}
	tokJSON := `{"version": "1.0", "added_tokens": [{"id": 5, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
 "normalizer": null, "pre_tokenizer": null, "model": {"type": "BPE", "vocab": {"a": 0, "b": 1, "c": 2, "ab": 3, "bc": 4}, "merges": ["a b", "b c"]}}`
	for _, m := range models {
		d := model(t, f.dir, m, f.vals[m], f.shapes)
		write(t, filepath.Join(d, "config.json"), fmt.Sprintf(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": %d, "num_hidden_layers": %d, "vocab_size": %d, "torch_dtype": "float32"}`, cH, cL, cV))
		write(t, filepath.Join(d, "tokenizer.json"), tokJSON)
		write(t, filepath.Join(d, "tokenizer_config.json"), `{"added_tokens_decoder": {"5": {"content": "<s>", "special": true}}, "bos_token": "<s>"}`)
	}
	f.loraB = make([]float64, cH)
	f.loraA = make([]float64, cH)
	for i := range cH {
		f.loraB[i] = float64(float32(0.1 * r.NormFloat64()))
		f.loraA[i] = float64(float32(r.NormFloat64()))
	}
	mod := "base_model.model.model.layers.0.self_attn.q_proj."
	testutil.WriteF32(t, filepath.Join(f.dir, "lora_a", "adapter_model.safetensors"),
		map[string][]float64{mod + "lora_A.weight": f.loraA, mod + "lora_B.weight": f.loraB},
		map[string][]int64{mod + "lora_A.weight": {1, cH}, mod + "lora_B.weight": {cH, 1}})
	write(t, filepath.Join(f.dir, "lora_a", "adapter_config.json"), `{"peft_type": "LORA", "r": 1, "lora_alpha": 2, "target_modules": ["q_proj"]}`)
	return f
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// pos is a tensor's position for gradients in a model of layers blocks.
func pos(name string, layers int) float64 {
	m := regexp.MustCompile(`layers\.(\d+)\.`).FindStringSubmatch(name)
	if m == nil {
		return 0
	}
	var l int
	fmt.Sscan(m[1], &l)
	return float64(l) / float64(layers-1)
}

// interp is a gradient's value at t (numpy.interp over evenly spaced
// points).
func interp(v []float64, t float64) float64 {
	if len(v) == 1 {
		return v[0]
	}
	x := t * float64(len(v)-1)
	i := int(math.Floor(x))
	if i >= len(v)-1 {
		return v[len(v)-1]
	}
	return v[i] + (x-float64(i))*(v[i+1]-v[i])
}

func axpy(dst []float64, a float64, x []float64) {
	for i := range dst {
		dst[i] += a * x[i]
	}
}

// topMask keeps the k entries of largest |x| (values are distinct here).
func topMask(x []float64, k int) []bool {
	idx := make([]int, len(x))
	for i := range idx {
		idx[i] = i
	}
	sort.Slice(idx, func(a, b int) bool { return math.Abs(x[idx[a]]) > math.Abs(x[idx[b]]) })
	m := make([]bool, len(x))
	for _, i := range idx[:k] {
		m[i] = true
	}
	return m
}

// breadcrumbsMask is mergekit's magnitude_outliers: drop the int(γn)
// largest, keep the next int(d·n).
func breadcrumbsMask(x []float64, d, g float64) []bool {
	n := len(x)
	target, top := int(d*float64(n)), int(g*float64(n))
	if n-target-top < 0 {
		top = n - target
	}
	keepTop := topMask(x, top+target)
	dropTop := topMask(x, top)
	m := make([]bool, n)
	for i := range m {
		m[i] = keepTop[i] && !dropTop[i]
	}
	return m
}

// tiesMix is sign election and the (disjoint-mean when normalize) sum of
// the agreeing weighted task vectors.
func tiesMix(base []float64, ws []float64, taus [][]float64, normalize, elect bool) []float64 {
	out := append([]float64(nil), base...)
	for e := range base {
		var s float64
		for i := range taus {
			s += ws[i] * taus[i][e]
		}
		sign := 1.0
		if s < 0 {
			sign = -1
		}
		var mix, div float64
		for i := range taus {
			x := taus[i][e]
			if elect && (x == 0 || (x > 0) != (sign > 0)) {
				continue
			}
			mix += ws[i] * x
			div += ws[i]
		}
		if normalize {
			if div == 0 {
				div = 1
			}
			mix /= div
		}
		out[e] += mix
	}
	return out
}

func masked(x []float64, m []bool) []float64 {
	out := make([]float64, len(x))
	for i := range x {
		if m[i] {
			out[i] = x[i]
		}
	}
	return out
}

func slerpRef(a, b []float64, t float64) []float64 {
	na, nb := math.Sqrt(dotf(a, a)), math.Sqrt(dotf(b, b))
	dot := dotf(a, b) / (math.Max(na, 1e-8) * math.Max(nb, 1e-8))
	out := make([]float64, len(a))
	if math.Abs(dot) > 0.9995 {
		for i := range a {
			out[i] = (1-t)*a[i] + t*b[i]
		}
		return out
	}
	th := math.Acos(dot)
	s0, s1 := math.Sin(th*(1-t))/math.Sin(th), math.Sin(th*t)/math.Sin(th)
	for i := range a {
		out[i] = s0*a[i] + s1*b[i]
	}
	return out
}

func stockRef(base []float64, xs [][]float64, rowLen int, filterWise bool) []float64 {
	if !filterWise {
		rowLen = len(base)
	}
	out := make([]float64, len(base))
	for r := 0; r < len(base); r += rowLen {
		seg := func(x []float64) []float64 { return sub(x[r:r+rowLen], base[r:r+rowLen]) }
		a, b := seg(xs[0]), seg(xs[1])
		cos := dotf(a, b) / math.Max(math.Sqrt(dotf(a, a))*math.Sqrt(dotf(b, b)), 1e-6)
		t := 2 * cos / (1 + cos)
		for e := r; e < r+rowLen; e++ {
			out[e] = t*(xs[0][e]+xs[1][e])/2 + (1-t)*base[e]
		}
	}
	return out
}

// nuslerpGroups are the index sets nuslerp interpolates as vectors.
func nuslerpGroups(shape []int64, flatten, rowWise bool) [][]int {
	n := int(shape[0])
	cols := 1
	if len(shape) == 2 {
		cols = int(shape[1])
	}
	n *= cols
	if flatten || len(shape) == 1 {
		all := make([]int, n)
		for i := range all {
			all[i] = i
		}
		return [][]int{all}
	}
	rows := n / cols
	var gs [][]int
	if !rowWise {
		for r := range rows {
			var g []int
			for c := range cols {
				g = append(g, r*cols+c)
			}
			gs = append(gs, g)
		}
		return gs
	}
	for c := range cols {
		var g []int
		for r := range rows {
			g = append(g, r*cols+c)
		}
		gs = append(gs, g)
	}
	return gs
}

// corpusRefs are the expected outputs, tensor by tensor (the tensors
// listed; nil means the recipe must be refused, with the error holding
// the string in corpusRefusals).
var corpusRefusals = map[string]string{
	"della-invalid-epsilon.yml": "epsilon",
	"modules.yml":               "modules",
}

func (f *corpusFixture) refs(t *testing.T, file string) map[string][]float64 {
	v := func(m, n string) []float64 { return f.vals[m][n] }
	out := map[string][]float64{}
	each := func(fn func(n string) []float64) map[string][]float64 {
		for _, n := range f.names {
			out[n] = fn(n)
		}
		return out
	}
	lin := func(ws []float64, ms ...string) func(string) []float64 {
		return func(n string) []float64 {
			o := make([]float64, len(v(ms[0], n)))
			var s float64
			for i, m := range ms {
				axpy(o, ws[i], v(m, n))
				s += ws[i]
			}
			for i := range o {
				o[i] /= s
			}
			return o
		}
	}
	taus := func(n, base string, ms ...string) [][]float64 {
		var ts [][]float64
		for _, m := range ms {
			ts = append(ts, sub(v(m, n), v(base, n)))
		}
		return ts
	}
	rowLen := func(n string) int { s := f.shapes[n]; return int(s[len(s)-1]) }
	switch {
	case file == "linear.yml":
		return each(lin([]float64{1, 0.3, 0.5}, "model_a", "model_b", "model_c"))
	case file == "linear-base.yml":
		return each(lin([]float64{0.6, 0.4}, "model_a", "model_b"))
	case file == "lora.yml":
		return each(func(n string) []float64 {
			a := append([]float64(nil), v("model_a", n)...)
			if n == "model.layers.0.self_attn.q_proj.weight" {
				for r := range cH {
					for c := range cH {
						a[r*cH+c] += 2 * f.loraB[r] * f.loraA[c]
					}
				}
			}
			o := make([]float64, len(a))
			for i := range a {
				o[i] = 0.5*a[i] + 0.5*v("model_b", n)[i]
			}
			return o
		})
	case file == "ties.yml":
		return each(func(n string) []float64 {
			tt := pos(n, cL)
			ds := []float64{interp([]float64{1, 0.7, 0.1}, tt), 0.5, 0.33}
			wc := 0.0
			if strings.Contains(n, "mlp") {
				wc = 0.5
			}
			ws := []float64{1, interp([]float64{0, 0.3, 0.7, 1}, tt), wc}
			ts := taus(n, "model_base", "model_a", "model_b", "model_c")
			for i := range ts {
				if ds[i] < 1 {
					ts[i] = masked(ts[i], topMask(ts[i], int(ds[i]*float64(len(ts[i])))))
				}
			}
			return tiesMix(v("model_base", n), ws, ts, true, true)
		})
	case file == "bio-merge.yml" || file == "ties-density.yml":
		ws, d, norm, base := []float64{0.5, 0.5}, 0.5, false, "model_base"
		if file == "ties-density.yml" {
			ws, d, norm, base = []float64{0.6, 0.4}, 0.3, true, "model_c"
		}
		return each(func(n string) []float64 {
			ts := taus(n, base, "model_a", "model_b")
			for i := range ts {
				ts[i] = masked(ts[i], topMask(ts[i], int(d*float64(len(ts[i])))))
			}
			return tiesMix(v(base, n), ws, ts, norm, true)
		})
	case file == "breadcrumbs.yml" || file == "breadcrumbs-ties.yml":
		ds, gs := []float64{0.6, 0.6}, []float64{0.1, 0.1}
		if file == "breadcrumbs-ties.yml" {
			ds, gs = []float64{0.7, 0.5}, []float64{0.1, 0.2}
		}
		return each(func(n string) []float64 {
			ts := taus(n, "model_c", "model_a", "model_b")
			for i := range ts {
				ts[i] = masked(ts[i], breadcrumbsMask(ts[i], ds[i], gs[i]))
			}
			return tiesMix(v("model_c", n), []float64{0.6, 0.4}, ts, false, file == "breadcrumbs-ties.yml")
		})
	case file == "task-arithmetic.yml":
		return each(func(n string) []float64 {
			return tiesMix(v("model_c", n), []float64{0.6, 0.4}, taus(n, "model_c", "model_a", "model_b"), false, false)
		})
	case file == "slices-params.yml":
		return each(func(n string) []float64 {
			l := -1
			if m := regexp.MustCompile(`layers\.(\d+)\.`).FindStringSubmatch(n); m != nil {
				fmt.Sscan(m[1], &l)
			}
			first := l >= 0 && l < 2 || (l < 0 && !strings.Contains(n, "norm") && !strings.Contains(n, "lm_head"))
			wa, wb := 0.25, 1.0
			if first {
				wa, wb = 0.5, 0.5
				if strings.Contains(n, "mlp") {
					wa = 2
				}
			}
			o := tiesMix(v("model_base", n), []float64{wa, wb}, taus(n, "model_base", "model_a", "model_b"), false, false)
			base := v("model_base", n)
			for i := range o {
				o[i] = base[i] + 0.8*(o[i]-base[i])
			}
			return o
		})
	case file == "slerp.yml":
		return each(func(n string) []float64 { return slerpRef(v("model_a", n), v("model_b", n), 0.35) })
	case file == "gradient-slerp.yml":
		return each(func(n string) []float64 {
			tt, p := 0.5, pos(n, cL)
			if strings.Contains(n, "self_attn") {
				tt = interp([]float64{0, 0.5, 0.3, 0.7, 1}, p)
			} else if strings.Contains(n, "mlp") {
				tt = interp([]float64{1, 0.5, 0.7, 0.3, 0}, p)
			}
			return slerpRef(v("model_a", n), v("model_b", n), tt)
		})
	case file == "frankenmerge.yml" || file == "passthrough-stack.yml":
		src := func(l int) (string, int) {
			if file == "passthrough-stack.yml" {
				return "model_a", l % 4
			}
			if l < 3 {
				return "model_a", l
			}
			return "model_b", l - 2
		}
		n := 6
		if file == "passthrough-stack.yml" {
			n = 8
		}
		for l := range n {
			m, from := src(l)
			for _, leaf := range []string{"self_attn.q_proj.weight", "self_attn.o_proj.weight", "mlp.up_proj.weight", "input_layernorm.weight"} {
				out[fmt.Sprintf("model.layers.%d.%s", l, leaf)] = v(m, fmt.Sprintf("model.layers.%d.%s", from, leaf))
			}
		}
		post := "model_b"
		if file == "passthrough-stack.yml" {
			post = "model_a"
		}
		out["model.embed_tokens.weight"] = v("model_a", "model.embed_tokens.weight")
		out["model.norm.weight"] = v(post, "model.norm.weight")
		out["lm_head.weight"] = v(post, "lm_head.weight")
		return out
	case file == "passthrough-scale.yml":
		return each(func(n string) []float64 {
			o := append([]float64(nil), v("model_a", n)...)
			if strings.Contains(n, "o_proj") {
				clear(o)
			}
			return o
		})
	case file == "model-stock.yml" || file == "model-stock-filterwise.yml":
		return each(func(n string) []float64 {
			return stockRef(v("model_a", n), [][]float64{v("model_b", n), v("model_c", n)}, rowLen(n), file == "model-stock-filterwise.yml")
		})
	case strings.HasPrefix(file, "nuslerp"):
		withBase := strings.Contains(file, "-base-") || file == "nuslerp-zero-sum.yml"
		rowWise, flatten := strings.Contains(file, "rowwise_true"), strings.Contains(file, "flatten_true")
		tt := 0.4
		if file == "nuslerp-zero-sum.yml" {
			tt = 0.5
		}
		return each(func(n string) []float64 {
			a, b := v("model_a", n), v("model_b", n)
			g := nuslerpGroups(f.shapes[n], flatten, rowWise)
			if !withBase {
				return nuslerpRef(tt, a, b, g)
			}
			c := v("model_c", n)
			r := nuslerpRef(tt, sub(a, c), sub(b, c), g)
			for i := range r {
				r[i] += c[i]
			}
			return r
		})
	case file == "sce.yml":
		return each(func(n string) []float64 {
			return sceRef(v("model_c", n), [][]float64{v("model_a", n), v("model_b", n)}, 0.5)
		})
	case file == "multislerp.yml":
		return each(func(n string) []float64 {
			return multislerpRef([]float64{0.6, 0.4}, [][]float64{v("model_a", n), v("model_b", n)}, v("model_c", n), 1e-8)
		})
	case file == "karcher.yml":
		// The base is one of the points, as mergekit merges it.
		return each(func(n string) []float64 {
			return karcherRef([][]float64{v("model_a", n), v("model_b", n), v("model_c", n)}, 5, 1e-5)
		})
	case file == "arcee-fusion.yml":
		return each(func(n string) []float64 { return arceeRef(v("model_a", n), v("model_b", n), rowLen(n)) })
	case file == "nearswap.yml":
		return each(func(n string) []float64 {
			a, b := v("model_a", n), v("model_b", n)
			o := make([]float64, len(a))
			for i := range a {
				w := math.Min(1, math.Max(0, 0.0001/math.Max(math.Abs(a[i]-b[i]), 1e-6)))
				o[i] = w*b[i] + (1-w)*a[i]
			}
			return o
		})
	case file == "ram.yml" || file == "ramplus-tl.yml":
		return each(func(n string) []float64 {
			return ramRef(v("model_c", n), taus(n, "model_c", "model_a", "model_b"), file == "ramplus-tl.yml", 0.05, 1)
		})
	case file == "tokenizer.yml":
		// 6 tokens, then <|new|> (b's row of "b") and <|new2|> (a's row
		// 2); <s> forced to a's row; padded to 10 rows with each model's
		// mean row. Linear is linear in the rows, so the merged padding
		// row is the mean of the merged rows.
		for _, n := range f.names {
			a, b := v("model_a", n), v("model_b", n)
			if n != "model.embed_tokens.weight" && n != "lm_head.weight" {
				o := make([]float64, len(a))
				for i := range a {
					o[i] = 0.5*a[i] + 0.5*b[i]
				}
				out[n] = o
				continue
			}
			row := func(x []float64, r int) []float64 { return x[r*cH : (r+1)*cH] }
			var o []float64
			for r := range 5 {
				for c := range cH {
					o = append(o, 0.5*row(a, r)[c]+0.5*row(b, r)[c])
				}
			}
			o = append(o, row(a, 5)...)
			o = append(o, row(b, 1)...)
			o = append(o, row(a, 2)...)
			mean := make([]float64, cH)
			for r := range 8 {
				axpy(mean, 1.0/8, o[r*cH:(r+1)*cH])
			}
			o = append(o, mean...)
			o = append(o, mean...)
			out[n] = o
		}
		return out
	case file == "tokenizer-source.yml":
		return each(lin([]float64{1, 1}, "model_a", "model_b"))
	case strings.HasPrefix(file, "dare") || strings.HasPrefix(file, "della"):
		return nil // random: see the statistical tests
	}
	t.Fatalf("corpus recipe %s has no reference", file)
	return nil
}

func TestMergekitCorpus(t *testing.T) {
	files, err := filepath.Glob(filepath.Join(corpusDir, "*.yml"))
	if err != nil || len(files) < 30 {
		t.Fatalf("corpus: %d files, %v", len(files), err)
	}
	f := newCorpusFixture(t)
	methods := map[string]bool{}
	keys := map[string]bool{}
	for _, path := range files {
		file := filepath.Base(path)
		src, _ := os.ReadFile(path)
		collectKeys(t, src, keys)
		var top struct {
			Method string `yaml:"merge_method"`
		}
		yaml.Unmarshal(src, &top)
		methods[top.Method] = true
		t.Run(file, func(t *testing.T) {
			rp := filepath.Join(f.dir, file)
			write(t, rp, string(src))
			r, err := ParseRecipe(rp)
			var plan *Plan
			if err == nil {
				plan, err = r.Open()
			}
			if want, refused := corpusRefusals[file]; refused {
				if err == nil || !strings.Contains(err.Error(), want) {
					t.Fatalf("want a refusal naming %q, got %v", want, err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer plan.Close()
			out := filepath.Join(f.dir, "out-"+strings.TrimSuffix(file, ".yml"))
			if _, err := plan.Merge(context.Background(), out, Options{Options: stream.Options{Workers: 2}}); err != nil {
				t.Fatal(err)
			}
			want := f.refs(t, file)
			got := testutil.ReadAll(t, out)
			if want == nil {
				again := filepath.Join(f.dir, "again-"+strings.TrimSuffix(file, ".yml"))
				if _, err := plan.Merge(context.Background(), again, Options{Options: stream.Options{Workers: 1}}); err != nil {
					t.Fatal(err)
				}
				for n, g := range testutil.ReadAll(t, again) {
					if fmt.Sprint(g) != fmt.Sprint(got[n]) {
						t.Errorf("%s differs between runs", n)
					}
				}
				return
			}
			if len(got) != len(want) {
				t.Errorf("%d tensors written, want %d", len(got), len(want))
			}
			tol := 2e-6
			if strings.Contains(string(src), "float16") {
				tol = 1e-3
			}
			for n, w := range want {
				g, ok := got[n]
				if !ok {
					t.Errorf("missing %s", n)
					continue
				}
				if len(g) != len(w) {
					t.Errorf("%s: %d values, want %d", n, len(g), len(w))
					continue
				}
				for i := range w {
					if math.Abs(g[i]-w[i]) > tol*math.Max(1, math.Abs(w[i])) {
						t.Errorf("%s[%d] = %.9g, want %.9g", n, i, g[i], w[i])
						break
					}
				}
			}
			checkCorpusSideFiles(t, file, out)
		})
	}
	for _, m := range MethodNames() {
		if !methods[m] {
			t.Errorf("no corpus recipe uses merge_method %s", m)
		}
	}
	for _, k := range append(append([]string{}, topKeys...), "model", "parameters", "layer_range", "sources", "filter", "value",
		"source", "tokens", "pad_to_multiple_of", "kind", "token", "token_id", "force") {
		if !keys[k] {
			t.Errorf("no corpus recipe uses the key %q", k)
		}
	}
}

// collectKeys adds every mapping key of a YAML document.
func collectKeys(t *testing.T, src []byte, keys map[string]bool) {
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		t.Fatal(err)
	}
	var walk func(n *yaml.Node)
	walk = func(n *yaml.Node) {
		if n.Kind == yaml.MappingNode {
			for i := 0; i+1 < len(n.Content); i += 2 {
				keys[n.Content[i].Value] = true
			}
		}
		for _, c := range n.Content {
			walk(c)
		}
	}
	walk(&doc)
}

func checkCorpusSideFiles(t *testing.T, file, out string) {
	cfg, _ := os.ReadFile(filepath.Join(out, "config.json"))
	var c map[string]any
	json.Unmarshal(cfg, &c)
	layers := map[string]float64{"frankenmerge.yml": 6, "passthrough-stack.yml": 8}[file]
	if layers == 0 {
		layers = cL
	}
	if c["num_hidden_layers"] != layers {
		t.Errorf("config.json num_hidden_layers %v, want %v", c["num_hidden_layers"], layers)
	}
	switch file {
	case "tokenizer.yml", "tokenizer-source.yml":
		tok, err := tokenizer.Load(out)
		if err != nil {
			t.Fatal(err)
		}
		wantLen, tpl := 6, "{% for m in messages %}"
		if file == "tokenizer.yml" {
			wantLen, tpl = 8, "<|im_start|>"
			if c["vocab_size"] != 10.0 {
				t.Errorf("config.json vocab_size %v, want 10", c["vocab_size"])
			}
		}
		if tok.File.Len() != wantLen || !strings.Contains(tok.ChatTemplate(), tpl) {
			t.Errorf("tokenizer: %d tokens (want %d), chat template %q", tok.File.Len(), wantLen, tok.ChatTemplate())
		}
	}
	if ck, err := weights.Open(out); err == nil {
		for _, ti := range ck.Tensors() {
			if ti.DType != weights.F32 && !strings.Contains(file, "bio-merge") {
				t.Errorf("%s is %s, the recipe asks float32", ti.Name, ti.DType)
			}
		}
		ck.Close()
	}
}
