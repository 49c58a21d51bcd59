package stream

import (
	"context"

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
// those inputs are handed over whole with SetRaw before any pass, and their
// chunk slots in Observe/Compute are nil. The kernel tracks its position:
// chunks arrive in index order, restarting after EndPass.
type RawInputKernel interface {
	PassKernel
	RawInput(i int) bool
	SetRaw(i int, t weights.Tensor)
}

// Passes adapts a PassKernel to a Kernel. Outputs are encoded to their
// dtypes chunk by chunk, rounded once from float64.
func Passes(k PassKernel) Kernel { return passes{k} }

type passes struct{ k PassKernel }

func (p passes) Compute(ctx context.Context, t *Tensor) error { return t.runPasses(ctx, p.k) }

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
	n, _ := t.NumElements()
	rowLen := int64(1)
	if len(t.Shape) > 0 {
		rowLen = max(1, t.Shape[len(t.Shape)-1])
	}
	chunk := max(1, ChunkElems/rowLen) * rowLen
	raws := t.In
	skip := make([]bool, len(raws))
	if rk, ok := kern.(RawInputKernel); ok {
		for i, r := range raws {
			if r.Data != nil && rk.RawInput(i) {
				skip[i] = true
				rk.SetRaw(i, r)
			}
		}
	}
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
	for k := range outs {
		outs[k] = F64.Get(int(min(chunk, n)))
		defer F64.Put(outs[k])
	}
	file := func(i int) string { f, _ := t.job.where(i, t.Name); return f }
	decode := func(start, end int64, dst [][]float64) error {
		for i, r := range raws {
			if skip[i] {
				continue
			}
			if t.Missing(i) {
				clear(dst[i][:end-start])
				continue
			}
			if err := weights.Decode(r.DType, r.Data[r.DType.Bytes(start):r.DType.Bytes(end)], dst[i][:end-start]); err != nil {
				return t.job.inputError(i, t.Name, err)
			}
		}
		return nil
	}
	// A kernel with pre-passes over a tensor small enough gets its inputs
	// decoded once for all passes instead of once per pass.
	p, more := kern.NextPass()
	var full [][]float64
	decoded := 0
	for i := range raws {
		if !skip[i] {
			decoded++
		}
	}
	if more && n*8*int64(decoded) <= MaterializeLimit {
		full = make([][]float64, len(raws))
		for i := range full {
			if !skip[i] {
				full[i] = F64.Get(int(n))
				defer F64.Put(full[i])
			}
		}
		if err := decode(0, n, full); err != nil {
			return err
		}
	}
	view := make([][]float64, len(in))
	chunkAt := func(s, e int64) ([][]float64, error) {
		for i := range in {
			switch {
			case skip[i]:
				view[i] = nil
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
	for ; more; p, more = kern.NextPass() {
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
		if err := kern.EndPass(p); err != nil {
			return &weights.TensorError{File: file(0), Tensor: t.Name, Err: err}
		}
	}
	ov := make([][]float64, len(outs))
	for s := int64(0); s < n; s += chunk {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		e := min(n, s+chunk)
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
			if err := weights.Encode(dt, ov[k], t.Out[k][dt.Bytes(s):dt.Bytes(e)]); err != nil {
				return &weights.TensorError{File: t.job.Outputs[k].Path, Tensor: t.Name, Err: err}
			}
		}
	}
	return nil
}
