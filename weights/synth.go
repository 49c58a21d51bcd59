package weights

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"path/filepath"
	"strings"

	"github.com/weightops/weightops/internal/parallel"
)

// SynthOptions describe a synthetic LLaMA-shaped checkpoint for benchmarks
// and pipeline tests: real tensor names and shapes, seeded N(0, 0.02)
// weights, ones for norms.
type SynthOptions struct {
	// Bytes is the approximate total size; layers are added until reached.
	Bytes int64
	// DType of every tensor (a floating dtype; default BF16).
	DType DType
	// Seed makes the content reproducible; tensors draw from independent
	// streams, so the output is the same with any number of workers.
	Seed uint64
	// Hidden is the model width (default 1024); the MLP width is 8/3 of it
	// rounded up to a multiple of 256.
	Hidden int
	// Vocab is the vocabulary size (default 32000).
	Vocab int
	// TieEmbeddings leaves out lm_head.weight (the embedding matrix is the
	// output head, as in Gemma or Llama 3.2 1B): with a large vocabulary,
	// one tensor is then a large part of the model.
	TieEmbeddings bool
	// ShardSize > 0 writes a sharded directory.
	ShardSize int64
	// Delta > 0 adds Delta·N(0, 1) noise drawn from DeltaSeed to every
	// weight (not the norms): a "fine-tune" of the model of Seed, whose
	// task vector is small, as a real one is.
	Delta     float64
	DeltaSeed uint64
	// Shared > 0 adds Shared·N(0, 1) noise drawn from the model's Seed
	// alone: the part of their task vectors fine-tunes of one base share
	// (two with Shared = Delta have cosine ½).
	Shared float64
	// Workers is how many tensors are generated at once (0: min(cores, 2)).
	Workers int
	// Progress, if set, receives the bytes of each tensor written.
	Progress func(int64)
}

// SynthInfos returns the tensors of a synthetic model with the given
// options, without data.
func SynthInfos(o SynthOptions) []TensorInfo {
	h := int64(o.Hidden)
	if h <= 0 {
		h = 1024
	}
	dt := o.DType
	if !dt.IsFloat() {
		dt = BF16
	}
	inter := (8*h/3 + 255) / 256 * 256
	vocab := int64(o.Vocab)
	if vocab <= 0 {
		vocab = 32000
	}
	es := int64(dt.Size())
	infos := []TensorInfo{{"model.embed_tokens.weight", dt, []int64{vocab, h}}}
	heads := int64(2) // embeddings and lm_head
	if o.TieEmbeddings {
		heads = 1
	}
	size := vocab * h * es * heads
	perLayer := (4*h*h + 3*h*inter + 2*h) * es
	for l := 0; l == 0 || size+perLayer <= o.Bytes; l++ {
		p := fmt.Sprintf("model.layers.%d.", l)
		infos = append(infos,
			TensorInfo{p + "self_attn.q_proj.weight", dt, []int64{h, h}},
			TensorInfo{p + "self_attn.k_proj.weight", dt, []int64{h, h}},
			TensorInfo{p + "self_attn.v_proj.weight", dt, []int64{h, h}},
			TensorInfo{p + "self_attn.o_proj.weight", dt, []int64{h, h}},
			TensorInfo{p + "mlp.gate_proj.weight", dt, []int64{inter, h}},
			TensorInfo{p + "mlp.up_proj.weight", dt, []int64{inter, h}},
			TensorInfo{p + "mlp.down_proj.weight", dt, []int64{h, inter}},
			TensorInfo{p + "input_layernorm.weight", dt, []int64{h}},
			TensorInfo{p + "post_attention_layernorm.weight", dt, []int64{h}},
		)
		size += perLayer
	}
	infos = append(infos, TensorInfo{"model.norm.weight", dt, []int64{h}})
	if !o.TieEmbeddings {
		infos = append(infos, TensorInfo{"lm_head.weight", dt, []int64{vocab, h}})
	}
	SortNatural(infos)
	return infos
}

// SynthConfig is the Hugging Face config.json of a synthetic model: a
// LlamaForCausalLM whose sizes match SynthInfos (head dimension 64), so
// transformers and weightops eval-lm load it.
func SynthConfig(o SynthOptions) map[string]any {
	infos := SynthInfos(o)
	var h, inter, vocab int64
	layers := 0
	for _, t := range infos {
		switch {
		case t.Name == "model.embed_tokens.weight":
			vocab, h = t.Shape[0], t.Shape[1]
		case strings.HasSuffix(t.Name, "mlp.up_proj.weight"):
			inter = t.Shape[0]
			layers++
		}
	}
	heads := max(1, h/64)
	torch := infos[0].DType.TorchName()
	return map[string]any{
		"architectures": []string{"LlamaForCausalLM"}, "model_type": "llama",
		"hidden_size": h, "intermediate_size": inter, "num_hidden_layers": layers,
		"num_attention_heads": heads, "num_key_value_heads": heads, "vocab_size": vocab,
		"rms_norm_eps": 1e-5, "rope_theta": 10000.0, "max_position_embeddings": 2048,
		"hidden_act": "silu", "tie_word_embeddings": o.TieEmbeddings, "torch_dtype": torch,
		"bos_token_id": 1, "eos_token_id": 2,
	}
}

// Synthesize writes a synthetic checkpoint to out (a .safetensors path, or
// a directory) and returns the files written; a directory also gets the
// model's config.json.
func Synthesize(ctx context.Context, out string, o SynthOptions) ([]string, error) {
	infos := SynthInfos(o)
	md := map[string]string{"format": "pt", "weightops.synthetic": fmt.Sprintf("seed=%d", o.Seed)}
	w, files, err := CreateOutput(out, infos, md, o.ShardSize)
	if err != nil {
		return nil, err
	}
	err = parallel.Items(ctx, len(infos), o.Workers, func(_, i int) error {
		t := infos[i]
		n, _ := t.NumElements()
		vals := make([]float32, n)
		if len(t.Shape) == 1 {
			for i := range vals {
				vals[i] = 1
			}
		} else {
			rng := rand.New(rand.NewPCG(o.Seed, uint64(i)))
			for i := range vals {
				vals[i] = float32(rng.NormFloat64() * 0.02)
			}
			if o.Delta > 0 || o.Shared > 0 {
				drng := rand.New(rand.NewPCG(o.DeltaSeed^0x5eed, uint64(i)))
				srng := rand.New(rand.NewPCG(o.Seed^0x5a5ed, uint64(i)))
				for i := range vals {
					vals[i] = float32(float64(vals[i]) + o.Delta*drng.NormFloat64() + o.Shared*srng.NormFloat64())
				}
			}
		}
		data := make([]byte, n*int64(t.DType.Size()))
		if err := EncodeFloat32(t.DType, vals, data); err != nil {
			return err
		}
		if err := w.WriteTensor(t.Name, data); err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress(int64(len(data)))
		}
		return nil
	})
	if err != nil {
		w.Abort()
		return nil, err
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	if !IsSafetensorsPath(out) || o.ShardSize > 0 {
		b, _ := json.MarshalIndent(SynthConfig(o), "", "  ")
		p := filepath.Join(out, "config.json")
		if err := WriteFileAtomic(p, append(b, '\n')); err != nil {
			return nil, err
		}
		files = append(files, p)
	}
	return files, nil
}
