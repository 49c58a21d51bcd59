package main

import (
	"fmt"
	"path/filepath"
	"strings"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/gguf"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func init() { register(convertCommand()) }

func convertCommand() *cli.Command {
	return &cli.Command{
		Name:      "convert",
		Usage:     "convert any readable checkpoint (safetensors, PyTorch, GGUF) to safetensors, or a LLaMA-family model to GGUF for llama.cpp",
		ArgsUsage: "IN [OUT]  (OUT or -o: a .safetensors file, a directory, or a .gguf file)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output .safetensors file or directory (or give it after IN)"},
			&cli.StringFlag{Name: "dtype", Usage: "convert floating tensors to bf16, f16, f32 or f64 (integer/bool tensors are kept)"},
			&cli.StringFlag{Name: "shard-size", Usage: "write a sharded directory with shards of at most this size (e.g. 5GB, 500MiB)"},
			&cli.StringFlag{Name: "type", Usage: "GGUF output: the type of the 2-D tensors: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k or q6_k (default f16)"},
			&cli.BoolFlag{Name: "no-vocab", Usage: "GGUF output: write no tokenizer (for a model without one)"},
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
			if strings.HasSuffix(strings.ToLower(out), ".gguf") {
				return convertGGUF(c, src, in, out)
			}
			for _, f := range []string{"type", "no-vocab"} {
				if c.IsSet(f) {
					return usagef(c, "--%s is for a .gguf output", f)
				}
			}
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

func convertGGUF(c *cli.Context, src weights.Checkpoint, in, out string) error {
	if c.IsSet("dtype") || c.IsSet("shard-size") {
		return usagef(c, "a .gguf output takes --type (not --dtype or --shard-size)")
	}
	t := gguf.F16
	if s := c.String("type"); s != "" {
		var err error
		if t, err = gguf.ParseType(s); err != nil || !t.CanQuantize() {
			return usagef(c, "--type %s: use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k or q6_k", s)
		}
	}
	fell, err := gguf.Convert(c.Context, src, weights.ModelDir(in), out, gguf.ConvertOptions{Type: t, NoVocab: c.Bool("no-vocab"), Warn: warn})
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(map[string]any{"files": []string{out}, "type": t.String(), "fallbacks": nonNil(fell)})
	}
	fmt.Println(out)
	return nil
}
