package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/weights"
)

func init() {
	register(diffCommand(), addCommand(), scaleCommand(), negateCommand(), interpolateCommand())
}

var (
	outputFlag = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output .safetensors file or directory"}
	dtypeFlag  = &cli.StringFlag{Name: "dtype", Usage: "output dtype of floating tensors: f32, bf16, f16, f64"}
)

func arithFlags(extra ...cli.Flag) []cli.Flag {
	return append(extra, outputFlag, dtypeFlag, workersFlag, memoryFlag, shardSizeFlag, jsonFlag, quietFlag)
}

// openAll opens checkpoints, closing the ones already open on failure.
func openAll(paths ...string) ([]weights.Checkpoint, error) {
	var out []weights.Checkpoint
	for _, p := range paths {
		c, err := weights.Open(p)
		if err != nil {
			for _, o := range out {
				o.Close()
			}
			return nil, err
		}
		out = append(out, c)
	}
	return out, nil
}

func closeAll(cs []weights.Checkpoint) {
	for _, c := range cs {
		c.Close()
	}
}

func streamOpts(c *cli.Context, cks []weights.Checkpoint) (merge.StreamOptions, *progress.Bar, error) {
	workers, maxMem, shard, err := streamOptions(c)
	if err != nil {
		return merge.StreamOptions{}, nil, err
	}
	o := merge.StreamOptions{Workers: workers, MaxMemory: maxMem, ShardSize: shard,
		Metadata: map[string]string{"weightops.version": version}}
	if s := c.String("dtype"); s != "" {
		dt, err := weights.ParseDType(s)
		if err != nil || !dt.IsFloat() || !dt.Writable() {
			return o, nil, fmt.Errorf("--dtype %q: use f32, bf16, f16 or f64", s)
		}
		o.DType, o.HasDType = dt, true
	}
	var total int64
	for _, ck := range cks {
		total += weights.TotalBytes(ck.Tensors())
	}
	bar := progress.New(total, c.Command.Name, c.Bool("quiet"))
	o.Progress = bar.Func()
	return o, bar, nil
}

func diffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "task vector τ = FT − BASE (floating tensors; equal integer tensors are copied, differing ones reported)",
		ArgsUsage: "FT BASE",
		Flags: arithFlags(append([]cli.Flag{
			&cli.BoolFlag{Name: "allow-resize", Usage: "cut tensors of FT with extra rows (grown vocabularies) to BASE's rows"},
			&cli.StringFlag{Name: "sparsify", Value: "none", Usage: "with -o X.wpatch: none, breadcrumbs, magnitude (TIES trim), dare"},
			&cli.Float64Flag{Name: "density", Value: 1, Usage: "fraction kept"},
			&cli.Float64Flag{Name: "gamma", Value: 0.01, Usage: "breadcrumbs: top fraction dropped"},
			&cli.StringFlag{Name: "granularity", Value: "per_tensor", Usage: "breadcrumbs ranking: per_tensor or per_row"},
			&cli.StringFlag{Name: "rescale", Value: "none", Usage: "after dropping: none, density (1/(1-p)), l1, l2, linf"},
			&cli.Uint64Flag{Name: "seed", Usage: "DARE random seed"},
		}, encodingFlags...)...),
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("diff: expected FT and BASE, got %d arguments", c.NArg())
			}
			cks, err := openAll(c.Args().Get(0), c.Args().Get(1))
			if err != nil {
				return err
			}
			defer closeAll(cks)
			if strings.HasSuffix(c.String("output"), ".wpatch") {
				return diffToPatch(c, cks[0], cks[1])
			}
			o, bar, err := streamOpts(c, cks)
			if err != nil {
				return fmt.Errorf("diff: %w", err)
			}
			rep, err := merge.Diff(cks[0], cks[1], c.String("output"), c.Bool("allow-resize"), o)
			bar.Done()
			if err != nil {
				return err
			}
			for _, s := range rep.Skipped {
				fmt.Fprintf(os.Stderr, "weightops: warning: tensor %q is integer/bool and differs between FT and BASE; left out of the task vector\n", s)
			}
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(rep)
			}
			for _, f := range rep.Files {
				fmt.Println(f)
			}
			return nil
		},
	}
}

func parseFloats(s string) ([]float64, error) {
	if s == "" {
		return nil, nil
	}
	var out []float64
	for _, p := range strings.Split(s, ",") {
		v, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil {
			return nil, fmt.Errorf("%q is not a number", p)
		}
		out = append(out, v)
	}
	return out, nil
}

func addCommand() *cli.Command {
	return &cli.Command{
		Name:      "add",
		Usage:     "apply task vectors: θ + λ·Σ s_i·τ_i",
		ArgsUsage: "BASE TV [TV...]",
		Flags: arithFlags(
			&cli.Float64Flag{Name: "lambda", Value: 1, Usage: "overall scale λ"},
			&cli.StringFlag{Name: "scales", Usage: "per task vector scales s_i, comma separated (default all 1)"},
		),
		Action: func(c *cli.Context) error {
			if c.NArg() < 2 {
				return fmt.Errorf("add: expected BASE and at least one TV")
			}
			scales, err := parseFloats(c.String("scales"))
			if err != nil {
				return fmt.Errorf("add: --scales: %w", err)
			}
			cks, err := openAll(c.Args().Slice()...)
			if err != nil {
				return err
			}
			defer closeAll(cks)
			o, bar, err := streamOpts(c, cks)
			if err != nil {
				return fmt.Errorf("add: %w", err)
			}
			files, err := merge.Add(cks[0], cks[1:], c.Float64("lambda"), scales, c.String("output"), o)
			bar.Done()
			if err != nil {
				return err
			}
			return printFiles(c, files)
		},
	}
}

func scaleAction(name string, factor func(*cli.Context) float64) cli.ActionFunc {
	return func(c *cli.Context) error {
		if c.NArg() != 1 {
			return fmt.Errorf("%s: expected one TV, got %d arguments", name, c.NArg())
		}
		cks, err := openAll(c.Args().First())
		if err != nil {
			return err
		}
		defer closeAll(cks)
		o, bar, err := streamOpts(c, cks)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		files, err := merge.Scale(cks[0], factor(c), c.String("output"), o)
		bar.Done()
		if err != nil {
			return err
		}
		return printFiles(c, files)
	}
}

func scaleCommand() *cli.Command {
	return &cli.Command{
		Name: "scale", Usage: "scale a task vector: s·τ", ArgsUsage: "TV",
		Flags:  arithFlags(&cli.Float64Flag{Name: "by", Required: true, Usage: "the factor s"}),
		Action: scaleAction("scale", func(c *cli.Context) float64 { return c.Float64("by") }),
	}
}

func negateCommand() *cli.Command {
	return &cli.Command{
		Name: "negate", Usage: "negate a task vector: −τ (subtracting it forgets its task)", ArgsUsage: "TV",
		Flags:  arithFlags(),
		Action: scaleAction("negate", func(*cli.Context) float64 { return -1 }),
	}
}

func interpolateCommand() *cli.Command {
	return &cli.Command{
		Name:      "interpolate",
		Usage:     "θ(α) = (1−α)·A + α·B; a sweep (--alpha 0:1:0.1) writes one output per α, reading A and B once",
		ArgsUsage: "A B",
		Flags:     arithFlags(&cli.StringFlag{Name: "alpha", Value: "0.5", Usage: "α, a list (0.2,0.5) or a sweep start:stop:step"}),
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("interpolate: expected A and B, got %d arguments", c.NArg())
			}
			alphas, err := merge.ParseAlphas(c.String("alpha"))
			if err != nil {
				return fmt.Errorf("interpolate: --alpha: %w", err)
			}
			out := c.String("output")
			outs := []string{out}
			if len(alphas) > 1 {
				// A sweep: OUT is a directory of alpha-X.safetensors files.
				if err := os.MkdirAll(out, 0o755); err != nil {
					return err
				}
				outs = outs[:0]
				for _, a := range alphas {
					outs = append(outs, filepath.Join(out, fmt.Sprintf("alpha-%.4g.safetensors", a)))
				}
			}
			cks, err := openAll(c.Args().Get(0), c.Args().Get(1))
			if err != nil {
				return err
			}
			defer closeAll(cks)
			o, bar, err := streamOpts(c, cks)
			if err != nil {
				return fmt.Errorf("interpolate: %w", err)
			}
			files, err := merge.Interpolate(cks[0], cks[1], alphas, outs, o)
			bar.Done()
			if err != nil {
				return err
			}
			var all []string
			for _, f := range files {
				all = append(all, f...)
			}
			return printFiles(c, all)
		},
	}
}

// diffToPatch writes a (sparsified) task vector as a patch file.
func diffToPatch(c *cli.Context, ft, base weights.Checkpoint) error {
	methods := map[string]signature.Method{"none": signature.None, "breadcrumbs": signature.MagnitudeOutliers, "magnitude": signature.Magnitude, "ties": signature.Magnitude, "dare": signature.Random}
	m, ok := methods[c.String("sparsify")]
	if !ok {
		return fmt.Errorf("diff: --sparsify %q: use none, breadcrumbs, magnitude or dare", c.String("sparsify"))
	}
	rs, err := signature.ParseRescale(c.String("rescale"))
	if err != nil {
		return fmt.Errorf("diff: --rescale: %w", err)
	}
	g := c.String("granularity")
	if g != "per_tensor" && g != "per_row" {
		return fmt.Errorf("diff: --granularity %q: use per_tensor or per_row", g)
	}
	sp := signature.Sparsify{Method: m, Density: c.Float64("density"), Gamma: c.Float64("gamma"), PerRow: g == "per_row", Rescale: rs, Seed: c.Uint64("seed")}
	if m == signature.None {
		sp.Density = 1
	}
	enc, err := encodingOf(c)
	if err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	kind := map[signature.Method]string{signature.None: "task-vector", signature.MagnitudeOutliers: "breadcrumbs", signature.Magnitude: "ties-trim", signature.Random: "dare"}[m]
	md := map[string]string{"weightops.version": version, "finetune": ft.Path(), "base": base.Path(),
		"sparsify": fmt.Sprintf("%s density=%g gamma=%g granularity=%s rescale=%s seed=%d", c.String("sparsify"), sp.Density, sp.Gamma, g, c.String("rescale"), sp.Seed)}
	digest, err := signature.CheckpointDigest(base)
	if err != nil {
		return err
	}
	w, err := signature.CreatePatch(c.String("output"), kind, md, enc)
	if err != nil {
		return err
	}
	w.SetBase(digest)
	if err := signature.DiffToPatch(ft, base, sp, w, c.Int("workers")); err != nil {
		w.Abort()
		return err
	}
	errs := w.Errors()
	if err := w.Commit(); err != nil {
		return err
	}
	s, err := summarize(c.String("output"), base, errs)
	if err != nil {
		return err
	}
	return printSummary(c, s)
}
