package engine

import "fmt"

// Gemma: embeddings scaled by √hidden_size, RMSNorms that scale by
// (1 + w), a GeGLU MLP (tanh GELU), tied embeddings. Gemma 2 adds norms
// after attention and around the MLP, scores scaled by
// query_pre_attn_scalar^−½ and soft-capped, soft-capped final logits, and
// a sliding window on every other layer (layer_types, else the even
// layers).
func init() {
	registerCausal("GemmaForCausalLM", &causalArch{names: HFLlamaNames, normOffset: true, embedScale: true, gelu: true, configure: configureGemma})
	names := HFLlamaNames
	names.PreFFNorm, names.PostFFNorm = "pre_feedforward_layernorm.weight", "post_feedforward_layernorm.weight"
	registerCausal("Gemma2ForCausalLM", &causalArch{names: names, normOffset: true, embedScale: true, gelu: true, sandwich: true, slidingWindow: true, configure: configureGemma2})
}

func configureGemma(c *LlamaConfig) error {
	for _, act := range []string{c.HiddenActivation, c.HiddenAct} {
		if act != "" && act != "gelu_pytorch_tanh" && act != "gelu" {
			return fmt.Errorf("activation %q not supported on Gemma (gelu_pytorch_tanh)", act)
		}
	}
	return nil
}

func configureGemma2(c *LlamaConfig) error {
	if err := configureGemma(c); err != nil {
		return err
	}
	if c.SlidingWindow == nil || *c.SlidingWindow <= 0 {
		return nil
	}
	c.windows = make([]int, c.NumHiddenLayers)
	for i := range c.windows {
		sliding := i%2 == 0
		if c.LayerTypes != nil {
			if len(c.LayerTypes) != c.NumHiddenLayers {
				return fmt.Errorf("layer_types lists %d layers, num_hidden_layers is %d", len(c.LayerTypes), c.NumHiddenLayers)
			}
			switch c.LayerTypes[i] {
			case "sliding_attention":
				sliding = true
			case "full_attention":
				sliding = false
			default:
				return fmt.Errorf("layer_types[%d] %q: sliding_attention or full_attention", i, c.LayerTypes[i])
			}
		}
		if sliding {
			c.windows[i] = *c.SlidingWindow
		}
	}
	return nil
}
