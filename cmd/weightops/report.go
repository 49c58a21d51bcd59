package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"

	"github.com/weightops/weightops"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/report"
)

func init() { register(reportCommand()) }

func reportCommand() *cli.Command {
	return &cli.Command{
		Name: "report",
		Usage: "an HTML page and a Markdown file with charts about the demo models: where the difference lives, " +
			"task-vector similarity, patch sparsity, accuracy along an interpolation",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "data", Usage: "demo models (as for weightops demo; default: the embedded ones)"},
			&cli.StringFlag{Name: "from", Usage: "a `weightops demo --out` directory: include its results table and use its signature patches"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o", "out"}, Usage: "output directory (default: a new temporary directory)"},
			&cli.StringFlag{Name: "alpha", Value: "0:1:0.25", Usage: "interpolation sweep clean → robust (start:stop:step or a list)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the test-time corruptions"},
			workersFlag, jsonFlag, quietFlag,
		},
		Action: reportAction,
	}
}

func reportAction(c *cli.Context) error {
	if c.NArg() != 0 {
		return usagef(c, "unexpected arguments %q: the report takes flags only", c.Args().Slice())
	}
	out := c.String("output")
	if out == "" {
		d, err := os.MkdirTemp("", "weightops-report-")
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		out = d
	}
	var log io.Writer = os.Stderr
	if c.Bool("quiet") {
		log = nil
	}
	rep, err := report.Build(c.Context, report.Options{Data: c.String("data"), Embedded: weightops.DemoData, From: c.String("from"), Out: out, Alphas: c.String("alpha"),
		EvalSeed: c.Uint64("seed"), Workers: c.Int("workers"), Log: log})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(rep)
	}
	fmt.Println(filepath.Join(out, report.HTMLFile))
	fmt.Println(filepath.Join(out, report.MarkdownFile))
	return nil
}
