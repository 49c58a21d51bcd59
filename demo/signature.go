package demo

import (
	"fmt"
	"os"
	"strings"

	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/weights"
)

// ShallowTensors selects the first n weight layers in network order
// together with the normalisation layers (batchnorm: weight, bias and
// running statistics) that come before the next weight layer. The demo's
// signatures cover these: a corruption shifts the statistics of the
// early feature maps, so the batchnorms after the early convolutions carry
// much of what a robust fine-tune learned (the demo's ablation rows show
// convolution weights alone recover far less).
func ShallowTensors(layers []signature.LayerStat, n int) []string {
	return signature.Selection{Layers: n, WithNorms: true}.Select(layers)
}

// AllTensors lists every tensor of the layers.
func AllTensors(layers []signature.LayerStat) []string {
	var out []string
	for _, l := range layers {
		out = append(out, l.Tensors...)
	}
	return out
}

// PatchFile describes one patch written by the demo.
type PatchFile struct {
	// Path is the file; Bytes its size on disk (header and footer
	// included).
	Path  string `json:"path"`
	Bytes int64  `json:"bytes"`
	// Encoding is "f32" or the quantization ("4bit-asym-block64").
	Encoding string `json:"encoding"`
	// QuantRelL2 and QuantMaxAbs measure the quantization error over the
	// whole signature (zero for F32).
	QuantRelL2  float64 `json:"quant_rel_l2,omitempty"`
	QuantMaxAbs float64 `json:"quant_max_abs,omitempty"`
}

// Triple is the three checkpoints a signature is computed from.
type Triple struct {
	Pre, Clean, Robust weights.Checkpoint
}

// OpenTriple opens the three model files; close them with Close.
func OpenTriple(pre, clean, robust string) (*Triple, error) {
	var cks []weights.Checkpoint
	for _, p := range []string{pre, clean, robust} {
		c, err := weights.Open(p)
		if err != nil {
			for _, o := range cks {
				o.Close()
			}
			return nil, err
		}
		cks = append(cks, c)
	}
	return &Triple{cks[0], cks[1], cks[2]}, nil
}

// Close closes the checkpoints.
func (t *Triple) Close() {
	for _, c := range []weights.Checkpoint{t.Pre, t.Clean, t.Robust} {
		c.Close()
	}
}

// Stats computes the per-tensor signature statistics and groups them by
// layer in network order.
func (t *Triple) Stats(workers int) ([]signature.TensorStat, []signature.LayerStat, error) {
	st, err := signature.SignatureStats(t.Pre, t.Clean, t.Robust, workers)
	if err != nil {
		return nil, nil, err
	}
	return st, signature.GroupStats(t.Clean.Tensors(), st), nil
}

// WriteSignature extracts the RWS of the selected tensors into a patch at
// out, with values stored as enc says, recording the sources as
// `weightops signature extract` does (the clean model is the patch's
// base).
func (t *Triple) WriteSignature(stats []signature.TensorStat, selected []string, enc signature.Encoding, out string, workers int) (*PatchFile, error) {
	if len(selected) == 0 {
		return nil, fmt.Errorf("signature %s: the selection keeps no tensor", out)
	}
	md := map[string]string{"clean": t.Clean.Path(), "robust": t.Robust.Path(), "base": t.Pre.Path(),
		"selection": "tensors=" + strings.Join(selected, ","), "weightops.demo": "1"}
	var srcs []string
	var cleanSHA string
	for _, ck := range []weights.Checkpoint{t.Pre, t.Clean, t.Robust} {
		d, err := signature.CheckpointDigest(ck)
		if err != nil {
			return nil, err
		}
		if ck == t.Clean {
			cleanSHA = d
		}
		srcs = append(srcs, ck.Path()+"="+d)
	}
	md["sources_sha256"] = strings.Join(srcs, ",")
	w, err := signature.CreatePatch(out, "rws", md, enc)
	if err != nil {
		return nil, err
	}
	w.SetBase(cleanSHA)
	if err := signature.Extract(t.Pre, t.Clean, t.Robust, stats, selected, w, workers); err != nil {
		w.Abort()
		return nil, fmt.Errorf("signature %s: %w", out, err)
	}
	errs := w.Errors()
	if err := w.Commit(); err != nil {
		return nil, err
	}
	st, err := os.Stat(out)
	if err != nil {
		return nil, err
	}
	pf := &PatchFile{Path: out, Bytes: st.Size(), Encoding: enc.Values}
	if enc.Values == "q" {
		pf.Encoding = enc.Quant.String()
		var tot signature.QuantError
		for _, e := range errs {
			tot.Add(e)
		}
		pf.QuantRelL2, pf.QuantMaxAbs = tot.RelL2(), tot.MaxAbs
	}
	return pf, nil
}

// Running-statistics modes, as signature defines them.
const (
	StatsDifference = signature.StatsDifference
	StatsProject    = signature.StatsProject
	StatsSkip       = signature.StatsSkip
)

// IsRunningStat reports whether a tensor is a batchnorm running statistic.
func IsRunningStat(name string) bool { return signature.IsRunningStat(name) }

// ForStats is signature.AdjustRunningStats.
func ForStats(mode string, stats []signature.TensorStat, selected []string) ([]signature.TensorStat, []string, error) {
	return signature.AdjustRunningStats(mode, stats, selected)
}
