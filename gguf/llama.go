package gguf

import (
	"context"
	"encoding/json"
	"fmt"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/weights"
)

// hfToGGUF maps the Hugging Face names of the LLaMA family (blocks after
// the "model.layers.N." prefix) to llama.cpp's.
var hfToGGUF = map[string]string{
	"model.embed_tokens.weight": "token_embd.weight",
	"model.norm.weight":         "output_norm.weight",
	"lm_head.weight":            "output.weight",
}

var blockToGGUF = map[string]string{
	"input_layernorm.weight":          "attn_norm.weight",
	"self_attn.q_proj.weight":         "attn_q.weight",
	"self_attn.k_proj.weight":         "attn_k.weight",
	"self_attn.v_proj.weight":         "attn_v.weight",
	"self_attn.o_proj.weight":         "attn_output.weight",
	"self_attn.q_proj.bias":           "attn_q.bias",
	"self_attn.k_proj.bias":           "attn_k.bias",
	"self_attn.v_proj.bias":           "attn_v.bias",
	"post_attention_layernorm.weight": "ffn_norm.weight",
	"mlp.gate_proj.weight":            "ffn_gate.weight",
	"mlp.up_proj.weight":              "ffn_up.weight",
	"mlp.down_proj.weight":            "ffn_down.weight",
}

var hfBlock = regexp.MustCompile(`^model\.layers\.(\d+)\.(.+)$`)
var ggufBlock = regexp.MustCompile(`^blk\.(\d+)\.(.+)$`)

// GGUFName is llama.cpp's name of a Hugging Face LLaMA-family tensor
// ("" for one it does not know).
func GGUFName(hf string) string {
	if n, ok := hfToGGUF[hf]; ok {
		return n
	}
	if m := hfBlock.FindStringSubmatch(hf); m != nil {
		if n, ok := blockToGGUF[m[2]]; ok {
			return "blk." + m[1] + "." + n
		}
	}
	return ""
}

// HFName is the Hugging Face name of a llama.cpp tensor (the name itself
// for one it does not know).
func HFName(g string) string {
	for hf, n := range hfToGGUF {
		if n == g {
			return hf
		}
	}
	if m := ggufBlock.FindStringSubmatch(g); m != nil {
		for hf, n := range blockToGGUF {
			if n == m[2] {
				return "model.layers." + m[1] + "." + hf
			}
		}
	}
	return g
}

// hfConfig is the part of config.json a LLaMA-family GGUF needs.
type hfConfig struct {
	Architectures    []string `json:"architectures"`
	HiddenSize       int      `json:"hidden_size"`
	Intermediate     int      `json:"intermediate_size"`
	Layers           int      `json:"num_hidden_layers"`
	Heads            int      `json:"num_attention_heads"`
	KVHeads          int      `json:"num_key_value_heads"`
	HeadDim          int      `json:"head_dim"`
	RMSNormEps       float64  `json:"rms_norm_eps"`
	RopeTheta        float64  `json:"rope_theta"`
	MaxPositions     int      `json:"max_position_embeddings"`
	VocabSize        int      `json:"vocab_size"`
	TieWordEmbedding bool     `json:"tie_word_embeddings"`
	BOS              *int     `json:"bos_token_id"`
	EOS              any      `json:"eos_token_id"`
}

// archOf is llama.cpp's architecture for a transformers class; permute
// says whether q and k rows go to the Meta rotary layout (llama.cpp's
// llama rope is the interleaved one; qwen2 uses the NeoX layout as is).
func archOf(class string) (arch string, permute bool, err error) {
	switch class {
	case "LlamaForCausalLM", "MistralForCausalLM":
		return "llama", true, nil
	case "Qwen2ForCausalLM":
		return "qwen2", false, nil
	}
	return "", false, fmt.Errorf("architecture %q: GGUF output is built for LlamaForCausalLM, MistralForCausalLM and Qwen2ForCausalLM", class)
}

// fileType is llama.cpp's llama_ftype for a file of mostly type t.
func fileType(t Type) uint32 {
	return map[Type]uint32{F32: 0, F16: 1, Q4_0: 2, Q4_1: 3, Q8_0: 7, Q5_0: 8, Q5_1: 9, Q4_K: 15, Q6_K: 18, BF16: 32}[t]
}

// ConvertOptions control Convert.
type ConvertOptions struct {
	// Type is the type of the 2-D tensors; norms and biases stay F32.
	Type Type
	// NoVocab writes no tokenizer (tokenizer.ggml.model "no_vocab").
	NoVocab bool
	// Name is general.name (default: the model directory's name).
	Name string
	// Warn receives one line per tensor written in another type than Type
	// and why.
	Warn func(string)
}

// Convert writes the checkpoint ck (whose config.json and tokenizer are in
// dir) as a GGUF file at out for llama.cpp: llama.cpp's names, dims in
// ggml order, q and k rows in the Meta rotary layout for llama, 2-D
// tensors in o.Type (F16 when a row is not whole blocks, as llama.cpp's
// tools fall back) and 1-D ones in F32, the metadata llama.cpp requires
// and the tokenizer. It streams one tensor at a time into a temp file
// renamed into place. It returns the tensors written in another type than
// o.Type.
func Convert(ctx context.Context, ck weights.Checkpoint, dir, out string, o ConvertOptions) ([]string, error) {
	// A GGUF source (requantizing) carries its config and vocabulary in
	// its own metadata.
	src, fromGGUF := ck.(*Checkpoint)
	var cfgData []byte
	var err error
	if fromGGUF {
		cfgData, err = src.ConfigJSON()
	} else if cfgData, err = weights.ReadFile(filepath.Join(dir, "config.json"), weights.MaxConfigSize, "model config"); err != nil {
		err = fmt.Errorf("GGUF output needs the model's config.json: %w", err)
	}
	if err != nil {
		return nil, err
	}
	var cfg hfConfig
	if err := json.Unmarshal(cfgData, &cfg); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "config.json"), err)
	}
	if len(cfg.Architectures) == 0 {
		return nil, fmt.Errorf("%s: no architectures", filepath.Join(dir, "config.json"))
	}
	arch, permute, err := archOf(cfg.Architectures[0])
	if err != nil {
		return nil, err
	}
	if cfg.KVHeads == 0 {
		cfg.KVHeads = cfg.Heads
	}
	if cfg.Heads <= 0 || cfg.HiddenSize <= 0 || cfg.Layers <= 0 {
		return nil, fmt.Errorf("%s: needs hidden_size, num_hidden_layers and num_attention_heads", filepath.Join(dir, "config.json"))
	}
	if cfg.HeadDim == 0 {
		cfg.HeadDim = cfg.HiddenSize / cfg.Heads
	}
	if cfg.RopeTheta == 0 {
		cfg.RopeTheta = 10000
	}
	if cfg.RMSNormEps == 0 {
		cfg.RMSNormEps = 1e-6
	}
	if !o.Type.CanQuantize() {
		return nil, fmt.Errorf("weightops writes GGUF tensors as F32, F16, BF16, Q8_0, Q4_0, Q4_1, Q5_0, Q5_1, Q4_K or Q6_K, not %s", o.Type)
	}
	name := o.Name
	if name == "" && fromGGUF {
		name = src.File.String("general.name")
	}
	if name == "" {
		name = filepath.Base(filepath.Clean(dir))
	}
	h := &Header{Alignment: DefaultAlignment}
	h.Add("general.architecture", arch)
	h.Add("general.name", name)
	h.Add("general.alignment", uint32(DefaultAlignment))
	p := arch + "."
	h.Add(p+"context_length", uint32(cfg.MaxPositions))
	h.Add(p+"embedding_length", uint32(cfg.HiddenSize))
	h.Add(p+"block_count", uint32(cfg.Layers))
	h.Add(p+"feed_forward_length", uint32(cfg.Intermediate))
	h.Add(p+"attention.head_count", uint32(cfg.Heads))
	h.Add(p+"attention.head_count_kv", uint32(cfg.KVHeads))
	h.Add(p+"attention.layer_norm_rms_epsilon", float32(cfg.RMSNormEps))
	h.Add(p+"rope.dimension_count", uint32(cfg.HeadDim))
	h.Add(p+"rope.freq_base", float32(cfg.RopeTheta))
	h.Add(p+"vocab_size", uint32(cfg.VocabSize))
	// weightops' provenance (the recipe, the inputs' hashes, …) goes
	// along; the undo records of a patched checkpoint do not: patch
	// remove restores safetensors only.
	md := ck.Metadata()
	keys := make([]string, 0, len(md))
	for k := range md {
		if strings.HasPrefix(k, "weightops.") && !strings.HasPrefix(k, "weightops.undo") {
			keys = append(keys, k)
		}
	}
	sort.Strings(keys)
	for _, k := range keys {
		h.Add(k, md[k])
	}
	if o.NoVocab {
		h.Add("tokenizer.ggml.model", "no_vocab")
	} else if fromGGUF {
		if err := copyVocab(h, src); err != nil {
			return nil, err
		}
		var quantized []string
		for _, t := range src.File.Tensors {
			if q := t.Type.String(); t.Type != F32 && t.Type != F16 && t.Type != BF16 && !slices.Contains(quantized, q) {
				quantized = append(quantized, q)
			}
		}
		if len(quantized) > 0 && o.Warn != nil {
			sort.Strings(quantized)
			o.Warn(fmt.Sprintf("%s holds quantized tensors (%s): they are requantized from their dequantized values, which loses more than quantizing the original weights (llama-quantize needs --allow-requantize for this)", src.Path(), strings.Join(quantized, ", ")))
		}
	} else if err := addVocab(h, dir, cfg); err != nil {
		return nil, err
	}
	// Last, in the order llama-quantize leaves them (it removes and
	// re-adds both): quantizing our F32 file with llama-quantize --pure
	// then gives our own quantized file byte for byte.
	h.Add("general.quantization_version", uint32(2))
	h.Add("general.file_type", fileType(o.Type))
	type plan struct {
		src     weights.TensorInfo
		heads   int // rows to permute into this many heads (0: none)
		rows    int
		rowLen  int
		outType Type
	}
	var plans []plan
	var fellBack []string
	for _, t := range ck.Tensors() {
		if t.Name == "lm_head.weight" && cfg.TieWordEmbedding {
			continue // llama.cpp uses token_embd when output is absent
		}
		g := GGUFName(t.Name)
		if g == "" {
			return nil, &weights.TensorError{File: ck.Path(), Tensor: t.Name, Err: fmt.Errorf("no llama.cpp name for this tensor of %s", cfg.Architectures[0])}
		}
		if !t.DType.IsFloat() || t.DType.IsBlock() {
			return nil, &weights.TensorError{File: ck.Path(), Tensor: t.Name, Err: fmt.Errorf("%s is not a float tensor to convert", t.DType)}
		}
		n, err := t.NumElements()
		if err != nil {
			return nil, &weights.TensorError{File: ck.Path(), Tensor: t.Name, Err: err}
		}
		pl := plan{src: t, rows: 1, rowLen: int(n), outType: F32}
		if len(t.Shape) == 2 {
			pl.rows, pl.rowLen = int(t.Shape[0]), int(t.Shape[1])
			pl.outType = o.Type
			if pl.rowLen%o.Type.BlockSize() != 0 {
				pl.outType = fallback(o.Type, pl.rowLen)
				fellBack = append(fellBack, fmt.Sprintf("%s: rows of %d are not whole %s blocks of %d; written as %s", t.Name, pl.rowLen, o.Type, o.Type.BlockSize(), pl.outType))
			}
		} else if len(t.Shape) > 2 {
			return nil, &weights.TensorError{File: ck.Path(), Tensor: t.Name, Err: fmt.Errorf("%d-D tensor", len(t.Shape))}
		}
		if permute && strings.HasSuffix(t.Name, "self_attn.q_proj.weight") {
			pl.heads = cfg.Heads
		}
		if permute && strings.HasSuffix(t.Name, "self_attn.k_proj.weight") {
			pl.heads = cfg.KVHeads
		}
		if pl.heads > 0 && (pl.rows%pl.heads != 0 || (pl.rows/pl.heads)%2 != 0) {
			return nil, &weights.TensorError{File: ck.Path(), Tensor: t.Name, Err: fmt.Errorf("%d rows do not split into %d heads of even size", pl.rows, pl.heads)}
		}
		dims := make([]uint64, len(t.Shape))
		for i, d := range t.Shape {
			dims[len(t.Shape)-1-i] = uint64(d)
		}
		if len(g) > 63 {
			return nil, fmt.Errorf("tensor name %q is longer than GGUF's 63 bytes", g)
		}
		h.Tensors = append(h.Tensors, TensorInfo{Name: g, Dims: dims, Type: pl.outType})
		plans = append(plans, pl)
	}
	// llama.cpp's order (llama-quantize writes its output so): tensors
	// outside blocks first, then block by block, by name within each.
	order := make([]int, len(plans))
	for i := range order {
		order[i] = i
	}
	sort.SliceStable(order, func(a, b int) bool {
		return llamaOrderLess(h.Tensors[order[a]].Name, h.Tensors[order[b]].Name)
	})
	sortedT, sortedP := make([]TensorInfo, len(order)), make([]plan, len(order))
	for i, j := range order {
		sortedT[i], sortedP[i] = h.Tensors[j], plans[j]
	}
	h.Tensors, plans = sortedT, sortedP
	h.Layout()
	f, err := weights.CreateTemp(out)
	if err != nil {
		return nil, err
	}
	ahead := weights.StartSyncAhead(f)
	fail := func(err error) ([]string, error) {
		ahead.Stop()
		weights.DiscardTemp(f)
		return nil, err
	}
	if _, err := h.Write(f); err != nil {
		return fail(err)
	}
	var buf, q []byte
	var vals []float32
	var pos uint64
	for i, pl := range plans {
		if err := ctx.Err(); err != nil {
			return fail(err)
		}
		t, err := ck.ReadTensor(pl.src.Name, buf)
		if err != nil {
			return fail(err)
		}
		buf = t.Data
		n := pl.rows * pl.rowLen
		if cap(vals) < n {
			vals = make([]float32, n)
		}
		vals = vals[:n]
		ti := h.Tensors[i]
		if cap(q) < int(ti.Size) {
			q = make([]byte, ti.Size)
		}
		q = q[:ti.Size]
		// Rows are independent: decode them (into their permuted place)
		// and check them, then quantize them, on every core.
		es := t.DType.Size()
		rowBytes := int(ti.Size) / pl.rows
		var bad error
		var mu sync.Mutex
		parallel.Ranges(pl.rows, 16, func(lo, hi int) {
			for r := lo; r < hi; r++ {
				dst := r
				if pl.heads > 0 {
					dst = metaRow(r, pl.rows/pl.heads)
				}
				row := vals[dst*pl.rowLen : (dst+1)*pl.rowLen]
				if err := weights.DecodeFloat32(t.DType, t.Data[r*pl.rowLen*es:(r+1)*pl.rowLen*es], row); err != nil {
					mu.Lock()
					bad = err
					mu.Unlock()
					return
				}
				for _, v := range row {
					if v-v != 0 { // NaN or ±Inf
						mu.Lock()
						bad = fmt.Errorf("a non-finite value; GGUF output refuses it")
						mu.Unlock()
						return
					}
				}
			}
		})
		if bad == nil {
			parallel.Ranges(pl.rows, 16, func(lo, hi int) {
				if err := Quantize(ti.Type, vals[lo*pl.rowLen:hi*pl.rowLen], q[lo*rowBytes:hi*rowBytes]); err != nil {
					mu.Lock()
					bad = err
					mu.Unlock()
				}
			})
		}
		if bad != nil {
			return fail(&weights.TensorError{File: ck.Path(), Tensor: t.Name, Err: bad})
		}
		if pad := ti.Offset - pos; pad > 0 {
			if _, err := f.Write(make([]byte, pad)); err != nil {
				return fail(err)
			}
		}
		if _, err := f.Write(q); err != nil {
			return fail(err)
		}
		ahead.Wrote(len(q))
		pos = ti.Offset + ti.Size
	}
	ahead.Stop()
	if err := weights.CommitTemp(f, out); err != nil {
		return nil, err
	}
	for _, w := range fellBack {
		if o.Warn != nil {
			o.Warn(w)
		}
	}
	return fellBack, nil
}

// fallback is the type llama.cpp's tools write a tensor in when its rows
// are not whole blocks of t: for a K-quant the 32-block type
// llama-quantize takes (Q4_K → Q5_0, Q6_K → Q8_0) when the row allows
// it, else F16 (convert_hf_to_gguf's choice for Q8_0 and Q4_0).
// copyVocab copies a GGUF source's tokenizer.* metadata as it is.
func copyVocab(h *Header, src *Checkpoint) error {
	n := 0
	for _, kv := range src.File.KV {
		if strings.HasPrefix(kv.Key, "tokenizer.") {
			h.KV = append(h.KV, kv)
			n++
		}
	}
	if n == 0 {
		return fmt.Errorf("%s has no vocabulary (tokenizer.ggml.*) to carry over (give --no-vocab to write none)", src.Path())
	}
	return nil
}

// llamaOrderLess orders GGUF tensor names as llama.cpp's model loader
// does: by block number (tensors outside blocks first), then by name.
func llamaOrderLess(a, b string) bool {
	la, lb := blockNumber(a), blockNumber(b)
	if la != lb {
		return la < lb
	}
	return a < b
}

// blockNumber is N of a "blk.N." name, or −1.
func blockNumber(name string) int {
	m := ggufBlock.FindStringSubmatch(name)
	if m == nil {
		return -1
	}
	n, err := strconv.Atoi(m[1])
	if err != nil {
		return -1
	}
	return n
}

func fallback(t Type, rowLen int) Type {
	if f, ok := map[Type]Type{Q4_K: Q5_0, Q6_K: Q8_0}[t]; ok && rowLen%f.BlockSize() == 0 {
		return f
	}
	return F16
}

// metaRow is where Hugging Face row r of a q or k projection goes in
// Meta's rotary layout, heads of d rows: row j·d/2 + i of a head goes to
// 2i + j.
func metaRow(r, d int) int {
	h, k := r/d, r%d
	j, i := k/(d/2), k%(d/2)
	return h*d + 2*i + j
}

// unpermuteRows moves the rows of a q or k projection from Meta's rotary
// layout back to Hugging Face's (metaRow's inverse).
func unpermuteRows(v []float32, rows, rowLen, heads int) []float32 {
	out := make([]float32, len(v))
	d := rows / heads
	for h := 0; h < heads; h++ {
		for i := 0; i < d/2; i++ {
			for j := 0; j < 2; j++ {
				hf, meta := h*d+j*(d/2)+i, h*d+2*i+j
				copy(out[hf*rowLen:(hf+1)*rowLen], v[meta*rowLen:(meta+1)*rowLen])
			}
		}
	}
	return out
}
