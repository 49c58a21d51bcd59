package demo

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/weights"
)

// ManifestFile is the name of the manifest in a demo data directory.
const ManifestFile = "manifest.json"

// Manifest describes a demo data directory (testdata/demo): the models it
// holds, how they relate, the data they were trained on and the
// corruptions the robust fine-tunes learned. The fixture generator
// (cmd/weightops-fixtures -demo) writes it; the demo and the report read
// it.
type Manifest struct {
	// Generator and Seed say what made the models.
	Generator string `json:"generator"`
	Seed      uint64 `json:"seed"`
	// Data are the Fashion-MNIST IDX files, relative to the manifest's
	// directory (or absolute).
	Data DataFiles `json:"data"`
	// Validation is how the training images were split: the models
	// trained on the rest; the demo tunes on this part.
	Validation Split `json:"validation"`
	// Corruptions are the corruption families, each at the one severity
	// its robust fine-tune was trained on and is evaluated at.
	Corruptions []Corruption `json:"corruptions"`
	// Models lists every model directory, base first.
	Models []ModelEntry `json:"models"`
}

// DataFiles names the IDX files of the Fashion-MNIST subset.
type DataFiles struct {
	TrainImages string `json:"train_images"`
	TrainLabels string `json:"train_labels"`
	TestImages  string `json:"test_images"`
	TestLabels  string `json:"test_labels"`
}

// Split is a dataset.StratifiedSplit of the training images.
type Split struct {
	Fraction float64 `json:"fraction"`
	Seed     uint64  `json:"seed"`
}

// Corruption is one corruption family at a fixed severity.
type Corruption struct {
	// Name is the family (gaussian_noise, blur, ...), Spec the pipeline
	// spec with its severity ("gaussian_noise:0.3").
	Name string `json:"name"`
	Spec string `json:"spec"`
}

// Pipeline parses the spec.
func (c Corruption) Pipeline() (dataset.Pipeline, error) {
	p, err := dataset.ParseCorruptions(c.Spec)
	if err != nil {
		return nil, fmt.Errorf("corruption %s: %w", c.Name, err)
	}
	return p, nil
}

// Model roles.
const (
	RoleBase   = "base"   // the "pretrained" model, trained briefly on clean data
	RoleClean  = "clean"  // fine-tuned from the base on clean data
	RoleRobust = "robust" // fine-tuned from the base on partly corrupted data
)

// ModelEntry is one model directory (model.safetensors, arch.yaml,
// train_metrics.json) of the demo data.
type ModelEntry struct {
	Name       string `json:"name"`
	Role       string `json:"role"`
	Parent     string `json:"parent,omitempty"`
	Corruption string `json:"corruption,omitempty"`
}

// ReadManifest reads dir/manifest.json and checks it: known roles, one
// base and one clean model, a robust model for each corruption, valid
// corruption specs, and every model directory present.
func ReadManifest(dir string) (*Manifest, error) {
	path := filepath.Join(dir, ManifestFile)
	b, err := weights.ReadFile(path, weights.MaxConfigSize, "demo manifest")
	if err != nil {
		return nil, fmt.Errorf("demo data: %w (make it with: go run ./cmd/weightops-fixtures -demo %s)", err, dir)
	}
	var m Manifest
	if err := json.Unmarshal(b, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	if err := m.check(dir); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return &m, nil
}

func (m *Manifest) check(dir string) error {
	var errs []error
	counts := map[string]int{}
	robust := map[string]bool{}
	for _, e := range m.Models {
		counts[e.Role]++
		switch e.Role {
		case RoleBase, RoleClean:
		case RoleRobust:
			robust[e.Corruption] = true
		default:
			errs = append(errs, fmt.Errorf("model %q: unknown role %q", e.Name, e.Role))
		}
		if e.Name == "" || filepath.Base(e.Name) != e.Name {
			errs = append(errs, fmt.Errorf("model name %q: want a plain directory name", e.Name))
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, e.Name, "model.safetensors")); err != nil {
			errs = append(errs, fmt.Errorf("model %q: %w", e.Name, err))
		}
	}
	if counts[RoleBase] != 1 || counts[RoleClean] != 1 {
		errs = append(errs, fmt.Errorf("want exactly one base and one clean model, have %d and %d", counts[RoleBase], counts[RoleClean]))
	}
	seen := map[string]bool{}
	for _, c := range m.Corruptions {
		if seen[c.Name] {
			errs = append(errs, fmt.Errorf("corruption %q listed twice", c.Name))
		}
		seen[c.Name] = true
		if _, err := c.Pipeline(); err != nil {
			errs = append(errs, err)
		}
		if !robust[c.Name] {
			errs = append(errs, fmt.Errorf("corruption %q has no robust model", c.Name))
		}
	}
	if len(m.Corruptions) == 0 {
		errs = append(errs, errors.New("no corruptions"))
	}
	if !(m.Validation.Fraction > 0 && m.Validation.Fraction < 1) {
		errs = append(errs, fmt.Errorf("validation fraction %g: want it in (0, 1)", m.Validation.Fraction))
	}
	return errors.Join(errs...)
}

// Role returns the first model of a role (and for RoleRobust, of the
// corruption).
func (m *Manifest) Role(role, corruption string) (ModelEntry, bool) {
	for _, e := range m.Models {
		if e.Role == role && (role != RoleRobust || e.Corruption == corruption) {
			return e, true
		}
	}
	return ModelEntry{}, false
}

// Data is the demo's data, loaded.
type Data struct {
	// Train is the part of the training images the models trained on,
	// Val the held-out part, Test the test images.
	Train, Val, Test *dataset.Set
}

// LoadData loads the manifest's images and splits the training images as
// the generator did.
func (m *Manifest) LoadData(dir string) (*Data, error) {
	rel := func(p string) string {
		if filepath.IsAbs(p) {
			return p
		}
		return filepath.Join(dir, p)
	}
	all, err := dataset.Load(rel(m.Data.TrainImages), rel(m.Data.TrainLabels))
	if err != nil {
		return nil, err
	}
	te, err := dataset.Load(rel(m.Data.TestImages), rel(m.Data.TestLabels))
	if err != nil {
		return nil, err
	}
	tr, val := dataset.StratifiedSplit(all, m.Validation.Fraction, m.Validation.Seed)
	return &Data{Train: tr, Val: val, Test: te}, nil
}

// Corruption finds a corruption by name.
func (m *Manifest) Corruption(name string) (Corruption, bool) {
	for _, c := range m.Corruptions {
		if c.Name == name {
			return c, true
		}
	}
	return Corruption{}, false
}

// CorruptionNames lists the manifest's corruptions in order.
func (m *Manifest) CorruptionNames() []string {
	out := make([]string, len(m.Corruptions))
	for i, c := range m.Corruptions {
		out[i] = c.Name
	}
	return out
}
