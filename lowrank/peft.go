package lowrank

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"

	"github.com/weightops/weightops/weights"
)

// PEFT file names and the prefix PEFT puts before every module name.
const (
	AdapterWeightsFile    = "adapter_model.safetensors"
	AdapterWeightsFileBin = "adapter_model.bin"
	AdapterConfigFile     = "adapter_config.json"
	PeftPrefix            = "base_model.model."
)

// Pattern is one entry of rank_pattern or alpha_pattern, in file order:
// PEFT takes the first key that matches, so order matters.
type Pattern struct {
	Key   string
	Value float64
	re    *regexp.Regexp
}

// AdapterConfig is the part of a PEFT LoraConfig (adapter_config.json) that
// decides the merged weights.
type AdapterConfig struct {
	PeftType string
	// R and LoraAlpha are the defaults for modules without a pattern entry
	// (PEFT's defaults, 8 and 8, when absent).
	R         int
	LoraAlpha float64
	// TargetModules is a list of names; TargetRegex a regex string
	// (re.fullmatch against the module name); both empty: no restriction.
	TargetModules []string
	TargetRegex   string
	// ExcludeModules / ExcludeRegex mirror PEFT's exclude_modules.
	ExcludeModules      []string
	ExcludeRegex        string
	FanInFanOut         bool
	UseRSLoRA           bool
	UseDoRA             bool
	RankPattern         []Pattern
	AlphaPattern        []Pattern
	Bias                string
	ModulesToSave       []string
	BaseModelNameOrPath string

	targetRe, excludeRe *regexp.Regexp
}

// ReadAdapterConfig reads and checks an adapter_config.json. Every problem
// is an error naming the file and the key; nothing panics on bad input.
func ReadAdapterConfig(path string) (*AdapterConfig, error) {
	data, err := weights.ReadFile(path, weights.MaxConfigSize, "adapter config")
	if err != nil {
		return nil, err
	}
	c, err := ParseAdapterConfig(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ParseAdapterConfig parses the JSON of an adapter_config.json.
func ParseAdapterConfig(data []byte) (*AdapterConfig, error) {
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(data, &raw); err != nil {
		return nil, fmt.Errorf("not a JSON object: %w", err)
	}
	c := &AdapterConfig{R: 8, LoraAlpha: 8, Bias: "none"}
	get := func(key string, dst any) error {
		v, ok := raw[key]
		if !ok || string(v) == "null" {
			return nil
		}
		if err := json.Unmarshal(v, dst); err != nil {
			return fmt.Errorf("%s: %s is not a valid value (%v)", key, v, err)
		}
		return nil
	}
	var alpha float64 = 8
	for _, e := range []error{
		get("peft_type", &c.PeftType), get("r", &c.R), get("lora_alpha", &alpha),
		get("fan_in_fan_out", &c.FanInFanOut), get("use_rslora", &c.UseRSLoRA),
		get("use_dora", &c.UseDoRA), get("bias", &c.Bias), get("modules_to_save", &c.ModulesToSave),
		get("base_model_name_or_path", &c.BaseModelNameOrPath),
	} {
		if e != nil {
			return nil, e
		}
	}
	c.LoraAlpha = alpha
	if c.PeftType != "" && c.PeftType != "LORA" {
		return nil, fmt.Errorf("peft_type %q: only LORA adapters can be merged", c.PeftType)
	}
	if c.R < 1 {
		return nil, fmt.Errorf("r: %d, must be at least 1", c.R)
	}
	if math.IsNaN(c.LoraAlpha) || math.IsInf(c.LoraAlpha, 0) {
		return nil, fmt.Errorf("lora_alpha: %g is not finite", c.LoraAlpha)
	}
	var err error
	if c.TargetModules, c.TargetRegex, err = listOrRegex(raw, "target_modules"); err != nil {
		return nil, err
	}
	if c.ExcludeModules, c.ExcludeRegex, err = listOrRegex(raw, "exclude_modules"); err != nil {
		return nil, err
	}
	if c.TargetRegex != "" && c.TargetRegex != "all-linear" {
		if c.targetRe, err = regexp.Compile(`^(?:` + c.TargetRegex + `)$`); err != nil {
			return nil, fmt.Errorf("target_modules: %q is not a regex this tool understands: %v", c.TargetRegex, err)
		}
	}
	if c.ExcludeRegex != "" {
		if c.excludeRe, err = regexp.Compile(`^(?:` + c.ExcludeRegex + `)$`); err != nil {
			return nil, fmt.Errorf("exclude_modules: %q is not a regex this tool understands: %v", c.ExcludeRegex, err)
		}
	}
	if c.RankPattern, err = orderedPatterns(raw["rank_pattern"], "rank_pattern"); err != nil {
		return nil, err
	}
	for _, p := range c.RankPattern {
		if p.Value < 1 || p.Value != math.Trunc(p.Value) {
			return nil, fmt.Errorf("rank_pattern: %q: rank %g is not a positive integer", p.Key, p.Value)
		}
	}
	if c.AlphaPattern, err = orderedPatterns(raw["alpha_pattern"], "alpha_pattern"); err != nil {
		return nil, err
	}
	return c, nil
}

// listOrRegex reads a key that PEFT allows to be a list of names or one
// regex string.
func listOrRegex(raw map[string]json.RawMessage, key string) ([]string, string, error) {
	v, ok := raw[key]
	if !ok || string(v) == "null" {
		return nil, "", nil
	}
	var s string
	if json.Unmarshal(v, &s) == nil {
		return nil, s, nil
	}
	var list []string
	if err := json.Unmarshal(v, &list); err != nil {
		return nil, "", fmt.Errorf("%s: %s is neither a list of names nor a regex string", key, v)
	}
	return list, "", nil
}

// orderedPatterns decodes a {key: number} object keeping the file's key
// order, and compiles each key as PEFT's rule does.
func orderedPatterns(v json.RawMessage, name string) ([]Pattern, error) {
	if len(v) == 0 || string(v) == "null" {
		return nil, nil
	}
	dec := json.NewDecoder(bytes.NewReader(v))
	tok, err := dec.Token()
	if d, ok := tok.(json.Delim); err != nil || !ok || d != '{' {
		return nil, fmt.Errorf("%s: not an object", name)
	}
	var out []Pattern
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		key, _ := tok.(string)
		var val float64
		if err := dec.Decode(&val); err != nil {
			return nil, fmt.Errorf("%s: %q: value is not a number", name, key)
		}
		re, err := patternRegexp(key)
		if err != nil {
			return nil, fmt.Errorf("%s: key %q is not a regex this tool understands: %v", name, key, err)
		}
		out = append(out, Pattern{Key: key, Value: val, re: re})
	}
	return out, nil
}

// patternRegexp compiles a rank_pattern / alpha_pattern key the way PEFT's
// get_pattern_key applies it: re.match(rf"(.*\.)?({key})$", module), i.e.
// the key (a regex) matches the whole module name or a suffix that starts
// after a dot.
func patternRegexp(key string) (*regexp.Regexp, error) {
	return regexp.Compile(`^(?:.*\.)?(?:` + key + `)$`)
}

// matchPattern returns the first pattern matching module.
func matchPattern(ps []Pattern, module string) (Pattern, bool) {
	for _, p := range ps {
		if p.re.MatchString(module) {
			return p, true
		}
	}
	return Pattern{}, false
}

// RankFor is the rank the config assigns to a module: its rank_pattern
// entry, else r.
func (c *AdapterConfig) RankFor(module string) int {
	if p, ok := matchPattern(c.RankPattern, module); ok {
		return int(p.Value)
	}
	return c.R
}

// AlphaFor is the alpha the config assigns to a module: its alpha_pattern
// entry, else lora_alpha.
func (c *AdapterConfig) AlphaFor(module string) float64 {
	if p, ok := matchPattern(c.AlphaPattern, module); ok {
		return p.Value
	}
	return c.LoraAlpha
}

// Scaling is PEFT's per-module factor: alpha/r, or alpha/√r with rsLoRA.
func (c *AdapterConfig) Scaling(module string) float64 {
	r := float64(c.RankFor(module))
	if c.UseRSLoRA {
		return c.AlphaFor(module) / math.Sqrt(r)
	}
	return c.AlphaFor(module) / r
}

// Targets reports whether PEFT would put a LoRA layer on module, by its
// check_target_module_exists rule: a regex string must match the whole
// name; a list entry must equal the name or be a dot-separated suffix of
// it. "all-linear" and an absent list accept every module (the adapter's
// own tensors then decide). exclude_modules wins over target_modules.
func (c *AdapterConfig) Targets(module string) bool {
	if c.excludeRe != nil && c.excludeRe.MatchString(module) {
		return false
	}
	if nameListMatch(c.ExcludeModules, module) {
		return false
	}
	switch {
	case c.targetRe != nil:
		return c.targetRe.MatchString(module)
	case len(c.TargetModules) > 0:
		return nameListMatch(c.TargetModules, module)
	}
	return true
}

func nameListMatch(list []string, module string) bool {
	for _, t := range list {
		if module == t || strings.HasSuffix(module, "."+t) {
			return true
		}
	}
	return false
}

// Adapter-key kinds.
const (
	keyLoraA = iota
	keyLoraB
	keyEmbA
	keyEmbB
	keyFull // a whole tensor (modules_to_save, trained biases) replacing the base's
)

// adapterKey is a parsed adapter tensor name.
type adapterKey struct {
	kind int
	// module is the module name (lora keys) or the base tensor name (full).
	module  string
	adapter string // adapter-name segment (".default"), if any
}

var loraSegments = map[string]int{"lora_A": keyLoraA, "lora_B": keyLoraB, "lora_embedding_A": keyEmbA, "lora_embedding_B": keyEmbB}

// parseAdapterKey maps a PEFT state-dict key back to a module: it strips
// base_model.model., recognises .lora_A.weight / .lora_B.weight (also with
// an adapter-name segment, .lora_A.default.weight) and the embedding forms
// .lora_embedding_A[.default]; any other key is a whole tensor that
// replaces the base's (PEFT saves modules_to_save and trained biases so),
// with .modules_to_save[.name] and .base_layer segments removed.
func parseAdapterKey(key string) (adapterKey, error) {
	name := strings.TrimPrefix(key, PeftPrefix)
	parts := strings.Split(name, ".")
	for i, p := range parts {
		kind, ok := loraSegments[p]
		if !ok {
			if strings.HasPrefix(p, "lora_magnitude_vector") || strings.HasPrefix(p, "lora_") {
				return adapterKey{}, fmt.Errorf("%s tensors are not supported (DoRA and other LoRA variants cannot be merged as W + s·B·A)", p)
			}
			continue
		}
		if i == 0 {
			return adapterKey{}, errors.New("no module name before " + p)
		}
		rest := parts[i+1:]
		k := adapterKey{kind: kind, module: strings.Join(parts[:i], ".")}
		emb := kind == keyEmbA || kind == keyEmbB
		switch {
		case !emb && len(rest) == 1 && rest[0] == "weight", emb && len(rest) == 0:
		case !emb && len(rest) == 2 && rest[1] == "weight", emb && len(rest) == 1:
			k.adapter = rest[0]
		default:
			return adapterKey{}, fmt.Errorf("unrecognised LoRA tensor name (expected …%s.weight or …%s.<adapter>.weight)", p, p)
		}
		return k, nil
	}
	var out []string
	for i := 0; i < len(parts); i++ {
		switch parts[i] {
		case "base_layer":
			continue
		case "modules_to_save":
			// PEFT strips the adapter name on save; tolerate it when present.
			if i+2 < len(parts) {
				i++
			}
			continue
		}
		out = append(out, parts[i])
	}
	return adapterKey{kind: keyFull, module: strings.Join(out, ".")}, nil
}

// ModuleName is the PEFT module of a weight tensor: the name without its
// trailing ".weight" (model.layers.0.self_attn.q_proj.weight →
// model.layers.0.self_attn.q_proj), and false for tensors that are not a
// module's weight.
func ModuleName(tensor string) (string, bool) {
	m, ok := strings.CutSuffix(tensor, ".weight")
	return m, ok && m != ""
}

// LoraKeys returns the adapter tensor names of a module's factors:
// base_model.model.<module>.lora_A.weight and .lora_B.weight, or for an
// embedding .lora_embedding_A and .lora_embedding_B.
func LoraKeys(module string, embedding bool) (a, b string) {
	if embedding {
		return PeftPrefix + module + ".lora_embedding_A", PeftPrefix + module + ".lora_embedding_B"
	}
	return PeftPrefix + module + ".lora_A.weight", PeftPrefix + module + ".lora_B.weight"
}

// patternKeyFor picks the rank_pattern / alpha_pattern key for module:
// the name without its first component when that still matches this
// module only (such a key also works with PEFT < 0.13, whose rule
// `.*\.{key}$` needs a dot before the key), else the full name, else the
// regex-quoted full name.
func patternKeyFor(module string, modules []string) string {
	var cands []string
	if i := strings.IndexByte(module, '.'); i >= 0 {
		cands = append(cands, module[i+1:])
	}
	cands = append(cands, module, regexp.QuoteMeta(module))
	for _, k := range cands {
		re, err := patternRegexp(k)
		if err != nil {
			continue
		}
		unique := true
		for _, o := range modules {
			if o != module && re.MatchString(o) {
				unique = false
				break
			}
		}
		if unique && re.MatchString(module) {
			return k
		}
	}
	return regexp.QuoteMeta(module)
}

// adapterJSON renders adapter_config.json as PEFT writes it (sorted keys,
// two-space indent). Only keys every PEFT ≥ 0.7 accepts are written.
func adapterJSON(cfg map[string]any) ([]byte, error) {
	var b bytes.Buffer
	enc := json.NewEncoder(&b)
	enc.SetEscapeHTML(false)
	enc.SetIndent("", "  ")
	err := enc.Encode(cfg)
	return b.Bytes(), err
}

// FindAdapter resolves an adapter path — a directory holding
// adapter_model.safetensors (or .bin) and adapter_config.json, or the
// weights file itself — to the weights file and the config file.
func FindAdapter(path string) (weightsFile, configFile string, err error) {
	st, err := os.Stat(path)
	if err != nil {
		return "", "", err
	}
	dir := path
	if !st.IsDir() {
		dir = filepath.Dir(path)
		weightsFile = path
	} else {
		for _, n := range []string{AdapterWeightsFile, AdapterWeightsFileBin} {
			p := filepath.Join(dir, n)
			if _, err := os.Stat(p); err == nil {
				weightsFile = p
				break
			}
		}
		if weightsFile == "" {
			return "", "", fmt.Errorf("%s: no %s or %s in the adapter directory", path, AdapterWeightsFile, AdapterWeightsFileBin)
		}
	}
	configFile = filepath.Join(dir, AdapterConfigFile)
	if _, err := os.Stat(configFile); err != nil {
		return "", "", fmt.Errorf("%s: no %s beside the adapter weights", dir, AdapterConfigFile)
	}
	return weightsFile, configFile, nil
}

// mostCommon returns the most frequent value (ties: the larger).
func mostCommon(vals []int) int {
	count := map[int]int{}
	for _, v := range vals {
		count[v]++
	}
	keys := make([]int, 0, len(count))
	for k := range count {
		keys = append(keys, k)
	}
	sort.Ints(keys)
	best := 0
	for _, k := range keys {
		if count[k] >= count[best] {
			best = k
		}
	}
	return best
}
