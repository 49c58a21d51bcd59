package sparsify

import (
	"math"
	"slices"

	"github.com/weightops/weightops/internal/vec"
)

// MAGPRUNE keeps an entry when its draw u is below thr[rank], thr rising
// with the rank. A row's full sort is the costly part, yet most decisions
// need no exact rank: bucketing the keys by their top bits places each
// entry's rank within its bucket's range [lo, hi), and u < thr[lo] keeps
// it, u ≥ thr[hi−1] drops it whatever its place in the bucket. Only the
// entries whose draw falls between (a few per row at 128 buckets per
// binade) need their exact rank, and only their buckets are gathered and
// sorted. The decisions are the full sort's, bit for bit.
const (
	bandShift   = 16 // a bucket is 2^16 key values: 7 mantissa bits (vec.BandKeep's)
	bandBuckets = 2048
)

// scanUndecided is the most undecided entries of a row ranked by counting
// over the row, each on its own; more are ranked by gathering their
// buckets. (A variable so tests can take either way.)
var scanUndecided = 12

// bandMinRow is the shortest row ranked by buckets: below it a bucket
// histogram's fixed cost outweighs sorting the row.
const bandMinRow = 1024

// bandRanker holds the scratch of bandRow, reused across rows.
type bandRanker struct {
	pos    [bandBuckets + 1]int32 // bucket b's ranks are [pos[b], pos[b+1])
	bounds [bandBuckets]uint64    // thr of bucket b's lowest and highest rank (vec.BandBounds)
	slot   [bandBuckets]int32     // 1 + b's index in marked, 0 if unmarked
	marked []int32                // buckets holding an undecided entry
	fill   []int32                // next free place of each marked bucket
	undec  []int32                // entries whose rank decides
	gather []uint64               // key<<32 | index of the marked buckets' entries
	rank   []int32                // exact rank of the gathered entries, by index

	// line, when set, holds thresholds within lineSlack/2 of a + b·rank,
	// checked over the whole table: the buckets' bounds are then computed
	// from it (vec.BucketBoundsAffine) instead of gathered from thr.
	line    bool
	a, b    float64
	lineFor []uint64 // the table the line was checked against

	// Of the rows ranked so far, their entries and how many of those were
	// gathered: rows with long ties (a fine-tune's few distinct BF16
	// deltas) gather most of themselves, and for them the full sort is
	// cheaper.
	rows, entries, gathered int64
}

// paysOff reports whether the next row of this tensor should be ranked by
// buckets: until a few rows show that most of each is gathered anyway.
// Either way the decisions are the same; only the time differs.
func (br *bandRanker) paysOff() bool {
	return br.rows < 4 || 5*br.gathered < 2*br.entries
}

// lineSlack is how far, in 2^-53 units of probability, the line's bounds
// are widened beyond it: twice the most a table checked by setLine may
// stray from the line (a few ulps of 2^53, and the ceiling).
const lineSlack = 1 << 12

// setLine takes a + b·rank for thr's bounds if every threshold lies
// within lineSlack/2 of it (MAGPRUNE's thresholds are a line in rank,
// rounded up to integers and clamped to [0, 2^53]; the clamps keep the
// bounds on the safe side).
func (br *bandRanker) setLine(thr []uint64, a, b float64) {
	br.line = false
	for r, t := range thr {
		v := min(max(a+b*float64(r), 0), 1<<53)
		if math.Abs(v-float64(t)) > lineSlack/2 {
			return
		}
	}
	br.line, br.a, br.b, br.lineFor = true, a, b, thr
}

// bucketOf maps a key to its bucket: monotone in the key, so bucket order
// is key order; keys more than 16 binades below the row's largest share
// bucket 0.
func bucketOf(k, base uint32) uint32 { return max(k>>bandShift, base) - base }

// bandRow sets keep[i] = u_i < thr[rank_i] for one row, u_i the low 53
// bits of draws[i], rank by key then index; top is the row's largest key;
// thr must be non-decreasing and as long as the row.
func (br *bandRanker) bandRow(keys []uint32, top uint32, keep []bool, thr, draws []uint64) {
	// Buckets cost per row as entries do: a short row takes as many as
	// its entries (8 binades for 1024), the keys below sharing bucket 0.
	span := uint32(min(bandBuckets, max(len(keys), bandMinRow)))
	base := uint32(0)
	if tb := top >> bandShift; tb >= span {
		base = tb - (span - 1)
	}
	nb := top>>bandShift - base + 1
	pos := br.pos[:nb+1]
	clear(pos)
	vec.BucketCounts(keys, base, pos[1:])
	bounds := br.bounds[:nb]
	if br.line && len(br.lineFor) == len(keys) && &br.lineFor[0] == &thr[0] {
		vec.BucketBoundsAffine(pos, int32(len(keys)-1), br.a, br.b, lineSlack, bounds)
	} else {
		vec.BucketBounds(pos, thr[:len(keys)], bounds)
	}
	if cap(br.undec) < len(keys) {
		br.undec = make([]int32, len(keys))
	}
	n := vec.BandKeep(keys, draws, bounds, base, keep, br.undec[:len(keys)])
	br.undec = br.undec[:n]
	br.rows++
	br.entries += int64(len(keys))
	if n > 0 {
		br.resolve(keys, keep, thr, draws, base)
	}
}

// resolve decides the undecided entries by their exact ranks: their
// buckets' entries gathered in index order, each bucket sorted by key
// then index (already so when its keys are all equal, as ties of
// quantized deltas often are).
func (br *bandRanker) resolve(keys []uint32, keep []bool, thr, draws []uint64, base uint32) {
	if len(br.undec) <= scanUndecided {
		// An entry's rank is the count of smaller keys, and of equal keys
		// before it: two vector counts over the row per entry, cheaper
		// than gathering and sorting for a few.
		for _, i := range br.undec {
			k := keys[i]
			r := vec.CountBelow(keys[:i], k+1) + vec.CountBelow(keys[i+1:], k)
			keep[i] = draws[i]&(1<<53-1) < thr[r]
			b := bucketOf(k, base)
			br.gathered += int64(br.pos[b+1] - br.pos[b])
		}
		return
	}
	marked, fill := br.marked[:0], br.fill[:0]
	n := int32(0)
	for _, i := range br.undec {
		b := bucketOf(keys[i], base)
		if br.slot[b] == 0 {
			marked = append(marked, int32(b))
			br.slot[b] = int32(len(marked))
			fill = append(fill, n)
			n += br.pos[b+1] - br.pos[b]
		}
	}
	if cap(br.gather) < int(n) {
		br.gather = make([]uint64, n)
	}
	if cap(br.rank) < len(keys) {
		br.rank = make([]int32, len(keys))
	}
	br.gathered += int64(n)
	gather, rank := br.gather[:n], br.rank[:len(keys)]
	for i, k := range keys {
		if s := br.slot[bucketOf(k, base)]; s != 0 {
			gather[fill[s-1]] = uint64(k)<<32 | uint64(i)
			fill[s-1]++
		}
	}
	start := int32(0)
	for _, b := range marked {
		end := start + br.pos[b+1] - br.pos[b]
		seg := gather[start:end]
		if !slices.IsSorted(seg) {
			slices.Sort(seg)
		}
		for p, o := range seg {
			rank[uint32(o)] = br.pos[b] + int32(p)
		}
		br.slot[b] = 0
		start = end
	}
	for _, i := range br.undec {
		keep[i] = draws[i]&(1<<53-1) < thr[rank[i]]
	}
	br.marked, br.fill = marked, fill
}
