// Package engine is a small pure-Go inference engine, so that a merge,
// patch or quantization can be judged by what the model does.
//
// Classifiers: a sequential network described by an arch file (see Arch)
// over a checkpoint with PyTorch state_dict names — linear, conv2d,
// batchnorm, activations, pooling, flatten, dropout, softmax — run in
// float32 on batches spread over all cores, with gonum's BLAS for the
// matrix products (conv2d through im2col). Evaluate measures accuracy,
// per-class accuracy and cross-entropy on a dataset.Set, optionally
// corrupted first. The training package trains the same Model.
//
// Causal language models: the LLaMA family in the Hugging Face layout
// (see Llama): RMSNorm, rotary embeddings, grouped-query attention,
// SwiGLU, with a KV cache for generation, for perplexity and greedy
// decoding.
package engine
