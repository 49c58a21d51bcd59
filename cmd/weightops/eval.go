package main

import (
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/gguf"
	"github.com/weightops/weightops/progress"
	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

func init() { register(evalCommand(), evalLMCommand(), generateCommand()) }

func evalCommand() *cli.Command {
	return &cli.Command{
		Name:  "eval",
		Usage: "evaluate a classifier on a labelled data set: accuracy, per-class accuracy, cross-entropy",
		ArgsUsage: "MODEL  (a checkpoint with an arch file; data from --data/--labels (IDX or .npy), --npy/--labels or --csv)\n\n" +
			"   e.g. weightops eval testdata/engine/cnn/model.safetensors \\\n" +
			"          --data testdata/engine/data/fashion-mnist/t10k-images-idx3-ubyte.gz \\\n" +
			"          --labels testdata/engine/data/fashion-mnist/t10k-labels-idx1-ubyte.gz --corrupt gaussian_noise:0.3",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "arch", Usage: "architecture file (default: arch.yaml, arch.yml or arch.json beside MODEL)"},
			&cli.StringFlag{Name: "data", Usage: "samples: an IDX or .npy file, gzipped or not (uint8 is scaled to [0, 1])"},
			&cli.StringFlag{Name: "npy", Usage: "samples as a .npy file (same as --data)"},
			&cli.StringFlag{Name: "labels", Usage: "labels for --data/--npy: an IDX or .npy file"},
			&cli.StringFlag{Name: "csv", Usage: "CSV file with a label column and feature columns"},
			&cli.IntFlag{Name: "label-col", Value: 0, Usage: "the CSV's label column (negative counts from the end)"},
			&cli.StringFlag{Name: "corrupt", Usage: "corrupt samples first: e.g. gaussian_noise:0.3,blur:1,contrast:0.4 (also brightness, salt_pepper, pixelate), a benchmark corruption such as motion_blur@3; or all:S / extra:S / all19:S (S a severity, 1-5 or 1,3,5): the common-corruptions benchmark, one evaluation per corruption and severity, with mean accuracy and mCE"},
			&cli.StringFlag{Name: "baseline", Usage: "with --corrupt all:S: a baseline model (arch file beside it) to normalise the corruption errors by, as mCE does with AlexNet"},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the corruptions"},
			&cli.IntFlag{Name: "batch", Value: 256, Usage: "samples per forward pass"},
			jsonFlag, quietFlag,
		},
		Action: runEval,
	}
}

func loadEvalData(c *cli.Context) (*dataset.Set, string, error) {
	data, npy, labels, csv := c.String("data"), c.String("npy"), c.String("labels"), c.String("csv")
	if data != "" && npy != "" {
		return nil, "", errors.New("eval: give --data or --npy, not both")
	}
	if npy != "" {
		data = npy
	}
	switch {
	case csv != "" && (data != "" || labels != ""):
		return nil, "", errors.New("eval: give either --csv or --data/--npy with --labels")
	case csv != "":
		s, err := dataset.LoadCSV(csv, c.Int("label-col"))
		return s, csv, err
	case data == "" && labels == "":
		return nil, "", errors.New("eval: no data: give --data and --labels (IDX or .npy), --npy and --labels, or --csv")
	case data == "" || labels == "":
		return nil, "", errors.New("eval: --data (or --npy) and --labels go together")
	}
	s, err := dataset.Load(data, labels)
	return s, data, err
}

// evalReport is eval's JSON output.
type evalReport struct {
	Model string `json:"model"`
	Arch  string `json:"arch"`
	Data  string `json:"data"`
	*engine.Result
	Seconds float64 `json:"seconds"`
}

func runEval(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one MODEL, got %d arguments", c.NArg())
	}
	modelPath := c.Args().First()
	archPath := c.String("arch")
	if archPath == "" {
		p, err := engine.FindArch(modelPath)
		if err != nil {
			return err
		}
		archPath = p
	}
	conds, suite, err := dataset.ParseSuite(c.String("corrupt"))
	if err != nil {
		return fmt.Errorf("eval: --corrupt: %w", err)
	}
	var corrupt dataset.Pipeline
	if !suite {
		if corrupt, err = dataset.ParseCorruptions(c.String("corrupt")); err != nil {
			return fmt.Errorf("eval: --corrupt: %w", err)
		}
		if c.IsSet("baseline") {
			return errors.New("eval: --baseline normalises benchmark errors; give --corrupt all:S (or extra:S, all19:S)")
		}
	}
	if c.Int("batch") < 1 {
		return errors.New("eval: --batch must be at least 1")
	}
	m, err := engine.Load(modelPath, archPath)
	if err != nil {
		return err
	}
	if len(m.Unused) > 0 {
		fmt.Fprintf(os.Stderr, "weightops: warning: %d checkpoint tensors are not used by the arch: %s\n", len(m.Unused), strings.Join(m.Unused, ", "))
	}
	s, dataName, err := loadEvalData(c)
	if err != nil {
		return err
	}
	if suite || len(corrupt) > 0 {
		warnRange(s, dataName)
	}
	start := time.Now()
	if suite {
		return runBenchmark(c, m, s, conds, modelPath, archPath, dataName, start)
	}
	r, err := engine.Evaluate(m, s, engine.EvalOptions{BatchSize: c.Int("batch"), Corrupt: corrupt, Seed: c.Uint64("seed")})
	if err != nil {
		return fmt.Errorf("eval: %s on %s: %w", modelPath, dataName, err)
	}
	rep := evalReport{Model: modelPath, Arch: archPath, Data: dataName, Result: r, Seconds: time.Since(start).Seconds()}
	if c.Bool("json") {

		return printJSON(rep)
	}
	return writeEvalText(os.Stdout, &rep, s)
}

// warnRange warns when samples lie outside [0, 1], where the corruptions
// work (they clip to it first, which ruins such data).
func warnRange(s *dataset.Set, name string) {
	lo, hi := float32(0), float32(1)
	for _, v := range s.X {
		lo, hi = min(lo, v), max(hi, v)
	}
	if lo < 0 || hi > 1 {
		fmt.Fprintf(os.Stderr, "weightops: warning: %s has values in [%g, %g]; corruptions work on samples in [0, 1] and clip to it first\n", name, lo, hi)
	}
}

// benchmarkReport is eval's JSON with a benchmark spec.
type benchmarkReport struct {
	Model    string `json:"model"`
	Arch     string `json:"arch"`
	Data     string `json:"data"`
	Spec     string `json:"spec"`
	Baseline string `json:"baseline"`
	*engine.BenchmarkResult
	Seconds float64 `json:"seconds"`
}

func runBenchmark(c *cli.Context, m *engine.Model, s *dataset.Set, conds []dataset.SuiteCondition, modelPath, archPath, dataName string, start time.Time) error {
	var base *engine.Model
	if b := c.String("baseline"); b != "" {
		var err error
		if base, err = engine.Load(b, ""); err != nil {
			return fmt.Errorf("eval: --baseline: %w", err)
		}
	}
	n := int64(1 + len(conds))
	if base != nil {
		n *= 2
	}
	bar := progress.NewCount(n, "benchmark", c.Bool("quiet"))
	r, err := engine.EvaluateBenchmark(m, base, s, conds, engine.EvalOptions{BatchSize: c.Int("batch"), Seed: c.Uint64("seed")}, func() { bar.Add(1) })
	bar.Done()
	if err != nil {
		return fmt.Errorf("eval: %s on %s: %w", modelPath, dataName, err)
	}
	rep := benchmarkReport{Model: modelPath, Arch: archPath, Data: dataName, Spec: c.String("corrupt"), Baseline: c.String("baseline"),
		BenchmarkResult: r, Seconds: time.Since(start).Seconds()}
	if c.Bool("json") {
		return printJSON(rep)
	}
	fmt.Printf("model     %s (arch %s)\n", modelPath, archPath)
	fmt.Printf("data      %s: %d samples, corruptions %s (seed %d)\n", dataName, s.Len(), rep.Spec, r.Seed)
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', tabwriter.AlignRight)
	head := "corruption\t"
	for _, sv := range r.Corruptions[0].Severity {
		head += fmt.Sprintf("@%d\t", sv)
	}
	head += "mean\t"
	if base != nil {
		head += "CE\trel. CE\t"
	}
	fmt.Fprintln(tw, head)
	opt := func(p *float64) string {
		if p == nil {
			return "-"
		}
		return fmt.Sprintf("%.1f%%", 100**p)
	}
	for _, cr := range r.Corruptions {
		row := cr.Name + "\t"
		for _, a := range cr.Accuracy {
			row += fmt.Sprintf("%.1f%%\t", 100*a)
		}
		row += fmt.Sprintf("%.1f%%\t", 100*cr.Mean)
		if base != nil {
			row += opt(cr.CE) + "\t" + opt(cr.RelativeCE) + "\t"
		}
		fmt.Fprintln(tw, row)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	fmt.Printf("clean accuracy            %.2f%%\n", 100*r.Clean)
	fmt.Printf("mean corruption accuracy  %.2f%% (unnormalised mCE %.2f%%, mean relative error %.2f%%)\n", 100*r.MeanAccuracy, 100*r.MeanError, 100*r.MeanRelativeError)
	if base != nil {
		fmt.Printf("mCE vs the baseline       %s (relative mCE %s; baseline clean %.2f%%)\n", opt(r.MCE), opt(r.RelativeMCE), 100**r.BaselineClean)
	}
	fmt.Printf("time      %.1fs\n", rep.Seconds)
	return nil
}

func writeEvalText(w io.Writer, rep *evalReport, s *dataset.Set) error {
	r := rep.Result
	fmt.Fprintf(w, "model     %s (arch %s)\n", rep.Model, rep.Arch)
	fmt.Fprintf(w, "data      %s: %d samples of %v\n", rep.Data, s.Len(), s.Shape)
	if r.Corruption != "" {
		fmt.Fprintf(w, "corrupt   %s (seed %d)\n", r.Corruption, r.Seed)
	}
	fmt.Fprintf(w, "accuracy  %.2f%% (%d/%d)\n", 100*r.Accuracy, r.Correct, r.Samples)
	fmt.Fprintf(w, "loss      %.4f (mean cross-entropy)\n", r.Loss)
	fmt.Fprintf(w, "time      %.2fs (%.0f samples/s)\n\n", rep.Seconds, float64(r.Samples)/max(rep.Seconds, 1e-9))
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', tabwriter.AlignRight)
	fmt.Fprintln(tw, "class\tname\taccuracy\tcorrect\t")
	for _, pc := range r.PerClass {
		acc := "-"
		if pc.Samples > 0 {
			acc = fmt.Sprintf("%.2f%%", 100*pc.Accuracy)
		}
		fmt.Fprintf(tw, "%d\t%s\t%s\t%d/%d\t\n", pc.Class, pc.Name, acc, pc.Correct, pc.Samples)
	}
	return tw.Flush()
}

func evalLMCommand() *cli.Command {
	return &cli.Command{
		Name:      "eval-lm",
		Usage:     "perplexity of a causal language model (LLaMA, Mistral, Qwen2/3, Phi-3, Gemma/Gemma 2; Hugging Face layout, or GGUF) on text or token ids",
		ArgsUsage: "MODEL  (a directory with config.json and the checkpoint, a checkpoint with config.json beside it, or a .gguf file)",
		Flags: []cli.Flag{
			threadsFlag,
			&cli.StringFlag{Name: "text", Usage: "text file to score, tokenized with the model's tokenizer.json (its special tokens added, as transformers does; - for stdin)"},
			&cli.StringFlag{Name: "tokens", Usage: "file of token ids separated by spaces, newlines or commas (- for stdin)"},
			&cli.IntFlag{Name: "window", DefaultText: "max_position_embeddings", Usage: "windows of this many tokens"},
			&cli.IntFlag{Name: "stride", DefaultText: "window", Usage: "start a window every this many tokens, each scoring only tokens no earlier window scored (transformers' sliding-window perplexity)"},
			jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "expected one MODEL, got %d arguments", c.NArg())
			}
			if c.IsSet("text") == c.IsSet("tokens") {
				return usagef(c, "give the text to score: --text FILE or --tokens FILE (one of them)")
			}
			var toks []int
			var err error
			if c.IsSet("text") {
				text, err := readTextFile(c.String("text"))
				if err != nil {
					return err
				}
				enc, _, err := modelTokenizer(c.Args().First())
				if err != nil {
					return err
				}
				toks = enc.EncodeSpecial(text)
			} else if toks, err = readTokenFile(c.String("tokens")); err != nil {
				return err
			}
			if err := lmRuntime(c); err != nil {
				return err
			}
			m, err := engine.LoadLlama(c.Args().First())
			if err != nil {
				return err
			}
			start := time.Now()
			r, err := m.PerplexityStride(toks, c.Int("window"), c.Int("stride"))
			if err != nil {
				return fmt.Errorf("eval-lm: %w", err)
			}
			sec := time.Since(start).Seconds()
			if c.Bool("json") {
				return printJSON(struct {
					Model string `json:"model"`
					*engine.PerplexityResult
					Seconds      float64 `json:"seconds"`
					TokensPerSec float64 `json:"tokens_per_second"`
				}{c.Args().First(), r, sec, float64(len(toks)) / max(sec, 1e-9)})
			}
			fmt.Printf("model       %s\n", c.Args().First())
			fmt.Printf("tokens      %d scored in %d window(s)\n", r.Tokens, r.Windows)
			fmt.Printf("nll         %.4f nats/token\n", r.NLL)
			fmt.Printf("perplexity  %.4f\n", r.Perplexity)
			fmt.Printf("time        %.3fs (%.0f tokens/s)\n", sec, float64(len(toks))/max(sec, 1e-9))
			return nil
		},
	}
}

func readTokenFile(path string) ([]int, error) {
	var b []byte
	var err error
	if path == "-" {
		b, err = io.ReadAll(io.LimitReader(os.Stdin, weights.MaxTokensFileSize+1))
		if err == nil && len(b) > weights.MaxTokensFileSize {
			err = fmt.Errorf("stdin: over the %d-byte limit for a token file", weights.MaxTokensFileSize)
		}
	} else {
		b, err = weights.ReadFile(path, weights.MaxTokensFileSize, "token file")
	}
	if err != nil {
		return nil, err
	}
	toks, err := engine.ParseTokenIDs(string(b))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return toks, nil
}

func generateCommand() *cli.Command {
	return &cli.Command{
		Name:      "generate",
		Usage:     "greedy generation with a LLaMA-family model: prints the new text (or token ids)",
		ArgsUsage: "MODEL  (as for eval-lm)",
		Flags: []cli.Flag{
			threadsFlag,
			&cli.StringFlag{Name: "prompt", Usage: "prompt text, tokenized with the model's tokenizer.json (its special tokens added)"},
			&cli.StringFlag{Name: "prompt-ids", Usage: "prompt token ids, comma- or space-separated"},
			&cli.BoolFlag{Name: "ids", Usage: "print the new token ids instead of their text (the default with --prompt-ids)"},
			&cli.IntFlag{Name: "n", Value: 20, Usage: "number of tokens to generate"},
			jsonFlag, quietFlag,
		},
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef(c, "expected one MODEL, got %d arguments", c.NArg())
			}
			if c.IsSet("prompt") == c.IsSet("prompt-ids") {
				return usagef(c, "give the prompt: --prompt TEXT or --prompt-ids IDS (one of them)")
			}
			var prompt []int
			var dec *tokenizer.Decoder
			var err error
			if c.IsSet("prompt") {
				var enc *tokenizer.Encoder
				if enc, dec, err = modelTokenizer(c.Args().First()); err != nil {
					return err
				}
				prompt = enc.EncodeSpecial(c.String("prompt"))
			} else if prompt, err = engine.ParseTokenIDs(c.String("prompt-ids")); err != nil {
				return fmt.Errorf("generate: --prompt-ids: %w", err)
			}
			if err := lmRuntime(c); err != nil {
				return err
			}
			m, err := engine.LoadLlama(c.Args().First())
			if err != nil {
				return err
			}
			start := time.Now()
			out, err := m.Generate(prompt, c.Int("n"))
			if err != nil {
				return err
			}
			sec := time.Since(start).Seconds()
			text := ""
			if dec != nil {
				if text, err = dec.Decode(out); err != nil {
					return fmt.Errorf("generate: %w", err)
				}
			}
			if c.Bool("json") {
				return printJSON(struct {
					Model     string  `json:"model"`
					Prompt    []int   `json:"prompt"`
					Generated []int   `json:"generated"`
					Text      string  `json:"text"`
					Seconds   float64 `json:"seconds"`
				}{c.Args().First(), prompt, out, text, sec})
			}
			if dec != nil && !c.Bool("ids") {
				fmt.Println(text)
				return nil
			}
			ids := make([]string, len(out))
			for i, t := range out {
				ids[i] = fmt.Sprint(t)
			}
			fmt.Println(strings.Join(ids, ","))
			return nil
		},
	}
}

// modelTokenizer loads the tokenizer beside a model (tokenizer.json, else
// tokenizer.model), or a GGUF file's own vocabulary.
func modelTokenizer(model string) (*tokenizer.Encoder, *tokenizer.Decoder, error) {
	var tok *tokenizer.Tokenizer
	var err error
	if isGGUF(model) {
		var g *gguf.Checkpoint
		if g, err = gguf.Open(model); err != nil {
			return nil, nil, err
		}
		tok, err = g.Tokenizer()
		g.Close()
	} else {
		tok, err = tokenizer.Load(weights.ModelDir(model))
	}
	if errors.Is(err, tokenizer.ErrNoTokenizer) {
		return nil, nil, fmt.Errorf("%s: no tokenizer (tokenizer.json, tokenizer.model or a GGUF vocabulary) to read text with: give token ids (--tokens, --prompt-ids)", model)
	}
	if err != nil {
		return nil, nil, err
	}
	enc, err := tok.File.NewEncoder()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", tok.Dir, err)
	}
	dec, err := tok.File.NewDecoder()
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %w", tok.Dir, err)
	}
	return enc, dec, nil
}

// readTextFile reads a text file (or stdin), capped as token files are.
func readTextFile(path string) (string, error) {
	if path == "-" {
		b, err := io.ReadAll(io.LimitReader(os.Stdin, weights.MaxTokensFileSize+1))
		if err == nil && len(b) > weights.MaxTokensFileSize {
			err = fmt.Errorf("stdin: over the %d-byte limit for a text file", weights.MaxTokensFileSize)
		}
		return string(b), err
	}
	b, err := weights.ReadFile(path, weights.MaxTokensFileSize, "text file")
	return string(b), err
}

// threadsFlag bounds the cores the language-model engine uses.
var threadsFlag = &cli.IntFlag{Name: "threads", Usage: "cores to compute on (default: all); results are the same bits for any count"}

// lmRuntime applies --threads and tunes the collector for a heap that is
// almost all one long-lived model: collecting at 25% growth instead of
// 100% keeps peak memory near the model's size plus the activations
// (the garbage per window is small, so the extra cycles cost little).
func lmRuntime(c *cli.Context) error {
	if c.IsSet("threads") {
		n := c.Int("threads")
		if n < 1 {
			return fmt.Errorf("--threads %d: give at least 1", n)
		}
		runtime.GOMAXPROCS(n)
	}
	debug.SetGCPercent(25)
	return nil
}
