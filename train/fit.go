// Package train trains the classifiers of package engine in pure Go:
// backward passes for linear, conv2d, batchnorm (training or evaluation mode),
// activations, pooling, flatten and dropout; softmax cross-entropy; SGD
// with momentum and Adam; seeded Kaiming-uniform initialisation as
// PyTorch does it. A fixed seed gives bit-for-bit identical weights on a
// given platform, whatever the number of cores: every reduction over a
// batch runs in a fixed order.
//
// A typical use builds a model from an arch, initialises and fits it,
// then saves it where the engine (and weightops eval) can load it:
//
//	m, _ := engine.New(arch)
//	train.Init(m, seed)
//	metrics, err := train.Fit(m, trainSet, train.Config{Epochs: 5, Test: testSet})
//	err = m.Save("out/", nil) // model.safetensors + arch.yaml
package train

import (
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"

	"github.com/weightops/weightops/internal/parallel"
)

// Config sets up Fit. Zero values take the defaults noted.
type Config struct {
	// Epochs is the number of passes over the data (default 1).
	Epochs int
	// BatchSize is the number of samples per step (default 64); the last
	// batch of an epoch may be smaller.
	BatchSize int
	// Optimizer is "sgd" (default) or "adam".
	Optimizer string
	// LR is the learning rate (default 0.01 for SGD, 0.001 for Adam).
	LR float64
	// Momentum is SGD's momentum, PyTorch-style (buf = μ·buf + g).
	Momentum float64
	// WeightDecay adds WeightDecay·w to each weight's gradient (L2).
	WeightDecay float64
	// Beta1, Beta2 and Eps are Adam's (defaults 0.9, 0.999, 1e-8).
	Beta1, Beta2, Eps float64
	// LRDecay multiplies the learning rate by this after each epoch
	// (default 1: constant).
	LRDecay float64
	// Seed drives the shuffling, dropout masks and corruptions.
	Seed uint64
	// Corrupt is applied to raw training samples (values in [0, 1])
	// before normalisation, afresh each epoch; see CorruptFraction.
	Corrupt dataset.Pipeline
	// CorruptFraction is the chance that a sample is corrupted in a given
	// epoch (default 1 when Corrupt is set).
	CorruptFraction float64
	// Freeze lists parameter name prefixes that are not updated (e.g.
	// "features." to fine-tune only the classifier).
	Freeze []string
	// Test, when set, is evaluated after every epoch.
	Test *dataset.Set
	// Logf, when set, receives one line per epoch.
	Logf func(format string, args ...any)
	// AfterEpoch, when set, is called after each epoch with its figures
	// (e.g. to keep the parameters of the best epoch); an error stops Fit.
	AfterEpoch func(Epoch) error
}

// Epoch is what one epoch measured. Train loss and accuracy are averaged
// over the epoch's steps as they ran (dropout and batch statistics on);
// test figures come from a clean pass afterwards in evaluation mode.
type Epoch struct {
	// Epoch counts from 1.
	Epoch int `json:"epoch"`
	// TrainLoss and TrainAccuracy are averaged over the epoch's samples.
	TrainLoss     float64 `json:"train_loss"`
	TrainAccuracy float64 `json:"train_accuracy"`
	// Test figures are zero without Config.Test.
	TestLoss     float64 `json:"test_loss,omitempty"`
	TestAccuracy float64 `json:"test_accuracy,omitempty"`
	TestCorrect  int     `json:"test_correct,omitempty"`
	TestSamples  int     `json:"test_samples,omitempty"`
}

// Metrics is the record of a Fit.
type Metrics struct {
	// Epochs has one entry per epoch.
	Epochs []Epoch `json:"epochs"`
	// Steps is the number of optimiser steps taken.
	Steps int `json:"steps"`
}

// Last returns the final epoch's figures.
func (m *Metrics) Last() Epoch {
	if len(m.Epochs) == 0 {
		return Epoch{}
	}
	return m.Epochs[len(m.Epochs)-1]
}

func (c *Config) defaults() error {
	if c.Epochs == 0 {
		c.Epochs = 1
	}
	if c.BatchSize == 0 {
		c.BatchSize = 64
	}
	if c.Optimizer == "" {
		c.Optimizer = "sgd"
	}
	if c.Optimizer != "sgd" && c.Optimizer != "adam" {
		return fmt.Errorf("unknown optimizer %q (sgd or adam)", c.Optimizer)
	}
	if c.LR == 0 {
		c.LR = 0.01
		if c.Optimizer == "adam" {
			c.LR = 0.001
		}
	}
	if c.Beta1 == 0 {
		c.Beta1 = 0.9
	}
	if c.Beta2 == 0 {
		c.Beta2 = 0.999
	}
	if c.Eps == 0 {
		c.Eps = 1e-8
	}
	if c.LRDecay == 0 {
		c.LRDecay = 1
	}
	if len(c.Corrupt) > 0 && c.CorruptFraction == 0 {
		c.CorruptFraction = 1
	}
	switch {
	case c.Epochs < 0, c.BatchSize < 0:
		return errors.New("negative epochs or batch size")
	case !(c.LR > 0), c.Momentum < 0, c.Momentum >= 1, c.WeightDecay < 0, c.LRDecay < 0:
		return errors.New("learning rate must be positive, momentum in [0, 1), weight decay and LR decay non-negative")
	case c.Beta1 < 0 || c.Beta1 >= 1 || c.Beta2 < 0 || c.Beta2 >= 1 || c.Eps <= 0:
		return errors.New("the Adam betas must be in [0, 1) and eps positive")
	case c.CorruptFraction < 0 || c.CorruptFraction > 1:
		return errors.New("corrupt fraction must be in [0, 1]")
	}
	return c.Corrupt.Validate()
}

// checkData verifies a set fits the model.
func checkData(m *engine.Model, s *dataset.Set, what string) error {
	if err := s.Validate(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	if s.SampleSize() != m.InputSize() {
		return fmt.Errorf("%s: samples have %d values but the model takes %v", what, s.SampleSize(), m.InputShape())
	}
	if s.Len() == 0 {
		return fmt.Errorf("%s: no samples", what)
	}
	k := m.NumClasses()
	for i, l := range s.Labels {
		if l >= k {
			return fmt.Errorf("%s: sample %d has label %d but the model has %d classes", what, i, l, k)
		}
	}
	return nil
}

// Stream labels for Rand seeds, so each use draws an independent stream.
const (
	streamShuffle = iota + 1
	streamDropout
	streamCorrupt
	streamCorruptPick
	streamAscent
)

// Fit trains the model in place on data with mini-batch gradient descent
// on the mean softmax cross-entropy (a final softmax or log_softmax layer
// is skipped: the loss works on the logits before it). Each epoch visits
// the samples in an order drawn from the seed. Batchnorm runs in training
// mode (batch statistics, running statistics updated as PyTorch does) and
// dropout is applied. With cfg.Test, every epoch ends with an evaluation.
func Fit(m *engine.Model, data *dataset.Set, cfg Config) (*Metrics, error) {
	if err := cfg.defaults(); err != nil {
		return nil, err
	}
	if err := checkData(m, data, "training data"); err != nil {
		return nil, err
	}
	if cfg.Test != nil {
		if err := checkData(m, cfg.Test, "test data"); err != nil {
			return nil, err
		}
	}
	t, err := newNet(m)
	if err != nil {
		return nil, err
	}
	opt := newOptimizer(&cfg, t)
	d, k := m.InputSize(), m.NumClasses()
	bs := min(cfg.BatchSize, data.Len())
	x := make([]float32, bs*d)
	dz := make([]float32, bs*k)
	labels := make([]int, bs)
	shape := m.InputShape()
	metrics := &Metrics{}
	lr := cfg.LR
	for ep := 1; ep <= cfg.Epochs; ep++ {
		order := dataset.NewRand(cfg.Seed, streamShuffle, uint64(ep)).Perm(data.Len())
		var lossSum float64
		var correct int
		for b0 := 0; b0 < len(order); b0 += bs {
			n := min(bs, len(order)-b0)
			idx := order[b0 : b0+n]
			parallel.Ranges(n, 8, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					xi := x[i*d : (i+1)*d]
					copy(xi, data.Sample(idx[i]))
					if len(cfg.Corrupt) > 0 {
						pick := dataset.NewRand(cfg.Seed, streamCorruptPick, uint64(ep), uint64(idx[i]))
						if cfg.CorruptFraction >= 1 || pick.Float64() < cfg.CorruptFraction {
							_ = cfg.Corrupt.Apply(xi, shape, dataset.NewRand(cfg.Seed, streamCorrupt, uint64(ep), uint64(idx[i])))
						}
					}
					m.Normalize(xi, xi)
				}
			})
			for i, j := range idx {
				labels[i] = data.Labels[j]
			}
			rng := dataset.NewRand(cfg.Seed, streamDropout, uint64(metrics.Steps))
			z := t.forward(x[:n*d], n, true, true, rng)
			loss, c := lossGrad(z, labels[:n], k, dz[:n*k])
			if math.IsNaN(loss) || math.IsInf(loss, 0) {
				return metrics, fmt.Errorf("epoch %d, step %d: loss is %v (learning rate too high?)", ep, metrics.Steps+1, loss)
			}
			lossSum += loss * float64(n)
			correct += c
			t.backward(dz[:n*k], n)
			opt.step(lr)
			metrics.Steps++
		}
		e := Epoch{Epoch: ep, TrainLoss: lossSum / float64(data.Len()), TrainAccuracy: float64(correct) / float64(data.Len())}
		if cfg.Test != nil {
			r, err := evaluate(t, cfg.Test, 256)
			if err != nil {
				return metrics, err
			}
			e.TestLoss, e.TestAccuracy, e.TestCorrect, e.TestSamples = r.loss, r.accuracy(), r.correct, r.samples
		}
		metrics.Epochs = append(metrics.Epochs, e)
		if cfg.Logf != nil {
			msg := fmt.Sprintf("epoch %d: train loss %.4f accuracy %.4f", ep, e.TrainLoss, e.TrainAccuracy)
			if cfg.Test != nil {
				msg += fmt.Sprintf(", test loss %.4f accuracy %.4f (%d/%d)", e.TestLoss, e.TestAccuracy, e.TestCorrect, e.TestSamples)
			}
			cfg.Logf("%s", msg)
		}
		if cfg.AfterEpoch != nil {
			if err := cfg.AfterEpoch(e); err != nil {
				return metrics, err
			}
		}
		lr *= cfg.LRDecay
	}
	return metrics, nil
}

type evalResult struct {
	loss             float64
	correct, samples int
}

func (r evalResult) accuracy() float64 { return float64(r.correct) / float64(r.samples) }

// evaluate is the training loop's own evaluation: batchnorm on running
// statistics, no dropout, no corruption.
func evaluate(t *net, s *dataset.Set, bs int) (evalResult, error) {
	m := t.m
	d, k := m.InputSize(), m.NumClasses()
	x := make([]float32, min(bs, s.Len())*d)
	var r evalResult
	var lossSum float64
	for b0 := 0; b0 < s.Len(); b0 += bs {
		n := min(bs, s.Len()-b0)
		for i := 0; i < n; i++ {
			m.Normalize(x[i*d:(i+1)*d], s.Sample(b0+i))
		}
		z := t.forward(x[:n*d], n, false, false, nil)
		loss, c := lossGrad(z, s.Labels[b0:b0+n], k, nil)
		lossSum += loss * float64(n)
		r.correct += c
	}
	r.samples = s.Len()
	r.loss = lossSum / float64(s.Len())
	return r, nil
}

// Evaluate measures the mean cross-entropy and accuracy of the model on a
// clean set with the training package's own forward pass (batchnorm on
// running statistics, no dropout). It is an independent check on
// engine.Evaluate, which should agree.
func Evaluate(m *engine.Model, s *dataset.Set) (loss, accuracy float64, correct int, err error) {
	if err := checkData(m, s, "data"); err != nil {
		return 0, 0, 0, err
	}
	t, err := newNet(m)
	if err != nil {
		return 0, 0, 0, err
	}
	r, err := evaluate(t, s, 256)
	return r.loss, r.accuracy(), r.correct, err
}

// Gradients returns the mean softmax cross-entropy of a batch of n
// normalised samples x against labels, and its gradient with respect to
// each of m.Params() (nil for running statistics). Batchnorm uses the
// batch's statistics without updating the running ones; dropout is off.
// The model is not modified.
func Gradients(m *engine.Model, x []float32, labels []int) (float64, [][]float32, error) {
	return gradients(m, x, labels, true)
}

// gradients is Gradients (train) or GradientsEval.
func gradients(m *engine.Model, x []float32, labels []int, train bool) (float64, [][]float32, error) {
	n := len(labels)
	if n == 0 || len(x) != n*m.InputSize() {
		return 0, nil, fmt.Errorf("gradients: %d values for %d samples of %d", len(x), n, m.InputSize())
	}
	for i, l := range labels {
		if l < 0 || l >= m.NumClasses() {
			return 0, nil, fmt.Errorf("gradients: sample %d has label %d", i, l)
		}
	}
	t, err := newNet(m)
	if err != nil {
		return 0, nil, err
	}
	k := m.NumClasses()
	z := t.forward(x, n, train, false, nil)
	dz := make([]float32, n*k)
	loss, _ := lossGrad(z, labels, k, dz)
	t.backward(dz, n)
	return loss, t.grads, nil
}

// Init sets the model's parameters as a freshly constructed PyTorch
// module would: linear and conv2d weights and biases uniform in
// ±1/√fan_in (kaiming_uniform_ with a = √5, the PyTorch default),
// batchnorm weight 1, bias 0, running mean 0 and variance 1. Each tensor
// draws from its own stream of the seed.
func Init(m *engine.Model, seed uint64) {
	pi := uint64(0)
	next := func() *dataset.Rand {
		pi++
		return dataset.NewRand(seed, pi)
	}
	uniform := func(p *engine.Param, fanIn int) {
		r := next()
		bound := 1 / math.Sqrt(float64(fanIn))
		for i := range p.Data {
			p.Data[i] = float32(r.Uniform(-bound, bound))
		}
	}
	fill := func(p *engine.Param, v float32) {
		if p == nil {
			return
		}
		for i := range p.Data {
			p.Data[i] = v
		}
	}
	for _, l := range m.Leaves() {
		switch l := l.(type) {
		case *engine.Linear:
			uniform(l.W, l.In)
			if l.B != nil {
				uniform(l.B, l.In)
			}
		case *engine.Conv2D:
			fan := l.GroupRows()
			uniform(l.Weight, fan)
			if l.B != nil {
				uniform(l.B, fan)
			}
		case *engine.BatchNorm:
			fill(l.Weight, 1)
			fill(l.Bias, 0)
			fill(l.Mean, 0)
			fill(l.Var, 1)
			l.NumBatchesTracked = 0
		}
	}
}

// optimizer updates the trainable parameters from t.grads.
type optimizer struct {
	cfg    *Config
	t      *net
	train  []bool
	state1 [][]float32 // momentum buffer or Adam's first moment
	state2 [][]float32 // Adam's second moment
	steps  int
}

func newOptimizer(cfg *Config, t *net) *optimizer {
	o := &optimizer{cfg: cfg, t: t, train: make([]bool, len(t.params)),
		state1: make([][]float32, len(t.params)), state2: make([][]float32, len(t.params))}
	for i, p := range t.params {
		o.train[i] = !p.Buffer
		for _, f := range cfg.Freeze {
			if strings.HasPrefix(p.Name, f) {
				o.train[i] = false
			}
		}
		if !o.train[i] {
			continue
		}
		o.state1[i] = make([]float32, len(p.Data))
		if cfg.Optimizer == "adam" {
			o.state2[i] = make([]float32, len(p.Data))
		}
	}
	return o
}

func (o *optimizer) step(lr float64) {
	o.steps++
	cfg := o.cfg
	bc1 := 1 - math.Pow(cfg.Beta1, float64(o.steps))
	bc2 := 1 - math.Pow(cfg.Beta2, float64(o.steps))
	for i, p := range o.t.params {
		if !o.train[i] {
			continue
		}
		w, g, s1, s2 := p.Data, o.t.grads[i], o.state1[i], o.state2[i]
		first := o.steps == 1
		parallel.Ranges(len(w), 1<<13, func(lo, hi int) {
			for j := lo; j < hi; j++ {
				gj := float64(g[j]) + cfg.WeightDecay*float64(w[j])
				switch cfg.Optimizer {
				case "sgd":
					if cfg.Momentum > 0 {
						if first {
							s1[j] = float32(gj)
						} else {
							s1[j] = float32(cfg.Momentum*float64(s1[j]) + gj)
						}
						gj = float64(s1[j])
					}
					w[j] = float32(float64(w[j]) - lr*gj)
				case "adam":
					s1[j] = float32(cfg.Beta1*float64(s1[j]) + (1-cfg.Beta1)*gj)
					s2[j] = float32(cfg.Beta2*float64(s2[j]) + (1-cfg.Beta2)*gj*gj)
					mh := float64(s1[j]) / bc1
					vh := float64(s2[j]) / bc2
					w[j] = float32(float64(w[j]) - lr*mh/(math.Sqrt(vh)+cfg.Eps))
				}
			}
		})
	}
}
