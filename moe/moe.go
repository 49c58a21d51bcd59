package moe

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"hash/fnv"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/weightops/weightops/merge"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/weights"
)

// Plan is a configuration with its models open and the output laid out.
type Plan struct {
	Config *Config
	// Tensors are the output tensors, in the dtypes they are read in.
	Tensors []weights.TensorInfo
	// Layers, Hidden are the base's block count and hidden size.
	Layers, Hidden int
	// Warnings are what the configuration does that a user may not
	// expect, one line each.
	Warnings []string
	base     weights.Checkpoint
	experts  []weights.Checkpoint
	routes   map[string]route
	dtype    weights.DType
	prompts  *promptGate
}

// route is where one output tensor comes from.
type route struct {
	ck     weights.Checkpoint
	name   string
	expert int     // -1 for base tensors
	scale  float64 // residual_scale for a down projection, else 1
	noise  float64
	router bool // a generated router: no source
}

// mlp maps the dense MLP projections to Mixtral's expert weights.
var mlp = []struct{ dense, expert string }{{"gate_proj", "w1"}, {"down_proj", "w2"}, {"up_proj", "w3"}}

// Open opens the base and the experts, checks them against each other and
// lays out the output: everything outside the MLPs from the base;
// model.layers.N.block_sparse_moe.experts.E.{w1,w2,w3} from expert E's
// gate, down and up projections; a router model.layers.N.block_sparse_moe
// .gate.weight [experts, hidden] per layer. The checkpoints are closed on
// error, else by Close.
func (c *Config) Open() (*Plan, error) {
	p := &Plan{Config: c, routes: map[string]route{}}
	pr := &merge.Problems{File: c.Path}
	add := func(format string, a ...any) { pr.List = append(pr.List, fmt.Sprintf(format, a...)) }
	fail := func() (*Plan, error) {
		p.Close()
		return nil, pr
	}
	open := func(ref string) (weights.Checkpoint, map[string]json.RawMessage) {
		ck, err := weights.Open(c.resolve(ref))
		if err != nil {
			if errors.Is(err, os.ErrNotExist) {
				add("model %q not found", ref)
			} else {
				add("model %q: %v", ref, err)
			}
			return nil, nil
		}
		cfg, err := readConfig(weights.ModelDir(c.resolve(ref)))
		if err != nil {
			add("model %q: %v", ref, err)
		}
		return ck, cfg
	}
	var baseCfg map[string]json.RawMessage
	p.base, baseCfg = open(c.BaseModel)
	cfgs := make([]map[string]json.RawMessage, len(c.Experts))
	for i, e := range c.Experts {
		var ck weights.Checkpoint
		ck, cfgs[i] = open(e.SourceModel)
		p.experts = append(p.experts, ck)
	}
	if len(pr.List) > 0 {
		return fail()
	}
	if baseCfg == nil {
		add("base model %q has no config.json, which gives the layer count and the architecture", c.BaseModel)
		return fail()
	}
	modelType := str(baseCfg["model_type"])
	if modelType != "llama" && modelType != "mistral" {
		add("base model %q is model_type %q: a Mixtral is built from llama or mistral models", c.BaseModel, modelType)
	}
	for i, cfg := range cfgs {
		if cfg != nil && str(cfg["model_type"]) != modelType {
			add("line %d: expert %q is model_type %q, the base %q: the experts must share the base's architecture", c.Experts[i].Line, c.Experts[i].SourceModel, str(cfg["model_type"]), modelType)
		}
	}
	p.Layers, p.Hidden = num(baseCfg["num_hidden_layers"]), num(baseCfg["hidden_size"])
	if p.Layers <= 0 || p.Hidden <= 0 {
		add("base model %q: config.json needs num_hidden_layers and hidden_size", c.BaseModel)
	}
	if len(pr.List) > 0 {
		return fail()
	}
	var err error
	if p.dtype, err = p.outDType(baseCfg); err != nil {
		add("%v", err)
		return fail()
	}
	for _, t := range p.base.Tensors() {
		if !strings.Contains(t.Name, ".mlp.") {
			p.Tensors = append(p.Tensors, t)
			p.routes[t.Name] = route{ck: p.base, name: t.Name, expert: -1, scale: 1}
			continue
		}
		if !isDenseProjection(t.Name) {
			add("base tensor %q: a Mixtral expert has only gate, up and down projections without biases", t.Name)
		}
	}
	for n := 0; n < p.Layers; n++ {
		for e, ck := range p.experts {
			for _, m := range mlp {
				src := fmt.Sprintf("model.layers.%d.mlp.%s.weight", n, m.dense)
				t, ok := ck.Info(src)
				if !ok {
					add("line %d: expert %q has no tensor %q", c.Experts[e].Line, c.Experts[e].SourceModel, src)
					continue
				}
				if b, ok := p.base.Info(src); ok && !weights.SameShape(b.Shape, t.Shape) {
					add("line %d: expert %q: tensor %q is %s where the base's is %s", c.Experts[e].Line, c.Experts[e].SourceModel, src, t.ShapeString(), b.ShapeString())
				}
				if !t.DType.IsFloat() {
					add("line %d: expert %q: tensor %q is %s, not floating point", c.Experts[e].Line, c.Experts[e].SourceModel, src, t.DType)
				}
				r := route{ck: ck, name: src, expert: e, scale: 1}
				if ex := c.Experts[e]; ex.ResidualScale != nil && m.dense == "down_proj" {
					r.scale = *ex.ResidualScale
				}
				if ex := c.Experts[e]; ex.NoiseScale != nil {
					r.noise = *ex.NoiseScale
				}
				if r.scale != 1 || r.noise != 0 {
					// Computed tensors are handed over in float64 and
					// rounded once to the output dtype.
					t.DType = weights.F64
				}
				t.Name = fmt.Sprintf("model.layers.%d.block_sparse_moe.experts.%d.%s.weight", n, e, m.expert)
				p.Tensors = append(p.Tensors, t)
				p.routes[t.Name] = r
			}
		}
		name := fmt.Sprintf("model.layers.%d.block_sparse_moe.gate.weight", n)
		p.Tensors = append(p.Tensors, weights.TensorInfo{Name: name, DType: weights.F32, Shape: []int64{int64(len(p.experts)), int64(p.Hidden)}})
		p.routes[name] = route{router: true, expert: -1}
	}
	if len(pr.List) > 0 {
		return fail()
	}
	if c.GateMode != "random" && c.GateMode != "uniform_random" {
		if p.preparePrompts(add); len(pr.List) > 0 {
			return fail()
		}
	}
	weights.SortNatural(p.Tensors)
	same := true
	for _, e := range c.Experts {
		same = same && filepath.Clean(e.SourceModel) == filepath.Clean(c.Experts[0].SourceModel)
	}
	if same && len(c.Experts) > 1 {
		p.Warnings = append(p.Warnings, "every expert is the same model: the MoE computes what that model does, at more cost, until it is trained")
	}
	return p, nil
}

func isDenseProjection(name string) bool {
	for _, m := range mlp {
		if strings.HasSuffix(name, ".mlp."+m.dense+".weight") {
			return true
		}
	}
	return false
}

// outDType is the output dtype: the config's dtype, else the base
// config's torch_dtype, else the base's commonest float dtype.
func (p *Plan) outDType(baseCfg map[string]json.RawMessage) (weights.DType, error) {
	name := p.Config.DType
	if name == "" {
		name = str(baseCfg["torch_dtype"])
	}
	if name == "" {
		name = str(baseCfg["dtype"])
	}
	if name != "" {
		d, err := weights.ParseFloatDType(name)
		if err != nil {
			return 0, fmt.Errorf("dtype %q: %v", name, err)
		}
		return d, nil
	}
	count := map[weights.DType]int64{}
	for _, t := range p.base.Tensors() {
		if t.DType.IsFloat() {
			n, _ := t.NumElements()
			count[t.DType] += n
		}
	}
	best, most := weights.F32, int64(-1)
	for d, n := range count {
		if n > most || (n == most && d < best) {
			best, most = d, n
		}
	}
	return best, nil
}

// Close closes the models.
func (p *Plan) Close() {
	for _, c := range append([]weights.Checkpoint{p.base}, p.experts...) {
		if c != nil {
			c.Close()
		}
	}
}

// Options control a build.
type Options struct {
	stream.Options
	// Version is recorded in the output metadata.
	Version string
}

// Build writes the MoE to out (a directory, or a .safetensors file): the
// tensors in the output dtype, and for a directory the base's config.json
// made a MixtralForCausalLM (num_local_experts, num_experts_per_tok) and
// its tokenizer files. It returns the files written.
func (p *Plan) Build(ctx context.Context, out string, o Options) ([]string, error) {
	side, err := o.ReadModelFiles(out, p.Config.resolve(p.Config.BaseModel))
	if err != nil {
		return nil, err
	}
	if sf := side.Files(); sf != nil {
		if cfg, ok := sf.Get("config.json"); ok {
			if cfg, err = mixtralConfig(cfg, len(p.experts), p.Config.ExpertsPerToken); err != nil {
				return nil, fmt.Errorf("config.json: %w", err)
			}
			sf.Set("config.json", cfg)
		}
	}
	dt := p.dtype
	o.DType = &dt
	md := stream.HFMetadata(map[string]string{
		"weightops.moe":     string(bytes.TrimSpace(p.Config.Source)),
		"weightops.version": o.Version,
	})
	tensors, path, err := o.ShardOutput(p.Tensors, out)
	if err != nil {
		return nil, err
	}
	job := &stream.Job{
		Inputs:      []weights.Checkpoint{&view{p: p}},
		Tensors:     tensors,
		Outputs:     []stream.Output{stream.CheckpointOutput(path, md, o.OutputDType, o.ShardSize)},
		PassThrough: func(weights.TensorInfo) int { return 0 },
		Phase:       "building experts",
		Options:     o.Options,
	}
	if p.prompts != nil {
		routers, err := p.routers()
		if err != nil {
			return nil, err
		}
		var bad []string
		for l, rows := range routers {
			if c := conditionNumber(rows); len(rows) > 1 && c > 5 {
				bad = append(bad, fmt.Sprint(l))
			}
		}
		if len(bad) > 0 {
			o.Warnf("%s: the routers of layers %s have a condition number above 5: the prompts may be too alike, and some experts will be underused", p.Config.Path, strings.Join(bad, ", "))
		}
	}
	files, err := job.Run(ctx)
	if err != nil {
		return nil, err
	}
	written, err := side.Write(p.base.Tensors(), stream.OutputInfos(p.Tensors, o.OutputDType))
	return append(files[0], written...), err
}

// mixtralConfig edits a dense config.json into a Mixtral one, in place.
func mixtralConfig(cfg []byte, experts, perToken int) ([]byte, error) {
	set := []struct {
		key string
		v   any
	}{
		{"architectures", []string{"MixtralForCausalLM"}},
		{"model_type", "mixtral"},
		{"num_local_experts", experts},
		{"num_experts_per_tok", perToken},
		// Mixtral's attention has no sliding window unless asked.
		{"sliding_window", nil},
	}
	var err error
	for _, s := range set {
		enc, _ := json.Marshal(s.v)
		if cfg, err = weights.SetJSONKey(cfg, s.key, enc); err != nil {
			return nil, err
		}
	}
	return cfg, nil
}

// view is the input of the build: every output tensor, read from its
// source (noise added and residual scaled where asked) or generated (the
// routers).
type view struct{ p *Plan }

func (v *view) Path() string                  { return v.p.Config.Path }
func (v *view) Metadata() map[string]string   { return nil }
func (v *view) Close() error                  { return nil }
func (v *view) Tensors() []weights.TensorInfo { return v.p.Tensors }

func (v *view) Info(name string) (weights.TensorInfo, bool) {
	i := sort.Search(len(v.p.Tensors), func(i int) bool { return !weights.NaturalLess(v.p.Tensors[i].Name, name) })
	if i < len(v.p.Tensors) && v.p.Tensors[i].Name == name {
		return v.p.Tensors[i], true
	}
	return weights.TensorInfo{}, false
}

// Route names the file and tensor an output tensor is read from.
func (v *view) Route(tensor string) (file, name string) {
	r, ok := v.p.routes[tensor]
	if !ok || r.router {
		return v.Path(), tensor
	}
	return r.ck.Path(), r.name
}

// rng is the generator of one tensor's random values: the seed and the
// tensor's name, so the values do not depend on the order tensors are
// built in.
func (v *view) rng(name string) *rand.Rand {
	h := fnv.New64a()
	h.Write([]byte(name))
	return rand.New(rand.NewPCG(v.p.Config.Seed, h.Sum64()))
}

func (v *view) ReadTensor(name string, buf []byte) (weights.Tensor, error) {
	info, ok := v.Info(name)
	r := v.p.routes[name]
	if !ok {
		return weights.Tensor{}, fmt.Errorf("%s: no tensor %q", v.Path(), name)
	}
	if r.router {
		return v.router(info, buf)
	}
	if r.scale == 1 && r.noise == 0 {
		t, err := r.ck.ReadTensor(r.name, buf)
		t.Name = name
		return t, err
	}
	t, err := r.ck.ReadTensor(r.name, nil)
	if err != nil {
		return t, err
	}
	vals, err := t.Float64s()
	if err != nil {
		return t, &weights.TensorError{File: r.ck.Path(), Tensor: r.name, Err: err}
	}
	rng := v.rng(name)
	for i := range vals {
		if r.noise != 0 {
			vals[i] += rng.NormFloat64() * r.noise
		}
		vals[i] *= r.scale
	}
	n := len(vals) * 8
	if cap(buf) < n {
		buf = make([]byte, n)
	}
	buf = buf[:n]
	if err := weights.Encode(weights.F64, vals, buf); err != nil {
		return t, err
	}
	return weights.Tensor{TensorInfo: info, Data: buf}, nil
}

// router makes a layer's router [experts, hidden] in float32: cheap_embed's
// rows, or drawn standard normal (random) or U(−1/√hidden, 1/√hidden)
// (uniform_random), as mergekit draws them.
func (v *view) router(info weights.TensorInfo, buf []byte) (weights.Tensor, error) {
	n := int(info.Shape[0] * info.Shape[1])
	vals := make([]float64, 0, n)
	if v.p.prompts != nil {
		routers, err := v.p.routers()
		if err != nil {
			return weights.Tensor{}, err
		}
		l, _ := tensorname.Layer(info.Name)
		for _, r := range routers[l] {
			vals = append(vals, r...)
		}
	} else {
		rng := v.rng(info.Name)
		s := math.Sqrt(1 / float64(v.p.Hidden))
		for range n {
			if v.p.Config.GateMode == "uniform_random" {
				vals = append(vals, (rng.Float64()*2-1)*s)
			} else {
				vals = append(vals, rng.NormFloat64())
			}
		}
	}
	if cap(buf) < 4*n {
		buf = make([]byte, 4*n)
	}
	buf = buf[:4*n]
	_ = weights.Encode(weights.F32, vals, buf)
	return weights.Tensor{TensorInfo: info, Data: buf}, nil
}

func readConfig(dir string) (map[string]json.RawMessage, error) {
	p := filepath.Join(dir, "config.json")
	if !exists(p) {
		return nil, nil
	}
	data, err := weights.ReadFile(p, weights.MaxSideFileSize, "model config")
	if err != nil {
		return nil, err
	}
	var m map[string]json.RawMessage
	if err := json.Unmarshal(data, &m); err != nil {
		return nil, fmt.Errorf("%s: %w", p, err)
	}
	return m, nil
}

func str(raw json.RawMessage) string {
	var s string
	_ = json.Unmarshal(raw, &s)
	return s
}

func num(raw json.RawMessage) int {
	var n int
	_ = json.Unmarshal(raw, &n)
	return n
}

func exists(p string) bool { _, err := os.Stat(p); return err == nil }
