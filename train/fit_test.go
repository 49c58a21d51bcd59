package train

import (
	"math"
	"runtime"
	"strings"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

func digits(t testing.TB) (tr, te *dataset.Set) {
	t.Helper()
	s, err := dataset.LoadCSV("../testdata/engine/data/digits.csv", 0)
	if err != nil {
		t.Fatal(err)
	}
	return dataset.StratifiedSplit(s, 0.2, 1)
}

func digitsModel(t testing.TB, seed uint64) *engine.Model {
	t.Helper()
	m, err := engine.New(&engine.Arch{Input: engine.Input{Shape: []int{1, 8, 8}, Scale: 1.0 / 16},
		Layers: []engine.LayerSpec{
			{Type: "conv2d", Name: "c", Out: 4, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}},
			{Type: "batchnorm2d", Name: "bn"},
			{Type: "relu"},
			{Type: "maxpool2d", Kernel: engine.Pair{2, 2}},
			{Type: "flatten"},
			{Type: "dropout", P: f(0.2)},
			{Type: "linear", Name: "fc", Out: 10},
		}})
	if err != nil {
		t.Fatal(err)
	}
	Init(m, seed)
	return m
}

func snapshot(m *engine.Model) [][]float32 {
	var out [][]float32
	for _, p := range m.Params() {
		out = append(out, append([]float32(nil), p.Data...))
	}
	return out
}

func same(a, b [][]float32) bool {
	for i := range a {
		for j := range a[i] {
			if math.Float32bits(a[i][j]) != math.Float32bits(b[i][j]) {
				return false
			}
		}
	}
	return true
}

// TestFitLearnsAndIsDeterministic trains a small CNN on digits: it must
// learn, and the same seed must give bit-identical weights with one core
// or all of them.
func TestFitLearnsAndIsDeterministic(t *testing.T) {
	tr, te := digits(t)
	cfg := Config{Epochs: 3, BatchSize: 32, Optimizer: "adam", LR: 0.01, Seed: 5, Test: te}
	m1 := digitsModel(t, 5)
	met, err := Fit(m1, tr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	last := met.Last()
	if last.TestAccuracy < 0.9 || met.Epochs[0].TrainLoss <= last.TrainLoss || met.Steps != 3*((tr.Len()+31)/32) {
		t.Errorf("did not learn: %+v, %d steps", met.Epochs, met.Steps)
	}
	old := runtime.GOMAXPROCS(1)
	m2 := digitsModel(t, 5)
	met2, err := Fit(m2, tr, cfg)
	runtime.GOMAXPROCS(old)
	if err != nil {
		t.Fatal(err)
	}
	if !same(snapshot(m1), snapshot(m2)) || met2.Last() != last {
		t.Error("same seed, different weights (1 core vs all)")
	}
	m3 := digitsModel(t, 5)
	cfg.Seed = 6
	Fit(m3, tr, cfg)
	if same(snapshot(m1), snapshot(m3)) {
		t.Error("the seed has no effect")
	}
	// The training loop's evaluation agrees with the engine's.
	loss, acc, correct, err := Evaluate(m1, te)
	r, err2 := engine.Evaluate(m1, te, engine.EvalOptions{})
	if err != nil || err2 != nil || correct != r.Correct || acc != r.Accuracy || math.Abs(loss-r.Loss) > 1e-9 || correct != last.TestCorrect {
		t.Errorf("train.Evaluate %v %v %d, engine %v %v %d, Fit %d", loss, acc, correct, r.Loss, r.Accuracy, r.Correct, last.TestCorrect)
	}
}

// TestOptimizerStep checks one full-batch step of each optimiser against
// its formula, from the gradient Gradients reports.
func TestOptimizerStep(t *testing.T) {
	tr, _ := digits(t)
	tr = tr.Subset([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11})
	a := &engine.Arch{Input: engine.Input{Shape: []int{64}, Scale: 1.0 / 16}, Layers: []engine.LayerSpec{
		{Type: "linear", Name: "a", Out: 6}, {Type: "tanh"}, {Type: "linear", Name: "b", Out: 10}}}
	for _, opt := range []string{"sgd", "adam"} {
		m, _ := engine.New(a)
		Init(m, 3)
		before := snapshot(m)
		x := make([]float32, len(tr.X))
		for i := 0; i < tr.Len(); i++ {
			m.Normalize(x[i*64:(i+1)*64], tr.Sample(i))
		}
		_, g, err := Gradients(m, x, tr.Labels)
		if err != nil {
			t.Fatal(err)
		}
		lr := 0.1
		if _, err := Fit(m, tr, Config{Epochs: 1, BatchSize: tr.Len(), Optimizer: opt, LR: lr, WeightDecay: 0.01}); err != nil {
			t.Fatal(err)
		}
		after := snapshot(m)
		for i := range before {
			for j := range before[i] {
				gj := float64(g[i][j]) + 0.01*float64(before[i][j])
				step := lr * gj
				if opt == "adam" { // first step: m̂ = g, v̂ = g²
					step = lr * gj / (math.Abs(gj) + 1e-8)
				}
				want := float64(before[i][j]) - step
				if math.Abs(float64(after[i][j])-want) > 1e-5*math.Max(1, math.Abs(step)*100) {
					t.Fatalf("%s: param %d[%d]: %v → %v, want %v", opt, i, j, before[i][j], after[i][j], want)
				}
			}
		}
	}
}

func TestFreezeAndCorrupt(t *testing.T) {
	tr, _ := digits(t)
	tr = tr.Subset([]int{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15})
	m := digitsModel(t, 1)
	before := snapshot(m)
	if _, err := Fit(m, tr, Config{Epochs: 2, BatchSize: 8, Freeze: []string{"c.", "bn."}}); err != nil {
		t.Fatal(err)
	}
	after := snapshot(m)
	for i, p := range m.Params() {
		frozen := strings.HasPrefix(p.Name, "c.") || (strings.HasPrefix(p.Name, "bn.") && !p.Buffer)
		changed := !same([][]float32{before[i]}, [][]float32{after[i]})
		if frozen == changed {
			t.Errorf("%s: changed=%v, frozen=%v", p.Name, changed, frozen)
		}
	}
	// Corrupting the training inputs changes what is learnt.
	p, _ := dataset.ParseCorruptions("gaussian_noise:0.2")
	ma, mb := digitsModel(t, 1), digitsModel(t, 1)
	Fit(ma, tr, Config{Epochs: 1, BatchSize: 8})
	Fit(mb, tr, Config{Epochs: 1, BatchSize: 8, Corrupt: p})
	if same(snapshot(ma), snapshot(mb)) {
		t.Error("corruption had no effect on training")
	}
}

func TestInit(t *testing.T) {
	m := digitsModel(t, 9)
	for _, p := range m.Params() {
		var bound float64
		switch p.Name {
		case "c.weight", "c.bias":
			bound = 1 / 3.0 // fan_in 1·3·3
		case "fc.weight", "fc.bias":
			bound = 1 / math.Sqrt(64)
		default:
			continue
		}
		var ss float64
		for _, v := range p.Data {
			if math.Abs(float64(v)) > bound {
				t.Fatalf("%s: %v outside ±%v", p.Name, v, bound)
			}
			ss += float64(v) * float64(v)
		}
		if std := math.Sqrt(ss / float64(len(p.Data))); len(p.Data) > 100 && math.Abs(std-bound/math.Sqrt(3)) > 0.1*bound {
			t.Errorf("%s: std %v, want about %v", p.Name, std, bound/math.Sqrt(3))
		}
	}
	bn := m.Layers[1].(*engine.BatchNorm)
	if bn.Weight.Data[0] != 1 || bn.Var.Data[0] != 1 || bn.Mean.Data[0] != 0 {
		t.Error("batchnorm not reset")
	}
}

func TestFitErrors(t *testing.T) {
	tr, _ := digits(t)
	m := digitsModel(t, 1)
	for _, c := range []struct {
		cfg  Config
		data *dataset.Set
		want string
	}{
		{Config{Optimizer: "rmsprop"}, tr, "unknown optimizer"},
		{Config{LR: -1}, tr, "learning rate must be positive"},
		{Config{}, &dataset.Set{X: make([]float32, 3), Labels: []int{1}, Shape: []int{3}}, "samples have 3 values but the model takes [1 8 8]"},
		{Config{}, &dataset.Set{X: make([]float32, 64), Labels: []int{10}, Shape: []int{64}}, "label 10 but the model has 10 classes"},
		{Config{Corrupt: dataset.Pipeline{{Name: "fog", Param: 1}}}, tr, "unknown name"},
		{Config{LR: 1e30}, tr, "loss is"},
	} {
		if _, err := Fit(m, c.data, c.cfg); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: got %v, want %q", c.cfg, err, c.want)
		}
	}
	sm, _ := engine.New(&engine.Arch{Input: engine.Input{Shape: []int{4}}, Layers: []engine.LayerSpec{{Type: "softmax"}, {Type: "linear", Name: "l", Out: 2}}})
	if _, err := Fit(sm, &dataset.Set{X: make([]float32, 4), Labels: []int{1}, Shape: []int{4}}, Config{}); err == nil || !strings.Contains(err.Error(), "softmax is only supported as the last layer") {
		t.Errorf("softmax inside: %v", err)
	}
}

// TestFitResidualNet trains a small ResNet-style network (basic blocks
// with an identity and a downsample shortcut, a depthwise convolution, a
// concat, adaptive pooling) on digits: it must learn, reproducibly for any
// core count, and the engine's evaluation must agree with the training
// loop's.
func TestFitResidualNet(t *testing.T) {
	tr, te := digits(t)
	no := false
	build := func() *engine.Model {
		m, err := engine.New(&engine.Arch{Input: engine.Input{Shape: []int{1, 8, 8}, Scale: 1.0 / 16},
			Layers: []engine.LayerSpec{
				{Type: "conv2d", Name: "conv1", Out: 8, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}, Bias: &no},
				{Type: "batchnorm2d", Name: "bn1"},
				{Type: "relu"},
				{Type: "residual", Name: "layer1.0", Body: []engine.LayerSpec{
					{Type: "conv2d", Name: "conv1", Out: 8, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}, Bias: &no},
					{Type: "batchnorm2d", Name: "bn1"},
					{Type: "relu"},
					{Type: "conv2d", Name: "conv2", Out: 8, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}, Groups: 8, Bias: &no},
					{Type: "batchnorm2d", Name: "bn2"},
				}},
				{Type: "relu"},
				{Type: "residual", Name: "layer2.0", Body: []engine.LayerSpec{
					{Type: "conv2d", Name: "conv1", Out: 16, Kernel: engine.Pair{3, 3}, Stride: engine.Pair{2, 2}, Padding: engine.Pair{1, 1}, Bias: &no},
					{Type: "batchnorm2d", Name: "bn1"},
				}, Shortcut: []engine.LayerSpec{
					{Type: "conv2d", Name: "downsample.0", Out: 16, Kernel: engine.Pair{1, 1}, Stride: engine.Pair{2, 2}, Bias: &no},
					{Type: "batchnorm2d", Name: "downsample.1"},
				}},
				{Type: "relu"},
				{Type: "concat", Branches: [][]engine.LayerSpec{{{Type: "adaptive_avgpool2d", Output: engine.Pair{1, 1}}}, {{Type: "adaptive_maxpool2d", Output: engine.Pair{1, 1}}}}},
				{Type: "flatten"},
				{Type: "linear", Name: "fc", Out: 10},
			}})
		if err != nil {
			t.Fatal(err)
		}
		Init(m, 3)
		return m
	}
	cfg := Config{Epochs: 3, BatchSize: 32, Optimizer: "adam", LR: 0.01, Seed: 3, Test: te}
	m1 := build()
	met, err := Fit(m1, tr, cfg)
	if err != nil {
		t.Fatal(err)
	}
	last := met.Last()
	if last.TestAccuracy < 0.9 || met.Epochs[0].TrainLoss <= last.TrainLoss {
		t.Errorf("did not learn: %+v", met.Epochs)
	}
	t.Logf("test accuracy %.3f after %d epochs", last.TestAccuracy, len(met.Epochs))
	old := runtime.GOMAXPROCS(1)
	m2 := build()
	_, err = Fit(m2, tr, cfg)
	runtime.GOMAXPROCS(old)
	if err != nil || !same(snapshot(m1), snapshot(m2)) {
		t.Error("same seed, different weights (1 core vs all)", err)
	}
	r, err := engine.Evaluate(m1, te, engine.EvalOptions{})
	if err != nil || r.Correct != last.TestCorrect {
		t.Errorf("engine evaluation %d correct, training loop %d (%v)", r.Correct, last.TestCorrect, err)
	}
}
