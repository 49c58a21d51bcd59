package report

import (
	"bytes"
	"context"
	"image/png"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/weightops/weightops/internal/jsondoc"
)

const demoData = "../testdata/demo"

// TestBuildRendersInChromium builds the report on the committed demo
// models and checks its numbers and files, then opens the page in
// headless Chromium (skipped where /usr/bin/chromium is absent): the DOM
// must hold every section and chart, and the screenshot must be a real
// picture, not a blank page.
func TestBuildRendersInChromium(t *testing.T) {
	if testing.Short() {
		t.Skip("builds the whole report (about 20 s); skipped with -short")
	}
	out := t.TempDir()
	start := time.Now()
	rep, err := BuildDemo(context.Background(), DemoOptions{Data: demoData, Out: out})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("report built in %.1fs", time.Since(start).Seconds())

	// Numbers: layers in network order; relative norms positive; the
	// signature's share of the change lives in the batchnorms too; a task
	// vector is perfectly similar to itself, and cosines lie in [−1, 1].
	wantLayers := []string{"features.0", "features.1", "features.4", "features.5", "head.0", "head.2"}
	if strings.Join(rep.Layers, ",") != strings.Join(wantLayers, ",") {
		t.Errorf("layers %v, want %v", rep.Layers, wantLayers)
	}
	if len(rep.Norms) != 1+len(rep.Corruptions) {
		t.Errorf("%d norm series, want clean + %d robust", len(rep.Norms), len(rep.Corruptions))
	}
	for _, n := range rep.Norms {
		for i, v := range n.RelDelta {
			if !(v > 0 && v < 2) {
				t.Errorf("%s: layer %s relative change %g", n.Name, rep.Layers[i], v)
			}
		}
	}
	k := 1 + len(rep.Corruptions)
	if len(rep.Cosines) != k*(k-1)/2 {
		t.Errorf("%d cosine pairs, want %d", len(rep.Cosines), k*(k-1)/2)
	}
	for _, c := range rep.Cosines {
		for _, v := range c.Values {
			if v < -1-1e-9 || v > 1+1e-9 {
				t.Errorf("%s: cosine %g", c.Pair, v)
			}
		}
	}
	// Sparsity: signatures dense, Breadcrumbs task vectors at about the
	// density asked (a little under: counts round down per tensor).
	for _, p := range rep.Patches {
		f := p.Fraction()
		switch p.Kind {
		case "rws":
			if f < 0.99 {
				t.Errorf("%s: %.3f non-zero, want a dense signature", p.Label, f)
			}
		case "breadcrumbs":
			if f > 0.1 || f < 0.09 {
				t.Errorf("%s: %.3f non-zero, want just under 0.1", p.Label, f)
			}
		default:
			t.Errorf("%s: kind %q", p.Label, p.Kind)
		}
	}
	// Sweeps: α = 0 is the clean model and α = 1 the robust fine-tune,
	// so each sweep's last point is better on its corruption than its first.
	for i, sw := range rep.Sweeps {
		c := rep.Corruptions[i].Name
		if len(sw.Alphas) != 5 || sw.Alphas[0] != 0 || sw.Alphas[4] != 1 {
			t.Fatalf("%s: alphas %v", sw.Robust, sw.Alphas)
		}
		if first, last := sw.Scores[0].Corrupted[c], sw.Scores[4].Corrupted[c]; last <= first {
			t.Errorf("%s: accuracy on %s %.3f at α=0, %.3f at α=1", sw.Robust, c, first, last)
		}
	}
	// Sensitivity: one row per weight module and γ; no noise is free, and
	// noise half as large as the weights costs some module accuracy.
	if rep.Sensitivity == nil || len(rep.Sensitivity.Results) == 0 {
		t.Fatal("no sensitivity results")
	}
	var worst float64
	for _, r := range rep.Sensitivity.Results {
		if r.Rel == 0.5 {
			worst = max(worst, r.MeanDrop)
		}
	}
	if worst < 0.02 {
		t.Errorf("largest accuracy drop at γ=0.5 is %.3f", worst)
	}
	if len(rep.Files) != 11 {
		t.Errorf("%d charts, want 11: %v", len(rep.Files), rep.Files)
	}
	for _, f := range append([]string{HTMLFile, MarkdownFile, JSONFile}, rep.Files...) {
		if st, err := os.Stat(filepath.Join(out, f)); err != nil || st.Size() < 1000 {
			t.Errorf("%s: %v", f, err)
		}
	}
	md, _ := os.ReadFile(filepath.Join(out, MarkdownFile))
	for _, f := range rep.Files {
		if !bytes.Contains(md, []byte("]("+f+")")) {
			t.Errorf("report.md does not show %s", f)
		}
	}
	page, _ := os.ReadFile(filepath.Join(out, HTMLFile))
	if n := bytes.Count(page, []byte("<svg")); n != 11 {
		t.Errorf("report.html inlines %d SVGs, want 11", n)
	}
	if bytes.Contains(page, []byte("src=")) || bytes.Contains(page, []byte("href=\"http")) {
		t.Error("report.html refers to other files; it should be self-contained")
	}

	for _, sec := range rep.page().Sections {
		if sec.Takeaway == "" {
			t.Errorf("section %q has no takeaway", sec.Title)
		}
	}
	checkNoGoNames(t, page)
	checkJSONDoc(t, "weightops report", filepath.Join(out, JSONFile))
	// A model keeps its colour in every chart: gaussian_noise (the first
	// corruption) is orange wherever it appears, and blue (the clean
	// model) appears only in charts that show the clean model.
	for _, f := range rep.Files {
		svg, _ := os.ReadFile(filepath.Join(out, f))
		hasClean := strings.Contains(f, "norms-delta") || strings.Contains(f, "sweep-")
		hasNoise := hasClean || strings.Contains(f, "norms-rws") || strings.Contains(f, "cosine-clean") || strings.Contains(f, "sparsity-tensors")
		if got := bytes.Contains(svg, []byte("#0072B2")); got != hasClean {
			t.Errorf("%s: clean's blue present %v, want %v", f, got, hasClean)
		}
		if got := bytes.Contains(svg, []byte("#E69F00")); got != hasNoise {
			t.Errorf("%s: gaussian_noise's orange present %v, want %v", f, got, hasNoise)
		}
	}
	renderInChromium(t, filepath.Join(out, HTMLFile), []string{"Where the difference lives", "Task vector similarity", "Patch sparsity", "Accuracy along the interpolation", "Weight-noise sensitivity", "features.4", "α"}, 11)
}

// checkJSONDoc checks a report.json against its section of docs/json.md.
func checkJSONDoc(t *testing.T, section, path string) {
	t.Helper()
	doc, err := jsondoc.Parse("../docs/json.md")
	if err != nil {
		t.Fatal(err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range doc.Check(section, data, "schema_version") {
		t.Errorf("%s: %s", path, p)
	}
}

// goName matches an exported Go identifier qualified by its package
// (signature.Remove, taskvec.Interpolate): internal names the page must
// not use.
var goName = regexp.MustCompile(`\b[a-z]+\.[A-Z][A-Za-z]+\b`)

func checkNoGoNames(t *testing.T, page []byte) {
	t.Helper()
	// Only the text: the SVG charts hold font names and paths.
	text := regexp.MustCompile(`(?s)<svg.*?</svg>|<style>.*?</style>`).ReplaceAll(page, nil)
	if m := goName.FindAll(text, -1); len(m) > 0 {
		t.Errorf("the page uses internal Go names: %q", m)
	}
}

// renderInChromium opens the page in headless Chromium (skipped where
// /usr/bin/chromium is absent): the DOM must hold every wanted string and
// the charts, and the screenshot must be a real picture, not a blank
// page.
func renderInChromium(t *testing.T, html string, want []string, charts int) {
	t.Helper()
	if testing.Short() {
		t.Log("headless rendering skipped with -short")
		return
	}
	chromium := "/usr/bin/chromium"
	if _, err := os.Stat(chromium); err != nil {
		t.Skip("headless rendering skipped: /usr/bin/chromium is absent (apt-get install chromium)")
	}
	args := func(extra ...string) []string {
		return append([]string{"--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
			"--disable-background-networking", "--disable-component-update", "--disable-sync",
			"--user-data-dir=" + t.TempDir()}, extra...)
	}
	url := "file://" + mustAbs(t, html)
	dom, err := exec.Command(chromium, args("--dump-dom", url)...).Output()
	if err != nil {
		t.Fatalf("chromium --dump-dom: %v", err)
	}
	for _, w := range want {
		if !bytes.Contains(dom, []byte(w)) {
			t.Errorf("rendered DOM lacks %q", w)
		}
	}
	if n := bytes.Count(dom, []byte("<svg")); n != charts {
		t.Errorf("rendered DOM has %d <svg> elements, want %d", n, charts)
	}
	shot := filepath.Join(t.TempDir(), "report.png")
	if b, err := exec.Command(chromium, args("--screenshot="+shot, "--window-size=1200,1600", url)...).CombinedOutput(); err != nil {
		t.Fatalf("chromium --screenshot: %v\n%s", err, b)
	}
	f, err := os.Open(shot)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	img, err := png.Decode(f)
	if err != nil {
		t.Fatalf("screenshot: %v", err)
	}
	if b := img.Bounds(); b.Dx() != 1200 || b.Dy() != 1600 {
		t.Errorf("screenshot is %v, want 1200×1600", b)
	}
	// A blank or error page is nearly all one colour; the charts' bars
	// and lines are not.
	colours := map[[3]uint32]bool{}
	var dark int
	b := img.Bounds()
	for y := b.Min.Y; y < b.Max.Y; y += 2 {
		for x := b.Min.X; x < b.Max.X; x += 2 {
			r, g, bl, _ := img.At(x, y).RGBA()
			colours[[3]uint32{r >> 12, g >> 12, bl >> 12}] = true
			if r+g+bl < 3*0x8000 {
				dark++
			}
		}
	}
	if len(colours) < 20 || dark < 2000 {
		t.Errorf("screenshot looks blank: %d colours, %d dark samples", len(colours), dark)
	}
}

func mustAbs(t *testing.T, p string) string {
	a, err := filepath.Abs(p)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

func TestOptionsErrors(t *testing.T) {
	for _, c := range []struct {
		o    DemoOptions
		want string
	}{
		{DemoOptions{}, "no output directory"},
		{DemoOptions{Out: "x", TVDensity: 2}, "density 2"},
		{DemoOptions{Out: "x", Layers: -2}, "layers -2"},
		{DemoOptions{Out: t.TempDir(), Data: t.TempDir()}, "weightops-fixtures -demo"},
		{DemoOptions{Out: t.TempDir(), Data: demoData, From: t.TempDir()}, "--from"},
		{DemoOptions{Out: t.TempDir(), Data: demoData, Alphas: "0:1:x"}, "alpha"},
	} {
		if _, err := BuildDemo(context.Background(), c.o); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want %q", c.o, err, c.want)
		}
	}
}
