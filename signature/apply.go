package signature

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"sort"
	"sync"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/weights"
)

// Metadata keys a patched checkpoint carries so that `patch remove` can
// restore the original bit for bit.
const (
	MetaPatches      = "weightops.patches"       // JSON []AppliedPatch
	MetaUndo         = "weightops.undo"          // base64(zstd(undo records))
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
	Strict    bool
	Workers   int
	ShardSize int64
	Progress  func(int64)
	// Shard writes only this worker's balanced share of the tensors into
	// out/model-i-of-n.safetensors. Undo records cover every patched
	// tensor, so every shard carries the same metadata.
	Shard *weights.ShardSpec
}

// ApplyReport tells what Apply or Remove did.
type ApplyReport struct {
	Files    []string `json:"files"`
	Warnings []string `json:"warnings,omitempty"`
	Tensors  int      `json:"patched_tensors"`
	// UndoEntries is how many elements needed an explicit undo record:
	// those where rounding θ+d and then θ'−d to the model's dtype does
	// not give θ back.
	UndoEntries int64 `json:"undo_entries"`
	UndoBytes   int   `json:"undo_bytes"`
}

// FileSHA256 hashes one file.
func FileSHA256(path string) (string, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", err
	}
	defer f.Close()
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		return "", fmt.Errorf("%s: %w", path, err)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

// CheckpointDigest is the SHA-256 of a single-file checkpoint, or for a
// sharded one the SHA-256 of its "name sha256" lines in name order.
func CheckpointDigest(c weights.Checkpoint) (string, error) {
	files := []string{c.Path()}
	if f, ok := c.(interface{ Files() []string }); ok {
		files = f.Files()
	}
	if len(files) == 1 {
		return FileSHA256(files[0])
	}
	sort.Strings(files)
	h := sha256.New()
	for _, f := range files {
		s, err := FileSHA256(f)
		if err != nil {
			return "", err
		}
		fmt.Fprintf(h, "%s %s\n", baseName(f), s)
	}
	return hex.EncodeToString(h.Sum(nil)), nil
}

func baseName(p string) string {
	for i := len(p) - 1; i >= 0; i-- {
		if p[i] == '/' {
			return p[i+1:]
		}
	}
	return p
}

// patchPlan maps each patched tensor to the patches touching it.
type patchPlan struct {
	model   weights.Checkpoint
	patches []*Patch
	scales  []float64
	touched map[string][]int
}

func newPlan(model weights.Checkpoint, patches []*Patch, scales []float64) (*patchPlan, error) {
	if len(scales) == 0 {
		scales = make([]float64, len(patches))
		for i := range scales {
			scales[i] = 1
		}
	}
	if len(scales) != len(patches) {
		return nil, fmt.Errorf("%d scales for %d patches", len(scales), len(patches))
	}
	pl := &patchPlan{model: model, patches: patches, scales: scales, touched: map[string][]int{}}
	for i, p := range patches {
		for _, t := range p.Tensors {
			info, ok := model.Info(t.Name)
			switch {
			case !ok:
				return nil, fmt.Errorf("%s: tensor %q: not in %s (patch made for another model?)", p.Path, t.Name, model.Path())
			case !weights.SameShape(info.Shape, t.Shape):
				return nil, fmt.Errorf("%s: tensor %q: shape %v, %s has %s", p.Path, t.Name, t.Shape, model.Path(), info.ShapeString())
			case !info.DType.IsFloat() || !info.DType.Writable():
				return nil, fmt.Errorf("%s: tensor %q: cannot patch a %s tensor", p.Path, t.Name, info.DType)
			}
			pl.touched[t.Name] = append(pl.touched[t.Name], i)
		}
	}
	return pl, nil
}

// delta sums s_i·d_i over the patches touching a tensor, in patch order,
// in float64: Apply and Remove compute it identically.
func (pl *patchPlan) delta(name string, n int64) ([]float64, error) {
	acc := make([]float64, n)
	buf := make([]float32, n)
	for _, i := range pl.touched[name] {
		if err := pl.patches[i].Load(name, buf); err != nil {
			return nil, err
		}
		s := pl.scales[i]
		for e, v := range buf {
			acc[e] += s * float64(v)
		}
	}
	return acc, nil
}

type undoRecord struct {
	name    string
	indices []int64
	orig    []byte // original element bytes, concatenated
}

// applyTensor returns round(θ + acc) in the tensor's dtype, and the
// elements where round(round(θ + acc) − acc) ≠ θ with their original bytes.
func applyTensor(t weights.Tensor, acc []float64) ([]byte, undoRecord, error) {
	n := len(acc)
	es := t.DType.Size()
	theta := make([]float64, n)
	if err := weights.Decode(t.DType, t.Data, theta); err != nil {
		return nil, undoRecord{}, err
	}
	for i := range theta {
		theta[i] += acc[i]
	}
	out := make([]byte, len(t.Data))
	if err := weights.Encode(t.DType, theta, out); err != nil {
		return nil, undoRecord{}, err
	}
	back, err := subtract(t.DType, out, acc)
	if err != nil {
		return nil, undoRecord{}, err
	}
	u := undoRecord{name: t.Name}
	for i := 0; i < n; i++ {
		if !bytes.Equal(back[i*es:(i+1)*es], t.Data[i*es:(i+1)*es]) {
			u.indices = append(u.indices, int64(i))
			u.orig = append(u.orig, t.Data[i*es:(i+1)*es]...)
		}
	}
	return out, u, nil
}

// subtract returns round(θ' − acc), the naive inverse.
func subtract(dt weights.DType, patched []byte, acc []float64) ([]byte, error) {
	v := make([]float64, len(acc))
	if err := weights.Decode(dt, patched, v); err != nil {
		return nil, err
	}
	for i := range v {
		v[i] -= acc[i]
	}
	out := make([]byte, len(patched))
	return out, weights.Encode(dt, v, out)
}

func encodeUndo(recs []undoRecord) (string, int64, error) {
	sort.Slice(recs, func(i, j int) bool { return recs[i].name < recs[j].name })
	var b bytes.Buffer
	var tmp [binary.MaxVarintLen64]byte
	put := func(v uint64) { b.Write(tmp[:binary.PutUvarint(tmp[:], v)]) }
	var total int64
	for _, r := range recs {
		if len(r.indices) == 0 {
			continue
		}
		put(uint64(len(r.name)))
		b.WriteString(r.name)
		put(uint64(len(r.indices)))
		prev := int64(0)
		for _, i := range r.indices {
			put(uint64(i - prev))
			prev = i
		}
		b.Write(r.orig)
		total += int64(len(r.indices))
	}
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	comp := zw.EncodeAll(b.Bytes(), nil)
	return base64.StdEncoding.EncodeToString(comp), total, nil
}

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

// stream writes every tensor of model to out, replacing the touched ones
// with fn's bytes.
func (pl *patchPlan) stream(out string, md map[string]string, o ApplyOptions, fn func(t weights.Tensor) ([]byte, error)) ([]string, error) {
	infos := pl.model.Tensors()
	if o.Shard != nil {
		if err := os.MkdirAll(out, 0o755); err != nil {
			return nil, err
		}
		infos, out = o.Shard.Select(infos), filepath.Join(out, o.Shard.FileName())
	}
	w, files, err := weights.CreateOutput(out, infos, md, o.ShardSize)
	if err != nil {
		return nil, err
	}
	err = weights.ForEach(infos, o.Workers, func(_ int, t weights.TensorInfo) error {
		ten, err := pl.model.ReadTensor(t.Name, nil)
		if err != nil {
			return err
		}
		data := ten.Data
		if _, ok := pl.touched[t.Name]; ok {
			if data, err = fn(ten); err != nil {
				return err
			}
		}
		if err := w.WriteTensor(t.Name, data); err != nil {
			return err
		}
		if o.Progress != nil {
			o.Progress(int64(len(ten.Data)))
		}
		return nil
	})
	if err != nil {
		w.Abort()
		return nil, err
	}
	return files, w.Commit()
}

// Apply writes model + Σ s_i·patch_i to out. Each patched element is
// rounded once to the model's dtype. So that Remove can restore the model
// exactly, the output's metadata records the patches (SHA-256 and scale),
// the original metadata, and the few elements where subtracting the patch
// again would not round back to the original (undo records).
func Apply(model weights.Checkpoint, patches []*Patch, out string, o ApplyOptions) (*ApplyReport, error) {
	pl, err := newPlan(model, patches, o.Scales)
	if err != nil {
		return nil, err
	}
	rep := &ApplyReport{Tensors: len(pl.touched)}
	var digest string
	var applied []AppliedPatch
	for i, p := range patches {
		sum, err := FileSHA256(p.Path)
		if err != nil {
			return nil, err
		}
		applied = append(applied, AppliedPatch{SHA256: sum, Scale: pl.scales[i], File: baseName(p.Path), Kind: p.Kind})
		if p.BaseSHA256 == "" {
			continue
		}
		if digest == "" {
			if digest, err = CheckpointDigest(model); err != nil {
				return nil, err
			}
		}
		if p.BaseSHA256 != digest {
			msg := fmt.Sprintf("%s was made for base %s…, not %s (%s…)", p.Path, p.BaseSHA256[:min(12, len(p.BaseSHA256))], model.Path(), digest[:12])
			if o.Strict {
				return nil, fmt.Errorf("%s (--strict)", msg)
			}
			rep.Warnings = append(rep.Warnings, msg)
		}
	}
	// Pass 1: the undo records, over the patched tensors only.
	var names []weights.TensorInfo
	for _, t := range model.Tensors() {
		if _, ok := pl.touched[t.Name]; ok {
			names = append(names, t)
		}
	}
	var mu sync.Mutex
	var recs []undoRecord
	err = weights.ForEach(names, o.Workers, func(_ int, t weights.TensorInfo) error {
		ten, err := model.ReadTensor(t.Name, nil)
		if err != nil {
			return err
		}
		acc, err := pl.delta(t.Name, int64(len(ten.Data)/ten.DType.Size()))
		if err != nil {
			return err
		}
		_, u, err := applyTensor(ten, acc)
		if err != nil {
			return &weights.TensorError{File: model.Path(), Tensor: t.Name, Err: err}
		}
		mu.Lock()
		recs = append(recs, u)
		mu.Unlock()
		return nil
	})
	if err != nil {
		return nil, err
	}
	undo, entries, err := encodeUndo(recs)
	if err != nil {
		return nil, err
	}
	orig := model.Metadata()
	origJSON, _ := json.Marshal(orig)
	appliedJSON, _ := json.Marshal(applied)
	md := map[string]string{}
	maps.Copy(md, orig)
	if _, ok := md["format"]; !ok {
		md["format"] = "pt"
	}
	md[MetaPatches] = string(appliedJSON)
	md[MetaUndo] = undo
	md[MetaUndoMetadata] = string(origJSON)
	if orig == nil {
		md[MetaUndoMetadata] = "null"
	}
	rep.UndoEntries, rep.UndoBytes = entries, len(undo)
	// Pass 2: write, computing the patched tensors again (identically).
	rep.Files, err = pl.stream(out, md, o, func(t weights.Tensor) ([]byte, error) {
		acc, err := pl.delta(t.Name, int64(len(t.Data)/t.DType.Size()))
		if err != nil {
			return nil, err
		}
		b, _, err := applyTensor(t, acc)
		return b, err
	})
	if err != nil {
		return nil, err
	}
	return rep, nil
}

// Remove undoes Apply: given the patched checkpoint and the same patches,
// it writes the original tensors and metadata back, bit for bit. The
// patches must be the ones recorded (same files, same order); their
// recorded scales are used.
func Remove(patched weights.Checkpoint, patches []*Patch, out string, o ApplyOptions) (*ApplyReport, error) {
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
		sum, err := FileSHA256(p.Path)
		if err != nil {
			return nil, err
		}
		if sum != applied[i].SHA256 {
			return nil, fmt.Errorf("%s: patch %d was %s (sha256 %s…), not %s; give the patches in the order applied: %s", patched.Path(), i+1, applied[i].File, applied[i].SHA256[:12], p.Path, describe(applied))
		}
		scales[i] = applied[i].Scale
	}
	pl, err := newPlan(patched, patches, scales)
	if err != nil {
		return nil, err
	}
	undo, err := decodeUndo(md[MetaUndo], patched)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", patched.Path(), err)
	}
	var orig map[string]string
	if err := json.Unmarshal([]byte(md[MetaUndoMetadata]), &orig); err != nil {
		return nil, fmt.Errorf("%s: original metadata record: %w", patched.Path(), err)
	}
	rep := &ApplyReport{Tensors: len(pl.touched)}
	rep.Files, err = pl.stream(out, orig, o, func(t weights.Tensor) ([]byte, error) {
		acc, err := pl.delta(t.Name, int64(len(t.Data)/t.DType.Size()))
		if err != nil {
			return nil, err
		}
		b, err := subtract(t.DType, t.Data, acc)
		if err != nil {
			return nil, err
		}
		es := t.DType.Size()
		if u, ok := undo[t.Name]; ok {
			for k, i := range u.indices {
				copy(b[int(i)*es:], u.orig[k*es:(k+1)*es])
			}
		}
		return b, nil
	})
	return rep, err
}

func describe(a []AppliedPatch) string {
	var parts []string
	for _, p := range a {
		parts = append(parts, fmt.Sprintf("%s ×%g", p.File, p.Scale))
	}
	return fmt.Sprint(parts)
}
