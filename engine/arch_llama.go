package engine

// LLaMA 1–3 (with rope_scaling, e.g. LLaMA 3.1's llama3), Mistral with its
// sliding window, and Qwen2, whose q/k/v biases the loader finds by name.
func init() {
	registerCausal("LlamaForCausalLM", &causalArch{names: HFLlamaNames})
	registerCausal("MistralForCausalLM", &causalArch{names: HFLlamaNames, slidingWindow: true})
	registerCausal("Qwen2ForCausalLM", &causalArch{names: HFLlamaNames, configure: refuseSlidingLayers})
}
