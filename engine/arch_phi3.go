package engine

// Phi-3: the LLaMA block with q, k and v fused in self_attn.qkv_proj
// (rows: q, then k, then v) and gate and up in mlp.gate_up_proj (gate
// rows first), and a sliding window on every layer. Its long-context
// variants' rope_scaling (longrope) is refused by the rope check.
func init() {
	names := HFLlamaNames
	names.QKV, names.GateUp = "self_attn.qkv_proj.weight", "mlp.gate_up_proj.weight"
	registerCausal("Phi3ForCausalLM", &causalArch{names: names, fused: true, slidingWindow: true})
}
