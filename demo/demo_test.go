package demo

import (
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weightops/weightops/signature"
)

// The full pipeline runs in cmd/weightops/demo_test.go (through the
// binary); these are the parts that can be checked in isolation.

func layerStat(name string, weight bool, tensors ...string) signature.LayerStat {
	return signature.LayerStat{Layer: signature.Layer{Name: name, Tensors: tensors, Weight: weight}}
}

func TestShallowTensors(t *testing.T) {
	layers := []signature.LayerStat{
		layerStat("features.0", true, "features.0.weight", "features.0.bias"),
		layerStat("features.1", false, "features.1.weight", "features.1.bias", "features.1.running_mean", "features.1.running_var"),
		layerStat("features.4", true, "features.4.weight"),
		layerStat("features.5", false, "features.5.weight"),
		layerStat("head.0", true, "head.0.weight"),
		layerStat("head.1", false, "head.1.weight"),
	}
	got := ShallowTensors(layers, 2)
	want := []string{"features.0.weight", "features.0.bias", "features.1.weight", "features.1.bias",
		"features.1.running_mean", "features.1.running_var", "features.4.weight", "features.5.weight"}
	if !slices.Equal(got, want) {
		t.Errorf("2 layers: got %v\nwant %v", got, want)
	}
	if got := ShallowTensors(layers, 1); len(got) != 6 || slices.Contains(got, "features.4.weight") {
		t.Errorf("1 layer: got %v", got)
	}
	if got := ShallowTensors(layers, 10); len(got) != len(AllTensors(layers)) {
		t.Errorf("10 layers: got %v, want every tensor", got)
	}
	// signature.Selection{Layers: 2}, the ablation's selection, skips the
	// batchnorms: that is the difference the demo measures.
	conv := signature.Selection{Layers: 2}.Select(layers)
	if slices.Contains(conv, "features.1.running_var") || !slices.Contains(conv, "features.4.weight") {
		t.Errorf("Selection{Layers: 2}: %v", conv)
	}
}

func writeManifest(t *testing.T, dir string, m Manifest) {
	t.Helper()
	b, _ := json.Marshal(m)
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), b, 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestReadManifestErrors(t *testing.T) {
	dir := t.TempDir()
	if _, err := ReadManifest(dir); err == nil || !strings.Contains(err.Error(), "weightops-fixtures -demo") {
		t.Errorf("missing manifest: %v (want a hint to make it)", err)
	}
	if err := os.WriteFile(filepath.Join(dir, ManifestFile), []byte("{"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadManifest(dir); err == nil || !strings.Contains(err.Error(), ManifestFile) {
		t.Errorf("bad JSON: %v", err)
	}
	writeManifest(t, dir, Manifest{
		Validation:  Split{Fraction: 2},
		Corruptions: []Corruption{{Name: "fog", Spec: "fog:1"}, {Name: "blur", Spec: "blur:1"}},
		Models:      []ModelEntry{{Name: "base", Role: "teacher"}, {Name: "../x", Role: RoleClean}},
	})
	_, err := ReadManifest(dir)
	for _, want := range []string{`unknown role "teacher"`, `model name "../x"`, "exactly one base", "fog", `"blur" has no robust model`, "validation fraction 2", `model "base"`} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestOptionsErrors(t *testing.T) {
	for _, c := range []struct {
		o    Options
		want string
	}{
		{Options{}, "no output directory"},
		{Options{Out: "x", Layers: -1}, "layers -1"},
		{Options{Out: "x", Scales: []float64{0}}, "scale 0"},
		{Options{Out: "x", RunningStats: "copy"}, `"copy"`},
	} {
		if _, err := Run(context.Background(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.o, err, c.want)
		}
	}
	if _, err := Run(context.Background(), Options{Out: t.TempDir(), Data: "../testdata/demo", Quant: "5bit-weird"}); err == nil || !strings.Contains(err.Error(), "quantization") {
		t.Errorf("bad quantization: %v", err)
	}
}

// TestClaims checks that each claim fails when its numbers say so.
func TestClaims(t *testing.T) {
	sc := func(clean float64, corrupted float64) Scores {
		return Scores{Clean: clean, Corrupted: map[string]float64{"blur": corrupted}, MeanCorrupted: corrupted}
	}
	good := func() *Result {
		return &Result{
			Corruptions: []Corruption{{Name: "blur", Spec: "blur:1"}}, Quant: "4bit-asym-block64", ComposeScale: 0.5,
			Rows: []Row{
				{Name: "clean", Scores: sc(0.85, 0.50)},
				{Name: rowSigF32("blur"), Scores: sc(0.84, 0.70)},
				{Name: rowSigQuant("blur"), Scores: sc(0.84, 0.69)},
				{Name: rowComposedF32 + " ×0.5", Scores: sc(0.84, 0.60)},
				{Name: rowComposedQuant + " ×0.5", Scores: sc(0.84, 0.60)},
				{Name: rowMerge("task_arithmetic"), Scores: sc(0.80, 0.70)},
				{Name: rowMerge("breadcrumbs"), Scores: sc(0.80, 0.71)},
			},
			Signatures: []SignatureReport{{Corruption: "blur", RatioQuant: 40, Quant: PatchFile{QuantRelL2: 0.05}}},
			Unpatch:    []Unpatch{{Name: "x", Identical: true}},
		}
	}
	held := func(r *Result) map[string]bool {
		m := map[string]bool{}
		for _, c := range CheckClaims(r, DefaultThresholds) {
			m[c.ID] = c.Held
		}
		return m
	}
	for id, ok := range held(good()) {
		if !ok {
			t.Errorf("%s: did not hold on good numbers", id)
		}
	}
	for _, c := range []struct {
		id   string
		bend func(r *Result)
	}{
		{"patch-gain:blur", func(r *Result) { r.Rows[1].Corrupted["blur"] = 0.52 }},
		{"patch-gain:blur", func(r *Result) { r.Rows[1].Clean = 0.70 }},
		{"patch-gain:blur", func(r *Result) { r.Rows[1].Invalid = "negative variance" }},
		{"quant:blur", func(r *Result) { r.Rows[2].Corrupted["blur"] = 0.60 }},
		{"composed:" + rowComposedF32, func(r *Result) { r.Rows[3].Corrupted["blur"] = 0.50 }},
		{"merge:breadcrumbs>=task_arithmetic", func(r *Result) { r.Rows[6].MeanCorrupted = 0.69 }},
		{"size:blur", func(r *Result) { r.Signatures[0].RatioQuant = 12 }},
		{"size:blur", func(r *Result) { r.Signatures[0].Quant.QuantRelL2 = 0.11 }},
		{"unpatch", func(r *Result) { r.Unpatch[0].Identical = false }},
		{"unpatch", func(r *Result) { r.Unpatch = nil }},
	} {
		r := good()
		c.bend(r)
		if h, ok := held(r)[c.id]; !ok || h {
			t.Errorf("%s: held (%v, present %v) on numbers that break it", c.id, h, ok)
		}
	}
}
