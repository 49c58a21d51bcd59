package wpatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// Metadata keys a patched checkpoint carries so that `patch remove` can
// restore the original bit for bit.
const (
	MetaPatches      = "weightops.patches"       // JSON []AppliedPatch
	MetaUndo         = "weightops.undo"          // undo records of the first format (read, no longer written; see MetaUndoRecords)
	MetaUndoMetadata = "weightops.undo_metadata" // JSON of the original metadata
)

// AppliedPatch records one patch applied to a checkpoint.
type AppliedPatch struct {
	SHA256 string  `json:"sha256"`
	Scale  float64 `json:"scale"`
	File   string  `json:"file"`
	Kind   string  `json:"kind"`
}

// ApplyOptions control Apply and Remove.
type ApplyOptions struct {
	// Scales, one per patch (default 1).
	Scales []float64
	// Strict makes a patch recorded for another base checkpoint an error
	// instead of a warning.
	Strict bool
	// Options: workers, memory, output sharding. With Shard, only this
	// worker's share of the tensors is written; the undo records cover
	// every patched tensor, so every shard carries the same metadata.
	stream.Options
	// Replace gives tensors whose output bytes are these instead of the
	// patched values (batchnorm statistics recalibrated on the patched
	// model): each is recorded whole in the undo records, so Remove still
	// restores the original bit for bit.
	Replace map[string][]byte
	// Metadata adds entries to the output's metadata.
	Metadata map[string]string
	// AverageBNAffine gives batchnorm weights and biases (a .weight or
	// .bias whose layer has a .running_mean) the mean of the patches'
	// scaled changes instead of their sum, as RWS composes signatures.
	// Remove reads the choice from the patched model's metadata.
	AverageBNAffine bool
	// NoUndo computes no undo records, for an output that cannot carry
	// them (a .gguf): one pass instead of two, and a model that patch
	// remove refuses.
	NoUndo bool
}

// MetaBNAveraged records in a patched model that batchnorm weights and
// biases got the mean of the patches' changes ("true").
const MetaBNAveraged = "weightops.bn_affine_averaged"

// averageBN marks the patched batchnorm weights and biases of the model,
// whose patches' changes are averaged.
func (pl *patchPlan) averageBN() {
	pl.avg = map[string]bool{}
	for name := range pl.touched {
		for _, suf := range []string{".weight", ".bias"} {
			if layer, ok := strings.CutSuffix(name, suf); ok {
				if _, bn := pl.model.Info(layer + ".running_mean"); bn {
					pl.avg[name] = true
				}
			}
		}
	}
}

// ApplyReport tells what Apply or Remove did.
type ApplyReport struct {
	Files    []string `json:"files"`
	Warnings []string `json:"warnings"`
	Tensors  int      `json:"patched_tensors"`
	// UndoEntries is how many elements needed an explicit undo record:
	// those where rounding θ+d and then θ'−d to the model's dtype does
	// not give θ back.
	UndoEntries int64 `json:"undo_entries"`
	// UndoBytes is the records' size, compressed.
	UndoBytes int64 `json:"undo_bytes"`
	// UndoFile is the file beside the output holding the records when
	// they are too large for its metadata (Apply).
	UndoFile string `json:"undo_file,omitempty"`
}

// patchPlan maps each patched tensor to the patches touching it.
type patchPlan struct {
	model   weights.Checkpoint
	patches []*Patch
	scales  []float64
	touched map[string][]int
	// extra are tensors no patch touches that the kernel still visits
	// (replaced ones, or ones with undo records).
	extra map[string]bool
	// avg are tensors whose patches' changes are averaged, not summed.
	avg map[string]bool
	// whole are tensors computed whole even when a chunked kernel exists.
	whole map[string]bool
}

// newPlan checks the patches against the model: every tensor present,
// of the same shape and a patchable dtype; a patch of kind "weights" (a
// quantized checkpoint container, .wq) is not a difference and is refused.
// A tensor recorded for another dtype than the model's is a warning (an
// error when strict): the patch was likely made for another model.
func newPlan(model weights.Checkpoint, patches []*Patch, scales []float64, strict bool) (*patchPlan, []string, error) {
	if len(scales) == 0 {
		scales = make([]float64, len(patches))
		for i := range scales {
			scales[i] = 1
		}
	}
	if len(scales) != len(patches) {
		return nil, nil, fmt.Errorf("%d scales for %d patches", len(scales), len(patches))
	}
	pl := &patchPlan{model: model, patches: patches, scales: scales, touched: map[string][]int{}}
	var warnings []string
	for i, p := range patches {
		if p.Kind == "weights" {
			return nil, nil, fmt.Errorf("%s: a quantized checkpoint container (kind weights), not a patch: it holds weights, not differences (use the dequantized model beside it)", p.Path)
		}
		mismatched := 0
		for _, t := range p.Tensors {
			info, ok := model.Info(t.Name)
			switch {
			case !ok:
				return nil, nil, fmt.Errorf("%s: tensor %q: not in %s (patch made for another model?)", p.Path, t.Name, model.Path())
			case !weights.SameShape(info.Shape, t.Shape):
				return nil, nil, fmt.Errorf("%s: tensor %q: shape %v, %s has %s", p.Path, t.Name, t.Shape, model.Path(), info.ShapeString())
			case !info.DType.IsFloat() || !info.DType.Writable():
				return nil, nil, fmt.Errorf("%s: tensor %q: cannot patch a %s tensor", p.Path, t.Name, info.DType)
			case t.DType != info.DType.String():
				if strict {
					return nil, nil, fmt.Errorf("%s: tensor %q: made for a %s tensor, %s has %s (--strict)", p.Path, t.Name, t.DType, model.Path(), info.DType)
				}
				if mismatched == 0 {
					warnings = append(warnings, fmt.Sprintf("%s: tensor %q was made for a %s tensor, %s has %s", p.Path, t.Name, t.DType, model.Path(), info.DType))
				}
				mismatched++
			}
			pl.touched[t.Name] = append(pl.touched[t.Name], i)
		}
		if mismatched > 1 {
			warnings = append(warnings, fmt.Sprintf("%s: %d tensors in all made for another dtype", p.Path, mismatched))
		}
	}
	return pl, warnings, nil
}

// deltaSum is Σ s_i·d_i over the patches touching a tensor, in patch
// order, in float64, computed a chunk at a time from the patches' values
// as stored (a sparse patch's entries by index; a large dense one decoded
// a chunk at a time as it is read, see valueStream), so a tensor never
// needs a whole float64 sum or a densified copy of a sparse patch. Apply
// and Remove compute it identically.
type deltaSum struct {
	terms []deltaTerm
	acc   []float64
}

type deltaTerm struct {
	scale  float64
	idx    []int64 // nil for a dense patch; ascending
	vals   []float32
	values *valueStream // a dense patch read in order, or nil
	// entries are a sparse patch's read in order, or nil
	entries *sparseStream
	// quant is a dense quantized patch's codes, or nil
	quant *quantize.Quantized
	deq   []float32
}

// deltas loads the patches touching tensor name, of n elements, or opens
// them for reading in order.
func (pl *patchPlan) deltas(name string, n int64) (*deltaSum, error) {
	d := &deltaSum{}
	for _, i := range pl.touched[name] {
		s := pl.scales[i]
		if pl.avg[name] {
			s /= float64(len(pl.touched[name]))
		}
		t, err := term(pl.patches[i], name, n)
		if err != nil {
			d.close()
			return nil, err
		}
		t.scale = s
		d.terms = append(d.terms, t)
	}
	return d, nil
}

// term opens patch p's change to tensor name, of n elements, in the
// cheapest form that reads it in order: a quantized one's codes, a
// windowed sparse or dense payload's decoder, else its values loaded.
func term(p *Patch, name string, n int64) (deltaTerm, error) {
	var t deltaTerm
	var err error
	e, _ := p.Tensor(name)
	switch {
	case e.Values == "q" && e.Encoding == "dense":
		t.quant, err = p.quantized(name, n) // dequantized a chunk at a time
	case p.streamable(e) && e.Encoding == "sparse":
		t.entries, err = p.sparse(e, n)
	case p.streamable(e):
		t.values, err = p.values(e, n)
	default:
		t.idx, t.vals, err = p.LoadSparse(name)
		if err == nil && t.idx == nil && int64(len(t.vals)) != n {
			err = fmt.Errorf("%s: tensor %q: %d elements, %d expected", p.Path, name, len(t.vals), n)
		}
	}
	return t, err
}

// close releases the patches' decoders.
func (d *deltaSum) close() {
	for _, t := range d.terms {
		if t.values != nil {
			t.values.close()
		}
		if t.entries != nil {
			t.entries.close()
		}
	}
}

// at returns the sum for elements [s, e) (valid until the next call). A
// sparse patch adds nothing where it stores nothing: adding s·0 would not
// change the sum either, since a sum that starts at +0 is never −0.
func (d *deltaSum) at(s, e int) ([]float64, error) {
	if cap(d.acc) < e-s {
		d.acc = make([]float64, e-s)
	}
	acc := d.acc[:e-s]
	clear(acc)
	for i := range d.terms {
		t := &d.terms[i]
		if t.quant != nil {
			if cap(t.deq) < e-s {
				t.deq = make([]float32, e-s)
			}
			v := t.deq[:e-s]
			if err := t.quant.DequantizeRange(v, s); err != nil {
				return nil, err
			}
			for k, x := range v {
				acc[k] += t.scale * float64(x)
			}
			continue
		}
		if t.values != nil {
			v, err := t.values.at(int64(s), int64(e))
			if err != nil {
				return nil, err
			}
			for k, x := range v {
				acc[k] += t.scale * float64(x)
			}
			continue
		}
		if t.entries != nil {
			idx, vals, err := t.entries.at(int64(s), int64(e))
			if err != nil {
				return nil, err
			}
			for k, i := range idx {
				acc[i-int64(s)] += t.scale * float64(vals[k])
			}
			continue
		}
		if t.idx == nil {
			for k, v := range t.vals[s:e] {
				acc[k] += t.scale * float64(v)
			}
			continue
		}
		first := sort.Search(len(t.idx), func(k int) bool { return t.idx[k] >= int64(s) })
		for k := first; k < len(t.idx) && t.idx[k] < int64(e); k++ {
			acc[t.idx[k]-int64(s)] += t.scale * float64(t.vals[k])
		}
	}
	return acc, nil
}

// job is the streaming job over the model that writes (or, with no out,
// only visits) the patched tensors. A tensor no replacement covers is
// computed chunk by chunk by the kernel chunked makes (so a large one
// streams from the model's file like a merge's), when chunked is set;
// the others whole by fn, from the model's bytes and Σ s_i·d_i into dst.
func (pl *patchPlan) job(tensors []weights.TensorInfo, o stream.Options, phase string, chunked func(t weights.TensorInfo, acc *deltaSum) stream.PassKernel, fn func(t weights.Tensor, acc *deltaSum, dst []byte) error) *stream.Job {
	whole := func(name string) bool { return chunked == nil || pl.extra[name] || pl.whole[name] }
	return &stream.Job{
		Inputs:  []weights.Checkpoint{pl.model},
		Tensors: tensors,
		PassThrough: func(t weights.TensorInfo) int {
			if _, ok := pl.touched[t.Name]; ok || pl.extra[t.Name] {
				return -1
			}
			return 0
		},
		Kernel: func(ti weights.TensorInfo) (stream.Kernel, error) {
			if !whole(ti.Name) {
				n, _ := ti.NumElements()
				acc, err := pl.deltas(ti.Name, n)
				if err != nil {
					return nil, err
				}
				return stream.Passes(chunked(ti, acc)), nil
			}
			return stream.KernelFunc(func(_ context.Context, t *stream.Tensor) error {
				n, _ := t.NumElements()
				acc, err := pl.deltas(t.Name, n)
				if err != nil {
					return err
				}
				defer acc.close()
				var dst []byte
				if len(t.Out) > 0 {
					dst = t.Out[0]
				}
				if err := fn(t.In[0], acc, dst); err != nil {
					return &weights.TensorError{File: pl.model.Path(), Tensor: t.Name, Err: err}
				}
				return nil
			}), nil
		},
		// Read whole: the model's bytes, the output's and the patches'
		// (Σ s·d and θ are worked on in chunks).
		Cost: func(t weights.TensorInfo) int64 {
			b, _ := t.ByteSize()
			return 2*b + pl.patchCost(t) + 32*stream.ChunkElems
		},
		StreamCost: func(t weights.TensorInfo) int64 {
			if whole(t.Name) {
				return -1
			}
			return pl.patchCost(t)
		},
		Phase:   phase,
		Options: o,
		// Patching is element by element: with --allow-nonfinite a
		// model's NaN or Inf goes through the arithmetic (Inf + d = Inf),
		// not the merges' NaN-out policy, so that remove can give it back
		// (the undo records catch any bits that do not survive).
		KeepNonFinite: o.AllowNonFinite,
	}
}

// patchCost is what the patches of tensor t hold while it is patched: a
// decoder's window and a chunk for a patch read in order; otherwise its
// decoded values and, while it is decoded, its compressed and raw payload.
func (pl *patchPlan) patchCost(t weights.TensorInfo) int64 {
	n, _ := t.NumElements()
	var c int64
	for _, i := range pl.touched[t.Name] {
		p := pl.patches[i]
		e, _ := p.Tensor(t.Name)
		switch {
		case p.streamable(e) && e.Encoding == "sparse":
			// Two decoders; a chunk's entries.
			c += 4*frameWindow + 12*stream.ChunkElems
		case p.streamable(e):
			c += 2*frameWindow + 8*stream.ChunkElems
		case e.Values == "q" && e.Encoding == "dense":
			// The payload and, while it is parsed, its raw copy; codes
			// are dequantized a chunk at a time.
			c += e.Length + 2*e.RawLength + 8*stream.ChunkElems
		case e.Encoding == "sparse":
			c += 12*e.NNZ + e.Length + e.RawLength
		default:
			c += 4*n + e.Length + e.RawLength
		}
	}
	return c
}

// applyKernel patches a tensor chunk by chunk: each chunk of the model's
// raw bytes (a RawInputKernel input) decoded, plus Σ s·d for the chunk,
// into the output, rounded once to the model's dtype by stream.Passes.
// With undo set it writes nothing and records there instead where
// subtracting the sum again does not round back to the original (the
// undo records).
type applyKernel struct {
	patchChunks
	undo  *undoFrame
	theta []float64
	enc   []byte
	back  []byte
}

// patchChunks is what apply's and remove's kernels share: one pass over
// the model's raw chunks (a RawInputKernel input) with Σ s·d of each.
type patchChunks struct {
	dt  weights.DType
	acc *deltaSum
	raw []byte
	pos int
}

func (k *patchChunks) NextPass() (int, bool)          { return 0, false }
func (k *patchChunks) Observe(int, [][]float64) error { return nil }
func (k *patchChunks) EndPass(int) error              { return nil }
func (k *patchChunks) RawInput(i int) bool            { return i == 0 }
func (k *patchChunks) SetRaw(_ int, t weights.Tensor) { k.raw = t.Data }

// next returns the range [s, e) of the chunk just handed over and the
// patches' sum for it.
func (k *patchChunks) next() (s, e int, a []float64, err error) {
	m := len(k.raw) / k.dt.Size()
	s, e = k.pos, k.pos+m
	k.pos = e
	a, err = k.acc.at(s, e)
	return s, e, a, err
}

func (k *applyKernel) Compute(_, out [][]float64) error {
	es := k.dt.Size()
	s, e, a, err := k.next()
	if err != nil {
		return err
	}
	m := e - s
	if k.undo == nil {
		th := out[0][:m]
		if err := weights.Decode(k.dt, k.raw, th); err != nil {
			return err
		}
		for i := range th {
			th[i] += a[i]
		}
		return nil
	}
	if cap(k.theta) < m {
		k.theta, k.enc, k.back = make([]float64, m), make([]byte, m*es), make([]byte, m*es)
	}
	return applyChunk(k.dt, k.raw, a, k.theta[:m], k.enc[:m*es], k.back[:m*es], s, k.undo)
}

// Release closes the patches' decoders and finishes the undo frame.
func (k *applyKernel) Release() {
	k.acc.close()
	if k.undo != nil {
		k.undo.close()
	}
}

// removeKernel unpatches a tensor chunk by chunk: each chunk of the
// patched model's raw bytes decoded, less Σ s·d for the chunk, rounded
// once to the dtype by stream.Passes (subtract's arithmetic), and the
// undo record's elements given their original values back.
type removeKernel struct {
	patchChunks
	src  *undoSource
	name string
	n    int
	undo *undoCursor // opened at the first chunk
}

func (k *removeKernel) Compute(_, out [][]float64) error {
	s, e, a, err := k.next()
	if err != nil {
		return err
	}
	if k.undo == nil {
		if k.undo, err = k.src.cursor(k.name); err != nil {
			return err
		}
	}
	x := out[0][:e-s]
	if err := weights.Decode(k.dt, k.raw, x); err != nil {
		return err
	}
	for i := range x {
		x[i] -= a[i]
	}
	for c := k.undo; c.have && c.at < int64(e); {
		i := int(c.at) - s
		if err := weights.Decode(k.dt, c.orig, x[i:i+1]); err != nil {
			return err
		}
		if err := c.advance(); err != nil {
			return err
		}
	}
	if e == k.n {
		return k.undo.finish()
	}
	return nil
}

// Release closes the patches' and the records' decoders.
func (k *removeKernel) Release() {
	k.acc.close()
	if k.undo != nil {
		k.undo.close()
	}
}

// roundTrips reports whether elements of dtype dt decode and encode back
// to the same bytes (all but NaNs with a payload do).
func roundTrips(dt weights.DType, b []byte) bool {
	es := dt.Size()
	n := len(b) / es
	v := make([]float64, n)
	back := make([]byte, len(b))
	if weights.Decode(dt, b, v) != nil || weights.Encode(dt, v, back) != nil {
		return false
	}
	return bytes.Equal(back, b)
}

// applyChunk writes round(θ + a) for one chunk of original bytes orig
// (elements from base on) into o, and adds to u the elements where
// round(round(θ + a) − a) ≠ θ, with their original bytes; th and back are
// scratch.
func applyChunk(dt weights.DType, orig []byte, a, th []float64, o, back []byte, base int, u *undoFrame) error {
	es := dt.Size()
	if err := weights.Decode(dt, orig, th); err != nil {
		return err
	}
	for i := range th {
		th[i] += a[i]
	}
	if err := weights.Encode(dt, th, o); err != nil {
		return err
	}
	if err := subtract(dt, o, a, back); err != nil {
		return err
	}
	record := func(i int) {
		b := orig[i*es : (i+1)*es]
		u.add(int64(base+i), b)
		// Only a NaN can fail to decode and encode back.
		if !u.verbatim && th[i] != th[i] && !roundTrips(dt, b) {
			u.verbatim = true
		}
	}
	// Most elements come back: whole 8-byte words are compared, and only
	// a word that differs element by element (a call per element cost
	// more than the arithmetic).
	off := 0
	if es <= 8 && 8%es == 0 {
		for ; off+8 <= len(orig); off += 8 {
			if binary.LittleEndian.Uint64(orig[off:]) == binary.LittleEndian.Uint64(back[off:]) {
				continue
			}
			for e := off; e < off+8; e += es {
				if !bytes.Equal(orig[e:e+es], back[e:e+es]) {
					record(e / es)
				}
			}
		}
	}
	for ; off < len(orig); off += es {
		if !bytes.Equal(orig[off:off+es], back[off:off+es]) {
			record(off / es)
		}
	}
	return nil
}

// recordWhole adds every element of t to u.
func recordWhole(t weights.Tensor, u *undoFrame) {
	es := t.DType.Size()
	for i := 0; i*es < len(t.Data); i++ {
		u.add(int64(i), t.Data[i*es:(i+1)*es])
	}
	u.verbatim = !roundTrips(t.DType, t.Data)
}

type undoRecord struct {
	name    string
	indices []int64
	orig    []byte // original element bytes, concatenated
}

// subtract writes round(θ' − acc) into out: the naive inverse, in chunks.
func subtract(dt weights.DType, patched []byte, acc []float64, out []byte) error {
	n, es := len(acc), dt.Size()
	chunk := min(n, stream.ChunkElems)
	v := stream.F64.Get(chunk)
	defer stream.F64.Put(v)
	for s := 0; s < n; s += chunk {
		e := min(n, s+chunk)
		x := v[:e-s]
		if err := weights.Decode(dt, patched[s*es:e*es], x); err != nil {
			return err
		}
		for i := range x {
			x[i] -= acc[s+i]
		}
		if err := weights.Encode(dt, x, out[s*es:e*es]); err != nil {
			return err
		}
	}
	return nil
}

// decodeUndo reads undo records of the first format (MetaUndo): one
// zstd stream of every tensor's name, count, index gaps and original
// bytes, base64. Still read, no longer written.
func decodeUndo(s string, model weights.Checkpoint) (map[string]undoRecord, error) {
	comp, err := base64.StdEncoding.DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("undo record: %w", err)
	}
	// The undo data cannot exceed one element per model byte.
	limit := uint64(weights.TotalBytes(model.Tensors()))*3 + 1<<16
	zr, err := zstd.NewReader(nil, zstd.WithDecoderConcurrency(1), zstd.WithDecoderMaxMemory(limit))
	if err != nil {
		return nil, err
	}
	defer zr.Close()
	raw, err := zr.DecodeAll(comp, nil)
	if err != nil {
		return nil, fmt.Errorf("undo record: %w", err)
	}
	r := bytes.NewReader(raw)
	out := map[string]undoRecord{}
	for r.Len() > 0 {
		nl, err := binary.ReadUvarint(r)
		if err != nil || nl > uint64(r.Len()) {
			return nil, fmt.Errorf("undo record: bad name")
		}
		name := make([]byte, nl)
		io.ReadFull(r, name)
		info, ok := model.Info(string(name))
		if !ok {
			return nil, fmt.Errorf("undo record: tensor %q not in the model", name)
		}
		n, _ := info.NumElements()
		cnt, err := binary.ReadUvarint(r)
		if err != nil || cnt > uint64(n) {
			return nil, fmt.Errorf("undo record: tensor %q: bad count", name)
		}
		rec := undoRecord{name: string(name)}
		var at int64
		for k := uint64(0); k < cnt; k++ {
			g, err := binary.ReadUvarint(r)
			if err != nil {
				return nil, fmt.Errorf("undo record: tensor %q: truncated", name)
			}
			at += int64(g)
			if at >= n || (k > 0 && g == 0) {
				return nil, fmt.Errorf("undo record: tensor %q: bad index", name)
			}
			rec.indices = append(rec.indices, at)
		}
		es := info.DType.Size()
		if uint64(r.Len()) < cnt*uint64(es) {
			return nil, fmt.Errorf("undo record: tensor %q: truncated", name)
		}
		rec.orig = make([]byte, cnt*uint64(es))
		io.ReadFull(r, rec.orig)
		out[rec.name] = rec
	}
	return out, nil
}

// write streams every tensor of the model (of its shard) to out, the
// touched ones computed by fn.
func (pl *patchPlan) write(ctx context.Context, out string, md map[string]string, o stream.Options, phase string, chunked func(t weights.TensorInfo, acc *deltaSum) stream.PassKernel, fn func(t weights.Tensor, acc *deltaSum, dst []byte) error) ([]string, error) {
	infos, out, err := o.ShardOutput(pl.model.Tensors(), out)
	if err != nil {
		return nil, err
	}
	job := pl.job(infos, o, phase, chunked, fn)
	same := func(t weights.TensorInfo) weights.DType { return t.DType }
	job.Outputs = []stream.Output{stream.CheckpointOutput(out, md, same, o.ShardSize)}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	return files[0], nil
}

// Apply writes model + Σ s_i·patch_i to out. Each patched element is
// rounded once to the model's dtype. So that Remove can restore the model
// exactly, the output's metadata records the patches (SHA-256 and scale),
// the original metadata, and the few elements where subtracting the patch
// again would not round back to the original (undo records). The header
// holding them comes first in the file, so the patched tensors are
// computed twice: once for the records, once to write.
func Apply(ctx context.Context, model weights.Checkpoint, patches []*Patch, out string, o ApplyOptions) (*ApplyReport, error) {
	// A directory output loads like the model: its side files are read
	// (and checked) now, written after.
	side, err := o.ReadModelFiles(out, model.Path())
	if err != nil {
		return nil, err
	}
	pl, warnings, err := newPlan(model, patches, o.Scales, o.Strict)
	if err != nil {
		return nil, err
	}
	rep := &ApplyReport{Tensors: len(pl.touched), Warnings: append([]string{}, warnings...)}
	var applied []AppliedPatch
	for i, p := range patches {
		sum, err := weights.FileSHA256(p.Path)
		if err != nil {
			return nil, err
		}
		applied = append(applied, AppliedPatch{SHA256: sum, Scale: pl.scales[i], File: filepath.Base(p.Path), Kind: p.Kind})
	}
	// The base's digest is only compared with the patches' record of it,
	// before anything is written: it is computed beside the undo records'
	// pass (a whole-model patch's first third, hashed alone, before).
	checkBase := baseCheck(model, patches, o)
	if o.NoUndo {
		if err := checkBase(rep); err != nil {
			return nil, err
		}
	}
	if o.AverageBNAffine {
		pl.averageBN()
	}
	pl.extra = map[string]bool{}
	for name := range o.Replace {
		info, ok := model.Info(name)
		if !ok {
			return nil, fmt.Errorf("replacing tensor %q: not in %s", name, model.Path())
		}
		if size, _ := info.ByteSize(); size != int64(len(o.Replace[name])) {
			return nil, fmt.Errorf("replacing tensor %q: %d bytes for a %d-byte tensor", name, len(o.Replace[name]), size)
		}
		pl.extra[name] = true
	}
	undo := newUndoSet(undoFilePath(out, o.ShardSize, o.Shard != nil))
	committed := false
	defer func() {
		if !committed {
			undo.abort()
		}
	}()
	idx, phase := &undoIndex{}, "patching"
	if !o.NoUndo {
		if idx, err = pl.recordUndo(ctx, o.Options, undo); err != nil {
			return nil, err
		}
		if err := checkBase(rep); err != nil {
			return nil, err
		}
		phase = "pass 2/2: patching"
	}
	rep.UndoEntries = undo.entries()
	rep.UndoBytes = idx.Bytes
	orig := model.Metadata()
	appliedJSON, _ := json.Marshal(applied)
	md := stream.HFMetadata(orig)
	md[MetaPatches] = string(appliedJSON)
	if !o.NoUndo {
		idxJSON, _ := json.Marshal(idx)
		origJSON, _ := json.Marshal(orig)
		md[MetaUndoRecords] = string(idxJSON)
		md[MetaUndoMetadata] = string(origJSON)
	}
	for k, v := range o.Metadata {
		md[k] = v
	}
	if o.AverageBNAffine {
		md[MetaBNAveraged] = "true"
	}
	// Pass 2: write, computing the patched tensors again (identically).
	patch := func(t weights.TensorInfo, acc *deltaSum) stream.PassKernel {
		return &applyKernel{patchChunks: patchChunks{dt: t.DType, acc: acc}}
	}
	rep.Files, err = pl.write(ctx, out, md, o.Options, phase, patch, func(t weights.Tensor, _ *deltaSum, dst []byte) error {
		copy(dst, o.Replace[t.Name])
		return nil
	})
	if err != nil {
		return nil, err
	}
	committed = true
	if !o.NoUndo {
		if err := undo.commit(); err != nil {
			// The model without its records could not be unpatched.
			for _, f := range rep.Files {
				os.Remove(f)
			}
			return nil, err
		}
		if idx.File != "" {
			rep.UndoFile = undo.dst
			rep.Files = append(rep.Files, undo.dst)
		}
	}
	return rep, rep.addSideFiles(side, model)
}

// baseCheck starts hashing model, if a patch records the base it was made
// for, and returns the wait for it: the check adds a warning to rep for
// each patch made for another base, or with o.Strict fails at the first.
func baseCheck(model weights.Checkpoint, patches []*Patch, o ApplyOptions) func(rep *ApplyReport) error {
	if !slices.ContainsFunc(patches, func(p *Patch) bool { return p.BaseSHA256 != "" }) {
		return func(*ApplyReport) error { return nil }
	}
	digest := weights.DigestLater(model)
	return func(rep *ApplyReport) error {
		sum, err := digest()
		if err != nil {
			return err
		}
		for _, p := range patches {
			if p.BaseSHA256 == "" || p.BaseSHA256 == sum {
				continue
			}
			msg := fmt.Sprintf("%s was made for base %s…, not %s (%s…)", p.Path, p.BaseSHA256[:min(12, len(p.BaseSHA256))], model.Path(), sum[:12])
			if o.Strict {
				return fmt.Errorf("%s (--strict)", msg)
			}
			rep.Warnings = append(rep.Warnings, msg)
		}
		return nil
	}
}

// recordUndo is Apply's first pass: the undo records of the patched (and
// replaced) tensors, laid out by undo.finish.
func (pl *patchPlan) recordUndo(ctx context.Context, o stream.Options, undo *undoSet) (*undoIndex, error) {
	var touched []weights.TensorInfo
	for _, t := range pl.model.Tensors() {
		if _, ok := pl.touched[t.Name]; ok || pl.extra[t.Name] {
			touched = append(touched, t)
		}
	}
	records := func(t weights.TensorInfo, acc *deltaSum) stream.PassKernel {
		return &applyKernel{patchChunks: patchChunks{dt: t.DType, acc: acc}, undo: undo.frame(t.Name)}
	}
	job := pl.job(touched, o, "pass 1/2: undo records", records, func(t weights.Tensor, _ *deltaSum, _ []byte) error {
		f := undo.frame(t.Name)
		recordWhole(t, f) // a replaced tensor: every element's original bits
		return f.close()
	})
	if _, err := job.Run(ctx); err != nil {
		return nil, err
	}
	return undo.finish()
}

// addSideFiles writes a directory output's side files (the model's
// config and tokenizer; tensors keep their dtypes).
func (rep *ApplyReport) addSideFiles(side *stream.ModelFiles, model weights.Checkpoint) error {
	ts := model.Tensors()
	copied, err := side.Write(ts, ts)
	rep.Files = append(rep.Files, copied...)
	return err
}

// Remove undoes Apply: given the patched checkpoint and the same patches,
// it writes the original tensors and metadata back, bit for bit. The
// patches must be the ones recorded (same files, same order); their
// recorded scales are used.
func Remove(ctx context.Context, patched weights.Checkpoint, patches []*Patch, out string, o ApplyOptions) (*ApplyReport, error) {
	side, err := o.ReadModelFiles(out, patched.Path())
	if err != nil {
		return nil, err
	}
	md := patched.Metadata()
	var applied []AppliedPatch
	if err := json.Unmarshal([]byte(md[MetaPatches]), &applied); err != nil || md[MetaPatches] == "" {
		return nil, fmt.Errorf("%s: no record of applied patches (was it written by weightops patch apply?)", patched.Path())
	}
	if len(applied) != len(patches) {
		return nil, fmt.Errorf("%s: was patched with %d patches (%s); give exactly those", patched.Path(), len(applied), describe(applied))
	}
	scales := make([]float64, len(patches))
	for i, p := range patches {
		sum, err := weights.FileSHA256(p.Path)
		if err != nil {
			return nil, err
		}
		if sum != applied[i].SHA256 {
			return nil, fmt.Errorf("%s: patch %d was %s (sha256 %s…), not %s; give the patches in the order applied: %s", patched.Path(), i+1, applied[i].File, applied[i].SHA256[:12], p.Path, describe(applied))
		}
		scales[i] = applied[i].Scale
	}
	pl, warnings, err := newPlan(patched, patches, scales, o.Strict)
	if err != nil {
		return nil, err
	}
	if md[MetaBNAveraged] == "true" {
		pl.averageBN()
	}
	undo, err := openUndo(patched)
	if err != nil {
		return nil, err
	}
	defer undo.close()
	var orig map[string]string
	if err := json.Unmarshal([]byte(md[MetaUndoMetadata]), &orig); err != nil {
		return nil, fmt.Errorf("%s: original metadata record: %w", patched.Path(), err)
	}
	// Tensors with undo records but no patch (replaced ones) are visited
	// too, to be restored.
	pl.extra = map[string]bool{}
	pl.whole = map[string]bool{}
	for _, name := range undo.names() {
		if _, ok := pl.touched[name]; !ok {
			pl.extra[name] = true
		}
		// A tensor whose undo record holds bytes that decoding and
		// encoding again would change (a NaN's payload) is restored
		// whole, bytes as they are; the others chunk by chunk.
		if undo.verbatim(name) {
			pl.whole[name] = true
		}
	}
	rep := &ApplyReport{Tensors: len(pl.touched), Warnings: append([]string{}, warnings...), UndoEntries: undo.entries(), UndoBytes: undo.bytes()}
	chunked := func(t weights.TensorInfo, acc *deltaSum) stream.PassKernel {
		n, _ := t.NumElements()
		return &removeKernel{patchChunks: patchChunks{dt: t.DType, acc: acc}, src: undo, name: t.Name, n: int(n)}
	}
	// Whole tensors: an undo record's original bytes go back as they are.
	rep.Files, err = pl.write(ctx, out, orig, o.Options, "unpatching", chunked, func(t weights.Tensor, acc *deltaSum, dst []byte) error {
		es := t.DType.Size()
		if pl.extra[t.Name] {
			copy(dst, t.Data)
		}
		for s, n := 0, len(t.Data)/es; s < n && !pl.extra[t.Name]; s += stream.ChunkElems {
			e := min(n, s+stream.ChunkElems)
			a, err := acc.at(s, e)
			if err != nil {
				return err
			}
			if err := subtract(t.DType, t.Data[s*es:e*es], a, dst[s*es:e*es]); err != nil {
				return err
			}
		}
		u, err := undo.record(t.Name)
		if err != nil {
			return err
		}
		for k, i := range u.indices {
			copy(dst[int(i)*es:], u.orig[k*es:(k+1)*es])
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return rep, rep.addSideFiles(side, patched)
}

// Records reads what a patched checkpoint records of its patches — the
// patches applied, the original metadata and the undo records, each
// checked for consistency with the checkpoint (tensors present, indices in
// range, lengths, a records file's SHA-256) — or nil when it is not a
// patched checkpoint. A patched model written without undo records (a
// .gguf) has only the first to check.
func Records(patched weights.Checkpoint) ([]AppliedPatch, error) {
	md := patched.Metadata()
	if md[MetaPatches] == "" {
		return nil, nil
	}
	var applied []AppliedPatch
	if err := json.Unmarshal([]byte(md[MetaPatches]), &applied); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", patched.Path(), MetaPatches, err)
	}
	_, records := md[MetaUndoRecords]
	_, legacy := md[MetaUndo]
	_, origMD := md[MetaUndoMetadata]
	if !records && !legacy && !origMD {
		return applied, nil
	}
	var orig map[string]string
	if err := json.Unmarshal([]byte(md[MetaUndoMetadata]), &orig); err != nil {
		return nil, fmt.Errorf("%s: %s: %w", patched.Path(), MetaUndoMetadata, err)
	}
	undo, err := openUndo(patched)
	if err != nil {
		return nil, err
	}
	defer undo.close()
	for _, name := range undo.names() {
		if err := undo.verify(name); err != nil {
			return nil, err
		}
	}
	return applied, nil
}

func describe(a []AppliedPatch) string {
	var parts []string
	for _, p := range a {
		parts = append(parts, fmt.Sprintf("%s ×%g", p.File, p.Scale))
	}
	return fmt.Sprint(parts)
}
