package lowrank

import (
	"strings"
	"testing"
)

func TestParseAdapterConfig(t *testing.T) {
	c, err := ParseAdapterConfig([]byte(`{
		"peft_type": "LORA", "r": 4, "lora_alpha": 16, "target_modules": ["q_proj", "v_proj"],
		"rank_pattern": {"layers.1.self_attn.q_proj": 2, "v_proj": 8},
		"alpha_pattern": {"v_proj": 4}, "use_rslora": true, "fan_in_fan_out": false,
		"task_type": "CAUSAL_LM", "unknown_future_key": [1, 2]}`))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		module      string
		rank        int
		alpha       float64
		targeted    bool
		wantScaling float64
	}{
		{"model.layers.0.self_attn.q_proj", 4, 16, true, 16 / 2.0},
		{"model.layers.1.self_attn.q_proj", 2, 16, true, 16 / 1.4142135623730951},
		{"model.layers.11.self_attn.q_proj", 4, 16, true, 8},
		{"model.layers.0.self_attn.v_proj", 8, 4, true, 4 / 2.8284271247461903},
		{"model.layers.0.self_attn.k_proj", 4, 16, false, 8},
		{"q_proj", 4, 16, true, 8},
		{"model.layers.0.self_attn.xq_proj", 4, 16, false, 8},
	}
	for _, tc := range cases {
		if r := c.RankFor(tc.module); r != tc.rank {
			t.Errorf("%s: rank %d, want %d", tc.module, r, tc.rank)
		}
		if a := c.AlphaFor(tc.module); a != tc.alpha {
			t.Errorf("%s: alpha %g, want %g", tc.module, a, tc.alpha)
		}
		if got := c.Targets(tc.module); got != tc.targeted {
			t.Errorf("%s: targeted %v", tc.module, got)
		}
		if s := c.Scaling(tc.module); (s-tc.wantScaling)/tc.wantScaling > 1e-15 || (tc.wantScaling-s)/tc.wantScaling > 1e-15 {
			t.Errorf("%s: scaling %g, want %g", tc.module, s, tc.wantScaling)
		}
	}

	// The first matching key wins, in file order, as in PEFT.
	c, err = ParseAdapterConfig([]byte(`{"r": 8, "rank_pattern": {"q_proj": 3, "self_attn.q_proj": 5}, "target_modules": ".*\\.(q|v)_proj"}`))
	if err != nil {
		t.Fatal(err)
	}
	if r := c.RankFor("model.layers.0.self_attn.q_proj"); r != 3 {
		t.Errorf("file order: rank %d, want 3", r)
	}
	if !c.Targets("model.layers.0.self_attn.v_proj") || c.Targets("model.layers.0.self_attn.k_proj") || c.Targets("v_proj") {
		t.Error("regex target_modules must fullmatch")
	}
	if c.LoraAlpha != 8 || c.Bias != "none" {
		t.Errorf("defaults: alpha %g bias %q", c.LoraAlpha, c.Bias)
	}

	c, err = ParseAdapterConfig([]byte(`{"r": 2, "target_modules": "all-linear", "exclude_modules": ["lm_head"]}`))
	if err != nil || !c.Targets("model.layers.0.mlp.up_proj") || c.Targets("lm_head") {
		t.Errorf("all-linear / exclude_modules: %v", err)
	}

	for _, bad := range []struct{ json, want string }{
		{`{"r": 4,`, "not a JSON object"},
		{`[1]`, "not a JSON object"},
		{`{"r": "four"}`, "r:"},
		{`{"r": 0}`, "r: 0"},
		{`{"r": 2.5}`, "r:"},
		{`{"peft_type": "IA3"}`, "peft_type"},
		{`{"lora_alpha": "x"}`, "lora_alpha"},
		{`{"target_modules": 5}`, "target_modules"},
		{`{"target_modules": "(("}`, "target_modules"},
		{`{"rank_pattern": {"q": "x"}}`, "rank_pattern"},
		{`{"rank_pattern": {"q": 0}}`, "rank_pattern"},
		{`{"rank_pattern": {"q": 1.5}}`, "rank_pattern"},
		{`{"rank_pattern": [1]}`, "rank_pattern"},
		{`{"alpha_pattern": {"[": 2}}`, "alpha_pattern"},
		{`{"use_rslora": "yes"}`, "use_rslora"},
	} {
		_, err := ParseAdapterConfig([]byte(bad.json))
		if err == nil || !strings.Contains(err.Error(), bad.want) {
			t.Errorf("%s: error %v, want one mentioning %q", bad.json, err, bad.want)
		}
	}
}

func TestParseAdapterKey(t *testing.T) {
	for _, tc := range []struct {
		key, module, adapter string
		kind                 int
	}{
		{"base_model.model.model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj", "", keyLoraA},
		{"base_model.model.model.layers.0.self_attn.q_proj.lora_B.weight", "model.layers.0.self_attn.q_proj", "", keyLoraB},
		{"base_model.model.model.layers.0.mlp.up_proj.lora_A.default.weight", "model.layers.0.mlp.up_proj", "default", keyLoraA},
		{"base_model.model.model.embed_tokens.lora_embedding_A", "model.embed_tokens", "", keyEmbA},
		{"base_model.model.model.embed_tokens.lora_embedding_B.default", "model.embed_tokens", "default", keyEmbB},
		{"model.layers.0.self_attn.q_proj.lora_A.weight", "model.layers.0.self_attn.q_proj", "", keyLoraA},
		{"base_model.model.model.norm.weight", "model.norm.weight", "", keyFull},
		{"base_model.model.score.modules_to_save.default.weight", "score.weight", "", keyFull},
		{"base_model.model.score.modules_to_save.weight", "score.weight", "", keyFull},
		{"base_model.model.model.layers.0.self_attn.q_proj.base_layer.bias", "model.layers.0.self_attn.q_proj.bias", "", keyFull},
	} {
		k, err := parseAdapterKey(tc.key)
		if err != nil || k.module != tc.module || k.kind != tc.kind || k.adapter != tc.adapter {
			t.Errorf("%s: got %+v %v", tc.key, k, err)
		}
	}
	for _, bad := range []string{
		"base_model.model.x.lora_A.bias",
		"base_model.model.x.lora_A.default.extra.weight",
		"base_model.model.lora_A.weight",
		"base_model.model.x.lora_magnitude_vector",
		"base_model.model.x.lora_embedding_A.a.b",
	} {
		if _, err := parseAdapterKey(bad); err == nil {
			t.Errorf("%s accepted", bad)
		}
	}
}

func TestPatternKeyFor(t *testing.T) {
	mods := []string{"model.layers.0.self_attn.q_proj", "model.layers.10.self_attn.q_proj", "vision.layers.0.self_attn.q_proj", "lm_head"}
	for _, tc := range []struct{ module, want string }{
		// "layers.0.self_attn.q_proj" would also match the vision tower.
		{"model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.q_proj"},
		{"model.layers.10.self_attn.q_proj", "layers.10.self_attn.q_proj"},
		{"lm_head", "lm_head"},
	} {
		k := patternKeyFor(tc.module, mods)
		if k != tc.want {
			t.Errorf("%s: key %q, want %q", tc.module, k, tc.want)
		}
		re, _ := patternRegexp(k)
		for _, o := range mods {
			if re.MatchString(o) != (o == tc.module) {
				t.Errorf("key %q matches %q: %v", k, o, re.MatchString(o))
			}
		}
	}
}
