package engine

import (
	"fmt"
	"math"

	"github.com/weightops/weightops/dataset"

	"github.com/weightops/weightops/internal/parallel"
)

// EvalOptions tune Evaluate.
type EvalOptions struct {
	// BatchSize is the number of samples per forward pass (default 256).
	BatchSize int
	// Corrupt is applied to each raw sample (values in [0, 1]) before
	// normalisation; sample i draws from dataset.NewRand(Seed, i).
	Corrupt dataset.Pipeline
	// Seed seeds the corruptions.
	Seed uint64
}

// Result is what an evaluation measured. It encodes to JSON as is.
type Result struct {
	// Samples, Correct and Accuracy count the predictions (the first
	// highest output) equal to the label.
	Samples  int     `json:"samples"`
	Correct  int     `json:"correct"`
	Accuracy float64 `json:"accuracy"`
	// Loss is the mean cross-entropy (natural log) of the true class.
	Loss float64 `json:"loss"`
	// PerClass has one entry per model output, by true class.
	PerClass []ClassResult `json:"per_class"`
	// Corruption and Seed record the corruption applied, if any.
	Corruption string `json:"corruption"`
	Seed       uint64 `json:"seed"`
}

// ClassResult is the accuracy over the samples of one true class.
type ClassResult struct {
	// Class is the class index and Name its name from the arch, if any.
	Class int    `json:"class"`
	Name  string `json:"name"`
	// Samples of this class, Correct of them predicted, Accuracy the ratio
	// (0 when there are no samples).
	Samples  int     `json:"samples"`
	Correct  int     `json:"correct"`
	Accuracy float64 `json:"accuracy"`
}

// Inputs writes samples first … first+n−1 of s into x as the network
// takes them: each corrupted (when corrupt is set) with its own stream
// dataset.NewRand(seed, index), as eval --corrupt does, then normalised;
// spread over all cores.
func (m *Model) Inputs(x []float32, s *dataset.Set, first, n int, corrupt dataset.Pipeline, seed uint64) {
	d, shape := m.InputSize(), m.InputShape()
	parallel.Ranges(n, 8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			xi := x[i*d : (i+1)*d]
			copy(xi, s.Sample(first+i))
			if len(corrupt) > 0 {
				_ = corrupt.Apply(xi, shape, dataset.NewRand(seed, uint64(first+i)))
			}
			m.Normalize(xi, xi)
		}
	})
}

// Prediction is one sample's outcome: the predicted class (the first
// highest output) and the log-probability of the true class.
type Prediction struct {
	// Class is the predicted class.
	Class int
	// LogProb is the natural log-probability of the true class.
	LogProb float64
}

// Predict runs the model over a data set, batch by batch, corrupting and
// normalising each raw sample first. The set's samples must hold
// InputSize values (any shape of that size), and labels must be below
// NumClasses.
func Predict(m *Model, s *dataset.Set, opt EvalOptions) ([]Prediction, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	if err := opt.Corrupt.Validate(); err != nil {
		return nil, err
	}
	d := m.InputSize()
	if s.SampleSize() != d {
		return nil, fmt.Errorf("samples have shape %v (%d values) but the model takes %v (%d values)", s.Shape, s.SampleSize(), m.InputShape(), d)
	}
	k := m.NumClasses()
	for i, l := range s.Labels {
		if l >= k {
			return nil, fmt.Errorf("sample %d has label %d but the model has %d classes", i, l, k)
		}
	}
	bs := opt.BatchSize
	if bs <= 0 {
		bs = 256
	}
	out := make([]Prediction, s.Len())
	ws := &Workspace{}
	x := make([]float32, min(bs, s.Len())*d)
	kind := m.Output()
	for b0 := 0; b0 < s.Len(); b0 += bs {
		n := min(bs, s.Len()-b0)
		m.Inputs(x, s, b0, n, opt.Corrupt, opt.Seed)
		y := m.Forward(x[:n*d], n, ws)
		for i := 0; i < n; i++ {
			row := y[i*k : (i+1)*k]
			out[b0+i] = Prediction{Class: argmax(row), LogProb: logProb(row, s.Labels[b0+i], kind)}
		}
	}
	return out, nil
}

// Evaluate measures accuracy, per-class accuracy and mean cross-entropy
// of the model on a data set (see Predict).
func Evaluate(m *Model, s *dataset.Set, opt EvalOptions) (*Result, error) {
	preds, err := Predict(m, s, opt)
	if err != nil {
		return nil, err
	}
	return Score(m, s.Labels, preds, opt), nil
}

// Score summarises predictions against labels.
func Score(m *Model, labels []int, preds []Prediction, opt EvalOptions) *Result {
	k := m.NumClasses()
	r := &Result{Samples: len(labels), PerClass: make([]ClassResult, k), Corruption: opt.Corrupt.String()}
	if len(opt.Corrupt) > 0 {
		r.Seed = opt.Seed
	}
	for c := range r.PerClass {
		r.PerClass[c] = ClassResult{Class: c, Name: m.ClassName(c)}
		if len(m.Arch.Classes) == 0 {
			r.PerClass[c].Name = ""
		}
	}
	var loss float64
	for i, p := range preds {
		pc := &r.PerClass[labels[i]]
		pc.Samples++
		if p.Class == labels[i] {
			r.Correct++
			pc.Correct++
		}
		loss -= p.LogProb
	}
	if r.Samples > 0 {
		r.Accuracy = float64(r.Correct) / float64(r.Samples)
		r.Loss = loss / float64(r.Samples)
	}
	for c := range r.PerClass {
		if pc := &r.PerClass[c]; pc.Samples > 0 {
			pc.Accuracy = float64(pc.Correct) / float64(pc.Samples)
		}
	}
	return r
}

func argmax(row []float32) int {
	best := 0
	for j, v := range row {
		if v > row[best] {
			best = j
		}
	}
	return best
}

// logProb is the log-probability of class c given one output row.
func logProb(row []float32, c int, kind Output) float64 {
	switch kind {
	case LogProbabilities:
		return float64(row[c])
	case Probabilities:
		return math.Log(math.Max(float64(row[c]), math.SmallestNonzeroFloat64))
	}
	m := math.Inf(-1)
	for _, v := range row {
		m = math.Max(m, float64(v))
	}
	var s float64
	for _, v := range row {
		s += math.Exp(float64(v) - m)
	}
	return float64(row[c]) - m - math.Log(s)
}
