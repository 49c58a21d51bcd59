// Package sensitivity measures how much each weight module of a classifier
// matters: it perturbs one module at a time with seeded Gaussian noise of a
// norm relative to the module's own (‖v‖ = γ·‖W‖, the relative perturbation
// of adversarial-weight-perturbation and module-criticality studies),
// evaluates the model, and reports the accuracy drop per module. It tells
// a user which modules a patch may touch safely.
package sensitivity

import (
	"fmt"
	"math"
	"sort"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

// Options control an analysis.
type Options struct {
	// Rel are the relative noise norms γ.
	Rel []float64
	// Trials per (module, γ), each with its own noise draw.
	Trials int
	// Seed makes the noise reproducible.
	Seed uint64
	// Eval is passed to the engine (batch size, corruptions).
	Eval engine.EvalOptions
	// Progress, if set, is called after each evaluation.
	Progress func()
}

// Result is the effect of noise of one relative size on one module.
type Result struct {
	Module   string    `json:"module"`
	Tensor   string    `json:"tensor"`
	Params   int       `json:"params"`
	Rel      float64   `json:"rel"`
	Accuracy []float64 `json:"accuracy"` // per trial
	MeanDrop float64   `json:"mean_drop"`
	StdDrop  float64   `json:"std_drop"` // sample standard deviation over trials
}

// Report is an analysis: the unperturbed accuracy and one Result per
// module and γ, most sensitive first (by the largest γ's mean drop).
type Report struct {
	BaseAccuracy float64  `json:"base_accuracy"`
	Results      []Result `json:"results"`
	Evaluations  int      `json:"evaluations"`
}

// Weights lists the modules analysed: every "weight" parameter of two or
// more dimensions (linear and convolution layers).
func Weights(m *engine.Model) []*engine.Param {
	var out []*engine.Param
	for _, p := range m.Params() {
		if p.Role == "weight" && len(p.Shape) >= 2 {
			out = append(out, p)
		}
	}
	return out
}

// Noise fills v with Gaussian noise scaled so that ‖v‖ = rel·‖w‖ exactly
// (up to float32 rounding), from the stream (seed, module, γ index, trial).
func Noise(v, w []float32, rel float64, r *dataset.Rand) {
	var wn, vn float64
	for i := range w {
		wn += float64(w[i]) * float64(w[i])
	}
	g := make([]float64, len(v))
	for i := range g {
		g[i] = r.NormFloat64()
		vn += g[i] * g[i]
	}
	scale := 0.0
	if vn > 0 {
		scale = rel * math.Sqrt(wn) / math.Sqrt(vn)
	}
	for i := range v {
		v[i] = float32(g[i] * scale)
	}
}

// Analyze perturbs each weight module in turn and evaluates m on s. The
// model is restored after every evaluation, bit for bit.
func Analyze(m *engine.Model, s *dataset.Set, o Options) (*Report, error) {
	if o.Trials < 1 {
		o.Trials = 1
	}
	base, err := engine.Evaluate(m, s, o.Eval)
	if err != nil {
		return nil, err
	}
	rep := &Report{BaseAccuracy: base.Accuracy, Evaluations: 1}
	mods := Weights(m)
	for mi, p := range mods {
		orig := append([]float32(nil), p.Data...)
		noise := make([]float32, len(p.Data))
		for gi, rel := range o.Rel {
			res := Result{Module: moduleOf(p.Name), Tensor: p.Name, Params: len(p.Data), Rel: rel}
			for t := 0; t < o.Trials; t++ {
				Noise(noise, orig, rel, dataset.NewRand(o.Seed, uint64(mi), uint64(gi), uint64(t)))
				for i := range p.Data {
					p.Data[i] = orig[i] + noise[i]
				}
				r, err := engine.Evaluate(m, s, o.Eval)
				copy(p.Data, orig)
				if err != nil {
					return nil, fmt.Errorf("%s at γ=%g: %w", p.Name, rel, err)
				}
				rep.Evaluations++
				res.Accuracy = append(res.Accuracy, r.Accuracy)
				if o.Progress != nil {
					o.Progress()
				}
			}
			res.MeanDrop, res.StdDrop = dropStats(base.Accuracy, res.Accuracy)
			rep.Results = append(rep.Results, res)
		}
	}
	sortByLargestRel(rep.Results, o.Rel)
	return rep, nil
}

func moduleOf(tensor string) string {
	for i := len(tensor) - 1; i > 0; i-- {
		if tensor[i] == '.' {
			return tensor[:i]
		}
	}
	return tensor
}

func dropStats(base float64, acc []float64) (mean, std float64) {
	for _, a := range acc {
		mean += base - a
	}
	mean /= float64(len(acc))
	if len(acc) > 1 {
		for _, a := range acc {
			d := base - a - mean
			std += d * d
		}
		std = math.Sqrt(std / float64(len(acc)-1))
	}
	return mean, std
}

// sortByLargestRel orders modules by their mean drop at the largest γ
// (ties by name), keeping each module's rows together in γ order.
func sortByLargestRel(rs []Result, rels []float64) {
	if len(rels) == 0 {
		return
	}
	maxRel := rels[0]
	for _, r := range rels {
		maxRel = math.Max(maxRel, r)
	}
	key := map[string]float64{}
	for _, r := range rs {
		if r.Rel == maxRel {
			key[r.Module] = r.MeanDrop
		}
	}
	relIdx := map[float64]int{}
	for i, r := range rels {
		relIdx[r] = i
	}
	sort.SliceStable(rs, func(i, j int) bool {
		a, b := rs[i], rs[j]
		if a.Module != b.Module {
			if key[a.Module] != key[b.Module] {
				return key[a.Module] > key[b.Module]
			}
			return a.Module < b.Module
		}
		return relIdx[a.Rel] < relIdx[b.Rel]
	})
}
