package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/internal/parallel"
)

// A command that only the test binary has: it panics inside a worker, as a
// bug would.
func init() {
	register(&cli.Command{Name: "test-panic", Hidden: true, Action: func(c *cli.Context) error {
		return parallel.Items(context.Background(), 4, 2, func(_, i int) error {
			if i == 2 {
				panic("a bug")
			}
			return nil
		})
	}})
}

// TestPanicIsOneLineAndExit3: a panic anywhere (here in a worker) ends in
// one line and exit code 3, not a goroutine dump.
func TestPanicIsOneLineAndExit3(t *testing.T) {
	r, w, _ := os.Pipe()
	old := os.Stderr
	os.Stderr = w
	code := execute([]string{"weightops", "test-panic"})
	os.Stderr = old
	w.Close()
	buf := make([]byte, 4096)
	n, _ := r.Read(buf)
	msg := string(buf[:n])
	if code != 3 || strings.Count(strings.TrimSpace(msg), "\n") != 0 || !strings.Contains(msg, "internal error") {
		t.Errorf("exit %d, stderr %q", code, msg)
	}
}

// runQuick runs the binary and fails the test if it does not finish in
// time: a FIFO or a device must not hang a command.
func runQuick(t *testing.T, args ...string) (stderr string, code int) {
	t.Helper()
	cmd := exec.Command(bin, args...)
	var e strings.Builder
	cmd.Stderr = &e
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		if ee, ok := err.(*exec.ExitError); ok {
			code = ee.ExitCode()
		}
	case <-time.After(20 * time.Second):
		cmd.Process.Kill()
		t.Fatalf("%v: hung", args)
	}
	return e.String(), code
}

// TestHostileInputsFailFast: FIFOs, devices and oversized side files where
// models, recipes, configs and token files belong end in one error line,
// exit 1, promptly, with no output and no temp file.
func TestHostileInputsFailFast(t *testing.T) {
	d := t.TempDir()
	model := filepath.Join(d, "m.safetensors")
	writeModel(t, model)
	fifo := filepath.Join(d, "fifo")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("no FIFOs:", err)
	}
	zero := filepath.Join(d, "zero")
	os.Symlink("/dev/zero", zero)
	recipe := filepath.Join(d, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: linear\nmodels: [{model: "+fifo+", parameters: {weight: 1}}]\n"), 0o644)
	lm := filepath.Join(d, "lm")
	os.MkdirAll(lm, 0o755)
	os.Symlink("/dev/zero", filepath.Join(lm, "config.json"))
	writeModel(t, filepath.Join(lm, "model.safetensors"))
	out := filepath.Join(d, "out")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"inspect", fifo}, "not a regular file"},
		{[]string{"inspect", zero}, "not a regular file"},
		{[]string{"merge", fifo, "-o", out}, "not a regular file"},
		{[]string{"merge", zero, "-o", out}, "not a regular file"},
		{[]string{"merge", recipe, "-o", out}, "not a regular file"},
		{[]string{"eval-lm", lm, "--tokens", zero}, "not a regular file"},
		{[]string{"eval-lm", filepath.Join(lm, "model.safetensors"), "--tokens", fifo}, "not a regular file"},
		{[]string{"patch", "apply", model, fifo, "-o", out}, "not a regular file"},
		{[]string{"quantize", fifo, "-o", out}, "not a regular file"},
	} {
		stderr, code := runQuick(t, c.args...)
		if code != 1 || !strings.Contains(stderr, c.want) || strings.Count(strings.TrimSpace(stderr), "\n") != 0 {
			t.Errorf("%v: exit %d, stderr %q, want one line with %q", c.args, code, stderr, c.want)
		}
	}
	if _, err := os.Stat(out); !os.IsNotExist(err) {
		t.Error("a failed command wrote its output")
	}
	if m, _ := filepath.Glob(filepath.Join(d, ".*.tmp-*")); len(m) > 0 {
		t.Errorf("temp files left: %v", m)
	}
}

// TestMergeRefusesNonFiniteInputs: a NaN in a model fails a merge naming
// file, tensor and count; --allow-nonfinite merges it (NaN out there).
func TestMergeRefusesNonFiniteInputs(t *testing.T) {
	d := t.TempDir()
	good := filepath.Join(d, "a.safetensors")
	writeModel(t, good)
	badM := filepath.Join(d, "b.safetensors")
	raw, _ := os.ReadFile(good)
	// The F32 weight [1..6] is the file's last 24 bytes (the wider I64
	// tensor comes first): make its fourth value NaN.
	copy(raw[len(raw)-12:], []byte{0x00, 0x00, 0xc0, 0x7f})
	os.WriteFile(badM, raw, 0o644)
	recipe := filepath.Join(d, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: linear\nmodels: [{model: a.safetensors, parameters: {weight: 1}}, {model: b.safetensors, parameters: {weight: 1}}]\n"), 0o644)
	_, stderr, code := run(t, "merge", recipe, "-o", filepath.Join(d, "o.safetensors"))
	if code != 1 || !strings.Contains(stderr, "b.safetensors") || !strings.Contains(stderr, `tensor "layers.0.weight"`) || !strings.Contains(stderr, "1 NaN") {
		t.Errorf("exit %d: %q", code, stderr)
	}
	if _, stderr, code := run(t, "merge", recipe, "--allow-nonfinite", "-o", filepath.Join(d, "o.safetensors")); code != 0 {
		t.Errorf("--allow-nonfinite: exit %d: %s", code, stderr)
	}
}

// TestQuantizeModelDirectory: a model directory (not a file) is a
// checkpoint to quantize, its side files copied; a patch is told apart by
// its magic bytes.
func TestQuantizeModelDirectory(t *testing.T) {
	d := t.TempDir()
	m := filepath.Join(d, "m")
	os.MkdirAll(m, 0o755)
	writeModel(t, filepath.Join(m, "model.safetensors"))
	os.WriteFile(filepath.Join(m, "config.json"), []byte(`{"architectures": ["X"]}`), 0o644)
	out := filepath.Join(d, "q")
	if _, stderr, code := run(t, "quantize", m, "--bits", "8", "-o", out); code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	for _, f := range []string{"model.safetensors", "model.wq", "config.json"} {
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Errorf("%s: %v", f, err)
		}
	}
}

// A WEIGHTOPS_HASH_CACHE that is neither off nor an absolute directory is
// refused in one line (exit 2), nothing written, rather than becoming a
// directory named "0" wherever the merge runs.
func TestHashCacheEnvRefused(t *testing.T) {
	d := t.TempDir()
	if _, e, code := run(t, "synth", "-q", "--family", d, "--size", "1MiB", "--hidden", "64", "--vocab", "128"); code != 0 {
		t.Fatal(e)
	}
	recipe := filepath.Join(d, "r.yaml")
	os.WriteFile(recipe, []byte("merge_method: task_arithmetic\nbase_model: llama\nmodels:\n  - model: llama-math\n    parameters: {weight: 1}\n"), 0o644)
	t.Setenv("WEIGHTOPS_HASH_CACHE", "0")
	out := filepath.Join(d, "out.safetensors")
	_, stderr, code := runIn(t, d, "merge", recipe, "-o", out)
	if code != 2 || strings.Count(strings.TrimSpace(stderr), "\n") != 0 || !strings.Contains(stderr, `WEIGHTOPS_HASH_CACHE="0"`) {
		t.Fatalf("exit %d, stderr %q", code, stderr)
	}
	for _, p := range []string{out, filepath.Join(d, "0")} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s was created", p)
		}
	}
}
