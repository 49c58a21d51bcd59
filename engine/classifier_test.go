package engine_test

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/weights"
)

const td = "../testdata/engine/"

func loadNPY(t testing.TB, path string) *dataset.Array {
	t.Helper()
	a, err := dataset.ReadArray(path)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// forwardRaw normalises raw samples as the arch says and runs the model.
func forwardRaw(m *engine.Model, raw []float32, n int) []float32 {
	d := m.InputSize()
	x := make([]float32, n*d)
	for i := 0; i < n; i++ {
		m.Normalize(x[i*d:(i+1)*d], raw[i*d:(i+1)*d])
	}
	return append([]float32(nil), m.Forward(x, n, &engine.Workspace{})...)
}

// relErr is max|got − want| / max|want|.
func relErr(got []float32, want []float32) float64 {
	var d, s float64
	for i := range want {
		d = math.Max(d, math.Abs(float64(got[i])-float64(want[i])))
		s = math.Max(s, math.Abs(float64(want[i])))
	}
	return d / s
}

// TestTorchReference compares logits with PyTorch's for the models made
// by make_torch_reference.py: a CNN in safetensors with a YAML arch that
// leaves kernel sizes to the checkpoint, and an MLP saved by torch.save
// with a JSON arch ending in log_softmax.
func TestTorchReference(t *testing.T) {
	for _, c := range []struct{ dir, model string }{{"cnn", "model.safetensors"}, {"mlp", "model.pt"}, {"graph", "model.safetensors"}} {
		dir := td + "torch/" + c.dir + "/"
		m, err := engine.Load(dir+c.model, "")
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Unused) != 0 {
			t.Errorf("%s: unused tensors %v", c.dir, m.Unused)
		}
		in, want := loadNPY(t, dir+"input.npy"), loadNPY(t, dir+"logits.npy")
		n := in.Shape[0]
		got := forwardRaw(m, in.Float32s(false), n)
		if e := relErr(got, want.Float32s(false)); e > 1e-4 || len(got) != want.Len() {
			t.Errorf("%s: logits differ from torch's by %.3g relative (%d vs %d values)", c.dir, e, len(got), want.Len())
		} else {
			t.Logf("%s: max relative difference from torch %.2g", c.dir, e)
		}
		// Batches of one give the same outputs as the whole batch.
		d := m.InputSize()
		raw := in.Float32s(false)
		for i := 0; i < n; i++ {
			one := forwardRaw(m, raw[i*d:(i+1)*d], 1)
			k := len(one)
			for j := range one {
				if one[j] != got[i*k+j] {
					t.Fatalf("%s: sample %d alone gives %v, in a batch %v", c.dir, i, one, got[i*k:(i+1)*k])
				}
			}
		}
	}
}

// TestResolvedArch checks that sizes left out of the arch are read from
// the checkpoint, and that the resolved arch round-trips through YAML.
func TestResolvedArch(t *testing.T) {
	m, err := engine.Load(td+"torch/cnn/model.safetensors", td+"torch/cnn/arch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	l := m.Arch.Layers
	if l[0].Out != 6 || l[0].Kernel != (engine.Pair{3, 3}) || l[4].Kernel != (engine.Pair{3, 2}) || l[7].In != 48 || l[9].Out != 5 {
		t.Errorf("resolved layers %+v", l)
	}
	shapes := fmt.Sprint(m.Layers[0].OutShape(), m.Layers[3].OutShape(), m.Layers[4].OutShape(), m.Layers[5].OutShape())
	if shapes != "[6 10 10] [6 5 5] [8 5 4] [8 3 2]" {
		t.Errorf("shapes %s", shapes)
	}
	b, err := m.Arch.YAML()
	if err != nil {
		t.Fatal(err)
	}
	a2, err := engine.ParseArch(b)
	if err != nil {
		t.Fatalf("%v\n%s", err, b)
	}
	b2, _ := a2.YAML()
	if string(b) != string(b2) {
		t.Errorf("YAML round trip differs:\n%s\n%s", b, b2)
	}
	j, _ := json.Marshal(m.Arch)
	a3, err := engine.ParseArch(j)
	if err != nil {
		t.Fatalf("%v\n%s", err, j)
	}
	b3, _ := a3.YAML()
	if string(b) != string(b3) {
		t.Errorf("JSON round trip differs:\n%s\n%s", b, b3)
	}
}

func TestArchErrors(t *testing.T) {
	ckPath := td + "torch/cnn/model.safetensors"
	base, err := os.ReadFile(td + "torch/cnn/arch.yaml")
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct{ old, new, want string }{
		{"name: classifier.3}", "name: classifier.9}", `layer 9 (linear "classifier.9"): tensor "classifier.9.weight" not found in the checkpoint`},
		{"{type: linear, name: classifier.1}", "{type: linear, name: classifier.1, out: 17}", `layer 7 (linear "classifier.1"): tensor "classifier.1.weight" has shape [16, 48], want [17, 48]`},
		{"  - {type: flatten}\n", "", `layer 6 (linear "classifier.1"): input has shape [8 3 2]; linear needs a flat input`},
		{"stride: 2, padding: 1}", "padding: 1}", `layer 7 (linear "classifier.1"): tensor "classifier.1.weight" has shape [16, 48], want [*, 200]`},
		{"padding: [1, 0], bias: false}", "padding: [1, 0]}", `tensor "features.4.bias" not found`},
		{"{type: relu}", "{type: rellu}", `layer 2 (rellu): unknown layer type`},
		{"{type: relu}", "{type: relu, kernel: 2}", `layer 2 (relu): key "kernel" does not apply to relu`},
		{"{type: relu}", "{type: relu, colour: red}", `field colour not found`},
		{"mean: [0.5, 0.4, 0.3]", "mean: [0.5, 0.4]", "input: mean has 2 values; want 1 or one per channel (3)"},
		{"std: [0.25, 0.2, 0.3]", "std: [0.25, 0, 0.3]", "std 0 must be positive"},
		{"shape: [3, 20, 20]\n  mean: [0.5, 0.4, 0.3]\n  std: [0.25, 0.2, 0.3]", "shape: [1, 20, 20]", `layer 0 (conv2d "features.0"): tensor "features.0.weight" has shape [6, 3, 3, 3], want [*, 1, *, *]`},
		{"{type: maxpool2d, kernel: 3, stride: 2, padding: 1}", "{type: maxpool2d, kernel: 3, stride: 2, padding: 2}", "padding [2 2] is more than half the kernel"},
		{"{type: batchnorm2d, name: features.1}", "{type: batchnorm1d, name: features.1}", "batchnorm1d needs [C] or [C, L]"},
		{"  - {type: linear, name: classifier.3}\n", "  - {type: linear, name: classifier.3}\n  - {type: softmax}\nclasses: [a, b]\n", "classes lists 2 names but the model has 5 outputs"},
	}
	for _, c := range cases {
		text := string(base)
		if !strings.Contains(text, c.old) {
			t.Fatalf("test case: %q not in arch", c.old)
		}
		p := filepath.Join(t.TempDir(), "arch.yaml")
		os.WriteFile(p, []byte(strings.Replace(text, c.old, c.new, 1)), 0o644)
		_, err := engine.Load(ckPath, p)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q → %q:\n got %v\nwant %q", c.old, c.new, err, c.want)
		}
	}
	// Unused tensors are reported; the arch file is found beside the model.
	p := filepath.Join(t.TempDir(), "model.safetensors")
	ck, _ := weights.Open(ckPath)
	var ts []weights.Tensor
	for _, info := range ck.Tensors() {
		tn, _ := ck.ReadTensor(info.Name, nil)
		ts = append(ts, tn)
	}
	ck.Close()
	ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: "extra.weight", DType: weights.F32, Shape: []int64{1}}, Data: make([]byte, 4)})
	if err := weights.WriteSafetensors(p, ts, nil); err != nil {
		t.Fatal(err)
	}
	if _, err := engine.Load(p, ""); err == nil || !strings.Contains(err.Error(), "no arch file beside") {
		t.Errorf("missing arch: %v", err)
	}
	os.WriteFile(filepath.Join(filepath.Dir(p), "arch.yaml"), base, 0o644)
	m, err := engine.Load(p, "")
	if err != nil || fmt.Sprint(m.Unused) != "[extra.weight]" {
		t.Errorf("unused: %v %v", m, err)
	}
}

type metricsFile struct {
	Data         map[string]string `json:"data"`
	Seed         uint64            `json:"seed"`
	TestSamples  int               `json:"test_samples"`
	TestCorrect  int               `json:"test_correct"`
	TestAccuracy float64           `json:"test_accuracy"`
	TestLoss     float64           `json:"test_loss"`
}

func readMetrics(t testing.TB, dir string) metricsFile {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, "train_metrics.json"))
	if err != nil {
		t.Fatal(err)
	}
	var m metricsFile
	if err := json.Unmarshal(b, &m); err != nil {
		t.Fatal(err)
	}
	return m
}

func fashionTest(t testing.TB) *dataset.Set {
	t.Helper()
	s, err := dataset.Load(td+"data/fashion-mnist/t10k-images-idx3-ubyte.gz", td+"data/fashion-mnist/t10k-labels-idx1-ubyte.gz")
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// TestFixtureAccuracy evaluates the committed generator models on the
// committed test data and expects exactly the count of correct predictions
// (and the loss) that the generator's own training loop measured.
func TestFixtureAccuracy(t *testing.T) {
	for _, name := range []string{"mlp", "cnn", "digits"} {
		dir := td + name
		want := readMetrics(t, dir)
		m, err := engine.Load(dir+"/model.safetensors", "")
		if err != nil {
			t.Fatal(err)
		}
		var s *dataset.Set
		if name == "digits" {
			all, err := dataset.LoadCSV(td+"data/"+want.Data["csv"], 0)
			if err != nil {
				t.Fatal(err)
			}
			_, s = dataset.StratifiedSplit(all, 0.2, want.Seed)
		} else {
			s, err = dataset.Load(td+"data/"+want.Data["test_images"], td+"data/"+want.Data["test_labels"])
			if err != nil {
				t.Fatal(err)
			}
		}
		for _, bs := range []int{256, 77} {
			r, err := engine.Evaluate(m, s, engine.EvalOptions{BatchSize: bs})
			if err != nil {
				t.Fatal(err)
			}
			if r.Samples != want.TestSamples || r.Correct != want.TestCorrect || math.Abs(r.Loss-want.TestLoss) > 1e-5 {
				t.Errorf("%s (batch %d): %d/%d correct, loss %.6f; the generator measured %d/%d, loss %.6f",
					name, bs, r.Correct, r.Samples, r.Loss, want.TestCorrect, want.TestSamples, want.TestLoss)
			}
			sum := 0
			for _, pc := range r.PerClass {
				sum += pc.Correct
			}
			if sum != r.Correct || len(r.PerClass) != 10 {
				t.Errorf("%s: per-class counts add to %d, not %d", name, sum, r.Correct)
			}
		}
		t.Logf("%s: test accuracy %.4f (%d/%d)", name, want.TestAccuracy, want.TestCorrect, want.TestSamples)
	}
}

func TestCorruptedEvaluation(t *testing.T) {
	m, err := engine.Load(td+"cnn/model.safetensors", "")
	if err != nil {
		t.Fatal(err)
	}
	s := fashionTest(t)
	clean, _ := engine.Evaluate(m, s, engine.EvalOptions{})
	p, _ := dataset.ParseCorruptions("gaussian_noise:0.3,blur:1")
	a, err := engine.Evaluate(m, s, engine.EvalOptions{Corrupt: p, Seed: 3})
	if err != nil {
		t.Fatal(err)
	}
	b, _ := engine.Evaluate(m, s, engine.EvalOptions{Corrupt: p, Seed: 3, BatchSize: 33})
	// The same corruption applied to the data up front, then evaluated clean.
	cs, _ := p.ApplySet(s, m.InputShape(), 3)
	c, _ := engine.Evaluate(m, cs, engine.EvalOptions{})
	// (Matrix products may round differently for other batch sizes, so
	// losses agree to rounding, not bit for bit.)
	if a.Correct != b.Correct || a.Correct != c.Correct || math.Abs(a.Loss-b.Loss) > 1e-6 || math.Abs(a.Loss-c.Loss) > 1e-12 {
		t.Errorf("corrupted evaluation depends on batching: %d %d %d", a.Correct, b.Correct, c.Correct)
	}
	if a.Accuracy >= clean.Accuracy-0.05 || a.Loss <= clean.Loss {
		t.Errorf("noise+blur accuracy %.3f loss %.3f vs clean %.3f %.3f", a.Accuracy, a.Loss, clean.Accuracy, clean.Loss)
	}
	if a.Corruption != "gaussian_noise:0.3,blur:1" || a.Seed != 3 {
		t.Errorf("result records %q seed %d", a.Corruption, a.Seed)
	}
	t.Logf("clean %.3f, gaussian_noise:0.3,blur:1 %.3f", clean.Accuracy, a.Accuracy)
	// Data that does not fit the model is an error, not a panic.
	bad := &dataset.Set{X: make([]float32, 10), Labels: []int{0}, Shape: []int{10}}
	if _, err := engine.Evaluate(m, bad, engine.EvalOptions{}); err == nil || !strings.Contains(err.Error(), "model takes [1 28 28]") {
		t.Errorf("wrong sample size: %v", err)
	}
	bad = &dataset.Set{X: make([]float32, 784), Labels: []int{12}, Shape: []int{784}}
	if _, err := engine.Evaluate(m, bad, engine.EvalOptions{}); err == nil || !strings.Contains(err.Error(), "label 12 but the model has 10 classes") {
		t.Errorf("label out of range: %v", err)
	}
}

func TestSaveLoadRoundTrip(t *testing.T) {
	m, err := engine.Load(td+"torch/mlp/model.pt", "")
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	if err := m.Save(dir, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	m2, err := engine.Load(dir, "")
	if err != nil {
		t.Fatal(err)
	}
	p1, p2 := m.Params(), m2.Params()
	for i := range p1 {
		if p1[i].Name != p2[i].Name || fmt.Sprint(p1[i].Data) != fmt.Sprint(p2[i].Data) {
			t.Errorf("param %s differs after save/load", p1[i].Name)
		}
	}
	ck, _ := weights.Open(dir)
	defer ck.Close()
	if info, ok := ck.Info("net.2.num_batches_tracked"); !ok || info.DType != weights.I64 || len(info.Shape) != 0 {
		t.Errorf("num_batches_tracked: %+v %v", info, ok)
	}
	if bn := m2.Layers[2].(*engine.BatchNorm); bn.NumBatchesTracked != 7 {
		t.Errorf("num_batches_tracked = %d, want 7", bn.NumBatchesTracked)
	}
	c, _ := m.Clone()
	c.Params()[0].Data[0] += 1
	if m.Params()[0].Data[0] == c.Params()[0].Data[0] {
		t.Error("Clone shares parameters")
	}
}

// TestLayersAgainstLoops checks the layers the torch fixtures do not
// cover (sigmoid, tanh-approximated gelu, avgpool without padding in the
// divisor) against direct formulas.
func TestLayersAgainstLoops(t *testing.T) {
	ns := 0.1
	a := &engine.Arch{Input: engine.Input{Shape: []int{1, 3, 3}}, Layers: []engine.LayerSpec{
		{Type: "avgpool2d", Kernel: engine.Pair{2, 2}, Stride: engine.Pair{2, 2}, Padding: engine.Pair{1, 1}, CountIncludePad: new(bool)},
		{Type: "flatten"},
		{Type: "sigmoid"},
		{Type: "gelu", Approximate: "tanh"},
		{Type: "leaky_relu", NegativeSlope: &ns},
		{Type: "softmax"},
	}}
	m, err := engine.New(a)
	if err != nil {
		t.Fatal(err)
	}
	x := []float32{1, 2, 3, 4, 5, 6, 7, 8, 9}
	got := m.Forward(append([]float32(nil), x...), 1, &engine.Workspace{})
	// Windows of the padded 4x4 grid: {1} {2,3} {4,7} {5,6,8,9}.
	pool := []float64{1, 2.5, 5.5, 7}
	var want []float64
	var sum float64
	for _, v := range pool {
		s := 1 / (1 + math.Exp(-v))
		g := 0.5 * s * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(s+0.044715*s*s*s)))
		want = append(want, math.Exp(g))
		sum += math.Exp(g)
	}
	for i := range want {
		if math.Abs(float64(got[i])-want[i]/sum) > 1e-6 {
			t.Fatalf("got %v, want %v", got, want)
		}
	}
	if m.Output() != engine.Probabilities {
		t.Error("softmax output not recognised")
	}
}

// BenchmarkEvalCNN measures the CNN fixture on 10,000 28×28 images (the
// test subset ten times over) and reports images per second.
func BenchmarkEvalCNN(b *testing.B) { benchEval(b, "cnn") }

// BenchmarkEvalMLP is the same for the MLP fixture.
func BenchmarkEvalMLP(b *testing.B) { benchEval(b, "mlp") }

func benchEval(b *testing.B, name string) {
	m, err := engine.Load(td+name+"/model.safetensors", "")
	if err != nil {
		b.Fatal(err)
	}
	s := fashionTest(b)
	idx := make([]int, 10000)
	for i := range idx {
		idx[i] = i % s.Len()
	}
	big := s.Subset(idx)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		if _, err := engine.Evaluate(m, big, engine.EvalOptions{}); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.N*big.Len())/b.Elapsed().Seconds(), "images/s")
	b.ReportMetric(float64(runtime.GOMAXPROCS(0)), "procs")
}
