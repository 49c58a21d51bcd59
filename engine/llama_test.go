package engine_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/weights"
)

// tinyConfig is a tiny LLaMA: hidden 32, 4 heads of 8, 2 key/value heads,
// 2 layers, vocabulary 50.
func tinyConfig() engine.LlamaConfig {
	return engine.LlamaConfig{HiddenSize: 32, IntermediateSize: 40, NumHiddenLayers: 2, NumAttentionHeads: 4,
		NumKeyValueHeads: 2, RMSNormEps: 1e-5, RopeTheta: 10000, VocabSize: 50, MaxPositionEmbeddings: 64}
}

// randomLlama draws float64 weights (exactly representable in float32) for
// every tensor of the config, HF names.
func randomLlama(cfg engine.LlamaConfig, seed uint64) map[string][]float64 {
	r := dataset.NewRand(seed)
	H, I, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize
	hd := H / cfg.NumAttentionHeads
	kvd := cfg.NumKeyValueHeads * hd
	w := map[string][]float64{}
	mat := func(name string, rows, cols int) {
		v := make([]float64, rows*cols)
		for i := range v {
			v[i] = float64(float32(r.NormFloat64() / math.Sqrt(float64(cols))))
		}
		w[name] = v
	}
	vec := func(name string, n int) {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(float32(1 + 0.2*r.NormFloat64()))
		}
		w[name] = v
	}
	mat("model.embed_tokens.weight", V, H)
	vec("model.norm.weight", H)
	if !cfg.TieWordEmbeddings {
		mat("lm_head.weight", V, H)
	}
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		mat(p+"self_attn.q_proj.weight", H, H)
		mat(p+"self_attn.k_proj.weight", kvd, H)
		mat(p+"self_attn.v_proj.weight", kvd, H)
		mat(p+"self_attn.o_proj.weight", H, H)
		mat(p+"mlp.gate_proj.weight", I, H)
		mat(p+"mlp.up_proj.weight", I, H)
		mat(p+"mlp.down_proj.weight", H, I)
		vec(p+"input_layernorm.weight", H)
		vec(p+"post_attention_layernorm.weight", H)
	}
	return w
}

func shapeOf(cfg engine.LlamaConfig, name string, n int) []int64 {
	if strings.HasSuffix(name, "norm.weight") || strings.HasSuffix(name, ".bias") {
		return []int64{int64(n)}
	}
	cols := cfg.HiddenSize
	if strings.HasSuffix(name, "down_proj.weight") {
		cols = cfg.IntermediateSize
	}
	return []int64{int64(n / cols), int64(cols)}
}

// writeLlama saves weights and config.json into a new directory.
func writeLlama(t testing.TB, cfg engine.LlamaConfig, w map[string][]float64, dtype weights.DType) string {
	t.Helper()
	dir := t.TempDir()
	var ts []weights.Tensor
	for name, v := range w {
		data := make([]byte, len(v)*dtype.Size())
		if err := weights.Encode(dtype, v, data); err != nil {
			t.Fatal(err)
		}
		ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: name, DType: dtype, Shape: shapeOf(cfg, name, len(v))}, Data: data})
	}
	if err := weights.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
		t.Fatal(err)
	}
	b, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644); err != nil {
		t.Fatal(err)
	}
	return dir
}

// refLlamaLogits is an independent float64 forward pass: every position
// recomputed from scratch with plain loops. interleaved selects Meta's
// rotary pairing (2i, 2i+1) instead of Hugging Face's (i, i+d/2).
func refLlamaLogits(cfg engine.LlamaConfig, w map[string][]float64, tokens []int, interleaved bool) [][]float64 {
	H, I, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize
	nh, nkv := cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	hd := H / nh
	matvec := func(m []float64, rows, cols int, x []float64) []float64 {
		y := make([]float64, rows)
		for r := 0; r < rows; r++ {
			for c := 0; c < cols; c++ {
				y[r] += m[r*cols+c] * x[c]
			}
		}
		return y
	}
	rms := func(x, g []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		s := 1 / math.Sqrt(ss/float64(len(x))+cfg.RMSNormEps)
		y := make([]float64, len(x))
		for i := range x {
			y[i] = x[i] * s * g[i]
		}
		return y
	}
	rot := func(v []float64, pos int) {
		for h := 0; h < len(v)/hd; h++ {
			head := v[h*hd : (h+1)*hd]
			for i := 0; i < hd/2; i++ {
				theta := float64(pos) * math.Pow(cfg.RopeTheta, -2*float64(i)/float64(hd))
				a, b := i, i+hd/2
				if interleaved {
					a, b = 2*i, 2*i+1
				}
				x0, x1 := head[a], head[b]
				head[a] = x0*math.Cos(theta) - x1*math.Sin(theta)
				head[b] = x1*math.Cos(theta) + x0*math.Sin(theta)
			}
		}
	}
	T := len(tokens)
	x := make([][]float64, T)
	for t, tok := range tokens {
		x[t] = append([]float64(nil), w["model.embed_tokens.weight"][tok*H:(tok+1)*H]...)
	}
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		q, k, v := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := 0; t < T; t++ {
			n := rms(x[t], w[p+"input_layernorm.weight"])
			q[t] = matvec(w[p+"self_attn.q_proj.weight"], H, H, n)
			k[t] = matvec(w[p+"self_attn.k_proj.weight"], nkv*hd, H, n)
			v[t] = matvec(w[p+"self_attn.v_proj.weight"], nkv*hd, H, n)
			// Qwen2's q/k/v biases, added before the rotation.
			for name, y := range map[string][]float64{"q": q[t], "k": k[t], "v": v[t]} {
				for i, b := range w[p+"self_attn."+name+"_proj.bias"] {
					y[i] += b
				}
			}
			rot(q[t], t)
			rot(k[t], t)
		}
		for t := 0; t < T; t++ {
			out := make([]float64, H)
			for h := 0; h < nh; h++ {
				kvh := h / (nh / nkv)
				scores := make([]float64, t+1)
				var mx = math.Inf(-1)
				for j := 0; j <= t; j++ {
					for d := 0; d < hd; d++ {
						scores[j] += q[t][h*hd+d] * k[j][kvh*hd+d]
					}
					scores[j] /= math.Sqrt(float64(hd))
					mx = math.Max(mx, scores[j])
				}
				var z float64
				for j := range scores {
					scores[j] = math.Exp(scores[j] - mx)
					z += scores[j]
				}
				for j := 0; j <= t; j++ {
					for d := 0; d < hd; d++ {
						out[h*hd+d] += scores[j] / z * v[j][kvh*hd+d]
					}
				}
			}
			o := matvec(w[p+"self_attn.o_proj.weight"], H, H, out)
			for i := range o {
				x[t][i] += o[i]
			}
		}
		for t := 0; t < T; t++ {
			n := rms(x[t], w[p+"post_attention_layernorm.weight"])
			g := matvec(w[p+"mlp.gate_proj.weight"], I, H, n)
			u := matvec(w[p+"mlp.up_proj.weight"], I, H, n)
			for i := range g {
				g[i] = g[i] / (1 + math.Exp(-g[i])) * u[i]
			}
			d := matvec(w[p+"mlp.down_proj.weight"], H, I, g)
			for i := range d {
				x[t][i] += d[i]
			}
		}
	}
	head := w["lm_head.weight"]
	if cfg.TieWordEmbeddings {
		head = w["model.embed_tokens.weight"]
	}
	out := make([][]float64, T)
	for t := range x {
		out[t] = matvec(head, V, H, rms(x[t], w["model.norm.weight"]))
	}
	return out
}

func compareLogits(t *testing.T, what string, got []float32, want [][]float64) {
	t.Helper()
	V := len(want[0])
	var d, s float64
	for i, row := range want {
		for j, v := range row {
			d = math.Max(d, math.Abs(float64(got[i*V+j])-v))
			s = math.Max(s, math.Abs(v))
		}
	}
	if len(got) != len(want)*V || d/s > 1e-4 {
		t.Errorf("%s: logits differ from the reference by %.3g relative", what, d/s)
	} else {
		t.Logf("%s: max relative difference %.2g", what, d/s)
	}
}

var tinyTokens = []int{3, 17, 42, 0, 49, 8, 8, 21, 33, 5, 12}

func TestLlamaAgainstReference(t *testing.T) {
	for _, tied := range []bool{false, true} {
		cfg := tinyConfig()
		cfg.TieWordEmbeddings = tied
		w := randomLlama(cfg, 1)
		m, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
		if err != nil {
			t.Fatal(err)
		}
		got, err := m.Forward(tinyTokens, nil)
		if err != nil {
			t.Fatal(err)
		}
		ref := refLlamaLogits(cfg, w, tinyTokens, false)
		compareLogits(t, fmt.Sprintf("tied=%v", tied), got, ref)

		// Perplexity from the reference logits.
		var nll float64
		for i := 0; i+1 < len(tinyTokens); i++ {
			row := ref[i]
			mx := math.Inf(-1)
			for _, v := range row {
				mx = math.Max(mx, v)
			}
			var z float64
			for _, v := range row {
				z += math.Exp(v - mx)
			}
			nll += mx + math.Log(z) - row[tinyTokens[i+1]]
		}
		nll /= float64(len(tinyTokens) - 1)
		pr, err := m.Perplexity(tinyTokens, 0)
		if err != nil || pr.Tokens != len(tinyTokens)-1 || pr.Windows != 1 || math.Abs(pr.NLL-nll) > 1e-4 || math.Abs(pr.Perplexity-math.Exp(nll)) > 1e-3*math.Exp(nll) {
			t.Errorf("perplexity %+v, reference nll %v: %v", pr, nll, err)
		}
		// Windows of 4: tokens 1-3, 5-7, 9-10 are predicted.
		if pr, err := m.Perplexity(tinyTokens, 4); err != nil || pr.Tokens != 8 || pr.Windows != 3 {
			t.Errorf("windowed perplexity %+v %v", pr, err)
		}
	}
}

// TestLlamaKVCache checks generation with the cache against recomputing
// the whole sequence at every step, and incremental logits against full
// ones.
func TestLlamaKVCache(t *testing.T) {
	cfg := tinyConfig()
	m, err := engine.LoadLlama(writeLlama(t, cfg, randomLlama(cfg, 2), weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	prompt := tinyTokens[:4]
	gen, err := m.Generate(prompt, 12)
	if err != nil {
		t.Fatal(err)
	}
	seq := append([]int(nil), prompt...)
	for i := 0; i < 12; i++ {
		logits, err := m.Forward(seq, nil)
		if err != nil {
			t.Fatal(err)
		}
		last := logits[(len(seq)-1)*cfg.VocabSize:]
		best := 0
		for j, v := range last {
			if v > last[best] {
				best = j
			}
		}
		if best != gen[i] {
			t.Fatalf("step %d: cached generation gives %d, full recompute %d (generated %v)", i, gen[i], best, gen)
		}
		seq = append(seq, best)
	}
	// Token by token through one cache equals the full pass.
	full, _ := m.Forward(seq, nil)
	cache := m.NewCache()
	for i, tok := range seq {
		row, err := m.Forward([]int{tok}, cache)
		if err != nil {
			t.Fatal(err)
		}
		for j, v := range row {
			if d := math.Abs(float64(v - full[i*cfg.VocabSize+j])); d > 1e-5 {
				t.Fatalf("position %d: incremental logit %v, full %v", i, v, full[i*cfg.VocabSize+j])
			}
		}
	}
	if cache.Len() != len(seq) {
		t.Errorf("cache holds %d positions", cache.Len())
	}
	t.Logf("generated %v", gen)
}

// TestMetaLayout builds a model in Meta's layout (interleaved rotary
// pairs), computes its logits with the reference, and checks the engine
// gives the same logits on the weights PermuteMetaToHF produced.
func TestMetaLayout(t *testing.T) {
	cfg := tinyConfig()
	meta := randomLlama(cfg, 3)
	ref := refLlamaLogits(cfg, meta, tinyTokens, true)
	hf := map[string][]float64{}
	for name, v := range meta {
		hf[name] = v
		heads := 0
		switch {
		case strings.HasSuffix(name, "q_proj.weight"):
			heads = cfg.NumAttentionHeads
		case strings.HasSuffix(name, "k_proj.weight"):
			heads = cfg.NumKeyValueHeads
		default:
			continue
		}
		data := make([]byte, 8*len(v))
		weights.Encode(weights.F64, v, data)
		in := weights.Tensor{TensorInfo: weights.TensorInfo{Name: name, DType: weights.F64, Shape: shapeOf(cfg, name, len(v))}, Data: data}
		out, err := engine.PermuteMetaToHF(in, heads)
		if err != nil {
			t.Fatal(err)
		}
		back, _ := engine.PermuteHFToMeta(out, heads)
		if string(back.Data) != string(in.Data) || string(out.Data) == string(in.Data) {
			t.Fatalf("%s: permutation is not an inverse pair, or does nothing", name)
		}
		hf[name] = make([]float64, len(v))
		weights.Decode(weights.F64, out.Data, hf[name])
	}
	m, err := engine.LoadLlama(writeLlama(t, cfg, hf, weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	got, _ := m.Forward(tinyTokens, nil)
	compareLogits(t, "Meta layout, permuted", got, ref)
	// Unpermuted Meta weights in the HF engine are a different model.
	m2, _ := engine.LoadLlama(writeLlama(t, cfg, meta, weights.F32))
	bad, _ := m2.Forward(tinyTokens, nil)
	var d float64
	for i, row := range ref {
		for j, v := range row {
			d = math.Max(d, math.Abs(float64(bad[i*cfg.VocabSize+j])-v))
		}
	}
	if d < 1e-2 {
		t.Error("the rotary layout makes no difference; the test proves nothing")
	}
}

func TestPermuteRows(t *testing.T) {
	// Two heads of dimension 4, one column: Meta rows (h, i, j) = h·4+2i+j.
	// HF row h·4 + j·2 + i holds Meta row h·4 + 2i + j: [0 2 1 3 4 6 5 7].
	data := make([]byte, 8)
	for i := range data {
		data[i] = byte(i)
	}
	in := weights.Tensor{TensorInfo: weights.TensorInfo{Name: "q", DType: weights.U8, Shape: []int64{8, 1}}, Data: data}
	out, err := engine.PermuteMetaToHF(in, 2)
	if err != nil || fmt.Sprint(out.Data) != "[0 2 1 3 4 6 5 7]" {
		t.Errorf("%v %v", out.Data, err)
	}
	if _, err := engine.PermuteMetaToHF(in, 3); err == nil {
		t.Error("8 rows in 3 heads accepted")
	}
	in.Shape = []int64{2, 2, 2}
	if _, err := engine.PermuteMetaToHF(in, 2); err == nil {
		t.Error("3-D tensor accepted")
	}
}

// TestLlamaTorchReference compares with logits PyTorch computed (see
// make_torch_reference.py) for BF16 weights.
func TestLlamaTorchReference(t *testing.T) {
	dir := td + "torch/llama"
	m, err := engine.LoadLlama(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(dir + "/tokens.txt")
	if err != nil {
		t.Fatal(err)
	}
	toks, err := engine.ParseTokenIDs(string(b))
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Forward(toks, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := loadNPY(t, dir+"/logits.npy")
	if e := relErr(got, want.Float32s(false)); e > 1e-4 || len(got) != want.Len() {
		t.Errorf("logits differ from torch's by %.3g relative", e)
	} else {
		t.Logf("max relative difference from torch %.2g", e)
	}
}

func TestLlamaErrors(t *testing.T) {
	cfg := tinyConfig()
	w := randomLlama(cfg, 4)
	delete(w, "model.layers.1.mlp.up_proj.weight")
	if _, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.BF16)); err == nil || !strings.Contains(err.Error(), `tensor "model.layers.1.mlp.up_proj.weight" not found`) {
		t.Errorf("missing tensor: %v", err)
	}
	w = randomLlama(cfg, 4)
	bad := cfg
	bad.NumKeyValueHeads = 4
	dir := writeLlama(t, cfg, w, weights.F16)
	b, _ := json.Marshal(bad)
	os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
	if _, err := engine.LoadLlama(dir); err == nil || !strings.Contains(err.Error(), `tensor "model.layers.0.self_attn.k_proj.weight" has shape [16, 32], want [32, 32]`) {
		t.Errorf("shape mismatch: %v", err)
	}
	for _, c := range []struct{ cfg, want string }{
		{`{"hidden_size": 32}`, "must be positive"},
		{`{"hidden_size": 32, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 3, "num_key_value_heads": 2, "vocab_size": 5}`, "not a multiple"},
		{`{"hidden_size": 32, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 5, "rope_scaling": {"type": "llama3"}}`, "rope_scaling"},
		{`{"hidden_size": 32, "intermediate_size": 8, "num_hidden_layers": 1, "num_attention_heads": 4, "vocab_size": 5, "hidden_act": "gelu"}`, "hidden_act"},
		{`{"hidden_size": "x"}`, "cannot unmarshal"},
	} {
		os.WriteFile(filepath.Join(dir, "config.json"), []byte(c.cfg), 0o644)
		if _, err := engine.LoadLlama(dir); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: got %v, want %q", c.cfg, err, c.want)
		}
	}
	m, err := engine.LoadLlama(writeLlama(t, cfg, randomLlama(cfg, 5), weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Forward([]int{1, 50}, nil); err == nil || !strings.Contains(err.Error(), "token 50 at position 1 is outside the vocabulary [0, 50)") {
		t.Errorf("token range: %v", err)
	}
	if _, err := m.Generate([]int{1}, 64); err == nil || !strings.Contains(err.Error(), "max_position_embeddings") {
		t.Errorf("too long: %v", err)
	}
	if _, err := m.Perplexity([]int{1}, 0); err == nil {
		t.Error("one-token perplexity accepted")
	}
	if ids, err := engine.ParseTokenIDs("1, 2\n3,4 "); err != nil || fmt.Sprint(ids) != "[1 2 3 4]" {
		t.Errorf("ParseTokenIDs: %v %v", ids, err)
	}
	if _, err := engine.ParseTokenIDs("1 -2"); err == nil {
		t.Error("negative id accepted")
	}
}

// BenchmarkLlamaPerplexity reports tokens per second scoring 64-token
// windows with the tiny model.
func BenchmarkLlamaPerplexity(b *testing.B) {
	cfg := tinyConfig()
	m, err := engine.LoadLlama(writeLlama(b, cfg, randomLlama(cfg, 6), weights.F32))
	if err != nil {
		b.Fatal(err)
	}
	r := dataset.NewRand(1)
	toks := make([]int, 1024)
	for i := range toks {
		toks[i] = r.Intn(cfg.VocabSize)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := m.Perplexity(toks, 64); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*len(toks))/b.Elapsed().Seconds(), "tokens/s")
}

// TestLayerInputs checks the hidden states entering each block against the
// float64 reference: block 0 gets the last token's embedding; block l's
// input, through the final norm and lm_head, gives the reference logits of
// the model cut to its first l blocks.
func TestLayerInputs(t *testing.T) {
	cfg := tinyConfig()
	cfg.NumHiddenLayers = 3
	w := randomLlama(cfg, 4)
	m, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	xs, err := m.LayerInputs(tinyTokens)
	if err != nil {
		t.Fatal(err)
	}
	if len(xs) != 3 {
		t.Fatalf("%d layer inputs, want 3", len(xs))
	}
	H, last := cfg.HiddenSize, tinyTokens[len(tinyTokens)-1]
	for k, v := range xs[0] {
		if float64(v) != w["model.embed_tokens.weight"][last*H+k] {
			t.Fatalf("block 0 input[%d] = %v, not the embedding", k, v)
		}
	}
	for l := 1; l < 3; l++ {
		cut := cfg
		cut.NumHiddenLayers = l
		ref := refLlamaLogits(cut, w, tinyTokens, false)
		want := ref[len(ref)-1]
		x := xs[l]
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		s := 1 / math.Sqrt(ss/float64(H)+cfg.RMSNormEps)
		for r := range want {
			var got float64
			for c := 0; c < H; c++ {
				got += w["lm_head.weight"][r*H+c] * float64(x[c]) * s * w["model.norm.weight"][c]
			}
			if math.Abs(got-want[r]) > 1e-4*(1+math.Abs(want[r])) {
				t.Fatalf("block %d input: logit %d = %v, reference %v", l, r, got, want[r])
			}
		}
	}
}

// TestPerplexityStride checks the sliding window against scoring each
// token from exactly the context the window gives it, run on its own.
func TestPerplexityStride(t *testing.T) {
	cfg := tinyConfig()
	w := randomLlama(cfg, 2)
	m, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	tokens := append(append([]int{}, tinyTokens...), tinyTokens...)
	for _, c := range []struct{ window, stride int }{{6, 2}, {6, 1}, {5, 5}, {8, 3}} {
		var nll float64
		n := 0
		// Token j is scored by the first window that reaches it, as
		// transformers' loop assigns it, from that window's tokens before j.
		prevEnd := 0
		for begin := 0; begin < len(tokens); begin += c.stride {
			end := min(begin+c.window, len(tokens))
			for j := max(begin+1, prevEnd); j < end; j++ {
				ctx := tokens[begin:j]
				logits, err := m.Forward(ctx, nil)
				if err != nil {
					t.Fatal(err)
				}
				V := cfg.VocabSize
				row := logits[(len(ctx)-1)*V : len(ctx)*V]
				mx := math.Inf(-1)
				for _, v := range row {
					mx = math.Max(mx, float64(v))
				}
				var z float64
				for _, v := range row {
					z += math.Exp(float64(v) - mx)
				}
				nll += mx + math.Log(z) - float64(row[tokens[j]])
				n++
			}
			prevEnd = end
			if end == len(tokens) {
				break
			}
		}
		r, err := m.PerplexityStride(tokens, c.window, c.stride)
		if err != nil {
			t.Fatal(err)
		}
		if r.Tokens != n || math.Abs(r.NLL-nll/float64(n)) > 1e-5 {
			t.Errorf("window %d stride %d: %d tokens nll %.6f, reference %d tokens %.6f", c.window, c.stride, r.Tokens, r.NLL, n, nll/float64(n))
		}
		if c.stride < c.window && r.Tokens != len(tokens)-1 {
			t.Errorf("window %d stride %d scored %d of %d tokens", c.window, c.stride, r.Tokens, len(tokens)-1)
		}
	}
}

// TestMistralSlidingWindow: with one block, a position under a window of
// W sees exactly the last W tokens, so its logits are those of running
// those W tokens alone (rotary attention depends only on relative
// positions); with a cache, token-by-token logits equal the full pass;
// a window past the sequence changes nothing; other architectures and
// windows are refused.
func TestMistralSlidingWindow(t *testing.T) {
	cfg := tinyConfig()
	cfg.NumHiddenLayers = 1
	w := randomLlama(cfg, 6)
	plain, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	win := 3
	cfg.Architectures = []string{"MistralForCausalLM"}
	cfg.SlidingWindow = &win
	m, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	V := cfg.VocabSize
	full, err := m.Forward(tinyTokens, nil)
	if err != nil {
		t.Fatal(err)
	}
	for pos := win; pos < len(tinyTokens); pos++ {
		alone, err := plain.Forward(tinyTokens[pos-win+1:pos+1], nil)
		if err != nil {
			t.Fatal(err)
		}
		got, want := full[pos*V:(pos+1)*V], alone[(win-1)*V:win*V]
		for i := range got {
			if math.Abs(float64(got[i]-want[i])) > 1e-4 {
				t.Fatalf("position %d logit %d: %v with the window, %v on the last %d tokens alone", pos, i, got[i], want[i], win)
			}
		}
	}
	cache := m.NewCache()
	for pos, tok := range tinyTokens {
		step, err := m.Forward([]int{tok}, cache)
		if err != nil {
			t.Fatal(err)
		}
		for i := range step {
			if math.Abs(float64(step[i]-full[pos*V+i])) > 1e-4 {
				t.Fatalf("cached position %d logit %d: %v vs %v", pos, i, step[i], full[pos*V+i])
			}
		}
	}
	big := 100
	cfg.SlidingWindow = &big
	wide, _ := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
	a, _ := wide.Forward(tinyTokens, nil)
	b, _ := plain.Forward(tinyTokens, nil)
	for i := range a {
		if a[i] != b[i] {
			t.Fatalf("a window past the sequence changed logit %d", i)
		}
	}
	for _, c := range []struct {
		arch string
		want string
	}{{"GPT2LMHeadModel", "the engine runs"}, {"LlamaForCausalLM", "sliding window is not implemented"}} {
		cfg.Architectures = []string{c.arch}
		if _, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32)); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v", c.arch, err)
		}
	}
}

// TestQwen2AgainstReference: a Qwen2ForCausalLM with q/k/v biases gives
// the float64 reference's logits (biases added before the rotation).
func TestQwen2AgainstReference(t *testing.T) {
	cfg := tinyConfig()
	cfg.Architectures = []string{"Qwen2ForCausalLM"}
	w := randomLlama(cfg, 7)
	r := dataset.NewRand(8)
	hd := cfg.HiddenSize / cfg.NumAttentionHeads
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		for name, n := range map[string]int{"q": cfg.HiddenSize, "k": cfg.NumKeyValueHeads * hd, "v": cfg.NumKeyValueHeads * hd} {
			b := make([]float64, n)
			for i := range b {
				b[i] = float64(float32(0.5 * r.NormFloat64()))
			}
			w[fmt.Sprintf("model.layers.%d.self_attn.%s_proj.bias", l, name)] = b
		}
	}
	m, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
	if err != nil {
		t.Fatal(err)
	}
	got, err := m.Forward(tinyTokens, nil)
	if err != nil {
		t.Fatal(err)
	}
	compareLogits(t, "qwen2", got, refLlamaLogits(cfg, w, tinyTokens, false))
	// The biases matter: without them the reference moves.
	noBias := map[string][]float64{}
	for k, v := range w {
		if !strings.HasSuffix(k, ".bias") {
			noBias[k] = v
		}
	}
	ref := refLlamaLogits(cfg, noBias, tinyTokens, false)
	if math.Abs(ref[3][0]-float64(got[3*cfg.VocabSize])) < 1e-6 {
		t.Error("the biases changed nothing")
	}
}

// A BF16 or F16 checkpoint is run without widening its matrices in memory
// (they are widened while products pack them) and gives the same logits,
// bit for bit, as the same values stored in F32.
func TestHalfWeightsMatchF32(t *testing.T) {
	cfg := tinyConfig()
	for _, dt := range []weights.DType{weights.BF16, weights.F16} {
		w := randomLlama(cfg, 8)
		// Round every value to dt first, so the F32 model holds the same numbers.
		for name, v := range w {
			b := make([]byte, len(v)*dt.Size())
			if err := weights.Encode(dt, v, b); err != nil {
				t.Fatal(err)
			}
			back := make([]float64, len(v))
			if err := weights.Decode(dt, b, back); err != nil {
				t.Fatal(err)
			}
			w[name] = back
		}
		half, err := engine.LoadLlama(writeLlama(t, cfg, w, dt))
		if err != nil {
			t.Fatal(err)
		}
		full, err := engine.LoadLlama(writeLlama(t, cfg, w, weights.F32))
		if err != nil {
			t.Fatal(err)
		}
		a, err := half.Forward(tinyTokens, nil)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := full.Forward(tinyTokens, nil)
		for i := range a {
			if math.Float32bits(a[i]) != math.Float32bits(b[i]) {
				t.Fatalf("%s: logit %d is %v, %v from F32 weights", dt, i, a[i], b[i])
			}
		}
	}
}
