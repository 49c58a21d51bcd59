// Package merge combines checkpoints: the merge methods of mergekit (task
// arithmetic, TIES, DARE, Model Breadcrumbs, linear, SLERP, Model Stock),
// task-vector arithmetic, and the YAML recipes that drive them. All of it
// runs on one streaming executor that reads each input tensor once, holds
// O(inputs × largest tensor) raw bytes, and computes in row-aligned chunks.
package merge

import (
	"context"
	"fmt"
	"maps"
	"runtime"

	"golang.org/x/sync/semaphore"

	"github.com/weightops/weightops/weights"
)

// TensorKernel computes one output tensor (or one per output) from the
// same-named tensors of every input, chunk by chunk in index order.
type TensorKernel interface {
	// NextPass names the next pre-pass over the whole tensor, or reports
	// false when only the final Compute pass is left. It is asked again
	// after each pass, since a pass can make a later one unnecessary.
	NextPass() (int, bool)
	// Observe sees one chunk during pre-pass p; in[i] is input i's chunk.
	Observe(p int, in [][]float64)
	// EndPass closes pre-pass p.
	EndPass(p int)
	// Compute fills out[k] (one slice per output) for the next chunk.
	Compute(in [][]float64, out [][]float64)
}

// Output is one checkpoint a Job writes.
type Output struct {
	// Path is a .safetensors file, or a directory when ShardSize > 0 or
	// the path does not end in .safetensors (then model.safetensors or
	// shards are written inside it).
	Path     string
	Metadata map[string]string
	// DType chooses each tensor's output dtype.
	DType func(t weights.TensorInfo) weights.DType
}

// Job is a streaming computation over aligned tensors of several inputs.
type Job struct {
	Inputs []weights.Checkpoint
	// Tensors are the output tensors (name, shape; dtype is the source
	// dtype, used for non-float pass-through).
	Tensors []weights.TensorInfo
	Outputs []Output
	// Kernel builds the computation for one floating-point tensor.
	Kernel func(t weights.TensorInfo) (TensorKernel, error)
	// Optional marks inputs that may lack a tensor; a missing tensor reads
	// as zeros (a task vector that covers only some layers).
	Optional []bool
	// PassThrough returns the input whose bytes are copied unchanged for a
	// tensor the kernel does not compute (integer/bool tensors); -1 means
	// the kernel computes it.
	PassThrough func(t weights.TensorInfo) int
	// Workers tensors are processed at once (0: min(cores, 2)).
	Workers int
	// MaxMemory bounds the raw bytes held by concurrent tensors; a tensor
	// larger than the bound runs alone. 0 means 256 MiB.
	MaxMemory int64
	// ShardSize > 0 shards each output.
	ShardSize int64
	// Progress receives the input bytes of each finished tensor.
	Progress func(n int64)
	pool     *slicePool[byte]

	// Finalize, if set, may change the outputs' metadata after every
	// tensor is written and before commit (same encoded length), e.g. to
	// fill in input hashes computed concurrently.
	Finalize func() ([]map[string]string, error)
}

// chunkElems is the working chunk: big enough to amortise per-chunk work,
// small enough that per-input float32 scratch stays in cache-sized pieces.
const chunkElems = 1 << 16

// materializeLimit bounds the float64 copies of a tensor's inputs kept for
// multi-pass kernels; larger tensors are re-decoded on every pass.
const materializeLimit = 64 << 20

// Run executes the job and returns the files written for each output.
func (j *Job) Run() ([][]string, error) {
	workers := j.Workers
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), 2)
	}
	budget := j.MaxMemory
	if budget <= 0 {
		budget = 256 << 20
	}
	writers := make([]weights.TensorWriter, len(j.Outputs))
	files := make([][]string, len(j.Outputs))
	rewriters := make([]metadataRewriter, len(j.Outputs))
	abort := func() {
		for _, w := range writers {
			if w != nil {
				w.Abort()
			}
		}
	}
	for k, o := range j.Outputs {
		infos := make([]weights.TensorInfo, len(j.Tensors))
		for i, t := range j.Tensors {
			infos[i] = weights.TensorInfo{Name: t.Name, DType: o.DType(t), Shape: t.Shape}
		}
		md := map[string]string{"format": "pt"}
		maps.Copy(md, o.Metadata)
		w, fs, err := weights.CreateOutput(o.Path, infos, md, j.ShardSize)
		if err != nil {
			abort()
			return nil, err
		}
		writers[k], files[k] = w, fs
		rewriters[k], _ = w.(metadataRewriter)
	}
	sem := semaphore.NewWeighted(budget)
	j.pool = newSlicePool[byte](budget / 4)
	err := weights.ForEach(j.Tensors, workers, func(_ int, t weights.TensorInfo) error {
		cost := j.cost(t)
		if cost > budget {
			cost = budget
		}
		if err := sem.Acquire(context.Background(), cost); err != nil {
			return err
		}
		defer sem.Release(cost)
		return j.runTensor(t, writers)
	})
	if err == nil && j.Finalize != nil {
		var mds []map[string]string
		mds, err = j.Finalize()
		for k := range mds {
			if err == nil && mds[k] != nil {
				if rewriters[k] == nil {
					err = fmt.Errorf("%s: output cannot rewrite metadata", j.Outputs[k].Path)
					break
				}
				md := map[string]string{"format": "pt"}
				maps.Copy(md, mds[k])
				err = rewriters[k].RewriteMetadata(md)
			}
		}
	}
	if err != nil {
		abort()
		return nil, err
	}
	for k, w := range writers {
		if err := w.Commit(); err != nil {
			for _, w2 := range writers[k+1:] {
				w2.Abort()
			}
			return nil, err
		}
	}
	return files, nil
}

// RawInputKernel is a TensorKernel that reads some inputs from their raw
// bytes itself: those inputs are handed over whole with SetRaw before any
// pass, and their chunk slots in Observe/Compute are nil. The kernel tracks
// its position: chunks arrive in index order, restarting after EndPass.
type RawInputKernel interface {
	TensorKernel
	RawInput(i int) bool
	SetRaw(i int, t weights.Tensor)
}

type metadataRewriter interface {
	RewriteMetadata(md map[string]string) error
}

// cost estimates the bytes one tensor holds while it is processed: every
// input's raw bytes plus every output's.
func (j *Job) cost(t weights.TensorInfo) int64 {
	var c int64
	for _, in := range j.Inputs {
		if info, ok := in.Info(t.Name); ok {
			b, _ := info.ByteSize()
			c += b
		}
	}
	n, _ := t.NumElements()
	for _, o := range j.Outputs {
		c += n * int64(o.DType(t).Size())
	}
	if m := n * 8 * int64(len(j.Inputs)); m <= materializeLimit {
		c += m // multi-pass kernels may hold decoded copies
	}
	return c + int64(len(j.Inputs)+len(j.Outputs))*chunkElems*8
}

func (j *Job) runTensor(t weights.TensorInfo, writers []weights.TensorWriter) error {
	if src := j.PassThrough(t); src >= 0 {
		ten, err := j.Inputs[src].ReadTensor(t.Name, nil)
		if err != nil {
			return err
		}
		for k, w := range writers {
			data := ten.Data
			if dt := j.Outputs[k].DType(t); dt != ten.DType {
				if data, err = weights.ConvertBytes(ten.DType, dt, ten.Data); err != nil {
					return &weights.TensorError{File: j.Outputs[k].Path, Tensor: t.Name, Err: err}
				}
			}
			if err := w.WriteTensor(t.Name, data); err != nil {
				return err
			}
		}
		if j.Progress != nil {
			j.Progress(int64(len(ten.Data)))
		}
		return nil
	}
	kern, err := j.Kernel(t)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	raws := make([]weights.Tensor, len(j.Inputs))
	var read int64
	for i, in := range j.Inputs {
		if _, ok := in.Info(t.Name); !ok && i < len(j.Optional) && j.Optional[i] {
			continue // reads as zeros
		}
		info, _ := in.Info(t.Name)
		size, _ := info.ByteSize()
		ten, err := in.ReadTensor(t.Name, j.pool.get(int(size)))
		if err != nil {
			return err
		}
		defer j.pool.put(ten.Data)
		if !weights.SameShape(ten.Shape, t.Shape) {
			return &weights.TensorError{File: in.Path(), Tensor: t.Name, Err: fmt.Errorf("shape %s, expected %s", ten.ShapeString(), t.ShapeString())}
		}
		raws[i] = ten
		read += int64(len(ten.Data))
	}
	n, _ := t.NumElements()
	rowLen := int64(1)
	if len(t.Shape) > 0 {
		rowLen = max(1, t.Shape[len(t.Shape)-1])
	}
	chunk := max(1, chunkElems/rowLen) * rowLen
	// Kernels may read some inputs straight from their bytes (cheaper than
	// decoding to float64 and then narrowing again).
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
			in[i] = f64Pool.get(int(min(chunk, n)))
			defer f64Pool.put(in[i])
		}
	}
	outs := make([][]float64, len(writers))
	outRaw := make([][]byte, len(writers))
	for k := range outs {
		outs[k] = f64Pool.get(int(min(chunk, n)))
		defer f64Pool.put(outs[k])
		outRaw[k] = j.pool.get(int(n * int64(j.Outputs[k].DType(t).Size())))
		defer j.pool.put(outRaw[k])
	}
	decode := func(start, end int64, dst [][]float64) error {
		for i, r := range raws {
			if skip[i] {
				continue
			}
			if r.Data == nil && r.Name == "" {
				clear(dst[i][:end-start])
				continue
			}
			es := int64(r.DType.Size())
			if err := weights.Decode(r.DType, r.Data[start*es:end*es], dst[i][:end-start]); err != nil {
				return &weights.TensorError{File: j.Inputs[i].Path(), Tensor: t.Name, Err: err}
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
	if more && n*8*int64(decoded) <= materializeLimit {
		full = make([][]float64, len(raws))
		for i := range full {
			if !skip[i] {
				full[i] = f64Pool.get(int(n))
				defer f64Pool.put(full[i])
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
			v, err := chunkAt(s, min(n, s+chunk))
			if err != nil {
				return err
			}
			kern.Observe(p, v)
		}
		kern.EndPass(p)
	}
	ov := make([][]float64, len(outs))
	for s := int64(0); s < n; s += chunk {
		e := min(n, s+chunk)
		v, err := chunkAt(s, e)
		if err != nil {
			return err
		}
		for k := range outs {
			ov[k] = outs[k][:e-s]
		}
		kern.Compute(v, ov)
		for k := range outs {
			dt := j.Outputs[k].DType(t)
			es := int64(dt.Size())
			if err := weights.Encode(dt, ov[k], outRaw[k][s*es:e*es]); err != nil {
				return &weights.TensorError{File: j.Outputs[k].Path, Tensor: t.Name, Err: err}
			}
		}
	}
	for k, w := range writers {
		if err := w.WriteTensor(t.Name, outRaw[k]); err != nil {
			return err
		}
	}
	if r, ok := kern.(interface{ Release() }); ok {
		r.Release()
	}
	if j.Progress != nil {
		j.Progress(read)
	}
	return nil
}
