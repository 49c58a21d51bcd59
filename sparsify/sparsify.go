package sparsify

import (
	"encoding/binary"
	"fmt"
	"hash/fnv"
	"math"
	"slices"
	"sync"
	"unsafe"

	"github.com/weightops/weightops/internal/pcg"
	"github.com/weightops/weightops/internal/vec"
)

// Method names a sparsification of a task vector.
type Method int

// Sparsification methods, named as in mergekit.
const (
	// None keeps every entry.
	None Method = iota
	// Magnitude keeps the top Density fraction by |τ| (TIES trimming).
	Magnitude
	// Random keeps each entry with probability Density (DARE: drop rate
	// p = 1 − Density).
	Random
	// MagnitudeOutliers drops the top Gamma fraction by |τ| and keeps the
	// next Density fraction (Model Breadcrumbs).
	MagnitudeOutliers
	// DellaMagprune keeps each entry with a probability rising with its
	// magnitude rank within its row (last dimension; a 1-D tensor is one
	// row): from Density − Epsilon for the smallest to Density + Epsilon
	// for the largest, linearly in the rank (DELLA's MAGPRUNE, as
	// mergekit draws it).
	DellaMagprune
)

func (m Method) String() string {
	return [...]string{"none", "magnitude", "random", "magnitude_outliers", "della_magprune"}[m]
}

// Rescale says how kept entries are scaled after sparsification.
type Rescale int

// Rescale modes.
const (
	// NoRescale leaves kept entries as they were.
	NoRescale Rescale = iota
	// InverseDensity multiplies by 1/Density = 1/(1−p), DARE as published.
	InverseDensity
	// L1 matches the L1 norm of the tensor before masking, as mergekit does.
	L1
	// L2 matches the Euclidean norm.
	L2
	// LInf matches the largest magnitude.
	LInf
)

// ParseRescale reads "none", "density" (1/(1−p)), "l1", "l2" or "linf".
func ParseRescale(s string) (Rescale, error) {
	switch s {
	case "", "none":
		return NoRescale, nil
	case "density", "inverse_density", "paper":
		return InverseDensity, nil
	case "l1":
		return L1, nil
	case "l2":
		return L2, nil
	case "linf":
		return LInf, nil
	}
	return 0, fmt.Errorf("unknown rescale %q (none, density, l1, l2, linf)", s)
}

// Spec is one model's sparsification of one tensor.
type Spec struct {
	Method  Method
	Density float64 // fraction kept (of all entries)
	Gamma   float64 // MagnitudeOutliers: top fraction dropped
	Epsilon float64 // DellaMagprune: half the spread of keep probabilities
	// PerRow ranks each row (last dimension) on its own, as the official
	// Breadcrumbs code does; otherwise the flattened tensor is ranked, as
	// mergekit does. 0-D and 1-D tensors are one row either way.
	PerRow  bool
	Rescale Rescale
	// Seed drives Random; the stream is derived from Seed, the tensor name
	// and the model index, so results do not depend on scheduling.
	Seed uint64
	// Global, when set, replaces the per-tensor ranking by cuts computed
	// over the whole model (TIES' model-wide top-k): {top, top+keep}.
	Global *[2]Cut
}

// Counts returns how many of n entries are dropped from the top (nTop) and
// then kept (nKeep), rounding down as mergekit does (int(density·n)). When
// the two exceed n, fewer outliers are dropped. Unlike mergekit, nTop = 0
// (γ·n < 1) keeps the top nKeep rather than emptying the tensor.
func (s Spec) Counts(n int64) (nTop, nKeep int64) {
	switch s.Method {
	case Magnitude:
		return 0, min(n, int64(max(0, s.Density)*float64(n)))
	case MagnitudeOutliers:
		nKeep = min(n, int64(max(0, s.Density)*float64(n)))
		nTop = min(n, int64(max(0, s.Gamma)*float64(n)))
		if nTop+nKeep > n {
			nTop = n - nKeep
		}
		return nTop, nKeep
	}
	return 0, n
}

// Active reports whether the spec changes anything.
func (s Spec) Active() bool {
	switch s.Method {
	case Magnitude:
		return s.Density < 1
	case Random, DellaMagprune:
		return s.Density < 1
	case MagnitudeOutliers:
		return s.Density < 1 || s.Gamma > 0
	}
	return false
}

// StreamBytes bounds what a TensorSparsifier for a tensor of n entries
// with rows of rowLen holds besides its chunk-sized scratch: the cached
// keep mask of a random or DELLA selection rescaled by a norm (a bit an
// entry), a per-tensor magnitude cut's histogram tables (its coarse and
// fine counts, sample and bands), and per-row rank scratch. A job's memory
// bound counts it for a streamed tensor.
func (s Spec) StreamBytes(n, rowLen int64) int64 {
	if !s.Active() {
		return 0
	}
	b := 32 * rowLen // per-row ranks: keys, order, radix scratch, thresholds
	switch s.Rescale {
	case L1, L2, LInf:
		if s.Method == Random || s.Method == DellaMagprune {
			b += (n + 63) / 64 * 8
		}
	}
	if (s.Method == Magnitude || s.Method == MagnitudeOutliers) && s.Global == nil {
		b += 3<<16*8 + sampleKeys*4 + 2*bandBins<<16*4
	}
	return b
}

// Pass names a read of the whole tensor that a TensorSparsifier needs
// before it can apply its mask.
type Pass int

// Passes, in the order they run.
const (
	PassCoarse Pass = iota // magnitude histogram, top 16 bits
	PassFine               // magnitude histogram, low 16 bits at the cut (skipped when the coarse pass counted them; see Histogram.Expect)
	PassNorm               // norms before and after masking, for rescaling
)

// TensorSparsifier applies a Spec to one tensor streamed in row-aligned
// chunks in index order: Observe each chunk during each pre-pass that
// Needs, then Apply each chunk once.
type TensorSparsifier struct {
	spec   Spec
	n      int64
	rowLen int
	seed   [2]uint64

	nTop, nKeep int64
	hist        *Histogram
	cuts        [2]Cut   // top-nTop and top-(nTop+nKeep), per-tensor
	ties        [2]int64 // per cut: entries with its key V (see Histogram.Ties)
	counters    [2]Counter
	// back marks a sparsifier from ForkBack: chunks come from the
	// tensor's end down, and tiedAfter counts each cut's tied entries
	// decided so far (those after the next one to decide).
	back       bool
	tiedAfter  [2]int64
	tied       []int32 // back mode: scratch for a chunk's entries on a cut
	rng        pcg.PCG // math/rand/v2's PCG stream, drawn in bulk
	draws      []uint64
	keys       []uint32
	scratch    []uint32
	keep       []bool
	order, tmp []uint64
	rank       []int
	thr        []uint64    // DELLA: keep threshold of each rank in a row
	band       *bandRanker // DELLA, when thr never falls: decides by buckets
	// bits caches the keep decisions of a random mask drawn during the
	// norm pass, so Apply neither draws nor ranks again; pos is the next
	// entry's index.
	bits []uint64
	pos  int64
	// shared marks a fork's bits, which its parent releases.
	shared bool

	needNorm      bool
	before, after float64
	scale         float64
	pending       []Pass
}

// bitsPool holds the cached masks of finished tensors (see Release): a
// fresh one is a page fault per 4 KiB at its first writes, a 7B-width
// merge's 1 GiB of them a tenth of DELLA's CPU.
var bitsPool sync.Pool

// getBits is a cleared mask of n words, from the pool when it has one
// large enough.
func getBits(n int) []uint64 {
	if p, ok := bitsPool.Get().(*[]uint64); ok {
		if cap(*p) >= n {
			b := (*p)[:n]
			clear(b)
			return b
		}
		bitsPool.Put(p) // too small for this tensor; another may take it
	}
	return make([]uint64, n)
}

// Release hands the tensor's cached mask back for the next tensor; the
// sparsifier must not be used after.
func (t *TensorSparsifier) Release() {
	if t.bits != nil && !t.shared {
		b := t.bits
		t.bits = nil
		bitsPool.Put(&b)
	}
}

// Fork returns a sparsifier for Apply from entry first on, its pre-passes
// done, sharing the parent's cuts, scale and cached mask (the parent must
// outlive it and is the one to Release the mask): ok is false when Apply
// must run in order — a per-tensor magnitude cut that takes some but not
// all of the entries tied at it (by index: see ForkBack), or DELLA's
// selection without a cached mask. first must start a row for a per-row
// selection.
func (t *TensorSparsifier) Fork(first int64) (*TensorSparsifier, bool) {
	if len(t.pending) > 0 {
		return nil, false
	}
	f := &TensorSparsifier{spec: t.spec, n: t.n, rowLen: t.rowLen, seed: t.seed, nTop: t.nTop, nKeep: t.nKeep, cuts: t.cuts, ties: t.ties, scale: t.scale}
	f.reset()
	if !t.spec.Active() {
		return f, true
	}
	switch t.spec.Method {
	case Random, DellaMagprune:
		if t.bits != nil {
			f.bits, f.pos, f.shared = t.bits, first, true
			return f, true
		}
		if t.spec.Method == DellaMagprune {
			return nil, false
		}
		// A random mask drawn as Apply goes takes one draw per entry from
		// the stream's start: the fork's stream starts first draws on.
		f.rng = pcg.New(t.seed[0], t.seed[1])
		f.rng.Advance(uint64(first))
		return f, true
	case Magnitude, MagnitudeOutliers:
		if t.hist != nil {
			// Per tensor: only where no entry is decided by its place among
			// the ties (a model-wide cut keeps them all).
			f.hist = t.hist
			return f, t.orderFree(0) && t.orderFree(1)
		}
		return f, first%int64(max(1, t.rowLen)) == 0
	}
	return nil, false
}

// orderFree reports whether cut j decides every entry by its key alone:
// it takes all the entries tied at it (or there are none).
func (t *TensorSparsifier) orderFree(j int) bool { return t.cuts[j].Q >= t.ties[j] }

// ForkBack returns a sparsifier for Apply on whole-row chunks taken from
// the tensor's end down (each chunk's entries in index order), its
// pre-passes done, sharing the parent's cuts and scale: for a per-tensor
// magnitude cut (which Fork refuses when it takes some of its ties), a
// tied entry is in the cut when fewer than Q tied entries come before
// it, that is the cut's ties less those from it to the end, so each
// chunk's tied entries are decided last, from its end back. A per-row cut, or
// nothing to sparsify, does not depend on the order of the chunks. ok is
// false for a random or DELLA mask, which is drawn in index order.
func (t *TensorSparsifier) ForkBack() (*TensorSparsifier, bool) {
	if len(t.pending) > 0 {
		return nil, false
	}
	f := &TensorSparsifier{spec: t.spec, n: t.n, rowLen: t.rowLen, seed: t.seed, nTop: t.nTop, nKeep: t.nKeep, cuts: t.cuts, ties: t.ties, scale: t.scale}
	f.reset()
	switch {
	case !t.spec.Active():
		return f, true
	case t.spec.Method != Magnitude && t.spec.Method != MagnitudeOutliers:
		return nil, false
	case t.hist != nil:
		f.hist, f.back = t.hist, true
	}
	return f, true
}

// SplitPass returns a sparsifier that counts pre-pass p over other
// entries of the tensor (any of them, in chunks of whole rows, in any
// order) for JoinPass to add to t's: a magnitude histogram's passes,
// whose counts are sums, once its sample is taken (see Histogram.Split).
// ok is false for a norm pass (a float sum in index order), a pass t
// does not need, or a histogram still sampling.
func (t *TensorSparsifier) SplitPass(p Pass) (*TensorSparsifier, bool) {
	if (p != PassCoarse && p != PassFine) || t.hist == nil || !contains(t.pending, p) {
		return nil, false
	}
	h := t.hist.Split()
	if h == nil {
		return nil, false
	}
	return &TensorSparsifier{spec: t.spec, n: t.n, rowLen: t.rowLen, hist: h, pending: []Pass{p}}, true
}

// JoinPass adds the counts of o, from SplitPass, to t's current pass.
func (t *TensorSparsifier) JoinPass(o *TensorSparsifier) {
	t.hist.Join(o.hist)
}

// ForTensor prepares to sparsify a tensor of the given shape; model is the
// model's index in the merge (for the Random stream).
func (s Spec) ForTensor(name string, shape []int64, model int) *TensorSparsifier {
	n := int64(1)
	for _, d := range shape {
		n *= d
	}
	rowLen := int(n)
	if len(shape) >= 2 && (s.PerRow || s.Method == DellaMagprune) {
		rowLen = int(shape[len(shape)-1])
	}
	h := fnv.New64a()
	h.Write([]byte(name))
	t := &TensorSparsifier{spec: s, n: n, rowLen: rowLen, seed: [2]uint64{s.Seed, h.Sum64() ^ uint64(model)*0x9e3779b97f4a7c15}, scale: 1}
	t.nTop, t.nKeep = s.Counts(n)
	if !s.Active() {
		return t
	}
	perTensorRank := (s.Method == Magnitude || s.Method == MagnitudeOutliers) && (!s.PerRow || rowLen == int(n))
	switch {
	case s.Global != nil && (s.Method == Magnitude || s.Method == MagnitudeOutliers):
		t.cuts = *s.Global
		t.hist = new(Histogram) // cuts are known: applyCuts, no passes, no tables
	case perTensorRank:
		t.hist = NewHistogram(t.nTop, t.nTop+t.nKeep)
		t.hist.Expect(n)
		t.pending = append(t.pending, PassCoarse, PassFine)
	}
	switch s.Rescale {
	case L1, L2, LInf:
		t.needNorm = true
		t.pending = append(t.pending, PassNorm)
		if s.Method == Random || s.Method == DellaMagprune {
			t.bits = getBits(int((n + 63) / 64))
		}
	case InverseDensity:
		if s.Density > 0 {
			t.scale = 1 / s.Density
		}
	}
	t.reset()
	return t
}

// Needs lists the pre-passes still to run, in order.
func (t *TensorSparsifier) Needs() []Pass { return t.pending }

// ChunkLen rounds a wanted chunk length to whole rows.
func (t *TensorSparsifier) ChunkLen(want int) int {
	if t.rowLen <= 0 {
		return max(want, 1)
	}
	return max(1, want/t.rowLen) * t.rowLen
}

func (t *TensorSparsifier) reset() {
	t.counters = [2]Counter{{Cut: t.cuts[0]}, {Cut: t.cuts[1]}}
	t.rng = pcg.New(t.seed[0], t.seed[1])
	t.pos = 0
}

// recording reports whether the mask drawn now is the one to cache: the
// norm pass is still to end.
func (t *TensorSparsifier) recording() bool { return contains(t.pending, PassNorm) }

func (t *TensorSparsifier) radixTmp(n int) []uint64 {
	if cap(t.tmp) < n {
		t.tmp = make([]uint64, n)
	}
	return t.tmp[:n]
}

// rankRow sets rank[i] to the position of keys[i] in ascending order, ties
// by index: an LSD radix sort of key<<32|index on the key's digits
// (stable, so the index order of ties stays). Three digits of 11, 11 and
// 10 bits, their counts taken in one read of the keys, and a digit every
// key shares skipped: a row of 4,096–11,008 entries stays in L2, where
// four byte-wide passes each with its own counting read cost twice as much.
func rankRow(keys []uint32, order, tmp []uint64, rank []int) {
	var count [3][2048]int32
	for i, k := range keys {
		order[i] = uint64(k)<<32 | uint64(i)
		count[0][k&2047]++
		count[1][k>>11&2047]++
		count[2][k>>22]++
	}
	src, dst := order, tmp
	for d, shift := range [3]uint{32, 43, 54} {
		c := &count[d]
		if int(c[(src[0]>>shift)&2047]) == len(src) {
			continue
		}
		var sum int32
		for b, n := range c {
			c[b] = sum
			sum += n
		}
		for _, o := range src {
			b := (o >> shift) & 2047
			dst[c[b]] = o
			c[b]++
		}
		src, dst = dst, src
	}
	for pos, o := range src {
		rank[uint32(o)] = pos
	}
}

// Observe feeds one chunk to the current pre-pass.
func (t *TensorSparsifier) Observe(p Pass, chunk []float32) {
	switch p {
	case PassCoarse:
		t.hist.AddCoarseValues(chunk)
	case PassFine:
		t.hist.AddFineValues(chunk)
	case PassNorm:
		// The dropped entries add +0 (or take part in a max as 0) instead
		// of being skipped: the same sums, since every term is ≥ 0, and
		// no branch on the (unpredictable) mask.
		keep := t.mask(chunk)
		before, after := t.before, t.after
		switch t.spec.Rescale {
		case L1:
			before, after = vec.L1Sums(chunk, keep, before, after)
		case L2:
			for i, v := range chunk {
				a := math.Abs(float64(v))
				before += a * a
				after += math.Float64frombits(math.Float64bits(a*a) & -b2u(keep[i]))
			}
		case LInf:
			for i, v := range chunk {
				a := math.Abs(float64(v))
				before = math.Max(before, a)
				after = math.Max(after, math.Float64frombits(math.Float64bits(a)&-b2u(keep[i])))
			}
		}
		t.before, t.after = before, after
	}
}

// EndPass closes a pre-pass.
func (t *TensorSparsifier) EndPass(p Pass) {
	switch p {
	case PassCoarse:
		need := t.hist.EndCoarse()
		if t.hist.Again() {
			t.reset() // the first pass runs again
			return
		}
		if !need {
			t.takeCuts()
			// No fine pass needed.
			t.drop(PassFine)
		}
	case PassFine:
		t.takeCuts()
	case PassNorm:
		b, a := t.before, t.after
		if t.spec.Rescale == L2 {
			b, a = math.Sqrt(b), math.Sqrt(a)
		}
		// As mergekit: tiny norms leave the masked tensor unscaled.
		if b >= 1e-7 && a >= 1e-7 {
			t.scale = b / a
		}
	}
	t.drop(p)
	t.reset()
}

// takeCuts reads the cuts and their ties off the finished histogram and
// frees its tables: from here on t.hist only marks per-tensor cuts.
func (t *TensorSparsifier) takeCuts() {
	cuts, ties := t.hist.cutsAndTies()
	t.cuts, t.ties = [2]Cut(cuts), [2]int64(ties)
	t.hist.Free()
}

func (t *TensorSparsifier) drop(p Pass) {
	for i, q := range t.pending {
		if q == p {
			t.pending = append(t.pending[:i:i], t.pending[i+1:]...)
			return
		}
	}
}

func (t *TensorSparsifier) keysOf(chunk []float32) []uint32 {
	if cap(t.keys) < len(chunk) {
		t.keys = make([]uint32, len(chunk))
	}
	k := t.keys[:len(chunk)]
	for i, v := range chunk {
		k[i] = MagBits(v)
	}
	return k
}

// mask decides which entries of the next chunk are kept.
func (t *TensorSparsifier) mask(chunk []float32) []bool {
	if cap(t.keep) < len(chunk) {
		t.keep = make([]bool, len(chunk))
	}
	keep := t.keep[:len(chunk)]
	if !t.spec.Active() {
		for i := range keep {
			keep[i] = true
		}
		return keep
	}
	switch t.spec.Method {
	case Random, DellaMagprune:
		if t.bits != nil && !t.recording() {
			unpackBits(t.bits, t.pos, keep)
			t.pos += int64(len(keep))
			return keep
		}
		if t.spec.Method == Random {
			// rand.Float64() < d compared in integers: Float64 is
			// x/2^53 for the low 53 bits x of a draw, exactly, so it is
			// below d exactly when x < ceil(d·2^53).
			t.rng.Below(keep, uniformBelow(t.spec.Density))
		} else {
			t.dellaMask(chunk, keep)
		}
		if t.recording() {
			packBits(keep, t.bits, t.pos)
			t.pos += int64(len(keep))
		}
	case Magnitude, MagnitudeOutliers:
		keys := t.keysOf(chunk)
		if t.hist != nil { // per-tensor cuts
			for i, k := range keys {
				top := t.counters[0].In(k)
				upto := t.counters[1].In(k)
				keep[i] = upto && !top
			}
			return keep
		}
		// Per row: rank inside each row.
		rl := t.rowLen
		if cap(t.scratch) < rl {
			t.scratch = make([]uint32, rl)
		}
		for r := 0; r+rl <= len(chunk); r += rl {
			rk := keys[r : r+rl]
			nTop, nKeep := t.spec.Counts(int64(rl))
			c0 := Counter{Cut: CutOfKeys(rk, int(nTop), t.scratch)}
			c1 := Counter{Cut: CutOfKeys(rk, int(nTop+nKeep), t.scratch)}
			for i, k := range rk {
				top := c0.In(k)
				upto := c1.In(k)
				keep[r+i] = upto && !top
			}
		}
	}
	return keep
}

// Apply zeroes the dropped entries of the next chunk in place and rescales
// the kept ones; it returns how many entries were kept.
func (t *TensorSparsifier) Apply(chunk []float32) int {
	if !t.spec.Active() {
		return len(chunk)
	}
	if t.hist != nil {
		return t.applyCuts(chunk)
	}
	keep := t.mask(chunk)
	kept := 0
	s := t.scale
	// Branch-free: the mask is data. A dropped entry becomes +0.
	if s != 1 {
		return vec.ScaleKeep(chunk, keep, s)
	}
	for i, k := range keep {
		m := -uint32(b2u(k))
		kept += int(b2u(k))
		chunk[i] = math.Float32frombits(math.Float32bits(chunk[i]) & m)
	}
	return kept
}

// uniformBelow is the threshold T with rand.Float64() < d exactly when
// the draw's low 53 bits are below T (Float64 on a PCG is those 53 bits
// over 2^53).
func uniformBelow(d float64) uint64 {
	if !(d > 0) {
		return 0
	}
	if d >= 1 {
		return 1 << 53
	}
	return uint64(math.Ceil(d * (1 << 53)))
}

// b2u is 1 for true and 0 for false, without a branch.
func b2u(b bool) uint64 {
	var u uint64
	if b {
		u = 1
	}
	return u
}

// InPlace applies s to a whole tensor held in memory: the
// reference path, also used for small tensors.
func InPlace(s Spec, name string, shape []int64, model int, v []float32) {
	t := s.ForTensor(name, shape, model)
	for _, p := range append([]Pass(nil), t.Needs()...) {
		if !contains(t.Needs(), p) {
			continue
		}
		t.Observe(p, v)
		t.EndPass(p)
	}
	t.Apply(v)
}

func contains(ps []Pass, p Pass) bool {
	for _, q := range ps {
		if q == p {
			return true
		}
	}
	return false
}

// applyCuts is Apply for per-tensor cuts in one loop (the merge hot path).
func (t *TensorSparsifier) applyCuts(chunk []float32) int {
	c0, c1 := &t.counters[0], &t.counters[1]
	v0, v1 := c0.V, c1.V
	tied := t.tied[:0] // back mode: the chunk's entries on a cut, decided after
	kept := 0
	for i := 0; i < len(chunk); {
		// Eight at a time in AVX2 up to a group holding a key on a cut;
		// that group (or the tail) below, one entry at a time.
		done, in := vec.KeepBand(chunk[i:], v1, v0)
		i += done
		kept += in
		for e := min(len(chunk), i+8); i < e; i++ {
			v := chunk[i]
			b := math.Float32bits(v)
			k := b &^ (1 << 31)
			if k == v0 || k == v1 {
				if t.back {
					tied = append(tied, int32(i))
					continue
				}
				// On a cut: ties are decided by index order.
				top := c0.In(k)
				upto := c1.In(k)
				if !upto || top {
					chunk[i] = 0
				} else {
					kept++
				}
				continue
			}
			// Strictly inside or outside the band: a branch-free mask (sign
			// bits of v1−k and k−v0), since which side an entry falls on is
			// unpredictable.
			in := uint32((uint64(int64(v1)-int64(k)) >> 63) & (uint64(int64(k)-int64(v0)) >> 63))
			kept += int(in)
			chunk[i] = math.Float32frombits(b & -in)
		}
	}
	if t.back {
		kept += t.backTies(chunk, tied)
		t.tied = tied
	}
	if t.scale != 1 {
		for i, v := range chunk {
			chunk[i] = float32(float64(v) * t.scale)
		}
	}
	return kept
}

// backTies decides a chunk's entries on a cut for a sparsifier from
// ForkBack, from the chunk's last one back: a tied entry is in a cut that
// takes some of its ties when fewer than Q tied entries precede it, that
// is when the cut's ties, less those after it, are at most Q. It returns
// how many it kept.
func (t *TensorSparsifier) backTies(chunk []float32, tied []int32) int {
	kept := 0
	for x := len(tied) - 1; x >= 0; x-- {
		i := tied[x]
		k := MagBits(chunk[i])
		var in [2]bool
		for j := range in {
			c := t.cuts[j]
			switch {
			case k != c.V:
				in[j] = k > c.V
			case t.orderFree(j):
				in[j] = true
			default:
				in[j] = t.ties[j]-t.tiedAfter[j] <= c.Q
				t.tiedAfter[j]++
			}
		}
		if in[1] && !in[0] {
			kept++
		} else {
			chunk[i] = 0
		}
	}
	return kept
}

// dellaMask draws MAGPRUNE's keep decisions for whole rows of a chunk: an
// entry of magnitude rank r (0 for the smallest, ties by index) in a row
// of L is kept with probability (d − ε) + 2ε·r/(L−1); a row of one entry
// with probability d (mergekit divides 0 by 0 there and fails). Draws are
// in index order, so a pass repeats them exactly.
func (t *TensorSparsifier) dellaMask(chunk []float32, keep []bool) {
	d, eps := t.spec.Density, t.spec.Epsilon
	if d <= 0 {
		clear(keep)
		return
	}
	rl := t.rowLen
	if cap(t.keys) < len(chunk) {
		t.keys = make([]uint32, len(chunk))
	}
	keys := t.keys[:len(chunk)]
	if cap(t.order) < rl {
		t.order = make([]uint64, rl)
		t.rank = make([]int, rl)
	}
	order, rank := t.order[:rl], t.rank[:rl]
	// uniform(rng) < p(rank) compared in integers (see uniformBelow), the
	// thresholds computed once per tensor from the same float64 p.
	if len(t.thr) != rl {
		t.thr = make([]uint64, rl)
		for r := range t.thr {
			norm := 0.5
			if rl > 1 {
				norm = float64(r) / float64(rl-1)
			}
			t.thr[r] = uniformBelow((d - eps) + 2*eps*norm)
		}
		if rl >= bandMinRow && slices.IsSorted(t.thr) {
			t.band = new(bandRanker)
			t.band.setLine(t.thr, (d-eps)*(1<<53), 2*eps/float64(rl-1)*(1<<53))
		}
	}
	thr := t.thr
	if cap(t.draws) < rl {
		t.draws = make([]uint64, rl)
	}
	draws := t.draws[:rl]
	for r := 0; r+rl <= len(chunk); r += rl {
		rk, kr := keys[r:r+rl], keep[r:r+rl]
		top := vec.MagKeys(rk, chunk[r:r+rl])
		t.rng.Fill(draws)
		if t.band != nil && t.band.paysOff() {
			t.band.bandRow(rk, top, kr, thr, draws)
			continue
		}
		rankRow(rk, order, t.radixTmp(rl), rank)
		for i, q := range rank[:len(rk)] {
			kr[i] = draws[i]&(1<<53-1) < thr[q]
		}
	}
}

// packBits ORs keep into bits from bit pos on, a word at a time where the
// positions are word-aligned.
func packBits(keep []bool, bits []uint64, pos int64) {
	i := 0
	for ; i < len(keep) && (pos+int64(i))&63 != 0; i++ {
		j := pos + int64(i)
		bits[j>>6] |= b2u(keep[i]) << (j & 63)
	}
	if i < len(keep) {
		i += 64 * vec.PackBools(bits[(pos+int64(i))>>6:], keep[i:])
	}
	kb := boolBytes(keep)
	for ; i+64 <= len(keep); i += 64 {
		var w uint64
		for b := 0; b < 64; b += 8 {
			// Eight 0/1 bytes gathered into eight bits by one multiply.
			x := binary.LittleEndian.Uint64(kb[i+b:])
			w |= (x * 0x0102040810204080) >> 56 << b
		}
		bits[(pos+int64(i))>>6] |= w
	}
	for ; i < len(keep); i++ {
		j := pos + int64(i)
		bits[j>>6] |= b2u(keep[i]) << (j & 63)
	}
}

// boolBytes views bools as the bytes holding them (0 or 1 each).
func boolBytes(b []bool) []byte {
	return unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(b))), len(b))
}

// unpackBits sets keep from bits from bit pos on (packBits' inverse).
func unpackBits(bits []uint64, pos int64, keep []bool) {
	i := 0
	for ; i < len(keep) && (pos+int64(i))&63 != 0; i++ {
		j := pos + int64(i)
		keep[i] = bits[j>>6]>>(j&63)&1 == 1
	}
	if i < len(keep) {
		i += 64 * vec.UnpackBools(keep[i:], bits[(pos+int64(i))>>6:])
	}
	kb := boolBytes(keep)
	for ; i+64 <= len(keep); i += 64 {
		w := bits[(pos+int64(i))>>6]
		for b := 0; b < 64; b += 8 {
			// Eight bits spread into eight 0/1 bytes: each byte masked
			// to its own bit, then a non-zero byte made 1.
			x := (w >> b & 0xff * 0x0101010101010101) & 0x8040201008040201
			binary.LittleEndian.PutUint64(kb[i+b:], (x+0x7f7f7f7f7f7f7f7f)>>7&0x0101010101010101)
		}
	}
	for ; i < len(keep); i++ {
		j := pos + int64(i)
		keep[i] = bits[j>>6]>>(j&63)&1 == 1
	}
}
