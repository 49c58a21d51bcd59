package weights

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSetJSONKey(t *testing.T) {
	for _, c := range []struct{ in, key, v, want string }{
		// Replaced where it stands; the rest byte for byte.
		{"{\n  \"a\": 1,\n  \"torch_dtype\": \"bfloat16\",\n  \"z\": [1, 2]\n}\n", "torch_dtype", `"float16"`,
			"{\n  \"a\": 1,\n  \"torch_dtype\": \"float16\",\n  \"z\": [1, 2]\n}\n"},
		// Added after the last member, indented like the first.
		{"{\n    \"a\": {\"b\": 2}\n}", "n", `3`, "{\n    \"a\": {\"b\": 2},\n    \"n\": 3\n}"},
		{`{"a":1}`, "n", `3`, `{"a":1, "n": 3}`},
		{`{}`, "n", `3`, `{"n": 3}`},
		{` { } `, "n", `3`, ` {"n": 3 } `},
		// The last of duplicate keys is the one JSON readers keep.
		{`{"n": 1, "n": 2}`, "n", `9`, `{"n": 1, "n": 9}`},
		// A key inside a nested object is not the top-level one.
		{`{"text_config": {"n": 1}}`, "n", `2`, `{"text_config": {"n": 1}, "n": 2}`},
		{`{"s": "x\"y", "n": 1.50}`, "n", `2`, `{"s": "x\"y", "n": 2}`},
	} {
		got, err := SetJSONKey([]byte(c.in), c.key, json.RawMessage(c.v))
		if err != nil || string(got) != c.want {
			t.Errorf("SetJSONKey(%q, %s=%s) = %q, %v; want %q", c.in, c.key, c.v, got, err, c.want)
		}
		if err == nil && !json.Valid(got) {
			t.Errorf("SetJSONKey(%q): invalid JSON %q", c.in, got)
		}
	}
	for _, bad := range []string{`[1]`, `"x"`, `{"a": }`, ``} {
		if _, err := SetJSONKey([]byte(bad), "n", json.RawMessage(`1`)); err == nil {
			t.Errorf("SetJSONKey(%q): no error", bad)
		}
	}
}

func TestUpdateConfig(t *testing.T) {
	layers := func(n int, dt DType) []TensorInfo {
		ts := []TensorInfo{{Name: "model.embed_tokens.weight", DType: dt, Shape: []int64{100, 8}}}
		for i := range n {
			ts = append(ts, TensorInfo{Name: "model.layers." + string(rune('0'+i)) + ".mlp.up_proj.weight", DType: dt, Shape: []int64{8, 8}})
		}
		return ts
	}
	cfg := "{\n  \"num_hidden_layers\": 4,\n  \"torch_dtype\": \"bfloat16\",\n  \"vocab_size\": 100\n}\n"
	run := func(cfg string, source, written []TensorInfo) (string, []string) {
		t.Helper()
		s := &SideFiles{Files: []SideFile{{Name: "tokenizer.json", Data: []byte(`{}`)}, {Name: "config.json", Data: []byte(cfg)}}}
		ch, err := s.UpdateConfig(source, written)
		if err != nil {
			t.Fatal(err)
		}
		if string(s.Files[0].Data) != `{}` {
			t.Error("a file other than config.json changed")
		}
		return string(s.Files[1].Data), ch
	}
	// Nothing changes: the bytes stay.
	if got, ch := run(cfg, layers(4, BF16), layers(4, BF16)); got != cfg || len(ch) != 0 {
		t.Errorf("unchanged model: %q %v", got, ch)
	}
	got, ch := run(cfg, layers(4, BF16), layers(6, F16))
	want := "{\n  \"num_hidden_layers\": 6,\n  \"torch_dtype\": \"float16\",\n  \"vocab_size\": 100\n}\n"
	if got != want || len(ch) != 2 || !strings.Contains(ch[0], `"bfloat16" → "float16"`) {
		t.Errorf("f16 with 6 layers: %q %v", got, ch)
	}
	// Most values decide the dtype: the F32 embedding (800) outweighs
	// 4 F16 blocks (256).
	mixed := layers(4, F16)
	mixed[0].DType = F32
	if got, _ := run(cfg, layers(4, BF16), mixed); !strings.Contains(got, `"float32"`) {
		t.Errorf("mixed dtypes: %q", got)
	}
	// Integer tensors do not count.
	ints := append(layers(4, BF16), TensorInfo{Name: "ids", DType: I64, Shape: []int64{1 << 20}})
	if got, _ := run(cfg, layers(4, BF16), ints); got != cfg {
		t.Errorf("an int tensor changed the dtype: %q", got)
	}
	// A count the config did not take from these blocks (a vision tower's,
	// say) is left alone.
	if got, _ := run(strings.Replace(cfg, `: 4`, `: 32`, 1), layers(4, BF16), layers(6, BF16)); !strings.Contains(got, `: 32`) {
		t.Errorf("foreign layer count changed: %q", got)
	}
	// Newer transformers write dtype; both keys are kept in step, and a
	// config without either gains torch_dtype.
	if got, _ := run(`{"dtype": "bfloat16"}`, nil, layers(1, F32)); got != `{"dtype": "float32"}` {
		t.Errorf("dtype key: %q", got)
	}
	if got, _ := run(`{"dtype": "bfloat16", "torch_dtype": "bfloat16"}`, nil, layers(1, F32)); got != `{"dtype": "float32", "torch_dtype": "float32"}` {
		t.Errorf("both keys: %q", got)
	}
	if got, _ := run(`{"a": 1}`, nil, layers(1, F16)); got != `{"a": 1, "torch_dtype": "float16"}` {
		t.Errorf("absent key: %q", got)
	}
	s := &SideFiles{Files: []SideFile{{Name: "config.json", Data: []byte(`[1]`)}}}
	if _, err := s.UpdateConfig(nil, layers(1, F16)); err == nil || !strings.Contains(err.Error(), "config.json") {
		t.Errorf("array config: %v", err)
	}
}

func TestOutputDir(t *testing.T) {
	for _, c := range []struct {
		path  string
		shard int64
		want  string
	}{{"out", 0, "out"}, {"a/b.safetensors", 0, ""}, {"a/model.safetensors", 0, "a"}, {"a/b.safetensors", 1 << 30, "a/b.safetensors"}} {
		if got := OutputDir(c.path, c.shard); got != c.want {
			t.Errorf("OutputDir(%q, %d) = %q, want %q", c.path, c.shard, got, c.want)
		}
	}
}

// TestCreateOutputRefusesGGUF: a command that writes safetensors does not
// turn a .gguf output path into a directory of that name.
func TestCreateOutputRefusesGGUF(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.gguf")
	if _, _, err := CreateOutput(p, []TensorInfo{{Name: "w", DType: F32, Shape: []int64{1}}}, nil, 0); err == nil || !strings.Contains(err.Error(), "writes safetensors") {
		t.Fatalf("CreateOutput(%s): %v", p, err)
	}
	if _, err := os.Stat(p); err == nil {
		t.Error("something was created at the .gguf path")
	}
}
