package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/weights"
)

func init() { register(mergeCommand(), indexCommand()) }

func mergeCommand() *cli.Command {
	return &cli.Command{
		Name:      "merge",
		Usage:     "merge models with a mergekit-format YAML recipe (" + strings.Join(merge.MethodNames(), ", ") + ")",
		ArgsUsage: "RECIPE.yaml",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output directory (or a .safetensors file)"},
			&cli.BoolFlag{Name: "check", Usage: "validate the recipe and the models, then stop"},
			&cli.BoolFlag{Name: "no-hash", Usage: "do not record the inputs' SHA-256 in the output metadata"},
			workersFlag, memoryFlag, shardSizeFlag, shardFlag, nonFiniteFlag, jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("merge: expected RECIPE.yaml, got %d arguments", c.NArg())
			}
			so, bar, err := streamOptions(c)
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			r, err := merge.ParseRecipe(c.Args().First())
			if err != nil {
				return err
			}
			plan, err := r.Open()
			if err != nil {
				return err
			}
			defer plan.Close()
			if c.Bool("check") {
				fmt.Fprintf(os.Stderr, "%s: ok: %s over %d tensors of %d models\n", r.Path, r.Method, len(plan.Tensors), len(plan.Inputs()))
				return nil
			}
			files, err := plan.Merge(c.Context, c.String("output"), merge.Options{Options: so, NoHash: c.Bool("no-hash"), Version: version})
			bar.Done()
			if err != nil {
				return err
			}
			return printFiles(c, files)
		},
	}
}

func indexCommand() *cli.Command {
	return &cli.Command{
		Name:      "index",
		Usage:     "write model.safetensors.index.json for the shards that `--shard i/n` runs wrote into OUTDIR",
		ArgsUsage: "OUTDIR",
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("index: expected OUTDIR")
			}
			p, err := weights.WriteIndex(c.Args().First())
			if err != nil {
				return err
			}
			fmt.Println(p)
			return nil
		},
	}
}
