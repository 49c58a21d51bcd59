package main

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/weights"
)

var bin string

// TestMain builds the real binary once so tests check what a user or a CI
// job sees: stdout, one stderr line, the exit code, files left behind.
func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "weightops-cli")
	if err != nil {
		panic(err)
	}
	bin = filepath.Join(dir, "weightops")
	// The binaries the tests run keep their digest cache here, not in
	// the user's cache directory.
	os.Setenv("WEIGHTOPS_HASH_CACHE", filepath.Join(dir, "hash-cache"))
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	return runIn(t, "", args...)
}

// runIn runs the binary in directory dir ("" for the test's).
func runIn(t *testing.T, dir string, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = dir
	var o, e bytes.Buffer
	cmd.Stdout, cmd.Stderr = &o, &e
	err := cmd.Run()
	if ee, ok := err.(*exec.ExitError); ok {
		code = ee.ExitCode()
	} else if err != nil {
		t.Fatal(err)
	}
	return o.String(), e.String(), code
}

func writeModel(t *testing.T, p string) {
	t.Helper()
	f32 := make([]byte, 4*6)
	_ = weights.Encode(weights.F32, []float64{1, 2, 3, 4, 5, 6}, f32)
	err := weights.WriteSafetensors(p, []weights.Tensor{
		{TensorInfo: weights.TensorInfo{Name: "layers.0.weight", DType: weights.F32, Shape: []int64{2, 3}}, Data: f32},
		{TensorInfo: weights.TensorInfo{Name: "layers.0.bias", DType: weights.I64, Shape: []int64{1}}, Data: make([]byte, 8)},
	}, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
}

func TestInspectTableAndJSON(t *testing.T) {
	p := filepath.Join(t.TempDir(), "m.safetensors")
	writeModel(t, p)
	out, errOut, code := run(t, "inspect", "--stats", p)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, want := range []string{"layers.0.weight", "[2, 3]", "F32", "2 tensors, 7 parameters", "format: pt"} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	out, _, code = run(t, "inspect", "--stats", "--json", p)
	var rep weights.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 0 {
		t.Fatalf("json: %v\n%s", err, out)
	}
	// mean of 1..6 is 3.5, population std sqrt(35/12).
	s := rep.Tensors[1].Stats
	if rep.Count != 2 || rep.Bytes != 32 || rep.Tensors[1].Name != "layers.0.weight" || s.Mean != 3.5 || s.Min != 1 || s.Max != 6 {
		t.Errorf("report %+v stats %+v", rep, s)
	}
}

func TestConvertAndShard(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	writeModel(t, p)
	out := filepath.Join(dir, "bf16.safetensors")
	if _, e, code := run(t, "convert", "--dtype", "bf16", "-q", p, out); code != 0 {
		t.Fatalf("convert: %s", e)
	}
	c, err := weights.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	info, _ := c.Info("layers.0.weight")
	if info.DType != weights.BF16 || c.Metadata()["weightops.source"] != "m.safetensors" {
		t.Errorf("converted: %v %v", info, c.Metadata())
	}
	c.Close()
	sharded := filepath.Join(dir, "sharded")
	if _, e, code := run(t, "convert", "--shard-size", "10", p, sharded); code != 0 {
		t.Fatalf("convert sharded: %s", e)
	}
	if _, err := os.Stat(filepath.Join(sharded, weights.IndexName)); err != nil {
		t.Fatal(err)
	}
	o, _, code := run(t, "inspect", "--json", sharded)
	var rep weights.Report
	if json.Unmarshal([]byte(o), &rep); code != 0 || rep.Count != 2 {
		t.Errorf("sharded inspect: %s", o)
	}
	// A model directory converted into a directory takes its config and
	// tokenizer along, the config saying the dtype now written.
	src := filepath.Join(dir, "hf")
	os.Mkdir(src, 0o755)
	writeModel(t, filepath.Join(src, "model.safetensors"))
	os.WriteFile(filepath.Join(src, "config.json"), []byte(`{"torch_dtype": "float32", "model_type": "x"}`), 0o644)
	os.WriteFile(filepath.Join(src, "tokenizer.json"), []byte(`{"v": 1}`), 0o644)
	hf16 := filepath.Join(dir, "hf16")
	if _, e, code := run(t, "convert", "--dtype", "f16", "-q", src, hf16); code != 0 {
		t.Fatalf("convert dir: %s", e)
	}
	cfg, _ := os.ReadFile(filepath.Join(hf16, "config.json"))
	tok, _ := os.ReadFile(filepath.Join(hf16, "tokenizer.json"))
	if string(cfg) != `{"torch_dtype": "float16", "model_type": "x"}` || string(tok) != `{"v": 1}` {
		t.Errorf("side files: config %s tokenizer %s", cfg, tok)
	}
	if _, err := os.Stat(filepath.Join(hf16, "model.safetensors")); err != nil {
		t.Error(err)
	}
}

// TestBadInputFailsLoudly: a truncated checkpoint gives exit 1, one stderr
// line naming the file, and no output file.
func TestBadInputFailsLoudly(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "m.safetensors")
	writeModel(t, p)
	raw, _ := os.ReadFile(p)
	bad := filepath.Join(dir, "truncated.safetensors")
	os.WriteFile(bad, raw[:len(raw)-3], 0o644)
	out := filepath.Join(dir, "out.safetensors")
	for _, args := range [][]string{
		{"inspect", bad},
		{"convert", bad, out},
		{"convert", "--dtype", "i8", p, out},
		{"inspect", filepath.Join(dir, "missing.safetensors")},
		{"inspect"},
		{"inspect", "--bogus", p},
		{"nosuch"},
	} {
		stdout, stderr, code := run(t, args...)
		if code == 0 {
			t.Errorf("%v: exit 0", args)
		}
		if lines := strings.Count(strings.TrimSpace(stderr), "\n"); lines != 0 || !strings.HasPrefix(stderr, "weightops: ") {
			t.Errorf("%v: stderr should be one 'weightops:' line, got %q", args, stderr)
		}
		if stdout != "" {
			t.Errorf("%v: printed %q on stdout", args, stdout)
		}
	}
	if _, stderr, _ := run(t, "inspect", bad); !strings.Contains(stderr, bad) {
		t.Errorf("error does not name the file: %q", stderr)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 2 {
		t.Errorf("failed commands left files behind: %d entries", len(ents))
	}
}

func TestSynthIsDeterministic(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.safetensors"), filepath.Join(dir, "b.safetensors")
	for _, p := range []string{a, b} {
		if _, e, code := run(t, "synth", "--size", "1MB", "--hidden", "64", "--seed", "3", p); code != 0 {
			t.Fatal(e)
		}
	}
	ra, _ := os.ReadFile(a)
	rb, _ := os.ReadFile(b)
	if !bytes.Equal(ra, rb) || len(ra) < 500_000 {
		t.Errorf("synth not reproducible or too small: %d vs %d bytes", len(ra), len(rb))
	}
}

// TestMergeAndArithmeticCommands drives the commands the way the README
// shows them, flags after positional arguments included.
func TestMergeAndArithmeticCommands(t *testing.T) {
	dir := t.TempDir()
	base := filepath.Join(dir, "base.safetensors")
	ft := filepath.Join(dir, "ft.safetensors")
	for i, p := range []string{base, ft} {
		if _, e, code := run(t, "synth", "--size", "300KB", "--hidden", "32", "--vocab", "64", "--seed", fmt.Sprint(i+1), p); code != 0 {
			t.Fatal(e)
		}
	}
	tv := filepath.Join(dir, "tv.safetensors")
	if _, e, code := run(t, "diff", ft, base, "-o", tv, "-q", "--dtype", "f64"); code != 0 {
		t.Fatalf("diff: %s", e)
	}
	back := filepath.Join(dir, "back.safetensors")
	if _, e, code := run(t, "add", base, tv, "-o", back, "--dtype", "bf16"); code != 0 {
		t.Fatalf("add: %s", e)
	}
	// base + (ft − base) with an F64 task vector rounds back to ft exactly
	// in BF16: the difference of two BF16 values is exact in F64 (in F32 it
	// is not when their exponents are far apart).
	a, _ := weights.Open(back)
	b, _ := weights.Open(ft)
	defer a.Close()
	defer b.Close()
	for _, info := range b.Tensors() {
		x, _ := a.ReadTensor(info.Name, nil)
		y, _ := b.ReadTensor(info.Name, nil)
		if !bytes.Equal(x.Data, y.Data) {
			t.Fatalf("%s: base + (ft − base) != ft", info.Name)
		}
	}
	recipe := filepath.Join(dir, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: breadcrumbs\nbase_model: base.safetensors\nmodels:\n  - model: ft.safetensors\n    parameters: {weight: 1, density: 0.9, gamma: 0.01}\n"), 0o644)
	out := filepath.Join(dir, "merged")
	stdout, e, code := run(t, "merge", recipe, "-o", out, "--json")
	if code != 0 {
		t.Fatalf("merge: %s", e)
	}
	var res struct{ Files []string }
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || len(res.Files) != 3 || filepath.Base(res.Files[1]) != "README.md" {
		t.Fatalf("merge --json (weights, card, recipe): %q %v", stdout, err)
	}
	stdout, e, code = run(t, "merge", recipe, filepath.Join(dir, "nocard"), "--json", "--no-card")
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || code != 0 || len(res.Files) != 1 {
		t.Fatalf("merge --no-card: %q %s", stdout, e)
	}
	os.WriteFile(recipe, []byte("merge_method: breadcrumb\nbase_model: base.safetensors\nmodels: [ft.safetensors]\n"), 0o644)
	_, e, code = run(t, "merge", recipe, "-o", filepath.Join(dir, "bad"))
	if code == 0 || !strings.Contains(e, `did you mean "breadcrumbs"`) {
		t.Errorf("bad recipe: exit %d, %q", code, e)
	}
	if _, err := os.Stat(filepath.Join(dir, "bad")); err == nil {
		t.Error("a failed merge left its output directory")
	}
	sweep := filepath.Join(dir, "sweep")
	stdout, e, code = run(t, "interpolate", base, ft, "--alpha", "0:1:0.5", "-o", sweep)
	if code != 0 || strings.Count(stdout, "\n") != 3 {
		t.Fatalf("interpolate sweep: %s %s", stdout, e)
	}
}

// TestSignatureAndPatchCommands: extract a 4-bit RWS of the first layers,
// inspect it, apply it to the clean model and remove it again (the file
// comes back byte for byte), quantize a patch and a checkpoint, and save a
// sparsified diff as a patch.
func TestSignatureAndPatchCommands(t *testing.T) {
	dir := t.TempDir()
	pre := filepath.Join(dir, "pre.safetensors")
	if _, e, code := run(t, "synth", "--size", "2MB", "--hidden", "64", "--vocab", "128", "--seed", "1", "--dtype", "f32", pre); code != 0 {
		t.Fatal(e)
	}
	ck, _ := weights.Open(pre)
	perturb := func(name string, seed uint64, scale float64) string {
		p := filepath.Join(dir, name+".safetensors")
		rng := rand.New(rand.NewPCG(seed, 9))
		var ts []weights.Tensor
		for _, info := range ck.Tensors() {
			ten, _ := ck.ReadTensor(info.Name, nil)
			v, _ := ten.Float64s()
			for i := range v {
				v[i] += rng.NormFloat64() * scale
			}
			b := make([]byte, len(ten.Data))
			weights.Encode(weights.F32, v, b)
			ts = append(ts, weights.Tensor{TensorInfo: info, Data: b})
		}
		if err := weights.WriteSafetensors(p, ts, map[string]string{"format": "pt"}); err != nil {
			t.Fatal(err)
		}
		return p
	}
	clean := perturb("clean", 1, 0.002)
	robust := perturb("robust", 2, 0.002)
	ck.Close()
	sig := filepath.Join(dir, "sig.wpatch")
	out, e, code := run(t, "signature", "extract", "--base", pre, "--clean", clean, "--robust", robust, "--layers", "2", "--quantize", "4bit-sym-block64", "-o", sig, "--json")
	if code != 0 {
		t.Fatalf("extract: %s", e)
	}
	var s struct {
		Tensors      int
		RatioVsModel float64 `json:"ratio_vs_model_f32"`
		QuantRelL2   float64 `json:"quant_rel_l2"`
	}
	if err := json.Unmarshal([]byte(out), &s); err != nil || s.Tensors != 2 || s.QuantRelL2 <= 0 || s.QuantRelL2 > 0.2 || s.RatioVsModel < 10 {
		t.Errorf("extract summary %+v (%v): %s", s, err, out)
	}
	if out, e, code = run(t, "patch", "info", sig); code != 0 || !strings.Contains(out, "kind rws") || !strings.Contains(out, "4bit-sym-block64") {
		t.Errorf("info: %s %s", out, e)
	}
	patched := filepath.Join(dir, "patched.safetensors")
	if _, e, code := run(t, "patch", "apply", clean, sig, "--scale", "0.8", "-o", patched); code != 0 {
		t.Fatalf("apply: %s", e)
	}
	back := filepath.Join(dir, "back.safetensors")
	if _, e, code := run(t, "patch", "remove", patched, sig, "-o", back); code != 0 {
		t.Fatalf("remove: %s", e)
	}
	a, _ := os.ReadFile(clean)
	b, _ := os.ReadFile(back)
	if !bytes.Equal(a, b) {
		t.Error("apply then remove did not restore the clean model byte for byte")
	}
	// Applying to a model the patch was not made for warns, --strict fails.
	if _, e, code := run(t, "patch", "apply", robust, sig, "-o", filepath.Join(dir, "x.safetensors")); code != 0 || !strings.Contains(e, "warning") {
		t.Errorf("apply to another base: exit %d, %q", code, e)
	}
	if _, e, code := run(t, "patch", "apply", robust, sig, "--strict", "-o", filepath.Join(dir, "y.safetensors")); code == 0 || strings.Count(strings.TrimSpace(e), "\n") != 0 {
		t.Errorf("--strict: exit %d, %q", code, e)
	}
	f32sig := filepath.Join(dir, "sig32.wpatch")
	if _, e, code := run(t, "signature", "extract", "--base", pre, "--clean", clean, "--robust", robust, "--energy", "0.5", "-o", f32sig); code != 0 {
		t.Fatalf("extract f32: %s", e)
	}
	if _, e, code := run(t, "quantize", f32sig, "--bits", "8", "--group", "32", "-o", filepath.Join(dir, "q8.wpatch")); code != 0 {
		t.Fatalf("quantize patch: %s", e)
	}
	qdir := filepath.Join(dir, "q")
	if _, e, code := run(t, "quantize", clean, "--bits", "8", "--granularity", "channel", "-o", qdir); code != 0 {
		t.Fatalf("quantize model: %s", e)
	}
	for _, f := range []string{"model.safetensors", "model.wq"} {
		if _, err := os.Stat(filepath.Join(qdir, f)); err != nil {
			t.Error(err)
		}
	}
	bc := filepath.Join(dir, "bc.wpatch")
	if out, e, code := run(t, "diff", robust, clean, "--sparsify", "breadcrumbs", "--density", "0.3", "--gamma", "0.01", "-o", bc, "--json"); code != 0 || !strings.Contains(out, `"kind":"breadcrumbs"`) {
		t.Fatalf("diff to patch: %s %s", out, e)
	}
	if out, e, code := run(t, "signature", "stats", "--base", pre, clean, robust); code != 0 || !strings.Contains(out, "model.layers.0.self_attn.q_proj") {
		t.Errorf("stats: %s %s", out, e)
	}
	// A corrupted patch is one clear error line.
	raw, _ := os.ReadFile(sig)
	raw[len(raw)/2] ^= 0xff
	os.WriteFile(sig, raw, 0o644)
	if _, e, code := run(t, "patch", "apply", clean, sig, "-o", filepath.Join(dir, "z.safetensors")); code == 0 || !strings.Contains(e, sig) {
		t.Errorf("corrupt patch: exit %d, %q", code, e)
	}
}

// TestShardedRunsEqualOneRun: n `merge --shard i/n` runs plus `index` give
// the same tensors, byte for byte, and the same metadata as one run; so do
// sharded `patch apply` runs, and the stitched patched model unpatches.
func TestShardedRunsEqualOneRun(t *testing.T) {
	dir := t.TempDir()
	for i, n := range []string{"base", "m1", "m2"} {
		if _, e, code := run(t, "synth", "--size", "600KB", "--hidden", "32", "--vocab", "200", "--seed", fmt.Sprint(i+1), filepath.Join(dir, n+".safetensors")); code != 0 {
			t.Fatal(e)
		}
	}
	recipe := filepath.Join(dir, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: ties\nbase_model: base.safetensors\nmodels:\n  - model: m1.safetensors\n    parameters: {weight: 0.5, density: 0.7}\n  - model: m2.safetensors\n    parameters: {weight: 0.5, density: 0.7}\n"), 0o644)
	one := filepath.Join(dir, "one")
	if _, e, code := run(t, "merge", recipe, "-o", one); code != 0 {
		t.Fatal(e)
	}
	many := filepath.Join(dir, "many")
	for i := 1; i <= 3; i++ {
		if _, e, code := run(t, "merge", recipe, "-o", many, "--shard", fmt.Sprintf("%d/3", i)); code != 0 {
			t.Fatal(e)
		}
	}
	if _, e, code := run(t, "index", many); code != 0 {
		t.Fatal(e)
	}
	same := func(a, b string) {
		t.Helper()
		ca, err := weights.Open(a)
		if err != nil {
			t.Fatal(err)
		}
		defer ca.Close()
		cb, err := weights.Open(b)
		if err != nil {
			t.Fatal(err)
		}
		defer cb.Close()
		if len(ca.Tensors()) != len(cb.Tensors()) {
			t.Fatalf("%d vs %d tensors", len(ca.Tensors()), len(cb.Tensors()))
		}
		for _, info := range ca.Tensors() {
			x, _ := ca.ReadTensor(info.Name, nil)
			y, err := cb.ReadTensor(info.Name, nil)
			if err != nil || !bytes.Equal(x.Data, y.Data) || x.DType != y.DType {
				t.Fatalf("%s differs between the runs", info.Name)
			}
		}
		ma, mb := ca.Metadata(), cb.Metadata()
		for k, v := range ma {
			if k != "total_size" && mb[k] != v {
				t.Fatalf("metadata %s differs", k)
			}
		}
	}
	same(one, many)
	// A missing shard is reported by index.
	os.Remove(filepath.Join(many, "model-00002-of-00003.safetensors"))
	if _, e, code := run(t, "index", many); code == 0 || !strings.Contains(e, "model-00002-of-00003.safetensors is missing") {
		t.Errorf("index with a missing shard: %q", e)
	}
	// Sharded patch apply, stitched, equals one apply and unpatches.
	pt := filepath.Join(dir, "d.wpatch")
	if _, e, code := run(t, "diff", filepath.Join(dir, "m1.safetensors"), filepath.Join(dir, "base.safetensors"), "--sparsify", "breadcrumbs", "--density", "0.2", "-o", pt); code != 0 {
		t.Fatal(e)
	}
	base := filepath.Join(dir, "base.safetensors")
	onePatched := filepath.Join(dir, "p1.safetensors")
	if _, e, code := run(t, "patch", "apply", base, pt, "-o", onePatched); code != 0 {
		t.Fatal(e)
	}
	pdir := filepath.Join(dir, "pshards")
	for i := 1; i <= 2; i++ {
		if _, e, code := run(t, "patch", "apply", base, pt, "-o", pdir, "--shard", fmt.Sprintf("%d/2", i)); code != 0 {
			t.Fatal(e)
		}
	}
	if _, e, code := run(t, "index", pdir); code != 0 {
		t.Fatal(e)
	}
	same(onePatched, pdir)
	back := filepath.Join(dir, "back.safetensors")
	if _, e, code := run(t, "patch", "remove", pdir, pt, "-o", back); code != 0 {
		t.Fatal(e)
	}
	same(base, back)
}

// TestSignalsStopCleanly: SIGTERM (a CI timeout), SIGINT (Ctrl-C) and
// SIGHUP stop a running merge with exit code 128+signal, one line on
// stderr, no output and no temp file left.
func TestSignalsStopCleanly(t *testing.T) {
	if testing.Short() {
		t.Skip("interrupts three merges (about 8 s); skipped with -short")
	}
	d := t.TempDir()
	for i := 1; i <= 3; i++ {
		if _, e, code := run(t, "synth", "-q", "--size", "40MiB", "--seed", fmt.Sprint(i), filepath.Join(d, fmt.Sprintf("m%d.safetensors", i))); code != 0 {
			t.Fatal(e)
		}
	}
	recipe := filepath.Join(d, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: breadcrumbs\nbase_model: m1.safetensors\nmodels:\n"+
		"  - model: m2.safetensors\n    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}\n"+
		"  - model: m3.safetensors\n    parameters: {weight: 0.5, density: 0.9, gamma: 0.01}\n"), 0o644)
	temps := func() []string {
		m, _ := filepath.Glob(filepath.Join(d, ".*.tmp-*"))
		return m
	}
	for _, c := range []struct {
		sig  syscall.Signal
		code int
	}{{syscall.SIGTERM, 143}, {syscall.SIGINT, 130}, {syscall.SIGHUP, 129}} {
		out := filepath.Join(d, fmt.Sprintf("out-%d.safetensors", c.sig))
		cmd := exec.Command(bin, "merge", "-q", recipe, "-o", out)
		var stderr bytes.Buffer
		cmd.Stderr = &stderr
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Signal once the output's temp file exists: the merge is running.
		deadline := time.Now().Add(20 * time.Second)
		for len(temps()) == 0 && time.Now().Before(deadline) {
			time.Sleep(2 * time.Millisecond)
		}
		if len(temps()) == 0 {
			cmd.Process.Kill()
			t.Fatalf("%v: no temp file appeared", c.sig)
		}
		cmd.Process.Signal(c.sig)
		err := cmd.Wait()
		var ee *exec.ExitError
		if !errors.As(err, &ee) || ee.ExitCode() != c.code {
			t.Errorf("%v: %v, want exit code %d (stderr %q)", c.sig, err, c.code, stderr.String())
		}
		if !strings.Contains(stderr.String(), "interrupted") || strings.Count(strings.TrimSpace(stderr.String()), "\n") != 0 {
			t.Errorf("%v: stderr %q, want one line saying it was interrupted", c.sig, stderr.String())
		}
		if l := temps(); len(l) > 0 {
			t.Errorf("%v: temp files left: %v", c.sig, l)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("%v: output written", c.sig)
		}
	}
}

// TestDirectoryOutputsCarrySideFiles: every command writing a model
// directory from a model directory takes its config.json and tokenizer
// along (config unchanged when the dtype is), so transformers loads it.
func TestDirectoryOutputsCarrySideFiles(t *testing.T) {
	dir := t.TempDir()
	fam := filepath.Join(dir, "fam")
	if _, e, code := run(t, "synth", "--family", fam, "-q", "--size", "2MiB", "--hidden", "64", "--vocab", "256"); code != 0 {
		t.Fatal(e)
	}
	base, ft := filepath.Join(fam, "llama"), filepath.Join(fam, "llama-math")
	for _, m := range []string{base, ft} {
		os.WriteFile(filepath.Join(m, "tokenizer.json"), []byte(`{"model": {}}`), 0o644)
	}
	cfg, _ := os.ReadFile(filepath.Join(base, "config.json"))
	out := func(name string) string { return filepath.Join(dir, name) }
	tv := out("tv.safetensors")
	if _, e, code := run(t, "diff", ft, base, "-o", tv, "-q"); code != 0 {
		t.Fatal(e)
	}
	patch := out("p.wpatch")
	if _, e, code := run(t, "diff", ft, base, "-o", patch, "--sparsify", "breadcrumbs", "--density", "0.1", "-q"); code != 0 {
		t.Fatal(e)
	}
	recipe := out("r.yaml")
	os.WriteFile(recipe, []byte("merge_method: task_arithmetic\nbase_model: "+base+"\nmodels:\n  - model: "+ft+"\n    parameters: {weight: 0.5}\n"), 0o644)
	for _, c := range [][]string{
		{"convert", base, out("convert")},
		{"add", base, tv, "-o", out("add")},
		{"interpolate", base, ft, "--alpha", "0.5", "-o", out("interpolate")},
		{"patch", "apply", base, patch, "-o", out("patched")},
		{"patch", "remove", out("patched"), patch, "-o", out("unpatched")},
		{"merge", recipe, out("merge")},
		{"lowrank", ft, "--base", base, "--rank", "4", "-o", out("lowrank")},
		{"quantize", base, "-o", out("quantize")},
	} {
		if _, e, code := run(t, append(c, "-q")...); code != 0 {
			t.Errorf("%v: %s", c, e)
			continue
		}
		o := c[len(c)-1]
		got, err := os.ReadFile(filepath.Join(o, "config.json"))
		if err != nil || !bytes.Equal(got, cfg) {
			t.Errorf("%v: config.json %v\n%s", c, err, got)
		}
		if tok, _ := os.ReadFile(filepath.Join(o, "tokenizer.json")); string(tok) != `{"model": {}}` {
			t.Errorf("%v: tokenizer.json %q", c, tok)
		}
	}
}

// TestSynthTiedEmbeddings: --tie-embeddings writes no lm_head and says so
// in config.json, and the engine loads it with the embeddings as the head
// (the same perplexity as the model with lm_head written out as a copy of
// them).
func TestSynthTiedEmbeddings(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "tied")
	if _, e, code := run(t, "synth", "-q", "--tie-embeddings", "--size", "1MB", "--hidden", "64", "--vocab", "300", dir); code != 0 {
		t.Fatal(e)
	}
	ck, err := weights.Open(filepath.Join(dir, "model.safetensors"))
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	if _, ok := ck.Info("lm_head.weight"); ok {
		t.Fatal("tied model has lm_head.weight")
	}
	cfg, _ := os.ReadFile(filepath.Join(dir, "config.json"))
	if !strings.Contains(string(cfg), `"tie_word_embeddings": true`) {
		t.Fatalf("config.json does not tie the embeddings: %s", cfg)
	}
	// The untied twin: the same tensors plus lm_head = the embeddings.
	twin := filepath.Join(t.TempDir(), "twin")
	os.MkdirAll(twin, 0o755)
	infos := append(ck.Tensors(), weights.TensorInfo{Name: "lm_head.weight", DType: weights.BF16, Shape: []int64{300, 64}})
	w, _, err := weights.CreateOutput(filepath.Join(twin, "model.safetensors"), infos, map[string]string{"format": "pt"}, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range infos {
		src := info.Name
		if src == "lm_head.weight" {
			src = "model.embed_tokens.weight"
		}
		x, err := ck.ReadTensor(src, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := w.WriteTensor(info.Name, x.Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(twin, "config.json"), []byte(strings.Replace(string(cfg), `"tie_word_embeddings": true`, `"tie_word_embeddings": false`, 1)), 0o644)
	toks := []int{1, 5, 9, 200, 17, 3, 299, 42, 8, 8, 120}
	var ppl [2]float64
	for i, d := range []string{dir, twin} {
		m, err := engine.LoadLlama(d)
		if err != nil {
			t.Fatal(err)
		}
		r, err := m.Perplexity(toks, 8)
		if err != nil {
			t.Fatal(err)
		}
		ppl[i] = r.Perplexity
	}
	if ppl[0] != ppl[1] || math.IsNaN(ppl[0]) || ppl[0] <= 1 {
		t.Errorf("tied perplexity %v, untied twin %v", ppl[0], ppl[1])
	}
}

// TestSharedRequiredFlag: a required flag shared by several commands (the
// arithmetic commands' -o) is required at each of them, not only at the
// first one prepared.
func TestSharedRequiredFlag(t *testing.T) {
	d := t.TempDir()
	a, b := filepath.Join(d, "a.safetensors"), filepath.Join(d, "b.safetensors")
	writeModel(t, a)
	writeModel(t, b)
	for _, args := range [][]string{{"diff", a, b}, {"add", a, b}, {"interpolate", a, b}, {"scale", "--by", "2", a}, {"negate", a}} {
		_, e, code := run(t, args...)
		if code != 2 || !strings.Contains(e, "missing -o/--output") {
			t.Errorf("%s without -o: exit %d, stderr %q", args[0], code, e)
		}
	}
}
