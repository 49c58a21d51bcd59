package main

import (
	"fmt"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/weights"
)

func init() { register(synthCommand()) }

func synthCommand() *cli.Command {
	return &cli.Command{
		Name:      "synth",
		Usage:     "write a synthetic LLaMA-shaped checkpoint (seeded) for benchmarks and pipeline tests",
		ArgsUsage: "OUT  (a .safetensors file, or a directory with --shard-size)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "size", Value: "1GiB", Usage: "approximate total size"},
			&cli.StringFlag{Name: "dtype", Value: "bf16", Usage: "bf16, f16, f32 or f64"},
			&cli.IntFlag{Name: "hidden", Value: 1024, Usage: "model width"},
			&cli.IntFlag{Name: "vocab", Value: 32000, Usage: "vocabulary size"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed"},
			&cli.StringFlag{Name: "shard-size", Usage: "write a sharded directory with shards of at most this size"},
			quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("synth: expected OUT, got %d arguments", c.NArg())
			}
			size, err := weights.ParseBytes(c.String("size"))
			if err != nil {
				return fmt.Errorf("synth: --size: %w", err)
			}
			dt, err := weights.ParseFloatDType(c.String("dtype"))
			if err != nil {
				return fmt.Errorf("synth: --dtype: %w", err)
			}
			o := weights.SynthOptions{Bytes: size, DType: dt, Seed: c.Uint64("seed"), Hidden: c.Int("hidden"), Vocab: c.Int("vocab")}
			if s := c.String("shard-size"); s != "" {
				if o.ShardSize, err = weights.ParseBytes(s); err != nil {
					return fmt.Errorf("synth: --shard-size: %w", err)
				}
			}
			bar := progress.New(weights.TotalBytes(weights.SynthInfos(o)), "synth", c.Bool("quiet"))
			o.Progress = bar.Func()
			files, err := weights.Synthesize(c.Context, c.Args().First(), o)
			bar.Done()
			if err != nil {
				return err
			}
			for _, f := range files {
				fmt.Println(f)
			}
			return nil
		},
	}
}
