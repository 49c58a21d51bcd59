package main

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/weights"
)

func init() { register(synthCommand()) }

// familyMembers are the stand-in models `synth --family` writes, the ones
// the README's examples name: a base and two fine-tunes of it.
var familyMembers = []struct {
	name  string
	delta uint64 // 0: the base; else the fine-tune's noise seed
}{{"llama", 0}, {"llama-math", 1}, {"llama-code", 2}}

func synthCommand() *cli.Command {
	return &cli.Command{
		Name:  "synth",
		Usage: "write a synthetic LLaMA-shaped checkpoint (seeded) for benchmarks and pipeline tests; --family writes the stand-in models the README's examples use",
		ArgsUsage: "[OUT]  (OUT or -o: a .safetensors file, or a directory, which also gets config.json)\n\n" +
			"   weightops synth --family DIR writes DIR/llama, DIR/llama-math and DIR/llama-code (a base and two\n" +
			"   fine-tunes of it: base + 0.002·N(0,1)), each a directory with config.json, 32 MiB by default",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output .safetensors file or directory (or give it as the argument)"},
			&cli.StringFlag{Name: "family", Usage: "write the README's stand-in models (llama, llama-math, llama-code) into this directory"},
			&cli.StringFlag{Name: "size", Value: "1GiB", Usage: "approximate total size (32MiB with --family)"},
			&cli.StringFlag{Name: "dtype", Value: "bf16", Usage: "bf16, f16, f32 or f64"},
			&cli.IntFlag{Name: "hidden", Value: 1024, Usage: "model width (256 with --family)"},
			&cli.IntFlag{Name: "vocab", Value: 32000, Usage: "vocabulary size (4096 with --family)"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed"},
			&cli.BoolFlag{Name: "tie-embeddings", Usage: "no lm_head.weight: the embeddings are the output head (Gemma, Llama 3.2 1B); with a large --vocab one tensor is much of the model"},
			&cli.StringFlag{Name: "shard-size", Usage: "write a sharded directory with shards of at most this size"},
			jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			family := c.String("family")
			size, hidden, vocab := c.String("size"), c.Int("hidden"), c.Int("vocab")
			if family != "" {
				if c.NArg() > 0 || c.IsSet("output") {
					return usagef(c, "--family writes into its own directory; drop OUT")
				}
				if !c.IsSet("size") {
					size = "32MiB"
				}
				if !c.IsSet("hidden") {
					hidden = 256
				}
				if !c.IsSet("vocab") {
					vocab = 4096
				}
			}
			bytes, err := weights.ParseBytes(size)
			if err != nil {
				return fmt.Errorf("synth: --size: %w", err)
			}
			dt, err := weights.ParseFloatDType(c.String("dtype"))
			if err != nil {
				return fmt.Errorf("synth: --dtype: %w", err)
			}
			o := weights.SynthOptions{Bytes: bytes, DType: dt, Seed: c.Uint64("seed"), Hidden: hidden, Vocab: vocab, TieEmbeddings: c.Bool("tie-embeddings")}
			if s := c.String("shard-size"); s != "" {
				if o.ShardSize, err = weights.ParseBytes(s); err != nil {
					return fmt.Errorf("synth: --shard-size: %w", err)
				}
			}
			type job struct {
				out string
				o   weights.SynthOptions
			}
			var jobs []job
			if family != "" {
				for _, m := range familyMembers {
					mo := o
					if m.delta > 0 {
						// Half of each task vector shared: the fine-tunes'
						// cosine is about ½, as related fine-tunes' are.
						mo.Delta, mo.Shared, mo.DeltaSeed = 0.0015, 0.0015, o.Seed*1000+m.delta
					}
					jobs = append(jobs, job{filepath.Join(family, m.name), mo})
				}
			} else {
				out, err := outputArg(c, 0)
				if err != nil {
					return err
				}
				jobs = append(jobs, job{out, o})
			}
			var files []string
			for _, j := range jobs {
				bar := progress.New(weights.TotalBytes(weights.SynthInfos(j.o)), "synth "+filepath.Base(j.out), c.Bool("quiet"))
				j.o.Progress = bar.Func()
				fs, err := weights.Synthesize(c.Context, j.out, j.o)
				bar.Done()
				if err != nil {
					return err
				}
				files = append(files, fs...)
			}
			return printFiles(c, files)
		},
	}
}
