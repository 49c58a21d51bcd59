package merge

import (
	"strconv"

	"gopkg.in/yaml.v3"
)

// TokenizerDef is a recipe's output vocabulary: tokenizer_source, or the
// tokenizer block (source, per-token embeddings, padding).
type TokenizerDef struct {
	// Source is "base", "union", or a model reference whose tokenizer is
	// taken whole.
	Source string
	// Tokens sets where given tokens' embeddings come from, in the order
	// written (Order).
	Tokens map[string]TokenEmbedding
	Order  []string
	// PadToMultipleOf rounds the vocabulary up (0: no padding); padded
	// rows get the mean embedding.
	PadToMultipleOf int
	Line            int
}

// TokenEmbedding is where one token's embedding row comes from.
type TokenEmbedding struct {
	// Kind is "" (the default rules), "model" (the row of the token in
	// Model), "model_token" (the row of Token or TokenID in Model) or
	// "zero".
	Kind    string
	Model   string
	Token   string
	TokenID int
	HasID   bool
	// Force uses this source even for models that have the token.
	Force bool
	Line  int
}

func (r *Recipe) parseTokenizerSource(v *yaml.Node, pr *Problems) {
	if r.Tokenizer != nil {
		pr.add("line %d: give tokenizer_source or a tokenizer block, not both", v.Line)
		return
	}
	src := scalar(v, "tokenizer_source", pr)
	if src == "" {
		return
	}
	r.Tokenizer = &TokenizerDef{Source: src, Line: v.Line}
}

func (r *Recipe) parseTokenizer(v *yaml.Node, pr *Problems) {
	if r.Tokenizer != nil {
		pr.add("line %d: give tokenizer_source or a tokenizer block, not both", v.Line)
		return
	}
	if v.Kind != yaml.MappingNode {
		pr.add("line %d: tokenizer is {source: union|base|MODEL, tokens: {...}, pad_to_multiple_of: N}", v.Line)
		return
	}
	t := &TokenizerDef{Source: "union", Tokens: map[string]TokenEmbedding{}, Line: v.Line}
	for i := 0; i+1 < len(v.Content); i += 2 {
		k, val := v.Content[i], v.Content[i+1]
		switch k.Value {
		case "source":
			t.Source = scalar(val, "tokenizer.source", pr)
		case "pad_to_multiple_of":
			n, err := strconv.Atoi(val.Value)
			if err != nil || n <= 0 {
				pr.add("line %d: pad_to_multiple_of must be a positive integer", val.Line)
				continue
			}
			t.PadToMultipleOf = n
		case "tokens":
			if val.Kind != yaml.MappingNode {
				pr.add("line %d: tokenizer.tokens maps a token to {source: ..., force: ...}", val.Line)
				continue
			}
			for j := 0; j+1 < len(val.Content); j += 2 {
				tok, cfg := val.Content[j], val.Content[j+1]
				if e, ok := parseTokenEmbedding(cfg, pr); ok {
					if _, dup := t.Tokens[tok.Value]; !dup {
						t.Order = append(t.Order, tok.Value)
					}
					t.Tokens[tok.Value] = e
				}
			}
		default:
			pr.add("line %d: unknown key %q in tokenizer%s", k.Line, k.Value, suggest(k.Value, []string{"source", "tokens", "pad_to_multiple_of"}))
		}
	}
	r.Tokenizer = t
}

func parseTokenEmbedding(n *yaml.Node, pr *Problems) (TokenEmbedding, bool) {
	e := TokenEmbedding{Line: n.Line}
	if n.Kind != yaml.MappingNode {
		pr.add("line %d: a token's embedding is {source: MODEL | {kind: model_token, model: M, token: T} | {kind: zero}, force: bool}", n.Line)
		return e, false
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		switch k.Value {
		case "force":
			b, err := strconv.ParseBool(v.Value)
			if err != nil {
				pr.add("line %d: force must be true or false", v.Line)
			}
			e.Force = b
		case "source":
			switch v.Kind {
			case yaml.ScalarNode:
				e.Kind, e.Model = "model", v.Value
			case yaml.MappingNode:
				for j := 0; j+1 < len(v.Content); j += 2 {
					sk, sv := v.Content[j], v.Content[j+1]
					switch sk.Value {
					case "kind":
						e.Kind = sv.Value
					case "model":
						e.Model = sv.Value
					case "token":
						e.Token = sv.Value
					case "token_id":
						id, err := strconv.Atoi(sv.Value)
						if err != nil || id < 0 {
							pr.add("line %d: token_id must be a non-negative integer", sv.Line)
						}
						e.TokenID, e.HasID = id, true
					default:
						pr.add("line %d: unknown key %q in a token source%s", sk.Line, sk.Value, suggest(sk.Value, []string{"kind", "model", "token", "token_id"}))
					}
				}
				switch e.Kind {
				case "zero":
				case "model_token":
					if e.Model == "" || (e.Token == "") == !e.HasID {
						pr.add("line %d: a model_token source names a model and exactly one of token, token_id", v.Line)
					}
				default:
					pr.add("line %d: token source kind %q: use model_token or zero", v.Line, e.Kind)
				}
			default:
				pr.add("line %d: a token source is a model or {kind: ...}", v.Line)
			}
		default:
			pr.add("line %d: unknown key %q in a token's embedding%s", k.Line, k.Value, suggest(k.Value, []string{"source", "force"}))
		}
	}
	return e, true
}
