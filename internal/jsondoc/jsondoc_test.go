package jsondoc

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

const doc = "# x\n\n## `weightops thing`\n\n| key | type | meaning |\n|---|---|---|\n" +
	"| `files` | array | |\n| `n` | integer | |\n| `x` | number or null | |\n| `items[].name` | string | |\n" +
	"| `by.*` | integer | |\n| `deep.*.v` | number | |\n| `maybe` | optional string | |\n"

func TestCheck(t *testing.T) {
	p := filepath.Join(t.TempDir(), "json.md")
	os.WriteFile(p, []byte(doc), 0o644)
	d, err := Parse(p)
	if err != nil {
		t.Fatal(err)
	}
	ok := `{"schema_version": 1, "files": [], "n": 3, "x": null, "items": [{"name": "a"}], "by": {"F32": 4}, "deep": {"w": {"v": 0.5}}}`
	if p := d.Check("weightops thing", []byte(ok), "schema_version"); len(p) != 0 {
		t.Errorf("conforming output: %v", p)
	}
	// Empty arrays and maps: their element keys cannot be missing.
	if p := d.Check("weightops thing", []byte(`{"files": [], "n": 3, "x": 1.5, "items": [], "by": {}, "deep": {}}`)); len(p) != 0 {
		t.Errorf("empty containers: %v", p)
	}
	for _, c := range []struct{ json, want string }{
		{`{"files": [], "x": 1, "items": [], "by": {}, "deep": {}}`, `documented key "n" is missing`},
		{`{"files": [], "n": 1.5, "x": 1, "items": [], "by": {}, "deep": {}}`, `key "n" is number, documented as integer`},
		{`{"files": [], "n": 1, "x": "s", "items": [], "by": {}, "deep": {}}`, `key "x" is string, documented as number or null`},
		{`{"files": [], "n": 1, "x": 1, "items": [{"nom": "a"}], "by": {}, "deep": {}}`, `key "items[].nom" is not documented`},
		{`{"files": [], "n": 1, "x": 1, "items": [{"name": "a"}, {}], "by": {}, "deep": {"w": {}}, "extra": 1}`, `key "extra" is not documented`},
		{`{"files": [], "n": 1, "x": 1, "items": [], "by": {}, "deep": {"w": {"u": 1}}}`, `documented key "deep.*.v" is missing`},
	} {
		if p := d.Check("weightops thing", []byte(c.json)); !strings.Contains(strings.Join(p, "\n"), c.want) {
			t.Errorf("%s: problems %v, want %q", c.json, p, c.want)
		}
	}
	if p := d.Check("weightops other", []byte(ok)); len(p) != 1 {
		t.Errorf("unknown section: %v", p)
	}
	os.WriteFile(p, []byte(doc+"| `bad` | text | |\n"), 0o644)
	if _, err := Parse(p); err == nil || !strings.Contains(err.Error(), `unknown type "text"`) {
		t.Errorf("bad type: %v", err)
	}
}
