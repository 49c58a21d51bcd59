package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops"
	"github.com/weightops/weightops/report"
	"github.com/weightops/weightops/taskvec"
	"github.com/weightops/weightops/weights"
)

func init() { register(reportCommand()) }

// demoOnlyFlags apply to the demo report only.
var demoOnlyFlags = []string{"data", "from", "alpha", "seed"}

func reportCommand() *cli.Command {
	return &cli.Command{
		Name: "report",
		Usage: "an HTML page, a Markdown file and JSON with charts: BASE MODEL... compares fine-tunes with their base " +
			"(where the difference lives, task-vector similarity, sign agreement and top-k mask overlap, unchanged values); " +
			"without arguments, the demo models",
		ArgsUsage: "[BASE MODEL...]",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o", "out"}, Usage: "output directory (default: a new temporary directory)"},
			&cli.Float64Flag{Name: "density", Value: 0.1, Usage: "BASE MODEL...: the top-k fraction whose mask overlap is measured (as a TIES or Breadcrumbs merge trims)"},
			&cli.StringFlag{Name: "data", Usage: "demo report: demo models (as for weightops demo; default: the embedded ones)"},
			&cli.StringFlag{Name: "from", Usage: "demo report: a `weightops demo --out` directory: include its results table and use its signature patches"},
			&cli.StringFlag{Name: "alpha", Value: "0:1:0.25", Usage: "demo report: interpolation sweep clean → robust (start:stop:step or a list)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "demo report: seed of the test-time corruptions"},
			workersFlag, memoryFlag, nonFiniteFlag, jsonFlag, quietFlag,
		},
		Action: reportAction,
	}
}

func reportAction(c *cli.Context) error {
	if c.NArg() == 1 {
		return usagef(c, "give a base and at least one model to compare with it (or no arguments for the demo report)")
	}
	if c.NArg() == 0 && c.IsSet("density") {
		return usagef(c, "--density applies to a report on checkpoints (BASE MODEL...)")
	}
	if c.NArg() > 0 {
		for _, f := range demoOnlyFlags {
			if c.IsSet(f) {
				return usagef(c, "--%s applies to the demo report (no arguments), not to BASE MODEL...", f)
			}
		}
	}
	out := c.String("output")
	if out == "" {
		d, err := os.MkdirTemp("", "weightops-report-")
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		out = d
	}
	var rep any
	if c.NArg() > 0 {
		so, bar, err := streamOptions(c)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		cks, err := weights.OpenAll(c.Args().Slice()...)
		if err != nil {
			return err
		}
		defer weights.CloseAll(cks)
		r, err := report.BuildCompare(c.Context, cks[0], cks[1:], report.CompareOptions{
			CompareOptions: taskvec.CompareOptions{Options: so, Density: c.Float64("density")}, Out: out, Version: version})
		bar.Done()
		if err != nil {
			return err
		}
		rep = r
	} else {
		var log io.Writer = os.Stderr
		if c.Bool("quiet") {
			log = nil
		}
		r, err := report.BuildDemo(c.Context, report.DemoOptions{Data: c.String("data"), Embedded: weightops.DemoData, From: c.String("from"), Out: out, Alphas: c.String("alpha"),
			EvalSeed: c.Uint64("seed"), Workers: c.Int("workers"), Log: log})
		if err != nil {
			return err
		}
		rep = r
	}
	if c.Bool("json") {
		return printJSON(rep)
	}
	fmt.Println(filepath.Join(out, report.HTMLFile))
	fmt.Println(filepath.Join(out, report.MarkdownFile))
	fmt.Println(filepath.Join(out, report.JSONFile))
	return nil
}
