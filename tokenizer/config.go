package tokenizer

import (
	"encoding/json"
	"fmt"
	"sort"
	"strconv"
	"strings"

	"github.com/weightops/weightops/weights"
)

// Config is a parsed tokenizer_config.json: the added tokens transformers
// applies on load (added_tokens_decoder) and the chat template. Edits are
// written back by Encode, every other key kept as it was.
type Config struct {
	raw []byte
	// Added are the added_tokens_decoder entries, in id order.
	Added []AddedToken
}

// ParseConfig reads a tokenizer_config.json.
func ParseConfig(data []byte) (*Config, error) {
	var top struct {
		Decoder map[string]AddedToken `json:"added_tokens_decoder"`
	}
	if err := json.Unmarshal(data, &top); err != nil {
		return nil, fmt.Errorf("tokenizer_config.json: %w", err)
	}
	c := &Config{raw: data}
	for k, a := range top.Decoder {
		id, err := strconv.Atoi(k)
		if err != nil || id < 0 {
			return nil, fmt.Errorf("tokenizer_config.json: added_tokens_decoder key %q is not a token id", k)
		}
		a.ID = id
		c.Added = append(c.Added, a)
	}
	sort.Slice(c.Added, func(i, j int) bool { return c.Added[i].ID < c.Added[j].ID })
	return c, nil
}

// ChatTemplate is the file's chat template: the string, or the "default"
// entry of a list of named templates; "" when there is none.
func (c *Config) ChatTemplate() string {
	var top map[string]json.RawMessage
	if json.Unmarshal(c.raw, &top) != nil {
		return ""
	}
	raw, ok := top["chat_template"]
	if !ok {
		return ""
	}
	var s string
	if json.Unmarshal(raw, &s) == nil {
		return s
	}
	var named []struct {
		Name     string `json:"name"`
		Template string `json:"template"`
	}
	if json.Unmarshal(raw, &named) == nil {
		for _, n := range named {
			if n.Name == "default" {
				return n.Template
			}
		}
	}
	return ""
}

// SetChatTemplate sets chat_template.
func (c *Config) SetChatTemplate(t string) error {
	enc, err := marshal(t)
	if err != nil {
		return err
	}
	c.raw, err = weights.SetJSONKey(c.raw, "chat_template", enc)
	return err
}

// SetAdded makes added_tokens_decoder hold exactly these tokens, as
// transformers' save_pretrained writes it (string ids, in id order).
func (c *Config) SetAdded(tokens []AddedToken) error {
	sorted := append([]AddedToken(nil), tokens...)
	sort.SliceStable(sorted, func(i, j int) bool { return sorted[i].ID < sorted[j].ID })
	var b strings.Builder
	b.WriteString("{")
	for i, a := range sorted {
		if i > 0 {
			b.WriteString(",")
		}
		v, err := marshal(struct {
			Content    string `json:"content"`
			LStrip     bool   `json:"lstrip"`
			Normalized bool   `json:"normalized"`
			RStrip     bool   `json:"rstrip"`
			SingleWord bool   `json:"single_word"`
			Special    bool   `json:"special"`
		}{a.Content, a.LStrip, a.Normalized, a.RStrip, a.SingleWord, a.Special})
		if err != nil {
			return err
		}
		fmt.Fprintf(&b, "%q:%s", strconv.Itoa(a.ID), v)
	}
	b.WriteString("}")
	var err error
	c.raw, err = weights.SetJSONKey(c.raw, "added_tokens_decoder", json.RawMessage(b.String()))
	if err == nil {
		c.Added = sorted
	}
	return err
}

// Encode is the file's bytes with the edits made.
func (c *Config) Encode() []byte { return c.raw }
