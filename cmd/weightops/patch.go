package main

import (
	"errors"
	"fmt"
	"math"
	"os"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

func init() { register(signatureCommand(), patchCommand(), quantizeCommand()) }

// parseQuant reads a quantization flag value (4bit-asym-block64).
func parseQuant(s string) (quantize.Config, error) { return quantize.ParseConfig(s) }

func signatureCommand() *cli.Command {
	return &cli.Command{
		Name:  "signature",
		Usage: "Robust Weight Signatures: extract the robust-minus-clean difference of the shallow layers as a patch",
		Subcommands: []*cli.Command{
			{
				Name:  "extract",
				Usage: "RWS = δ_c − proj_δ0(δ_c), δ_c = ROBUST − BASE, δ_0 = CLEAN − BASE (ROBUST − CLEAN without --base)",
				Flags: append([]cli.Flag{
					&cli.StringFlag{Name: "base", Usage: "pretrained checkpoint both fine-tunes started from"},
					&cli.StringFlag{Name: "clean", Required: true, Usage: "clean fine-tune (the model the signature will patch)"},
					&cli.StringFlag{Name: "robust", Required: true, Usage: "robust fine-tune (trained on corrupted data)"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "signature patch (.wpatch)"},
					&cli.IntFlag{Name: "layers", Usage: "keep the first N weight layers in network order"},
					&cli.Float64Flag{Name: "energy", Usage: "keep the shallowest weight layers holding this share of ‖RWS‖² (e.g. 0.9)"},
					&cli.StringFlag{Name: "include", Usage: "regexp: keep only matching tensors"},
					&cli.StringFlag{Name: "exclude", Usage: "regexp: drop matching tensors"},
					&cli.BoolFlag{Name: "with-norms", Usage: "with --layers/--energy, also keep the norm layers (batchnorm) before the next weight layer"},
					&cli.StringFlag{Name: "running-stats", Value: signature.StatsDifference, Usage: "batchnorm running statistics: difference (θ_robust − θ_clean: keeps variances positive), project (plain RWS), skip"},
					workersFlag, nonFiniteFlag, jsonFlag, quietFlag,
				}, encodingFlags...),
				Action: extractAction,
			},
			{
				Name:      "stats",
				Usage:     "per-layer relative norm ‖δ‖/‖θ‖ of a pair of checkpoints (and ‖RWS‖/‖θ‖ with --base): where the difference lives",
				ArgsUsage: "CLEAN ROBUST",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "base", Usage: "pretrained checkpoint (adds the RWS column)"}, workersFlag, nonFiniteFlag, jsonFlag, quietFlag},
				Action:    statsAction,
			},
		},
	}
}

// openSources opens the clean and robust models and --base.
func openSources(c *cli.Context, clean, robust string) (signature.Sources, func(), error) {
	paths := []string{clean, robust}
	if b := c.String("base"); b != "" {
		paths = append(paths, b)
	}
	cks, err := weights.OpenAll(paths...)
	if err != nil {
		return signature.Sources{}, nil, err
	}
	src := signature.Sources{Clean: cks[0], Robust: cks[1]}
	if len(cks) == 3 {
		src.Pre = cks[2]
	}
	return src, func() { weights.CloseAll(cks) }, nil
}

func extractAction(c *cli.Context) error {
	enc, err := encodingOf(c)
	if err != nil {
		return fmt.Errorf("signature extract: %w", err)
	}
	sel := signature.Selection{Layers: c.Int("layers"), Energy: c.Float64("energy"), WithNorms: c.Bool("with-norms")}
	for _, f := range []struct {
		name string
		dst  **regexp.Regexp
	}{{"include", &sel.Include}, {"exclude", &sel.Exclude}} {
		if s := c.String(f.name); s != "" {
			re, err := regexp.Compile(s)
			if err != nil {
				return fmt.Errorf("signature extract: --%s: %w", f.name, err)
			}
			*f.dst = re
		}
	}
	if _, _, err := signature.AdjustRunningStats(c.String("running-stats"), nil, nil); err != nil {
		return fmt.Errorf("signature extract: --running-stats: %w", err)
	}
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("signature extract: %w", err)
	}
	src, done, err := openSources(c, c.String("clean"), c.String("robust"))
	if err != nil {
		return err
	}
	defer done()
	x, err := signature.Extract(c.Context, src, c.String("output"), signature.Options{
		Options: so, Selection: sel, RunningStats: c.String("running-stats"), Encoding: enc,
		Metadata: map[string]string{"weightops.version": version, "selection": sel.String() + " running_stats=" + c.String("running-stats")},
	})
	bar.Done()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		return printJSON(x.Summary)
	}
	return x.WriteText(os.Stdout, false)
}

type layerRow struct {
	Layer    string   `json:"layer"`
	Params   int64    `json:"params"`
	Norm     float64  `json:"theta_norm"`
	RelDelta float64  `json:"rel_delta"`
	RelRWS   *float64 `json:"rel_rws"` // with a base only
	Energy   float64  `json:"rws_energy_cumulative"`
}

func statsAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return usagef(c, "expected CLEAN and ROBUST, got %d arguments", c.NArg())
	}
	so, _, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("signature stats: %w", err)
	}
	src, done, err := openSources(c, c.Args().Get(0), c.Args().Get(1))
	if err != nil {
		return err
	}
	defer done()
	st, err := signature.ComputeStats(c.Context, src, so)
	if err != nil {
		return err
	}
	var total, acc float64
	for _, l := range st.Layers {
		total += l.RWS2
	}
	var rows []layerRow
	for _, l := range st.Layers {
		acc += l.RWS2
		r := layerRow{Layer: l.Name, Params: l.Elements, Norm: math.Sqrt(l.Theta2), RelDelta: l.RelNorm()}
		if src.Pre != nil {
			v := l.RelRWS()
			r.RelRWS = &v
		}
		if total > 0 {
			r.Energy = acc / total
		}
		rows = append(rows, r)
	}
	if c.Bool("json") {
		if rows == nil {
			rows = []layerRow{}
		}
		base := ""
		if src.Pre != nil {
			base = src.Pre.Path()
		}
		return printJSON(struct {
			Clean  string     `json:"clean"`
			Robust string     `json:"robust"`
			Base   string     `json:"base"`
			Layers []layerRow `json:"layers"`
		}{src.Clean.Path(), src.Robust.Path(), base, rows})
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	if src.Pre != nil {
		fmt.Fprintln(tw, "LAYER\tPARAMS\t‖θ‖\t‖δc‖/‖θ‖\t‖RWS‖/‖θ‖\tCUM. RWS ENERGY")
	} else {
		fmt.Fprintln(tw, "LAYER\tPARAMS\t‖θ‖\t‖δ‖/‖θ‖\tCUM. ENERGY")
	}
	for _, r := range rows {
		if src.Pre != nil {
			fmt.Fprintf(tw, "%s\t%d\t%.4g\t%.4g\t%.4g\t%.3f\n", r.Layer, r.Params, r.Norm, r.RelDelta, *r.RelRWS, r.Energy)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%.4g\t%.4g\t%.3f\n", r.Layer, r.Params, r.Norm, r.RelDelta, r.Energy)
		}
	}
	return tw.Flush()
}

func patchCommand() *cli.Command {
	applyFlags := append([]cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output .safetensors file or directory (patch apply: or a .gguf file)"},
		&cli.Float64SliceFlag{Name: "scale", Usage: "scale of each patch, in order (repeat the flag; default 1)"},
		&cli.BoolFlag{Name: "strict", Usage: "a patch recorded for another base checkpoint is an error, not a warning"},
		&cli.BoolFlag{Name: "average-bn", Usage: "patch apply: batchnorm weights and biases get the mean of the patches' changes instead of their sum, as RWS composes signatures"},
		&cli.StringFlag{Name: "recalibrate-bn", Usage: "patch apply: then recompute every batchnorm's running statistics on these samples (IDX or .npy) through the patched model, as RWS's bn_update does (patch remove still restores the original)"},
		&cli.StringFlag{Name: "corrupt", Usage: "with --recalibrate-bn: corrupt the samples first (as eval --corrupt)"},
		&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "with --corrupt: the corruptions' seed"},
		&cli.IntFlag{Name: "bn-batch", Value: 128, Usage: "with --recalibrate-bn: samples per batch"},
		&cli.StringFlag{Name: "arch", Usage: "with --recalibrate-bn: the model's arch file (default: the one beside the model)"},
		workersFlag, memoryFlag, shardSizeFlag, shardFlag, nonFiniteFlag, jsonFlag, quietFlag,
	}, ggufFlags()...)
	return &cli.Command{
		Name:  "patch",
		Usage: "apply, remove and inspect patch files (.wpatch)",
		Subcommands: []*cli.Command{
			{Name: "apply", Usage: "θ + Σ s_i·patch_i in one pass; removable bit for bit", ArgsUsage: "MODEL PATCH...", Flags: applyFlags,
				Action: func(c *cli.Context) error { return applyAction(c, false) }},
			{Name: "remove", Usage: "undo `patch apply` exactly, given the same patches", ArgsUsage: "PATCHED PATCH...", Flags: applyFlags,
				Action: func(c *cli.Context) error { return applyAction(c, true) }},
			{Name: "info", Usage: "a patch's contents, sizes and compression ratio versus dense F32", ArgsUsage: "PATCH", Flags: []cli.Flag{jsonFlag, quietFlag},
				Action: infoAction},
		},
	}
}

func applyAction(c *cli.Context, remove bool) error {
	name := map[bool]string{false: "patch apply", true: "patch remove"}[remove]
	if c.NArg() < 2 {
		return usagef(c, "expected a model and at least one patch")
	}
	for _, f := range []string{"corrupt", "seed", "bn-batch", "arch"} {
		if c.IsSet(f) && !c.IsSet("recalibrate-bn") {
			return usagef(c, "--%s goes with --recalibrate-bn", f)
		}
	}
	if remove && c.IsSet("average-bn") {
		return usagef(c, "--average-bn is patch apply's; patch remove reads it from the patched model")
	}
	if remove && c.IsSet("recalibrate-bn") {
		return usagef(c, "--recalibrate-bn is patch apply's; patch remove restores the recorded statistics by itself")
	}
	if c.IsSet("recalibrate-bn") && isGGUF(c.String("output")) {
		return usagef(c, "--recalibrate-bn writes a classifier checkpoint, not a .gguf")
	}
	if remove && len(c.Float64Slice("scale")) > 0 {
		return fmt.Errorf("patch remove: scales come from the patched checkpoint's record; drop --scale")
	}
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	model, err := weights.Open(c.Args().First())
	if err != nil {
		return err
	}
	defer model.Close()
	var patches []*wpatch.Patch
	for _, p := range c.Args().Slice()[1:] {
		pt, err := wpatch.Open(p)
		if err != nil {
			return err
		}
		defer pt.Close()
		patches = append(patches, pt)
	}
	o := wpatch.ApplyOptions{Scales: c.Float64Slice("scale"), Strict: c.Bool("strict"), Options: so, AverageBNAffine: c.Bool("average-bn")}
	out := c.String("output")
	gopts, err := ggufOptions(c, out)
	if err != nil {
		return err
	}
	if isGGUF(out) {
		if remove {
			return usagef(c, "patch remove restores a safetensors checkpoint; a .gguf output could not carry the undo records")
		}
		var warnings []string
		o.NoUndo = true // a .gguf cannot be unpatched
		fell, err := viaGGUF(c, out, gopts, func(dir string) error {
			rep, err := wpatch.Apply(c.Context, model, patches, dir, o)
			if rep != nil {
				warnings = rep.Warnings
			}
			return err
		})
		bar.Done()
		for _, w := range warnings {
			fmt.Fprintf(os.Stderr, "weightops: warning: %s\n", w)
		}
		if err != nil {
			return err
		}
		return printGGUF(c, out, gopts.Type, fell)
	}
	var rep *wpatch.ApplyReport
	var recal *signature.Recalibrated
	switch {
	case remove:
		rep, err = wpatch.Remove(c.Context, model, patches, c.String("output"), o)
	case c.IsSet("recalibrate-bn"):
		var r signature.Recalibration
		if r, err = recalibration(c); err != nil {
			return err
		}
		rep, recal, err = signature.ApplyRecalibrated(c.Context, model, patches, c.String("output"), o, r)
	default:
		rep, err = wpatch.Apply(c.Context, model, patches, c.String("output"), o)
	}
	bar.Done()
	if err != nil {
		return err
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(os.Stderr, "weightops: warning: %s\n", w)
	}
	if c.Bool("json") {
		return printJSON(struct {
			*wpatch.ApplyReport
			Recalibrated *signature.Recalibrated `json:"bn_recalibrated,omitempty"`
		}{rep, recal})
	}
	if recal != nil {
		fmt.Fprintf(os.Stderr, "batchnorm statistics recalibrated on %d samples of %s (%d batches%s): %d tensors\n",
			recal.Samples, recal.Data, recal.Batches, map[bool]string{true: ", " + recal.Corruption}[recal.Corruption != ""], len(recal.Tensors))
	}
	for _, f := range rep.Files {
		fmt.Println(f)
	}
	return nil
}

func infoAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one PATCH")
	}
	p, err := wpatch.Open(c.Args().First())
	if err != nil {
		return err
	}
	defer p.Close()
	var dense int64
	for _, t := range p.Tensors {
		dense += 4 * t.Elements()
	}
	if c.Bool("json") {
		return printJSON(map[string]any{
			"file": p.Path, "format_version": p.FormatVersion, "kind": p.Kind, "base_sha256": p.BaseSHA256,
			"metadata": p.Metadata, "tensors": p.Tensors, "bytes": p.Size, "dense_f32_bytes": dense,
			"ratio_vs_dense_f32": float64(dense) / float64(p.Size),
		})
	}
	fmt.Printf("%s: weightops patch v%d, kind %s\n", p.Path, p.FormatVersion, p.Kind)
	if p.BaseSHA256 != "" {
		fmt.Printf("applies to: sha256 %s\n", p.BaseSHA256)
	}
	keys := make([]string, 0, len(p.Metadata))
	for k := range p.Metadata {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		fmt.Printf("  %s: %s\n", k, p.Metadata[k])
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "\nTENSOR\tSHAPE\tDTYPE\tENCODING\tVALUES\tNON-ZERO\tBYTES\tVS F32")
	for _, t := range p.Tensors {
		vals := t.Values
		if t.Quant != "" {
			vals = t.Quant
		}
		ti := weights.TensorInfo{Shape: t.Shape}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%d\t%d\t%.1f×\n", t.Name, ti.ShapeString(), t.DType, t.Encoding, vals, t.NNZ, t.Length, float64(4*t.Elements())/float64(max(1, t.Length)))
	}
	tw.Flush()
	fmt.Printf("\n%d tensors, %s on disk, %s as dense F32: %.1f× smaller\n", len(p.Tensors), weights.HumanBytes(p.Size), weights.HumanBytes(dense), float64(dense)/float64(p.Size))
	return nil
}

func quantizeCommand() *cli.Command {
	return &cli.Command{
		Name:      "quantize",
		Usage:     "quantize a patch (re-encode its values) or a checkpoint (dequantized copy + quantized container; or, to a .gguf, ggml's formats)",
		ArgsUsage: "IN",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "a .wpatch for a patch IN; a directory for a checkpoint IN, or a .gguf file (ggml's --type q8_0, q4_0, q4_k, …)"},
			&cli.StringFlag{Name: "codec", Usage: "a codec by name instead of the flags below: ggml's q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k (blocks byte-identical to llama.cpp's) or a spec such as 4bit-sym-block64"},
			&cli.IntFlag{Name: "bits", Value: 4, Usage: "code width k (2, 3, 4, 8; any of 1..8)"},
			&cli.IntFlag{Name: "group", Value: 64, Usage: "block size, with --granularity block"},
			&cli.StringFlag{Name: "scheme", Value: "sym", Usage: "sym (absmax), asym (min-max), log (sign + log2 magnitude) or tanh (companded)"},
			&cli.StringFlag{Name: "granularity", Value: "block", Usage: "block, channel (per output row) or tensor"},
			&cli.BoolFlag{Name: "f16-scales", Usage: "store scales as F16 (smaller, see README)"},
			&cli.BoolFlag{Name: "mse", Usage: "per group, clip the range where that lowers the squared error (block/channel)"},
			shardFlag, workersFlag, memoryFlag, nonFiniteFlag, jsonFlag, quietFlag,
		}, ggufFlags()...),
		Action: quantizeAction,
	}
}

// quantConfig maps quantize's flags to a codec.
func quantConfig(c *cli.Context) (quantize.Config, error) {
	if c.IsSet("codec") {
		for _, f := range []string{"bits", "group", "scheme", "granularity", "f16-scales", "mse"} {
			if c.IsSet(f) {
				return quantize.Config{}, fmt.Errorf("--%s and --codec both choose the codec; give one", f)
			}
		}
		return quantize.ParseConfig(c.String("codec"))
	}
	cfg := quantize.Config{Bits: c.Int("bits"), F16Scales: c.Bool("f16-scales"), MSE: c.Bool("mse")}
	var err error
	if cfg.Scheme, err = quantize.ParseScheme(c.String("scheme")); err != nil {
		return cfg, err
	}
	if cfg.Granularity, err = quantize.ParseGranularity(c.String("granularity")); err != nil {
		return cfg, err
	}
	if cfg.Granularity == quantize.PerBlock {
		cfg.BlockSize = c.Int("group")
	} else if c.IsSet("group") {
		return cfg, fmt.Errorf("--group is the block size of --granularity block, not %s", c.String("granularity"))
	}
	return cfg, cfg.Validate()
}

func quantizeAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef(c, "expected one IN")
	}
	if out := c.String("output"); isGGUF(out) {
		// ggml's own block formats, as convert writes them.
		for _, f := range []string{"codec", "bits", "group", "scheme", "granularity", "f16-scales", "mse", "shard"} {
			if c.IsSet(f) {
				return usagef(c, "--%s is a weightops codec's; a .gguf output takes ggml's --type", f)
			}
		}
		if !c.IsSet("type") {
			return usagef(c, "a .gguf output needs --type (q8_0, q4_0, q4_1, q5_0, q5_1, q4_k, q6_k, f16, bf16, f32)")
		}
		src, err := weights.Open(c.Args().First())
		if err != nil {
			return err
		}
		defer src.Close()
		return convertGGUF(c, src, c.Args().First(), out)
	}
	if _, err := ggufOptions(c, c.String("output")); err != nil {
		return err
	}
	cfg, err := quantConfig(c)
	if err != nil {
		if strings.HasPrefix(err.Error(), "quantize: ") {
			return err // the quantize package names itself
		}
		return fmt.Errorf("quantize: %w", err)
	}
	so, bar, err := streamOptions(c)
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	in, out := c.Args().First(), c.String("output")
	isPatch, err := wpatch.IsPatch(in)
	if err != nil {
		return err
	}
	var s *wpatch.Summary
	if isPatch {
		if so.Shard != nil {
			return fmt.Errorf("quantize: --shard splits a checkpoint; %s is a patch", in)
		}
		p, err := wpatch.Open(in)
		if err != nil {
			return err
		}
		defer p.Close()
		s, err = wpatch.Requantize(c.Context, p, out, cfg, so)
		if err != nil {
			return err
		}
	} else {
		ck, err := weights.Open(in)
		if err != nil {
			return err
		}
		defer ck.Close()
		s, err = wpatch.QuantizeCheckpoint(c.Context, ck, out, cfg, so)
		bar.Done()
		if err != nil {
			return err
		}
	}
	if c.Bool("json") {
		return printJSON(s)
	}
	return s.WriteText(os.Stdout, !c.Bool("quiet"))
}

// recalibration maps --recalibrate-bn and its companions to options.
func recalibration(c *cli.Context) (signature.Recalibration, error) {
	r := signature.Recalibration{Arch: c.String("arch"), DataName: c.String("recalibrate-bn")}
	var err error
	if r.Data, err = dataset.LoadUnlabelled(r.DataName); err != nil {
		return r, err
	}
	if r.Corrupt, err = dataset.ParseCorruptions(c.String("corrupt")); err != nil {
		return r, fmt.Errorf("patch apply: --corrupt: %w", err)
	}
	if c.Int("bn-batch") < 1 {
		return r, errors.New("patch apply: --bn-batch must be at least 1")
	}
	r.BatchSize, r.Seed = c.Int("bn-batch"), c.Uint64("seed")
	return r, nil
}
