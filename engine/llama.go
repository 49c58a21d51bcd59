package engine

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"unsafe"

	"github.com/weightops/weightops/weights"
	"github.com/x448/float16"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/internal/sgemm"
)

// LlamaConfig is the part of a Hugging Face config.json that the LLaMA
// engine reads. Zero values take transformers' LlamaConfig defaults where
// it has one.
type LlamaConfig struct {
	// HiddenSize, IntermediateSize (the MLP's), NumHiddenLayers and
	// NumAttentionHeads are required.
	HiddenSize            int     `json:"hidden_size"`
	IntermediateSize      int     `json:"intermediate_size"`
	NumHiddenLayers       int     `json:"num_hidden_layers"`
	NumAttentionHeads     int     `json:"num_attention_heads"`
	NumKeyValueHeads      int     `json:"num_key_value_heads"`     // default NumAttentionHeads
	HeadDim               int     `json:"head_dim,omitempty"`      // default HiddenSize / NumAttentionHeads
	RMSNormEps            float64 `json:"rms_norm_eps"`            // default 1e-6
	RopeTheta             float64 `json:"rope_theta"`              // default 10000
	VocabSize             int     `json:"vocab_size"`              // required
	TieWordEmbeddings     bool    `json:"tie_word_embeddings"`     // lm_head is the embedding matrix
	MaxPositionEmbeddings int     `json:"max_position_embeddings"` // default 2048
	HiddenAct             string  `json:"hidden_act,omitempty"`    // silu (gelu_pytorch_tanh for Gemma)
	// HiddenActivation is Gemma's name for the MLP activation.
	HiddenActivation string `json:"hidden_activation,omitempty"`
	// RopeScaling is absent/null or one of transformers' rope types:
	// linear, dynamic, llama3, yarn (see RopeScaling).
	RopeScaling *RopeScaling `json:"rope_scaling,omitempty"`
	// PartialRotaryFactor is the share of each head's dimensions that are
	// rotated (the first ones); default 1.
	PartialRotaryFactor float64 `json:"partial_rotary_factor,omitempty"`
	// Architectures names the transformers class (empty: LLaMA); see
	// CausalLMArchitectures.
	Architectures []string `json:"architectures,omitempty"`
	// SlidingWindow: each position attends to the last SlidingWindow
	// positions, itself included (null or 0: all), on every layer
	// (Mistral, Phi-3) or on the sliding layers (Gemma 2).
	SlidingWindow *int `json:"sliding_window,omitempty"`
	// UseSlidingWindow is Qwen2's and Qwen3's switch for their (per-layer)
	// windows, which are not implemented.
	UseSlidingWindow bool `json:"use_sliding_window,omitempty"`
	// Gemma 2: attention scores scale by QueryPreAttnScalar^−½ instead of
	// head_dim^−½; scores and final logits are soft-capped (c·tanh(x/c)).
	QueryPreAttnScalar    float64 `json:"query_pre_attn_scalar,omitempty"`
	AttnLogitSoftcapping  float64 `json:"attn_logit_softcapping,omitempty"`
	FinalLogitSoftcapping float64 `json:"final_logit_softcapping,omitempty"`
	// LayerTypes (Gemma 2) lists sliding_attention or full_attention per
	// layer; absent, even layers slide.
	LayerTypes []string `json:"layer_types,omitempty"`

	arch    *causalArch
	window  int   // every layer's window (0: none)
	windows []int // per layer, when they differ
	rotDim  int   // rotated dimensions of each head
}

// RopeScaling is transformers' rope_scaling: the rope type ("type" in
// older configs) and its parameters.
type RopeScaling struct {
	RopeType                      string  `json:"rope_type"`
	Type                          string  `json:"type"`
	Factor                        float64 `json:"factor"`
	LowFreqFactor                 float64 `json:"low_freq_factor"`
	HighFreqFactor                float64 `json:"high_freq_factor"`
	OriginalMaxPositionEmbeddings int     `json:"original_max_position_embeddings"`
	AttentionFactor               float64 `json:"attention_factor"`
	BetaFast                      float64 `json:"beta_fast"`
	BetaSlow                      float64 `json:"beta_slow"`
}

func (c *LlamaConfig) normalize() error {
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.HeadDim == 0 && c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	if c.RMSNormEps == 0 {
		c.RMSNormEps = 1e-6
	}
	if c.RopeTheta == 0 {
		c.RopeTheta = 10000
	}
	if c.MaxPositionEmbeddings == 0 {
		c.MaxPositionEmbeddings = 2048
	}
	class := "LlamaForCausalLM"
	if len(c.Architectures) > 0 {
		class = c.Architectures[0]
	}
	a, ok := causalArchs[class]
	if !ok {
		return fmt.Errorf("architecture %q: the engine runs %s", class, strings.Join(CausalLMArchitectures(), ", "))
	}
	c.arch = a
	if c.SlidingWindow != nil && *c.SlidingWindow > 0 && !a.slidingWindow {
		return fmt.Errorf("sliding_window %d on %s: this architecture's sliding window is not implemented", *c.SlidingWindow, class)
	}
	if a.configure != nil {
		if err := a.configure(c); err != nil {
			return err
		}
	}
	if a.slidingWindow && c.SlidingWindow != nil && *c.SlidingWindow > 0 && c.windows == nil {
		c.window = *c.SlidingWindow
	}
	const big = 1 << 20
	switch {
	case c.HiddenSize <= 0 || c.HiddenSize > big, c.IntermediateSize <= 0 || c.IntermediateSize > big,
		c.NumHiddenLayers <= 0 || c.NumHiddenLayers > 1024, c.NumAttentionHeads <= 0 || c.NumAttentionHeads > 4096,
		c.VocabSize <= 0 || c.VocabSize > 1<<24, c.MaxPositionEmbeddings < 0 || c.MaxPositionEmbeddings > 1<<24:
		return errors.New("hidden_size, intermediate_size, num_hidden_layers, num_attention_heads and vocab_size must be positive (and sane)")
	case c.NumKeyValueHeads <= 0 || c.NumAttentionHeads%c.NumKeyValueHeads != 0:
		return fmt.Errorf("num_attention_heads %d is not a multiple of num_key_value_heads %d", c.NumAttentionHeads, c.NumKeyValueHeads)
	case c.HeadDim <= 0 || c.HeadDim%2 != 0 || c.HeadDim > big:
		return fmt.Errorf("head dimension %d must be positive and even", c.HeadDim)
	case !a.gelu && c.HiddenAct != "" && c.HiddenAct != "silu":
		return fmt.Errorf("hidden_act %q not supported on %s (silu only)", c.HiddenAct, class)
	case !(c.RMSNormEps > 0) || !(c.RopeTheta > 1):
		return errors.New("rms_norm_eps must be positive and rope_theta above 1")
	case c.PartialRotaryFactor < 0 || c.PartialRotaryFactor > 1:
		return fmt.Errorf("partial_rotary_factor %v must be in (0, 1]", c.PartialRotaryFactor)
	}
	c.rotDim = c.HeadDim
	if c.PartialRotaryFactor > 0 {
		c.rotDim = int(float64(c.HeadDim) * c.PartialRotaryFactor)
	}
	if c.rotDim < 2 || c.rotDim%2 != 0 {
		return fmt.Errorf("partial_rotary_factor %v gives %d rotated dimensions per head; they must be even and at least 2", c.PartialRotaryFactor, c.rotDim)
	}
	return c.RopeScaling.validate(c)
}

// Llama is a causal language model of the LLaMA family (LLaMA 1–3 without
// rope scaling, Mistral with its sliding window, Qwen2 with its q/k/v
// biases) in the
// Hugging Face layout, its weights decoded to float32:
//
//	h = x + o_proj(attention(rope(q_proj(n)), rope(k_proj(n)), v_proj(n)))
//	       with n = RMSNorm(x)·input_layernorm
//	x' = h + down_proj(silu(gate_proj(m)) · up_proj(m))
//	       with m = RMSNorm(h)·post_attention_layernorm
//
// then logits = lm_head(RMSNorm(x)·model.norm). Attention is causal and
// grouped-query: head i reads key/value head i / (heads/kv_heads).
//
// Rotary embeddings follow the Hugging Face convention (rotate_half):
// within each head of dimension d, component i pairs with i + d/2 and is
// rotated by position·θ^(−2i/d), for i < d/2. Meta's original checkpoints
// pair adjacent components (2i, 2i+1) instead; convert_llama_weights_to_hf
// reorders the rows of q_proj and k_proj so the two give the same model
// (see PermuteMetaToHF). Angles are computed in float32 as transformers
// does. Optional q/k/v biases (attention_bias) are applied when present.
type Llama struct {
	// Config is the model's configuration, defaults filled in.
	Config LlamaConfig
	// Embed is model.embed_tokens.weight, [vocab, hidden].
	Embed Weight
	// Layers are the decoder blocks.
	Layers []LlamaLayer
	// Norm is model.norm.weight.
	Norm []float32
	// LMHead is lm_head.weight, [vocab, hidden]; the same values as Embed
	// when the embeddings are tied.
	LMHead Weight
}

// Weight is a [rows, cols] matrix kept as the checkpoint stores it:
// float32 values, or BF16/F16 bits that products widen to float32 only as
// they pack them, so a 16-bit model takes its own size in memory rather
// than twice it. Products give the same bits either way.
type Weight struct {
	f32  []float32
	bits []uint16
	half sgemm.Half
	// packed holds F32 matrices in the kernel's layout, packed once at
	// load (so neither a prompt nor a decoding step packs them again);
	// columns [j0, j1) of it are this weight's rows.
	packed *sgemm.PackedB
	j0, j1 int
}

// pack replaces an F32 matrix of rows × cols by its packed form (same
// memory, no second copy).
func (w *Weight) pack(rows, cols int) {
	if w.f32 == nil {
		return
	}
	p := new(sgemm.PackedB)
	p.Pack(true, cols, rows, w.f32, cols)
	*w = Weight{packed: p, j0: 0, j1: rows}
}

// mulT is y = x·Wᵀ for rows rows of x (cols wide) and W's first n rows;
// y is rows × n.
func (w *Weight) mulT(rows, n, cols int, x, y []float32) {
	switch {
	case w.packed != nil:
		sgemm.GemmPackedCols(rows, x, cols, w.packed, w.j0, w.j0+n, 0, y, n, 0)
	case w.bits != nil:
		sgemm.GemmHalf(rows, n, cols, x, cols, w.bits, cols, w.half, 0, y, n, 0)
	default:
		gemm(false, true, rows, n, cols, x, w.f32, 0, y)
	}
}

// slice is rows [r0, r1) of a matrix cols wide (r0 a multiple of 16 when
// packed).
func (w *Weight) slice(r0, r1, cols int) Weight {
	switch {
	case w.packed != nil:
		return Weight{packed: w.packed, j0: w.j0 + r0, j1: w.j0 + r1}
	case w.bits != nil:
		return Weight{bits: w.bits[r0*cols : r1*cols], half: w.half}
	}
	return Weight{f32: w.f32[r0*cols : r1*cols]}
}

// row writes row r (cols wide) into dst as float32.
func (w *Weight) row(r, cols int, dst []float32) {
	if w.f32 != nil {
		copy(dst, w.f32[r*cols:(r+1)*cols])
		return
	}
	for i, b := range w.bits[r*cols : (r+1)*cols] {
		if w.half == sgemm.BF16 {
			dst[i] = math.Float32frombits(uint32(b) << 16)
		} else {
			dst[i] = float16.Frombits(b).Float32()
		}
	}
}

// LlamaLayer holds one decoder block's weights, PyTorch's [out, in]
// layout.
type LlamaLayer struct {
	// InputNorm and PostAttentionNorm are the RMSNorm weights.
	InputNorm, PostAttentionNorm []float32
	// Q, K, V, O are the attention projections.
	Q, K, V, O Weight
	// QBias, KBias, VBias are optional (nil when absent).
	QBias, KBias, VBias []float32
	// Gate, Up, Down are the SwiGLU MLP's projections.
	Gate, Up, Down Weight
	// QNorm, KNorm (Qwen3) are the per-head RMSNorm weights of q and k;
	// PreFFNorm, PostFFNorm (Gemma 2) the norms around the MLP (and
	// PostAttentionNorm then normalizes the attention output); QKV, GateUp
	// (Phi-3) the fused projections. Nil or empty when absent.
	QNorm, KNorm, PreFFNorm, PostFFNorm []float32
	QKV, GateUp                         Weight
}

// configCarrier is a checkpoint that holds its model's configuration, as a
// Hugging Face config.json (a GGUF file).
type configCarrier interface {
	ConfigJSON() ([]byte, error)
}

// LoadLlama reads a Hugging Face LLaMA-style model: path is a directory
// holding config.json and a checkpoint (safetensors, shard index or
// PyTorch .bin), or a checkpoint file with config.json beside it. Weights
// of any float dtype are decoded to float32; a missing tensor or a shape
// that disagrees with the config is an error naming the tensor.
func LoadLlama(path string) (*Llama, error) {
	dir := path
	if st, err := os.Stat(path); err != nil {
		return nil, err
	} else if !st.IsDir() {
		dir = filepath.Dir(path)
	}
	ck, err := weights.Open(path)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	cfgPath := filepath.Join(dir, "config.json")
	var b []byte
	if cc, ok := ck.(configCarrier); ok {
		// A file that describes its own model (GGUF) is not read with a
		// config that happens to lie beside it.
		cfgPath = ck.Path()
		b, err = cc.ConfigJSON()
	} else {
		b, err = weights.ReadFile(cfgPath, weights.MaxConfigSize, "model config")
	}
	if err != nil {
		return nil, fmt.Errorf("reading the model's config: %w", err)
	}
	var cfg LlamaConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	if err := cfg.normalize(); err != nil {
		return nil, fmt.Errorf("%s: %w", cfgPath, err)
	}
	m, err := NewLlama(cfg, ck)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", ck.Path(), err)
	}
	return m, nil
}

// LlamaNames are the tensor names of a LLaMA-family checkpoint. A reader
// of another layout (GGUF's token_embd, blk.N.attn_q) presents its tensors
// under these names rather than the engine learning each layout.
type LlamaNames struct {
	Embed, Norm, LMHead string
	// Layer is the prefix of block i's tensors, a fmt pattern taking i.
	Layer string
	// The block's tensors, after the prefix; the biases are optional.
	InputNorm, PostAttentionNorm, Q, K, V, O, Gate, Up, Down, QBias, KBias, VBias string
	// Architectures' extra tensors: Qwen3's per-head q/k norms, Gemma 2's
	// norms around the MLP, Phi-3's fused projections (which replace Q, K,
	// V and Gate, Up). Empty when the architecture has none.
	QNorm, KNorm, PreFFNorm, PostFFNorm, QKV, GateUp string
}

// HFLlamaNames are Hugging Face transformers' LlamaForCausalLM names.
var HFLlamaNames = LlamaNames{
	Embed: "model.embed_tokens.weight", Norm: "model.norm.weight", LMHead: "lm_head.weight",
	Layer:     "model.layers.%d.",
	InputNorm: "input_layernorm.weight", PostAttentionNorm: "post_attention_layernorm.weight",
	Q: "self_attn.q_proj.weight", K: "self_attn.k_proj.weight", V: "self_attn.v_proj.weight", O: "self_attn.o_proj.weight",
	Gate: "mlp.gate_proj.weight", Up: "mlp.up_proj.weight", Down: "mlp.down_proj.weight",
	QBias: "self_attn.q_proj.bias", KBias: "self_attn.k_proj.bias", VBias: "self_attn.v_proj.bias",
}

// NewLlama builds a model from a config and a checkpoint with Hugging Face
// tensor names (those of the config's architecture).
func NewLlama(cfg LlamaConfig, ck weights.Checkpoint) (*Llama, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	return NewLlamaNamed(cfg, ck, cfg.arch.names)
}

// NewLlamaNamed builds a model from a config and a checkpoint whose
// tensors have the given names.
func NewLlamaNamed(cfg LlamaConfig, ck weights.Checkpoint, names LlamaNames) (*Llama, error) {
	if err := cfg.normalize(); err != nil {
		return nil, err
	}
	H, I, V, hd := cfg.HiddenSize, cfg.IntermediateSize, cfg.VocabSize, cfg.HeadDim
	qd, kvd := cfg.NumAttentionHeads*hd, cfg.NumKeyValueHeads*hd
	check := func(name string, shape ...int) (weights.TensorInfo, error) {
		info, ok := ck.Info(name)
		if !ok {
			return info, fmt.Errorf("tensor %q not found", name)
		}
		good := len(info.Shape) == len(shape)
		for i := 0; good && i < len(shape); i++ {
			good = info.Shape[i] == int64(shape[i])
		}
		if !good {
			want := make([]int64, len(shape))
			for i, d := range shape {
				want[i] = int64(d)
			}
			return info, fmt.Errorf("tensor %q has shape %s, want %s (from config.json)", name, info.ShapeString(), weights.TensorInfo{Shape: want}.ShapeString())
		}
		if !info.DType.IsFloat() {
			return info, fmt.Errorf("tensor %q has dtype %s, want a float type", name, info.DType)
		}
		return info, nil
	}
	read := func(name string, shape ...int) ([]float32, error) {
		if _, err := check(name, shape...); err != nil {
			return nil, err
		}
		t, err := ck.ReadTensor(name, nil)
		if err != nil {
			return nil, err
		}
		if t.DType == weights.F32 && len(t.Data) > 0 && uintptr(unsafe.Pointer(&t.Data[0]))%4 == 0 {
			return weights.Float32View(t.Data), nil // the bytes read are the values: no copy
		}
		return t.Float32s()
	}
	// Matrices stay 16-bit when the checkpoint has them so.
	readWeight := func(name string, shape ...int) (Weight, error) {
		info, err := check(name, shape...)
		if err != nil {
			return Weight{}, err
		}
		if half, ok := map[weights.DType]sgemm.Half{weights.BF16: sgemm.BF16, weights.F16: sgemm.F16}[info.DType]; ok {
			t, err := ck.ReadTensor(name, nil)
			if err != nil {
				return Weight{}, err
			}
			if t.DType == info.DType && len(t.Data) > 0 && uintptr(unsafe.Pointer(&t.Data[0]))%2 == 0 {
				return Weight{bits: unsafe.Slice((*uint16)(unsafe.Pointer(&t.Data[0])), len(t.Data)/2), half: half}, nil
			}
		}
		f, err := read(name, shape...)
		return Weight{f32: f}, err
	}
	optional := func(name string, n int) ([]float32, error) {
		if _, ok := ck.Info(name); !ok {
			return nil, nil
		}
		return read(name, n)
	}
	m := &Llama{Config: cfg}
	var err error
	if m.Embed, err = readWeight(names.Embed, V, H); err != nil {
		return nil, err
	}
	if m.Norm, err = read(names.Norm, H); err != nil {
		return nil, err
	}
	if _, has := ck.Info(names.LMHead); cfg.TieWordEmbeddings || (!has && cfg.arch.embedScale) {
		m.LMHead = m.Embed // Gemma ties by default (transformers' GemmaConfig)
	} else if m.LMHead, err = readWeight(names.LMHead, V, H); err != nil {
		return nil, fmt.Errorf("%w (set tie_word_embeddings in config.json if lm_head is the embedding)", err)
	} else {
		m.LMHead.pack(V, H)
	}
	for i := 0; i < cfg.NumHiddenLayers; i++ {
		p := fmt.Sprintf(names.Layer, i)
		var l LlamaLayer
		for _, t := range []struct {
			dst  *[]float32
			name string
		}{{&l.InputNorm, names.InputNorm}, {&l.PostAttentionNorm, names.PostAttentionNorm}} {
			if *t.dst, err = read(p+t.name, H); err != nil {
				return nil, err
			}
		}
		mats := []struct {
			dst  *Weight
			name string
			dims []int
		}{
			{&l.O, names.O, []int{H, qd}},
			{&l.Down, names.Down, []int{H, I}},
		}
		if names.QKV != "" {
			mats = append(mats, []struct {
				dst  *Weight
				name string
				dims []int
			}{{&l.QKV, names.QKV, []int{qd + 2*kvd, H}}, {&l.GateUp, names.GateUp, []int{2 * I, H}}}...)
		} else {
			mats = append(mats, []struct {
				dst  *Weight
				name string
				dims []int
			}{{&l.Q, names.Q, []int{qd, H}}, {&l.K, names.K, []int{kvd, H}}, {&l.V, names.V, []int{kvd, H}},
				{&l.Gate, names.Gate, []int{I, H}}, {&l.Up, names.Up, []int{I, H}}}...)
		}
		for _, t := range mats {
			if *t.dst, err = readWeight(p+t.name, t.dims...); err != nil {
				return nil, err
			}
			t.dst.pack(t.dims[0], t.dims[1])
		}
		for _, t := range []struct {
			dst  *[]float32
			name string
			n    int
		}{{&l.QNorm, names.QNorm, hd}, {&l.KNorm, names.KNorm, hd}, {&l.PreFFNorm, names.PreFFNorm, H}, {&l.PostFFNorm, names.PostFFNorm, H}} {
			if t.name == "" {
				continue
			}
			if *t.dst, err = read(p+t.name, t.n); err != nil {
				return nil, err
			}
		}
		for _, t := range []struct {
			dst  *[]float32
			name string
			n    int
		}{{&l.QBias, names.QBias, qd}, {&l.KBias, names.KBias, kvd}, {&l.VBias, names.VBias, kvd}} {
			if *t.dst, err = optional(p+t.name, t.n); err != nil {
				return nil, err
			}
		}
		m.Layers = append(m.Layers, l)
	}
	return m, nil
}

// KVCache holds the keys and values of the positions processed so far,
// per layer, so generation computes each new token against them instead
// of recomputing the prefix.
type KVCache struct {
	k, v [][]float32 // per layer, [positions, kv_heads·head_dim]
	n    int
}

// NewCache returns an empty cache for the model.
func (m *Llama) NewCache() *KVCache {
	return &KVCache{k: make([][]float32, len(m.Layers)), v: make([][]float32, len(m.Layers))}
}

// Len is the number of positions in the cache.
func (c *KVCache) Len() int { return c.n }

// ropeInvFreq returns θ^(−2i/d) for i < d/2, in float32 as transformers
// computes it: 1 / base^(arange(0, d, 2).float() / d).
func ropeInvFreq(theta float64, d int) []float32 {
	f := make([]float32, d/2)
	for i := range f {
		e := float32(2*i) / float32(d)
		f[i] = 1 / float32(math.Pow(theta, float64(e)))
	}
	return f
}

func rmsNorm(dst, x, w []float32, eps float64) {
	var ss float64
	for _, v := range x {
		ss += float64(v) * float64(v)
	}
	r := float32(1 / math.Sqrt(ss/float64(len(x))+eps))
	for i, v := range x {
		dst[i] = w[i] * (v * r)
	}
}

// Forward runs tokens through the model after the positions already in
// cache (a nil cache means a fresh one, discarded) and returns their
// logits, len(tokens) × vocab, row by row. The cache grows by
// len(tokens).
func (m *Llama) Forward(tokens []int, cache *KVCache) ([]float32, error) {
	if cache == nil {
		cache = m.NewCache()
	}
	h, err := m.forward(tokens, cache, true, nil)
	if err != nil {
		return nil, err
	}
	return m.logits(h, len(tokens)), nil
}

// LayerInputs returns, at the last of tokens, the hidden state entering
// each decoder block: the token's embedding for block 0, then each block's
// output (transformers' output_hidden_states[:-1] at the last position).
// mergekit-moe's hidden gate mode routes by them.
func (m *Llama) LayerInputs(tokens []int) ([][]float32, error) {
	H := m.Config.HiddenSize
	out := make([][]float32, 0, len(m.Layers))
	_, err := m.forward(tokens, m.NewCache(), false, func(x []float32) {
		out = append(out, append([]float32(nil), x[len(x)-H:]...))
	})
	return out, err
}

func (m *Llama) checkVocab(tokens []int, start int) error {
	for i, t := range tokens {
		if t < 0 || t >= m.Config.VocabSize {
			return fmt.Errorf("token %d at position %d is outside the vocabulary [0, %d)", t, start+i, m.Config.VocabSize)
		}
	}
	return nil
}

func (m *Llama) checkTokens(tokens []int, start int) error {
	cfg := &m.Config
	if err := m.checkVocab(tokens, start); err != nil {
		return err
	}
	if n := cfg.maxPositions(); start+len(tokens) > n {
		return fmt.Errorf("%d positions exceed the model's %d (max_position_embeddings%s)", start+len(tokens), n, map[bool]string{true: " × the dynamic rope factor"}[n != cfg.MaxPositionEmbeddings])
	}
	return nil
}

// maxPositions is the longest sequence the engine runs: max_position_embeddings,
// or that times the factor with dynamic NTK rope scaling, which exists to
// go past it.
func (c *LlamaConfig) maxPositions() int {
	if c.RopeScaling.kind() == ropeDynamic {
		return int(float64(c.MaxPositionEmbeddings) * max(c.RopeScaling.Factor, 1))
	}
	return c.MaxPositionEmbeddings
}

// forward runs the layers over tokens and returns the final-normed hidden
// states of every token (all) or of the last one; enter, if set, sees the
// hidden states [tokens, hidden] entering each block.
func (m *Llama) forward(tokens []int, cache *KVCache, all bool, enter func(x []float32)) ([]float32, error) {
	cfg := &m.Config
	a := cfg.arch
	T := len(tokens)
	if T == 0 {
		return nil, errors.New("no tokens")
	}
	p0 := cache.n
	if err := m.checkTokens(tokens, p0); err != nil {
		return nil, err
	}
	H, I, hd := cfg.HiddenSize, cfg.IntermediateSize, cfg.HeadDim
	nh, nkv := cfg.NumAttentionHeads, cfg.NumKeyValueHeads
	qd, kvd := nh*hd, nkv*hd
	rot := cfg.rotary(p0 + T)
	x := make([]float32, T*H)
	for t, tok := range tokens {
		m.Embed.row(tok, H, x[t*H:(t+1)*H])
	}
	if a.embedScale {
		// transformers multiplies by √hidden rounded to the activations'
		// dtype (float32 here).
		s := float32(math.Sqrt(float64(H)))
		for i := range x {
			x[i] *= s
		}
	}
	h := make([]float32, T*H)
	q := make([]float32, T*qd)
	att := make([]float32, T*qd)
	o := make([]float32, T*H)
	g := make([]float32, T*I)
	u := make([]float32, T*I)
	var qkv, gu []float32 // fused projections' outputs (Phi-3)
	if a.fused {
		qkv = make([]float32, T*(qd+2*kvd))
		gu = make([]float32, T*2*I)
	}
	// normRows writes norm(src)·w into dst, row by row of width H.
	normRows := func(dst, src, w []float32) {
		parallel.Ranges(T, 8, func(lo, hi int) {
			for t := lo; t < hi; t++ {
				m.rmsNorm(dst[t*H:(t+1)*H], src[t*H:(t+1)*H], w)
			}
		})
	}
	addBias := func(y, b []float32, width int) {
		if b == nil {
			return
		}
		for t := 0; t < T; t++ {
			row := y[t*width : (t+1)*width]
			for j := range row {
				row[j] += b[j]
			}
		}
	}
	opts := attnOpts{scale: 1 / math.Sqrt(float64(hd)), softcap: cfg.AttnLogitSoftcapping}
	if cfg.QueryPreAttnScalar > 0 {
		opts.scale = 1 / math.Sqrt(cfg.QueryPreAttnScalar)
	}
	packs := &attnPacks{} // reused by every layer
	for li := range m.Layers {
		l := &m.Layers[li]
		if enter != nil {
			enter(x)
		}
		normRows(h, x, l.InputNorm)
		// Keys and values go straight into the cache.
		cache.k[li] = slices.Grow(cache.k[li], T*kvd)[:len(cache.k[li])+T*kvd]
		cache.v[li] = slices.Grow(cache.v[li], T*kvd)[:len(cache.v[li])+T*kvd]
		kNew := cache.k[li][p0*kvd:]
		vNew := cache.v[li][p0*kvd:]
		if a.fused {
			w := qd + 2*kvd
			l.QKV.mulT(T, w, H, h, qkv)
			for t := 0; t < T; t++ {
				row := qkv[t*w : (t+1)*w]
				copy(q[t*qd:(t+1)*qd], row[:qd])
				copy(kNew[t*kvd:(t+1)*kvd], row[qd:qd+kvd])
				copy(vNew[t*kvd:(t+1)*kvd], row[qd+kvd:])
			}
		} else {
			l.Q.mulT(T, qd, H, h, q)
			l.K.mulT(T, kvd, H, h, kNew)
			l.V.mulT(T, kvd, H, h, vNew)
		}
		addBias(q, l.QBias, qd)
		addBias(kNew, l.KBias, kvd)
		addBias(vNew, l.VBias, kvd)
		parallel.Ranges(T, 4, func(lo, hi int) {
			for t := lo; t < hi; t++ {
				for hh := 0; hh < nh; hh++ {
					v := q[t*qd+hh*hd : t*qd+(hh+1)*hd]
					if a.qkNorm {
						m.rmsNorm(v, v, l.QNorm)
					}
					rot.apply(v, p0+t)
				}
				for hh := 0; hh < nkv; hh++ {
					v := kNew[t*kvd+hh*hd : t*kvd+(hh+1)*hd]
					if a.qkNorm {
						m.rmsNorm(v, v, l.KNorm)
					}
					rot.apply(v, p0+t)
				}
			}
		})
		opts.window = cfg.window
		if cfg.windows != nil {
			opts.window = cfg.windows[li]
		}
		attention(q, cache.k[li], cache.v[li], att, T, p0, nh, nkv, hd, opts, packs)
		l.O.mulT(T, H, qd, att, o)
		if a.sandwich {
			normRows(o, o, l.PostAttentionNorm)
		}
		for i := range x {
			x[i] += o[i]
		}
		if a.sandwich {
			normRows(h, x, l.PreFFNorm)
		} else {
			normRows(h, x, l.PostAttentionNorm)
		}
		if a.fused {
			l.GateUp.mulT(T, 2*I, H, h, gu)
			for t := 0; t < T; t++ {
				copy(g[t*I:(t+1)*I], gu[t*2*I:t*2*I+I])
				copy(u[t*I:(t+1)*I], gu[t*2*I+I:(t+1)*2*I])
			}
		} else {
			l.Gate.mulT(T, I, H, h, g)
			l.Up.mulT(T, I, H, h, u)
		}
		act := silu
		if a.gelu {
			act = geluTanh
		}
		parallel.Ranges(len(g), 1<<12, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				g[i] = act(g[i]) * u[i]
			}
		})
		l.Down.mulT(T, H, I, g, o)
		if a.sandwich {
			normRows(o, o, l.PostFFNorm)
		}
		for i := range x {
			x[i] += o[i]
		}
	}
	cache.n += T
	rows := T
	if !all {
		copy(x, x[(T-1)*H:])
		rows = 1
	}
	parallel.Ranges(rows, 8, func(lo, hi int) {
		for t := lo; t < hi; t++ {
			m.rmsNorm(h[t*H:(t+1)*H], x[t*H:(t+1)*H], m.Norm)
		}
	})
	return h[:rows*H], nil
}

// silu is x·σ(x), computed in float64.
func silu(x float32) float32 {
	a := float64(x)
	return float32(a / (1 + math.Exp(-a)))
}

// geluTanh is PyTorch's gelu(approximate="tanh"):
// ½x(1 + tanh(√(2/π)(x + 0.044715x³))), computed in float64.
func geluTanh(x float32) float32 {
	a := float64(x)
	return float32(0.5 * a * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(a+0.044715*a*a*a))))
}

// rmsNorm writes RMSNorm(x)·w (Gemma: ·(1 + w)) into dst, which may be x.
func (m *Llama) rmsNorm(dst, x, w []float32) {
	if m.Config.arch.normOffset {
		var ss float64
		for _, v := range x {
			ss += float64(v) * float64(v)
		}
		r := float32(1 / math.Sqrt(ss/float64(len(x))+m.Config.RMSNormEps))
		for i, v := range x {
			dst[i] = (v * r) * (1 + w[i])
		}
		return
	}
	rmsNorm(dst, x, w, m.Config.RMSNormEps)
}

// softcap applies the final logit soft-capping c·tanh(x/c), if any.
func (m *Llama) softcap(logits []float32) {
	c := m.Config.FinalLogitSoftcapping
	if c <= 0 {
		return
	}
	parallel.Ranges(len(logits), 1<<14, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			logits[i] = float32(c * math.Tanh(float64(logits[i])/c))
		}
	})
}

// logits is the LM head on rows final hidden states.
func (m *Llama) logits(h []float32, rows int) []float32 {
	out := make([]float32, rows*m.Config.VocabSize)
	m.LMHead.mulT(rows, m.Config.VocabSize, m.Config.HiddenSize, h[:rows*m.Config.HiddenSize], out)
	m.softcap(out)
	return out
}

// Generate extends the prompt by n tokens, each the most likely next token
// (greedy; ties go to the lowest id), using a KV cache. It returns the new
// tokens only.
func (m *Llama) Generate(prompt []int, n int) ([]int, error) {
	if len(prompt) == 0 {
		return nil, errors.New("generate: empty prompt")
	}
	if n < 0 {
		return nil, errors.New("generate: negative token count")
	}
	if err := m.checkTokens(prompt, 0); err != nil {
		return nil, err
	}
	if max := m.Config.maxPositions(); len(prompt)+n > max {
		return nil, fmt.Errorf("generate: prompt %d + %d new tokens exceed max_position_embeddings %d", len(prompt), n, max)
	}
	cache := m.NewCache()
	out := make([]int, 0, n)
	next := prompt
	for len(out) < n {
		h, err := m.forward(next, cache, false, nil)
		if err != nil {
			return nil, err
		}
		tok := argmax(m.logits(h, 1))
		out = append(out, tok)
		next = []int{tok}
	}
	return out, nil
}

// PerplexityResult is what EvalPerplexity measured.
type PerplexityResult struct {
	// Tokens is the number of tokens predicted (scored).
	Tokens int `json:"tokens"`
	// Windows is the number of independent windows the sequence was cut in.
	Windows int `json:"windows"`
	// NLL is the mean negative log-likelihood per predicted token (nats).
	NLL float64 `json:"nll"`
	// Perplexity is exp(NLL).
	Perplexity float64 `json:"perplexity"`
}

// Perplexity scores a token sequence: every token after the first of its
// window is predicted from those before it. The sequence is cut into
// consecutive windows of at most window tokens (≤ 0: max_position_embeddings),
// each run from an empty cache, so the first token of each window is
// context only. It is PerplexityStride with stride = window.
func (m *Llama) Perplexity(tokens []int, window int) (*PerplexityResult, error) {
	return m.PerplexityStride(tokens, window, 0)
}

// PerplexityStride is the sliding-window evaluation of transformers'
// perplexity guide: windows of at most window tokens start every stride
// tokens (≤ 0: every window tokens); each window scores only the tokens
// no earlier window scored, each predicted from the window's tokens
// before it, so with stride < window every token after the first window
// has at least window − stride tokens of context.
func (m *Llama) PerplexityStride(tokens []int, window, stride int) (*PerplexityResult, error) {
	if window <= 0 || window > m.Config.maxPositions() {
		window = m.Config.maxPositions()
	}
	if stride <= 0 || stride > window {
		stride = window
	}
	if len(tokens) < 2 {
		return nil, errors.New("perplexity needs at least two tokens")
	}
	if window < 2 {
		return nil, errors.New("perplexity needs windows of at least two tokens")
	}
	if err := m.checkVocab(tokens, 0); err != nil {
		return nil, err
	}
	r := &PerplexityResult{}
	var nll float64
	prevEnd := 0
	for begin := 0; begin < len(tokens); begin += stride {
		end := min(begin+window, len(tokens))
		first := max(begin+1, prevEnd) // the first token this window scores
		if end-begin >= 2 && first < end {
			win := tokens[begin:end]
			h, err := m.forward(win, m.NewCache(), true, nil)
			if err != nil {
				return nil, err
			}
			nll += m.scoreRows(h, tokens[begin:end], first-begin)
			r.Tokens += end - first
			r.Windows++
		}
		prevEnd = end
		if end == len(tokens) {
			break
		}
	}
	r.NLL = nll / float64(r.Tokens)
	r.Perplexity = math.Exp(r.NLL)
	return r, nil
}

// scoreRows is −Σ log p(win[j] | win[:j]) for j = from..len(win)−1, from
// the window's final hidden states h. The LM head runs over slices of the
// vocabulary against all rows at once, each row's log-sum-exp updated
// slice by slice, so the head is read once per window and only rows ×
// slice logits are ever in memory, never rows × vocabulary.
func (m *Llama) scoreRows(h []float32, win []int, from int) float64 {
	const slice = 4096
	H, V := m.Config.HiddenSize, m.Config.VocabSize
	n := len(win) - from // predictions: row r predicts win[from+r]
	t0 := from - 1
	rows := h[t0*H : (t0+n)*H]
	mx, sum, target := make([]float64, n), make([]float64, n), make([]float64, n)
	for i := range mx {
		mx[i] = math.Inf(-1)
	}
	logits := make([]float32, n*min(slice, V))
	for v0 := 0; v0 < V; v0 += slice {
		w := min(slice, V-v0)
		lg := logits[:n*w]
		head := m.LMHead.slice(v0, v0+w, H)
		head.mulT(n, w, H, rows, lg)
		m.softcap(lg)
		parallel.Ranges(n, 16, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				row := lg[r*w : (r+1)*w]
				cm := mx[r]
				for _, x := range row {
					if float64(x) > cm {
						cm = float64(x)
					}
				}
				s := sum[r] * math.Exp(mx[r]-cm) // 0 on the first slice
				for _, x := range row {
					s += math.Exp(float64(x) - cm)
				}
				mx[r], sum[r] = cm, s
				if c := win[from+r] - v0; c >= 0 && c < w {
					target[r] = float64(row[c])
				}
			}
		})
	}
	var nll float64
	for r := range n {
		nll -= target[r] - mx[r] - math.Log(sum[r]) // in order: independent of the split
	}
	return nll
}

// ParseTokenIDs reads token ids separated by whitespace and/or commas.
func ParseTokenIDs(s string) ([]int, error) {
	f := strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' || r == '\n' || r == '\t' || r == '\r' })
	out := make([]int, 0, len(f))
	for _, w := range f {
		v, err := strconv.Atoi(w)
		if err != nil || v < 0 {
			return nil, fmt.Errorf("%q is not a token id (a non-negative integer)", w)
		}
		out = append(out, v)
	}
	return out, nil
}

// PermuteMetaToHF reorders the rows of a q_proj or k_proj weight from
// Meta's original rotary layout (pairs of adjacent components) to the
// Hugging Face layout (component i paired with i + d/2 within each head),
// as convert_llama_weights_to_hf.py does:
//
//	w.view(n_heads, d/2, 2, in).transpose(1, 2).reshape(n_heads·d, in)
//
// where d is the head dimension (rows / nHeads). Use nHeads =
// num_attention_heads for q_proj and num_key_value_heads for k_proj. The
// tensor may be of any dtype (rows are moved as bytes); a 1-D tensor (a
// bias) is permuted as a column.
func PermuteMetaToHF(w weights.Tensor, nHeads int) (weights.Tensor, error) {
	return permuteHeads(w, nHeads, false)
}

// PermuteHFToMeta is PermuteMetaToHF's inverse.
func PermuteHFToMeta(w weights.Tensor, nHeads int) (weights.Tensor, error) {
	return permuteHeads(w, nHeads, true)
}

func permuteHeads(w weights.Tensor, nHeads int, inverse bool) (weights.Tensor, error) {
	if len(w.Shape) != 1 && len(w.Shape) != 2 {
		return weights.Tensor{}, fmt.Errorf("permute %q: want a 1-D or 2-D tensor, got shape %s", w.Name, w.ShapeString())
	}
	rows := int(w.Shape[0])
	if nHeads <= 0 || rows%nHeads != 0 || (rows/nHeads)%2 != 0 {
		return weights.Tensor{}, fmt.Errorf("permute %q: %d rows do not split into %d heads of even size", w.Name, rows, nHeads)
	}
	n, err := w.ByteSize()
	if err != nil || n != int64(len(w.Data)) {
		return weights.Tensor{}, fmt.Errorf("permute %q: %d bytes for shape %s", w.Name, len(w.Data), w.ShapeString())
	}
	rowBytes := len(w.Data) / rows
	d := rows / nHeads
	out := weights.Tensor{TensorInfo: w.TensorInfo, Data: make([]byte, len(w.Data))}
	out.Shape = append([]int64(nil), w.Shape...)
	for h := 0; h < nHeads; h++ {
		for i := 0; i < d/2; i++ {
			for j := 0; j < 2; j++ {
				meta := h*d + 2*i + j   // [h, i, j] in view(n_heads, d/2, 2)
				hf := h*d + j*(d/2) + i // [h, j, i] after transpose(1, 2)
				src, dst := meta, hf
				if inverse {
					src, dst = hf, meta
				}
				copy(out.Data[dst*rowBytes:(dst+1)*rowBytes], w.Data[src*rowBytes:(src+1)*rowBytes])
			}
		}
	}
	return out, nil
}

// LlamaArchitectures are the config.json "architectures" (and model_type)
// values whose checkpoints have the LLaMA layout this package reads.
var LlamaArchitectures = map[string]bool{
	"LlamaForCausalLM": true, "MistralForCausalLM": true, "Qwen2ForCausalLM": true,
	"llama": true, "mistral": true, "qwen2": true,
}

// LlamaShapes are the tensors a checkpoint with this config must hold, and
// those it may hold (q/k/v biases, lm_head when tied), with their shapes,
// under the given names. It reads only the sizes (a config the engine
// cannot run, with rope scaling say, still has a layout).
func LlamaShapes(c LlamaConfig, names LlamaNames) (required, optional map[string][]int64, err error) {
	if c.NumKeyValueHeads == 0 {
		c.NumKeyValueHeads = c.NumAttentionHeads
	}
	if c.HeadDim == 0 && c.NumAttentionHeads > 0 {
		c.HeadDim = c.HiddenSize / c.NumAttentionHeads
	}
	H, I, V, L := int64(c.HiddenSize), int64(c.IntermediateSize), int64(c.VocabSize), c.NumHiddenLayers
	if H <= 0 || I <= 0 || V <= 0 || L <= 0 || L > 1<<16 || c.NumAttentionHeads <= 0 || c.HeadDim <= 0 {
		return nil, nil, errors.New("hidden_size, intermediate_size, vocab_size, num_hidden_layers and num_attention_heads must be positive")
	}
	qd, kvd := int64(c.NumAttentionHeads*c.HeadDim), int64(c.NumKeyValueHeads*c.HeadDim)
	required = map[string][]int64{names.Embed: {V, H}, names.Norm: {H}}
	optional = map[string][]int64{}
	if c.TieWordEmbeddings {
		optional[names.LMHead] = []int64{V, H}
	} else {
		required[names.LMHead] = []int64{V, H}
	}
	for i := 0; i < L; i++ {
		p := fmt.Sprintf(names.Layer, i)
		for n, s := range map[string][]int64{
			names.InputNorm: {H}, names.PostAttentionNorm: {H},
			names.Q: {qd, H}, names.K: {kvd, H}, names.V: {kvd, H}, names.O: {H, qd},
			names.Gate: {I, H}, names.Up: {I, H}, names.Down: {H, I},
		} {
			required[p+n] = s
		}
		optional[p+names.QBias] = []int64{qd}
		optional[p+names.KBias] = []int64{kvd}
		optional[p+names.VBias] = []int64{kvd}
	}
	return required, optional, nil
}
