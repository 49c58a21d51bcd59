package merge

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"sort"
	"strconv"
	"strings"

	"github.com/weightops/weightops/lowrank"
	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/weights"
)

// Plan is a validated recipe with its checkpoints open, laid out tensor by
// tensor: every output tensor knows its sources (which model, which of
// its tensors: a slice may read layer 3 of a model as layer 7 of the
// output), its base and its position along the network for gradients.
type Plan struct {
	Recipe *Recipe
	// Checkpoints are the models the recipe references, each opened once,
	// in the order first referenced; Refs are the references as written.
	Checkpoints []weights.Checkpoint
	Refs        []string
	// Base is the recipe's base_model checkpoint (nil for none).
	Base weights.Checkpoint
	// Tensors are the output tensors (names, shapes, and the dtypes of
	// their reference source).
	Tensors []weights.TensorInfo
	// Layers is the number of numbered blocks written.
	Layers int
	// Warnings are what the recipe says that is accepted but not used,
	// and where weightops deliberately differs from mergekit for this
	// recipe, one line each.
	Warnings []string
	plans    map[string]*TensorPlan
	slots    []weights.Checkpoint
	// reference is the checkpoint whose config and tokenizer files go
	// beside the output: the base, else the first source.
	reference int
	vocab     *vocabPlan
	// chat is the chat template written into tokenizer_config.json ("":
	// the source's stays).
	chat string
}

// TensorPlan is how one output tensor is computed.
type TensorPlan struct {
	Name string
	// T is the tensor's position for gradient parameters: layer i of a
	// slice of n layers at i/(n−1) (1 for a one-layer slice); tensors
	// outside the blocks at 0, as current mergekit does.
	T float64
	// Sources are the tensor's inputs in kernel order: the base first
	// when HasBase, then the models.
	Sources []Source
	HasBase bool
	slice   *SliceDef
	recipe  *Recipe
}

// Source is one input of an output tensor.
type Source struct {
	// Model indexes Plan.Checkpoints; Tensor is the tensor read there.
	Model  int
	Tensor string
	params map[string]Param
}

// Models is the number of sources besides the base.
func (tp *TensorPlan) Models() int {
	if tp.HasBase {
		return len(tp.Sources) - 1
	}
	return len(tp.Sources)
}

// model is the i-th source besides the base.
func (tp *TensorPlan) model(i int) Source {
	if tp.HasBase {
		return tp.Sources[i+1]
	}
	return tp.Sources[i]
}

// Param resolves a parameter as mergekit does: for model i (i < 0: a
// global parameter), the model's own parameters in its slice source (or
// models entry), then the slice's, then the recipe's; at each level a
// filter list without a matching entry falls through to the next. It
// reports false when no level gives a value.
func (tp *TensorPlan) Param(i int, name string) (Param, bool) {
	tensor := tp.Name
	var levels []map[string]Param
	if i >= 0 {
		src := tp.model(i)
		// mergekit matches per-model filters on the input tensor's name.
		tensor = src.Tensor
		levels = append(levels, src.params)
	}
	if tp.slice != nil {
		levels = append(levels, tp.slice.Params)
	}
	levels = append(levels, tp.recipe.Params)
	for _, l := range levels {
		if v, ok := l[name]; ok {
			if r, ok := v.Eval(tensor, tp.T); ok {
				return r, true
			}
		}
	}
	return Param{}, false
}

// Float is a numeric parameter (a boolean counts as 0 or 1), or def.
func (tp *TensorPlan) Float(i int, name string, def float64) float64 {
	v, ok := tp.Param(i, name)
	switch {
	case !ok:
		return def
	case v.Num != nil:
		return *v.Num
	case v.Bool != nil && *v.Bool:
		return 1
	case v.Bool != nil:
		return 0
	}
	return def
}

// Bool is a boolean parameter, or def.
func (tp *TensorPlan) Bool(name string, def bool) bool {
	if v, ok := tp.Param(-1, name); ok && v.Bool != nil {
		return *v.Bool
	}
	return def
}

// Str is a string parameter, or def.
func (tp *TensorPlan) Str(name, def string) string {
	if v, ok := tp.Param(-1, name); ok && v.Str != nil {
		return *v.Str
	}
	return def
}

// Tensor is the plan of one output tensor.
func (p *Plan) Tensor(name string) *TensorPlan { return p.plans[name] }

// Inputs are the job's inputs: slot k reads, for each output tensor, its
// k-th source.
func (p *Plan) Inputs() []weights.Checkpoint { return p.slots }

// Close closes every checkpoint of the plan.
func (p *Plan) Close() {
	for _, c := range p.Checkpoints {
		if c != nil {
			c.Close()
		}
	}
}

// OutDType is the dtype written for tensor t: out_dtype, else dtype, else
// the reference source's dtype. Non-float tensors keep theirs.
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

// slices is the recipe as slices: the models: form is one slice of every
// model's layers, the base added when it is not listed (without
// parameters), as mergekit normalises it.
func (r *Recipe) slices() []SliceDef {
	if len(r.Slices) > 0 {
		return r.Slices
	}
	s := SliceDef{Params: map[string]Param{}}
	listed := false
	for _, m := range r.Models {
		s.Sources = append(s.Sources, SourceDef{Model: m.Model, Whole: true, Params: m.Params, Line: m.Line})
		listed = listed || sameModel(m.Model, r.BaseModel)
	}
	if r.BaseModel != "" && !listed {
		s.Sources = append(s.Sources, SourceDef{Model: r.BaseModel, Whole: true, Params: map[string]Param{}})
	}
	return []SliceDef{s}
}

// Open opens every model (headers only) and lays the merge out tensor by
// tensor, checking that the sources line up: layer ranges inside their
// models, the same tensors with the same shapes in every source, every
// required parameter resolvable. All problems are reported at once,
// before any tensor data is read.
func (r *Recipe) Open() (*Plan, error) {
	pr := &Problems{File: r.Path}
	p := &Plan{Recipe: r, plans: map[string]*TensorPlan{}}
	index := map[string]int{}
	open := func(ref string, line int) int {
		key := ref
		for k, i := range index {
			if sameModel(k, ref) {
				return i
			}
		}
		c, err := openModel(r.resolve(ref))
		if err != nil {
			where := ""
			if line > 0 {
				where = fmt.Sprintf("line %d: ", line)
			}
			if errors.Is(err, os.ErrNotExist) {
				pr.add("%smodel %q not found", where, ref)
			} else {
				pr.add("%smodel %q: %v", where, ref, err)
			}
			c = nil
		}
		p.Checkpoints = append(p.Checkpoints, c)
		p.Refs = append(p.Refs, ref)
		index[key] = len(p.Checkpoints) - 1
		return index[key]
	}
	base := -1
	if r.BaseModel != "" {
		base = open(r.BaseModel, 0)
	}
	slices := r.slices()
	for _, s := range slices {
		if s.BaseModel != "" {
			open(s.BaseModel, s.Line)
		}
		for _, src := range s.Sources {
			open(src.Model, src.Line)
		}
	}
	if len(pr.List) > 0 {
		p.Close()
		return nil, pr
	}
	if base >= 0 {
		p.Base = p.Checkpoints[base]
	}
	if r.Tokenizer != nil {
		if err := p.buildVocab(); err != nil {
			pr.add("%v", err)
			p.Close()
			return nil, pr
		}
	}
	if r.ChatTemplate != "" {
		if p.chat = p.chatTemplate(); p.chat == "" {
			p.Warnings = append(p.Warnings, "chat_template auto: no input model has a chat template, so none is set")
		}
	}
	p.reference = base
	if p.reference < 0 {
		p.reference = index[firstKey(index, slices[0].Sources[0].Model)]
	}
	p.layout(slices, index, pr)
	if len(pr.List) > 0 {
		p.Close()
		return nil, pr
	}
	if p.vocab != nil {
		for _, out := range p.Tensors {
			tp := p.plans[out.Name]
			for _, s := range tp.Sources {
				if t, ok := p.Checkpoints[s.Model].Info(s.Tensor); ok && p.vocab.isVocab(s.Model, t) {
					p.vocab.group(tp, p.Base)
					break
				}
			}
		}
	}
	p.Warnings = append(p.Warnings, r.Warnings...)
	p.checkTensors(pr)
	if r.methodDef.CheckPlan != nil {
		r.methodDef.CheckPlan(p, pr)
	}
	if len(pr.List) > 0 {
		p.Close()
		return nil, pr
	}
	return p, nil
}

func firstKey(index map[string]int, ref string) string {
	for k := range index {
		if sameModel(k, ref) {
			return k
		}
	}
	return ref
}

// layerNames are a checkpoint's tensors by numbered block, and those
// outside the blocks (in, before the blocks; out, after).
type layerNames struct {
	blocks  map[int][]weights.TensorInfo
	in, out []weights.TensorInfo
	n       int
}

func namesOf(c weights.Checkpoint) layerNames {
	ln := layerNames{blocks: map[int][]weights.TensorInfo{}}
	for _, t := range c.Tensors() {
		if i, ok := tensorname.Layer(t.Name); ok {
			ln.blocks[i] = append(ln.blocks[i], t)
			ln.n = max(ln.n, i+1)
			continue
		}
		if tensorname.KindOf(tensorname.Module(t.Name)) == tensorname.Input {
			ln.in = append(ln.in, t)
		} else {
			ln.out = append(ln.out, t)
		}
	}
	return ln
}

// blockNum finds the block number in a tensor name, for renumbering.
var blockNum = regexp.MustCompile(`(?:^|\.)(?:layers|layer|h|blocks|block)\.(\d+)\.`)

// renumber replaces a tensor name's block number.
func renumber(name string, to int) string {
	loc := blockNum.FindStringSubmatchIndex(name)
	if loc == nil {
		return name
	}
	return name[:loc[2]] + strconv.Itoa(to) + name[loc[3]:]
}

func (p *Plan) layout(slices []SliceDef, index map[string]int, pr *Problems) {
	r := p.Recipe
	def := r.methodDef
	names := map[int]layerNames{}
	for i, c := range p.Checkpoints {
		names[i] = namesOf(c)
	}
	model := func(ref string) int { return index[firstKey(index, ref)] }
	// Resolve whole ranges and check the ranges.
	for si := range slices {
		s := &slices[si]
		for j := range s.Sources {
			src := &s.Sources[j]
			n := names[model(src.Model)].n
			if src.Whole {
				src.From, src.To = 0, n
			}
			if src.To > n {
				pr.add("line %d: %s has %d layers; layer_range [%d, %d] goes past them", src.Line, src.Model, n, src.From, src.To)
			}
		}
		if n0 := s.Sources[0].To - s.Sources[0].From; len(r.Slices) == 0 {
			for _, src := range s.Sources[1:] {
				if src.To-src.From != n0 {
					pr.add("%s has %d layers and %s %d: merging whole models needs the same number (use slices to pick layers)", s.Sources[0].Model, n0, src.Model, src.To-src.From)
				}
			}
		}
	}
	if len(pr.List) > 0 {
		return
	}
	// leadOf is the source whose tensors a slice's output takes its names
	// from: the slice's base when the method uses one, else its first.
	baseOf := func(s *SliceDef) string {
		if s.BaseModel != "" {
			return s.BaseModel
		}
		return r.BaseModel
	}
	leadOf := func(s *SliceDef) SourceDef {
		if b := baseOf(s); def.Base != BaseNone && b != "" {
			for _, src := range s.Sources {
				if sameModel(src.Model, b) {
					return src
				}
			}
		}
		return s.Sources[0]
	}
	for i := range slices {
		s := &slices[i]
		if b := baseOf(s); def.Base != BaseNone && b != "" && !slicesHasModel(s, b) {
			pr.add("slice %d: base_model %s is not among its sources (list it, with its layer_range)", i+1, b)
		}
	}
	if len(pr.List) > 0 {
		return
	}
	// add plans one output tensor: name is the output's, srcName gives
	// each source's tensor.
	add := func(name string, slice *SliceDef, srcName func(src SourceDef) string, t float64) {
		if _, dup := p.plans[name]; dup {
			pr.add("tensor %q is written twice", name)
			return
		}
		tp := &TensorPlan{Name: name, T: t, slice: slice, recipe: r}
		if len(r.Slices) == 0 {
			tp.slice = nil // the models: form has no slice level
		}
		b := baseOf(slice)
		useBase := def.Base != BaseNone && b != ""
		for _, src := range slice.Sources {
			s := Source{Model: model(src.Model), Tensor: srcName(src), params: src.Params}
			if useBase && !tp.HasBase && sameModel(src.Model, b) {
				tp.HasBase = true
				tp.Sources = append([]Source{s}, tp.Sources...)
				continue
			}
			tp.Sources = append(tp.Sources, s)
		}
		info, ok := p.sourceInfo(tp.Sources[0])
		if !ok {
			return // reported by the coverage check
		}
		info.Name = name
		p.plans[name] = tp
		p.Tensors = append(p.Tensors, info)
	}
	// Every source must hold exactly the lead's tensors: missing ones and
	// extra ones are both reported.
	cover := func(what string, lead SourceDef, want []weights.TensorInfo, slice *SliceDef, got func(SourceDef) []weights.TensorInfo, rename func(string, SourceDef) string) {
		for _, src := range slice.Sources {
			if src.Model == lead.Model && src.From == lead.From {
				continue
			}
			have := map[string]bool{}
			for _, t := range got(src) {
				have[t.Name] = true
			}
			var missing, extra []string
			wanted := map[string]bool{}
			for _, t := range want {
				n := rename(t.Name, src)
				wanted[n] = true
				if !have[n] {
					missing = append(missing, n)
				}
			}
			for _, t := range got(src) {
				if !wanted[t.Name] {
					extra = append(extra, t.Name)
				}
			}
			list := func(kind string, l []string) {
				if len(l) == 0 {
					return
				}
				more := ""
				if len(l) > 3 {
					more = fmt.Sprintf(" and %d more", len(l)-3)
					l = l[:3]
				}
				pr.add("model %q: %s%s %s: %s%s", src.Model, what, kind, lead.Model, strings.Join(l, ", "), more)
			}
			list("tensors missing from it but present in", missing)
			list("tensors not in", extra)
		}
	}
	same := func(name string, _ SourceDef) string { return name }
	// Before the blocks: the first slice's sources, at t = 0.
	first, last := &slices[0], &slices[len(slices)-1]
	lead := leadOf(first)
	cover("", lead, names[model(lead.Model)].in, first, func(s SourceDef) []weights.TensorInfo { return names[model(s.Model)].in }, same)
	for _, t := range names[model(lead.Model)].in {
		add(t.Name, first, func(SourceDef) string { return t.Name }, 0)
	}
	out := 0
	for si := range slices {
		s := &slices[si]
		lead := leadOf(s)
		n := lead.To - lead.From
		for idx := 0; idx < n; idx++ {
			t := 1.0
			if n > 1 {
				t = float64(idx) / float64(n-1)
			}
			layer := func(src SourceDef) int { return src.From + idx }
			rename := func(name string, src SourceDef) string { return renumber(name, layer(src)) }
			where := ""
			if len(r.Slices) > 0 {
				where = fmt.Sprintf("slice %d, layer %d: ", si+1, idx)
			}
			cover(where, lead, names[model(lead.Model)].blocks[layer(lead)], s, func(src SourceDef) []weights.TensorInfo {
				return names[model(src.Model)].blocks[layer(src)]
			}, rename)
			for _, ti := range names[model(lead.Model)].blocks[layer(lead)] {
				name := ti.Name
				add(renumber(name, out), s, func(src SourceDef) string { return rename(name, src) }, t)
			}
			out++
		}
	}
	p.Layers = out
	// After the blocks: the last slice's sources, at t = 0.
	lead = leadOf(last)
	cover("", lead, names[model(lead.Model)].out, last, func(s SourceDef) []weights.TensorInfo { return names[model(s.Model)].out }, same)
	for _, t := range names[model(lead.Model)].out {
		add(t.Name, last, func(SourceDef) string { return t.Name }, 0)
	}
	sort.SliceStable(p.Tensors, func(i, j int) bool { return weights.NaturalLess(p.Tensors[i].Name, p.Tensors[j].Name) })
	p.buildSlots()
}

func slicesHasModel(s *SliceDef, ref string) bool {
	for _, src := range s.Sources {
		if sameModel(src.Model, ref) {
			return true
		}
	}
	return false
}

// checkTensors checks every output tensor's sources: present, of the
// output's shape, floating where the reference is; the method's model
// count; every required parameter resolvable.
func (p *Plan) checkTensors(pr *Problems) {
	def := p.Recipe.methodDef
	var problems []string
	seen := map[string]bool{}
	report := func(format string, a ...any) {
		msg := fmt.Sprintf(format, a...)
		if !seen[msg] {
			seen[msg] = true
			problems = append(problems, msg)
		}
	}
	for _, out := range p.Tensors {
		tp := p.plans[out.Name]
		for _, s := range tp.Sources {
			info, ok := p.sourceInfo(s)
			switch {
			case !ok:
			case !weights.SameShape(info.Shape, out.Shape):
				hint := ""
				if tensorname.KindOf(tensorname.Module(out.Name)) != tensorname.Body && p.Recipe.Tokenizer == nil {
					hint = " (vocabularies differ: set tokenizer_source to merge them)"
				}
				report("model %q: tensor %q has shape %s, %s (%q) has %s%s", p.Refs[s.Model], s.Tensor, info.ShapeString(), p.Refs[tp.Sources[0].Model], tp.Sources[0].Tensor, out.ShapeString(), hint)
			}
		}
		if !out.DType.IsFloat() {
			continue
		}
		m := tp.Models()
		switch {
		case len(tp.Sources) <= 1 || len(p.Recipe.Slices) == 0: // models: checked on parse
		case def.MinModels > 0 && m < def.MinModels:
			report("%s: tensor %q has %d model(s) to merge besides the base; %s needs at least %d", def.Name, out.Name, m, def.Name, def.MinModels)
		case def.MaxModels > 0 && m > def.MaxModels:
			report("%s: tensor %q has %d models to merge besides the base; %s merges at most %d", def.Name, out.Name, m, def.Name, def.MaxModels)
		}
		for name, spec := range def.Tensor {
			if !spec.Required || len(tp.Sources) <= 1 {
				continue
			}
			for i := range m {
				if _, ok := tp.Param(i, name); !ok {
					report("model %q: %s needs parameter %q for tensor %q (no value at any level: source, slice, top)", p.Refs[tp.model(i).Model], def.Name, name, tp.model(i).Tensor)
				}
			}
		}
		for name, spec := range def.Global {
			if spec.Required && len(tp.Sources) > 1 {
				if _, ok := tp.Param(-1, name); !ok {
					report("%s needs parameter %q for tensor %q", def.Name, name, out.Name)
				}
			}
		}
	}
	const most = 8
	for i, msg := range problems {
		if i == most {
			pr.add("and %d more problems like these", len(problems)-most)
			break
		}
		pr.add("%s", msg)
	}
}

// sourceInfo describes a source's tensor (in the output vocabulary for a
// vocabulary tensor).
func (p *Plan) sourceInfo(s Source) (weights.TensorInfo, bool) {
	if p.vocab != nil {
		return p.vocab.views[s.Model].Info(s.Tensor)
	}
	return p.Checkpoints[s.Model].Info(s.Tensor)
}

// buildSlots makes the job's inputs: slot k routes each output tensor to
// its k-th source.
func (p *Plan) buildSlots() {
	k := 0
	for _, tp := range p.plans {
		k = max(k, len(tp.Sources))
	}
	p.slots = make([]weights.Checkpoint, k)
	for i := range p.slots {
		v := &slotView{k: i, routes: map[string]route{}}
		for name, tp := range p.plans {
			if i < len(tp.Sources) {
				s := tp.Sources[i]
				v.routes[name] = route{ck: p.source(s.Model), name: s.Tensor}
			}
		}
		p.slots[i] = v
	}
}

// source is the checkpoint a model's tensors are read from: itself, or its
// view in the output vocabulary.
func (p *Plan) source(model int) weights.Checkpoint {
	if p.vocab != nil {
		return p.vocab.views[model]
	}
	return p.Checkpoints[model]
}

// slotView is one input of the merge job: for each output tensor, the
// source at its slot, under the output's name.
type slotView struct {
	k      int
	routes map[string]route
}

type route struct {
	ck   weights.Checkpoint
	name string
}

func (v *slotView) Path() string { return fmt.Sprintf("merge input %d", v.k) }

func (v *slotView) Tensors() []weights.TensorInfo {
	var out []weights.TensorInfo
	for name := range v.routes {
		if t, ok := v.Info(name); ok {
			out = append(out, t)
		}
	}
	sort.Slice(out, func(i, j int) bool { return weights.NaturalLess(out[i].Name, out[j].Name) })
	return out
}

func (v *slotView) Info(name string) (weights.TensorInfo, bool) {
	r, ok := v.routes[name]
	if !ok {
		return weights.TensorInfo{}, false
	}
	t, ok := r.ck.Info(r.name)
	t.Name = name
	return t, ok
}

func (v *slotView) Metadata() map[string]string { return nil }

func (v *slotView) ReadTensor(name string, buf []byte) (weights.Tensor, error) {
	r, ok := v.routes[name]
	if !ok {
		return weights.Tensor{}, fmt.Errorf("merge input %d: no tensor %q", v.k, name)
	}
	t, err := r.ck.ReadTensor(r.name, buf)
	t.Name = name
	return t, err
}

// TensorSection is the routed tensor's section in its file, when its
// checkpoint has one (an adapter-merged model does not).
func (v *slotView) TensorSection(name string) (*io.SectionReader, bool) {
	r, ok := v.routes[name]
	if !ok {
		return nil, false
	}
	return weights.TensorSection(r.ck, r.name)
}

func (v *slotView) Close() error { return nil }

// Route names the file and tensor a slot reads for an output tensor.
func (v *slotView) Route(tensor string) (file, name string) {
	r, ok := v.routes[tensor]
	if !ok {
		return v.Path(), tensor
	}
	return r.ck.Path(), r.name
}

// openModel opens a model reference: a checkpoint, or MODEL+ADAPTER.
func openModel(ref string) (weights.Checkpoint, error) {
	if c, err := weights.Open(ref); err == nil || !strings.Contains(ref, "+") {
		return c, err
	}
	return openWithAdapter(ref)
}

// openWithAdapter opens MODEL+ADAPTER, mergekit's reference to a model
// with a PEFT LoRA adapter merged in: the adapter is merged as each tensor
// is read (the numbers lora merge writes). The split is the first "+"
// with a model on its left and an adapter on its right.
func openWithAdapter(ref string) (weights.Checkpoint, error) {
	for i := 0; i < len(ref); i++ {
		if ref[i] != '+' {
			continue
		}
		model, adapter := ref[:i], ref[i+1:]
		if !exists(model) || !exists(adapter) {
			continue
		}
		a, err := lowrank.OpenAdapter(adapter)
		if err != nil {
			return nil, err
		}
		base, err := weights.Open(model)
		if err != nil {
			a.Close()
			return nil, err
		}
		v, err := a.View(base, 1)
		if err != nil {
			a.Close()
			base.Close()
			return nil, err
		}
		return v, nil
	}
	return nil, fmt.Errorf("%s: %w (and no MODEL+ADAPTER split names an existing model and adapter)", ref, os.ErrNotExist)
}
