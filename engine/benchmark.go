package engine

import (
	"fmt"

	"github.com/weightops/weightops/dataset"
)

// BenchmarkResult is a classifier on the common-corruptions benchmark:
// accuracy under each corruption and severity, and Hendrycks &
// Dietterich's summaries. Errors are 1 − accuracy.
type BenchmarkResult struct {
	// Clean is the accuracy without corruption.
	Clean float64 `json:"clean"`
	// Corruptions are in the benchmark's order.
	Corruptions []CorruptionResult `json:"corruptions"`
	// MeanAccuracy is the mean over corruptions of their mean accuracy
	// over severities (mCA), MeanError its complement, the unnormalised
	// mean corruption error.
	MeanAccuracy float64 `json:"mean_accuracy"`
	MeanError    float64 `json:"mean_error"`
	// MeanRelativeError is the mean over corruptions and severities of
	// E − E_clean: what the corruptions cost.
	MeanRelativeError float64 `json:"mean_relative_error"`
	// MCE and RelativeMCE normalise by a baseline model (AlexNet in the
	// paper): CE_c = Σ_s E_s,c / Σ_s E^base_s,c and relative CE_c =
	// Σ_s (E_s,c − E_clean) / Σ_s (E^base_s,c − E^base_clean), averaged
	// over the corruptions where they are defined; null without a
	// baseline.
	MCE         *float64 `json:"mce"`
	RelativeMCE *float64 `json:"relative_mce"`
	// BaselineClean is the baseline's clean accuracy (null without one).
	BaselineClean *float64 `json:"baseline_clean"`
	// Seed seeds the corruptions: sample i draws from NewRand(seed, i).
	Seed uint64 `json:"seed"`
}

// CorruptionResult is one corruption at the severities evaluated.
type CorruptionResult struct {
	Name     string    `json:"name"`
	Severity []int     `json:"severity"`
	Accuracy []float64 `json:"accuracy"`
	// Mean is the accuracy averaged over the severities.
	Mean float64 `json:"mean"`
	// Baseline is the baseline's accuracy per severity; CE and
	// RelativeCE its normalised errors (null without a baseline).
	Baseline   []float64 `json:"baseline"`
	CE         *float64  `json:"ce"`
	RelativeCE *float64  `json:"relative_ce"`
}

// EvaluateBenchmark evaluates m (and baseline, if not nil) on s clean and
// under every condition, each corruption at each of its severities, with
// opt's batch size and seed (opt.Corrupt must be empty). progress, if
// set, is called after each evaluation.
func EvaluateBenchmark(m, baseline *Model, s *dataset.Set, conds []dataset.SuiteCondition, opt EvalOptions, progress func()) (*BenchmarkResult, error) {
	if len(opt.Corrupt) > 0 {
		return nil, fmt.Errorf("benchmark: the conditions replace Corrupt")
	}
	models := []*Model{m}
	if baseline != nil {
		models = append(models, baseline)
	}
	acc := func(mm *Model, c dataset.Pipeline) (float64, error) {
		o := opt
		o.Corrupt = c
		r, err := Evaluate(mm, s, o)
		if progress != nil {
			progress()
		}
		if err != nil {
			return 0, err
		}
		return r.Accuracy, nil
	}
	res := &BenchmarkResult{Seed: opt.Seed}
	var err error
	if res.Clean, err = acc(m, nil); err != nil {
		return nil, err
	}
	var baseClean float64
	if baseline != nil {
		if baseClean, err = acc(baseline, nil); err != nil {
			return nil, fmt.Errorf("baseline: %w", err)
		}
		res.BaselineClean = &baseClean
	}
	index := map[string]int{}
	for _, c := range conds {
		k, ok := index[c.Name]
		if !ok {
			k = len(res.Corruptions)
			index[c.Name] = k
			res.Corruptions = append(res.Corruptions, CorruptionResult{Name: c.Name})
		}
		cr := &res.Corruptions[k]
		p := dataset.Pipeline{{Name: c.Name, Param: float64(c.Severity), Suite: true}}
		for i, mm := range models {
			a, err := acc(mm, p)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c, err)
			}
			if i == 0 {
				cr.Severity = append(cr.Severity, c.Severity)
				cr.Accuracy = append(cr.Accuracy, a)
			} else {
				cr.Baseline = append(cr.Baseline, a)
			}
		}
	}
	var mce, rmce float64
	var nce, nrce int
	for i := range res.Corruptions {
		cr := &res.Corruptions[i]
		var e, eb, rel, relb float64
		for j, a := range cr.Accuracy {
			cr.Mean += a / float64(len(cr.Accuracy))
			e += 1 - a
			rel += (1 - a) - (1 - res.Clean)
			res.MeanRelativeError += ((1 - a) - (1 - res.Clean)) / float64(len(cr.Accuracy)*len(res.Corruptions))
			if baseline != nil {
				eb += 1 - cr.Baseline[j]
				relb += (1 - cr.Baseline[j]) - (1 - baseClean)
			}
		}
		res.MeanAccuracy += cr.Mean / float64(len(res.Corruptions))
		if baseline != nil {
			// A ratio over a baseline that the corruption does not hurt
			// (no error, or none beyond its clean error) is undefined:
			// null, and left out of the mean.
			if eb > 0 {
				ce := e / eb
				cr.CE = &ce
				mce += ce
				nce++
			}
			if relb > 0 {
				rce := rel / relb
				cr.RelativeCE = &rce
				rmce += rce
				nrce++
			}
		}
	}
	res.MeanError = 1 - res.MeanAccuracy
	if nce > 0 {
		mce /= float64(nce)
		res.MCE = &mce
	}
	if nrce > 0 {
		rmce /= float64(nrce)
		res.RelativeMCE = &rmce
	}
	return res, nil
}
