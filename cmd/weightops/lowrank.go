package main

import (
	"fmt"
	"os"
	"regexp"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/lowrank"
	"github.com/weightops/weightops/weights"
)

func init() { register(lowrankCommand(), loraCommand()) }

// factorFlags are the flags shared by `lowrank` and `lora extract`.
func factorFlags() []cli.Flag {
	return []cli.Flag{
		&cli.IntFlag{Name: "rank", Aliases: []string{"r"}, Usage: "fixed rank r (capped at min(m, n))"},
		&cli.Float64Flag{Name: "energy", Usage: "smallest rank keeping this fraction of Σσ² (e.g. 0.95)"},
		&cli.Float64Flag{Name: "ratio", Usage: "PELA compression ratio c: r = ⌊mn / (c(m+n))⌋"},
		&cli.BoolFlag{Name: "randomized", Usage: "randomized SVD (Halko–Martinsson–Tropp) for every tensor (default: for matrices of 1024 and more on the smaller side)"},
		&cli.BoolFlag{Name: "exact", Usage: "exact SVD for every tensor (minutes for LLM-sized matrices)"},
		&cli.IntFlag{Name: "oversample", Value: lowrank.DefaultRandOptions.Oversample, Usage: "randomized: extra sketch columns p"},
		&cli.IntFlag{Name: "power-iters", Value: lowrank.DefaultRandOptions.PowerIters, Usage: "randomized: power iterations q"},
		&cli.Uint64Flag{Name: "seed", Value: lowrank.DefaultRandOptions.Seed, Usage: "randomized: seed of the Gaussian test matrices"},
		&cli.StringFlag{Name: "split", Value: "sqrt", Usage: "LoRA: σ shared as B = U·√Σ, A = √Σ·Vᵀ (sqrt) or B = U·Σ, A = Vᵀ (b)"},
		&cli.BoolFlag{Name: "fan-in-fan-out", Usage: "LoRA: linear weights are stored [in, out] (GPT-2 Conv1D)"},
		&cli.StringFlag{Name: "skip", Usage: "regex of tensor names not to factorise (e.g. 'embed|lm_head')"},
		&cli.StringFlag{Name: "base-name", Usage: "LoRA: base_model_name_or_path to record (default: the --base path)"},
		dtypeFlag, workersFlag, memoryFlag, nonFiniteFlag, jsonFlag, quietFlag,
	}
}

func lowrankCommand() *cli.Command {
	return &cli.Command{
		Name:      "lowrank",
		Usage:     "truncated SVD of every 2-D tensor of a task vector (or FT − BASE, or the weights themselves): a compressed checkpoint or a PEFT LoRA adapter",
		ArgsUsage: "DELTA|FT",
		Flags: append(factorFlags(),
			&cli.StringFlag{Name: "base", Usage: "BASE checkpoint: factorise FT − BASE and write BASE + Δ_r (or a LoRA adapter for BASE)"},
			&cli.StringFlag{Name: "format", Value: "weights", Usage: "weights (rank-r reconstruction) or lora (PEFT adapter directory)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output .safetensors file or directory (an adapter directory with --format lora)"},
			shardSizeFlag,
		),
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "expected one DELTA or FT, got %d arguments", c.NArg())
			}
			f, err := lowrank.ParseFormat(c.String("format"))
			if err != nil {
				return fmt.Errorf("lowrank: --%w", err)
			}
			return runLowrank(c, "lowrank", c.Args().First(), c.String("base"), f)
		},
	}
}

func loraCommand() *cli.Command {
	return &cli.Command{
		Name:  "lora",
		Usage: "PEFT LoRA adapters: merge one into a base checkpoint, or extract one from a fine-tune",
		Subcommands: []*cli.Command{
			{
				Name:      "merge",
				Usage:     "W + scale·(alpha/r)·B·A for every adapted module (alpha/√r with use_rslora), rounded once to the base dtype",
				ArgsUsage: "BASE ADAPTER_DIR",
				Flags: []cli.Flag{
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output .safetensors file or directory"},
					&cli.Float64Flag{Name: "scale", Value: 1, Usage: "extra factor on every module's alpha/r"},
					shardSizeFlag, workersFlag, memoryFlag, nonFiniteFlag, jsonFlag, quietFlag,
				},
				Action: loraMergeAction,
			},
			{
				Name:      "extract",
				Usage:     "a PEFT LoRA adapter from FT − BASE by truncated SVD (same as lowrank --format lora)",
				ArgsUsage: "FT",
				Flags: append(factorFlags(),
					&cli.StringFlag{Name: "base", Required: true, Usage: "BASE checkpoint the adapter applies to"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "adapter directory (adapter_model.safetensors + adapter_config.json)"},
				),
				Action: func(c *cli.Context) error {
					if c.NArg() != 1 {
						return usagef(c, "expected one FT, got %d arguments", c.NArg())
					}
					return runLowrank(c, "lora extract", c.Args().First(), c.String("base"), lowrank.FormatLoRA)
				},
			},
		},
	}
}

func runLowrank(c *cli.Context, name, inPath, basePath string, format lowrank.Format) error {
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	o := lowrank.Options{
		Options:     so,
		Rule:        lowrank.Rule{Rank: c.Int("rank"), Energy: c.Float64("energy"), Ratio: c.Float64("ratio")},
		Format:      format,
		FanInFanOut: c.Bool("fan-in-fan-out"),
		BaseName:    c.String("base-name"),
		Metadata:    map[string]string{"weightops.version": version},
		Method: lowrank.Method{Randomized: c.Bool("randomized"), Auto: !c.Bool("randomized") && !c.Bool("exact"), Rand: lowrank.RandOptions{
			Oversample: c.Int("oversample"), PowerIters: c.Int("power-iters"), Seed: c.Uint64("seed")}},
	}
	if err := o.Rule.Validate(); err != nil {
		return fmt.Errorf("%s: %w (--rank, --energy or --ratio)", name, err)
	}
	if c.Bool("randomized") && c.Bool("exact") {
		return usagef(c, "--randomized and --exact exclude each other")
	}
	if o.Method.Rand.Oversample < 0 || o.Method.Rand.PowerIters < 0 {
		return fmt.Errorf("%s: --oversample and --power-iters must be ≥ 0", name)
	}
	if o.Split, err = lowrank.ParseSplit(c.String("split")); err != nil {
		return fmt.Errorf("%s: --%w", name, err)
	}
	if s := c.String("skip"); s != "" {
		if o.Skip, err = regexp.Compile(s); err != nil {
			return fmt.Errorf("%s: --skip: %w", name, err)
		}
	}
	if o.BaseName == "" {
		o.BaseName = basePath
	}
	paths := []string{inPath}
	if basePath != "" {
		paths = append(paths, basePath)
	}
	cks, err := weights.OpenAll(paths...)
	if err != nil {
		return err
	}
	defer weights.CloseAll(cks)
	var base weights.Checkpoint
	if len(cks) > 1 {
		base = cks[1]
	}
	rep, err := lowrank.Compress(c.Context, cks[0], base, c.String("output"), o)
	bar.Done()
	if err != nil {
		return err
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(os.Stderr, "weightops: warning: %s\n", w)
	}
	if c.Bool("json") {
		return printJSON(rep)
	}
	return writeLowrankTable(rep, c.Bool("quiet"))
}

// writeLowrankTable prints the per-tensor table (not when quiet), the
// summary line and the files written.
func writeLowrankTable(rep *lowrank.Report, quiet bool) error {
	if !quiet {
		if err := writeFactorTable(rep); err != nil {
			return err
		}
		fmt.Println()
	}
	ratio := 0.0
	if rep.ParamsAfter > 0 {
		ratio = float64(rep.ParamsBefore) / float64(rep.ParamsAfter)
	}
	fmt.Printf("%d tensors factorised (%s, %s): %d parameters → %d in factors (%.2f×), overall relative error %.3e\n",
		len(rep.Modules), rep.Rule, rep.Format, rep.ParamsBefore, rep.ParamsAfter, ratio, rep.RelError)
	for _, f := range rep.Files {
		fmt.Println(f)
	}
	return nil
}

func writeFactorTable(rep *lowrank.Report) error {
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "TENSOR\tSHAPE\tRANK\tREL ERROR\tENERGY\tPARAMS\tFACTORS\tMETHOD\tSECONDS")
	for _, m := range rep.Modules {
		rank := fmt.Sprint(m.Rank)
		if m.Rank == 0 {
			rank = "0 (zero)"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%.3e\t%.6f\t%d\t%d\t%s\t%.2f\n", m.Tensor, weights.TensorInfo{Shape: m.Shape}.ShapeString(), rank, m.RelError, m.Energy, m.ParamsBefore, m.ParamsAfter, m.Method, m.Seconds)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(rep.Others) > 0 {
		fmt.Println("\nnot factorised:")
		tw = tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		for _, o := range rep.Others {
			fmt.Fprintf(tw, "  %s\t%s\t%s\n", o.Tensor, o.Reason, o.Action)
		}
		return tw.Flush()
	}
	return nil
}

func loraMergeAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef(c, "expected BASE and ADAPTER_DIR, got %d arguments", c.NArg())
	}
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("lora merge: %w", err)
	}
	o := lowrank.MergeOptions{Options: so, Scale: c.Float64("scale"), Metadata: versionMetadata()}
	basePath := c.Args().Get(0)
	ad, err := lowrank.OpenAdapter(c.Args().Get(1))
	if err != nil {
		return err
	}
	defer ad.Close()
	base, err := weights.Open(basePath)
	if err != nil {
		return err
	}
	defer base.Close()
	rep, err := ad.Merge(c.Context, base, c.String("output"), o)
	bar.Done()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(rep)
	}
	if !c.Bool("quiet") {
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "MODULE\tSHAPE\tRANK\tALPHA\tSCALING\tLAYOUT")
		for _, m := range rep.Modules {
			fmt.Fprintf(tw, "%s\t%s\t%d\t%g\t%g\t%s\n", m.Module, weights.TensorInfo{Shape: m.Shape}.ShapeString(), m.Rank, m.Alpha, m.Scaling, m.Layout)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
		for _, r := range rep.Replaced {
			fmt.Printf("replaced whole from the adapter: %s\n", r)
		}
		fmt.Println()
	}
	fmt.Printf("%d modules merged, %d tensors replaced, %d copied unchanged\n", len(rep.Modules), len(rep.Replaced), rep.Copied)
	for _, f := range rep.Files {
		fmt.Println(f)
	}
	return nil
}
