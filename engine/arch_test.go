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

// archCase is one architecture's tiny model: its config.json (as a map,
// with the Hugging Face keys) and what the float64 reference must do.
type archCase struct {
	name   string
	config map[string]any
	// reference switches
	hd, rot          int
	qkNorm, offset   bool
	embedScale, gelu bool
	sandwich, fused  bool
	windows          []int // per layer (0: none)
	scale            float64
	attnCap, logCap  float64
	invFreq          func(seqLen int) []float64
	attnFactor       float64
	tied             bool
}

const (
	aH, aI, aV, aNH, aKV, aL = 32, 40, 50, 4, 2, 2
	aEps, aTheta             = 1e-5, 10000.0
)

// defaultFreq is θ^(−2i/d) for i < d/2.
func defaultFreq(theta float64, d int) []float64 {
	f := make([]float64, d/2)
	for i := range f {
		f[i] = math.Pow(theta, -2*float64(i)/float64(d))
	}
	return f
}

// archWeights draws every tensor the case's checkpoint holds.
func archWeights(c archCase, seed uint64) (map[string][]float64, map[string][]int64) {
	r := dataset.NewRand(seed)
	w, shapes := map[string][]float64{}, map[string][]int64{}
	mat := func(name string, rows, cols int) {
		v := make([]float64, rows*cols)
		for i := range v {
			v[i] = float64(float32(r.NormFloat64() / math.Sqrt(float64(cols))))
		}
		w[name], shapes[name] = v, []int64{int64(rows), int64(cols)}
	}
	vec := func(name string, n int, mean float64) {
		v := make([]float64, n)
		for i := range v {
			v[i] = float64(float32(mean + 0.2*r.NormFloat64()))
		}
		w[name], shapes[name] = v, []int64{int64(n)}
	}
	gain := 1.0
	if c.offset {
		gain = 0 // Gemma's norms scale by 1 + w
	}
	qd, kvd := aNH*c.hd, aKV*c.hd
	mat("model.embed_tokens.weight", aV, aH)
	vec("model.norm.weight", aH, gain)
	if !c.tied {
		mat("lm_head.weight", aV, aH)
	}
	for l := range aL {
		p := fmt.Sprintf("model.layers.%d.", l)
		if c.fused {
			mat(p+"self_attn.qkv_proj.weight", qd+2*kvd, aH)
			mat(p+"mlp.gate_up_proj.weight", 2*aI, aH)
		} else {
			mat(p+"self_attn.q_proj.weight", qd, aH)
			mat(p+"self_attn.k_proj.weight", kvd, aH)
			mat(p+"self_attn.v_proj.weight", kvd, aH)
			mat(p+"mlp.gate_proj.weight", aI, aH)
			mat(p+"mlp.up_proj.weight", aI, aH)
		}
		mat(p+"self_attn.o_proj.weight", aH, qd)
		mat(p+"mlp.down_proj.weight", aH, aI)
		vec(p+"input_layernorm.weight", aH, gain)
		vec(p+"post_attention_layernorm.weight", aH, gain)
		if c.qkNorm {
			vec(p+"self_attn.q_norm.weight", c.hd, gain)
			vec(p+"self_attn.k_norm.weight", c.hd, gain)
		}
		if c.sandwich {
			vec(p+"pre_feedforward_layernorm.weight", aH, gain)
			vec(p+"post_feedforward_layernorm.weight", aH, gain)
		}
	}
	return w, shapes
}

// refCausal is the float64 forward pass of a case, every position from
// scratch, written from the architectures' published definitions.
func refCausal(c archCase, w map[string][]float64, tokens []int) [][]float64 {
	qd, kvd := aNH*c.hd, aKV*c.hd
	matvec := func(m []float64, rows, cols int, x []float64) []float64 {
		y := make([]float64, rows)
		for r := range rows {
			for k := range cols {
				y[r] += m[r*cols+k] * x[k]
			}
		}
		return y
	}
	rms := func(x, g []float64) []float64 {
		var ss float64
		for _, v := range x {
			ss += v * v
		}
		s := 1 / math.Sqrt(ss/float64(len(x))+aEps)
		y := make([]float64, len(x))
		for i := range x {
			if c.offset {
				y[i] = x[i] * s * (1 + g[i])
			} else {
				y[i] = x[i] * s * g[i]
			}
		}
		return y
	}
	T := len(tokens)
	freq := c.invFreq(T)
	rotate := func(v []float64, pos int) {
		for h := 0; h < len(v)/c.hd; h++ {
			head := v[h*c.hd : (h+1)*c.hd]
			for i, f := range freq {
				a, b := i, i+c.rot/2
				x0, x1 := head[a], head[b]
				cs, sn := math.Cos(float64(pos)*f)*c.attnFactor, math.Sin(float64(pos)*f)*c.attnFactor
				head[a] = x0*cs - x1*sn
				head[b] = x1*cs + x0*sn
			}
		}
	}
	act := func(x float64) float64 {
		if c.gelu {
			return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
		}
		return x / (1 + math.Exp(-x))
	}
	x := make([][]float64, T)
	for t, tok := range tokens {
		x[t] = append([]float64(nil), w["model.embed_tokens.weight"][tok*aH:(tok+1)*aH]...)
		if c.embedScale {
			for i := range x[t] {
				x[t][i] *= math.Sqrt(aH)
			}
		}
	}
	for l := range aL {
		p := fmt.Sprintf("model.layers.%d.", l)
		q, k, v := make([][]float64, T), make([][]float64, T), make([][]float64, T)
		for t := range T {
			n := rms(x[t], w[p+"input_layernorm.weight"])
			if c.fused {
				all := matvec(w[p+"self_attn.qkv_proj.weight"], qd+2*kvd, aH, n)
				q[t], k[t], v[t] = all[:qd], all[qd:qd+kvd], all[qd+kvd:]
			} else {
				q[t] = matvec(w[p+"self_attn.q_proj.weight"], qd, aH, n)
				k[t] = matvec(w[p+"self_attn.k_proj.weight"], kvd, aH, n)
				v[t] = matvec(w[p+"self_attn.v_proj.weight"], kvd, aH, n)
			}
			if c.qkNorm {
				for h := range aNH {
					copy(q[t][h*c.hd:], rms(q[t][h*c.hd:(h+1)*c.hd], w[p+"self_attn.q_norm.weight"]))
				}
				for h := range aKV {
					copy(k[t][h*c.hd:], rms(k[t][h*c.hd:(h+1)*c.hd], w[p+"self_attn.k_norm.weight"]))
				}
			}
			rotate(q[t], t)
			rotate(k[t], t)
		}
		for t := range T {
			out := make([]float64, qd)
			for h := range aNH {
				kvh := h / (aNH / aKV)
				j0 := 0
				if win := c.windows[l]; win > 0 {
					j0 = max(0, t-win+1)
				}
				scores := make([]float64, t+1)
				mx := math.Inf(-1)
				for j := j0; j <= t; j++ {
					var s float64
					for d := range c.hd {
						s += q[t][h*c.hd+d] * k[j][kvh*c.hd+d]
					}
					s *= c.scale
					if c.attnCap > 0 {
						s = c.attnCap * math.Tanh(s/c.attnCap)
					}
					scores[j] = s
					mx = math.Max(mx, s)
				}
				var z float64
				for j := j0; j <= t; j++ {
					scores[j] = math.Exp(scores[j] - mx)
					z += scores[j]
				}
				for j := j0; j <= t; j++ {
					for d := range c.hd {
						out[h*c.hd+d] += scores[j] / z * v[j][kvh*c.hd+d]
					}
				}
			}
			o := matvec(w[p+"self_attn.o_proj.weight"], aH, qd, out)
			if c.sandwich {
				o = rms(o, w[p+"post_attention_layernorm.weight"])
			}
			for i := range o {
				x[t][i] += o[i]
			}
		}
		for t := range T {
			var n []float64
			if c.sandwich {
				n = rms(x[t], w[p+"pre_feedforward_layernorm.weight"])
			} else {
				n = rms(x[t], w[p+"post_attention_layernorm.weight"])
			}
			var g, u []float64
			if c.fused {
				gu := matvec(w[p+"mlp.gate_up_proj.weight"], 2*aI, aH, n)
				g, u = gu[:aI], gu[aI:]
			} else {
				g = matvec(w[p+"mlp.gate_proj.weight"], aI, aH, n)
				u = matvec(w[p+"mlp.up_proj.weight"], aI, aH, n)
			}
			m := make([]float64, aI)
			for i := range m {
				m[i] = act(g[i]) * u[i]
			}
			d := matvec(w[p+"mlp.down_proj.weight"], aH, aI, m)
			if c.sandwich {
				d = rms(d, w[p+"post_feedforward_layernorm.weight"])
			}
			for i := range d {
				x[t][i] += d[i]
			}
		}
	}
	head := w["lm_head.weight"]
	if c.tied {
		head = w["model.embed_tokens.weight"]
	}
	logits := make([][]float64, T)
	for t := range T {
		logits[t] = matvec(head, aV, aH, rms(x[t], w["model.norm.weight"]))
		if c.logCap > 0 {
			for i, v := range logits[t] {
				logits[t][i] = c.logCap * math.Tanh(v/c.logCap)
			}
		}
	}
	return logits
}

// baseConfig is the config.json every case starts from.
func baseConfig(class string) map[string]any {
	return map[string]any{
		"architectures": []string{class}, "hidden_size": aH, "intermediate_size": aI,
		"num_hidden_layers": aL, "num_attention_heads": aNH, "num_key_value_heads": aKV,
		"rms_norm_eps": aEps, "rope_theta": aTheta, "vocab_size": aV, "max_position_embeddings": 64,
	}
}

func archCases() []archCase {
	def := func(hd int) func(int) []float64 { return func(int) []float64 { return defaultFreq(aTheta, hd) } }
	plain := func(name string, cfg map[string]any) archCase {
		return archCase{name: name, config: cfg, hd: aH / aNH, rot: aH / aNH, windows: make([]int, aL),
			scale: 1 / math.Sqrt(aH/aNH), invFreq: def(aH / aNH), attnFactor: 1}
	}
	var cs []archCase

	// Qwen3: per-head q/k norms; head_dim 16 with 4 heads (q is 64 wide,
	// hidden 32).
	c := plain("qwen3", baseConfig("Qwen3ForCausalLM"))
	c.config["head_dim"] = 16
	c.hd, c.rot, c.qkNorm, c.scale, c.invFreq = 16, 16, true, 1/math.Sqrt(16), def(16)
	cs = append(cs, c)

	// LLaMA 3.1's llama3 rope: with hd 8, θ^(−2i/8) has wavelengths
	// 6.3, 63, 628, 6283 against bands at 16/4 and 16/1: one frequency
	// blended, three interpolated.
	c = plain("llama3-rope", baseConfig("LlamaForCausalLM"))
	c.config["rope_scaling"] = map[string]any{"rope_type": "llama3", "factor": 8.0, "low_freq_factor": 1.0, "high_freq_factor": 4.0, "original_max_position_embeddings": 16}
	c.invFreq = func(int) []float64 {
		f := defaultFreq(aTheta, 8)
		for i, v := range f {
			wave := 2 * math.Pi / v
			if wave > 16 {
				f[i] = v / 8
			} else if wave >= 4 {
				s := (16/wave - 1) / (4 - 1)
				f[i] = (1-s)*v/8 + s*v
			}
		}
		return f
	}
	cs = append(cs, c)

	c = plain("linear-rope", baseConfig("LlamaForCausalLM"))
	c.config["rope_scaling"] = map[string]any{"type": "linear", "factor": 2.5}
	c.invFreq = func(int) []float64 {
		f := defaultFreq(aTheta, 8)
		for i := range f {
			f[i] /= 2.5
		}
		return f
	}
	cs = append(cs, c)

	// Dynamic NTK: the 11-token pass is past max_position_embeddings 8,
	// so the base grows with the sequence.
	c = plain("dynamic-rope", baseConfig("LlamaForCausalLM"))
	c.config["max_position_embeddings"] = 8
	c.config["rope_scaling"] = map[string]any{"rope_type": "dynamic", "factor": 2.0}
	c.invFreq = func(seq int) []float64 {
		base := aTheta
		if seq > 8 {
			base *= math.Pow(2*float64(seq)/8-1, 8.0/6)
		}
		return defaultFreq(base, 8)
	}
	cs = append(cs, c)

	// YaRN: ramp between dimensions ⌊d(32)⌋ and ⌈d(1)⌉ over the original
	// 16 positions, and cos/sin scaled by 0.1·ln 4 + 1.
	c = plain("yarn-rope", baseConfig("Qwen2ForCausalLM"))
	c.config["rope_scaling"] = map[string]any{"rope_type": "yarn", "factor": 4.0, "original_max_position_embeddings": 16}
	c.invFreq = func(int) []float64 {
		corr := func(n float64) float64 { return 8 * math.Log(16/(n*2*math.Pi)) / (2 * math.Log(aTheta)) }
		lo, hi := math.Max(math.Floor(corr(32)), 0), math.Min(math.Ceil(corr(1)), 7)
		if lo == hi {
			hi += 0.001
		}
		f := defaultFreq(aTheta, 8)
		for i, v := range f {
			ramp := math.Min(math.Max((float64(i)-lo)/(hi-lo), 0), 1)
			f[i] = v/4*ramp + v*(1-ramp)
		}
		return f
	}
	c.attnFactor = 0.1*math.Log(4) + 1
	cs = append(cs, c)

	// Half of each head rotated.
	c = plain("partial-rotary", baseConfig("LlamaForCausalLM"))
	c.config["partial_rotary_factor"] = 0.5
	c.rot, c.invFreq = 4, def(4)
	cs = append(cs, c)

	// Phi-3: fused projections, a sliding window of 5 on every layer.
	c = plain("phi3", baseConfig("Phi3ForCausalLM"))
	c.config["sliding_window"] = 5
	c.fused, c.windows = true, []int{5, 5}
	cs = append(cs, c)

	// Gemma: (1 + w) norms, √hidden embeddings, GeGLU, tied, head_dim 16.
	c = plain("gemma", baseConfig("GemmaForCausalLM"))
	c.config["head_dim"], c.config["hidden_activation"] = 16, "gelu_pytorch_tanh"
	c.hd, c.rot, c.scale, c.invFreq = 16, 16, 1/math.Sqrt(16), def(16)
	c.offset, c.embedScale, c.gelu, c.tied = true, true, true, true
	cs = append(cs, c)

	// Gemma 2: and the sandwich norms, query_pre_attn_scalar, both
	// soft-caps (small, so they bite) and a window of 4 on layer 0.
	c = plain("gemma2", baseConfig("Gemma2ForCausalLM"))
	c.config["head_dim"], c.config["hidden_activation"] = 16, "gelu_pytorch_tanh"
	c.config["query_pre_attn_scalar"], c.config["attn_logit_softcapping"], c.config["final_logit_softcapping"] = 24, 0.8, 1.5
	c.config["sliding_window"] = 4
	c.hd, c.rot, c.scale, c.invFreq = 16, 16, 1/math.Sqrt(24), def(16)
	c.offset, c.embedScale, c.gelu, c.tied, c.sandwich = true, true, true, true, true
	c.attnCap, c.logCap, c.windows = 0.8, 1.5, []int{4, 0}
	cs = append(cs, c)
	return cs
}

// TestArchitecturesAgainstReference: every architecture's tiny random
// model gives the float64 reference's logits to 1e-4, from a prompt pass
// and token by token through the KV cache.
func TestArchitecturesAgainstReference(t *testing.T) {
	for i, c := range archCases() {
		t.Run(c.name, func(t *testing.T) {
			w, shapes := archWeights(c, uint64(20+i))
			dir := t.TempDir()
			var ts []weights.Tensor
			for name, v := range w {
				data := make([]byte, 4*len(v))
				if err := weights.Encode(weights.F32, v, data); err != nil {
					t.Fatal(err)
				}
				ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: name, DType: weights.F32, Shape: shapes[name]}, Data: data})
			}
			if err := weights.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, nil); err != nil {
				t.Fatal(err)
			}
			b, _ := json.Marshal(c.config)
			os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
			m, err := engine.LoadLlama(dir)
			if err != nil {
				t.Fatal(err)
			}
			want := refCausal(c, w, tinyTokens)
			got, err := m.Forward(tinyTokens, nil)
			if err != nil {
				t.Fatal(err)
			}
			compareLogits(t, c.name, got, want)
			if c.config["rope_scaling"] != nil && c.name == "dynamic-rope" {
				return // dynamic NTK depends on the pass's length: a cache pass differs, as in transformers
			}
			cache := m.NewCache()
			var steps []float32
			for _, tok := range tinyTokens {
				l, err := m.Forward([]int{tok}, cache)
				if err != nil {
					t.Fatal(err)
				}
				steps = append(steps, l...)
			}
			compareLogits(t, c.name+" through the cache", steps, want)
		})
	}
}

// Refusals name what is not implemented.
func TestArchitectureRefusals(t *testing.T) {
	for _, c := range []struct {
		class string
		extra map[string]any
		want  string
	}{
		{"Phi3ForCausalLM", map[string]any{"rope_scaling": map[string]any{"type": "longrope", "factor": 2.0}}, `rope_scaling type "longrope" is not implemented`},
		{"Qwen3ForCausalLM", map[string]any{"use_sliding_window": true}, "use_sliding_window"},
		{"LlamaForCausalLM", map[string]any{"rope_scaling": map[string]any{"rope_type": "llama3", "factor": 8.0}}, "original_max_position_embeddings"},
		{"LlamaForCausalLM", map[string]any{"partial_rotary_factor": 0.1}, "rotated dimensions"},
		{"GemmaForCausalLM", map[string]any{"hidden_activation": "relu"}, "not supported on Gemma"},
		{"Gemma2ForCausalLM", map[string]any{"sliding_window": 4, "layer_types": []string{"full_attention"}}, "layer_types lists 1 layers"},
		{"FalconForCausalLM", nil, "the engine runs"},
	} {
		cfg := baseConfig(c.class)
		for k, v := range c.extra {
			cfg[k] = v
		}
		dir := t.TempDir()
		b, _ := json.Marshal(cfg)
		os.WriteFile(filepath.Join(dir, "config.json"), b, 0o644)
		if err := weights.WriteSafetensors(filepath.Join(dir, "model.safetensors"), nil, nil); err != nil {
			t.Fatal(err)
		}
		if _, err := engine.LoadLlama(dir); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %v: %v, want %q", c.class, c.extra, err, c.want)
		}
	}
}
