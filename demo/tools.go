package demo

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/rift"
	"github.com/weightops/weightops/sensitivity"
	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/train"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

// Row groups of the robustness tools (step 3).
const (
	GroupRecalibrated = "recalibrated" // clean + a signature, batchnorm statistics recomputed
	GroupRiFT         = "rift"         // the clean model after Robust Critical Fine-Tuning
)

func rowRecalibrated(c string) string { return "clean+rws:" + c + " (BN recalibrated)" }

// RiFT is what the demo's Robust Critical Fine-Tuning chose.
type RiFT struct {
	Module    string       `json:"module"`
	Alpha     float64      `json:"alpha"`
	BestEpoch int          `json:"best_epoch"`
	Sweep     []rift.Point `json:"sweep"`
}

// tools runs step 3: each signature (F32, at its chosen scale) applied
// with its batchnorm statistics recalibrated on the training images under
// its own corruption, as the RWS code's bn_update; and RiFT on the clean
// model, its module chosen by worst-case criticality under the first
// corruption and its α on the held-out images.
func (r *run) tools(sigs []*sig, data *Data) error {
	r.step("step 3: robustness tools — each signature with batchnorm statistics recalibrated on the %d training images under its corruption; RiFT on the clean model (α chosen on %d held-out images)", data.Train.Len(), data.Val.Len())
	clean, _ := r.man.Role(RoleClean, "")
	cleanPath := r.model(clean.Name)
	archPath := filepath.Join(filepath.Dir(cleanPath), "arch.yaml")
	for _, s := range sigs {
		row, _ := r.res.Row(rowSigF32(s.corruption))
		scale := row.Scale
		if scale == 0 {
			scale = 1
		}
		c, ok := r.man.Corruption(s.corruption)
		if !ok {
			return fmt.Errorf("demo: no corruption %q in the manifest", s.corruption)
		}
		pipe, err := c.Pipeline()
		if err != nil {
			return err
		}
		out := filepath.Join(r.o.Out, "models", "patched-"+s.corruption+"-bn")
		if err := os.MkdirAll(out, 0o755); err != nil {
			return err
		}
		p, err := r.recalibrated(cleanPath, archPath, s.f32.Path, scale, out, data, pipe)
		if err != nil {
			return fmt.Errorf("%s: %w", rowRecalibrated(s.corruption), err)
		}
		sc, err := r.test.File(p)
		bad := ""
		if err != nil {
			bad = reason(err)
			fmt.Fprintf(r.o.Log, "   %s: invalid model: %s\n", rowRecalibrated(s.corruption), bad)
		}
		r.res.Rows = append(r.res.Rows, Row{Name: rowRecalibrated(s.corruption), Group: GroupRecalibrated, Corruption: s.corruption,
			Path: r.rel(p), Scores: sc, PatchBytes: s.f32.Bytes, Scale: scale, Invalid: bad})
	}

	m, err := engine.Load(cleanPath, archPath)
	if err != nil {
		return err
	}
	var conds []rift.Condition
	for _, c := range r.man.Corruptions {
		p, err := c.Pipeline()
		if err != nil {
			return err
		}
		conds = append(conds, rift.Condition{Name: c.Name, Corrupt: p})
	}
	o := rift.Options{
		WorstCase: sensitivity.WorstCaseOptions{CriticalityOptions: train.CriticalityOptions{Epochs: r.o.RiFTEpochs, Seed: r.o.EvalSeed}, Corrupt: conds[0].Corrupt},
		Train:     train.Config{Epochs: r.o.RiFTEpochs, LR: 0.01, Momentum: 0.9, WeightDecay: 5e-4, BatchSize: 128, Seed: r.o.EvalSeed},
		Val:       data.Val, Corruptions: conds, EvalSeed: r.o.EvalSeed,
	}
	ft, res, err := rift.Run(r.ctx, m, data.Train, o)
	if err != nil {
		return fmt.Errorf("demo: rift: %w", err)
	}
	dir := filepath.Join(r.o.Out, "models", "rift")
	if err := ft.Save(dir, map[string]string{"weightops.demo": "1"}); err != nil {
		return err
	}
	p := filepath.Join(dir, "model.safetensors")
	sc, err := r.test.File(p)
	if err != nil {
		return err
	}
	name := fmt.Sprintf("clean → RiFT (%s, α = %g)", res.Module, res.Alpha)
	r.res.Rows = append(r.res.Rows, Row{Name: name, Group: GroupRiFT, Path: r.rel(p), Scores: sc})
	r.res.RiFT = &RiFT{Module: res.Module, Alpha: res.Alpha, BestEpoch: res.BestEpoch, Sweep: res.Sweep}
	fmt.Fprintf(r.o.Log, "   RiFT: least critical module %s, best epoch %d of %d, α = %g (held-out clean %.1f%%, corrupted %.1f%%)\n",
		res.Module, res.BestEpoch, len(res.Epochs), res.Alpha, 100*res.Chosen.Clean, 100*res.Chosen.MeanCorrupted)
	return nil
}

// recalibrated applies one patch at a scale with batchnorm recalibration
// into out (model.safetensors and the clean model's arch.yaml) and
// returns the model file.
func (r *run) recalibrated(cleanPath, archPath, patchPath string, scale float64, out string, data *Data, corrupt dataset.Pipeline) (string, error) {
	model, err := weights.Open(cleanPath)
	if err != nil {
		return "", err
	}
	defer model.Close()
	pt, err := wpatch.Open(patchPath)
	if err != nil {
		return "", err
	}
	defer pt.Close()
	dst := filepath.Join(out, "model.safetensors")
	_, _, err = signature.ApplyRecalibrated(r.ctx, model, []*wpatch.Patch{pt}, dst,
		wpatch.ApplyOptions{Scales: []float64{scale}, Strict: true, Options: stream.Options{Workers: r.o.Workers}},
		signature.Recalibration{Arch: archPath, Data: data.Train, DataName: "demo training images",
			RecalibrateOptions: train.RecalibrateOptions{Corrupt: corrupt, Seed: r.o.EvalSeed}})
	if err != nil {
		return "", err
	}
	arch, err := os.ReadFile(archPath)
	if err != nil {
		return "", err
	}
	return dst, weights.WriteFileAtomic(filepath.Join(out, "arch.yaml"), arch)
}
