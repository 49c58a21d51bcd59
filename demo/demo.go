// Package demo runs weightops' main job end to end on real data: the
// small Fashion-MNIST CNNs of testdata/demo (a base, a clean fine-tune and
// one robust fine-tune per corruption, made by
// `go run ./cmd/weightops-fixtures -demo testdata/demo`).
//
//  1. For each corruption it extracts the Robust Weight Signature
//     (pretrained = base, clean fine-tune, robust fine-tune) of the shallow
//     layers and saves it as an F32 patch and a 4-bit quantized patch.
//  2. It patches the clean model with each signature, and with all of them
//     composed in one patch apply at a common scale tuned on held-out
//     training images, evaluates every patched model on the clean and the
//     corrupted test images, then removes the patches and checks that the
//     clean model comes back byte for byte.
//  3. It merges the robust fine-tunes with the recipes of testdata/recipes
//     (task arithmetic, TIES, DARE, Breadcrumbs) and evaluates the merges.
//  4. It writes one table (results.json, results.md) and checks the claims
//     the numbers are meant to show, reporting each as held or not.
package demo

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

// Options configure Run. Zero values take the defaults noted.
type Options struct {
	// Data is the demo data directory; when empty, Embedded is unpacked
	// into Out/data and used.
	Data string
	// Embedded is the demo data carried by the binary (weightops.DemoData).
	Embedded fs.FS
	// Recipes is the directory of merge recipes (default: "recipes"
	// beside Data, i.e. testdata/recipes). Every *.yaml in it is run.
	Recipes string
	// Out receives the patches, the patched and merged models and the
	// results (required).
	Out string
	// Layers is how many weight layers (with their batchnorms) a
	// signature covers (default 2: the two convolution blocks).
	Layers int
	// Quant is the quantization of the small signatures (default
	// 4bit-asym-block64).
	Quant string
	// RunningStats is how signatures treat batchnorm running statistics:
	// signature.StatsDifference (default), StatsProject or StatsSkip.
	RunningStats string
	// Scales are the candidate common scales for the composed signatures
	// (default 0.125, 0.25, 0.375, 0.5, 0.75, 1); the best on the validation images wins.
	Scales []float64
	// SignatureBudget is the clean accuracy (a fraction) each single
	// signature may cost on the validation images: its scale is the
	// largest of Scales (and 1) within it, RWS's in-situ adjustable
	// strength. Negative: every signature at scale 1. Default 0.03.
	SignatureBudget float64
	// EvalSeed seeds the corruptions of the test and validation images
	// (default 1).
	EvalSeed uint64
	// BudgetConfidence is how sure the scale choice must be that a
	// signature's clean cost on new images stays within SignatureBudget:
	// the held-out cost plus z·SE (paired, over the held-out images; z the
	// one-sided normal quantile) must be within it. Negative: the held-out
	// cost alone; default (0) 0.95.
	BudgetConfidence float64
	// RiFTEpochs is the epochs of RiFT's criticality ascent and of its
	// fine-tuning in step 3 (default 5; RiFT's own default is 10).
	RiFTEpochs int
	// Workers is the number of tensors processed at once (0: default).
	Workers int
	// Version is recorded in merged models' metadata.
	Version string
	// Log receives step headers (nil: silent).
	Log io.Writer
}

func (o *Options) defaults() error {
	if o.Out == "" {
		return errors.New("demo: no output directory")
	}
	if o.Layers == 0 {
		o.Layers = 2
	}
	if o.Layers < 0 {
		return fmt.Errorf("demo: layers %d: want a positive number", o.Layers)
	}
	if o.Quant == "" {
		o.Quant = "4bit-asym-block64"
	}
	if o.RunningStats == "" {
		o.RunningStats = signature.StatsDifference
	}
	if _, _, err := signature.AdjustRunningStats(o.RunningStats, nil, nil); err != nil {
		return fmt.Errorf("demo: %w", err)
	}
	if len(o.Scales) == 0 {
		o.Scales = []float64{0.125, 0.25, 0.375, 0.5, 0.75, 1}
	}
	for _, s := range o.Scales {
		if !(s > 0) || s > 100 {
			return fmt.Errorf("demo: composition scale %g: want it in (0, 100]", s)
		}
	}
	if o.EvalSeed == 0 {
		o.EvalSeed = 1
	}
	if o.SignatureBudget == 0 {
		o.SignatureBudget = 0.03
	}
	switch {
	case o.BudgetConfidence == 0:
		o.BudgetConfidence = 0.95
	case o.BudgetConfidence < 0:
		o.BudgetConfidence = 0 // no margin
	case o.BudgetConfidence >= 1:
		return fmt.Errorf("demo: budget confidence %g: want it below 1", o.BudgetConfidence)
	}
	if o.RiFTEpochs == 0 {
		o.RiFTEpochs = 5
	}
	if o.RiFTEpochs < 0 {
		return fmt.Errorf("demo: RiFT epochs %d: want a positive number", o.RiFTEpochs)
	}
	if o.Log == nil {
		o.Log = io.Discard
	}
	// Unpacked last, once every option is known to be good.
	if o.Data == "" {
		if o.Embedded == nil {
			return errors.New("demo: no data: give a data directory or the embedded data")
		}
		d, err := Unpack(o.Embedded, filepath.Join(o.Out, "data"))
		if err != nil {
			return fmt.Errorf("demo: unpacking the embedded data: %w", err)
		}
		o.Data = d
	}
	if o.Recipes == "" {
		o.Recipes = filepath.Join(filepath.Dir(filepath.Clean(o.Data)), "recipes")
	}
	return nil
}

// Row groups.
const (
	GroupModel     = "model"     // the fixtures as trained
	GroupSignature = "signature" // clean + one signature
	GroupComposed  = "composed"  // clean + all signatures in one apply
	GroupMerge     = "merge"     // a recipe's merge of the robust fine-tunes
	GroupAblation  = "ablation"  // clean + a signature over another selection
)

// Row is one model of the results table.
type Row struct {
	// Name identifies the row ("clean", "clean+rws:blur (4-bit)", ...).
	Name  string `json:"name"`
	Group string `json:"group"`
	// Corruption is the corruption a signature row's patch is for.
	Corruption string `json:"corruption"`
	// Path is the model file, relative to the output directory or the
	// data directory (fixtures).
	Path string `json:"path"`
	Scores
	// PatchBytes is the size on disk of the patch(es) applied.
	PatchBytes int64 `json:"patch_bytes"`
	// Scale is a single signature's scale (chosen on the validation
	// images under the clean budget); 0 for other rows.
	Scale float64 `json:"scale,omitempty"`
	// Invalid, when set, says why the engine refused the model (its
	// scores are then zero).
	Invalid string `json:"invalid"`
}

// SignatureReport is what step 1 measured for one corruption.
type SignatureReport struct {
	Corruption string   `json:"corruption"`
	Tensors    []string `json:"tensors"`
	Elements   int64    `json:"elements"`
	// ModelElements and ModelFileBytes describe the full clean model
	// (F32: its file is the "full F32 copy").
	ModelElements  int64 `json:"model_elements"`
	ModelFileBytes int64 `json:"model_file_bytes"`
	// F32 and Quant are the two patches.
	F32   PatchFile `json:"f32"`
	Quant PatchFile `json:"quant"`
	// RatioF32 and RatioQuant are ModelFileBytes / patch bytes.
	RatioF32   float64 `json:"ratio_f32"`
	RatioQuant float64 `json:"ratio_quant"`
	// EnergyShare is the share of ‖RWS‖² (over all tensors) the selection
	// holds.
	EnergyShare float64 `json:"energy_share"`
	// Codecs compares the quantization domains at the same bits and
	// groups: linear (the demo's codec), log and tanh.
	Codecs []CodecReport `json:"codecs"`
	// Layers are the per-layer statistics (network order).
	Layers []LayerRow `json:"layers"`
}

// CodecReport is one quantization domain's signature patch: its size and
// error, and the patched model's accuracy (at the signature's scale) on
// its corruption and on clean images.
type CodecReport struct {
	Domain string `json:"domain"` // linear (min-max), linear (absmax), log or tanh
	PatchFile
	// Ratio is the full F32 model's bytes / the patch's.
	Ratio float64 `json:"ratio"`
	// Corrupted and Clean are the patched model's test accuracies.
	Corrupted float64 `json:"corrupted"`
	Clean     float64 `json:"clean"`
	// Invalid says why the engine refused the patched model.
	Invalid string `json:"invalid,omitempty"`
}

// LayerRow is one layer's signature statistics.
type LayerRow struct {
	Layer    string  `json:"layer"`
	Params   int64   `json:"params"`
	RelDelta float64 `json:"rel_delta"` // ‖θ_robust − θ_base‖/‖θ_clean‖
	RelRWS   float64 `json:"rel_rws"`   // ‖RWS‖/‖θ_clean‖
	Selected bool    `json:"selected"`
}

// ScaleScore is one candidate common scale of the composition, scored on
// the validation images.
type ScaleScore struct {
	Scale float64 `json:"scale"`
	Scores
	// Objective is the mean of the clean and every corrupted accuracy.
	Objective float64 `json:"objective"`
	// Invalid says why the scale gave a model the engine refuses.
	Invalid string `json:"invalid"`
}

// Unpatch is the result of one patch removal (wpatch.Remove).
type Unpatch struct {
	Name        string `json:"name"`
	Identical   bool   `json:"identical"`
	UndoEntries int64  `json:"undo_entries"`
}

// Result is everything the demo measured; results.json holds it.
type Result struct {
	Data        string       `json:"data"`
	Recipes     string       `json:"recipes"`
	Out         string       `json:"out"`
	Seed        uint64       `json:"seed"`
	EvalSeed    uint64       `json:"eval_seed"`
	TestSamples int          `json:"test_samples"`
	ValSamples  int          `json:"val_samples"`
	Corruptions []Corruption `json:"corruptions"`
	Layers      int          `json:"layers"`
	Quant       string       `json:"quant"`
	// RunningStats is how the signatures treat batchnorm statistics.
	RunningStats string `json:"running_stats"`
	// Signatures has one entry per corruption.
	Signatures []SignatureReport `json:"signatures"`
	// ComposeScale is the chosen common scale; ComposeScan every
	// candidate's validation scores.
	ComposeScale float64      `json:"compose_scale"`
	ComposeScan  []ScaleScore `json:"compose_scan"`
	// RiFT records step 3's Robust Critical Fine-Tuning.
	RiFT *RiFT `json:"rift"`
	// Rows is the table, in display order.
	Rows     []Row     `json:"rows"`
	Unpatch  []Unpatch `json:"unpatch"`
	Claims   []Claim   `json:"claims"`
	Seconds  float64   `json:"seconds"`
	Warnings []string  `json:"warnings"`
}

// Row finds a row by name.
func (r *Result) Row(name string) (Row, bool) {
	for _, x := range r.Rows {
		if x.Name == name {
			return x, true
		}
	}
	return Row{}, false
}

// Row names, shared by the table and the claims.
func rowSigF32(c string) string   { return "clean+rws:" + c }
func rowSigQuant(c string) string { return "clean+rws:" + c + " (4-bit)" }

const (
	rowComposedF32   = "clean+all rws"
	rowComposedQuant = "clean+all rws (4-bit)"
)

func rowMerge(stem string) string            { return "merge:" + stem }
func rowAblation(c, selection string) string { return "clean+rws:" + c + " [" + selection + "]" }

// run carries Run's state.
type run struct {
	ctx     context.Context
	o       Options
	recipes []*merge.Recipe
	man     *Manifest
	res     *Result
	test    *Evaluator
	val     *Evaluator
}

// reason is why the engine refused a model, without the file names
// (temporary for the scale candidates) engine.Load wraps it in.
func reason(err error) string {
	if u := errors.Unwrap(err); u != nil {
		err = u
	}
	return strings.ReplaceAll(err.Error(), "\n", "; ")
}

func (r *run) step(format string, a ...any) {
	fmt.Fprintf(r.o.Log, "== "+format+"\n", a...)
}

func (r *run) model(name string) string {
	return filepath.Join(r.o.Data, name, "model.safetensors")
}

func (r *run) rel(p string) string {
	if rp, err := filepath.Rel(r.o.Out, p); err == nil && !strings.HasPrefix(rp, "..") {
		return filepath.ToSlash(rp)
	}
	return filepath.ToSlash(p)
}

// Run runs the whole demo and writes results.json and results.md into
// o.Out. A claim that does not hold is reported in the result, not as an
// error; errors are for missing or bad inputs and failed steps.
func Run(ctx context.Context, o Options) (*Result, error) {
	start := time.Now()
	if err := o.defaults(); err != nil {
		return nil, err
	}
	man, err := ReadManifest(o.Data)
	if err != nil {
		return nil, err
	}
	q, err := quantize.ParseConfig(o.Quant)
	if err != nil {
		return nil, fmt.Errorf("demo: quantization: %w", err)
	}
	o.Quant = q.String()
	for _, d := range []string{"models", "patches"} {
		if err := os.MkdirAll(filepath.Join(o.Out, d), 0o755); err != nil {
			return nil, err
		}
	}
	r := &run{ctx: ctx, o: o, man: man, res: &Result{Data: o.Data, Recipes: o.Recipes, Out: o.Out, Seed: man.Seed, EvalSeed: o.EvalSeed,
		Corruptions: man.Corruptions, Layers: o.Layers, Quant: o.Quant, RunningStats: o.RunningStats, Warnings: []string{}}}
	if r.recipes, err = recipeFiles(o.Recipes); err != nil {
		return nil, err
	}
	r.step("data: %s (seed %d), corruptions %s", o.Data, man.Seed, strings.Join(man.CorruptionNames(), ", "))
	data, err := man.LoadData(o.Data)
	if err != nil {
		return nil, err
	}
	if r.test, err = NewEvaluator(data.Test, man.Corruptions, o.EvalSeed); err != nil {
		return nil, err
	}
	if r.val, err = NewEvaluator(data.Val, man.Corruptions, o.EvalSeed); err != nil {
		return nil, err
	}
	r.res.TestSamples, r.res.ValSamples = r.test.Samples(), r.val.Samples()

	if err := r.fixtures(); err != nil {
		return nil, err
	}
	sigs, err := r.signatures(q)
	if err != nil {
		return nil, err
	}
	if err := r.patchEach(sigs); err != nil {
		return nil, err
	}
	if err := r.compose(sigs); err != nil {
		return nil, err
	}
	if err := r.tools(sigs, data); err != nil {
		return nil, err
	}
	if err := r.ablations(sigs); err != nil {
		return nil, err
	}
	if err := r.merges(); err != nil {
		return nil, err
	}
	r.res.Claims = CheckClaims(r.res, DefaultThresholds)
	r.res.Seconds = time.Since(start).Seconds()
	if err := r.res.write(); err != nil {
		return nil, err
	}
	return r.res, nil
}

// fixtures evaluates the models as trained.
func (r *run) fixtures() error {
	r.step("evaluating the fixtures on %d test images, clean and under each corruption", r.test.Samples())
	for _, e := range r.man.Models {
		s, err := r.test.File(r.model(e.Name))
		if err != nil {
			return err
		}
		r.res.Rows = append(r.res.Rows, Row{Name: e.Name, Group: GroupModel, Corruption: e.Corruption,
			Path: filepath.ToSlash(filepath.Join(r.o.Data, e.Name, "model.safetensors")), Scores: s})
	}
	return nil
}

// sig is one corruption's signature patches (F32, quantized) and the
// statistics they were made from.
type sig struct {
	corruption string
	f32, quant *PatchFile
	// codecs are the quant patch (first) and the same bits and groups in
	// the other domains, named by domains.
	codecs  []*PatchFile
	domains []string
	stats   *signature.Statistics
	layers  []signature.LayerStat
}

// signatures extracts every corruption's RWS (step 1).
func (r *run) signatures(q quantize.Config) ([]*sig, error) {
	r.step("step 1: Robust Weight Signatures of the first %d weight layers with their batchnorms (running statistics: %s; F32 and %s)", r.o.Layers, r.o.RunningStats, r.o.Quant)
	base, _ := r.man.Role(RoleBase, "")
	clean, _ := r.man.Role(RoleClean, "")
	st, err := os.Stat(r.model(clean.Name))
	if err != nil {
		return nil, err
	}
	var out []*sig
	for _, c := range r.man.Corruptions {
		rb, _ := r.man.Role(RoleRobust, c.Name)
		src, done, err := OpenSources(r.model(base.Name), r.model(clean.Name), r.model(rb.Name))
		if err != nil {
			return nil, err
		}
		s, err := r.signature(src, c.Name, q, st.Size())
		done()
		if err != nil {
			return nil, err
		}
		out = append(out, s)
	}
	return out, nil
}

func (r *run) signature(src signature.Sources, c string, q quantize.Config, modelBytes int64) (*sig, error) {
	st, err := signature.ComputeStats(r.ctx, src, stream.Options{Workers: r.o.Workers})
	if err != nil {
		return nil, err
	}
	layers := st.Layers
	_, sel, err := signature.AdjustRunningStats(r.o.RunningStats, st.Tensors, ShallowTensors(layers, r.o.Layers))
	if err != nil {
		return nil, err
	}
	s := &sig{corruption: c, stats: st, layers: layers}
	dir := filepath.Join(r.o.Out, "patches")
	if s.f32, err = WriteSignature(r.ctx, src, st, sel, r.o.RunningStats, wpatch.Encoding{Values: "f32"}, filepath.Join(dir, "rws-"+c+".wpatch"), r.o.Workers); err != nil {
		return nil, err
	}
	if s.quant, err = WriteSignature(r.ctx, src, st, sel, r.o.RunningStats, wpatch.Encoding{Values: "q", Quant: q}, filepath.Join(dir, "rws-"+c+".q4.wpatch"), r.o.Workers); err != nil {
		return nil, err
	}
	s.codecs, s.domains = []*PatchFile{s.quant}, []string{domainName(q.Scheme)}
	for _, d := range []quantize.Scheme{quantize.Symmetric, quantize.Log, quantize.Tanh} {
		dq := quantize.Config{Bits: q.Bits, Scheme: d, Granularity: q.Granularity, BlockSize: q.BlockSize, F16Scales: q.F16Scales}
		if q.Scheme == quantize.GGML {
			dq = quantize.Config{Bits: 4, Scheme: d, Granularity: quantize.PerBlock, BlockSize: 32, F16Scales: true}
		}
		if d == q.Scheme {
			continue
		}
		p, err := WriteSignature(r.ctx, src, st, sel, r.o.RunningStats, wpatch.Encoding{Values: "q", Quant: dq}, filepath.Join(dir, "rws-"+c+"."+dq.String()+".wpatch"), r.o.Workers)
		if err != nil {
			return nil, err
		}
		s.codecs, s.domains = append(s.codecs, p), append(s.domains, domainName(d))
	}
	rep := SignatureReport{Corruption: c, Tensors: sel, ModelFileBytes: modelBytes,
		F32: *s.f32, Quant: *s.quant,
		RatioF32: float64(modelBytes) / float64(s.f32.Bytes), RatioQuant: float64(modelBytes) / float64(s.quant.Bytes)}
	rep.F32.Path, rep.Quant.Path = r.rel(s.f32.Path), r.rel(s.quant.Path)
	chosen := map[string]bool{}
	for _, n := range sel {
		chosen[n] = true
	}
	var total, kept float64
	for _, l := range layers {
		rep.ModelElements += l.Elements
		total += l.RWS2
		in := chosen[l.Tensors[0]]
		if in {
			rep.Elements += l.Elements
			kept += l.RWS2
		}
		rep.Layers = append(rep.Layers, LayerRow{Layer: l.Name, Params: l.Elements, RelDelta: l.RelNorm(), RelRWS: l.RelRWS(), Selected: in})
	}
	if total > 0 {
		rep.EnergyShare = kept / total
	}
	r.res.Signatures = append(r.res.Signatures, rep)
	fmt.Fprintf(r.o.Log, "   %-15s %d tensors, %d values (%.1f%% of ‖RWS‖²): F32 %s (%.1f× smaller than the F32 model, %s), %s %s (%.1f×, rel. L2 error %.4f)\n",
		c, len(sel), rep.Elements, 100*rep.EnergyShare, weights.HumanBytes(s.f32.Bytes), rep.RatioF32, weights.HumanBytes(modelBytes),
		r.o.Quant, weights.HumanBytes(s.quant.Bytes), rep.RatioQuant, s.quant.QuantRelL2)
	return s, nil
}

// patch applies the patch files at the scales to the clean model, into
// out (a directory: model.safetensors and the clean model's arch.yaml),
// and returns the patched file. With check, it then removes the patches
// again and compares the result with the clean model's file byte for
// byte.
func (r *run) patch(name string, patchPaths []string, scales []float64, out string, check bool) (string, error) {
	clean, _ := r.man.Role(RoleClean, "")
	cleanPath := r.model(clean.Name)
	model, err := weights.Open(cleanPath)
	if err != nil {
		return "", err
	}
	defer model.Close()
	var patches []*wpatch.Patch
	defer func() {
		for _, p := range patches {
			p.Close()
		}
	}()
	for _, pp := range patchPaths {
		p, err := wpatch.Open(pp)
		if err != nil {
			return "", err
		}
		patches = append(patches, p)
	}
	rep, err := wpatch.Apply(r.ctx, model, patches, out, wpatch.ApplyOptions{Scales: scales, Strict: true, Options: stream.Options{Workers: r.o.Workers}})
	if err != nil {
		return "", fmt.Errorf("%s: apply: %w", name, err)
	}
	r.res.Warnings = append(r.res.Warnings, rep.Warnings...)
	arch, err := os.ReadFile(filepath.Join(filepath.Dir(cleanPath), "arch.yaml"))
	if err != nil {
		return "", err
	}
	if err := weights.WriteFileAtomic(filepath.Join(out, "arch.yaml"), arch); err != nil {
		return "", err
	}
	patched := filepath.Join(out, "model.safetensors")
	if check {
		err = r.unpatch(name, patched, patches, cleanPath, rep.UndoEntries)
	}
	return patched, err
}

// apply patches (see patch) and evaluates the patched model. A patched
// model the engine refuses to load (a batchnorm variance pushed below
// zero) is not an error of the demo but a result: its reason comes back
// in invalid.
func (r *run) apply(name string, patchPaths []string, scales []float64, out string, ev *Evaluator, check bool) (s Scores, invalid string, err error) {
	p, err := r.patch(name, patchPaths, scales, out, check)
	if err != nil {
		return Scores{}, "", err
	}
	s, err = ev.File(p)
	if err != nil {
		fmt.Fprintf(r.o.Log, "   %s: invalid model: %s\n", name, reason(err))
		return Scores{}, reason(err), nil
	}
	return s, "", nil
}

// unpatch removes the patches from a patched model into a temporary file
// and compares it with the original.
func (r *run) unpatch(name, patchedPath string, patches []*wpatch.Patch, orig string, undo int64) error {
	patched, err := weights.Open(patchedPath)
	if err != nil {
		return err
	}
	defer patched.Close()
	tmp, err := os.MkdirTemp(r.o.Out, ".unpatch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	back := filepath.Join(tmp, "model.safetensors")
	if _, err := wpatch.Remove(r.ctx, patched, patches, back, wpatch.ApplyOptions{Options: stream.Options{Workers: r.o.Workers}}); err != nil {
		return fmt.Errorf("%s: remove: %w", name, err)
	}
	a, err := os.ReadFile(back)
	if err != nil {
		return err
	}
	b, err := os.ReadFile(orig)
	if err != nil {
		return err
	}
	r.res.Unpatch = append(r.res.Unpatch, Unpatch{Name: name, Identical: bytes.Equal(a, b), UndoEntries: undo})
	return nil
}

// patchEach applies each signature alone (step 2).
func (r *run) patchEach(sigs []*sig) error {
	if r.o.SignatureBudget < 0 {
		r.step("step 2: patching the clean model with each signature (scale 1), evaluating, unpatching")
	} else {
		r.step("step 2: patching the clean model with each signature at the largest scale costing ≤ %s pts of clean accuracy on %d held-out images, evaluating, unpatching", pct(r.o.SignatureBudget), r.val.Samples())
	}
	for _, s := range sigs {
		scale := 1.0
		if r.o.SignatureBudget >= 0 {
			var err error
			if scale, err = r.tuneScale(s); err != nil {
				return err
			}
		}
		for _, v := range []struct {
			row  string
			file *PatchFile
			dir  string
		}{{rowSigF32(s.corruption), s.f32, "patched-" + s.corruption}, {rowSigQuant(s.corruption), s.quant, "patched-" + s.corruption + "-q4"}} {
			out := filepath.Join(r.o.Out, "models", v.dir)
			sc, bad, err := r.apply(v.row, []string{v.file.Path}, []float64{scale}, out, r.test, true)
			if err != nil {
				return err
			}
			r.res.Rows = append(r.res.Rows, Row{Name: v.row, Group: GroupSignature, Corruption: s.corruption,
				Path: r.rel(filepath.Join(out, "model.safetensors")), Scores: sc, PatchBytes: v.file.Bytes, Invalid: bad, Scale: scale})
		}
		if err := r.compareCodecs(s, scale); err != nil {
			return err
		}
	}
	return nil
}

// domainName names a quantization scheme's domain in the codec table.
func domainName(s quantize.Scheme) string {
	switch s {
	case quantize.Asymmetric:
		return "linear (min-max)"
	case quantize.Symmetric:
		return "linear (absmax)"
	}
	return s.String()
}

// pairedDrop is the accuracy lost from a to b on the same images and the
// standard error of that paired difference: with d = n(a right, b wrong)
// and g = n(a wrong, b right) over n images, drop = (d − g)/n and SE² =
// (d + g − (d − g)²/n)/n².
func pairedDrop(a, b []bool) (drop, se float64) {
	var d, g float64
	for i := range a {
		switch {
		case a[i] && !b[i]:
			d++
		case !a[i] && b[i]:
			g++
		}
	}
	n := float64(len(a))
	drop = (d - g) / n
	se = math.Sqrt(max(d+g-(d-g)*(d-g)/n, 0)) / n
	return drop, se
}

// compareCodecs evaluates the signature quantized in each domain.
func (r *run) compareCodecs(s *sig, scale float64) error {
	rep := &r.res.Signatures[len(r.res.Signatures)-1]
	for i := range r.res.Signatures {
		if r.res.Signatures[i].Corruption == s.corruption {
			rep = &r.res.Signatures[i]
		}
	}
	rep.Codecs = nil
	for i, p := range s.codecs {
		domain := s.domains[i]
		c := CodecReport{Domain: domain, PatchFile: *p, Ratio: float64(rep.ModelFileBytes) / float64(p.Bytes)}
		c.Path = r.rel(p.Path)
		if i == 0 {
			row, _ := r.res.Row(rowSigQuant(s.corruption))
			c.Corrupted, c.Clean, c.Invalid = row.Scores.Corrupted[s.corruption], row.Scores.Clean, row.Invalid
		} else {
			out := filepath.Join(r.o.Out, "models", "patched-"+s.corruption+"-"+p.Encoding)
			sc, bad, err := r.apply("clean+rws:"+s.corruption+" ("+domain+")", []string{p.Path}, []float64{scale}, out, r.test, false)
			if err != nil {
				return err
			}
			c.Corrupted, c.Clean, c.Invalid = sc.Corrupted[s.corruption], sc.Clean, bad
		}
		rep.Codecs = append(rep.Codecs, c)
	}
	return nil
}

// tuneScale picks a signature's scale on the validation images: the
// largest candidate (Scales and 1) whose clean cost is within the budget
// with the asked confidence (see Options.BudgetConfidence); the smallest
// valid one when none is.
func (r *run) tuneScale(s *sig) (float64, error) {
	clean, _ := r.man.Role(RoleClean, "")
	base, err := r.val.CleanCorrect(r.model(clean.Name))
	if err != nil {
		return 0, err
	}
	z := 0.0
	if c := r.o.BudgetConfidence; c > 0 {
		z = math.Sqrt2 * math.Erfinv(2*c-1)
	}
	cands := append([]float64{1}, r.o.Scales...)
	sort.Sort(sort.Reverse(sort.Float64Slice(cands)))
	cands = slices.Compact(cands)
	tmp, err := os.MkdirTemp(r.o.Out, ".tune-")
	if err != nil {
		return 0, err
	}
	defer os.RemoveAll(tmp)
	chosen := 0.0
	for i, c := range cands {
		p, err := r.patch(fmt.Sprintf("%s ×%g", s.corruption, c), []string{s.f32.Path}, []float64{c}, filepath.Join(tmp, fmt.Sprint(i)), false)
		if err != nil {
			return 0, err
		}
		got, err := r.val.CleanCorrect(p)
		if err != nil {
			fmt.Fprintf(r.o.Log, "   %s scale %-5g invalid model: %s\n", s.corruption, c, reason(err))
			continue
		}
		drop, se := pairedDrop(base, got)
		bound := drop + z*se
		fmt.Fprintf(r.o.Log, "   %s scale %-5g validation: clean cost %+.1f pts (± %.1f; bound %.1f)\n", s.corruption, c, 100*drop, 100*se, 100*bound)
		chosen = c
		if bound <= r.o.SignatureBudget+1e-12 {
			return c, nil
		}
	}
	if chosen == 0 {
		return 0, fmt.Errorf("demo: every scale of the %s signature (%v) gives an invalid model", s.corruption, cands)
	}
	return chosen, nil // the smallest valid: none was within the budget
}

// compose applies all signatures at once at a common scale chosen on the
// validation images (step 2, composed).
func (r *run) compose(sigs []*sig) error {
	r.step("step 2b: composing all %d signatures in one apply; common scale chosen on %d held-out training images", len(sigs), r.val.Samples())
	var f32, qs []string
	var f32Bytes, qBytes int64
	for _, s := range sigs {
		f32, qs = append(f32, s.f32.Path), append(qs, s.quant.Path)
		f32Bytes += s.f32.Bytes
		qBytes += s.quant.Bytes
	}
	scales := func(s float64) []float64 {
		out := make([]float64, len(sigs))
		for i := range out {
			out[i] = s
		}
		return out
	}
	tmp, err := os.MkdirTemp(r.o.Out, ".tune-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(tmp)
	best := -1
	for i, s := range r.o.Scales {
		p, err := r.patch(fmt.Sprintf("composed ×%g", s), f32, scales(s), filepath.Join(tmp, fmt.Sprint(i)), false)
		if err != nil {
			return err
		}
		sc, err := r.val.File(p)
		if err != nil {
			// A scale can make a model invalid (a batchnorm variance
			// pushed below zero, which the engine refuses): that scale is
			// out, the demo goes on.
			r.res.ComposeScan = append(r.res.ComposeScan, ScaleScore{Scale: s, Invalid: reason(err)})
			fmt.Fprintf(r.o.Log, "   scale %-5g invalid model: %s\n", s, reason(err))
			continue
		}
		obj := sc.Clean
		for _, v := range sc.Corrupted {
			obj += v
		}
		obj /= float64(1 + len(sc.Corrupted))
		r.res.ComposeScan = append(r.res.ComposeScan, ScaleScore{Scale: s, Scores: sc, Objective: obj})
		cur := len(r.res.ComposeScan) - 1
		fmt.Fprintf(r.o.Log, "   scale %-5g validation: clean %.3f, mean corrupted %.3f, objective %.4f\n", s, sc.Clean, sc.MeanCorrupted, obj)
		// Ties go to the smaller scale (listed first when sorted).
		if best < 0 || obj > r.res.ComposeScan[best].Objective ||
			(obj == r.res.ComposeScan[best].Objective && s < r.res.ComposeScan[best].Scale) {
			best = cur
		}
	}
	if best < 0 {
		return fmt.Errorf("demo: every composition scale (%v) gives an invalid model", r.o.Scales)
	}
	r.res.ComposeScale = r.res.ComposeScan[best].Scale
	for _, v := range []struct {
		row   string
		files []string
		bytes int64
		dir   string
	}{{rowComposedF32, f32, f32Bytes, "composed"}, {rowComposedQuant, qs, qBytes, "composed-q4"}} {
		out := filepath.Join(r.o.Out, "models", v.dir)
		sc, bad, err := r.apply(v.row, v.files, scales(r.res.ComposeScale), out, r.test, true)
		if err != nil {
			return err
		}
		r.res.Rows = append(r.res.Rows, Row{Name: fmt.Sprintf("%s ×%g", v.row, r.res.ComposeScale), Group: GroupComposed,
			Path: r.rel(filepath.Join(out, "model.safetensors")), Scores: sc, PatchBytes: v.bytes, Invalid: bad})
	}
	return nil
}

// ablations patch the clean model with signatures over other selections:
// the convolution weights alone (signature.Selection{Layers: n}, which
// skips batchnorms) and every layer, to show why the demo keeps the
// batchnorms and that the shallow layers carry most of the effect.
func (r *run) ablations(sigs []*sig) error {
	r.step("ablation: signatures over the convolutions alone and over every layer")
	base, _ := r.man.Role(RoleBase, "")
	clean, _ := r.man.Role(RoleClean, "")
	dir := filepath.Join(r.o.Out, "patches", "ablation")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	for _, s := range sigs {
		rb, _ := r.man.Role(RoleRobust, s.corruption)
		src, done, err := OpenSources(r.model(base.Name), r.model(clean.Name), r.model(rb.Name))
		if err != nil {
			return err
		}
		_, all, err := signature.AdjustRunningStats(r.o.RunningStats, nil, AllTensors(s.layers))
		if err != nil {
			done()
			return err
		}
		for _, v := range []struct {
			label string
			sel   []string
		}{
			{fmt.Sprintf("first %d conv only", r.o.Layers), signature.Selection{Layers: r.o.Layers}.Select(s.layers)},
			{"all layers", all},
		} {
			slug := strings.ReplaceAll(v.label, " ", "-")
			pf, err := WriteSignature(r.ctx, src, s.stats, v.sel, r.o.RunningStats, wpatch.Encoding{Values: "f32"}, filepath.Join(dir, "rws-"+s.corruption+"-"+slug+".wpatch"), r.o.Workers)
			if err != nil {
				done()
				return err
			}
			out := filepath.Join(r.o.Out, "models", "ablation", s.corruption+"-"+slug)
			sc, bad, err := r.apply(v.label, []string{pf.Path}, nil, out, r.test, false)
			if err != nil {
				done()
				return err
			}
			r.res.Rows = append(r.res.Rows, Row{Name: rowAblation(s.corruption, v.label), Group: GroupAblation, Corruption: s.corruption,
				Path: r.rel(filepath.Join(out, "model.safetensors")), Scores: sc, PatchBytes: pf.Bytes, Invalid: bad})
		}
		done()
	}
	return nil
}

// recipeFiles lists and parses the recipes (before any work, so a bad
// recipe is reported at once), in display order: the plain method first,
// then the refinements.
func recipeFiles(dir string) ([]*merge.Recipe, error) {
	files, err := filepath.Glob(filepath.Join(dir, "*.yaml"))
	if err != nil {
		return nil, err
	}
	if len(files) == 0 {
		return nil, fmt.Errorf("demo: no merge recipes (*.yaml) in %s", dir)
	}
	rank := func(f string) int {
		for i, m := range []string{"task_arithmetic", "ties", "dare", "breadcrumbs"} {
			if strings.HasPrefix(filepath.Base(f), m) {
				return i
			}
		}
		return 99
	}
	sort.Slice(files, func(i, j int) bool {
		if ri, rj := rank(files[i]), rank(files[j]); ri != rj {
			return ri < rj
		}
		return files[i] < files[j]
	})
	var out []*merge.Recipe
	for _, f := range files {
		rec, err := merge.ParseRecipe(f)
		if err != nil {
			return nil, err
		}
		out = append(out, rec)
	}
	return out, nil
}

// merges runs every recipe (step 3).
func (r *run) merges() error {
	r.step("step 3: merging the robust fine-tunes with %d recipes from %s", len(r.recipes), r.o.Recipes)
	for _, rec := range r.recipes {
		f := rec.Path
		stem := strings.TrimSuffix(filepath.Base(f), ".yaml")
		plan, err := rec.Open()
		if err != nil {
			return err
		}
		out := filepath.Join(r.o.Out, "models", "merge-"+stem)
		_, err = plan.Merge(r.ctx, out, merge.Options{Options: stream.Options{Workers: r.o.Workers}, Version: r.o.Version})
		plan.Close()
		if err != nil {
			return fmt.Errorf("%s: %w", f, err)
		}
		row := Row{Name: rowMerge(stem), Group: GroupMerge, Path: r.rel(filepath.Join(out, "model.safetensors"))}
		if row.Scores, err = r.test.File(filepath.Join(out, "model.safetensors")); err != nil {
			// As for patches: a merge the engine refuses is a result.
			row.Invalid = reason(err)
			fmt.Fprintf(r.o.Log, "   %-16s invalid model: %s\n", stem, row.Invalid)
		} else {
			fmt.Fprintf(r.o.Log, "   %-16s clean %.3f, mean corrupted %.3f\n", stem, row.Clean, row.MeanCorrupted)
		}
		r.res.Rows = append(r.res.Rows, row)
	}
	return nil
}
