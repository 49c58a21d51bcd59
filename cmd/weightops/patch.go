package main

import (
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/weights"
)

func init() { register(signatureCommand(), patchCommand(), quantizeCommand()) }

// encodingFlags choose how patch values are stored.
var encodingFlags = []cli.Flag{
	&cli.StringFlag{Name: "values", Value: "f32", Usage: "patch values: f32, f16, or q (with --quantize)"},
	&cli.StringFlag{Name: "quantize", Usage: "quantize patch values, e.g. 4bit-sym-block64, 8bit-asym-channel, 4bit-sym-block32-f16, 4bit-asym-block64-mse"},
	&cli.StringFlag{Name: "sparse", Value: "auto", Usage: "sparse storage: auto (under 1/3 non-zero), never, always"},
}

func encodingOf(c *cli.Context) (signature.Encoding, error) {
	enc := signature.Encoding{Values: c.String("values"), Sparse: c.String("sparse")}
	if s := c.String("quantize"); s != "" {
		q, err := quantize.ParseConfig(s)
		if err != nil {
			return enc, err
		}
		enc.Values, enc.Quant = "q", q
	}
	return enc, nil
}

// patchSummary is what extract, diff -o x.wpatch and quantize print.
type patchSummary struct {
	File         string                          `json:"file"`
	Kind         string                          `json:"kind"`
	Tensors      int                             `json:"tensors"`
	Elements     int64                           `json:"elements"`
	PatchBytes   int64                           `json:"patch_bytes"`
	ModelF32     int64                           `json:"model_f32_bytes"`
	RatioVsModel float64                         `json:"ratio_vs_model_f32"`
	QuantRelL2   *float64                        `json:"quant_rel_l2,omitempty"`
	QuantMaxAbs  *float64                        `json:"quant_max_abs,omitempty"`
	QuantSNRdB   *float64                        `json:"quant_snr_db,omitempty"`
	PerTensor    map[string]signature.QuantError `json:"quant_per_tensor,omitempty"`
}

func summarize(path string, model weights.Checkpoint, errs map[string]signature.QuantError) (*patchSummary, error) {
	p, err := signature.OpenPatch(path)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	s := &patchSummary{File: path, Kind: p.Kind, Tensors: len(p.Tensors), PatchBytes: p.Size}
	for _, t := range p.Tensors {
		s.Elements += t.Elements()
	}
	if model != nil {
		for _, t := range model.Tensors() {
			n, _ := t.NumElements()
			s.ModelF32 += 4 * n
		}
		s.RatioVsModel = float64(s.ModelF32) / float64(s.PatchBytes)
	}
	if len(errs) > 0 {
		var tot signature.QuantError
		for _, e := range errs {
			tot.Add(e)
		}
		r, m, snr := tot.RelL2(), tot.MaxAbs, tot.SNRdB()
		s.QuantRelL2, s.QuantMaxAbs = &r, &m
		if !math.IsInf(snr, 0) {
			s.QuantSNRdB = &snr
		}
		s.PerTensor = errs
	}
	return s, nil
}

func printSummary(c *cli.Context, s *patchSummary) error {
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(s)
	}
	fmt.Printf("%s: %s patch, %d tensors, %d values, %s", s.File, s.Kind, s.Tensors, s.Elements, weights.HumanBytes(s.PatchBytes))
	if s.ModelF32 > 0 {
		fmt.Printf(" (%.1f× smaller than the whole model in F32, %s)", s.RatioVsModel, weights.HumanBytes(s.ModelF32))
	}
	fmt.Println()
	if len(s.PerTensor) > 0 && c.Command.Name == "quantize" {
		names := make([]string, 0, len(s.PerTensor))
		for n := range s.PerTensor {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return weights.NaturalLess(names[i], names[j]) })
		tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TENSOR\tREL L2\tMAX ABS\tSNR dB")
		for _, n := range names {
			e := s.PerTensor[n]
			fmt.Fprintf(tw, "%s\t%.4f\t%.3g\t%.1f\n", n, e.RelL2(), e.MaxAbs, e.SNRdB())
		}
		tw.Flush()
	}
	if s.QuantRelL2 != nil {
		fmt.Printf("quantization: relative L2 error %.4f, max abs error %.3g", *s.QuantRelL2, *s.QuantMaxAbs)
		if s.QuantSNRdB != nil {
			fmt.Printf(", SNR %.1f dB", *s.QuantSNRdB)
		}
		fmt.Println()
	}
	return nil
}

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
					workersFlag, jsonFlag, quietFlag,
				}, encodingFlags...),
				Action: extractAction,
			},
			{
				Name:      "stats",
				Usage:     "per-layer relative norm ‖δ‖/‖θ‖ of a pair of checkpoints (and ‖RWS‖/‖θ‖ with --base): where the difference lives",
				ArgsUsage: "CLEAN ROBUST",
				Flags:     []cli.Flag{&cli.StringFlag{Name: "base", Usage: "pretrained checkpoint (adds the RWS column)"}, workersFlag, jsonFlag},
				Action:    statsAction,
			},
		},
	}
}

// layerStats opens the clean and robust models (and --base) and computes
// the signature statistics per tensor and per layer in one pass.
func layerStats(c *cli.Context, clean, robust string) (pre, cl, rb weights.Checkpoint, stats []signature.TensorStat, layers []signature.LayerStat, closeFn func(), err error) {
	paths := []string{clean, robust}
	if b := c.String("base"); b != "" {
		paths = append(paths, b)
	}
	cks, err := openAll(paths...)
	if err != nil {
		return
	}
	if len(cks) == 3 {
		pre = cks[2]
	}
	cl, rb, closeFn = cks[0], cks[1], func() { closeAll(cks) }
	if stats, err = signature.SignatureStats(pre, cl, rb, c.Int("workers")); err != nil {
		closeFn()
		return
	}
	layers = signature.GroupStats(cl.Tensors(), stats)
	return
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
	pre, clean, robust, stats, layers, done, err := layerStats(c, c.String("clean"), c.String("robust"))
	if err != nil {
		return err
	}
	defer done()
	stats, selected, err := signature.AdjustRunningStats(c.String("running-stats"), stats, sel.Select(layers))
	if err != nil {
		return fmt.Errorf("signature extract: --running-stats: %w", err)
	}
	if len(selected) == 0 {
		return fmt.Errorf("signature extract: the selection keeps no tensor")
	}
	md := map[string]string{"weightops.version": version, "clean": clean.Path(), "robust": robust.Path()}
	var srcs []string
	for _, ck := range []weights.Checkpoint{pre, clean, robust} {
		if ck == nil {
			continue
		}
		d, err := signature.CheckpointDigest(ck)
		if err != nil {
			return err
		}
		srcs = append(srcs, filepath.Base(ck.Path())+"="+d)
	}
	md["sources_sha256"] = strings.Join(srcs, ",")
	if pre != nil {
		md["base"] = pre.Path()
	}
	md["selection"] = fmt.Sprintf("layers=%d energy=%g with_norms=%t include=%q exclude=%q running_stats=%s", sel.Layers, sel.Energy, sel.WithNorms, c.String("include"), c.String("exclude"), c.String("running-stats"))
	w, err := signature.CreatePatch(c.String("output"), "rws", md, enc)
	if err != nil {
		return err
	}
	// The signature patches the clean model: that is its base.
	w.SetBase(strings.SplitN(srcs[len(srcs)-2], "=", 2)[1])
	if err := signature.Extract(pre, clean, robust, stats, selected, w, c.Int("workers")); err != nil {
		w.Abort()
		return err
	}
	errs := w.Errors()
	if err := w.Commit(); err != nil {
		return err
	}
	s, err := summarize(c.String("output"), clean, errs)
	if err != nil {
		return err
	}
	return printSummary(c, s)
}

type layerRow struct {
	Layer    string  `json:"layer"`
	Params   int64   `json:"params"`
	Norm     float64 `json:"theta_norm"`
	RelDelta float64 `json:"rel_delta"`
	RelRWS   float64 `json:"rel_rws,omitempty"`
	Energy   float64 `json:"rws_energy_cumulative"`
}

func statsAction(c *cli.Context) error {
	if c.NArg() != 2 {
		return fmt.Errorf("signature stats: expected CLEAN and ROBUST, got %d arguments", c.NArg())
	}
	pre, _, _, _, layers, done, err := layerStats(c, c.Args().Get(0), c.Args().Get(1))
	if err != nil {
		return err
	}
	defer done()
	var total, acc float64
	for _, l := range layers {
		total += l.RWS2
	}
	var rows []layerRow
	for _, l := range layers {
		acc += l.RWS2
		r := layerRow{Layer: l.Name, Params: l.Elements, Norm: math.Sqrt(l.Theta2), RelDelta: l.RelNorm()}
		if pre != nil {
			r.RelRWS = l.RelRWS()
		}
		if total > 0 {
			r.Energy = acc / total
		}
		rows = append(rows, r)
	}
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(rows)
	}
	tw := tabwriter.NewWriter(os.Stdout, 0, 0, 2, ' ', 0)
	if pre != nil {
		fmt.Fprintln(tw, "LAYER\tPARAMS\t‖θ‖\t‖δc‖/‖θ‖\t‖RWS‖/‖θ‖\tCUM. RWS ENERGY")
	} else {
		fmt.Fprintln(tw, "LAYER\tPARAMS\t‖θ‖\t‖δ‖/‖θ‖\tCUM. ENERGY")
	}
	for _, r := range rows {
		if pre != nil {
			fmt.Fprintf(tw, "%s\t%d\t%.4g\t%.4g\t%.4g\t%.3f\n", r.Layer, r.Params, r.Norm, r.RelDelta, r.RelRWS, r.Energy)
		} else {
			fmt.Fprintf(tw, "%s\t%d\t%.4g\t%.4g\t%.3f\n", r.Layer, r.Params, r.Norm, r.RelDelta, r.Energy)
		}
	}
	return tw.Flush()
}

func patchCommand() *cli.Command {
	applyFlags := []cli.Flag{
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "output .safetensors file or directory"},
		&cli.Float64SliceFlag{Name: "scale", Usage: "scale of each patch, in order (repeat the flag; default 1)"},
		&cli.BoolFlag{Name: "strict", Usage: "a patch recorded for another base checkpoint is an error, not a warning"},
		workersFlag, shardSizeFlag, shardFlag, jsonFlag, quietFlag,
	}
	return &cli.Command{
		Name:  "patch",
		Usage: "apply, remove and inspect patch files (.wpatch)",
		Subcommands: []*cli.Command{
			{Name: "apply", Usage: "θ + Σ s_i·patch_i in one pass; removable bit for bit", ArgsUsage: "MODEL PATCH...", Flags: applyFlags,
				Action: func(c *cli.Context) error { return applyAction(c, false) }},
			{Name: "remove", Usage: "undo `patch apply` exactly, given the same patches", ArgsUsage: "PATCHED PATCH...", Flags: applyFlags,
				Action: func(c *cli.Context) error { return applyAction(c, true) }},
			{Name: "info", Usage: "a patch's contents, sizes and compression ratio versus dense F32", ArgsUsage: "PATCH", Flags: []cli.Flag{jsonFlag},
				Action: infoAction},
		},
	}
}

func applyAction(c *cli.Context, remove bool) error {
	name := map[bool]string{false: "patch apply", true: "patch remove"}[remove]
	if c.NArg() < 2 {
		return fmt.Errorf("%s: expected a model and at least one patch", name)
	}
	model, err := weights.Open(c.Args().First())
	if err != nil {
		return err
	}
	defer model.Close()
	var patches []*signature.Patch
	for _, p := range c.Args().Slice()[1:] {
		pt, err := signature.OpenPatch(p)
		if err != nil {
			return err
		}
		defer pt.Close()
		patches = append(patches, pt)
	}
	o := signature.ApplyOptions{Scales: c.Float64Slice("scale"), Strict: c.Bool("strict"), Workers: c.Int("workers")}
	if o.Shard, err = shardOf(c); err != nil {
		return fmt.Errorf("%s: --shard: %w", name, err)
	}
	if s := c.String("shard-size"); s != "" {
		if o.ShardSize, err = weights.ParseBytes(s); err != nil {
			return fmt.Errorf("%s: --shard-size: %w", name, err)
		}
	}
	var rep *signature.ApplyReport
	if remove {
		if len(o.Scales) > 0 {
			return fmt.Errorf("patch remove: scales come from the patched checkpoint's record; drop --scale")
		}
		rep, err = signature.Remove(model, patches, c.String("output"), o)
	} else {
		rep, err = signature.Apply(model, patches, c.String("output"), o)
	}
	if err != nil {
		return err
	}
	for _, w := range rep.Warnings {
		fmt.Fprintf(os.Stderr, "weightops: warning: %s\n", w)
	}
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(rep)
	}
	for _, f := range rep.Files {
		fmt.Println(f)
	}
	return nil
}

func infoAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("patch info: expected one PATCH")
	}
	p, err := signature.OpenPatch(c.Args().First())
	if err != nil {
		return err
	}
	defer p.Close()
	var dense int64
	for _, t := range p.Tensors {
		dense += 4 * t.Elements()
	}
	if c.Bool("json") {
		return json.NewEncoder(os.Stdout).Encode(map[string]any{
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
		Usage:     "quantize a patch (re-encode its values) or a checkpoint (dequantized copy + quantized container)",
		ArgsUsage: "IN",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Required: true, Usage: "a .wpatch for a patch IN; a directory for a checkpoint IN"},
			&cli.IntFlag{Name: "bits", Value: 4, Usage: "code width k (2, 3, 4, 8; any of 1..8)"},
			&cli.IntFlag{Name: "group", Value: 64, Usage: "block size; 0 with --granularity channel or tensor"},
			&cli.StringFlag{Name: "scheme", Value: "sym", Usage: "sym (absmax) or asym (min-max)"},
			&cli.StringFlag{Name: "granularity", Value: "block", Usage: "block, channel (per output row) or tensor"},
			&cli.BoolFlag{Name: "f16-scales", Usage: "store scales as F16 (smaller, see README)"},
			&cli.BoolFlag{Name: "mse", Usage: "per group, clip the range where that lowers the squared error (block/channel)"},
			shardFlag, workersFlag, jsonFlag, quietFlag,
		},
		Action: quantizeAction,
	}
}

func quantizeAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return fmt.Errorf("quantize: expected one IN")
	}
	spec := fmt.Sprintf("%dbit-%s-%s", c.Int("bits"), c.String("scheme"), c.String("granularity"))
	if c.String("granularity") == "block" {
		spec += fmt.Sprint(c.Int("group"))
	}
	if c.Bool("f16-scales") {
		spec += "-f16"
	}
	if c.Bool("mse") {
		spec += "-mse"
	}
	cfg, err := quantize.ParseConfig(spec)
	if err != nil {
		return fmt.Errorf("quantize: %w", err)
	}
	in, out := c.Args().First(), c.String("output")
	enc := signature.Encoding{Values: "q", Quant: cfg}
	if p, err := signature.OpenPatch(in); err == nil {
		defer p.Close()
		md := map[string]string{}
		for k, v := range p.Metadata {
			md[k] = v
		}
		md["quantized"] = cfg.String()
		w, err := signature.CreatePatch(out, p.Kind, md, enc)
		if err != nil {
			return err
		}
		w.SetBase(p.BaseSHA256)
		if err := signature.Requantize(p, w, c.Int("workers")); err != nil {
			w.Abort()
			return err
		}
		errs := w.Errors()
		if err := w.Commit(); err != nil {
			return err
		}
		s, err := summarize(out, nil, errs)
		if err != nil {
			return err
		}
		dense := 4 * s.Elements
		s.ModelF32, s.RatioVsModel = dense, float64(dense)/float64(s.PatchBytes)
		return printSummary(c, s)
	}
	ck, err := weights.Open(in)
	if err != nil {
		return err
	}
	defer ck.Close()
	if err := os.MkdirAll(out, 0o755); err != nil {
		return err
	}
	part, err := shardOf(c)
	if err != nil {
		return fmt.Errorf("quantize: --shard: %w", err)
	}
	// A sharded run writes model-i-of-n.safetensors and model-i-of-n.wq.
	src, stem := ck.Tensors(), "model"
	if part != nil {
		src, stem = part.Select(src), strings.TrimSuffix(part.FileName(), ".safetensors")
	}
	w, err := signature.CreatePatch(filepath.Join(out, stem+".wq"), "weights", map[string]string{"source": in, "quantized": cfg.String()}, enc)
	if err != nil {
		return err
	}
	var infos []weights.TensorInfo
	for _, t := range src {
		if t.DType.IsFloat() && !t.DType.Writable() {
			t.DType = weights.F32
		}
		infos = append(infos, t)
	}
	md := map[string]string{"format": "pt", "weightops.quantized": cfg.String(), "weightops.source": in}
	sw, err := weights.CreateSafetensors(filepath.Join(out, stem+".safetensors"), infos, md)
	if err != nil {
		w.Abort()
		return err
	}
	err = signature.QuantizeCheckpoint(ck, src, w, c.Int("workers"), func(t weights.Tensor) error { return sw.WriteTensor(t.Name, t.Data) })
	if err != nil {
		w.Abort()
		sw.Abort()
		return err
	}
	errs := w.Errors()
	if err := w.Commit(); err != nil {
		sw.Abort()
		return err
	}
	if err := sw.Commit(); err != nil {
		return err
	}
	// config.json, tokenizer and arch files go beside the dequantized copy.
	if _, err := merge.CopyModelFiles(in, out); err != nil {
		return err
	}
	s, err := summarize(filepath.Join(out, stem+".wq"), ck, errs)
	if err != nil {
		return err
	}
	return printSummary(c, s)
}
