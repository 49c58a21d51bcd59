package wpatch

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// Requantize copies the patch p into a new patch at out, its values
// re-encoded with enc (for example F32 → 4-bit), keeping its kind, base and
// metadata (plus "quantized"), and summarizes the result.
func Requantize(ctx context.Context, p *Patch, out string, cfg quantize.Config, o stream.Options) (*Summary, error) {
	md := maps.Clone(p.Metadata)
	if md == nil {
		md = map[string]string{}
	}
	md["quantized"] = cfg.String()
	w, err := Create(out, p.Kind, md, Encoding{Values: "q", Quant: cfg})
	if err != nil {
		return nil, err
	}
	w.SetBase(p.BaseSHA256)
	err = parallel.Items(ctx, len(p.Tensors), o.Workers, func(_, i int) error {
		t := p.Tensors[i]
		dt, _ := weights.ParseDType(t.DType)
		if t.Encoding == "dense" && p.streamable(t) {
			// Read a chunk at a time; false: it is stored sparse after
			// all (under a third non-zero), so it goes the whole way.
			if done, err := requantizeStreamed(ctx, p, t, dt, w, cfg); done || err != nil {
				return err
			}
		}
		// As stored: a sparse tensor stays sparse, so memory follows the
		// payload, not the declared shape.
		idx, vals, err := p.LoadSparse(t.Name)
		if err != nil {
			return err
		}
		if idx != nil {
			// Stored values that decode to zero (a coarse quantization)
			// are not entries of the new patch, as when it is rebuilt
			// from the dense tensor.
			k := 0
			for j, v := range vals {
				if v != 0 {
					idx[k], vals[k] = idx[j], v
					k++
				}
			}
			return w.AddSparse(t.Name, t.Shape, dt, idx[:k], vals[:k])
		}
		return w.Add(t.Name, t.Shape, dt, vals)
	})
	if err != nil {
		w.Abort()
		return nil, err
	}
	errs := w.Errors()
	if err := w.Commit(); err != nil {
		return nil, err
	}
	return Summarize(out, nil, errs)
}

// requantizeStreamed re-encodes a dense entry read a chunk at a time (a
// windowed payload): a first read counts its non-zeros (it is stored
// sparse, as Add decides, when under a third are) and finds a single
// group's extremes, a second quantizes it, so memory is chunks, the
// decoder's window and the scales. It reports false, having written
// nothing, for a tensor to be stored sparse.
func requantizeStreamed(ctx context.Context, p *Patch, t Entry, dt weights.DType, w *Writer, cfg quantize.Config) (bool, error) {
	n := t.Elements()
	enc, err := quantize.NewEncoder(t.Shape, cfg)
	if err != nil {
		return false, fmt.Errorf("%s: tensor %q: %w", w.path, t.Name, err)
	}
	align := int64(enc.Align())
	chunk := max(1, stream.ChunkElems/align) * align
	each := func(f func(at int64, v []float32) error) error {
		vs, err := p.values(t, n)
		if err != nil {
			return err
		}
		defer vs.close()
		for at := int64(0); at < n; at += chunk {
			if err := context.Cause(ctx); err != nil {
				return err
			}
			v, err := vs.at(at, min(n, at+chunk))
			if err != nil {
				return err
			}
			if err := f(at, v); err != nil {
				return err
			}
		}
		return nil
	}
	var nnz int64
	mn, mx := float32(math.Inf(1)), float32(math.Inf(-1))
	if err := each(func(at int64, v []float32) error {
		for _, x := range v {
			if x != 0 {
				nnz++
			}
		}
		if enc.NeedsRange() {
			a, b, err := quantize.Extremes(v, int(at))
			if err != nil {
				return err
			}
			mn, mx = min(mn, a), max(mx, b)
		}
		return nil
	}); err != nil {
		return false, err
	}
	if w.sparse(nnz, n) {
		return false, nil
	}
	q, err := w.beginQuantized(t.Name, t.Shape, dt, enc)
	if err != nil {
		return false, err
	}
	if enc.NeedsRange() && n > 0 {
		if err := q.setRange(mn, mx); err != nil {
			return false, err
		}
	}
	deq := make([]float32, chunk)
	err = each(func(_ int64, v []float32) error { return q.write(v, deq[:len(v)]) })
	if err != nil {
		q.forget()
	}
	return true, err
}

// QuantizeCheckpoint quantizes every floating tensor of a checkpoint with
// cfg into the directory out: the quantized container (a patch of kind
// "weights", dense) as model.wq, a dequantized copy in the original dtypes
// as model.safetensors for whatever needs a plain checkpoint (integer and
// bool tensors copied), and the model directory's config and tokenizer
// files. With o.Shard, only that share of the tensors, as model-i-of-n.*.
// Each tensor is quantized once: the copy holds exactly what the container
// gives back.
func QuantizeCheckpoint(ctx context.Context, ck weights.Checkpoint, out string, cfg quantize.Config, o stream.Options) (_ *Summary, err error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	if weights.IsSafetensorsPath(out) {
		return nil, fmt.Errorf("%s: quantizing a checkpoint writes a directory (model.safetensors + model.wq)", out)
	}
	// config.json, tokenizer and arch files go beside the dequantized copy;
	// they are read (and checked) before the work.
	side, err := o.ReadModelFiles(out, ck.Path())
	if err != nil {
		return nil, err
	}
	_, statErr := os.Stat(out)
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	if os.IsNotExist(statErr) {
		// A directory made for this run goes again if the run fails
		// (os.Remove leaves it if anything else is in it).
		defer func() {
			if err != nil {
				os.Remove(out)
			}
		}()
	}
	src, stem := ck.Tensors(), "model"
	if o.Shard != nil {
		src, stem = o.Shard.Select(src), strings.TrimSuffix(o.Shard.FileName(), ".safetensors")
	}
	in := ck.Path()
	wq := filepath.Join(out, stem+".wq")
	w, err := Create(wq, "weights", map[string]string{"source": in, "quantized": cfg.String()}, Encoding{Values: "q", Quant: cfg})
	if err != nil {
		return nil, err
	}
	defer w.Abort()
	md := map[string]string{"format": "pt", "weightops.quantized": cfg.String(), "weightops.source": in}
	committed := false
	dtype := func(t weights.TensorInfo) weights.DType { return weights.OutputDType(t.DType, nil) }
	job := &stream.Job{
		Inputs:  []weights.Checkpoint{ck},
		Tensors: src,
		Outputs: []stream.Output{stream.CheckpointOutput(filepath.Join(out, stem+".safetensors"), md, dtype, 0)},
		Kernel: func(t weights.TensorInfo) (stream.Kernel, error) {
			return newQuantKernel(w, t, cfg)
		},
		// Read whole: the input and the copy, a sparse tensor's entries
		// (under a third of it) and chunk scratch.
		Cost: func(t weights.TensorInfo) int64 {
			b, _ := t.ByteSize()
			n, _ := t.NumElements()
			return 2*b + 6*n
		},
		// Streamed: the scales, the compressor's window and scratch.
		StreamCost: func(t weights.TensorInfo) int64 {
			return quantStreamCost(t, cfg)
		},
		// The container is committed just before the copy: if that fails,
		// the job discards the copy too.
		Finalize: func() ([]map[string]string, error) {
			if err := w.Commit(); err != nil {
				return nil, err
			}
			committed = true
			return nil, nil
		},
		Phase:   "quantizing",
		Options: o,
	}
	errs := w.Errors
	files, err := job.Run(ctx)
	if err != nil {
		if committed {
			os.Remove(wq) // the copy's commit failed after the container's
		}
		return nil, err
	}
	copied, err := side.Write(src, stream.OutputInfos(src, dtype))
	if err != nil {
		return nil, err
	}
	s, err := Summarize(wq, ck, errs())
	if err != nil {
		return nil, err
	}
	s.Files = append(append(files[0], wq), copied...)
	return s, nil
}

// quantStreamCost is what quantizing a streamed tensor holds besides the
// job's chunk buffers: two float32 numbers per group, the compressor's
// window and chunk scratch.
func quantStreamCost(t weights.TensorInfo, cfg quantize.Config) int64 {
	enc, err := quantize.NewEncoder(t.Shape, cfg)
	if err != nil {
		return -1
	}
	return int64(enc.Groups())*8 + 3*frameWindow + 16*stream.ChunkElems
}

// quantKernel quantizes one tensor of a checkpoint a chunk at a time and
// writes its dequantized copy (a stream.Passes kernel, so a large tensor
// is read from its file in chunks). A first pass counts the non-zeros (a
// tensor under a third non-zero is stored sparse, as Add decides) and,
// for a single-group codec, finds the extremes. A sparse tensor's entries
// are then gathered and quantized at once; a dense one is quantized as
// the copy is written. The container and the copy equal AddReconstructed's
// for the whole tensor, byte for byte.
type quantKernel struct {
	w      *Writer
	info   weights.TensorInfo
	n      int64
	enc    *quantize.Encoder
	raw    weights.Tensor
	vals   []float32
	deq    []float32
	pass   int // the next pre-pass: 0 count, 1 gather a sparse tensor's entries, 2 none
	at     int64
	nnz    int64
	mn, mx float32
	q      *quantStream
	sparse bool
	idx    []int64
	svals  []float32 // a sparse tensor's entries, then their values as stored
	next   int       // the first sparse entry not yet written out
}

func newQuantKernel(w *Writer, t weights.TensorInfo, cfg quantize.Config) (stream.Kernel, error) {
	n, err := t.NumElements()
	if err != nil {
		return nil, err
	}
	enc, err := quantize.NewEncoder(t.Shape, cfg)
	if err != nil {
		return nil, err
	}
	return stream.Passes(&quantKernel{w: w, info: t, n: n, enc: enc,
		mn: float32(math.Inf(1)), mx: float32(math.Inf(-1))}), nil
}

// RawInput reports that the kernel decodes its input itself, to float32.
func (k *quantKernel) RawInput(int) bool { return true }

// SetRaw takes the input's bytes of the next chunk.
func (k *quantKernel) SetRaw(_ int, t weights.Tensor) { k.raw = t }

// ChunkAlign makes every chunk whole groups of the codec.
func (k *quantKernel) ChunkAlign() int64 { return int64(k.enc.Align()) }

// chunk decodes the current chunk to float32.
func (k *quantKernel) chunk() ([]float32, error) {
	m := len(k.raw.Data) / k.raw.DType.Size()
	if cap(k.vals) < m {
		k.vals, k.deq = make([]float32, m), make([]float32, m)
	}
	v := k.vals[:m]
	return v, weights.DecodeFloat32(k.raw.DType, k.raw.Data, v)
}

// NextPass asks for the counting pass, then the gathering one if sparse.
func (k *quantKernel) NextPass() (int, bool) { return k.pass, k.pass < 2 }

// Observe counts non-zeros and extremes (pass 0) or gathers entries (1).
func (k *quantKernel) Observe(p int, _ [][]float64) error {
	v, err := k.chunk()
	if err != nil {
		return err
	}
	if p == 1 {
		for i, x := range v {
			if x != 0 {
				k.idx = append(k.idx, k.at+int64(i))
				k.svals = append(k.svals, x)
			}
		}
		k.at += int64(len(v))
		return nil
	}
	nnz := k.nnz // a local: an increment through k costs a store and a reload
	for _, x := range v {
		if x != 0 {
			nnz++
		}
	}
	k.nnz = nnz
	if k.enc.NeedsRange() {
		mn, mx, err := quantize.Extremes(v, int(k.at))
		if err != nil {
			return err
		}
		k.mn, k.mx = min(k.mn, mn), max(k.mx, mx)
	}
	k.at += int64(len(v))
	return nil
}

// EndPass decides dense or sparse after the count, and quantizes a
// sparse tensor's entries once gathered.
func (k *quantKernel) EndPass(p int) error {
	k.at = 0
	name := k.info.Name
	if p == 1 {
		k.idx = slices.Clip(k.idx)
		stored, err := k.w.encodeEntry(name, k.info.Shape, k.info.DType, k.idx, k.svals, k.n, true)
		if err != nil {
			return err
		}
		k.svals, k.pass = stored, 2
		return nil
	}
	if k.sparse = k.w.sparse(k.nnz, k.n); k.sparse {
		k.pass = 1
		k.idx, k.svals = make([]int64, 0, k.nnz), make([]float32, 0, k.nnz)
		return nil
	}
	k.pass = 2
	q, err := k.w.beginQuantized(name, k.info.Shape, k.info.DType, k.enc)
	if err != nil {
		return err
	}
	k.q = q
	if k.enc.NeedsRange() && k.n > 0 {
		if err := q.setRange(k.mn, k.mx); err != nil {
			return err
		}
	}
	if k.n == 0 {
		return q.write(nil, nil) // no chunk will come
	}
	return nil
}

// Compute quantizes the next chunk and writes its dequantized values.
func (k *quantKernel) Compute(_, out [][]float64) error {
	v, err := k.chunk()
	if err != nil {
		return err
	}
	o := out[0]
	if k.sparse {
		clear(o)
		end := k.at + int64(len(v))
		for ; k.next < len(k.idx) && k.idx[k.next] < end; k.next++ {
			o[k.idx[k.next]-k.at] = float64(k.svals[k.next])
		}
		k.at = end
		return nil
	}
	deq := k.deq[:len(v)]
	if err := k.q.write(v, deq); err != nil {
		return err
	}
	for i, x := range deq {
		o[i] = float64(x)
	}
	return nil
}
