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
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output .safetensors file, directory or .gguf file (or give it after IN)"},
			&cli.StringFlag{Name: "dtype", Usage: "convert floating tensors to bf16, f16, f32 or f64 (integer/bool tensors are kept)"},
			&cli.StringFlag{Name: "shard-size", Usage: "write a sharded directory with shards of at most this size (e.g. 5GB, 500MiB)"},
			workersFlag, memoryFlag, jsonFlag, quietFlag,
		}, ggufFlags()...),
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
			if isGGUF(out) {
				return convertGGUF(c, src, in, out)
			}
			if _, err := ggufOptions(c, out); err != nil {
				return err
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
	for _, f := range []string{"dtype", "shard-size", "workers", "max-memory", "allow-nonfinite"} {
		if c.IsSet(f) {
			// The conversion runs a tensor at a time on every core and
			// refuses non-finite values: these would do nothing.
			return usagef(c, "--%s does not apply to a .gguf output (it takes --type and --no-vocab)", f)
		}
	}
	o, err := ggufOptions(c, out)
	if err != nil {
		return err
	}
	fell, err := gguf.Convert(c.Context, src, weights.ModelDir(in), out, o)
	if err != nil {
		return err
	}
	return printGGUF(c, out, o.Type, fell)
}

func printGGUF(c *cli.Context, out string, t gguf.Type, fell []string) error {
	if c.Bool("json") {
		return printJSON(map[string]any{"files": []string{out}, "type": t.String(), "fallbacks": nonNil(fell)})
	}
	fmt.Println(out)
	return nil
}

// ggufFlags are the flags of a command that may write a .gguf output.
func ggufFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "type", Usage: "a .gguf output: the type of the 2-D tensors: f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k or q6_k (default f16)"},
		&cli.BoolFlag{Name: "no-vocab", Usage: "a .gguf output: write no tokenizer (for a model without one)"},
	}
}

func isGGUF(out string) bool { return strings.HasSuffix(strings.ToLower(out), ".gguf") }

// ggufOptions reads --type and --no-vocab, refusing them for an output
// that is not .gguf.
func ggufOptions(c *cli.Context, out string) (gguf.ConvertOptions, error) {
	o := gguf.ConvertOptions{Type: gguf.F16, NoVocab: c.Bool("no-vocab"), Warn: warn}
	if !isGGUF(out) {
		for _, f := range []string{"type", "no-vocab"} {
			if c.IsSet(f) {
				return o, usagef(c, "--%s is for a .gguf output", f)
			}
		}
		return o, nil
	}
	if s := c.String("type"); s != "" {
		t, err := gguf.ParseType(s)
		if err != nil || !t.CanQuantize() {
			return o, usagef(c, "--type %s: use f32, f16, bf16, q8_0, q4_0, q4_1, q5_0, q5_1, q4_k or q6_k", s)
		}
		o.Type = t
	}
	return o, nil
}

// viaGGUF makes a .gguf output in two steps: write makes a model
// directory (weights, config.json, tokenizer) in a hidden working
// directory beside out, which is converted to out and removed (also on
// error or a signal). It returns the tensors that fell back to another
// type.
func viaGGUF(c *cli.Context, out string, o gguf.ConvertOptions, write func(dir string) error) ([]string, error) {
	dir, err := weights.CreateTempDir(out)
	if err != nil {
		return nil, err
	}
	defer weights.RemoveTempDir(dir)
	if err := write(dir); err != nil {
		return nil, err
	}
	ck, err := weights.Open(dir)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	if o.Name == "" {
		o.Name = strings.TrimSuffix(filepath.Base(out), filepath.Ext(out))
	}
	return gguf.Convert(c.Context, ck, dir, out, o)
}
