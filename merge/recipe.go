package merge

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strconv"
	"strings"

	"gopkg.in/yaml.v3"

	suggestpkg "github.com/weightops/weightops/internal/suggest"
	"github.com/weightops/weightops/weights"
)

// Recipe is a merge configuration in mergekit's YAML format, in either of
// its two forms. Whole models:
//
//	merge_method: ties
//	base_model: ./base
//	models:
//	  - model: ./math
//	    parameters: {weight: 0.5, density: [1, 0.7, 0.1]}
//	  - model: ./code
//	    parameters:
//	      weight: [{filter: mlp, value: 0.8}, {value: 0.5}]
//	parameters: {normalize: true, lambda: 1.0}
//	dtype: float32
//	out_dtype: bfloat16
//
// or layer slices, each merging the same number of layers of its sources
// (a passthrough "frankenmerge" stacks them):
//
//	slices:
//	  - sources:
//	      - model: ./a
//	        layer_range: [0, 16]
//	  - sources:
//	      - model: ./b
//	        layer_range: [8, 24]
//	merge_method: passthrough
//
// Model references are local paths (a directory, a .safetensors or PyTorch
// file, or a shard index), resolved against the working directory and then
// the recipe's directory; MODEL+ADAPTER merges a PEFT LoRA adapter into
// the model as it is read.
type Recipe struct {
	Path   string
	Source []byte
	Method string
	// BaseModel is the global base_model ("" for none).
	BaseModel string
	// Models is the models: form; Slices the slices: form (exactly one of
	// them is set).
	Models []ModelEntry
	Slices []SliceDef
	// Params are the top-level parameters: the method's global ones, and
	// defaults for its per-model ones.
	Params   map[string]Param
	DType    string
	OutDType string
	// Tokenizer is the output vocabulary (tokenizer_source or the
	// tokenizer block); nil keeps the base model's.
	Tokenizer *TokenizerDef
	// ChatTemplate is a named template or a literal Jinja one ("" for
	// none).
	ChatTemplate string
	// Name is the recipe's name, for the model card.
	Name string
	// Warnings are what the recipe says that weightops accepts but does
	// not use, as mergekit ignores it (a parameter the method does not
	// take), one line each.
	Warnings  []string
	methodDef *Method
}

// ModelEntry is one item of a recipe's models list.
type ModelEntry struct {
	Model  string
	Params map[string]Param
	Line   int
}

// SliceDef is one output slice: the same number of consecutive layers
// from each source, merged layer by layer.
type SliceDef struct {
	Sources []SourceDef
	// BaseModel overrides the recipe's base_model for this slice.
	BaseModel string
	Params    map[string]Param
	Line      int
}

// SourceDef is one source of a slice: a model's layers [From, To).
type SourceDef struct {
	Model    string
	From, To int
	// Whole: no layer_range, every layer of the model (the models: form).
	Whole  bool
	Params map[string]Param
	Line   int
}

// Problems is every problem found in a recipe, reported together.
type Problems struct {
	File string
	List []string
}

func (p *Problems) add(format string, a ...any) { p.List = append(p.List, fmt.Sprintf(format, a...)) }

func (p *Problems) Error() string {
	if len(p.List) == 1 {
		return fmt.Sprintf("%s: %s", p.File, p.List[0])
	}
	return fmt.Sprintf("%s: %d problems: %s", p.File, len(p.List), strings.Join(p.List, "; "))
}

func (p *Problems) err() error {
	if len(p.List) == 0 {
		return nil
	}
	return p
}

var topKeys = []string{"merge_method", "base_model", "models", "slices", "modules", "parameters", "dtype", "out_dtype", "tokenizer_source", "tokenizer", "chat_template", "name"}

// ParseRecipe reads a recipe, checking its structure: unknown keys and
// methods (with a did-you-mean), parameter names, types and ranges. It does
// not open models; Open does.
func ParseRecipe(path string) (*Recipe, error) {
	src, err := weights.ReadFile(path, weights.MaxRecipeSize, "recipe")
	if err != nil {
		return nil, err
	}
	return ParseRecipeBytes(path, src)
}

// ParseRecipeBytes is ParseRecipe on in-memory YAML; path names it in errors.
func ParseRecipeBytes(path string, src []byte) (*Recipe, error) {
	r := &Recipe{Path: path, Source: src, Params: map[string]Param{}}
	pr := &Problems{File: path}
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		pr.add("invalid YAML: %v", err)
		return nil, pr
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		pr.add("a recipe is a YAML mapping with merge_method and models (or slices)")
		return nil, pr
	}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		if k := top.Content[i]; k.Value == "experts" {
			pr.add("line %d: this is a mergekit-moe config (experts): build it with weightops moe %s OUT", k.Line, path)
			return nil, pr
		}
	}
	var paramsNode *yaml.Node
	var hasModels, hasSlices bool
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case "merge_method":
			r.Method = v.Value
		case "base_model":
			r.BaseModel = scalar(v, "base_model", pr)
		case "dtype":
			r.DType = v.Value
		case "out_dtype":
			r.OutDType = v.Value
		case "name":
			r.Name = v.Value
		case "chat_template":
			r.ChatTemplate = scalar(v, "chat_template", pr)
			if r.ChatTemplate != "" {
				if err := checkChatTemplate(r.ChatTemplate); err != nil {
					pr.add("line %d: %v", v.Line, err)
				}
			}
		case "tokenizer_source":
			r.parseTokenizerSource(v, pr)
		case "tokenizer":
			r.parseTokenizer(v, pr)
		case "modules":
			pr.add("line %d: modules: (per-module recipes for multi-module architectures) is not supported; use models: or slices:", k.Line)
		case "slices":
			hasSlices = true
			if v.Kind != yaml.SequenceNode {
				pr.add("line %d: slices must be a list", v.Line)
				continue
			}
			for _, s := range v.Content {
				r.parseSlice(s, pr)
			}
		case "models":
			hasModels = true
			if v.Kind != yaml.SequenceNode {
				pr.add("line %d: models must be a list", v.Line)
				continue
			}
			for _, m := range v.Content {
				r.parseModel(m, pr)
			}
		case "parameters":
			paramsNode = v
		default:
			pr.add("line %d: unknown key %q%s", k.Line, k.Value, suggest(k.Value, topKeys))
		}
	}
	def, ok := Lookup(r.Method)
	switch {
	case r.Method == "":
		pr.add("merge_method is missing (one of %s)", strings.Join(MethodNames(), ", "))
	case !ok:
		pr.add("unknown merge_method %q%s (supported: %s)", r.Method, suggestMethod(r.Method), strings.Join(MethodNames(), ", "))
	}
	r.methodDef = def
	if paramsNode != nil {
		r.Params = parseParams(paramsNode, pr)
	}
	switch {
	case hasModels && hasSlices:
		pr.add("give either models or slices, not both")
	case !hasModels && !hasSlices:
		pr.add("models is empty: list the models to merge (or the slices)")
	case hasModels && len(r.Models) == 0:
		pr.add("models is empty: list the models to merge")
	case hasSlices && len(r.Slices) == 0:
		pr.add("slices is empty: list the output slices")
	}
	if ok {
		r.checkParams(pr)
	}
	for _, d := range []struct{ key, v string }{{"dtype", r.DType}, {"out_dtype", r.OutDType}} {
		if d.v != "" {
			if _, err := weights.ParseFloatDType(d.v); err != nil {
				pr.add("%s %q: use float32, bfloat16, float16 or float64", d.key, d.v)
			}
		}
	}
	if ok && def.Base == BaseRequired && r.BaseModel == "" && !r.slicesHaveBases() {
		pr.add("%s needs base_model", r.Method)
	}
	if ok && len(r.Models) > 0 {
		r.checkArity(pr)
	}
	if ok && def.Check != nil {
		def.Check(r, pr)
	}
	return r, pr.err()
}

// suggestMethod is a did-you-mean over the methods for a likely typo
// ("tiez"), but not across method families: a name whose first word
// differs from the guess's ("foo_linear" vs "dare_linear") is another
// method, not a misspelling.
func suggestMethod(name string) string {
	guess := suggestpkg.Closest(name, MethodNames())
	if guess == "" {
		return ""
	}
	a, _, cutA := strings.Cut(name, "_")
	b, _, cutB := strings.Cut(guess, "_")
	if cutA && cutB && a != b {
		return ""
	}
	return fmt.Sprintf(" (did you mean %q?)", guess)
}

// checkArity checks how many models a models: recipe merges besides the
// base (slices are checked tensor by tensor on Open).
func (r *Recipe) checkArity(pr *Problems) {
	def := r.methodDef
	n, what, other := len(r.others()), "base_model and ", "other "
	if def.Base == BaseNone {
		other = ""
		// The base, when not listed, is merged as one more model.
		n, what = len(r.Models), ""
		if r.BaseModel != "" && len(r.others()) == len(r.Models) {
			n++
		}
	}
	switch {
	case def.MinModels > 0 && def.MinModels == def.MaxModels && n != def.MinModels:
		pr.add("%s merges %sexactly %d %smodel(s) (got %d)", def.Name, what, def.MinModels, other, n)
	case def.MinModels > 0 && n < def.MinModels:
		pr.add("%s needs %sat least %d %smodel(s) (got %d)", def.Name, what, def.MinModels, other, n)
	case def.MaxModels > 0 && n > def.MaxModels:
		pr.add("%s merges %sat most %d %smodel(s) (got %d)", def.Name, what, def.MaxModels, other, n)
	}
}

func (r *Recipe) slicesHaveBases() bool {
	if len(r.Slices) == 0 {
		return false
	}
	for _, s := range r.Slices {
		if s.BaseModel == "" {
			return false
		}
	}
	return true
}

func scalar(v *yaml.Node, key string, pr *Problems) string {
	if v.Kind != yaml.ScalarNode {
		pr.add("line %d: %s must be a string", v.Line, key)
		return ""
	}
	return v.Value
}

func (r *Recipe) parseModel(n *yaml.Node, pr *Problems) {
	e := ModelEntry{Line: n.Line, Params: map[string]Param{}}
	switch n.Kind {
	case yaml.ScalarNode:
		e.Model = n.Value
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k, v := n.Content[i], n.Content[i+1]
			switch k.Value {
			case "model":
				e.Model = scalar(v, "model", pr)
			case "parameters":
				e.Params = parseParams(v, pr)
			default:
				pr.add("line %d: unknown key %q in a models entry%s", k.Line, k.Value, suggest(k.Value, []string{"model", "parameters"}))
			}
		}
	default:
		pr.add("line %d: a models entry is {model: PATH, parameters: {...}}", n.Line)
		return
	}
	if e.Model == "" {
		pr.add("line %d: models entry without model", n.Line)
		return
	}
	r.Models = append(r.Models, e)
}

func (r *Recipe) parseSlice(n *yaml.Node, pr *Problems) {
	s := SliceDef{Line: n.Line, Params: map[string]Param{}}
	if n.Kind != yaml.MappingNode {
		pr.add("line %d: a slice is {sources: [...], parameters: {...}}", n.Line)
		return
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "sources":
			if v.Kind != yaml.SequenceNode {
				pr.add("line %d: sources must be a list", v.Line)
				continue
			}
			for _, src := range v.Content {
				if d, ok := parseSource(src, pr); ok {
					s.Sources = append(s.Sources, d)
				}
			}
		case "base_model":
			s.BaseModel = scalar(v, "base_model", pr)
		case "parameters":
			s.Params = parseParams(v, pr)
		case "residual_weight":
			pr.add("line %d: residual_weight is not supported (mergekit does not use it either)", k.Line)
		default:
			pr.add("line %d: unknown key %q in a slice%s", k.Line, k.Value, suggest(k.Value, []string{"sources", "base_model", "parameters"}))
		}
	}
	if len(s.Sources) == 0 {
		pr.add("line %d: a slice needs sources", n.Line)
		return
	}
	n0 := s.Sources[0].To - s.Sources[0].From
	for _, src := range s.Sources[1:] {
		if src.To-src.From != n0 {
			pr.add("line %d: every source of a slice must span the same number of layers (%s: %d, %s: %d)", src.Line, s.Sources[0].Model, n0, src.Model, src.To-src.From)
			break
		}
	}
	r.Slices = append(r.Slices, s)
}

func parseSource(n *yaml.Node, pr *Problems) (SourceDef, bool) {
	d := SourceDef{Line: n.Line, Params: map[string]Param{}}
	if n.Kind != yaml.MappingNode {
		pr.add("line %d: a slice source is {model: PATH, layer_range: [from, to]}", n.Line)
		return d, false
	}
	hasRange := false
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "model":
			d.Model = scalar(v, "model", pr)
		case "layer_range":
			hasRange = true
			if v.Kind != yaml.SequenceNode || len(v.Content) != 2 {
				pr.add("line %d: layer_range is [from, to] (to excluded)", v.Line)
				continue
			}
			a, err1 := strconv.Atoi(v.Content[0].Value)
			b, err2 := strconv.Atoi(v.Content[1].Value)
			if err1 != nil || err2 != nil || a < 0 || b <= a {
				pr.add("line %d: layer_range [%s, %s]: want integers 0 ≤ from < to", v.Line, v.Content[0].Value, v.Content[1].Value)
				continue
			}
			d.From, d.To = a, b
		case "parameters":
			d.Params = parseParams(v, pr)
		default:
			pr.add("line %d: unknown key %q in a slice source%s", k.Line, k.Value, suggest(k.Value, []string{"model", "layer_range", "parameters"}))
		}
	}
	switch {
	case d.Model == "":
		pr.add("line %d: slice source without model", n.Line)
		return d, false
	case !hasRange:
		pr.add("line %d: slice source %s without layer_range", n.Line, d.Model)
		return d, false
	}
	return d, true
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }

func parseParams(n *yaml.Node, pr *Problems) map[string]Param {
	out := map[string]Param{}
	if n.Kind != yaml.MappingNode {
		pr.add("line %d: parameters must be a mapping", n.Line)
		return out
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		p, err := decodeParam(v)
		if err != nil {
			pr.add("parameter %q: %v", k.Value, err)
			continue
		}
		p.Line = k.Line
		out[k.Value] = p
	}
	return out
}

// sameModel reports whether two model references name the same model.
func sameModel(a, b string) bool { return a != "" && filepath.Clean(a) == filepath.Clean(b) }

// others are the models: entries that are not the base.
func (r *Recipe) others() []ModelEntry {
	var out []ModelEntry
	for _, m := range r.Models {
		if !sameModel(m.Model, r.BaseModel) {
			out = append(out, m)
		}
	}
	return out
}

// otherMethodsParams are the parameter names some method takes: a recipe
// that gives one to a method that does not take it (weight to slerp, as
// mergekit's own tests do) gets a warning, not an error; any other unknown
// name is an error with a did-you-mean.
func otherMethodsParams() map[string]bool {
	out := map[string]bool{}
	for _, m := range Methods() {
		for k := range m.Global {
			out[k] = true
		}
		for k := range m.Tensor {
			out[k] = true
		}
	}
	return out
}

func (r *Recipe) checkParams(pr *Problems) {
	def := r.methodDef
	allowedTop := map[string]ParamSpec{}
	for k, v := range def.Global {
		allowedTop[k] = v
	}
	for k, v := range def.Tensor {
		v.Required = false // a top-level tensor parameter is a default
		allowedTop[k] = v
	}
	known := otherMethodsParams()
	check := func(where string, params map[string]Param, allowed map[string]ParamSpec) {
		names := make([]string, 0, len(allowed))
		for k := range allowed {
			names = append(names, k)
		}
		sort.Strings(names)
		keys := make([]string, 0, len(params))
		for k := range params {
			keys = append(keys, k)
		}
		sort.Strings(keys)
		for _, name := range keys {
			p := params[name]
			spec, ok := allowed[name]
			if !ok {
				if known[name] {
					r.Warnings = append(r.Warnings, fmt.Sprintf("line %d: %s: %s does not use parameter %q; ignored (as mergekit does)", p.Line, where, def.Name, name))
					continue
				}
				accepted := strings.Join(names, ", ")
				if accepted == "" {
					accepted = "none"
				}
				pr.add("line %d: %s: unknown parameter %q for %s%s (accepted: %s)", p.Line, where, name, def.Name, suggest(name, names), accepted)
				continue
			}
			p.leaves(func(v Param) {
				switch spec.Type {
				case "number":
					if v.Num == nil {
						pr.add("line %d: %s: %s must be a number", p.Line, where, name)
					} else if spec.Lo <= spec.Hi && (*v.Num < spec.Lo || *v.Num > spec.Hi) {
						pr.add("line %d: %s: %s = %v is outside [%v, %v]", p.Line, where, name, *v.Num, spec.Lo, spec.Hi)
					}
				case "bool":
					if v.Bool == nil {
						pr.add("line %d: %s: %s must be true or false", p.Line, where, name)
					}
				case "string":
					if v.Str == nil {
						pr.add("line %d: %s: %s must be a string", p.Line, where, name)
					} else if spec.Choices != nil && !slices.Contains(spec.Choices, *v.Str) {
						pr.add("line %d: %s: %s %q is not one of %s%s", p.Line, where, name, *v.Str, strings.Join(spec.Choices, ", "), suggest(*v.Str, spec.Choices))
					}
				}
			})
		}
	}
	check("parameters", r.Params, allowedTop)
	for name, spec := range def.Global {
		if _, ok := r.Params[name]; spec.Required && !ok && !r.everySliceHas(name) {
			pr.add("%s needs parameters.%s", def.Name, name)
		}
	}
	// Per model: the method's tensor parameters. (Whether a required one
	// resolves for every tensor — filters, slices — is checked on Open.)
	for _, m := range r.Models {
		if sameModel(m.Model, r.BaseModel) && def.Base != BaseNone {
			continue // mergekit ignores parameters on the base entry
		}
		check(fmt.Sprintf("model %s", m.Model), m.Params, def.Tensor)
	}
	for i, s := range r.Slices {
		check(fmt.Sprintf("slice %d", i+1), s.Params, allowedTop)
		for _, src := range s.Sources {
			check(fmt.Sprintf("slice %d source %s", i+1, src.Model), src.Params, def.Tensor)
		}
	}
}

func (r *Recipe) everySliceHas(name string) bool {
	if len(r.Slices) == 0 {
		return false
	}
	for _, s := range r.Slices {
		if _, ok := s.Params[name]; !ok {
			return false
		}
	}
	return true
}

// resolve finds a model path relative to the working directory, then to
// the recipe's directory.
// A MODEL+ADAPTER reference resolves each part.
func (r *Recipe) resolve(ref string) string {
	one := func(ref string) string {
		if filepath.IsAbs(ref) || exists(ref) {
			return ref
		}
		if alt := filepath.Join(filepath.Dir(r.Path), ref); exists(alt) {
			return alt
		}
		return ref
	}
	if p := one(ref); exists(p) || !strings.Contains(ref, "+") {
		return p
	}
	for i := 0; i < len(ref); i++ {
		if ref[i] == '+' {
			if m, a := one(ref[:i]), one(ref[i+1:]); exists(m) && exists(a) {
				return m + "+" + a
			}
		}
	}
	return ref
}

// canonicalYAML strips trailing spaces so the recorded recipe is tidy.
func canonicalYAML(src []byte) string {
	return string(bytes.TrimSpace(src))
}
