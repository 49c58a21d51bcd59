package signature

import (
	"regexp"
	"sort"
	"strings"

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

// ModuleOf strips the last dotted component of a tensor name.
func ModuleOf(tensor string) string {
	if i := strings.LastIndexByte(tensor, '.'); i > 0 {
		return tensor[:i]
	}
	return tensor
}

var (
	inputLike = regexp.MustCompile(`(?i)(^|\.)(embed\w*|wte|wpe|tok_embeddings|patch_embed|stem|input\w*)(\.|$)`)
	headLike  = regexp.MustCompile(`(?i)(^|\.)(lm_head|head|classifier|output|out|logits|fc_out|final\w*|ln_f|norm)$`)
)

// rank places a module along the network when names are all there is:
// input embeddings first, heads and final norms last, the rest in natural
// order (layers.9 before layers.10) between them.
func rank(module string) int {
	switch {
	case inputLike.MatchString(module):
		return 0
	case headLike.MatchString(module):
		return 2
	}
	return 1
}

// OrderLayers groups tensors into layers in network order.
func OrderLayers(infos []weights.TensorInfo) []Layer {
	byName := map[string]*Layer{}
	var order []string
	for _, t := range infos {
		m := ModuleOf(t.Name)
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
		ri, rj := rank(order[i]), rank(order[j])
		if ri != rj {
			return ri < rj
		}
		return weights.NaturalLess(order[i], order[j])
	})
	out := make([]Layer, len(order))
	for i, m := range order {
		out[i] = *byName[m]
	}
	return out
}
