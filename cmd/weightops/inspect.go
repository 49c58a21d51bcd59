package main

import (
	"os"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/weights"
)

func init() { register(inspectCommand()) }

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "list a checkpoint's tensors (name, dtype, shape, bytes), totals and metadata",
		ArgsUsage: "PATH  (a .safetensors file, shard index, directory, or PyTorch .bin/.pt)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "stats", Usage: "read every tensor and add min/max/mean/std/NaN count"},
			jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "expected one PATH, got %d arguments", c.NArg())
			}
			ck, err := weights.Open(c.Args().First())
			if err != nil {
				return err
			}
			defer ck.Close()
			var bar *progress.Bar
			if c.Bool("stats") {
				bar = progress.New(weights.TotalBytes(ck.Tensors()), "stats", c.Bool("quiet"))
			}
			rep, err := weights.Inspect(c.Context, ck, c.Bool("stats"), bar.Func())
			bar.Done()
			if err != nil {
				return err
			}
			if c.Bool("json") {

				return printJSON(rep)
			}
			return rep.WriteTable(os.Stdout)
		},
	}
}
