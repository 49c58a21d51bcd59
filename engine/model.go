package engine

import (
	"encoding/binary"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/weightops/weightops/weights"
)

// Model is a sequential classifier ready to run: its (resolved) arch, the
// layers with their float32 parameters, and the input normalisation. The
// training package updates the same parameters in place.
type Model struct {
	// Arch is the arch the model was built from, with out, in and kernel
	// filled in from the checkpoint's shapes.
	Arch *Arch
	// Layers run in order.
	Layers []Layer
	// Unused lists checkpoint tensors no layer refers to (besides
	// num_batches_tracked), a hint that the arch may not fit the model.
	Unused []string
}

// Output says what a model's last layer produces.
type Output int

// The kinds of classifier output.
const (
	Logits Output = iota
	Probabilities
	LogProbabilities
)

// Output reports whether the model ends in softmax, log_softmax or
// neither (logits).
func (m *Model) Output() Output {
	if s, ok := m.Layers[len(m.Layers)-1].(*Softmax); ok {
		if s.Log {
			return LogProbabilities
		}
		return Probabilities
	}
	return Logits
}

// InputShape is one sample's shape as the network sees it.
func (m *Model) InputShape() []int { return m.Arch.Input.Shape }

// InputSize is the number of values in one input sample.
func (m *Model) InputSize() int { return prod(m.Arch.Input.Shape) }

// NumClasses is the size of the output.
func (m *Model) NumClasses() int { return prod(m.Layers[len(m.Layers)-1].OutShape()) }

// Params lists every parameter and running statistic, in layer order.
func (m *Model) Params() []*Param {
	var out []*Param
	for _, l := range m.Layers {
		out = append(out, l.Params()...)
	}
	return out
}

// Leaves lists every layer that is not a block, in order: the layers
// inside residual and concat blocks in place of the blocks.
func (m *Model) Leaves() []Layer {
	var out []Layer
	Walk(m.Layers, func(l Layer) {
		if _, ok := l.(Block); !ok {
			out = append(out, l)
		}
	})
	return out
}

// ClassName is the arch's name for class k, or its number.
func (m *Model) ClassName(k int) string {
	if k >= 0 && k < len(m.Arch.Classes) {
		return m.Arch.Classes[k]
	}
	return fmt.Sprint(k)
}

// Normalize turns one raw sample into network input: raw·scale, then
// (x − mean[c]) / std[c] per channel c (the first dimension of the input
// shape). dst and raw may be the same slice.
func (m *Model) Normalize(dst, raw []float32) {
	in := m.Arch.Input
	scale := in.Scale
	if scale == 0 {
		scale = 1
	}
	ch := 1
	if len(in.Shape) > 1 {
		ch = in.Shape[0]
	}
	per := len(raw) / ch
	for c := 0; c < ch; c++ {
		mean, std := 0.0, 1.0
		if len(in.Mean) == 1 {
			mean = in.Mean[0]
		} else if len(in.Mean) > 1 {
			mean = in.Mean[c]
		}
		if len(in.Std) == 1 {
			std = in.Std[0]
		} else if len(in.Std) > 1 {
			std = in.Std[c]
		}
		// float32 arithmetic, as torchvision's Normalize on a float tensor.
		s, mu, sd := float32(scale), float32(mean), float32(std)
		for i := c * per; i < (c+1)*per; i++ {
			v := raw[i]
			if s != 1 {
				v *= s
			}
			dst[i] = (v - mu) / sd
		}
	}
}

// Forward runs the network on n normalised samples x (n × InputSize
// values) and returns the n × NumClasses outputs, a slice owned by ws and
// valid until its next use.
func (m *Model) Forward(x []float32, n int, ws *Workspace) []float32 {
	if n == 0 {
		return nil
	}
	out := grow(&ws.out, n*m.NumClasses())
	RunInto(m.Layers, x, out, n, ws)
	return out
}

// tensorSource is what a model reads its parameters from.
type tensorSource interface {
	Info(name string) (weights.TensorInfo, bool)
	ReadTensor(name string, buf []byte) (weights.Tensor, error)
	Tensors() []weights.TensorInfo
}

// New builds a model with zero parameters (running variances 1) from an
// arch alone; every linear and conv2d layer must give out (and conv2d
// kernel). The training package initialises the weights.
func New(a *Arch) (*Model, error) { return build(a, nil) }

// FromCheckpoint builds a model from an arch and a checkpoint, checking
// every tensor the arch names: present, a float dtype, and the shape the
// layer's input implies. Errors name the layer and the tensor.
func FromCheckpoint(a *Arch, ck weights.Checkpoint) (*Model, error) {
	return build(a, ck)
}

// Load opens the checkpoint at modelPath (any format weights.Open reads)
// and builds the model its arch file describes; archPath "" means the
// arch.yaml/arch.yml/arch.json beside the model.
func Load(modelPath, archPath string) (*Model, error) {
	if archPath == "" {
		p, err := FindArch(modelPath)
		if err != nil {
			return nil, err
		}
		archPath = p
	}
	a, err := ReadArch(archPath)
	if err != nil {
		return nil, err
	}
	ck, err := weights.Open(modelPath)
	if err != nil {
		return nil, err
	}
	defer ck.Close()
	m, err := FromCheckpoint(a, ck)
	if err != nil {
		return nil, fmt.Errorf("%s with arch %s: %w", modelPath, archPath, err)
	}
	return m, nil
}

func build(a *Arch, src tensorSource) (*Model, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	resolved := *a
	m := &Model{Arch: &resolved}
	b := &builder{src: src, used: map[string]bool{}}
	var err error
	var cur []int
	resolved.Layers, m.Layers, cur, err = b.sequence(a.Layers, a.Input.Shape, "", "", 0)
	if err != nil {
		return nil, err
	}
	if len(cur) != 1 {
		return nil, fmt.Errorf("the last layer's output has shape %v; a classifier ends with one value per class (add flatten and linear)", cur)
	}
	if len(a.Classes) > 0 && len(a.Classes) != cur[0] {
		return nil, fmt.Errorf("classes lists %d names but the model has %d outputs", len(a.Classes), cur[0])
	}
	if src != nil {
		for _, t := range src.Tensors() {
			if !b.used[t.Name] && !strings.HasSuffix(t.Name, "num_batches_tracked") {
				m.Unused = append(m.Unused, t.Name)
			}
		}
	}
	return m, nil
}

type builder struct {
	src  tensorSource
	used map[string]bool
}

// sequence builds a list of layers on input shape in; prefix is the names
// of the blocks around it (joined onto each layer's name), outer their
// label for errors. It returns the resolved specs (names as written, sizes
// filled in), the layers and the output shape.
func (b *builder) sequence(specs []LayerSpec, in []int, prefix, outer string, depth int) ([]LayerSpec, []Layer, []int, error) {
	resolved := append([]LayerSpec(nil), specs...)
	layers := make([]Layer, 0, len(specs))
	cur := append([]int(nil), in...)
	for i := range resolved {
		spec := &resolved[i]
		label := outer + spec.Label(i)
		full := *spec
		full.Name = joinName(prefix, spec.Name)
		l, err := b.layer(&full, cur, label, depth)
		if err != nil {
			if spec.Type == "residual" || spec.Type == "concat" {
				return nil, nil, nil, err // labelled with the whole path already
			}
			return nil, nil, nil, fmt.Errorf("%s: %w", label, err)
		}
		name := spec.Name
		*spec = *l.Spec()
		spec.Name = name
		layers = append(layers, l)
		cur = l.OutShape()
		n := int64(1)
		for _, d := range cur {
			n *= int64(d)
		}
		if n > maxValues || n == 0 {
			return nil, nil, nil, fmt.Errorf("%s: output shape %v is empty or too large", label, cur)
		}
	}
	return resolved, layers, cur, nil
}

// joinName puts a layer's name under its blocks' prefix, as PyTorch's
// module paths: layer1.0 + conv1 = layer1.0.conv1.
func joinName(prefix, name string) string {
	switch {
	case prefix == "":
		return name
	case name == "":
		return prefix
	}
	return prefix + "." + name
}

// block builds a residual or concat block's paths on input shape in.
func (b *builder) block(spec *LayerSpec, bs base, label string, depth int) (Layer, error) {
	in := bs.in
	if spec.Type == "residual" {
		body, bl, bout, err := b.sequence(spec.Body, in, spec.Name, label+" body ", depth+1)
		if err != nil {
			return nil, err
		}
		short, sl, sout, err := b.sequence(spec.Shortcut, in, spec.Name, label+" shortcut ", depth+1)
		if err != nil {
			return nil, err
		}
		if !slices.Equal(bout, sout) {
			return nil, fmt.Errorf("%s: the body's output has shape %v but the shortcut's %v; they must agree to be added", label, bout, sout)
		}
		bs.spec.Body, bs.spec.Shortcut = body, short
		bs.out = bout
		return &Residual{base: bs, Body: bl, Shortcut: sl}, nil
	}
	c := &Concat{}
	var spatial []int
	ch := 0
	bs.spec.Branches = make([][]LayerSpec, len(spec.Branches))
	for i, br := range spec.Branches {
		rs, ls, out, err := b.sequence(br, in, spec.Name, fmt.Sprintf("%s branch %d ", label, i), depth+1)
		if err != nil {
			return nil, err
		}
		if len(out) < 1 || (spatial != nil && !slices.Equal(out[1:], spatial)) {
			return nil, fmt.Errorf("%s: branch %d's output has shape %v; branches must agree in all but the channels (%v)", label, i, out, spatial)
		}
		spatial = out[1:]
		ch += out[0]
		bs.spec.Branches[i] = rs
		c.Branches = append(c.Branches, ls)
		c.Sizes = append(c.Sizes, prod(out))
	}
	bs.out = append([]int{ch}, spatial...)
	c.base = bs
	return c, nil
}

// param reads (or, without a checkpoint, allocates) the tensor of a role.
// want is the expected shape with -1 for "read from the tensor".
func (b *builder) param(spec *LayerSpec, role string, want []int, fill float32) (*Param, error) {
	name := spec.TensorName(role)
	p := &Param{Name: name, Role: role, Buffer: role == "running_mean" || role == "running_var"}
	if b.src == nil {
		for _, d := range want {
			if d < 0 {
				return nil, fmt.Errorf("cannot size tensor %q without a checkpoint: give out (and kernel) in the arch", name)
			}
		}
		n := 1
		for _, d := range want {
			if n *= d; n > maxParamValues {
				return nil, fmt.Errorf("tensor %q of shape %v is too large", name, want)
			}
		}
		p.Shape = append([]int(nil), want...)
		p.Data = make([]float32, n)
		if fill != 0 {
			for i := range p.Data {
				p.Data[i] = fill
			}
		}
		return p, nil
	}
	info, ok := b.src.Info(name)
	if !ok {
		return nil, fmt.Errorf("tensor %q not found in the checkpoint", name)
	}
	shape := make([]int, len(info.Shape))
	for i, d := range info.Shape {
		shape[i] = int(d)
	}
	bad := len(shape) != len(want)
	for i := 0; !bad && i < len(want); i++ {
		bad = want[i] >= 0 && want[i] != shape[i]
	}
	if bad {
		return nil, fmt.Errorf("tensor %q has shape %s, want %s", name, info.ShapeString(), shapeString(want))
	}
	if !info.DType.IsFloat() {
		return nil, fmt.Errorf("tensor %q has dtype %s, want a float type", name, info.DType)
	}
	t, err := b.src.ReadTensor(name, nil)
	if err != nil {
		return nil, err
	}
	if p.Data, err = t.Float32s(); err != nil {
		return nil, fmt.Errorf("tensor %q: %w", name, err)
	}
	p.Shape = shape
	b.used[name] = true
	return p, nil
}

func shapeString(s []int) string {
	parts := make([]string, len(s))
	for i, d := range s {
		if d < 0 {
			parts[i] = "*"
		} else {
			parts[i] = fmt.Sprint(d)
		}
	}
	return "[" + strings.Join(parts, ", ") + "]"
}

func orNeg(v int) int {
	if v == 0 {
		return -1
	}
	return v
}

func boolOr(p *bool, def bool) bool {
	if p == nil {
		return def
	}
	return *p
}

func (b *builder) layer(spec *LayerSpec, in []int, label string, depth int) (Layer, error) {
	bs := base{spec: *spec, in: append([]int(nil), in...)}
	switch spec.Type {
	case "residual", "concat":
		return b.block(spec, bs, label, depth)
	case "linear":
		if len(in) != 1 {
			return nil, fmt.Errorf("input has shape %v; linear needs a flat input (add a flatten layer before it)", in)
		}
		if spec.In != 0 && spec.In != in[0] {
			return nil, fmt.Errorf("in is %d but the input has %d features", spec.In, in[0])
		}
		w, err := b.param(spec, "weight", []int{orNeg(spec.Out), in[0]}, 0)
		if err != nil {
			return nil, err
		}
		l := &Linear{In: in[0], Out: w.Shape[0], W: w}
		if boolOr(spec.Bias, true) {
			if l.B, err = b.param(spec, "bias", []int{l.Out}, 0); err != nil {
				return nil, err
			}
		}
		bs.spec.Out, bs.spec.In = l.Out, l.In
		bs.out = []int{l.Out}
		l.base = bs
		return l, nil
	case "conv2d":
		if len(in) != 3 {
			return nil, fmt.Errorf("input has shape %v; conv2d needs [C, H, W]", in)
		}
		if spec.In != 0 && spec.In != in[0] {
			return nil, fmt.Errorf("in is %d but the input has %d channels", spec.In, in[0])
		}
		g := max(spec.Groups, 1)
		if in[0]%g != 0 || (spec.Out != 0 && spec.Out%g != 0) {
			return nil, fmt.Errorf("groups %d does not divide the %d input channels and %d output channels", g, in[0], spec.Out)
		}
		w, err := b.param(spec, "weight", []int{orNeg(spec.Out), in[0] / g, orNeg(spec.Kernel[0]), orNeg(spec.Kernel[1])}, 0)
		if err != nil {
			return nil, err
		}
		c := &Conv2D{InC: in[0], H: in[1], W: in[2], OutC: w.Shape[0], KH: w.Shape[2], KW: w.Shape[3],
			SH: 1, SW: 1, PH: spec.Padding[0], PW: spec.Padding[1], DH: 1, DW: 1, G: g, Weight: w}
		if c.KH < 1 || c.KW < 1 || c.OutC < 1 || c.OutC%g != 0 {
			return nil, fmt.Errorf("tensor %q has shape %v (output channels must be a multiple of groups %d)", w.Name, w.Shape, g)
		}
		if !spec.Stride.IsZero() {
			c.SH, c.SW = spec.Stride[0], spec.Stride[1]
		}
		if !spec.Dilation.IsZero() {
			c.DH, c.DW = spec.Dilation[0], spec.Dilation[1]
		}
		ekh, ekw := c.DH*(c.KH-1)+1, c.DW*(c.KW-1)+1
		if c.H+2*c.PH < ekh || c.W+2*c.PW < ekw {
			return nil, fmt.Errorf("kernel %dx%d (dilated) is larger than the padded input %dx%d", ekh, ekw, c.H+2*c.PH, c.W+2*c.PW)
		}
		c.OH = (c.H+2*c.PH-ekh)/c.SH + 1
		c.OW = (c.W+2*c.PW-ekw)/c.SW + 1
		if boolOr(spec.Bias, true) {
			if c.B, err = b.param(spec, "bias", []int{c.OutC}, 0); err != nil {
				return nil, err
			}
		}
		bs.spec.Out, bs.spec.In, bs.spec.Kernel = c.OutC, c.InC, Pair{c.KH, c.KW}
		bs.out = []int{c.OutC, c.OH, c.OW}
		c.base = bs
		return c, nil
	case "batchnorm1d", "batchnorm2d":
		if spec.Type == "batchnorm2d" && len(in) != 3 {
			return nil, fmt.Errorf("input has shape %v; batchnorm2d needs [C, H, W]", in)
		}
		if spec.Type == "batchnorm1d" && len(in) > 2 {
			return nil, fmt.Errorf("input has shape %v; batchnorm1d needs [C] or [C, L]", in)
		}
		bn := &BatchNorm{C: in[0], Inner: prod(in[1:]), Eps: spec.Eps, Momentum: spec.Momentum}
		if bn.Eps == 0 {
			bn.Eps = 1e-5
		}
		if bn.Momentum == 0 {
			bn.Momentum = 0.1
		}
		var err error
		if boolOr(spec.Affine, true) {
			if bn.Weight, err = b.param(spec, "weight", []int{bn.C}, 1); err != nil {
				return nil, err
			}
			if bn.Bias, err = b.param(spec, "bias", []int{bn.C}, 0); err != nil {
				return nil, err
			}
		}
		if bn.Mean, err = b.param(spec, "running_mean", []int{bn.C}, 0); err != nil {
			return nil, err
		}
		if bn.Var, err = b.param(spec, "running_var", []int{bn.C}, 1); err != nil {
			return nil, err
		}
		for c, v := range bn.Var.Data {
			if !(v >= 0) {
				return nil, fmt.Errorf("tensor %q: running variance %v at channel %d", bn.Var.Name, v, c)
			}
		}
		if b.src != nil {
			name := spec.TensorName("num_batches_tracked")
			if info, ok := b.src.Info(name); ok && len(info.Shape) == 0 && info.DType == weights.I64 {
				if t, err := b.src.ReadTensor(name, nil); err == nil && len(t.Data) == 8 {
					bn.NumBatchesTracked = int64(binary.LittleEndian.Uint64(t.Data))
				}
			}
		}
		bs.out = bs.in
		bn.base = bs
		return bn, nil
	case "relu", "relu6", "silu", "leaky_relu", "gelu", "tanh", "sigmoid":
		a := &Activation{Kind: spec.Type, Slope: 0.01, Tanh: spec.Approximate == "tanh"}
		if spec.NegativeSlope != nil {
			a.Slope = *spec.NegativeSlope
		}
		bs.out = bs.in
		a.base = bs
		return a, nil
	case "maxpool2d", "avgpool2d":
		if len(in) != 3 {
			return nil, fmt.Errorf("input has shape %v; %s needs [C, H, W]", in, spec.Type)
		}
		p := &Pool2D{Max: spec.Type == "maxpool2d", C: in[0], H: in[1], W: in[2], KH: spec.Kernel[0], KW: spec.Kernel[1],
			SH: spec.Kernel[0], SW: spec.Kernel[1], PH: spec.Padding[0], PW: spec.Padding[1], DH: 1, DW: 1,
			CountIncludePad: boolOr(spec.CountIncludePad, true)}
		if !spec.Stride.IsZero() {
			p.SH, p.SW = spec.Stride[0], spec.Stride[1]
		}
		if !spec.Dilation.IsZero() {
			p.DH, p.DW = spec.Dilation[0], spec.Dilation[1]
		}
		ekh, ekw := p.DH*(p.KH-1)+1, p.DW*(p.KW-1)+1
		// PyTorch's limit: padding at most half the (dilated) kernel.
		if p.PH > ekh/2 || p.PW > ekw/2 {
			return nil, fmt.Errorf("padding %v is more than half the kernel %v", spec.Padding, spec.Kernel)
		}
		if p.H+2*p.PH < ekh || p.W+2*p.PW < ekw {
			return nil, fmt.Errorf("kernel %dx%d is larger than the padded input %dx%d", ekh, ekw, p.H+2*p.PH, p.W+2*p.PW)
		}
		p.OH = poolOutSize(p.H, p.KH, p.SH, p.PH, p.DH, spec.CeilMode)
		p.OW = poolOutSize(p.W, p.KW, p.SW, p.PW, p.DW, spec.CeilMode)
		bs.out = []int{p.C, p.OH, p.OW}
		p.base = bs
		return p, nil
	case "adaptive_avgpool2d", "adaptive_maxpool2d":
		if len(in) != 3 {
			return nil, fmt.Errorf("input has shape %v; %s needs [C, H, W]", in, spec.Type)
		}
		p := &AdaptivePool2D{Max: spec.Type == "adaptive_maxpool2d", C: in[0], H: in[1], W: in[2], OH: spec.Output[0], OW: spec.Output[1]}
		bs.out = []int{p.C, p.OH, p.OW}
		p.base = bs
		return p, nil
	case "flatten":
		bs.out = []int{prod(in)}
		return &Flatten{base: bs}, nil
	case "dropout":
		d := &Dropout{P: 0.5}
		if spec.P != nil {
			d.P = *spec.P
		}
		bs.out = bs.in
		d.base = bs
		return d, nil
	case "softmax", "log_softmax":
		if len(in) != 1 {
			return nil, fmt.Errorf("input has shape %v; %s works over a flat input", in, spec.Type)
		}
		bs.out = bs.in
		return &Softmax{base: bs, Log: spec.Type == "log_softmax"}, nil
	}
	return nil, fmt.Errorf("unknown layer type %q", spec.Type)
}

// Tensors returns every parameter as an F32 tensor (and each batchnorm's
// num_batches_tracked as an I64 scalar, as PyTorch's state_dict has it),
// ready for weights.WriteSafetensors.
func (m *Model) Tensors() []weights.Tensor {
	var out []weights.Tensor
	for _, l := range m.Leaves() {
		for _, p := range l.Params() {
			shape := make([]int64, len(p.Shape))
			for i, d := range p.Shape {
				shape[i] = int64(d)
			}
			data := make([]byte, 4*len(p.Data))
			_ = weights.EncodeFloat32(weights.F32, p.Data, data) // sizes agree by construction
			out = append(out, weights.Tensor{TensorInfo: weights.TensorInfo{Name: p.Name, DType: weights.F32, Shape: shape}, Data: data})
		}
		if bn, ok := l.(*BatchNorm); ok {
			out = append(out, weights.Tensor{
				TensorInfo: weights.TensorInfo{Name: bn.spec.TensorName("num_batches_tracked"), DType: weights.I64, Shape: []int64{}},
				Data:       binary.LittleEndian.AppendUint64(nil, uint64(bn.NumBatchesTracked)),
			})
		}
	}
	return out
}

// Save writes the model into dir as model.safetensors and arch.yaml,
// creating dir if needed; metadata goes into the safetensors header.
func (m *Model) Save(dir string, metadata map[string]string) error {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return err
	}
	if err := weights.WriteSafetensors(filepath.Join(dir, "model.safetensors"), m.Tensors(), metadata); err != nil {
		return err
	}
	return WriteArch(filepath.Join(dir, "arch.yaml"), m.Arch)
}

// Clone returns a deep copy of the model (parameters copied), e.g. to
// fine-tune while keeping the original.
func (m *Model) Clone() (*Model, error) {
	c, err := New(m.Arch)
	if err != nil {
		return nil, err
	}
	src, dst := m.Params(), c.Params()
	if len(src) != len(dst) {
		return nil, errors.New("clone: parameter lists differ")
	}
	for i := range src {
		copy(dst[i].Data, src[i].Data)
	}
	cl := c.Leaves()
	for i, l := range m.Leaves() {
		if bn, ok := l.(*BatchNorm); ok {
			cl[i].(*BatchNorm).NumBatchesTracked = bn.NumBatchesTracked
		}
	}
	c.Unused = append([]string(nil), m.Unused...)
	return c, nil
}
