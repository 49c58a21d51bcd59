package taskvec

import (
	"context"
	"encoding/json"
	"fmt"
	"math"
	"sort"
	"sync"

	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/tensorname"
	"github.com/weightops/weightops/weights"
)

// CompareOptions control Compare.
type CompareOptions struct {
	stream.Options
	// Density is the top-k fraction of the masks compared (as TIES trims
	// each task vector to its top density by magnitude); default 0.1.
	Density float64
}

// Pair names two of the compared models by index.
type Pair struct {
	A    int    `json:"a"`
	B    int    `json:"b"`
	Name string `json:"name"`
}

// Ratio is a figure that may be undefined (a cosine with an unchanged
// model, an agreement over no entries): NaN in Go, null in JSON.
type Ratio float64

// MarshalJSON writes NaN as null.
func (r Ratio) MarshalJSON() ([]byte, error) {
	if math.IsNaN(float64(r)) || math.IsInf(float64(r), 0) {
		return []byte("null"), nil
	}
	return json.Marshal(float64(r))
}

// Defined reports whether the figure has a value.
func (r Ratio) Defined() bool { return !math.IsNaN(float64(r)) }

// DeltaStats describes the task vectors τ_i = θ_i − θ_base over a set of
// tensors: one tensor, one layer, or the whole model. Per-model slices
// follow Comparison.Models, per-pair slices Comparison.Pairs.
type DeltaStats struct {
	Name   string `json:"name"`
	Params int64  `json:"params"`
	// BaseNorm is ‖θ_base‖.
	BaseNorm float64 `json:"base_norm"`
	// RelDelta is ‖τ_i‖ / ‖θ_base‖: where the difference lives.
	RelDelta []Ratio `json:"rel_delta"`
	// Unchanged is the fraction of entries with τ_i exactly 0.
	Unchanged []Ratio `json:"unchanged"`
	// Cosine is ⟨τ_a, τ_b⟩ / (‖τ_a‖·‖τ_b‖).
	Cosine []Ratio `json:"cosine"`
	// SignAgreement is the fraction of the entries both τ_a and τ_b change
	// where they change in the same direction.
	SignAgreement []Ratio `json:"sign_agreement"`
	// MaskOverlap is |top_k(τ_a) ∩ top_k(τ_b)| / k: the share of the
	// entries a magnitude trim at Density keeps (each tensor ranked on its
	// own, ties by index, as TIES trims) that both trims keep, non-zero.
	MaskOverlap []Ratio `json:"mask_overlap"`
	// MaskSignConflict is the fraction of that overlap where the signs
	// disagree: the entries TIES's sign election will zero in one model.
	MaskSignConflict []Ratio `json:"mask_sign_conflict"`
	// AllAgree is, over the entries at least two models change, the
	// fraction where every change has the same sign (NaN for one model).
	AllAgree Ratio `json:"all_sign_agreement"`

	sums deltaSums
}

// SkippedTensor is a tensor left out of the comparison, and why.
type SkippedTensor struct {
	Tensor string `json:"tensor"`
	Reason string `json:"reason"`
}

// Comparison is what Compare measured.
type Comparison struct {
	Base    string   `json:"base"`
	Models  []string `json:"models"`
	Density float64  `json:"density"`
	Pairs   []Pair   `json:"pairs"`
	// Total covers every compared tensor; Layers groups them by numbered
	// block (or module outside the blocks) in network order; Tensors are
	// each compared tensor, in network order.
	Total   DeltaStats      `json:"total"`
	Layers  []DeltaStats    `json:"layers"`
	Tensors []DeltaStats    `json:"tensors"`
	Skipped []SkippedTensor `json:"skipped"`
}

// deltaSums are the exact sums the ratios come from; they add across
// tensors.
type deltaSums struct {
	n, keep           int64
	base2             float64
	d2                []float64 // per model Σ τ²
	zero              []int64   // per model
	dot               []float64 // per pair
	both, same        []int64   // per pair: both change / same sign
	inter, interSame  []int64   // per pair: in both masks / same sign there
	multi, multiAgree int64
}

func newSums(models, pairs int) deltaSums {
	return deltaSums{d2: make([]float64, models), zero: make([]int64, models), dot: make([]float64, pairs),
		both: make([]int64, pairs), same: make([]int64, pairs), inter: make([]int64, pairs), interSame: make([]int64, pairs)}
}

func (s *deltaSums) add(o deltaSums) {
	s.n += o.n
	s.keep += o.keep
	s.base2 += o.base2
	s.multi += o.multi
	s.multiAgree += o.multiAgree
	for i := range s.d2 {
		s.d2[i] += o.d2[i]
		s.zero[i] += o.zero[i]
	}
	for p := range s.dot {
		s.dot[p] += o.dot[p]
		s.both[p] += o.both[p]
		s.same[p] += o.same[p]
		s.inter[p] += o.inter[p]
		s.interSame[p] += o.interSame[p]
	}
}

func ratio(a, b float64) Ratio {
	if b == 0 {
		return Ratio(math.NaN())
	}
	return Ratio(a / b)
}

// stats turns sums into the reported figures.
func (s deltaSums) stats(name string, pairs []Pair) DeltaStats {
	d := DeltaStats{Name: name, Params: s.n, BaseNorm: math.Sqrt(s.base2), sums: s,
		Cosine: []Ratio{}, SignAgreement: []Ratio{}, MaskOverlap: []Ratio{}, MaskSignConflict: []Ratio{}}
	for i := range s.d2 {
		d.RelDelta = append(d.RelDelta, ratio(math.Sqrt(s.d2[i]), math.Sqrt(s.base2)))
		d.Unchanged = append(d.Unchanged, ratio(float64(s.zero[i]), float64(s.n)))
	}
	for p, pr := range pairs {
		d.Cosine = append(d.Cosine, ratio(s.dot[p], math.Sqrt(s.d2[pr.A])*math.Sqrt(s.d2[pr.B])))
		d.SignAgreement = append(d.SignAgreement, ratio(float64(s.same[p]), float64(s.both[p])))
		d.MaskOverlap = append(d.MaskOverlap, ratio(float64(s.inter[p]), float64(s.keep)))
		d.MaskSignConflict = append(d.MaskSignConflict, ratio(float64(s.inter[p]-s.interSame[p]), float64(s.inter[p])))
	}
	d.AllAgree = Ratio(math.NaN())
	if len(s.d2) > 1 {
		d.AllAgree = ratio(float64(s.multiAgree), float64(s.multi))
	}
	return d
}

// Compare measures the task vectors of models against base, streamed
// tensor by tensor: where each model differs from the base (per-layer
// relative norms), how alike the task vectors are (cosines), and how much
// sparsifying merges will conflict (sign agreement, overlap of the top-k
// masks and the sign conflicts inside it). Floating tensors of the base
// that every model has with the same shape are compared; the rest are
// listed in Skipped. Sums run in float64 in index order per tensor and in
// name order across tensors, so the figures do not depend on the worker
// count.
func Compare(ctx context.Context, base weights.Checkpoint, models []weights.Checkpoint, o CompareOptions) (*Comparison, error) {
	if len(models) == 0 {
		return nil, fmt.Errorf("compare: no models to compare with the base")
	}
	if o.Density == 0 {
		o.Density = 0.1
	}
	if !(o.Density > 0 && o.Density <= 1) {
		return nil, fmt.Errorf("compare: density %g: want a fraction in (0, 1]", o.Density)
	}
	c := &Comparison{Base: base.Path(), Density: o.Density, Skipped: []SkippedTensor{}, Layers: []DeltaStats{}, Tensors: []DeltaStats{}}
	for i, m := range models {
		c.Models = append(c.Models, m.Path())
		for j := i + 1; j < len(models); j++ {
			c.Pairs = append(c.Pairs, Pair{A: i, B: j})
		}
	}
	for p := range c.Pairs {
		c.Pairs[p].Name = fmt.Sprintf("%d·%d", c.Pairs[p].A, c.Pairs[p].B)
	}
	if c.Pairs == nil {
		c.Pairs = []Pair{}
	}
	var tensors []weights.TensorInfo
	for _, t := range base.Tensors() {
		if why := comparable(t, models); why != "" {
			c.Skipped = append(c.Skipped, SkippedTensor{Tensor: t.Name, Reason: why})
			continue
		}
		tensors = append(tensors, t)
	}
	for i, m := range models {
		for _, t := range m.Tensors() {
			if _, ok := base.Info(t.Name); !ok {
				c.Skipped = append(c.Skipped, SkippedTensor{Tensor: t.Name, Reason: fmt.Sprintf("only in model %d, not in the base", i)})
			}
		}
	}
	sort.SliceStable(c.Skipped, func(i, j int) bool { return weights.NaturalLess(c.Skipped[i].Tensor, c.Skipped[j].Tensor) })
	if len(tensors) == 0 {
		return nil, fmt.Errorf("compare: %s: no floating tensor in common with every model", base.Path())
	}
	sums := make(map[string]deltaSums, len(tensors))
	var mu sync.Mutex
	job := &stream.Job{
		Inputs:      append([]weights.Checkpoint{base}, models...),
		Tensors:     tensors,
		PassThrough: func(weights.TensorInfo) int { return -1 },
		Kernel: func(t weights.TensorInfo) (stream.Kernel, error) {
			n, _ := t.NumElements()
			k := newCompareKernel(len(models), c.Pairs, n, o.Density)
			return stream.Passes(&compareKernel{compareState: k, done: func(s deltaSums) {
				mu.Lock()
				sums[t.Name] = s
				mu.Unlock()
			}}), nil
		},
		// The raw inputs and a chunk of float64 per input.
		Cost: func(t weights.TensorInfo) int64 {
			b, _ := t.ByteSize()
			return int64(len(models)+1)*b + int64(len(models)+1)*8*stream.ChunkElems
		},
		// Streamed, a tensor holds chunks only: per model its histograms
		// (coarse and fine, 1 MiB) and a chunk of τ, its float64 copy and
		// its mask, so a large tensor is never read whole.
		StreamCost: func(weights.TensorInfo) int64 {
			return int64(len(models)) * (2<<20 + 13*stream.ChunkElems)
		},
		Phase:   "comparing",
		Options: o.Options,
	}
	if _, err := job.Run(ctx); err != nil {
		return nil, err
	}
	// Network order; sums added in that fixed order.
	sort.SliceStable(tensors, func(i, j int) bool { return networkLess(tensors[i].Name, tensors[j].Name) })
	total := newSums(len(models), len(c.Pairs))
	var groups []string
	byGroup := map[string]*deltaSums{}
	for _, t := range tensors {
		s := sums[t.Name]
		c.Tensors = append(c.Tensors, s.stats(t.Name, c.Pairs))
		total.add(s)
		g := tensorname.Group(t.Name)
		gs, ok := byGroup[g]
		if !ok {
			ns := newSums(len(models), len(c.Pairs))
			gs = &ns
			byGroup[g] = gs
			groups = append(groups, g)
		}
		gs.add(s)
	}
	sort.SliceStable(groups, func(i, j int) bool { return networkLess(groups[i], groups[j]) })
	for _, g := range groups {
		c.Layers = append(c.Layers, byGroup[g].stats(g, c.Pairs))
	}
	c.Total = total.stats("total", c.Pairs)
	return c, nil
}

// networkLess orders names as signature layers are: input embeddings
// first, heads and final norms last, natural order between.
func networkLess(a, b string) bool {
	ka, kb := tensorname.KindOf(tensorname.Module(a)), tensorname.KindOf(tensorname.Module(b))
	if ka != kb {
		return ka < kb
	}
	return weights.NaturalLess(a, b)
}

// comparable says why a base tensor cannot be compared ("" when it can).
func comparable(t weights.TensorInfo, models []weights.Checkpoint) string {
	if !t.DType.IsFloat() {
		return "not floating point"
	}
	if n, err := t.NumElements(); err != nil || n == 0 {
		return "empty"
	}
	for i, m := range models {
		mt, ok := m.Info(t.Name)
		switch {
		case !ok:
			return fmt.Sprintf("absent from model %d", i)
		case !weights.SameShape(mt.Shape, t.Shape):
			return fmt.Sprintf("shape %s in model %d, %s in the base", mt.ShapeString(), i, t.ShapeString())
		case !mt.DType.IsFloat():
			return fmt.Sprintf("not floating point in model %d", i)
		}
	}
	return ""
}

// compareState is one tensor's accumulators.
type compareState struct {
	pairs []Pair
	sums  deltaSums
	hist  []*sparsify.Histogram
	cnt   []sparsify.Counter
	keep  int64
	tau   [][]float32 // per model, one chunk
	dt    [][]float64 // per model, one chunk
	kept  [][]bool    // per model, one chunk
}

func newCompareKernel(models int, pairs []Pair, n int64, density float64) *compareState {
	_, keep := sparsify.Spec{Method: sparsify.Magnitude, Density: density}.Counts(n)
	s := &compareState{pairs: pairs, sums: newSums(models, len(pairs)), keep: keep, tau: make([][]float32, models)}
	s.sums.n, s.sums.keep = n, keep
	for range models {
		s.hist = append(s.hist, sparsify.NewHistogram(keep))
	}
	return s
}

// compareKernel runs three passes: sums and coarse histograms, fine
// histograms (when the cut needs them), then the masks.
type compareKernel struct {
	*compareState
	pass int
	pos  int64 // entries seen by Compute
	done func(deltaSums)
}

const (
	passSums = iota
	passFine
)

func (k *compareKernel) NextPass() (int, bool) {
	switch k.pass {
	case 0:
		return passSums, true
	case 1:
		return passFine, true
	}
	return 0, false
}

// taus fills the per-model chunk of τ in float32 (as merges rank them).
func (k *compareKernel) taus(in [][]float64) {
	n := len(in[0])
	for i := range k.tau {
		if cap(k.tau[i]) < n {
			k.tau[i] = make([]float32, n)
		}
		t, m, b := k.tau[i][:n], in[i+1], in[0]
		for e := range t {
			t[e] = float32(m[e] - b[e])
		}
		k.tau[i] = t
	}
}

func (k *compareKernel) Observe(p int, in [][]float64) error {
	if p == passFine {
		k.taus(in)
		for i, h := range k.hist {
			h.AddFineValues(k.tau[i])
		}
		return nil
	}
	b := in[0]
	n := len(b)
	s := &k.sums
	var base2 float64
	for _, x := range b {
		base2 += x * x
	}
	s.base2 += base2
	models := len(k.tau)
	// τ of each model once, in float64 for the sums and in float32 for
	// the ranks.
	if len(k.dt) < models {
		k.dt = make([][]float64, models)
	}
	for i := range models {
		if cap(k.dt[i]) < n {
			k.dt[i] = make([]float64, n)
		}
		if cap(k.tau[i]) < n {
			k.tau[i] = make([]float32, n)
		}
		dt, tau, m := k.dt[i][:n], k.tau[i][:n], in[i+1]
		var d2 float64
		var zero int64
		for e := range dt {
			d := m[e] - b[e]
			dt[e], tau[e] = d, float32(d)
			d2 += d * d
			if d == 0 {
				zero++
			}
		}
		k.dt[i], k.tau[i] = dt, tau
		s.d2[i] += d2
		s.zero[i] += zero
		k.hist[i].AddCoarseValues(tau)
	}
	for p, pr := range k.pairs {
		da, db := k.dt[pr.A][:n], k.dt[pr.B][:n]
		var dot float64
		var both, same int64
		for e, a := range da {
			c := db[e]
			dot += a * c
			if a != 0 && c != 0 {
				both++
				if (a > 0) == (c > 0) {
					same++
				}
			}
		}
		s.dot[p] += dot
		s.both[p] += both
		s.same[p] += same
	}
	switch {
	case models == 2:
		// Two models: the entries both change are those at least two do.
		s.multi, s.multiAgree = s.both[0], s.same[0]
	case models > 2:
		for e := range n {
			pos, neg := 0, 0
			for i := range models {
				if d := k.dt[i][e]; d > 0 {
					pos++
				} else if d < 0 {
					neg++
				}
			}
			if pos+neg >= 2 {
				s.multi++
				if pos == 0 || neg == 0 {
					s.multiAgree++
				}
			}
		}
	}
	return nil
}

func (k *compareKernel) EndPass(p int) error {
	if p == passSums {
		need := false
		for _, h := range k.hist {
			if h.EndCoarse() {
				need = true
			}
		}
		k.pass = 1
		if !need {
			k.pass = 2
		}
		return nil
	}
	k.pass = 2
	return nil
}

func (k *compareKernel) Compute(in, _ [][]float64) error {
	if k.cnt == nil {
		for _, h := range k.hist {
			k.cnt = append(k.cnt, sparsify.Counter{Cut: h.Cuts()[0]})
		}
	}
	k.taus(in)
	n := len(in[0])
	models := len(k.tau)
	if len(k.kept) < models {
		k.kept = make([][]bool, models)
	}
	for i := range models {
		if cap(k.kept[i]) < n {
			k.kept[i] = make([]bool, n)
		}
		kept, tau, cnt := k.kept[i][:n], k.tau[i], &k.cnt[i]
		for e, v := range tau {
			// A zero kept because the trim keeps more than the entries
			// that change takes no part in a merge.
			kept[e] = cnt.In(sparsify.MagBits(v)) && v != 0
		}
		k.kept[i] = kept
	}
	for p, pr := range k.pairs {
		ka, kb, ta, tb := k.kept[pr.A], k.kept[pr.B], k.tau[pr.A], k.tau[pr.B]
		var inter, same int64
		for e := range n {
			if ka[e] && kb[e] {
				inter++
				if (ta[e] > 0) == (tb[e] > 0) {
					same++
				}
			}
		}
		k.sums.inter[p] += inter
		k.sums.interSame[p] += same
	}
	// Chunks arrive in index order; the last one completes the tensor.
	if k.pos += int64(n); k.pos == k.sums.n {
		k.done(k.sums)
	}
	return nil
}
