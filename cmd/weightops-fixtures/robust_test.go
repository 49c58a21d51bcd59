package main

import (
	"bytes"
	"encoding/json"
	"os"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/demo"
)

const committedDemo = "../../testdata/demo"

// TestRegenerateDemo retrains the demo base and one robust fine-tune with
// the committed seed and expects the committed files byte for byte
// (weights, arch, training metrics) and the same manifest. Retraining
// every demo model takes about 30 s on two cores; these two, about 12 s
// (skipped with -short).
func TestRegenerateDemo(t *testing.T) {
	if testing.Short() {
		t.Skip("retrains two demo models (about 12 s); skipped with -short")
	}
	want, err := demo.ReadManifest(committedDemo)
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	only := []string{"robust-gaussian_noise"}
	if err := makeDemo(out, filepath.Join(committed, "data"), want.Seed, only, nil); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"base", "robust-gaussian_noise"} {
		files, _ := filepath.Glob(filepath.Join(committedDemo, name, "*"))
		if len(files) != 3 {
			t.Fatalf("%s: committed model has %d files, want 3", name, len(files))
		}
		for _, f := range files {
			w, _ := os.ReadFile(f)
			got, err := os.ReadFile(filepath.Join(out, name, filepath.Base(f)))
			if err != nil || !bytes.Equal(got, w) {
				t.Errorf("%s/%s: regenerated file differs from the committed one (%v)", name, filepath.Base(f), err)
			}
		}
	}
	// The manifest names the data relative to its own directory, so only
	// that field may differ.
	if _, err := demo.ReadManifest(out); err == nil {
		t.Fatal("manifest of a partial run validated, but it lists models that were not written")
	}
	b, err := os.ReadFile(filepath.Join(out, demo.ManifestFile))
	if err != nil {
		t.Fatal(err)
	}
	got := &demo.Manifest{}
	if err := json.Unmarshal(b, got); err != nil {
		t.Fatal(err)
	}
	got.Data, want.Data = demo.DataFiles{}, demo.DataFiles{}
	gj, _ := json.Marshal(got)
	wj, _ := json.Marshal(want)
	if !bytes.Equal(gj, wj) {
		t.Errorf("manifest differs:\n got %s\nwant %s", gj, wj)
	}
}

// TestDemoManifestData checks that the committed manifest points at the
// committed Fashion-MNIST files.
func TestDemoManifestData(t *testing.T) {
	m, err := demo.ReadManifest(committedDemo)
	if err != nil {
		t.Fatal(err)
	}
	d, err := m.LoadData(committedDemo)
	if err != nil {
		t.Fatal(err)
	}
	if d.Train.Len() != 4000 || d.Val.Len() != 1000 || d.Test.Len() != 1000 {
		t.Errorf("split %d/%d/%d, want 4000/1000/1000", d.Train.Len(), d.Val.Len(), d.Test.Len())
	}
	if len(m.Corruptions) < 4 {
		t.Errorf("%d corruptions, want at least 4", len(m.Corruptions))
	}
}
