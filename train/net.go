package train

import (
	"errors"
	"fmt"
	"math"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"

	"github.com/weightops/weightops/internal/parallel"
)

// net runs an engine.Model forward and backward over a batch, keeping what
// the backward pass needs. Every reduction over the batch either happens
// inside one gonum matrix product (whose summation order depends only on
// the sizes) or in a loop whose order is fixed, with parallel work split
// only over outputs, so a run is bit-for-bit reproducible whatever the
// number of cores.
type net struct {
	m      *engine.Model
	top    *seq // the layers without a final softmax/log_softmax
	params []*engine.Param
	index  map[*engine.Param]int
	grads  [][]float32 // per params index; nil for running statistics
	ws     *engine.Workspace
	bn     map[*engine.BatchNorm]*bnCache
	masks  map[engine.Layer][]float32
	col    []float32
	dcol   []float32
	dyp    []float32
	// train records the last forward pass's mode: batchnorm's backward
	// pass then uses batch statistics (true) or the running ones.
	train bool
	// only, when set, limits the backward pass to this parameter's
	// gradient: layers before it are skipped, others' gradients left out.
	only *engine.Param
}

// seq is one sequence of layers — the model's, or a path of a residual
// or concat block — with what its backward pass needs.
type seq struct {
	layers []engine.Layer
	acts   [][]float32 // acts[i] is layer i's input; acts[len(layers)] the output
	dy     [2][]float32
	tmp    []float32 // a second path's input gradient
	gather []float32 // a concat branch's share of the output gradient
	paths  map[engine.Layer][]*seq
}

func newSeq(layers []engine.Layer) *seq {
	s := &seq{layers: layers, acts: make([][]float32, len(layers)+1), paths: map[engine.Layer][]*seq{}}
	for _, l := range layers {
		if b, ok := l.(engine.Block); ok {
			for _, p := range b.Paths() {
				s.paths[l] = append(s.paths[l], newSeq(p))
			}
		}
	}
	return s
}

type bnCache struct {
	mean, invstd []float64
}

// newNet prepares a model for training; a softmax or log_softmax is only
// allowed as the last layer (the loss works on the logits before it).
func newNet(m *engine.Model) (*net, error) {
	t := &net{m: m, ws: &engine.Workspace{}, index: map[*engine.Param]int{}, bn: map[*engine.BatchNorm]*bnCache{}, masks: map[engine.Layer][]float32{}}
	layers := m.Layers
	if _, ok := m.Layers[len(m.Layers)-1].(*engine.Softmax); ok {
		layers = m.Layers[:len(m.Layers)-1]
	}
	if len(layers) == 0 {
		return nil, errors.New("the model has no layer to train")
	}
	var bad engine.Layer
	engine.Walk(layers, func(l engine.Layer) {
		if _, ok := l.(*engine.Softmax); ok && bad == nil {
			bad = l
		}
	})
	if bad != nil {
		return nil, fmt.Errorf("%s: softmax is only supported as the last layer", bad.Spec().Type)
	}
	t.top = newSeq(layers)
	t.params = m.Params()
	t.grads = make([][]float32, len(t.params))
	for i, p := range t.params {
		t.index[p] = i
		if !p.Buffer {
			t.grads[i] = make([]float32, len(p.Data))
		}
	}
	return t, nil
}

func grow(b []float32, n int) []float32 {
	if cap(b) < n {
		return make([]float32, n)
	}
	return b[:n]
}

func size(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// forward computes the logits of n normalised samples x. With train,
// batchnorm uses the batch's statistics (updating the running ones when
// updateStats) and dropout draws masks from rng (none when rng is nil).
func (t *net) forward(x []float32, n int, train, updateStats bool, rng *dataset.Rand) []float32 {
	t.train = train
	return t.forwardSeq(t.top, x, n, train, updateStats, rng)
}

// forwardSeq runs one sequence and returns its output (x itself for an
// empty sequence).
func (t *net) forwardSeq(s *seq, x []float32, n int, train, updateStats bool, rng *dataset.Rand) []float32 {
	s.acts[0] = x
	for i, l := range s.layers {
		out := grow(s.acts[i+1], n*size(l.OutShape()))
		s.acts[i+1] = out
		in := s.acts[i]
		switch l := l.(type) {
		case *engine.Residual:
			p := s.paths[l]
			body := t.forwardSeq(p[0], in, n, train, updateStats, rng)
			short := t.forwardSeq(p[1], in, n, train, updateStats, rng)
			// body + shortcut, as engine.Residual adds them.
			parallel.Ranges(len(out), 1<<14, func(lo, hi int) {
				for j := lo; j < hi; j++ {
					out[j] = body[j] + short[j]
				}
			})
			continue
		case *engine.Concat:
			per, off := size(l.OutShape()), 0
			for b, p := range s.paths[l] {
				o, sz := t.forwardSeq(p, in, n, train, updateStats, rng), l.Sizes[b]
				for j := 0; j < n; j++ {
					copy(out[j*per+off:j*per+off+sz], o[j*sz:(j+1)*sz])
				}
				off += sz
			}
			continue
		case *engine.BatchNorm:
			if train {
				t.bnForward(l, in, out, n, updateStats)
				continue
			}
		case *engine.Dropout:
			if train && rng != nil && l.P > 0 {
				t.dropoutForward(l, in, out, n, rng)
				continue
			}
			delete(t.masks, l)
		}
		l.Forward(in, out, n, t.ws)
	}
	return s.acts[len(s.layers)]
}

func (t *net) bnForward(l *engine.BatchNorm, x, y []float32, n int, updateStats bool) {
	c := t.bn[l]
	if c == nil {
		c = &bnCache{mean: make([]float64, l.C), invstd: make([]float64, l.C)}
		t.bn[l] = c
	}
	per := l.C * l.Inner
	cnt := float64(n * l.Inner)
	parallel.Ranges(l.C, 1, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			var s float64
			for s0 := 0; s0 < n; s0++ {
				for _, v := range x[s0*per+ch*l.Inner : s0*per+(ch+1)*l.Inner] {
					s += float64(v)
				}
			}
			mean := s / cnt
			var ss float64
			for s0 := 0; s0 < n; s0++ {
				for _, v := range x[s0*per+ch*l.Inner : s0*per+(ch+1)*l.Inner] {
					d := float64(v) - mean
					ss += d * d
				}
			}
			v := ss / cnt
			inv := 1 / math.Sqrt(v+l.Eps)
			c.mean[ch], c.invstd[ch] = mean, inv
			g, b := 1.0, 0.0
			if l.Weight != nil {
				g, b = float64(l.Weight.Data[ch]), float64(l.Bias.Data[ch])
			}
			for s0 := 0; s0 < n; s0++ {
				off := s0*per + ch*l.Inner
				for j, xv := range x[off : off+l.Inner] {
					y[off+j] = float32((float64(xv)-mean)*inv*g + b)
				}
			}
			if updateStats {
				mom := l.Momentum
				unbiased := v
				if cnt > 1 {
					unbiased = ss / (cnt - 1)
				}
				l.Mean.Data[ch] = float32((1-mom)*float64(l.Mean.Data[ch]) + mom*mean)
				l.Var.Data[ch] = float32((1-mom)*float64(l.Var.Data[ch]) + mom*unbiased)
			}
		}
	})
	if updateStats {
		l.NumBatchesTracked++
	}
}

func (t *net) dropoutForward(l *engine.Dropout, x, y []float32, n int, rng *dataset.Rand) {
	total := n * size(l.InShape())
	mask := grow(t.masks[l], total)
	t.masks[l] = mask
	keep := float32(1 / (1 - l.P))
	for j := range mask {
		if rng.Float64() < l.P {
			mask[j] = 0
		} else {
			mask[j] = keep
		}
	}
	for j, v := range x[:total] {
		y[j] = v * mask[j]
	}
}

// lossGrad computes the mean softmax cross-entropy of the logits against
// labels, writes its gradient with respect to the logits into dz, and
// counts correct predictions (first highest logit).
func lossGrad(z []float32, labels []int, k int, dz []float32) (loss float64, correct int) {
	n := len(labels)
	for i, lab := range labels {
		row := z[i*k : (i+1)*k]
		m := math.Inf(-1)
		best := 0
		for j, v := range row {
			m = math.Max(m, float64(v))
			if v > row[best] {
				best = j
			}
		}
		if best == lab {
			correct++
		}
		var s float64
		for _, v := range row {
			s += math.Exp(float64(v) - m)
		}
		lse := m + math.Log(s)
		loss += lse - float64(row[lab])
		if dz != nil {
			d := dz[i*k : (i+1)*k]
			for j, v := range row {
				p := math.Exp(float64(v) - lse)
				if j == lab {
					p--
				}
				d[j] = float32(p / float64(n))
			}
		}
	}
	return loss / float64(n), correct
}

// backward propagates dz (the gradient of the loss with respect to the
// logits) through the layers, writing every parameter's gradient into
// t.grads (overwriting).
func (t *net) backward(dz []float32, n int) {
	t.backwardSeq(t.top, dz, nil, n)
}

// backwardSeq propagates dy (the gradient at the sequence's output) back
// through one sequence, writing the gradient at its input into dx unless
// dx is nil.
func (t *net) backwardSeq(s *seq, dy, dx []float32, n int) {
	if len(s.layers) == 0 {
		if dx != nil {
			copy(dx, dy)
		}
		return
	}
	stop := 0
	if t.only != nil {
		// In the sequence holding the parameter only its layer and those
		// after it matter; any other sequence just passes gradients on.
		stop = -1
		for i, l := range s.layers {
			if holds(l, t.only) {
				stop = i
				break
			}
		}
		switch {
		case stop >= 0:
			dx = nil
		case dx == nil:
			return
		default:
			stop = 0
		}
	}
	which := 0
	for i := len(s.layers) - 1; i >= stop; i-- {
		l := s.layers[i]
		x, y := s.acts[i], s.acts[i+1]
		di := dx
		if i > stop {
			s.dy[which] = grow(s.dy[which], n*size(l.InShape()))
			di = s.dy[which]
			which ^= 1
		}
		switch l := l.(type) {
		case *engine.Residual:
			p := s.paths[l]
			t.backwardSeq(p[0], dy, di, n)
			var sd []float32
			if di != nil {
				s.tmp = grow(s.tmp, len(di))
				sd = s.tmp
			}
			t.backwardSeq(p[1], dy, sd, n)
			if di != nil {
				addInto(di, sd)
			}
		case *engine.Concat:
			per, off := size(l.OutShape()), 0
			for b, p := range s.paths[l] {
				sz := l.Sizes[b]
				s.gather = grow(s.gather, n*sz)
				g := s.gather
				for j := 0; j < n; j++ {
					copy(g[j*sz:(j+1)*sz], dy[j*per+off:j*per+off+sz])
				}
				off += sz
				switch {
				case di == nil:
					t.backwardSeq(p, g, nil, n)
				case b == 0:
					t.backwardSeq(p, g, di, n)
				default:
					s.tmp = grow(s.tmp, len(di))
					t.backwardSeq(p, g, s.tmp, n)
					addInto(di, s.tmp)
				}
			}
		case *engine.Linear:
			t.linearBackward(l, x, dy, di, n)
		case *engine.Conv2D:
			t.convBackward(l, x, dy, di, n)
		case *engine.BatchNorm:
			if t.train {
				t.bnBackward(l, x, dy, di, n)
			} else {
				t.bnEvalBackward(l, x, dy, di, n)
			}
		case *engine.Activation:
			if di != nil {
				activationBackward(l, x, y, dy, di)
			}
		case *engine.Pool2D:
			if di != nil {
				poolBackward(l, x, dy, di, n)
			}
		case *engine.AdaptivePool2D:
			if di != nil {
				adaptiveBackward(l, x, dy, di, n)
			}
		case *engine.Flatten:
			if di != nil {
				copy(di, dy)
			}
		case *engine.Dropout:
			if di != nil {
				if mask, ok := t.masks[l]; ok {
					for j, v := range dy {
						di[j] = v * mask[j]
					}
				} else {
					copy(di, dy)
				}
			}
		}
		dy = di
	}
}

// holds reports whether layer l is or contains parameter p.
func holds(l engine.Layer, p *engine.Param) bool {
	for _, q := range l.Params() {
		if q == p {
			return true
		}
	}
	return false
}

// addInto adds b onto a, elementwise.
func addInto(a, b []float32) {
	parallel.Ranges(len(a), 1<<14, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			a[j] += b[j]
		}
	})
}

func (t *net) grad(p *engine.Param) []float32 {
	if p == nil || (t.only != nil && p != t.only) {
		return nil
	}
	return t.grads[t.index[p]]
}

// sumRows adds up the rows of an n×k matrix into out (k), one output per
// goroutine-range, rows in order.
func sumRows(a []float32, n, k int, out []float32) {
	parallel.Ranges(k, 16, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			var s float32
			for i := 0; i < n; i++ {
				s += a[i*k+j]
			}
			out[j] = s
		}
	})
}

func (t *net) linearBackward(l *engine.Linear, x, dy, dx []float32, n int) {
	// dW = dyᵀ·x, db = Σ dy, dx = dy·W.
	if dw := t.grad(l.W); dw != nil {
		engine.Gemm(true, false, l.Out, l.In, n, dy, x, 0, dw)
	}
	if db := t.grad(l.B); db != nil {
		sumRows(dy, n, l.Out, db)
	}
	if dx != nil {
		engine.Gemm(false, false, n, l.In, l.Out, dy, l.W.Data, 0, dx)
	}
}

func (t *net) convBackward(c *engine.Conv2D, x, dy, dx []float32, n int) {
	K, P := c.ColRows(), c.OH*c.OW
	inSize, outSize := c.InC*c.H*c.W, c.OutC*P
	g := c.GroupSize()
	dw := t.grad(c.Weight)
	db := t.grad(c.B)
	if dx != nil {
		clear(dx[:n*inSize])
	}
	if db != nil {
		clear(db)
	}
	for s0 := 0; s0 < n; s0 += g {
		m := min(g, n-s0)
		ld := m * P
		t.col = grow(t.col, K*ld)
		t.dyp = grow(t.dyp, c.OutC*ld)
		col, dyp := t.col, t.dyp
		parallel.Ranges(m, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				c.Im2Col(x[(s0+i)*inSize:(s0+i+1)*inSize], col, i, ld)
				for oc := 0; oc < c.OutC; oc++ {
					copy(dyp[oc*ld+i*P:oc*ld+(i+1)*P], dy[(s0+i)*outSize+oc*P:(s0+i)*outSize+(oc+1)*P])
				}
			}
		})
		beta := float32(1)
		if s0 == 0 {
			beta = 0
		}
		// dW (+)= dY'·colᵀ: [OutC, K/G], group by group.
		og, kg := c.OutC/c.G, c.GroupRows()
		if dw != nil {
			c.GroupGemms(ld, func(w, cl, o int) {
				engine.Gemm(false, true, og, kg, ld, dyp[o:], col[cl:], beta, dw[w:])
			})
		}
		if db != nil {
			parallel.Ranges(c.OutC, 1, func(lo, hi int) {
				for oc := lo; oc < hi; oc++ {
					var s float32
					for _, v := range dyp[oc*ld : (oc+1)*ld] {
						s += v
					}
					db[oc] += s
				}
			})
		}
		if dx != nil {
			// dcol = Wᵀ·dY': [K, m·P], folded back onto the images.
			t.dcol = grow(t.dcol, K*ld)
			dcol := t.dcol
			c.GroupGemms(ld, func(w, cl, o int) {
				engine.Gemm(true, false, kg, ld, og, c.Weight.Data[w:], dyp[o:], 0, dcol[cl:])
			})
			parallel.Ranges(m, 1, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					c.Col2Im(dcol, i, ld, dx[(s0+i)*inSize:(s0+i+1)*inSize])
				}
			})
		}
	}
}

func (t *net) bnBackward(l *engine.BatchNorm, x, dy, dx []float32, n int) {
	c := t.bn[l]
	per := l.C * l.Inner
	cnt := float64(n * l.Inner)
	dg, db := t.grad(l.Weight), t.grad(l.Bias)
	parallel.Ranges(l.C, 1, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			mean, inv := c.mean[ch], c.invstd[ch]
			var sdy, sdyx float64
			for s0 := 0; s0 < n; s0++ {
				off := s0*per + ch*l.Inner
				for j, g := range dy[off : off+l.Inner] {
					sdy += float64(g)
					sdyx += float64(g) * (float64(x[off+j]) - mean) * inv
				}
			}
			gamma := 1.0
			if l.Weight != nil {
				gamma = float64(l.Weight.Data[ch])
			}
			if dg != nil {
				dg[ch] = float32(sdyx)
			}
			if db != nil {
				db[ch] = float32(sdy)
			}
			if dx == nil {
				continue
			}
			k := gamma * inv / cnt
			for s0 := 0; s0 < n; s0++ {
				off := s0*per + ch*l.Inner
				for j, g := range dy[off : off+l.Inner] {
					xhat := (float64(x[off+j]) - mean) * inv
					dx[off+j] = float32(k * (cnt*float64(g) - sdy - xhat*sdyx))
				}
			}
		}
	})
}

// bnEvalBackward is batchnorm's backward pass on the running statistics
// (evaluation mode): the layer is then the fixed affine map
// y = x·scale[c] + shift[c], so dx = dy·scale[c], dγ = Σ dy·x̂, dβ = Σ dy.
func (t *net) bnEvalBackward(l *engine.BatchNorm, x, dy, dx []float32, n int) {
	per := l.C * l.Inner
	dg, db := t.grad(l.Weight), t.grad(l.Bias)
	parallel.Ranges(l.C, 1, func(lo, hi int) {
		for ch := lo; ch < hi; ch++ {
			inv := 1 / math.Sqrt(float64(l.Var.Data[ch])+l.Eps)
			mean := float64(l.Mean.Data[ch])
			scale := inv
			if l.Weight != nil {
				scale *= float64(l.Weight.Data[ch])
			}
			var sdy, sdyx float64
			for s0 := 0; s0 < n; s0++ {
				off := s0*per + ch*l.Inner
				for j, g := range dy[off : off+l.Inner] {
					sdy += float64(g)
					sdyx += float64(g) * (float64(x[off+j]) - mean) * inv
					if dx != nil {
						dx[off+j] = float32(float64(g) * scale)
					}
				}
			}
			if dg != nil {
				dg[ch] = float32(sdyx)
			}
			if db != nil {
				db[ch] = float32(sdy)
			}
		}
	})
}

func activationBackward(a *engine.Activation, x, y, dy, dx []float32) {
	parallel.Ranges(len(dx), 1<<14, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			g := dy[j]
			switch a.Kind {
			case "relu":
				if x[j] <= 0 {
					g = 0
				}
			case "relu6":
				// PyTorch's hardtanh backward: zero outside the open interval.
				if x[j] <= 0 || x[j] >= 6 {
					g = 0
				}
			case "silu":
				sg := 1 / (1 + math.Exp(-float64(x[j])))
				g = float32(float64(g) * sg * (1 + float64(x[j])*(1-sg)))
			case "leaky_relu":
				if x[j] < 0 {
					g *= float32(a.Slope)
				}
			case "tanh":
				g *= 1 - y[j]*y[j]
			case "sigmoid":
				g *= y[j] * (1 - y[j])
			case "gelu":
				g = float32(float64(g) * geluGrad(float64(x[j]), a.Tanh))
			}
			dx[j] = g
		}
	})
}

func geluGrad(x float64, tanhApprox bool) float64 {
	if tanhApprox {
		const c = 0.7978845608028654 // √(2/π)
		u := c * (x + 0.044715*x*x*x)
		th := math.Tanh(u)
		return 0.5*(1+th) + 0.5*x*(1-th*th)*c*(1+3*0.044715*x*x)
	}
	cdf := 0.5 * (1 + math.Erf(x/math.Sqrt2))
	pdf := math.Exp(-x*x/2) / math.Sqrt(2*math.Pi)
	return cdf + x*pdf
}

func poolBackward(p *engine.Pool2D, x, dy, dx []float32, n int) {
	parallel.Ranges(n*p.C, 16, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x[pl*p.H*p.W : (pl+1)*p.H*p.W]
			d := dx[pl*p.H*p.W : (pl+1)*p.H*p.W]
			clear(d)
			g := dy[pl*p.OH*p.OW : (pl+1)*p.OH*p.OW]
			for oh := 0; oh < p.OH; oh++ {
				h0 := oh*p.SH - p.PH
				for ow := 0; ow < p.OW; ow++ {
					w0 := ow*p.SW - p.PW
					gv := g[oh*p.OW+ow]
					if p.Max {
						// The first maximum in scan order, as the forward pass keeps.
						best, bv := -1, float32(math.Inf(-1))
						for kh := 0; kh < p.KH; kh++ {
							ih := h0 + kh*p.DH
							if ih < 0 || ih >= p.H {
								continue
							}
							for kw := 0; kw < p.KW; kw++ {
								iw := w0 + kw*p.DW
								if iw < 0 || iw >= p.W {
									continue
								}
								if v := src[ih*p.W+iw]; best < 0 || v > bv {
									best, bv = ih*p.W+iw, v
								}
							}
						}
						if best >= 0 {
							d[best] += gv
						}
						continue
					}
					hs, he, ws, we, div := p.AvgWindow(h0, w0)
					share := gv / float32(div)
					for ih := hs; ih < he; ih++ {
						for iw := ws; iw < we; iw++ {
							d[ih*p.W+iw] += share
						}
					}
				}
			}
		}
	})
}

func adaptiveBackward(p *engine.AdaptivePool2D, x, dy, dx []float32, n int) {
	parallel.Ranges(n*p.C, 16, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x[pl*p.H*p.W : (pl+1)*p.H*p.W]
			d := dx[pl*p.H*p.W : (pl+1)*p.H*p.W]
			clear(d)
			g := dy[pl*p.OH*p.OW : (pl+1)*p.OH*p.OW]
			for oh := 0; oh < p.OH; oh++ {
				h0, h1 := engine.AdaptiveRange(oh, p.H, p.OH)
				for ow := 0; ow < p.OW; ow++ {
					w0, w1 := engine.AdaptiveRange(ow, p.W, p.OW)
					gv := g[oh*p.OW+ow]
					if p.Max {
						best, bv := -1, float32(math.Inf(-1))
						for ih := h0; ih < h1; ih++ {
							for iw := w0; iw < w1; iw++ {
								if v := src[ih*p.W+iw]; best < 0 || v > bv {
									best, bv = ih*p.W+iw, v
								}
							}
						}
						d[best] += gv
						continue
					}
					share := gv / float32((h1-h0)*(w1-w0))
					for ih := h0; ih < h1; ih++ {
						for iw := w0; iw < w1; iw++ {
							d[ih*p.W+iw] += share
						}
					}
				}
			}
		}
	})
}
