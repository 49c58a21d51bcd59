package tokenizer

import (
	"encoding/json"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

// FuzzTokenizerJSON feeds arbitrary bytes to Parse, and text to the
// encoder and decoder of whatever parses: none may panic, and decoding
// what was encoded must not fail. Seeds: the committed tokenizers.
func FuzzTokenizerJSON(f *testing.F) {
	for _, n := range []string{"gpt2", "llama2", "llama3", "qwen2"} {
		b, err := os.ReadFile("../testdata/tokenizer/" + n + "/tokenizer.json")
		if err != nil {
			f.Fatal(err)
		}
		f.Add(shrink(f, b), "Hello  wörld 123 🙂")
	}
	f.Add([]byte(`{"model": {"type": "BPE", "vocab": {"a": 0}, "merges": ["a a"]}}`), "aaa")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		file, err := Parse(data)
		if err != nil {
			return
		}
		encodeDecode(t, file, text)
	})
}

// FuzzSentencePiece feeds arbitrary bytes to ParseSentencePiece and the
// conversion to a tokenizer, then text through it. Seed: the committed
// spm_train model.
func FuzzSentencePiece(f *testing.F) {
	b, err := os.ReadFile("../testdata/tokenizer/spm/tokenizer.model")
	if err != nil {
		f.Fatal(err)
	}
	f.Add(b, "The GNU  license 1234 🙂")
	f.Add([]byte{0x0a, 0x05, 0x0a, 0x01, 'a', 0x18, 0x01}, "a")
	f.Fuzz(func(t *testing.T, data []byte, text string) {
		sp, err := ParseSentencePiece(data)
		if err != nil || len(sp.Pieces) > 1<<14 {
			return
		}
		sp.ModelType, sp.RemoveExtraWhitespaces, sp.Normalizer, sp.CharsMap = 2, false, "", false
		file, err := sp.File()
		if err != nil {
			return
		}
		encodeDecode(t, file, text)
	})
}

// shrink cuts a tokenizer.json to its first 300 ids and the merges among
// them, keeping every other part, so the fuzzer mutates small inputs.
func shrink(f *testing.F, b []byte) []byte {
	var doc map[string]any
	if err := json.Unmarshal(b, &doc); err != nil {
		f.Fatal(err)
	}
	m := doc["model"].(map[string]any)
	vocab := m["vocab"].(map[string]any)
	for k, v := range vocab {
		if v.(float64) >= 300 {
			delete(vocab, k)
		}
	}
	var merges []any
	for _, x := range m["merges"].([]any) {
		var l, r string
		switch y := x.(type) {
		case string:
			l, r, _ = strings.Cut(y, " ")
		case []any:
			l, r = y[0].(string), y[1].(string)
		}
		if _, ok := vocab[l+r]; ok {
			merges = append(merges, x)
		}
	}
	m["merges"] = merges
	var added []any
	for _, a := range doc["added_tokens"].([]any) {
		if a.(map[string]any)["id"].(float64) < 300 {
			added = append(added, a)
		}
	}
	doc["added_tokens"] = added
	out, err := json.Marshal(doc)
	if err != nil {
		f.Fatal(err)
	}
	return out
}

func encodeDecode(t *testing.T, file *File, text string) {
	if !utf8.ValidString(text) || len(text) > 1<<10 {
		return
	}
	enc, err := file.NewEncoder()
	if err != nil {
		return
	}
	ids := enc.EncodeSpecial(text)
	dec, err := file.NewDecoder()
	if err != nil {
		return
	}
	if _, err := dec.Decode(ids); err != nil {
		t.Fatalf("decoding the encoder's own ids failed: %v", err)
	}
}
