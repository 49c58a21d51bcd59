package weights

import (
	"context"
	"fmt"
	"maps"
	"runtime"
	"sync"
	"sync/atomic"
)

// ForEach runs fn over infos with a pool of workers (0 means GOMAXPROCS,
// capped at 2 per the memory budget of one tensor per worker and
// the fact that merges are memory-bound). Each call gets its worker index so
// it can reuse per-worker buffers. The first error cancels the remaining
// work and is returned.
func ForEach(infos []TensorInfo, workers int, fn func(worker int, t TensorInfo) error) error {
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), 2)
	}
	workers = max(1, min(workers, len(infos)))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var next atomic.Int64
	var once sync.Once
	var firstErr error
	var wg sync.WaitGroup
	for w := 0; w < workers; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			for ctx.Err() == nil {
				i := int(next.Add(1) - 1)
				if i >= len(infos) {
					return
				}
				if err := fn(w, infos[i]); err != nil {
					once.Do(func() { firstErr = err; cancel() })
					return
				}
			}
		}(w)
	}
	wg.Wait()
	return firstErr
}

// ConvertOptions control Convert.
type ConvertOptions struct {
	// DType, when set (Convert sets HasDType), is the dtype floating-point
	// tensors are converted to; integer and BOOL tensors are copied as is.
	DType    DType
	HasDType bool
	// ShardSize > 0 writes a sharded checkpoint directory with shards of at
	// most this many bytes.
	ShardSize int64
	// Metadata entries are added to (and override) the source's metadata.
	Metadata map[string]string
	// Workers is the number of tensors processed at once (0: default).
	Workers int
	// Progress, if set, is called with the bytes of each finished tensor.
	Progress func(n int64)
}

// OutputDType is the dtype a tensor is written in under these options.
func (o ConvertOptions) OutputDType(t TensorInfo) DType {
	if o.HasDType && t.DType.IsFloat() {
		return o.DType
	}
	return t.DType
}

// Convert streams every tensor of src into a safetensors output, one tensor
// per worker in memory at a time. out is a .safetensors file path, or with
// ShardSize a directory. The output appears only when complete. It returns
// the files written.
func Convert(src Checkpoint, out string, opts ConvertOptions) ([]string, error) {
	if opts.HasDType && !opts.DType.Writable() {
		return nil, fmt.Errorf("cannot convert to %s", opts.DType)
	}
	infos := src.Tensors()
	outInfos := make([]TensorInfo, len(infos))
	for i, t := range infos {
		outInfos[i] = TensorInfo{Name: t.Name, DType: opts.OutputDType(t), Shape: t.Shape}
	}
	md := map[string]string{}
	maps.Copy(md, src.Metadata())
	if _, ok := md["format"]; !ok {
		// transformers refuses safetensors files without format=pt.
		md["format"] = "pt"
	}
	maps.Copy(md, opts.Metadata)

	w, files, err := CreateOutput(out, outInfos, md, opts.ShardSize)
	if err != nil {
		return nil, err
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = min(runtime.GOMAXPROCS(0), 2)
	}
	bufs := make([][]byte, workers)
	outBufs := make([][]byte, workers)
	err = ForEach(infos, workers, func(wk int, t TensorInfo) error {
		ten, err := src.ReadTensor(t.Name, bufs[wk])
		if err != nil {
			return err
		}
		bufs[wk] = ten.Data
		data := ten.Data
		if to := opts.OutputDType(t); to != t.DType {
			data, err = ConvertBytesInto(t.DType, to, ten.Data, outBufs[wk])
			if err != nil {
				return &TensorError{File: src.Path(), Tensor: t.Name, Err: err}
			}
			outBufs[wk] = data
		}
		if err := w.WriteTensor(t.Name, data); err != nil {
			return err
		}
		if opts.Progress != nil {
			opts.Progress(int64(len(ten.Data)))
		}
		return nil
	})
	if err != nil {
		w.Abort()
		return nil, err
	}
	if err := w.Commit(); err != nil {
		return nil, err
	}
	return files, nil
}

// TotalBytes sums the byte sizes of tensors.
func TotalBytes(infos []TensorInfo) int64 {
	var n int64
	for _, t := range infos {
		b, _ := t.ByteSize()
		n += b
	}
	return n
}
