package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"sync"
	"sync/atomic"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/weights"
)

// ChunkElems is the working chunk of a PassKernel: big enough to amortise
// per-chunk work, small enough that per-input scratch stays in cache-sized
// pieces. Chunks are rounded to whole rows (the last dimension).
const ChunkElems = 1 << 16

// MaterializeLimit bounds the float64 copies of a tensor's inputs kept for
// multi-pass kernels; larger tensors are decoded again on every pass.
const MaterializeLimit = 64 << 20

// PassKernel computes a tensor from its inputs decoded to float64, chunk by
// chunk in index order, after any number of pre-passes over the whole
// tensor (a histogram for a magnitude cut, a norm). Passes adapts it to a
// Kernel.
type PassKernel interface {
	// NextPass names the next pre-pass, or reports false when only the
	// final Compute pass is left. It is asked again after each pass, since
	// a pass can make a later one unnecessary.
	NextPass() (int, bool)
	// Observe sees one chunk during pre-pass p; in[i] is input i's chunk.
	Observe(p int, in [][]float64) error
	// EndPass closes pre-pass p.
	EndPass(p int) error
	// Compute fills out[k] (one slice per output) for the next chunk.
	Compute(in, out [][]float64) error
}

// RawInputKernel is a PassKernel that reads some inputs from their raw
// bytes itself (cheaper than decoding to float64 and narrowing again):
// before each Observe or Compute, SetRaw hands over those inputs' bytes of
// that chunk, and their chunk slots are nil. Chunks arrive in index order,
// restarting after EndPass.
type RawInputKernel interface {
	PassKernel
	RawInput(i int) bool
	SetRaw(i int, t weights.Tensor)
}

// ChunkAligner is a PassKernel whose chunks must each hold a multiple of
// ChunkAlign elements (a codec's whole groups), which need not be whole
// rows. The last chunk may be shorter.
type ChunkAligner interface {
	PassKernel
	ChunkAlign() int64
}

// Forker is a PassKernel whose final pass can be computed in parts at
// once once its pre-passes are done: Fork returns a kernel for the final
// pass from element first on (its chunks in index order, as Compute gets
// them), sharing what the pre-passes found, with scratch of its own (a
// kernel whose Compute only reads its state may return itself); ok
// is false when this tensor's final pass must run in order (a cut whose
// ties are taken in index order). A streamed tensor's final pass is split
// into parts of whole rows when a worker's core is spare (see PartElems).
type Forker interface {
	PassKernel
	Fork(first int64) (k PassKernel, ok bool)
}

// BackForker is a Forker whose final pass, where Fork refuses, can still
// be shared: ForkBack returns a kernel for the final pass over chunks
// taken from the tensor's end down (each chunk's entries in index order,
// the chunks those of the pass in order), sharing what the pre-passes
// found, while the kernel itself goes on in order from the start until
// the two meet (a cut that takes its ties by index counts, from the end,
// how many lie after each chunk).
type BackForker interface {
	Forker
	ForkBack() (k PassKernel, ok bool)
}

// PassSplitter is a PassKernel whose pre-passes can be shared between
// cores: SplitPass returns a kernel that observes other chunks of pre-pass
// p (whole chunks of the pass, any of them, in any order; never its
// EndPass), and JoinPass adds what such a kernel saw to this one's pass
// before its EndPass. ok is false while pass p must go on in order (a
// histogram taking its sample from the first entries: asked again at
// later chunks) or cannot be shared (a floating-point sum in index
// order). A streamed tensor's pre-pass is shared with a spare core from
// the end down, as a BackForker's final pass is.
type PassSplitter interface {
	PassKernel
	SplitPass(p int) (part PassKernel, ok bool)
	JoinPass(part PassKernel) error
}

// Passes adapts a PassKernel to a Kernel. Outputs are encoded to their
// dtypes chunk by chunk, rounded once from float64.
func Passes(k PassKernel) Kernel { return passes{k} }

type passes struct{ k PassKernel }

func (p passes) Compute(ctx context.Context, t *Tensor) error { return t.runPasses(ctx, p.k) }

// ReadsChunks reports that a Passes kernel can be streamed.
func (passes) ReadsChunks() bool { return true }

// Release forwards to the wrapped kernel, which may hold pooled caches.
func (p passes) Release() {
	if r, ok := p.k.(interface{ Release() }); ok {
		r.Release()
	}
}

// ElementwiseFunc is a PassKernel with no pre-passes: one function per
// chunk.
type ElementwiseFunc func(in, out [][]float64)

// NextPass reports that there are no pre-passes.
func (ElementwiseFunc) NextPass() (int, bool) { return 0, false }

// Observe is never called.
func (ElementwiseFunc) Observe(int, [][]float64) error { return nil }

// EndPass is never called.
func (ElementwiseFunc) EndPass(int) error { return nil }

// Compute calls f.
func (f ElementwiseFunc) Compute(in, out [][]float64) error { f(in, out); return nil }

func (t *Tensor) runPasses(ctx context.Context, kern PassKernel) error {
	n := t.elems()
	rowLen := int64(1)
	if len(t.Shape) > 0 {
		rowLen = max(1, t.Shape[len(t.Shape)-1])
	}
	chunk := max(1, ChunkElems/rowLen) * rowLen
	if a, ok := kern.(ChunkAligner); ok {
		u := max(1, a.ChunkAlign())
		chunk = max(1, ChunkElems/u) * u
	}
	raws := t.In
	skip := make([]bool, len(raws))
	rk, _ := kern.(RawInputKernel)
	for i := range raws {
		skip[i] = rk != nil && !t.Missing(i) && rk.RawInput(i)
	}
	src := newChunkInputs(t, min(chunk, n))
	defer src.release()
	// Chunk scratch, pooled: a fresh zeroed allocation per tensor and input
	// adds up over hundreds of tensors.
	in := make([][]float64, len(raws))
	for i := range in {
		if !skip[i] {
			in[i] = F64.Get(int(min(chunk, n)))
			defer F64.Put(in[i])
		}
	}
	outs := make([][]float64, len(t.Out))
	if t.sections != nil {
		outs = make([][]float64, len(t.OutDType))
	}
	for k := range outs {
		outs[k] = F64.Get(int(min(chunk, n)))
		defer F64.Put(outs[k])
	}
	file := func(i int) string { f, _ := t.job.where(i, t.Name); return f }
	decode := func(start, end int64, dst [][]float64) error {
		for i, r := range raws {
			switch {
			case skip[i]:
			case t.Missing(i):
				clear(dst[i][:end-start])
			default:
				if err := weights.Decode(r.DType, src.raw[i], dst[i][:end-start]); err != nil {
					return t.job.inputError(i, t.Name, err)
				}
			}
		}
		return nil
	}
	// A kernel with pre-passes over a tensor small enough gets its inputs
	// decoded once for all passes instead of once per pass (a streamed
	// tensor is read again instead).
	var full [][]float64
	view := make([][]float64, len(in))
	chunkAt := func(s, e int64) ([][]float64, error) {
		if err := src.load(s, e); err != nil {
			return nil, err
		}
		for i := range in {
			switch {
			case skip[i]:
				view[i] = nil
				rk.SetRaw(i, weights.Tensor{TensorInfo: raws[i].TensorInfo, Data: src.raw[i]})
			case full != nil:
				view[i] = full[i][s:e]
			default:
				view[i] = in[i][:e-s]
			}
		}
		if full != nil {
			return view, nil
		}
		return view, decode(s, e, in)
	}
	if t.observe > 0 {
		// A PassSplitter's helper: this part's chunks of one pre-pass.
		p := t.observe - 1
		for s := int64(0); s < n; s += chunk {
			if err := context.Cause(ctx); err != nil {
				return err
			}
			v, err := chunkAt(s, min(n, s+chunk))
			if err != nil {
				return err
			}
			if err := kern.Observe(p, v); err != nil {
				return &weights.TensorError{File: file(0), Tensor: t.Name, Err: err}
			}
		}
		return nil
	}
	p, more := kern.NextPass()
	decoded := 0
	for i := range raws {
		if !skip[i] {
			decoded++
		}
	}
	if more && t.sections == nil && n*8*int64(decoded) <= MaterializeLimit {
		full = make([][]float64, len(raws))
		for i := range full {
			if !skip[i] {
				full[i] = F64.Get(int(n))
				defer F64.Put(full[i])
			}
		}
		if err := src.load(0, n); err != nil {
			return err
		}
		if err := decode(0, n, full); err != nil {
			return err
		}
	}
	sk, _ := kern.(PassSplitter)
	if t.sections == nil || t.count > 0 || full != nil {
		sk = nil
	}
	// observe runs pre-pass p, shared from the end down with a spare core
	// when the kernel splits it.
	observe := func(p int) error {
		var help *backFork
		var part PassKernel
		pctx := ctx
		var err error
		for s := int64(0); s < n && err == nil; s += chunk {
			if err = context.Cause(pctx); err != nil {
				break
			}
			if sk != nil && help == nil && n-s > PartElems && t.job.spare.Load() > 0 {
				if help, part = t.splitPass(pctx, sk, p, n, chunk); help != nil {
					pctx = help.ctx // a helper's error stops this worker too
				}
			}
			e := min(n, s+chunk)
			if help != nil && !help.claim(s, e) {
				break // the helper has done the rest
			}
			var v [][]float64
			if v, err = chunkAt(s, e); err != nil {
				break
			}
			if err = kern.Observe(p, v); err != nil {
				err = &weights.TensorError{File: file(0), Tensor: t.Name, Err: err}
			}
		}
		if help != nil {
			if err != nil {
				help.cancel(errBackStopped)
			}
			if herr := help.wait(); err == nil {
				err = herr
			}
			if err == nil {
				err = sk.JoinPass(part)
			}
			release(part)
		}
		if err != nil {
			return err
		}
		if err := kern.EndPass(p); err != nil {
			return &weights.TensorError{File: file(0), Tensor: t.Name, Err: err}
		}
		return nil
	}
	for ; more; p, more = kern.NextPass() {
		if err := observe(p); err != nil {
			return err
		}
	}
	// A streamed tensor's final pass goes to parts as soon as a core is
	// spare, at its start or later (a worker finishing the other tensors).
	fk, _ := kern.(Forker)
	bk, _ := kern.(BackForker)
	if t.sections == nil || t.count > 0 {
		fk, bk = nil, nil
	}
	var back *backFork // a helper taking chunks from the end
	defer func() {
		if back != nil {
			// On this worker's error, the helper stops at its next chunk.
			back.cancel(errBackStopped)
			back.wait()
			release(back.k)
		}
	}()
	ov := make([][]float64, len(outs))
	var enc [][]byte // a streamed tensor's encoded output chunks
	if t.sections != nil {
		enc = make([][]byte, len(outs))
		for k := range enc {
			enc[k] = t.job.bytes.Get(int(t.OutDType[k].Bytes(min(chunk, n))))
			defer t.job.bytes.Put(enc[k])
		}
	}
	s0, ds := int64(0), chunk
	if t.reverse {
		s0, ds = (n-1)/chunk*chunk, -chunk
	}
	for s := s0; s >= 0 && s < n; s += ds {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		if fk != nil && n-s > PartElems && t.job.spare.Load() > 0 {
			k0, ok := fk.Fork(s)
			if !ok {
				fk = nil // it will not fork later either: its state is fixed
			} else if done, err := t.finalInParts(ctx, fk, k0, s, n, chunk); done || err != nil {
				return err
			}
		}
		if fk == nil && bk != nil && back == nil && n-s > PartElems && t.job.spare.Load() > 0 {
			if back = t.forkBack(ctx, bk, n, chunk); back != nil {
				ctx = back.ctx // a helper's error stops this worker too
			}
		}
		e := min(n, s+chunk)
		if back != nil && !back.claim(s, e) {
			break // the helper has done the rest
		}
		v, err := chunkAt(s, e)
		if err != nil {
			return err
		}
		for k := range outs {
			ov[k] = outs[k][:e-s]
		}
		if err := kern.Compute(v, ov); err != nil {
			return &weights.TensorError{File: file(0), Tensor: t.Name, Err: err}
		}
		for k := range outs {
			dt := t.OutDType[k]
			var b []byte
			if enc != nil {
				b = enc[k][:dt.Bytes(e-s)]
			} else {
				b = t.Out[k][dt.Bytes(s):dt.Bytes(e)]
			}
			if err := weights.Encode(dt, ov[k], b); err != nil {
				return &weights.TensorError{File: t.job.Outputs[k].Path, Tensor: t.Name, Err: err}
			}
			if enc == nil {
				continue
			}
			if src.masked {
				weights.SetNaNMarked(dt, b, src.mask[:e-s])
			}
			if err := t.job.sinks[k].(RangeSink).WriteTensorAt(t.Name, b, dt.Bytes(t.first+s)); err != nil {
				return err
			}
		}
	}
	if back != nil {
		return back.wait()
	}
	return nil
}

// backFork is the helper of a BackForker's final pass or a PassSplitter's
// pre-pass: it takes parts of whole chunks from the tensor's end down with
// kernel k while the worker goes on from the start, until they meet or the
// core is wanted back.
type backFork struct {
	k      PassKernel
	ctx    context.Context
	cancel context.CancelCauseFunc
	mu     sync.Mutex
	next   int64 // the worker's next entry
	lo     int64 // the helper's lowest claimed entry
	done   chan error
	once   sync.Once
	err    error
}

// claim takes chunk [s, e) for the worker, unless the helper has it.
func (b *backFork) claim(s, e int64) bool {
	b.mu.Lock()
	defer b.mu.Unlock()
	if s >= b.lo {
		return false
	}
	b.next = e
	return true
}

// wait waits for the helper to stop and returns its error.
func (b *backFork) wait() error {
	b.once.Do(func() {
		b.err = <-b.done
		b.cancel(nil)
	})
	return b.err
}

// errBackStopped stops a BackForker's helper when its worker fails.
var errBackStopped = errors.New("the final pass stopped")

// forkBack starts a helper on a spare core computing the final pass from
// the end down with a fork of bk; nil when no core is spare any more or
// the kernel does not fork.
func (t *Tensor) forkBack(ctx context.Context, bk BackForker, n, chunk int64) *backFork {
	j := t.job
	if !j.claimSpare() {
		return nil
	}
	k, ok := bk.ForkBack()
	if !ok {
		j.spare.Add(1)
		return nil
	}
	return t.fromTheEnd(ctx, k, n, chunk, func(pt *Tensor) { pt.reverse = true })
}

// splitPass starts a helper on a spare core observing pre-pass p from the
// end down with a split of sk; nil when the pass does not split (yet) or
// no core is spare any more.
func (t *Tensor) splitPass(ctx context.Context, sk PassSplitter, p int, n, chunk int64) (*backFork, PassKernel) {
	part, ok := sk.SplitPass(p)
	if !ok {
		return nil, nil
	}
	if !t.job.claimSpare() {
		_ = sk.JoinPass(part) // it counted nothing: hands its tables back
		release(part)
		return nil, nil
	}
	return t.fromTheEnd(ctx, part, n, chunk, func(pt *Tensor) { pt.observe = p + 1 }), part
}

// fromTheEnd runs k on a spare core already claimed (and given back when
// the helper stops) over parts of whole chunks taken from the tensor's
// end down, each part's Tensor set up by setup; the worker claims its
// chunks (backFork.claim) as it goes.
func (t *Tensor) fromTheEnd(ctx context.Context, k PassKernel, n, chunk int64, setup func(*Tensor)) *backFork {
	j := t.job
	step := max(chunk, PartElems/chunk*chunk)
	b := &backFork{k: k, lo: n, done: make(chan error, 1)}
	b.ctx, b.cancel = context.WithCancelCause(ctx)
	// take claims the next part down: [start, hi), whole chunks above
	// what the worker has claimed.
	take := func() (int64, int64, bool) {
		b.mu.Lock()
		defer b.mu.Unlock()
		start := (max(b.next, b.lo-step) + chunk - 1) / chunk * chunk
		if start >= b.lo {
			return 0, 0, false
		}
		hi := b.lo
		b.lo = start
		return start, hi, true
	}
	go func() {
		defer j.spare.Add(1)
		var err error
		func() {
			defer parallel.Recover(&err)
			for j.spare.Load() >= 0 {
				start, hi, ok := take()
				if !ok {
					return
				}
				pt := *t
				pt.first, pt.count = start, hi-start
				setup(&pt)
				if err = pt.runPasses(b.ctx, k); err != nil {
					return
				}
				j.forked.Add(1)
			}
		}()
		if err != nil {
			b.cancel(err)
		}
		b.done <- err
	}()
	return b
}

// finalInParts computes the rest of a streamed tensor's final pass, from
// element from (a chunk boundary) on, in parts of whole chunks when a core
// is spare: this worker and a helper on that core take the parts in turn,
// each with its own fork of the kernel. The helper stops after its part
// when the core is wanted back. It reports false, having computed
// nothing (k0, the fork for from, released), when another tensor took
// the spare core first.
func (t *Tensor) finalInParts(ctx context.Context, fk Forker, k0 PassKernel, from, n, chunk int64) (bool, error) {
	j := t.job
	if !j.claimSpare() {
		release(k0)
		return false, nil
	}
	step := max(chunk, PartElems/chunk*chunk)
	parts := (n - from + step - 1) / step
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	// Part 0 is this worker's, with k0; the rest go to whoever is free.
	var next atomic.Int64
	next.Store(1)
	part := func(p int64, k PassKernel) error {
		s := from + p*step
		if k == nil {
			// Parts start on chunk boundaries, as the first did: what
			// forked there forks here.
			var ok bool
			if k, ok = fk.Fork(s); !ok {
				err := fmt.Errorf("tensor %q: internal error: the kernel forked at %d but not at %d", t.Name, from, s)
				cancel(err)
				return err
			}
		}
		pt := *t
		pt.first, pt.count = s, min(step, n-s)
		err := pt.runPasses(ctx, k)
		release(k)
		if err != nil {
			cancel(err)
			return err
		}
		j.forked.Add(1)
		return nil
	}
	run := func(helper bool) error {
		for {
			if helper && j.spare.Load() < 0 {
				return nil
			}
			p := next.Add(1) - 1
			if p >= parts {
				return nil
			}
			if err := part(p, nil); err != nil {
				return err
			}
		}
	}
	helped := make(chan error, 1)
	go func() {
		defer j.spare.Add(1)
		var err error
		func() {
			defer parallel.Recover(&err)
			err = run(true)
		}()
		helped <- err
	}()
	err := part(0, k0)
	if err == nil {
		err = run(false)
	}
	if herr := <-helped; err == nil {
		err = herr
	}
	if err == nil {
		err = context.Cause(ctx)
	}
	return true, err
}

// release hands back a kernel's pooled caches, if it holds any.
func release(k PassKernel) {
	if r, ok := k.(interface{ Release() }); ok {
		r.Release()
	}
}

// chunkInputs hands out the inputs' raw bytes one chunk at a time: slices
// of the tensors read whole, or, for a streamed tensor, chunks read from
// the files with the job's non-finite policy applied to each as it is read
// (the same positions, so the same numbers, as applying it to the whole).
type chunkInputs struct {
	t    *Tensor
	raw  [][]byte // the current chunk of each input; nil for a missing one
	bufs [][]byte
	// mask marks the current chunk's positions where some input is
	// non-finite (AllowNonFinite); masked reports any.
	mask   []bool
	masked bool
}

func newChunkInputs(t *Tensor, chunk int64) *chunkInputs {
	c := &chunkInputs{t: t, raw: make([][]byte, len(t.In))}
	if t.sections == nil {
		return c
	}
	c.bufs = make([][]byte, len(t.In))
	for i, in := range t.In {
		if !t.Missing(i) {
			c.bufs[i] = t.job.bytes.Get(int(in.DType.Bytes(chunk)))
		}
	}
	if t.job.AllowNonFinite && !t.job.KeepNonFinite {
		c.mask = make([]bool, chunk)
	}
	return c
}

func (c *chunkInputs) release() {
	for _, b := range c.bufs {
		if b != nil {
			c.t.job.bytes.Put(b)
		}
	}
}

// load makes raw hold elements [s, e) of every input.
func (c *chunkInputs) load(s, e int64) error {
	t := c.t
	for i, in := range t.In {
		if t.Missing(i) {
			c.raw[i] = nil
			continue
		}
		if t.sections == nil {
			c.raw[i] = in.Data[in.DType.Bytes(s):in.DType.Bytes(e)]
			continue
		}
		lo, hi := in.DType.Bytes(t.first+s), in.DType.Bytes(t.first+e)
		b := c.bufs[i][:hi-lo]
		if _, err := t.sections[i].ReadAt(b, lo); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return t.job.inputError(i, t.Name, fmt.Errorf("reading data: %w", err))
		}
		c.raw[i] = b
	}
	if t.sections == nil {
		return nil
	}
	return c.nonFinite(e - s)
}

// nonFinite applies the non-finite policy to the chunk just read (see
// Job.nonFinite, which does it for a whole tensor).
func (c *chunkInputs) nonFinite(m int64) error {
	t, j := c.t, c.t.job
	c.masked = false
	if j.KeepNonFinite {
		return nil
	}
	for i, in := range t.In {
		if c.raw[i] == nil || !in.DType.IsFloat() {
			continue
		}
		if !j.AllowNonFinite {
			if !weights.HasNonFinite(in.DType, c.raw[i]) {
				continue
			}
			// Name the whole tensor's counts, as when it is read whole.
			nan, inf, err := countSection(in.DType, t.sections[i])
			if err != nil {
				return j.inputError(i, t.Name, err)
			}
			return j.inputError(i, t.Name, nonFiniteError(nan, inf))
		}
		if !c.masked {
			clear(c.mask[:m])
		}
		k, err := weights.MarkNonFinite(in.DType, c.raw[i], c.mask[:m])
		if err != nil {
			return j.inputError(i, t.Name, err)
		}
		c.masked = c.masked || k > 0
	}
	if !c.masked {
		return nil
	}
	for i, in := range t.In {
		if c.raw[i] != nil && in.DType.IsFloat() {
			if err := weights.ZeroMarked(in.DType, c.raw[i], c.mask[:m]); err != nil {
				return j.inputError(i, t.Name, err)
			}
		}
	}
	return nil
}

// countSection counts the NaN and Inf values of a tensor in a file, a
// chunk at a time.
func countSection(dt weights.DType, sec *io.SectionReader) (nan, inf int64, err error) {
	step := dt.Bytes(ChunkElems)
	buf := make([]byte, step)
	for off := int64(0); off < sec.Size(); off += step {
		b := buf[:min(step, sec.Size()-off)]
		if _, err := sec.ReadAt(b, off); err != nil {
			return 0, 0, fmt.Errorf("reading data: %w", err)
		}
		a, f, err := weights.CountNonFinite(dt, b)
		if err != nil {
			return 0, 0, err
		}
		nan, inf = nan+a, inf+f
	}
	return nan, inf, nil
}
