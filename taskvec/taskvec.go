// Package taskvec is task-vector arithmetic: the difference τ = θ_ft −
// θ_base of a fine-tune and its base (written as a checkpoint or, sparsified
// or not, as a patch), θ + λ·Σ s_i·τ_i, s·τ, and interpolation between two
// checkpoints. Each is a job over the stream engine.
package taskvec

import (
	"bytes"
	"context"
	"fmt"
	"maps"
	"strings"

	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

// sourceDType is the dtype a computed tensor keeps without --dtype: its
// own, widened to F32 when that cannot be written.
func sourceDType(o stream.Options) func(weights.TensorInfo) weights.DType { return o.OutputDType }

// DiffOptions control Diff.
type DiffOptions struct {
	stream.Options
	// AllowResize cuts fine-tune tensors with more rows than the base's
	// (a grown vocabulary) to the base's rows.
	AllowResize bool
	// Sparsify, when active, sparsifies each tensor's τ (computed and
	// ranked in float32, as in merges) before it is written.
	Sparsify sparsify.Spec
	// Patch, when set, writes a patch file (with this encoding) instead of
	// a checkpoint: its values are float32, its recorded base the base
	// checkpoint's digest.
	Patch *wpatch.Encoding
	// Metadata is added to the output's metadata.
	Metadata map[string]string
}

// DiffReport says what a diff wrote and left out.
type DiffReport struct {
	Files []string `json:"files"`
	// Skipped are integer/bool tensors that differ between the models
	// (a task vector cannot express them).
	Skipped []string `json:"skipped"`
	// Resized are tensors of the fine-tune cut to the base's rows.
	Resized []string `json:"resized"`
	// Patch describes the patch written (patch output only).
	Patch *wpatch.Summary `json:"patch"`
}

// PatchKind names the patch a diff writes for a sparsification.
func PatchKind(m sparsify.Method) string {
	return map[sparsify.Method]string{sparsify.None: "task-vector", sparsify.MagnitudeOutliers: "breadcrumbs", sparsify.Magnitude: "ties-trim", sparsify.Random: "dare"}[m]
}

// Diff writes the task vector τ = θ_ft − θ_base to out. Floating tensors
// are subtracted, computed in float64 from the decoded inputs and rounded
// once to the output dtype (F32 unless set; a patch stores float32).
// Integer and bool tensors are copied from ft when they equal base's
// (left out of a patch, which holds differences of floating tensors),
// otherwise reported and left out. A tensor missing on either side, or of
// another shape, is an error naming it — unless AllowResize and the
// fine-tune only has more rows (an extended vocabulary), in which case its
// first rows are used.
func Diff(ctx context.Context, ft, base weights.Checkpoint, out string, o DiffOptions) (*DiffReport, error) {
	rep := &DiffReport{Skipped: []string{}, Resized: []string{}}
	cuts := map[string]int64{}
	var infos []weights.TensorInfo
	for _, t := range ft.Tensors() {
		b, ok := base.Info(t.Name)
		if !ok {
			return nil, &weights.TensorError{File: base.Path(), Tensor: t.Name, Err: fmt.Errorf("in %s but not in the base", ft.Path())}
		}
		if !weights.SameShape(t.Shape, b.Shape) {
			if o.AllowResize && len(t.Shape) == len(b.Shape) && len(t.Shape) >= 1 && t.Shape[0] > b.Shape[0] && weights.SameShape(t.Shape[1:], b.Shape[1:]) {
				cuts[t.Name] = b.Shape[0]
				rep.Resized = append(rep.Resized, t.Name)
			} else {
				return nil, &weights.TensorError{File: ft.Path(), Tensor: t.Name, Err: fmt.Errorf("shape %s, base has %s (--allow-resize cuts extra rows)", t.ShapeString(), b.ShapeString())}
			}
		}
		if !t.DType.IsFloat() {
			same, err := sameBytes(ft, base, t.Name)
			if err != nil {
				return nil, err
			}
			if !same {
				rep.Skipped = append(rep.Skipped, t.Name)
			}
			if !same || o.Patch != nil {
				continue
			}
		}
		dt := t.DType
		if o.Patch != nil {
			dt = b.DType // the model the patch applies to
		}
		infos = append(infos, weights.TensorInfo{Name: t.Name, DType: dt, Shape: b.Shape})
	}
	for _, t := range base.Tensors() {
		if _, ok := ft.Info(t.Name); !ok {
			return nil, &weights.TensorError{File: ft.Path(), Tensor: t.Name, Err: fmt.Errorf("in the base %s but not in the fine-tune", base.Path())}
		}
	}
	if o.DType == nil {
		f32 := weights.F32
		o.DType = &f32
	}
	job := &stream.Job{
		Inputs:  []weights.Checkpoint{cutRows(ft, cuts), base},
		Tensors: infos,
		Kernel: func(t weights.TensorInfo) (stream.Kernel, error) {
			if o.Sparsify.Active() {
				return stream.Passes(newSparseDiff(o.Sparsify.ForTensor(t.Name, t.Shape, 0))), nil
			}
			return stream.Passes(stream.ElementwiseFunc(diff)), nil
		},
		Phase:   "diffing",
		Options: o.Options,
	}
	var w *wpatch.Writer
	if o.Patch != nil {
		md := map[string]string{"finetune": ft.Path(), "base": base.Path()}
		maps.Copy(md, o.Metadata)
		var err error
		if w, err = wpatch.Create(out, PatchKind(o.Sparsify.Method), md, *o.Patch); err != nil {
			return nil, err
		}
		// The base is hashed beside the diff, not before it; the patch's
		// header, written at commit, waits for it.
		w.SetBaseLater(weights.DigestLater(base))
		job.Outputs = []stream.Output{w.Output()}
	} else {
		md := map[string]string{"weightops.kind": "task-vector", "weightops.finetune": ft.Path(), "weightops.base": base.Path()}
		maps.Copy(md, o.Metadata)
		job.Outputs = []stream.Output{stream.CheckpointOutput(out, stream.HFMetadata(md), sourceDType(o.Options), o.ShardSize)}
	}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	rep.Files = files[0]
	if w != nil {
		if rep.Patch, err = wpatch.Summarize(out, base, w.Errors()); err != nil {
			return nil, err
		}
	}
	return rep, nil
}

// diff is out = in[0] − in[1] (fine-tune minus base).
func diff(in, out [][]float64) {
	a, b, o := in[0], in[1], out[0]
	for e := range o {
		o[e] = a[e] - b[e]
	}
}

// sparseDiff is diff followed by a sparsification: τ = float32(ft − base)
// is ranked and masked in float32 (the sparsifier's passes see it chunk by
// chunk), and the kept values are written. τ is computed again from the
// inputs' chunks on each pass: cheaper than keeping a tensor-sized copy
// (which cost a 10%-Breadcrumbs diff at LLaMA-7B widths 0.5–1 s and 200
// MB of peak RSS).
type sparseDiff struct {
	sp  *sparsify.TensorSparsifier
	tau []float32
	raw weights.Tensor // the fine-tune's bytes of the current chunk
}

func newSparseDiff(sp *sparsify.TensorSparsifier) *sparseDiff {
	return &sparseDiff{sp: sp}
}

// RawInput: the fine-tune is read raw, the base decoded.
func (k *sparseDiff) RawInput(i int) bool { return i == 0 }

// SetRaw receives the fine-tune's bytes of the next chunk.
func (k *sparseDiff) SetRaw(_ int, t weights.Tensor) { k.raw = t }

// delta returns τ of the next chunk: float32(ft − base), the float64
// difference of float32-or-narrower values being exact, taken straight
// from the fine-tune's bytes (vec.DeltaBF16 for BF16). Diff's inputs are
// not optional, so the fine-tune's chunk always comes raw.
func (k *sparseDiff) delta(in [][]float64) ([]float32, error) {
	b := in[1]
	if cap(k.tau) < len(b) {
		k.tau = make([]float32, len(b))
	}
	t := k.tau[:len(b)]
	return t, weights.DeltaFloat32(k.raw.DType, k.raw.Data, b, t)
}

func (k *sparseDiff) NextPass() (int, bool) {
	if ps := k.sp.Needs(); len(ps) > 0 {
		return int(ps[0]), true
	}
	return 0, false
}

func (k *sparseDiff) Observe(p int, in [][]float64) error {
	t, err := k.delta(in)
	if err != nil {
		return err
	}
	k.sp.Observe(sparsify.Pass(p), t)
	return nil
}

func (k *sparseDiff) EndPass(p int) error {
	k.sp.EndPass(sparsify.Pass(p))
	return nil
}

func (k *sparseDiff) Compute(in, out [][]float64) error {
	t, err := k.delta(in)
	if err != nil {
		return err
	}
	k.sp.Apply(t)
	for e, v := range t {
		out[0][e] = float64(v)
	}
	return nil
}

func sameBytes(a, b weights.Checkpoint, name string) (bool, error) {
	ta, err := a.ReadTensor(name, nil)
	if err != nil {
		return false, err
	}
	tb, err := b.ReadTensor(name, nil)
	if err != nil {
		return false, err
	}
	return ta.DType == tb.DType && bytes.Equal(ta.Data, tb.Data), nil
}

// AddOptions control Add.
type AddOptions struct {
	stream.Options
	// Lambda is the overall scale λ.
	Lambda float64
	// Scales are the per-task-vector scales s_i (default all 1).
	Scales   []float64
	Metadata map[string]string
}

// Add writes θ + λ·Σ s_i·τ_i. Task vectors may cover a subset of the base's
// tensors (the others are copied); a task-vector tensor the base lacks, or
// of another shape, is an error.
func Add(ctx context.Context, base weights.Checkpoint, tvs []weights.Checkpoint, out string, o AddOptions) ([]string, error) {
	scales := o.Scales
	if len(scales) == 0 {
		scales = make([]float64, len(tvs))
		for i := range scales {
			scales[i] = 1
		}
	}
	if len(scales) != len(tvs) {
		return nil, fmt.Errorf("%d scales for %d task vectors", len(scales), len(tvs))
	}
	for _, tv := range tvs {
		if err := checkSubset(tv, base); err != nil {
			return nil, err
		}
	}
	// A directory output loads like the base: its side files are read
	// (and checked) now, written after.
	side, err := o.ReadModelFiles(out, base.Path())
	if err != nil {
		return nil, err
	}
	inputs := append([]weights.Checkpoint{base}, tvs...)
	opt := make([]bool, len(inputs))
	for i := 1; i < len(opt); i++ {
		opt[i] = true
	}
	md := map[string]string{"weightops.kind": "patched", "weightops.base": base.Path(), "weightops.lambda": fmt.Sprint(o.Lambda)}
	var names []string
	for _, tv := range tvs {
		names = append(names, tv.Path())
	}
	md["weightops.task_vectors"] = strings.Join(names, ",")
	maps.Copy(md, o.Metadata)
	lambda := o.Lambda
	job := &stream.Job{
		Inputs: inputs, Optional: opt, Tensors: base.Tensors(),
		Outputs: []stream.Output{stream.CheckpointOutput(out, stream.HFMetadata(md), sourceDType(o.Options), o.ShardSize)},
		Kernel: func(weights.TensorInfo) (stream.Kernel, error) {
			return stream.Passes(stream.ElementwiseFunc(func(in, out [][]float64) {
				o := out[0]
				for e := range o {
					var sum float64
					for i := 1; i < len(in); i++ {
						sum += scales[i-1] * in[i][e]
					}
					o[e] = in[0][e] + lambda*sum
				}
			})), nil
		},
		Phase:   "adding",
		Options: o.Options,
	}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	copied, err := side.Write(base.Tensors(), stream.OutputInfos(base.Tensors(), sourceDType(o.Options)))
	return append(files[0], copied...), err
}

func checkSubset(sub, of weights.Checkpoint) error {
	for _, t := range sub.Tensors() {
		b, ok := of.Info(t.Name)
		if !ok {
			return &weights.TensorError{File: sub.Path(), Tensor: t.Name, Err: fmt.Errorf("not in %s", of.Path())}
		}
		if !weights.SameShape(t.Shape, b.Shape) {
			return &weights.TensorError{File: sub.Path(), Tensor: t.Name, Err: fmt.Errorf("shape %s, %s has %s", t.ShapeString(), of.Path(), b.ShapeString())}
		}
		if t.DType.IsFloat() != b.DType.IsFloat() {
			return &weights.TensorError{File: sub.Path(), Tensor: t.Name, Err: fmt.Errorf("dtype %s cannot apply to %s", t.DType, b.DType)}
		}
	}
	return nil
}

// ScaleOptions control Scale.
type ScaleOptions struct {
	stream.Options
	Metadata map[string]string
}

// Scale writes s·τ (s = −1 negates).
func Scale(ctx context.Context, tv weights.Checkpoint, s float64, out string, o ScaleOptions) ([]string, error) {
	md := map[string]string{"weightops.kind": "task-vector", "weightops.scaled_from": tv.Path(), "weightops.scale": fmt.Sprint(s)}
	maps.Copy(md, o.Metadata)
	job := &stream.Job{
		Inputs: []weights.Checkpoint{tv}, Tensors: tv.Tensors(),
		Outputs: []stream.Output{stream.CheckpointOutput(out, stream.HFMetadata(md), sourceDType(o.Options), o.ShardSize)},
		Kernel: func(weights.TensorInfo) (stream.Kernel, error) {
			return stream.Passes(stream.ElementwiseFunc(func(in, out [][]float64) {
				for e := range out[0] {
					out[0][e] = s * in[0][e]
				}
			})), nil
		},
		Phase:   "scaling",
		Options: o.Options,
	}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	return files[0], nil
}

// Interpolate writes θ(α) = (1−α)·θ_a + α·θ_b for each α into the matching
// output path, reading a and b once. Tensors must match by name and shape.
func Interpolate(ctx context.Context, a, b weights.Checkpoint, alphas []float64, outs []string, o ScaleOptions) ([][]string, error) {
	if err := checkSubset(a, b); err != nil {
		return nil, err
	}
	if err := checkSubset(b, a); err != nil {
		return nil, err
	}
	// Each directory output loads like A.
	sides := make([]*stream.ModelFiles, len(outs))
	for i, out := range outs {
		var err error
		if sides[i], err = o.ReadModelFiles(out, a.Path()); err != nil {
			return nil, err
		}
	}
	var outputs []stream.Output
	for i, al := range alphas {
		md := map[string]string{"weightops.kind": "interpolation", "weightops.a": a.Path(), "weightops.b": b.Path(), "weightops.alpha": fmt.Sprint(al)}
		maps.Copy(md, o.Metadata)
		outputs = append(outputs, stream.CheckpointOutput(outs[i], stream.HFMetadata(md), sourceDType(o.Options), o.ShardSize))
	}
	job := &stream.Job{
		Inputs: []weights.Checkpoint{a, b}, Tensors: a.Tensors(), Outputs: outputs,
		Kernel: func(weights.TensorInfo) (stream.Kernel, error) {
			return stream.Passes(stream.ElementwiseFunc(func(in, out [][]float64) {
				x, y := in[0], in[1]
				for k, al := range alphas {
					o := out[k]
					for e := range o {
						o[e] = (1-al)*x[e] + al*y[e]
					}
				}
			})), nil
		},
		Phase:   "interpolating",
		Options: o.Options,
	}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	for i := range files {
		copied, err := sides[i].Write(a.Tensors(), stream.OutputInfos(a.Tensors(), sourceDType(o.Options)))
		if err != nil {
			return nil, err
		}
		files[i] = append(files[i], copied...)
	}
	return files, nil
}

// ParseAlphas reads "0.5", "0.2,0.5,0.8" or a sweep "start:stop:step"
// (stop included when the steps land on it).
func ParseAlphas(s string) ([]float64, error) {
	if parts := strings.Split(s, ":"); len(parts) != 1 && len(parts) != 3 {
		return nil, fmt.Errorf("alpha sweep %q: want start:stop:step (e.g. 0:1:0.25)", s)
	} else if len(parts) == 3 {
		var a, b, st float64
		if _, err := fmt.Sscan(parts[0], &a); err != nil {
			return nil, fmt.Errorf("alpha sweep %q: %w", s, err)
		}
		if _, err := fmt.Sscan(parts[1], &b); err != nil {
			return nil, fmt.Errorf("alpha sweep %q: %w", s, err)
		}
		if _, err := fmt.Sscan(parts[2], &st); err != nil || st <= 0 {
			return nil, fmt.Errorf("alpha sweep %q: step must be positive", s)
		}
		n := int((b-a)/st + 1e-9)
		if n < 0 || n > 10000 {
			return nil, fmt.Errorf("alpha sweep %q: %d steps", s, n+1)
		}
		out := make([]float64, 0, n+1)
		for i := 0; i <= n; i++ {
			// Computed from the index, not accumulated, so 0:1:0.1 ends at 1.
			out = append(out, a+float64(i)*st)
		}
		return out, nil
	}
	var out []float64
	for _, p := range strings.Split(s, ",") {
		var v float64
		if _, err := fmt.Sscan(strings.TrimSpace(p), &v); err != nil {
			return nil, fmt.Errorf("alpha %q: not a number", p)
		}
		out = append(out, v)
	}
	return out, nil
}

// rowCut presents a checkpoint with some tensors cut to their first rows.
type rowCut struct {
	weights.Checkpoint
	rows map[string]int64
}

func cutRows(c weights.Checkpoint, rows map[string]int64) weights.Checkpoint {
	if len(rows) == 0 {
		return c
	}
	return &rowCut{c, rows}
}

func (r *rowCut) Info(name string) (weights.TensorInfo, bool) {
	t, ok := r.Checkpoint.Info(name)
	if n, cut := r.rows[name]; ok && cut {
		t.Shape = append([]int64{n}, t.Shape[1:]...)
	}
	return t, ok
}

func (r *rowCut) ReadTensor(name string, buf []byte) (weights.Tensor, error) {
	t, err := r.Checkpoint.ReadTensor(name, buf)
	if n, cut := r.rows[name]; err == nil && cut {
		t.Shape = append([]int64{n}, t.Shape[1:]...)
		b, _ := t.ByteSize()
		t.Data = t.Data[:b]
	}
	return t, err
}
