package gguf

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	parser "github.com/gpustack/gguf-parser-go"

	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

const tH, tI, tL, tV, tHeads, tKV = 256, 512, 2, 3264, 4, 2

// tinyLlama writes a two-block LLaMA (hidden 256, GQA 4/2 heads,
// vocabulary 3264) of random weights in dtype, with config.json and the
// GPT-2-style test tokenizer, and returns its directory.
func tinyLlama(t *testing.T, dtype weights.DType, tied bool) string {
	t.Helper()
	return tinyLlamaV(t, dtype, tied, tV)
}

// tinyLlamaV is tinyLlama with a vocabulary of tv rows.
func tinyLlamaV(t *testing.T, dtype weights.DType, tied bool, tv int64) string {
	t.Helper()
	dir := t.TempDir()
	r := rand.New(rand.NewPCG(5, 9))
	var ts []testutil.Tensor
	put := func(name string, shape ...int64) {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		v := make([]float64, n)
		for i := range v {
			v[i] = 0.05 * r.NormFloat64()
			if len(shape) == 1 {
				v[i] += 1
			}
		}
		ts = append(ts, testutil.Tensor{Name: name, DType: dtype, Shape: shape, Values: v})
	}
	kvd := int64(tKV * tH / tHeads)
	put("model.embed_tokens.weight", tv, tH)
	put("model.norm.weight", tH)
	if !tied {
		put("lm_head.weight", tv, tH)
	}
	for l := 0; l < tL; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		put(p+"input_layernorm.weight", tH)
		put(p+"post_attention_layernorm.weight", tH)
		put(p+"self_attn.q_proj.weight", tH, tH)
		put(p+"self_attn.k_proj.weight", kvd, tH)
		put(p+"self_attn.v_proj.weight", kvd, tH)
		put(p+"self_attn.o_proj.weight", tH, tH)
		put(p+"mlp.gate_proj.weight", tI, tH)
		put(p+"mlp.up_proj.weight", tI, tH)
		put(p+"mlp.down_proj.weight", tH, tI)
	}
	testutil.Write(t, filepath.Join(dir, "model.safetensors"), nil, ts...)
	cfg := fmt.Sprintf(`{"architectures": ["LlamaForCausalLM"], "model_type": "llama", "hidden_size": %d, "intermediate_size": %d,
 "num_hidden_layers": %d, "num_attention_heads": %d, "num_key_value_heads": %d, "rms_norm_eps": 1e-05, "rope_theta": 10000.0,
 "max_position_embeddings": 128, "vocab_size": %d, "tie_word_embeddings": %v, "bos_token_id": 3256, "eos_token_id": 3256}`, tH, tI, tL, tHeads, tKV, tv, tied)
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(cfg), 0o644)
	tj, err := os.ReadFile("../testdata/tokenizer/gpt2/tokenizer.json")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644)
	return dir
}

func convert(t *testing.T, dir string, typ Type) string {
	t.Helper()
	ck := testutil.Open(t, dir)[0]
	out := filepath.Join(t.TempDir(), "m.gguf")
	if _, err := Convert(context.Background(), ck, dir, out, ConvertOptions{Type: typ}); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestRoundTripExact: safetensors → GGUF (F32, F16, BF16) → checkpoint
// gives every tensor back bit for bit, names, shapes and the q/k layout
// included.
func TestRoundTripExact(t *testing.T) {
	for _, c := range []struct {
		dt  weights.DType
		typ Type
	}{{weights.F32, F32}, {weights.F16, F16}, {weights.BF16, BF16}} {
		dir := tinyLlama(t, c.dt, false)
		out := convert(t, dir, c.typ)
		src := testutil.Open(t, dir)[0]
		g, err := weights.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		if len(g.Tensors()) != len(src.Tensors()) {
			t.Fatalf("%s: %d tensors, want %d", c.typ, len(g.Tensors()), len(src.Tensors()))
		}
		for _, ti := range src.Tensors() {
			a, _ := src.ReadTensor(ti.Name, nil)
			b, err := g.ReadTensor(ti.Name, nil)
			if err != nil {
				t.Fatal(err)
			}
			if len(ti.Shape) == 1 {
				// Norms are written F32: the values come back exactly.
				x, _ := a.Float64s()
				y, _ := b.Float64s()
				if fmt.Sprint(x) != fmt.Sprint(y) {
					t.Errorf("%s %s: values differ", c.typ, ti.Name)
				}
				continue
			}
			if b.DType != a.DType || !bytes.Equal(a.Data, b.Data) || fmt.Sprint(a.Shape) != fmt.Sprint(b.Shape) {
				t.Errorf("%s %s: %s %v vs %s %v, bytes equal %v", c.typ, ti.Name, b.DType, b.Shape, a.DType, a.Shape, bytes.Equal(a.Data, b.Data))
			}
		}
		g.Close()
	}
}

// TestQuantizedRoundTripBounds: every value of a Q8_0 or Q4_0 file is
// within its block's step of the original (Q8_0: half a step d = amax/127
// plus up to 127 times the F16 rounding of d, 0.57 d in all; Q4_0: one
// step |d| = amax/8, at the clamped level −max, and its F16 rounding),
// and K-quants within a sixth (Q4_K: 16 levels over the sub-block's
// range, 6-bit scales) or a 25th (Q6_K: 64 levels, 8-bit scales) of the
// 32-value block's largest magnitude. (Their exactness is
// TestQuantFixtures'.)
func TestQuantizedRoundTripBounds(t *testing.T) {
	dir := tinyLlama(t, weights.F32, true)
	src := testutil.Open(t, dir)[0]
	for _, typ := range []Type{Q8_0, Q4_0, Q4_K, Q6_K} {
		g, err := weights.Open(convert(t, dir, typ))
		if err != nil {
			t.Fatal(err)
		}
		if _, ok := g.Info("lm_head.weight"); ok {
			t.Errorf("%s: a tied model got an output tensor", typ)
		}
		if want := fmt.Sprintf("F32 × %d, %s × %d", 1+2*tL, typ, 1+7*tL); g.Metadata()["gguf.tensor_types"] != want {
			t.Errorf("tensor types %q, want %q", g.Metadata()["gguf.tensor_types"], want)
		}
		for _, ti := range src.Tensors() {
			if len(ti.Shape) != 2 {
				continue
			}
			a, _ := src.ReadTensor(ti.Name, nil)
			b, _ := g.ReadTensor(ti.Name, nil)
			x, _ := a.Float64s()
			y, _ := b.Float64s()
			bs := typ.BlockSize()
			for s := 0; s < len(x); s += bs {
				var amax float64
				for _, v := range x[s : s+bs] {
					amax = math.Max(amax, math.Abs(v))
				}
				bound := map[Type]float64{Q8_0: amax / 127 * 0.57, Q4_0: amax / 8 * 1.01, Q4_K: amax / 6, Q6_K: amax / 25}[typ]
				for i := s; i < s+bs; i++ {
					if d := math.Abs(x[i] - y[i]); d > bound {
						t.Fatalf("%s %s[%d]: %v back as %v, off by %v > %v", typ, ti.Name, i, x[i], y[i], d, bound)
					}
				}
			}
		}
		g.Close()
	}
}

// TestIndependentParser: gguf-parser-go (gpustack) reads what we write:
// the tensor infos, the architecture and the vocabulary.
func TestIndependentParser(t *testing.T) {
	dir := tinyLlama(t, weights.BF16, false)
	for _, typ := range []Type{F16, Q8_0, Q4_K} {
		out := convert(t, dir, typ)
		f, err := parser.ParseGGUFFile(out)
		if err != nil {
			t.Fatalf("%s: gguf-parser-go: %v", typ, err)
		}
		if f.Header.Version != 3 || f.Header.TensorCount != uint64(3+9*tL) {
			t.Errorf("%s: version %d, %d tensors", typ, f.Header.Version, f.Header.TensorCount)
		}
		a := f.Architecture()
		if a.Architecture != "llama" || a.BlockCount != tL || a.EmbeddingLength != tH || a.AttentionHeadCount != tHeads || a.AttentionHeadCountKV != tKV {
			t.Errorf("%s: architecture %+v", typ, a)
		}
		tk := f.Tokenizer()
		if tk.Model != "gpt2" || tk.TokensLength != tV || tk.MergesLength != 3000 || tk.BOSTokenID != 3256 {
			t.Errorf("%s: tokenizer %+v", typ, tk)
		}
		q, ok := f.TensorInfos.Get("blk.0.attn_q.weight")
		if !ok || q.Dimensions[0] != tH || uint32(q.Type) != uint32(typ) {
			t.Errorf("%s: attn_q %+v", typ, q)
		}
		if typ == Q4_K {
			// Rows of 256 are whole K blocks: nothing falls back here.
			if d, _ := f.TensorInfos.Get("blk.0.ffn_down.weight"); uint32(d.Type) != uint32(Q4_K) {
				t.Errorf("ffn_down is %v", d.Type)
			}
		}
	}
}

// TestEngineRunsGGUF: the engine gives the same logits for the model in
// safetensors and in an F32 GGUF (config rebuilt from the metadata), and
// runs the Q8_0 file.
func TestEngineRunsGGUF(t *testing.T) {
	dir := tinyLlama(t, weights.F32, false)
	st, err := engine.LoadLlama(dir)
	if err != nil {
		t.Fatal(err)
	}
	gg, err := engine.LoadLlama(convert(t, dir, F32))
	if err != nil {
		t.Fatal(err)
	}
	prompt := []int{3256, 12, 700, 5, 42}
	a, err := st.Generate(prompt, 8)
	if err != nil {
		t.Fatal(err)
	}
	b, err := gg.Generate(prompt, 8)
	if err != nil {
		t.Fatal(err)
	}
	if fmt.Sprint(a) != fmt.Sprint(b) {
		t.Errorf("greedy ids: safetensors %v, GGUF %v", a, b)
	}
	la, _ := st.Forward(prompt, nil)
	lb, _ := gg.Forward(prompt, nil)
	for i := range la {
		if la[i] != lb[i] {
			t.Fatalf("logit %d: %v vs %v", i, la[i], lb[i])
		}
	}
	q8, err := engine.LoadLlama(convert(t, dir, Q8_0))
	if err != nil {
		t.Fatal(err)
	}
	if ids, err := q8.Generate(prompt, 4); err != nil || len(ids) != 4 {
		t.Errorf("Q8_0: %v %v", ids, err)
	}
}

func TestConvertRefusals(t *testing.T) {
	dir := tinyLlama(t, weights.F32, false)
	ck := testutil.Open(t, dir)[0]
	os.Remove(filepath.Join(dir, "tokenizer.json"))
	out := filepath.Join(t.TempDir(), "x.gguf")
	if _, err := Convert(context.Background(), ck, dir, out, ConvertOptions{Type: F16}); err == nil || !strings.Contains(err.Error(), "--no-vocab") {
		t.Errorf("no tokenizer: %v", err)
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a refused conversion left a file")
	}
	if _, err := Convert(context.Background(), ck, dir, out, ConvertOptions{Type: F16, NoVocab: true}); err != nil {
		t.Fatal(err)
	}
	g, _ := Open(out)
	if g.File.String("tokenizer.ggml.model") != "no_vocab" {
		t.Errorf("--no-vocab: model %q", g.File.String("tokenizer.ggml.model"))
	}
	g.Close()
	if _, err := Convert(context.Background(), ck, dir, out, ConvertOptions{Type: Q4_1}); err == nil {
		t.Error("Q4_1 output accepted")
	}
	os.WriteFile(filepath.Join(dir, "config.json"), []byte(`{"architectures": ["GPT2LMHeadModel"]}`), 0o644)
	if _, err := Convert(context.Background(), ck, dir, out, ConvertOptions{Type: F16, NoVocab: true}); err == nil || !strings.Contains(err.Error(), "LlamaForCausalLM") {
		t.Errorf("gpt2: %v", err)
	}
}

// TestFallbackRows: rows that are not whole blocks fall back as
// llama.cpp's tools do, and it is said: Q4_K → Q5_0 on rows of 32k, Q6_K
// → Q8_0, F16 where no 32-block fits; tiny-llama's rows of 32 and 48.
func TestFallbackRows(t *testing.T) {
	dir := "../testdata/engine/tiny-llama"
	ck := testutil.Open(t, dir)[0]
	for _, c := range []struct {
		typ       Type
		q, down   Type // attn_q (rows of 32), ffn_down (rows of 48)
		fallbacks int
	}{{Q8_0, Q8_0, F16, 2}, {Q4_K, Q5_0, F16, 16}, {Q6_K, Q8_0, F16, 16}} {
		var said []string
		out := filepath.Join(t.TempDir(), "x.gguf")
		fell, err := Convert(context.Background(), ck, dir, out, ConvertOptions{Type: c.typ, NoVocab: true, Warn: func(s string) { said = append(said, s) }})
		if err != nil {
			t.Fatal(err)
		}
		g, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		types := map[string]Type{}
		for _, ti := range g.File.Tensors {
			types[ti.Name] = ti.Type
		}
		g.Close()
		if types["blk.0.attn_q.weight"] != c.q || types["blk.0.ffn_down.weight"] != c.down || types["blk.0.attn_norm.weight"] != F32 {
			t.Errorf("%s: attn_q %s, ffn_down %s, attn_norm %s", c.typ, types["blk.0.attn_q.weight"], types["blk.0.ffn_down.weight"], types["blk.0.attn_norm.weight"])
		}
		if len(fell) != c.fallbacks || len(said) != len(fell) {
			t.Errorf("%s: %d fallbacks said %d times, want %d: %q", c.typ, len(fell), len(said), c.fallbacks, fell)
		}
	}
}

// TestQwen2 writes a Qwen2 model: architecture qwen2, q/k/v biases, no
// rotary permutation (llama.cpp's qwen2 uses the NeoX layout as is), the
// Qwen2 split pattern named as llama.cpp's qwen2 pre-tokenizer; it reads
// back exactly.
func TestQwen2(t *testing.T) {
	dir := tinyLlama(t, weights.F32, false)
	ck := testutil.Open(t, dir)[0]
	var ts []testutil.Tensor
	for _, ti := range ck.Tensors() {
		x, _ := ck.ReadTensor(ti.Name, nil)
		v, _ := x.Float64s()
		ts = append(ts, testutil.Tensor{Name: ti.Name, DType: ti.DType, Shape: ti.Shape, Values: v})
	}
	for l := 0; l < tL; l++ {
		for _, p := range []string{"q", "k", "v"} {
			n := int64(tH)
			if p != "q" {
				n = tKV * tH / tHeads
			}
			v := make([]float64, n)
			for i := range v {
				v[i] = float64(i) / 8
			}
			ts = append(ts, testutil.Tensor{Name: fmt.Sprintf("model.layers.%d.self_attn.%s_proj.bias", l, p), DType: weights.F32, Shape: []int64{n}, Values: v})
		}
	}
	testutil.Write(t, filepath.Join(dir, "model.safetensors"), nil, ts...)
	cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	os.WriteFile(filepath.Join(dir, "config.json"), bytes.Replace(cfg, []byte("LlamaForCausalLM"), []byte("Qwen2ForCausalLM"), 1), 0o644)
	tj, _ := os.ReadFile("../testdata/tokenizer/qwen2/tokenizer.json")
	os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644)
	out := convert(t, dir, F32)
	g, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	if g.File.String("general.architecture") != "qwen2" || g.File.String("tokenizer.ggml.pre") != "qwen2" {
		t.Errorf("arch %q, pre %q", g.File.String("general.architecture"), g.File.String("tokenizer.ggml.pre"))
	}
	names := map[string]bool{}
	for _, ti := range g.File.Tensors {
		names[ti.Name] = true
	}
	if !names["blk.1.attn_k.bias"] || !names["blk.0.attn_q.weight"] {
		t.Errorf("tensors %v", names)
	}
	src := testutil.Open(t, dir)[0]
	for _, ti := range src.Tensors() {
		a, _ := src.ReadTensor(ti.Name, nil)
		b, err := g.ReadTensor(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(a.Data, b.Data) {
			t.Errorf("%s differs", ti.Name)
		}
	}
	// The raw attn_q is the Hugging Face layout (no permutation for qwen2).
	ti := g.File.Tensors[0]
	for _, x := range g.File.Tensors {
		if x.Name == "blk.0.attn_q.weight" {
			ti = x
		}
	}
	raw, _ := os.ReadFile(out)
	a, _ := src.ReadTensor("model.layers.0.self_attn.q_proj.weight", nil)
	if !bytes.Equal(raw[g.File.DataOffset+int64(ti.Offset):g.File.DataOffset+int64(ti.Offset+ti.Size)], a.Data) {
		t.Error("qwen2 attn_q was permuted")
	}
}

// TestLlamaRotaryLayout: the raw attn_q and attn_k of a llama GGUF hold the
// rows in Meta's layout, as engine.PermuteHFToMeta (the inverse of
// convert_llama_weights_to_hf's permutation, tested in its package) puts
// them: q in num_attention_heads heads, k in num_key_value_heads.
func TestLlamaRotaryLayout(t *testing.T) {
	dir := tinyLlama(t, weights.F32, false)
	out := convert(t, dir, F32)
	g, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	raw, _ := os.ReadFile(out)
	src := testutil.Open(t, dir)[0]
	for name, heads := range map[string]int{"q": tHeads, "k": tKV} {
		hf, _ := src.ReadTensor("model.layers.1.self_attn."+name+"_proj.weight", nil)
		meta, err := engine.PermuteHFToMeta(hf, heads)
		if err != nil {
			t.Fatal(err)
		}
		for _, ti := range g.File.Tensors {
			if ti.Name == "blk.1.attn_"+name+".weight" {
				got := raw[g.File.DataOffset+int64(ti.Offset) : g.File.DataOffset+int64(ti.Offset+ti.Size)]
				if !bytes.Equal(got, meta.Data) {
					t.Errorf("attn_%s is not in Meta's rotary layout", name)
				}
			}
		}
	}
}

// protoField encodes one protobuf field.
func protoField(field, wire int, payload []byte) []byte {
	b := binary.AppendUvarint(nil, uint64(field<<3|wire))
	if wire == 2 {
		b = binary.AppendUvarint(b, uint64(len(payload)))
	}
	return append(b, payload...)
}

// TestSentencePieceVocab: with a tokenizer.model (hand-encoded here: four
// pieces with scores and types, a BPE trainer spec), the vocabulary is
// the pieces with their scores and types, an added special token from
// tokenizer_config.json is control, and the rest is padding up to
// vocab_size.
func TestSentencePieceVocab(t *testing.T) {
	dir := tinyLlama(t, weights.F32, false)
	os.Remove(filepath.Join(dir, "tokenizer.json"))
	var model []byte
	for _, p := range []struct {
		text  string
		score float32
		kind  int
	}{{"<unk>", 0, 2}, {"<s>", 0, 3}, {"<0x0A>", 0, 6}, {"▁the", -1.5, 1}} {
		var m []byte
		m = append(m, protoField(1, 2, []byte(p.text))...)
		m = append(m, protoField(2, 5, binary.LittleEndian.AppendUint32(nil, math.Float32bits(p.score)))...)
		m = append(m, protoField(3, 0, binary.AppendUvarint(nil, uint64(p.kind)))...)
		model = append(model, protoField(1, 2, m)...)
	}
	model = append(model, protoField(2, 2, protoField(3, 0, []byte{2}))...)
	os.WriteFile(filepath.Join(dir, "tokenizer.model"), model, 0o644)
	os.WriteFile(filepath.Join(dir, "tokenizer_config.json"), []byte(`{"added_tokens_decoder": {"5": {"content": "<|im_start|>", "special": true}}, "bos_token": "<s>", "chat_template": "{{ x }}"}`), 0o644)
	g, err := Open(convert(t, dir, F16))
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	get := func(k string) Array { v, _ := g.File.Get(k); a, _ := v.(Array); return a }
	toks, scores, types := get("tokenizer.ggml.tokens"), get("tokenizer.ggml.scores"), get("tokenizer.ggml.token_type")
	if len(toks.Values) != tV || len(scores.Values) != tV || len(types.Values) != tV {
		t.Fatalf("%d tokens, %d scores, %d types, want %d", len(toks.Values), len(scores.Values), len(types.Values), tV)
	}
	want := []struct {
		tok   string
		score float32
		typ   int32
	}{{"<unk>", 0, 2}, {"<s>", 0, 3}, {"<0x0A>", 0, 6}, {"▁the", -1.5, 1}, {"[PAD4]", -1000, 5}, {"<|im_start|>", -1000, 3}, {"[PAD6]", -1000, 5}}
	for i, w := range want {
		if toks.Values[i] != w.tok || scores.Values[i] != w.score || types.Values[i] != w.typ {
			t.Errorf("token %d: %v %v %v, want %+v", i, toks.Values[i], scores.Values[i], types.Values[i], w)
		}
	}
	if g.File.String("tokenizer.ggml.model") != "llama" || g.File.String("tokenizer.chat_template") != "{{ x }}" {
		t.Errorf("model %q, template %q", g.File.String("tokenizer.ggml.model"), g.File.String("tokenizer.chat_template"))
	}
	if id, _ := g.File.Uint("tokenizer.ggml.bos_token_id"); id != 3256 {
		t.Errorf("bos %d (config.json's)", id)
	}
}

// A GGUF file's own vocabulary tokenizes text: for each tokenizer fixture
// (GPT-2, Llama-3 and Qwen2 byte-level BPE, Llama-2's SentencePiece style),
// the tokenizer rebuilt from the tokenizer.ggml.* metadata we wrote gives
// the ids @huggingface/tokenizers gave for every test text
// (testdata/tokenizer/cases.json), and decodes them back.
func TestTokenizerFromGGUF(t *testing.T) {
	raw, err := os.ReadFile("../testdata/tokenizer/cases.json")
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string][]struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	}
	if err := json.Unmarshal(raw, &cases); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"gpt2", "llama3", "qwen2", "llama2"} {
		tv := int64(tV)
		if name == "llama2" {
			tv = 5136
		}
		dir := tinyLlamaV(t, weights.F32, false, tv)
		tj, _ := os.ReadFile("../testdata/tokenizer/" + name + "/tokenizer.json")
		os.WriteFile(filepath.Join(dir, "tokenizer.json"), tj, 0o644)
		g, err := Open(convert(t, dir, F32))
		if err != nil {
			t.Fatal(err)
		}
		tok, err := g.Tokenizer()
		g.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		enc, err := tok.File.NewEncoder()
		if err != nil {
			t.Fatal(err)
		}
		dec, _ := tok.File.NewDecoder()
		orig, err := tokenizer.Parse(tj)
		if err != nil {
			t.Fatal(err)
		}
		origDec, _ := orig.NewDecoder()
		if len(cases[name]) < 10 {
			t.Fatalf("%s: %d cases", name, len(cases[name]))
		}
		for _, c := range cases[name] {
			got := enc.Encode(c.Text)
			if fmt.Sprint(got) != fmt.Sprint(c.IDs) {
				t.Errorf("%s %q:\n from GGUF  %v\n HF         %v", name, c.Text, got, c.IDs)
			}
			// Decoding gives what the original tokenizer.json decodes.
			back, err := dec.Decode(got)
			want, _ := origDec.Decode(got)
			if err != nil || back != want {
				t.Errorf("%s %q decodes to %q, the tokenizer.json to %q (%v)", name, c.Text, back, want, err)
			}
		}
	}
}
