package main

import (
	"errors"
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
		ArgsUsage: "RECIPE.yaml [OUT]  (OUT or -o: an output directory, or a .safetensors file)",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output directory (or a .safetensors or .gguf file); or give it after the recipe, as mergekit-yaml does"},
			&cli.BoolFlag{Name: "check", Usage: "validate the recipe and the models, then stop (no output needed)"},
			&cli.BoolFlag{Name: "no-hash", Usage: "do not record the inputs' SHA-256 in the output metadata"},
			&cli.BoolFlag{Name: "no-card", Usage: "do not write the model card (README.md) and the recipe (mergekit_config.yml) beside a directory output"},
			workersFlag, memoryFlag, shardSizeFlag, shardFlag, nonFiniteFlag, jsonFlag, quietFlag,
		}, ggufFlags()...),
		Action: mergeAction,
	}
}

// checkResult is `merge --check --json`'s output.
type checkResult struct {
	SchemaVersion int      `json:"schema_version"`
	Recipe        string   `json:"recipe"`
	OK            bool     `json:"ok"`
	Method        string   `json:"method"`
	Tensors       int      `json:"tensors"`
	Models        int      `json:"models"`
	Problems      []string `json:"problems"`
	// Warnings: parameters accepted but unused, and where weightops
	// differs from mergekit on purpose for this recipe.
	Warnings []string `json:"warnings"`
}

func mergeAction(c *cli.Context) error {
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef(c, "expected RECIPE.yaml and optionally OUT, got %d arguments", c.NArg())
	}
	out := c.String("output")
	if c.NArg() == 2 {
		if out != "" && out != c.Args().Get(1) {
			return usagef(c, "two outputs: -o %s and %s", out, c.Args().Get(1))
		}
		out = c.Args().Get(1)
	}
	if out == "" && !c.Bool("check") {
		return usagef(c, "missing the output: give OUT after the recipe or -o/--output")
	}
	gopts, err := ggufOptions(c, out)
	if err != nil {
		return err
	}
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("merge: %w", err)
	}
	res := checkResult{SchemaVersion: 1, Recipe: c.Args().First(), Problems: []string{}, Warnings: []string{}}
	fail := func(err error) error {
		if !c.Bool("check") || !c.Bool("json") {
			return err
		}
		var pr *merge.Problems
		if errors.As(err, &pr) {
			res.Problems = pr.List
		} else {
			res.Problems = []string{err.Error()}
		}
		if perr := printJSON(res); perr != nil {
			return perr
		}
		return err
	}
	r, err := merge.ParseRecipe(c.Args().First())
	if err != nil {
		return fail(err)
	}
	res.Method = r.Method
	plan, err := r.Open()
	if err != nil {
		return fail(err)
	}
	defer plan.Close()
	for _, w := range plan.Warnings {
		warn(fmt.Sprintf("%s: %s", r.Path, w))
	}
	if c.Bool("check") {
		res.OK, res.Tensors, res.Models = true, len(plan.Tensors), len(plan.Checkpoints)
		res.Warnings = append(res.Warnings, plan.Warnings...)
		if c.Bool("json") {
			return printJSON(res)
		}
		fmt.Fprintf(os.Stderr, "%s: ok: %s over %d tensors of %d models\n", r.Path, r.Method, len(plan.Tensors), len(plan.Checkpoints))
		return nil
	}
	mo := merge.Options{Options: so, NoHash: c.Bool("no-hash"), NoCard: c.Bool("no-card"), Version: version}
	if !mo.NoHash {
		hc, err := weights.DefaultHashCache()
		if err != nil {
			return usagef(c, "%v", err)
		}
		mo.HashCache = hc
	}
	if isGGUF(out) {
		if so.Shard != nil || so.ShardSize > 0 {
			return usagef(c, "a .gguf output is one file: drop --shard and --shard-size")
		}
		fell, err := viaGGUF(c, out, gopts, func(dir string) error {
			_, err := plan.Merge(c.Context, dir, mo)
			return err
		})
		bar.Done()
		if err != nil {
			return err
		}
		return printGGUF(c, out, gopts.Type, fell)
	}
	files, err := plan.Merge(c.Context, out, mo)
	bar.Done()
	if err != nil {
		return err
	}
	return printFiles(c, files)
}

func indexCommand() *cli.Command {
	return &cli.Command{
		Name:      "index",
		Usage:     "write model.safetensors.index.json for the shards that `--shard i/n` runs wrote into OUTDIR",
		ArgsUsage: "OUTDIR",
		Flags:     []cli.Flag{jsonFlag, quietFlag},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "expected OUTDIR")
			}
			p, err := weights.WriteIndex(c.Args().First())
			if err != nil {
				return err
			}
			return printFiles(c, []string{p})
		},
	}
}
