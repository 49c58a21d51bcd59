package report

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/demo"
	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/taskvec"
)

// compareFixture writes a base with 20 numbered blocks (an LLM's layout:
// lines, not bars) and three fine-tunes: two sharing a direction (cosine
// near 0.5), one frozen in its first blocks.
func compareFixture(t *testing.T) (dir string, paths []string) {
	dir = t.TempDir()
	rng := rand.New(rand.NewPCG(5, 6))
	shapes := map[string][]int64{"model.embed_tokens.weight": {50, 8}, "lm_head.weight": {50, 8}, "model.norm.weight": {8}}
	for l := range 20 {
		shapes[fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", l)] = []int64{16, 8}
		shapes[fmt.Sprintf("model.layers.%d.input_layernorm.weight", l)] = []int64{8}
	}
	base, shared := map[string][]float64{}, map[string][]float64{}
	for name, sh := range shapes {
		n := int(sh[0])
		if len(sh) > 1 {
			n *= int(sh[1])
		}
		base[name], shared[name] = make([]float64, n), make([]float64, n)
		for e := range n {
			base[name][e], shared[name][e] = rng.NormFloat64(), rng.NormFloat64()
		}
	}
	ft := func(own float64, frozen int) map[string][]float64 {
		m := map[string][]float64{}
		for name, b := range base {
			m[name] = make([]float64, len(b))
			for e := range b {
				d := 0.01 * (shared[name][e] + own*rng.NormFloat64())
				if l, ok := layerOf(name); ok && l < frozen {
					d = 0
				}
				m[name][e] = b[e] + d
			}
		}
		return m
	}
	for i, vals := range []map[string][]float64{base, ft(1, 0), ft(1, 0), ft(1, 5)} {
		p := filepath.Join(dir, []string{"base", "math", "code", "chat"}[i], "model.safetensors")
		testutil.WriteF32(t, p, vals, shapes)
		paths = append(paths, filepath.Dir(p))
	}
	return dir, paths
}

func layerOf(name string) (int, bool) {
	var l int
	_, err := fmt.Sscanf(name, "model.layers.%d.", &l)
	return l, err == nil
}

// TestBuildCompare: the report on checkpoints writes its files, says its
// takeaway in every section, keeps each model's colour in every chart,
// keeps Go names out, and renders in Chromium; its numbers are
// taskvec.Compare's.
func TestBuildCompare(t *testing.T) {
	_, paths := compareFixture(t)
	out := t.TempDir()
	cks := testutil.Open(t, paths...)
	rep, err := BuildCompare(context.Background(), cks[0], cks[1:], CompareOptions{Out: out, Version: "test"})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(rep.Labels, " ") != "base math code chat" {
		t.Errorf("labels %v", rep.Labels)
	}
	if len(rep.Layers) != 23 || rep.Layers[0].Name != "model.embed_tokens" || rep.Layers[22].Name != "lm_head" {
		t.Errorf("%d layers, first %q", len(rep.Layers), rep.Layers[0].Name)
	}
	// math and code share half their direction: cosine ≈ 0.5; chat froze
	// blocks 0–4: 10 of 43 tensors unchanged, its cosine undefined there.
	if c := float64(rep.Total.Cosine[0]); c < 0.4 || c > 0.6 {
		t.Errorf("math · code cosine %g, want about 0.5", c)
	}
	if rep.Layers[1].Cosine[1].Defined() || !rep.Layers[6].Cosine[1].Defined() {
		t.Errorf("block 0 cosine with chat %v, block 5 %v", rep.Layers[1].Cosine[1], rep.Layers[6].Cosine[1])
	}
	j, _ := os.ReadFile(filepath.Join(out, JSONFile))
	var back struct {
		Labels []string
		Total  struct{ Cosine []*float64 }
		Layers []struct{ Cosine []*float64 }
		Files  []string
	}
	if err := json.Unmarshal(j, &back); err != nil || len(back.Files) != 5 || back.Layers[1].Cosine[1] != nil {
		t.Fatalf("report.json: %v %+v", err, back.Files)
	}
	page, _ := os.ReadFile(filepath.Join(out, HTMLFile))
	for _, sec := range []string{"Where the difference lives", "How alike the task vectors are", "Where a merge will conflict", "Unchanged values", "Tensors that changed most"} {
		if !bytes.Contains(page, []byte(sec)) {
			t.Errorf("page lacks section %q", sec)
		}
	}
	if n := bytes.Count(page, []byte(`class="takeaway"`)); n != 5 {
		t.Errorf("%d takeaways, want one per section (5)", n)
	}
	if !bytes.Contains(page, []byte("chat leaves 10 of 43 tensors exactly as in the base")) {
		t.Error("the unchanged section does not say chat froze 10 tensors")
	}
	checkNoGoNames(t, page)
	checkJSONDoc(t, "weightops report BASE MODEL...", filepath.Join(out, JSONFile))
	// Models keep their colours: math blue, code orange, chat green in the
	// per-model charts; the pair charts use none of those.
	for _, f := range rep.Files {
		svg, _ := os.ReadFile(filepath.Join(out, f))
		perModel := strings.Contains(f, "norms") || strings.Contains(f, "unchanged")
		for _, c := range []string{"#0072B2", "#E69F00", "#009E73"} {
			if got := bytes.Contains(svg, []byte(c)); got != perModel {
				t.Errorf("%s: model colour %s present %v, want %v", f, c, got, perModel)
			}
		}
	}
	renderInChromium(t, filepath.Join(out, HTMLFile), []string{"Where a merge will conflict", "math · code", "lm_head"}, 5)
}

// TestBuildCompareOneModel: with one model there are no pairs, so only
// the per-model sections.
func TestBuildCompareOneModel(t *testing.T) {
	_, paths := compareFixture(t)
	out := t.TempDir()
	cks := testutil.Open(t, paths[:2]...)
	rep, err := BuildCompare(context.Background(), cks[0], cks[1:], CompareOptions{Out: out, CompareOptions: taskvec.CompareOptions{Density: 0.2}})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Files) != 2 || rep.Density != 0.2 {
		t.Errorf("charts %v, density %g", rep.Files, rep.Density)
	}
	if _, err := BuildCompare(context.Background(), cks[0], cks[1:], CompareOptions{}); err == nil || !strings.Contains(err.Error(), "no output directory") {
		t.Errorf("no output: %v", err)
	}
}

func TestLabels(t *testing.T) {
	got := labels([]string{"a/llama", "b/llama-math/model.safetensors", "c/x.safetensors", "d/model.safetensors.index.json"})
	if strings.Join(got, " ") != "llama llama-math x d" {
		t.Errorf("labels %v", got)
	}
	got = labels([]string{"a/llama", "b/llama"})
	if strings.Join(got, " ") != "a/llama b/llama" {
		t.Errorf("colliding labels %v", got)
	}
}

// TestDemoTableBold: each signature row's own corruption is bold, in the
// HTML and in the Markdown; other cells are not.
func TestDemoTableBold(t *testing.T) {
	d := &demo.Result{Corruptions: []demo.Corruption{{Name: "blur", Spec: "blur:1.5"}, {Name: "contrast", Spec: "contrast:0.15"}},
		Rows: []demo.Row{
			{Name: "clean", Group: demo.GroupModel, Scores: demo.Scores{Clean: 0.85, Corrupted: map[string]float64{"blur": 0.6, "contrast": 0.3}, MeanCorrupted: 0.45}},
			{Name: "clean + RWS blur", Group: demo.GroupSignature, Corruption: "blur", Scores: demo.Scores{Clean: 0.84, Corrupted: map[string]float64{"blur": 0.71, "contrast": 0.32}, MeanCorrupted: 0.515}},
		}}
	p := &Page{Title: "t", Sections: []section{demoSection(d)}}
	h, err := p.HTML()
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Count(h, []byte("<strong>")) != 1 || !bytes.Contains(h, []byte("<strong>71.0</strong>")) {
		t.Errorf("HTML bold cells:\n%s", h)
	}
	if md := p.Markdown(); strings.Count(md, "**71.0**") != 1 || strings.Contains(md, "**32.0**") {
		t.Errorf("Markdown:\n%s", md)
	}
	if s := demoSection(d); !strings.Contains(s.Takeaway, "clean + RWS blur does best (51.5% on average") {
		t.Errorf("takeaway %q", s.Takeaway)
	}
}
