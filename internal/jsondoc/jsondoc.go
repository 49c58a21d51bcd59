// Package jsondoc checks JSON output against docs/json.md, the documented
// schema of every command's --json: each documented key must be present
// (unless marked optional) with a documented type, and every key present
// must be documented. Tests of the commands call it, so the document
// cannot drift from what the commands print.
//
// The document has one section per command, headed "## `weightops CMD`",
// with a table whose rows are "| `key.path` | type | meaning |". Paths
// join object keys with "."; "[]" stands for every element of an array
// ("tensors[].name") and "*" for every key of an object whose keys are
// data ("bytes_by_dtype.*"). A type is one or more of string, number,
// integer, boolean, array, object and null joined by " or ", optionally
// preceded by "optional" for a key that may be absent.
package jsondoc

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"math"
	"os"
	"regexp"
	"slices"
	"sort"
	"strings"
)

// Key is one documented key.
type Key struct {
	Path     string
	Types    []string
	Optional bool
}

// Doc is the parsed document: keys by section ("weightops inspect").
type Doc map[string][]Key

var (
	heading = regexp.MustCompile("^## `([^`]+)`")
	row     = regexp.MustCompile("^\\| `([^`]+)` \\| ([^|]+) \\|")
	kinds   = []string{"string", "number", "integer", "boolean", "array", "object", "null"}
)

// Parse reads the document at path.
func Parse(path string) (Doc, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	doc := Doc{}
	section := ""
	sc := bufio.NewScanner(f)
	line := 0
	for sc.Scan() {
		line++
		t := sc.Text()
		if m := heading.FindStringSubmatch(t); m != nil {
			section = m[1]
			if _, dup := doc[section]; dup {
				return nil, fmt.Errorf("%s:%d: section %q twice", path, line, section)
			}
			doc[section] = nil
			continue
		}
		m := row.FindStringSubmatch(t)
		if m == nil || section == "" {
			continue
		}
		k := Key{Path: m[1]}
		typ := strings.TrimSpace(m[2])
		if rest, ok := strings.CutPrefix(typ, "optional "); ok {
			k.Optional, typ = true, rest
		}
		for _, ty := range strings.Split(typ, " or ") {
			if !slices.Contains(kinds, ty) {
				return nil, fmt.Errorf("%s:%d: key %q: unknown type %q", path, line, k.Path, ty)
			}
			k.Types = append(k.Types, ty)
		}
		doc[section] = append(doc[section], k)
	}
	return doc, sc.Err()
}

// Check compares one JSON output with a section; ignore lists top-level
// keys to leave out either way (schema_version, which report.json and
// results.json lack). It returns
// every difference, one line each.
func (d Doc) Check(section string, data []byte, ignore ...string) []string {
	keys, ok := d[section]
	if !ok {
		return []string{fmt.Sprintf("docs/json.md has no section %q", section)}
	}
	documented := map[string]Key{}
	wild := map[string]bool{}    // object paths whose keys are data
	implied := map[string]bool{} // containers of documented keys
	for _, k := range keys {
		documented[k.Path] = k
		if i := strings.Index(k.Path, "*"); i >= 0 {
			wild[strings.TrimSuffix(k.Path[:i], ".")] = true
		}
		for p := k.Path; ; {
			i := strings.LastIndexByte(p, '.')
			if i < 0 {
				break
			}
			p = p[:i]
			implied[strings.TrimSuffix(p, "[]")] = true
		}
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return []string{fmt.Sprintf("%s: not JSON: %v", section, err)}
	}
	seen := map[string]bool{}
	nonEmpty := map[string]bool{} // objects (and array elements) holding keys
	var problems []string
	var walk func(path string, v any, key bool)
	walk = func(path string, v any, key bool) {
		if key {
			seen[path] = true
			k, ok := documented[path]
			switch kind := kindOf(v); {
			case !ok && implied[path]:
				if kind != "object" && kind != "array" && kind != "null" {
					problems = append(problems, fmt.Sprintf("%s: key %q is %s, documented as holding keys", section, path, kind))
				}
			case !ok:
				problems = append(problems, fmt.Sprintf("%s: key %q is not documented", section, path))
			case !slices.Contains(k.Types, kind) && !(kind == "integer" && slices.Contains(k.Types, "number")):
				problems = append(problems, fmt.Sprintf("%s: key %q is %s, documented as %s", section, path, kind, strings.Join(k.Types, " or ")))
			}
		}
		switch x := v.(type) {
		case map[string]any:
			for name, c := range x {
				if path == "" && slices.Contains(ignore, name) {
					continue
				}
				nonEmpty[path] = true
				p := name
				switch {
				case wild[path]:
					p = join(path, "*")
				case path != "":
					p = path + "." + name
				}
				walk(p, c, true)
			}
		case []any:
			for _, c := range x {
				walk(path+"[]", c, false)
			}
		}
	}
	walk("", v, false)
	for _, k := range keys {
		parent := ""
		if i := strings.LastIndexByte(k.Path, '.'); i >= 0 {
			parent = k.Path[:i]
		}
		if !k.Optional && !seen[k.Path] && (parent == "" || nonEmpty[parent]) && !slices.Contains(ignore, k.Path) {
			problems = append(problems, fmt.Sprintf("%s: documented key %q is missing", section, k.Path))
		}
	}
	sort.Strings(problems)
	return slices.Compact(problems)
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

// kindOf names a decoded JSON value's type as the document does.
func kindOf(v any) string {
	switch x := v.(type) {
	case nil:
		return "null"
	case string:
		return "string"
	case bool:
		return "boolean"
	case json.Number:
		if f, err := x.Float64(); err == nil && f == math.Trunc(f) && !strings.ContainsAny(x.String(), ".eE") {
			return "integer"
		}
		return "number"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}
