package merge

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/tokenizer"
)

// vocabModel writes a model directory with a BPE tokenizer (vocab, added
// tokens), a config.json giving vocab_size = rows, and embed_tokens,
// lm_head ([rows, 2], row i = row(i)) and one block tensor.
func vocabModel(t *testing.T, dir, name string, vocab map[string]int, added []tokenizer.AddedToken, rows int, row func(i int) [2]float64) string {
	t.Helper()
	var emb []float64
	for i := 0; i < rows; i++ {
		r := row(i)
		emb = append(emb, r[0], r[1])
	}
	head := make([]float64, len(emb))
	for i, x := range emb {
		head[i] = 2 * x
	}
	p := model(t, dir, name, map[string][]float64{
		"model.embed_tokens.weight":         emb,
		"lm_head.weight":                    head,
		"model.layers.0.mlp.up_proj.weight": {1, 2, 3, 4},
	}, map[string][]int64{
		"model.embed_tokens.weight":         {int64(rows), 2},
		"lm_head.weight":                    {int64(rows), 2},
		"model.layers.0.mlp.up_proj.weight": {2, 2},
	})
	v, _ := json.Marshal(vocab)
	a, _ := json.Marshal(added)
	if added == nil {
		a = []byte("[]")
	}
	tj := fmt.Sprintf(`{"version": "1.0", "added_tokens": %s, "normalizer": null,
  "model": {"type": "BPE", "dropout": null, "vocab": %s, "merges": ["a b"]}}`, a, v)
	write := func(name, s string) {
		if err := os.WriteFile(filepath.Join(p, name), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("tokenizer.json", tj)
	dec := map[string]any{}
	for _, x := range added {
		dec[fmt.Sprint(x.ID)] = map[string]any{"content": x.Content, "special": x.Special, "normalized": x.Normalized,
			"lstrip": false, "rstrip": false, "single_word": false}
	}
	tc, _ := json.Marshal(map[string]any{"added_tokens_decoder": dec, "model_max_length": 2048, "chat_template": "{{ '" + name + "' }} template"})
	write("tokenizer_config.json", string(tc))
	write("config.json", fmt.Sprintf(`{"model_type": "llama", "vocab_size": %d, "hidden_size": 2}`, rows))
	write("added_tokens.json", `{"<s>": 3}`)
	return p
}

// threeVocabs are hand-made models A (base), B and C whose vocabularies
// overlap in part; B's embedding has two padding rows.
func threeVocabs(t *testing.T) string {
	dir := t.TempDir()
	s := tokenizer.AddedToken{ID: 3, Content: "<s>", Special: true}
	im := tokenizer.AddedToken{ID: 4, Content: "<|im_start|>", Special: true}
	vocabModel(t, dir, "A", map[string]int{"a": 0, "b": 1, "ab": 2}, []tokenizer.AddedToken{s}, 4,
		func(i int) [2]float64 { return [2]float64{float64(10*i + 1), float64(10*i + 2)} })
	vocabModel(t, dir, "B", map[string]int{"a": 0, "c": 1, "b": 2}, []tokenizer.AddedToken{s, im}, 6,
		func(i int) [2]float64 { return [2]float64{float64(100 + i), float64(200 + i)} })
	vocabModel(t, dir, "C", map[string]int{"a": 0, "b": 1, "c": 2, "d": 3}, nil, 4,
		func(i int) [2]float64 { return [2]float64{float64(-i), float64(-2 * i)} })
	return dir
}

func rowsOf(t *testing.T, p *Plan, model int, tensor string) [][2]float64 {
	t.Helper()
	ck := p.source(model)
	info, _ := ck.Info(tensor)
	tt, err := ck.ReadTensor(tensor, nil)
	if err != nil {
		t.Fatal(err)
	}
	vals, err := tt.Float64s()
	if err != nil {
		t.Fatal(err)
	}
	if int64(len(vals)) != info.Shape[0]*2 {
		t.Fatalf("%s: %d values for shape %v", tensor, len(vals), info.Shape)
	}
	out := make([][2]float64, len(vals)/2)
	for i := range out {
		out[i] = [2]float64{vals[2*i], vals[2*i+1]}
	}
	return out
}

// TestTokenizerUnion works mergekit's union by hand: the output vocabulary
// is A's, then c (B) and d (C) as plain added tokens, then <|im_start|>
// with B's settings; rows a model lacks come from the only model with the
// token, else the base, else the mean of the models that have it.
func TestTokenizerUnion(t *testing.T) {
	dir := threeVocabs(t)
	recipe := `merge_method: linear
base_model: A
models:
  - model: A
    parameters: {weight: 1}
  - model: B
    parameters: {weight: 1}
  - model: C
    parameters: {weight: 2}
tokenizer:
  source: union
  pad_to_multiple_of: 4
chat_template: chatml
`
	p := openRecipe(t, dir, recipe)
	wantTok := []string{"a", "b", "ab", "<s>", "c", "d", "<|im_start|>"}
	if fmt.Sprint(p.vocab.tokens) != fmt.Sprint(wantTok) {
		t.Fatalf("tokens %q, want %q", p.vocab.tokens, wantTok)
	}
	A := func(i int) [2]float64 { return [2]float64{float64(10*i + 1), float64(10*i + 2)} }
	B := func(i int) [2]float64 { return [2]float64{float64(100 + i), float64(200 + i)} }
	C := func(i int) [2]float64 { return [2]float64{float64(-i), float64(-2 * i)} }
	cMean := [2]float64{(B(1)[0] + C(2)[0]) / 2, (B(1)[1] + C(2)[1]) / 2}
	want := [][][2]float64{
		{A(0), A(1), A(2), A(3), cMean, C(3), B(4)},
		{B(0), B(2), A(2), B(3), B(1), C(3), B(4)},
		{C(0), C(1), A(2), A(3), C(2), C(3), B(4)},
	}
	for m := range want {
		got := rowsOf(t, p, m, "model.embed_tokens.weight")
		if len(got) != 8 {
			t.Fatalf("model %d: %d rows, want 8 (7 padded to 4)", m, len(got))
		}
		var mean [2]float64
		for j, w := range want[m] {
			if got[j] != w {
				t.Errorf("model %s row %d (%s): %v, want %v", p.Refs[m], j, wantTok[j], got[j], w)
			}
			mean[0] += w[0] / 7
			mean[1] += w[1] / 7
		}
		if d0, d1 := got[7][0]-mean[0], got[7][1]-mean[1]; d0*d0+d1*d1 > 1e-8 {
			t.Errorf("model %s padding row %v, want the mean %v", p.Refs[m], got[7], mean)
		}
		head := rowsOf(t, p, m, "lm_head.weight")
		if head[4] != [2]float64{2 * want[m][4][0], 2 * want[m][4][1]} {
			t.Errorf("model %s lm_head row 4 %v: lm_head is laid out as embed_tokens is", p.Refs[m], head[4])
		}
	}
	out := runRecipe(t, dir, recipe, 2)
	emb := read(t, filepath.Join(out, "model.safetensors"), "model.embed_tokens.weight")
	for j := 0; j < 7; j++ {
		for k := 0; k < 2; k++ {
			w := (want[0][j][k] + want[1][j][k] + 2*want[2][j][k]) / 4
			if d := emb[2*j+k] - w; d > 1e-4 || d < -1e-4 {
				t.Errorf("merged row %d col %d: %v, want %v", j, k, emb[2*j+k], w)
			}
		}
	}
	tok, err := tokenizer.Load(out)
	if err != nil {
		t.Fatal(err)
	}
	v := tok.File.Vocab()
	for j, s := range wantTok {
		if v[s] != j {
			t.Errorf("written tokenizer.json: %q has id %d, want %d", s, v[s], j)
		}
	}
	for _, a := range tok.File.Added {
		if a.Content == "c" && (a.Special || !a.Normalized) {
			t.Errorf("c is added as add_tokens adds a plain token: %+v", a)
		}
		if a.Content == "<|im_start|>" && !a.Special {
			t.Errorf("<|im_start|> keeps B's settings: %+v", a)
		}
	}
	if len(tok.Config.Added) != 4 {
		t.Errorf("tokenizer_config.json added_tokens_decoder has %d tokens, want 4 (<s>, c, d, <|im_start|>)", len(tok.Config.Added))
	}
	// Without a tokenizer_config.json, the one written for the chat
	// template lists the added tokens too.
	os.Remove(filepath.Join(dir, "A", "tokenizer_config.json"))
	tok, err = tokenizer.Load(runRecipe(t, dir, recipe, 1))
	if err != nil {
		t.Fatal(err)
	}
	if tok.Config == nil || len(tok.Config.Added) != 4 || !strings.Contains(tok.ChatTemplate(), "<|im_start|>") {
		t.Errorf("a new tokenizer_config.json: %+v", tok.Config)
	}
	if !strings.Contains(tok.ChatTemplate(), "<|im_start|>") {
		t.Errorf("chat template %q is not chatml", tok.ChatTemplate())
	}
	cfg, _ := os.ReadFile(filepath.Join(out, "config.json"))
	if !strings.Contains(string(cfg), `"vocab_size": 8`) {
		t.Errorf("config.json vocab_size: %s", cfg)
	}
	if _, err := os.Stat(filepath.Join(out, "added_tokens.json")); err == nil {
		t.Error("a stale added_tokens.json is written beside the merged vocabulary")
	}
}

// TestTokenizerSourcesAndTokens covers tokenizer_source base and MODEL and
// the tokens block: forced zero rows and a row taken from another token.
func TestTokenizerSourcesAndTokens(t *testing.T) {
	dir := threeVocabs(t)
	A := func(i int) [2]float64 { return [2]float64{float64(10*i + 1), float64(10*i + 2)} }
	B := func(i int) [2]float64 { return [2]float64{float64(100 + i), float64(200 + i)} }
	C := func(i int) [2]float64 { return [2]float64{float64(-i), float64(-2 * i)} }

	p := openRecipe(t, dir, "merge_method: linear\nmodels:\n  - model: A\n  - model: B\nparameters: {weight: 1}\ntokenizer_source: base\n")
	if fmt.Sprint(p.vocab.tokens) != "[a b ab <s>]" {
		t.Fatalf("base vocabulary %q", p.vocab.tokens)
	}
	if got := rowsOf(t, p, 1, "model.embed_tokens.weight"); fmt.Sprint(got) != fmt.Sprint([][2]float64{B(0), B(2), A(2), B(3)}) {
		t.Errorf("B in A's vocabulary: %v", got)
	}

	p = openRecipe(t, dir, "merge_method: linear\nmodels:\n  - model: A\n  - model: C\nparameters: {weight: 1}\ntokenizer_source: B\n")
	if fmt.Sprint(p.vocab.tokens) != "[a c b <s> <|im_start|>]" {
		t.Fatalf("B's vocabulary %q", p.vocab.tokens)
	}
	// <|im_start|> is in neither A nor C: zero rows (and a warning).
	if got := rowsOf(t, p, 0, "model.embed_tokens.weight"); fmt.Sprint(got) != fmt.Sprint([][2]float64{A(0), C(2), A(1), A(3), {0, 0}}) {
		t.Errorf("A in B's vocabulary: %v", got)
	}
	if !strings.Contains(strings.Join(p.Warnings, "\n"), "in no model") {
		t.Errorf("no warning for a token no model has: %q", p.Warnings)
	}

	p = openRecipe(t, dir, `merge_method: linear
models:
  - model: A
  - model: B
parameters: {weight: 1}
tokenizer:
  source: base
  tokens:
    "<s>": {source: {kind: zero}, force: true}
    b: {source: B, force: true}
    new: {source: {kind: model_token, model: B, token: c}}
`)
	want := [][][2]float64{
		{A(0), B(2), A(2), {0, 0}, B(1)},
		{B(0), B(2), A(2), {0, 0}, B(1)},
	}
	for m, w := range want {
		if got := rowsOf(t, p, m, "model.embed_tokens.weight"); fmt.Sprint(got) != fmt.Sprint(w) {
			t.Errorf("model %s: %v, want %v", p.Refs[m], got, w)
		}
	}
}

func TestTokenizerProblems(t *testing.T) {
	dir := threeVocabs(t)
	for _, c := range []struct{ recipe, want string }{
		{"merge_method: linear\nmodels:\n  - model: A\n  - model: B\nparameters: {weight: 1}\n", "vocabularies differ"},
		{"merge_method: linear\nmodels:\n  - model: A\n  - model: B\nparameters: {weight: 1}\ntokenizer:\n  tokens:\n    x: {source: Q}\n", `model "Q" is not one of the merge's models`},
		{"merge_method: linear\nmodels:\n  - model: A\n  - model: B\nparameters: {weight: 1}\ntokenizer:\n  tokens:\n    x: {source: {kind: model_token, model: B, token: zz}}\n", `has no token "zz"`},
		{"merge_method: linear\nmodels:\n  - model: A\n  - model: B\nparameters: {weight: 1}\ntokenizer:\n  tokens:\n    x: {source: A}\n", `model "A" has no token "x"`},
		{"merge_method: linear\nmodels:\n  - model: A\nparameters: {weight: 1}\nchat_template: chatm1\n", `did you mean "chatml"`},
	} {
		rp := filepath.Join(dir, "r.yaml")
		os.WriteFile(rp, []byte(c.recipe), 0o644)
		r, err := ParseRecipe(rp)
		if err == nil {
			var p *Plan
			p, err = r.Open()
			if err == nil {
				p.Close()
			}
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want %q", c.recipe, err, c.want)
		}
	}
	// A lone .safetensors output cannot carry the merged tokenizer.
	p := openRecipe(t, dir, "merge_method: linear\nmodels:\n  - model: A\n  - model: B\nparameters: {weight: 1}\ntokenizer_source: union\n")
	if _, err := p.Merge(t.Context(), filepath.Join(dir, "x.safetensors"), Options{}); err == nil || !strings.Contains(err.Error(), "directory") {
		t.Errorf("merge to one file with a merged vocabulary: %v", err)
	}
}

func TestChatTemplateAuto(t *testing.T) {
	dir := threeVocabs(t)
	// B's and C's templates differ from A's; A's wins only as the first
	// of equals, so make two models share B's.
	bc := filepath.Join(dir, "C", "tokenizer_config.json")
	data, _ := os.ReadFile(filepath.Join(dir, "B", "tokenizer_config.json"))
	os.WriteFile(bc, data, 0o644)
	p := openRecipe(t, dir, "merge_method: linear\nmodels:\n  - model: A\n  - model: B\n  - model: C\nparameters: {weight: 1}\ntokenizer_source: union\nchat_template: auto\n")
	if p.chat != "{{ 'B' }} template" {
		t.Errorf("auto chose %q, want B's (two models carry it)", p.chat)
	}
	p = openRecipe(t, dir, "merge_method: linear\nmodels:\n  - model: A\nparameters: {weight: 1}\nchat_template: \"{% for m in messages %}{{ m.content }}{% endfor %}\"\n")
	if !strings.HasPrefix(p.chat, "{% for m") {
		t.Errorf("literal template: %q", p.chat)
	}
}
