package demo

import (
	"fmt"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

// Scores are a model's accuracies on the clean test images and on each
// corruption of them.
type Scores struct {
	Clean float64 `json:"clean"`
	// Corrupted is by corruption name.
	Corrupted map[string]float64 `json:"corrupted"`
	// MeanCorrupted averages Corrupted.
	MeanCorrupted float64 `json:"mean_corrupted"`
}

// Evaluator scores models on a data set, clean and under each corruption
// (at its fixed severity). The corrupted copies are made once: sample i
// draws its noise from dataset.NewRand(seed, i), exactly as
// `weightops eval --corrupt SPEC --seed N` does, so any row of the demo
// can be reproduced with the eval command.
type Evaluator struct {
	names     []string
	clean     *dataset.Set
	corrupted []*dataset.Set
}

// NewEvaluator prepares the clean and corrupted sets.
func NewEvaluator(s *dataset.Set, cs []Corruption, seed uint64) (*Evaluator, error) {
	e := &Evaluator{clean: s}
	for _, c := range cs {
		p, err := c.Pipeline()
		if err != nil {
			return nil, err
		}
		cs, err := p.ApplySet(s, nil, seed)
		if err != nil {
			return nil, fmt.Errorf("corruption %s: %w", c.Name, err)
		}
		e.names = append(e.names, c.Name)
		e.corrupted = append(e.corrupted, cs)
	}
	return e, nil
}

// Samples is the number of images per condition.
func (e *Evaluator) Samples() int { return e.clean.Len() }

// Model scores a loaded model.
func (e *Evaluator) Model(m *engine.Model) (Scores, error) {
	r, err := engine.Evaluate(m, e.clean, engine.EvalOptions{})
	if err != nil {
		return Scores{}, err
	}
	s := Scores{Clean: r.Accuracy, Corrupted: map[string]float64{}}
	for i, cs := range e.corrupted {
		r, err := engine.Evaluate(m, cs, engine.EvalOptions{})
		if err != nil {
			return Scores{}, fmt.Errorf("%s: %w", e.names[i], err)
		}
		s.Corrupted[e.names[i]] = r.Accuracy
		s.MeanCorrupted += r.Accuracy / float64(len(e.corrupted))
	}
	return s, nil
}

// CleanCorrect loads a checkpoint and says, per clean image, whether it
// classifies it right.
func (e *Evaluator) CleanCorrect(path string) ([]bool, error) {
	m, err := engine.Load(path, "")
	if err != nil {
		return nil, err
	}
	preds, err := engine.Predict(m, e.clean, engine.EvalOptions{})
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	out := make([]bool, len(preds))
	for i, p := range preds {
		out[i] = p.Class == e.clean.Labels[i]
	}
	return out, nil
}

// File loads a checkpoint (with the arch file beside it) and scores it.
func (e *Evaluator) File(path string) (Scores, error) {
	m, err := engine.Load(path, "")
	if err != nil {
		return Scores{}, err
	}
	s, err := e.Model(m)
	if err != nil {
		return Scores{}, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}
