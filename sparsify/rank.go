package sparsify

import (
	"math"
	"slices"
	"sync"

	"github.com/weightops/weightops/internal/vec"
)

// MagBits is the rank key of a value: the bit pattern of |x|.
func MagBits(x float32) uint32 { return math.Float32bits(x) &^ (1 << 31) }

// Cut describes the set of the k highest-ranked entries of a tensor:
// every entry whose magnitude key is above V, plus the first Q entries (in
// index order) whose key equals V.
type Cut struct {
	V uint32
	Q int64
}

// EmptyCut selects nothing: keys never exceed 0x7fffffff (the sign bit is
// cleared), so no key is above or equal to its V.
var EmptyCut = Cut{V: math.MaxUint32}

// Counter walks a tensor in index order and answers membership in a Cut;
// it must see every entry once, in order, so the tie quota is honoured.
type Counter struct {
	Cut
	seen int64 // entries equal to V seen so far
}

// In reports whether the entry with key k (the next in index order) is in
// the cut.
func (c *Counter) In(k uint32) bool {
	if k > c.V {
		return true
	}
	if k == c.V {
		c.seen++
		return c.seen <= c.Q
	}
	return false
}

// CutOfKeys computes the Cut of the k highest-ranked keys of one slice held
// in memory (a row), using scratch (len ≥ len(keys)) for an O(n) selection.
func CutOfKeys(keys []uint32, k int, scratch []uint32) Cut {
	n := len(keys)
	if k <= 0 || n == 0 {
		return EmptyCut
	}
	if k >= n {
		return Cut{V: 0, Q: int64(n)} // everything: all keys ≥ 0
	}
	s := scratch[:n]
	copy(s, keys)
	// The k-th largest is the (n-k)-th smallest (0-based).
	v := selectKth(s, n-k)
	var above int64
	for _, x := range keys {
		if x > v {
			above++
		}
	}
	return Cut{V: v, Q: int64(k) - above}
}

// selectKth reorders s so that s[i] is the i-th smallest and returns it
// (Hoare's quickselect with median-of-three pivots, falling back to a full
// sort if the recursion degrades, so the worst case stays O(n log n)).
func selectKth(s []uint32, i int) uint32 {
	lo, hi := 0, len(s)-1
	budget := 2 * bitsLen(len(s))
	for lo < hi {
		if budget == 0 {
			slices.Sort(s[lo : hi+1])
			return s[i]
		}
		budget--
		mid := lo + (hi-lo)/2
		if s[mid] < s[lo] {
			s[mid], s[lo] = s[lo], s[mid]
		}
		if s[hi] < s[lo] {
			s[hi], s[lo] = s[lo], s[hi]
		}
		if s[hi] < s[mid] {
			s[hi], s[mid] = s[mid], s[hi]
		}
		p := s[mid]
		a, b := lo, hi
		for a <= b {
			for s[a] < p {
				a++
			}
			for s[b] > p {
				b--
			}
			if a <= b {
				s[a], s[b] = s[b], s[a]
				a++
				b--
			}
		}
		switch {
		case i <= b:
			hi = b
		case i >= a:
			lo = a
		default:
			return s[i]
		}
	}
	return s[i]
}

func bitsLen(n int) int {
	b := 1
	for n > 1 {
		n >>= 1
		b++
	}
	return b
}

// Histogram finds Cuts over a tensor streamed in chunks without holding it:
// a first pass counts keys by their top 16 bits, a second pass counts the
// low 16 bits inside the bins that hold the wanted ranks, which pins the
// exact boundary key. Memory is two 64K-entry tables per boundary, and,
// with Expect, a sample of 2^19 keys and up to 16 fine tables per
// boundary while the first pass runs.
//
// With Expect the first pass after the sample counts only what the cuts
// need: per rank, the keys above its band and, at full resolution, those
// in it; the rest is one vector compare per eight keys. When a rank falls
// outside its band the histogram starts again without sampling (Again).
type Histogram struct {
	ks     []int64 // wanted ranks (k highest)
	coarse *table  // nil in a FineCopy
	bins   []int   // per k: coarse bin holding the k-th key
	above  []int64 // per k: entries in higher coarse bins
	fine   []*table
	pass   int
	total  int64

	// With Expect, the first pass also counts what a second would: the
	// keys of the first elements are kept (sample); bands of coarse bins
	// are then placed around where the sample puts each rank, and from
	// then on every key in a band is counted at full resolution (bandFine,
	// 2^16 counters per bin), the sample's too. When the first pass ends
	// with each rank's bin in its band, the fine counts are those and the
	// second pass is skipped; otherwise the histogram resets and the first
	// pass runs again, unsampled (Again). The cuts are the same either way.
	expect    int64
	sample    []uint32
	bandLo    [2]uint32 // per k: first coarse bin of the band
	bandW     [2]uint32 // per k: bins in the band − 1
	bandFine  [2][]uint32
	keyLo     [2]uint32          // per k: the band's lowest and highest key
	keyHi     [2]uint32          // (math.MaxUint32 for both: no band)
	inBin     [2][bandBins]int64 // per k: keys in each bin of the band (kept, not summed from bandFine's 2^16 counters per bin)
	aboveBand [2]int64           // per k: keys above the band
	banded    bool
	again     bool
	// the pooled buffers behind sample, bandFine and the positions
	// vec.SplitBands writes
	samplePool *[]uint32
	bandPool   [2]*[]uint32
	idx        *[]uint32
}

// table is a histogram's count per 16-bit key half.
type table = [1 << 16]int64

// newTable returns a cleared table from the pool.
func newTable() *table {
	t := tables.Get().(*table)
	clear(t[:])
	return t
}

// newTables returns n cleared tables.
func newTables(n int) []*table {
	ts := make([]*table, n)
	for i := range ts {
		ts[i] = newTable()
	}
	return ts
}

// Sampling limits: the keys kept before the bands are set; the band's
// half-width in rank besides 5σ of the sample's error, for a tensor whose
// first rows differ from the rest (a fraction of the rank's distance to
// the nearer end); and the most coarse bins a band spans (256 KiB each).
const (
	sampleKeys = 1 << 19
	bandSlack  = 0.01
	bandBins   = 16
)

// bandPiece bounds the slice handed to vec.SplitBands at once, and so its
// index buffer.
const bandPiece = 1 << 16

// noBand is a band no coarse bin (< 2^16) falls in.
const noBand = 1 << 31

// Expect tells a histogram the number of entries its first pass will see,
// so it can count what the second pass would (see Histogram) and often
// skip it.
func (h *Histogram) Expect(n int64) {
	if len(h.ks) > 0 && len(h.ks) <= 2 && n > 0 && n < math.MaxUint32 {
		h.expect = n
		if n >= sampleKeys {
			h.samplePool = samples.Get().(*[]uint32)
			h.sample = (*h.samplePool)[:0]
		} else {
			h.sample = make([]uint32, 0, n)
		}
	}
}

// setBands places each rank's band from the sample's coarse counts (the
// coarse table itself, which has seen only the sample so far) and counts
// the sample into the bands.
func (h *Histogram) setBands() {
	m := int64(len(h.sample))
	h.bandLo, h.bandW = [2]uint32{noBand, noBand}, [2]uint32{}
	h.keyLo, h.keyHi = [2]uint32{math.MaxUint32, math.MaxUint32}, [2]uint32{math.MaxUint32, math.MaxUint32}
	for j, k := range h.ks {
		if k <= 0 || k >= h.expect {
			continue
		}
		f := float64(k) / float64(h.expect)
		r := f * float64(m)
		d := 5*math.Sqrt(float64(m)*f*(1-f)) + bandSlack*min(r, float64(m)-r) + 1
		hiRank, loRank := max(1, int64(r-d)), min(m, int64(r+d)+1)
		mid := min(m, max(1, int64(r)))
		// Ranks count from the largest key: walk bins downwards.
		hi, lo, at := len(h.coarse)-1, 0, -1
		var acc int64
		for b := len(h.coarse) - 1; b >= 0; b-- {
			c := h.coarse[b]
			if acc < hiRank && acc+c >= hiRank {
				hi = b
			}
			if acc < mid && acc+c >= mid {
				at = b
			}
			if acc+c >= loRank {
				lo = b
				break
			}
			acc += c
		}
		if hi-lo+1 > bandBins {
			// A sparse stretch of keys: the bins nearest the estimate.
			lo = max(0, min(at-bandBins/2, len(h.coarse)-bandBins))
			hi = lo + bandBins - 1
		}
		h.bandLo[j], h.bandW[j] = uint32(lo), uint32(hi-lo)
		h.keyLo[j], h.keyHi[j] = uint32(lo)<<16, uint32(hi)<<16|0xffff
		h.bandPool[j] = bandTables.Get().(*[]uint32)
		t := (*h.bandPool[j])[:(hi-lo+1)<<16]
		clear(t)
		h.bandFine[j] = t
	}
	h.banded = true
	h.countSplit(vec.KeysAsValues(h.sample))
	h.releaseSample()
}

// Pooled sample and band tables: a merge makes hundreds of histograms,
// each would otherwise leave megabytes for the collector.
var (
	samples    = sync.Pool{New: func() any { b := make([]uint32, sampleKeys); return &b }}
	bandTables = sync.Pool{New: func() any { b := make([]uint32, bandBins<<16); return &b }}
	positions  = sync.Pool{New: func() any { b := make([]uint32, bandPiece); return &b }}
	tables     = sync.Pool{New: func() any { return new(table) }}
)

// releaseSample returns the sample's buffer to its pool.
func (h *Histogram) releaseSample() {
	if h.samplePool != nil {
		samples.Put(h.samplePool)
		h.samplePool = nil
	}
	h.sample = nil
}

// release returns the sampling buffers to their pools.
func (h *Histogram) release() {
	h.releaseSample()
	for j, p := range h.bandPool {
		if p != nil {
			bandTables.Put(p)
			h.bandPool[j], h.bandFine[j] = nil, nil
		}
	}
	if h.idx != nil {
		positions.Put(h.idx)
		h.idx = nil
	}
}

// Free returns every table of h to its pool (a merge makes a histogram per
// tensor and model: 0.5 MiB a table, and a fresh one costs its zeroing and
// the collector's work); h must not be used after.
func (h *Histogram) Free() {
	h.release()
	if h.coarse != nil {
		tables.Put(h.coarse)
		h.coarse = nil
	}
	for _, t := range h.fine {
		tables.Put(t)
	}
	h.fine = nil
}

// countSplit counts the keys of vals in a band or above it: a vector
// compare per sixteen keys, and one at a time only those in a band. It
// leaves total alone (the sample's keys are in it already).
func (h *Histogram) countSplit(vals []float32) {
	if len(vals) == 0 {
		return
	}
	if h.idx == nil {
		h.idx = positions.Get().(*[]uint32)
	}
	idx := *h.idx
	for len(vals) > 0 {
		p := vals[:min(len(vals), bandPiece)]
		vals = vals[len(p):]
		above, m := vec.SplitBands(p, h.keyLo, h.keyHi, idx)
		h.aboveBand[0] += above[0]
		h.aboveBand[1] += above[1]
		for _, i := range idx[:m] {
			h.countIn(MagBits(p[i]))
		}
	}
}

// countIn counts key k in the bands it falls in.
func (h *Histogram) countIn(k uint32) {
	c := k >> 16
	for j := range h.ks {
		if d := c - h.bandLo[j]; d <= h.bandW[j] {
			h.bandFine[j][d<<16|k&0xffff]++
			h.inBin[j][d]++
		}
	}
}

// fromKept fills the fine counts from the sample when it is the whole
// tensor, and reports whether it did.
func (h *Histogram) fromKept() bool {
	if h.expect == 0 || h.total != h.expect {
		return false
	}
	for j, b := range h.bins {
		if b < 0 {
			continue
		}
		f := h.fine[j]
		for _, k := range h.sample {
			if int(k>>16) == b {
				f[k&0xffff]++
			}
		}
	}
	return true
}

// fromBands finds each rank's bin inside its band from the counts above
// and in it, takes the bin's fine counts, and reports whether every rank
// fell in its band (the sample placed them right).
func (h *Histogram) fromBands() bool {
	if h.total != h.expect {
		return false
	}
	for j, k := range h.ks {
		h.bins[j] = -1
		if k <= 0 || k >= h.total {
			continue
		}
		if h.bandLo[j] == noBand {
			return false
		}
		acc := h.aboveBand[j]
		if acc >= k {
			return false
		}
		d := int(h.bandW[j])
		for ; d >= 0 && acc+h.inBin[j][d] < k; d-- {
			acc += h.inBin[j][d]
		}
		if d < 0 {
			return false
		}
		h.bins[j], h.above[j] = int(h.bandLo[j])+d, acc
		for i, c := range h.bandFine[j][d<<16 : (d+1)<<16] {
			h.fine[j][i] = int64(c)
		}
	}
	return true
}

// Again reports whether the last EndCoarse found a rank outside the band
// the sample placed it in: the histogram is then reset, without sampling,
// and the first pass must run again before the second.
func (h *Histogram) Again() bool { return h.again }

// NewHistogram prepares to find the Cut of the top k entries for each k.
func NewHistogram(ks ...int64) *Histogram {
	return &Histogram{ks: ks, coarse: newTable()}
}

// SetRanks sets the wanted ranks of a histogram made without them, once
// its first pass has counted the keys (a rank that depends on what the
// pass saw); call it before EndCoarse.
func (h *Histogram) SetRanks(ks ...int64) { h.ks = ks }

func (h *Histogram) countCoarse(keys []uint32) {
	for _, k := range keys {
		h.coarse[k>>16]++
	}
}

// EndCoarse finishes the first pass; it reports whether a second pass is
// needed (false when every wanted rank is 0 or covers everything, or the
// first pass counted what the second would). When it returns false, check
// Again.
func (h *Histogram) EndCoarse() bool {
	h.bins = make([]int, len(h.ks))
	h.above = make([]int64, len(h.ks))
	for _, t := range h.fine { // a first pass counted again (Again)
		tables.Put(t)
	}
	h.fine = newTables(len(h.ks))
	h.again = false
	if h.banded {
		ok := h.fromBands()
		h.release()
		h.pass = 1
		if !ok {
			// Count again, every key, without a sample.
			clear(h.coarse[:])
			h.total, h.pass, h.expect, h.banded = 0, 0, 0, false
			h.inBin, h.aboveBand = [2][bandBins]int64{}, [2]int64{}
			h.again = true
		}
		return false
	}
	need := false
	for j, k := range h.ks {
		h.bins[j] = -1
		if k <= 0 || k >= h.total {
			continue
		}
		var acc int64
		for b := len(h.coarse) - 1; b >= 0; b-- {
			if acc+h.coarse[b] >= k {
				h.bins[j], h.above[j] = b, acc
				need = true
				break
			}
			acc += h.coarse[b]
		}
	}
	h.pass = 1
	if need && h.fromKept() {
		need = false
	}
	h.release()
	return need
}

// AddCoarseValues feeds the magnitude keys of values during the first pass.
func (h *Histogram) AddCoarseValues(vals []float32) {
	if h.expect != 0 && !h.banded && len(h.sample) < cap(h.sample) {
		// The coarse table holds the sample alone when setBands reads
		// it, or the bands would sit where the sample's ranks are not.
		take := min(len(vals), cap(h.sample)-len(h.sample))
		s := h.sample[len(h.sample) : len(h.sample)+take]
		vec.MagKeys(s, vals)
		h.sample = h.sample[:len(h.sample)+take]
		h.countCoarse(s)
		h.total += int64(take)
		vals = vals[take:]
		if len(h.sample) == cap(h.sample) && int64(len(h.sample)) < h.expect {
			h.setBands()
		}
	}
	if h.banded {
		h.countSplit(vals)
		h.total += int64(len(vals))
		return
	}
	for _, v := range vals {
		h.coarse[MagBits(v)>>16]++
	}
	h.total += int64(len(vals))
}

// AddFineValues is AddFine on the magnitude keys of values.
func (h *Histogram) AddFineValues(vals []float32) {
	b0, b1 := -1, -1
	if len(h.bins) > 0 {
		b0 = h.bins[0]
	}
	if len(h.bins) > 1 {
		b1 = h.bins[1]
	}
	if len(h.bins) > 2 {
		h.AddFine(keysOf(vals))
		return
	}
	for _, v := range vals {
		k := MagBits(v)
		hi := int(k >> 16)
		if hi == b0 {
			h.fine[0][k&0xffff]++
		}
		if hi == b1 {
			h.fine[1][k&0xffff]++
		}
	}
}

func keysOf(vals []float32) []uint32 {
	k := make([]uint32, len(vals))
	for i, v := range vals {
		k[i] = MagBits(v)
	}
	return k
}

// AddFine feeds keys during the second pass (same keys, any chunking).
func (h *Histogram) AddFine(keys []uint32) {
	for _, k := range keys {
		hi := int(k >> 16)
		for j, b := range h.bins {
			if b == hi {
				h.fine[j][k&0xffff]++
			}
		}
	}
}

// Cuts returns the Cut for each wanted rank, in the order given.
func (h *Histogram) Cuts() []Cut {
	out, _ := h.cutsAndTies()
	return out
}

// Ties returns, for each wanted rank, how many entries of the tensor have
// its cut's key V (0 for a cut that takes everything or nothing, where
// no entry is decided by its place among ties). A cut whose Q equals its
// ties takes every tied entry, and so does not depend on index order.
func (h *Histogram) Ties() []int64 {
	_, ties := h.cutsAndTies()
	return ties
}

func (h *Histogram) cutsAndTies() ([]Cut, []int64) {
	out := make([]Cut, len(h.ks))
	ties := make([]int64, len(h.ks))
	for j, k := range h.ks {
		switch {
		case k <= 0:
			out[j] = EmptyCut
		case k >= h.total:
			out[j] = Cut{V: 0, Q: h.total}
		default:
			acc := h.above[j]
			for lo := len(h.fine[j]) - 1; lo >= 0; lo-- {
				c := h.fine[j][lo]
				if acc+c >= k {
					out[j] = Cut{V: uint32(h.bins[j])<<16 | uint32(lo), Q: k - acc}
					ties[j] = c
					break
				}
				acc += c
			}
		}
	}
	return out, ties
}

// Merge adds another histogram's counts (same wanted ranks, same pass), so
// workers can count tensors separately and combine; histograms told Expect
// (whose bands are their own) are not merged.
func (h *Histogram) Merge(o *Histogram) {
	if o.coarse != nil {
		for i, c := range o.coarse {
			h.coarse[i] += c
		}
	}
	if h.pass == 0 {
		h.total += o.total
	}
	for j := range h.fine {
		if j < len(o.fine) {
			for i, c := range o.fine[j] {
				h.fine[j][i] += c
			}
		}
	}
}

// FineCopy returns an empty histogram for the fine pass that shares this
// one's boundary bins, for a worker to fill and Merge back.
func (h *Histogram) FineCopy() *Histogram {
	c := &Histogram{ks: h.ks, bins: h.bins, above: h.above, total: h.total, pass: 1}
	c.fine = newTables(len(h.ks))
	return c
}

// Split returns an empty histogram that counts as h does now, for a
// worker to count another range of the same pass and Join back: the
// counts are sums, so any split of the entries gives h's counts. Nil
// while h is still taking its sample (the first entries, in order, place
// the bands) or once its passes are over.
func (h *Histogram) Split() *Histogram {
	switch {
	case h.pass == 1:
		return h.FineCopy()
	case h.banded:
		s := &Histogram{ks: h.ks, expect: h.expect, banded: true,
			bandLo: h.bandLo, bandW: h.bandW, keyLo: h.keyLo, keyHi: h.keyHi}
		for j, t := range h.bandFine {
			if t != nil {
				s.bandPool[j] = bandTables.Get().(*[]uint32)
				s.bandFine[j] = (*s.bandPool[j])[:len(t)]
				clear(s.bandFine[j])
			}
		}
		return s
	case h.expect == 0:
		return &Histogram{ks: h.ks, coarse: newTable()}
	}
	return nil
}

// Join adds the counts of o, a Split of h that counted other entries of
// the same pass, and frees o.
func (h *Histogram) Join(o *Histogram) {
	switch {
	case h.pass == 1:
		for j := range h.fine {
			for i, c := range o.fine[j] {
				h.fine[j][i] += c
			}
		}
	case h.banded:
		for j, t := range h.bandFine {
			for i, c := range o.bandFine[j] {
				t[i] += c
			}
			for d, c := range o.inBin[j] {
				h.inBin[j][d] += c
			}
			h.aboveBand[j] += o.aboveBand[j]
		}
		h.total += o.total
	default:
		for i, c := range o.coarse {
			h.coarse[i] += c
		}
		h.total += o.total
	}
	o.Free()
}

// Total is the number of entries seen in the coarse pass.
func (h *Histogram) Total() int64 { return h.total }

// GlobalCut turns a cut found over a whole model into one that keeps every
// entry tied at the boundary: the tie quota cannot be split across
// tensors processed in parallel without a further pass, so a model-wide
// top-k keeps at least k entries (more only on exact ties at the cut).
func GlobalCut(c Cut) Cut {
	if c == EmptyCut {
		return c
	}
	return Cut{V: c.V, Q: math.MaxInt64}
}
