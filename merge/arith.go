package merge

import (
	"bytes"
	"fmt"
	"strings"

	"github.com/weightops/weightops/weights"
)

// StreamOptions are the executor settings shared by the arithmetic
// commands.
type StreamOptions struct {
	Workers   int
	MaxMemory int64
	ShardSize int64
	Progress  func(int64)
	// DType, when HasDType, is the output dtype of floating tensors.
	DType    weights.DType
	HasDType bool
	Metadata map[string]string
}

func (o StreamOptions) dtype(def func(weights.TensorInfo) weights.DType) func(weights.TensorInfo) weights.DType {
	return func(t weights.TensorInfo) weights.DType {
		if o.HasDType && t.DType.IsFloat() {
			return o.DType
		}
		return def(t)
	}
}

func sourceDType(t weights.TensorInfo) weights.DType {
	if t.DType.IsFloat() && !t.DType.Writable() {
		return weights.F32
	}
	return t.DType
}

func floatsComputed(t weights.TensorInfo) int {
	if t.DType.IsFloat() {
		return -1
	}
	return 0
}

// DiffReport says what a diff left out.
type DiffReport struct {
	Files []string `json:"files"`
	// Skipped are integer/bool tensors that differ between the models
	// (a task vector cannot express them).
	Skipped []string `json:"skipped,omitempty"`
	// Resized are tensors of the fine-tune cut to the base's rows.
	Resized []string `json:"resized,omitempty"`
}

// Diff writes the task vector τ = θ_ft − θ_base. Floating tensors are
// subtracted (computed in float64 from the decoded inputs and rounded once
// to the output dtype, F32 unless set). Integer and bool tensors are copied
// from ft when they equal base's, otherwise reported and left out. A
// tensor missing on either side, or of another shape, is an error naming
// it — unless allowResize and the fine-tune only has more rows (an
// extended vocabulary), in which case its first rows are used.
func Diff(ft, base weights.Checkpoint, out string, allowResize bool, o StreamOptions) (*DiffReport, error) {
	rep := &DiffReport{}
	cuts := map[string]int64{}
	var infos []weights.TensorInfo
	for _, t := range ft.Tensors() {
		b, ok := base.Info(t.Name)
		if !ok {
			return nil, &weights.TensorError{File: base.Path(), Tensor: t.Name, Err: fmt.Errorf("in %s but not in the base", ft.Path())}
		}
		if !weights.SameShape(t.Shape, b.Shape) {
			if allowResize && len(t.Shape) == len(b.Shape) && len(t.Shape) >= 1 && t.Shape[0] > b.Shape[0] && weights.SameShape(t.Shape[1:], b.Shape[1:]) {
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
				continue
			}
		}
		infos = append(infos, weights.TensorInfo{Name: t.Name, DType: t.DType, Shape: b.Shape})
	}
	for _, t := range base.Tensors() {
		if _, ok := ft.Info(t.Name); !ok {
			return nil, &weights.TensorError{File: ft.Path(), Tensor: t.Name, Err: fmt.Errorf("in the base %s but not in the fine-tune", base.Path())}
		}
	}
	if !o.HasDType {
		o.DType, o.HasDType = weights.F32, true
	}
	md := map[string]string{"weightops.kind": "task-vector", "weightops.finetune": ft.Path(), "weightops.base": base.Path()}
	for k, v := range o.Metadata {
		md[k] = v
	}
	job := &Job{
		Inputs:      []weights.Checkpoint{cutRows(ft, cuts), base},
		Tensors:     infos,
		Outputs:     []Output{{Path: out, Metadata: md, DType: o.dtype(sourceDType)}},
		Kernel:      func(weights.TensorInfo) (TensorKernel, error) { return DiffKernel(), nil },
		PassThrough: floatsComputed,
		Workers:     o.Workers, MaxMemory: o.MaxMemory, ShardSize: o.ShardSize, Progress: o.Progress,
	}
	files, err := job.Run()
	if err != nil {
		return nil, err
	}
	rep.Files = files[0]
	return rep, nil
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

// Add writes θ + λ·Σ s_i·τ_i. Task vectors may cover a subset of the base's
// tensors (the others are copied); a task-vector tensor the base lacks, or
// of another shape, is an error.
func Add(base weights.Checkpoint, tvs []weights.Checkpoint, lambda float64, scales []float64, out string, o StreamOptions) ([]string, error) {
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
	inputs := append([]weights.Checkpoint{base}, tvs...)
	opt := make([]bool, len(inputs))
	for i := 1; i < len(opt); i++ {
		opt[i] = true
	}
	md := map[string]string{"weightops.kind": "patched", "weightops.base": base.Path(), "weightops.lambda": fmt.Sprint(lambda)}
	var names []string
	for _, tv := range tvs {
		names = append(names, tv.Path())
	}
	md["weightops.task_vectors"] = strings.Join(names, ",")
	for k, v := range o.Metadata {
		md[k] = v
	}
	job := &Job{
		Inputs: inputs, Optional: opt, Tensors: base.Tensors(),
		Outputs:     []Output{{Path: out, Metadata: md, DType: o.dtype(sourceDType)}},
		Kernel:      func(weights.TensorInfo) (TensorKernel, error) { return AddKernel(lambda, scales), nil },
		PassThrough: floatsComputed,
		Workers:     o.Workers, MaxMemory: o.MaxMemory, ShardSize: o.ShardSize, Progress: o.Progress,
	}
	files, err := job.Run()
	if err != nil {
		return nil, err
	}
	return files[0], nil
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

// Scale writes s·τ (s = −1 negates).
func Scale(tv weights.Checkpoint, s float64, out string, o StreamOptions) ([]string, error) {
	md := map[string]string{"weightops.kind": "task-vector", "weightops.scaled_from": tv.Path(), "weightops.scale": fmt.Sprint(s)}
	for k, v := range o.Metadata {
		md[k] = v
	}
	job := &Job{
		Inputs: []weights.Checkpoint{tv}, Tensors: tv.Tensors(),
		Outputs:     []Output{{Path: out, Metadata: md, DType: o.dtype(sourceDType)}},
		Kernel:      func(weights.TensorInfo) (TensorKernel, error) { return ScaleKernel(s), nil },
		PassThrough: floatsComputed,
		Workers:     o.Workers, MaxMemory: o.MaxMemory, ShardSize: o.ShardSize, Progress: o.Progress,
	}
	files, err := job.Run()
	if err != nil {
		return nil, err
	}
	return files[0], nil
}

// Interpolate writes θ(α) = (1−α)·θ_a + α·θ_b for each α into the matching
// output path, reading a and b once. Tensors must match by name and shape.
func Interpolate(a, b weights.Checkpoint, alphas []float64, outs []string, o StreamOptions) ([][]string, error) {
	if err := checkSubset(a, b); err != nil {
		return nil, err
	}
	if err := checkSubset(b, a); err != nil {
		return nil, err
	}
	var outputs []Output
	for i, al := range alphas {
		md := map[string]string{"weightops.kind": "interpolation", "weightops.a": a.Path(), "weightops.b": b.Path(), "weightops.alpha": fmt.Sprint(al)}
		for k, v := range o.Metadata {
			md[k] = v
		}
		outputs = append(outputs, Output{Path: outs[i], Metadata: md, DType: o.dtype(sourceDType)})
	}
	job := &Job{
		Inputs: []weights.Checkpoint{a, b}, Tensors: a.Tensors(), Outputs: outputs,
		Kernel:      func(weights.TensorInfo) (TensorKernel, error) { return InterpolateKernel(alphas), nil },
		PassThrough: floatsComputed,
		Workers:     o.Workers, MaxMemory: o.MaxMemory, ShardSize: o.ShardSize, Progress: o.Progress,
	}
	return job.Run()
}

// ParseAlphas reads "0.5", "0.2,0.5,0.8" or a sweep "start:stop:step"
// (stop included when the steps land on it).
func ParseAlphas(s string) ([]float64, error) {
	if parts := strings.Split(s, ":"); len(parts) == 3 {
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
