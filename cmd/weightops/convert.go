package main

import (
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/weights"
)

func init() { register(convertCommand()) }

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
