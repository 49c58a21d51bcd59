package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/rift"
	"github.com/weightops/weightops/sensitivity"
	"github.com/weightops/weightops/train"
	"github.com/weightops/weightops/weights"
)

func init() { register(riftCommand()) }

func riftCommand() *cli.Command {
	return &cli.Command{
		Name:  "rift",
		Usage: "Robust Critical Fine-Tuning: fine-tune only the least critical module (worst-case criticality) and pick the interpolation α on held-out data",
		ArgsUsage: "MODEL -o DIR  (a classifier with an arch file; training data from --data/--labels)\n\n" +
			"   e.g. weightops rift testdata/demo/clean/model.safetensors -o rift-out \\\n" +
			"          --data testdata/engine/data/fashion-mnist/train-images-idx3-ubyte.gz \\\n" +
			"          --labels testdata/engine/data/fashion-mnist/train-labels-idx1-ubyte.gz --corrupt gaussian_noise:0.3",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "directory for model.safetensors, arch.yaml and rift.json"},
			&cli.StringFlag{Name: "arch", Usage: "architecture file (default: beside MODEL)"},
			&cli.StringFlag{Name: "data", Required: true, Usage: "training samples (IDX or .npy)"},
			&cli.StringFlag{Name: "labels", Required: true, Usage: "training labels (IDX or .npy)"},
			&cli.StringFlag{Name: "val-data", Usage: "held-out samples to choose the epoch and α on (default: --val-fraction of the training data, split off)"},
			&cli.StringFlag{Name: "val-labels", Usage: "held-out labels"},
			&cli.Float64Flag{Name: "val-fraction", Value: 0.2, Usage: "without --val-data: the stratified share of the training data held out"},
			&cli.StringSliceFlag{Name: "corrupt", Usage: "a held-out robustness condition (repeatable, e.g. --corrupt gaussian_noise:0.3 --corrupt blur:1): α keeps their mean accuracy at least the original's"},
			&cli.StringFlag{Name: "mrc-corrupt", Usage: "corruption of the training data for the criticality search (default: the first --corrupt)"},
			&cli.StringFlag{Name: "module", Usage: "fine-tune this module instead of the least critical one (e.g. features.4)"},
			&cli.Float64Flag{Name: "epsilon", Value: 0.1, Usage: "criticality ball: ‖ΔW‖ ≤ ε‖W‖"},
			&cli.IntFlag{Name: "ascent-epochs", Value: 10, Usage: "criticality: epochs of projected gradient ascent"},
			&cli.Float64Flag{Name: "ascent-lr", Value: 1, Usage: "criticality: ascent step size"},
			&cli.IntFlag{Name: "ascent-batch", Value: 512, Usage: "criticality: samples per ascent step"},
			&cli.IntFlag{Name: "epochs", Value: 10, Usage: "fine-tuning epochs (the best held-out epoch is kept)"},
			&cli.Float64Flag{Name: "lr", Value: 0.01, Usage: "fine-tuning learning rate"},
			&cli.Float64Flag{Name: "momentum", Value: 0.9, Usage: "SGD momentum"},
			&cli.Float64Flag{Name: "weight-decay", Value: 5e-4, Usage: "L2 weight decay"},
			&cli.IntFlag{Name: "batch", Value: 128, Usage: "fine-tuning batch size"},
			&cli.StringFlag{Name: "alphas", Value: "0,0.1,0.2,0.3,0.4,0.5,0.6,0.7,0.8,0.9,1", Usage: "interpolation points α (weights α·fine-tuned + (1−α)·original)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the split, shuffling, ascent order and corruptions"},
			jsonFlag, quietFlag,
		},
		Action: riftAction,
	}
}

// riftReport is rift's JSON output and rift.json.
type riftReport struct {
	Model  string   `json:"model"`
	Output string   `json:"output"`
	Files  []string `json:"files"`
	*rift.Result
}

func riftAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one MODEL")
	}
	model := c.Args().First()
	archPath := c.String("arch")
	var err error
	if archPath == "" {
		if archPath, err = engine.FindArch(model); err != nil {
			return err
		}
	}
	m, err := engine.Load(model, archPath)
	if err != nil {
		return err
	}
	data, err := dataset.Load(c.String("data"), c.String("labels"))
	if err != nil {
		return err
	}
	var val *dataset.Set
	switch vd, vl := c.String("val-data"), c.String("val-labels"); {
	case vd != "" && vl != "":
		if c.IsSet("val-fraction") {
			return fmt.Errorf("rift: --val-fraction splits the training data; with --val-data it does nothing")
		}
		if val, err = dataset.Load(vd, vl); err != nil {
			return err
		}
	case vd != "" || vl != "":
		return fmt.Errorf("rift: --val-data and --val-labels go together")
	default:
		f := c.Float64("val-fraction")
		if !(f > 0 && f < 1) {
			return fmt.Errorf("rift: --val-fraction %v: want a share in (0, 1)", f)
		}
		data, val = dataset.StratifiedSplit(data, f, c.Uint64("seed"))
	}
	var conds []rift.Condition
	for _, spec := range c.StringSlice("corrupt") {
		p, err := dataset.ParseCorruptions(spec)
		if err != nil {
			return fmt.Errorf("rift: --corrupt %s: %w", spec, err)
		}
		conds = append(conds, rift.Condition{Name: spec, Corrupt: p})
	}
	var mrc dataset.Pipeline
	if s := c.String("mrc-corrupt"); s != "" {
		if mrc, err = dataset.ParseCorruptions(s); err != nil {
			return fmt.Errorf("rift: --mrc-corrupt: %w", err)
		}
	} else if len(conds) > 0 {
		mrc = conds[0].Corrupt
	}
	if c.IsSet("module") {
		for _, f := range []string{"epsilon", "ascent-epochs", "ascent-lr", "ascent-batch", "mrc-corrupt"} {
			if c.IsSet(f) {
				return fmt.Errorf("rift: --%s configures the criticality search, which --module skips", f)
			}
		}
	}
	alphas, err := parseFloats(c.String("alphas"))
	if err != nil || len(alphas) == 0 {
		return fmt.Errorf("rift: --alphas: %v", err)
	}
	seed := c.Uint64("seed")
	o := rift.Options{
		Module: c.String("module"),
		WorstCase: sensitivity.WorstCaseOptions{
			CriticalityOptions: train.CriticalityOptions{Epsilon: c.Float64("epsilon"), Epochs: c.Int("ascent-epochs"),
				LR: c.Float64("ascent-lr"), BatchSize: c.Int("ascent-batch"), Seed: seed},
			Corrupt: mrc,
		},
		Train: train.Config{Epochs: c.Int("epochs"), LR: c.Float64("lr"), Momentum: c.Float64("momentum"),
			WeightDecay: c.Float64("weight-decay"), BatchSize: c.Int("batch"), Seed: seed},
		Val: val, Corruptions: conds, Alphas: alphas, EvalSeed: seed,
	}
	if !c.Bool("quiet") {
		o.Logf = func(format string, a ...any) { fmt.Fprintf(os.Stderr, "rift: "+format+"\n", a...) }
	}
	out, res, err := rift.Run(c.Context, m, data, o)
	if err != nil {
		return err
	}
	dir := c.String("output")
	meta, _ := json.Marshal(map[string]any{"module": res.Module, "alpha": res.Alpha, "best_epoch": res.BestEpoch, "source": filepath.Base(model)})
	if err := out.Save(dir, map[string]string{"weightops.rift": string(meta)}); err != nil {
		return err
	}
	rep := riftReport{Model: model, Output: dir, Result: res,
		Files: []string{filepath.Join(dir, "model.safetensors"), filepath.Join(dir, "arch.yaml"), filepath.Join(dir, "rift.json")}}
	b, err := json.MarshalIndent(rep, "", "  ")
	if err != nil {
		return err
	}
	if err := weights.WriteFileAtomic(rep.Files[2], append(b, '\n')); err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(rep)
	}
	if res.Criticality != nil {
		fmt.Printf("least critical module (ε = %g): %s\n", res.Criticality.Epsilon, res.Module)
	}
	fmt.Printf("fine-tuned %s (%d tensors), best held-out epoch %d of %d\n", res.Module, len(res.Tensors), res.BestEpoch, len(res.Epochs))
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "α\tHELD-OUT CLEAN %\tHELD-OUT CORRUPTED % (mean)\t")
	for _, p := range res.Sweep {
		mark := ""
		if p.Alpha == res.Alpha {
			mark = "← chosen"
		}
		fmt.Fprintf(tw, "%g\t%.2f\t%.2f\t%s\n", p.Alpha, 100*p.Clean, 100*p.MeanCorrupted, mark)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("wrote %s\n", dir)
	return nil
}
