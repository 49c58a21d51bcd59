package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/weights"
)

func init() { register(mergeCommand()) }

var (
	workersFlag   = &cli.IntFlag{Name: "workers", Usage: "tensors processed at once (default: min(cores, 2))"}
	memoryFlag    = &cli.StringFlag{Name: "max-memory", Value: "256MiB", Usage: "bound on tensor bytes held at once (a larger tensor runs alone)"}
	shardSizeFlag = &cli.StringFlag{Name: "shard-size", Usage: "shard the output (e.g. 5GB)"}
	jsonFlag      = &cli.BoolFlag{Name: "json", Usage: "machine-readable output"}
	shardFlag     = &cli.StringFlag{Name: "shard", Usage: "i/n: compute only worker i's balanced share into OUT/model-i-of-n.safetensors (then: weightops index OUT)"}
)

func shardOf(c *cli.Context) (*weights.ShardSpec, error) {
	s := c.String("shard")
	if s == "" {
		return nil, nil
	}
	sp, err := weights.ParseShardSpec(s)
	return &sp, err
}

// streamOptions reads the flags every streaming command shares and caps the
// Go heap near the memory bound, so freed tensor buffers are returned
// promptly instead of letting the heap double.
func streamOptions(c *cli.Context) (workers int, maxMem, shard int64, err error) {
	maxMem, err = weights.ParseBytes(c.String("max-memory"))
	if err != nil {
		return 0, 0, 0, fmt.Errorf("--max-memory: %w", err)
	}
	if s := c.String("shard-size"); s != "" {
		if shard, err = weights.ParseBytes(s); err != nil {
			return 0, 0, 0, fmt.Errorf("--shard-size: %w", err)
		}
	}
	debug.SetMemoryLimit(maxMem + maxMem/2 + 64<<20)
	return c.Int("workers"), maxMem, shard, nil
}

func printFiles(c *cli.Context, files []string) error {
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{"files": files})
	}
	for _, f := range files {
		fmt.Println(f)
	}
	return nil
}

func mergeCommand() *cli.Command {
	return &cli.Command{
		Name:      "merge",
		Usage:     "merge models with a mergekit-format YAML recipe (task_arithmetic, ties, dare_ties, dare_linear, breadcrumbs, breadcrumbs_ties, linear, slerp, model_stock)",
		ArgsUsage: "RECIPE.yaml",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output directory (or a .safetensors file)"},
			&cli.BoolFlag{Name: "check", Usage: "validate the recipe and the models, then stop"},
			&cli.BoolFlag{Name: "no-hash", Usage: "do not record the inputs' SHA-256 in the output metadata"},
			workersFlag, memoryFlag, shardSizeFlag, shardFlag, jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("merge: expected RECIPE.yaml, got %d arguments", c.NArg())
			}
			workers, maxMem, shard, err := streamOptions(c)
			if err != nil {
				return fmt.Errorf("merge: %w", err)
			}
			spec, err := shardOf(c)
			if err != nil {
				return fmt.Errorf("merge: --shard: %w", err)
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
			var total int64
			for _, in := range plan.Inputs() {
				total += weights.TotalBytes(in.Tensors())
			}
			bar := progress.New(total, "merge", c.Bool("quiet"))
			files, err := plan.Merge(c.String("output"), merge.Options{
				Workers: workers, MaxMemory: maxMem, ShardSize: shard, Progress: bar.Func(),
				NoHash: c.Bool("no-hash"), Version: version, Shard: spec,
			})
			bar.Done()
			if err != nil {
				return err
			}
			return printFiles(c, files)
		},
	}
}

func init() { register(indexCommand()) }

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
