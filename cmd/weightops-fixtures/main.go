// Command weightops-fixtures trains the small models committed under
// testdata/engine, deterministically from a seed, so tests can check the
// engine against what the training loop itself measured:
//
//	go run ./cmd/weightops-fixtures -out testdata/engine -seed 1
//
// It writes, each into its own directory under -out, a model.safetensors,
// an arch.yaml and a train_metrics.json (the configuration, per-epoch
// figures and the test accuracy the training loop measured):
//
//	mlp/     784-128-10 MLP on the Fashion-MNIST subset
//	cnn/     conv-bn-relu-pool ×2 + linear on the Fashion-MNIST subset
//	digits/  64-32-10 MLP on scikit-learn's digits (stratified 80/20 split)
//	tiny-llama/  a random tiny LLaMA (config.json, model.safetensors) and
//	         a tokens.txt for eval-lm and generate
//
// The data come from -out/data (see testdata/engine/README.md). Runs with
// the same seed give bit-identical files on the same platform.
//
// With -demo DIR it writes instead the demo models of `weightops demo`
// (see robust.go and testdata/demo/README.md).
package main

import (
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/train"
)

func main() {
	out := flag.String("out", "testdata/engine", "output directory (the data are read from OUT/data)")
	seed := flag.Uint64("seed", 1, "seed for initialisation, shuffling and dropout")
	only := flag.String("only", strings.Join(recipeNames(), ","), "comma-separated fixtures to make")
	data := flag.String("data", "", "data directory (default OUT/data)")
	quiet := flag.Bool("q", false, "no per-epoch log")
	demoDir := flag.String("demo", "", "instead of the engine fixtures, write the demo models (base, clean and robust fine-tunes) into this directory (see robust.go)")
	flag.Parse()
	logf := func(format string, args ...any) { fmt.Printf("  "+format+"\n", args...) }
	if *quiet {
		logf = nil
	}
	if *data == "" {
		*data = filepath.Join(*out, "data")
	}
	if *demoDir != "" {
		start := time.Now()
		if err := makeDemo(*demoDir, *data, *seed, nil, logf); err != nil {
			fmt.Fprintf(os.Stderr, "weightops-fixtures: demo: %v\n", err)
			os.Exit(1)
		}
		fmt.Printf("demo models in %s, done in %.1fs\n", *demoDir, time.Since(start).Seconds())
		return
	}
	for _, name := range strings.Split(*only, ",") {
		start := time.Now()
		fmt.Printf("%s:\n", name)
		if err := make1(name, *out, *data, *seed, logf); err != nil {
			fmt.Fprintf(os.Stderr, "weightops-fixtures: %s: %v\n", name, err)
			os.Exit(1)
		}
		fmt.Printf("  done in %.1fs\n", time.Since(start).Seconds())
	}
}

func make1(name, out, data string, seed uint64, logf func(string, ...any)) error {
	if name == "tiny-llama" {
		return writeTinyLlama(filepath.Join(out, name), seed)
	}
	r, ok := recipes()[name]
	if !ok {
		return fmt.Errorf("unknown fixture (known: %s)", strings.Join(recipeNames(), ", "))
	}
	m, tm, err := r.run(data, seed, logf)
	if err != nil {
		return err
	}
	return save(filepath.Join(out, name), m, tm)
}

// Recipe is how one classifier fixture is trained.
type Recipe struct {
	// Name is the fixture's directory name.
	Name string
	// Arch is the model; Config how it is trained (seed, test set and log
	// are filled in by run).
	Arch   *engine.Arch
	Config train.Config
	// Data loads the training and test sets from the data directory and
	// names their files (relative to it) for the record.
	Data func(dir string, seed uint64) (tr, te *dataset.Set, files map[string]string, err error)
}

// TrainMetrics is train_metrics.json: what the generator's own training
// loop measured.
type TrainMetrics struct {
	// Model, Seed, Data and TrainSamples say what was trained on what;
	// Config and Epochs how it went; the Test fields are the last epoch's
	// evaluation by the training loop.
	Model        string            `json:"model"`
	Seed         uint64            `json:"seed"`
	Data         map[string]string `json:"data"`
	TrainSamples int               `json:"train_samples"`
	Config       configRecord      `json:"config"`
	Epochs       []train.Epoch     `json:"epochs"`
	Steps        int               `json:"steps"`
	TestSamples  int               `json:"test_samples"`
	TestCorrect  int               `json:"test_correct"`
	TestAccuracy float64           `json:"test_accuracy"`
	TestLoss     float64           `json:"test_loss"`
}

type configRecord struct {
	Epochs      int     `json:"epochs"`
	BatchSize   int     `json:"batch_size"`
	Optimizer   string  `json:"optimizer"`
	LR          float64 `json:"lr"`
	Momentum    float64 `json:"momentum,omitempty"`
	WeightDecay float64 `json:"weight_decay,omitempty"`
	LRDecay     float64 `json:"lr_decay,omitempty"`
}

func (r *Recipe) run(dataDir string, seed uint64, logf func(string, ...any)) (*engine.Model, *TrainMetrics, error) {
	tr, te, files, err := r.Data(dataDir, seed)
	if err != nil {
		return nil, nil, err
	}
	m, err := engine.New(r.Arch)
	if err != nil {
		return nil, nil, err
	}
	train.Init(m, seed)
	cfg := r.Config
	cfg.Seed, cfg.Test, cfg.Logf = seed, te, logf
	met, err := train.Fit(m, tr, cfg)
	if err != nil {
		return nil, nil, err
	}
	last := met.Last()
	return m, &TrainMetrics{
		Model: r.Name, Seed: seed, Data: files, TrainSamples: tr.Len(),
		Config: configRecord{Epochs: cfg.Epochs, BatchSize: cfg.BatchSize, Optimizer: cfg.Optimizer, LR: cfg.LR,
			Momentum: cfg.Momentum, WeightDecay: cfg.WeightDecay, LRDecay: cfg.LRDecay},
		Epochs: met.Epochs, Steps: met.Steps,
		TestSamples: last.TestSamples, TestCorrect: last.TestCorrect, TestAccuracy: last.TestAccuracy, TestLoss: last.TestLoss,
	}, nil
}

func save(dir string, m *engine.Model, tm *TrainMetrics) error {
	meta := map[string]string{"weightops.generator": "weightops-fixtures", "weightops.seed": fmt.Sprint(tm.Seed), "weightops.model": tm.Model}
	if err := m.Save(dir, meta); err != nil {
		return err
	}
	b, err := json.MarshalIndent(tm, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(filepath.Join(dir, "train_metrics.json"), append(b, '\n'), 0o644)
}

// FashionClasses are Fashion-MNIST's class names.
var FashionClasses = []string{"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"}

const (
	fashionTrainImages = "fashion-mnist/train-images-idx3-ubyte.gz"
	fashionTrainLabels = "fashion-mnist/train-labels-idx1-ubyte.gz"
	fashionTestImages  = "fashion-mnist/t10k-images-idx3-ubyte.gz"
	fashionTestLabels  = "fashion-mnist/t10k-labels-idx1-ubyte.gz"
	digitsCSV          = "digits.csv"
)

func fashionData(dir string, _ uint64) (*dataset.Set, *dataset.Set, map[string]string, error) {
	tr, err := dataset.Load(filepath.Join(dir, fashionTrainImages), filepath.Join(dir, fashionTrainLabels))
	if err != nil {
		return nil, nil, nil, err
	}
	te, err := dataset.Load(filepath.Join(dir, fashionTestImages), filepath.Join(dir, fashionTestLabels))
	if err != nil {
		return nil, nil, nil, err
	}
	return tr, te, map[string]string{"train_images": fashionTrainImages, "train_labels": fashionTrainLabels,
		"test_images": fashionTestImages, "test_labels": fashionTestLabels}, nil
}

// DigitsSplit is the digits fixture's train/test split of digits.csv.
func DigitsSplit(path string, seed uint64) (tr, te *dataset.Set, err error) {
	s, err := dataset.LoadCSV(path, 0)
	if err != nil {
		return nil, nil, err
	}
	tr, te = dataset.StratifiedSplit(s, 0.2, seed)
	return tr, te, nil
}

func digitsData(dir string, seed uint64) (*dataset.Set, *dataset.Set, map[string]string, error) {
	tr, te, err := DigitsSplit(filepath.Join(dir, digitsCSV), seed)
	return tr, te, map[string]string{"csv": digitsCSV, "split": fmt.Sprintf("dataset.StratifiedSplit(test fraction 0.2, seed %d)", seed)}, err
}

func layer(t, name string, out int, kernel int) engine.LayerSpec {
	l := engine.LayerSpec{Type: t, Name: name, Out: out}
	if kernel > 0 {
		l.Kernel = engine.Pair{kernel, kernel}
	}
	return l
}

func p(v float64) *float64 { return &v }

// fashionInput is Fashion-MNIST's usual normalisation (training-set pixel
// mean and standard deviation).
var fashionInput = engine.Input{Shape: []int{1, 28, 28}, Mean: []float64{0.2860}, Std: []float64{0.3530}}

func recipes() map[string]*Recipe {
	return map[string]*Recipe{
		"mlp": {
			Name: "mlp",
			Arch: &engine.Arch{Input: fashionInput, Classes: FashionClasses, Layers: []engine.LayerSpec{
				{Type: "flatten"},
				layer("linear", "fc1", 128, 0),
				{Type: "relu"},
				layer("linear", "fc2", 10, 0),
			}},
			Config: train.Config{Epochs: 8, BatchSize: 64, Optimizer: "sgd", LR: 0.05, Momentum: 0.9, LRDecay: 0.8},
			Data:   fashionData,
		},
		"cnn": {
			Name: "cnn",
			Arch: &engine.Arch{Input: fashionInput, Classes: FashionClasses, Layers: []engine.LayerSpec{
				{Type: "conv2d", Name: "features.0", Out: 8, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}},
				{Type: "batchnorm2d", Name: "features.1"},
				{Type: "relu"},
				{Type: "maxpool2d", Kernel: engine.Pair{2, 2}},
				{Type: "conv2d", Name: "features.4", Out: 16, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}},
				{Type: "batchnorm2d", Name: "features.5"},
				{Type: "relu"},
				{Type: "maxpool2d", Kernel: engine.Pair{2, 2}},
				{Type: "flatten"},
				{Type: "dropout", P: p(0.25)},
				layer("linear", "classifier.1", 10, 0),
			}},
			Config: train.Config{Epochs: 5, BatchSize: 64, Optimizer: "adam", LR: 0.003, LRDecay: 0.7},
			Data:   fashionData,
		},
		"digits": {
			Name: "digits",
			Arch: &engine.Arch{Input: engine.Input{Shape: []int{1, 8, 8}, Scale: 0.0625, Mean: []float64{0.3}, Std: []float64{0.38}},
				Layers: []engine.LayerSpec{
					{Type: "flatten"},
					layer("linear", "net.0", 32, 0),
					{Type: "tanh"},
					layer("linear", "net.2", 10, 0),
					{Type: "log_softmax"},
				}},
			Config: train.Config{Epochs: 30, BatchSize: 32, Optimizer: "adam", LR: 0.003},
			Data:   digitsData,
		},
	}
}

func recipeNames() []string { return []string{"mlp", "cnn", "digits", "tiny-llama"} }
