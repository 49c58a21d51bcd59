// Command weightops reads, inspects, converts and (in later commands)
// merges and patches model checkpoints. This file holds flags and wiring
// only; the work is in the weights, signature, merge, quantize and engine
// packages.
package main

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/weights"
)

// version is stamped into provenance metadata.
var version = "0.1.0-dev"

func main() {
	if err := newApp().Run(os.Args); err != nil {
		fmt.Fprintf(os.Stderr, "weightops: %s\n", oneLine(err))
		var ee cli.ExitCoder
		if errors.As(err, &ee) && ee.ExitCode() != 0 {
			os.Exit(ee.ExitCode())
		}
		os.Exit(1)
	}
}

// oneLine keeps an error to one line, as a CI log reader expects.
func oneLine(err error) string { return strings.ReplaceAll(err.Error(), "\n", "; ") }

var quietFlag = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"}

func newApp() *cli.App {
	app := &cli.App{
		Name:            "weightops",
		Usage:           "model-weight arithmetic: inspect, convert, diff, merge, patch checkpoints",
		Version:         version,
		HideHelpCommand: true,
		ExitErrHandler:  func(*cli.Context, error) {}, // main prints the one error line
		Commands: []*cli.Command{
			inspectCommand(),
			convertCommand(),
			synthCommand(),
		},
	}
	// A usage error is one line with a pointer to help, not a help dump.
	usage := func(c *cli.Context, err error, _ bool) error {
		return fmt.Errorf("%s: %w (see 'weightops %s --help')", c.Command.Name, err, c.Command.Name)
	}
	app.OnUsageError = usage
	for _, cmd := range app.Commands {
		cmd.OnUsageError = usage
	}
	app.CommandNotFound = func(c *cli.Context, name string) {
		fmt.Fprintf(os.Stderr, "weightops: unknown command %q (see 'weightops --help')\n", name)
		os.Exit(2)
	}
	return app
}

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "list a checkpoint's tensors (name, dtype, shape, bytes), totals and metadata",
		ArgsUsage: "PATH  (a .safetensors file, shard index, directory, or PyTorch .bin/.pt)",
		Flags: []cli.Flag{
			&cli.BoolFlag{Name: "stats", Usage: "read every tensor and add min/max/mean/std/NaN count"},
			&cli.BoolFlag{Name: "json", Usage: "machine-readable output"},
			quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return fmt.Errorf("inspect: expected one PATH, got %d arguments", c.NArg())
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
			rep, err := weights.Inspect(ck, c.Bool("stats"), bar.Func())
			bar.Done()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				enc := json.NewEncoder(os.Stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(rep)
			}
			return rep.WriteTable(os.Stdout)
		},
	}
}

func convertCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "convert any readable checkpoint to safetensors (optionally changing float dtype and sharding)",
		ArgsUsage: "IN OUT  (OUT: a .safetensors file, or a directory with --shard-size)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dtype", Usage: "convert floating tensors to bf16, f16, f32 or f64 (integer/bool tensors are kept)"},
			&cli.StringFlag{Name: "shard-size", Usage: "write a sharded directory with shards of at most this size (e.g. 5GB, 500MiB)"},
			&cli.IntFlag{Name: "workers", Usage: "tensors processed at once (default: min(cores, 2))"},
			&cli.BoolFlag{Name: "json", Usage: "print the files written as JSON"},
			quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 2 {
				return fmt.Errorf("convert: expected IN and OUT, got %d arguments", c.NArg())
			}
			in, out := c.Args().Get(0), c.Args().Get(1)
			opts := weights.ConvertOptions{Workers: c.Int("workers")}
			if s := c.String("dtype"); s != "" {
				dt, err := weights.ParseDType(s)
				if err != nil {
					return fmt.Errorf("convert: --dtype: %w", err)
				}
				if !dt.IsFloat() || !dt.Writable() {
					return fmt.Errorf("convert: --dtype %s: only bf16, f16, f32, f64 are allowed", s)
				}
				opts.DType, opts.HasDType = dt, true
			}
			if s := c.String("shard-size"); s != "" {
				n, err := weights.ParseBytes(s)
				if err != nil {
					return fmt.Errorf("convert: --shard-size: %w", err)
				}
				opts.ShardSize = n
			} else if st, err := os.Stat(out); (err == nil && st.IsDir()) || strings.HasSuffix(out, "/") {
				out = filepath.Join(out, "model.safetensors")
			}
			src, err := weights.Open(in)
			if err != nil {
				return err
			}
			defer src.Close()
			opts.Metadata = map[string]string{
				"weightops.version": version,
				"weightops.source":  filepath.Base(in),
			}
			bar := progress.New(weights.TotalBytes(src.Tensors()), "convert", c.Bool("quiet"))
			opts.Progress = bar.Func()
			files, err := weights.Convert(src, out, opts)
			bar.Done()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return json.NewEncoder(os.Stdout).Encode(map[string]any{"files": files})
			}
			for _, f := range files {
				fmt.Println(f)
			}
			return nil
		},
	}
}

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
			dt, err := weights.ParseDType(c.String("dtype"))
			if err != nil || !dt.IsFloat() || !dt.Writable() {
				return fmt.Errorf("synth: --dtype %q: use bf16, f16, f32 or f64", c.String("dtype"))
			}
			o := weights.SynthOptions{Bytes: size, DType: dt, Seed: c.Uint64("seed"), Hidden: c.Int("hidden"), Vocab: c.Int("vocab")}
			if s := c.String("shard-size"); s != "" {
				if o.ShardSize, err = weights.ParseBytes(s); err != nil {
					return fmt.Errorf("synth: --shard-size: %w", err)
				}
			}
			bar := progress.New(weights.TotalBytes(weights.SynthInfos(o)), "synth", c.Bool("quiet"))
			o.Progress = bar.Func()
			files, err := weights.Synthesize(c.Args().First(), o)
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
