package signature

import (
	"fmt"
	"math"
	"regexp"
	"sync"

	"github.com/weightops/weightops/weights"
)

// TensorStat holds the inner products of one tensor that Robust Weight
// Signature extraction needs, all in float64:
//
//	δ_c = θ_robust − θ_pre, δ_0 = θ_clean − θ_pre
//	RWS = δ_c − (⟨δ_c, δ_0⟩ / ⟨δ_0, δ_0⟩)·δ_0, or δ_c when δ_0 = 0
//
// so ‖RWS‖² = ‖δ_c‖² − ⟨δ_c, δ_0⟩²/‖δ_0‖² needs no extra pass. Without a
// pretrained model, δ_c = θ_robust − θ_clean and δ_0 = 0.
type TensorStat struct {
	Name     string
	Elements int64
	Theta2   float64 // ‖θ_clean‖²
	DC2      float64 // ‖δ_c‖²
	D02      float64 // ‖δ_0‖²
	Dot      float64 // ⟨δ_c, δ_0⟩
}

// Coef is the projection coefficient ⟨δ_c, δ_0⟩ / ⟨δ_0, δ_0⟩ (0 if δ_0 = 0).
func (s TensorStat) Coef() float64 {
	if s.D02 == 0 {
		return 0
	}
	return s.Dot / s.D02
}

// RWS2 is ‖RWS‖².
func (s TensorStat) RWS2() float64 {
	if s.D02 == 0 {
		return s.DC2
	}
	return math.Max(0, s.DC2-s.Dot*s.Dot/s.D02)
}

// triple reads the same tensor from pre (may be nil), clean and robust.
type triple struct{ pre, clean, robust weights.Checkpoint }

func (tr triple) check() ([]weights.TensorInfo, error) {
	var out []weights.TensorInfo
	for _, t := range tr.clean.Tensors() {
		if !t.DType.IsFloat() {
			continue
		}
		for _, o := range []weights.Checkpoint{tr.pre, tr.robust} {
			if o == nil {
				continue
			}
			info, ok := o.Info(t.Name)
			if !ok {
				return nil, &weights.TensorError{File: o.Path(), Tensor: t.Name, Err: fmt.Errorf("missing (present in %s)", tr.clean.Path())}
			}
			if !weights.SameShape(info.Shape, t.Shape) {
				return nil, &weights.TensorError{File: o.Path(), Tensor: t.Name, Err: fmt.Errorf("shape %s, %s has %s", info.ShapeString(), tr.clean.Path(), t.ShapeString())}
			}
		}
		out = append(out, t)
	}
	return out, nil
}

// chunks streams the three tensors decoded to float64, chunk by chunk.
func (tr triple) chunks(t weights.TensorInfo, fn func(pre, clean, robust []float64)) error {
	read := func(c weights.Checkpoint) (weights.Tensor, error) {
		if c == nil {
			return weights.Tensor{}, nil
		}
		return c.ReadTensor(t.Name, nil)
	}
	p, err := read(tr.pre)
	if err != nil {
		return err
	}
	c, err := read(tr.clean)
	if err != nil {
		return err
	}
	r, err := read(tr.robust)
	if err != nil {
		return err
	}
	n, _ := t.NumElements()
	const chunk = 1 << 16
	bp, bc, br := make([]float64, min(n, chunk)), make([]float64, min(n, chunk)), make([]float64, min(n, chunk))
	for s := int64(0); s < n; s += chunk {
		e := min(n, s+chunk)
		dec := func(ten weights.Tensor, dst []float64) error {
			es := int64(ten.DType.Size())
			return weights.Decode(ten.DType, ten.Data[s*es:e*es], dst[:e-s])
		}
		if tr.pre != nil {
			if err := dec(p, bp); err != nil {
				return err
			}
		}
		if err := dec(c, bc); err != nil {
			return err
		}
		if err := dec(r, br); err != nil {
			return err
		}
		var pp []float64
		if tr.pre != nil {
			pp = bp[:e-s]
		}
		fn(pp, bc[:e-s], br[:e-s])
	}
	return nil
}

// SignatureStats computes TensorStat for every floating tensor, reading
// each tensor of each model once, one tensor per worker.
func SignatureStats(pre, clean, robust weights.Checkpoint, workers int) ([]TensorStat, error) {
	tr := triple{pre, clean, robust}
	infos, err := tr.check()
	if err != nil {
		return nil, err
	}
	stats := make([]TensorStat, len(infos))
	pos := map[string]int{}
	for i, t := range infos {
		pos[t.Name] = i
	}
	var mu sync.Mutex
	err = weights.ForEach(infos, workers, func(_ int, t weights.TensorInfo) error {
		s := TensorStat{Name: t.Name}
		s.Elements, _ = t.NumElements()
		err := tr.chunks(t, func(p, c, r []float64) {
			for i := range c {
				s.Theta2 += c[i] * c[i]
				var dc, d0 float64
				if p != nil {
					dc, d0 = r[i]-p[i], c[i]-p[i]
				} else {
					dc = r[i] - c[i]
				}
				s.DC2 += dc * dc
				s.D02 += d0 * d0
				s.Dot += dc * d0
			}
		})
		if err != nil {
			return err
		}
		mu.Lock()
		stats[pos[t.Name]] = s
		mu.Unlock()
		return nil
	})
	return stats, err
}

// LayerStat sums TensorStats over a layer.
type LayerStat struct {
	Layer
	Theta2, DC2, RWS2 float64
	Elements          int64
}

// RelNorm is ‖δ_c‖/‖θ‖ over the layer: where the difference lives.
func (l LayerStat) RelNorm() float64 { return safeRatio(math.Sqrt(l.DC2), math.Sqrt(l.Theta2)) }

// RelRWS is ‖RWS‖/‖θ‖ over the layer.
func (l LayerStat) RelRWS() float64 { return safeRatio(math.Sqrt(l.RWS2), math.Sqrt(l.Theta2)) }

func safeRatio(a, b float64) float64 {
	if b == 0 {
		return 0
	}
	return a / b
}

// GroupStats sums tensor statistics into layers in network order.
func GroupStats(infos []weights.TensorInfo, stats []TensorStat) []LayerStat {
	byName := map[string]TensorStat{}
	for _, s := range stats {
		byName[s.Name] = s
	}
	var floats []weights.TensorInfo
	for _, t := range infos {
		if _, ok := byName[t.Name]; ok {
			floats = append(floats, t)
		}
	}
	var out []LayerStat
	for _, l := range OrderLayers(floats) {
		ls := LayerStat{Layer: l}
		for _, n := range l.Tensors {
			s := byName[n]
			ls.Theta2 += s.Theta2
			ls.DC2 += s.DC2
			ls.RWS2 += s.RWS2()
			ls.Elements += s.Elements
		}
		out = append(out, ls)
	}
	return out
}

// Selection chooses the layers a signature keeps.
type Selection struct {
	// Layers > 0 keeps the first Layers weight layers in network order
	// (their weights and biases).
	Layers int
	// Energy in (0, 1] keeps the shallowest weight layers holding that
	// fraction of the signature's squared norm.
	Energy float64
	// Include and Exclude filter tensor names by regular expression,
	// after Layers/Energy (alone, Include selects directly).
	Include, Exclude *regexp.Regexp
	// WithNorms keeps, with Layers/Energy, the layers without a ≥2-D weight
	// (batchnorms, layer norms) that come before the first weight layer
	// left out: the early feature statistics a corruption shifts.
	WithNorms bool
}

// Select returns the tensors kept, in network order.
func (sel Selection) Select(layers []LayerStat) []string {
	var total float64
	for _, l := range layers {
		if l.Weight {
			total += l.RWS2
		}
	}
	var out []string
	taken, acc := 0, 0.0
	limit := sel.Layers > 0 || sel.Energy > 0
	for _, l := range layers {
		if limit {
			if !l.Weight && !sel.WithNorms {
				continue
			}
			if l.Weight {
				done := (sel.Layers > 0 && taken >= sel.Layers) || (sel.Energy > 0 && total > 0 && acc >= sel.Energy*total*(1-1e-12))
				if done {
					break
				}
				taken++
				acc += l.RWS2
			}
		}
		for _, n := range l.Tensors {
			if sel.Include != nil && !sel.Include.MatchString(n) {
				continue
			}
			if sel.Exclude != nil && sel.Exclude.MatchString(n) {
				continue
			}
			out = append(out, n)
		}
	}
	return out
}

// Extract writes the signature of the selected tensors into w (values
// rounded once to float32), using the projection coefficients of stats.
func Extract(pre, clean, robust weights.Checkpoint, stats []TensorStat, selected []string, w *PatchWriter, workers int) error {
	tr := triple{pre, clean, robust}
	coef := map[string]float64{}
	for _, s := range stats {
		coef[s.Name] = s.Coef()
	}
	var infos []weights.TensorInfo
	for _, n := range selected {
		t, ok := clean.Info(n)
		if !ok {
			return &weights.TensorError{File: clean.Path(), Tensor: n, Err: weights.ErrNotFound}
		}
		infos = append(infos, t)
	}
	return weights.ForEach(infos, workers, func(_ int, t weights.TensorInfo) error {
		n, _ := t.NumElements()
		out := make([]float32, 0, n)
		a := coef[t.Name]
		err := tr.chunks(t, func(p, c, r []float64) {
			for i := range c {
				if p != nil {
					out = append(out, float32((r[i]-p[i])-a*(c[i]-p[i])))
				} else {
					out = append(out, float32(r[i]-c[i]))
				}
			}
		})
		if err != nil {
			return err
		}
		return w.Add(t.Name, t.Shape, t.DType, out)
	})
}
