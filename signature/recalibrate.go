package signature

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/train"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

// MetaRecalibrated records, in a patched model, how its batchnorm
// statistics were recalibrated (JSON of Recalibrated).
const MetaRecalibrated = "weightops.bn_recalibrated"

// Recalibration asks ApplyRecalibrated to recompute batchnorm statistics
// on data after patching, as the RWS code does after composing signatures.
type Recalibration struct {
	// Arch is the model's arch file ("" : the one beside the model).
	Arch string
	// Data holds the samples (labels unused); DataName names it in the
	// record.
	Data     *dataset.Set
	DataName string
	train.RecalibrateOptions
}

// Recalibrated is what the output records of a recalibration.
type Recalibrated struct {
	Data       string   `json:"data"`
	Samples    int      `json:"samples"`
	BatchSize  int      `json:"batch_size"`
	Batches    int      `json:"batches"`
	Corruption string   `json:"corruption,omitempty"`
	Seed       uint64   `json:"seed"`
	Tensors    []string `json:"tensors"`
}

// ApplyRecalibrated is wpatch.Apply followed by train.RecalibrateBN on the
// patched model: every batchnorm's running mean and variance (and
// num_batches_tracked) are recomputed on r.Data through the patched
// weights, then written in place of the patched values. The original
// values of those tensors go whole into the undo records, so `patch
// remove` still gives the original model back bit for bit. The patched
// model is first written to a hidden working directory beside out, removed
// afterwards (also on error or cancellation).
func ApplyRecalibrated(ctx context.Context, model weights.Checkpoint, patches []*wpatch.Patch, out string, o wpatch.ApplyOptions, r Recalibration) (*wpatch.ApplyReport, *Recalibrated, error) {
	arch := r.Arch
	if arch == "" {
		p, err := engine.FindArch(model.Path())
		if err != nil {
			return nil, nil, fmt.Errorf("recalibrating batchnorm needs the model's arch: %w", err)
		}
		arch = p
	}
	work, err := os.MkdirTemp(filepath.Dir(filepath.Clean(out)), ".weightops-recalibrate-")
	if err != nil {
		return nil, nil, err
	}
	defer os.RemoveAll(work)
	first := o
	first.Options.Shard, first.Options.ShardSize = nil, 0
	// The working copy's running statistics are reset to mean 0, variance
	// 1 (recalibration starts there anyway), so a composition that drives
	// a patched variance below zero still loads.
	first.Replace = map[string][]byte{}
	for _, t := range model.Tensors() {
		if !IsRunningStat(t.Name) || !t.DType.IsFloat() {
			continue
		}
		n, err := t.NumElements()
		if err != nil {
			return nil, nil, err
		}
		v := make([]float32, n)
		if strings.HasSuffix(t.Name, ".running_var") {
			for i := range v {
				v[i] = 1
			}
		}
		b := make([]byte, int(n)*t.DType.Size())
		if err := weights.EncodeFloat32(t.DType, v, b); err != nil {
			return nil, nil, &weights.TensorError{File: model.Path(), Tensor: t.Name, Err: err}
		}
		first.Replace[t.Name] = b
	}
	tmp := filepath.Join(work, "patched.safetensors")
	if _, err := wpatch.Apply(ctx, model, patches, tmp, first); err != nil {
		return nil, nil, err
	}
	m, err := engine.Load(tmp, arch)
	if err != nil {
		return nil, nil, err
	}
	batches, err := train.RecalibrateBN(m, r.Data, r.RecalibrateOptions)
	if err != nil {
		return nil, nil, fmt.Errorf("recalibrating batchnorm on %s: %w", r.DataName, err)
	}
	bs := r.BatchSize
	if bs <= 0 {
		bs = train.DefaultBNBatch
	}
	rec := &Recalibrated{Data: r.DataName, Samples: r.Data.Len(), BatchSize: min(bs, r.Data.Len()), Batches: batches,
		Corruption: r.Corrupt.String(), Seed: r.Seed}
	replace := map[string][]byte{}
	for _, l := range m.Leaves() {
		bn, ok := l.(*engine.BatchNorm)
		if !ok {
			continue
		}
		for _, p := range []*engine.Param{bn.Mean, bn.Var} {
			info, ok := model.Info(p.Name)
			if !ok {
				return nil, nil, fmt.Errorf("%s: tensor %q: not in the model", model.Path(), p.Name)
			}
			b := make([]byte, len(p.Data)*info.DType.Size())
			if err := weights.EncodeFloat32(info.DType, p.Data, b); err != nil {
				return nil, nil, &weights.TensorError{File: model.Path(), Tensor: p.Name, Err: err}
			}
			replace[p.Name] = b
			rec.Tensors = append(rec.Tensors, p.Name)
		}
		name := bn.Spec().TensorName("num_batches_tracked")
		if info, ok := model.Info(name); ok && info.DType == weights.I64 {
			replace[name] = binary.LittleEndian.AppendUint64(nil, uint64(bn.NumBatchesTracked))
			rec.Tensors = append(rec.Tensors, name)
		}
	}
	j, _ := json.Marshal(rec)
	o.Replace = replace
	o.Metadata = map[string]string{MetaRecalibrated: string(j)}
	rep, err := wpatch.Apply(ctx, model, patches, out, o)
	return rep, rec, err
}
