package merge

import (
	"context"
	"fmt"
	"sort"
	"sync"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// ParamSpec describes one recipe parameter a method accepts.
type ParamSpec struct {
	// Type is "number", "bool" or "string".
	Type     string
	Required bool
	// Lo and Hi bound a number (Lo > Hi: unbounded).
	Lo, Hi float64
	// Choices lists a string's allowed values (nil: any).
	Choices []string
	// Default is shown in help and the README ("" for none).
	Default string
}

// Parameter specs the methods share.
var (
	unitParam   = ParamSpec{Type: "number", Lo: 0, Hi: 1}
	numberParam = ParamSpec{Type: "number", Lo: 1, Hi: 0}
	boolParam   = ParamSpec{Type: "bool"}
)

func required(p ParamSpec) ParamSpec { p.Required = true; return p }

func withDefault(p ParamSpec, d string) ParamSpec { p.Default = d; return p }

// BaseRole is what a method does with base_model.
type BaseRole int

// Base roles.
const (
	// BaseNone: the base, when one of the sources, is merged as one of the
	// models with its parameters (linear, karcher, passthrough).
	BaseNone BaseRole = iota
	// BaseRequired: every tensor has the base as input 0 and merges the
	// other sources against it (the task-arithmetic family, slerp).
	BaseRequired
	// BaseOptional: as BaseRequired when a base is given, else as BaseNone
	// (nuslerp, multislerp).
	BaseOptional
)

// KernelFactory builds the computation of one tensor of a merge. Inputs
// are the tensor's sources (TensorPlan): the base first when it has one,
// then the models.
type KernelFactory func(t weights.TensorInfo) (stream.Kernel, error)

// Method is a merge method: the parameters it takes, the recipe checks
// particular to it, and how it computes. Each method is registered once
// (Register, from its file's init) and everything else — recipe
// validation, the CLI's list, the README's table — reads the registry.
type Method struct {
	// Name is mergekit's name (merge_method).
	Name string
	// Summary says what the method computes, in a line.
	Summary string
	// Paper is where the method is described (for the model card).
	Paper string
	// Global are its top-level parameters; Tensor its per-model ones
	// (which may also be given at top level, as defaults, as in
	// mergekit).
	Global, Tensor map[string]ParamSpec
	// Base is what the method does with base_model.
	Base BaseRole
	// MinModels and MaxModels bound how many models besides the base a
	// tensor merges (MaxModels 0: no bound); a tensor with the base alone
	// (or one model) is copied.
	MinModels, MaxModels int
	// Single, if set, says whether a tensor with a single source is that
	// source copied (default: yes).
	Single func(tp *TensorPlan) bool
	// Check, if set, adds the method's own recipe problems.
	Check func(r *Recipe, pr *Problems)
	// CheckPlan, if set, adds problems that depend on the models' tensors
	// (a parameter that resolves, for some tensor, to a value the method
	// cannot use); it runs when the recipe is opened, before any tensor
	// data is read.
	CheckPlan func(p *Plan, pr *Problems)
	// StreamCost, if set, bounds what the kernel of a tensor streamed from
	// its files holds besides the chunk buffers (see stream.Job's
	// StreamCost); unset, the stream's default allowance, which assumes
	// task vectors cached and random masks for every input.
	StreamCost func(p *Plan, t weights.TensorInfo) int64
	// Elementwise, if set, reports whether the kernel of tensor t computes
	// each entry from the sources' entries at the same position alone (no
	// pre-pass, no state from one chunk to the next): a large tensor is
	// then merged in parts by every worker at once (see stream.Job's
	// Split).
	Elementwise func(p *Plan, t weights.TensorInfo) bool
	// Build prepares a validated, opened plan — running any model-wide
	// passes it needs first — and returns the per-tensor kernels.
	Build func(ctx context.Context, p *Plan, o stream.Options) (KernelFactory, error)
}

var registry struct {
	sync.RWMutex
	m map[string]*Method
}

// Register adds a merge method. Registering a name twice panics: it is a
// programming error, found at start-up.
func Register(m Method) {
	registry.Lock()
	defer registry.Unlock()
	if registry.m == nil {
		registry.m = map[string]*Method{}
	}
	if _, dup := registry.m[m.Name]; dup {
		panic(fmt.Sprintf("merge: method %q registered twice", m.Name))
	}
	registry.m[m.Name] = &m
}

// Lookup finds a registered method.
func Lookup(name string) (*Method, bool) {
	registry.RLock()
	defer registry.RUnlock()
	m, ok := registry.m[name]
	return m, ok
}

// Methods lists the registered methods by name.
func Methods() []*Method {
	registry.RLock()
	defer registry.RUnlock()
	out := make([]*Method, 0, len(registry.m))
	for _, m := range registry.m {
		out = append(out, m)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out
}

// MethodNames lists the registered methods' names, sorted.
func MethodNames() []string {
	var out []string
	for _, m := range Methods() {
		out = append(out, m.Name)
	}
	return out
}
