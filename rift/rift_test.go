package rift

import (
	"context"
	"math"
	"runtime"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/sensitivity"
	"github.com/weightops/weightops/train"
)

func digitsModel(t *testing.T) (*engine.Model, *dataset.Set, *dataset.Set) {
	t.Helper()
	s, err := dataset.LoadCSV("../testdata/engine/data/digits.csv", 0)
	if err != nil {
		t.Fatal(err)
	}
	tr, val := dataset.StratifiedSplit(s, 0.3, 1)
	m, err := engine.New(&engine.Arch{Input: engine.Input{Shape: []int{1, 8, 8}, Scale: 1.0 / 16},
		Layers: []engine.LayerSpec{
			{Type: "conv2d", Name: "c1", Out: 4, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}},
			{Type: "batchnorm2d", Name: "bn"},
			{Type: "relu"},
			{Type: "maxpool2d", Kernel: engine.Pair{2, 2}},
			{Type: "flatten"},
			{Type: "linear", Name: "fc1", Out: 16},
			{Type: "relu"},
			{Type: "linear", Name: "fc2", Out: 10},
		}})
	if err != nil {
		t.Fatal(err)
	}
	train.Init(m, 2)
	if _, err := train.Fit(m, tr, train.Config{Epochs: 2, Optimizer: "adam", LR: 0.01, Seed: 2}); err != nil {
		t.Fatal(err)
	}
	return m, tr, val
}

func TestRun(t *testing.T) {
	m, tr, val := digitsModel(t)
	before := snapshot(m)
	noise, _ := dataset.ParseCorruptions("gaussian_noise:0.3")
	o := Options{
		WorstCase:   sensitivity.WorstCaseOptions{CriticalityOptions: train.CriticalityOptions{Epochs: 2, BatchSize: 128, Seed: 3}, Corrupt: noise},
		Train:       train.Config{Epochs: 3, LR: 0.01, Momentum: 0.9, WeightDecay: 5e-4, BatchSize: 32, Seed: 3},
		Val:         val,
		Corruptions: []Condition{{Name: "noise", Corrupt: noise}},
		EvalSeed:    4,
	}
	out, res, err := Run(context.Background(), m, tr, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("module %s, best epoch %d, α %g: %+v", res.Module, res.BestEpoch, res.Alpha, res.Chosen)
	// The original model is untouched.
	for i, p := range m.Params() {
		for j, v := range p.Data {
			if math.Float32bits(v) != math.Float32bits(before[i][j]) {
				t.Fatalf("Run changed the input model's %s", p.Name)
			}
		}
	}
	// The least critical module by WorstCase was fine-tuned.
	wc := res.Criticality
	if wc == nil || res.Module != wc.Modules[len(wc.Modules)-1].Module || len(res.Tensors) == 0 {
		t.Fatalf("module %q, report %+v", res.Module, wc)
	}
	// α = 0 scores the original model.
	r0, _ := engine.Evaluate(m, val, engine.EvalOptions{})
	if res.Sweep[0].Alpha != 0 || res.Sweep[0].Clean != r0.Accuracy {
		t.Errorf("α = 0 point %+v, original model %v", res.Sweep[0], r0.Accuracy)
	}
	// The chosen α keeps robustness and has the best clean accuracy.
	for _, p := range res.Sweep {
		if p.MeanCorrupted >= res.Sweep[0].MeanCorrupted && p.Clean > res.Chosen.Clean {
			t.Errorf("α %g (%+v) beats the chosen %+v", p.Alpha, p, res.Chosen)
		}
	}
	if res.Chosen.MeanCorrupted < res.Sweep[0].MeanCorrupted {
		t.Errorf("chosen α loses robustness: %+v vs %+v", res.Chosen, res.Sweep[0])
	}
	// Weights of other modules are the original's bit for bit; the
	// module's own are the interpolation, checked against the sweep's
	// evaluation of the written model.
	for i, p := range out.Params() {
		if p.Buffer || inModule(p.Name, res.Module) {
			continue
		}
		for j, v := range p.Data {
			if math.Float32bits(v) != math.Float32bits(before[i][j]) {
				t.Fatalf("%s changed although only %s was fine-tuned", p.Name, res.Module)
			}
		}
	}
	rc, _ := engine.Evaluate(out, val, engine.EvalOptions{})
	if rc.Accuracy != res.Chosen.Clean {
		t.Errorf("written model scores %v, sweep says %v", rc.Accuracy, res.Chosen.Clean)
	}
	// Same result on one core.
	old := runtime.GOMAXPROCS(1)
	out2, res2, err := Run(context.Background(), m, tr, o)
	runtime.GOMAXPROCS(old)
	if err != nil || res2.Alpha != res.Alpha || res2.Module != res.Module {
		t.Fatalf("1 core: %+v %v", res2, err)
	}
	for i, p := range out2.Params() {
		for j, v := range p.Data {
			if math.Float32bits(v) != math.Float32bits(out.Params()[i].Data[j]) {
				t.Fatal("1 core gives other weights")
			}
		}
	}
}

func inModule(name, module string) bool {
	return len(name) > len(module) && name[:len(module)+1] == module+"."
}

func TestInterpolate(t *testing.T) {
	m, _, _ := digitsModel(t)
	ft, _ := m.Clone()
	out, _ := m.Clone()
	p := ft.Params()[0]
	for i := range p.Data {
		p.Data[i] += 0.5
	}
	for _, a := range []float64{0, 0.3, 1} {
		interpolate(out, m, ft, a)
		for i, q := range out.Params() {
			for j, v := range q.Data {
				want := float32(a*float64(ft.Params()[i].Data[j]) + (1-a)*float64(m.Params()[i].Data[j]))
				if i > 0 {
					want = m.Params()[i].Data[j] // unchanged by fine-tuning: exact
				}
				if v != want {
					t.Fatalf("α %g: %s[%d] = %v, want %v", a, q.Name, j, v, want)
				}
			}
		}
	}
	if _, _, err := Run(context.Background(), m, nil, Options{}); err == nil {
		t.Error("no held-out data accepted")
	}
	if _, _, err := Run(context.Background(), m, nil, Options{Val: &dataset.Set{}, Alphas: []float64{1.5}}); err == nil {
		t.Error("α 1.5 accepted")
	}
}
