// Package check is the release gate: it reads a checkpoint once, tensor by
// tensor, and reports every problem a model-release job must not let
// through — an invalid or incomplete file set, NaN or Inf values, dtypes
// and shapes that differ from a reference or from what config.json
// implies, recorded provenance that does not match the given input files,
// patch records that do not verify, and differences from a reference
// beyond a bound.
package check

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

// SchemaVersion is the version of the JSON form of a Report; it changes
// when a field changes meaning or goes away (new fields may appear).
const SchemaVersion = 1

// Options choose what is checked beyond the checkpoint itself.
type Options struct {
	stream.Options
	// Reference, when set, is a checkpoint whose tensor names, dtypes and
	// shapes the model must have.
	Reference weights.Checkpoint
	// MaxAbsDiff ≥ 0 (with Reference) fails every tensor that differs
	// from the reference's by more than it anywhere; negative: not
	// checked.
	MaxAbsDiff float64
	// Config is a config.json to check shapes against; "" uses the one
	// beside the model when there is one.
	Config string
	// Inputs are files the model's recorded provenance must match: the
	// inputs of a merge (weightops.inputs), the patches of a patched model.
	Inputs []string
}

// Problem is one thing wrong.
type Problem struct {
	// Check names the check: "nonfinite", "missing", "extra", "dtype",
	// "shape", "config", "provenance", "patches", "diff".
	Check  string `json:"check"`
	File   string `json:"file"`
	Tensor string `json:"tensor"`
	// Message says what is wrong, in a line.
	Message string `json:"message"`
}

// TensorCheck is what was measured of one tensor.
type TensorCheck struct {
	Name  string  `json:"name"`
	DType string  `json:"dtype"`
	Shape []int64 `json:"shape"`
	NaN   int64   `json:"nan"`
	Inf   int64   `json:"inf"`
	// MaxAbsDiff is max |model − reference| (with a reference of the same
	// shape; null otherwise).
	MaxAbsDiff *float64 `json:"max_abs_diff"`
}

// Report is the result of Run; its JSON form is versioned (SchemaVersion).
type Report struct {
	SchemaVersion int    `json:"schema_version"`
	Model         string `json:"model"`
	// Files are the files behind the model (shards and index included).
	Files []string `json:"files"`
	// OK is true when there are no problems.
	OK       bool      `json:"ok"`
	Problems []Problem `json:"problems"`
	// Checked lists the checks that ran ("nonfinite", "reference",
	// "config", "provenance", "patches", "diff").
	Checked  []string      `json:"checked"`
	Tensors  []TensorCheck `json:"tensors"`
	NaNTotal int64         `json:"nan_total"`
	InfTotal int64         `json:"inf_total"`
	// Reference, Config: what the model was compared with ("" for none).
	Reference string `json:"reference"`
	Config    string `json:"config"`
	// MaxAbsDiff is the largest difference from the reference over all
	// tensors compared (null without a reference), MaxAbsDiffTensor where.
	MaxAbsDiff       *float64 `json:"max_abs_diff"`
	MaxAbsDiffTensor string   `json:"max_abs_diff_tensor"`
	MaxAbsDiffLimit  *float64 `json:"max_abs_diff_limit"`
}

func (r *Report) add(check, file, tensor, format string, a ...any) {
	r.Problems = append(r.Problems, Problem{Check: check, File: file, Tensor: tensor, Message: fmt.Sprintf(format, a...)})
}

// Run checks the model. An error means the model could not be read at all
// (that is the first problem a gate reports); everything else is a
// Problem in the report.
func Run(ctx context.Context, model weights.Checkpoint, o Options) (*Report, error) {
	r := &Report{SchemaVersion: SchemaVersion, Model: model.Path(), Files: weights.Files(model),
		Problems: []Problem{}, Checked: []string{"nonfinite"}, Tensors: []TensorCheck{}}
	if o.MaxAbsDiff >= 0 && o.Reference == nil {
		return nil, errors.New("a --max-abs-diff check needs a --reference")
	}
	compare := map[string]bool{}
	if o.Reference != nil {
		r.Reference = o.Reference.Path()
		r.Checked = append(r.Checked, "reference")
		compare = r.checkReference(model, o.Reference)
		if o.MaxAbsDiff >= 0 {
			r.Checked = append(r.Checked, "diff")
			lim := o.MaxAbsDiff
			r.MaxAbsDiffLimit = &lim
		}
	}
	if err := r.checkConfig(model, o.Config); err != nil {
		return nil, err
	}
	if err := r.checkProvenance(model, o.Inputs); err != nil {
		return nil, err
	}
	if err := r.scan(ctx, model, o, compare); err != nil {
		return nil, err
	}
	r.OK = len(r.Problems) == 0
	return r, nil
}

// checkReference compares names, dtypes and shapes, returning the tensors
// whose values can be compared.
func (r *Report) checkReference(model, ref weights.Checkpoint) map[string]bool {
	same := map[string]bool{}
	for _, t := range model.Tensors() {
		rt, ok := ref.Info(t.Name)
		switch {
		case !ok:
			r.add("extra", model.Path(), t.Name, "not in the reference %s", ref.Path())
		case !weights.SameShape(t.Shape, rt.Shape):
			r.add("shape", model.Path(), t.Name, "shape %s, the reference has %s", t.ShapeString(), rt.ShapeString())
		case t.DType != rt.DType:
			r.add("dtype", model.Path(), t.Name, "dtype %s, the reference has %s", t.DType, rt.DType)
			same[t.Name] = t.DType.IsFloat() == rt.DType.IsFloat()
		default:
			same[t.Name] = true
		}
	}
	for _, t := range ref.Tensors() {
		if _, ok := model.Info(t.Name); !ok {
			r.add("missing", model.Path(), t.Name, "in the reference %s but not in the model", ref.Path())
		}
	}
	return same
}

// checkConfig compares the model's tensors with what its config.json
// implies, for the architectures whose layout is known.
func (r *Report) checkConfig(model weights.Checkpoint, path string) error {
	if path == "" {
		p := filepath.Join(weights.ModelDir(model.Path()), "config.json")
		if _, err := os.Stat(p); err != nil {
			return nil // no config to check against
		}
		path = p
	}
	b, err := weights.ReadFile(path, weights.MaxConfigSize, "model config")
	if err != nil {
		return err
	}
	var head struct {
		Architectures []string `json:"architectures"`
		ModelType     string   `json:"model_type"`
	}
	if err := json.Unmarshal(b, &head); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	r.Config = path
	known := engine.LlamaArchitectures[head.ModelType]
	for _, a := range head.Architectures {
		known = known || engine.LlamaArchitectures[a]
	}
	if !known {
		return nil // a layout this package does not know: names and dtypes only
	}
	r.Checked = append(r.Checked, "config")
	var cfg engine.LlamaConfig
	if err := json.Unmarshal(b, &cfg); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	required, optional, err := engine.LlamaShapes(cfg, engine.HFLlamaNames)
	if err != nil {
		r.add("config", path, "", "%v", err)
		return nil
	}
	var names []string
	for n := range required {
		names = append(names, n)
	}
	sort.Slice(names, func(i, j int) bool { return weights.NaturalLess(names[i], names[j]) })
	for _, n := range names {
		t, ok := model.Info(n)
		switch {
		case !ok:
			r.add("config", model.Path(), n, "missing: config.json (%d layers) implies it", cfg.NumHiddenLayers)
		case !weights.SameShape(t.Shape, required[n]):
			r.add("config", model.Path(), n, "shape %s, config.json implies %s", t.ShapeString(), weights.TensorInfo{Shape: required[n]}.ShapeString())
		}
	}
	for _, t := range model.Tensors() {
		if _, ok := required[t.Name]; ok {
			continue
		}
		if s, ok := optional[t.Name]; ok {
			if !weights.SameShape(t.Shape, s) {
				r.add("config", model.Path(), t.Name, "shape %s, config.json implies %s", t.ShapeString(), weights.TensorInfo{Shape: s}.ShapeString())
			}
			continue
		}
		r.add("config", model.Path(), t.Name, "not a tensor of the %s layout config.json describes (%d layers)", strings.Join(head.Architectures, ", "), cfg.NumHiddenLayers)
	}
	return nil
}

// checkProvenance matches the given input files against the SHA-256 the
// model records: a merge's inputs, a patched model's patches. A patched
// model's undo records are checked in any case.
func (r *Report) checkProvenance(model weights.Checkpoint, inputs []string) error {
	md := model.Metadata()
	applied, err := wpatch.Records(model)
	if err != nil {
		r.Checked = append(r.Checked, "patches")
		r.add("patches", model.Path(), "", "patch records do not verify: %v", err)
	} else if applied != nil {
		r.Checked = append(r.Checked, "patches")
	}
	if len(inputs) == 0 {
		return nil
	}
	r.Checked = append(r.Checked, "provenance")
	// Recorded files by base name: a model directory's weights are all
	// model.safetensors, so a given file matches a recorded one of its
	// name by content; its path decides only which one a mismatch is
	// reported against.
	recorded := map[string][]merge.FileRecord{}
	var recs []merge.InputRecord
	if s := md["weightops.inputs"]; s != "" {
		if err := json.Unmarshal([]byte(s), &recs); err != nil {
			r.add("provenance", model.Path(), "", "weightops.inputs is not valid: %v", err)
		}
		for _, rec := range recs {
			for _, f := range rec.Files {
				recorded[filepath.Base(f.Name)] = append(recorded[filepath.Base(f.Name)], f)
			}
		}
	}
	for _, p := range applied {
		recorded[p.File] = append(recorded[p.File], merge.FileRecord{Name: p.File, SHA256: p.SHA256})
	}
	if len(recorded) == 0 {
		r.add("provenance", model.Path(), "", "records no input files (not a weightops merge or patched model) to match --inputs against")
		return nil
	}
	for _, in := range inputs {
		files := []string{in}
		if st, err := os.Stat(in); err == nil && st.IsDir() {
			ck, err := weights.Open(in)
			if err != nil {
				return err
			}
			files = weights.Files(ck)
			ck.Close()
		}
		for _, f := range files {
			cands := recorded[filepath.Base(f)]
			if len(cands) == 0 {
				r.add("provenance", model.Path(), "", "%s is not among the recorded inputs", f)
				continue
			}
			got, err := weights.FileSHA256(f)
			if err != nil {
				return err
			}
			if slices.ContainsFunc(cands, func(c merge.FileRecord) bool { return c.SHA256 == got }) {
				continue
			}
			want := cands[0]
			for _, c := range cands {
				if filepath.Clean(c.Name) == filepath.Clean(f) {
					want = c
				}
			}
			if len(cands) == 1 || filepath.Clean(want.Name) == filepath.Clean(f) {
				r.add("provenance", model.Path(), "", "%s has SHA-256 %s, the model records %s", f, got, want.SHA256)
			} else {
				r.add("provenance", model.Path(), "", "%s (SHA-256 %s) matches none of the %d recorded inputs named %s", f, got, len(cands), filepath.Base(f))
			}
		}
	}
	return nil
}

// scan streams every tensor: NaN/Inf counts and, with a reference, the
// largest difference.
func (r *Report) scan(ctx context.Context, model weights.Checkpoint, o Options, compare map[string]bool) error {
	infos := model.Tensors()
	checks := make([]TensorCheck, len(infos))
	pos := map[string]int{}
	for i, t := range infos {
		pos[t.Name] = i
		checks[i] = TensorCheck{Name: t.Name, DType: t.DType.String(), Shape: t.Shape}
		if checks[i].Shape == nil {
			checks[i].Shape = []int64{}
		}
	}
	var mu sync.Mutex
	inputs := []weights.Checkpoint{model}
	if o.Reference != nil {
		inputs = append(inputs, compared{o.Reference, compare})
	}
	job := &stream.Job{
		Inputs:        inputs,
		Optional:      []bool{false, true},
		Tensors:       infos,
		PassThrough:   func(weights.TensorInfo) int { return -1 },
		KeepNonFinite: true,
		Kernel: func(t weights.TensorInfo) (stream.Kernel, error) {
			k := &scanKernel{dt: t.DType, diff: compare[t.Name]}
			k.done = func(nan, inf int64, diff *float64) {
				mu.Lock()
				tc := &checks[pos[t.Name]]
				tc.NaN, tc.Inf = nan, inf
				// A non-finite tensor is a problem already; its difference
				// would be NaN and say nothing more.
				if nan+inf == 0 {
					tc.MaxAbsDiff = diff
				}
				mu.Unlock()
			}
			return stream.Passes(k), nil
		},
		// Read whole: the tensor and the reference's, and float64 chunks.
		Cost: func(t weights.TensorInfo) int64 {
			b, _ := t.ByteSize()
			return 2*b + 16*stream.ChunkElems
		},
		// Streamed: a float64 chunk of the model's values besides the
		// job's chunk buffers.
		StreamCost: func(weights.TensorInfo) int64 { return 8 * stream.ChunkElems },
		Phase:      "checking",
		Options:    o.Options,
	}
	if _, err := job.Run(ctx); err != nil {
		return err
	}
	r.Tensors = checks
	for _, c := range checks {
		r.NaNTotal += c.NaN
		r.InfTotal += c.Inf
		if c.NaN+c.Inf > 0 {
			r.add("nonfinite", model.Path(), c.Name, "%d NaN and %d Inf values", c.NaN, c.Inf)
		}
		if c.MaxAbsDiff == nil {
			continue
		}
		if r.MaxAbsDiff == nil || *c.MaxAbsDiff > *r.MaxAbsDiff || math.IsNaN(*c.MaxAbsDiff) {
			d := *c.MaxAbsDiff
			r.MaxAbsDiff, r.MaxAbsDiffTensor = &d, c.Name
		}
		if r.MaxAbsDiffLimit != nil && !(*c.MaxAbsDiff <= *r.MaxAbsDiffLimit) {
			r.add("diff", model.Path(), c.Name, "differs from the reference by up to %g, over the %g limit", *c.MaxAbsDiff, *r.MaxAbsDiffLimit)
		}
	}
	return nil
}

// compared is the reference as the scan reads it: only the tensors whose
// values are compared are there, so the job reads nothing of the others
// (an optional input's missing tensor) and streams the compared ones
// from the reference's file, as it does the model's.
type compared struct {
	weights.Checkpoint
	names map[string]bool
}

func (c compared) Info(name string) (weights.TensorInfo, bool) {
	if !c.names[name] {
		return weights.TensorInfo{}, false
	}
	return c.Checkpoint.Info(name)
}

func (c compared) TensorSection(name string) (*io.SectionReader, bool) {
	if !c.names[name] {
		return nil, false
	}
	return weights.TensorSection(c.Checkpoint, name)
}

// scanKernel counts a tensor's NaN and Inf values chunk by chunk, from
// its raw bytes (input 0), and with diff set finds max |a − b| against
// the reference's values (input 1, decoded by the job), in float64 (NaN
// when either holds a NaN where the other differs; integer tensors
// compare their values too).
type scanKernel struct {
	dt       weights.DType
	raw      []byte
	nan, inf int64
	diff     bool
	max      float64
	x        []float64
	done     func(nan, inf int64, diff *float64)
}

func (k *scanKernel) NextPass() (int, bool)          { return 0, false }
func (k *scanKernel) Observe(int, [][]float64) error { return nil }
func (k *scanKernel) EndPass(int) error              { return nil }
func (k *scanKernel) RawInput(i int) bool            { return i == 0 }
func (k *scanKernel) SetRaw(_ int, t weights.Tensor) { k.raw = t.Data }

// Compute scans the chunk just handed over (there are no outputs).
func (k *scanKernel) Compute(in, _ [][]float64) error {
	nan, inf, err := weights.CountNonFinite(k.dt, k.raw)
	if err != nil {
		return err
	}
	k.nan, k.inf = k.nan+nan, k.inf+inf
	if !k.diff || k.nan+k.inf > 0 || math.IsNaN(k.max) {
		return nil
	}
	y := in[1]
	if cap(k.x) < len(y) {
		k.x = make([]float64, len(y))
	}
	x := k.x[:len(y)]
	if err := weights.Decode(k.dt, k.raw, x); err != nil {
		return err
	}
	// In a local, and a compare for max (d is neither NaN nor −0 there):
	// the builtin's NaN and zero handling through k cost most of the scan.
	m := k.max
	for i := range x {
		if x[i] == y[i] { // equal infinities included
			continue
		}
		d := math.Abs(x[i] - y[i])
		if math.IsNaN(d) {
			k.max = d
			return nil
		}
		if d > m {
			m = d
		}
	}
	k.max = m
	return nil
}

// Release reports the tensor's counts and difference.
func (k *scanKernel) Release() {
	var d *float64
	if k.diff {
		d = &k.max
	}
	k.done(k.nan, k.inf, d)
}
