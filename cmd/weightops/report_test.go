package main

import (
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestReportOnCheckpoints: `report BASE MODEL...` writes the three files
// and prints them, or the JSON; flags of the other form are usage errors.
func TestReportOnCheckpoints(t *testing.T) {
	dir := t.TempDir()
	fam := filepath.Join(dir, "fam")
	if _, e, code := run(t, "synth", "--family", fam, "-q", "--size", "2MiB", "--hidden", "64", "--vocab", "256"); code != 0 {
		t.Fatal(e)
	}
	base, m1, m2 := filepath.Join(fam, "llama"), filepath.Join(fam, "llama-math"), filepath.Join(fam, "llama-code")
	out := filepath.Join(dir, "rep")
	stdout, e, code := run(t, "report", base, m1, m2, "-o", out, "-q")
	if code != 0 {
		t.Fatalf("report: %s", e)
	}
	for _, f := range []string{"report.html", "report.md", "report.json"} {
		if !strings.Contains(stdout, filepath.Join(out, f)) {
			t.Errorf("stdout lacks %s: %q", f, stdout)
		}
		if _, err := os.Stat(filepath.Join(out, f)); err != nil {
			t.Error(err)
		}
	}
	stdout, e, code = run(t, "report", base, m1, "-o", filepath.Join(dir, "rep2"), "--json", "-q", "--density", "0.3")
	var r struct {
		SchemaVersion int      `json:"schema_version"`
		Density       float64  `json:"density"`
		Labels        []string `json:"labels"`
	}
	if err := json.Unmarshal([]byte(stdout), &r); err != nil || code != 0 || r.SchemaVersion != 1 || r.Density != 0.3 || strings.Join(r.Labels, ",") != "llama,llama-math" {
		t.Errorf("--json: %v %+v %s", err, r, e)
	}
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"report", base}, "at least one model"},
		{[]string{"report", base, m1, "--alpha", "0:1:0.5"}, "--alpha applies to the demo report"},
		{[]string{"report", "--density", "0.2"}, "--density applies to a report on checkpoints"},
		{[]string{"report", base, m1, "--density", "2", "-o", filepath.Join(dir, "bad")}, "density 2"},
	} {
		_, e, code := run(t, c.args...)
		if code == 0 || !strings.Contains(e, c.want) {
			t.Errorf("%v: exit %d, %q; want %q", c.args, code, e, c.want)
		}
	}
}
