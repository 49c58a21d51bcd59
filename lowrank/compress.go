package lowrank

import (
	"context"
	"fmt"
	"maps"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"gonum.org/v1/gonum/blas"
	"gonum.org/v1/gonum/blas/blas64"
	"gonum.org/v1/gonum/mat"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/weights"
)

// Format is the kind of output Compress writes.
type Format int

const (
	// FormatWeights writes a safetensors checkpoint in which every
	// factorised tensor is replaced by its rank-r reconstruction (BASE + Δ_r
	// when a base was given).
	FormatWeights Format = iota
	// FormatLoRA writes a PEFT LoRA adapter directory.
	FormatLoRA
)

// ParseFormat reads "weights" or "lora".
func ParseFormat(s string) (Format, error) {
	switch s {
	case "weights", "":
		return FormatWeights, nil
	case "lora":
		return FormatLoRA, nil
	}
	return 0, fmt.Errorf("format %q: use weights or lora", s)
}

// String is the command-line name of the format.
func (f Format) String() string {
	if f == FormatLoRA {
		return "lora"
	}
	return "weights"
}

// Options control Compress.
type Options struct {
	Rule   Rule
	Method Method
	Format Format
	// Split shares σ between LoRA's factors (FormatLoRA).
	Split Split
	// FanInFanOut: the checkpoint stores linear weights as [in, out]
	// (GPT-2's Conv1D); the adapter is written for PEFT's fan_in_fan_out.
	FanInFanOut bool
	// Skip names tensors (regex on the tensor name) left unfactorised.
	Skip *regexp.Regexp
	// BaseName is the adapter's base_model_name_or_path.
	BaseName string
	// Metadata is added to the output's safetensors metadata.
	Metadata map[string]string
	// Options: workers, memory bound, output sharding (FormatWeights), and
	// DType: the dtype of written floating tensors (otherwise each keeps
	// its input's).
	stream.Options
}

// ModuleReport describes one factorised tensor.
type ModuleReport struct {
	Tensor string  `json:"tensor"`
	Module string  `json:"module"`
	Shape  []int64 `json:"shape"`
	Rank   int     `json:"rank"`
	// RelError is ‖Δ − Δ_r‖_F / ‖Δ‖_F in float64, before rounding to the
	// output dtype.
	RelError float64 `json:"rel_error"`
	// Energy is Σ_{i≤r} σ_i² / Σ σ_i².
	Energy       float64 `json:"energy"`
	ParamsBefore int64   `json:"params_before"`
	// ParamsAfter is r·(m+n), the factors' size.
	ParamsAfter int64   `json:"params_after"`
	Method      string  `json:"method"`
	Seconds     float64 `json:"seconds"`
}

// OtherTensor is a tensor that was not factorised, and what became of it.
type OtherTensor struct {
	Tensor string `json:"tensor"`
	Reason string `json:"reason"`
	Action string `json:"action"`
}

// Report is what Compress did.
type Report struct {
	Format       string         `json:"format"`
	Rule         string         `json:"rule"`
	Modules      []ModuleReport `json:"modules"`
	Others       []OtherTensor  `json:"others"`
	ParamsBefore int64          `json:"params_before"`
	ParamsAfter  int64          `json:"params_after"`
	// RelError is the Frobenius error over all factorised tensors together,
	// √(Σ tail energy / Σ ‖Δ‖²).
	RelError float64  `json:"rel_error"`
	Warnings []string `json:"warnings"`
	Files    []string `json:"files"`
}

// Compress factorises every 2-D floating tensor of in — a task vector, or
// with base != nil the delta in − base (in float64) — at the rank rule
// chooses, and writes either a checkpoint of rank-r reconstructions (plus
// base) or a PEFT LoRA adapter directory at out. Tensors that are not 2-D
// floating (or match Skip) are copied unchanged (weights format) or, when
// they differ from base, carried whole in the adapter (LoRA format; see
// Others in the report). One tensor per worker is held at a time.
func Compress(ctx context.Context, in, base weights.Checkpoint, out string, o Options) (*Report, error) {
	if err := o.Rule.Validate(); err != nil {
		return nil, err
	}
	if o.DType != nil && (!o.DType.IsFloat() || !o.DType.Writable()) {
		return nil, fmt.Errorf("cannot write factors as %s", o.DType)
	}
	c := &compressor{in: in, base: base, o: o}
	if o.Format == FormatLoRA {
		return c.lora(ctx, out)
	}
	return c.weights(ctx, out)
}

type compressor struct {
	in, base weights.Checkpoint
	o        Options

	mu      sync.Mutex
	modules []ModuleReport
	others  []OtherTensor
	warn    []string
	tail    float64 // Σ tail energies
	total   float64 // Σ ‖Δ‖²

	// LoRA bookkeeping: module → leaf, rank, embedding.
	loraMods []loraModule
}

type loraModule struct {
	module string
	rank   int
}

// candidate reports whether a tensor is factorised, or why not.
func (c *compressor) candidate(t weights.TensorInfo) (bool, string) {
	switch {
	case !t.DType.IsFloat():
		return false, "not floating point"
	case len(t.Shape) != 2:
		return false, fmt.Sprintf("%d-D", len(t.Shape))
	case t.Shape[0] == 0 || t.Shape[1] == 0:
		return false, "empty"
	case c.o.Skip != nil && c.o.Skip.MatchString(t.Name):
		return false, "matches --skip"
	}
	if c.o.Format == FormatLoRA {
		if _, ok := ModuleName(t.Name); !ok {
			return false, "not a module weight (no .weight suffix)"
		}
	}
	if c.base != nil {
		bt, ok := c.base.Info(t.Name)
		if !ok {
			return false, "absent from BASE"
		}
		if !weights.SameShape(bt.Shape, t.Shape) {
			return false, fmt.Sprintf("shape %s in BASE", bt.ShapeString())
		}
		if !bt.DType.IsFloat() {
			return false, "BASE tensor not floating point"
		}
	}
	return true, ""
}

// outDType is the dtype a tensor is written in: o.DType for floating
// tensors when set, else its own (these are copied or rounded to it).
func (c *compressor) outDType(t weights.TensorInfo) weights.DType {
	if c.o.DType != nil && t.DType.IsFloat() {
		return *c.o.DType
	}
	return t.DType
}

// delta decodes tensor ten of in (minus base) as an m×n float64 matrix; b
// is the decoded base (nil without one).
func (c *compressor) delta(ten weights.Tensor) (x, b *mat.Dense, err error) {
	t := ten.TensorInfo
	m, n := int(t.Shape[0]), int(t.Shape[1])
	xs := make([]float64, m*n)
	if err := weights.Decode(t.DType, ten.Data, xs); err != nil {
		return nil, nil, &weights.TensorError{File: c.in.Path(), Tensor: t.Name, Err: err}
	}
	x = mat.NewDense(m, n, xs)
	if c.base == nil {
		return x, nil, nil
	}
	bt, err := c.base.ReadTensor(t.Name, nil)
	if err != nil {
		return nil, nil, err
	}
	bs := make([]float64, m*n)
	if err := weights.Decode(bt.DType, bt.Data, bs); err != nil {
		return nil, nil, &weights.TensorError{File: c.base.Path(), Tensor: t.Name, Err: err}
	}
	for i, v := range bs {
		xs[i] -= v
	}
	return x, mat.NewDense(m, n, bs), nil
}

// factorise runs the SVD of x and records the module's report.
func (c *compressor) factorise(t weights.TensorInfo, module string, x *mat.Dense) (*Result, error) {
	start := time.Now()
	how := c.o.Method.For(int(t.Shape[0]), int(t.Shape[1]))
	// The test matrix is seeded per tensor, so results do not depend on
	// which worker takes which tensor.
	how.Rand.Seed = tensorSeed(how.Rand.Seed, t.Name)
	res, err := Factorize(x, c.o.Rule, how)
	if err != nil {
		return nil, &weights.TensorError{File: c.in.Path(), Tensor: t.Name, Err: err}
	}
	m, n := t.Shape[0], t.Shape[1]
	rep := ModuleReport{
		Tensor: t.Name, Module: module, Shape: t.Shape, Rank: res.Rank,
		RelError: res.RelError(), Energy: res.Energy(),
		ParamsBefore: m * n, ParamsAfter: int64(res.Rank) * (m + n),
		Method: res.Method, Seconds: time.Since(start).Seconds(),
	}
	c.mu.Lock()
	c.modules = append(c.modules, rep)
	c.tail += res.TailEnergy(res.Rank)
	c.total += res.Total
	c.mu.Unlock()
	return res, nil
}

func (c *compressor) other(t, reason, action string) {
	c.mu.Lock()
	c.others = append(c.others, OtherTensor{Tensor: t, Reason: reason, Action: action})
	c.mu.Unlock()
}

// job is the stream job over in's tensors: the kernel sees in's raw
// tensor and reads the base's itself (it may be absent or of another
// shape, which makes a tensor a non-candidate rather than an error).
func (c *compressor) job(phase string, k func(ten weights.Tensor, out []byte) error) *stream.Job {
	return &stream.Job{
		Inputs:  []weights.Checkpoint{c.in},
		Tensors: c.in.Tensors(),
		Kernel: func(weights.TensorInfo) (stream.Kernel, error) {
			return stream.KernelFunc(func(_ context.Context, t *stream.Tensor) error {
				var out []byte
				if len(t.Out) > 0 {
					out = t.Out[0]
				}
				return k(t.In[0], out)
			}), nil
		},
		PassThrough: func(weights.TensorInfo) int { return -1 },
		// In's bytes, the base's and the output's, the float64 matrices
		// and the SVD's factors and workspace.
		Cost: func(t weights.TensorInfo) int64 {
			b, _ := t.ByteSize()
			n, _ := t.NumElements()
			return 3*b + 40*n
		},
		Phase:   phase,
		Options: c.o.Options,
	}
}

// tensorSeed mixes a tensor name into the seed (FNV-1a).
func tensorSeed(seed uint64, name string) uint64 {
	h := uint64(14695981039346656037)
	for i := 0; i < len(name); i++ {
		h ^= uint64(name[i])
		h *= 1099511628211
	}
	return seed ^ h
}

func (c *compressor) report(files []string) *Report {
	sort.Slice(c.modules, func(i, j int) bool { return weights.NaturalLess(c.modules[i].Tensor, c.modules[j].Tensor) })
	sort.Slice(c.others, func(i, j int) bool { return weights.NaturalLess(c.others[i].Tensor, c.others[j].Tensor) })
	r := &Report{Format: c.o.Format.String(), Rule: c.o.Rule.String(), Modules: append([]ModuleReport{}, c.modules...), Others: append([]OtherTensor{}, c.others...), Warnings: append([]string{}, c.warn...), Files: files}
	for _, m := range c.modules {
		r.ParamsBefore += m.ParamsBefore
		r.ParamsAfter += m.ParamsAfter
	}
	if c.total > 0 {
		r.RelError = math.Sqrt(c.tail / c.total)
	}
	if r.Modules == nil {
		r.Modules = []ModuleReport{}
	}
	if r.Others == nil {
		r.Others = []OtherTensor{}
	}
	return r
}

func (c *compressor) metadata() map[string]string {
	md := map[string]string{}
	if c.o.Format == FormatWeights {
		maps.Copy(md, c.in.Metadata())
	}
	md["format"] = "pt"
	md["weightops.lowrank"] = c.o.Rule.String() + " " + c.methodString()
	maps.Copy(md, c.o.Metadata)
	return md
}

func (c *compressor) methodString() string {
	if c.o.Method.Auto {
		r := c.o.Method.Rand
		return fmt.Sprintf("auto (randomized from %d: oversample=%d power_iters=%d seed=%d)", AutoRandomized, r.Oversample, r.PowerIters, r.Seed)
	}
	if !c.o.Method.Randomized {
		return "exact"
	}
	r := c.o.Method.Rand
	return fmt.Sprintf("randomized oversample=%d power_iters=%d seed=%d", r.Oversample, r.PowerIters, r.Seed)
}

// weights writes the reconstruction checkpoint.
func (c *compressor) weights(ctx context.Context, out string) (*Report, error) {
	// A directory output loads like the input model: its side files are
	// read (and checked) now, written after.
	side, err := c.o.ReadModelFiles(out, c.in.Path())
	if err != nil {
		return nil, err
	}
	job := c.job("factorising", func(ten weights.Tensor, dst []byte) error {
		t := ten.TensorInfo
		to := c.outDType(t)
		ok, why := c.candidate(t)
		if !ok {
			if _, err := weights.ConvertBytesInto(t.DType, to, ten.Data, dst[:0]); err != nil {
				return &weights.TensorError{File: c.in.Path(), Tensor: t.Name, Err: err}
			}
			c.other(t.Name, why, "copied")
			return nil
		}
		x, b, err := c.delta(ten)
		if err != nil {
			return err
		}
		res, err := c.factorise(t, "", x)
		if err != nil {
			return err
		}
		// One product writes the result: out = U_r·Σ_r·V_rᵀ (+ base).
		m, n := int(t.Shape[0]), int(t.Shape[1])
		if b == nil {
			b = mat.NewDense(m, n, nil)
		}
		if r := res.Rank; r > 0 {
			us := scaledColumns(res.U, res.S[:r], 1)
			vt := res.Vt.Slice(0, r, 0, n).(*mat.Dense)
			blas64.Gemm(blas.NoTrans, blas.NoTrans, 1, us.RawMatrix(), vt.RawMatrix(), 1, b.RawMatrix())
		}
		if err := weights.Encode(to, b.RawMatrix().Data, dst); err != nil {
			return &weights.TensorError{File: c.in.Path(), Tensor: t.Name, Err: err}
		}
		return nil
	})
	job.Outputs = []stream.Output{stream.CheckpointOutput(out, c.metadata(), c.outDType, c.o.ShardSize)}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	copied, err := side.Write(c.in.Tensors(), stream.OutputInfos(c.in.Tensors(), c.outDType))
	if err != nil {
		return nil, err
	}
	return c.report(append(files[0], copied...)), nil
}

// lora writes a PEFT adapter directory.
func (c *compressor) lora(ctx context.Context, out string) (*Report, error) {
	if weights.IsSafetensorsPath(out) {
		return nil, fmt.Errorf("%s: --format lora writes an adapter directory, not a .safetensors file", out)
	}
	if err := os.MkdirAll(out, 0o755); err != nil {
		return nil, err
	}
	sp, err := newSpool(out)
	if err != nil {
		return nil, err
	}
	defer sp.remove()
	infos := c.in.Tensors()
	modules := make([]string, 0, len(infos))
	for _, t := range infos {
		if i := strings.LastIndexByte(t.Name, '.'); i > 0 {
			modules = append(modules, t.Name[:i])
		}
	}
	var biasCarried bool
	saveModules := map[string]bool{}
	job := c.job("factorising", func(ten weights.Tensor, _ []byte) error {
		t := ten.TensorInfo
		ok, why := c.candidate(t)
		if !ok {
			data := ten.Data
			carry, err := c.differsFrom(ten)
			if err != nil {
				return err
			}
			switch {
			case !carry && c.base != nil:
				c.other(t.Name, why, "omitted (equal to BASE)")
				return nil
			case !carry:
				c.other(t.Name, why, "omitted (zero or not floating point)")
				return nil
			case c.base == nil:
				c.other(t.Name, why, "dropped (LoRA cannot hold it without BASE)")
				c.mu.Lock()
				c.warn = append(c.warn, fmt.Sprintf("tensor %q (%s) is non-zero but cannot be expressed as LoRA factors; it is not in the adapter (give --base to carry its fine-tuned value)", t.Name, why))
				c.mu.Unlock()
				return nil
			}
			// The fine-tuned value travels whole, as PEFT saves trained
			// biases and modules_to_save.
			action := "carried whole (bias)"
			c.mu.Lock()
			if strings.HasSuffix(t.Name, ".bias") {
				biasCarried = true
			} else {
				action = "carried whole (modules_to_save)"
				mod := t.Name
				if i := strings.LastIndexByte(mod, '.'); i > 0 {
					mod = mod[:i]
				}
				saveModules[mod] = true
			}
			c.mu.Unlock()
			c.other(t.Name, why, action)
			return sp.put(weights.TensorInfo{Name: PeftPrefix + t.Name, DType: t.DType, Shape: t.Shape}, data)
		}
		module, _ := ModuleName(t.Name)
		x, _, err := c.delta(ten)
		if err != nil {
			return err
		}
		res, err := c.factorise(t, module, x)
		if err != nil {
			return err
		}
		if res.Rank == 0 {
			return nil // a zero delta: the module stays untouched
		}
		emb := tensorname.IsEmbeddingTable(module)
		transposed := emb || c.o.FanInFanOut
		left, right := res.Factors(c.o.Split, transposed)
		a, b := right, left // B = U·…, A = …·Vᵀ
		if transposed {
			// PEFT stores these layers' delta as (B·A)ᵀ = Aᵀ·Bᵀ.
			a, b = mat.DenseCopyOf(left.T()), mat.DenseCopyOf(right.T())
		}
		to := c.outDType(t)
		aKey, bKey := LoraKeys(module, emb)
		for _, f := range []struct {
			key string
			m   *mat.Dense
		}{{aKey, a}, {bKey, b}} {
			r, cols := f.m.Dims()
			data := make([]byte, r*cols*to.Size())
			if err := weights.Encode(to, f.m.RawMatrix().Data, data); err != nil {
				return &weights.TensorError{File: c.in.Path(), Tensor: t.Name, Err: err}
			}
			if err := sp.put(weights.TensorInfo{Name: f.key, DType: to, Shape: []int64{int64(r), int64(cols)}}, data); err != nil {
				return err
			}
		}
		c.mu.Lock()
		c.loraMods = append(c.loraMods, loraModule{module: module, rank: res.Rank})
		c.mu.Unlock()
		return nil
	})
	if _, err := job.Run(ctx); err != nil {
		return nil, err
	}
	if len(c.loraMods) == 0 {
		return nil, fmt.Errorf("%s: no 2-D tensor differs from BASE; there is nothing to put in an adapter", c.in.Path())
	}
	cfg := c.adapterConfig(modules, biasCarried, saveModules)
	js, err := adapterJSON(cfg)
	if err != nil {
		return nil, err
	}
	wpath := filepath.Join(out, AdapterWeightsFile)
	cpath := filepath.Join(out, AdapterConfigFile)
	if err := sp.finish(wpath, c.metadata()); err != nil {
		return nil, err
	}
	if err := weights.WriteFileAtomic(cpath, js); err != nil {
		return nil, err
	}
	return c.report([]string{wpath, cpath}), nil
}

// differsFrom compares in's tensor with BASE's (decoded when the dtypes
// differ), or without BASE tests it for a non-zero floating value.
func (c *compressor) differsFrom(ten weights.Tensor) (bool, error) {
	t := ten.TensorInfo
	if c.base == nil {
		if !t.DType.IsFloat() {
			return false, nil // integer tensors are not deltas
		}
		n, _ := t.NumElements()
		xs := make([]float64, n)
		if err := weights.Decode(t.DType, ten.Data, xs); err != nil {
			return false, &weights.TensorError{File: c.in.Path(), Tensor: t.Name, Err: err}
		}
		for _, v := range xs {
			if v != 0 {
				return true, nil
			}
		}
		return false, nil
	}
	bt, ok := c.base.Info(t.Name)
	if !ok || !weights.SameShape(bt.Shape, t.Shape) {
		return true, nil
	}
	bten, err := c.base.ReadTensor(t.Name, nil)
	if err != nil {
		return false, err
	}
	if bt.DType == t.DType {
		return string(bten.Data) != string(ten.Data), nil
	}
	n, _ := t.NumElements()
	xs, bs := make([]float64, n), make([]float64, n)
	if err := weights.Decode(t.DType, ten.Data, xs); err != nil {
		return false, &weights.TensorError{File: c.in.Path(), Tensor: t.Name, Err: err}
	}
	if err := weights.Decode(bt.DType, bten.Data, bs); err != nil {
		return false, &weights.TensorError{File: c.base.Path(), Tensor: t.Name, Err: err}
	}
	for i := range xs {
		if xs[i] != bs[i] {
			return true, nil
		}
	}
	return false, nil
}

// adapterConfig builds adapter_config.json. lora_alpha equals r (and each
// alpha_pattern entry its rank_pattern rank), so PEFT's scale alpha/r is 1
// and B·A is exactly the truncated delta.
func (c *compressor) adapterConfig(allModules []string, bias bool, save map[string]bool) map[string]any {
	sort.Slice(c.loraMods, func(i, j int) bool { return weights.NaturalLess(c.loraMods[i].module, c.loraMods[j].module) })
	ranks := make([]int, len(c.loraMods))
	leaves := map[string]bool{}
	for i, m := range c.loraMods {
		ranks[i] = m.rank
		leaves[tensorname.Leaf(m.module)] = true
	}
	r := mostCommon(ranks)
	rankPattern, alphaPattern := map[string]int{}, map[string]int{}
	for _, m := range c.loraMods {
		if m.rank != r {
			k := patternKeyFor(m.module, allModules)
			rankPattern[k] = m.rank
			alphaPattern[k] = m.rank
		}
	}
	targets := make([]string, 0, len(leaves))
	for l := range leaves {
		targets = append(targets, l)
	}
	sort.Strings(targets)
	var toSave any
	if len(save) > 0 {
		list := make([]string, 0, len(save))
		for m := range save {
			list = append(list, m)
		}
		sort.Strings(list)
		toSave = list
	}
	biasMode := "none"
	if bias {
		biasMode = "all"
	}
	var baseName any
	if c.o.BaseName != "" {
		baseName = c.o.BaseName
	}
	return map[string]any{
		"alpha_pattern":           alphaPattern,
		"base_model_name_or_path": baseName,
		"bias":                    biasMode,
		"fan_in_fan_out":          c.o.FanInFanOut,
		"inference_mode":          true,
		"init_lora_weights":       true,
		"layers_pattern":          nil,
		"layers_to_transform":     nil,
		"lora_alpha":              r,
		"lora_dropout":            0.0,
		"modules_to_save":         toSave,
		"peft_type":               "LORA",
		"r":                       r,
		"rank_pattern":            rankPattern,
		"revision":                nil,
		"target_modules":          targets,
		"task_type":               nil,
		"use_rslora":              false,
	}
}
