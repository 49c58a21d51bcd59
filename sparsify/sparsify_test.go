package sparsify

import (
	"cmp"
	"fmt"
	"math"
	"math/rand/v2"
	"runtime"
	"slices"
	"sort"
	"strings"
	"testing"
)

func eq(t *testing.T, what string, got, want []float32) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: len %d, want %d", what, len(got), len(want))
	}
	for i := range got {
		if got[i] != want[i] {
			t.Fatalf("%s:\n got %v\nwant %v", what, got, want)
		}
	}
}

func TestBreadcrumbsHandWorked(t *testing.T) {
	// n = 10, γ = 0.1 → drop 1 outlier (0.9); density 0.5 → keep the next
	// five by magnitude: 0.7, 0.6, -0.5, -0.4, 0.3.
	v := []float32{0.1, -0.5, 0.3, 0.9, -0.2, 0, 0.7, -0.4, 0.6, 0.05}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.5, Gamma: 0.1}, "w", []int64{10}, 0, v)
	eq(t, "per-tensor", v, []float32{0, -0.5, 0.3, 0, 0, 0, 0.7, -0.4, 0.6, 0})
}

func TestBreadcrumbsGammaBelowOneEntryKeepsTop(t *testing.T) {
	// γ·n = 0.1 < 1: nothing to drop from the top, so keep the top 30%
	// (mergekit would zero the whole tensor here).
	v := []float32{0.1, -0.5, 0.3, 0.9, -0.2, 0, 0.7, -0.4, 0.6, 0.05}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.3, Gamma: 0.01}, "w", []int64{10}, 0, v)
	eq(t, "γn<1", v, []float32{0, 0, 0, 0.9, 0, 0, 0.7, 0, 0.6, 0})
}

func TestBreadcrumbsDensityPlusGammaOverOne(t *testing.T) {
	// density 0.8, γ 0.5, n = 4: nKeep = 3, nTop would be 2 but only 1 fits.
	v := []float32{4, 3, 2, 1}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.8, Gamma: 0.5}, "w", []int64{4}, 0, v)
	eq(t, "capped γ", v, []float32{0, 3, 2, 1})
}

func TestBreadcrumbsPerRow(t *testing.T) {
	// Each row of 4 ranks its own entries: γ = 0.25 drops one, density 0.5
	// keeps two.
	v := []float32{
		1, 2, 3, 4,
		-40, 30, -20, 10,
	}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.5, Gamma: 0.25, PerRow: true}, "w", []int64{2, 4}, 0, v)
	eq(t, "per-row", v, []float32{0, 2, 3, 0, 0, 30, -20, 0})
	// The same matrix per tensor: drop top 2 of 8 (-40, 30), keep 4.
	w := []float32{1, 2, 3, 4, -40, 30, -20, 10}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.5, Gamma: 0.25}, "w", []int64{2, 4}, 0, w)
	eq(t, "per-tensor", w, []float32{0, 0, 3, 4, 0, 0, -20, 10})
}

func TestMagnitudeTiesBrokenByIndex(t *testing.T) {
	v := []float32{0.5, -0.5, 0.5, 0.1}
	InPlace(Spec{Method: Magnitude, Density: 0.5}, "w", []int64{4}, 0, v)
	eq(t, "ties", v, []float32{0.5, -0.5, 0, 0})
	// Breadcrumbs dropping one of three equal outliers: the lowest index.
	w := []float32{0.5, -0.5, 0.5, 0.1}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.5, Gamma: 0.25}, "w", []int64{4}, 0, w)
	eq(t, "ties outliers", w, []float32{0, -0.5, 0.5, 0})
}

func TestDegenerateInputs(t *testing.T) {
	zero := make([]float32, 7)
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.5, Gamma: 0.1, Rescale: L1}, "w", []int64{7}, 0, zero)
	eq(t, "all zero", zero, make([]float32, 7))
	one := []float32{3, -1}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 1, Gamma: 0.01}, "w", []int64{2}, 0, one)
	eq(t, "density 1", one, []float32{3, -1})
	none := []float32{3, -1}
	InPlace(Spec{Method: Magnitude, Density: 0}, "w", []int64{2}, 0, none)
	eq(t, "density 0", none, []float32{0, 0})
	scalar := []float32{2}
	InPlace(Spec{Method: MagnitudeOutliers, Density: 0.9, Gamma: 0.1, PerRow: true}, "s", []int64{}, 0, scalar)
	eq(t, "scalar", scalar, []float32{0}) // int(0.9·1) = 0 kept
}

// refKeep ranks by (|x| desc, index asc) with a full sort, independently of
// the selection code, and marks ranks [nTop, nTop+nKeep).
func refKeep(v []float32, nTop, nKeep int) []bool {
	idx := make([]int, len(v))
	for i := range idx {
		idx[i] = i
	}
	mag := func(i int) float64 {
		a := math.Abs(float64(v[i]))
		if math.IsNaN(a) {
			return math.Inf(1) * 2
		}
		return a
	}
	sort.SliceStable(idx, func(a, b int) bool { return mag(idx[a]) > mag(idx[b]) })
	keep := make([]bool, len(v))
	for r := nTop; r < nTop+nKeep && r < len(v); r++ {
		keep[idx[r]] = true
	}
	return keep
}

func TestStreamedCutsMatchSortReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	for trial := 0; trial < 200; trial++ {
		n := 1 + rng.IntN(3000)
		v := make([]float32, n)
		for i := range v {
			switch rng.IntN(4) {
			case 0: // heavy ties
				v[i] = float32(rng.IntN(5)) * 0.25
			case 1:
				v[i] = -float32(rng.IntN(5)) * 0.25
			default:
				v[i] = float32(rng.NormFloat64() * math.Pow(10, float64(rng.IntN(8)-4)))
			}
		}
		s := Spec{Method: MagnitudeOutliers, Density: rng.Float64(), Gamma: rng.Float64() * 0.3}
		nTop, nKeep := s.Counts(int64(n))
		want := refKeep(v, int(nTop), int(nKeep))
		// Stream in uneven chunk sizes.
		got := append([]float32(nil), v...)
		ts := s.ForTensor("x", []int64{int64(n)}, 0)
		chunk := 1 + rng.IntN(n)
		for _, p := range append([]Pass(nil), ts.Needs()...) {
			if !contains(ts.Needs(), p) {
				continue
			}
			for i := 0; i < n; i += chunk {
				ts.Observe(p, got[i:min(n, i+chunk)])
			}
			ts.EndPass(p)
		}
		for i := 0; i < n; i += chunk {
			ts.Apply(got[i:min(n, i+chunk)])
		}
		for i := range v {
			w := float32(0)
			if want[i] {
				w = v[i]
			}
			if got[i] != w {
				t.Fatalf("trial %d n=%d density=%.3f γ=%.3f chunk=%d: entry %d = %v, want %v", trial, n, s.Density, s.Gamma, chunk, i, got[i], w)
			}
		}
	}
}

func TestDAREKeepsDensityAndRescales(t *testing.T) {
	n := 200000
	rng := rand.New(rand.NewPCG(2, 2))
	v := make([]float32, n)
	for i := range v {
		v[i] = float32(rng.NormFloat64())
	}
	for _, density := range []float64{0.1, 0.5, 0.9} {
		s := Spec{Method: Random, Density: density, Rescale: InverseDensity, Seed: 7}
		a := append([]float32(nil), v...)
		InPlace(s, "w", []int64{int64(n)}, 0, a)
		kept := 0
		for i := range a {
			if a[i] != 0 {
				kept++
				if want := float32(float64(v[i]) / density); a[i] != want {
					t.Fatalf("kept entry %v, want %v (÷ density)", a[i], want)
				}
			}
		}
		// Binomial(n, density): within 5 standard deviations.
		sd := math.Sqrt(float64(n) * density * (1 - density))
		if math.Abs(float64(kept)-density*float64(n)) > 5*sd {
			t.Errorf("density %.1f: kept %d of %d", density, kept, n)
		}
		b := append([]float32(nil), v...)
		InPlace(s, "w", []int64{int64(n)}, 0, b)
		eq(t, "same seed", b, a)
		c := append([]float32(nil), v...)
		InPlace(s, "w", []int64{int64(n)}, 1, c)
		same := true
		for i := range c {
			same = same && c[i] == a[i]
		}
		if same {
			t.Error("another model index drew the same mask")
		}
	}
	// L1 rescale: the L1 norm after equals the norm before (float64 check).
	s := Spec{Method: Random, Density: 0.3, Rescale: L1, Seed: 9}
	a := append([]float32(nil), v...)
	InPlace(s, "w", []int64{int64(n)}, 0, a)
	var before, after float64
	for i := range v {
		before += math.Abs(float64(v[i]))
		after += math.Abs(float64(a[i]))
	}
	if math.Abs(after-before) > 1e-6*before {
		t.Errorf("L1 after rescale %v, before %v", after, before)
	}
}

func TestSelectKthAgainstSort(t *testing.T) {
	rng := rand.New(rand.NewPCG(4, 4))
	for trial := 0; trial < 500; trial++ {
		n := 1 + rng.IntN(200)
		s := make([]uint32, n)
		for i := range s {
			s[i] = uint32(rng.IntN(1 + rng.IntN(50)))
		}
		ref := append([]uint32(nil), s...)
		sort.Slice(ref, func(a, b int) bool { return ref[a] < ref[b] })
		i := rng.IntN(n)
		if got := selectKth(append([]uint32(nil), s...), i); got != ref[i] {
			t.Fatalf("selectKth(%v, %d) = %d, want %d", s, i, got, ref[i])
		}
	}
}

// TestUniformBelowMatchesFloat64: the integer test of a draw against
// uniformBelow(d) decides exactly as rand.Float64() < d on the same
// stream, including densities that are exact multiples of 2^-53 and their
// neighbours, where a rounding slip would show.
func TestUniformBelowMatchesFloat64(t *testing.T) {
	ds := []float64{0, -1, 1, 2, 0.5, 0.1, 0.9, 1e-300, 0x1p-53, 3 * 0x1p-53, 1 - 0x1p-53}
	for _, d := range []float64{0.25, 0.7, 1.0 / 3} {
		ds = append(ds, d, math.Nextafter(d, 0), math.Nextafter(d, 1))
	}
	for _, d := range ds {
		a, b := rand.NewPCG(7, uint64(len(ds))), rand.New(rand.NewPCG(7, uint64(len(ds))))
		thr := uniformBelow(d)
		for i := 0; i < 20000; i++ {
			u := a.Uint64()
			if got, want := u&(1<<53-1) < thr, b.Float64() < d; got != want {
				t.Fatalf("d=%g draw %d: integer test %v, Float64 test %v", d, i, got, want)
			}
		}
		// At the threshold itself: the draw x = thr-1 is below d, thr is not.
		if thr > 0 && thr <= 1<<53 && !(float64(thr-1)/(1<<53) < d) {
			t.Errorf("d=%g: %d/2^53 is not below d", d, thr-1)
		}
		if thr < 1<<53 && float64(thr)/(1<<53) < d {
			t.Errorf("d=%g: %d/2^53 is below d", d, thr)
		}
	}
}

// TestRankRowMatchesSort: the radix ranks are the positions of a stable
// sort by key (ties by index), on rows with many ties, keys sharing
// digits, every digit boundary and a single entry.
func TestRankRowMatchesSort(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	for _, n := range []int{1, 2, 3, 17, 1000, 4096, 11008} {
		for _, spread := range []uint32{1, 7, 1 << 11, 1 << 22, 1 << 31, math.MaxUint32} {
			keys := make([]uint32, n)
			base := r.Uint32()
			for i := range keys {
				keys[i] = base + r.Uint32()%spread
			}
			order, tmp, rank := make([]uint64, n), make([]uint64, n), make([]int, n)
			rankRow(keys, order, tmp, rank)
			idx := make([]int, n)
			for i := range idx {
				idx[i] = i
			}
			sort.SliceStable(idx, func(a, b int) bool { return keys[idx[a]] < keys[idx[b]] })
			for pos, i := range idx {
				if rank[i] != pos {
					t.Fatalf("n=%d spread=%d: rank[%d] = %d, want %d", n, spread, i, rank[i], pos)
				}
			}
		}
	}
}

func BenchmarkRankRow(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	keys := make([]uint32, 11008)
	for i := range keys {
		keys[i] = MagBits(float32(r.NormFloat64() * 0.01))
	}
	order, tmp, rank := make([]uint64, len(keys)), make([]uint64, len(keys)), make([]int, len(keys))
	for b.Loop() {
		rankRow(keys, order, tmp, rank)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/float64(len(keys)), "ns/entry")
}

// TestSampledHistogramExact: a histogram told the tensor's size counts the
// second pass's keys during the first (from a sample of the first
// elements, bands around the ranks) and skips that pass when the ranks
// fall in their bands; its cuts equal the exact selection (CutOfKeys) for
// every rank, whether it skipped the pass, counted again without a sample
// (first rows unlike the rest) or saw the whole tensor in its sample.
func TestSampledHistogramExact(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	gen := map[string]func(n int) []float32{
		"normal": func(n int) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64() * 0.01)
			}
			return v
		},
		"heavy": func(n int) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.NormFloat64() / (0.05 + rng.Float64()))
			}
			return v
		},
		"ties": func(n int) []float32 {
			v := make([]float32, n)
			for i := range v {
				v[i] = float32(rng.IntN(7)) * 0.25
			}
			return v
		},
		// The first rows are ten times smaller (larger) than the rest:
		// the sample misplaces the ranks, which fall above (below) their
		// bands, and the first pass runs again.
		"shifted":    shifted(rng, 0.1),
		"shifted up": shifted(rng, 10),
	}
	skipped := map[string]bool{}
	for name, g := range gen {
		for _, n := range []int{1000, 3*sampleKeys + 12345} {
			v := g(n)
			keys := make([]uint32, n)
			for i, x := range v {
				keys[i] = MagBits(x)
			}
			scratch := make([]uint32, n)
			for fi, f := range []float64{0.0001, 0.01, 0.3, 0.5, 0.9, 0.9999} {
				k0 := max(1, int64(f*float64(n)))
				ks := []int64{k0, min(int64(n)-1, k0+int64(n)/10)}
				h := NewHistogram(ks...)
				h.Expect(int64(n))
				// Chunks that end where the sample does, and chunks
				// that straddle its end.
				chunk := []int{65536, 100003}[fi%2]
				for s := 0; s < n; s += chunk {
					h.AddCoarseValues(v[s:min(n, s+chunk)])
				}
				need := h.EndCoarse()
				again := h.Again()
				if again {
					if n <= sampleKeys {
						t.Fatalf("%s n=%d rank %v: a histogram that sampled the whole tensor counts again", name, n, ks)
					}
					for s := 0; s < n; s += chunk {
						h.AddCoarseValues(v[s:min(n, s+chunk)])
					}
					if need = h.EndCoarse(); h.Again() {
						t.Fatalf("%s n=%d rank %v: counts again a second time", name, n, ks)
					}
				}
				if need {
					for s := 0; s < n; s += chunk {
						h.AddFineValues(v[s:min(n, s+chunk)])
					}
				} else if !again {
					skipped[fmt.Sprintf("%s %v", name, n > sampleKeys)] = true
				}
				got := h.Cuts()
				for j, k := range ks {
					if want := CutOfKeys(keys, int(k), scratch); got[j] != want {
						t.Fatalf("%s n=%d rank %d (second pass %v): cut %+v, want %+v", name, n, k, need, got[j], want)
					}
				}
				// (Ranks near an end are sampled too thinly to be placed
				// every time.)
				if (name == "normal" || name == "heavy") && f >= 0.01 && f <= 0.5 && again {
					t.Errorf("%s n=%d rank %v, chunks of %d: the sample misplaced a rank of alike rows", name, n, ks, chunk)
				}
				if strings.HasPrefix(name, "shifted") && n > sampleKeys && f == 0.5 && !again {
					t.Errorf("shifted: the misplaced sample did not make the histogram count again")
				}
			}
		}
	}
	for _, want := range []string{"normal true", "heavy true", "normal false", "ties false"} {
		if !skipped[want] {
			t.Errorf("%s: the second pass was never skipped", want)
		}
	}
}

// TestPackBits: words packed and unpacked a word at a time hold the bits
// set one at a time, at every alignment of start and length.
func TestPackBits(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	for _, pos := range []int64{0, 1, 63, 64, 65, 130} {
		for _, n := range []int{0, 1, 63, 64, 65, 200, 1000} {
			keep := make([]bool, n)
			for i := range keep {
				keep[i] = r.IntN(2) == 0
			}
			words := int((pos+int64(n))/64 + 2)
			want, got := make([]uint64, words), make([]uint64, words)
			want[0], got[0] = 1<<62, 1<<62 // bits already set stay set
			for i, k := range keep {
				if k {
					j := pos + int64(i)
					want[j>>6] |= 1 << (j & 63)
				}
			}
			packBits(keep, got, pos)
			for w := range want {
				if want[w] != got[w] {
					t.Fatalf("pos %d n %d: word %d = %x, want %x", pos, n, w, got[w], want[w])
				}
			}
			back := make([]bool, n)
			unpackBits(want, pos, back)
			for i := range back {
				if back[i] != keep[i] && !(pos+int64(i) == 62) {
					t.Fatalf("pos %d n %d: bit %d unpacked %v, want %v", pos, n, i, back[i], keep[i])
				}
			}
		}
	}
}

// TestDellaMaskNaive: MAGPRUNE's keep decisions equal a plain re-derivation
// — ranks from a stable sort by magnitude, one rand.Float64 per entry in
// index order compared with (d − ε) + 2ε·rank/(L−1) in float64 — on rows
// with ties (zeros and repeated magnitudes), over several chunks, with and
// without the L1 norm pass that caches the mask.
func TestDellaMaskNaive(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	for _, shape := range [][]int64{{7, 1}, {5, 33}, {3, 4096}, {2, 11008}, {50}} {
		for _, rescale := range []Rescale{NoRescale, L1} {
			rows, rl := int64(1), shape[len(shape)-1]
			if len(shape) == 2 {
				rows = shape[0]
			}
			n := rows * rl
			v := make([]float32, n)
			for i := range v {
				switch r.IntN(5) {
				case 0:
					v[i] = 0
				case 1:
					v[i] = float32(r.IntN(3)) * 0.25 // repeated magnitudes
				default:
					v[i] = float32(r.NormFloat64() * 0.01)
				}
			}
			const d, eps = 0.6, 0.2
			spec := Spec{Method: DellaMagprune, Density: d, Epsilon: eps, Seed: 11, Rescale: rescale}
			ts := spec.ForTensor("w", shape, 1)
			// Chunks of two rows: the stream's order restarts per pass.
			chunk := ts.ChunkLen(int(2 * rl))
			for len(ts.Needs()) > 0 {
				p := ts.Needs()[0]
				for s := 0; s < int(n); s += chunk {
					ts.Observe(p, v[s:min(int(n), s+chunk)])
				}
				ts.EndPass(p)
			}
			got := append([]float32(nil), v...)
			for s := 0; s < int(n); s += chunk {
				ts.Apply(got[s:min(int(n), s+chunk)])
			}

			// The re-derivation: the same stream, seeded as ForTensor does.
			g := rand.New(rand.NewPCG(ts.seed[0], ts.seed[1]))
			want := make([]float32, n)
			var before, after float64
			for row := int64(0); row < rows; row++ {
				x := v[row*rl : (row+1)*rl]
				idx := make([]int, rl)
				for i := range idx {
					idx[i] = i
				}
				sort.SliceStable(idx, func(a, b int) bool {
					return math.Abs(float64(x[idx[a]])) < math.Abs(float64(x[idx[b]]))
				})
				rank := make([]int, rl)
				for pos, i := range idx {
					rank[i] = pos
				}
				for i := range x {
					norm := 0.5
					if rl > 1 {
						norm = float64(rank[i]) / float64(rl-1)
					}
					before += math.Abs(float64(x[i]))
					if g.Float64() < (d-eps)+2*eps*norm {
						want[row*rl+int64(i)] = x[i]
						after += math.Abs(float64(x[i]))
					}
				}
			}
			if rescale == L1 && before >= 1e-7 && after >= 1e-7 {
				for i := range want {
					want[i] = float32(float64(want[i]) * (before / after))
				}
			}
			for i := range want {
				if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
					t.Fatalf("shape %v rescale %v: entry %d = %g, want %g", shape, rescale, i, got[i], want[i])
				}
			}
		}
	}
}

// TestSparsifierCountsAgain: a tensor whose first rows are unlike the rest
// sends its sampled bands wrong; the sparsifier runs the first pass again
// (the caller, following Needs, sees it twice) and keeps exactly the
// entries a full sort picks, for TIES' and Breadcrumbs' cuts, as it does
// when the bands hold.
func TestSparsifierCountsAgain(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	rows, rl := 3*sampleKeys/1000+7, 1000
	n := rows * rl
	for _, shift := range []float64{1, 0.1, 10} {
		v := shifted(rng, shift)(n)
		// The reference order: |x| descending, index ascending.
		order := make([]int, n)
		for i := range order {
			order[i] = i
		}
		slices.SortFunc(order, func(a, b int) int {
			if c := cmp.Compare(math.Abs(float64(v[b])), math.Abs(float64(v[a]))); c != 0 {
				return c
			}
			return a - b
		})
		for _, s := range []Spec{{Method: Magnitude, Density: 0.5}, {Method: MagnitudeOutliers, Density: 0.9, Gamma: 0.01}} {
			nTop, nKeep := s.Counts(int64(n))
			want := make([]bool, n)
			for _, i := range order[nTop : nTop+nKeep] {
				want[i] = true
			}
			got := append([]float32(nil), v...)
			ts := s.ForTensor("w", []int64{int64(rows), int64(rl)}, 0)
			chunk := ts.ChunkLen(65536)
			coarse := 0
			for len(ts.Needs()) > 0 {
				p := ts.Needs()[0]
				if p == PassCoarse {
					coarse++
				}
				for i := 0; i < n; i += chunk {
					ts.Observe(p, got[i:min(n, i+chunk)])
				}
				ts.EndPass(p)
			}
			if wantCoarse := map[bool]int{true: 1, false: 2}[shift == 1]; coarse != wantCoarse {
				t.Errorf("shift %g %v: %d first passes, want %d", shift, s.Method, coarse, wantCoarse)
			}
			for i := 0; i < n; i += chunk {
				ts.Apply(got[i:min(n, i+chunk)])
			}
			for i := range v {
				w := float32(0)
				if want[i] {
					w = v[i]
				}
				if got[i] != w {
					t.Fatalf("shift %g %v: entry %d = %v, want %v", shift, s.Method, i, got[i], w)
				}
			}
		}
	}
}

// shifted generates Gaussian values whose first sampleKeys entries are
// scaled by first.
func shifted(rng *rand.Rand, first float64) func(n int) []float32 {
	return func(n int) []float32 {
		v := make([]float32, n)
		for i := range v {
			s := 1.0
			if i < sampleKeys {
				s = first
			}
			v[i] = float32(rng.NormFloat64() * s)
		}
		return v
	}
}

// BenchmarkPackBits: a DELLA chunk's mask packed for the cache, and back.
func BenchmarkPackBits(b *testing.B) {
	r := rand.New(rand.NewPCG(1, 1))
	keep := make([]bool, 1<<16)
	for i := range keep {
		keep[i] = r.IntN(2) == 0
	}
	bits := make([]uint64, len(keep)/64+1)
	b.Run("pack", func(b *testing.B) {
		for b.Loop() {
			packBits(keep, bits, 3)
		}
	})
	b.Run("unpack", func(b *testing.B) {
		for b.Loop() {
			unpackBits(bits, 3, keep)
		}
	})
}

// TestStreamBytesBoundsAllocations: what a sparsifier allocates over a
// whole streamed tensor (its passes and Apply, pools emptied first) stays
// within StreamBytes plus chunk-sized scratch, for every method that holds
// state: a job's memory bound relies on it.
func TestStreamBytesBoundsAllocations(t *testing.T) {
	const rows, cols, chunk = 4096, 4096, 1 << 16
	n := int64(rows * cols)
	rng := rand.New(rand.NewPCG(3, 3))
	vals := make([]float32, chunk)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64() * 0.01)
	}
	work := make([]float32, chunk)
	for _, s := range []Spec{
		{Method: Random, Density: 0.3, Rescale: L1, Seed: 1},
		{Method: Random, Density: 0.3, Rescale: InverseDensity, Seed: 1},
		{Method: DellaMagprune, Density: 0.4, Epsilon: 0.1, Rescale: L1, Seed: 1},
		{Method: Magnitude, Density: 0.5},
		{Method: MagnitudeOutliers, Density: 0.5, Gamma: 0.01},
		{Method: Magnitude, Density: 0.5, PerRow: true},
	} {
		runtime.GC()
		runtime.GC() // twice: a sync.Pool keeps a victim cache for one cycle
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		ts := s.ForTensor("w", []int64{rows, cols}, 0)
		for _, p := range append([]Pass(nil), ts.Needs()...) {
			if !contains(ts.Needs(), p) {
				continue
			}
			for i := int64(0); i < n; i += chunk {
				copy(work, vals)
				ts.Observe(p, work)
			}
			ts.EndPass(p)
		}
		for i := int64(0); i < n; i += chunk {
			copy(work, vals)
			ts.Apply(work)
		}
		runtime.ReadMemStats(&after)
		got := int64(after.TotalAlloc - before.TotalAlloc)
		bound := s.StreamBytes(n, cols) + 16*chunk
		if got > bound {
			t.Errorf("%+v: allocated %d bytes, StreamBytes + chunk scratch %d", s, got, bound)
		}
		ts.Release()
	}
}

// TestForkBackMatchesSortReference: a per-tensor cut applied in order up
// to a chunk boundary and, from there, by a ForkBack sparsifier taking
// the remaining chunks from the tensor's end down keeps what a full sort
// keeps (ties by index) — with heavy ties at the cut, through the exact,
// the sampled and the recounted histogram. Fork forward is taken only
// where no entry's place among ties decides it.
func TestForkBackMatchesSortReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 7))
	sizes := []int{1, 2, 17, 3000, 5000}
	for range 60 {
		sizes = append(sizes, 1+rng.IntN(4000))
	}
	sizes = append(sizes, sampleKeys+70000, sampleKeys+70000) // sampled: the band, then (shifted) Again
	forwardOK := 0
	for trial, n := range sizes {
		v := make([]float32, n)
		first := 1.0
		if trial == len(sizes)-1 {
			first = 40 // the first rows larger: the sample misplaces the band
		}
		for i := range v {
			scale := 1.0
			if i < sampleKeys {
				scale = first
			}
			switch rng.IntN(3) {
			case 0: // heavy ties
				v[i] = float32(float64(rng.IntN(6)-3) * 0.25 * scale)
			default:
				v[i] = float32(rng.NormFloat64() * scale)
			}
		}
		m := MagnitudeOutliers
		if trial%2 == 0 {
			m = Magnitude
		}
		s := Spec{Method: m, Density: rng.Float64(), Gamma: rng.Float64() * 0.3}
		if m == Magnitude {
			s.Gamma = 0
		}
		nTop, nKeep := s.Counts(int64(n))
		want := refKeep(v, int(nTop), int(nKeep))
		got := append([]float32(nil), v...)
		ts := s.ForTensor("x", []int64{int64(n)}, 0)
		chunk := 1 + rng.IntN(min(n, 70000))
		again := false
		for len(ts.Needs()) > 0 {
			p := ts.Needs()[0]
			for i := 0; i < n; i += chunk {
				ts.Observe(p, got[i:min(n, i+chunk)])
			}
			ts.EndPass(p)
			again = again || ts.hist.Again()
		}
		if trial == len(sizes)-1 && !again {
			t.Fatal("the shifted tensor's band held: the recount is not tested")
		}
		chunks := (n + chunk - 1) / chunk
		split := rng.IntN(chunks+1) * chunk // the back fork's first entry
		if f, ok := ts.Fork(int64(split)); ok {
			forwardOK++
			for j := range 2 {
				if !ts.orderFree(j) {
					t.Fatalf("trial %d: forked forward with cut %d taking %d of %d ties", trial, j, ts.cuts[j].Q, ts.ties[j])
				}
			}
			for i := split; i < n; i += chunk {
				f.Apply(got[i:min(n, i+chunk)])
			}
		} else {
			b, ok := ts.ForkBack()
			if !ok {
				t.Fatalf("trial %d: no back fork of a per-tensor cut", trial)
			}
			for c := chunks - 1; c*chunk >= split; c-- {
				b.Apply(got[c*chunk : min(n, (c+1)*chunk)])
			}
		}
		for i := 0; i < split; i += chunk {
			ts.Apply(got[i:min(n, i+chunk)])
		}
		for i := range v {
			w := float32(0)
			if want[i] {
				w = v[i]
			}
			if got[i] != w {
				t.Fatalf("trial %d n=%d %v density=%.3f γ=%.3f chunk=%d split=%d: entry %d = %v, want %v", trial, n, m, s.Density, s.Gamma, chunk, split, i, got[i], w)
			}
		}
	}
	if forwardOK == len(sizes) {
		t.Fatal("every cut forked forward: no back fork was tested")
	}
}

// TestSplitPassMatchesSortReference counts each histogram pass in two
// parts, the first chunks in order and the rest, from the end down, in a
// split joined back, and checks the cut against a sort: the banded first
// pass, the unsampled one after a misplaced band, and the fine pass after
// it each split at least once, and a histogram still sampling refuses.
func TestSplitPassMatchesSortReference(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	sizes := []int{1, 17, 3000, 40000}
	for range 4 {
		sizes = append(sizes, sampleKeys+1+rng.IntN(200000))
	}
	sizes = append(sizes, sampleKeys+90000, sampleKeys+90000) // shifted: Again, then a fine pass
	splits := map[string]int{}
	for trial, n := range sizes {
		v := make([]float32, n)
		first := 1.0
		if trial >= len(sizes)-2 {
			first = 40 // the first rows larger: the sample misplaces the band
		}
		for i := range v {
			scale := 1.0
			if i < sampleKeys {
				scale = first
			}
			if rng.IntN(3) == 0 {
				v[i] = float32(float64(rng.IntN(6)-3) * 0.25 * scale)
			} else {
				v[i] = float32(rng.NormFloat64() * scale)
			}
		}
		m := MagnitudeOutliers
		if trial%2 == 0 {
			m = Magnitude
		}
		s := Spec{Method: m, Density: 0.05 + 0.9*rng.Float64(), Gamma: rng.Float64() * 0.3}
		if m == Magnitude {
			s.Gamma = 0
		}
		nTop, nKeep := s.Counts(int64(n))
		want := refKeep(v, int(nTop), int(nKeep))
		got := append([]float32(nil), v...)
		ts := s.ForTensor("x", []int64{int64(n)}, 0)
		chunk := 1 + rng.IntN(min(n, 70000))
		chunks := (n + chunk - 1) / chunk
		for len(ts.Needs()) > 0 {
			p := ts.Needs()[0]
			kind := map[Pass]string{PassCoarse: "coarse", PassFine: "fine"}[p]
			if p == PassCoarse && ts.hist.expect == 0 {
				kind = "unsampled"
			}
			// Split at the first chunk it is allowed after a random one.
			from := rng.IntN(chunks)
			var sub *TensorSparsifier
			hi := chunks // the sub's lowest chunk
			for c := 0; c < hi; c++ {
				if sub == nil && c >= from {
					if o, ok := ts.SplitPass(p); ok {
						sub = o
						splits[kind]++
						lo := c + rng.IntN(hi-c+1)
						for d := hi - 1; d >= lo; d-- {
							sub.Observe(p, got[d*chunk:min(n, (d+1)*chunk)])
						}
						hi = lo
						if c >= hi {
							break
						}
					}
				}
				ts.Observe(p, got[c*chunk:min(n, (c+1)*chunk)])
			}
			if sub != nil {
				ts.JoinPass(sub)
			}
			ts.EndPass(p)
			if ts.hist.Again() && trial < len(sizes)-2 {
				// Counts lost in a join would also end here, then be
				// recounted: the band of an unshifted tensor holds.
				t.Fatalf("trial %d: the first pass runs again", trial)
			}
		}
		for i := 0; i < n; i += chunk {
			ts.Apply(got[i:min(n, i+chunk)])
		}
		for i := range v {
			w := float32(0)
			if want[i] {
				w = v[i]
			}
			if got[i] != w {
				t.Fatalf("trial %d n=%d %v density=%.3f γ=%.3f chunk=%d: entry %d = %v, want %v", trial, n, m, s.Density, s.Gamma, chunk, i, got[i], w)
			}
		}
	}
	for _, k := range []string{"coarse", "unsampled", "fine"} {
		if splits[k] == 0 {
			t.Errorf("no %s pass was split (%v)", k, splits)
		}
	}
	// Still sampling: the first entries place the bands, in order.
	ts := Spec{Method: Magnitude, Density: 0.5}.ForTensor("x", []int64{sampleKeys * 2}, 0)
	ts.Observe(PassCoarse, make([]float32, sampleKeys-1))
	if _, ok := ts.SplitPass(PassCoarse); ok {
		t.Error("a histogram split while taking its sample")
	}
	if _, ok := ts.SplitPass(PassNorm); ok {
		t.Error("a norm pass split")
	}
}
