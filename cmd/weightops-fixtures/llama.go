package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/weights"
)

// TinyLlamaConfig is the tiny-llama fixture's shape: hidden 32, 4 heads of
// 8 with 2 key/value heads, 2 layers, vocabulary 50.
var TinyLlamaConfig = engine.LlamaConfig{HiddenSize: 32, IntermediateSize: 48, NumHiddenLayers: 2,
	NumAttentionHeads: 4, NumKeyValueHeads: 2, RMSNormEps: 1e-5, RopeTheta: 10000, VocabSize: 50,
	MaxPositionEmbeddings: 128, HiddenAct: "silu"}

// writeTinyLlama writes a random tiny LLaMA in the Hugging Face layout
// (config.json, BF16 model.safetensors) and a tokens.txt of 200 random
// ids: a model for exercising eval-lm and generate, not a trained one.
func writeTinyLlama(dir string, seed uint64) error {
	cfg := TinyLlamaConfig
	r := dataset.NewRand(seed, 0x11a3a)
	H, I, V := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize
	kv := H / cfg.NumAttentionHeads * cfg.NumKeyValueHeads
	var ts []weights.Tensor
	add := func(name string, shape ...int) {
		n, s64 := 1, make([]int64, len(shape))
		for i, d := range shape {
			n *= d
			s64[i] = int64(d)
		}
		v := make([]float64, n)
		for i := range v {
			if len(shape) == 1 {
				v[i] = 1 + 0.1*r.NormFloat64()
			} else {
				v[i] = r.NormFloat64() / math.Sqrt(float64(shape[1]))
			}
		}
		data := make([]byte, 2*n)
		_ = weights.Encode(weights.BF16, v, data)
		ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: name, DType: weights.BF16, Shape: s64}, Data: data})
	}
	add("model.embed_tokens.weight", V, H)
	for l := 0; l < cfg.NumHiddenLayers; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		add(p+"input_layernorm.weight", H)
		add(p+"self_attn.q_proj.weight", H, H)
		add(p+"self_attn.k_proj.weight", kv, H)
		add(p+"self_attn.v_proj.weight", kv, H)
		add(p+"self_attn.o_proj.weight", H, H)
		add(p+"post_attention_layernorm.weight", H)
		add(p+"mlp.gate_proj.weight", I, H)
		add(p+"mlp.up_proj.weight", I, H)
		add(p+"mlp.down_proj.weight", H, I)
	}
	add("model.norm.weight", H)
	add("lm_head.weight", V, H)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	meta := map[string]string{"weightops.generator": "weightops-fixtures", "weightops.seed": fmt.Sprint(seed), "weightops.model": "tiny-llama"}
	if err := weights.WriteSafetensors(filepath.Join(dir, "model.safetensors"), ts, meta); err != nil {
		return err
	}
	c := struct {
		engine.LlamaConfig
		Architectures []string `json:"architectures"`
		ModelType     string   `json:"model_type"`
		TorchDType    string   `json:"torch_dtype"`
	}{cfg, []string{"LlamaForCausalLM"}, "llama", "bfloat16"}
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(dir, "config.json"), append(b, '\n'), 0o644); err != nil {
		return err
	}
	ids := make([]string, 200)
	for i := range ids {
		ids[i] = fmt.Sprint(r.Intn(V))
	}
	return os.WriteFile(filepath.Join(dir, "tokens.txt"), []byte(strings.Join(ids, " ")+"\n"), 0o644)
}
