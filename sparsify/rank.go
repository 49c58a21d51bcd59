package sparsify

import (
	"math"
	"slices"
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
// exact boundary key. Memory is two 64K-entry tables per boundary.
type Histogram struct {
	ks     []int64 // wanted ranks (k highest)
	coarse [1 << 16]int64
	bins   []int   // per k: coarse bin holding the k-th key
	above  []int64 // per k: entries in higher coarse bins
	fine   [][1 << 16]int64
	pass   int
	total  int64
}

// NewHistogram prepares to find the Cut of the top k entries for each k.
func NewHistogram(ks ...int64) *Histogram {
	return &Histogram{ks: ks}
}

// SetRanks sets the wanted ranks of a histogram made without them, once
// its first pass has counted the keys (a rank that depends on what the
// pass saw); call it before EndCoarse.
func (h *Histogram) SetRanks(ks ...int64) { h.ks = ks }

// AddCoarse feeds keys during the first pass.
func (h *Histogram) AddCoarse(keys []uint32) {
	for _, k := range keys {
		h.coarse[k>>16]++
	}
	h.total += int64(len(keys))
}

// EndCoarse finishes the first pass; it reports whether a second pass is
// needed (false when every wanted rank is 0 or covers everything).
func (h *Histogram) EndCoarse() bool {
	h.bins = make([]int, len(h.ks))
	h.above = make([]int64, len(h.ks))
	h.fine = make([][1 << 16]int64, len(h.ks))
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
	return need
}

// AddCoarseValues is AddCoarse on the magnitude keys of values.
func (h *Histogram) AddCoarseValues(vals []float32) {
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
	out := make([]Cut, len(h.ks))
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
					break
				}
				acc += c
			}
		}
	}
	return out
}

// Merge adds another histogram's counts (same wanted ranks, same pass), so
// workers can count tensors separately and combine.
func (h *Histogram) Merge(o *Histogram) {
	for i, c := range o.coarse {
		h.coarse[i] += c
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
	c.fine = make([][1 << 16]int64, len(h.ks))
	return c
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
