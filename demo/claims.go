package demo

import (
	"fmt"
	"math"
	"strings"
)

// Thresholds are the margins the claims are checked with.
type Thresholds struct {
	// MinGain is the least rise, in accuracy on its own corruption, that
	// a signature must bring the clean model.
	MinGain float64
	// MaxCleanDrop is the most clean accuracy a single signature may cost.
	MaxCleanDrop float64
	// MaxQuantGap bounds |4-bit − F32| on the signature's corruption and
	// on clean data.
	MaxQuantGap float64
	// MinComposedGain is the least rise the composed signatures must bring
	// on every corruption at once.
	MinComposedGain float64
	// MinRatio and MaxRelL2 are the RWS size claim: a quantized signature
	// of the shallow layers at least MinRatio× smaller than the full F32
	// model, with relative L2 error at most MaxRelL2.
	MinRatio, MaxRelL2 float64
	// MergeTolerance is how far below task arithmetic Breadcrumbs may be,
	// on the mean over corruptions, for "breadcrumbs ≥ task arithmetic".
	MergeTolerance float64
}

// DefaultThresholds are the claims as stated (README, "Demo"): a clear
// gain (≥ 5 points) at a small clean cost (≤ 3 points), 4-bit within 2
// points of F32, composed signatures gaining ≥ 2 points on every
// corruption at once, Breadcrumbs at least level with task arithmetic,
// the 4-bit signature ≥ 13× smaller with ≤ 10% relative L2 error. The demo
// reports each as held or not; across training seeds some do not always
// hold (the tests in cmd/weightops assert margins measured over seeds).
var DefaultThresholds = Thresholds{
	MinGain:         0.05,
	MaxCleanDrop:    0.03,
	MaxQuantGap:     0.02,
	MinComposedGain: 0.02,
	MinRatio:        13,
	MaxRelL2:        0.10,
	MergeTolerance:  0,
}

// Claim is one statement the numbers are meant to show.
type Claim struct {
	ID        string `json:"id"`
	Statement string `json:"statement"`
	Held      bool   `json:"held"`
	// Detail gives the numbers behind the verdict.
	Detail string `json:"detail"`
}

func pct(x float64) string { return fmt.Sprintf("%.1f", 100*x) }

func signedPts(x float64) string { return fmt.Sprintf("%+.1f pts", 100*x) }

// CheckClaims evaluates the demo's claims on a result.
func CheckClaims(res *Result, th Thresholds) []Claim {
	var out []Claim
	clean, okClean := res.Row("clean")
	names := make([]string, len(res.Corruptions))
	for i, c := range res.Corruptions {
		names[i] = c.Name
	}
	if !okClean {
		return []Claim{{ID: "clean", Statement: "the clean model was evaluated", Detail: "no clean row"}}
	}

	// 1. Each signature helps on its own corruption, at little clean cost.
	for _, c := range names {
		row, ok := res.Row(rowSigF32(c))
		cl := Claim{ID: "patch-gain:" + c,
			Statement: fmt.Sprintf("the %s signature (at its scale chosen on held-out images) raises the clean model's %s accuracy by ≥ %s pts and costs ≤ %s pts of clean accuracy", c, c, pct(th.MinGain), pct(th.MaxCleanDrop))}
		if ok && row.Invalid != "" {
			cl.Detail = "invalid model: " + row.Invalid
		} else if ok {
			gain := row.Corrupted[c] - clean.Corrupted[c]
			drop := clean.Clean - row.Clean
			cl.Held = gain >= th.MinGain && drop <= th.MaxCleanDrop
			cl.Detail = fmt.Sprintf("%s: %s → %s (%s); clean %s → %s (%s)", c, pct(clean.Corrupted[c]), pct(row.Corrupted[c]), signedPts(gain),
				pct(clean.Clean), pct(row.Clean), signedPts(-drop))
		}
		out = append(out, cl)
	}

	// 2. 4-bit signatures lose almost nothing against F32 ones.
	for _, c := range names {
		f, ok1 := res.Row(rowSigF32(c))
		q, ok2 := res.Row(rowSigQuant(c))
		cl := Claim{ID: "quant:" + c, Statement: fmt.Sprintf("the 4-bit %s signature is within %s pts of the F32 one (on %s and clean)", c, pct(th.MaxQuantGap), c)}
		if ok1 && ok2 && (f.Invalid != "" || q.Invalid != "") {
			cl.Detail = "invalid model: " + f.Invalid + q.Invalid
		} else if ok1 && ok2 {
			d1, d2 := q.Corrupted[c]-f.Corrupted[c], q.Clean-f.Clean
			cl.Held = math.Abs(d1) <= th.MaxQuantGap && math.Abs(d2) <= th.MaxQuantGap
			cl.Detail = fmt.Sprintf("%s: %s vs %s (%s); clean: %s vs %s (%s)", c, pct(q.Corrupted[c]), pct(f.Corrupted[c]), signedPts(d1), pct(q.Clean), pct(f.Clean), signedPts(d2))
		}
		out = append(out, cl)
	}

	// 3. Composed signatures cover several corruptions at once.
	for _, name := range []string{rowComposedF32, rowComposedQuant} {
		row, ok := findPrefix(res, name+" ×")
		cl := Claim{ID: "composed:" + name, Statement: fmt.Sprintf("%s raises accuracy on every corruption by ≥ %s pts at once", name, pct(th.MinComposedGain))}
		if ok && row.Invalid != "" {
			cl.Detail = "invalid model: " + row.Invalid
		} else if ok {
			cl.Held = true
			var parts []string
			for _, c := range names {
				g := row.Corrupted[c] - clean.Corrupted[c]
				if g < th.MinComposedGain {
					cl.Held = false
				}
				parts = append(parts, fmt.Sprintf("%s %s", c, signedPts(g)))
			}
			parts = append(parts, "clean "+signedPts(row.Clean-clean.Clean))
			cl.Detail = fmt.Sprintf("scale %g: %s", res.ComposeScale, strings.Join(parts, ", "))
		}
		out = append(out, cl)
	}

	// 4. Breadcrumbs ≥ task arithmetic on the mean over corruptions.
	bc, ok1 := res.Row(rowMerge("breadcrumbs"))
	ta, ok2 := res.Row(rowMerge("task_arithmetic"))
	cl := Claim{ID: "merge:breadcrumbs>=task_arithmetic", Statement: "Breadcrumbs ≥ task arithmetic on the mean accuracy over corruptions"}
	if ok1 && ok2 && (bc.Invalid != "" || ta.Invalid != "") {
		cl.Detail = "invalid model: " + bc.Invalid + ta.Invalid
	} else if ok1 && ok2 {
		d := bc.MeanCorrupted - ta.MeanCorrupted
		cl.Held = d >= -th.MergeTolerance-1e-9 // equal means may differ in the last bit
		cl.Detail = fmt.Sprintf("breadcrumbs %s vs task arithmetic %s (%s); clean %s vs %s", pct(bc.MeanCorrupted), pct(ta.MeanCorrupted), signedPts(d), pct(bc.Clean), pct(ta.Clean))
	} else {
		cl.Detail = "recipes breadcrumbs.yaml and task_arithmetic.yaml are needed"
	}
	out = append(out, cl)

	// 5. The size claim.
	for _, s := range res.Signatures {
		cl := Claim{ID: "size:" + s.Corruption,
			Statement: fmt.Sprintf("the %s %s signature is ≥ %g× smaller than the full F32 model with relative L2 error ≤ %g", res.Quant, s.Corruption, th.MinRatio, th.MaxRelL2)}
		cl.Held = s.RatioQuant >= th.MinRatio && s.Quant.QuantRelL2 <= th.MaxRelL2
		cl.Detail = fmt.Sprintf("%d B vs %d B: %.1f× smaller; relative L2 error %.4f (F32 signature: %d B, %.1f×)", s.Quant.Bytes, s.ModelFileBytes, s.RatioQuant, s.Quant.QuantRelL2, s.F32.Bytes, s.RatioF32)
		out = append(out, cl)
	}

	// 6. Unpatching gives the clean model back, byte for byte.
	cl = Claim{ID: "unpatch", Statement: "removing a signature (weightops patch remove) gives back the clean model's file byte for byte, every time"}
	cl.Held = len(res.Unpatch) > 0
	var bad []string
	for _, u := range res.Unpatch {
		if !u.Identical {
			cl.Held = false
			bad = append(bad, u.Name)
		}
	}
	cl.Detail = fmt.Sprintf("%d removals, %d identical", len(res.Unpatch), len(res.Unpatch)-len(bad))
	if len(bad) > 0 {
		cl.Detail += "; differ: " + strings.Join(bad, ", ")
	}
	out = append(out, cl)
	return out
}

func findPrefix(res *Result, prefix string) (Row, bool) {
	for _, r := range res.Rows {
		if strings.HasPrefix(r.Name, prefix) {
			return r, true
		}
	}
	return Row{}, false
}
