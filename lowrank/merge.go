package lowrank

import (
	"context"
	"fmt"
	"maps"
	"math"
	"sort"
	"strings"
	"sync"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// Adapter is an opened PEFT LoRA adapter: its config and its tensors
// grouped by module.
type Adapter struct {
	// WeightsPath and ConfigPath are the files it was read from.
	WeightsPath, ConfigPath string
	Config                  *AdapterConfig
	Weights                 weights.Checkpoint
	// Modules maps a module name (model.layers.0.self_attn.q_proj) to its
	// factors.
	Modules map[string]*AdapterModule
	// Whole maps a base tensor name to the adapter tensor that replaces it
	// (modules_to_save, trained biases).
	Whole map[string]string
}

// AdapterModule is one module's LoRA factors.
type AdapterModule struct {
	Name      string
	A, B      weights.TensorInfo
	Embedding bool
	// Rank is lora_A's first dimension; Alpha and Scaling come from the
	// config (alpha/r, or alpha/√r with use_rslora).
	Rank    int
	Alpha   float64
	Scaling float64
}

// OpenAdapter opens an adapter directory (or its weights file) and checks
// it: every tensor name is understood, every module has both factors of
// consistent rank, the rank agrees with r / rank_pattern, and
// target_modules covers the module.
func OpenAdapter(path string) (*Adapter, error) {
	wf, cf, err := FindAdapter(path)
	if err != nil {
		return nil, err
	}
	cfg, err := ReadAdapterConfig(cf)
	if err != nil {
		return nil, err
	}
	if cfg.UseDoRA {
		return nil, fmt.Errorf("%s: use_dora: DoRA adapters rescale weight columns and cannot be merged as W + s·B·A", cf)
	}
	ck, err := weights.Open(wf)
	if err != nil {
		return nil, err
	}
	a := &Adapter{WeightsPath: wf, ConfigPath: cf, Config: cfg, Weights: ck, Modules: map[string]*AdapterModule{}, Whole: map[string]string{}}
	if err := a.index(); err != nil {
		ck.Close()
		return nil, err
	}
	return a, nil
}

// Close releases the adapter's weights file.
func (a *Adapter) Close() error { return a.Weights.Close() }

func (a *Adapter) fail(tensor string, format string, args ...any) error {
	return &weights.TensorError{File: a.WeightsPath, Tensor: tensor, Err: fmt.Errorf(format, args...)}
}

func (a *Adapter) index() error {
	adapterNames := map[string]bool{}
	for _, t := range a.Weights.Tensors() {
		k, err := parseAdapterKey(t.Name)
		if err != nil {
			return a.fail(t.Name, "%v", err)
		}
		if k.kind == keyFull {
			if prev, ok := a.Whole[k.module]; ok {
				return a.fail(t.Name, "replaces base tensor %q, as %q does", k.module, prev)
			}
			a.Whole[k.module] = t.Name
			continue
		}
		if !t.DType.IsFloat() {
			return a.fail(t.Name, "dtype %s: LoRA factors must be floating point", t.DType)
		}
		if k.adapter != "" {
			adapterNames[k.adapter] = true
		}
		m := a.Modules[k.module]
		if m == nil {
			m = &AdapterModule{Name: k.module}
			a.Modules[k.module] = m
		}
		emb := k.kind == keyEmbA || k.kind == keyEmbB
		if m.A.Name+m.B.Name != "" && m.Embedding != emb {
			return a.fail(t.Name, "module %q has both lora_embedding and lora_A/B tensors", k.module)
		}
		m.Embedding = emb
		dst := &m.A
		if k.kind == keyLoraB || k.kind == keyEmbB {
			dst = &m.B
		}
		if dst.Name != "" {
			return a.fail(t.Name, "module %q has two such factors (also %q)", k.module, dst.Name)
		}
		*dst = t
	}
	if len(adapterNames) > 1 {
		names := make([]string, 0, len(adapterNames))
		for n := range adapterNames {
			names = append(names, n)
		}
		sort.Strings(names)
		return fmt.Errorf("%s: holds several adapters (%s); save them separately", a.WeightsPath, strings.Join(names, ", "))
	}
	for name, m := range a.Modules {
		switch {
		case m.A.Name == "":
			return a.fail(m.B.Name, "no matching lora_A for module %q", name)
		case m.B.Name == "":
			return a.fail(m.A.Name, "no matching lora_B for module %q", name)
		case len(m.A.Shape) < 2 || len(m.B.Shape) < 2:
			return a.fail(m.A.Name, "factors of shapes %s and %s: need at least 2-D", m.A.ShapeString(), m.B.ShapeString())
		}
		m.Rank = int(m.A.Shape[0])
		if int64(m.Rank) != m.B.Shape[1] {
			return a.fail(m.B.Name, "shape %s does not match lora_A %s (rank %d)", m.B.ShapeString(), m.A.ShapeString(), m.Rank)
		}
		for _, d := range m.B.Shape[2:] {
			if d != 1 {
				return a.fail(m.B.Name, "shape %s: trailing dimensions of lora_B must be 1", m.B.ShapeString())
			}
		}
		if m.Embedding && (len(m.A.Shape) != 2 || len(m.B.Shape) != 2) {
			return a.fail(m.A.Name, "embedding factors must be 2-D, got %s and %s", m.A.ShapeString(), m.B.ShapeString())
		}
		if want := a.Config.RankFor(name); want != m.Rank {
			return a.fail(m.A.Name, "rank %d, but %s gives module %q rank %d (r / rank_pattern)", m.Rank, a.ConfigPath, name, want)
		}
		if !a.Config.Targets(name) {
			return a.fail(m.A.Name, "module %q is not covered by target_modules in %s", name, a.ConfigPath)
		}
		m.Alpha = a.Config.AlphaFor(name)
		m.Scaling = a.Config.Scaling(name)
		if _, ok := a.Whole[name+".weight"]; ok {
			return a.fail(a.Whole[name+".weight"], "replaces %s.weight, which LoRA factors also update", name)
		}
	}
	return nil
}

// MergeOptions control Merge.
type MergeOptions struct {
	// Options: workers, memory bound, output sharding. DType is not used:
	// each tensor keeps the base's dtype.
	stream.Options
	// Scale multiplies every module's alpha/r (1 merges the adapter as
	// trained).
	Scale float64
	// Metadata is added to the output's safetensors metadata.
	Metadata map[string]string
}

// MergedModule describes one merged module.
type MergedModule struct {
	Module string  `json:"module"`
	Tensor string  `json:"tensor"`
	Shape  []int64 `json:"shape"`
	Rank   int     `json:"rank"`
	Alpha  float64 `json:"alpha"`
	// Scaling is scale·alpha/r (or scale·alpha/√r with rsLoRA).
	Scaling float64 `json:"scaling"`
	// Layout is linear, fan_in_fan_out, embedding or conv.
	Layout string `json:"layout"`
}

// MergeReport is what Merge did.
type MergeReport struct {
	Adapter  string         `json:"adapter"`
	Modules  []MergedModule `json:"modules"`
	Replaced []string       `json:"replaced"`
	Copied   int            `json:"copied"`
	Files    []string       `json:"files"`
}

type mergeJob struct {
	mod    *AdapterModule
	layout string
	whole  string
}

// plan maps base tensors to merge jobs, checking every name and shape
// before any data is read.
func (a *Adapter) plan(base weights.Checkpoint) (map[string]mergeJob, error) {
	jobs := map[string]mergeJob{}
	names := make([]string, 0, len(a.Modules))
	for n := range a.Modules {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, name := range names {
		m := a.Modules[name]
		tname := name + ".weight"
		bt, ok := base.Info(tname)
		if !ok {
			return nil, a.fail(m.A.Name, "base %s has no tensor %q to apply it to", base.Path(), tname)
		}
		if !bt.DType.IsFloat() || !bt.DType.Writable() {
			return nil, &weights.TensorError{File: base.Path(), Tensor: tname, Err: fmt.Errorf("dtype %s cannot take a LoRA update", bt.DType)}
		}
		out := m.B.Shape[0]
		rest := m.A.Shape[1:]
		var want []int64
		layout := "linear"
		switch {
		case m.Embedding:
			layout, want = "embedding", []int64{rest[0], out}
		case len(m.A.Shape) > 2:
			layout, want = "conv", append([]int64{out}, rest...)
		case a.Config.FanInFanOut:
			layout, want = "fan_in_fan_out", []int64{rest[0], out}
		default:
			want = []int64{out, rest[0]}
		}
		if !weights.SameShape(bt.Shape, want) {
			return nil, &weights.TensorError{File: base.Path(), Tensor: tname, Err: fmt.Errorf("shape %s, but %s·%s (%s) makes %s", bt.ShapeString(), m.B.ShapeString(), m.A.ShapeString(), layout, weights.TensorInfo{Shape: want}.ShapeString())}
		}
		jobs[tname] = mergeJob{mod: m, layout: layout}
	}
	for tname, src := range a.Whole {
		st, _ := a.Weights.Info(src)
		bt, ok := base.Info(tname)
		if !ok {
			return nil, a.fail(src, "base %s has no tensor %q to replace", base.Path(), tname)
		}
		if !weights.SameShape(bt.Shape, st.Shape) {
			return nil, a.fail(src, "shape %s, but base tensor %q is %s", st.ShapeString(), tname, bt.ShapeString())
		}
		if st.DType != bt.DType && (!bt.DType.Writable() || !st.DType.IsFloat() || !bt.DType.IsFloat()) {
			return nil, a.fail(src, "dtype %s cannot replace base tensor %q of dtype %s", st.DType, tname, bt.DType)
		}
		jobs[tname] = mergeJob{whole: src}
	}
	return jobs, nil
}

// Merge writes base with the adapter merged in: W + scale·s·B·A for every
// module (s = alpha/r or alpha/√r; B·A transposed for fan_in_fan_out and
// embedding layers; reshaped for convolutions), computed in float64 and
// rounded once to the base tensor's dtype. Tensors the adapter carries
// whole replace the base's; all others are copied byte for byte.
func (a *Adapter) Merge(ctx context.Context, base weights.Checkpoint, out string, o MergeOptions) (*MergeReport, error) {
	if math.IsNaN(o.Scale) || math.IsInf(o.Scale, 0) {
		return nil, fmt.Errorf("scale %g is not finite", o.Scale)
	}
	jobs, err := a.plan(base)
	if err != nil {
		return nil, err
	}
	// A directory output loads like the base model: its side files are
	// read (and checked) now, written after.
	side, err := o.ReadModelFiles(out, base.Path())
	if err != nil {
		return nil, err
	}
	md := stream.HFMetadata(base.Metadata())
	md["weightops.lora.adapter"] = a.WeightsPath
	md["weightops.lora.scale"] = fmt.Sprint(o.Scale)
	maps.Copy(md, o.Metadata)
	rep := &MergeReport{Adapter: a.WeightsPath, Modules: []MergedModule{}, Replaced: []string{}}
	var mu sync.Mutex
	same := func(t weights.TensorInfo) weights.DType { return t.DType }
	job := &stream.Job{
		Inputs:  []weights.Checkpoint{base},
		Tensors: base.Tensors(),
		Outputs: []stream.Output{stream.CheckpointOutput(out, md, same, o.ShardSize)},
		PassThrough: func(t weights.TensorInfo) int {
			if _, ok := jobs[t.Name]; ok {
				return -1
			}
			mu.Lock()
			rep.Copied++
			mu.Unlock()
			return 0
		},
		Kernel: func(t weights.TensorInfo) (stream.Kernel, error) {
			job := jobs[t.Name]
			return stream.KernelFunc(func(_ context.Context, t *stream.Tensor) error {
				if job.whole != "" {
					// The adapter carries the tensor whole: it replaces
					// the base's, in the base's dtype.
					ten, err := a.Weights.ReadTensor(job.whole, nil)
					if err != nil {
						return err
					}
					if _, err := weights.ConvertBytesInto(ten.DType, t.DType, ten.Data, t.Out[0][:0]); err != nil {
						return &weights.TensorError{File: a.WeightsPath, Tensor: job.whole, Err: err}
					}
					mu.Lock()
					rep.Replaced = append(rep.Replaced, t.Name)
					mu.Unlock()
					return nil
				}
				if err := a.mergeOne(base.Path(), t.In[0], job, o.Scale, t.Out[0]); err != nil {
					return err
				}
				m := job.mod
				mu.Lock()
				rep.Modules = append(rep.Modules, MergedModule{Module: m.Name, Tensor: t.Name, Shape: t.Shape, Rank: m.Rank, Alpha: m.Alpha, Scaling: o.Scale * m.Scaling, Layout: job.layout})
				mu.Unlock()
				return nil
			}), nil
		},
		// The base's bytes and the output's, W in float64, the factors.
		Cost: func(t weights.TensorInfo) int64 {
			b, _ := t.ByteSize()
			n, _ := t.NumElements()
			return 2*b + 16*n
		},
		Phase:   "merging the adapter",
		Options: o.Options,
	}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	copied, err := side.Write(base.Tensors(), base.Tensors())
	if err != nil {
		return nil, err
	}
	rep.Files = append(files[0], copied...)
	sort.Slice(rep.Modules, func(i, j int) bool { return weights.NaturalLess(rep.Modules[i].Tensor, rep.Modules[j].Tensor) })
	sort.Slice(rep.Replaced, func(i, j int) bool { return weights.NaturalLess(rep.Replaced[i], rep.Replaced[j]) })
	return rep, nil
}

// mergeOne computes one updated tensor's bytes into res: W + s·B·A from
// the base tensor ten.
func (a *Adapter) mergeOne(file string, ten weights.Tensor, job mergeJob, scale float64, res []byte) error {
	m := job.mod
	n, _ := ten.NumElements()
	wv := make([]float64, n)
	if err := weights.Decode(ten.DType, ten.Data, wv); err != nil {
		return &weights.TensorError{File: file, Tensor: ten.Name, Err: err}
	}
	av, err := a.readFloats(m.A)
	if err != nil {
		return err
	}
	bv, err := a.readFloats(m.B)
	if err != nil {
		return err
	}
	r := m.Rank
	out := int(m.B.Shape[0])
	cols := len(av) / max(1, r)
	A := blas64.General{Rows: r, Cols: cols, Stride: cols, Data: av}
	B := blas64.General{Rows: out, Cols: r, Stride: r, Data: bv}
	s := scale * m.Scaling
	if r > 0 {
		switch job.layout {
		case "embedding", "fan_in_fan_out":
			// W (cols×out) += s·(B·A)ᵀ = s·Aᵀ·Bᵀ.
			W := blas64.General{Rows: cols, Cols: out, Stride: out, Data: wv}
			blas64.Gemm(blas.Trans, blas.Trans, s, A, B, 1, W)
		default:
			// W (out×cols, a conv kernel flattened) += s·B·A.
			W := blas64.General{Rows: out, Cols: cols, Stride: cols, Data: wv}
			blas64.Gemm(blas.NoTrans, blas.NoTrans, s, B, A, 1, W)
		}
	}
	if err := weights.Encode(ten.DType, wv, res); err != nil {
		return &weights.TensorError{File: file, Tensor: ten.Name, Err: err}
	}
	return nil
}

func (a *Adapter) readFloats(info weights.TensorInfo) ([]float64, error) {
	ten, err := a.Weights.ReadTensor(info.Name, nil)
	if err != nil {
		return nil, err
	}
	v, err := ten.Float64s()
	if err != nil {
		return nil, &weights.TensorError{File: a.WeightsPath, Tensor: info.Name, Err: err}
	}
	for _, x := range v {
		if math.IsNaN(x) || math.IsInf(x, 0) {
			return nil, a.fail(info.Name, "holds NaN or Inf")
		}
	}
	return v, nil
}
