package main

import (
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/internal/jsondoc"
	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/weights"
)

// jsonDoc is the documented JSON schema of every command.
const jsonDoc = "../../docs/json.md"

func parseJSONDoc(t *testing.T) jsondoc.Doc {
	t.Helper()
	d, err := jsondoc.Parse(jsonDoc)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// checkJSON runs a command with --json and checks its output against its
// section of docs/json.md.
func checkJSON(t *testing.T, doc jsondoc.Doc, section string, dir string, args ...string) {
	t.Helper()
	stdout, stderr, code := runIn(t, dir, append(args, "--json", "-q")...)
	if code != 0 && section != "weightops check" && section != "weightops merge --check" {
		t.Errorf("%v: exit %d: %s", args, code, stderr)
		return
	}
	for _, p := range doc.Check(section, []byte(stdout)) {
		t.Errorf("%v: %s", args, p)
	}
}

// jsonCommands lists every command path that takes --json.
func jsonCommands(prefix string, cmds []*cli.Command) []string {
	var out []string
	for _, c := range cmds {
		if c.Hidden {
			continue
		}
		path := strings.TrimSpace(prefix + " " + c.Name)
		if len(c.Subcommands) > 0 {
			out = append(out, jsonCommands(path, c.Subcommands)...)
			continue
		}
		for _, f := range c.Flags {
			if slices.Contains(f.Names(), "json") {
				out = append(out, "weightops "+path)
			}
		}
	}
	return out
}

// TestJSONDocumented runs every command that takes --json on small real
// inputs (the demo models, the tiny LLaMA, a synthetic family) and checks
// each output against docs/json.md: every documented key present with
// its documented type, every key present documented, every command
// documented. The demo and the demo report are checked by their own tests
// (TestDemoPipeline, report's TestBuildRendersInChromium).
func TestJSONDocumented(t *testing.T) {
	doc := parseJSONDoc(t)
	have := map[string]bool{}
	for s := range doc {
		have[s] = true
	}
	for _, c := range jsonCommands("", newApp().Commands) {
		if !have[c] {
			t.Errorf("docs/json.md has no section for %s --json", c)
		}
	}
	dir := t.TempDir()
	abs := func(p string) string {
		a, err := filepath.Abs(p)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	demoDir := abs("../../testdata/demo")
	clean, base, blur := filepath.Join(demoDir, "clean"), filepath.Join(demoDir, "base"), filepath.Join(demoDir, "robust-blur")
	llama := abs("../../testdata/engine/tiny-llama")
	fm := abs("../../testdata/engine/data/fashion-mnist")
	images, labels := filepath.Join(fm, "t10k-images-idx3-ubyte.gz"), filepath.Join(fm, "t10k-labels-idx1-ubyte.gz")
	ties := abs("../../testdata/recipes/ties.yaml")
	in := func(p string) string { return filepath.Join(dir, p) }
	// A checkpoint with a NaN, for check's problems.
	testutil.Write(t, in("nan.safetensors"), nil, testutil.Tensor{Name: "w", DType: weights.F32, Values: []float64{1, math.NaN()}})
	os.WriteFile(in("bad.yaml"), []byte("merge_method: tiez\nmodels: [a]\n"), 0o644)
	os.WriteFile(in("moe.yaml"), []byte("base_model: fam/llama\ngate_mode: random\nexperts:\n  - source_model: fam/llama-math\n  - source_model: fam/llama-code\n"), 0o644)

	runs := []struct {
		section string
		args    []string
	}{
		{"weightops inspect", []string{"inspect", clean, "--stats"}},
		{"weightops inspect", []string{"inspect", clean}},
		{"weightops convert", []string{"convert", filepath.Join(clean, "model.safetensors"), in("c.safetensors")}},
		{"weightops convert IN OUT.gguf", []string{"convert", llama, in("l.gguf"), "--type", "q8_0", "--no-vocab"}},
		{"weightops synth", []string{"synth", "--size", "1MiB", "--hidden", "64", "--vocab", "128", in("s.safetensors")}},
		{"weightops synth", []string{"synth", "--family", in("fam"), "--size", "1MiB", "--hidden", "64", "--vocab", "128"}},
		{"weightops diff", []string{"diff", clean, base, "-o", in("tv.safetensors")}},
		{"weightops diff", []string{"diff", clean, base, "-o", in("tv.wpatch"), "--sparsify", "breadcrumbs", "--density", "0.1"}},
		{"weightops add", []string{"add", base, in("tv.safetensors"), "-o", in("add.safetensors")}},
		{"weightops scale", []string{"scale", in("tv.safetensors"), "--by", "0.5", "-o", in("half.safetensors")}},
		{"weightops negate", []string{"negate", in("tv.safetensors"), "-o", in("neg.safetensors")}},
		{"weightops interpolate", []string{"interpolate", base, clean, "--alpha", "0:1:0.5", "-o", in("sweep")}},
		{"weightops merge", []string{"merge", ties, in("merged")}},
		{"weightops merge --check", []string{"merge", ties, "--check"}},
		{"weightops merge --check", []string{"merge", in("bad.yaml"), "--check"}},
		{"weightops merge", []string{"merge", ties, in("sharded"), "--shard", "1/2"}},
		{"weightops merge", []string{"merge", ties, in("sharded"), "--shard", "2/2"}},
		{"weightops index", []string{"index", in("sharded")}},
		{"weightops moe --check", []string{"moe", in("moe.yaml"), "--check"}},
		{"weightops moe", []string{"moe", in("moe.yaml"), in("mixtral")}},
		{"weightops check", []string{"check", in("merged"), "--reference", clean, "--inputs", base}},
		{"weightops check", []string{"check", in("nan.safetensors"), "--max-abs-diff", "0.1", "--reference", in("nan.safetensors")}},
		{"weightops eval", []string{"eval", clean, "--data", images, "--labels", labels}},
		{"weightops eval", []string{"eval", clean, "--data", images, "--labels", labels, "--corrupt", "blur:1", "--seed", "2"}},
		{"weightops eval", []string{"eval", clean, "--data", images, "--labels", labels, "--corrupt", "motion_blur@2"}},
		{"weightops eval --corrupt all:S", []string{"eval", clean, "--data", images, "--labels", labels, "--corrupt", "extra:1,5", "--baseline", base}},
		{"weightops eval --corrupt all:S", []string{"eval", clean, "--data", images, "--labels", labels, "--corrupt", "extra:2"}},
		{"weightops eval-lm", []string{"eval-lm", llama, "--tokens", filepath.Join(llama, "tokens.txt")}},
		{"weightops generate", []string{"generate", llama, "--prompt-ids", "1,2,3", "-n", "3"}},
		{"weightops sensitivity", []string{"sensitivity", clean, "--data", images, "--labels", labels, "--rel", "0.1", "--trials", "2"}},
		{"weightops sensitivity", []string{"sensitivity", clean, "--data", images, "--labels", labels, "--rel", "0.1", "--trials", "1", "--worst-case", "--ascent-epochs", "1"}},
		{"weightops rift", []string{"rift", clean, "-o", in("rift"), "--data", images, "--labels", labels, "--corrupt", "gaussian_noise:0.3", "--epochs", "1", "--ascent-epochs", "1", "--alphas", "0,1"}},
		{"weightops rift", []string{"rift", clean, "-o", in("rift2"), "--data", images, "--labels", labels, "--module", "head.2", "--epochs", "1", "--alphas", "0.5"}},
		{"weightops signature stats", []string{"signature", "stats", "--base", base, clean, blur}},
		{"weightops signature stats", []string{"signature", "stats", clean, blur}},
		{"weightops signature extract", []string{"signature", "extract", "--base", base, "--clean", clean, "--robust", blur, "--layers", "2", "--quantize", "4bit-asym-block64", "-o", in("rws.wpatch")}},
		{"weightops patch info", []string{"patch", "info", in("rws.wpatch")}},
		{"weightops patch apply", []string{"patch", "apply", clean, in("rws.wpatch"), "-o", in("patched.safetensors")}},
		{"weightops patch remove", []string{"patch", "remove", in("patched.safetensors"), in("rws.wpatch"), "-o", in("unpatched.safetensors")}},
		{"weightops patch apply --recalibrate-bn", []string{"patch", "apply", clean, in("rws.wpatch"), "-o", in("recal.safetensors"), "--recalibrate-bn", images, "--corrupt", "blur:1"}},
		{"weightops quantize", []string{"quantize", in("tv.wpatch"), "--bits", "4", "-o", in("tv4.wpatch")}},
		{"weightops quantize", []string{"quantize", clean, "-o", in("q")}},
		{"weightops lowrank", []string{"lowrank", in("tv.safetensors"), "--rank", "2", "-o", in("lr.safetensors")}},
		{"weightops lora extract", []string{"lora", "extract", clean, "--base", base, "--rank", "2", "-o", in("lora")}},
		{"weightops lora merge", []string{"lora", "merge", base, in("lora"), "-o", in("lm.safetensors")}},
		{"weightops report BASE MODEL...", []string{"report", base, clean, blur, "-o", in("report")}},
	}
	for _, r := range runs {
		checkJSON(t, doc, r.section, dir, r.args...)
	}
}
