package train

import (
	"context"
	"errors"
	"fmt"
	"math"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/internal/parallel"
)

// GradientsEval is Gradients in evaluation mode: batchnorm on its running
// statistics, dropout off — the model as it is deployed. The model is not
// modified.
func GradientsEval(m *engine.Model, x []float32, labels []int) (float64, [][]float32, error) {
	return gradients(m, x, labels, false)
}

// CriticalityOptions configure ModuleCriticality; zero values take RiFT's
// defaults.
type CriticalityOptions struct {
	// Epsilon bounds the perturbation: ‖ΔW‖ ≤ Epsilon·‖W‖ (default 0.1).
	Epsilon float64
	// Epochs of gradient ascent (default 10), each ending with the
	// projection onto the ball and an evaluation.
	Epochs int
	// LR is the ascent's step size (default 1, as RiFT's SGD).
	LR float64
	// BatchSize is the samples per ascent step (default 512).
	BatchSize int
	// Seed orders the samples of each epoch.
	Seed uint64
}

func (o *CriticalityOptions) defaults() error {
	if o.Epsilon == 0 {
		o.Epsilon = 0.1
	}
	if o.Epochs == 0 {
		o.Epochs = 10
	}
	if o.LR == 0 {
		o.LR = 1
	}
	if o.BatchSize == 0 {
		o.BatchSize = 512
	}
	if !(o.Epsilon > 0) || o.Epochs < 0 || !(o.LR > 0) || o.BatchSize < 0 {
		return errors.New("criticality: epsilon and the learning rate must be positive, epochs and batch size non-negative")
	}
	return nil
}

// Criticality is one module's robust criticality (RiFT's MRC): the largest
// loss increase found for a perturbation of its weight alone within the
// ball, and the accuracy at that point.
type Criticality struct {
	Tensor string `json:"tensor"`
	Params int    `json:"params"`
	// LossIncrease is the worst loss found minus the unperturbed loss.
	LossIncrease float64 `json:"loss_increase"`
	// AccuracyDrop is the unperturbed accuracy minus the accuracy at the
	// worst loss.
	AccuracyDrop float64 `json:"accuracy_drop"`
	// Loss and Accuracy are the figures at the worst loss, found after
	// Epoch epochs with ‖ΔW‖/‖W‖ = Ratio.
	Loss     float64 `json:"loss"`
	Accuracy float64 `json:"accuracy"`
	Epoch    int     `json:"epoch"`
	Ratio    float64 `json:"ratio"`
}

// Inputs are normalised samples with labels, ready for forward passes —
// a data set corrupted (if asked) once, as RiFT fixes its adversarial
// examples before the ascent.
type Inputs struct {
	X      []float32
	Labels []int
	d      int
}

// NewInputs normalises (after corrupting sample i with dataset.NewRand
// (seed, i), as engine.Evaluate does) every sample of data for m.
func NewInputs(m *engine.Model, data *dataset.Set, corrupt dataset.Pipeline, seed uint64) (*Inputs, error) {
	if err := corrupt.Validate(); err != nil {
		return nil, err
	}
	if err := checkData(m, data, "data"); err != nil {
		return nil, err
	}
	d := m.InputSize()
	in := &Inputs{X: make([]float32, data.Len()*d), Labels: append([]int(nil), data.Labels...), d: d}
	m.Inputs(in.X, data, 0, data.Len(), corrupt, seed)
	return in, nil
}

// Len is the number of samples.
func (in *Inputs) Len() int { return len(in.Labels) }

// LossAccuracy is the model's mean cross-entropy and accuracy on the
// inputs (evaluation mode).
func LossAccuracy(m *engine.Model, in *Inputs) (loss, acc float64, err error) {
	t, err := newNet(m)
	if err != nil {
		return 0, 0, err
	}
	l, c := t.lossAccuracy(in)
	return l, c, nil
}

func (t *net) lossAccuracy(in *Inputs) (float64, float64) {
	const bs = 256
	k := t.m.NumClasses()
	var sum float64
	correct := 0
	for b0 := 0; b0 < in.Len(); b0 += bs {
		n := min(bs, in.Len()-b0)
		z := t.forward(in.X[b0*in.d:(b0+n)*in.d], n, false, false, nil)
		l, c := lossGrad(z, in.Labels[b0:b0+n], k, nil)
		sum += l * float64(n)
		correct += c
	}
	return sum / float64(in.Len()), float64(correct) / float64(in.Len())
}

// ModuleCriticality measures RiFT's module robust criticality of the
// parameter p (a weight of m): max over ‖ΔW‖ ≤ ε‖W‖ of L(W + ΔW) − L(W),
// searched as RiFT's code does — gradient ascent on p alone with SGD (the
// model in evaluation mode), each epoch visiting the inputs in a seeded
// order, then projected back onto the ball (ΔW scaled down to ε‖W‖ when
// longer) and evaluated; the worst epoch counts. baseLoss and baseAcc are
// the unperturbed figures (LossAccuracy). p is restored bit for bit.
func ModuleCriticality(ctx context.Context, m *engine.Model, in *Inputs, p *engine.Param, baseLoss, baseAcc float64, o CriticalityOptions) (Criticality, error) {
	if err := o.defaults(); err != nil {
		return Criticality{}, err
	}
	t, err := newNet(m)
	if err != nil {
		return Criticality{}, err
	}
	if _, ok := t.index[p]; !ok || p.Buffer {
		return Criticality{}, fmt.Errorf("criticality: %s is not a trainable parameter of the model", p.Name)
	}
	t.only = p
	orig := append([]float32(nil), p.Data...)
	defer copy(p.Data, orig)
	var wn float64
	for _, v := range orig {
		wn += float64(v) * float64(v)
	}
	wn = math.Sqrt(wn)
	g := t.grads[t.index[p]]
	k := t.m.NumClasses()
	bs := min(o.BatchSize, in.Len())
	dz := make([]float32, bs*k)
	labels := make([]int, bs)
	x := make([]float32, bs*in.d)
	res := Criticality{Tensor: p.Name, Params: len(p.Data), Loss: math.Inf(-1)}
	for ep := 1; ep <= o.Epochs; ep++ {
		order := dataset.NewRand(o.Seed, streamAscent, uint64(ep)).Perm(in.Len())
		for b0 := 0; b0 < len(order); b0 += bs {
			if err := ctx.Err(); err != nil {
				return Criticality{}, err
			}
			n := min(bs, len(order)-b0)
			for i, j := range order[b0 : b0+n] {
				copy(x[i*in.d:(i+1)*in.d], in.X[j*in.d:(j+1)*in.d])
				labels[i] = in.Labels[j]
			}
			z := t.forward(x[:n*in.d], n, false, false, nil)
			lossGrad(z, labels[:n], k, dz[:n*k])
			t.backward(dz[:n*k], n)
			// Ascent: SGD on −loss.
			w := p.Data
			parallel.Ranges(len(w), 1<<14, func(lo, hi int) {
				for j := lo; j < hi; j++ {
					w[j] = float32(float64(w[j]) + o.LR*float64(g[j]))
				}
			})
		}
		var dn float64
		for j, v := range p.Data {
			d := float64(v) - float64(orig[j])
			dn += d * d
		}
		ratio := 0.0
		if wn > 0 {
			ratio = math.Sqrt(dn) / wn
		}
		if ratio > o.Epsilon {
			f := o.Epsilon / ratio
			for j, v := range p.Data {
				p.Data[j] = float32(float64(orig[j]) + (float64(v)-float64(orig[j]))*f)
			}
			ratio = o.Epsilon
		}
		loss, acc := t.lossAccuracy(in)
		if loss > res.Loss {
			res.Loss, res.Accuracy, res.Epoch, res.Ratio = loss, acc, ep, ratio
		}
	}
	if o.Epochs == 0 {
		res.Loss, res.Accuracy = baseLoss, baseAcc
	}
	res.LossIncrease = res.Loss - baseLoss
	res.AccuracyDrop = baseAcc - res.Accuracy
	return res, nil
}
