// Package dataset reads labelled data sets for evaluating and training
// classifiers — IDX files (the MNIST/Fashion-MNIST format, gzipped or not),
// CSV with a label column, and NumPy .npy arrays — and corrupts images in
// seeded, deterministic ways to measure robustness.
//
// Every reader sizes its allocations from what the file holds, never from
// what its header claims: a header promising more data than the file has
// is an error, found before the memory is taken.
package dataset

import (
	"fmt"
	"sort"
)

// Set is a labelled data set held in memory: Len() samples of Shape each,
// float32 values in row-major order in X, and one class label per sample.
type Set struct {
	// X holds the samples back to back, Len()×prod(Shape) values.
	X []float32
	// Labels holds one class index (≥ 0) per sample.
	Labels []int
	// Shape is the shape of one sample, e.g. [28, 28] or [64].
	Shape []int
}

// Len is the number of samples.
func (s *Set) Len() int { return len(s.Labels) }

// SampleSize is the number of values in one sample, the product of Shape.
func (s *Set) SampleSize() int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// Sample returns sample i's values (a view into X).
func (s *Set) Sample(i int) []float32 {
	d := s.SampleSize()
	return s.X[i*d : (i+1)*d]
}

// NumClasses is the largest label plus one (0 for an empty set).
func (s *Set) NumClasses() int {
	n := 0
	for _, l := range s.Labels {
		n = max(n, l+1)
	}
	return n
}

// ClassCounts returns how many samples carry each label 0..NumClasses()-1.
func (s *Set) ClassCounts() []int {
	c := make([]int, s.NumClasses())
	for _, l := range s.Labels {
		c[l]++
	}
	return c
}

// Validate checks that X, Labels and Shape agree and labels are ≥ 0.
func (s *Set) Validate() error {
	d := s.SampleSize()
	if len(s.Shape) == 0 || d <= 0 {
		return fmt.Errorf("bad sample shape %v", s.Shape)
	}
	if len(s.X) != d*len(s.Labels) {
		return fmt.Errorf("%d values for %d samples of shape %v", len(s.X), len(s.Labels), s.Shape)
	}
	for i, l := range s.Labels {
		if l < 0 {
			return fmt.Errorf("sample %d: negative label %d", i, l)
		}
	}
	return nil
}

// Subset returns a new set with the samples at idx, in that order (the
// values are copied).
func (s *Set) Subset(idx []int) *Set {
	d := s.SampleSize()
	out := &Set{X: make([]float32, 0, len(idx)*d), Labels: make([]int, 0, len(idx)), Shape: append([]int(nil), s.Shape...)}
	for _, i := range idx {
		out.X = append(out.X, s.Sample(i)...)
		out.Labels = append(out.Labels, s.Labels[i])
	}
	return out
}

// Reshape returns the set viewed with another per-sample shape of the same
// size (the values are shared, not copied).
func (s *Set) Reshape(shape []int) (*Set, error) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	if n != s.SampleSize() || len(shape) == 0 {
		return nil, fmt.Errorf("cannot view samples of shape %v (%d values) as %v (%d values)", s.Shape, s.SampleSize(), shape, n)
	}
	return &Set{X: s.X, Labels: s.Labels, Shape: append([]int(nil), shape...)}, nil
}

// StratifiedSplit splits the set into a training part and a test part of
// about testFraction of each class, chosen at random with the seed: each
// class's samples are shuffled and the first round(testFraction×count)
// go to the test part. Both parts keep the original sample order.
func StratifiedSplit(s *Set, testFraction float64, seed uint64) (train, test *Set) {
	byClass := map[int][]int{}
	for i, l := range s.Labels {
		byClass[l] = append(byClass[l], i)
	}
	classes := make([]int, 0, len(byClass))
	for c := range byClass {
		classes = append(classes, c)
	}
	sort.Ints(classes)
	r := NewRand(seed)
	isTest := make([]bool, s.Len())
	for _, c := range classes {
		idx := byClass[c]
		r.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		k := int(testFraction*float64(len(idx)) + 0.5)
		for _, i := range idx[:min(k, len(idx))] {
			isTest[i] = true
		}
	}
	var tr, te []int
	for i := range isTest {
		if isTest[i] {
			te = append(te, i)
		} else {
			tr = append(tr, i)
		}
	}
	return s.Subset(tr), s.Subset(te)
}
