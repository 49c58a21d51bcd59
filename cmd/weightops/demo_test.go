package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/weightops/weightops/demo"
	"github.com/weightops/weightops/internal/testutil"
)

const demoData = "../../testdata/demo"

// Margins of TestDemoPipeline, in accuracy (fractions). They come from
// running the generator and the demo with training seeds 1–6 (README,
// "Demo"; the committed models are seed 1): each is beyond the worst
// seed's figure, so regenerating the fixtures with another seed should not
// break the test, and far from what a broken pipeline gives (no patch
// applied: gain 0; a patch for another model or of the wrong sign: a loss;
// a bad quantization: a gap of many points).
const (
	minGain        = 0.02   // own-corruption gain of each F32 signature (worst seed: +2.5 pts, brightness, seed 2)
	minSumGain     = 0.40   // summed over the four corruptions (worst seed: +56.3 pts)
	maxCleanDrop   = 0.045  // clean accuracy one signature may cost at its tuned scale (worst seed: 3.5 pts, gaussian_noise ×0.5, seed 1)
	maxQuantGap    = 0.025  // |4-bit − F32|, own corruption and clean (worst seed: 1.6 pts)
	minComposedAvg = 0.06   // mean gain over corruptions of the composed signatures (worst seed: +9.4 pts)
	minComposedHit = -0.015 // the composition's least gain on any one corruption (worst seed: −1.0 pts, brightness, seed 2)
	mergeSlack     = 0.01   // breadcrumbs − task arithmetic, mean over corruptions (seeds: −0.6 to +1.2 pts)
)

// TestDemoPipeline runs `weightops demo` on the models embedded in the
// binary (the committed ones), from a directory that is not the
// repository's, and checks what the numbers are meant to show (see the
// README's table).
func TestDemoPipeline(t *testing.T) {
	if testing.Short() {
		t.Skip("runs the whole demo (about 40 s); skipped with -short")
	}
	out := t.TempDir()
	start := time.Now()
	stdout, stderr, code := runIn(t, t.TempDir(), "demo", "--out", out, "--json", "-q")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, stderr)
	}
	t.Logf("demo ran in %.1fs", time.Since(start).Seconds())
	var res demo.Result
	if err := json.Unmarshal([]byte(stdout), &res); err != nil {
		t.Fatalf("json: %v\n%s", err, stdout)
	}
	// The output and results.json are as docs/json.md says.
	doc := parseJSONDoc(t)
	for _, p := range doc.Check("weightops demo", []byte(stdout)) {
		t.Error(p)
	}
	if rj, err := os.ReadFile(filepath.Join(out, "results.json")); err != nil {
		t.Error(err)
	} else {
		for _, p := range doc.Check("weightops demo", rj, "schema_version") {
			t.Errorf("results.json: %s", p)
		}
	}
	row := func(name string) demo.Row {
		t.Helper()
		r, ok := res.Row(name)
		if !ok {
			t.Fatalf("no row %q", name)
		}
		if r.Invalid != "" {
			t.Fatalf("row %q: invalid model: %s", name, r.Invalid)
		}
		return r
	}
	clean := row("clean")
	// The engine agrees with the training loop on the clean model.
	var tm struct {
		TestCorrect int `json:"test_correct"`
		TestSamples int `json:"test_samples"`
	}
	b, err := os.ReadFile(filepath.Join(demoData, "clean", "train_metrics.json"))
	if err != nil || json.Unmarshal(b, &tm) != nil {
		t.Fatal("clean/train_metrics.json", err)
	}
	if got := clean.Clean; math.Abs(got-float64(tm.TestCorrect)/float64(tm.TestSamples)) > 1e-12 {
		t.Errorf("clean accuracy %.4f, the training loop measured %d/%d", got, tm.TestCorrect, tm.TestSamples)
	}

	// 1. Each signature raises accuracy on its own corruption at a small
	// clean cost, and 4-bit signatures match F32 ones.
	var sumGain float64
	for _, c := range res.Corruptions {
		f32, q := row("clean+rws:"+c.Name), row("clean+rws:"+c.Name+" (4-bit)")
		gain := f32.Corrupted[c.Name] - clean.Corrupted[c.Name]
		sumGain += gain
		if gain < minGain {
			t.Errorf("%s signature: %s accuracy %.3f → %.3f, want a gain ≥ %.2f", c.Name, c.Name, clean.Corrupted[c.Name], f32.Corrupted[c.Name], minGain)
		}
		if drop := clean.Clean - f32.Clean; drop > maxCleanDrop {
			t.Errorf("%s signature: clean accuracy %.3f → %.3f, want a drop ≤ %.2f", c.Name, clean.Clean, f32.Clean, maxCleanDrop)
		}
		if d := math.Max(math.Abs(q.Corrupted[c.Name]-f32.Corrupted[c.Name]), math.Abs(q.Clean-f32.Clean)); d > maxQuantGap {
			t.Errorf("%s: 4-bit signature %.3f/%.3f vs F32 %.3f/%.3f (own corruption/clean)", c.Name, q.Corrupted[c.Name], q.Clean, f32.Corrupted[c.Name], f32.Clean)
		}
	}
	if sumGain < minSumGain {
		t.Errorf("signatures' gains sum to %.3f, want ≥ %.2f", sumGain, minSumGain)
	}

	// 2. Composed signatures (one apply, common scale) cover the
	// corruptions at once: a clear mean gain, no corruption made worse.
	if !(res.ComposeScale > 0 && res.ComposeScale <= 1) {
		t.Errorf("compose scale %g", res.ComposeScale)
	}
	for _, name := range []string{"clean+all rws", "clean+all rws (4-bit)"} {
		comp := row(name + " ×" + formatScale(res.ComposeScale))
		var mean float64
		for _, c := range res.Corruptions {
			g := comp.Corrupted[c.Name] - clean.Corrupted[c.Name]
			mean += g / float64(len(res.Corruptions))
			if g < minComposedHit {
				t.Errorf("%s: %s accuracy %.3f → %.3f", name, c.Name, clean.Corrupted[c.Name], comp.Corrupted[c.Name])
			}
		}
		if mean < minComposedAvg {
			t.Errorf("%s: mean gain over corruptions %.3f, want ≥ %.2f", name, mean, minComposedAvg)
		}
	}

	// 3. Merges. Breadcrumbs ≥ task arithmetic did not hold on every
	// seed (README): the test asserts it within mergeSlack, and that every
	// merge is a valid model better than the clean one under corruption.
	ta, bc := row("merge:task_arithmetic"), row("merge:breadcrumbs")
	if bc.MeanCorrupted < ta.MeanCorrupted-mergeSlack {
		t.Errorf("breadcrumbs %.3f vs task arithmetic %.3f mean over corruptions", bc.MeanCorrupted, ta.MeanCorrupted)
	}
	for _, m := range []string{"task_arithmetic", "ties", "dare_linear", "breadcrumbs"} {
		if r := row("merge:" + m); r.MeanCorrupted < clean.MeanCorrupted+0.1 {
			t.Errorf("merge %s: mean corrupted %.3f, clean model %.3f", m, r.MeanCorrupted, clean.MeanCorrupted)
		}
	}

	// 4. Size: the 4-bit signature of the shallow layers against the
	// full F32 model.
	for _, s := range res.Signatures {
		if s.RatioQuant < 13 || s.Quant.QuantRelL2 > 0.10 || s.Quant.QuantRelL2 <= 0 {
			t.Errorf("%s: %.1f× smaller, relative L2 error %.4f; want ≥ 13× and ≤ 0.10", s.Corruption, s.RatioQuant, s.Quant.QuantRelL2)
		}
		if st, err := os.Stat(filepath.Join(out, s.Quant.Path)); err != nil || st.Size() != s.Quant.Bytes {
			t.Errorf("%s: patch file %s: %v", s.Corruption, s.Quant.Path, err)
		}
	}

	// 5. Every removal gives the clean model back byte for byte: one per
	// single signature (F32 and 4-bit) and one per composition.
	if want := 2*len(res.Corruptions) + 2; len(res.Unpatch) != want {
		t.Errorf("%d removals checked, want %d", len(res.Unpatch), want)
	}
	for _, u := range res.Unpatch {
		if !u.Identical {
			t.Errorf("%s: unpatched model differs from the clean one", u.Name)
		}
	}

	// The files: results.json (same as stdout), results.md with the table.
	b, err = os.ReadFile(filepath.Join(out, demo.ResultsJSON))
	if err != nil {
		t.Fatal(err)
	}
	var again demo.Result
	if err := json.Unmarshal(b, &again); err != nil || len(again.Rows) != len(res.Rows) {
		t.Errorf("results.json: %v", err)
	}
	md, err := os.ReadFile(filepath.Join(out, demo.ResultsMarkdown))
	if err != nil || !strings.Contains(string(md), "| model | clean |") || !strings.Contains(string(md), "merge:breadcrumbs") {
		t.Errorf("results.md: %v\n%s", err, md)
	}
}

// formatScale writes a scale as the demo names its rows.
func formatScale(s float64) string { return fmt.Sprintf("%g", s) }

func TestDemoErrors(t *testing.T) {
	_, stderr, code := run(t, "demo", "--data", t.TempDir(), "--out", t.TempDir())
	if code != 1 || !strings.Contains(stderr, "manifest.json") || !strings.Contains(stderr, "weightops-fixtures -demo") || strings.Count(stderr, "\n") != 1 {
		t.Errorf("missing data: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = run(t, "demo", "--data", demoData, "--out", t.TempDir(), "--running-stats", "copy")
	if code != 1 || !strings.Contains(stderr, `"copy"`) {
		t.Errorf("bad --running-stats: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = run(t, "demo", "extra")
	if code != 2 || !strings.Contains(stderr, "unexpected arguments") {
		t.Errorf("positional argument: exit %d, stderr %q", code, stderr)
	}
	_, stderr, code = run(t, "report", "--data", demoData, "--out", t.TempDir(), "--alpha", "x")
	if code != 1 || !strings.Contains(stderr, "alpha") {
		t.Errorf("report --alpha x: exit %d, stderr %q", code, stderr)
	}
}

// TestPatchApplyRecalibrateBN: a signature applied with --recalibrate-bn
// gets new batchnorm statistics (recorded in the metadata) and patch remove
// still gives the clean model back byte for byte; the recalibration's
// flags alone, or on patch remove, are refused.
func TestPatchApplyRecalibrateBN(t *testing.T) {
	d := t.TempDir()
	data := "../../testdata/engine/data/fashion-mnist/t10k-images-idx3-ubyte.gz"
	sig := filepath.Join(d, "noise.wpatch")
	if _, e, code := run(t, "signature", "extract", "--base", demoData+"/base", "--clean", demoData+"/clean", "--robust", demoData+"/robust-gaussian_noise", "--layers", "2", "--with-norms", "-o", sig, "-q"); code != 0 {
		t.Fatal(e)
	}
	clean := demoData + "/clean/model.safetensors"
	plain, recal := filepath.Join(d, "plain.safetensors"), filepath.Join(d, "recal.safetensors")
	if _, e, code := run(t, "patch", "apply", clean, sig, "-o", plain, "-q"); code != 0 {
		t.Fatal(e)
	}
	o, e, code := run(t, "patch", "apply", clean, sig, "-o", recal, "--recalibrate-bn", data, "--corrupt", "gaussian_noise:0.3", "--bn-batch", "100", "--json")
	if code != 0 {
		t.Fatal(e)
	}
	var rep struct {
		Recal struct {
			Samples, Batches int
			Tensors          []string
		} `json:"bn_recalibrated"`
	}
	if err := json.Unmarshal([]byte(o), &rep); err != nil || rep.Recal.Samples != 1000 || rep.Recal.Batches != 10 || len(rep.Recal.Tensors) != 6 {
		t.Fatalf("report %s (%v)", o, err)
	}
	p := testutil.Open(t, plain, recal)
	for _, name := range rep.Recal.Tensors {
		a, _ := p[0].ReadTensor(name, nil)
		b, _ := p[1].ReadTensor(name, nil)
		if bytes.Equal(a.Data, b.Data) {
			t.Errorf("%s: the same as without recalibration", name)
		}
	}
	if !strings.Contains(p[1].Metadata()["weightops.bn_recalibrated"], `"corruption":"gaussian_noise:0.3"`) {
		t.Errorf("metadata: %q", p[1].Metadata()["weightops.bn_recalibrated"])
	}
	back := filepath.Join(d, "back.safetensors")
	if _, e, code := run(t, "patch", "remove", recal, sig, "-o", back, "-q"); code != 0 {
		t.Fatal(e)
	}
	a, _ := os.ReadFile(clean)
	b, _ := os.ReadFile(back)
	if !bytes.Equal(a, b) {
		t.Fatal("patch remove after recalibration is not the clean file")
	}
	// All four at scale 1 drive a patched variance below zero (the
	// engine refuses that model); recalibrating replaces it, and the
	// averaged, recalibrated composition still removes exactly.
	all := []string{sig}
	for _, c := range []string{"blur", "contrast", "brightness"} {
		p := filepath.Join(d, c+".wpatch")
		if _, e, code := run(t, "signature", "extract", "--base", demoData+"/base", "--clean", demoData+"/clean", "--robust", demoData+"/robust-"+c, "--layers", "2", "--with-norms", "-o", p, "-q"); code != 0 {
			t.Fatal(e)
		}
		all = append(all, p)
	}
	comp := filepath.Join(d, "all.safetensors")
	if _, e, code := run(t, append(append([]string{"patch", "apply", clean}, all...), "-o", comp, "-q", "--average-bn", "--recalibrate-bn", data)...); code != 0 {
		t.Fatalf("composition at scale 1: %s", e)
	}
	if _, e, code := run(t, "eval", comp, "--arch", demoData+"/clean/arch.yaml", "--data", data, "--labels", strings.Replace(data, "images-idx3", "labels-idx1", 1)); code != 0 {
		t.Fatalf("the recalibrated composition does not load: %s", e)
	}
	back2 := filepath.Join(d, "back2.safetensors")
	if _, e, code := run(t, append(append([]string{"patch", "remove", comp}, all...), "-o", back2, "-q")...); code != 0 {
		t.Fatal(e)
	}
	if b2, _ := os.ReadFile(back2); !bytes.Equal(a, b2) {
		t.Fatal("patch remove after an averaged, recalibrated composition is not the clean file")
	}
	if _, e, code := run(t, "patch", "apply", clean, sig, "-o", filepath.Join(d, "x.safetensors"), "--corrupt", "blur:1"); code == 0 || !strings.Contains(e, "goes with --recalibrate-bn") {
		t.Errorf("--corrupt alone: %d %s", code, e)
	}
	if _, e, code := run(t, "patch", "remove", recal, sig, "-o", filepath.Join(d, "y.safetensors"), "--recalibrate-bn", data); code == 0 || !strings.Contains(e, "patch apply's") {
		t.Errorf("remove --recalibrate-bn: %d %s", code, e)
	}
}
