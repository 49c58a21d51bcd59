package train

import (
	"math"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

// RecalibrateBN against a float64 re-derivation of bn_update: per batch,
// each batchnorm's input computed in training mode (earlier batchnorms on
// their batch statistics), its batch mean and unbiased variance, and the
// running statistics the sample-weighted averages over batches, whatever
// they were before. 23 samples in batches of 8 (a short last batch).
func TestRecalibrateBN(t *testing.T) {
	a := &engine.Arch{Input: engine.Input{Shape: []int{4}}, Layers: []engine.LayerSpec{
		{Type: "linear", Name: "a", Out: 5}, {Type: "batchnorm1d", Name: "bn1"}, {Type: "relu"},
		{Type: "linear", Name: "b", Out: 3}, {Type: "batchnorm1d", Name: "bn2"}, {Type: "linear", Name: "c", Out: 2}}}
	m, err := engine.New(a)
	if err != nil {
		t.Fatal(err)
	}
	Init(m, 3)
	r := dataset.NewRand(5)
	bn1, bn2 := m.Layers[1].(*engine.BatchNorm), m.Layers[4].(*engine.BatchNorm)
	for _, bn := range []*engine.BatchNorm{bn1, bn2} {
		for c := range bn.Weight.Data {
			bn.Weight.Data[c], bn.Bias.Data[c] = float32(r.Uniform(0.5, 1.5)), float32(r.Uniform(-0.5, 0.5))
			bn.Mean.Data[c], bn.Var.Data[c] = 7, 9 // stale statistics, to be replaced
		}
		bn.NumBatchesTracked = 40
	}
	const N, B = 23, 8
	s := &dataset.Set{Shape: []int{4}, Labels: make([]int, N), X: make([]float32, N*4)}
	for i := range s.X {
		s.X[i] = float32(r.NormFloat64())
	}
	lin := func(l *engine.Linear, x []float64) []float64 {
		y := make([]float64, l.Out)
		for o := range y {
			y[o] = float64(l.B.Data[o])
			for k := range l.In {
				y[o] += float64(l.W.Data[o*l.In+k]) * x[k]
			}
		}
		return y
	}
	// stats returns the batch mean and unbiased variance of each channel,
	// and the batch normalised in training mode.
	stats := func(bn *engine.BatchNorm, h [][]float64) (mean, uvar []float64, out [][]float64) {
		C, n := len(h[0]), float64(len(h))
		mean, uvar = make([]float64, C), make([]float64, C)
		out = make([][]float64, len(h))
		for c := range C {
			for _, row := range h {
				mean[c] += row[c] / n
			}
			var ss float64
			for _, row := range h {
				ss += (row[c] - mean[c]) * (row[c] - mean[c])
			}
			uvar[c] = ss / (n - 1)
			for i, row := range h {
				if out[i] == nil {
					out[i] = make([]float64, C)
				}
				out[i][c] = (row[c]-mean[c])/math.Sqrt(ss/n+bn.Eps)*float64(bn.Weight.Data[c]) + float64(bn.Bias.Data[c])
			}
		}
		return
	}
	want := [2][2][]float64{{make([]float64, 5), make([]float64, 5)}, {make([]float64, 3), make([]float64, 3)}}
	la, lb := m.Layers[0].(*engine.Linear), m.Layers[3].(*engine.Linear)
	for b0 := 0; b0 < N; b0 += B {
		n := min(B, N-b0)
		var h1 [][]float64
		for i := range n {
			x := make([]float64, 4)
			for k := range x {
				x[k] = float64(s.X[(b0+i)*4+k])
			}
			h1 = append(h1, lin(la, x))
		}
		m1, v1, y1 := stats(bn1, h1)
		var h2 [][]float64
		for _, row := range y1 {
			for c := range row {
				row[c] = math.Max(row[c], 0)
			}
			h2 = append(h2, lin(lb, row))
		}
		m2, v2, _ := stats(bn2, h2)
		for l, mv := range [2][2][]float64{{m1, v1}, {m2, v2}} {
			for j := range 2 {
				for c := range mv[j] {
					want[l][j][c] += mv[j][c] * float64(n) / N
				}
			}
		}
	}
	batches, err := RecalibrateBN(m, s, RecalibrateOptions{BatchSize: B})
	if err != nil || batches != 3 {
		t.Fatalf("%d batches, %v", batches, err)
	}
	for l, bn := range []*engine.BatchNorm{bn1, bn2} {
		for c := range bn.Mean.Data {
			if math.Abs(float64(bn.Mean.Data[c])-want[l][0][c]) > 1e-5 || math.Abs(float64(bn.Var.Data[c])-want[l][1][c]) > 1e-5*math.Max(1, want[l][1][c]) {
				t.Errorf("bn%d channel %d: mean %v var %v, want %v %v", l+1, c, bn.Mean.Data[c], bn.Var.Data[c], want[l][0][c], want[l][1][c])
			}
		}
		if bn.NumBatchesTracked != 43 || bn.Momentum != 0.1 {
			t.Errorf("bn%d: num_batches_tracked %d (want 40 + 3), momentum %v restored", l+1, bn.NumBatchesTracked, bn.Momentum)
		}
	}
	if _, err := RecalibrateBN(mustModel(t, &engine.Arch{Input: engine.Input{Shape: []int{4}}, Layers: []engine.LayerSpec{{Type: "linear", Name: "l", Out: 2}}}), s, RecalibrateOptions{}); err == nil {
		t.Error("a model without batchnorm recalibrated")
	}
}

func mustModel(t *testing.T, a *engine.Arch) *engine.Model {
	t.Helper()
	m, err := engine.New(a)
	if err != nil {
		t.Fatal(err)
	}
	Init(m, 1)
	return m
}
