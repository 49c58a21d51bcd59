package tokenizer

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"testing"
)

// TestEncodeMatchesTokenizersJS checks the ids of texts with Unicode,
// white-space runs, digits, emoji and special tokens against the ids
// @huggingface/tokenizers gave for them (testdata/tokenizer, made by
// make-fixtures.mjs) on GPT-2, Llama-3, Qwen2 and Llama-2 style tokenizers.
func TestEncodeMatchesTokenizersJS(t *testing.T) {
	dir := "../testdata/tokenizer"
	data, err := os.ReadFile(filepath.Join(dir, "cases.json"))
	if err != nil {
		t.Fatal(err)
	}
	var cases map[string][]struct {
		Text string `json:"text"`
		IDs  []int  `json:"ids"`
	}
	if err := json.Unmarshal(data, &cases); err != nil {
		t.Fatal(err)
	}
	if len(cases) != 4 {
		t.Fatalf("%d tokenizers in cases.json", len(cases))
	}
	for name, cs := range cases {
		tok, err := Load(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		enc, err := tok.File.NewEncoder()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		for _, c := range cs {
			got := enc.Encode(c.Text)
			if fmt.Sprint(got) != fmt.Sprint(c.IDs) && !(len(got) == 0 && len(c.IDs) == 0) {
				t.Errorf("%s: %q:\n got %v\nwant %v", name, c.Text, got, c.IDs)
			}
		}
	}
}
