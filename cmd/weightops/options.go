package main

import (
	"encoding/json"
	"fmt"
	"os"
	"runtime/debug"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// The flags the commands share.
var (
	quietFlag     = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar"}
	jsonFlag      = &cli.BoolFlag{Name: "json", Usage: "machine-readable output"}
	workersFlag   = &cli.IntFlag{Name: "workers", Usage: "tensors processed at once (default: min(cores, 2))"}
	memoryFlag    = &cli.StringFlag{Name: "max-memory", Value: "256MiB", Usage: "bound on tensor bytes held at once (a larger tensor runs alone)"}
	shardSizeFlag = &cli.StringFlag{Name: "shard-size", Usage: "shard the output (e.g. 5GB)"}
	shardFlag     = &cli.StringFlag{Name: "shard", Usage: "i/n: compute only worker i's balanced share into OUT/model-i-of-n.safetensors (then: weightops index OUT)"}
	outputFlag    = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output .safetensors file or directory"}
	dtypeFlag     = &cli.StringFlag{Name: "dtype", Usage: "output dtype of floating tensors: f32, bf16, f16, f64"}
	nonFiniteFlag = &cli.BoolFlag{Name: "allow-nonfinite", Usage: "compute with NaN/Inf input values (NaN out wherever an input is non-finite) instead of refusing them"}
)

// streamOptions maps the shared flags a command defines (workers, memory,
// shard size, shard, dtype, quiet) to stream.Options, with a progress bar
// the jobs name their phases on. It caps the Go heap near the memory
// bound, so freed tensor buffers are returned promptly instead of letting
// the heap double.
func streamOptions(c *cli.Context) (stream.Options, *progress.Bar, error) {
	o := stream.Options{Workers: c.Int("workers"), Warn: warn, AllowNonFinite: c.Bool("allow-nonfinite")}
	if s := c.String("max-memory"); s != "" {
		n, err := weights.ParseBytes(s)
		if err != nil {
			return o, nil, fmt.Errorf("--max-memory: %w", err)
		}
		o.MaxMemory = n
	}
	if s := c.String("shard-size"); s != "" {
		n, err := weights.ParseBytes(s)
		if err != nil {
			return o, nil, fmt.Errorf("--shard-size: %w", err)
		}
		o.ShardSize = n
	}
	if s := c.String("shard"); s != "" {
		sp, err := weights.ParseShardSpec(s)
		if err != nil {
			return o, nil, fmt.Errorf("--shard: %w", err)
		}
		o.Shard = &sp
	}
	if s := c.String("dtype"); s != "" {
		dt, err := weights.ParseFloatDType(s)
		if err != nil {
			return o, nil, fmt.Errorf("--dtype: %w", err)
		}
		o.DType = &dt
	}
	mem := o.MaxMemory
	if mem <= 0 {
		mem = stream.DefaultMaxMemory
	}
	debug.SetMemoryLimit(mem + mem/2 + 64<<20)
	bar := progress.Phases(c.Bool("quiet"))
	if bar != nil {
		o.Progress = stream.Progress{Phase: bar.Phase, Add: bar.Add}
	}
	return o, bar, nil
}

// warn prints a warning line on stderr.
func warn(msg string) { fmt.Fprintf(os.Stderr, "weightops: warning: %s\n", msg) }

// printJSON writes v as one JSON document on stdout.
func printJSON(v any) error { return json.NewEncoder(os.Stdout).Encode(v) }

// printFiles prints the files a command wrote: one per line, or as JSON.
func printFiles(c *cli.Context, files []string) error {
	if c.Bool("json") {
		return printJSON(map[string]any{"files": files})
	}
	for _, f := range files {
		fmt.Println(f)
	}
	return nil
}
