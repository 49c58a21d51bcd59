// Package stream is the one streaming engine of weightops: a Job reads the
// same-named tensor of several input checkpoints, hands it to a Kernel and
// writes what the kernel computes to output sinks (safetensors
// checkpoints, patch files), tensor by tensor, on a pool of workers, with
// the bytes in flight bounded by Options.MaxMemory and buffers pooled
// between tensors. Merges, task-vector arithmetic, patch apply and remove,
// signature extraction, low-rank compression, quantization and conversion
// are all jobs over it.
//
// Non-finite inputs. A NaN or ±Inf value in an input of a computed tensor
// is an error naming the file, the tensor and the count, unless
// Options.AllowNonFinite; then it is handled the same way whatever the
// kernel: at each such position every input reads as 0 (no part in norms,
// ranks, cuts) and every floating output is NaN. Copied tensors are copied
// as they are.
//
// A job can be cancelled through its context: the workers stop between
// tensors (and between chunks of a tensor), the sinks are aborted, and no
// output is left behind.
package stream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"maps"
	"math"
	"runtime/debug"
	"slices"
	"sync/atomic"

	"golang.org/x/sync/semaphore"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/weights"
)

// Sink receives the tensors a job computes for one output. The tensors
// were declared when the sink was created; they may arrive in any order
// and from several goroutines. Nothing appears at the output until Commit
// succeeds; Abort (safe after Commit) discards everything.
// weights.TensorWriter is a Sink.
type Sink interface {
	WriteTensor(name string, data []byte) error
	Commit() error
	Abort()
}

// RangeSink is a Sink that also takes a tensor in parts (see
// weights.SafetensorsWriter.WriteTensorAt): what lets a job write a large
// tensor chunk by chunk instead of holding it whole.
type RangeSink interface {
	WriteTensorAt(name string, data []byte, off int64) error
}

// MetadataRewriter is a Sink that can replace its metadata before Commit
// (same encoded length), for values known only at the end, such as input
// digests computed while the job streams.
type MetadataRewriter interface {
	RewriteMetadata(md map[string]string) error
}

// Flusher is a Sink that can send what it holds to disk before Commit
// (see weights.SafetensorsWriter.Flush).
type Flusher interface {
	Flush() error
}

// Router is an input checkpoint that reads each tensor of a job from a
// file and tensor name of its own (a merge's slices read layer 3 of one
// model as layer 7 of the output): errors about an input name those.
type Router interface {
	Route(tensor string) (file, name string)
}

// where names input i's file and tensor for a job tensor, in errors.
func (j *Job) where(i int, tensor string) (file, name string) {
	if r, ok := j.Inputs[i].(Router); ok {
		return r.Route(tensor)
	}
	return j.Inputs[i].Path(), tensor
}

// inputError is a TensorError about input i's copy of a job tensor.
func (j *Job) inputError(i int, tensor string, err error) error {
	file, name := j.where(i, tensor)
	return &weights.TensorError{File: file, Tensor: name, Err: err}
}

// Output is one output of a job.
type Output struct {
	// Path names the output in errors and in the files returned.
	Path string
	// DType chooses each tensor's dtype in this output.
	DType func(t weights.TensorInfo) weights.DType
	// Create opens the sink for the job's tensors (with their source
	// dtypes; the sink's own dtypes are what DType says). It returns the
	// files the sink will write.
	Create func(tensors []weights.TensorInfo) (Sink, []string, error)
	// Cost, if set, is the bytes the sink holds while it takes one tensor
	// (a compressor's buffers), counted against the job's memory bound.
	Cost func(t weights.TensorInfo) int64
	// StreamCost, if set, is what the sink holds while it takes a tensor
	// in parts (see RangeSink), or -1 for a tensor it takes whole; an
	// output with a Cost and no StreamCost takes every tensor whole.
	StreamCost func(t weights.TensorInfo) int64
}

// CheckpointOutput is an Output writing a safetensors checkpoint at path:
// a .safetensors file, or a directory of model.safetensors or Hugging Face
// shards (see weights.CreateOutput), with metadata md as given (see
// HFMetadata).
func CheckpointOutput(path string, md map[string]string, dtype func(weights.TensorInfo) weights.DType, shardSize int64) Output {
	return Output{Path: path, DType: dtype, Create: func(tensors []weights.TensorInfo) (Sink, []string, error) {
		return weights.CreateOutput(path, OutputInfos(tensors, dtype), md, shardSize)
	}}
}

// HFMetadata returns a copy of the metadata maps, later ones overriding,
// with format=pt unless one sets a format: transformers refuses
// safetensors files without it.
func HFMetadata(mds ...map[string]string) map[string]string {
	out := map[string]string{"format": "pt"}
	for _, md := range mds {
		maps.Copy(out, md)
	}
	return out
}

// OutputInfos is tensors with each dtype replaced by dtype's choice.
func OutputInfos(tensors []weights.TensorInfo, dtype func(weights.TensorInfo) weights.DType) []weights.TensorInfo {
	out := make([]weights.TensorInfo, len(tensors))
	for i, t := range tensors {
		out[i] = weights.TensorInfo{Name: t.Name, DType: dtype(t), Shape: t.Shape}
	}
	return out
}

// Kernel computes one tensor of a job.
type Kernel interface {
	// Compute fills t.Out from t.In. It should return promptly once ctx
	// is done.
	Compute(ctx context.Context, t *Tensor) error
}

// KernelFunc adapts a function to a Kernel.
type KernelFunc func(ctx context.Context, t *Tensor) error

// Compute calls f.
func (f KernelFunc) Compute(ctx context.Context, t *Tensor) error { return f(ctx, t) }

// Tensor is the work on one tensor: its inputs' bytes and the outputs to
// fill.
type Tensor struct {
	weights.TensorInfo
	// In holds each input's tensor, raw; a missing optional input is the
	// zero Tensor (nil Data), which reads as zeros.
	In []weights.Tensor
	// Out holds one buffer per output, sized for the tensor in OutDType[k];
	// the kernel fills it completely.
	Out      [][]byte
	OutDType []weights.DType
	job      *Job
	// sections, when set, hold the inputs of a tensor streamed from its
	// files: In[i].Data is then nil, Out is nil, and Passes reads each
	// chunk from sections[i] and writes each output chunk to the sinks.
	sections []*io.SectionReader
	// first and count, for a streamed tensor computed in parts (see
	// Job.Split), are the part's elements: count > 0 elements from first.
	first, count int64
	// reverse, for a part taken by a BackForker's helper, runs the final
	// pass's chunks from the part's end down.
	reverse bool
	// observe, for a part taken by a PassSplitter's helper, is 1 + the
	// pre-pass whose chunks the part's kernel observes (and nothing else).
	observe int
}

// elems is the number of elements the kernel computes: the tensor's, or
// its part's.
func (t *Tensor) elems() int64 {
	if t.count > 0 {
		return t.count
	}
	n, _ := t.NumElements()
	return n
}

// Missing reports whether input i lacks the tensor (an optional input).
func (t *Tensor) Missing(i int) bool { return t.In[i].Data == nil && t.In[i].Name == "" }

// Job is a streaming computation over aligned tensors of several inputs.
type Job struct {
	Inputs []weights.Checkpoint
	// Optional marks inputs that may lack a tensor; a missing tensor reads
	// as zeros (a task vector that covers only some layers).
	Optional []bool
	// Tensors are the tensors to compute (name and shape; the dtype is the
	// source's, used for pass-through and by Output.DType).
	Tensors []weights.TensorInfo
	Outputs []Output
	// Kernel builds the computation of one tensor.
	Kernel func(t weights.TensorInfo) (Kernel, error)
	// PassThrough returns the input whose bytes are copied (converted to
	// each output's dtype) for a tensor no kernel computes, or -1 for a
	// tensor the kernel computes. nil means: floating tensors are
	// computed, the others copied from input 0.
	PassThrough func(t weights.TensorInfo) int
	// Cost, if set, estimates the bytes one tensor holds while processed,
	// replacing the default estimate (inputs + outputs + decoded copies).
	// A job with a Cost streams no tensor unless StreamCost says so.
	Cost func(t weights.TensorInfo) int64
	// StreamCost, if set, is what a tensor's kernel holds besides the chunk
	// buffers when the tensor is streamed (see StreamAbove), or -1 for a
	// tensor that must be read whole.
	StreamCost func(t weights.TensorInfo) int64
	// Split, if set, reports whether tensor t's kernel computes each
	// element from the inputs' elements at the same position alone, with
	// no pre-pass and nothing carried from one chunk to the next: a large
	// streamed tensor is then computed in parts of whole rows (see
	// PartElems) by several workers at once, each part with a kernel of
	// its own, so both cores work on one large tensor.
	Split func(t weights.TensorInfo) bool
	// Phase names the job's progress phase ("merging").
	Phase string
	// KeepNonFinite hands NaN and Inf inputs to the kernel as they are,
	// whole or streamed, instead of applying the non-finite policy: for a
	// kernel that looks at them (a checker) or one that computes element
	// by element and so carries them through (patch apply and remove).
	KeepNonFinite bool
	// Finalize, if set, runs after every tensor is written and before
	// commit, and may return new metadata for outputs (nil entries keep
	// theirs), e.g. to fill in input hashes computed concurrently.
	Finalize func() ([]map[string]string, error)
	Options

	bytes *Pool[byte]
	sinks []Sink
	// ranged reports whether every sink takes tensors in parts.
	ranged bool
	// spare counts the workers that found no tensor left to start or are
	// waiting for memory: their cores are free for a tensor running to
	// compute part of its last pass (see Forker); below zero, a helper
	// stops after its part. forked counts the parts so computed.
	spare  atomic.Int32
	forked atomic.Int64
}

// StreamAbove is the size (the bytes of a tensor's inputs) above which a
// job streams a tensor chunk by chunk from its files, when its kernel is a
// Passes kernel, its inputs store the tensor raw (TensorSectioner) and its
// outputs take parts (RangeSink): such a tensor holds chunks, not whole
// copies, so its memory is bounded whatever its size and two can run at
// once under the default budget. Reading a chunk again for each pass from
// the page cache costs less than decoding a tensor once into a float64
// copy that spills the CPU caches (a slerp of three 1 GiB models: 5.5 →
// 3.3–4.7 s at 1 MiB instead of 16 MiB), so only small tensors are read
// whole.
var StreamAbove int64 = 1 << 20

// ChunkReader is a Kernel that reads its inputs chunk by chunk through the
// Tensor (Passes kernels and what wraps them) and so can be streamed.
type ChunkReader interface {
	ReadsChunks() bool
}

func readsChunks(k Kernel) bool {
	c, ok := k.(ChunkReader)
	return ok && c.ReadsChunks()
}

// streams reports whether tensor t is streamed from its inputs' files
// when its kernel reads chunks: Job.Cost is unset (a job with its own
// accounting holds tensors whole), the sinks take parts, every present
// input has t raw in a file, and t is large.
func (j *Job) streams(t weights.TensorInfo) bool {
	if (j.Cost != nil && j.StreamCost == nil) || !j.ranged {
		return false
	}
	if j.StreamCost != nil && j.StreamCost(t) < 0 {
		return false
	}
	for _, o := range j.Outputs {
		if (o.Cost != nil && o.StreamCost == nil) || (o.StreamCost != nil && o.StreamCost(t) < 0) {
			return false
		}
	}
	var size int64
	for _, in := range j.Inputs {
		info, ok := in.Info(t.Name)
		if !ok {
			continue
		}
		if _, ok := weights.TensorSection(in, t.Name); !ok {
			return false
		}
		b, _ := info.ByteSize()
		size += b
	}
	// An empty tensor has no chunk to write.
	return size > StreamAbove && size > 0
}

// Run executes the job and returns the files written for each output. On
// any error, or when ctx is cancelled, every output is discarded.
func (j *Job) Run(ctx context.Context) ([][]string, error) {
	budget := j.maxMemory()
	sinks := make([]Sink, len(j.Outputs))
	files := make([][]string, len(j.Outputs))
	abort := func() {
		for _, s := range sinks {
			if s != nil {
				s.Abort()
			}
		}
	}
	for k, o := range j.Outputs {
		s, fs, err := o.Create(j.Tensors)
		if err != nil {
			abort()
			return nil, err
		}
		sinks[k], files[k] = s, fs
	}
	j.sinks = sinks
	j.ranged = true
	for _, s := range sinks {
		if _, ok := s.(RangeSink); !ok {
			j.ranged = false
		}
	}
	if j.Phase != "" {
		StartPhase(j.Progress, j.Phase, j.inputBytes())
	}
	// A tensor larger than the budget runs alone, but it still needs its
	// bytes: keep the Go heap limit (which the CLI sets near the budget)
	// above what the largest tensor needs, or the collector thrashes.
	var most int64
	for _, t := range j.Tensors {
		most = max(most, j.cost(t))
	}
	if lim := debug.SetMemoryLimit(-1); lim != math.MaxInt64 {
		if need := max(most, budget) + max(most, budget)/2 + 64<<20; need > lim {
			defer debug.SetMemoryLimit(debug.SetMemoryLimit(need))
		}
	}
	sem := semaphore.NewWeighted(budget)
	j.bytes = NewPool[byte](budget / 4)
	// Copies reuse one read and one conversion buffer per worker, grown to
	// the largest tensor: no allocation per tensor once warm.
	copyBufs := make([][2][]byte, j.workers())
	items := j.items()
	// Workers beyond the items are never started: their cores are spare
	// from the start.
	j.spare.Store(int32(max(0, j.workers()-len(items))))
	err := parallel.ItemsIdle(ctx, len(items), j.workers(), func(w, i int) error {
		it := items[i]
		t := j.Tensors[it.tensor]
		if it.count > 0 {
			cost := min(j.cost(t), budget)
			if err := j.acquire(ctx, sem, cost); err != nil {
				return err
			}
			defer sem.Release(cost)
			return j.runPart(ctx, t, it.first, it.count)
		}
		src := j.passThrough(t)
		sec, chunked := j.copySection(t, src)
		cost := min(j.cost(t), budget)
		if chunked {
			cost = 4 * ChunkElems * 8
		}
		if err := j.acquire(ctx, sem, cost); err != nil {
			return err
		}
		defer sem.Release(cost)
		switch {
		case chunked:
			return j.copyChunks(ctx, t, src, sec, &copyBufs[w])
		case src >= 0:
			return j.copyTensor(t, src, sinks, &copyBufs[w])
		}
		return j.runTensor(ctx, t, sinks)
	}, func() { j.spare.Add(1) })
	if err == nil && j.Finalize != nil {
		// The outputs go to disk while Finalize runs (a merge's hashing
		// can outlast its writes): the fsync at commit then waits only for
		// what Finalize changes.
		flushed := make(chan error, 1)
		go func() { flushed <- flushSinks(sinks) }()
		var mds []map[string]string
		mds, err = j.Finalize()
		if ferr := <-flushed; err == nil {
			err = ferr
		}
		for k := range mds {
			if err != nil || mds[k] == nil {
				continue
			}
			rw, ok := sinks[k].(MetadataRewriter)
			if !ok {
				err = fmt.Errorf("%s: output cannot rewrite metadata", j.Outputs[k].Path)
				break
			}
			err = rw.RewriteMetadata(HFMetadata(mds[k]))
		}
	}
	if err == nil {
		err = context.Cause(ctx)
	}
	if err != nil {
		abort()
		return nil, err
	}
	for k, s := range sinks {
		if err := s.Commit(); err != nil {
			for _, s2 := range sinks[k+1:] {
				s2.Abort()
			}
			return nil, err
		}
	}
	return files, nil
}

// claimSpare takes a spare core, if there is one.
func (j *Job) claimSpare() bool {
	for {
		n := j.spare.Load()
		if n <= 0 {
			return false
		}
		if j.spare.CompareAndSwap(n, n-1) {
			return true
		}
	}
}

// acquire takes cost bytes of the memory bound; while it waits, the
// worker's core counts as spare.
func (j *Job) acquire(ctx context.Context, sem *semaphore.Weighted, cost int64) error {
	if sem.TryAcquire(cost) {
		return nil
	}
	j.spare.Add(1)
	err := sem.Acquire(ctx, cost)
	j.spare.Add(-1)
	if err != nil {
		return context.Cause(ctx)
	}
	return nil
}

// PartElems is the size of the parts a tensor is split into (see
// Job.Split), rounded to whole rows: a 7B model's 131M-entry embedding is
// eight. A variable for tests.
var PartElems int64 = 1 << 24

// item is one unit of a job's work: a tensor (count 0), or count elements
// of one from first.
type item struct {
	tensor       int
	first, count int64
}

// items lists the job's work in tensor order, each large tensor that
// Split allows as its parts in a row, so that idle workers take the next
// part of the tensor still running.
func (j *Job) items() []item {
	var out []item
	for i, t := range j.Tensors {
		n, _ := t.NumElements()
		if j.Split == nil || n <= PartElems || j.passThrough(t) >= 0 || !j.streams(t) || !j.Split(t) {
			out = append(out, item{tensor: i})
			continue
		}
		row := int64(1)
		if len(t.Shape) > 0 {
			row = max(1, t.Shape[len(t.Shape)-1])
		}
		step := max(1, PartElems/row) * row
		for s := int64(0); s < n; s += step {
			out = append(out, item{tensor: i, first: s, count: min(step, n-s)})
		}
	}
	return out
}

// runPart computes elements [first, first+count) of a tensor split into
// parts: streamed, as the whole tensor would be, with its own kernel.
func (j *Job) runPart(ctx context.Context, t weights.TensorInfo, first, count int64) error {
	kern, err := j.Kernel(t)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	if !readsChunks(kern) {
		return fmt.Errorf("tensor %q: split into parts, but its kernel reads it whole", t.Name)
	}
	task := &Tensor{TensorInfo: t, In: make([]weights.Tensor, len(j.Inputs)), job: j, first: first, count: count}
	return j.streamTensor(ctx, t, kern, task)
}

// flushSinks flushes the sinks that can be.
func flushSinks(sinks []Sink) error {
	for _, s := range sinks {
		if f, ok := s.(Flusher); ok {
			if err := f.Flush(); err != nil {
				return err
			}
		}
	}
	return nil
}

// inputBytes sums the bytes the job reads: what progress counts.
func (j *Job) inputBytes() int64 {
	var n int64
	for _, t := range j.Tensors {
		for _, in := range j.Inputs {
			if info, ok := in.Info(t.Name); ok {
				b, _ := info.ByteSize()
				n += b
			}
		}
	}
	return n
}

// cost estimates the bytes one tensor holds while it is processed: every
// input's raw bytes, every output's, decoded copies for multi-pass kernels
// of tensors small enough to keep them, and chunk scratch.
func (j *Job) cost(t weights.TensorInfo) int64 {
	var c int64
	if j.streams(t) {
		return j.streamCost(t)
	}
	if j.Cost != nil {
		c = j.Cost(t)
		for _, o := range j.Outputs {
			if o.Cost != nil {
				c += o.Cost(t)
			}
		}
		return c
	}
	for _, in := range j.Inputs {
		if info, ok := in.Info(t.Name); ok {
			b, _ := info.ByteSize()
			c += b
		}
	}
	n, _ := t.NumElements()
	for _, o := range j.Outputs {
		c += o.DType(t).Bytes(n)
		if o.Cost != nil {
			c += o.Cost(t)
		}
	}
	if m := n * 8 * int64(len(j.Inputs)); m <= MaterializeLimit {
		c += m // multi-pass kernels may hold decoded copies
	}
	return c + int64(len(j.Inputs)+len(j.Outputs))*ChunkElems*8
}

// streamCost is what a streamed tensor holds: each input's and output's
// chunk, raw and decoded (a helper computing part of the final pass, see
// Forker, holds a second set, a few MiB, not counted), and what the
// kernel holds: Job.StreamCost's
// figure, or without one a generous allowance (task vectors cached up to
// MaterializeLimit and a random mask of one bit per entry and input).
func (j *Job) streamCost(t weights.TensorInfo) int64 {
	n, _ := t.NumElements()
	k := int64(len(j.Inputs) + len(j.Outputs))
	c := k * ChunkElems * 16
	for _, o := range j.Outputs {
		if o.StreamCost != nil {
			c += o.StreamCost(t)
		}
	}
	if j.StreamCost != nil {
		return c + j.StreamCost(t)
	}
	return c + MaterializeLimit + int64(len(j.Inputs))*(n/8+8)
}

func (j *Job) passThrough(t weights.TensorInfo) int {
	if j.PassThrough != nil {
		return j.PassThrough(t)
	}
	if t.DType.IsFloat() {
		return -1
	}
	return 0
}

func (j *Job) runTensor(ctx context.Context, t weights.TensorInfo, sinks []Sink) error {
	kern, err := j.Kernel(t)
	if err != nil {
		return fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	task := &Tensor{TensorInfo: t, In: make([]weights.Tensor, len(j.Inputs)), job: j}
	if j.streams(t) && readsChunks(kern) {
		return j.streamTensor(ctx, t, kern, task)
	}
	var read int64
	for i, in := range j.Inputs {
		info, ok, err := j.input(i, t)
		if err != nil {
			return err
		}
		if !ok {
			continue // reads as zeros
		}
		size, _ := info.ByteSize()
		ten, err := in.ReadTensor(t.Name, j.bytes.Get(int(size)))
		if err != nil {
			return err
		}
		defer j.bytes.Put(ten.Data)
		task.In[i] = ten
		read += int64(len(ten.Data))
	}
	n, _ := t.NumElements()
	mask, err := j.nonFinite(task, n)
	if err != nil {
		return err
	}
	task.Out = make([][]byte, len(j.Outputs))
	task.OutDType = make([]weights.DType, len(j.Outputs))
	for k, o := range j.Outputs {
		dt := o.DType(t)
		task.OutDType[k] = dt
		task.Out[k] = j.bytes.Get(int(dt.Bytes(n)))
		defer j.bytes.Put(task.Out[k])
	}
	if err := kern.Compute(ctx, task); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if mask != nil {
		for k := range task.Out {
			weights.SetNaNMarked(task.OutDType[k], task.Out[k], mask)
		}
	}
	for k, s := range sinks {
		if err := s.WriteTensor(t.Name, task.Out[k]); err != nil {
			return err
		}
	}
	if r, ok := kern.(interface{ Release() }); ok {
		r.Release()
	}
	add(j.Progress, read)
	return nil
}

// input finds tensor t in input i and checks its shape: ok is false for
// an optional input that lacks it (it reads as zeros); a missing tensor
// of another input, or one of another shape, is an error naming both.
func (j *Job) input(i int, t weights.TensorInfo) (info weights.TensorInfo, ok bool, err error) {
	info, ok = j.Inputs[i].Info(t.Name)
	switch {
	case !ok && i < len(j.Optional) && j.Optional[i]:
		return info, false, nil
	case !ok:
		return info, false, j.inputError(i, t.Name, weights.ErrNotFound)
	case !weights.SameShape(info.Shape, t.Shape):
		return info, false, j.inputError(i, t.Name, fmt.Errorf("shape %s, expected %s", info.ShapeString(), t.ShapeString()))
	}
	return info, true, nil
}

// streamTensor runs a Passes kernel on t with its inputs left in their
// files: Passes reads each chunk when it needs it and writes each output
// chunk to the sinks.
func (j *Job) streamTensor(ctx context.Context, t weights.TensorInfo, kern Kernel, task *Tensor) error {
	task.sections = make([]*io.SectionReader, len(j.Inputs))
	var read int64
	for i, in := range j.Inputs {
		info, ok, err := j.input(i, t)
		if err != nil {
			return err
		}
		if !ok {
			continue // reads as zeros
		}
		sec, ok := weights.TensorSection(in, t.Name)
		if !ok {
			return j.inputError(i, t.Name, fmt.Errorf("cannot read the tensor in parts"))
		}
		task.In[i] = weights.Tensor{TensorInfo: info}
		task.In[i].Name = t.Name
		task.sections[i] = sec
		read += info.DType.Bytes(task.elems())
	}
	task.OutDType = make([]weights.DType, len(j.Outputs))
	for k, o := range j.Outputs {
		task.OutDType[k] = o.DType(t)
	}
	if err := kern.Compute(ctx, task); err != nil {
		return err
	}
	if err := context.Cause(ctx); err != nil {
		return err
	}
	if r, ok := kern.(interface{ Release() }); ok {
		r.Release()
	}
	add(j.Progress, read)
	return nil
}

// nonFinite applies the non-finite policy to a tensor's inputs: an error
// naming the first input holding NaN or Inf, or with AllowNonFinite the
// mask of positions where any input does (their values zeroed in every
// input), nil when there are none.
func (j *Job) nonFinite(t *Tensor, n int64) ([]bool, error) {
	if j.KeepNonFinite {
		return nil, nil
	}
	var mask []bool
	for i, in := range t.In {
		if in.Data == nil || !in.DType.IsFloat() {
			continue
		}
		if !j.AllowNonFinite {
			nan, inf, err := weights.CountNonFinite(in.DType, in.Data)
			if err != nil {
				return nil, j.inputError(i, t.Name, err)
			}
			if nan+inf > 0 {
				return nil, j.inputError(i, t.Name, nonFiniteError(nan, inf))
			}
			continue
		}
		if mask == nil {
			mask = make([]bool, n)
		}
		if _, err := weights.MarkNonFinite(in.DType, in.Data, mask); err != nil {
			return nil, j.inputError(i, t.Name, err)
		}
	}
	if mask == nil || !slices.Contains(mask, true) {
		return nil, nil
	}
	for i, in := range t.In {
		if in.Data != nil && in.DType.IsFloat() {
			if err := weights.ZeroMarked(in.DType, in.Data, mask); err != nil {
				return nil, j.inputError(i, t.Name, err)
			}
		}
	}
	return mask, nil
}

func nonFiniteError(nan, inf int64) error {
	return fmt.Errorf("%d NaN and %d Inf values (--allow-nonfinite computes with them: NaN out where any input is non-finite)", nan, inf)
}

// copySection returns the file section of a copied tensor large enough to
// be copied chunk by chunk (see StreamAbove) when input src stores it raw
// and every sink takes parts.
func (j *Job) copySection(t weights.TensorInfo, src int) (*io.SectionReader, bool) {
	if src < 0 || !j.ranged {
		return nil, false
	}
	sec, ok := weights.TensorSection(j.Inputs[src], t.Name)
	if !ok || sec.Size() <= StreamAbove {
		return nil, false
	}
	return sec, true
}

// copyChunks is copyTensor a chunk at a time from the input's file: whole
// blocks of a block dtype, each converted to every output's dtype and
// written as a part.
func (j *Job) copyChunks(ctx context.Context, t weights.TensorInfo, src int, sec *io.SectionReader, bufs *[2][]byte) error {
	info, _ := j.Inputs[src].Info(t.Name)
	if !weights.SameShape(info.Shape, t.Shape) {
		return j.inputError(src, t.Name, fmt.Errorf("shape %s, expected %s", info.ShapeString(), t.ShapeString()))
	}
	n, _ := t.NumElements()
	be := info.DType.BlockElems()
	step := max(be, ChunkElems/be*be)
	for s := int64(0); s < n; s += step {
		if err := context.Cause(ctx); err != nil {
			return err
		}
		e := min(n, s+step)
		lo, hi := info.DType.Bytes(s), info.DType.Bytes(e)
		if int64(cap(bufs[0])) < hi-lo {
			bufs[0] = make([]byte, hi-lo)
		}
		raw := bufs[0][:hi-lo]
		if _, err := sec.ReadAt(raw, lo); err != nil {
			if errors.Is(err, io.EOF) {
				err = io.ErrUnexpectedEOF
			}
			return j.inputError(src, t.Name, fmt.Errorf("reading data: %w", err))
		}
		for k, sink := range j.sinks {
			data := raw
			dt := j.Outputs[k].DType(t)
			if dt != info.DType {
				var err error
				if data, err = weights.ConvertBytesInto(info.DType, dt, raw, bufs[1]); err != nil {
					return &weights.TensorError{File: j.Outputs[k].Path, Tensor: t.Name, Err: err}
				}
				bufs[1] = data
			}
			if err := sink.(RangeSink).WriteTensorAt(t.Name, data, dt.Bytes(s)); err != nil {
				return err
			}
		}
	}
	add(j.Progress, sec.Size())
	return nil
}

// copyTensor writes input src's bytes of t to every output, converted to
// the output's dtype, through the worker's buffers.
func (j *Job) copyTensor(t weights.TensorInfo, src int, sinks []Sink, bufs *[2][]byte) error {
	ten, err := j.Inputs[src].ReadTensor(t.Name, bufs[0])
	if err != nil {
		return err
	}
	bufs[0] = ten.Data
	for k, s := range sinks {
		data := ten.Data
		if dt := j.Outputs[k].DType(t); dt != ten.DType {
			if data, err = weights.ConvertBytesInto(ten.DType, dt, ten.Data, bufs[1]); err != nil {
				return &weights.TensorError{File: j.Outputs[k].Path, Tensor: t.Name, Err: err}
			}
			bufs[1] = data
		}
		if err := s.WriteTensor(t.Name, data); err != nil {
			return err
		}
	}
	add(j.Progress, int64(len(ten.Data)))
	return nil
}
