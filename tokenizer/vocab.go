// Package tokenizer reads and edits Hugging Face tokenizer files
// (tokenizer.json, tokenizer_config.json) at the level of their
// vocabulary: token ids, added tokens, stripping and adding tokens as the
// transformers library does. Merges use it to build an output vocabulary
// and lay every model's embedding rows out in it.
package tokenizer

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/weightops/weightops/weights"
)

// AddedToken is one entry of tokenizer.json's added_tokens (and of
// tokenizer_config.json's added_tokens_decoder, keyed there by id).
type AddedToken struct {
	ID         int    `json:"id"`
	Content    string `json:"content"`
	SingleWord bool   `json:"single_word"`
	LStrip     bool   `json:"lstrip"`
	RStrip     bool   `json:"rstrip"`
	Normalized bool   `json:"normalized"`
	Special    bool   `json:"special"`
}

// Plain is the added token transformers' add_tokens("tok") makes: a
// normalized, non-special token.
func Plain(content string) AddedToken {
	return AddedToken{Content: content, Normalized: true}
}

// File is a parsed tokenizer.json: its model's vocabulary and its added
// tokens. Edits (Strip, Add) are written back by Encode, which leaves
// every other part of the file as it was.
type File struct {
	// Type is the model type: BPE, WordPiece, WordLevel or Unigram.
	Type string
	// Added are the added tokens, in file order.
	Added []AddedToken
	raw   []byte
	model map[string]json.RawMessage
	// vocab is the model's vocabulary, token → id.
	vocab map[string]int
	// unigram keeps the Unigram pieces (token, score) in id order.
	unigram  []json.RawMessage
	stripped bool
	// index caches addedIndex: for indexed added tokens, with the highest
	// added id.
	index    map[string]int
	indexed  int
	maxAdded int
}

// Parse reads a tokenizer.json.
func Parse(data []byte) (*File, error) {
	var top struct {
		Added []AddedToken               `json:"added_tokens"`
		Model map[string]json.RawMessage `json:"model"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("not a tokenizer.json: %w", err)
	}
	if top.Model == nil {
		return nil, errors.New("not a tokenizer.json: no model")
	}
	f := &File{raw: data, model: top.Model, Added: top.Added, vocab: map[string]int{}}
	if t, ok := top.Model["type"]; ok {
		if err := json.Unmarshal(t, &f.Type); err != nil {
			return nil, fmt.Errorf("tokenizer.json: model.type: %w", err)
		}
	} else if _, ok := top.Model["merges"]; ok {
		f.Type = "BPE" // older files leave the type out
	}
	v := top.Model["vocab"]
	switch f.Type {
	case "BPE", "WordPiece", "WordLevel":
		if err := json.Unmarshal(v, &f.vocab); err != nil {
			return nil, fmt.Errorf("tokenizer.json: model.vocab: %w", err)
		}
	case "Unigram":
		if err := json.Unmarshal(v, &f.unigram); err != nil {
			return nil, fmt.Errorf("tokenizer.json: model.vocab: %w", err)
		}
		for i, piece := range f.unigram {
			var p []json.RawMessage
			var tok string
			if json.Unmarshal(piece, &p) != nil || len(p) != 2 || json.Unmarshal(p[0], &tok) != nil {
				return nil, fmt.Errorf("tokenizer.json: model.vocab[%d]: not a [piece, score] pair", i)
			}
			if _, dup := f.vocab[tok]; !dup {
				f.vocab[tok] = i
			}
		}
	default:
		return nil, fmt.Errorf("tokenizer.json: model type %q is not one of BPE, WordPiece, WordLevel, Unigram", f.Type)
	}
	for _, id := range f.vocab {
		if id < 0 {
			return nil, fmt.Errorf("tokenizer.json: negative token id %d", id)
		}
	}
	for _, a := range f.Added {
		if a.ID < 0 {
			return nil, fmt.Errorf("tokenizer.json: added token %q has negative id %d", a.Content, a.ID)
		}
	}
	return f, nil
}

// ModelSize is the model's vocabulary size as the tokenizers library
// counts it (added tokens not included).
func (f *File) ModelSize() int {
	if f.Type == "Unigram" {
		return len(f.unigram)
	}
	return len(f.vocab)
}

// Vocab is the full vocabulary, token → id: the model's and the added
// tokens (an added token's id wins for its content), as transformers'
// get_vocab returns it.
func (f *File) Vocab() map[string]int {
	out := make(map[string]int, len(f.vocab)+len(f.Added))
	for t, id := range f.vocab {
		out[t] = id
	}
	for _, a := range f.Added {
		out[a.Content] = a.ID
	}
	return out
}

// Len is the number of distinct tokens (transformers' len(get_vocab())).
func (f *File) Len() int { return len(f.Vocab()) }

// IsAdded reports whether content is an added token.
func (f *File) IsAdded(content string) bool {
	_, ok := f.addedIndex()[content]
	return ok
}

// addedIndex maps the added tokens' contents to their ids (the first of
// equals), rebuilt when Added has changed length, so that Add and IsAdded
// do not scan the vocabulary each time (a union adds thousands).
func (f *File) addedIndex() map[string]int {
	if f.index == nil || f.indexed != len(f.Added) {
		f.index = make(map[string]int, len(f.Added))
		f.maxAdded = -1
		for _, a := range f.Added {
			if _, dup := f.index[a.Content]; !dup {
				f.index[a.Content] = a.ID
			}
			f.maxAdded = max(f.maxAdded, a.ID)
		}
		f.indexed = len(f.Added)
	}
	return f.index
}

// Add adds a token as the tokenizers library does: a token already in the
// vocabulary keeps its id (and is not added again); a new one gets the
// next id after the highest added id, or the model's vocabulary size when
// no added id reaches it. It returns the token's id and whether it was
// added.
func (f *File) Add(t AddedToken) (int, bool) {
	idx := f.addedIndex()
	if id, ok := idx[t.Content]; ok {
		return id, false
	}
	if id, ok := f.vocab[t.Content]; ok {
		return id, false
	}
	next := max(f.ModelSize(), f.maxAdded+1)
	t.ID = next
	f.Added = append(f.Added, t)
	idx[t.Content] = next
	f.maxAdded, f.indexed = next, len(f.Added)
	return next, true
}

// Strip removes every token with an id ≥ n (the rows a model's embedding
// does not have), and the BPE merges that use or make one, as mergekit
// does before building a vocabulary (mergekit keeps a merge that makes a
// removed token, which the tokenizers library then refuses to load).
// Only BPE vocabularies can be stripped.
// It returns the number of tokens removed.
func (f *File) Strip(n int) (int, error) {
	removed := map[string]bool{}
	for t, id := range f.vocab {
		if id >= n {
			removed[t] = true
		}
	}
	var keep []AddedToken
	for _, a := range f.Added {
		if a.ID >= n {
			removed[a.Content] = true
			continue
		}
		keep = append(keep, a)
	}
	if len(removed) == 0 {
		return 0, nil
	}
	if f.Type != "BPE" {
		return 0, fmt.Errorf("%d tokens have ids at or past the embedding's %d rows, and only a BPE vocabulary can be stripped of them (this one is %s)", len(removed), n, f.Type)
	}
	for t := range removed {
		if id, ok := f.vocab[t]; ok && id >= n {
			delete(f.vocab, t)
		}
	}
	f.Added = keep
	if m, ok := f.model["merges"]; ok {
		var merges []json.RawMessage
		if err := json.Unmarshal(m, &merges); err != nil {
			return 0, fmt.Errorf("tokenizer.json: model.merges: %w", err)
		}
		var prefix string
		if raw, ok := f.model["continuing_subword_prefix"]; ok {
			_ = json.Unmarshal(raw, &prefix)
		}
		var kept []json.RawMessage
		for _, e := range merges {
			var s string
			var pair []string
			switch {
			case json.Unmarshal(e, &s) == nil:
				a, b, ok := bytes.Cut([]byte(s), []byte(" "))
				if !ok {
					return 0, fmt.Errorf("tokenizer.json: merge %s is not two tokens", e)
				}
				pair = []string{string(a), string(b)}
			case json.Unmarshal(e, &pair) == nil:
			default:
				return 0, fmt.Errorf("tokenizer.json: merge %s is neither \"a b\" nor [a, b]", e)
			}
			if len(pair) != 2 {
				return 0, fmt.Errorf("tokenizer.json: merge %s is not two tokens", e)
			}
			// A merge goes with its parts and with the token it makes
			// (the tokenizers library refuses a merge whose result is not
			// in the vocabulary).
			use := !removed[pair[0]] && !removed[pair[1]] && !removed[pair[0]+strings.TrimPrefix(pair[1], prefix)]
			if use {
				kept = append(kept, e)
			}
		}
		enc, err := marshal(kept)
		if err != nil {
			return 0, err
		}
		f.model["merges"] = enc
	}
	f.stripped = true
	return len(removed), nil
}

// Encode writes the tokenizer.json back: added_tokens always (sorted by
// id, as the tokenizers library writes them), the model's vocabulary and
// merges when stripped; every other key keeps its place and its bytes.
func (f *File) Encode() ([]byte, error) {
	added := append([]AddedToken(nil), f.Added...)
	sort.SliceStable(added, func(i, j int) bool { return added[i].ID < added[j].ID })
	if added == nil {
		added = []AddedToken{}
	}
	enc, err := marshal(added)
	if err != nil {
		return nil, err
	}
	out, err := weights.SetJSONKey(f.raw, "added_tokens", enc)
	if err != nil {
		return nil, err
	}
	if !f.stripped {
		return out, nil
	}
	model := f.model["vocab"]
	if f.Type == "BPE" {
		model = encodeVocab(f.vocab)
	}
	m, err := weights.SetJSONKey(f.rawModel(), "vocab", model)
	if err != nil {
		return nil, err
	}
	if merges, ok := f.model["merges"]; ok {
		if m, err = weights.SetJSONKey(m, "merges", merges); err != nil {
			return nil, err
		}
	}
	return weights.SetJSONKey(out, "model", m)
}

// rawModel is the model object as written in the file.
func (f *File) rawModel() []byte {
	var top map[string]json.RawMessage
	_ = json.Unmarshal(f.raw, &top)
	return top["model"]
}

// encodeVocab writes a token → id map in id order, as the tokenizers
// library does.
func encodeVocab(v map[string]int) json.RawMessage {
	toks := make([]string, 0, len(v))
	for t := range v {
		toks = append(toks, t)
	}
	sort.Slice(toks, func(i, j int) bool {
		if v[toks[i]] != v[toks[j]] {
			return v[toks[i]] < v[toks[j]]
		}
		return toks[i] < toks[j]
	})
	var b bytes.Buffer
	b.WriteByte('{')
	for i, t := range toks {
		if i > 0 {
			b.WriteByte(',')
		}
		k, _ := marshal(t)
		b.Write(k)
		b.WriteByte(':')
		b.WriteString(strconv.Itoa(v[t]))
	}
	b.WriteByte('}')
	return b.Bytes()
}

// marshal encodes JSON as the tokenizers library writes it: "<" and ">"
// stay as they are (special tokens are full of them).
func marshal(v any) ([]byte, error) {
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	if err := e.Encode(v); err != nil {
		return nil, err
	}
	return bytes.TrimRight(b.Bytes(), "\n"), nil
}
