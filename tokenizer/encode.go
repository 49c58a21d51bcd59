package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"golang.org/x/text/unicode/norm"
)

// Encoder turns text into token ids as a tokenizer.json's pipeline does
// with add_special_tokens=False: added tokens split out first, then each
// remaining piece normalized, pre-tokenized and run through the BPE
// model. It covers the pipelines of byte-level BPE (GPT-2, Llama-3,
// Qwen2) and SentencePiece-style BPE with byte fallback (Llama-2,
// Mistral); NewEncoder refuses a component it does not implement rather
// than encode differently.
type Encoder struct {
	// single is the post-processor's template for one sequence (nil: the
	// ids as they are): a special token's ids, or {-1} for the sequence.
	single    [][]int
	added     []AddedToken
	normalize []func(string) string
	pretok    []pretokenizer
	vocab     map[string]int
	ranks     map[[2]string]int
	byteFall  bool
	unk       string
	fuseUnk   bool
	ignoreMrg bool
}

// pretokenizer splits a piece of text; first says whether the piece
// starts the text (Metaspace's prepend_scheme "first").
type pretokenizer func(words []string, first bool) []string

// NewEncoder builds the encoder of a tokenizer.json.
func (f *File) NewEncoder() (*Encoder, error) {
	var top struct {
		Normalizer    json.RawMessage `json:"normalizer"`
		PreTokenizer  json.RawMessage `json:"pre_tokenizer"`
		PostProcessor json.RawMessage `json:"post_processor"`
	}
	if err := json.Unmarshal(f.raw, &top); err != nil {
		return nil, err
	}
	e := &Encoder{added: f.Added, vocab: f.vocab}
	if f.Type != "BPE" {
		return nil, fmt.Errorf("encoding with a %s tokenizer is not implemented (BPE is)", f.Type)
	}
	var m struct {
		Merges       []json.RawMessage `json:"merges"`
		ByteFallback bool              `json:"byte_fallback"`
		Unk          *string           `json:"unk_token"`
		FuseUnk      bool              `json:"fuse_unk"`
		IgnoreMerges bool              `json:"ignore_merges"`
		Prefix       *string           `json:"continuing_subword_prefix"`
		Suffix       *string           `json:"end_of_word_suffix"`
		Dropout      *float64          `json:"dropout"`
	}
	raw, _ := json.Marshal(f.model)
	if err := json.Unmarshal(raw, &m); err != nil {
		return nil, fmt.Errorf("tokenizer.json: model: %w", err)
	}
	if (m.Prefix != nil && *m.Prefix != "") || (m.Suffix != nil && *m.Suffix != "") {
		return nil, fmt.Errorf("tokenizer.json: BPE with a subword prefix or word suffix is not implemented")
	}
	if m.Dropout != nil && *m.Dropout > 0 {
		return nil, fmt.Errorf("tokenizer.json: BPE dropout is random; encoding needs it off")
	}
	e.byteFall, e.fuseUnk, e.ignoreMrg = m.ByteFallback, m.FuseUnk, m.IgnoreMerges
	if m.Unk != nil {
		e.unk = *m.Unk
	}
	e.ranks = make(map[[2]string]int, len(m.Merges))
	for i, raw := range m.Merges {
		var s string
		var pair []string
		if json.Unmarshal(raw, &s) == nil {
			a, b, ok := strings.Cut(s, " ")
			if !ok {
				return nil, fmt.Errorf("tokenizer.json: merge %d %q is not two tokens", i, s)
			}
			pair = []string{a, b}
		} else if json.Unmarshal(raw, &pair) != nil || len(pair) != 2 {
			return nil, fmt.Errorf("tokenizer.json: merge %d is neither \"a b\" nor [a, b]", i)
		}
		k := [2]string{pair[0], pair[1]}
		if _, dup := e.ranks[k]; !dup {
			e.ranks[k] = i
		}
	}
	if err := e.parseNormalizer(top.Normalizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: normalizer: %w", err)
	}
	if err := e.parsePreTokenizer(top.PreTokenizer); err != nil {
		return nil, fmt.Errorf("tokenizer.json: pre_tokenizer: %w", err)
	}
	if err := e.parsePostProcessor(top.PostProcessor); err != nil {
		return nil, fmt.Errorf("tokenizer.json: post_processor: %w", err)
	}
	return e, nil
}

// parsePostProcessor reads a TemplateProcessing template (alone or in a
// Sequence); ByteLevel post-processing changes offsets only.
func (e *Encoder) parsePostProcessor(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var c struct {
		Type       string            `json:"type"`
		Processors []json.RawMessage `json:"processors"`
		Single     []struct {
			SpecialToken *struct {
				ID string `json:"id"`
			} `json:"SpecialToken"`
			Sequence *struct {
				ID string `json:"id"`
			} `json:"Sequence"`
		} `json:"single"`
		Special map[string]struct {
			IDs []int `json:"ids"`
		} `json:"special_tokens"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for _, p := range c.Processors {
			if err := e.parsePostProcessor(p); err != nil {
				return err
			}
		}
	case "ByteLevel":
	case "TemplateProcessing":
		for _, item := range c.Single {
			switch {
			case item.Sequence != nil:
				e.single = append(e.single, []int{-1})
			case item.SpecialToken != nil:
				sp, ok := c.Special[item.SpecialToken.ID]
				if !ok {
					return fmt.Errorf("template token %q has no ids", item.SpecialToken.ID)
				}
				e.single = append(e.single, sp.IDs)
			}
		}
	default:
		return fmt.Errorf("%q is not implemented", c.Type)
	}
	return nil
}

// EncodeSpecial is Encode with the post-processor's special tokens
// (add_special_tokens=True): Llama's BOS, for one.
func (e *Encoder) EncodeSpecial(text string) []int {
	ids := e.Encode(text)
	if e.single == nil {
		return ids
	}
	var out []int
	for _, part := range e.single {
		if len(part) == 1 && part[0] == -1 {
			out = append(out, ids...)
		} else {
			out = append(out, part...)
		}
	}
	return out
}

type component struct {
	Type string `json:"type"`
	// Sequence
	Normalizers   []json.RawMessage `json:"normalizers"`
	Pretokenizers []json.RawMessage `json:"pretokenizers"`
	// Prepend, Replace
	Prepend string `json:"prepend"`
	Pattern struct {
		String *string `json:"String"`
		Regex  *string `json:"Regex"`
	} `json:"pattern"`
	Content string `json:"content"`
	// ByteLevel, Metaspace, Split
	AddPrefixSpace bool    `json:"add_prefix_space"`
	UseRegex       *bool   `json:"use_regex"`
	Replacement    string  `json:"replacement"`
	PrependScheme  *string `json:"prepend_scheme"`
	Split          *bool   `json:"split"`
	Behavior       string  `json:"behavior"`
	Invert         bool    `json:"invert"`
}

func (e *Encoder) parseNormalizer(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for _, n := range c.Normalizers {
			if err := e.parseNormalizer(n); err != nil {
				return err
			}
		}
	case "Prepend":
		p := c.Prepend
		e.normalize = append(e.normalize, func(s string) string {
			if s == "" {
				return s
			}
			return p + s
		})
	case "Replace":
		if c.Pattern.String == nil {
			return fmt.Errorf("a Replace on a regex pattern is not implemented")
		}
		from, to := *c.Pattern.String, c.Content
		e.normalize = append(e.normalize, func(s string) string { return strings.ReplaceAll(s, from, to) })
	case "NFC":
		e.normalize = append(e.normalize, norm.NFC.String)
	case "NFKC":
		e.normalize = append(e.normalize, norm.NFKC.String)
	case "NFD":
		e.normalize = append(e.normalize, norm.NFD.String)
	case "NFKD":
		e.normalize = append(e.normalize, norm.NFKD.String)
	case "Lowercase":
		e.normalize = append(e.normalize, strings.ToLower)
	default:
		return fmt.Errorf("%q is not implemented", c.Type)
	}
	return nil
}

func (e *Encoder) parsePreTokenizer(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var c component
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for _, p := range c.Pretokenizers {
			if err := e.parsePreTokenizer(p); err != nil {
				return err
			}
		}
	case "ByteLevel":
		useRegex := c.UseRegex == nil || *c.UseRegex
		prefix := c.AddPrefixSpace
		e.pretok = append(e.pretok, func(words []string, _ bool) []string {
			var out []string
			for _, w := range words {
				if prefix && !strings.HasPrefix(w, " ") {
					w = " " + w
				}
				parts := []string{w}
				if useRegex {
					parts = splitGPT2(w)
				}
				for _, p := range parts {
					out = append(out, byteLevel(p))
				}
			}
			return out
		})
	case "Split":
		if c.Pattern.Regex == nil {
			return fmt.Errorf("a Split on a string pattern is not implemented")
		}
		split, ok := knownSplits[*c.Pattern.Regex]
		if !ok {
			return fmt.Errorf("the Split pattern %q is not one weightops implements (GPT-2's, Llama-3's, Qwen2's)", *c.Pattern.Regex)
		}
		if c.Behavior != "Isolated" || c.Invert {
			return fmt.Errorf("the Split behavior %q (invert %v) is not implemented (Isolated is)", c.Behavior, c.Invert)
		}
		e.pretok = append(e.pretok, func(words []string, _ bool) []string {
			var out []string
			for _, w := range words {
				out = append(out, split(w)...)
			}
			return out
		})
	case "Metaspace":
		rep := c.Replacement
		if rep == "" {
			rep = "▁"
		}
		scheme := "always"
		if c.PrependScheme != nil {
			scheme = *c.PrependScheme
		} else if !c.AddPrefixSpace {
			scheme = "never"
		}
		doSplit := c.Split == nil || *c.Split
		e.pretok = append(e.pretok, func(words []string, first bool) []string {
			var out []string
			for _, w := range words {
				w = strings.ReplaceAll(w, " ", rep)
				if (scheme == "always" || (scheme == "first" && first)) && !strings.HasPrefix(w, rep) {
					w = rep + w
				}
				if !doSplit {
					out = append(out, w)
					continue
				}
				// Split before each replacement character, which starts
				// the next word.
				start := 0
				for i := len(rep); i <= len(w)-len(rep); {
					if strings.HasPrefix(w[i:], rep) {
						if i > start {
							out = append(out, w[start:i])
						}
						start = i
						i += len(rep)
						continue
					}
					_, n := utf8.DecodeRuneInString(w[i:])
					i += n
				}
				if start < len(w) {
					out = append(out, w[start:])
				}
			}
			return out
		})
	default:
		return fmt.Errorf("%q is not implemented", c.Type)
	}
	return nil
}

// Encode returns the ids of text.
func (e *Encoder) Encode(text string) []int {
	var ids []int
	first := true
	for _, seg := range e.splitAdded(text) {
		if seg.added >= 0 {
			ids = append(ids, seg.added)
			first = false
			continue
		}
		s := seg.text
		for _, n := range e.normalize {
			s = n(s)
		}
		words := []string{s}
		for _, p := range e.pretok {
			words = p(words, first)
		}
		for _, w := range words {
			if w != "" {
				ids = append(ids, e.bpe(w)...)
			}
		}
		first = false
	}
	return ids
}

type segment struct {
	text  string
	added int // the added token's id, or -1 for text
}

// splitAdded cuts the added tokens out of text: at each position the
// longest added token that starts there, leftmost first.
func (e *Encoder) splitAdded(text string) []segment {
	var out []segment
	start := 0
	for i := 0; i < len(text); {
		best := -1
		for k, a := range e.added {
			if a.Content != "" && strings.HasPrefix(text[i:], a.Content) && (best < 0 || len(a.Content) > len(e.added[best].Content)) {
				best = k
			}
		}
		if best < 0 {
			i++
			continue
		}
		a := e.added[best]
		end := i + len(a.Content)
		pre := text[start:i]
		if a.LStrip {
			pre = strings.TrimRightFunc(pre, unicode.IsSpace)
		}
		if pre != "" {
			out = append(out, segment{pre, -1})
		}
		out = append(out, segment{a.Content, a.ID})
		if a.RStrip {
			for end < len(text) {
				r, n := utf8.DecodeRuneInString(text[end:])
				if !unicode.IsSpace(r) {
					break
				}
				end += n
			}
		}
		i, start = end, end
	}
	if start < len(text) {
		out = append(out, segment{text[start:], -1})
	}
	return out
}

// bpe encodes one pre-token: its characters (unknown ones as their UTF-8
// bytes with byte fallback, else the unknown token), merged pair by pair,
// the lowest-ranked pair first, leftmost among equals.
func (e *Encoder) bpe(word string) []int {
	if e.ignoreMrg {
		if id, ok := e.vocab[word]; ok {
			return []int{id}
		}
	}
	var syms []string
	for _, r := range word {
		syms = append(syms, string(r))
	}
	for {
		best, at := -1, -1
		for i := 0; i+1 < len(syms); i++ {
			if r, ok := e.ranks[[2]string{syms[i], syms[i+1]}]; ok && (best < 0 || r < best) {
				best, at = r, i
			}
		}
		if at < 0 {
			break
		}
		syms[at] += syms[at+1]
		syms = append(syms[:at+1], syms[at+2:]...)
	}
	var ids []int
	lastUnk := false
	for _, s := range syms {
		if id, ok := e.vocab[s]; ok {
			ids = append(ids, id)
			lastUnk = false
			continue
		}
		if e.byteFall {
			fell := true
			var bs []int
			for _, b := range []byte(s) {
				id, ok := e.vocab[fmt.Sprintf("<0x%02X>", b)]
				if !ok {
					fell = false
					break
				}
				bs = append(bs, id)
			}
			if fell {
				ids = append(ids, bs...)
				lastUnk = false
				continue
			}
		}
		if id, ok := e.vocab[e.unk]; ok && e.unk != "" {
			if !(e.fuseUnk && lastUnk) {
				ids = append(ids, id)
			}
			lastUnk = true
		}
	}
	return ids
}
