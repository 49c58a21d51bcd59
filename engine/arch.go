package engine

import (
	"bytes"
	"embed"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"sort"
	"strings"

	"gopkg.in/yaml.v3"

	"github.com/weightops/weightops/weights"
)

// Arch describes a classifier: how raw samples become the network's input,
// and the layers in order, each mapped to its tensors in a checkpoint by
// PyTorch state_dict names. Layers run one after another; residual and
// concat blocks hold sub-sequences, which is enough for ResNets,
// WideResNets, VGG, MobileNet and DenseNet-style graphs. It is read from a
// YAML or JSON file, by convention arch.yaml beside the checkpoint:
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
//	  - type: residual        # y = body(x) + shortcut(x)
//	    name: layer1.0        # a prefix for the names inside
//	    body:
//	      - {type: conv2d, name: conv1, out: 16, kernel: 3, padding: 1, bias: false}
//	      - {type: batchnorm2d, name: bn1}
//	    shortcut: []          # none or empty: the identity
//	  - {type: relu}
//	  - {type: adaptive_avgpool2d, output: 1}
//	  - {type: flatten}
//	  - {type: dropout, p: 0.5}
//	  - {type: linear, name: classifier.1, out: 10}
//
// A layer's tensors are name + ".weight", ".bias", ".running_mean",
// ".running_var", where name is joined with "." onto the names of the
// blocks around it (layer1.0.conv1.weight above); the tensors key
// overrides any of them with a full name, e.g. tensors: {weight:
// encoder.w}. Layer types and their keys (defaults in parentheses):
//
//	linear       name, out, in, bias (true)               weight [out, in]
//	conv2d       name, out, kernel, stride (1), padding (0), dilation (1),
//	             groups (1), bias (true)        weight [out, in/groups, kh, kw]
//	batchnorm1d  name, eps (1e-5), momentum (0.1), affine (true)
//	batchnorm2d  same; eval mode uses running_mean and running_var
//	relu, relu6, silu, tanh, sigmoid, flatten, softmax, log_softmax
//	leaky_relu   negative_slope (0.01)
//	gelu         approximate (none | tanh)
//	maxpool2d    kernel, stride (= kernel), padding (0), dilation (1),
//	             ceil_mode (false)
//	avgpool2d    kernel, stride (= kernel), padding (0), ceil_mode (false),
//	             count_include_pad (true)
//	adaptive_avgpool2d, adaptive_maxpool2d
//	             output: the [h, w] output size, as PyTorch's
//	dropout      p (0.5); does nothing at evaluation
//	residual     name, body, shortcut: y = body(x) + shortcut(x), both
//	             layer lists; no shortcut means the identity
//	concat       name, branches: a list of layer lists, each run on x; the
//	             outputs joined along the channels (an empty branch is x)
//
// kernel, stride, padding, dilation and output take one integer or a pair
// [h, w]. out, in and kernel may be left out when a checkpoint supplies
// the tensors (they are read from its shapes); they are needed to build a
// fresh model for training. Everything is checked against the checkpoint
// when loading: a missing tensor or a shape that does not fit the layer's
// input is one error naming the layer and the tensor.
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
	// Dilation spaces a conv2d's or maxpool2d's kernel taps (1).
	Dilation Pair `yaml:"dilation,omitempty" json:"dilation,omitzero"`
	// Groups splits a conv2d's channels into independent groups (1);
	// groups = in = out is a depthwise convolution.
	Groups int `yaml:"groups,omitempty" json:"groups,omitempty"`
	// CeilMode rounds a pooling layer's output size up, as PyTorch's
	// ceil_mode.
	CeilMode bool `yaml:"ceil_mode,omitempty" json:"ceil_mode,omitempty"`
	// Output is an adaptive pooling layer's [h, w] output size.
	Output Pair `yaml:"output,omitempty" json:"output,omitzero"`
	// Body and Shortcut are a residual block's two paths (an empty
	// shortcut is the identity).
	Body     []LayerSpec `yaml:"body,omitempty" json:"body,omitempty"`
	Shortcut []LayerSpec `yaml:"shortcut,omitempty" json:"shortcut,omitempty"`
	// Branches are a concat block's paths, joined along the channels.
	Branches [][]LayerSpec `yaml:"branches,omitempty" json:"branches,omitempty"`
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
	"linear":             {"name", "tensors", "out", "in", "bias"},
	"conv2d":             {"name", "tensors", "out", "in", "kernel", "stride", "padding", "dilation", "groups", "bias"},
	"batchnorm1d":        {"name", "tensors", "eps", "momentum", "affine"},
	"batchnorm2d":        {"name", "tensors", "eps", "momentum", "affine"},
	"relu":               {},
	"relu6":              {},
	"silu":               {},
	"leaky_relu":         {"negative_slope"},
	"gelu":               {"approximate"},
	"tanh":               {},
	"sigmoid":            {},
	"maxpool2d":          {"kernel", "stride", "padding", "dilation", "ceil_mode"},
	"avgpool2d":          {"kernel", "stride", "padding", "ceil_mode", "count_include_pad"},
	"adaptive_avgpool2d": {"output"},
	"adaptive_maxpool2d": {"output"},
	"flatten":            {},
	"dropout":            {"p"},
	"softmax":            {},
	"log_softmax":        {},
	"residual":           {"name", "body", "shortcut"},
	"concat":             {"name", "branches"},
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
	add(!l.Dilation.IsZero(), "dilation")
	add(l.Groups != 0, "groups")
	add(l.CeilMode, "ceil_mode")
	add(!l.Output.IsZero(), "output")
	add(len(l.Body) > 0, "body")
	add(len(l.Shortcut) > 0, "shortcut")
	add(len(l.Branches) > 0, "branches")
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
	return validateLayers(a.Layers, "", 0)
}

// maxDepth bounds how deeply blocks may nest.
const maxDepth = 16

// validateLayers checks one list of layers; outer labels the block the
// list belongs to ("" at the top), so errors read
// `layer 4 (residual "layer1.0") body layer 2 (conv2d "conv1"): …`.
func validateLayers(list []LayerSpec, outer string, depth int) error {
	if depth > maxDepth {
		return fmt.Errorf("%s: blocks nest more than %d deep", outer, maxDepth)
	}
	for i := range list {
		l := &list[i]
		label := outer + l.Label(i)
		allowed, ok := layerKeys[l.Type]
		if !ok {
			return fmt.Errorf("%s: unknown layer type (known: %s)", label, strings.Join(LayerTypes(), ", "))
		}
		for _, k := range l.setKeys() {
			if !slices.Contains(allowed, k) {
				return fmt.Errorf("%s: key %q does not apply to %s", label, k, l.Type)
			}
		}
		for role := range l.Tensors {
			switch role {
			case "weight", "bias", "running_mean", "running_var":
			default:
				return fmt.Errorf("%s: unknown tensor role %q (weight, bias, running_mean, running_var)", label, role)
			}
		}
		if (l.Type == "linear" || l.Type == "conv2d" || strings.HasPrefix(l.Type, "batchnorm")) && l.Name == "" && len(l.Tensors) == 0 {
			return fmt.Errorf("%s: name is required (the tensors' prefix, e.g. features.0)", label)
		}
		if l.Out < 0 || l.In < 0 || l.Out > maxValues || l.In > maxValues || l.Eps < 0 || l.Momentum < 0 || l.Momentum > 1 {
			return fmt.Errorf("%s: out or in negative or too large, negative eps, or momentum outside [0, 1]", label)
		}
		if l.Groups < 0 || l.Groups > maxValues {
			return fmt.Errorf("%s: bad groups %d", label, l.Groups)
		}
		for _, p := range []struct {
			name string
			v    Pair
			min  int
		}{{"kernel", l.Kernel, 1}, {"stride", l.Stride, 1}, {"padding", l.Padding, 0}, {"dilation", l.Dilation, 1}, {"output", l.Output, 1}} {
			if !p.v.IsZero() && (p.v[0] < p.min || p.v[1] < p.min || p.v[0] > 1<<16 || p.v[1] > 1<<16) {
				return fmt.Errorf("%s: bad %s %v", label, p.name, p.v)
			}
		}
		if (l.Type == "maxpool2d" || l.Type == "avgpool2d") && l.Kernel.IsZero() {
			return fmt.Errorf("%s: kernel is required", label)
		}
		if strings.HasPrefix(l.Type, "adaptive_") && l.Output.IsZero() {
			return fmt.Errorf("%s: output is required, e.g. output: 1 or [7, 7]", label)
		}
		if l.Approximate != "" && l.Approximate != "none" && l.Approximate != "tanh" {
			return fmt.Errorf("%s: approximate must be none or tanh", label)
		}
		if l.P != nil && (*l.P < 0 || *l.P >= 1) {
			return fmt.Errorf("%s: p must be in [0, 1)", label)
		}
		switch l.Type {
		case "residual":
			if len(l.Body) == 0 {
				return fmt.Errorf("%s: body is required (the layers whose output is added to the shortcut's)", label)
			}
			if err := validateLayers(l.Body, label+" body ", depth+1); err != nil {
				return err
			}
			if err := validateLayers(l.Shortcut, label+" shortcut ", depth+1); err != nil {
				return err
			}
		case "concat":
			if len(l.Branches) < 2 {
				return fmt.Errorf("%s: branches needs at least two layer lists", label)
			}
			for b, br := range l.Branches {
				if err := validateLayers(br, fmt.Sprintf("%s branch %d ", label, b), depth+1); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// maxValues bounds the values of one sample at any layer (2^26 = 64 Mi
// values).
const maxValues = 1 << 26

// maxParamValues bounds one parameter tensor built without a checkpoint
// (2^28 = 256 Mi values, 1 GiB; VGG-16's first classifier layer has 103 Mi).
const maxParamValues = 1 << 28

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

//go:embed archs/*.yaml
var builtinArchs embed.FS

// BuiltinArchs lists the names of the architecture files weightops ships
// (resnet18, resnet34, resnet50, vgg16_bn, mobilenet_v2 as torchvision
// builds them; wrn28_10, wrn34_10 for CIFAR), sorted. Each is checked
// against PyTorch's logits in the tests.
func BuiltinArchs() []string {
	ents, _ := builtinArchs.ReadDir("archs")
	var out []string
	for _, e := range ents {
		out = append(out, strings.TrimSuffix(e.Name(), ".yaml"))
	}
	sort.Strings(out)
	return out
}

// BuiltinArch returns a shipped architecture by name, or nil and false.
func BuiltinArch(name string) ([]byte, bool) {
	if strings.ContainsAny(name, "/\\.") {
		return nil, false
	}
	b, err := builtinArchs.ReadFile("archs/" + name + ".yaml")
	return b, err == nil
}

// ReadArch reads and validates an arch file; errors name the file. A path
// that names no file but one of BuiltinArchs (e.g. resnet18) reads the
// shipped file.
func ReadArch(path string) (*Arch, error) {
	if b, ok := BuiltinArch(path); ok {
		if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
			a, err := ParseArch(b)
			if err != nil {
				return nil, fmt.Errorf("built-in arch %s: %w", path, err)
			}
			return a, nil
		}
	}
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
			flowLayers(n.Content[i+1])
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

// flowLayers puts each plain layer of a layer list on one line; blocks
// stay in block style with their own lists styled the same way.
func flowLayers(list *yaml.Node) {
	for _, l := range list.Content {
		block := false
		for j := 0; j+1 < len(l.Content); j += 2 {
			switch l.Content[j].Value {
			case "body", "shortcut":
				block = true
				flowLayers(l.Content[j+1])
			case "branches":
				block = true
				for _, br := range l.Content[j+1].Content {
					flowLayers(br)
				}
			}
		}
		if !block {
			l.Style = yaml.FlowStyle
		}
	}
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
