package main

import (
	"fmt"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/moe"
)

func init() { register(moeCommand()) }

func moeCommand() *cli.Command {
	return &cli.Command{
		Name:      "moe",
		Usage:     "build a Mixtral mixture of experts from dense LLaMA/Mistral models with a mergekit-moe config (gate_mode hidden, cheap_embed, random, uniform_random)",
		ArgsUsage: "CONFIG.yaml [OUT]  (OUT or -o: an output directory, or a .safetensors file)",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output directory (or a .safetensors file); or give it after the config, as mergekit-moe does"},
			&cli.BoolFlag{Name: "check", Usage: "validate the config and the models, then stop (no output needed)"},
			workersFlag, memoryFlag, shardSizeFlag, jsonFlag, quietFlag,
		},
		Action: moeAction,
	}
}

func moeAction(c *cli.Context) error {
	if c.NArg() < 1 || c.NArg() > 2 {
		return usagef(c, "expected CONFIG.yaml and optionally OUT, got %d arguments", c.NArg())
	}
	out := c.String("output")
	if c.NArg() == 2 {
		if out != "" && out != c.Args().Get(1) {
			return usagef(c, "two outputs: -o %s and %s", out, c.Args().Get(1))
		}
		out = c.Args().Get(1)
	}
	if out == "" && !c.Bool("check") {
		return usagef(c, "missing the output: give OUT after the config or -o/--output")
	}
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("moe: %w", err)
	}
	cfg, err := moe.ParseConfig(c.Args().First())
	if err != nil {
		return err
	}
	plan, err := cfg.Open()
	if err != nil {
		return err
	}
	defer plan.Close()
	for _, w := range plan.Warnings {
		warn(fmt.Sprintf("%s: %s", cfg.Path, w))
	}
	if c.Bool("check") {
		if c.Bool("json") {
			return printJSON(map[string]any{"config": cfg.Path, "ok": true,
				"experts": len(cfg.Experts), "layers": plan.Layers, "tensors": len(plan.Tensors), "warnings": nonNil(plan.Warnings)})
		}
		fmt.Fprintf(os.Stderr, "%s: ok: %d experts × %d layers, %d tensors\n", cfg.Path, len(cfg.Experts), plan.Layers, len(plan.Tensors))
		return nil
	}
	files, err := plan.Build(c.Context, out, moe.Options{Options: so, Version: version})
	bar.Done()
	if err != nil {
		return err
	}
	return printFiles(c, files)
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}
