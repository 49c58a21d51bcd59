package engine

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/internal/sgemm"
)

// attnBlock is the number of queries one attention job takes: its score
// tile (attnBlock × keys) is what lives in memory, never the T × T matrix.
const attnBlock = 64

// attention computes causal multi-head attention for T new queries at
// positions p0.. against the cached keys and values 0..p0+T−1: for each
// head and block of queries, scores S = Q·Kᵀ·scale by one matrix product,
// a softmax per row over its visible keys (causal, and the last window
// positions when window > 0), and the output P·V by another. q and out are
// T × nh·hd; k and v are (p0+T) × nkv·hd, kv head h/(nh/nkv) serving
// query head h. Jobs (head, block) run on every core; each row's result
// does not depend on how the work was split.
// attnPacks holds the packed keys and values of one layer, reused by the
// next.
type attnPacks struct{ keys, vals []sgemm.PackedB }

// attnOpts are what architectures change in attention: the score scale
// (head_dim^−½ by default), the soft-capping of scores c·tanh(s/c) (Gemma
// 2; 0: none) and the window (0: none).
type attnOpts struct {
	scale, softcap float64
	window         int
}

func attention(q, k, v, out []float32, T, p0, nh, nkv, hd int, o attnOpts, packs *attnPacks) {
	qd, kvd := nh*hd, nkv*hd
	group := nh / nkv
	scale, window, capv := o.scale, o.window, o.softcap
	nk := p0 + T // keys
	// Each kv head's keys (as Kᵀ) and values, packed once for all blocks.
	if len(packs.keys) != nkv {
		packs.keys, packs.vals = make([]sgemm.PackedB, nkv), make([]sgemm.PackedB, nkv)
	}
	keys, vals := packs.keys, packs.vals
	parallel.Each(2*nkv, func(i int) {
		if kh := i / 2; i%2 == 0 {
			keys[kh].Pack(true, hd, nk, k[kh*hd:], kvd)
		} else {
			vals[kh].Pack(false, nk, hd, v[kh*hd:], kvd)
		}
	})
	blocks := (T + attnBlock - 1) / attnBlock
	jobs := nh * blocks
	workers := min(runtime.GOMAXPROCS(0), jobs)
	var next atomic.Int64
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			s := make([]float32, attnBlock*nk)
			for {
				job := int(next.Add(1)) - 1
				if job >= jobs {
					return
				}
				hh, b := job/blocks, job%blocks
				kh := hh / group
				t0, t1 := b*attnBlock, min((b+1)*attnBlock, T)
				rows := t1 - t0
				// Keys [lo, hi) cover what this block sees; lo is on a
				// packing boundary, and keys below a row's window get
				// probability 0.
				hi, lo := p0+t1, 0
				if window > 0 {
					lo = max(0, p0+t0+1-window) / sgemm.DepthBlock * sgemm.DepthBlock
				}
				n := hi - lo
				sc := s[:rows*n]
				sgemm.GemmPacked(false, rows, q[t0*qd+hh*hd:], qd, &keys[kh], 0, hd, lo, hi, 0, sc, n)
				for r := range rows {
					row := sc[r*n : (r+1)*n]
					last := p0 + t0 + r + 1 // keys < last are visible
					first := lo
					if window > 0 && last > window {
						first = last - window
					}
					if capv > 0 {
						for j := first; j < last; j++ {
							row[j-lo] = float32(capv * math.Tanh(float64(row[j-lo])*scale/capv) / scale)
						}
					}
					mx := math.Inf(-1)
					for j := first; j < last; j++ {
						if x := float64(row[j-lo]) * scale; x > mx {
							mx = x
						}
					}
					var sum float64
					for j := first; j < last; j++ {
						e := math.Exp(float64(row[j-lo])*scale - mx)
						row[j-lo] = float32(e)
						sum += e
					}
					inv := 1 / sum
					clear(row[:first-lo])
					for j := first; j < last; j++ {
						row[j-lo] = float32(float64(row[j-lo]) * inv)
					}
					clear(row[last-lo:])
				}
				sgemm.GemmPacked(false, rows, sc, n, &vals[kh], lo, hi, 0, hd, 0, out[t0*qd+hh*hd:], qd)
			}
		})
	}
	wg.Wait()
}
