package merge

import (
	"math"
	"math/rand/v2"
	"testing"
)

// consensusRef is the TIES disjoint merge written with branches, the
// definition consensusMix must reproduce bit for bit.
func consensusRef(k *GTAKernel, base, o []float64) {
	for e := range o {
		var total float64
		for i, w := range k.w {
			total += w * float64(k.tau[i][e])
		}
		majority := 1.0
		if total < 0 {
			majority = -1
		}
		var mixed, div float64
		for i, w := range k.w {
			x := w * float64(k.tau[i][e])
			if (x > 0 && majority > 0) || (x < 0 && majority < 0) {
				mixed += x
				div += w
			}
		}
		if div == 0 {
			div = 1
		}
		if k.normalize {
			mixed /= div
		}
		o[e] = base[e] + k.lambda*mixed
	}
}

func consensusKernel(r *rand.Rand, n, models int, weights []float64, normalize, specials bool) (*GTAKernel, []float64) {
	return consensusKernelZeros(r, n, models, weights, normalize, specials, 1)
}

// consensusKernelZeros draws task vectors with zeros/10 of the entries zero
// (beyond the specials' share): 5 is what trimming to density 0.5 leaves.
func consensusKernelZeros(r *rand.Rand, n, models int, weights []float64, normalize, specials bool, zeros int) (*GTAKernel, []float64) {
	k := &GTAKernel{w: weights, normalize: normalize, lambda: 0.7, consensus: true}
	special := []float32{0, float32(math.Copysign(0, -1)), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.NaN()), 1e-45, -1e-45}
	for i := 0; i < models; i++ {
		t := make([]float32, n)
		for e := range t {
			switch c := r.IntN(10); {
			case c >= 10-zeros+1:
				t[e] = 0
			case c == 0:
				if !specials {
					t[e] = float32(r.NormFloat64())
					continue
				}
				t[e] = special[r.IntN(len(special))]
			case c == 1:
				t[e] = 0
			default:
				t[e] = float32(r.NormFloat64())
			}
		}
		k.tau = append(k.tau, t)
	}
	base := make([]float64, n)
	for e := range base {
		base[e] = r.NormFloat64()
	}
	return k, base
}

func TestConsensusMixMatchesBranches(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, ws := range [][]float64{{0.5, 0.5}, {1, -1}, {0.3, 0.7, 1.2}, {1, 1, 1, 1, -0.5}, {0, 2}, {math.Copysign(0, -1), 1},
		{math.Copysign(0, -1), math.Copysign(0, -1), math.Copysign(0, -1)}, {-0.5, 0.25, 1}} {
		for _, norm := range []bool{true, false} {
			k, base := consensusKernel(r, 20000, len(ws), ws, norm, true)
			if len(ws) >= 2 && math.Abs(ws[0]) == math.Abs(ws[1]) {
				// Exact cancellations: total = ±0 elects +.
				for e := 0; e < len(base); e += 3 {
					k.tau[1][e] = k.tau[0][e] * float32(-ws[0]/ws[1])
				}
			}
			a, b := make([]float64, len(base)), make([]float64, len(base))
			consensusRef(k, base, a)
			k.consensusMix(base, b)
			for e := range a {
				if math.Float64bits(a[e]) != math.Float64bits(b[e]) {
					t.Fatalf("weights %v normalize %v: entry %d: branches %v (%x), masks %v (%x)", ws, norm, e, a[e], math.Float64bits(a[e]), b[e], math.Float64bits(b[e]))
				}
			}
		}
	}
}

// BenchmarkConsensus compares the branchy definition with the masked
// loop on three task vectors (the TIES recipes' case; normal values, 10%
// zeros as trimming leaves), per entry.
func BenchmarkConsensus(b *testing.B) {
	r := rand.New(rand.NewPCG(3, 4))
	k, base := consensusKernel(r, 1<<16, 3, []float64{0.4, 0.3, 0.3}, true, false)
	out := make([]float64, len(base))
	b.Run("branches", func(b *testing.B) {
		for b.Loop() {
			consensusRef(k, base, out)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(base)), "ns/entry")
	})
	b.Run("masks", func(b *testing.B) {
		for b.Loop() {
			k.consensusMix(base, out)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(base)), "ns/entry")
	})
	k2, base2 := consensusKernel(r, 1<<16, 2, []float64{0.5, 0.5}, true, false)
	b.Run("branches-2tv", func(b *testing.B) {
		for b.Loop() {
			consensusRef(k2, base2, out)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(base)), "ns/entry")
	})
	b.Run("masks-2tv", func(b *testing.B) {
		for b.Loop() {
			k2.consensusMix(base2, out)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(base)), "ns/entry")
	})
	// As TIES at density 0.5 leaves them: half of each task vector zero.
	k3, base3 := consensusKernelZeros(r, 1<<16, 2, []float64{0.5, 0.5}, true, false, 5)
	b.Run("branches-2tv-trimmed", func(b *testing.B) {
		for b.Loop() {
			consensusRef(k3, base3, out)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(base)), "ns/entry")
	})
	b.Run("masks-2tv-trimmed", func(b *testing.B) {
		for b.Loop() {
			k3.consensusMix(base3, out)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(base)), "ns/entry")
	})
}
