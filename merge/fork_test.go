package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// runKernel feeds a kernel the inputs (BF16 bytes, raw to a
// RawInputKernel's raw inputs and decoded for the rest) chunk by chunk as
// stream.Passes does: every pre-pass, then, if fork is set, the fork it
// makes at entry from; then the final pass from there. It returns the
// final pass's outputs.
func runKernel(t *testing.T, k stream.PassKernel, raw [][]byte, n, chunk int64, fork bool, from int64) []float64 {
	t.Helper()
	feed := func(k stream.PassKernel, s, e int64) [][]float64 { return feedChunk(t, k, raw, s, e) }
	for p, more := k.NextPass(); more; p, more = k.NextPass() {
		for s := int64(0); s < n; s += chunk {
			if err := k.Observe(p, feed(k, s, min(n, s+chunk))); err != nil {
				t.Fatal(err)
			}
		}
		if err := k.EndPass(p); err != nil {
			t.Fatal(err)
		}
	}
	if fork {
		f, ok := k.(stream.Forker).Fork(from)
		if !ok {
			t.Fatal("the kernel refused to fork")
		}
		k = f
	}
	out := make([]float64, 0, n-from)
	for s := from; s < n; s += chunk {
		out = append(out, computeChunk(t, k, raw, s, min(n, s+chunk))...)
	}
	return out
}

// feedChunk hands a kernel the inputs' entries [s, e): raw bytes to its
// raw inputs, decoded for the rest.
func feedChunk(t *testing.T, k stream.PassKernel, raw [][]byte, s, e int64) [][]float64 {
	t.Helper()
	rk, _ := k.(stream.RawInputKernel)
	in := make([][]float64, len(raw))
	for i, r := range raw {
		b := r[2*s : 2*e]
		if rk != nil && rk.RawInput(i) {
			rk.SetRaw(i, weights.Tensor{TensorInfo: weights.TensorInfo{Name: "w", DType: weights.BF16, Shape: []int64{e - s}}, Data: b})
			continue
		}
		in[i] = make([]float64, e-s)
		if err := weights.Decode(weights.BF16, b, in[i]); err != nil {
			t.Fatal(err)
		}
	}
	return in
}

// computeChunk is a kernel's final pass over entries [s, e).
func computeChunk(t *testing.T, k stream.PassKernel, raw [][]byte, s, e int64) []float64 {
	t.Helper()
	o := make([]float64, e-s)
	if err := k.Compute(feedChunk(t, k, raw, s, e), [][]float64{o}); err != nil {
		t.Fatal(err)
	}
	return o
}

// TestForksMatchTheKernelInOrder: each merge kernel that forks its last
// pass computes, from a fork made at a chunk boundary, the same bits as
// the kernel itself running the pass in order from the start.
func TestForksMatchTheKernelInOrder(t *testing.T) {
	const rows, cols, chunk = 12, 50, 150 // chunks of three rows
	n := int64(rows * cols)
	shape := []int64{rows, cols}
	rng := rand.New(rand.NewPCG(5, 5))
	raw := make([][]byte, 3)
	for i := range raw {
		v := make([]float64, n)
		for j := range v {
			v[j] = 0.02*rng.NormFloat64() + 0.003*float64(i)*math.Sin(float64(j))
		}
		raw[i] = make([]byte, 2*n)
		if err := weights.Encode(weights.BF16, v, raw[i]); err != nil {
			t.Fatal(err)
		}
	}
	gta := func(m sparsify.Method, rescale sparsify.Rescale, perRow bool) func() stream.PassKernel {
		return func() stream.PassKernel {
			c := GTAConfig{Weights: []float64{0.6, 0.5}, Consensus: true, Normalize: true, Lambda: 1}
			for range 2 {
				c.Sparsify = append(c.Sparsify, sparsify.Spec{Method: m, Density: 0.4, Epsilon: 0.1, Rescale: rescale, PerRow: perRow, Seed: 3})
			}
			return NewGTAKernel("w", shape, c)
		}
	}
	kernels := map[string]func() stream.PassKernel{
		"slerp":                 func() stream.PassKernel { return NewSlerpKernel(0.3) },
		"nuslerp flattened":     func() stream.PassKernel { return NewNuSlerpKernel(0.4, true, shape, true, false) },
		"nuslerp by rows":       func() stream.PassKernel { return NewNuSlerpKernel(0.4, true, shape, false, true) },
		"nuslerp by columns":    func() stream.PassKernel { return NewNuSlerpKernel(0.4, true, shape, false, false) },
		"model_stock":           func() stream.PassKernel { return NewModelStockKernel(false, cols) },
		"model_stock by rows":   func() stream.PassKernel { return NewModelStockKernel(true, cols) },
		"karcher":               func() stream.PassKernel { return NewKarcherKernel(3, 10, 1e-5) },
		"multislerp":            func() stream.PassKernel { return NewMultiSlerpKernel([]float64{0.5, 0.5}, true, true, 1e-8) },
		"task arithmetic":       gta(sparsify.None, sparsify.NoRescale, false),
		"dare_ties (L1)":        gta(sparsify.Random, sparsify.L1, false),
		"della (L1)":            gta(sparsify.DellaMagprune, sparsify.L1, false),
		"ties per row":          gta(sparsify.Magnitude, sparsify.NoRescale, true),
		"dare_ties (L2)":        gta(sparsify.Random, sparsify.L2, false),
		"breadcrumbs (per row)": gta(sparsify.MagnitudeOutliers, sparsify.NoRescale, true),
		"dare unscaled":         gta(sparsify.Random, sparsify.NoRescale, false),
		"dare by 1/density":     gta(sparsify.Random, sparsify.InverseDensity, false),
	}
	for name, mk := range kernels {
		for _, from := range []int64{0, chunk, 3 * chunk} {
			in := raw
			if name == "slerp" {
				in = raw[:2] // the base and one model
			}
			t.Run(fmt.Sprintf("%s from %d", name, from), func(t *testing.T) {
				want := runKernel(t, mk(), in, n, chunk, false, 0)[from:]
				got := runKernel(t, mk(), in, n, chunk, true, from)
				for i := range want {
					if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
						t.Fatalf("entry %d: fork %v, in order %v", from+int64(i), got[i], want[i])
					}
				}
			})
		}
	}
	// DELLA's selection without a cached mask must run in order: it
	// forks neither way, nor does any random mask back (drawn in index
	// order). A per-tensor cut without ties in the data forks forward.
	k := gta(sparsify.DellaMagprune, sparsify.NoRescale, false)()
	runKernel(t, k, raw, n, chunk, false, 0)
	if _, ok := k.(stream.Forker).Fork(chunk); ok {
		t.Error("della unscaled forked")
	}
	for _, m := range []sparsify.Method{sparsify.Random, sparsify.DellaMagprune} {
		for _, r := range []sparsify.Rescale{sparsify.NoRescale, sparsify.L1} {
			k := gta(m, r, false)()
			runKernel(t, k, raw, n, chunk, false, 0)
			if _, ok := k.(stream.BackForker).ForkBack(); ok {
				t.Errorf("%v (rescale %v) forked back", m, r)
			}
		}
	}
}

// TestBackForksMatchTheKernelInOrder: a magnitude cut's kernel running
// its last pass in order up to a chunk boundary, and a ForkBack taking
// the chunks from the end down to there, compute the bits of the kernel
// in order — on values with many ties at the cuts.
func TestBackForksMatchTheKernelInOrder(t *testing.T) {
	const rows, cols, chunk = 12, 50, 150
	n := int64(rows * cols)
	shape := []int64{rows, cols}
	rng := rand.New(rand.NewPCG(6, 6))
	raw := make([][]byte, 3)
	for i := range raw {
		v := make([]float64, n)
		for j := range v {
			v[j] = 0.5 + float64(rng.IntN(9))/64 // few values: deltas tie
		}
		raw[i] = make([]byte, 2*n)
		if err := weights.Encode(weights.BF16, v, raw[i]); err != nil {
			t.Fatal(err)
		}
	}
	for _, tc := range []struct {
		name   string
		m      sparsify.Method
		perRow bool
	}{{"ties", sparsify.Magnitude, false}, {"breadcrumbs", sparsify.MagnitudeOutliers, false}, {"ties per row", sparsify.Magnitude, true}, {"task arithmetic", sparsify.None, false}} {
		mk := func() stream.PassKernel {
			c := GTAConfig{Weights: []float64{0.6, 0.5}, Consensus: true, Normalize: true, Lambda: 1}
			for _, d := range []float64{0.4, 0.7} {
				c.Sparsify = append(c.Sparsify, sparsify.Spec{Method: tc.m, Density: d, Gamma: 0.1, PerRow: tc.perRow})
			}
			return NewGTAKernel("w", shape, c)
		}
		want := runKernel(t, mk(), raw, n, chunk, false, 0)
		if k := mk(); !tc.perRow && tc.m != sparsify.None {
			// Ties at the cut, some taken: only in order, or back.
			runKernel(t, k, raw, n, chunk, false, 0)
			if _, ok := k.(stream.Forker).Fork(chunk); ok {
				t.Errorf("%s forked forward", tc.name)
			}
		}
		for _, split := range []int64{0, chunk, 2 * chunk, n / chunk * chunk} {
			k := mk()
			front := runKernel(t, k, raw, n, chunk, false, 0) // pre-passes, then in order
			b, ok := k.(stream.BackForker).ForkBack()
			if !ok {
				t.Fatalf("%s: no back fork", tc.name)
			}
			got := append([]float64(nil), front[:split]...)
			got = append(got, make([]float64, n-split)...)
			for s := (n - 1) / chunk * chunk; s >= split; s -= chunk {
				e := min(n, s+chunk)
				copy(got[s:e], computeChunk(t, b, raw, s, e))
			}
			for i := range want {
				if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
					t.Fatalf("%s split at %d: entry %d: back fork %v, in order %v", tc.name, split, i, got[i], want[i])
				}
			}
		}
	}
}

// TestSplitPassesMatchTheKernelInOrder: a GTA kernel's histogram passes
// counted partly by splits (from the end down, joined before each pass
// ends) give the bits of the kernel running every pass in order; a split
// is refused while the histograms take their sample and for a norm pass.
func TestSplitPassesMatchTheKernelInOrder(t *testing.T) {
	const rows, cols, chunk = 1100, 512, 64 * 512 // sampled: more than 2^19 entries
	n := int64(rows * cols)
	shape := []int64{rows, cols}
	rng := rand.New(rand.NewPCG(8, 8))
	raw := make([][]byte, 3)
	for i := range raw {
		v := make([]float64, n)
		for j := range v {
			v[j] = 0.02*rng.NormFloat64() + 0.003*float64(i)*math.Sin(float64(j))
		}
		raw[i] = make([]byte, 2*n)
		if err := weights.Encode(weights.BF16, v, raw[i]); err != nil {
			t.Fatal(err)
		}
	}
	gta := func(specs ...sparsify.Spec) func() stream.PassKernel {
		return func() stream.PassKernel {
			return NewGTAKernel("w", shape, GTAConfig{Sparsify: specs, Weights: []float64{0.6, 0.5}, Consensus: true, Normalize: true, Lambda: 1})
		}
	}
	ties := sparsify.Spec{Method: sparsify.Magnitude, Density: 0.5}
	crumbs := sparsify.Spec{Method: sparsify.MagnitudeOutliers, Density: 0.9, Gamma: 0.01}
	kernels := []struct {
		name string
		k    func() stream.PassKernel
	}{
		{"ties", gta(ties, ties)},
		{"breadcrumbs", gta(crumbs, crumbs)},
		{"ties and an unsparsified model", gta(ties, sparsify.Spec{})},
		{"ties, then breadcrumbs", gta(ties, crumbs)},
	}
	chunks := int((n + chunk - 1) / chunk)
	for _, tc := range kernels {
		want := runKernel(t, tc.k(), raw, n, chunk, false, 0)
		passes := 0 // the kernel in order's: counts lost in a join would show as a recount (Again)
		for k := tc.k(); ; passes++ {
			p, more := k.NextPass()
			if !more {
				break
			}
			for s := int64(0); s < n; s += chunk {
				if err := k.Observe(p, feedChunk(t, k, raw, s, min(n, s+chunk))); err != nil {
					t.Fatal(err)
				}
			}
			if err := k.EndPass(p); err != nil {
				t.Fatal(err)
			}
		}
		for _, from := range []int{0, 16, chunks - 1} {
			k := tc.k()
			split, ran := 0, 0
			for p, more := k.NextPass(); more; p, more = k.NextPass() {
				ran++
				var sub stream.PassKernel
				hi := chunks
				for c := 0; c < hi; c++ {
					if sub == nil && c >= from {
						var ok bool
						if sub, ok = k.(stream.PassSplitter).SplitPass(p); ok {
							if ran == 1 && c*chunk < 1<<19 {
								t.Fatalf("%s: split at entry %d, inside the sample", tc.name, c*chunk)
							}
							split++
							lo := c + (hi-c)/3
							for d := hi - 1; d >= lo; d-- {
								if err := sub.Observe(p, feedChunk(t, sub, raw, int64(d*chunk), min(n, int64((d+1)*chunk)))); err != nil {
									t.Fatal(err)
								}
							}
							hi = lo
						}
					}
					if c < hi {
						if err := k.Observe(p, feedChunk(t, k, raw, int64(c*chunk), min(n, int64((c+1)*chunk)))); err != nil {
							t.Fatal(err)
						}
					}
				}
				if sub != nil {
					if err := k.(stream.PassSplitter).JoinPass(sub); err != nil {
						t.Fatal(err)
					}
				}
				if err := k.EndPass(p); err != nil {
					t.Fatal(err)
				}
			}
			if split == 0 || ran != passes {
				t.Fatalf("%s from chunk %d: %d passes split, %d passes run, want %d", tc.name, from, split, ran, passes)
			}
			var got []float64
			for s := int64(0); s < n; s += chunk {
				got = append(got, computeChunk(t, k, raw, s, min(n, s+chunk))...)
			}
			for i := range want {
				if math.Float64bits(got[i]) != math.Float64bits(want[i]) {
					t.Fatalf("%s, split from chunk %d: entry %d = %v, want %v", tc.name, from, i, got[i], want[i])
				}
			}
		}
	}
	// A norm pass sums floats in index order: not split.
	dare := gta(sparsify.Spec{Method: sparsify.Random, Density: 0.5, Rescale: sparsify.L1, Seed: 1}, sparsify.Spec{Method: sparsify.Random, Density: 0.5, Rescale: sparsify.L1, Seed: 1})()
	p, _ := dare.NextPass()
	for c := range chunks {
		if _, ok := dare.(stream.PassSplitter).SplitPass(p); ok {
			t.Fatal("a norm pass split")
		}
		if err := dare.Observe(p, feedChunk(t, dare, raw, int64(c*chunk), min(n, int64((c+1)*chunk)))); err != nil {
			t.Fatal(err)
		}
	}
}
