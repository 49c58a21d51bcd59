package merge

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/weights"
)

// Recipe is a merge configuration in mergekit's YAML format:
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
// Model references are local paths (a directory, a .safetensors or PyTorch
// file, or a shard index), resolved against the working directory and then
// the recipe's directory.
type Recipe struct {
	Path      string
	Source    []byte
	Method    string
	BaseModel string
	Models    []ModelEntry
	Params    map[string]Param
	DType     string
	OutDType  string
	methodDef *Method
}

// ModelEntry is one item of a recipe's models list.
type ModelEntry struct {
	Model  string
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

var topKeys = []string{"merge_method", "base_model", "models", "parameters", "dtype", "out_dtype", "slices", "tokenizer_source", "tokenizer", "chat_template", "name"}

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
		pr.add("a recipe is a YAML mapping with merge_method and models")
		return nil, pr
	}
	top := doc.Content[0]
	var paramsNode *yaml.Node
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case "merge_method":
			r.Method = v.Value
		case "base_model":
			r.BaseModel = v.Value
		case "dtype":
			r.DType = v.Value
		case "out_dtype":
			r.OutDType = v.Value
		case "name", "tokenizer_source", "chat_template":
			// Informational in mergekit; the base model's tokenizer files
			// are copied beside the output.
		case "tokenizer":
			pr.add("line %d: tokenizer merging is not supported (the base model's tokenizer files are copied)", k.Line)
		case "slices":
			pr.add("line %d: slices are not supported; list whole models under models", k.Line)
		case "models":
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
		pr.add("unknown merge_method %q%s (supported: %s)", r.Method, suggest(r.Method, MethodNames()), strings.Join(MethodNames(), ", "))
	}
	r.methodDef = def
	if paramsNode != nil {
		r.Params = parseParams(paramsNode, pr)
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
	if len(r.Models) == 0 {
		pr.add("models is empty: list the models to merge")
	}
	if ok && def.NeedsBase && r.BaseModel == "" {
		pr.add("%s needs base_model", r.Method)
	}
	if ok && def.Check != nil {
		def.Check(r, pr)
	}
	return r, pr.err()
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
				e.Model = v.Value
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
	if strings.Contains(e.Model, "+") && !exists(e.Model) {
		pr.add("line %d: model %q: model+LoRA references are not supported; merge the adapter first", n.Line, e.Model)
	}
	r.Models = append(r.Models, e)
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

// others are the models that are not the base.
func (r *Recipe) others() []ModelEntry {
	var out []ModelEntry
	for _, m := range r.Models {
		if r.BaseModel == "" || filepath.Clean(m.Model) != filepath.Clean(r.BaseModel) {
			out = append(out, m)
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
	check := func(where string, params map[string]Param, allowed map[string]ParamSpec) {
		names := make([]string, 0, len(allowed))
		for k := range allowed {
			names = append(names, k)
		}
		sort.Strings(names)
		for name, p := range params {
			spec, ok := allowed[name]
			if !ok {
				pr.add("line %d: %s: unknown parameter %q for %s%s (accepted: %s)", p.Line, where, name, def.Name, suggest(name, names), strings.Join(names, ", "))
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
		if _, ok := r.Params[name]; spec.Required && !ok {
			pr.add("%s needs parameters.%s", def.Name, name)
		}
	}
	for _, m := range r.Models {
		isBase := r.BaseModel != "" && filepath.Clean(m.Model) == filepath.Clean(r.BaseModel)
		if isBase && !def.BaseIsModel {
			continue // mergekit ignores parameters on the base entry
		}
		where := fmt.Sprintf("model %s", m.Model)
		check(where, m.Params, def.Tensor)
		for name, spec := range def.Tensor {
			_, here := m.Params[name]
			_, top := r.Params[name]
			if spec.Required && !here && !top {
				pr.add("line %d: %s: %s needs parameter %q", m.Line, where, def.Name, name)
			}
		}
	}
}

// Plan is a validated recipe with its checkpoints open.
type Plan struct {
	Recipe *Recipe
	// Base is the base model's checkpoint (nil for linear without base).
	Base weights.Checkpoint
	// Models are the merged models' checkpoints, base excluded (for linear,
	// every listed model).
	Models  []weights.Checkpoint
	entries []ModelEntry
	Tensors []weights.TensorInfo
	layers  int
}

// Close closes every checkpoint of the plan.
func (p *Plan) Close() {
	if p.Base != nil {
		p.Base.Close()
	}
	for _, m := range p.Models {
		if m != nil {
			m.Close()
		}
	}
}

// resolve finds a model path relative to the working directory, then to
// the recipe's directory.
func (r *Recipe) resolve(ref string) string {
	if filepath.IsAbs(ref) || exists(ref) {
		return ref
	}
	if alt := filepath.Join(filepath.Dir(r.Path), ref); exists(alt) {
		return alt
	}
	return ref
}

// Open opens every model (headers only) and checks that the tensors line
// up: same names and shapes in every input. All problems are reported at
// once, before any tensor data is read.
func (r *Recipe) Open() (*Plan, error) {
	pr := &Problems{File: r.Path}
	p := &Plan{Recipe: r}
	open := func(ref string, line int) weights.Checkpoint {
		c, err := weights.Open(r.resolve(ref))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				pr.add("line %d: model %q not found", line, ref)
			} else {
				pr.add("model %q: %v", ref, err)
			}
			return nil
		}
		return c
	}
	if r.BaseModel != "" {
		p.Base = open(r.BaseModel, 0)
	}
	entries := r.others()
	if r.methodDef.BaseIsModel {
		entries = r.Models
	}
	for _, m := range entries {
		p.Models = append(p.Models, open(m.Model, m.Line))
		p.entries = append(p.entries, m)
	}
	if len(pr.List) > 0 {
		p.Close()
		return nil, pr
	}
	ref := p.Base
	refName := r.BaseModel
	if ref == nil {
		ref, refName = p.Models[0], entries[0].Model
	}
	p.Tensors = ref.Tensors()
	inputs := append([]weights.Checkpoint{p.Base}, p.Models...)
	names := append([]string{r.BaseModel}, modelNames(entries)...)
	for i, c := range inputs {
		if c == nil || c == ref {
			continue
		}
		var missing, extra, shape []string
		for _, t := range p.Tensors {
			info, ok := c.Info(t.Name)
			switch {
			case !ok:
				missing = append(missing, t.Name)
			case !weights.SameShape(info.Shape, t.Shape):
				shape = append(shape, fmt.Sprintf("%s %s vs %s", t.Name, info.ShapeString(), t.ShapeString()))
			}
		}
		for _, t := range c.Tensors() {
			if _, ok := ref.Info(t.Name); !ok {
				extra = append(extra, t.Name)
			}
		}
		report := func(what string, list []string) {
			if len(list) == 0 {
				return
			}
			more := ""
			if len(list) > 3 {
				more = fmt.Sprintf(" and %d more", len(list)-3)
				list = list[:3]
			}
			pr.add("model %q: %s %s: %s%s", names[i], what, refName, strings.Join(list, ", "), more)
		}
		report("tensors missing from it but present in", missing)
		report("tensors not in", extra)
		report("shapes differ from", shape)
	}
	if len(pr.List) > 0 {
		p.Close()
		return nil, pr
	}
	tensors := make([]string, len(p.Tensors))
	for i, t := range p.Tensors {
		tensors[i] = t.Name
	}
	p.layers = tensorname.Layers(tensors)
	if r.methodDef.CheckPlan != nil {
		if r.methodDef.CheckPlan(p, pr); len(pr.List) > 0 {
			p.Close()
			return nil, pr
		}
	}
	return p, nil
}

func modelNames(es []ModelEntry) []string {
	out := make([]string, len(es))
	for i, e := range es {
		out[i] = e.Model
	}
	return out
}

// LayerT is the position of a tensor along the network for gradient
// parameters: layer i of L is at i/(L−1); tensors outside the numbered
// layers sit at 0 (embeddings) or 1 (final norm, head), as in mergekit.
func (p *Plan) LayerT(name string) float64 {
	i, ok := tensorname.Layer(name)
	if !ok {
		if tensorname.KindOf(name) == tensorname.Input {
			return 0
		}
		return 1
	}
	if p.layers <= 1 {
		return 0
	}
	return float64(i) / float64(p.layers-1)
}

// param finds a parameter for model m (or the top level when m < 0).
func (p *Plan) param(m int, name string) *Param {
	if m >= 0 {
		if v, ok := p.entries[m].Params[name]; ok {
			return &v
		}
	}
	if v, ok := p.Recipe.Params[name]; ok {
		return &v
	}
	return nil
}

func (p *Plan) boolParam(name string, def bool) bool {
	v := p.param(-1, name)
	if v == nil || v.Bool == nil {
		return def
	}
	return *v.Bool
}

func (p *Plan) strParam(name, def string) string {
	v := p.param(-1, name)
	if v == nil || v.Str == nil {
		return def
	}
	return *v.Str
}

// Inputs lists the plan's checkpoints in kernel input order: the base
// first, then the models. For a method that merges the base as one of the
// models (linear), only the models: a base listed among them is merged
// with its weight, one that is not is the reference for tensor names,
// shapes and the config, not an input.
func (p *Plan) Inputs() []weights.Checkpoint {
	if p.Base != nil && !p.Recipe.methodDef.BaseIsModel {
		return append([]weights.Checkpoint{p.Base}, p.Models...)
	}
	return append([]weights.Checkpoint(nil), p.Models...)
}

// OutDType is the dtype written for tensor t: out_dtype, else dtype, else
// the reference model's dtype. Non-float tensors keep theirs.
func (p *Plan) OutDType(t weights.TensorInfo) weights.DType {
	if !t.DType.IsFloat() {
		return t.DType
	}
	for _, s := range []string{p.Recipe.OutDType, p.Recipe.DType} {
		if s != "" {
			if dt, err := weights.ParseFloatDType(s); err == nil {
				return dt
			}
		}
	}
	return weights.OutputDType(t.DType, nil)
}

// canonicalYAML strips trailing spaces so the recorded recipe is tidy.
func canonicalYAML(src []byte) string {
	return string(bytes.TrimSpace(src))
}
