package tokenizer

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// Decoder turns ids back into text as a tokenizer.json's decoder does:
// ByteLevel (GPT-2's byte-to-character map undone) or the SentencePiece
// sequence (▁ to space, <0xXX> byte tokens fused into UTF-8, one leading
// space stripped) and Metaspace. Added tokens decode to their content.
type Decoder struct {
	tokens    []string // by id ("" for a hole)
	added     map[int]bool
	byteLevel bool
	replace   string // the character that stands for a space ("" for none)
	bytesTok  bool   // <0xXX> tokens are bytes
	strip     int    // leading spaces to strip
}

// NewDecoder builds the decoder of a tokenizer.json; a decoder type it
// does not know is an error.
func (f *File) NewDecoder() (*Decoder, error) {
	var top struct {
		Decoder json.RawMessage `json:"decoder"`
	}
	if err := json.Unmarshal(f.raw, &top); err != nil {
		return nil, err
	}
	v := f.Vocab()
	n := 0
	for _, id := range v {
		n = max(n, id+1)
	}
	d := &Decoder{tokens: make([]string, n), added: map[int]bool{}}
	for t, id := range v {
		d.tokens[id] = t
	}
	for _, a := range f.Added {
		d.added[a.ID] = true
	}
	if err := d.parse(top.Decoder); err != nil {
		return nil, fmt.Errorf("tokenizer.json: decoder: %w", err)
	}
	return d, nil
}

func (d *Decoder) parse(raw json.RawMessage) error {
	if len(raw) == 0 || string(raw) == "null" {
		return nil
	}
	var c struct {
		Type     string            `json:"type"`
		Decoders []json.RawMessage `json:"decoders"`
		Pattern  struct {
			String *string `json:"String"`
		} `json:"pattern"`
		Content       string  `json:"content"`
		Start         int     `json:"start"`
		Replacement   string  `json:"replacement"`
		PrependScheme *string `json:"prepend_scheme"`
		AddPrefix     *bool   `json:"add_prefix_space"`
	}
	if err := json.Unmarshal(raw, &c); err != nil {
		return err
	}
	switch c.Type {
	case "Sequence":
		for _, s := range c.Decoders {
			if err := d.parse(s); err != nil {
				return err
			}
		}
	case "ByteLevel":
		d.byteLevel = true
	case "Replace":
		if c.Pattern.String == nil || c.Content != " " {
			return fmt.Errorf("a Replace other than of a string by a space is not implemented")
		}
		d.replace = *c.Pattern.String
	case "ByteFallback":
		d.bytesTok = true
	case "Fuse":
	case "Strip":
		if c.Content != " " {
			return fmt.Errorf("a Strip of %q is not implemented", c.Content)
		}
		d.strip = c.Start
	case "Metaspace":
		d.replace = c.Replacement
		if d.replace == "" {
			d.replace = "▁"
		}
		if (c.PrependScheme != nil && *c.PrependScheme != "never") || (c.PrependScheme == nil && (c.AddPrefix == nil || *c.AddPrefix)) {
			d.strip = 1
		}
	default:
		return fmt.Errorf("%q is not implemented", c.Type)
	}
	return nil
}

var runeToByte = func() map[rune]byte {
	m := map[rune]byte{}
	for b, r := range byteToRune {
		m[r] = byte(b)
	}
	return m
}()

// Decode returns the text of ids; bytes that are not valid UTF-8 become
// U+FFFD and an id without a token (a model's padding rows) is left out,
// as the tokenizers library decodes them.
func (d *Decoder) Decode(ids []int) (string, error) {
	var raw []byte
	for _, id := range ids {
		if id < 0 || id >= len(d.tokens) || d.tokens[id] == "" {
			continue
		}
		t := d.tokens[id]
		switch {
		case d.added[id]:
			raw = append(raw, t...)
		case d.byteLevel:
			for _, r := range t {
				if b, ok := runeToByte[r]; ok {
					raw = append(raw, b)
				} else {
					raw = utf8.AppendRune(raw, r)
				}
			}
		case d.bytesTok && len(t) == 6 && strings.HasPrefix(t, "<0x") && t[5] == '>':
			var b byte
			if _, err := fmt.Sscanf(t[3:5], "%02X", &b); err == nil {
				raw = append(raw, b)
				continue
			}
			raw = append(raw, t...)
		default:
			if d.replace != "" {
				t = strings.ReplaceAll(t, d.replace, " ")
			}
			raw = append(raw, t...)
		}
	}
	s := strings.ToValidUTF8(string(raw), "\uFFFD")
	for i := 0; i < d.strip && strings.HasPrefix(s, " "); i++ {
		s = s[1:]
	}
	return s, nil
}
