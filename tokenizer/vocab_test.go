package tokenizer

import (
	"encoding/json"
	"strings"
	"testing"
)

const bpe = `{
  "version": "1.0",
  "added_tokens": [{"id": 4, "content": "<s>", "single_word": false, "lstrip": false, "rstrip": false, "normalized": false, "special": true}],
  "pre_tokenizer": {"type": "ByteLevel"},
  "model": {"type": "BPE", "dropout": null, "vocab": {"a": 0, "b": 1, "ab": 2, "abb": 3, "<s>": 4}, "merges": ["a b", ["ab", "b"]]}
}`

func TestAddFollowsTokenizersIDs(t *testing.T) {
	f, err := Parse([]byte(bpe))
	if err != nil {
		t.Fatal(err)
	}
	if f.ModelSize() != 5 || f.Len() != 5 {
		t.Fatalf("sizes %d %d", f.ModelSize(), f.Len())
	}
	// Existing tokens keep their ids, model or added.
	if id, added := f.Add(Plain("ab")); id != 2 || added {
		t.Errorf("ab: %d %v", id, added)
	}
	if id, added := f.Add(Plain("<s>")); id != 4 || added {
		t.Errorf("<s>: %d %v", id, added)
	}
	// The highest added id (4) is below the model's size (5): the next is 5.
	if id, _ := f.Add(Plain("x")); id != 5 {
		t.Errorf("x: id %d, want 5", id)
	}
	if id, _ := f.Add(AddedToken{Content: "<|y|>", Special: true}); id != 6 {
		t.Errorf("<|y|>: id %d, want 6", id)
	}
	data, err := f.Encode()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(string(data), `"content":"<|y|>"`) || !strings.Contains(string(data), `"pre_tokenizer": {"type": "ByteLevel"}`) {
		t.Errorf("encoded: %s", data)
	}
	g, err := Parse(data)
	if err != nil {
		t.Fatal(err)
	}
	if v := g.Vocab(); v["x"] != 5 || v["<|y|>"] != 6 || len(v) != 7 {
		t.Errorf("round trip vocab %v", v)
	}
}

func TestStrip(t *testing.T) {
	f, _ := Parse([]byte(bpe))
	n, err := f.Strip(3)
	if err != nil || n != 2 {
		t.Fatalf("strip: %d %v", n, err)
	}
	data, _ := f.Encode()
	var top struct {
		Added []AddedToken `json:"added_tokens"`
		Model struct {
			Vocab  map[string]int    `json:"vocab"`
			Merges []json.RawMessage `json:"merges"`
		} `json:"model"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		t.Fatal(err)
	}
	// "ab b" makes the stripped "abb": it goes too.
	if len(top.Added) != 0 || len(top.Model.Vocab) != 3 || len(top.Model.Merges) != 1 || string(top.Model.Merges[0]) != `"a b"` {
		t.Errorf("stripped: %s", data)
	}
	if !strings.Contains(string(data), `{"a":0,"b":1,"ab":2}`) {
		t.Errorf("vocab is not written in id order: %s", data)
	}
	u := `{"added_tokens": [], "model": {"type": "Unigram", "unk_id": 0, "vocab": [["<unk>", 0.0], ["▁a", -1.5], ["b", -2.0]]}}`
	g, err := Parse([]byte(u))
	if err != nil {
		t.Fatal(err)
	}
	if v := g.Vocab(); v["▁a"] != 1 || v["b"] != 2 {
		t.Errorf("unigram vocab %v", v)
	}
	if _, err := g.Strip(2); err == nil || !strings.Contains(err.Error(), "only a BPE") {
		t.Errorf("stripping a Unigram vocabulary: %v", err)
	}
	if n, err := g.Strip(3); n != 0 || err != nil {
		t.Errorf("nothing to strip: %d %v", n, err)
	}
}

func TestParseRefusesOddFiles(t *testing.T) {
	for _, s := range []string{`[]`, `{"model": {"type": "Weird", "vocab": {}}}`, `{"model": {"type": "BPE", "vocab": {"a": -1}}}`,
		`{"model": {"type": "Unigram", "vocab": [["a"]]}}`, `{"added_tokens": [{"id": -3, "content": "x"}], "model": {"type": "BPE", "vocab": {}}}`} {
		if _, err := Parse([]byte(s)); err == nil {
			t.Errorf("%s: parsed", s)
		}
	}
}

func TestConfig(t *testing.T) {
	c, err := ParseConfig([]byte(`{"added_tokens_decoder": {"7": {"content": "<a>", "special": true}, "2": {"content": "<b>"}}, "chat_template": [{"name": "tool_use", "template": "T"}, {"name": "default", "template": "D"}], "x": 1}`))
	if err != nil {
		t.Fatal(err)
	}
	if len(c.Added) != 2 || c.Added[0].ID != 2 || c.Added[1].Content != "<a>" {
		t.Errorf("added %+v", c.Added)
	}
	if c.ChatTemplate() != "D" {
		t.Errorf("named templates: %q", c.ChatTemplate())
	}
	if err := c.SetAdded([]AddedToken{{ID: 9, Content: "<z>", Normalized: true}, {ID: 3, Content: "<y>"}}); err != nil {
		t.Fatal(err)
	}
	if err := c.SetChatTemplate("{{ x }}"); err != nil {
		t.Fatal(err)
	}
	d, err := ParseConfig(c.Encode())
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Added) != 2 || d.Added[0].Content != "<y>" || !d.Added[1].Normalized || d.ChatTemplate() != "{{ x }}" {
		t.Errorf("edited: %s", c.Encode())
	}
	if !strings.Contains(string(c.Encode()), `"x": 1`) {
		t.Errorf("other keys lost: %s", c.Encode())
	}
	if _, err := ParseConfig([]byte(`{"added_tokens_decoder": {"x": {}}}`)); err == nil {
		t.Error("a non-numeric id parsed")
	}
}
