// Package moe builds a Mixtral-style mixture of experts from dense
// LLaMA/Mistral models, from mergekit-moe's YAML: the base model gives
// attention, norms and embeddings; each expert's MLP becomes one expert
// of every layer; each layer gets a router.
package moe

import (
	"fmt"
	"path/filepath"
	"strconv"

	"gopkg.in/yaml.v3"

	"github.com/weightops/weightops/internal/suggest"
	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/weights"
)

// Config is a mergekit-moe configuration.
type Config struct {
	Path   string
	Source []byte
	// BaseModel gives every tensor outside the MLPs, and the config.
	BaseModel string
	Experts   []Expert
	// GateMode is how the routers are initialised: hidden (the default:
	// the base's hidden states on each expert's prompts), cheap_embed
	// (the base's token embeddings of the prompts), random (standard
	// normal) or uniform_random (torch.nn.Linear's U(±1/√hidden)).
	GateMode        string
	DType           string
	ExpertsPerToken int
	// Seed seeds the random routers and expert noise (a weightops
	// addition; mergekit draws from torch's global generator).
	Seed uint64
	// Architecture is the output architecture: "" or "mixtral".
	Architecture string
}

// Expert is one dense model whose MLPs become experts.
type Expert struct {
	SourceModel     string
	PositivePrompts []string
	NegativePrompts []string
	// NoiseScale adds N(0, NoiseScale²) noise to the expert's MLP weights;
	// ResidualScale multiplies its down projection (the residual output).
	NoiseScale    *float64
	ResidualScale *float64
	Line          int
}

var topKeys = []string{"base_model", "experts", "gate_mode", "dtype", "experts_per_token", "shared_experts", "architecture", "seed"}
var expertKeys = []string{"source_model", "positive_prompts", "negative_prompts", "noise_scale", "residual_scale"}

// GateModes are the gate modes mergekit-moe knows.
var GateModes = []string{"hidden", "hidden_last", "hidden_avg", "cheap_embed", "random", "uniform_random"}

// IsConfig reports whether a YAML document is a mergekit-moe configuration
// (it has experts) rather than a merge recipe.
func IsConfig(src []byte) bool {
	var top map[string]yaml.Node
	if yaml.Unmarshal(src, &top) != nil {
		return false
	}
	_, ok := top["experts"]
	return ok
}

// ParseConfig reads a mergekit-moe configuration, reporting every problem
// at once (a *merge.Problems).
func ParseConfig(path string) (*Config, error) {
	src, err := weights.ReadFile(path, weights.MaxRecipeSize, "moe config")
	if err != nil {
		return nil, err
	}
	return ParseConfigBytes(path, src)
}

// ParseConfigBytes is ParseConfig on in-memory YAML.
func ParseConfigBytes(path string, src []byte) (*Config, error) {
	c := &Config{Path: path, Source: src, GateMode: "hidden", ExpertsPerToken: 2}
	pr := &merge.Problems{File: path}
	add := func(format string, a ...any) { pr.List = append(pr.List, fmt.Sprintf(format, a...)) }
	var doc yaml.Node
	if err := yaml.Unmarshal(src, &doc); err != nil {
		add("invalid YAML: %v", err)
		return nil, pr
	}
	if len(doc.Content) == 0 || doc.Content[0].Kind != yaml.MappingNode {
		add("a mergekit-moe config is a YAML mapping with base_model and experts")
		return nil, pr
	}
	top := doc.Content[0]
	for i := 0; i+1 < len(top.Content); i += 2 {
		k, v := top.Content[i], top.Content[i+1]
		switch k.Value {
		case "base_model":
			c.BaseModel = v.Value
		case "gate_mode":
			c.GateMode = v.Value
		case "dtype":
			c.DType = v.Value
		case "architecture":
			c.Architecture = v.Value
		case "experts_per_token":
			n, err := strconv.Atoi(v.Value)
			if err != nil {
				add("line %d: experts_per_token must be an integer", v.Line)
			}
			c.ExpertsPerToken = n
		case "seed":
			n, err := strconv.ParseUint(v.Value, 10, 64)
			if err != nil {
				add("line %d: seed must be a non-negative integer", v.Line)
			}
			c.Seed = n
		case "shared_experts":
			if v.Kind == yaml.SequenceNode && len(v.Content) > 0 {
				add("line %d: shared_experts need a Qwen2-MoE or DeepSeek output; weightops writes Mixtral, which has none", v.Line)
			}
		case "experts":
			if v.Kind != yaml.SequenceNode {
				add("line %d: experts is a list of {source_model: ..., positive_prompts: [...]}", v.Line)
				continue
			}
			for _, e := range v.Content {
				c.Experts = append(c.Experts, parseExpert(e, add))
			}
		default:
			add("line %d: unknown key %q%s", k.Line, k.Value, suggest.Hint(k.Value, topKeys))
		}
	}
	c.check(add)
	if len(pr.List) > 0 {
		return nil, pr
	}
	return c, nil
}

func parseExpert(n *yaml.Node, add func(string, ...any)) Expert {
	e := Expert{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		add("line %d: an expert is {source_model: ..., positive_prompts: [...]}", n.Line)
		return e
	}
	strs := func(v *yaml.Node, key string) []string {
		var out []string
		if err := v.Decode(&out); err != nil {
			add("line %d: %s is a list of strings", v.Line, key)
		}
		return out
	}
	num := func(v *yaml.Node, key string) *float64 {
		f, err := strconv.ParseFloat(v.Value, 64)
		if err != nil || f != f {
			add("line %d: %s must be a number", v.Line, key)
			return nil
		}
		return &f
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "source_model":
			e.SourceModel = v.Value
		case "positive_prompts":
			e.PositivePrompts = strs(v, k.Value)
		case "negative_prompts":
			e.NegativePrompts = strs(v, k.Value)
		case "noise_scale":
			e.NoiseScale = num(v, k.Value)
		case "residual_scale":
			e.ResidualScale = num(v, k.Value)
		default:
			add("line %d: unknown key %q in an expert%s", k.Line, k.Value, suggest.Hint(k.Value, expertKeys))
		}
	}
	if e.SourceModel == "" {
		add("line %d: an expert needs source_model", n.Line)
	}
	return e
}

// check applies mergekit-moe's rules, and says what weightops cannot do.
func (c *Config) check(add func(string, ...any)) {
	if c.BaseModel == "" {
		add("base_model is required")
	}
	if len(c.Experts) == 0 {
		add("experts is required")
	}
	if c.ExpertsPerToken < 1 {
		add("experts_per_token must be at least 1")
	} else if len(c.Experts) > 0 && len(c.Experts) < c.ExpertsPerToken {
		add("%d experts, fewer than experts_per_token (%d)", len(c.Experts), c.ExpertsPerToken)
	}
	switch c.Architecture {
	case "", "mixtral", "Mixtral":
	default:
		add("architecture %q: weightops writes Mixtral (LLaMA and Mistral experts); Qwen2-MoE, Qwen3-MoE and DeepSeek outputs are not built yet", c.Architecture)
	}
	switch c.GateMode {
	case "random", "uniform_random":
	case "cheap_embed", "hidden", "hidden_last":
		c.checkPrompts(add)
	case "hidden_avg":
		add("gate_mode hidden_avg: mergekit averages over every position of the left-padded batch, padding included, which depends on torch's masked attention; use hidden (the last token's state, as mergekit's default) or cheap_embed")
	default:
		add("gate_mode %q: use one of %v%s", c.GateMode, GateModes, suggest.Hint(c.GateMode, GateModes))
	}
	if c.DType != "" {
		if _, err := weights.ParseFloatDType(c.DType); err != nil {
			add("dtype %q: use float32, bfloat16, float16 or float64", c.DType)
		}
	}
	for _, e := range c.Experts {
		if e.NoiseScale != nil && *e.NoiseScale < 0 {
			add("line %d: noise_scale must not be negative", e.Line)
		}
	}
}

// resolve finds a model reference as written, else beside the config.
func (c *Config) resolve(ref string) string {
	if filepath.IsAbs(ref) || exists(ref) {
		return ref
	}
	if alt := filepath.Join(filepath.Dir(c.Path), ref); exists(alt) {
		return alt
	}
	return ref
}
