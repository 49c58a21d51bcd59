package moe

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"path/filepath"
	"sync"

	"gonum.org/v1/gonum/mat"

	"github.com/weightops/weightops/engine"
	"github.com/weightops/weightops/tokenizer"
	"github.com/weightops/weightops/weights"
)

// embedTensor is the token embedding cheap_embed routes by.
const embedTensor = "model.embed_tokens.weight"

// promptGate holds what the prompt-routed gate modes (cheap_embed,
// hidden) need: each expert's prompts as token ids (the base's tokenizer,
// its BOS token before each prompt), and, once computed, the routers.
type promptGate struct {
	positive, negative [][][]int // expert → prompt → ids
	once               sync.Once
	routers            [][][]float64 // layer → expert → row
	err                error
}

// preparePrompts tokenizes the prompts with the base's tokenizer.
func (p *Plan) preparePrompts(add func(string, ...any)) {
	c := p.Config
	dir := weights.ModelDir(c.resolve(c.BaseModel))
	tok, err := tokenizer.Load(dir)
	if err != nil {
		add("gate_mode %s tokenizes the prompts with the base's tokenizer: %v", c.GateMode, err)
		return
	}
	enc, err := tok.File.NewEncoder()
	if err != nil {
		add("gate_mode %s: the base's tokenizer: %v", c.GateMode, err)
		return
	}
	bos := bosToken(dir)
	info, ok := p.base.Info(embedTensor)
	if !ok || len(info.Shape) != 2 || int(info.Shape[1]) != p.Hidden {
		add("gate_mode %s needs the base's %s [vocab, %d], which it lacks", c.GateMode, embedTensor, p.Hidden)
		return
	}
	rows := int(info.Shape[0])
	ce := &promptGate{}
	encode := func(e Expert, prompts []string) [][]int {
		var out [][]int
		for _, s := range prompts {
			ids := enc.Encode(bos + s)
			for _, id := range ids {
				if id >= rows {
					add("line %d: prompt %q has token id %d, past the %d rows of %s", e.Line, s, id, rows, embedTensor)
					return nil
				}
			}
			out = append(out, ids)
		}
		return out
	}
	for _, e := range c.Experts {
		ce.positive = append(ce.positive, encode(e, e.PositivePrompts))
		ce.negative = append(ce.negative, encode(e, e.NegativePrompts))
	}
	p.prompts = ce
}

// bosToken is the tokenizer's BOS token text (tokenizer_config.json, else
// special_tokens_map.json), "" when it has none: mergekit puts it before
// each prompt.
func bosToken(dir string) string {
	for _, name := range []string{"tokenizer_config.json", "special_tokens_map.json"} {
		p := filepath.Join(dir, name)
		if !exists(p) {
			continue
		}
		data, err := weights.ReadFile(p, weights.MaxSideFileSize, "tokenizer file")
		if err != nil {
			continue
		}
		var m struct {
			Bos json.RawMessage `json:"bos_token"`
		}
		if json.Unmarshal(data, &m) != nil || len(m.Bos) == 0 {
			continue
		}
		var s string
		if json.Unmarshal(m.Bos, &s) == nil {
			return s
		}
		var obj struct {
			Content string `json:"content"`
		}
		if json.Unmarshal(m.Bos, &obj) == nil && obj.Content != "" {
			return obj.Content
		}
	}
	return ""
}

// routers computes the prompt-routed routers, once.
func (p *Plan) routers() ([][][]float64, error) {
	g := p.prompts
	g.once.Do(func() {
		if p.Config.GateMode == "cheap_embed" {
			g.routers, g.err = p.cheapEmbed()
		} else {
			g.routers, g.err = p.hiddenStates()
		}
	})
	return g.routers, g.err
}

// cheapEmbed is cheap_embed's router, the same for every layer: per
// expert, the sum of the embedding rows of its positive prompts' tokens,
// normalized, less the same for its negative prompts, normalized again
// (norms clamped at 1e-8), as mergekit computes it.
func (p *Plan) cheapEmbed() ([][][]float64, error) {
	g := p.prompts
	t, err := p.base.ReadTensor(embedTensor, nil)
	if err != nil {
		return nil, err
	}
	embed, err := t.Float64s()
	if err != nil {
		return nil, &weights.TensorError{File: p.base.Path(), Tensor: embedTensor, Err: err}
	}
	h := p.Hidden
	sum := func(prompts [][]int) []float64 {
		v := make([]float64, h)
		for _, ids := range prompts {
			for _, id := range ids {
				for k, x := range embed[id*h : (id+1)*h] {
					v[k] += x
				}
			}
		}
		return normalize(v)
	}
	var rows [][]float64
	for e := range g.positive {
		v := sum(g.positive[e])
		if len(g.negative[e]) > 0 {
			neg := sum(g.negative[e])
			for k := range v {
				v[k] -= neg[k]
			}
		}
		rows = append(rows, normalize(v))
	}
	out := make([][][]float64, p.Layers)
	for l := range out {
		out[l] = rows
	}
	return out, nil
}

// hiddenStates is hidden's router: per layer and expert, the mean over
// its positive prompts of the hidden state entering the layer at the
// prompt's last token, less the same mean over its negative prompts,
// normalized (clamped at 1e-8), as mergekit computes it. The base runs
// in the engine in float32 (mergekit runs it in bfloat16).
func (p *Plan) hiddenStates() ([][][]float64, error) {
	g := p.prompts
	m, err := engine.LoadLlama(p.Config.resolve(p.Config.BaseModel))
	if err != nil {
		return nil, fmt.Errorf("gate_mode hidden runs the base model: %w", err)
	}
	mean := func(prompts [][]int) ([][]float64, error) {
		acc := make([][]float64, p.Layers)
		for l := range acc {
			acc[l] = make([]float64, p.Hidden)
		}
		for _, ids := range prompts {
			if len(ids) == 0 {
				return nil, errors.New("gate_mode hidden: a prompt with no tokens (and no BOS token before it)")
			}
			xs, err := m.LayerInputs(ids)
			if err != nil {
				return nil, fmt.Errorf("gate_mode hidden: %w", err)
			}
			if len(xs) != p.Layers {
				return nil, fmt.Errorf("gate_mode hidden: the engine ran %d blocks, the config has %d", len(xs), p.Layers)
			}
			for l, x := range xs {
				for k, v := range x {
					acc[l][k] += float64(v) / float64(len(prompts))
				}
			}
		}
		return acc, nil
	}
	out := make([][][]float64, p.Layers)
	for e := range g.positive {
		pos, err := mean(g.positive[e])
		if err != nil {
			return nil, err
		}
		var neg [][]float64
		if len(g.negative[e]) > 0 {
			if neg, err = mean(g.negative[e]); err != nil {
				return nil, err
			}
		}
		for l := range out {
			v := pos[l]
			if neg != nil {
				for k := range v {
					v[k] -= neg[l][k]
				}
			}
			out[l] = append(out[l], normalize(v))
		}
	}
	return out, nil
}

func normalize(v []float64) []float64 {
	var ss float64
	for _, x := range v {
		ss += x * x
	}
	n := math.Max(math.Sqrt(ss), 1e-8)
	for k := range v {
		v[k] /= n
	}
	return v
}

// conditionNumber is the ratio of the largest to the smallest singular
// value of the router rows: mergekit warns above 5 (prompts too alike
// for the router to tell the experts apart).
func conditionNumber(rows [][]float64) float64 {
	m := mat.NewDense(len(rows), len(rows[0]), nil)
	for i, r := range rows {
		m.SetRow(i, r)
	}
	var svd mat.SVD
	if !svd.Factorize(m, mat.SVDNone) {
		return math.Inf(1)
	}
	s := svd.Values(nil)
	if s[len(s)-1] == 0 {
		return math.Inf(1)
	}
	return s[0] / s[len(s)-1]
}

// checkPrompts applies mergekit-moe's rules for prompt-routed gates:
// every expert has positive prompts, and not every expert the same ones.
func (c *Config) checkPrompts(add func(string, ...any)) {
	same := len(c.Experts) > 1
	for i, e := range c.Experts {
		if len(e.PositivePrompts) == 0 {
			add("line %d: expert %q has no positive_prompts, which gate_mode %s routes by", e.Line, e.SourceModel, c.GateMode)
		}
		if i > 0 {
			same = same && fmt.Sprint(e.PositivePrompts, e.NegativePrompts) == fmt.Sprint(c.Experts[0].PositivePrompts, c.Experts[0].NegativePrompts)
		}
	}
	if same {
		add("every expert has the same prompts: the router could not tell them apart; give each expert prompts of what should go to it")
	}
}
