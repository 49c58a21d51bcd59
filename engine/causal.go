package engine

import (
	"fmt"
	"sort"
)

// causalArch is what one transformers class changes in the LLaMA block:
// the engine's one forward pass reads these switches, and each
// architecture's file registers its own.
type causalArch struct {
	// names are the checkpoint's tensor names.
	names LlamaNames
	// configure checks and completes the config (defaults, windows).
	configure func(c *LlamaConfig) error
	// slidingWindow: sliding_window is applied (else a positive one is
	// refused).
	slidingWindow bool
	// qkNorm: an RMSNorm over each head of q and of k, after the
	// projection and before the rotation (Qwen3).
	qkNorm bool
	// normOffset: RMSNorms scale by (1 + w) (Gemma).
	normOffset bool
	// embedScale: embeddings are multiplied by √hidden_size (Gemma).
	embedScale bool
	// gelu: the MLP is GeGLU with the tanh approximation of GELU (Gemma)
	// instead of SwiGLU.
	gelu bool
	// sandwich: norms after attention and around the MLP (Gemma 2):
	// x += norm(attn(norm(x))); x += norm(mlp(norm(x))).
	sandwich bool
	// fused: q, k, v in one qkv_proj and gate, up in one gate_up_proj
	// (Phi-3), split by rows.
	fused bool
}

// causalArchs are the registered architectures, by transformers class.
var causalArchs = map[string]*causalArch{}

func registerCausal(class string, a *causalArch) { causalArchs[class] = a }

// CausalLMArchitectures lists the transformers classes the engine runs.
func CausalLMArchitectures() []string {
	var out []string
	for k := range causalArchs {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// refuseSlidingLayers refuses Qwen's per-layer windows.
func refuseSlidingLayers(c *LlamaConfig) error {
	if c.UseSlidingWindow {
		return fmt.Errorf("use_sliding_window (per-layer windows) is not implemented")
	}
	return nil
}
