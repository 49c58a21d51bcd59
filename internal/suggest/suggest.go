// Package suggest finds the closest known word to a mistyped one, for the
// "did you mean" of recipe keys, methods, commands and flags.
package suggest

import (
	"fmt"
	"strings"
)

// Closest returns the known word nearest to word (case-insensitive edit
// distance), or "" when none is near enough: at most 2 edits, or a third
// of the word's length.
func Closest(word string, known []string) string {
	best, bestD := "", 1<<30
	for _, k := range known {
		if d := distance(strings.ToLower(word), strings.ToLower(k)); d < bestD {
			best, bestD = k, d
		}
	}
	if best != "" && bestD <= max(2, len(word)/3) {
		return best
	}
	return ""
}

// Hint is ` (did you mean "x"?)` for the closest known word, or "".
func Hint(word string, known []string) string {
	if c := Closest(word, known); c != "" {
		return fmt.Sprintf(" (did you mean %q?)", c)
	}
	return ""
}

// distance is the Levenshtein edit distance.
func distance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			c := 1
			if a[i-1] == b[j-1] {
				c = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+c)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}
