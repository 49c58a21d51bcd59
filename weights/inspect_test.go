package weights

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// TestInspectStatsInPartsEqualWhole: a large tensor read from its file in
// parts gets the statistics of the tensor read whole (the same blocks
// combined in the same order), for each float dtype, with NaN and Inf
// counted, a partial last part, and a truncated file reported naming file
// and tensor.
func TestInspectStatsInPartsEqualWhole(t *testing.T) {
	defer func(v int64) { sectionStatsAbove = v }(sectionStatsAbove)
	rng := rand.New(rand.NewPCG(5, 6))
	var ts []Tensor
	for _, dt := range []DType{F64, F32, F16, BF16} {
		n := 3*64*statsBlock + 1234
		v := make([]float64, n)
		for i := range v {
			v[i] = 1e3 + rng.NormFloat64()
		}
		v[17], v[n-1], v[300000] = math.NaN(), math.Inf(1), math.Inf(-1)
		b := make([]byte, dt.Bytes(int64(n)))
		_ = Encode(dt, v, b)
		ts = append(ts, Tensor{TensorInfo: TensorInfo{Name: "t." + dt.String(), DType: dt, Shape: []int64{int64(n)}}, Data: b})
	}
	path := filepath.Join(t.TempDir(), "m.safetensors")
	if err := WriteSafetensors(path, ts, nil); err != nil {
		t.Fatal(err)
	}
	report := func(above int64) *Report {
		sectionStatsAbove = above
		c, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		r, err := Inspect(context.Background(), c, true, nil)
		if err != nil {
			t.Fatal(err)
		}
		return r
	}
	whole, parts := report(1<<62), report(0)
	if !reflect.DeepEqual(whole, parts) {
		t.Errorf("statistics in parts differ from whole:\n%+v\n%+v", parts.Tensors, whole.Tensors)
	}
	for _, tr := range parts.Tensors {
		if s := tr.Stats; s.NaN != 1 || s.Inf != 2 || s.Count != int64(3*64*statsBlock+1234) {
			t.Errorf("%s: %+v", tr.Name, s)
		}
	}
	// Truncated after opening: one error naming file and tensor.
	c, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fi, _ := os.Stat(path)
	if err := os.Truncate(path, fi.Size()-100); err != nil {
		t.Fatal(err)
	}
	_, err = Inspect(context.Background(), c, true, nil)
	if err == nil || !strings.Contains(err.Error(), path) || !strings.Contains(err.Error(), "unexpected EOF") {
		t.Errorf("truncated: %v", err)
	}
}

// TestStatsZeroSigns: the extremes are the first of equal values, as the
// comparisons define them, in blocks with and without non-finite values:
// −0 before +0 gives min −0 and max −0 (nothing compares above it), +0
// before −0 gives +0 for both.
func TestStatsZeroSigns(t *testing.T) {
	for _, nan := range []bool{false, true} {
		for _, first := range []float64{math.Copysign(0, -1), 0} {
			v := []float64{first, -first, first, -first}
			if nan {
				v = append(v, math.NaN())
			}
			b := make([]byte, 8*len(v))
			_ = Encode(F64, v, b)
			s, err := ComputeStats(Tensor{TensorInfo: TensorInfo{Name: "z", DType: F64, Shape: []int64{int64(len(v))}}, Data: b})
			if err != nil {
				t.Fatal(err)
			}
			if math.Signbit(s.Min) != math.Signbit(first) || math.Signbit(s.Max) != math.Signbit(first) {
				t.Errorf("NaN %v, first %v: min %v max %v", nan, math.Signbit(first), math.Signbit(s.Min), math.Signbit(s.Max))
			}
		}
	}
}

// TestStatsBlockwiseDefinition: the statistics are, bit for bit, those of
// their definition written plainly: blocks of statsBlock values in order;
// each block's finite values summed in order, its mean, its squared
// deviations summed in order; the blocks combined by Chan et al.'s update;
// extremes by first-wins compares. Lengths end inside, at and past block
// boundaries, with non-finite blocks between finite ones and first.
func TestStatsBlockwiseDefinition(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	for _, n := range []int{1, 4095, 4096, 4097, 3 * 4096, 5*4096 + 77, 9 * 4096} {
		for _, bad := range [][]int{nil, {0}, {4096 + 5}, {2*4096 + 1, 4 * 4096}, {n - 1}} {
			v := make([]float64, n)
			for i := range v {
				v[i] = 1e3 + rng.NormFloat64()*float64(1+i%7)
			}
			for _, b := range bad {
				if b < n {
					v[b] = []float64{math.NaN(), math.Inf(1), math.Inf(-1)}[rng.IntN(3)]
				}
			}
			// The definition.
			var want Stats
			want.Min, want.Max, want.Count = math.NaN(), math.NaN(), int64(n)
			var m2 float64
			var fin int64
			for s := 0; s < n; s += statsBlock {
				blk := v[s:min(n, s+statsBlock)]
				var cnt int64
				var sum float64
				for _, x := range blk {
					if math.IsNaN(x) {
						want.NaN++
						continue
					}
					if math.IsInf(x, 0) {
						want.Inf++
						continue
					}
					if fin+cnt == 0 || x < want.Min {
						want.Min = x
					}
					if fin+cnt == 0 || x > want.Max {
						want.Max = x
					}
					cnt++
					sum += x
				}
				if cnt == 0 {
					continue
				}
				mean := sum / float64(cnt)
				var cm2 float64
				for _, x := range blk {
					if !math.IsNaN(x) && !math.IsInf(x, 0) {
						cm2 += (x - mean) * (x - mean)
					}
				}
				tot := fin + cnt
				delta := mean - want.Mean
				want.Mean += delta * float64(cnt) / float64(tot)
				m2 += cm2 + delta*delta*float64(fin)*float64(cnt)/float64(tot)
				fin = tot
			}
			want.Std = math.Sqrt(m2 / float64(fin))
			if fin == 0 {
				want.Mean, want.Std = math.NaN(), math.NaN()
			}
			data := make([]byte, 8*n)
			_ = Encode(F64, v, data)
			// Whole, and in parts of whole blocks.
			for _, part := range []int{n, 2 * statsBlock, statsBlock} {
				var a statsAcc
				for s := 0; s < n; s += part {
					if err := a.add(F64, data[8*s:8*min(n, s+part)]); err != nil {
						t.Fatal(err)
					}
				}
				got := a.result()
				same := func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) || (x != x && y != y) }
				if !same(got.Mean, want.Mean) || !same(got.Std, want.Std) || !same(got.Min, want.Min) || !same(got.Max, want.Max) || got.NaN != want.NaN || got.Inf != want.Inf || got.Count != want.Count {
					t.Fatalf("n=%d non-finite at %v, parts of %d: %+v, want %+v", n, bad, part, got, want)
				}
			}
		}
	}
}
