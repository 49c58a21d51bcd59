package tokenizer

import (
	"strings"
	"unicode"
	"unicode/utf8"
)

// The split patterns of the byte-level BPE tokenizers, implemented by hand
// (Go's regexp has no lookahead, which they use):
const (
	gpt2Pattern   = `'s|'t|'re|'ve|'m|'ll|'d| ?\p{L}+| ?\p{N}+| ?[^\s\p{L}\p{N}]+|\s+(?!\S)|\s+`
	llama3Pattern = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}{1,3}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
	qwen2Pattern  = `(?i:'s|'t|'re|'ve|'m|'ll|'d)|[^\r\n\p{L}\p{N}]?\p{L}+|\p{N}| ?[^\s\p{L}\p{N}]+[\r\n]*|\s*[\r\n]+|\s+(?!\S)|\s+`
)

var knownSplits = map[string]func(string) []string{
	gpt2Pattern:   splitGPT2,
	llama3Pattern: func(s string) []string { return splitWith(s, llama3Match(3)) },
	qwen2Pattern:  func(s string) []string { return splitWith(s, llama3Match(1)) },
}

// splitWith cuts s into the matches of match (which returns the length
// matched at the start of its argument, 0 for none) and the text between
// them (the Isolated behaviour).
func splitWith(s string, match func(string) int) []string {
	var out []string
	gap := 0
	for i := 0; i < len(s); {
		if n := match(s[i:]); n > 0 {
			if gap < i {
				out = append(out, s[gap:i])
			}
			out = append(out, s[i:i+n])
			i += n
			gap = i
			continue
		}
		_, n := utf8.DecodeRuneInString(s[i:])
		i += n
	}
	if gap < len(s) {
		out = append(out, s[gap:])
	}
	return out
}

func splitGPT2(s string) []string { return splitWith(s, gpt2Match) }

func isL(r rune) bool { return unicode.IsLetter(r) }
func isN(r rune) bool { return unicode.IsNumber(r) }

// isS is \s: Unicode white space, as Oniguruma and Go agree on it.
func isS(r rune) bool { return unicode.IsSpace(r) }

// run is the byte length of the longest prefix of s whose runes satisfy f.
func run(s string, f func(rune) bool) int {
	n := 0
	for n < len(s) {
		r, k := utf8.DecodeRuneInString(s[n:])
		if !f(r) {
			break
		}
		n += k
	}
	return n
}

// contraction matches 's 't 're 've 'm 'll 'd (any case when fold).
func contraction(s string, fold bool) int {
	if !strings.HasPrefix(s, "'") {
		return 0
	}
	for _, c := range []string{"s", "t", "re", "ve", "m", "ll", "d"} {
		t := s[1:]
		if len(t) < len(c) {
			continue
		}
		if t[:len(c)] == c || (fold && strings.EqualFold(t[:len(c)], c)) {
			return 1 + len(c)
		}
	}
	return 0
}

// spaces matches \s+(?!\S) then \s+: a run of white space, less its last
// character when a non-space follows (that one goes with the next word).
func spaces(s string) int {
	n := run(s, isS)
	if n == 0 || n == len(s) {
		return n
	}
	_, last := utf8.DecodeLastRuneInString(s[:n])
	if n-last > 0 {
		return n - last
	}
	return n
}

func gpt2Match(s string) int {
	if n := contraction(s, false); n > 0 {
		return n
	}
	sp := 0
	if strings.HasPrefix(s, " ") {
		sp = 1
	}
	for _, class := range []func(rune) bool{isL, isN, func(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }} {
		if n := run(s[sp:], class); n > 0 {
			return sp + n
		}
	}
	return spaces(s)
}

// llama3Match is Llama-3's pattern with digits taken up to maxDigits at a
// time (Qwen2: 1).
func llama3Match(maxDigits int) func(string) int {
	return func(s string) int {
		if n := contraction(s, true); n > 0 {
			return n
		}
		// [^\r\n\p{L}\p{N}]?\p{L}+
		r, k := utf8.DecodeRuneInString(s)
		if r != '\r' && r != '\n' && !isL(r) && !isN(r) {
			if n := run(s[k:], isL); n > 0 {
				return k + n
			}
		}
		if n := run(s, isL); n > 0 {
			return n
		}
		// \p{N}{1,maxDigits}
		n, digits := 0, 0
		for n < len(s) && digits < maxDigits {
			r, k := utf8.DecodeRuneInString(s[n:])
			if !isN(r) {
				break
			}
			n += k
			digits++
		}
		if n > 0 {
			return n
		}
		// ' ?[^\s\p{L}\p{N}]+[\r\n]*'
		sp := 0
		if strings.HasPrefix(s, " ") {
			sp = 1
		}
		if n := run(s[sp:], func(r rune) bool { return !isS(r) && !isL(r) && !isN(r) }); n > 0 {
			n += sp
			return n + run(s[n:], func(r rune) bool { return r == '\r' || r == '\n' })
		}
		// \s*[\r\n]+: white space up to and including its last line break.
		w := run(s, isS)
		if last := strings.LastIndexAny(s[:w], "\r\n"); last >= 0 {
			return last + 1
		}
		return spaces(s)
	}
}

// byteToRune is GPT-2's map from bytes to printable characters: the
// printable Latin-1 bytes stand for themselves, the others are shifted
// past U+0100 in order.
var byteToRune = func() [256]rune {
	var m [256]rune
	n := 0
	for b := 0; b < 256; b++ {
		if (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}()

func byteLevel(s string) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		b.WriteRune(byteToRune[s[i]])
	}
	return b.String()
}

// PatternName names a known split pattern: "gpt2", "llama3", "qwen2", or
// "" for another.
func PatternName(pattern string) string {
	return map[string]string{gpt2Pattern: "gpt2", llama3Pattern: "llama3", qwen2Pattern: "qwen2"}[pattern]
}
