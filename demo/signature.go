package demo

import (
	"context"
	"fmt"
	"strings"

	"github.com/weightops/weightops/signature"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
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

// OpenSources opens the pretrained, clean and robust model files; the
// returned function closes them.
func OpenSources(pre, clean, robust string) (signature.Sources, func(), error) {
	cks, err := weights.OpenAll(pre, clean, robust)
	if err != nil {
		return signature.Sources{}, nil, err
	}
	return signature.Sources{Pre: cks[0], Clean: cks[1], Robust: cks[2]}, func() { weights.CloseAll(cks) }, nil
}

// WriteSignature extracts the RWS of the selected tensors (running
// statistics treated as mode says) into a patch at out, with values stored
// as enc says, through signature.Extract; the patch records the demo's
// selection.
func WriteSignature(ctx context.Context, src signature.Sources, st *signature.Statistics, selected []string, mode string, enc wpatch.Encoding, out string, workers int) (*PatchFile, error) {
	ext, sel, err := signature.AdjustRunningStats(mode, st.Tensors, selected)
	if err != nil {
		return nil, err
	}
	if len(sel) == 0 {
		return nil, fmt.Errorf("signature %s: the selection keeps no tensor", out)
	}
	x, err := signature.Extract(ctx, src, out, signature.Options{
		Options:      stream.Options{Workers: workers},
		Tensors:      sel,
		Stats:        &signature.Statistics{Tensors: ext, Layers: st.Layers},
		RunningStats: mode,
		Encoding:     enc,
		Metadata:     map[string]string{"selection": "tensors=" + strings.Join(sel, ","), "weightops.demo": "1"},
	})
	if err != nil {
		return nil, err
	}
	pf := &PatchFile{Path: out, Bytes: x.PatchBytes, Encoding: enc.Values}
	if enc.Values == "q" {
		pf.Encoding = enc.Quant.String()
		tot := wpatch.TotalError(x.Errors)
		pf.QuantRelL2, pf.QuantMaxAbs = tot.RelL2(), tot.MaxAbs
	}
	return pf, nil
}
