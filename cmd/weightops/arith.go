package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/taskvec"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

func init() {
	register(diffCommand(), addCommand(), scaleCommand(), negateCommand(), interpolateCommand())
}

func arithFlags(extra ...cli.Flag) []cli.Flag {
	return append(extra, outputFlag, dtypeFlag, workersFlag, memoryFlag, shardSizeFlag, nonFiniteFlag, jsonFlag, quietFlag)
}

// versionMetadata is what every written output records of weightops.
func versionMetadata() map[string]string { return map[string]string{"weightops.version": version} }

func diffCommand() *cli.Command {
	return &cli.Command{
		Name:      "diff",
		Usage:     "task vector τ = FT − BASE (floating tensors; equal integer tensors are copied, differing ones reported), as a checkpoint or, with -o X.wpatch, a patch",
		ArgsUsage: "FT BASE",
		Flags: arithFlags(append([]cli.Flag{
			&cli.BoolFlag{Name: "allow-resize", Usage: "cut tensors of FT with extra rows (grown vocabularies) to BASE's rows"},
			&cli.StringFlag{Name: "sparsify", Value: "none", Usage: "none, breadcrumbs, magnitude (TIES trim), dare"},
			&cli.Float64Flag{Name: "density", Value: 1, Usage: "fraction kept"},
			&cli.Float64Flag{Name: "gamma", Value: 0.01, Usage: "breadcrumbs: top fraction dropped"},
			&cli.StringFlag{Name: "granularity", Value: "per_tensor", Usage: "breadcrumbs ranking: per_tensor or per_row"},
			&cli.StringFlag{Name: "rescale", Value: "none", Usage: "after dropping: none, density (1/(1-p)), l1, l2, linf"},
			&cli.Uint64Flag{Name: "seed", Usage: "DARE random seed"},
		}, encodingFlags...)...),
		Action: diffAction,
	}
}

// sparsifyMethods maps --sparsify to a method.
var sparsifyMethods = map[string]sparsify.Method{"none": sparsify.None, "breadcrumbs": sparsify.MagnitudeOutliers, "magnitude": sparsify.Magnitude, "ties": sparsify.Magnitude, "dare": sparsify.Random}

func diffAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef(c, "expected FT and BASE, got %d arguments", c.NArg())
	}
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("diff: %w", err)
	}
	o := taskvec.DiffOptions{Options: so, AllowResize: c.Bool("allow-resize"), Metadata: versionMetadata()}
	m, ok := sparsifyMethods[c.String("sparsify")]
	if !ok {
		return fmt.Errorf("diff: --sparsify %q: use none, breadcrumbs, magnitude or dare", c.String("sparsify"))
	}
	rs, err := sparsify.ParseRescale(c.String("rescale"))
	if err != nil {
		return fmt.Errorf("diff: --rescale: %w", err)
	}
	g := c.String("granularity")
	if g != "per_tensor" && g != "per_row" {
		return fmt.Errorf("diff: --granularity %q: use per_tensor or per_row", g)
	}
	o.Sparsify = sparsify.Spec{Method: m, Density: c.Float64("density"), Gamma: c.Float64("gamma"), PerRow: g == "per_row", Rescale: rs, Seed: c.Uint64("seed")}
	if m == sparsify.None {
		for _, f := range []string{"density", "gamma", "granularity", "rescale", "seed"} {
			if c.IsSet(f) {
				return fmt.Errorf("diff: --%s applies to a sparsification: give --sparsify breadcrumbs, magnitude or dare", f)
			}
		}
		o.Sparsify.Density = 1
	}
	out := c.String("output")
	if strings.HasSuffix(out, ".wpatch") {
		enc, err := encodingOf(c)
		if err != nil {
			return fmt.Errorf("diff: %w", err)
		}
		o.Patch = &enc
		o.Metadata["sparsify"] = fmt.Sprintf("%s density=%g gamma=%g granularity=%s rescale=%s seed=%d", c.String("sparsify"), o.Sparsify.Density, o.Sparsify.Gamma, g, c.String("rescale"), o.Sparsify.Seed)
	} else if c.IsSet("values") || c.IsSet("quantize") || c.IsSet("sparse") {
		return fmt.Errorf("diff: --values, --quantize and --sparse choose how a patch stores values: give -o X.wpatch")
	}
	cks, err := weights.OpenAll(c.Args().Get(0), c.Args().Get(1))
	if err != nil {
		return err
	}
	defer weights.CloseAll(cks)
	rep, err := taskvec.Diff(c.Context, cks[0], cks[1], out, o)
	bar.Done()
	if err != nil {
		return err
	}
	for _, s := range rep.Skipped {
		fmt.Fprintf(os.Stderr, "weightops: warning: tensor %q is integer/bool and differs between FT and BASE; left out of the task vector\n", s)
	}
	if c.Bool("json") {
		return printJSON(rep)
	}
	if rep.Patch != nil {
		return rep.Patch.WriteText(os.Stdout, false)
	}
	for _, f := range rep.Files {
		fmt.Println(f)
	}
	return nil
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
				return usagef(c, "expected BASE and at least one TV")
			}
			scales, err := parseFloats(c.String("scales"))
			if err != nil {
				return fmt.Errorf("add: --scales: %w", err)
			}
			so, bar, err := streamOptions(c)
			if err != nil {
				return fmt.Errorf("add: %w", err)
			}
			cks, err := weights.OpenAll(c.Args().Slice()...)
			if err != nil {
				return err
			}
			defer weights.CloseAll(cks)
			files, err := taskvec.Add(c.Context, cks[0], cks[1:], c.String("output"), taskvec.AddOptions{Options: so, Lambda: c.Float64("lambda"), Scales: scales, Metadata: versionMetadata()})
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
		so, bar, err := streamOptions(c)
		if err != nil {
			return fmt.Errorf("%s: %w", name, err)
		}
		cks, err := weights.OpenAll(c.Args().First())
		if err != nil {
			return err
		}
		defer weights.CloseAll(cks)
		files, err := taskvec.Scale(c.Context, cks[0], factor(c), c.String("output"), taskvec.ScaleOptions{Options: so, Metadata: versionMetadata()})
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
				return usagef(c, "expected A and B, got %d arguments", c.NArg())
			}
			alphas, err := taskvec.ParseAlphas(c.String("alpha"))
			if err != nil {
				return fmt.Errorf("interpolate: --alpha: %w", err)
			}
			so, bar, err := streamOptions(c)
			if err != nil {
				return fmt.Errorf("interpolate: %w", err)
			}
			out := c.String("output")
			outs := []string{out}
			if len(alphas) > 1 {
				// A sweep: OUT is a directory of alpha-X.safetensors files.
				if weights.IsSafetensorsPath(out) {
					return usagef(c, "a sweep of %d values writes a directory of alpha-X.safetensors files, not %s", len(alphas), out)
				}
				if err := os.MkdirAll(out, 0o755); err != nil {
					return err
				}
				outs = outs[:0]
				for _, a := range alphas {
					outs = append(outs, filepath.Join(out, fmt.Sprintf("alpha-%.4g.safetensors", a)))
				}
			}
			cks, err := weights.OpenAll(c.Args().Get(0), c.Args().Get(1))
			if err != nil {
				return err
			}
			defer weights.CloseAll(cks)
			files, err := taskvec.Interpolate(c.Context, cks[0], cks[1], alphas, outs, taskvec.ScaleOptions{Options: so, Metadata: versionMetadata()})
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

// encodingFlags choose how patch values are stored.
var encodingFlags = []cli.Flag{
	&cli.StringFlag{Name: "values", Value: "f32", Usage: "patch values: f32, f16, or q (with --quantize)"},
	&cli.StringFlag{Name: "quantize", Usage: "quantize patch values, e.g. 4bit-sym-block64, 8bit-asym-channel, 4bit-sym-block32-f16, 4bit-asym-block64-mse"},
	&cli.StringFlag{Name: "sparse", Value: "auto", Usage: "sparse storage: auto (under 1/3 non-zero), never, always"},
}

func encodingOf(c *cli.Context) (wpatch.Encoding, error) {
	enc := wpatch.Encoding{Values: c.String("values"), Sparse: c.String("sparse")}
	if s := c.String("quantize"); s != "" {
		q, err := parseQuant(s)
		if err != nil {
			return enc, err
		}
		enc.Values, enc.Quant = "q", q
	}
	return enc, nil
}
