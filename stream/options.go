package stream

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/weights"
)

// DefaultMaxMemory is the bound on tensor bytes in flight when Options
// gives none.
const DefaultMaxMemory = 256 << 20

// Options are the settings every streaming command shares; each command's
// options embed them.
type Options struct {
	// Workers is how many tensors are processed at once (0: min(cores, 2)).
	Workers int
	// MaxMemory bounds the bytes held by the tensors in flight (inputs,
	// outputs and scratch). A tensor streamed from its files (see
	// StreamAbove) counts its chunks; another larger than the bound runs
	// alone.
	// 0 means DefaultMaxMemory.
	MaxMemory int64
	// ShardSize > 0 writes checkpoint outputs as Hugging Face shards of at
	// most this many bytes, with an index.
	ShardSize int64
	// Shard, when set, computes only this worker's balanced share of the
	// tensors into OUT/model-i-of-n.safetensors (see weights.ShardSpec);
	// `weightops index` stitches the shards together.
	Shard *weights.ShardSpec
	// DType, when set, is the output dtype of floating tensors.
	DType *weights.DType
	// Progress, if set, is told the phases and the bytes done.
	Progress Progress
	// AllowNonFinite computes with NaN and ±Inf input values instead of
	// refusing them (see Job): wherever any input of a computed tensor is
	// non-finite, every input counts as 0 there (so it takes no part in
	// norms, ranks and cuts) and the output is NaN.
	AllowNonFinite bool
	// Warn, if set, receives warnings: what a job did that its caller may
	// not expect (a side file not copied), one line each.
	Warn func(msg string)
}

// Warnf sends a warning to o.Warn when there is one.
func (o Options) Warnf(format string, a ...any) {
	if o.Warn != nil {
		o.Warn(fmt.Sprintf(format, a...))
	}
}

// workers is the resolved worker count.
func (o Options) workers() int { return parallel.Workers(o.Workers) }

func (o Options) maxMemory() int64 {
	if o.MaxMemory > 0 {
		return o.MaxMemory
	}
	return DefaultMaxMemory
}

// OutputDType is the dtype tensor t is written in under these options
// (see weights.OutputDType).
func (o Options) OutputDType(t weights.TensorInfo) weights.DType {
	return weights.OutputDType(t.DType, o.DType)
}

// ShardOutput applies o.Shard to a job's tensors and output path: with a
// shard, only its share of the tensors, written as
// out/model-i-of-n.safetensors (out is created as a directory); without,
// everything into out.
func (o Options) ShardOutput(tensors []weights.TensorInfo, out string) ([]weights.TensorInfo, string, error) {
	if o.Shard == nil {
		return tensors, out, nil
	}
	if weights.IsSafetensorsPath(out) {
		return nil, "", fmt.Errorf("%s: a sharded run (--shard %d/%d) writes into a directory", out, o.Shard.Index, o.Shard.Count)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, "", err
	}
	return o.Shard.Select(tensors), filepath.Join(out, o.Shard.FileName()), nil
}

// Progress is told what a long operation is doing (a progress.Bar's
// methods, typically); nil functions mean no report. Functions rather than
// an interface: a value in an interface makes the linker keep every
// method reachable from it, and a progress bar's reach net/http.
type Progress struct {
	// Phase starts a named phase ("merging", "hashing", "pass 1/2")
	// that will count total bytes.
	Phase func(name string, total int64)
	// Add counts n more bytes done in the current phase; it must be safe
	// for concurrent use.
	Add func(n int64)
}

// StartPhase starts a phase on p when there is one.
func StartPhase(p Progress, name string, total int64) {
	if p.Phase != nil {
		p.Phase(name, total)
	}
}

func add(p Progress, n int64) {
	if p.Add != nil {
		p.Add(n)
	}
}

// Digest is the checkpoint's weights.CheckpointDigest, under a progress
// phase naming it ("hashing base.safetensors"): a multi-GB model takes
// seconds to hash.
func (o Options) Digest(c weights.Checkpoint) (string, error) {
	var total int64
	for _, f := range weights.Files(c) {
		if st, err := os.Stat(f); err == nil {
			total += st.Size()
		}
	}
	StartPhase(o.Progress, "hashing "+filepath.Base(c.Path()), total)
	return weights.CheckpointDigestProgress(c, func(n int64) { add(o.Progress, n) })
}

// WithPhasePrefix returns o with every phase name it reports prefixed
// ("pass 1/2: "), for a job that is one step of a longer operation.
func (o Options) WithPhasePrefix(prefix string) Options {
	if phase := o.Progress.Phase; phase != nil {
		o.Progress.Phase = func(name string, total int64) { phase(prefix+name, total) }
	}
	return o
}
