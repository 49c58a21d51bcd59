// Package sgemm multiplies float32 matrices for the engine: C = op(A)·op(B)
// + beta·C, row-major with leading dimensions. Large products are blocked
// and packed in the manner of BLIS (panels of op(A) and op(B) copied into
// contiguous buffers that stay in cache) around a 6×16 micro-kernel, in
// AVX2/FMA assembly on amd64 CPUs that have it (chosen at run time) and
// in Go elsewhere.
//
// Every element of C is summed in an order that depends only on k (blocks
// of KC along k, in order; within a block, in order), never on how the
// work is split or on m and n: the result does not depend on the number
// of workers, and a row of C is the same whether its row of A comes alone
// or in a batch.
package sgemm

import (
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/x448/float16"
)

// Block sizes: a packed A block (mc×kc) fits in L2, a packed B panel
// (kc×nr) in L1; nc bounds the packed B block a worker holds.
const (
	mr    = 6
	nr    = 16
	kc    = 256
	mc    = 120
	ncMax = 3072
)

// DepthBlock is the depth (k) of one packed block: GemmPacked's p0 must be
// a multiple of it.
const DepthBlock = kc

// useAsm is set on CPUs with AVX2 and FMA (see kernel_amd64.go).
var useAsm bool

// Accelerated reports whether the assembly kernels are in use.
func Accelerated() bool { return useAsm }

// Gemm computes C = op(A)·op(B) + beta·C with op(A) m×k, op(B) k×n and C
// m×n, where op(X) is X or, when tX is set, its transpose; lda, ldb and ldc
// are the row strides of A, B and C as stored. workers ≤ 0 means
// GOMAXPROCS. With beta = 0, C's prior contents are ignored (NaN included).
func Gemm(tA, tB bool, m, n, k int, a []float32, lda int, b []float32, ldb int, beta float32, c []float32, ldc int, workers int) {
	gemm(tA, m, n, k, a, lda, func(pc, kb, jc, ncj int, dst []float32) {
		packB(tB, b, ldb, pc, kb, jc, ncj, dst)
	}, beta, c, ldc, workers)
}

// Half is a 16-bit float format of stored weights.
type Half uint8

// The 16-bit formats GemmHalf reads.
const (
	BF16 Half = iota
	F16
)

// GemmHalf is Gemm with op(B) = Bᵀ for a B (n × k, row stride ldb) stored
// as BF16 or F16 bits: rows of B are widened to float32 only as they are
// packed, so a model's weights stay in their 16-bit form in memory. The
// result equals Gemm's on the widened matrix, bit for bit.
func GemmHalf(m, n, k int, a []float32, lda int, b []uint16, ldb int, h Half, beta float32, c []float32, ldc int, workers int) {
	gemm(false, m, n, k, a, lda, func(pc, kb, jc, ncj int, dst []float32) {
		packBHalf(h, b, ldb, pc, kb, jc, ncj, dst)
	}, beta, c, ldc, workers)
}

// gemm is Gemm with B reached through pack, which writes op(B)[pc:pc+kb,
// jc:jc+ncj] in packB's layout.
func gemm(tA bool, m, n, k int, a []float32, lda int, pack func(pc, kb, jc, ncj int, dst []float32), beta float32, c []float32, ldc int, workers int) {
	if m <= 0 || n <= 0 {
		return
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	scale(m, n, beta, c, ldc)
	if k <= 0 {
		return
	}
	// Split the columns of C into chunks, a few per worker, each packing
	// its own B block; small products run on one goroutine.
	nc := ncMax
	if flops := m * n * k; workers > 1 && flops >= 1<<20 {
		per := (n + 2*workers - 1) / (2 * workers)
		nc = min(ncMax, max(nr, (per+nr-1)/nr*nr))
	} else {
		workers = 1
	}
	chunks := (n + nc - 1) / nc
	workers = min(workers, chunks)
	run := func(next func() int) {
		buf := getBuffers()
		defer putBuffers(buf)
		for j := next(); j < chunks; j = next() {
			jc := j * nc
			block(tA, m, min(nc, n-jc), k, jc, a, lda, pack, c, ldc, buf)
		}
	}
	if workers <= 1 {
		j := -1
		run(func() int { j++; return j })
		return
	}
	var counter atomic.Int64
	next := func() int { return int(counter.Add(1)) - 1 }
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() { run(next) })
	}
	wg.Wait()
}

// scale sets C to beta·C (zero when beta is 0).
func scale(m, n int, beta float32, c []float32, ldc int) {
	if beta == 1 {
		return
	}
	for i := range m {
		row := c[i*ldc : i*ldc+n]
		if beta == 0 {
			clear(row)
			continue
		}
		for j := range row {
			row[j] *= beta
		}
	}
}

type buffers struct {
	a    []float32 // packed A block: mc×kc in panels of mr rows
	b    []float32 // packed B block: kc×ncMax in panels of nr columns
	edge [mr * nr]float32
}

var pool = sync.Pool{New: func() any {
	return &buffers{a: make([]float32, mc*kc), b: make([]float32, kc*ncMax)}
}}

func getBuffers() *buffers  { return pool.Get().(*buffers) }
func putBuffers(b *buffers) { pool.Put(b) }

// block computes columns [jc, jc+ncj) of C += op(A)·op(B).
func block(tA bool, m, ncj, k, jc int, a []float32, lda int, pack func(pc, kb, jc, ncj int, dst []float32), c []float32, ldc int, buf *buffers) {
	for pc := 0; pc < k; pc += kc {
		kb := min(kc, k-pc)
		pack(pc, kb, jc, ncj, buf.b)
		for ic := 0; ic < m; ic += mc {
			mb := min(mc, m-ic)
			packA(tA, a, lda, ic, mb, pc, kb, buf.a)
			for jr := 0; jr < ncj; jr += nr {
				tile(kb, buf.a, buf.b[jr*kb:], c, ldc, ic, mb, jc+jr, min(nr, ncj-jr), buf)
			}
		}
	}
}

// tile runs the micro-kernel down one packed B panel bp (cols ≤ nr valid
// columns, at column j of C) for rows [ic, ic+mb) of C, whose packed A
// block is ap.
func tile(kb int, ap, bp, c []float32, ldc, ic, mb, j, cols int, buf *buffers) {
	for ir := 0; ir < mb; ir += mr {
		a := ap[ir*kb:]
		rows := min(mr, mb-ir)
		off := (ic+ir)*ldc + j
		if rows == mr && cols == nr {
			kernel(kb, a, bp, c[off:], ldc)
			continue
		}
		// A partial tile: the kernel writes a zeroed scratch tile, whose
		// valid part is added to C.
		e := buf.edge[:]
		clear(e)
		kernel(kb, a, bp, e, nr)
		for i := range rows {
			row := c[off+i*ldc : off+i*ldc+cols]
			for jj := range row {
				row[jj] += e[i*nr+jj]
			}
		}
	}
}

// packA copies op(A)[ic:ic+mb, pc:pc+kb] into panels of mr rows: panel
// r holds, for each p, the mr values of rows r·mr.. at column p (zero
// past the last row).
func packA(tA bool, a []float32, lda, ic, mb, pc, kb int, dst []float32) {
	for ir := 0; ir < mb; ir += mr {
		rows := min(mr, mb-ir)
		d := dst[ir*kb : ir*kb+mr*kb]
		if !tA {
			for i := range rows {
				src := a[(ic+ir+i)*lda+pc : (ic+ir+i)*lda+pc+kb]
				for p, v := range src {
					d[p*mr+i] = v
				}
			}
		} else {
			for p := range kb {
				src := a[(pc+p)*lda+ic+ir : (pc+p)*lda+ic+ir+rows]
				copy(d[p*mr:p*mr+rows], src)
			}
		}
		if rows < mr {
			for p := range kb {
				clear(d[p*mr+rows : p*mr+mr])
			}
		}
	}
}

// packB copies op(B)[pc:pc+kb, jc:jc+ncj] into panels of nr columns:
// panel q holds, for each p, the nr values of row p at columns q·nr..
// (zero past the last column).
func packB(tB bool, b []float32, ldb, pc, kb, jc, ncj int, dst []float32) {
	for jr := 0; jr < ncj; jr += nr {
		cols := min(nr, ncj-jr)
		d := dst[jr*kb : jr*kb+nr*kb]
		if tB {
			// op(B)[p][j] = B[j][p]: rows of B are contiguous along p.
			for j := range cols {
				src := b[(jc+jr+j)*ldb+pc : (jc+jr+j)*ldb+pc+kb]
				for p, v := range src {
					d[p*nr+j] = v
				}
			}
		} else {
			for p := range kb {
				src := b[(pc+p)*ldb+jc+jr : (pc+p)*ldb+jc+jr+cols]
				copy(d[p*nr:p*nr+cols], src)
			}
		}
		if cols < nr {
			for p := range kb {
				clear(d[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// kernelGo is the portable micro-kernel: c[i·ldc+j] += Σ_p a[p·mr+i]·b[p·nr+j]
// for i < mr, j < nr.
func kernelGo(kb int, a, b, c []float32, ldc int) {
	var acc [mr][nr]float32
	for p := range kb {
		bp := (*[nr]float32)(b[p*nr : p*nr+nr])
		ap := (*[mr]float32)(a[p*mr : p*mr+mr])
		for i, ai := range ap {
			r := &acc[i]
			for j, bj := range bp {
				r[j] += ai * bj
			}
		}
	}
	for i := range mr {
		row := c[i*ldc : i*ldc+nr]
		for j := range row {
			row[j] += acc[i][j]
		}
	}
}

// packBHalf is packB for tB with 16-bit B, widening as it copies.
func packBHalf(h Half, b []uint16, ldb, pc, kb, jc, ncj int, dst []float32) {
	for jr := 0; jr < ncj; jr += nr {
		cols := min(nr, ncj-jr)
		d := dst[jr*kb : jr*kb+nr*kb]
		for j := range cols {
			src := b[(jc+jr+j)*ldb+pc : (jc+jr+j)*ldb+pc+kb]
			if h == BF16 {
				for p, v := range src {
					d[p*nr+j] = math.Float32frombits(uint32(v) << 16)
				}
			} else {
				t := f16Table()
				for p, v := range src {
					d[p*nr+j] = t[v]
				}
			}
		}
		if cols < nr {
			for p := range kb {
				clear(d[p*nr+cols : p*nr+nr])
			}
		}
	}
}

// f16Table widens every F16 bit pattern (exactly: F16 ⊂ float32); made
// on first use.
var f16Table = sync.OnceValue(func() *[1 << 16]float32 {
	t := new([1 << 16]float32)
	for i := range t {
		t[i] = float16.Frombits(uint16(i)).Float32()
	}
	return t
})

// PackedB is a k × n matrix op(B) packed once in the kernel's layout, for
// many products against it (attention's keys and values, multiplied by
// every block of queries).
type PackedB struct {
	k, n, np int // np: n rounded up to whole panels
	data     []float32
}

// Pack packs op(B) (k × n, row stride ldb as stored) into p, reusing its
// memory when large enough.
func (p *PackedB) Pack(tB bool, k, n int, b []float32, ldb int) {
	p.k, p.n, p.np = k, n, (n+nr-1)/nr*nr
	if need := k * p.np; cap(p.data) < need {
		p.data = make([]float32, need)
	} else {
		p.data = p.data[:need]
	}
	for pc := 0; pc < k; pc += kc {
		kb := min(kc, k-pc)
		packB(tB, b, ldb, pc, kb, 0, n, p.data[pc*p.np:])
	}
}

// GemmPacked computes C = op(A)·B[p0:p1, j0:j1] + beta·C on one goroutine
// for a packed B, where op(A) is m × (p1−p0) (a starts at its column p0
// when not transposed, at its row p0 when transposed) and C is
// m × (j1−j0). j0 must be a multiple of 16 and p0 of 256 (whole panels and
// blocks); sums run in the order Gemm's do, so the two agree bit for bit.
func GemmPacked(tA bool, m int, a []float32, lda int, p *PackedB, p0, p1, j0, j1 int, beta float32, c []float32, ldc int) {
	if j0%nr != 0 || p0%kc != 0 || p1 > p.k || j1 > p.n || p0 > p1 || j0 > j1 {
		panic("sgemm: GemmPacked range not aligned to the packing")
	}
	n := j1 - j0
	if m <= 0 || n <= 0 {
		return
	}
	scale(m, n, beta, c, ldc)
	buf := getBuffers()
	defer putBuffers(buf)
	if m == 1 && !tA {
		gemvPacked(a, p, p0, p1, j0, n, c, buf)
		return
	}
	for pc := p0; pc < p1; pc += kc {
		kb := min(kc, p1-pc)
		stride := min(kc, p.k-pc) // the packed block's own depth
		base := p.data[pc*p.np:]
		for ic := 0; ic < m; ic += mc {
			mb := min(mc, m-ic)
			packA(tA, a, lda, ic, mb, pc-p0, kb, buf.a)
			for jr := 0; jr < n; jr += nr {
				bp := base[(j0+jr)*stride:]
				tile(kb, buf.a, bp, c, ldc, ic, mb, jr, min(nr, n-jr), buf)
			}
		}
	}
}

// GemmPackedCols is GemmPacked over columns [j0, j1) of a packed B at its
// full depth, split by columns over workers (≤ 0: GOMAXPROCS): C (m ×
// (j1−j0)) = op(A)·B[:, j0:j1] + beta·C. The sums are GemmPacked's, so
// the result does not depend on workers.
func GemmPackedCols(m int, a []float32, lda int, p *PackedB, j0, j1 int, beta float32, c []float32, ldc int, workers int) {
	n := j1 - j0
	if m <= 0 || n <= 0 {
		return
	}
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	chunk := n
	if workers > 1 && m*n*p.k >= 1<<18 {
		per := (n + 2*workers - 1) / (2 * workers)
		chunk = max(nr, (per+nr-1)/nr*nr)
	}
	chunks := (n + chunk - 1) / chunk
	if chunks == 1 {
		GemmPacked(false, m, a, lda, p, 0, p.k, j0, j1, beta, c, ldc)
		return
	}
	var next atomic.Int64
	var wg sync.WaitGroup
	for range min(workers, chunks) {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= chunks {
					return
				}
				lo := j0 + i*chunk
				hi := min(lo+chunk, j1)
				GemmPacked(false, m, a, lda, p, 0, p.k, lo, hi, beta, c[lo-j0:], ldc)
			}
		})
	}
	wg.Wait()
}

// gemvPacked is GemmPacked for one row of A (a decoding step): four
// panels at a time against the row itself, no packing, each lane summed
// in the order the 6×16 kernel sums it, so a row alone gives the bits it
// gets in a batch.
func gemvPacked(a []float32, p *PackedB, p0, p1, j0, n int, c []float32, buf *buffers) {
	for pc := p0; pc < p1; pc += kc {
		kb := min(kc, p1-pc)
		stride := min(kc, p.k-pc)
		base := p.data[pc*p.np:]
		ap := a[pc-p0 : pc-p0+kb]
		jr := 0
		for ; jr+4*nr <= n; jr += 4 * nr {
			row4(kb, ap, base[(j0+jr)*stride:], stride*nr, c[jr:jr+4*nr])
		}
		if jr < n {
			// The last panels go through the 6×16 kernel itself, with the
			// row as the first of a packed A panel: the same sums.
			pa := buf.a[:mr*kb]
			clear(pa)
			for q, v := range ap {
				pa[q*mr] = v
			}
			for ; jr < n; jr += nr {
				e := buf.edge[:]
				clear(e)
				kernel(kb, pa, base[(j0+jr)*stride:], e, nr)
				for j := range min(nr, n-jr) {
					c[jr+j] += e[j]
				}
			}
		}
	}
}

// row4Go is kern1x64 in Go.
func row4Go(kb int, a, b []float32, stride int, c []float32) {
	var acc [4 * nr]float32
	for q := range 4 {
		bq := b[q*stride:]
		for pp := range kb {
			av := a[pp]
			for j := range nr {
				acc[q*nr+j] += av * bq[pp*nr+j] // as kernelGo writes it
			}
		}
	}
	for i := range acc {
		c[i] += acc[i]
	}
}
