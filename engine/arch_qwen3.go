package engine

// Qwen3: the LLaMA block with an RMSNorm over each head of q and k
// (self_attn.q_norm, self_attn.k_norm, head_dim wide) before the rotation.
func init() {
	names := HFLlamaNames
	names.QNorm, names.KNorm = "self_attn.q_norm.weight", "self_attn.k_norm.weight"
	registerCausal("Qwen3ForCausalLM", &causalArch{names: names, qkNorm: true, configure: refuseSlidingLayers})
}
