package signature

import (
	"fmt"

	"github.com/weightops/weightops/weights"
)

// DiffToPatch writes the task vector ft − base, sparsified by sp, into a
// patch (zeros are stored sparsely). Only floating tensors present in both
// with equal shapes are taken; any other difference is an error.
func DiffToPatch(ft, base weights.Checkpoint, sp Sparsify, w *PatchWriter, workers int) error {
	var infos []weights.TensorInfo
	for _, t := range ft.Tensors() {
		b, ok := base.Info(t.Name)
		if !ok {
			return &weights.TensorError{File: base.Path(), Tensor: t.Name, Err: fmt.Errorf("in %s but not in the base", ft.Path())}
		}
		if !weights.SameShape(t.Shape, b.Shape) {
			return &weights.TensorError{File: ft.Path(), Tensor: t.Name, Err: fmt.Errorf("shape %s, base has %s", t.ShapeString(), b.ShapeString())}
		}
		if t.DType.IsFloat() {
			infos = append(infos, b)
		}
	}
	tr := triple{clean: base, robust: ft}
	return weights.ForEach(infos, workers, func(_ int, t weights.TensorInfo) error {
		n, _ := t.NumElements()
		tau := make([]float32, 0, n)
		err := tr.chunks(t, func(_, b, f []float64) {
			for i := range b {
				tau = append(tau, float32(f[i]-b[i]))
			}
		})
		if err != nil {
			return err
		}
		SparsifyInPlace(sp, t.Name, t.Shape, 0, tau)
		return w.Add(t.Name, t.Shape, t.DType, tau)
	})
}

// Requantize copies a patch into w, re-encoding its values with w's
// encoding (for example, F32 → 4-bit).
func Requantize(p *Patch, w *PatchWriter, workers int) error {
	infos := make([]weights.TensorInfo, len(p.Tensors))
	for i, t := range p.Tensors {
		dt, _ := weights.ParseDType(t.DType)
		infos[i] = weights.TensorInfo{Name: t.Name, DType: dt, Shape: t.Shape}
	}
	return weights.ForEach(infos, workers, func(_ int, t weights.TensorInfo) error {
		n, _ := t.NumElements()
		v := make([]float32, n)
		if err := p.Load(t.Name, v); err != nil {
			return err
		}
		return w.Add(t.Name, t.Shape, t.DType, v)
	})
}

// QuantizeCheckpoint quantizes the given (floating) tensors of a checkpoint with
// cfg into a patch-format container (kind "weights", dense) and returns a
// checkpoint writer's worth of dequantized tensors through emit, in the
// original dtypes, for use where a plain checkpoint is needed. Integer and
// bool tensors are passed to emit unchanged.
func QuantizeCheckpoint(c weights.Checkpoint, infos []weights.TensorInfo, w *PatchWriter, workers int, emit func(t weights.Tensor) error) error {
	return weights.ForEach(infos, workers, func(_ int, t weights.TensorInfo) error {
		ten, err := c.ReadTensor(t.Name, nil)
		if err != nil {
			return err
		}
		if !t.DType.IsFloat() {
			return emit(ten)
		}
		v, err := ten.Float32s()
		if err != nil {
			return err
		}
		deq, err := w.AddReconstructed(t.Name, t.Shape, t.DType, v)
		if err != nil {
			return err
		}
		dt := t.DType
		if !dt.Writable() {
			dt = weights.F32
		}
		out := make([]byte, len(deq)*dt.Size())
		if err := weights.EncodeFloat32(dt, deq, out); err != nil {
			return err
		}
		return emit(weights.Tensor{TensorInfo: weights.TensorInfo{Name: t.Name, DType: dt, Shape: t.Shape}, Data: out})
	})
}
