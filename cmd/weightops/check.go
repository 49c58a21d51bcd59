package main

import (
	"fmt"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/check"
	"github.com/weightops/weightops/weights"
)

func init() { register(checkCommand()) }

func checkCommand() *cli.Command {
	return &cli.Command{
		Name:      "check",
		Usage:     "the release gate: exit 1 naming file and tensor when a checkpoint is invalid or incomplete, holds NaN/Inf, differs from a reference or its config.json, or does not match its recorded inputs",
		ArgsUsage: "MODEL",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "reference", Usage: "a checkpoint the model must match in tensor names, dtypes and shapes"},
			&cli.Float64Flag{Name: "max-abs-diff", Value: -1, DefaultText: "off", Usage: "with --reference: fail any tensor differing from the reference's by more than this"},
			&cli.StringFlag{Name: "config", Usage: "config.json to check shapes against (default: the one beside MODEL)"},
			&cli.StringSliceFlag{Name: "inputs", Usage: "files the recorded provenance must match: a merge's input models, a patched model's patches (repeat the flag)"},
			workersFlag, memoryFlag, jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "expected one MODEL, got %d arguments", c.NArg())
			}
			so, bar, err := streamOptions(c)
			if err != nil {
				return fmt.Errorf("check: %w", err)
			}
			model, err := weights.Open(c.Args().First())
			if err != nil {
				return err
			}
			defer model.Close()
			o := check.Options{Options: so, MaxAbsDiff: c.Float64("max-abs-diff"), Config: c.String("config"), Inputs: c.StringSlice("inputs")}
			if p := c.String("reference"); p != "" {
				ref, err := weights.Open(p)
				if err != nil {
					return err
				}
				defer ref.Close()
				o.Reference = ref
			}
			rep, err := check.Run(c.Context, model, o)
			bar.Done()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				if err := printJSON(rep); err != nil {
					return err
				}
			} else {
				for _, p := range rep.Problems {
					where := p.File
					if p.Tensor != "" {
						where += fmt.Sprintf(": tensor %q", p.Tensor)
					}
					fmt.Printf("FAIL %s: %s: %s\n", p.Check, where, p.Message)
				}
				if rep.OK {
					fmt.Printf("%s: ok: %d tensors; checked %s\n", rep.Model, len(rep.Tensors), strings.Join(rep.Checked, ", "))
				}
			}
			if !rep.OK {
				p := rep.Problems[0]
				where := p.File
				if p.Tensor != "" {
					where += fmt.Sprintf(": tensor %q", p.Tensor)
				}
				return fmt.Errorf("check: %s; first: %s: %s", plural(len(rep.Problems), "problem"), where, p.Message)
			}
			return nil
		},
	}
}

// plural is "1 problem", "2 problems".
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}
