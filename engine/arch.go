package engine

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/weightops/weightops/weights"
)

// Arch describes a sequential classifier: how raw samples become the
// network's input, and the layers in order, each mapped to its tensors in a
// checkpoint by PyTorch state_dict names. It is read from a YAML or JSON
// file, by convention arch.yaml beside the checkpoint:
//
//	input:
//	  shape: [1, 28, 28]      # one sample: [C, H, W] or [features]
//	  scale: 1                # raw value × scale (default 1) ...
//	  mean: [0.2860]          # ... then (x − mean[c]) / std[c]; one value
//	  std: [0.3530]           #     per channel, or one for all
//	classes: [T-shirt/top, Trouser, ...]   # optional output names
//	layers:
//	  - {type: conv2d, name: features.0, out: 16, kernel: 3, padding: 1}
//	  - {type: batchnorm2d, name: features.1}
//	  - {type: relu}
//	  - {type: maxpool2d, kernel: 2}
//	  - {type: flatten}
//	  - {type: dropout, p: 0.5}
//	  - {type: linear, name: classifier.1, out: 10}
//
// A layer's tensors are name + ".weight", ".bias", ".running_mean",
// ".running_var"; the tensors key overrides any of them, e.g.
// tensors: {weight: encoder.w}. Layer types and their keys (defaults in
// parentheses):
//
//	linear       name, out, in, bias (true)               weight [out, in]
//	conv2d       name, out, kernel, stride (1), padding (0), bias (true)
//	                                                      weight [out, in, kh, kw]
//	batchnorm1d  name, eps (1e-5), momentum (0.1), affine (true)
//	batchnorm2d  same; eval mode uses running_mean and running_var
//	relu, tanh, sigmoid, flatten, softmax, log_softmax
//	leaky_relu   negative_slope (0.01)
//	gelu         approximate (none | tanh)
//	maxpool2d    kernel, stride (= kernel), padding (0)
//	avgpool2d    kernel, stride (= kernel), padding (0), count_include_pad (true)
//	dropout      p (0.5); does nothing at evaluation
//
// kernel, stride and padding take one integer or a pair [h, w]. out, in
// and kernel may be left out when a checkpoint supplies the tensors (they
// are read from its shapes); they are needed to build a fresh model for
// training. Everything is checked against the checkpoint when loading: a
// missing tensor or a shape that does not fit the layer's input is one
// error naming the layer and the tensor. Groups, dilation, ceil_mode and
// adaptive pooling are not supported.
type Arch struct {
	// Input describes one raw sample and its normalisation.
	Input Input `yaml:"input" json:"input"`
	// Classes optionally names the outputs, in order.
	Classes []string `yaml:"classes,omitempty" json:"classes,omitempty"`
	// Layers run in order.
	Layers []LayerSpec `yaml:"layers" json:"layers"`
}

// Input says what one sample looks like and how it is normalised: the
// network sees (raw·Scale − Mean[c]) / Std[c] for channel c (the first
// dimension of Shape).
type Input struct {
	// Shape is one sample's shape, [C, H, W] or [features].
	Shape []int `yaml:"shape,flow" json:"shape"`
	// Scale multiplies raw values first (0 means 1).
	Scale float64 `yaml:"scale,omitempty" json:"scale,omitempty"`
	// Mean and Std have one value per channel, or one for all (none: 0
	// and 1).
	Mean []float64 `yaml:"mean,omitempty,flow" json:"mean,omitempty"`
	Std  []float64 `yaml:"std,omitempty,flow" json:"std,omitempty"`
}

// LayerSpec is one layer of an Arch. Which keys apply depends on Type;
// see Arch.
type LayerSpec struct {
	// Type is the layer type, e.g. conv2d (see Arch for the list).
	Type string `yaml:"type" json:"type"`
	// Name is the module prefix of the layer's tensors, e.g. features.0.
	Name string `yaml:"name,omitempty" json:"name,omitempty"`
	// Tensors overrides tensor names by role (weight, bias, running_mean,
	// running_var).
	Tensors map[string]string `yaml:"tensors,omitempty" json:"tensors,omitempty"`
	// Out and In are output and input features (linear) or channels
	// (conv2d).
	Out int `yaml:"out,omitempty" json:"out,omitempty"`
	In  int `yaml:"in,omitempty" json:"in,omitempty"`
	// Kernel, Stride and Padding are [h, w] sizes for conv2d and pooling.
	Kernel  Pair `yaml:"kernel,omitempty" json:"kernel,omitzero"`
	Stride  Pair `yaml:"stride,omitempty" json:"stride,omitzero"`
	Padding Pair `yaml:"padding,omitempty" json:"padding,omitzero"`
	// Bias says whether a linear or conv2d layer has a bias (default true).
	Bias *bool `yaml:"bias,omitempty" json:"bias,omitempty"`
	// Eps, Momentum and Affine configure batchnorm (1e-5, 0.1, true).
	Eps      float64 `yaml:"eps,omitempty" json:"eps,omitempty"`
	Momentum float64 `yaml:"momentum,omitempty" json:"momentum,omitempty"`
	Affine   *bool   `yaml:"affine,omitempty" json:"affine,omitempty"`
	// NegativeSlope is leaky_relu's slope below zero (0.01).
	NegativeSlope *float64 `yaml:"negative_slope,omitempty" json:"negative_slope,omitempty"`
	// Approximate selects gelu's form: none (erf) or tanh.
	Approximate string `yaml:"approximate,omitempty" json:"approximate,omitempty"`
	// P is dropout's drop probability (0.5), used in training only.
	P *float64 `yaml:"p,omitempty" json:"p,omitempty"`
	// CountIncludePad makes avgpool2d divide by the full window, padding
	// included (default true, as PyTorch).
	CountIncludePad *bool `yaml:"count_include_pad,omitempty" json:"count_include_pad,omitempty"`
}

// Pair is a kernel size, stride or padding: [h, w]. In a file it is one
// integer (both) or a two-integer list. The zero Pair means "not given".
type Pair [2]int

// IsZero reports whether the pair was not given.
func (p Pair) IsZero() bool { return p == Pair{} }

// UnmarshalYAML reads an integer or [h, w].
func (p *Pair) UnmarshalYAML(n *yaml.Node) error {
	var one int
	if n.Kind == yaml.ScalarNode {
		if err := n.Decode(&one); err != nil {
			return fmt.Errorf("line %d: want an integer or [h, w]", n.Line)
		}
		*p = Pair{one, one}
		return nil
	}
	var two []int
	if err := n.Decode(&two); err != nil || len(two) != 2 {
		return fmt.Errorf("line %d: want an integer or [h, w]", n.Line)
	}
	*p = Pair{two[0], two[1]}
	return nil
}

// MarshalYAML writes one integer when both values agree.
func (p Pair) MarshalYAML() (any, error) {
	if p[0] == p[1] {
		return p[0], nil
	}
	n := &yaml.Node{Kind: yaml.SequenceNode, Style: yaml.FlowStyle}
	for _, v := range p {
		n.Content = append(n.Content, &yaml.Node{Kind: yaml.ScalarNode, Tag: "!!int", Value: fmt.Sprint(v)})
	}
	return n, nil
}

// UnmarshalJSON reads an integer or [h, w].
func (p *Pair) UnmarshalJSON(b []byte) error {
	var one int
	if err := json.Unmarshal(b, &one); err == nil {
		*p = Pair{one, one}
		return nil
	}
	var two []int
	if err := json.Unmarshal(b, &two); err != nil || len(two) != 2 {
		return errors.New("want an integer or [h, w]")
	}
	*p = Pair{two[0], two[1]}
	return nil
}

// MarshalJSON writes one integer when both values agree.
func (p Pair) MarshalJSON() ([]byte, error) {
	if p[0] == p[1] {
		return json.Marshal(p[0])
	}
	return json.Marshal([]int{p[0], p[1]})
}

// layerKeys lists, per layer type, the keys that apply to it.
var layerKeys = map[string][]string{
	"linear":      {"name", "tensors", "out", "in", "bias"},
	"conv2d":      {"name", "tensors", "out", "in", "kernel", "stride", "padding", "bias"},
	"batchnorm1d": {"name", "tensors", "eps", "momentum", "affine"},
	"batchnorm2d": {"name", "tensors", "eps", "momentum", "affine"},
	"relu":        {},
	"leaky_relu":  {"negative_slope"},
	"gelu":        {"approximate"},
	"tanh":        {},
	"sigmoid":     {},
	"maxpool2d":   {"kernel", "stride", "padding"},
	"avgpool2d":   {"kernel", "stride", "padding", "count_include_pad"},
	"flatten":     {},
	"dropout":     {"p"},
	"softmax":     {},
	"log_softmax": {},
}

// LayerTypes lists the layer types an arch file may use, sorted.
func LayerTypes() []string {
	out := make([]string, 0, len(layerKeys))
	for k := range layerKeys {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// setKeys lists the keys a spec gives (other than type).
func (l *LayerSpec) setKeys() []string {
	var k []string
	add := func(set bool, name string) {
		if set {
			k = append(k, name)
		}
	}
	add(l.Name != "", "name")
	add(len(l.Tensors) > 0, "tensors")
	add(l.Out != 0, "out")
	add(l.In != 0, "in")
	add(!l.Kernel.IsZero(), "kernel")
	add(!l.Stride.IsZero(), "stride")
	add(!l.Padding.IsZero(), "padding")
	add(l.Bias != nil, "bias")
	add(l.Eps != 0, "eps")
	add(l.Momentum != 0, "momentum")
	add(l.Affine != nil, "affine")
	add(l.NegativeSlope != nil, "negative_slope")
	add(l.Approximate != "", "approximate")
	add(l.P != nil, "p")
	add(l.CountIncludePad != nil, "count_include_pad")
	return k
}

// Label names the layer in errors: `layer 3 (linear "fc2")`.
func (l *LayerSpec) Label(i int) string {
	if l.Name != "" {
		return fmt.Sprintf("layer %d (%s %q)", i, l.Type, l.Name)
	}
	return fmt.Sprintf("layer %d (%s)", i, l.Type)
}

// TensorName is the checkpoint name of one of the layer's tensors (role
// weight, bias, running_mean, running_var or num_batches_tracked): the
// tensors override if given, else name + "." + role.
func (l *LayerSpec) TensorName(role string) string {
	if t, ok := l.Tensors[role]; ok {
		return t
	}
	if l.Name == "" {
		return role
	}
	return l.Name + "." + role
}

// Validate checks the arch on its own (keys that apply, values in range);
// the checkpoint is checked when the model is built.
func (a *Arch) Validate() error {
	in := a.Input
	if len(in.Shape) == 0 {
		return errors.New("input: shape is required, e.g. shape: [1, 28, 28]")
	}
	size := 1
	for _, d := range in.Shape {
		if d <= 0 || d > 1<<24 {
			return fmt.Errorf("input: bad shape %v", in.Shape)
		}
		size *= d
		if size > maxValues {
			return fmt.Errorf("input: shape %v is too large", in.Shape)
		}
	}
	if in.Scale < 0 {
		return fmt.Errorf("input: scale %v is negative", in.Scale)
	}
	ch := in.Shape[0]
	for _, v := range []struct {
		name string
		vals []float64
	}{{"mean", in.Mean}, {"std", in.Std}} {
		if len(v.vals) > 1 && (len(in.Shape) < 2 || len(v.vals) != ch) {
			return fmt.Errorf("input: %s has %d values; want 1 or one per channel (%d)", v.name, len(v.vals), ch)
		}
	}
	for _, s := range in.Std {
		if !(s > 0) {
			return fmt.Errorf("input: std %v must be positive", s)
		}
	}
	if len(a.Layers) == 0 {
		return errors.New("no layers")
	}
	for i := range a.Layers {
		l := &a.Layers[i]
		allowed, ok := layerKeys[l.Type]
		if !ok {
			return fmt.Errorf("%s: unknown layer type (known: %s)", l.Label(i), strings.Join(LayerTypes(), ", "))
		}
		for _, k := range l.setKeys() {
			found := false
			for _, a := range allowed {
				found = found || a == k
			}
			if !found {
				return fmt.Errorf("%s: key %q does not apply to %s", l.Label(i), k, l.Type)
			}
		}
		for role := range l.Tensors {
			switch role {
			case "weight", "bias", "running_mean", "running_var":
			default:
				return fmt.Errorf("%s: unknown tensor role %q (weight, bias, running_mean, running_var)", l.Label(i), role)
			}
		}
		if (l.Type == "linear" || l.Type == "conv2d" || strings.HasPrefix(l.Type, "batchnorm")) && l.Name == "" && len(l.Tensors) == 0 {
			return fmt.Errorf("%s: name is required (the tensors' prefix, e.g. features.0)", l.Label(i))
		}
		if l.Out < 0 || l.In < 0 || l.Out > maxValues || l.In > maxValues || l.Eps < 0 || l.Momentum < 0 || l.Momentum > 1 {
			return fmt.Errorf("%s: out or in negative or too large, negative eps, or momentum outside [0, 1]", l.Label(i))
		}
		for _, p := range []struct {
			name string
			v    Pair
			min  int
		}{{"kernel", l.Kernel, 1}, {"stride", l.Stride, 1}, {"padding", l.Padding, 0}} {
			if !p.v.IsZero() && (p.v[0] < p.min || p.v[1] < p.min || p.v[0] > 1<<16 || p.v[1] > 1<<16) {
				return fmt.Errorf("%s: bad %s %v", l.Label(i), p.name, p.v)
			}
		}
		if (l.Type == "maxpool2d" || l.Type == "avgpool2d") && l.Kernel.IsZero() {
			return fmt.Errorf("%s: kernel is required", l.Label(i))
		}
		if l.Approximate != "" && l.Approximate != "none" && l.Approximate != "tanh" {
			return fmt.Errorf("%s: approximate must be none or tanh", l.Label(i))
		}
		if l.P != nil && (*l.P < 0 || *l.P >= 1) {
			return fmt.Errorf("%s: p must be in [0, 1)", l.Label(i))
		}
	}
	return nil
}

// maxValues bounds the values of one sample at any layer, and of one
// parameter tensor built without a checkpoint (2^26 = 64 Mi values).
const maxValues = 1 << 26

// ParseArch reads an arch from YAML or JSON bytes (JSON when the first
// non-space byte is '{'). Unknown keys are errors.
func ParseArch(data []byte) (*Arch, error) {
	var a Arch
	trim := bytes.TrimSpace(data)
	if len(trim) > 0 && trim[0] == '{' {
		dec := json.NewDecoder(bytes.NewReader(data))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&a); err != nil {
			return nil, err
		}
	} else {
		dec := yaml.NewDecoder(bytes.NewReader(data))
		dec.KnownFields(true)
		if err := dec.Decode(&a); err != nil {
			return nil, fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "yaml: "))
		}
	}
	if err := a.Validate(); err != nil {
		return nil, err
	}
	return &a, nil
}

// ReadArch reads and validates an arch file; errors name the file.
func ReadArch(path string) (*Arch, error) {
	data, err := weights.ReadFile(path, weights.MaxRecipeSize, "architecture file")
	if err != nil {
		return nil, err
	}
	a, err := ParseArch(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return a, nil
}

// ArchFileNames are the names FindArch looks for, in order.
var ArchFileNames = []string{"arch.yaml", "arch.yml", "arch.json"}

// FindArch returns the arch file beside a model: in the model's directory
// (or in the model path itself when it is a directory), the first of
// ArchFileNames that exists.
func FindArch(modelPath string) (string, error) {
	dir := modelPath
	if st, err := os.Stat(modelPath); err != nil {
		return "", err
	} else if !st.IsDir() {
		dir = filepath.Dir(modelPath)
	}
	for _, n := range ArchFileNames {
		p := filepath.Join(dir, n)
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("no arch file beside %s (looked for %s in %s); pass --arch", modelPath, strings.Join(ArchFileNames, ", "), dir)
}

// MarshalYAML-friendly form: layers one per line in flow style.

// YAML encodes the arch as an arch file: block style at the top, one line
// per layer.
func (a *Arch) YAML() ([]byte, error) {
	var n yaml.Node
	if err := n.Encode(a); err != nil {
		return nil, err
	}
	for i := 0; i+1 < len(n.Content); i += 2 {
		switch n.Content[i].Value {
		case "layers":
			for _, l := range n.Content[i+1].Content {
				l.Style = yaml.FlowStyle
			}
		case "classes":
			n.Content[i+1].Style = yaml.FlowStyle
		}
	}
	var buf bytes.Buffer
	buf.WriteString("# weightops architecture file: see engine.Arch for the format.\n")
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&n); err != nil {
		return nil, err
	}
	if err := enc.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// WriteArch writes the arch as YAML to path (through a temp file renamed
// into place).
func WriteArch(path string, a *Arch) error {
	b, err := a.YAML()
	if err != nil {
		return err
	}
	return weights.WriteFileAtomic(path, b)
}
