package stream

import (
	"context"

	"github.com/weightops/weightops/weights"
)

// ConvertOptions control Convert.
type ConvertOptions struct {
	Options
	// Metadata entries are added to (and override) the source's metadata.
	Metadata map[string]string
}

// Convert streams every tensor of src into a safetensors output at out (a
// .safetensors file, or with ShardSize a directory), floating tensors
// converted to Options.DType when set. It returns the files written. This
// is the identity job: every tensor passes through, so its speed is the
// I/O floor the other jobs are measured against. A directory output gets
// the source directory's side files (config.json updated for the dtype
// written).
func Convert(ctx context.Context, src weights.Checkpoint, out string, o ConvertOptions) ([]string, error) {
	side, err := o.ReadModelFiles(out, src.Path())
	if err != nil {
		return nil, err
	}
	md := HFMetadata(src.Metadata(), o.Metadata)
	job := &Job{
		Inputs:      []weights.Checkpoint{src},
		Tensors:     src.Tensors(),
		Outputs:     []Output{CheckpointOutput(out, md, o.copyDType, o.ShardSize)},
		PassThrough: func(weights.TensorInfo) int { return 0 },
		Phase:       "converting",
		Options:     o.Options,
	}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	copied, err := side.Write(src.Tensors(), OutputInfos(src.Tensors(), o.copyDType))
	return append(files[0], copied...), err
}

// copyDType is the dtype a tensor copied to safetensors is written in:
// DType for floating tensors when set, else its own when safetensors can
// hold it (the bytes are copied, so the read-only F8 types stay), else F32.
func (o Options) copyDType(t weights.TensorInfo) weights.DType {
	if t.DType.InSafetensors() && (o.DType == nil || !t.DType.IsFloat()) {
		return t.DType
	}
	return o.OutputDType(t)
}
