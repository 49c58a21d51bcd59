package merge

import (
	"fmt"
	"math"
	"strconv"
	"strings"

	suggestpkg "github.com/weightops/weightops/internal/suggest"

	"gopkg.in/yaml.v3"
)

// Param is a recipe parameter value in mergekit's forms: a scalar (number,
// bool or string), a gradient (a list of numbers interpolated across the
// layers), or a list of {filter, value} entries matched on tensor names
// (the first entry whose filter is a substring of the name wins; an entry
// without filter matches everything).
type Param struct {
	Num     *float64
	Bool    *bool
	Str     *string
	Grad    []float64
	Filters []FilteredParam
	// Steps is a list of non-numeric scalars: the one at ⌊t·(n−1)⌋ holds
	// (mergekit's gradient of strings or booleans).
	Steps []Param
	Line  int
}

// FilteredParam is one entry of a filter list.
type FilteredParam struct {
	Filter string // "" or "*" matches every tensor
	Value  Param
}

// Number makes a numeric Param.
func Number(v float64) Param { return Param{Num: &v} }

func decodeParam(n *yaml.Node) (Param, error) {
	p := Param{Line: n.Line}
	switch n.Kind {
	case yaml.ScalarNode:
		switch n.Tag {
		case "!!int", "!!float":
			var f float64
			if err := n.Decode(&f); err != nil {
				return p, err
			}
			if math.IsNaN(f) || math.IsInf(f, 0) {
				return p, fmt.Errorf("line %d: %s is not a finite number", n.Line, n.Value)
			}
			p.Num = &f
		case "!!bool":
			var b bool
			if err := n.Decode(&b); err != nil {
				return p, err
			}
			p.Bool = &b
		default:
			s := n.Value
			p.Str = &s
		}
	case yaml.SequenceNode:
		allNum := len(n.Content) > 0
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode || (c.Tag != "!!int" && c.Tag != "!!float") {
				allNum = false
			}
		}
		if allNum {
			for _, c := range n.Content {
				var f float64
				if err := c.Decode(&f); err != nil {
					return p, err
				}
				if math.IsNaN(f) || math.IsInf(f, 0) {
					return p, fmt.Errorf("line %d: %s is not a finite number", c.Line, c.Value)
				}
				p.Grad = append(p.Grad, f)
			}
			return p, nil
		}
		allScalar := len(n.Content) > 0
		for _, c := range n.Content {
			if c.Kind != yaml.ScalarNode {
				allScalar = false
			}
		}
		if allScalar {
			for _, c := range n.Content {
				v, err := decodeParam(c)
				if err != nil {
					return p, err
				}
				p.Steps = append(p.Steps, v)
			}
			return p, nil
		}
		for _, c := range n.Content {
			if c.Kind != yaml.MappingNode {
				return p, fmt.Errorf("line %d: a parameter list holds either numbers (a gradient) or {filter, value} entries", c.Line)
			}
			var fp FilteredParam
			var hasValue bool
			for i := 0; i+1 < len(c.Content); i += 2 {
				k, v := c.Content[i], c.Content[i+1]
				switch k.Value {
				case "filter":
					fp.Filter = v.Value
				case "value":
					val, err := decodeParam(v)
					if err != nil {
						return p, err
					}
					fp.Value, hasValue = val, true
				default:
					return p, fmt.Errorf("line %d: unknown key %q in a filter entry%s", k.Line, k.Value, suggest(k.Value, []string{"filter", "value"}))
				}
			}
			if !hasValue {
				return p, fmt.Errorf("line %d: filter entry without a value", c.Line)
			}
			p.Filters = append(p.Filters, fp)
		}
	default:
		return p, fmt.Errorf("line %d: unsupported parameter value", n.Line)
	}
	return p, nil
}

// Eval resolves the parameter for one tensor at layer position t ∈ [0, 1]
// exactly as mergekit does: gradients interpolate linearly between their
// evenly spaced points; filters pick the first match. It reports false
// when no filter matches.
func (p Param) Eval(tensor string, t float64) (Param, bool) {
	switch {
	case p.Grad != nil:
		if len(p.Grad) == 1 {
			return Number(p.Grad[0]), true
		}
		scaled := t * float64(len(p.Grad)-1)
		i0 := int(math.Floor(scaled))
		i1 := min(len(p.Grad)-1, i0+1)
		frac := scaled - float64(i0)
		return Number((1-frac)*p.Grad[i0] + frac*p.Grad[i1]), true
	case p.Steps != nil:
		return p.Steps[int(t*float64(len(p.Steps)-1))], true
	case p.Filters != nil:
		for _, f := range p.Filters {
			if f.Filter == "" || f.Filter == "*" || strings.Contains(tensor, f.Filter) {
				return f.Value.Eval(tensor, t)
			}
		}
		return Param{}, false
	}
	return p, true
}

// Float resolves a numeric parameter, or def when unset or unmatched.
func (p *Param) Float(tensor string, t, def float64) float64 {
	if p == nil {
		return def
	}
	v, ok := p.Eval(tensor, t)
	if !ok || v.Num == nil {
		if ok && v.Bool != nil {
			if *v.Bool {
				return 1
			}
			return 0
		}
		return def
	}
	return *v.Num
}

// leaves calls fn on every scalar a parameter can resolve to.
func (p Param) leaves(fn func(Param)) {
	switch {
	case p.Grad != nil:
		for _, g := range p.Grad {
			fn(Number(g))
		}
	case p.Filters != nil:
		for _, f := range p.Filters {
			f.Value.leaves(fn)
		}
	case p.Steps != nil:
		for _, v := range p.Steps {
			fn(v)
		}
	default:
		fn(p)
	}
}

// suggest is suggest.Hint.
func suggest(word string, known []string) string { return suggestpkg.Hint(word, known) }

// String writes the parameter as a recipe would: 0.5, true, per_row,
// [0, 0.5, 1], or filter: value pairs.
func (p Param) String() string {
	switch {
	case p.Num != nil:
		return strconv.FormatFloat(*p.Num, 'g', -1, 64)
	case p.Bool != nil:
		return strconv.FormatBool(*p.Bool)
	case p.Str != nil:
		return *p.Str
	case p.Grad != nil:
		s := make([]string, len(p.Grad))
		for i, g := range p.Grad {
			s[i] = strconv.FormatFloat(g, 'g', -1, 64)
		}
		return "[" + strings.Join(s, ", ") + "]"
	case p.Steps != nil:
		s := make([]string, len(p.Steps))
		for i, v := range p.Steps {
			s[i] = v.String()
		}
		return "[" + strings.Join(s, ", ") + "]"
	}
	s := make([]string, len(p.Filters))
	for i, f := range p.Filters {
		filter := f.Filter
		if filter == "" {
			filter = "*"
		}
		s[i] = filter + ": " + f.Value.String()
	}
	return "{" + strings.Join(s, "; ") + "}"
}
