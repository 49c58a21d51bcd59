// Package testutil holds the helpers the packages' tests share: writing
// small checkpoints, reading tensors back, comparing floats, and
// independent references (orthonormal bases built without LAPACK).
package testutil

import (
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"testing"

	"github.com/weightops/weightops/weights"
)

// Tensor is one tensor to write: its values in float64, encoded to DType
// (F32 when zero: a BOOL tensor cannot be written this way), Shape 1-D of
// the values when nil.
type Tensor struct {
	Name   string
	DType  weights.DType
	Shape  []int64
	Values []float64
}

// Write writes tensors to a .safetensors file at path (directories
// created) and returns path.
func Write(t testing.TB, path string, md map[string]string, tensors ...Tensor) string {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	var ts []weights.Tensor
	for _, x := range tensors {
		dt := x.DType
		if dt == weights.Bool { // the zero value: F32 unless set
			dt = weights.F32
		}
		shape := x.Shape
		if shape == nil {
			shape = []int64{int64(len(x.Values))}
		}
		info := weights.TensorInfo{Name: x.Name, DType: dt, Shape: shape}
		n, err := info.NumElements()
		if err != nil || n != int64(len(x.Values)) {
			t.Fatalf("%s: %d values for shape %v", x.Name, len(x.Values), shape)
		}
		data := make([]byte, dt.Bytes(n))
		if err := weights.Encode(dt, x.Values, data); err != nil {
			t.Fatal(err)
		}
		ts = append(ts, weights.Tensor{TensorInfo: info, Data: data})
	}
	if err := weights.WriteSafetensors(path, ts, md); err != nil {
		t.Fatal(err)
	}
	return path
}

// WriteF32 writes named F32 tensors (1-D unless shapes gives a shape) to
// path, in name order, and returns path.
func WriteF32(t testing.TB, path string, tensors map[string][]float64, shapes map[string][]int64) string {
	t.Helper()
	names := make([]string, 0, len(tensors))
	for n := range tensors {
		names = append(names, n)
	}
	slices.Sort(names)
	var ts []Tensor
	for _, n := range names {
		ts = append(ts, Tensor{Name: n, DType: weights.F32, Shape: shapes[n], Values: tensors[n]})
	}
	return Write(t, path, nil, ts...)
}

// Open opens checkpoints, closed when the test ends.
func Open(t testing.TB, paths ...string) []weights.Checkpoint {
	t.Helper()
	var out []weights.Checkpoint
	for _, p := range paths {
		c, err := weights.Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		out = append(out, c)
	}
	return out
}

// Read decodes one tensor of the checkpoint at path.
func Read(t testing.TB, path, name string) []float64 {
	t.Helper()
	return ReadAll(t, path)[name]
}

// ReadAll decodes every tensor of the checkpoint at path.
func ReadAll(t testing.TB, path string) map[string][]float64 {
	t.Helper()
	ck, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	out := map[string][]float64{}
	for _, info := range ck.Tensors() {
		ten, err := ck.ReadTensor(info.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if out[info.Name], err = ten.Float64s(); err != nil {
			t.Fatal(err)
		}
	}
	return out
}

// Near fails unless got equals want to rel relative error (absolute below
// magnitude 1).
func Near(t testing.TB, what string, got, want []float64, rel float64) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d values, want %d", what, len(got), len(want))
	}
	for i := range got {
		if math.Abs(got[i]-want[i]) > rel*math.Max(1, math.Abs(want[i])) {
			t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
		}
	}
}

// RelFrob is ‖got − want‖/‖want‖.
func RelFrob(got, want []float64) float64 {
	var d, n float64
	for i := range want {
		d += (got[i] - want[i]) * (got[i] - want[i])
		n += want[i] * want[i]
	}
	return math.Sqrt(d / n)
}

// Orthonormal returns k orthonormal vectors of length m by modified
// Gram–Schmidt (applied twice) on Gaussian vectors: written here, with no
// LAPACK, so tests do not check the code with itself.
func Orthonormal(rng *rand.Rand, m, k int) [][]float64 {
	cols := make([][]float64, k)
	for j := range cols {
		v := make([]float64, m)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		for pass := 0; pass < 2; pass++ {
			for _, q := range cols[:j] {
				var d float64
				for i := range v {
					d += v[i] * q[i]
				}
				for i := range v {
					v[i] -= d * q[i]
				}
			}
		}
		var n float64
		for _, x := range v {
			n += x * x
		}
		n = math.Sqrt(n)
		for i := range v {
			v[i] /= n
		}
		cols[j] = v
	}
	return cols
}
