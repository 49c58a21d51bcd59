package wpatch

import (
	"fmt"
	"io"
	"math"
	"sort"
	"text/tabwriter"

	"github.com/weightops/weightops/weights"
)

// Summary describes a patch just written: what signature extract, diff to
// a patch and quantize report.
type Summary struct {
	File         string  `json:"file"`
	Kind         string  `json:"kind"`
	Tensors      int     `json:"tensors"`
	Elements     int64   `json:"elements"`
	PatchBytes   int64   `json:"patch_bytes"`
	ModelF32     int64   `json:"model_f32_bytes"`
	RatioVsModel float64 `json:"ratio_vs_model_f32"`
	// DenseF32 is the patch's values as dense F32 (4 bytes per element).
	DenseF32     int64                 `json:"dense_f32_bytes"`
	RatioVsDense float64               `json:"ratio_vs_dense_f32"`
	QuantRelL2   *float64              `json:"quant_rel_l2"`
	QuantMaxAbs  *float64              `json:"quant_max_abs"`
	QuantSNRdB   *float64              `json:"quant_snr_db"`
	PerTensor    map[string]QuantError `json:"quant_per_tensor"`
	// Files are the files written: the patch, and for a quantized
	// checkpoint also the dequantized copy and its side files.
	Files []string `json:"files"`
}

// Summarize opens the patch at path and describes it; model, when given,
// is the checkpoint it is compared with (its size in F32), errs the
// quantization errors the writer measured.
func Summarize(path string, model weights.Checkpoint, errs map[string]QuantError) (*Summary, error) {
	p, err := Open(path)
	if err != nil {
		return nil, err
	}
	defer p.Close()
	s := &Summary{File: path, Kind: p.Kind, Tensors: len(p.Tensors), PatchBytes: p.Size, Files: []string{path}}
	for _, t := range p.Tensors {
		s.Elements += t.Elements()
	}
	s.DenseF32 = 4 * s.Elements
	if s.PatchBytes > 0 {
		s.RatioVsDense = float64(s.DenseF32) / float64(s.PatchBytes)
	}
	if model != nil {
		for _, t := range model.Tensors() {
			n, _ := t.NumElements()
			s.ModelF32 += 4 * n
		}
		s.RatioVsModel = float64(s.ModelF32) / float64(s.PatchBytes)
	}
	if len(errs) > 0 {
		tot := TotalError(errs)
		r, m, snr := tot.RelL2(), tot.MaxAbs, tot.SNRdB()
		s.QuantRelL2, s.QuantMaxAbs = &r, &m
		if !math.IsInf(snr, 0) {
			s.QuantSNRdB = &snr
		}
		s.PerTensor = errs
	}
	return s, nil
}

// TotalError sums per-tensor errors in name order, so the total is the
// same float64 on every run.
func TotalError(errs map[string]QuantError) QuantError {
	names := make([]string, 0, len(errs))
	for n := range errs {
		names = append(names, n)
	}
	sort.Strings(names)
	var tot QuantError
	for _, n := range names {
		tot.Add(errs[n])
	}
	return tot
}

// WriteText prints the summary in a line (plus the per-tensor error table
// when perTensor is set and values were quantized).
func (s *Summary) WriteText(w io.Writer, perTensor bool) error {
	fmt.Fprintf(w, "%s: %s patch, %d tensors, %d values, %s", s.File, s.Kind, s.Tensors, s.Elements, weights.HumanBytes(s.PatchBytes))
	if s.ModelF32 > 0 {
		fmt.Fprintf(w, " (%.1f× smaller than the whole model in F32, %s)", s.RatioVsModel, weights.HumanBytes(s.ModelF32))
	} else if s.DenseF32 > 0 {
		fmt.Fprintf(w, " (%.1f× smaller than its values as dense F32, %s)", s.RatioVsDense, weights.HumanBytes(s.DenseF32))
	}
	fmt.Fprintln(w)
	if len(s.PerTensor) > 0 && perTensor {
		names := make([]string, 0, len(s.PerTensor))
		for n := range s.PerTensor {
			names = append(names, n)
		}
		sort.Slice(names, func(i, j int) bool { return weights.NaturalLess(names[i], names[j]) })
		tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
		fmt.Fprintln(tw, "TENSOR\tREL L2\tMAX ABS\tSNR dB")
		for _, n := range names {
			e := s.PerTensor[n]
			fmt.Fprintf(tw, "%s\t%.4f\t%.3g\t%.1f\n", n, e.RelL2(), e.MaxAbs, e.SNRdB())
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if s.QuantRelL2 != nil {
		fmt.Fprintf(w, "quantization: relative L2 error %.4f, max abs error %.3g", *s.QuantRelL2, *s.QuantMaxAbs)
		if s.QuantSNRdB != nil {
			fmt.Fprintf(w, ", SNR %.1f dB", *s.QuantSNRdB)
		}
		fmt.Fprintln(w)
	}
	return nil
}
