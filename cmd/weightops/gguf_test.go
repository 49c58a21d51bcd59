package main

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/gguf"
	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

// TestGGUFOutputs: merge and patch apply write .gguf outputs through a
// working directory that is gone afterwards; convert reads the GGUF back;
// patch remove refuses a .gguf output.
func TestGGUFOutputs(t *testing.T) {
	d := t.TempDir()
	if _, e, code := run(t, "synth", "-q", "--family", d, "--size", "2MiB", "--hidden", "64", "--vocab", "128"); code != 0 {
		t.Fatal(e)
	}
	recipe := filepath.Join(d, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: ties\nbase_model: llama\nmodels:\n  - model: llama-math\n    parameters: {weight: 1, density: 0.5}\n  - model: llama-code\n    parameters: {weight: 1, density: 0.5}\n"), 0o644)
	out := filepath.Join(d, "merged.gguf")
	if o, e, code := run(t, "merge", recipe, out, "--type", "q8_0", "--no-vocab", "--json"); code != 0 || !strings.Contains(o, `"type":"Q8_0"`) {
		t.Fatalf("merge to gguf: %s %s", o, e)
	}
	g, err := gguf.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	if g.File.String("general.architecture") != "llama" || len(g.Tensors()) == 0 {
		t.Errorf("merged.gguf: %q, %d tensors", g.File.String("general.architecture"), len(g.Tensors()))
	}
	g.Close()
	// The merge's provenance goes along: check --inputs verifies it.
	if o, e, code := run(t, "check", out, "--inputs", filepath.Join(d, "llama"), "--inputs", filepath.Join(d, "llama-math"), "--inputs", filepath.Join(d, "llama-code")); code != 0 || !strings.Contains(o+e, "provenance") {
		t.Errorf("check --inputs on merged.gguf: %s %s", o, e)
	}
	patch := filepath.Join(d, "math.wpatch")
	if _, e, code := run(t, "diff", filepath.Join(d, "llama-math"), filepath.Join(d, "llama"), "-o", patch); code != 0 {
		t.Fatal(e)
	}
	applied := filepath.Join(d, "applied.gguf")
	if _, e, code := run(t, "patch", "apply", filepath.Join(d, "llama"), patch, "-o", applied, "--type", "f32", "--no-vocab"); code != 0 {
		t.Fatal(e)
	}
	// The applied model in GGUF F32 reads back as the fine-tune: the
	// patch is exact, F32 holds BF16 values exactly.
	ga, err := weights.Open(applied)
	if err != nil {
		t.Fatal(err)
	}
	defer ga.Close()
	ft := testutil.Open(t, filepath.Join(d, "llama-math"))[0]
	for _, ti := range ft.Tensors() {
		a, _ := ft.ReadTensor(ti.Name, nil)
		b, err := ga.ReadTensor(ti.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		x, _ := a.Float64s()
		y, _ := b.Float64s()
		for i := range x {
			if x[i] != y[i] {
				t.Fatalf("%s[%d]: %v in the fine-tune, %v in applied.gguf", ti.Name, i, x[i], y[i])
			}
		}
	}
	// It carries the patch's record, no undo records, and passes check.
	if o, e, code := run(t, "check", applied, "--inputs", patch); code != 0 || !strings.Contains(o+e, "patches") {
		t.Errorf("check on applied.gguf: %s %s", o, e)
	}
	if _, e, code := run(t, "patch", "remove", applied, patch, "-o", filepath.Join(d, "x.gguf")); code == 0 || !strings.Contains(e, "undo records") {
		t.Errorf("patch remove to gguf: %d %s", code, e)
	}
	if _, e, code := run(t, "merge", recipe, filepath.Join(d, "m.safetensors"), "--type", "q8_0"); code == 0 || !strings.Contains(e, "for a .gguf output") {
		t.Errorf("--type without gguf: %d %s", code, e)
	}
	q := filepath.Join(d, "q.gguf")
	if _, e, code := run(t, "quantize", filepath.Join(d, "llama"), "-o", q, "--type", "q4_0", "--no-vocab"); code != 0 {
		t.Errorf("quantize to gguf: %s", e)
	}
	if _, e, code := run(t, "quantize", filepath.Join(d, "llama"), "-o", q, "--bits", "4"); code == 0 || !strings.Contains(e, "ggml's --type") {
		t.Errorf("quantize --bits to gguf: %d %s", code, e)
	}
	if _, e, code := run(t, "convert", filepath.Join(d, "llama"), filepath.Join(d, "w.gguf"), "--workers", "1"); code != 2 || !strings.Contains(e, "does not apply to a .gguf output") {
		t.Errorf("convert --workers to gguf: %d %s", code, e)
	}
	entries, _ := os.ReadDir(d)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
}

// TestGGUFMatchesLlamaCpp checks weightops against files a real llama.cpp
// build made (testdata/gguf/llama/make.sh, run once): our conversion of a
// seeded synth model to each ggml type is the very file llama-quantize
// --pure makes from our F32 or F16 GGUF of it (KV order, tensor order,
// alignment and every block); our greedy generation from the F32 model is
// llama-completion's text; our tokenizer gives llama.cpp's prompt ids.
func TestGGUFMatchesLlamaCpp(t *testing.T) {
	fx := "../../testdata/gguf/llama"
	sums, err := os.ReadFile(filepath.Join(fx, "sha256.txt"))
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(sums)), "\n") {
		f := strings.Fields(line)
		want[f[1]] = f[0]
	}
	if len(want) != 14 {
		t.Fatalf("sha256.txt lists %d files, want 14", len(want))
	}
	d := t.TempDir()
	dts := []string{"f32", "f16"}
	if testing.Short() {
		dts = dts[:1]
	}
	for _, dt := range dts {
		m := filepath.Join(d, dt, "m")
		if _, e, code := run(t, "synth", "-q", "-o", m, "--hidden", "256", "--vocab", "3259", "--size", "20MiB", "--dtype", dt, "--seed", "7"); code != 0 {
			t.Fatal(e)
		}
		testutil.CopyFile(t, "../../testdata/tokenizer/llama3/tokenizer.json", filepath.Join(m, "tokenizer.json"))
		for _, typ := range []string{"q8_0", "q4_0", "q4_1", "q5_0", "q5_1", "q4_k", "q6_k"} {
			out := filepath.Join(d, dt, typ+".gguf")
			if _, e, code := run(t, "convert", "-q", m, out, "--type", typ); code != 0 {
				t.Fatal(e)
			}
			if got := testutil.SHA256File(t, out); got != want[dt+"/"+typ+".gguf"] {
				t.Errorf("%s from %s: our file's SHA-256 %s, llama-quantize's %s", typ, dt, got, want[dt+"/"+typ+".gguf"])
			}
		}
		// Requantizing our F32/F16 GGUF, as llama-quantize does, gives the
		// same file as converting the checkpoint.
		g := filepath.Join(d, dt, "m.gguf")
		if _, e, code := run(t, "convert", "-q", m, g, "--type", dt); code != 0 {
			t.Fatal(e)
		}
		re := filepath.Join(d, dt, "re-q4_k.gguf")
		if _, e, code := run(t, "quantize", "-q", g, "-o", re, "--type", "q4_k"); code != 0 {
			t.Fatal(e)
		}
		if got := testutil.SHA256File(t, re); got != want[dt+"/q4_k.gguf"] {
			t.Errorf("q4_k requantized from our %s GGUF: SHA-256 %s, llama-quantize's %s", dt, got, want[dt+"/q4_k.gguf"])
		}
	}

	small := filepath.Join(d, "small")
	if _, e, code := run(t, "synth", "-q", "-o", small, "--hidden", "256", "--vocab", "256", "--size", "3MiB", "--dtype", "f32", "--seed", "3"); code != 0 {
		t.Fatal(e)
	}
	out := filepath.Join(d, "small-q4_k.gguf")
	if _, e, code := run(t, "convert", "-q", small, out, "--type", "q4_k", "--no-vocab"); code != 0 {
		t.Fatal(e)
	}
	ours, _ := os.ReadFile(out)
	theirs, err := os.ReadFile(filepath.Join(fx, "small-q4_k.gguf"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(ours, theirs) {
		t.Errorf("small-q4_k.gguf: ours (%d bytes) differs from llama.cpp's (%d bytes)", len(ours), len(theirs))
	}

	prompt := `The quick brown fox, in 2026, said: "naïve café 🙂"`
	m := filepath.Join(d, "f32", "m")
	ids, _ := os.ReadFile(filepath.Join(fx, "prompt-ids.txt"))
	tok, err := tokenizer.Load(m)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := tok.File.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	if got := fmt.Sprint(enc.EncodeSpecial(prompt)); got != "["+strings.TrimSpace(string(ids))+"]" {
		t.Errorf("prompt ids: ours %s, llama.cpp's [%s]", got, strings.TrimSpace(string(ids)))
	}
	text, _ := os.ReadFile(filepath.Join(fx, "generate.txt"))
	o, e, code := run(t, "generate", m, "--prompt", prompt, "-n", "24")
	if code != 0 {
		t.Fatal(e)
	}
	// llama-completion prints the prompt, the new text and a blank line.
	if strings.TrimRight(prompt+o, "\n") != strings.TrimRight(string(text), "\n") {
		t.Errorf("greedy text:\n ours       %q\n llama.cpp  %q", prompt+o, text)
	}
}
