package tokenizer

import (
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"sort"
)

// Piece is one SentencePiece vocabulary entry.
type Piece struct {
	Text  string
	Score float32
	// Kind is SentencePiece's type: 1 normal, 2 unknown, 3 control,
	// 4 user defined, 5 unused, 6 byte.
	Kind int32
}

// SentencePiece is what weightops reads of a SentencePiece model
// (tokenizer.model, a ModelProto).
type SentencePiece struct {
	Pieces []Piece
	// ModelType is the trainer's: 1 unigram, 2 BPE, 3 word, 4 char.
	ModelType int
	// ByteFallback: unknown characters become <0xNN> byte pieces.
	ByteFallback bool
	// The normalizer: its rule name, whether it carries a precompiled
	// character map, and its three switches (SentencePiece's defaults:
	// true).
	Normalizer                                          string
	CharsMap                                            bool
	AddDummyPrefix, RemoveExtraWhitespaces, EscapeSpace bool
	// BOS, when set, is the piece the post-processor puts before every
	// encoding with special tokens (LLaMA's <s>); File leaves it unset
	// otherwise.
	BOS string
}

// ParseSentencePiece reads a SentencePiece model: the pieces (field 1:
// piece = 1, score = 2, type = 3), the trainer spec (field 2: model type
// 3, byte fallback 35) and the normalizer spec (field 3: name 1,
// precompiled map 2, add_dummy_prefix 3, remove_extra_whitespaces 4,
// escape_whitespaces 5). Every length is checked against the data.
func ParseSentencePiece(data []byte) (*SentencePiece, error) {
	sp := &SentencePiece{ModelType: 1, AddDummyPrefix: true, RemoveExtraWhitespaces: true, EscapeSpace: true}
	err := walkProto(data, func(field, wire int, v uint64, b []byte) error {
		switch {
		case field == 1 && wire == 2:
			p := Piece{Kind: 1}
			if err := walkProto(b, func(f, w int, v uint64, b []byte) error {
				switch {
				case f == 1 && w == 2:
					p.Text = string(b)
				case f == 2 && w == 5:
					p.Score = math.Float32frombits(uint32(v))
				case f == 3 && w == 0:
					p.Kind = int32(v)
				}
				return nil
			}); err != nil {
				return fmt.Errorf("piece %d: %w", len(sp.Pieces), err)
			}
			if p.Kind < 1 || p.Kind > 6 {
				return fmt.Errorf("piece %d %q: type %d", len(sp.Pieces), p.Text, p.Kind)
			}
			sp.Pieces = append(sp.Pieces, p)
		case field == 2 && wire == 2:
			return walkProto(b, func(f, w int, v uint64, _ []byte) error {
				switch {
				case f == 3 && w == 0:
					sp.ModelType = int(v)
				case f == 35 && w == 0:
					sp.ByteFallback = v != 0
				}
				return nil
			})
		case field == 3 && wire == 2:
			return walkProto(b, func(f, w int, v uint64, b []byte) error {
				switch {
				case f == 1 && w == 2:
					sp.Normalizer = string(b)
				case f == 2 && w == 2:
					sp.CharsMap = len(b) > 0
				case f == 3 && w == 0:
					sp.AddDummyPrefix = v != 0
				case f == 4 && w == 0:
					sp.RemoveExtraWhitespaces = v != 0
				case f == 5 && w == 0:
					sp.EscapeSpace = v != 0
				}
				return nil
			})
		}
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("not a SentencePiece model: %w", err)
	}
	if len(sp.Pieces) == 0 {
		return nil, errors.New("not a SentencePiece model: no pieces")
	}
	return sp, nil
}

// walkProto calls fn for each field of a protobuf message: the varint or
// fixed value, or the bytes of a length-delimited field.
func walkProto(data []byte, fn func(field, wire int, v uint64, b []byte) error) error {
	for len(data) > 0 {
		key, n := binary.Uvarint(data)
		if n <= 0 {
			return errors.New("bad field key")
		}
		data = data[n:]
		field, wire := int(key>>3), int(key&7)
		var v uint64
		var b []byte
		switch wire {
		case 0:
			v, n = binary.Uvarint(data)
			if n <= 0 {
				return errors.New("bad varint")
			}
			data = data[n:]
		case 1:
			if len(data) < 8 {
				return errors.New("truncated")
			}
			v, data = binary.LittleEndian.Uint64(data), data[8:]
		case 5:
			if len(data) < 4 {
				return errors.New("truncated")
			}
			v, data = uint64(binary.LittleEndian.Uint32(data)), data[4:]
		case 2:
			l, n := binary.Uvarint(data)
			if n <= 0 || l > uint64(len(data)-n) {
				return errors.New("a length past the data")
			}
			b, data = data[n:n+int(l)], data[n+int(l):]
		default:
			return fmt.Errorf("wire type %d", wire)
		}
		if err := fn(field, wire, v, b); err != nil {
			return err
		}
	}
	return nil
}

// File converts a BPE SentencePiece model into the tokenizer.json that
// transformers' LLaMA converter writes for it: the normalizer prepends ▁
// and turns spaces into ▁, the BPE model falls back to bytes, its merges
// are every split of a piece into two pieces, ordered by the merged
// piece's score (highest first; by the halves' ids within a piece), and
// the decoder undoes the ▁s. Control and unknown pieces become special
// added tokens, user-defined ones plain added tokens. Unigram models and
// normalizations other than identity are refused by name.
func (sp *SentencePiece) File() (*File, error) {
	if sp.ModelType != 2 {
		return nil, fmt.Errorf("a SentencePiece model of type %d: only BPE models (type 2) are implemented, not unigram", sp.ModelType)
	}
	if sp.CharsMap || (sp.Normalizer != "" && sp.Normalizer != "identity") {
		return nil, fmt.Errorf("SentencePiece normalization %q is not implemented (identity only)", sp.Normalizer)
	}
	if sp.RemoveExtraWhitespaces {
		return nil, errors.New("SentencePiece's remove_extra_whitespaces is not implemented (LLaMA-style models keep whitespace)")
	}
	vocab := map[string]int{}
	unk := ""
	type added struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	var adds []added
	for i, p := range sp.Pieces {
		if _, dup := vocab[p.Text]; !dup {
			vocab[p.Text] = i
		}
		switch p.Kind {
		case 2:
			unk = p.Text
			adds = append(adds, added{i, p.Text, true})
		case 3:
			adds = append(adds, added{i, p.Text, true})
		case 4:
			adds = append(adds, added{i, p.Text, false})
		}
	}
	type merge struct {
		l, r  string
		score float32
	}
	var merges []merge
	for i, p := range sp.Pieces {
		if p.Kind != 1 || i != vocab[p.Text] {
			continue
		}
		var local []merge
		for k := 1; k < len(p.Text); k++ {
			l, r := p.Text[:k], p.Text[k:]
			if _, ok := vocab[l]; !ok {
				continue
			}
			if _, ok := vocab[r]; ok {
				local = append(local, merge{l, r, p.Score})
			}
		}
		sort.SliceStable(local, func(a, b int) bool {
			if vocab[local[a].l] != vocab[local[b].l] {
				return vocab[local[a].l] < vocab[local[b].l]
			}
			return vocab[local[a].r] < vocab[local[b].r]
		})
		merges = append(merges, local...)
	}
	sort.SliceStable(merges, func(a, b int) bool { return merges[a].score > merges[b].score })
	pairs := make([][2]string, len(merges))
	for i, m := range merges {
		pairs[i] = [2]string{m.l, m.r}
	}
	var normalizers []any
	if sp.AddDummyPrefix {
		normalizers = append(normalizers, map[string]any{"type": "Prepend", "prepend": "▁"})
	}
	if sp.EscapeSpace {
		normalizers = append(normalizers, map[string]any{"type": "Replace", "pattern": map[string]string{"String": " "}, "content": "▁"})
	}
	decoders := []any{
		map[string]any{"type": "Replace", "pattern": map[string]string{"String": "▁"}, "content": " "},
		map[string]any{"type": "ByteFallback"},
		map[string]any{"type": "Fuse"},
	}
	if sp.AddDummyPrefix {
		decoders = append(decoders, map[string]any{"type": "Strip", "content": " ", "start": 1, "stop": 0})
	}
	byteFallback := sp.ByteFallback
	for _, p := range sp.Pieces {
		byteFallback = byteFallback || p.Kind == 6
	}
	doc := map[string]any{
		"version":        "1.0",
		"added_tokens":   adds,
		"normalizer":     map[string]any{"type": "Sequence", "normalizers": normalizers},
		"decoder":        map[string]any{"type": "Sequence", "decoders": decoders},
		"post_processor": bosTemplate(sp.BOS, vocab),
		"model": map[string]any{
			"type": "BPE", "unk_token": unk, "fuse_unk": true, "byte_fallback": byteFallback,
			"vocab": vocab, "merges": pairs,
		},
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}

// bosTemplate is a TemplateProcessing post-processor that puts token bos
// first (nil when bos is "" or not in the vocabulary).
func bosTemplate(bos string, vocab map[string]int) any {
	id, ok := vocab[bos]
	if bos == "" || !ok {
		return nil
	}
	return map[string]any{
		"type": "TemplateProcessing",
		"single": []any{
			map[string]any{"SpecialToken": map[string]any{"id": bos, "type_id": 0}},
			map[string]any{"Sequence": map[string]any{"id": "A", "type_id": 0}},
		},
		"special_tokens": map[string]any{bos: map[string]any{"id": bos, "ids": []int{id}, "tokens": []string{bos}}},
	}
}

// ByteLevelFile builds a byte-level BPE tokenizer (GPT-2's family) from a
// vocabulary in id order, token types as GGUF stores them (3 control: a
// special added token; 4 user defined: a plain one), merges ("a b") and
// the name of the split pattern — "gpt2", "llama3" (which also ignores
// merges for whole-vocabulary words, as Llama-3's tokenizer.json does) or
// "qwen2" (with NFC) — with bos, if set, put first by the post-processor.
func ByteLevelFile(tokens []string, types []int32, merges []string, pattern, bos string) (*File, error) {
	vocab := make(map[string]int, len(tokens))
	type added struct {
		ID      int    `json:"id"`
		Content string `json:"content"`
		Special bool   `json:"special"`
	}
	var adds []added
	for i, t := range tokens {
		if _, dup := vocab[t]; !dup {
			vocab[t] = i
		}
		if i < len(types) && (types[i] == 3 || types[i] == 4) {
			adds = append(adds, added{i, t, types[i] == 3})
		}
	}
	byteLevel := map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": false}
	var pre, norm any
	model := map[string]any{"type": "BPE", "vocab": vocab, "merges": merges}
	switch pattern {
	case "gpt2":
		pre = map[string]any{"type": "ByteLevel", "add_prefix_space": false, "trim_offsets": true, "use_regex": true}
	case "llama3", "qwen2":
		p := llama3Pattern
		if pattern == "qwen2" {
			p, norm = qwen2Pattern, map[string]any{"type": "NFC"}
		} else {
			model["ignore_merges"] = true
		}
		pre = map[string]any{"type": "Sequence", "pretokenizers": []any{
			map[string]any{"type": "Split", "pattern": map[string]any{"Regex": p}, "behavior": "Isolated", "invert": false},
			byteLevel,
		}}
	default:
		return nil, fmt.Errorf("split pattern %q: gpt2, llama3 or qwen2", pattern)
	}
	doc := map[string]any{
		"version": "1.0", "added_tokens": adds, "normalizer": norm, "pre_tokenizer": pre,
		"post_processor": bosTemplate(bos, vocab),
		"decoder":        map[string]any{"type": "ByteLevel", "add_prefix_space": true, "trim_offsets": true, "use_regex": true},
		"model":          model,
	}
	b, err := json.Marshal(doc)
	if err != nil {
		return nil, err
	}
	return Parse(b)
}
