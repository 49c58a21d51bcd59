package tensorname

import "testing"

func TestLayerAndKind(t *testing.T) {
	for _, c := range []struct {
		name  string
		layer int // -1: outside the blocks
		kind  Kind
	}{
		{"model.embed_tokens.weight", -1, Input},
		{"model.layers.12.self_attn.q_proj.weight", 12, Body},
		{"model.layers.0.input_layernorm.weight", 0, Body},
		{"model.layers.3.mlp.norm.weight", 3, Body},
		{"model.norm.weight", -1, Head},
		{"lm_head.weight", -1, Head},
		{"transformer.h.7.attn.c_attn.weight", 7, Body},
		{"transformer.wte.weight", -1, Input},
		{"transformer.ln_f.bias", -1, Head},
		{"transformer.word_embeddings.weight", -1, Input},
		{"bert.embeddings.LayerNorm.weight", -1, Input},
		{"bert.encoder.layer.5.output.dense.weight", 5, Body},
		{"gpt_neox.embed_in.weight", -1, Input},
		{"features.0.weight", -1, Body},
		{"head.0.weight", -1, Head},
		{"classifier.1.bias", -1, Head},
		{"fc.weight", -1, Head},
		{"fc1.weight", -1, Body},
		{"patch_embed.proj.weight", -1, Input},
		{"stem.conv.weight", -1, Input},
	} {
		l, ok := Layer(c.name)
		if !ok {
			l = -1
		}
		if l != c.layer {
			t.Errorf("Layer(%q) = %d, want %d", c.name, l, c.layer)
		}
		if k := KindOf(c.name); k != c.kind {
			t.Errorf("KindOf(%q) = %d, want %d", c.name, k, c.kind)
		}
		if k := KindOf(Module(c.name)); k != c.kind {
			t.Errorf("KindOf(%q) = %d, want %d", Module(c.name), k, c.kind)
		}
	}
	if n := Layers([]string{"a.layers.0.w", "a.layers.11.w", "emb.w"}); n != 12 {
		t.Errorf("Layers = %d", n)
	}
	for m, want := range map[string]bool{"model.embed_tokens": true, "transformer.word_embeddings": true,
		"bert.embeddings.LayerNorm": false, "patch_embed.proj": false, "shared": true} {
		if IsEmbeddingTable(m) != want {
			t.Errorf("IsEmbeddingTable(%q) != %t", m, want)
		}
	}
}

func TestGroup(t *testing.T) {
	for name, want := range map[string]string{
		"model.layers.3.self_attn.q_proj.weight": "model.layers.3",
		"model.layers.12.mlp.up_proj.weight":     "model.layers.12",
		"transformer.h.0.attn.c_attn.bias":       "transformer.h.0",
		"model.embed_tokens.weight":              "model.embed_tokens",
		"lm_head.weight":                         "lm_head",
		"features.0.weight":                      "features.0",
		"w":                                      "w",
	} {
		if got := Group(name); got != want {
			t.Errorf("Group(%q) = %q, want %q", name, got, want)
		}
	}
}
