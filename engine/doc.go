// Package engine is a small pure-Go inference engine, so that a merge,
// patch or quantization can be judged by what the model does.
//
// Classifiers: a network described by an arch file (see Arch) over a
// checkpoint with PyTorch state_dict names — linear, conv2d (grouped,
// dilated), batchnorm, activations, pooling (ceil mode, adaptive), flatten,
// dropout, softmax, and residual and concat blocks — run in float32 on
// batches spread over all cores, with internal/sgemm for the matrix
// products (conv2d through im2col). BuiltinArchs ships torchvision's
// ResNets, VGG-16-BN and MobileNetV2 and the CIFAR WideResNets. Evaluate measures accuracy,
// per-class accuracy and cross-entropy on a dataset.Set, optionally
// corrupted first. The training package trains the same Model.
//
// Causal language models: the LLaMA family in the Hugging Face layout
// (see Llama): RMSNorm, rotary embeddings, grouped-query attention,
// SwiGLU, with a KV cache for generation, for perplexity and greedy
// decoding.
package engine
