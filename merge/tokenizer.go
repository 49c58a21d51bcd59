package merge

import (
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

// vocabPlan is the output vocabulary of a recipe with a tokenizer source,
// and, per model, a view of its checkpoint whose vocabulary tensors
// (embeddings, lm_head) have their rows laid out in it.
//
// It follows mergekit: the lead model (the base, else the first) has its
// tokenizer stripped of ids past its embedding; the output is that
// tokenizer (source base), the union of every model's tokens (source
// union: the lead's, then each model's vocabulary tokens in id order, then
// their added tokens, each new one appended), or one model's tokenizer
// whole; tokens named in tokenizer.tokens are added last. A model's row
// for a token it has is its own; a missing one comes from the only model
// that has it, else the base, else the mean over the models that have
// it, else zero; tokenizer.tokens overrides per token (force: even for
// models that have it). Rows past the vocabulary (pad_to_multiple_of)
// are the mean of the model's rows.
type vocabPlan struct {
	out    *tokenizer.Tokenizer
	source string // "base", "union", or the reference whose tokenizer is taken
	tokens []string
	size   int // rows of every output vocabulary tensor
	// rows is each model's embedding row count (config vocab_size);
	// perm[m][j] is model m's row for output token j (-1: it has none).
	rows  []int
	perm  [][]int
	cfg   []tokenConfig // per output token; kind "" for the default rules
	base  int           // index of the base model (-1: none)
	views []weights.Checkpoint
	// groups are, per model and tensor read, the models whose rows fill
	// the tokens a model lacks: the sources of the output tensor (and the
	// base), as mergekit gathers them.
	groups   []map[string][]int
	mu       sync.Mutex
	defaults map[string]*defaultRows
	added    []string // tokens appended to the lead's vocabulary
}

// tokenConfig is a resolved tokenizer.tokens entry.
type tokenConfig struct {
	kind  string // "", "model", "model_token", "zero"
	model int
	row   int // model_token: the row in model
	force bool
}

// defaultRows are the rows one output tensor's models get for the tokens
// they lack (or are forced to take), computed once per tensor.
type defaultRows struct {
	once sync.Once
	rows map[int][]float64
	err  error
}

func (p *Plan) buildVocab() error {
	def := p.Recipe.Tokenizer
	v := &vocabPlan{source: def.Source, base: -1, defaults: map[string]*defaultRows{}}
	if p.Base != nil {
		v.base = 0 // the base is opened first
	}
	n := len(p.Checkpoints)
	toks := make([]*tokenizer.Tokenizer, n)
	v.rows = make([]int, n)
	for i := range p.Checkpoints {
		dir := weights.ModelDir(modelPart(p.Recipe.resolve(p.Refs[i])))
		t, err := tokenizer.Load(dir)
		switch {
		case errors.Is(err, tokenizer.ErrNoTokenizer) && i > 0:
			p.Warnings = append(p.Warnings, fmt.Sprintf("tokenizer: model %q has no tokenizer.json; taking its vocabulary to be %q's, as mergekit does", p.Refs[i], p.Refs[0]))
			t = toks[0]
		case errors.Is(err, tokenizer.ErrNoTokenizer):
			return fmt.Errorf("tokenizer: model %q has no tokenizer.json, which merging vocabularies reads (tokenizer_source: %s)", p.Refs[i], def.Source)
		case err != nil:
			return fmt.Errorf("tokenizer: %w", err)
		}
		toks[i] = t
		rows, err := configVocabSize(dir)
		if err != nil {
			return fmt.Errorf("tokenizer: %w", err)
		}
		if rows == 0 {
			rows = t.File.Len()
		}
		v.rows[i] = rows
	}
	lead, err := reload(toks[0])
	if err != nil {
		return err
	}
	if k, err := lead.File.Strip(v.rows[0]); err != nil {
		return fmt.Errorf("tokenizer: model %q: %w", p.Refs[0], err)
	} else if k > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("tokenizer: %d tokens of %q have ids past its %d embedding rows and are dropped, as mergekit does", k, p.Refs[0], v.rows[0]))
	}
	switch def.Source {
	case "base":
		v.out = lead
	case "union":
		v.out = lead
		v.union(toks)
	default:
		dir := weights.ModelDir(modelPart(p.Recipe.resolve(def.Source)))
		t, err := tokenizer.Load(dir)
		if err != nil {
			return fmt.Errorf("tokenizer_source %q: %w", def.Source, err)
		}
		v.out = t
	}
	for _, tok := range def.Order {
		if _, added := v.out.File.Add(tokenizer.Plain(tok)); added {
			v.added = append(v.added, tok)
		}
	}
	vocab := v.out.File.Vocab()
	v.tokens = make([]string, len(vocab))
	for tok, id := range vocab {
		if id >= len(vocab) {
			return fmt.Errorf("tokenizer: the output vocabulary has %d tokens but %s has id %d: its ids are not 0..%d", len(vocab), tokenizer.Describe(tok), id, len(vocab)-1)
		}
		v.tokens[id] = tok
	}
	v.size = len(vocab)
	if m := def.PadToMultipleOf; m > 0 && v.size%m != 0 {
		v.size += m - v.size%m
	}
	v.perm = make([][]int, n)
	for i, t := range toks {
		mv := t.File.Vocab()
		perm := make([]int, len(v.tokens))
		for j, tok := range v.tokens {
			perm[j] = -1
			if id, ok := mv[tok]; ok && id < v.rows[i] {
				perm[j] = id
			}
		}
		v.perm[i] = perm
	}
	if err := v.resolveTokens(p, toks); err != nil {
		return err
	}
	var none []string
	for j := range v.tokens {
		if v.cfg[j].kind != "" {
			continue
		}
		missing := true
		for i := range v.perm {
			missing = missing && v.perm[i][j] < 0
		}
		if missing {
			none = append(none, tokenizer.Describe(v.tokens[j]))
		}
	}
	if len(none) > 0 {
		p.Warnings = append(p.Warnings, fmt.Sprintf("tokenizer: %d tokens are in no model's embedding and get zero rows: %s", len(none), firstFew(none)))
	}
	v.groups = make([]map[string][]int, n)
	v.views = make([]weights.Checkpoint, n)
	for i, c := range p.Checkpoints {
		v.groups[i] = map[string][]int{}
		v.views[i] = &vocabView{Checkpoint: c, v: v, model: i}
	}
	p.vocab = v
	return nil
}

// reload parses a tokenizer afresh, so edits to the output leave the
// model's own vocabulary as it was.
func reload(t *tokenizer.Tokenizer) (*tokenizer.Tokenizer, error) {
	data, err := t.File.Encode()
	if err != nil {
		return nil, err
	}
	f, err := tokenizer.Parse(data)
	if err != nil {
		return nil, err
	}
	c := *t
	c.File = f
	return &c, nil
}

// union appends to the lead's vocabulary every token of the other models
// (ids within their embeddings): vocabulary tokens first, then added
// tokens with their settings, the first model's settings winning.
func (v *vocabPlan) union(toks []*tokenizer.Tokenizer) {
	var plain []string
	seen := map[string]bool{}
	added := map[string]bool{}
	var addedList []tokenizer.AddedToken
	for i, t := range toks {
		if i > 0 && t == toks[0] {
			continue
		}
		ids := t.File.Vocab()
		byID := make([]string, 0, len(ids))
		for tok := range ids {
			byID = append(byID, tok)
		}
		sort.Slice(byID, func(a, b int) bool { return ids[byID[a]] < ids[byID[b]] })
		for _, tok := range byID {
			if ids[tok] >= v.rows[i] || t.File.IsAdded(tok) || seen[tok] {
				continue
			}
			seen[tok] = true
			plain = append(plain, tok)
		}
		as := append([]tokenizer.AddedToken(nil), t.File.Added...)
		sort.SliceStable(as, func(a, b int) bool { return as[a].ID < as[b].ID })
		for _, a := range as {
			if a.ID >= v.rows[i] || added[a.Content] {
				continue
			}
			added[a.Content] = true
			addedList = append(addedList, a)
		}
	}
	for _, tok := range plain {
		if added[tok] {
			continue
		}
		if _, ok := v.out.File.Add(tokenizer.Plain(tok)); ok {
			v.added = append(v.added, tok)
		}
	}
	for _, a := range addedList {
		if _, ok := v.out.File.Add(a); ok {
			v.added = append(v.added, a.Content)
		}
	}
}

// resolveTokens turns tokenizer.tokens into per-token configurations.
func (v *vocabPlan) resolveTokens(p *Plan, toks []*tokenizer.Tokenizer) error {
	v.cfg = make([]tokenConfig, len(v.tokens))
	def := p.Recipe.Tokenizer
	index := map[string]int{}
	for j, t := range v.tokens {
		index[t] = j
	}
	var problems []string
	model := func(ref string, line int) int {
		for i, r := range p.Refs {
			if sameModel(r, ref) {
				return i
			}
		}
		problems = append(problems, fmt.Sprintf("line %d: tokenizer.tokens: model %q is not one of the merge's models%s", line, ref, suggest(ref, p.Refs)))
		return -1
	}
	for _, tok := range def.Order {
		e := def.Tokens[tok]
		j := index[tok]
		c := tokenConfig{kind: e.Kind, force: e.Force, model: -1}
		switch e.Kind {
		case "model":
			if c.model = model(e.Model, e.Line); c.model >= 0 && v.perm[c.model][j] < 0 {
				problems = append(problems, fmt.Sprintf("line %d: tokenizer.tokens: model %q has no token %s", e.Line, e.Model, tokenizer.Describe(tok)))
			}
		case "model_token":
			if c.model = model(e.Model, e.Line); c.model < 0 {
				break
			}
			c.row = e.TokenID
			if !e.HasID {
				id, ok := toks[c.model].File.Vocab()[e.Token]
				if !ok {
					problems = append(problems, fmt.Sprintf("line %d: tokenizer.tokens: model %q has no token %s", e.Line, e.Model, tokenizer.Describe(e.Token)))
					break
				}
				c.row = id
			}
			if c.row >= v.rows[c.model] {
				problems = append(problems, fmt.Sprintf("line %d: tokenizer.tokens: token id %d is past model %q's %d embedding rows", e.Line, c.row, e.Model, v.rows[c.model]))
			}
		case "":
			problems = append(problems, fmt.Sprintf("line %d: tokenizer.tokens: token %s needs a source (a model, {kind: model_token, ...} or {kind: zero})", e.Line, tokenizer.Describe(tok)))
		}
		v.cfg[j] = c
	}
	if len(problems) > 0 {
		return errors.New(strings.Join(problems, "\n"))
	}
	return nil
}

// configVocabSize is config.json's vocab_size (0 when the directory has no
// config or it gives none).
func configVocabSize(dir string) (int, error) {
	p := filepath.Join(dir, "config.json")
	if !exists(p) {
		return 0, nil
	}
	data, err := weights.ReadFile(p, weights.MaxSideFileSize, "model config")
	if err != nil {
		return 0, err
	}
	var c struct {
		VocabSize *int `json:"vocab_size"`
		Text      struct {
			VocabSize *int `json:"vocab_size"`
		} `json:"text_config"`
	}
	if err := json.Unmarshal(data, &c); err != nil {
		return 0, fmt.Errorf("%s: %w", p, err)
	}
	for _, n := range []*int{c.VocabSize, c.Text.VocabSize} {
		if n != nil && *n > 0 {
			return *n, nil
		}
	}
	return 0, nil
}

func firstFew(items []string) string {
	const most = 5
	if len(items) <= most {
		return strings.Join(items, ", ")
	}
	return strings.Join(items[:most], ", ") + fmt.Sprintf(" and %d more", len(items)-most)
}

// isVocab reports whether a tensor of model m is one of its vocabulary
// tensors: a 2-D float table before or after the blocks with one row per
// embedding row of the model.
func (v *vocabPlan) isVocab(m int, t weights.TensorInfo) bool {
	return len(t.Shape) == 2 && t.Shape[0] == int64(v.rows[m]) && t.DType.IsFloat() && !t.DType.IsBlock() &&
		tensorname.KindOf(tensorname.Module(t.Name)) != tensorname.Body
}

// group records, once the layout is known, which models fill the missing
// rows of each vocabulary tensor read.
func (v *vocabPlan) group(tp *TensorPlan, base weights.Checkpoint) {
	var models []int
	has := map[int]bool{}
	for _, s := range tp.Sources {
		if !has[s.Model] {
			has[s.Model] = true
			models = append(models, s.Model)
		}
	}
	if v.base >= 0 && !has[v.base] {
		if _, ok := base.Info(tp.Sources[0].Tensor); ok {
			models = append(models, v.base)
		}
	}
	for _, s := range tp.Sources {
		if _, ok := v.groups[s.Model][s.Tensor]; !ok {
			v.groups[s.Model][s.Tensor] = models
		}
	}
}

// defaultsFor computes, for one tensor and its group of models, the rows
// of the tokens some model of the group lacks or is forced to take.
func (v *vocabPlan) defaultsFor(name string, models []int) (map[int][]float64, error) {
	key := fmt.Sprint(name, models)
	v.mu.Lock()
	d, ok := v.defaults[key]
	if !ok {
		d = &defaultRows{}
		v.defaults[key] = d
	}
	v.mu.Unlock()
	d.once.Do(func() { d.rows, d.err = v.computeDefaults(name, models) })
	return d.rows, d.err
}

func (v *vocabPlan) computeDefaults(name string, models []int) (map[int][]float64, error) {
	type part struct {
		row    int
		weight float64 // 1/count for a mean, 1 for a copy
		out    int     // output token
	}
	need := map[int][]part{} // model → rows it gives
	out := map[int][]float64{}
	inGroup := map[int]bool{}
	for _, m := range models {
		inGroup[m] = true
	}
	for j := range v.tokens {
		c := v.cfg[j]
		var present []int
		lacking := c.force
		for _, m := range models {
			if v.perm[m][j] >= 0 {
				present = append(present, m)
			} else {
				lacking = true
			}
		}
		if !lacking {
			continue
		}
		out[j] = nil // zero unless a model gives it
		switch {
		case c.kind == "zero":
		case c.kind == "model":
			need[c.model] = append(need[c.model], part{v.perm[c.model][j], 1, j})
		case c.kind == "model_token":
			need[c.model] = append(need[c.model], part{c.row, 1, j})
		case len(present) == 0:
		case len(present) == 1:
			m := present[0]
			need[m] = append(need[m], part{v.perm[m][j], 1, j})
		case v.base >= 0 && inGroup[v.base] && v.perm[v.base][j] >= 0:
			need[v.base] = append(need[v.base], part{v.perm[v.base][j], 1, j})
		default:
			w := 1 / float64(len(present))
			for _, m := range present {
				need[m] = append(need[m], part{v.perm[m][j], w, j})
			}
		}
	}
	ms := make([]int, 0, len(need))
	for m := range need {
		ms = append(ms, m)
	}
	sort.Ints(ms)
	for _, m := range ms {
		ck := v.views[m].(*vocabView).Checkpoint
		info, ok := ck.Info(name)
		if !ok || !v.isVocab(m, info) {
			return nil, fmt.Errorf("%s: tensor %q: the vocabulary tensor the tokenizer merge takes rows from is missing or not [%d, hidden]", ck.Path(), name, v.rows[m])
		}
		t, err := ck.ReadTensor(name, nil)
		if err != nil {
			return nil, err
		}
		hidden := int(info.Shape[1])
		es := info.DType.Size()
		row := make([]float64, hidden)
		for _, pt := range need[m] {
			if err := weights.Decode(info.DType, t.Data[pt.row*hidden*es:(pt.row+1)*hidden*es], row); err != nil {
				return nil, &weights.TensorError{File: ck.Path(), Tensor: name, Err: err}
			}
			acc := out[pt.out]
			if acc == nil {
				acc = make([]float64, hidden)
				out[pt.out] = acc
			} else if len(acc) != hidden {
				return nil, fmt.Errorf("%s: tensor %q: %d columns where another model has %d", ck.Path(), name, hidden, len(acc))
			}
			for k, x := range row {
				acc[k] += pt.weight * x
			}
		}
	}
	return out, nil
}

// vocabView is a model's checkpoint with its vocabulary tensors in the
// output vocabulary.
type vocabView struct {
	weights.Checkpoint
	v     *vocabPlan
	model int
}

func (w *vocabView) Tensors() []weights.TensorInfo {
	ts := w.Checkpoint.Tensors()
	out := make([]weights.TensorInfo, len(ts))
	for i, t := range ts {
		out[i] = w.info(t)
	}
	return out
}

func (w *vocabView) Info(name string) (weights.TensorInfo, bool) {
	t, ok := w.Checkpoint.Info(name)
	if !ok {
		return t, false
	}
	return w.info(t), true
}

func (w *vocabView) info(t weights.TensorInfo) weights.TensorInfo {
	if w.v.isVocab(w.model, t) {
		t.Shape = []int64{int64(w.v.size), t.Shape[1]}
	}
	return t
}

// Close leaves the checkpoint to the plan, which closes it.
func (w *vocabView) Close() error { return nil }

func (w *vocabView) ReadTensor(name string, buf []byte) (weights.Tensor, error) {
	info, ok := w.Checkpoint.Info(name)
	if !ok || !w.v.isVocab(w.model, info) {
		return w.Checkpoint.ReadTensor(name, buf)
	}
	models, ok := w.v.groups[w.model][name]
	if !ok {
		models = []int{w.model}
	}
	defaults, err := w.v.defaultsFor(name, models)
	if err != nil {
		return weights.Tensor{}, err
	}
	src, err := w.Checkpoint.ReadTensor(name, nil)
	if err != nil {
		return weights.Tensor{}, err
	}
	hidden := int(info.Shape[1])
	es := info.DType.Size()
	rowBytes := hidden * es
	n := w.v.size * rowBytes
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	perm := w.v.perm[w.model]
	zero := make([]float64, hidden)
	for j := range w.v.tokens {
		dst := buf[j*rowBytes : (j+1)*rowBytes]
		if r := perm[j]; r >= 0 && !w.v.cfg[j].force {
			copy(dst, src.Data[r*rowBytes:(r+1)*rowBytes])
			continue
		}
		row := defaults[j]
		if row == nil {
			row = zero
		}
		if err := weights.Encode(info.DType, row, dst); err != nil {
			return weights.Tensor{}, &weights.TensorError{File: w.Path(), Tensor: name, Err: err}
		}
	}
	if pad := w.v.size - len(w.v.tokens); pad > 0 {
		// The padded rows are the mean of the model's rows, as
		// vocabulary expansion is usually initialised.
		mean := make([]float64, hidden)
		row := make([]float64, hidden)
		for j := range w.v.tokens {
			if err := weights.Decode(info.DType, buf[j*rowBytes:(j+1)*rowBytes], row); err != nil {
				return weights.Tensor{}, err
			}
			for k, x := range row {
				mean[k] += x
			}
		}
		for k := range mean {
			mean[k] /= float64(len(w.v.tokens))
		}
		for j := len(w.v.tokens); j < w.v.size; j++ {
			if err := weights.Encode(info.DType, mean, buf[j*rowBytes:(j+1)*rowBytes]); err != nil {
				return weights.Tensor{}, err
			}
		}
	}
	src.Data = buf
	src.Shape = []int64{int64(w.v.size), int64(hidden)}
	return src, nil
}

// tokenizerFiles are the files that describe a tokenizer: taken together
// from the tokenizer source.
var tokenizerFiles = []string{
	"tokenizer.json", "tokenizer_config.json", "special_tokens_map.json", "tokenizer.model",
	"vocab.json", "merges.txt", "added_tokens.json", "chat_template.jinja", "chat_template.json",
}

// adjustSideFiles brings the files written beside the output in line with
// the recipe's vocabulary and chat template: the output tokenizer, its
// added tokens in tokenizer_config.json, config.json's vocab_size, the
// chat template. A lone .safetensors output cannot carry them and is
// refused.
func (p *Plan) adjustSideFiles(side *stream.ModelFiles) error {
	r := p.Recipe
	if p.vocab == nil && p.chat == "" {
		return nil
	}
	sf := side.Files()
	if sf == nil {
		what := "tokenizer_source"
		if p.vocab == nil {
			what = "chat_template"
		}
		return fmt.Errorf("%s: %s writes tokenizer files beside the weights: give a directory as the output", r.Path, what)
	}
	if v := p.vocab; v != nil {
		if v.source != "base" && v.source != "union" {
			// The source's tokenizer files replace the reference's.
			for _, n := range tokenizerFiles {
				sf.Remove(n)
			}
			src, err := weights.ReadModelFiles(v.out.Dir)
			if err != nil {
				return err
			}
			for _, f := range src.Files {
				if slices.Contains(tokenizerFiles, f.Name) {
					sf.Set(f.Name, f.Data)
				}
			}
		}
		data, err := v.out.File.Encode()
		if err != nil {
			return fmt.Errorf("tokenizer.json: %w", err)
		}
		sf.Set("tokenizer.json", data)
		if c, ok := sf.Get("tokenizer_config.json"); ok {
			cfg, err := tokenizer.ParseConfig(c)
			if err != nil {
				return err
			}
			if err := cfg.SetAdded(v.out.File.Added); err != nil {
				return fmt.Errorf("tokenizer_config.json: %w", err)
			}
			sf.Set("tokenizer_config.json", cfg.Encode())
		}
		// added_tokens.json is the slow tokenizers' list of added tokens;
		// tokenizer_config.json now holds them all.
		sf.Remove("added_tokens.json")
		if c, ok := sf.Get("config.json"); ok {
			enc, _ := json.Marshal(v.size)
			c, err := weights.SetJSONKey(c, "vocab_size", enc)
			if err != nil {
				return fmt.Errorf("config.json: %w", err)
			}
			sf.Set("config.json", c)
		}
	}
	if p.chat != "" {
		c, ok := sf.Get("tokenizer_config.json")
		if !ok {
			if _, has := sf.Get("tokenizer.json"); !has {
				return fmt.Errorf("%s: chat_template goes into tokenizer_config.json, and the model the tokenizer comes from has no tokenizer", r.Path)
			}
			c = []byte("{}")
		}
		cfg, err := tokenizer.ParseConfig(c)
		if err == nil && !ok && p.vocab != nil {
			// A new tokenizer_config.json lists the added tokens too.
			err = cfg.SetAdded(p.vocab.out.File.Added)
		}
		if err != nil {
			return err
		}
		if err := cfg.SetChatTemplate(p.chat); err != nil {
			return fmt.Errorf("tokenizer_config.json: %w", err)
		}
		sf.Set("tokenizer_config.json", cfg.Encode())
		// transformers prefers these files to tokenizer_config.json's
		// template; the recipe's template is the one that must count.
		sf.Remove("chat_template.jinja")
		sf.Remove("chat_template.json")
	}
	return nil
}
