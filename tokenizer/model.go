package tokenizer

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"

	"github.com/weightops/weightops/weights"
)

// Tokenizer is a model directory's tokenizer: tokenizer.json (else a BPE
// tokenizer.model, converted), with tokenizer_config.json and a
// chat_template.jinja when present.
type Tokenizer struct {
	Dir    string
	File   *File
	Config *Config
	// Jinja is chat_template.jinja, which transformers prefers to the
	// template in tokenizer_config.json ("" when absent).
	Jinja string
}

// ErrNoTokenizer is returned by Load for a directory without tokenizer.json
// or tokenizer.model.
var ErrNoTokenizer = errors.New("no tokenizer.json or tokenizer.model")

// Load reads the tokenizer of a model directory. Added tokens that only
// tokenizer_config.json lists are added in id order, as transformers does
// when it loads the pair.
func Load(dir string) (*Tokenizer, error) {
	read := func(name string) ([]byte, error) {
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); errors.Is(err, fs.ErrNotExist) {
			return nil, nil
		}
		return weights.ReadFile(p, weights.MaxSideFileSize, "tokenizer file")
	}
	data, err := read("tokenizer.json")
	if err != nil {
		return nil, err
	}
	var f *File
	if data == nil {
		// A SentencePiece model alone is read as transformers converts it.
		spm, err := read("tokenizer.model")
		if err != nil {
			return nil, err
		}
		if spm == nil {
			return nil, fmt.Errorf("%s: %w", dir, ErrNoTokenizer)
		}
		sp, err := ParseSentencePiece(spm)
		if err == nil {
			sp.BOS = sentencePieceBOS(sp)
			f, err = sp.File()
		}
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "tokenizer.model"), err)
		}
	} else if f, err = Parse(data); err != nil {
		return nil, fmt.Errorf("%s: %w", filepath.Join(dir, "tokenizer.json"), err)
	}
	t := &Tokenizer{Dir: dir, File: f}
	cfg, err := read("tokenizer_config.json")
	if err != nil {
		return nil, err
	}
	if cfg != nil {
		if t.Config, err = ParseConfig(cfg); err != nil {
			return nil, fmt.Errorf("%s: %w", dir, err)
		}
		for _, a := range t.Config.Added {
			if !f.IsAdded(a.Content) {
				f.Add(a)
			}
		}
	}
	j, err := read("chat_template.jinja")
	if err != nil {
		return nil, err
	}
	t.Jinja = string(j)
	return t, nil
}

// ChatTemplate is the template transformers would use: chat_template.jinja,
// else tokenizer_config.json's.
func (t *Tokenizer) ChatTemplate() string {
	if t.Jinja != "" {
		return t.Jinja
	}
	if t.Config != nil {
		return t.Config.ChatTemplate()
	}
	return ""
}

// Describe names a token for a message: quoted, control characters
// escaped.
func Describe(tok string) string {
	return fmt.Sprintf("%q", strings.ToValidUTF8(tok, "\uFFFD"))
}

// sentencePieceBOS is the BOS that transformers' LLaMA tokenizer adds
// (add_bos_token defaults to true): the control piece <s>, if any.
func sentencePieceBOS(sp *SentencePiece) string {
	for _, p := range sp.Pieces {
		if p.Kind == 3 && p.Text == "<s>" {
			return p.Text
		}
	}
	return ""
}
