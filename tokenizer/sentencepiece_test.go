package tokenizer

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A BPE tokenizer.model alone (no tokenizer.json) encodes as SentencePiece
// itself does: testdata/tokenizer/spm holds a model trained by spm_train
// and spm_encode's ids for each line of texts.txt (leading, repeated and
// trailing spaces, tabs, digits, accents, CJK, emoji through byte
// fallback); decoding gives the lines back.
func TestSentencePieceModelMatchesSpmEncode(t *testing.T) {
	dir := t.TempDir()
	data, err := os.ReadFile("../testdata/tokenizer/spm/tokenizer.model")
	if err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, "tokenizer.model"), data, 0o644)
	tok, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := tok.File.NewEncoder()
	if err != nil {
		t.Fatal(err)
	}
	dec, err := tok.File.NewDecoder()
	if err != nil {
		t.Fatal(err)
	}
	texts, _ := os.ReadFile("../testdata/tokenizer/spm/texts.txt")
	ids, _ := os.ReadFile("../testdata/tokenizer/spm/ids.txt")
	lines := strings.Split(strings.TrimSuffix(string(texts), "\n"), "\n")
	want := strings.Split(strings.TrimSuffix(string(ids), "\n"), "\n")
	if len(lines) != len(want) || len(lines) < 6 {
		t.Fatalf("%d texts, %d id lines", len(lines), len(want))
	}
	for i, line := range lines {
		got := enc.Encode(line)
		if s := strings.Trim(fmt.Sprint(got), "[]"); s != want[i] {
			t.Errorf("line %d %q:\n ours        %s\n spm_encode  %s", i, line, s, want[i])
		}
		if back, err := dec.Decode(got); err != nil || back != line {
			t.Errorf("line %d decodes to %q (%v)", i, back, err)
		}
	}
}

// Models the conversion cannot reproduce are refused by name.
func TestSentencePieceRefusals(t *testing.T) {
	for _, c := range []struct {
		sp   SentencePiece
		want string
	}{
		{SentencePiece{Pieces: []Piece{{Text: "a", Kind: 1}}, ModelType: 1}, "unigram"},
		{SentencePiece{Pieces: []Piece{{Text: "a", Kind: 1}}, ModelType: 2, Normalizer: "nmt_nfkc", CharsMap: true}, "normalization"},
		{SentencePiece{Pieces: []Piece{{Text: "a", Kind: 1}}, ModelType: 2, RemoveExtraWhitespaces: true}, "remove_extra_whitespaces"},
	} {
		if _, err := c.sp.File(); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v, want %q", c.sp, err, c.want)
		}
	}
	if _, err := ParseSentencePiece([]byte{0x0a, 0x7f}); err == nil {
		t.Error("a truncated model parsed")
	}
}
