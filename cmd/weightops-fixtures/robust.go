package main

// The demo fixtures (-demo DIR): a small CNN "pretrained" briefly on the
// clean Fashion-MNIST subset, a clean fine-tune of it, and one robust
// fine-tune per corruption family, all from the same base with the same
// fine-tuning seed, so that robust − clean isolates what the corruption
// taught. The robust fine-tunes double as the task models of the
// multi-task merges (testdata/recipes): each "task" is robustness to one
// corruption, measurable on the corrupted test sets.

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"slices"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/demo"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/train"
)

// DemoCorruptions are the corruption families of the demo, each at the
// severity its robust fine-tune trains on and the demo evaluates at. The
// severities take the clean fine-tune well below its clean accuracy
// without destroying the images.
var DemoCorruptions = []demo.Corruption{
	{Name: "gaussian_noise", Spec: "gaussian_noise:0.3"},
	{Name: "blur", Spec: "blur:1.5"},
	{Name: "contrast", Spec: "contrast:0.15"},
	{Name: "brightness", Spec: "brightness:0.4"},
}

// demoArch is the demo CNN: two conv–batchnorm–relu–pool blocks
// (features.*, the "shallow layers" a signature covers) and a two-layer
// head. The big head (784→64) keeps the shallow layers a small share of
// the model, as in real networks. Names sort in network order.
func demoArch() *engine.Arch {
	conv := func(name string, out int) engine.LayerSpec {
		return engine.LayerSpec{Type: "conv2d", Name: name, Out: out, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}}
	}
	return &engine.Arch{Input: fashionInput, Classes: FashionClasses, Layers: []engine.LayerSpec{
		conv("features.0", 8),
		{Type: "batchnorm2d", Name: "features.1"},
		{Type: "relu"},
		{Type: "maxpool2d", Kernel: engine.Pair{2, 2}},
		conv("features.4", 16),
		{Type: "batchnorm2d", Name: "features.5"},
		{Type: "relu"},
		{Type: "maxpool2d", Kernel: engine.Pair{2, 2}},
		{Type: "flatten"},
		layer("linear", "head.0", 64, 0),
		{Type: "relu"},
		layer("linear", "head.2", 10, 0),
	}}
}

// Training schedules. The base is deliberately short ("pretrained"
// briefly); fine-tunes use a lower learning rate, the same seed (so the
// same batch order) and, for robust ones, corrupt half of the samples of
// each epoch (robust without forgetting the clean data).
var (
	demoBaseConfig     = train.Config{Epochs: 2, BatchSize: 64, Optimizer: "adam", LR: 0.003, LRDecay: 0.7}
	demoFinetuneConfig = train.Config{Epochs: 2, BatchSize: 64, Optimizer: "adam", LR: 0.001}
)

const (
	demoValFraction     = 0.2
	demoCorruptFraction = 0.5
)

// demoMetrics is a demo model's train_metrics.json.
type demoMetrics struct {
	Model           string            `json:"model"`
	Role            string            `json:"role"`
	Parent          string            `json:"parent,omitempty"`
	Corruption      string            `json:"corruption,omitempty"`
	CorruptFraction float64           `json:"corrupt_fraction,omitempty"`
	Seed            uint64            `json:"seed"`
	Data            map[string]string `json:"data"`
	TrainSamples    int               `json:"train_samples"`
	Config          configRecord      `json:"config"`
	Epochs          []train.Epoch     `json:"epochs"`
	Steps           int               `json:"steps"`
	TestSamples     int               `json:"test_samples"`
	TestCorrect     int               `json:"test_correct"`
	TestAccuracy    float64           `json:"test_accuracy"`
	TestLoss        float64           `json:"test_loss"`
}

// demoModels lists the demo's models in training order (base first).
func demoModels() []demo.ModelEntry {
	out := []demo.ModelEntry{{Name: "base", Role: demo.RoleBase}, {Name: "clean", Role: demo.RoleClean, Parent: "base"}}
	for _, c := range DemoCorruptions {
		out = append(out, demo.ModelEntry{Name: "robust-" + c.Name, Role: demo.RoleRobust, Parent: "base", Corruption: c.Name})
	}
	return out
}

// makeDemo trains the demo models and writes them, with manifest.json,
// into dir. With only non-empty, just those fine-tunes are trained and
// written (the base always is: they start from it). The base trains with
// seed; every fine-tune with seed+1.
func makeDemo(dir, dataDir string, seed uint64, only []string, logf func(string, ...any)) error {
	all, err := dataset.Load(filepath.Join(dataDir, fashionTrainImages), filepath.Join(dataDir, fashionTrainLabels))
	if err != nil {
		return err
	}
	te, err := dataset.Load(filepath.Join(dataDir, fashionTestImages), filepath.Join(dataDir, fashionTestLabels))
	if err != nil {
		return err
	}
	tr, _ := dataset.StratifiedSplit(all, demoValFraction, seed)
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	relData, err := relPath(dir, dataDir)
	if err != nil {
		return err
	}
	man := demo.Manifest{
		Generator: "weightops-fixtures -demo", Seed: seed,
		Data: demo.DataFiles{
			TrainImages: filepath.ToSlash(filepath.Join(relData, fashionTrainImages)),
			TrainLabels: filepath.ToSlash(filepath.Join(relData, fashionTrainLabels)),
			TestImages:  filepath.ToSlash(filepath.Join(relData, fashionTestImages)),
			TestLabels:  filepath.ToSlash(filepath.Join(relData, fashionTestLabels)),
		},
		Validation:  demo.Split{Fraction: demoValFraction, Seed: seed},
		Corruptions: DemoCorruptions,
		Models:      demoModels(),
	}
	files := map[string]string{"train_images": fashionTrainImages, "train_labels": fashionTrainLabels,
		"test_images": fashionTestImages, "test_labels": fashionTestLabels,
		"split": fmt.Sprintf("dataset.StratifiedSplit(fraction %g, seed %d): trained on the first part", demoValFraction, seed)}
	var base *engine.Model
	for _, e := range man.Models {
		if e.Role != demo.RoleBase && len(only) > 0 && !slices.Contains(only, e.Name) {
			continue
		}
		if logf != nil {
			fmt.Printf("%s:\n", e.Name)
		}
		var m *engine.Model
		cfg := demoFinetuneConfig
		cfg.Seed = seed + 1
		if e.Role == demo.RoleBase {
			if m, err = engine.New(demoArch()); err != nil {
				return err
			}
			train.Init(m, seed)
			cfg = demoBaseConfig
			cfg.Seed = seed
		} else if m, err = base.Clone(); err != nil {
			return err
		}
		if e.Role == demo.RoleRobust {
			c := slices.IndexFunc(DemoCorruptions, func(c demo.Corruption) bool { return c.Name == e.Corruption })
			if cfg.Corrupt, err = DemoCorruptions[c].Pipeline(); err != nil {
				return err
			}
			cfg.CorruptFraction = demoCorruptFraction
		}
		cfg.Test, cfg.Logf = te, logf
		met, err := train.Fit(m, tr, cfg)
		if err != nil {
			return fmt.Errorf("%s: %w", e.Name, err)
		}
		if e.Role == demo.RoleBase {
			base = m
		}
		last := met.Last()
		tm := &demoMetrics{Model: e.Name, Role: e.Role, Parent: e.Parent, Corruption: e.Corruption, CorruptFraction: cfg.CorruptFraction,
			Seed: cfg.Seed, Data: files, TrainSamples: tr.Len(),
			Config: configRecord{Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, Optimizer: cfg.Optimizer, LR: cfg.LR, LRDecay: cfg.LRDecay},
			Epochs: met.Epochs, Steps: met.Steps,
			TestSamples: last.TestSamples, TestCorrect: last.TestCorrect, TestAccuracy: last.TestAccuracy, TestLoss: last.TestLoss}
		if cfg.LRDecay == 1 {
			tm.Config.LRDecay = 0 // constant: omitted, as in the engine fixtures
		}
		meta := map[string]string{"weightops.generator": "weightops-fixtures -demo", "weightops.seed": fmt.Sprint(cfg.Seed),
			"weightops.model": e.Name, "weightops.role": e.Role}
		if e.Parent != "" {
			meta["weightops.parent"] = e.Parent
		}
		if e.Corruption != "" {
			meta["weightops.corruption"] = cfg.Corrupt.String()
		}
		if err := m.Save(filepath.Join(dir, e.Name), meta); err != nil {
			return err
		}
		if err := writeJSON(filepath.Join(dir, e.Name, "train_metrics.json"), tm); err != nil {
			return err
		}
	}
	return writeJSON(filepath.Join(dir, demo.ManifestFile), man)
}

// relPath expresses target relative to dir when it can (so the committed
// manifest does not depend on where the repository is checked out).
func relPath(dir, target string) (string, error) {
	ad, err := filepath.Abs(dir)
	if err != nil {
		return "", err
	}
	at, err := filepath.Abs(target)
	if err != nil {
		return "", err
	}
	if r, err := filepath.Rel(ad, at); err == nil {
		return r, nil
	}
	return at, nil
}

func writeJSON(path string, v any) error {
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o644)
}
