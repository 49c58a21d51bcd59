package demo

import (
	"encoding/json"
	"fmt"
	"path/filepath"
	"strings"

	"github.com/weightops/weightops/weights"
)

// Files the demo writes into its output directory.
const (
	ResultsJSON     = "results.json"
	ResultsMarkdown = "results.md"
)

// ReadResult reads a results.json written by Run.
func ReadResult(path string) (*Result, error) {
	b, err := weights.ReadFile(path, 256<<20, "demo results file")
	if err != nil {
		return nil, err
	}
	var r Result
	if err := json.Unmarshal(b, &r); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &r, nil
}

func (r *Result) write() error {
	b, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	if err := weights.WriteFileAtomic(filepath.Join(r.Out, ResultsJSON), append(b, '\n')); err != nil {
		return err
	}
	return weights.WriteFileAtomic(filepath.Join(r.Out, ResultsMarkdown), []byte(r.Markdown()))
}

// Table renders the main results table in Markdown: one row per model
// (ablations excluded), accuracies in percent.
func (r *Result) Table() string {
	return r.table(func(row Row) bool { return row.Group != GroupAblation })
}

// AblationTable renders the selection ablation rows with the signature
// rows they are compared with.
func (r *Result) AblationTable() string {
	return r.table(func(row Row) bool {
		return row.Group == GroupAblation || row.Name == "clean" || (row.Group == GroupSignature && !strings.HasSuffix(row.Name, "(4-bit)"))
	})
}

func (r *Result) table(keep func(Row) bool) string {
	var b strings.Builder
	b.WriteString("| model | clean |")
	for _, c := range r.Corruptions {
		fmt.Fprintf(&b, " %s |", c.Spec)
	}
	b.WriteString(" mean corrupted | patch size |\n|---|---:|")
	for range r.Corruptions {
		b.WriteString("---:|")
	}
	b.WriteString("---:|---:|\n")
	for _, row := range r.Rows {
		if !keep(row) {
			continue
		}
		if row.Invalid != "" {
			fmt.Fprintf(&b, "| %s | invalid model: %s |%s\n", row.Name, row.Invalid, strings.Repeat(" |", len(r.Corruptions)+2))
			continue
		}
		name := row.Name
		if row.Scale != 0 && row.Scale != 1 {
			name += fmt.Sprintf(" ×%g", row.Scale)
		}
		fmt.Fprintf(&b, "| %s | %s |", name, pct(row.Clean))
		for _, c := range r.Corruptions {
			v := pct(row.Corrupted[c.Name])
			if row.Corruption == c.Name && row.Group != GroupModel {
				v = "**" + v + "**" // the corruption the patch is for
			}
			fmt.Fprintf(&b, " %s |", v)
		}
		size := ""
		if row.PatchBytes > 0 {
			size = weights.HumanBytes(row.PatchBytes)
		}
		fmt.Fprintf(&b, " %s | %s |\n", pct(row.MeanCorrupted), size)
	}
	return b.String()
}

// SignatureTable renders the sizes and errors of the signatures.
func (r *Result) SignatureTable() string {
	var b strings.Builder
	fmt.Fprintf(&b, "| signature | tensors | values | share of ‖RWS‖² | F32 patch | %s patch | full F32 model | F32 ratio | %s ratio | rel. L2 error |\n", r.Quant, r.Quant)
	b.WriteString("|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Signatures {
		fmt.Fprintf(&b, "| %s | %d | %d of %d | %.1f%% | %d B | %d B | %d B | %.1f× | %.1f× | %.4f |\n",
			s.Corruption, len(s.Tensors), s.Elements, s.ModelElements, 100*s.EnergyShare, s.F32.Bytes, s.Quant.Bytes, s.ModelFileBytes,
			s.RatioF32, s.RatioQuant, s.Quant.QuantRelL2)
	}
	return b.String()
}

// CodecTable compares the signatures quantized in the linear, log and
// tanh domains at the same bits and groups.
func (r *Result) CodecTable() string {
	var b strings.Builder
	b.WriteString("| signature | domain | codec | patch | ratio | rel. L2 error | its corruption | clean |\n")
	b.WriteString("|---|---|---|---:|---:|---:|---:|---:|\n")
	for _, s := range r.Signatures {
		for _, c := range s.Codecs {
			acc := pct(c.Corrupted) + " | " + pct(c.Clean)
			if c.Invalid != "" {
				acc = "invalid model | "
			}
			fmt.Fprintf(&b, "| %s | %s | %s | %d B | %.1f× | %.4f | %s |\n", s.Corruption, c.Domain, c.Encoding, c.Bytes, c.Ratio, c.QuantRelL2, acc)
		}
	}
	return b.String()
}

// ClaimsList renders the claims as a Markdown list.
func (r *Result) ClaimsList() string {
	var b strings.Builder
	for _, c := range r.Claims {
		mark := "held"
		if !c.Held {
			mark = "**did not hold**"
		}
		fmt.Fprintf(&b, "- %s — %s: %s\n", c.Statement, mark, c.Detail)
	}
	return b.String()
}

// Markdown is results.md: every table and the claims.
func (r *Result) Markdown() string {
	var b strings.Builder
	b.WriteString("# weightops demo results\n\n")
	fmt.Fprintf(&b, "Models from `%s` (training seed %d); %d test images per condition, corruptions seeded with %d. ", r.Data, r.Seed, r.TestSamples, r.EvalSeed)
	fmt.Fprintf(&b, "Signatures cover the first %d weight layers with their batchnorms (running statistics: %s); composed signatures are applied at a common scale of %g chosen on %d held-out training images. Accuracies in %%; **bold**: the corruption the row's patch is for.\n\n", r.Layers, r.RunningStats, r.ComposeScale, r.ValSamples)
	b.WriteString(r.Table())
	b.WriteString("\n## Signature sizes\n\n")
	b.WriteString(r.SignatureTable())
	b.WriteString("\n## Signature quantization domains\n\n")
	b.WriteString(r.CodecTable())
	b.WriteString("\n## Common scale of the composed signatures (validation images)\n\n| scale | clean | mean corrupted | objective |\n|---:|---:|---:|---:|\n")
	for _, s := range r.ComposeScan {
		if s.Invalid != "" {
			fmt.Fprintf(&b, "| %g | invalid model: %s | | |\n", s.Scale, s.Invalid)
			continue
		}
		fmt.Fprintf(&b, "| %g | %s | %s | %s |\n", s.Scale, pct(s.Clean), pct(s.MeanCorrupted), pct(s.Objective))
	}
	b.WriteString("\n## Selection ablation (F32 signatures)\n\n")
	b.WriteString(r.AblationTable())
	b.WriteString("\n## Claims\n\n")
	b.WriteString(r.ClaimsList())
	identical := 0
	for _, u := range r.Unpatch {
		if u.Identical {
			identical++
		}
	}
	fmt.Fprintf(&b, "\nUnpatching: %d of %d removals gave the clean model back byte for byte.\n", identical, len(r.Unpatch))
	if len(r.Warnings) > 0 {
		b.WriteString("\nWarnings:\n\n")
		for _, w := range r.Warnings {
			fmt.Fprintf(&b, "- %s\n", w)
		}
	}
	fmt.Fprintf(&b, "\nRun time: %.1f s.\n", r.Seconds)
	return b.String()
}
