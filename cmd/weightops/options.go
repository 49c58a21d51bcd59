package main

import (
	"bytes"
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
	quietFlag     = &cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no progress bar, and no per-tensor tables from commands that write files (the summary line and the files written stay)"}
	jsonFlag      = &cli.BoolFlag{Name: "json", Usage: "machine-readable output"}
	workersFlag   = &cli.IntFlag{Name: "workers", DefaultText: "min(cores, 2)", Usage: "tensors processed at once"}
	memoryFlag    = &cli.StringFlag{Name: "max-memory", Value: "256MiB", Usage: "bound on tensor bytes held at once (large tensors stream in chunks where they can; a larger one that cannot runs alone)"}
	shardSizeFlag = &cli.StringFlag{Name: "shard-size", Usage: "shard the output (e.g. 5GB)"}
	shardFlag     = &cli.StringFlag{Name: "shard", Usage: "i/n: compute only worker i's balanced share into OUT/model-i-of-n.safetensors (then: weightops index OUT)"}
	outputFlag    = &cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output .safetensors file or directory"}
	dtypeFlag     = &cli.StringFlag{Name: "dtype", Usage: "output dtype of floating tensors: f32, bf16, f16, f64"}
	nonFiniteFlag = &cli.BoolFlag{Name: "allow-nonfinite", Usage: "compute with NaN/Inf input values (NaN out wherever an input is non-finite; patch apply/remove carry them through) instead of refusing them"}
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

// outputArg is a command's one output: -o/--output, or the positional
// argument at index pos (the mergekit habit `merge recipe.yml ./out`); both
// given must agree. nargs is how many positional arguments the command
// takes besides the output.
func outputArg(c *cli.Context, nargs int) (string, error) {
	out := c.String("output")
	switch c.NArg() {
	case nargs:
	case nargs + 1:
		pos := c.Args().Get(nargs)
		if out != "" && out != pos {
			return "", usagef(c, "two outputs: -o %s and %s", out, pos)
		}
		out = pos
	default:
		return "", usagef(c, "expected %d arguments and the output, got %d", nargs, c.NArg())
	}
	if out == "" {
		return "", usagef(c, "missing the output: give it as the last argument or with -o/--output")
	}
	return out, nil
}

// warn prints a warning line on stderr.
func warn(msg string) { fmt.Fprintf(os.Stderr, "weightops: warning: %s\n", msg) }

// SchemaVersion is the version of every command's JSON output
// (docs/json.md): it changes when a key changes meaning or goes away; new
// keys may appear without a change.
const SchemaVersion = 1

// printJSON writes v, a struct or map, as one JSON object on stdout with
// "schema_version" as its first key.
func printJSON(v any) error {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return err
	}
	body := bytes.TrimSpace(b.Bytes())
	if len(body) < 2 || body[0] != '{' {
		return fmt.Errorf("internal error: JSON output %.20s is not an object", body)
	}
	if !bytes.HasPrefix(body, []byte(`{"schema_version":`)) {
		rest := body[1:]
		sep := ","
		if len(rest) == 1 { // "{}"
			sep = ""
		}
		body = append([]byte(fmt.Sprintf(`{"schema_version":%d%s`, SchemaVersion, sep)), rest...)
	}
	_, err := fmt.Fprintf(os.Stdout, "%s\n", body)
	return err
}

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
