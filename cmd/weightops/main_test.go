package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

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
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		panic(string(out))
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

func run(t *testing.T, args ...string) (stdout, stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
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
	if err := json.Unmarshal([]byte(stdout), &res); err != nil || len(res.Files) != 1 {
		t.Fatalf("merge --json: %q %v", stdout, err)
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
