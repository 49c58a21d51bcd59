package main

import (
	"fmt"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/sensitivity"
	"github.com/weightops/weightops/train"
	"github.com/weightops/weightops/weights"
)

func init() { register(sensitivityCommand()) }

// sensitivityOutput is sensitivity's JSON: the noise report, and the
// worst case (null without --worst-case).
type sensitivityOutput struct {
	*sensitivity.Report
	WorstCase *sensitivity.WorstCaseReport `json:"worst_case"`
}

func sensitivityCommand() *cli.Command {
	return &cli.Command{
		Name:      "sensitivity",
		Usage:     "accuracy drop when each weight module alone gets Gaussian noise of norm γ·‖W‖: which modules a patch may touch safely",
		ArgsUsage: "MODEL  (with an arch file; data as for eval)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "arch", Usage: "architecture file (default: beside MODEL)"},
			&cli.StringFlag{Name: "data", Usage: "samples (IDX or .npy)"},
			&cli.StringFlag{Name: "npy", Usage: "samples as .npy"},
			&cli.StringFlag{Name: "labels", Usage: "labels (IDX or .npy)"},
			&cli.StringFlag{Name: "csv", Usage: "CSV with a label column"},
			&cli.IntFlag{Name: "label-col", Usage: "the CSV's label column"},
			&cli.StringFlag{Name: "corrupt", Usage: "evaluate on corrupted inputs (as eval)"},
			&cli.StringFlag{Name: "rel", Value: "0.01,0.05,0.1", Usage: "relative noise norms γ"},
			&cli.IntFlag{Name: "trials", Value: 5, Usage: "noise draws per module and γ"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "noise seed"},
			&cli.IntFlag{Name: "batch", Value: 256, Usage: "samples per forward pass"},
			&cli.StringFlag{Name: "chart", Usage: "write an SVG bar chart here"},
			&cli.BoolFlag{Name: "worst-case", Usage: "also RiFT's module robust criticality: each module's largest loss increase under ‖ΔW‖ ≤ ε‖W‖, by projected gradient ascent"},
			&cli.Float64Flag{Name: "epsilon", Value: 0.1, Usage: "with --worst-case: the ball's radius ε relative to ‖W‖ (also added to --rel)"},
			&cli.IntFlag{Name: "ascent-epochs", Value: 10, Usage: "with --worst-case: epochs of gradient ascent, each projected onto the ball and evaluated"},
			&cli.Float64Flag{Name: "ascent-lr", Value: 1, Usage: "with --worst-case: the ascent's step size (SGD)"},
			&cli.IntFlag{Name: "ascent-batch", Value: 512, Usage: "with --worst-case: samples per ascent step"},
			jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "expected one MODEL")
			}
			rels, err := parseFloats(c.String("rel"))
			if err != nil || len(rels) == 0 {
				return fmt.Errorf("sensitivity: --rel: %v", err)
			}
			worst := c.Bool("worst-case")
			if !worst {
				for _, f := range []string{"epsilon", "ascent-epochs", "ascent-lr", "ascent-batch"} {
					if c.IsSet(f) {
						return fmt.Errorf("sensitivity: --%s needs --worst-case", f)
					}
				}
			}
			eps := c.Float64("epsilon")
			if worst && !slices.Contains(rels, eps) {
				rels = append(rels, eps) // the random-noise figure beside the worst case
			}
			archPath := c.String("arch")
			if archPath == "" {
				if archPath, err = engine.FindArch(c.Args().First()); err != nil {
					return err
				}
			}
			m, err := engine.Load(c.Args().First(), archPath)
			if err != nil {
				return err
			}
			s, _, err := loadEvalData(c)
			if err != nil {
				return err
			}
			corrupt, err := dataset.ParseCorruptions(c.String("corrupt"))
			if err != nil {
				return fmt.Errorf("sensitivity: --corrupt: %w", err)
			}
			total := int64(len(sensitivity.Weights(m)) * len(rels) * max(1, c.Int("trials")))
			bar := progress.NewCount(total, "sensitivity", c.Bool("quiet"))
			rep, err := sensitivity.Analyze(m, s, sensitivity.Options{
				Rel: rels, Trials: c.Int("trials"), Seed: c.Uint64("seed"),
				Eval:     engine.EvalOptions{BatchSize: c.Int("batch"), Corrupt: corrupt, Seed: c.Uint64("seed")},
				Progress: func() { bar.Add(1) },
			})
			bar.Done()
			if err != nil {
				return err
			}
			out := sensitivityOutput{Report: rep}
			if worst {
				wbar := progress.NewCount(int64(len(sensitivity.Weights(m))), "worst case", c.Bool("quiet"))
				out.WorstCase, err = sensitivity.WorstCase(c.Context, m, s, sensitivity.WorstCaseOptions{
					CriticalityOptions: train.CriticalityOptions{Epsilon: eps, Epochs: c.Int("ascent-epochs"), LR: c.Float64("ascent-lr"),
						BatchSize: c.Int("ascent-batch"), Seed: c.Uint64("seed")},
					Corrupt:  corrupt,
					Progress: func() { wbar.Add(1) },
				})
				wbar.Done()
				if err != nil {
					return fmt.Errorf("sensitivity --worst-case: %w", err)
				}
			}
			if p := c.String("chart"); p != "" {
				svg, err := rep.Chart(rels)
				if err != nil {
					return err
				}
				if err := weights.WriteFileAtomic(p, svg); err != nil {
					return err
				}
			}
			if c.Bool("json") {
				return printJSON(out)
			}
			fmt.Printf("base accuracy %.2f%%, %d evaluations\n", 100*rep.BaseAccuracy, rep.Evaluations)
			tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintln(tw, "MODULE\tPARAMS\tγ\tDROP (points, mean ± std)")
			for _, r := range rep.Results {
				fmt.Fprintf(tw, "%s\t%d\t%g\t%.2f ± %.2f\n", r.Module, r.Params, r.Rel, 100*r.MeanDrop, 100*r.StdDrop)
			}
			if err := tw.Flush(); err != nil {
				return err
			}
			if w := out.WorstCase; w != nil {
				noise := map[string]float64{}
				for _, r := range rep.Results {
					if r.Rel == eps {
						noise[r.Module] = r.MeanDrop
					}
				}
				fmt.Printf("\nworst case within ‖ΔW‖ ≤ %g·‖W‖ (RiFT's module robust criticality), most critical first; base loss %.4f, accuracy %.2f%%\n", w.Epsilon, w.BaseLoss, 100*w.BaseAccuracy)
				tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "MODULE\tPARAMS\tLOSS INCREASE\tACCURACY DROP (points)\tRANDOM NOISE DROP AT γ=ε (points)")
				for _, r := range w.Modules {
					fmt.Fprintf(tw, "%s\t%d\t%.4f\t%.2f\t%.2f\n", r.Module, r.Params, r.LossIncrease, 100*r.AccuracyDrop, 100*noise[r.Module])
				}
				if err := tw.Flush(); err != nil {
					return err
				}
				fmt.Printf("least critical (RiFT fine-tunes it): %s\n", w.LeastCritical)
			}
			return nil
		},
	}
}
