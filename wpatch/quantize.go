package wpatch

import (
	"context"
	"fmt"
	"maps"
	"os"
	"path/filepath"
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

// QuantizeCheckpoint quantizes every floating tensor of a checkpoint with
// cfg into the directory out: the quantized container (a patch of kind
// "weights", dense) as model.wq, a dequantized copy in the original dtypes
// as model.safetensors for whatever needs a plain checkpoint (integer and
// bool tensors copied), and the model directory's config and tokenizer
// files. With o.Shard, only that share of the tensors, as model-i-of-n.*.
// Each tensor is quantized once: the copy holds exactly what the container
// gives back.
func QuantizeCheckpoint(ctx context.Context, ck weights.Checkpoint, out string, cfg quantize.Config, o stream.Options) (*Summary, error) {
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
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
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
		Kernel: func(weights.TensorInfo) (stream.Kernel, error) {
			return stream.KernelFunc(func(_ context.Context, t *stream.Tensor) error {
				v, err := t.In[0].Float32s()
				if err != nil {
					return &weights.TensorError{File: in, Tensor: t.Name, Err: err}
				}
				deq, err := w.AddReconstructed(t.Name, t.Shape, t.DType, v)
				if err != nil {
					return err
				}
				return weights.EncodeFloat32(t.OutDType[0], deq, t.Out[0])
			}), nil
		},
		// The input, its float32 copy and the dequantized one, the output.
		Cost: func(t weights.TensorInfo) int64 {
			b, _ := t.ByteSize()
			n, _ := t.NumElements()
			return 2*b + 12*n
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
