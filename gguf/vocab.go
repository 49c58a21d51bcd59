package gguf

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

// llama.cpp's token types.
const (
	tokNormal      int32 = 1
	tokUnknown     int32 = 2
	tokControl     int32 = 3
	tokUserDefined int32 = 4
	tokUnused      int32 = 5
	tokByte        int32 = 6
)

// addVocab writes tokenizer.ggml.* from the model's tokenizer.json and
// tokenizer_config.json: "gpt2" (byte-level BPE, with merges and the
// pre-tokenizer llama.cpp should use) or "llama" (SentencePiece-style BPE
// with byte fallback, scores from the vocabulary order); the vocabulary
// is padded to vocab_size with [PADi] tokens as convert_hf_to_gguf does.
func addVocab(h *Header, dir string, cfg hfConfig) error {
	if spm := filepath.Join(dir, "tokenizer.model"); fileExists(spm) {
		return addSentencePiece(h, dir, spm, cfg)
	}
	tok, err := tokenizer.Load(dir)
	if errors.Is(err, tokenizer.ErrNoTokenizer) {
		return fmt.Errorf("%s has no tokenizer.json: llama.cpp needs a vocabulary (give --no-vocab to write none)", dir)
	}
	if err != nil {
		return err
	}
	if tok.File.Type != "BPE" {
		return fmt.Errorf("%s: a %s tokenizer; GGUF vocabularies are written for BPE tokenizers", filepath.Join(dir, "tokenizer.json"), tok.File.Type)
	}
	info, err := bpeInfo(tok)
	if err != nil {
		return fmt.Errorf("%s: %w", filepath.Join(dir, "tokenizer.json"), err)
	}
	vocab := tok.File.Vocab()
	n, top := cfg.VocabSize, ""
	for t, id := range vocab {
		if id+1 > n || id+1 == n && t < top {
			n, top = id+1, t // the largest id, the same token every run
		}
	}
	if cfg.VocabSize > 0 && n > cfg.VocabSize {
		return tooManyTokens(filepath.Join(dir, "tokenizer.json"), top, n-1, cfg.VocabSize)
	}
	tokens := make([]string, n)
	types := make([]int32, n)
	for i := range tokens {
		tokens[i] = fmt.Sprintf("[PAD%d]", i)
		types[i] = tokUnused
	}
	for t, id := range vocab {
		tokens[id] = t
		types[id] = tokNormal
		if info.model == "llama" && len(t) == 6 && strings.HasPrefix(t, "<0x") && strings.HasSuffix(t, ">") {
			types[id] = tokByte
		}
	}
	for _, a := range tok.File.Added {
		if a.Special {
			types[a.ID] = tokControl
		} else {
			types[a.ID] = tokUserDefined
		}
	}
	if info.unk != "" {
		if id, ok := vocab[info.unk]; ok {
			types[id] = tokUnknown
		}
	}
	h.Add("tokenizer.ggml.model", info.model)
	if info.model == "gpt2" {
		h.Add("tokenizer.ggml.pre", info.pre)
	}
	h.Add("tokenizer.ggml.tokens", Strings(tokens))
	if info.model == "llama" {
		// SentencePiece's BPE (llama.cpp's "llama" tokenizer) merges the
		// pair whose merged piece scores highest: a piece made by merge i
		// scores −i, so merges happen in tokenizer.json's order; pieces no
		// merge makes score below all of them, in id order.
		scores := make([]float32, n)
		for i := range scores {
			scores[i] = -float32(len(info.merges) + i)
		}
		for i := len(info.merges) - 1; i >= 0; i-- {
			if l, r, ok := strings.Cut(info.merges[i], " "); ok {
				if id, ok := vocab[l+r]; ok && id < n {
					scores[id] = -float32(i) // the first merge making it wins
				}
			}
		}
		h.Add("tokenizer.ggml.scores", Float32s(scores))
	}
	h.Add("tokenizer.ggml.token_type", Int32s(types))
	if info.model == "gpt2" {
		h.Add("tokenizer.ggml.merges", Strings(info.merges))
	}
	addSpecialKV(h, dir, vocab, cfg, info.model)
	if t := tok.ChatTemplate(); t != "" {
		h.Add("tokenizer.chat_template", t)
	}
	return nil
}

func addSpecialKV(h *Header, dir string, vocab map[string]int, cfg hfConfig, model string) {
	special := specialTokens(dir, vocab, cfg)
	for _, k := range []string{"bos", "eos", "unknown", "padding"} {
		if id, ok := special[k]; ok {
			h.Add("tokenizer.ggml."+k+"_token_id", uint32(id))
		}
	}
	addBOS, addEOS := addSpecial(dir, model)
	h.Add("tokenizer.ggml.add_bos_token", addBOS)
	h.Add("tokenizer.ggml.add_eos_token", addEOS)
}

// tooManyTokens is the error for a tokenizer with ids past the model's
// embedding rows: llama.cpp checks token_embd against the vocabulary's
// length and would refuse the file.
func tooManyTokens(path, token string, id, vocabSize int) error {
	return fmt.Errorf("%s: token %q has id %d but the model's vocab_size is %d: llama.cpp needs the vocabulary to match token_embd's rows (fix vocab_size and the embeddings, or give --no-vocab)", path, token, id, vocabSize)
}

// addSentencePiece writes a "llama" vocabulary from tokenizer.model, as
// convert_hf_to_gguf does for LLaMA and Mistral: the pieces with their
// scores and types; added tokens (tokenizer_config.json) typed control
// (special) or user-defined, those past the pieces appended with score
// −1000; padded to vocab_size with [PADi] (unused, −1000).
func addSentencePiece(h *Header, dir, path string, cfg hfConfig) error {
	data, err := weights.ReadFile(path, weights.MaxSideFileSize, "tokenizer model")
	if err != nil {
		return err
	}
	sp, err := tokenizer.ParseSentencePiece(data)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	if sp.ModelType != 2 {
		return fmt.Errorf("%s: a SentencePiece model of type %d; LLaMA-family GGUF vocabularies are BPE (type 2)", path, sp.ModelType)
	}
	pieces := sp.Pieces
	if cfg.VocabSize > 0 && len(pieces) > cfg.VocabSize {
		return tooManyTokens(path, pieces[cfg.VocabSize].Text, cfg.VocabSize, cfg.VocabSize)
	}
	tokens := make([]string, len(pieces))
	scores := make([]float32, len(pieces))
	types := make([]int32, len(pieces))
	vocab := map[string]int{}
	for i, p := range pieces {
		tokens[i], scores[i], types[i] = p.Text, p.Score, p.Kind
		if _, dup := vocab[p.Text]; !dup {
			vocab[p.Text] = i
		}
	}
	template := ""
	if tc, err := weights.ReadFile(filepath.Join(dir, "tokenizer_config.json"), weights.MaxSideFileSize, "tokenizer config"); err == nil {
		cfgFile, err := tokenizer.ParseConfig(tc)
		if err != nil {
			return err
		}
		template = cfgFile.ChatTemplate()
		for _, a := range cfgFile.Added {
			if cfg.VocabSize > 0 && a.ID >= cfg.VocabSize {
				continue
			}
			for len(tokens) <= a.ID {
				tokens = append(tokens, fmt.Sprintf("[PAD%d]", len(tokens)))
				scores = append(scores, -1000)
				types = append(types, tokUnused)
			}
			tokens[a.ID] = a.Content
			vocab[a.Content] = a.ID
			if a.ID >= len(pieces) {
				scores[a.ID] = -1000
			}
			types[a.ID] = tokUserDefined
			if a.Special {
				types[a.ID] = tokControl
			}
		}
	}
	for len(tokens) < cfg.VocabSize {
		tokens = append(tokens, fmt.Sprintf("[PAD%d]", len(tokens)))
		scores = append(scores, -1000)
		types = append(types, tokUnused)
	}
	h.Add("tokenizer.ggml.model", "llama")
	h.Add("tokenizer.ggml.tokens", Strings(tokens))
	h.Add("tokenizer.ggml.scores", Float32s(scores))
	h.Add("tokenizer.ggml.token_type", Int32s(types))
	addSpecialKV(h, dir, vocab, cfg, "llama")
	if tok, err := tokenizer.Load(dir); err == nil && tok.ChatTemplate() != "" {
		template = tok.ChatTemplate() // chat_template.jinja, when there is one
	}
	if template != "" {
		h.Add("tokenizer.chat_template", template)
	}
	return nil
}

func fileExists(p string) bool { _, err := os.Stat(p); return err == nil }

type bpe struct {
	model, pre, unk string
	merges          []string
}

// bpeInfo tells a byte-level BPE tokenizer (llama.cpp's "gpt2", with the
// pre-tokenizer of its split pattern) from a SentencePiece-style one
// ("llama": byte fallback, ▁ for spaces).
func bpeInfo(tok *tokenizer.Tokenizer) (bpe, error) {
	raw, err := tok.File.Encode()
	if err != nil {
		return bpe{}, err
	}
	var top struct {
		Pre   json.RawMessage `json:"pre_tokenizer"`
		Model struct {
			ByteFallback bool              `json:"byte_fallback"`
			Unk          *string           `json:"unk_token"`
			Merges       []json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(raw, &top); err != nil {
		return bpe{}, err
	}
	b := bpe{}
	if top.Model.Unk != nil {
		b.unk = *top.Model.Unk
	}
	byteLevel, useRegex, patterns := walkPre(top.Pre)
	switch {
	case byteLevel:
		b.model = "gpt2"
		kinds := map[string]bool{}
		for _, p := range patterns {
			kinds[tokenizer.PatternName(p)] = true
		}
		switch {
		case kinds["llama3"]:
			b.pre = "llama-bpe"
		case kinds["qwen2"]:
			b.pre = "qwen2"
		case kinds["gpt2"] || (len(patterns) == 0 && useRegex):
			b.pre = "gpt-2"
		default:
			return bpe{}, errors.New("a byte-level pre-tokenizer whose split pattern is not GPT-2's, Llama-3's or Qwen2's, so llama.cpp's pre-tokenizer for it is unknown")
		}
	case top.Model.ByteFallback:
		b.model = "llama"
	default:
		return bpe{}, errors.New("a BPE tokenizer that is neither byte-level nor SentencePiece-style with byte fallback")
	}
	{
		for _, m := range top.Model.Merges {
			var s string
			var pair []string
			switch {
			case json.Unmarshal(m, &s) == nil:
			case json.Unmarshal(m, &pair) == nil && len(pair) == 2:
				s = pair[0] + " " + pair[1]
			default:
				return bpe{}, fmt.Errorf("merge %s is neither \"a b\" nor [a, b]", m)
			}
			b.merges = append(b.merges, s)
		}
	}
	return b, nil
}

// specialTokens finds the BOS, EOS, unknown and padding ids: config.json's
// ids, else tokenizer_config.json's tokens looked up in the vocabulary.
func specialTokens(dir string, vocab map[string]int, cfg hfConfig) map[string]int {
	out := map[string]int{}
	if cfg.BOS != nil {
		out["bos"] = *cfg.BOS
	}
	switch e := cfg.EOS.(type) {
	case float64:
		out["eos"] = int(e)
	case []any:
		if len(e) > 0 {
			if f, ok := e[0].(float64); ok {
				out["eos"] = int(f)
			}
		}
	}
	data, err := weights.ReadFile(filepath.Join(dir, "tokenizer_config.json"), weights.MaxSideFileSize, "tokenizer config")
	if err != nil {
		return out
	}
	var tc map[string]json.RawMessage
	if json.Unmarshal(data, &tc) != nil {
		return out
	}
	for key, name := range map[string]string{"bos_token": "bos", "eos_token": "eos", "unk_token": "unknown", "pad_token": "padding"} {
		if _, have := out[name]; have {
			continue
		}
		raw, ok := tc[key]
		if !ok {
			continue
		}
		var s string
		if json.Unmarshal(raw, &s) != nil {
			var obj struct {
				Content string `json:"content"`
			}
			if json.Unmarshal(raw, &obj) != nil {
				continue
			}
			s = obj.Content
		}
		if id, ok := vocab[s]; ok {
			out[name] = id
		}
	}
	return out
}

// addSpecial reads add_bos_token / add_eos_token from tokenizer_config.json
// (llama's default: BOS on).
func addSpecial(dir, model string) (bos, eos bool) {
	bos = model == "llama"
	data, err := weights.ReadFile(filepath.Join(dir, "tokenizer_config.json"), weights.MaxSideFileSize, "tokenizer config")
	if err != nil {
		return bos, false
	}
	var tc struct {
		BOS *bool `json:"add_bos_token"`
		EOS *bool `json:"add_eos_token"`
	}
	if json.Unmarshal(data, &tc) == nil {
		if tc.BOS != nil {
			bos = *tc.BOS
		}
		if tc.EOS != nil {
			eos = *tc.EOS
		}
	}
	return bos, eos
}

// walkPre finds, in a pre_tokenizer (a Sequence or one component),
// whether it is byte-level, whether ByteLevel splits by its own regex,
// and the Split patterns.
func walkPre(raw json.RawMessage) (byteLevel, useRegex bool, patterns []string) {
	var c struct {
		Type     string            `json:"type"`
		Pretoks  []json.RawMessage `json:"pretokenizers"`
		UseRegex *bool             `json:"use_regex"`
		Pattern  struct {
			Regex *string `json:"Regex"`
		} `json:"pattern"`
	}
	if json.Unmarshal(raw, &c) != nil {
		return
	}
	switch c.Type {
	case "Sequence":
		for _, p := range c.Pretoks {
			b, u, ps := walkPre(p)
			byteLevel, useRegex = byteLevel || b, useRegex || u
			patterns = append(patterns, ps...)
		}
	case "ByteLevel":
		byteLevel = true
		useRegex = c.UseRegex == nil || *c.UseRegex
	case "Split":
		if c.Pattern.Regex != nil {
			patterns = append(patterns, *c.Pattern.Regex)
		}
	}
	return
}
