package merge

import (
	"fmt"
	"path/filepath"
	"slices"
	"strings"

	"github.com/weightops/weightops/weights"
)

// CardName and RecipeName are the files written beside a merged model
// directory, as mergekit writes them: a model card and the recipe.
const (
	CardName   = "README.md"
	RecipeName = "mergekit_config.yml"
)

// Card is the model card of the merge written to out: the method, the
// models with their parameters and input hashes, the recipe and how to
// check and reproduce the merge. hashed says the records hold real
// digests (not with --no-hash).
func (p *Plan) Card(out string, recs []InputRecord, version string, hashed bool) []byte {
	var b strings.Builder
	def := p.Recipe.methodDef
	fmt.Fprintf(&b, "---\nlibrary_name: transformers\ntags:\n- weightops\n- merge\n---\n\n")
	title := p.Recipe.Name
	if title == "" {
		title = filepath.Base(filepath.Clean(out))
	}
	fmt.Fprintf(&b, "# %s\n\n", title)
	method := "`" + def.Name + "`"
	if def.Paper != "" {
		method = fmt.Sprintf("[`%s`](%s)", def.Name, def.Paper)
	}
	fmt.Fprintf(&b, "A merge of %d models made with weightops %s by the %s method: %s.\n\n", len(p.Checkpoints), version, method, def.Summary)
	if p.Recipe.BaseModel != "" {
		fmt.Fprintf(&b, "Base model: `%s`.\n", p.Recipe.BaseModel)
	}
	if dt := firstNonEmpty(p.Recipe.OutDType, p.Recipe.DType); dt != "" {
		fmt.Fprintf(&b, "Written in %s.\n", dt)
	}
	if len(p.Recipe.Slices) == 0 {
		b.WriteString("\n## Models\n\n| model | role | parameters |\n|---|---|---|\n")
		for _, e := range p.orderedEntries() {
			role, params := "merged", paramList(e.Params)
			if sameModel(e.Model, p.Recipe.BaseModel) && def.Base != BaseNone {
				role, params = "base", "—"
			} else if sameModel(e.Model, p.Recipe.BaseModel) {
				role = "base, merged"
			}
			fmt.Fprintf(&b, "| `%s` | %s | %s |\n", cell(e.Model), role, cell(params))
		}
	} else {
		fmt.Fprintf(&b, "\n## Slices\n\n%d layers written, slice by slice:\n\n| slice | layers written | sources (layers) | parameters |\n|---|---|---|---|\n", p.Layers)
		at := 0
		for i, s := range p.Recipe.Slices {
			n := s.Sources[0].To - s.Sources[0].From
			var srcs []string
			for _, src := range s.Sources {
				srcs = append(srcs, fmt.Sprintf("`%s` [%d, %d) %s", cell(src.Model), src.From, src.To, cell(paramList(src.Params))))
			}
			fmt.Fprintf(&b, "| %d | [%d, %d) | %s | %s |\n", i+1, at, at+n, strings.Join(srcs, "; "), cell(paramList(s.Params)))
			at += n
		}
	}
	if len(p.Recipe.Params) > 0 {
		fmt.Fprintf(&b, "\nMethod parameters: %s.\n", paramList(p.Recipe.Params))
	}
	b.WriteString("\n## Inputs\n\n")
	if hashed {
		b.WriteString("The SHA-256 of each input file, also recorded in the weights' metadata (`weightops.inputs`):\n\n| file | SHA-256 |\n|---|---|\n")
		for _, r := range recs {
			for _, f := range r.Files {
				fmt.Fprintf(&b, "| `%s` | `%s` |\n", cell(f.Name), f.SHA256)
			}
		}
	} else {
		b.WriteString("The inputs were not hashed (`--no-hash`).\n")
	}
	fmt.Fprintf(&b, "\n## Recipe\n\nThe recipe, also in `%s`:\n\n```yaml\n%s\n```\n", RecipeName, canonicalYAML(p.Recipe.Source))
	b.WriteString("\n## Check and reproduce\n\nFrom the directory the merge ran in (the recipe's paths are relative to it, or to the recipe):\n\n```sh\n")
	if hashed {
		fmt.Fprintf(&b, "weightops check %s", out)
		for _, r := range recs {
			fmt.Fprintf(&b, " --inputs %s", r.Ref)
		}
		b.WriteString("\n")
	}
	fmt.Fprintf(&b, "weightops merge %s %s-again\n", filepath.Join(out, RecipeName), filepath.Clean(out))
	b.WriteString("```\n")
	return []byte(b.String())
}

// orderedEntries is the base (when not listed) then the models, as
// listed.
func (p *Plan) orderedEntries() []ModelEntry {
	var out []ModelEntry
	if p.Recipe.BaseModel != "" && !slices.ContainsFunc(p.Recipe.Models, func(m ModelEntry) bool {
		return filepath.Clean(m.Model) == filepath.Clean(p.Recipe.BaseModel)
	}) {
		out = append(out, ModelEntry{Model: p.Recipe.BaseModel})
	}
	return append(out, p.Recipe.Models...)
}

func paramList(params map[string]Param) string {
	if len(params) == 0 {
		return "—"
	}
	keys := make([]string, 0, len(params))
	for k := range params {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	s := make([]string, len(keys))
	for i, k := range keys {
		s[i] = fmt.Sprintf("%s = %s", k, params[k])
	}
	return strings.Join(s, ", ")
}

// cell escapes what would end a Markdown table cell.
func cell(s string) string { return strings.ReplaceAll(s, "|", `\|`) }

func firstNonEmpty(s ...string) string {
	for _, x := range s {
		if x != "" {
			return x
		}
	}
	return ""
}

// writeCard writes the card and the recipe into dir, each atomically.
func (p *Plan) writeCard(dir string, recs []InputRecord, version string, hashed bool) ([]string, error) {
	files := []struct {
		name string
		data []byte
	}{{CardName, p.Card(dir, recs, version, hashed)}, {RecipeName, p.Recipe.Source}}
	var out []string
	for _, f := range files {
		path := filepath.Join(dir, f.name)
		if err := weights.WriteFileAtomic(path, f.data); err != nil {
			return out, err
		}
		out = append(out, path)
	}
	return out, nil
}
