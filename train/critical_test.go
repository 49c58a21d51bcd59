package train

import (
	"context"
	"math"
	"runtime"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

// TestOnlyGradientMatchesFull: the backward pass limited to one parameter
// gives that parameter exactly the gradient of the full pass.
func TestOnlyGradientMatchesFull(t *testing.T) {
	m, err := engine.New(gradArchs()["graph"])
	if err != nil {
		t.Fatal(err)
	}
	Init(m, 3)
	r := dataset.NewRand(4)
	n := 6
	x := make([]float32, n*m.InputSize())
	for i := range x {
		x[i] = float32(r.NormFloat64())
	}
	labels := []int{0, 1, 2, 3, 4, 0}
	_, full, err := GradientsEval(m, x, labels)
	if err != nil {
		t.Fatal(err)
	}
	k := m.NumClasses()
	for i, p := range m.Params() {
		if p.Buffer {
			continue
		}
		tn, _ := newNet(m)
		tn.only = p
		z := tn.forward(x, n, false, false, nil)
		dz := make([]float32, n*k)
		lossGrad(z, labels, k, dz)
		tn.backward(dz, n)
		g := tn.grads[i]
		for j := range g {
			if math.Float32bits(g[j]) != math.Float32bits(full[i][j]) {
				t.Fatalf("%s[%d]: %v alone, %v in the full pass", p.Name, j, g[j], full[i][j])
			}
		}
	}
}

// TestModuleCriticalityAgainstFloat64 re-derives RiFT's search for a
// softmax regression (logits = W·x + b, perturbing W) in float64 with
// the analytic gradient (softmax − onehot)ᵀ·x / n, same sample order, same
// projection, and compares the worst loss found.
func TestModuleCriticalityAgainstFloat64(t *testing.T) {
	const d, k, N = 5, 3, 40
	m, err := engine.New(&engine.Arch{Input: engine.Input{Shape: []int{d}}, Layers: []engine.LayerSpec{{Type: "linear", Name: "fc", Out: k}}})
	if err != nil {
		t.Fatal(err)
	}
	Init(m, 9)
	r := dataset.NewRand(10)
	s := &dataset.Set{Shape: []int{d}, X: make([]float32, N*d), Labels: make([]int, N)}
	for i := range s.X {
		s.X[i] = float32(r.NormFloat64())
	}
	for i := range s.Labels {
		s.Labels[i] = r.Intn(k)
	}
	in, err := NewInputs(m, s, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	l0, a0, err := LossAccuracy(m, in)
	if err != nil {
		t.Fatal(err)
	}
	w := m.Layers[0].(*engine.Linear)
	o := CriticalityOptions{Epsilon: 0.1, Epochs: 4, LR: 1, BatchSize: 16, Seed: 7}
	got, err := ModuleCriticality(context.Background(), m, in, w.W, l0, a0, o)
	if err != nil {
		t.Fatal(err)
	}

	W, B := make([]float64, k*d), make([]float64, k)
	for i, v := range w.W.Data {
		W[i] = float64(v)
	}
	for i, v := range w.B.Data {
		B[i] = float64(v)
	}
	W0 := append([]float64(nil), W...)
	probs := func(i int) []float64 {
		z := make([]float64, k)
		mx := math.Inf(-1)
		for c := 0; c < k; c++ {
			z[c] = B[c]
			for j := 0; j < d; j++ {
				z[c] += W[c*d+j] * float64(s.X[i*d+j])
			}
			mx = math.Max(mx, z[c])
		}
		var sum float64
		for c := range z {
			z[c] = math.Exp(z[c] - mx)
			sum += z[c]
		}
		for c := range z {
			z[c] /= sum
		}
		return z
	}
	lossAll := func() float64 {
		var l float64
		for i := 0; i < N; i++ {
			l -= math.Log(probs(i)[s.Labels[i]])
		}
		return l / N
	}
	var n0 float64
	for _, v := range W0 {
		n0 += v * v
	}
	best := math.Inf(-1)
	for ep := 1; ep <= o.Epochs; ep++ {
		order := dataset.NewRand(o.Seed, streamAscent, uint64(ep)).Perm(N)
		for b0 := 0; b0 < N; b0 += o.BatchSize {
			idx := order[b0:min(b0+o.BatchSize, N)]
			g := make([]float64, k*d)
			for _, i := range idx {
				p := probs(i)
				p[s.Labels[i]]--
				for c := 0; c < k; c++ {
					for j := 0; j < d; j++ {
						g[c*d+j] += p[c] * float64(s.X[i*d+j]) / float64(len(idx))
					}
				}
			}
			for j := range W {
				W[j] += o.LR * g[j]
			}
		}
		var dn float64
		for j := range W {
			dn += (W[j] - W0[j]) * (W[j] - W0[j])
		}
		if ratio := math.Sqrt(dn / n0); ratio > o.Epsilon {
			for j := range W {
				W[j] = W0[j] + (W[j]-W0[j])*o.Epsilon/ratio
			}
		}
		best = math.Max(best, lossAll())
	}
	if want := best - l0; math.Abs(got.LossIncrease-want) > 1e-4*math.Max(1, want) {
		t.Errorf("loss increase %v, float64 re-derivation %v", got.LossIncrease, want)
	}
	t.Logf("worst case %+v", got)
	if got.LossIncrease <= 0 || got.Ratio > o.Epsilon+1e-12 {
		t.Errorf("worst case %+v: no increase, or outside the ball", got)
	}
	for i, v := range w.W.Data {
		if float64(v) != W0[i] {
			t.Fatal("the weight was not restored")
		}
	}
	// Same figures on one core.
	old := runtime.GOMAXPROCS(1)
	again, err := ModuleCriticality(context.Background(), m, in, w.W, l0, a0, o)
	runtime.GOMAXPROCS(old)
	if err != nil || again != got {
		t.Errorf("1 core: %+v, all: %+v (%v)", again, got, err)
	}
}
