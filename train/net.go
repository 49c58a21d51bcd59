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
	layers []engine.Layer // without a final softmax/log_softmax
	params []*engine.Param
	index  map[*engine.Param]int
	grads  [][]float32 // per params index; nil for running statistics
	acts   [][]float32 // acts[i] is layer i's input; acts[len(layers)] the logits
	ws     *engine.Workspace
	bn     map[int]*bnCache
	masks  map[int][]float32
	dy     [2][]float32
	col    []float32
	dcol   []float32
	dyp    []float32
}

type bnCache struct {
	mean, invstd []float64
}

// newNet prepares a model for training; a softmax or log_softmax is only
// allowed as the last layer (the loss works on the logits before it).
func newNet(m *engine.Model) (*net, error) {
	t := &net{m: m, ws: &engine.Workspace{}, index: map[*engine.Param]int{}, bn: map[int]*bnCache{}, masks: map[int][]float32{}}
	t.layers = m.Layers
	if _, ok := m.Layers[len(m.Layers)-1].(*engine.Softmax); ok {
		t.layers = m.Layers[:len(m.Layers)-1]
	}
	if len(t.layers) == 0 {
		return nil, errors.New("the model has no layer to train")
	}
	for i, l := range t.layers {
		if _, ok := l.(*engine.Softmax); ok {
			return nil, fmt.Errorf("%s: softmax is only supported as the last layer", l.Spec().Label(i))
		}
	}
	t.params = m.Params()
	t.grads = make([][]float32, len(t.params))
	for i, p := range t.params {
		t.index[p] = i
		if !p.Buffer {
			t.grads[i] = make([]float32, len(p.Data))
		}
	}
	t.acts = make([][]float32, len(t.layers)+1)
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
	t.acts[0] = x
	for i, l := range t.layers {
		out := grow(t.acts[i+1], n*size(l.OutShape()))
		t.acts[i+1] = out
		in := t.acts[i]
		switch l := l.(type) {
		case *engine.BatchNorm:
			if train {
				t.bnForward(i, l, in, out, n, updateStats)
				continue
			}
		case *engine.Dropout:
			if train && rng != nil && l.P > 0 {
				t.dropoutForward(i, l, in, out, n, rng)
				continue
			}
			delete(t.masks, i)
		}
		l.Forward(in, out, n, t.ws)
	}
	return t.acts[len(t.layers)]
}

func (t *net) bnForward(i int, l *engine.BatchNorm, x, y []float32, n int, updateStats bool) {
	c := t.bn[i]
	if c == nil {
		c = &bnCache{mean: make([]float64, l.C), invstd: make([]float64, l.C)}
		t.bn[i] = c
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

func (t *net) dropoutForward(i int, l *engine.Dropout, x, y []float32, n int, rng *dataset.Rand) {
	total := n * size(l.InShape())
	mask := grow(t.masks[i], total)
	t.masks[i] = mask
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
	dy := dz
	which := 0
	for i := len(t.layers) - 1; i >= 0; i-- {
		l := t.layers[i]
		x, y := t.acts[i], t.acts[i+1]
		var dx []float32
		if i > 0 {
			t.dy[which] = grow(t.dy[which], n*size(l.InShape()))
			dx = t.dy[which]
			which ^= 1
		}
		switch l := l.(type) {
		case *engine.Linear:
			t.linearBackward(l, x, dy, dx, n)
		case *engine.Conv2D:
			t.convBackward(l, x, dy, dx, n)
		case *engine.BatchNorm:
			t.bnBackward(i, l, x, dy, dx, n)
		case *engine.Activation:
			if dx != nil {
				activationBackward(l, x, y, dy, dx)
			}
		case *engine.Pool2D:
			if dx != nil {
				poolBackward(l, x, dy, dx, n)
			}
		case *engine.Flatten:
			if dx != nil {
				copy(dx, dy)
			}
		case *engine.Dropout:
			if dx != nil {
				if mask, ok := t.masks[i]; ok {
					for j, v := range dy {
						dx[j] = v * mask[j]
					}
				} else {
					copy(dx, dy)
				}
			}
		}
		dy = dx
	}
}

func (t *net) grad(p *engine.Param) []float32 {
	if p == nil {
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
	engine.Gemm(true, false, l.Out, l.In, n, dy, x, 0, t.grad(l.W))
	if l.B != nil {
		sumRows(dy, n, l.Out, t.grad(l.B))
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
		// dW (+)= dY'·colᵀ: [OutC, K].
		engine.Gemm(false, true, c.OutC, K, ld, dyp, col, beta, dw)
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
			engine.Gemm(true, false, K, ld, c.OutC, c.Weight.Data, dyp, 0, dcol)
			parallel.Ranges(m, 1, func(lo, hi int) {
				for i := lo; i < hi; i++ {
					c.Col2Im(dcol, i, ld, dx[(s0+i)*inSize:(s0+i+1)*inSize])
				}
			})
		}
	}
}

func (t *net) bnBackward(i int, l *engine.BatchNorm, x, dy, dx []float32, n int) {
	c := t.bn[i]
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
				dg[ch] = float32(sdyx)
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

func activationBackward(a *engine.Activation, x, y, dy, dx []float32) {
	parallel.Ranges(len(dx), 1<<14, func(lo, hi int) {
		for j := lo; j < hi; j++ {
			g := dy[j]
			switch a.Kind {
			case "relu":
				if x[j] <= 0 {
					g = 0
				}
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
				h1 := min(h0+p.KH, p.H)
				hs := max(h0, 0)
				for ow := 0; ow < p.OW; ow++ {
					w0 := ow*p.SW - p.PW
					w1 := min(w0+p.KW, p.W)
					ws := max(w0, 0)
					gv := g[oh*p.OW+ow]
					if p.Max {
						// The first maximum in scan order, as the forward pass keeps.
						best, bv := -1, float32(math.Inf(-1))
						for ih := hs; ih < h1; ih++ {
							for iw := ws; iw < w1; iw++ {
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
					div := (h1 - hs) * (w1 - ws)
					if p.CountIncludePad {
						div = p.KH * p.KW
					}
					share := gv / float32(div)
					for ih := hs; ih < h1; ih++ {
						for iw := ws; iw < w1; iw++ {
							d[ih*p.W+iw] += share
						}
					}
				}
			}
		}
	})
}
