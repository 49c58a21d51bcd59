// Package rift is Robust Critical Fine-Tuning (Zhu et al., ICCV 2023) on
// the engine's classifiers: find the module whose weights matter least
// for the loss under worst-case perturbation (its module robust
// criticality, sensitivity.WorstCase), fine-tune that module alone, and
// interpolate between the original and fine-tuned weights, choosing the
// interpolation on held-out data so that clean accuracy rises while
// accuracy on corrupted data does not fall.
package rift

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/sensitivity"
	"github.com/weightops/weightops/train"
)

// DefaultAlphas are RiFT's interpolation points 0, 0.1, …, 1.
var DefaultAlphas = []float64{0, 0.1, 0.2, 0.3, 0.4, 0.5, 0.6, 0.7, 0.8, 0.9, 1}

// Condition is one held-out evaluation: clean (no corruption) or one
// corruption pipeline.
type Condition struct {
	Name    string
	Corrupt dataset.Pipeline
}

// Options configure Run.
type Options struct {
	// Module is the module to fine-tune (a tensor-name prefix such as
	// layer4.1.conv2); empty chooses the least critical by WorstCase.
	Module string
	// WorstCase configures the criticality search (on the training data,
	// corrupted by its Corrupt); ignored when Module is set.
	WorstCase sensitivity.WorstCaseOptions
	// Train configures the fine-tuning (Freeze and Test are set by Run).
	Train train.Config
	// Val is the held-out data the epoch and α are chosen on.
	Val *dataset.Set
	// Corruptions are the held-out robustness conditions; α keeps their
	// mean accuracy at least the original model's.
	Corruptions []Condition
	// Alphas are the interpolation points (default DefaultAlphas).
	Alphas []float64
	// EvalSeed seeds the held-out corruptions (sample i draws from
	// dataset.NewRand(EvalSeed, i), as eval --corrupt --seed).
	EvalSeed uint64
	// Logf, when set, receives progress lines.
	Logf func(format string, args ...any)
}

// Point is the held-out accuracy at one interpolation α.
type Point struct {
	Alpha         float64            `json:"alpha"`
	Clean         float64            `json:"clean"`
	Corrupted     map[string]float64 `json:"corrupted"`
	MeanCorrupted float64            `json:"mean_corrupted"`
}

// Result is what Run measured and chose.
type Result struct {
	// Module is the fine-tuned module; Tensors its parameters.
	Module  string   `json:"module"`
	Tensors []string `json:"tensors"`
	// Criticality is the worst-case report the module was chosen from
	// (nil when it was given).
	Criticality *sensitivity.WorstCaseReport `json:"criticality"`
	// Epochs are the fine-tuning epochs (test figures: held-out clean);
	// BestEpoch is the one kept.
	Epochs    []train.Epoch `json:"epochs"`
	BestEpoch int           `json:"best_epoch"`
	// Sweep is every α; Alpha the chosen one, Chosen its point.
	Sweep  []Point `json:"sweep"`
	Alpha  float64 `json:"alpha"`
	Chosen Point   `json:"chosen"`
}

// Run applies RiFT to m (unchanged) with training data data, returning
// the interpolated model at the chosen α and the record.
func Run(ctx context.Context, m *engine.Model, data *dataset.Set, o Options) (*engine.Model, *Result, error) {
	if o.Val == nil {
		return nil, nil, errors.New("rift: held-out data (Val) is required to choose the epoch and α")
	}
	if len(o.Alphas) == 0 {
		o.Alphas = DefaultAlphas
	}
	for _, a := range o.Alphas {
		if !(a >= 0 && a <= 1) {
			return nil, nil, fmt.Errorf("rift: α %v outside [0, 1]", a)
		}
	}
	logf := o.Logf
	if logf == nil {
		logf = func(string, ...any) {}
	}
	res := &Result{Module: o.Module}
	if res.Module == "" {
		logf("module robust criticality of %d weight modules (ε = %g)", len(sensitivity.Weights(m)), epsilonOf(o.WorstCase))
		wc, err := sensitivity.WorstCase(ctx, m, data, o.WorstCase)
		if err != nil {
			return nil, nil, err
		}
		res.Criticality, res.Module = wc, wc.LeastCritical
		if res.Module == "" {
			return nil, nil, errors.New("rift: the model has no weight module")
		}
	}
	ft, err := m.Clone()
	if err != nil {
		return nil, nil, err
	}
	cfg := o.Train
	cfg.Test = o.Val
	cfg.Freeze = nil
	for _, p := range ft.Params() {
		if p.Buffer {
			continue
		}
		if strings.HasPrefix(p.Name, res.Module+".") {
			res.Tensors = append(res.Tensors, p.Name)
		} else {
			cfg.Freeze = append(cfg.Freeze, p.Name)
		}
	}
	if len(res.Tensors) == 0 {
		return nil, nil, fmt.Errorf("rift: module %q has no trainable tensor (modules: %s)", res.Module, strings.Join(moduleNames(m), ", "))
	}
	// The best held-out epoch's parameters (all of them: batchnorm
	// statistics move in training mode too, as in RiFT's model.train()).
	best := snapshot(ft)
	bestAcc := math.Inf(-1)
	cfg.AfterEpoch = func(e train.Epoch) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if e.TestAccuracy > bestAcc {
			bestAcc, res.BestEpoch, best = e.TestAccuracy, e.Epoch, snapshot(ft)
		}
		logf("fine-tuning %s: epoch %d, held-out accuracy %.2f%%", res.Module, e.Epoch, 100*e.TestAccuracy)
		return nil
	}
	met, err := train.Fit(ft, data, cfg)
	if err != nil {
		return nil, nil, fmt.Errorf("rift: fine-tuning %s: %w", res.Module, err)
	}
	res.Epochs = met.Epochs
	restore(ft, best)

	out, err := m.Clone()
	if err != nil {
		return nil, nil, err
	}
	chosen := -1
	for _, a := range o.Alphas {
		interpolate(out, m, ft, a)
		pt, err := score(out, o, a)
		if err != nil {
			return nil, nil, err
		}
		res.Sweep = append(res.Sweep, pt)
		logf("α = %g: held-out clean %.2f%%, corrupted %.2f%%", a, 100*pt.Clean, 100*pt.MeanCorrupted)
	}
	// The original's robustness is the floor: α = 0 if listed, else
	// scored on its own.
	base, err := score(m, o, 0)
	if err != nil {
		return nil, nil, err
	}
	for i, pt := range res.Sweep {
		if pt.MeanCorrupted < base.MeanCorrupted && len(o.Corruptions) > 0 {
			continue
		}
		if chosen < 0 || pt.Clean > res.Sweep[chosen].Clean || (pt.Clean == res.Sweep[chosen].Clean && pt.Alpha < res.Sweep[chosen].Alpha) {
			chosen = i
		}
	}
	if chosen < 0 {
		// No α keeps robustness (α = 0 not listed): the most robust one.
		for i, pt := range res.Sweep {
			if chosen < 0 || pt.MeanCorrupted > res.Sweep[chosen].MeanCorrupted {
				chosen = i
			}
		}
	}
	res.Alpha, res.Chosen = res.Sweep[chosen].Alpha, res.Sweep[chosen]
	interpolate(out, m, ft, res.Alpha)
	return out, res, nil
}

func epsilonOf(o sensitivity.WorstCaseOptions) float64 {
	if o.Epsilon == 0 {
		return 0.1
	}
	return o.Epsilon
}

// score evaluates a model on the held-out data, clean and corrupted.
func score(m *engine.Model, o Options, alpha float64) (Point, error) {
	pt := Point{Alpha: alpha, Corrupted: map[string]float64{}}
	r, err := engine.Evaluate(m, o.Val, engine.EvalOptions{})
	if err != nil {
		return pt, err
	}
	pt.Clean = r.Accuracy
	for _, c := range o.Corruptions {
		r, err := engine.Evaluate(m, o.Val, engine.EvalOptions{Corrupt: c.Corrupt, Seed: o.EvalSeed})
		if err != nil {
			return pt, err
		}
		pt.Corrupted[c.Name] = r.Accuracy
		pt.MeanCorrupted += r.Accuracy / float64(len(o.Corruptions))
	}
	return pt, nil
}

func snapshot(m *engine.Model) [][]float32 {
	var out [][]float32
	for _, p := range m.Params() {
		out = append(out, append([]float32(nil), p.Data...))
	}
	return out
}

func restore(m *engine.Model, s [][]float32) {
	for i, p := range m.Params() {
		copy(p.Data, s[i])
	}
}

// interpolate sets every parameter of out (running statistics included,
// as RiFT interpolates the whole state_dict) to α·ft + (1 − α)·orig,
// computed in float64; α = 0 and 1 give orig and ft exactly, and so do
// values fine-tuning left alone (the frozen modules).
func interpolate(out, orig, ft *engine.Model, alpha float64) {
	po, pa, pb := out.Params(), orig.Params(), ft.Params()
	for i := range po {
		for j := range po[i].Data {
			a, b := pa[i].Data[j], pb[i].Data[j]
			if a == b {
				po[i].Data[j] = a
				continue
			}
			po[i].Data[j] = float32(alpha*float64(b) + (1-alpha)*float64(a))
		}
	}
	lo, la, lb := out.Leaves(), orig.Leaves(), ft.Leaves()
	for i, l := range lo {
		if bn, ok := l.(*engine.BatchNorm); ok {
			na, nb := la[i].(*engine.BatchNorm).NumBatchesTracked, lb[i].(*engine.BatchNorm).NumBatchesTracked
			bn.NumBatchesTracked = int64(math.Round(alpha*float64(nb) + (1-alpha)*float64(na)))
		}
	}
}

func moduleNames(m *engine.Model) []string {
	var out []string
	for _, p := range sensitivity.Weights(m) {
		out = append(out, strings.TrimSuffix(p.Name, ".weight"))
	}
	return out
}
