package dataset

import (
	"bufio"
	"compress/gzip"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"strconv"
	"strings"

	"github.com/weightops/weightops/weights"
)

// Load reads samples from dataPath and their labels from labelsPath, each
// an IDX or .npy file, gzipped or not (the format is sniffed from the
// bytes). The first dimension of each array counts the samples and the two
// counts must agree; the remaining dimensions of the data are the sample
// shape. uint8 data is divided by 255 (pixels to [0, 1], as torchvision's
// ToTensor does); other types are taken as they are. Labels must be
// non-negative integers, of any integer or float type, shaped [N] or [N, 1].
func Load(dataPath, labelsPath string) (*Set, error) {
	x, err := ReadArray(dataPath)
	if err != nil {
		return nil, err
	}
	y, err := ReadArray(labelsPath)
	if err != nil {
		return nil, err
	}
	return FromArrays(x, y, dataPath, labelsPath)
}

// FromArrays builds a set from a data array and a label array as Load
// does; the paths only name the arrays in errors.
func FromArrays(x, y *Array, dataPath, labelsPath string) (*Set, error) {
	if len(y.Shape) > 2 || (len(y.Shape) == 2 && y.Shape[1] != 1) {
		return nil, fmt.Errorf("%s: labels have shape %v, want [N] or [N, 1]", labelsPath, y.Shape)
	}
	labels, err := y.Labels()
	if err != nil {
		return nil, fmt.Errorf("%s: %w", labelsPath, err)
	}
	n := x.Shape[0]
	if n != len(labels) {
		return nil, fmt.Errorf("%s has %d samples but %s has %d labels", dataPath, n, labelsPath, len(labels))
	}
	if n == 0 {
		return nil, fmt.Errorf("%s: no samples", dataPath)
	}
	return newSet(x, labels, dataPath)
}

// newSet is the set of x's samples (the first dimension counts them) with
// these labels, validated.
func newSet(x *Array, labels []int, dataPath string) (*Set, error) {
	shape := append([]int(nil), x.Shape[1:]...)
	if len(shape) == 0 {
		shape = []int{1}
	}
	s := &Set{X: x.Float32s(true), Labels: labels, Shape: shape}
	if err := s.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", dataPath, err)
	}
	return s, nil
}

// LoadCSV reads a CSV file (gzipped or not): one sample per row, its label
// in column labelCol (counted from 0; a negative index counts from the
// end, -1 being the last column) and its features in the other columns,
// in order. A first row that is not all numbers is taken as a header and
// skipped. Every row must have the same number of columns; labels must be
// non-negative integers.
func LoadCSV(path string, labelCol int) (*Set, error) {
	f, err := weights.OpenFile(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	s, err := readCSV(f, labelCol)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return s, nil
}

func readCSV(r io.Reader, labelCol int) (*Set, error) {
	br := bufio.NewReader(r)
	if m, _ := br.Peek(2); len(m) == 2 && m[0] == 0x1f && m[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, fmt.Errorf("gzip: %w", err)
		}
		br = bufio.NewReader(zr)
	}
	cr := csv.NewReader(br)
	cr.ReuseRecord = true
	cr.TrimLeadingSpace = true
	s := &Set{}
	cols, lc := 0, 0
	for row := 0; ; row++ {
		rec, err := cr.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			return nil, err
		}
		if row == 0 {
			cols = len(rec)
			if cols < 2 {
				return nil, fmt.Errorf("line 1: %d column(s); want a label column and at least one feature", cols)
			}
			lc = labelCol
			if lc < 0 {
				lc += cols
			}
			if lc < 0 || lc >= cols {
				return nil, fmt.Errorf("label column %d out of range: the file has %d columns", labelCol, cols)
			}
			s.Shape = []int{cols - 1}
			if !allNumbers(rec) {
				continue // header
			}
		}
		line, _ := cr.FieldPos(0)
		for j, field := range rec {
			v, err := strconv.ParseFloat(strings.TrimSpace(field), 32)
			if err != nil {
				return nil, fmt.Errorf("line %d, column %d: %q is not a number", line, j+1, field)
			}
			if j == lc {
				if v != math.Trunc(v) || v < 0 || v >= 1<<31 {
					return nil, fmt.Errorf("line %d: label %q is not a non-negative integer", line, field)
				}
				s.Labels = append(s.Labels, int(v))
				continue
			}
			s.X = append(s.X, float32(v))
		}
	}
	if len(s.Labels) == 0 {
		return nil, errors.New("no samples")
	}
	return s, nil
}

func allNumbers(rec []string) bool {
	for _, f := range rec {
		if _, err := strconv.ParseFloat(strings.TrimSpace(f), 64); err != nil {
			return false
		}
	}
	return true
}

// LoadUnlabelled reads samples alone (IDX or .npy, as Load reads data),
// for uses that need no labels: every label is 0.
func LoadUnlabelled(dataPath string) (*Set, error) {
	x, err := ReadArray(dataPath)
	if err != nil {
		return nil, err
	}
	if len(x.Shape) == 0 || x.Shape[0] == 0 {
		return nil, fmt.Errorf("%s: no samples", dataPath)
	}
	return newSet(x, make([]int, x.Shape[0]), dataPath)
}
