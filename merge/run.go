package merge

import (
	"context"
	"encoding/json"
	"os"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// Options control a merge run.
type Options struct {
	// Options: workers, memory bound, output sharding (ShardSize) and
	// sharded runs (Shard: only this worker's balanced share of the
	// tensors, into out/model-i-of-n.safetensors, for `weightops index`).
	stream.Options
	// NoHash skips hashing the inputs for provenance.
	NoHash bool
	// HashCache, if set, gives the digests of inputs hashed before (and
	// keeps the new ones): see weights.HashCache.
	HashCache *weights.HashCache
	// NoCard skips the model card (README.md) and the recipe copy
	// (mergekit_config.yml) written beside a directory output.
	NoCard bool
	// Version is recorded in the output metadata.
	Version string
}

// InputRecord is the provenance of one input checkpoint.
type InputRecord struct {
	Role  string       `json:"role"` // "base" or "model"
	Ref   string       `json:"ref"`
	Files []FileRecord `json:"files"`
}

// FileRecord is one file of an input with its SHA-256.
type FileRecord struct {
	Name   string `json:"name"`
	SHA256 string `json:"sha256"`
}

// placeholder has the width of a hex SHA-256 so the header can be
// rewritten in place once the hashes are known.
var placeholder = strings.Repeat("0", 64)

// Merge runs a validated plan and writes out (a directory, or a
// .safetensors file). The output metadata records the recipe, the method
// and each input's SHA-256 per file. A directory output also gets the
// config.json and tokenizer files of the base (or first) model directory,
// the config updated for what was written, and (unless NoCard) a model
// card and the recipe as mergekit_config.yml.
func (p *Plan) Merge(ctx context.Context, out string, o Options) ([]string, error) {
	// The side files (config, tokenizer) are read and checked before the
	// merge, written after it.
	srcCk := p.Checkpoints[p.reference]
	side, err := o.ReadModelFiles(out, modelPart(p.Recipe.resolve(p.Refs[p.reference])))
	if err != nil {
		return nil, err
	}
	if err := p.adjustSideFiles(side); err != nil {
		return nil, err
	}
	kernels, err := p.Recipe.methodDef.Build(ctx, p, o.Options)
	if err != nil {
		return nil, err
	}
	records := p.inputRecords()
	md := func(recs []InputRecord) map[string]string {
		j, _ := json.Marshal(recs)
		return map[string]string{
			"weightops.recipe":  canonicalYAML(p.Recipe.Source),
			"weightops.method":  p.Recipe.Method,
			"weightops.inputs":  string(j),
			"weightops.version": o.Version,
		}
	}
	// The header as first written, with placeholders: made before the
	// hashing goroutines start filling records in.
	initial := md(records)
	// Hash the inputs on the side while the merge streams: the page cache
	// serves both, and the header gets the real digests before commit.
	var hashErr error
	var wg sync.WaitGroup
	// When the merge is done first, the bar shows the rest of the hashing
	// as its own phase.
	var hashed, hashTotal atomic.Int64
	var showHash atomic.Bool
	// While the merge runs, the hashing takes turns on one core: the
	// merge's writes are what the output waits for, and once they are done
	// the disk flushes them while the hashing finishes on every core.
	// Hashing on every core from the start delays the merge's last writes,
	// and with them the final fsync. hashCtx stops the hashing when the
	// merge fails.
	gate := parallel.NewGate(1)
	hashCtx, stopHash := context.WithCancelCause(ctx)
	defer stopHash(nil)
	turns := hashTurns{gate, hashCtx, func(n int64) {
		hashed.Add(n)
		if showHash.Load() && o.Progress.Add != nil {
			o.Progress.Add(n)
		}
	}}
	if !o.NoHash {
		for _, r := range records {
			for _, f := range r.Files {
				if st, err := os.Stat(f.Name); err == nil {
					hashTotal.Add(st.Size())
				}
			}
		}
		// The files are hashed in parallel, up to twice as many at once as
		// there are workers: a digest is sequential, but once the merge is
		// done every core can take a file, and the turns spread over the
		// files make three equal files on two cores end together rather
		// than one after the other two.
		var files []*FileRecord
		for i := range records {
			for j := range records[i].Files {
				files = append(files, &records[i].Files[j])
			}
		}
		var next atomic.Int64
		var errOnce sync.Once
		for range min(2*parallel.Workers(o.Workers), len(files)) {
			wg.Add(1)
			go func() {
				defer wg.Done()
				for k := next.Add(1) - 1; k < int64(len(files)); k = next.Add(1) - 1 {
					sum, err := weights.FileSHA256Cached(files[k].Name, turns, o.HashCache)
					if err != nil {
						errOnce.Do(func() { hashErr = err })
						return
					}
					files[k].SHA256 = sum
				}
			}()
		}
	}
	tensors, path, err := o.ShardOutput(p.Tensors, out)
	if err != nil {
		return nil, err
	}
	optional := make([]bool, len(p.Inputs()))
	for i := range optional {
		optional[i] = true // a tensor reads as many inputs as it has sources
	}
	job := &stream.Job{
		Inputs:   p.Inputs(),
		Optional: optional,
		Tensors:  tensors,
		PassThrough: func(t weights.TensorInfo) int {
			if tp := p.Tensor(t.Name); !t.DType.IsFloat() || (len(tp.Sources) == 1 && p.copies(tp)) {
				return 0
			}
			return -1
		},
		Outputs: []stream.Output{stream.CheckpointOutput(path, stream.HFMetadata(initial), p.OutDType, o.ShardSize)},
		Kernel: func(t weights.TensorInfo) (stream.Kernel, error) {
			k, err := kernels(t)
			if err != nil {
				return nil, err
			}
			return ownInputs{k, len(p.Tensor(t.Name).Sources)}, nil
		},
		StreamCost: p.streamCost(),
		Split:      p.elementwise(),
		Phase:      "merging",
		Options:    o.Options,
		Finalize: func() ([]map[string]string, error) {
			gate.SetLimit(parallel.Workers(o.Workers))
			if !o.NoHash && hashed.Load() < hashTotal.Load() {
				stream.StartPhase(o.Progress, "hashing the inputs", hashTotal.Load())
				showHash.Store(true)
				if o.Progress.Add != nil {
					o.Progress.Add(hashed.Load())
				}
			}
			wg.Wait()
			if hashErr != nil {
				return nil, hashErr
			}
			if o.NoHash {
				return nil, nil
			}
			return []map[string]string{md(records)}, nil
		},
	}
	files, err := job.Run(ctx)
	if err != nil {
		stopHash(err)
		gate.SetLimit(0) // wakes the waiting hashers to see hashCtx
		wg.Wait()
		return nil, err
	}
	written := files[0]
	copied, err := side.Write(srcCk.Tensors(), stream.OutputInfos(p.Tensors, p.OutDType))
	written = append(written, copied...)
	if err != nil {
		return written, err
	}
	if dir := side.Dir(); dir != "" && !o.NoCard {
		card, err := p.writeCard(dir, records, o.Version, !o.NoHash)
		written = append(written, card...)
		if err != nil {
			return written, err
		}
	}
	return written, nil
}

// hashTurns paces the inputs' hashing through a gate and counts what it
// hashed.
type hashTurns struct {
	gate  *parallel.Gate
	ctx   context.Context
	count func(int64)
}

func (t hashTurns) Take() error { return t.gate.Enter(t.ctx) }

func (t hashTurns) Done(n int64) {
	t.gate.Leave()
	t.count(n)
}

func (p *Plan) inputRecords() []InputRecord {
	var recs []InputRecord
	add := func(role, ref string, c weights.Checkpoint) {
		r := InputRecord{Role: role, Ref: ref}
		for _, f := range weights.Files(c) {
			r.Files = append(r.Files, FileRecord{Name: f, SHA256: placeholder})
		}
		recs = append(recs, r)
	}
	for i, c := range p.Checkpoints {
		role := "model"
		if c == p.Base {
			role = "base"
		}
		add(role, p.Refs[i], c)
	}
	return recs
}

// copies reports whether a tensor with a single source is that source
// copied (every method but passthrough with a scale).
func (p *Plan) copies(tp *TensorPlan) bool {
	if d := p.Recipe.methodDef; d.Single != nil {
		return d.Single(tp)
	}
	return true
}

// streamCost is the method's StreamCost for the job's tensors, or nil
// (the stream's default allowance).
func (p *Plan) streamCost() func(weights.TensorInfo) int64 {
	sc := p.Recipe.methodDef.StreamCost
	if sc == nil {
		return nil
	}
	return func(t weights.TensorInfo) int64 { return sc(p, t) }
}

// elementwise is the method's Elementwise for the job's tensors, or nil.
func (p *Plan) elementwise() func(weights.TensorInfo) bool {
	e := p.Recipe.methodDef.Elementwise
	if e == nil {
		return nil
	}
	return func(t weights.TensorInfo) bool { return e(p, t) }
}

// ownInputs hands a kernel only its tensor's inputs: the job has as many
// inputs as the tensor with the most sources, and a slice may merge fewer.
type ownInputs struct {
	stream.Kernel
	n int
}

func (k ownInputs) Compute(ctx context.Context, t *stream.Tensor) error {
	t.In = t.In[:k.n]
	return k.Kernel.Compute(ctx, t)
}

// ReadsChunks forwards to the kernel: a Passes kernel can be streamed.
func (k ownInputs) ReadsChunks() bool {
	c, ok := k.Kernel.(stream.ChunkReader)
	return ok && c.ReadsChunks()
}

// Release forwards to the kernel, which may hold pooled caches.
func (k ownInputs) Release() {
	if r, ok := k.Kernel.(interface{ Release() }); ok {
		r.Release()
	}
}

// modelPart is the model of a MODEL+ADAPTER reference (itself otherwise):
// where the side files come from.
func modelPart(ref string) string {
	if exists(ref) {
		return ref
	}
	if m, _, ok := strings.Cut(ref, "+"); ok {
		return m
	}
	return ref
}
