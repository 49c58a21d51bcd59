package moe

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

const hidden, inter, layers = 64, 8, 2

// dense writes a two-layer LLaMA-shaped model whose values are drawn from
// seed, with a config.json of the given model_type.
func dense(t *testing.T, dir, name string, seed uint64, modelType string) string {
	return denseVocab(t, dir, name, seed, modelType, 10)
}

func denseVocab(t *testing.T, dir, name string, seed uint64, modelType string, vocab int64) string {
	t.Helper()
	r := rand.New(rand.NewPCG(seed, 1))
	tensors := map[string][]float64{}
	shapes := map[string][]int64{}
	put := func(n string, shape ...int64) {
		k := int64(1)
		for _, s := range shape {
			k *= s
		}
		v := make([]float64, k)
		for i := range v {
			v[i] = r.NormFloat64()
		}
		tensors[n], shapes[n] = v, shape
	}
	put("model.embed_tokens.weight", vocab, hidden)
	put("model.norm.weight", hidden)
	put("lm_head.weight", vocab, hidden)
	for l := 0; l < layers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		for _, n := range []string{"q_proj", "k_proj", "v_proj", "o_proj"} {
			put(p+"self_attn."+n+".weight", hidden, hidden)
		}
		put(p+"input_layernorm.weight", hidden)
		put(p+"post_attention_layernorm.weight", hidden)
		put(p+"mlp.gate_proj.weight", inter, hidden)
		put(p+"mlp.up_proj.weight", inter, hidden)
		put(p+"mlp.down_proj.weight", hidden, inter)
	}
	d := filepath.Join(dir, name)
	testutil.WriteF32(t, filepath.Join(d, "model.safetensors"), tensors, shapes)
	cfg := fmt.Sprintf(`{
  "architectures": ["LlamaForCausalLM"],
  "model_type": %q,
  "hidden_size": %d,
  "intermediate_size": %d,
  "num_hidden_layers": %d,
  "num_attention_heads": 4,
  "num_key_value_heads": 4,
  "rms_norm_eps": 1e-5,
  "torch_dtype": "float32",
  "vocab_size": %d
}`, modelType, hidden, inter, layers, vocab)
	if err := os.WriteFile(filepath.Join(d, "config.json"), []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return d
}

func build(t *testing.T, dir, yaml string, workers int) string {
	t.Helper()
	p := filepath.Join(dir, fmt.Sprintf("moe-%d.yaml", rand.IntN(1<<30)))
	os.WriteFile(p, []byte(yaml), 0o644)
	c, err := ParseConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	plan, err := c.Open()
	if err != nil {
		t.Fatal(err)
	}
	defer plan.Close()
	out := filepath.Join(dir, fmt.Sprintf("out-%d", rand.IntN(1<<30)))
	if _, err := plan.Build(context.Background(), out, Options{Options: stream.Options{Workers: workers}}); err != nil {
		t.Fatal(err)
	}
	return out
}

func TestMixtralLayout(t *testing.T) {
	dir := t.TempDir()
	dense(t, dir, "base", 1, "llama")
	dense(t, dir, "math", 2, "llama")
	dense(t, dir, "code", 3, "llama")
	yaml := `base_model: base
gate_mode: random
experts:
  - source_model: math
  - source_model: code
    residual_scale: 0.5
`
	out := build(t, dir, yaml, 1)
	got := testutil.ReadAll(t, filepath.Join(out, "model.safetensors"))
	base := testutil.ReadAll(t, filepath.Join(dir, "base", "model.safetensors"))
	math_ := testutil.ReadAll(t, filepath.Join(dir, "math", "model.safetensors"))
	code := testutil.ReadAll(t, filepath.Join(dir, "code", "model.safetensors"))
	want := map[string][]float64{}
	for n, v := range base {
		if !strings.Contains(n, ".mlp.") {
			want[n] = v
		}
	}
	for l := 0; l < layers; l++ {
		for e, m := range []map[string][]float64{math_, code} {
			p := fmt.Sprintf("model.layers.%d.block_sparse_moe.experts.%d.", l, e)
			src := fmt.Sprintf("model.layers.%d.mlp.", l)
			want[p+"w1.weight"] = m[src+"gate_proj.weight"]
			want[p+"w3.weight"] = m[src+"up_proj.weight"]
			down := append([]float64(nil), m[src+"down_proj.weight"]...)
			if e == 1 {
				for i := range down {
					down[i] *= 0.5
				}
			}
			want[p+"w2.weight"] = down
		}
	}
	for n, w := range want {
		g, ok := got[n]
		if !ok {
			t.Errorf("missing %s", n)
			continue
		}
		testutil.Near(t, n, g, w, 0)
	}
	for l := 0; l < layers; l++ {
		n := fmt.Sprintf("model.layers.%d.block_sparse_moe.gate.weight", l)
		g := got[n]
		if len(g) != 2*hidden {
			t.Fatalf("%s: %d values, want [2, %d]", n, len(g), hidden)
		}
		var s, ss float64
		for _, x := range g {
			s += x
			ss += x * x
		}
		mean, sd := s/float64(len(g)), math.Sqrt(ss/float64(len(g))-(s/float64(len(g)))*(s/float64(len(g))))
		if math.Abs(mean) > 0.3 || sd < 0.8 || sd > 1.2 {
			t.Errorf("%s: mean %.3f sd %.3f, want a standard normal", n, mean, sd)
		}
	}
	if len(got) != len(want)+layers {
		t.Errorf("%d tensors, want %d", len(got), len(want)+layers)
	}
	cfg, _ := os.ReadFile(filepath.Join(out, "config.json"))
	for _, s := range []string{`"model_type": "mixtral"`, `"num_local_experts": 2`, `"num_experts_per_tok": 2`, `["MixtralForCausalLM"]`, `"intermediate_size": 8`} {
		if !bytes.Contains(cfg, []byte(s)) {
			t.Errorf("config.json lacks %s:\n%s", s, cfg)
		}
	}
	// Deterministic for any worker count; the seed changes the routers.
	again := build(t, dir, yaml, 2)
	a, _ := os.ReadFile(filepath.Join(out, "model.safetensors"))
	b, _ := os.ReadFile(filepath.Join(again, "model.safetensors"))
	if !bytes.Equal(a, b) {
		t.Error("two builds differ")
	}
	other := testutil.ReadAll(t, filepath.Join(build(t, dir, yaml+"seed: 7\n", 2), "model.safetensors"))
	if fmt.Sprint(other["model.layers.0.block_sparse_moe.gate.weight"]) == fmt.Sprint(got["model.layers.0.block_sparse_moe.gate.weight"]) {
		t.Error("seed does not change the routers")
	}
}

func TestUniformRandomNoiseAndDType(t *testing.T) {
	dir := t.TempDir()
	dense(t, dir, "base", 1, "mistral")
	dense(t, dir, "a", 2, "mistral")
	dense(t, dir, "b", 3, "mistral")
	out := build(t, dir, `base_model: base
gate_mode: uniform_random
dtype: bfloat16
experts_per_token: 1
experts:
  - source_model: a
    noise_scale: 0.01
  - source_model: b
`, 2)
	ck := testutil.Open(t, filepath.Join(out, "model.safetensors"))[0]
	for _, ti := range ck.Tensors() {
		if ti.DType != weights.BF16 {
			t.Errorf("%s is %s, want BF16", ti.Name, ti.DType)
		}
	}
	got := testutil.ReadAll(t, filepath.Join(out, "model.safetensors"))
	g := got["model.layers.1.block_sparse_moe.gate.weight"]
	bound := 1 / math.Sqrt(hidden)
	lo, hi := 0.0, 0.0
	for _, x := range g {
		if math.Abs(x) > bound*1.01 {
			t.Fatalf("uniform router value %v beyond ±%v", x, bound)
		}
		lo, hi = math.Min(lo, x), math.Max(hi, x)
	}
	if lo > -bound/2 || hi < bound/2 {
		t.Errorf("uniform router spans [%v, %v] of ±%v", lo, hi, bound)
	}
	src := testutil.ReadAll(t, filepath.Join(dir, "a", "model.safetensors"))["model.layers.0.mlp.up_proj.weight"]
	noisy := got["model.layers.0.block_sparse_moe.experts.0.w3.weight"]
	var ss float64
	for i := range src {
		d := noisy[i] - src[i]
		ss += d * d
	}
	// BF16 rounding (relative 2^-9 of values ~1) adds about 0.0023 rms.
	if rms := math.Sqrt(ss / float64(len(src))); rms < 0.007 || rms > 0.014 {
		t.Errorf("noise rms %.4f, want about 0.01", rms)
	}
	cfg, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if !bytes.Contains(cfg, []byte(`"torch_dtype": "bfloat16"`)) || !bytes.Contains(cfg, []byte(`"num_experts_per_tok": 1`)) {
		t.Errorf("config.json:\n%s", cfg)
	}
}

func TestRefusals(t *testing.T) {
	dir := t.TempDir()
	dense(t, dir, "base", 1, "llama")
	dense(t, dir, "a", 2, "llama")
	dense(t, dir, "g", 3, "gpt2")
	for _, c := range []struct{ yaml, want string }{
		{"base_model: base\ngate_mode: hidden_avg\nexperts:\n  - source_model: a\n    positive_prompts: [x]\n", "padding included"},
		{"base_model: base\nexperts_per_token: 1\nexperts:\n  - source_model: a\n", "no positive_prompts, which gate_mode hidden"},
		{"base_model: base\ngate_mode: cheap_embed\nexperts_per_token: 1\nexperts:\n  - source_model: a\n", "no positive_prompts"},
		{"base_model: base\ngate_mode: cheap_embed\nexperts_per_token: 1\nexperts:\n  - source_model: a\n    positive_prompts: [x]\n", "no tokenizer.json"},
		{"base_model: base\ngate_mode: cheap_embed\nexperts:\n  - source_model: a\n    positive_prompts: [x]\n  - source_model: base\n    positive_prompts: [x]\n", "the same prompts"},
		{"base_model: base\ngate_mode: randon\nexperts:\n  - source_model: a\n", `did you mean "random"`},
		{"base_model: base\ngate_mode: random\nexperts_per_token: 2\nexperts:\n  - source_model: a\n", "fewer than experts_per_token"},
		{"base_model: base\ngate_mode: random\nshared_experts:\n  - source_model: a\nexperts:\n  - source_model: a\n", "shared_experts"},
		{"base_model: base\ngate_mode: random\nexperts_per_token: 1\nexperts:\n  - source_model: g\n", `model_type "gpt2"`},
		{"base_model: base\ngate_mode: random\nexperts_per_token: 1\nexperts:\n  - source_modle: a\n", `did you mean "source_model"`},
		{"base_model: base\ngate_mode: random\nexperts_per_token: 1\narchitecture: qwen\nexperts:\n  - source_model: a\n", "writes Mixtral"},
	} {
		p := filepath.Join(dir, "c.yaml")
		os.WriteFile(p, []byte(c.yaml), 0o644)
		cfg, err := ParseConfig(p)
		if err == nil {
			var plan *Plan
			if plan, err = cfg.Open(); err == nil {
				plan.Close()
			}
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.yaml, err, c.want)
		}
	}
}

// TestCheapEmbed checks cheap_embed's routers against the embedding rows
// of token ids @huggingface/tokenizers gave for the same texts
// (testdata/tokenizer), summed, normalized, less the negative prompts'.
func TestCheapEmbed(t *testing.T) {
	dir := t.TempDir()
	base := denseVocab(t, dir, "base", 1, "llama", 3300)
	dense(t, dir, "a", 2, "llama")
	dense(t, dir, "b", 3, "llama")
	hello, nums, code, eot := withTokenizer(t, base)
	out := build(t, dir, fmt.Sprintf(`base_model: base
gate_mode: cheap_embed
experts:
  - source_model: a
    positive_prompts: [%q]
  - source_model: b
    positive_prompts: [%q, %q]
    negative_prompts: [%q]
`, hello.Text, nums.Text, code.Text, hello.Text), 2)
	emb := testutil.ReadAll(t, filepath.Join(base, "model.safetensors"))["model.embed_tokens.weight"]
	sum := func(prompts ...[]int) []float64 {
		v := make([]float64, hidden)
		for _, ids := range prompts {
			for _, id := range append([]int{eot}, ids...) {
				for k := range v {
					v[k] += emb[id*hidden+k]
				}
			}
		}
		var n float64
		for _, x := range v {
			n += x * x
		}
		for k := range v {
			v[k] /= math.Sqrt(n)
		}
		return v
	}
	r0 := sum(hello.IDs)
	r1 := sum(nums.IDs, code.IDs)
	neg := sum(hello.IDs)
	for k := range r1 {
		r1[k] -= neg[k]
	}
	var n float64
	for _, x := range r1 {
		n += x * x
	}
	for k := range r1 {
		r1[k] /= math.Sqrt(n)
	}
	want := append(r0, r1...)
	got := testutil.ReadAll(t, filepath.Join(out, "model.safetensors"))
	for l := 0; l < layers; l++ {
		testutil.Near(t, fmt.Sprintf("layer %d router", l), got[fmt.Sprintf("model.layers.%d.block_sparse_moe.gate.weight", l)], want, 1e-6)
	}
}

type tokCase struct {
	Text string `json:"text"`
	IDs  []int  `json:"ids"`
}

// withTokenizer gives a model directory the GPT-2-style test tokenizer
// with <|endoftext|> as BOS, and returns three texts with the ids
// @huggingface/tokenizers gave for them, and the BOS id.
func withTokenizer(t *testing.T, dir string) (hello, nums, code tokCase, bos int) {
	t.Helper()
	tj, err := os.ReadFile("../testdata/tokenizer/gpt2/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644)
	os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"bos_token": {"content": "<|endoftext|>", "special": true}}`), 0o644)
	var cases map[string][]tokCase
	data, _ := os.ReadFile("../testdata/tokenizer/cases.json")
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	g := cases["gpt2"]
	for _, c := range g {
		if strings.Contains(c.Text, "<|endoftext|>") {
			for _, id := range c.IDs {
				bos = max(bos, id)
			}
		}
	}
	return g[0], g[4], g[8], bos
}

// TestHiddenGate checks gate_mode hidden: per layer, the mean over an
// expert's prompts of the state entering the layer at the last token
// (from the engine, tested against a float64 reference in its package),
// less the negative prompts' mean, normalized.
func TestHiddenGate(t *testing.T) {
	dir := t.TempDir()
	base := denseVocab(t, dir, "base", 1, "llama", 3300)
	dense(t, dir, "a", 2, "llama")
	dense(t, dir, "b", 3, "llama")
	hello, nums, code, bos := withTokenizer(t, base)
	out := build(t, dir, fmt.Sprintf(`base_model: base
experts:
  - source_model: a
    positive_prompts: [%q, %q]
  - source_model: b
    positive_prompts: [%q]
    negative_prompts: [%q]
`, hello.Text, code.Text, nums.Text, hello.Text), 1)
	m, err := engine.LoadLlama(base)
	if err != nil {
		t.Fatal(err)
	}
	states := func(c tokCase) [][]float32 {
		xs, err := m.LayerInputs(append([]int{bos}, c.IDs...))
		if err != nil {
			t.Fatal(err)
		}
		return xs
	}
	h, n, cd := states(hello), states(nums), states(code)
	got := testutil.ReadAll(t, filepath.Join(out, "model.safetensors"))
	unit := func(v []float64) []float64 {
		var ss float64
		for _, x := range v {
			ss += x * x
		}
		for k := range v {
			v[k] /= math.Sqrt(ss)
		}
		return v
	}
	for l := 0; l < layers; l++ {
		e0, e1 := make([]float64, hidden), make([]float64, hidden)
		for k := 0; k < hidden; k++ {
			e0[k] = (float64(h[l][k]) + float64(cd[l][k])) / 2
			e1[k] = float64(n[l][k]) - float64(h[l][k])
		}
		want := append(unit(e0), unit(e1)...)
		testutil.Near(t, fmt.Sprintf("layer %d router", l), got[fmt.Sprintf("model.layers.%d.block_sparse_moe.gate.weight", l)], want, 1e-6)
	}
}
