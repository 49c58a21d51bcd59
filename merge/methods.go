package merge

import (
	"sort"

	"github.com/weightops/weightops/signature"
)

type methodKind int

const (
	kindGTA methodKind = iota
	kindLinear
	kindSlerp
	kindModelStock
)

// paramSpec describes one recipe parameter a method accepts.
type paramSpec struct {
	typ      string // "number", "bool", "string"
	required bool
	lo, hi   float64 // range for numbers (lo > hi: unbounded)
	choices  []string
}

var (
	unit     = paramSpec{typ: "number", lo: 0, hi: 1}
	anyNum   = paramSpec{typ: "number", lo: 1, hi: 0}
	flag     = paramSpec{typ: "bool"}
	required = func(p paramSpec) paramSpec { p.required = true; return p }
)

// method describes a merge method: how it computes and which parameters it
// takes, at top level (global) and per model (tensor parameters, which may
// also be given at top level as defaults, as in mergekit).
type method struct {
	name      string
	kind      methodKind
	sparsify  signature.Method
	consensus bool
	normalize bool // default
	rescale   bool // default
	needsBase bool
	global    map[string]paramSpec
	tensor    map[string]paramSpec
}

func gta(name string, sp signature.Method, consensus, normalize, rescale bool) method {
	m := method{name: name, kind: kindGTA, sparsify: sp, consensus: consensus, normalize: normalize, rescale: rescale, needsBase: true,
		global: map[string]paramSpec{
			"normalize": flag, "rescale": flag, "int8_mask": flag, "lambda": anyNum,
			// weightops extensions:
			"rescale_norm": {typ: "string", choices: []string{"none", "density", "l1", "l2", "linf"}},
			"seed":         anyNum,
			"granularity":  {typ: "string", choices: []string{"per_tensor", "per_row"}},
			"trim_scope":   {typ: "string", choices: []string{"tensor", "model"}},
		},
		tensor: map[string]paramSpec{"weight": required(anyNum), "density": unit},
	}
	if sp == signature.MagnitudeOutliers {
		m.tensor["gamma"] = unit
	}
	return m
}

// methods are the supported merge methods, by mergekit name.
var methods = map[string]method{
	"task_arithmetic":  gta("task_arithmetic", signature.None, false, false, false),
	"ties":             gta("ties", signature.Magnitude, true, true, false),
	"dare_ties":        gta("dare_ties", signature.Random, true, false, true),
	"dare_linear":      gta("dare_linear", signature.Random, false, false, true),
	"breadcrumbs":      gta("breadcrumbs", signature.MagnitudeOutliers, false, false, false),
	"breadcrumbs_ties": gta("breadcrumbs_ties", signature.MagnitudeOutliers, true, false, false),
	"linear": {name: "linear", kind: kindLinear,
		global: map[string]paramSpec{"normalize": flag},
		tensor: map[string]paramSpec{"weight": required(anyNum)}},
	"slerp": {name: "slerp", kind: kindSlerp, needsBase: true,
		global: map[string]paramSpec{"t": required(unit)}},
	"model_stock": {name: "model_stock", kind: kindModelStock, needsBase: true,
		global: map[string]paramSpec{"filter_wise": flag}},
}

// MethodNames lists the supported merge methods.
func MethodNames() []string {
	var out []string
	for n := range methods {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}
