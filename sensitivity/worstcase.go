package sensitivity

import (
	"context"
	"fmt"
	"sort"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/train"
)

// WorstCaseOptions configure WorstCase.
type WorstCaseOptions struct {
	// CriticalityOptions are the ball (Epsilon) and the ascent (epochs,
	// step size, batch, seed); zero values take RiFT's defaults.
	train.CriticalityOptions
	// Corrupt, when set, corrupts sample i with dataset.NewRand(Seed, i)
	// first (as eval --corrupt), once: the data the ascent sees.
	Corrupt dataset.Pipeline
	// Progress, if set, is called after each module.
	Progress func()
}

// ModuleCriticality is one module's worst-case figures.
type ModuleCriticality struct {
	Module string `json:"module"`
	train.Criticality
}

// WorstCaseReport is RiFT's module robust criticality for every weight
// module, most critical first.
type WorstCaseReport struct {
	Epsilon      float64             `json:"epsilon"`
	BaseLoss     float64             `json:"base_loss"`
	BaseAccuracy float64             `json:"base_accuracy"`
	Modules      []ModuleCriticality `json:"modules"`
	// LeastCritical is the module RiFT would fine-tune.
	LeastCritical string `json:"least_critical"`
}

// WorstCase measures, for each weight module (Weights) alone, the largest
// loss increase under a perturbation ‖ΔW‖ ≤ ε‖W‖ found by projected
// gradient ascent (train.ModuleCriticality), and the accuracy drop there.
// The model is restored bit for bit.
func WorstCase(ctx context.Context, m *engine.Model, s *dataset.Set, o WorstCaseOptions) (*WorstCaseReport, error) {
	in, err := train.NewInputs(m, s, o.Corrupt, o.Seed)
	if err != nil {
		return nil, err
	}
	l0, a0, err := train.LossAccuracy(m, in)
	if err != nil {
		return nil, err
	}
	eps := o.Epsilon
	if eps == 0 {
		eps = 0.1
	}
	rep := &WorstCaseReport{Epsilon: eps, BaseLoss: l0, BaseAccuracy: a0}
	for _, p := range Weights(m) {
		c, err := train.ModuleCriticality(ctx, m, in, p, l0, a0, o.CriticalityOptions)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", p.Name, err)
		}
		rep.Modules = append(rep.Modules, ModuleCriticality{Module: moduleOf(p.Name), Criticality: c})
		if o.Progress != nil {
			o.Progress()
		}
	}
	sort.SliceStable(rep.Modules, func(i, j int) bool {
		a, b := rep.Modules[i], rep.Modules[j]
		if a.LossIncrease != b.LossIncrease {
			return a.LossIncrease > b.LossIncrease
		}
		return a.Module < b.Module
	})
	if n := len(rep.Modules); n > 0 {
		rep.LeastCritical = rep.Modules[n-1].Module
	}
	return rep, nil
}
