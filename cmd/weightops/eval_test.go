package main

import (
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

const evalTD = "../../testdata/engine/"

var (
	evalImages = evalTD + "data/fashion-mnist/t10k-images-idx3-ubyte.gz"
	evalLabels = evalTD + "data/fashion-mnist/t10k-labels-idx1-ubyte.gz"
)

type evalJSON struct {
	Arch       string  `json:"arch"`
	Samples    int     `json:"samples"`
	Correct    int     `json:"correct"`
	Accuracy   float64 `json:"accuracy"`
	Loss       float64 `json:"loss"`
	Corruption string  `json:"corruption"`
	Seed       uint64  `json:"seed"`
	PerClass   []struct {
		Name    string `json:"name"`
		Correct int    `json:"correct"`
	} `json:"per_class"`
}

func evalRunJSON(t *testing.T, args ...string) evalJSON {
	t.Helper()
	out, errOut, code := run(t, append(args, "--json")...)
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var r evalJSON
	if err := json.Unmarshal([]byte(out), &r); err != nil {
		t.Fatalf("%v\n%s", err, out)
	}
	return r
}

// TestEvalFixtures runs eval on the committed models: the CLI reports
// the accuracy the generator's training loop measured.
func TestEvalFixtures(t *testing.T) {
	for _, name := range []string{"mlp", "cnn"} {
		var tm struct {
			TestCorrect int     `json:"test_correct"`
			TestLoss    float64 `json:"test_loss"`
		}
		b, _ := os.ReadFile(evalTD + name + "/train_metrics.json")
		if err := json.Unmarshal(b, &tm); err != nil {
			t.Fatal(err)
		}
		r := evalRunJSON(t, "eval", evalTD+name+"/model.safetensors", "--data", evalImages, "--labels", evalLabels)
		if r.Samples != 1000 || r.Correct != tm.TestCorrect || fmt.Sprintf("%.6f", r.Loss) != fmt.Sprintf("%.6f", tm.TestLoss) ||
			r.PerClass[9].Name != "Ankle boot" || filepath.Base(r.Arch) != "arch.yaml" {
			t.Errorf("%s: %+v; generator measured %d correct, loss %v", name, r, tm.TestCorrect, tm.TestLoss)
		}
		out, _, code := run(t, "eval", evalTD+name, "--arch", evalTD+name+"/arch.yaml", "--data", evalImages, "--labels", evalLabels)
		want := fmt.Sprintf("accuracy  %.2f%% (%d/1000)", float64(tm.TestCorrect)/10, tm.TestCorrect)
		if code != 0 || !strings.Contains(out, want) || !strings.Contains(out, "Ankle boot") {
			t.Errorf("%s: text output lacks %q:\n%s", name, want, out)
		}
	}
	// Corruption lowers accuracy, is recorded, and is reproducible by seed.
	clean := evalRunJSON(t, "eval", evalTD+"cnn/model.safetensors", "--data", evalImages, "--labels", evalLabels)
	a := evalRunJSON(t, "eval", evalTD+"cnn/model.safetensors", "--data", evalImages, "--labels", evalLabels, "--corrupt", "gaussian_noise:0.3,blur:1", "--seed", "4", "--batch", "100")
	b := evalRunJSON(t, "eval", evalTD+"cnn/model.safetensors", "--data", evalImages, "--labels", evalLabels, "--corrupt", "gaussian_noise:0.3,blur:1", "--seed", "4")
	if a.Correct != b.Correct || a.Correct >= clean.Correct-50 || a.Corruption != "gaussian_noise:0.3,blur:1" || a.Seed != 4 {
		t.Errorf("corrupted %+v / %+v vs clean %d", a, b, clean.Correct)
	}
}

func TestEvalCSVAndNPY(t *testing.T) {
	// digits.csv with the digits model (trained on 80% of it).
	r := evalRunJSON(t, "eval", evalTD+"digits/model.safetensors", "--csv", evalTD+"data/digits.csv", "--label-col", "0")
	if r.Samples != 1797 || r.Accuracy < 0.95 {
		t.Errorf("digits: %+v", r)
	}
	// The torch MLP on its reference inputs, labelled with torch's own
	// predictions, is right every time.
	logits, err := dataset.ReadArray(evalTD + "torch/mlp/logits.npy")
	if err != nil {
		t.Fatal(err)
	}
	n, k := logits.Shape[0], logits.Shape[1]
	lab := make([]byte, 0, 8*n)
	for i := 0; i < n; i++ {
		best := 0
		for j := 1; j < k; j++ {
			if logits.At(i*k+j) > logits.At(i*k+best) {
				best = j
			}
		}
		lab = binary.LittleEndian.AppendUint64(lab, uint64(best))
	}
	hdr := fmt.Sprintf("{'descr': '<i8', 'fortran_order': False, 'shape': (%d,), }", n)
	hdr += strings.Repeat(" ", 63-(10+len(hdr))%64) + "\n"
	npy := append([]byte("\x93NUMPY\x01\x00"), byte(len(hdr)), byte(len(hdr)>>8))
	npy = append(append(npy, hdr...), lab...)
	labels := filepath.Join(t.TempDir(), "labels.npy")
	os.WriteFile(labels, npy, 0o644)
	r = evalRunJSON(t, "eval", evalTD+"torch/mlp/model.pt", "--npy", evalTD+"torch/mlp/input.npy", "--labels", labels)
	if r.Samples != n || r.Correct != n {
		t.Errorf("torch MLP on its own predictions: %+v", r)
	}
}

func TestEvalErrors(t *testing.T) {
	dir := t.TempDir()
	noArch := filepath.Join(dir, "model.safetensors")
	b, _ := os.ReadFile(evalTD + "mlp/model.safetensors")
	os.WriteFile(noArch, b, 0o644)
	badArch := filepath.Join(dir, "bad.yaml")
	os.WriteFile(badArch, []byte("input: {shape: [1, 28, 28]}\nlayers:\n  - {type: flatten}\n  - {type: linear, name: fc1, out: 64}\n"), 0o644)
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"eval", noArch, "--data", evalImages, "--labels", evalLabels}, "no arch file beside"},
		{[]string{"eval", noArch, "--arch", badArch, "--data", evalImages, "--labels", evalLabels}, `layer 1 (linear "fc1"): tensor "fc1.weight" has shape [128, 784], want [64, 784]`},
		{[]string{"eval", evalTD + "mlp"}, "no data"},
		{[]string{"eval", evalTD + "mlp", "--data", evalImages}, "--labels go together"},
		{[]string{"eval", evalTD + "mlp", "--data", evalImages, "--labels", evalImages}, "labels have shape [1000 28 28], want [N] or [N, 1]"},
		{[]string{"eval", evalTD + "mlp", "--data", evalImages, "--labels", evalTD + "data/fashion-mnist/train-labels-idx1-ubyte.gz"}, "has 1000 samples but"},
		{[]string{"eval", evalTD + "mlp", "--data", evalImages, "--labels", evalLabels, "--corrupt", "blur:-1"}, "--corrupt"},
		{[]string{"eval", evalTD + "mlp", "--csv", evalTD + "data/digits.csv"}, "samples have shape [64] (64 values) but the model takes [1 28 28]"},
		{[]string{"eval", evalTD + "mlp", "--data", evalTD + "data/digits.csv", "--labels", evalLabels}, "unknown magic"},
		{[]string{"eval-lm", evalTD + "tiny-llama", "--tokens", evalLabels}, "is not a token id"},
		{[]string{"eval-lm", evalTD + "mlp", "--tokens", evalTD + "tiny-llama/tokens.txt"}, "config"},
		{[]string{"generate", evalTD + "tiny-llama", "--prompt-ids", "1,99"}, "outside the vocabulary"},
	} {
		_, errOut, code := run(t, c.args...)
		if code != 1 || !strings.Contains(errOut, c.want) || strings.Count(strings.TrimSpace(errOut), "\n") != 0 || !strings.HasPrefix(errOut, "weightops: ") {
			t.Errorf("%v: exit %d, stderr %q, want one line with %q", c.args, code, errOut, c.want)
		}
	}
}

func TestEvalLMAndGenerate(t *testing.T) {
	dir := evalTD + "tiny-llama"
	m, err := engine.LoadLlama(dir)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := os.ReadFile(dir + "/tokens.txt")
	toks, _ := engine.ParseTokenIDs(string(b))
	want, _ := m.Perplexity(toks, 50)
	out, errOut, code := run(t, "eval-lm", dir, "--tokens", dir+"/tokens.txt", "--window", "50", "--json")
	var got engine.PerplexityResult
	if code != 0 || json.Unmarshal([]byte(out), &got) != nil {
		t.Fatalf("exit %d: %s %s", code, out, errOut)
	}
	if got.Tokens != want.Tokens || got.Windows != 4 || got.NLL != want.NLL || got.Perplexity != want.Perplexity {
		t.Errorf("eval-lm %+v, engine %+v", got, want)
	}
	out, _, code = run(t, "eval-lm", dir+"/model.safetensors", "--tokens", dir+"/tokens.txt")
	if code != 0 || !strings.Contains(out, "perplexity") || !strings.Contains(out, "tokens/s") {
		t.Errorf("eval-lm text: %s", out)
	}
	gen, _ := m.Generate([]int{1, 2, 3}, 7)
	ids := make([]string, len(gen))
	for i, g := range gen {
		ids[i] = fmt.Sprint(g)
	}
	out, errOut, code = run(t, "generate", dir, "--prompt-ids", "1, 2,3", "-n", "7")
	if code != 0 || strings.TrimSpace(out) != strings.Join(ids, ",") {
		t.Errorf("generate: %q (%s), want %q", out, errOut, strings.Join(ids, ","))
	}
}
