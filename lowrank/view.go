package lowrank

import (
	"fmt"
	"math"

	"github.com/weightops/weightops/weights"
)

// Merged is a checkpoint that reads as base with an adapter merged in:
// each tensor the adapter updates is W + scale·s·B·A computed when read,
// exactly as Merge writes it (float64, rounded once to the base's dtype);
// each it carries whole is the adapter's (in the base's dtype); the rest
// are the base's. It is what a mergekit MODEL+LORA reference reads.
type Merged struct {
	base    weights.Checkpoint
	adapter *Adapter
	scale   float64
	jobs    map[string]mergeJob
}

// View returns base with the adapter merged in (scale 1 merges it as
// trained), checking every name and shape up front; closing it closes the
// adapter and the base.
func (a *Adapter) View(base weights.Checkpoint, scale float64) (*Merged, error) {
	if math.IsNaN(scale) || math.IsInf(scale, 0) {
		return nil, fmt.Errorf("scale %g is not finite", scale)
	}
	jobs, err := a.plan(base)
	if err != nil {
		return nil, err
	}
	return &Merged{base: base, adapter: a, scale: scale, jobs: jobs}, nil
}

// Path names the base and the adapter: BASE+ADAPTER.
func (m *Merged) Path() string { return m.base.Path() + "+" + m.adapter.WeightsPath }

// Files are the base's files and the adapter's, for provenance.
func (m *Merged) Files() []string {
	return append(append([]string(nil), weights.Files(m.base)...), m.adapter.WeightsPath, m.adapter.ConfigPath)
}

// Tensors are the base's.
func (m *Merged) Tensors() []weights.TensorInfo { return m.base.Tensors() }

// Info is the base's description of a tensor.
func (m *Merged) Info(name string) (weights.TensorInfo, bool) { return m.base.Info(name) }

// Metadata is the base's.
func (m *Merged) Metadata() map[string]string { return m.base.Metadata() }

// ReadTensor reads a tensor with the adapter merged in.
func (m *Merged) ReadTensor(name string, buf []byte) (weights.Tensor, error) {
	job, ok := m.jobs[name]
	if !ok {
		return m.base.ReadTensor(name, buf)
	}
	if job.whole != "" {
		src, err := m.adapter.Weights.ReadTensor(job.whole, nil)
		if err != nil {
			return weights.Tensor{}, err
		}
		info, _ := m.base.Info(name)
		data, err := weights.ConvertBytesInto(src.DType, info.DType, src.Data, buf[:0])
		if err != nil {
			return weights.Tensor{}, &weights.TensorError{File: m.adapter.WeightsPath, Tensor: job.whole, Err: err}
		}
		return weights.Tensor{TensorInfo: info, Data: data}, nil
	}
	ten, err := m.base.ReadTensor(name, nil)
	if err != nil {
		return weights.Tensor{}, err
	}
	size := len(ten.Data)
	if cap(buf) < size {
		buf = make([]byte, size)
	}
	out := buf[:size]
	if err := m.adapter.mergeOne(m.base.Path(), ten, job, m.scale, out); err != nil {
		return weights.Tensor{}, err
	}
	return weights.Tensor{TensorInfo: ten.TensorInfo, Data: out}, nil
}

// Close closes the adapter and the base.
func (m *Merged) Close() error {
	err := m.adapter.Close()
	if e := m.base.Close(); err == nil {
		err = e
	}
	return err
}
