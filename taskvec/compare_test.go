package taskvec

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func compare(t *testing.T, paths []string, o CompareOptions) *Comparison {
	t.Helper()
	cks := testutil.Open(t, paths...)
	c, err := Compare(context.Background(), cks[0], cks[1:], o)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func near(t *testing.T, what string, got Ratio, want float64) {
	t.Helper()
	if math.IsNaN(want) {
		if got.Defined() {
			t.Errorf("%s = %g, want undefined", what, got)
		}
		return
	}
	if math.Abs(float64(got)-want) > 1e-12*math.Max(1, math.Abs(want)) {
		t.Errorf("%s = %.15g, want %.15g", what, got, want)
	}
}

// TestCompareHandWorked: one 4-entry tensor, every figure worked out by
// hand. τ1 = [1 0 −2 0], τ2 = [−1 1 1 0]; at density 0.5 each trim keeps 2
// entries: τ1's {2, 0}, τ2's {0, 1} (three tied at 1: lowest index first).
func TestCompareHandWorked(t *testing.T) {
	d := t.TempDir()
	w := func(name string, v ...float64) string {
		return testutil.WriteF32(t, filepath.Join(d, name+".safetensors"), map[string][]float64{"w": v}, nil)
	}
	c := compare(t, []string{w("base", 1, 2, 3, 4), w("m1", 2, 2, 1, 4), w("m2", 0, 3, 4, 4)}, CompareOptions{Density: 0.5})
	s := c.Total
	if s.Params != 4 || len(c.Pairs) != 1 || c.Pairs[0] != (Pair{0, 1, "0·1"}) {
		t.Fatalf("params %d, pairs %v", s.Params, c.Pairs)
	}
	near(t, "base norm", Ratio(s.BaseNorm), math.Sqrt(30))
	near(t, "rel delta 1", s.RelDelta[0], math.Sqrt(5)/math.Sqrt(30))
	near(t, "rel delta 2", s.RelDelta[1], math.Sqrt(3)/math.Sqrt(30))
	near(t, "unchanged 1", s.Unchanged[0], 0.5)
	near(t, "unchanged 2", s.Unchanged[1], 0.25)
	near(t, "cosine", s.Cosine[0], -3/math.Sqrt(15))
	near(t, "sign agreement", s.SignAgreement[0], 0)   // entries 0 and 2 both change, oppositely
	near(t, "mask overlap", s.MaskOverlap[0], 0.5)     // entry 0 of 2 kept
	near(t, "mask conflict", s.MaskSignConflict[0], 1) // and its signs differ
	near(t, "all agree", s.AllAgree, 0)
	if len(c.Layers) != 1 || c.Layers[0].Name != "w" || len(c.Tensors) != 1 {
		t.Errorf("layers %v", c.Layers)
	}
	// One model: no pairs, agreement undefined, and JSON writes null.
	one := compare(t, []string{filepath.Join(d, "base.safetensors"), filepath.Join(d, "m1.safetensors")}, CompareOptions{Density: 0.5})
	if len(one.Pairs) != 0 || one.Total.AllAgree.Defined() {
		t.Errorf("one model: pairs %v, all-agree %v", one.Pairs, one.Total.AllAgree)
	}
	j, err := json.Marshal(one)
	if err != nil || !strings.Contains(string(j), `"all_sign_agreement":null`) || !strings.Contains(string(j), `"pairs":[]`) {
		t.Errorf("JSON %s, %v", j, err)
	}
}

// naive recomputes one tensor's sums directly, in float64 over the whole
// tensor, with the top-k taken by a full sort.
func naive(base []float64, models [][]float64, density float64) deltaSums {
	n := len(base)
	var pairs []Pair
	for i := range models {
		for j := i + 1; j < len(models); j++ {
			pairs = append(pairs, Pair{A: i, B: j})
		}
	}
	s := newSums(len(models), len(pairs))
	s.n, s.keep = int64(n), int64(density*float64(n))
	tau := make([][]float64, len(models))
	masks := make([][]bool, len(models))
	for i, m := range models {
		tau[i] = make([]float64, n)
		for e := range m {
			tau[i][e] = m[e] - base[e]
		}
		idx := make([]int, n)
		for e := range idx {
			idx[e] = e
		}
		mag := func(e int) float32 { return float32(math.Abs(float64(float32(tau[i][e])))) }
		sort.SliceStable(idx, func(a, b int) bool { return mag(idx[a]) > mag(idx[b]) })
		masks[i] = make([]bool, n)
		for _, e := range idx[:s.keep] {
			masks[i][e] = float32(tau[i][e]) != 0
		}
	}
	for e := range base {
		s.base2 += base[e] * base[e]
		pos, neg := 0, 0
		for i := range models {
			s.d2[i] += tau[i][e] * tau[i][e]
			if tau[i][e] == 0 {
				s.zero[i]++
			}
			if tau[i][e] > 0 {
				pos++
			} else if tau[i][e] < 0 {
				neg++
			}
		}
		if pos+neg >= 2 {
			s.multi++
			if pos == 0 || neg == 0 {
				s.multiAgree++
			}
		}
		for p, pr := range pairs {
			a, b := tau[pr.A][e], tau[pr.B][e]
			s.dot[p] += a * b
			if a != 0 && b != 0 {
				s.both[p]++
				if (a > 0) == (b > 0) {
					s.same[p]++
				}
			}
			if masks[pr.A][e] && masks[pr.B][e] {
				s.inter[p]++
				if (float32(a) > 0) == (float32(b) > 0) {
					s.interSame[p]++
				}
			}
		}
	}
	return s
}

// TestCompareAgainstNaive: random tensors with many exact zeros and ties
// (values on a coarse grid), one spanning several chunks; every figure
// equals the direct computation, layers group by block in network order,
// and the result is identical for 1 and 2 workers.
func TestCompareAgainstNaive(t *testing.T) {
	d := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	shapes := map[string][]int64{
		"model.embed_tokens.weight":             {40, 16},
		"model.layers.0.mlp.up_proj.weight":     {300, 700}, // 210,000 entries: several chunks
		"model.layers.0.input_layernorm.weight": {16},
		"model.layers.1.mlp.up_proj.weight":     {32, 16},
		"lm_head.weight":                        {40, 16},
	}
	const models = 3
	vals := make([]map[string][]float64, models+1)
	for i := range vals {
		vals[i] = map[string][]float64{}
	}
	for name, sh := range shapes {
		n := int(sh[0])
		if len(sh) > 1 {
			n *= int(sh[1])
		}
		b := make([]float64, n)
		for e := range b {
			b[e] = float64(rng.IntN(64)-32) / 16
		}
		vals[0][name] = b
		for i := 1; i <= models; i++ {
			m := make([]float64, n)
			for e := range m {
				m[e] = b[e]
				if rng.IntN(3) > 0 { // a third unchanged
					m[e] += float64(rng.IntN(9)-4) / 64
				}
			}
			vals[i][name] = m
		}
	}
	var paths []string
	for i := range vals {
		p := filepath.Join(d, "m"+string(rune('0'+i))+".safetensors")
		testutil.WriteF32(t, p, vals[i], shapes)
		paths = append(paths, p)
	}
	const density = 0.3
	var jsons []string
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	// Read whole (1 and 2 workers), then streamed a chunk at a time from
	// the files (the same numbers, checked against the naive sums too).
	for run, workers := range []int{1, 2, 1} {
		stream.StreamAbove = 1 << 62
		if run == 2 {
			stream.StreamAbove = -1
		}
		c := compare(t, paths, CompareOptions{Options: stream.Options{Workers: workers}, Density: density})
		j, _ := json.Marshal(c)
		jsons = append(jsons, string(j))
		if workers > 1 {
			continue
		}
		wantOrder := []string{"model.embed_tokens.weight", "model.layers.0.input_layernorm.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.1.mlp.up_proj.weight", "lm_head.weight"}
		var got []string
		for _, ts := range c.Tensors {
			got = append(got, ts.Name)
		}
		if strings.Join(got, " ") != strings.Join(wantOrder, " ") {
			t.Errorf("tensor order %v", got)
		}
		var layers []string
		for _, l := range c.Layers {
			layers = append(layers, l.Name)
		}
		if strings.Join(layers, " ") != "model.embed_tokens model.layers.0 model.layers.1 lm_head" {
			t.Errorf("layers %v", layers)
		}
		total := newSums(models, 3)
		for _, ts := range c.Tensors {
			var ms [][]float64
			for i := 1; i <= models; i++ {
				ms = append(ms, vals[i][ts.Name])
			}
			want := naive(vals[0][ts.Name], ms, density)
			total.add(want)
			checkStats(t, ts.Name, ts, want.stats(ts.Name, c.Pairs))
		}
		checkStats(t, "total", c.Total, total.stats("total", c.Pairs))
		// A layer is the sum of its tensors.
		l0 := newSums(models, 3)
		for _, ts := range c.Tensors[1:3] {
			l0.add(ts.sums)
		}
		checkStats(t, "layer 0", c.Layers[1], l0.stats("model.layers.0", c.Pairs))
	}
	if jsons[0] != jsons[1] {
		t.Error("1 and 2 workers give different results")
	}
	if jsons[0] != jsons[2] {
		t.Error("streamed tensors give different results")
	}
}

func checkStats(t *testing.T, what string, got, want DeltaStats) {
	t.Helper()
	near(t, what+" base norm", Ratio(got.BaseNorm), want.BaseNorm)
	if got.Params != want.Params {
		t.Errorf("%s: params %d, want %d", what, got.Params, want.Params)
	}
	for i := range want.RelDelta {
		near(t, what+" rel delta", got.RelDelta[i], float64(want.RelDelta[i]))
		near(t, what+" unchanged", got.Unchanged[i], float64(want.Unchanged[i]))
	}
	for p := range want.Cosine {
		near(t, what+" cosine", got.Cosine[p], float64(want.Cosine[p]))
		near(t, what+" sign agreement", got.SignAgreement[p], float64(want.SignAgreement[p]))
		near(t, what+" mask overlap", got.MaskOverlap[p], float64(want.MaskOverlap[p]))
		near(t, what+" mask conflict", got.MaskSignConflict[p], float64(want.MaskSignConflict[p]))
	}
	near(t, what+" all agree", got.AllAgree, float64(want.AllAgree))
	// The counts behind the ratios, exactly.
	if got.sums.multi != want.sums.multi || got.sums.multiAgree != want.sums.multiAgree {
		t.Errorf("%s: multi %d/%d, want %d/%d", what, got.sums.multiAgree, got.sums.multi, want.sums.multiAgree, want.sums.multi)
	}
	for p := range want.sums.inter {
		if got.sums.inter[p] != want.sums.inter[p] || got.sums.interSame[p] != want.sums.interSame[p] {
			t.Errorf("%s pair %d: mask intersection %d (%d same), want %d (%d)", what, p, got.sums.inter[p], got.sums.interSame[p], want.sums.inter[p], want.sums.interSame[p])
		}
	}
}

// TestCompareSkipsAndRefuses: integer tensors, tensors a model lacks or
// has in another shape are listed with the reason; bad options and no
// common tensor are errors.
func TestCompareSkipsAndRefuses(t *testing.T) {
	d := t.TempDir()
	base := testutil.Write(t, filepath.Join(d, "base.safetensors"), nil,
		testutil.Tensor{Name: "w", DType: weights.F32, Shape: []int64{2}, Values: []float64{1, 2}},
		testutil.Tensor{Name: "ids", DType: weights.I64, Shape: []int64{2}, Values: []float64{1, 2}},
		testutil.Tensor{Name: "wide", DType: weights.F32, Shape: []int64{2}, Values: []float64{1, 2}},
		testutil.Tensor{Name: "gone", DType: weights.F32, Shape: []int64{1}, Values: []float64{1}})
	m := testutil.Write(t, filepath.Join(d, "m.safetensors"), nil,
		testutil.Tensor{Name: "w", DType: weights.BF16, Shape: []int64{2}, Values: []float64{1, 3}},
		testutil.Tensor{Name: "ids", DType: weights.I64, Shape: []int64{2}, Values: []float64{1, 2}},
		testutil.Tensor{Name: "wide", DType: weights.F32, Shape: []int64{3}, Values: []float64{1, 2, 3}},
		testutil.Tensor{Name: "extra", DType: weights.F32, Shape: []int64{1}, Values: []float64{1}})
	c := compare(t, []string{base, m}, CompareOptions{})
	var skipped []string
	for _, s := range c.Skipped {
		skipped = append(skipped, s.Tensor+": "+s.Reason)
	}
	want := "extra: only in model 0, not in the base; gone: absent from model 0; ids: not floating point; wide: shape [3] in model 0, [2] in the base"
	if strings.Join(skipped, "; ") != want {
		t.Errorf("skipped:\n%s\nwant\n%s", strings.Join(skipped, "; "), want)
	}
	if len(c.Tensors) != 1 || c.Density != 0.1 {
		t.Errorf("tensors %d, density %g", len(c.Tensors), c.Density)
	}
	cks := testutil.Open(t, base, m)
	for _, o := range []CompareOptions{{Density: 1.5}, {Density: -1}, {Density: math.NaN()}} {
		if _, err := Compare(context.Background(), cks[0], cks[1:], o); err == nil || !strings.Contains(err.Error(), "density") {
			t.Errorf("density %g: %v", o.Density, err)
		}
	}
	if _, err := Compare(context.Background(), cks[0], nil, CompareOptions{}); err == nil {
		t.Error("no models: no error")
	}
	other := testutil.WriteF32(t, filepath.Join(d, "other.safetensors"), map[string][]float64{"q": {1}}, nil)
	if _, err := Compare(context.Background(), cks[0], testutil.Open(t, other), CompareOptions{}); err == nil || !strings.Contains(err.Error(), "no floating tensor in common") {
		t.Errorf("nothing in common: %v", err)
	}
}
