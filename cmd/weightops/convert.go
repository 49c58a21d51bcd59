package main

import (
	"fmt"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func init() { register(convertCommand()) }

func convertCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "convert any readable checkpoint to safetensors (optionally changing float dtype and sharding)",
		ArgsUsage: "IN [OUT]  (OUT or -o: a .safetensors file, or a directory)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output .safetensors file or directory (or give it after IN)"},
			&cli.StringFlag{Name: "dtype", Usage: "convert floating tensors to bf16, f16, f32 or f64 (integer/bool tensors are kept)"},
			&cli.StringFlag{Name: "shard-size", Usage: "write a sharded directory with shards of at most this size (e.g. 5GB, 500MiB)"},
			workersFlag, memoryFlag, jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			out, err := outputArg(c, 1)
			if err != nil {
				return err
			}
			in := c.Args().Get(0)
			so, bar, err := streamOptions(c)
			if err != nil {
				return fmt.Errorf("convert: %w", err)
			}
			src, err := weights.Open(in)
			if err != nil {
				return err
			}
			defer src.Close()
			files, err := stream.Convert(c.Context, src, out, stream.ConvertOptions{Options: so, Metadata: map[string]string{
				"weightops.version": version,
				"weightops.source":  filepath.Base(in),
			}})
			bar.Done()
			if err != nil {
				return err
			}
			if c.Bool("json") {
				return printJSON(map[string]any{"files": files})
			}
			for _, f := range files {
				fmt.Println(f)
			}
			return nil
		},
	}
}
