package gguf

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

func init() {
	weights.RegisterFormat(weights.Format{
		Name:  "GGUF",
		Match: func(h []byte) bool { return len(h) >= 4 && string(h[:4]) == Magic },
		Open:  func(path string) (weights.Checkpoint, error) { return Open(path) },
	})
}

// Checkpoint is a GGUF file read as a Hugging Face checkpoint: llama.cpp's
// names mapped back (token_embd → model.embed_tokens, blk.N.attn_q →
// model.layers.N.self_attn.q_proj, …), dims in PyTorch order, q and k rows
// back in the Hugging Face rotary layout for llama, F32/F16/BF16 tensors
// as they are and every quantized type dequantized to F32.
type Checkpoint struct {
	path   string
	f      *os.File
	File   *File
	infos  []weights.TensorInfo
	byName map[string]int // HF name → index in File.Tensors
	arch   string
	heads  map[string]int // HF name → heads to unpermute into
	md     map[string]string
}

// Open opens a GGUF file (a regular file; the header validated by Parse).
func Open(path string) (*Checkpoint, error) {
	f, err := weights.OpenFile(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	gf, err := Parse(f, st.Size())
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	c := &Checkpoint{path: path, f: f, File: gf, byName: map[string]int{}, heads: map[string]int{}, md: map[string]string{}}
	c.arch = gf.String("general.architecture")
	nh, _ := gf.Uint(c.arch + ".attention.head_count")
	nkv, ok := gf.Uint(c.arch + ".attention.head_count_kv")
	if !ok {
		nkv = nh
	}
	for i, ti := range gf.Tensors {
		name := HFName(ti.Name)
		if _, dup := c.byName[name]; dup {
			f.Close()
			return nil, fmt.Errorf("%s: tensors %q and another map to the same name %q", path, ti.Name, name)
		}
		c.byName[name] = i
		shape := make([]int64, len(ti.Dims))
		for j, d := range ti.Dims {
			shape[len(ti.Dims)-1-j] = int64(d)
		}
		dt := weights.F32
		switch ti.Type {
		case F16:
			dt = weights.F16
		case BF16:
			dt = weights.BF16
		}
		c.infos = append(c.infos, weights.TensorInfo{Name: name, DType: dt, Shape: shape})
		if c.arch == "llama" && len(shape) == 2 {
			switch {
			case len(name) > 0 && hasSuffix(name, "self_attn.q_proj.weight"):
				c.heads[name] = int(nh)
			case hasSuffix(name, "self_attn.k_proj.weight"):
				c.heads[name] = int(nkv)
			}
			if h := c.heads[name]; h > 0 && (shape[0]%int64(h) != 0 || (shape[0]/int64(h))%2 != 0) {
				f.Close()
				return nil, fmt.Errorf("%s: tensor %q: %d rows do not split into %d heads", path, ti.Name, shape[0], h)
			}
		}
	}
	weights.SortNatural(c.infos)
	for _, kv := range gf.KV {
		c.md[kv.Key] = Describe(kv.Value)
		if s, ok := kv.Value.(string); ok && strings.HasPrefix(kv.Key, "weightops.") {
			c.md[kv.Key] = s // provenance, read back as written (check --inputs)
		}
	}
	// The table lists tensors as they read (dequantized); the file's own
	// types are summarized here.
	count := map[Type]int{}
	for _, ti := range gf.Tensors {
		count[ti.Type]++
	}
	var parts []string
	for t, n := range count {
		parts = append(parts, fmt.Sprintf("%s × %d", t, n))
	}
	sort.Strings(parts)
	c.md["gguf.tensor_types"] = strings.Join(parts, ", ")
	return c, nil
}

func hasSuffix(s, suf string) bool { return len(s) >= len(suf) && s[len(s)-len(suf):] == suf }

// Path names the file.
func (c *Checkpoint) Path() string { return c.path }

// Tensors lists the tensors under their Hugging Face names.
func (c *Checkpoint) Tensors() []weights.TensorInfo { return c.infos }

// Info describes one tensor.
func (c *Checkpoint) Info(name string) (weights.TensorInfo, bool) {
	i := sort.Search(len(c.infos), func(i int) bool { return !weights.NaturalLess(c.infos[i].Name, name) })
	if i < len(c.infos) && c.infos[i].Name == name {
		return c.infos[i], true
	}
	return weights.TensorInfo{}, false
}

// Metadata is the GGUF metadata, each value rendered (arrays summarized),
// weightops' own string values as they are.
func (c *Checkpoint) Metadata() map[string]string { return c.md }

// ReadTensor reads a tensor, dequantized and in the Hugging Face layout.
func (c *Checkpoint) ReadTensor(name string, buf []byte) (weights.Tensor, error) {
	info, ok := c.Info(name)
	if !ok {
		return weights.Tensor{}, &weights.TensorError{File: c.path, Tensor: name, Err: fmt.Errorf("no such tensor")}
	}
	ti := c.File.Tensors[c.byName[name]]
	n := int(ti.Elements())
	h := c.heads[name]
	native := (ti.Type == F32 || ti.Type == F16 || ti.Type == BF16) && h == 0
	var raw []byte
	if native && cap(buf) >= int(ti.Size) {
		raw = buf[:ti.Size] // the bytes are the tensor: read them into buf
	} else {
		raw = make([]byte, ti.Size)
	}
	if _, err := c.f.ReadAt(raw, c.File.DataOffset+int64(ti.Offset)); err != nil {
		return weights.Tensor{}, &weights.TensorError{File: c.path, Tensor: ti.Name, Err: err}
	}
	if native {
		return weights.Tensor{TensorInfo: info, Data: raw}, nil
	}
	vals := make([]float32, n)
	if err := Dequantize(ti.Type, raw, vals); err != nil {
		return weights.Tensor{}, &weights.TensorError{File: c.path, Tensor: ti.Name, Err: err}
	}
	if h > 0 {
		rows := int(info.Shape[0])
		vals = unpermuteRows(vals, rows, n/rows, h)
	}
	es := info.DType.Size()
	if cap(buf) < n*es {
		buf = make([]byte, n*es)
	}
	buf = buf[:n*es]
	switch info.DType {
	case weights.F32:
		for i, v := range vals {
			binary.LittleEndian.PutUint32(buf[4*i:], math.Float32bits(v))
		}
	case weights.F16:
		qF16(vals, buf)
	case weights.BF16:
		qBF16(vals, buf)
	}
	return weights.Tensor{TensorInfo: info, Data: buf}, nil
}

// Close closes the file.
func (c *Checkpoint) Close() error { return c.f.Close() }

// ConfigJSON is a Hugging Face config.json for the model (LLaMA family),
// from the GGUF metadata, so that the engine runs a GGUF file as it runs
// a model directory.
func (c *Checkpoint) ConfigJSON() ([]byte, error) {
	class := map[string]string{"llama": "LlamaForCausalLM", "qwen2": "Qwen2ForCausalLM"}[c.arch]
	if class == "" {
		return nil, fmt.Errorf("%s: architecture %q is not one the engine runs", c.path, c.arch)
	}
	p := c.arch + "."
	u := func(k string) uint64 { v, _ := c.File.Uint(p + k); return v }
	fl := func(k string, def float64) float64 {
		if v, ok := c.File.Float(p + k); ok {
			return v
		}
		return def
	}
	vocab := u("vocab_size")
	if e, ok := c.Info("model.embed_tokens.weight"); ok {
		vocab = uint64(e.Shape[0])
	}
	_, hasHead := c.Info("lm_head.weight")
	cfg := map[string]any{
		"architectures":           []string{class},
		"model_type":              c.arch,
		"hidden_size":             u("embedding_length"),
		"intermediate_size":       u("feed_forward_length"),
		"num_hidden_layers":       u("block_count"),
		"num_attention_heads":     u("attention.head_count"),
		"num_key_value_heads":     u("attention.head_count_kv"),
		"rms_norm_eps":            fl("attention.layer_norm_rms_epsilon", 1e-6),
		"rope_theta":              fl("rope.freq_base", 10000),
		"max_position_embeddings": u("context_length"),
		"vocab_size":              vocab,
		"tie_word_embeddings":     !hasHead,
	}
	if hd := u("rope.dimension_count"); hd > 0 {
		cfg["head_dim"] = hd
	}
	if _, ok := c.File.Uint(p + "attention.head_count_kv"); !ok {
		cfg["num_key_value_heads"] = u("attention.head_count")
	}
	return json.MarshalIndent(cfg, "", "  ")
}

// Tokenizer rebuilds the tokenizer that the file's tokenizer.ggml.*
// metadata describes, so text goes in and out of a GGUF model alone:
// "llama" (SentencePiece-style BPE: pieces, scores and types, converted as
// transformers converts a tokenizer.model) or "gpt2" (byte-level BPE: the
// tokens, merges and the split pattern named by tokenizer.ggml.pre —
// gpt-2, llama-bpe, qwen2). The BOS is put first when add_bos_token says
// so. Other vocabularies, and a file without one, are an error.
func (c *Checkpoint) Tokenizer() (*tokenizer.Tokenizer, error) {
	f := c.File
	strs := func(k string) []string {
		v, _ := f.Get(k)
		a, _ := v.(Array)
		out := make([]string, 0, len(a.Values))
		for _, x := range a.Values {
			s, _ := x.(string)
			out = append(out, s)
		}
		return out
	}
	tokens := strs("tokenizer.ggml.tokens")
	var types []int32
	var scores []float32
	if v, ok := f.Get("tokenizer.ggml.token_type"); ok {
		a, _ := v.(Array)
		for _, x := range a.Values {
			t, _ := x.(int32)
			types = append(types, t)
		}
	}
	if v, ok := f.Get("tokenizer.ggml.scores"); ok {
		a, _ := v.(Array)
		for _, x := range a.Values {
			s, _ := x.(float32)
			scores = append(scores, s)
		}
	}
	model := f.String("tokenizer.ggml.model")
	if len(tokens) == 0 || model == "" || model == "no_vocab" {
		return nil, fmt.Errorf("%s: %w (no tokenizer.ggml vocabulary)", c.path, tokenizer.ErrNoTokenizer)
	}
	bos := ""
	if add, ok := f.Get("tokenizer.ggml.add_bos_token"); ok && add == true {
		if id, ok := f.Uint("tokenizer.ggml.bos_token_id"); ok && id < uint64(len(tokens)) {
			bos = tokens[id]
		}
	}
	var file *tokenizer.File
	var err error
	switch model {
	case "llama":
		if len(scores) != len(tokens) || len(types) != len(tokens) {
			return nil, fmt.Errorf("%s: %d tokens, %d scores, %d types", c.path, len(tokens), len(scores), len(types))
		}
		sp := &tokenizer.SentencePiece{ModelType: 2, AddDummyPrefix: true, EscapeSpace: true, BOS: bos}
		if v, ok := f.Get("tokenizer.ggml.add_space_prefix"); ok {
			sp.AddDummyPrefix = v == true
		}
		for i, t := range tokens {
			kind := types[i]
			if kind < 1 || kind > 6 {
				kind = 1
			}
			sp.Pieces = append(sp.Pieces, tokenizer.Piece{Text: t, Score: scores[i], Kind: kind})
		}
		file, err = sp.File()
	case "gpt2":
		pattern := map[string]string{"gpt-2": "gpt2", "llama-bpe": "llama3", "qwen2": "qwen2"}[f.String("tokenizer.ggml.pre")]
		if pattern == "" {
			return nil, fmt.Errorf("%s: tokenizer.ggml.pre %q: weightops splits text as gpt-2, llama-bpe or qwen2", c.path, f.String("tokenizer.ggml.pre"))
		}
		file, err = tokenizer.ByteLevelFile(tokens, types, strs("tokenizer.ggml.merges"), pattern, bos)
	default:
		return nil, fmt.Errorf("%s: tokenizer.ggml.model %q is not implemented (llama, gpt2)", c.path, model)
	}
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.path, err)
	}
	return &tokenizer.Tokenizer{Dir: filepath.Dir(c.path), File: file}, nil
}
