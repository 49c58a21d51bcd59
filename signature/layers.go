package signature

import (
	"sort"

	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/weights"
)

// Layer groups the tensors of one module (a name without its last
// component: "features.0" for "features.0.weight").
type Layer struct {
	Name    string
	Tensors []string
	// Weight reports whether the layer has a ≥2-D tensor (a linear or
	// convolution layer rather than a norm or a lone bias).
	Weight bool
}

// OrderLayers groups tensors into layers in network order, as far as names
// tell it (see tensorname.KindOf): input embeddings first, heads and final
// norms last, the rest in natural order (layers.9 before layers.10)
// between them.
func OrderLayers(infos []weights.TensorInfo) []Layer {
	byName := map[string]*Layer{}
	var order []string
	for _, t := range infos {
		m := tensorname.Module(t.Name)
		l, ok := byName[m]
		if !ok {
			l = &Layer{Name: m}
			byName[m] = l
			order = append(order, m)
		}
		l.Tensors = append(l.Tensors, t.Name)
		if len(t.Shape) >= 2 {
			l.Weight = true
		}
	}
	sort.SliceStable(order, func(i, j int) bool {
		ki, kj := tensorname.KindOf(order[i]), tensorname.KindOf(order[j])
		if ki != kj {
			return ki < kj
		}
		return weights.NaturalLess(order[i], order[j])
	})
	out := make([]Layer, len(order))
	for i, m := range order {
		out[i] = *byName[m]
	}
	return out
}
