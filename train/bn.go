package train

import (
	"fmt"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

// DefaultBNBatch is RecalibrateBN's batch size when none is given.
const DefaultBNBatch = 128

// RecalibrateOptions are RecalibrateBN's choices.
type RecalibrateOptions struct {
	// BatchSize is the samples per forward pass (default DefaultBNBatch).
	BatchSize int
	// Corrupt is applied to each raw sample before normalisation, sample i
	// drawing from dataset.NewRand(Seed, i) as engine.Evaluate does.
	Corrupt dataset.Pipeline
	Seed    uint64
}

// RecalibrateBN sets every batchnorm's running mean and variance to the
// statistics of the data as the model now computes them, as the RWS code's
// bn_update (from SWA) does: running statistics reset to mean 0, variance
// 1; the data run through the model in training mode, in order, in
// batches of b samples with momentum b/(n + b) after n samples, so each
// running statistic ends as the sample-weighted average of the batch
// means and unbiased batch variances; num_batches_tracked counts the
// batches. Dropout stays off (the result is deterministic; it matters only
// for a batchnorm after a dropout). It returns the number of batches.
func RecalibrateBN(m *engine.Model, data *dataset.Set, o RecalibrateOptions) (int, error) {
	if o.BatchSize <= 0 {
		o.BatchSize = DefaultBNBatch
	}
	if err := o.Corrupt.Validate(); err != nil {
		return 0, err
	}
	if err := checkData(m, data, "recalibration data"); err != nil {
		return 0, err
	}
	t, err := newNet(m)
	if err != nil {
		return 0, err
	}
	var bns []*engine.BatchNorm
	for _, l := range m.Leaves() {
		if bn, ok := l.(*engine.BatchNorm); ok {
			bns = append(bns, bn)
		}
	}
	if len(bns) == 0 {
		return 0, fmt.Errorf("the model has no batchnorm layers to recalibrate")
	}
	momenta := make([]float64, len(bns))
	for i, bn := range bns {
		momenta[i] = bn.Momentum
		clear(bn.Mean.Data)
		for c := range bn.Var.Data {
			bn.Var.Data[c] = 1
		}
	}
	defer func() {
		for i, bn := range bns {
			bn.Momentum = momenta[i]
		}
	}()
	d := m.InputSize()
	bs := min(o.BatchSize, data.Len())
	x := make([]float32, bs*d)
	batches := 0
	for b0 := 0; b0 < data.Len(); b0 += bs {
		n := min(bs, data.Len()-b0)
		m.Inputs(x, data, b0, n, o.Corrupt, o.Seed)
		for _, bn := range bns {
			bn.Momentum = float64(n) / float64(b0+n)
		}
		t.forward(x[:n*d], n, true, true, nil)
		batches++
	}
	return batches, nil
}
