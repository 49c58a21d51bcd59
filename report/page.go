package report

import (
	"bytes"
	"encoding/json"
	"fmt"
	"html/template"
	"path/filepath"
	"regexp"
	"strings"

	"github.com/weightops/weightops/weights"
)

// section is one part of the page: a title, the takeaway in one
// sentence, a paragraph saying what was measured, charts and optionally a
// table.
type section struct {
	ID, Title string
	// Takeaway is what the section shows, in one sentence computed from
	// its numbers.
	Takeaway string
	// Text says what was measured and how.
	Text   string
	Charts []chart
	// Table is given as a header and rows of cells, rendered both as HTML
	// and as Markdown.
	Header []string
	Rows   [][]Cell
	// Notes are extra lines under the table.
	Notes []string
}

// Cell is one table cell: plain text, optionally bold.
type Cell struct {
	Text string
	Bold bool
}

// cells makes a row of plain cells.
func cells(s ...string) []Cell {
	out := make([]Cell, len(s))
	for i, x := range s {
		out[i] = Cell{Text: x}
	}
	return out
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

var page = template.Must(template.New("page").Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<title>{{.Title}}</title>
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
p.takeaway { font-weight: bold; }
code { background: #f3f3f3; padding: 0 0.2em; }
</style>
</head>
<body>
<h1>{{.Title}}</h1>
<p>{{.Intro}}</p>
<nav><ul>{{range .Sections}}<li><a href="#{{.ID}}">{{.Title}}</a></li>{{end}}</ul></nav>
{{range .Sections}}
<section id="{{.ID}}">
<h2>{{.Title}}</h2>
{{if .Takeaway}}<p class="takeaway">{{.Takeaway}}</p>{{end}}
<p>{{.Text}}</p>
{{if .Charts}}<div class="charts">{{range .Charts}}<figure>{{.Inline}}{{if .Caption}}<figcaption>{{.Caption}}</figcaption>{{end}}</figure>{{end}}</div>{{end}}
{{if .Header}}<table><thead><tr>{{range .Header}}<th>{{.}}</th>{{end}}</tr></thead><tbody>{{range .Rows}}<tr>{{range .}}<td>{{if .Bold}}<strong>{{.Text}}</strong>{{else}}{{.Text}}{{end}}</td>{{end}}</tr>{{end}}</tbody></table>{{end}}
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
	ID, Title, Takeaway, Text string
	Charts                    []htmlChart
	Header                    []string
	Rows                      [][]Cell
	Notes                     []string
}

// Page is a report's content, rendered as a self-contained HTML page and
// as Markdown with the charts beside it.
type Page struct {
	Title, Intro string
	Sections     []section
}

// HTML renders the self-contained page: charts inline as SVG.
func (p *Page) HTML() ([]byte, error) {
	data := struct {
		Title, Intro string
		Sections     []htmlSection
	}{Title: p.Title, Intro: p.Intro}
	for _, s := range p.Sections {
		hs := htmlSection{ID: s.ID, Title: s.Title, Takeaway: s.Takeaway, Text: s.Text, Header: s.Header, Rows: s.Rows, Notes: s.Notes}
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
func mdCell(c Cell) string {
	s := strings.ReplaceAll(c.Text, "|", `\|`)
	if c.Bold && s != "" {
		return "**" + s + "**"
	}
	return s
}

// Markdown renders the page with the charts as images in charts/.
func (p *Page) Markdown() string {
	var b strings.Builder
	fmt.Fprintf(&b, "# %s\n\n%s\n", p.Title, p.Intro)
	for _, s := range p.Sections {
		fmt.Fprintf(&b, "\n## %s\n\n", s.Title)
		if s.Takeaway != "" {
			fmt.Fprintf(&b, "**%s**\n\n", s.Takeaway)
		}
		fmt.Fprintf(&b, "%s\n", s.Text)
		for _, c := range s.Charts {
			fmt.Fprintf(&b, "\n![%s](%s)\n", c.Title, c.File)
		}
		if s.Header != nil {
			b.WriteString("\n|")
			for _, h := range s.Header {
				fmt.Fprintf(&b, " %s |", mdCell(Cell{Text: h}))
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

// write writes report.html, report.md and report.json (v) into out.
func (p *Page) write(out string, v any) error {
	h, err := p.HTML()
	if err != nil {
		return err
	}
	if err := weights.WriteFileAtomic(filepath.Join(out, HTMLFile), h); err != nil {
		return err
	}
	if err := weights.WriteFileAtomic(filepath.Join(out, MarkdownFile), []byte(p.Markdown())); err != nil {
		return err
	}
	j, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		return err
	}
	return weights.WriteFileAtomic(filepath.Join(out, JSONFile), append(j, '\n'))
}
