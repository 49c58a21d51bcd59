package sparsify

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"testing"
)

// rowsFor gives rows of the shapes bandRow meets: Gaussian deltas, BF16
// deltas of small fine-tunes (few distinct magnitudes, long ties), one
// value throughout, zeros, a huge dynamic range (bucket 0 shared by many
// binades), and NaN/Inf.
func rowsFor(r *rand.Rand, l int) map[string][]float32 {
	bf16 := func(x float64) float32 { return math.Float32frombits(math.Float32bits(float32(x)) &^ 0xffff) }
	rows := map[string][]float32{}
	gen := func(name string, f func(i int) float32) {
		v := make([]float32, l)
		for i := range v {
			v[i] = f(i)
		}
		rows[name] = v
	}
	gen("gauss", func(int) float32 { return float32(r.NormFloat64() * 0.02) })
	gen("bf16-finetune", func(int) float32 {
		w := bf16(r.NormFloat64() * 0.02)
		return bf16(float64(w)+r.NormFloat64()*2e-4) - w
	})
	// Short ties scattered over the row: a third as many magnitudes as
	// entries, so most equal keys have few undecided entries between them.
	pool := make([]float32, l/3)
	for i := range pool {
		pool[i] = float32(r.NormFloat64() * 0.02)
	}
	gen("short-ties", func(int) float32 { return pool[r.IntN(len(pool))] * float32(1-2*r.IntN(2)) })
	gen("constant", func(int) float32 { return -0.5 })
	gen("zeros", func(int) float32 { return 0 })
	gen("few", func(int) float32 { return float32(r.IntN(4)-2) * 0.125 })
	gen("range", func(int) float32 { return float32(math.Ldexp(r.Float64(), -r.IntN(60))) })
	gen("special", func(i int) float32 {
		switch r.IntN(8) {
		case 0:
			return float32(math.NaN())
		case 1:
			return float32(math.Inf(1 - 2*r.IntN(2)))
		case 2:
			return float32(math.Copysign(0, -1))
		}
		return float32(r.NormFloat64())
	})
	return rows
}

// TestBandRowMatchesFullSort checks bandRow's decisions against ranks
// from rankRow (the full radix sort), the same draws, for several
// threshold ramps: DELLA's, a flat one (ε = 0), one clamped at both ends
// (d ± ε beyond [0, 1]) and a steep one that leaves many entries
// undecided.
func TestBandRowMatchesFullSort(t *testing.T) {
	// Undecided entries ranked by gathering their buckets, by counting
	// when few (the default), and always by counting.
	for i, scan := range []int{0, scanUndecided, 1 << 30} {
		t.Run([]string{"gather", "default", "count"}[i], func(t *testing.T) {
			defer func(s int) { scanUndecided = s }(scanUndecided)
			scanUndecided = scan
			testBandRow(t)
		})
	}
}

func testBandRow(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, l := range []int{bandMinRow, 4096, 11008} {
		ramps := map[string][2]float64{"della": {0.7, 0.15}, "flat": {0.5, 0}, "clamped": {0.5, 0.8}, "steep": {0.5, 0.5}}
		for rname, de := range ramps {
			thr := make([]uint64, l)
			for q := range thr {
				thr[q] = uniformBelow((de[0] - de[1]) + 2*de[1]*float64(q)/float64(l-1))
			}
			for name, row := range rowsFor(r, l) {
				keys := make([]uint32, l)
				for i, v := range row {
					keys[i] = MagBits(v)
				}
				order, tmp, rank := make([]uint64, l), make([]uint64, l), make([]int, l)
				rankRow(keys, order, tmp, rank)
				seed := r.Uint64()
				g := rand.NewPCG(seed, 1)
				want := make([]bool, l)
				for i, q := range rank {
					want[i] = g.Uint64()&(1<<53-1) < thr[q]
				}
				draws := make([]uint64, l)
				g = rand.NewPCG(seed, 1)
				for i := range draws {
					draws[i] = g.Uint64()
				}
				var br bandRanker
				got := make([]bool, l)
				br.bandRow(keys, slices.Max(keys), got, thr, draws)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("row of %d %s, ramp %s: entry %d (key %#x, rank %d) kept %v, want %v", l, name, rname, i, keys[i], rank[i], got[i], want[i])
					}
				}
				// The bounds from the thresholds' line, as dellaMask sets it.
				var bl bandRanker
				bl.setLine(thr, (de[0]-de[1])*(1<<53), 2*de[1]/float64(l-1)*(1<<53))
				if !bl.line {
					t.Fatalf("row of %d, ramp %s: the thresholds' line was refused", l, rname)
				}
				clear(got)
				bl.bandRow(keys, slices.Max(keys), got, thr, draws)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("row of %d %s, ramp %s, bounds from the line: entry %d kept %v, want %v", l, name, rname, i, got[i], want[i])
					}
				}
				// The scratch is reused: a second row through the same ranker.
				clear(got)
				br.bandRow(keys, slices.Max(keys), got, thr, draws)
				for i := range want {
					if got[i] != want[i] {
						t.Fatalf("row of %d %s, ramp %s, reused ranker: entry %d kept %v, want %v", l, name, rname, i, got[i], want[i])
					}
				}
			}
		}
	}
}

// BenchmarkDellaMask times whole chunks of 16 rows through dellaMask,
// where the choice between bucket ranking and the full sort is made.
func BenchmarkDellaMask(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 2))
	const rows = 16
	for _, l := range []int{bandMinRow, 4096, 11008} {
		for name := range rowsFor(r, l) {
			if name != "gauss" && name != "bf16-finetune" {
				continue
			}
			var chunk []float32
			for range rows {
				chunk = append(chunk, rowsFor(r, l)[name]...)
			}
			for _, full := range []bool{false, true} {
				b.Run(fmt.Sprintf("%s-%d/full-sort=%v", name, l, full), func(b *testing.B) {
					spec := Spec{Method: DellaMagprune, Density: 0.7, Epsilon: 0.15, Seed: 1}
					ts := spec.ForTensor("w", []int64{1 << 20, int64(l)}, 1)
					keep := make([]bool, len(chunk))
					ts.dellaMask(chunk[:l], keep[:l])
					if full {
						ts.band = nil
					}
					for b.Loop() {
						ts.dellaMask(chunk, keep)
					}
					b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(chunk)), "ns/entry")
				})
			}
		}
	}
}
