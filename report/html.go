package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/weightops/weightops/demo"
	"github.com/weightops/weightops/weights"
)

// section is one part of the page: a title, a paragraph, charts and
// optionally a table.
type section struct {
	ID, Title, Text string
	Charts          []chart
	// Table is given as a header and rows of cells (plain text), rendered
	// both as HTML and as Markdown.
	Header []string
	Rows   [][]string
	// Notes are extra lines under the table.
	Notes []string
}

var svgOpen = regexp.MustCompile(`<svg\b[^>]*>`)
var svgDim = regexp.MustCompile(`\b(width|height)="([0-9.]+)(pt|px)?"`)

// inlineSVG prepares a chart for inlining in HTML: the XML prolog and
// comments before <svg> are dropped, and a viewBox is added from the
// width and height so CSS can scale the figure to the page.
func inlineSVG(b []byte) (template.HTML, error) {
	loc := svgOpen.FindIndex(b)
	if loc == nil {
		return "", fmt.Errorf("chart: no <svg> element")
	}
	open := string(b[loc[0]:loc[1]])
	if !strings.Contains(open, "viewBox") {
		var w, h string
		for _, m := range svgDim.FindAllStringSubmatch(open, -1) {
			if m[1] == "width" {
				w = m[2]
			} else {
				h = m[2]
			}
		}
		if w != "" && h != "" {
			open = strings.Replace(open, "<svg", fmt.Sprintf(`<svg viewBox="0 0 %s %s" preserveAspectRatio="xMidYMid meet"`, w, h), 1)
		}
	}
	return template.HTML(open + string(b[loc[1]:])), nil // #nosec: our own plotter output
}

// sparsityTable summarises the patches.
func (r *Report) sparsityTable(sec *section) {
	sec.Header = []string{"patch", "kind", "values", "tensors", "non-zero", "fraction", "size"}
	for _, p := range r.Patches {
		vals := map[string]bool{}
		for _, t := range p.Tensors {
			vals[t.Values] = true
		}
		var vs []string
		for v := range vals {
			vs = append(vs, v)
		}
		sec.Rows = append(sec.Rows, []string{p.Label, p.Kind, strings.Join(vs, ", "), fmt.Sprint(len(p.Tensors)),
			fmt.Sprintf("%d of %d", p.NonZero, p.Elements), fmt.Sprintf("%.3f", p.Fraction()), weights.HumanBytes(p.Bytes)})
	}
}

// demoSection turns the demo's results into a table section.
func demoSection(d *demo.Result) section {
	sec := section{ID: "results", Title: "Demo results",
		Text: fmt.Sprintf("From weightops demo (%s, training seed %d): accuracy (%%) on %d test images, clean and corrupted; "+
			"signatures cover the first %d weight layers with their batchnorms; composed signatures at scale %g (chosen on held-out training images).",
			d.Out, d.Seed, d.TestSamples, d.Layers, d.ComposeScale)}
	sec.Header = []string{"model", "clean"}
	for _, c := range d.Corruptions {
		sec.Header = append(sec.Header, c.Spec)
	}
	sec.Header = append(sec.Header, "mean corrupted", "patch size")
	pct := func(x float64) string { return fmt.Sprintf("%.1f", 100*x) }
	for _, row := range d.Rows {
		if row.Group == demo.GroupAblation {
			continue
		}
		cells := []string{row.Name}
		if row.Invalid != "" {
			cells = append(cells, "invalid: "+row.Invalid)
			for range d.Corruptions {
				cells = append(cells, "")
			}
			cells = append(cells, "", "")
			sec.Rows = append(sec.Rows, cells)
			continue
		}
		cells = append(cells, pct(row.Clean))
		for _, c := range d.Corruptions {
			cells = append(cells, pct(row.Corrupted[c.Name]))
		}
		size := ""
		if row.PatchBytes > 0 {
			size = weights.HumanBytes(row.PatchBytes)
		}
		sec.Rows = append(sec.Rows, append(cells, pct(row.MeanCorrupted), size))
	}
	for _, c := range d.Claims {
		verdict := "held"
		if !c.Held {
			verdict = "DID NOT HOLD"
		}
		sec.Notes = append(sec.Notes, fmt.Sprintf("%s — %s: %s", c.Statement, verdict, c.Detail))
	}
	return sec
}

var page = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>weightops report</title>
<style>
body { font-family: "Liberation Sans", Arial, Helvetica, sans-serif; margin: 2em auto; max-width: 1150px; color: #222; padding: 0 1em; }
h1 { font-size: 1.6em; } h2 { font-size: 1.25em; margin-top: 2em; border-bottom: 1px solid #ccc; }
.charts { display: flex; flex-wrap: wrap; gap: 1em; }
figure { margin: 0; flex: 1 1 480px; max-width: 100%; }
figure svg { width: 100%; height: auto; }
figcaption { font-size: 0.85em; color: #555; text-align: center; }
table { border-collapse: collapse; font-size: 0.85em; margin: 1em 0; }
th, td { border: 1px solid #ccc; padding: 0.25em 0.5em; text-align: right; }
th:first-child, td:first-child { text-align: left; }
th { background: #f3f3f3; }
ul.notes { font-size: 0.85em; }
code { background: #f3f3f3; padding: 0 0.2em; }
</style>
</head>
<body>
<h1>weightops report</h1>
<p>Demo models from <code>{{.Data}}</code>: a base CNN trained briefly on a Fashion-MNIST subset, a clean fine-tune, and robust fine-tunes for {{.CorruptionList}}. Made by <code>weightops report</code> in {{printf "%.1f" .Seconds}} s.</p>
<nav><ul>{{range .Sections}}<li><a href="#{{.ID}}">{{.Title}}</a></li>{{end}}</ul></nav>
{{range .Sections}}
<section id="{{.ID}}">
<h2>{{.Title}}</h2>
<p>{{.Text}}</p>
{{if .Charts}}<div class="charts">{{range .Charts}}<figure>{{.Inline}}{{if .Caption}}<figcaption>{{.Caption}}</figcaption>{{end}}</figure>{{end}}</div>{{end}}
{{if .Header}}<table><thead><tr>{{range .Header}}<th>{{.}}</th>{{end}}</tr></thead><tbody>{{range .Rows}}<tr>{{range .}}<td>{{.}}</td>{{end}}</tr>{{end}}</tbody></table>{{end}}
{{if .Notes}}<ul class="notes">{{range .Notes}}<li>{{.}}</li>{{end}}</ul>{{end}}
</section>
{{end}}
</body>
</html>
`))

type htmlChart struct {
	Title, Caption string
	Inline         template.HTML
}

type htmlSection struct {
	ID, Title, Text string
	Charts          []htmlChart
	Header          []string
	Rows            [][]string
	Notes           []string
}

func (r *Report) allSections() []section {
	var secs []section
	if r.Demo != nil {
		secs = append(secs, demoSection(r.Demo))
	}
	for _, s := range r.sections {
		if s.ID == "sparsity" && s.Header == nil {
			r.sparsityTable(&s)
		}
		secs = append(secs, s)
	}
	return secs
}

// HTML renders the self-contained page.
func (r *Report) HTML() ([]byte, error) {
	var cs []string
	for _, c := range r.Corruptions {
		cs = append(cs, c.Spec)
	}
	data := struct {
		Data, CorruptionList string
		Seconds              float64
		Sections             []htmlSection
	}{Data: r.Data, CorruptionList: strings.Join(cs, ", "), Seconds: r.Seconds}
	for _, s := range r.allSections() {
		hs := htmlSection{ID: s.ID, Title: s.Title, Text: s.Text, Header: s.Header, Rows: s.Rows, Notes: s.Notes}
		for _, c := range s.Charts {
			in, err := inlineSVG(c.SVG)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", c.File, err)
			}
			hs.Charts = append(hs.Charts, htmlChart{Title: c.Title, Caption: c.Caption, Inline: in})
		}
		data.Sections = append(data.Sections, hs)
	}
	var b bytes.Buffer
	if err := page.Execute(&b, data); err != nil {
		return nil, err
	}
	return b.Bytes(), nil
}

// mdCell escapes a table cell for Markdown.
func mdCell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

// Markdown renders report.md, with the charts as images in charts/.
func (r *Report) Markdown() string {
	var b strings.Builder
	b.WriteString("# weightops report\n\n")
	var cs []string
	for _, c := range r.Corruptions {
		cs = append(cs, "`"+c.Spec+"`")
	}
	fmt.Fprintf(&b, "Demo models from `%s`: a base CNN trained briefly on a Fashion-MNIST subset, a clean fine-tune, and robust fine-tunes for %s.\n", r.Data, strings.Join(cs, ", "))
	for _, s := range r.allSections() {
		fmt.Fprintf(&b, "\n## %s\n\n%s\n", s.Title, s.Text)
		for _, c := range s.Charts {
			fmt.Fprintf(&b, "\n![%s](%s)\n", c.Title, c.File)
		}
		if s.Header != nil {
			b.WriteString("\n|")
			for _, h := range s.Header {
				fmt.Fprintf(&b, " %s |", mdCell(h))
			}
			b.WriteString("\n|")
			for i := range s.Header {
				if i == 0 {
					b.WriteString("---|")
				} else {
					b.WriteString("---:|")
				}
			}
			b.WriteString("\n")
			for _, row := range s.Rows {
				b.WriteString("|")
				for _, c := range row {
					fmt.Fprintf(&b, " %s |", mdCell(c))
				}
				b.WriteString("\n")
			}
		}
		if len(s.Notes) > 0 {
			b.WriteString("\n")
			for _, n := range s.Notes {
				fmt.Fprintf(&b, "- %s\n", n)
			}
		}
	}
	return b.String()
}

func (r *Report) write() error {
	h, err := r.HTML()
	if err != nil {
		return err
	}
	if err := weights.WriteFileAtomic(filepath.Join(r.Out, HTMLFile), h); err != nil {
		return err
	}
	if err := weights.WriteFileAtomic(filepath.Join(r.Out, MarkdownFile), []byte(r.Markdown())); err != nil {
		return err
	}
	j, err := json.MarshalIndent(r, "", "  ")
	if err != nil {
		return err
	}
	return weights.WriteFileAtomic(filepath.Join(r.Out, JSONFile), append(j, '\n'))
}
