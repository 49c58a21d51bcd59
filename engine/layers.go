package engine

import (
	"math"

	"github.com/weightops/weightops/internal/parallel"
	"github.com/weightops/weightops/internal/sgemm"
)

// Layer is one step of a Model's forward pass. Shapes are per sample; a
// batch of n samples is n shapes back to back (NCHW for images).
type Layer interface {
	// Spec is the layer's arch entry, with sizes read from the checkpoint
	// filled in.
	Spec() *LayerSpec
	// InShape and OutShape are one sample's shape going in and out.
	InShape() []int
	OutShape() []int
	// Params are the layer's tensors, nil for a layer without any.
	Params() []*Param
	// InPlace reports whether Forward may be given the same slice as x
	// and y.
	InPlace() bool
	// Forward computes y (n × OutShape values) from x (n × InShape
	// values), using ws for scratch space; it spreads the work over all
	// cores.
	Forward(x, y []float32, n int, ws *Workspace)
}

// Param is one tensor of a layer: a weight, bias or running statistic, in
// float32, row-major, under its checkpoint name.
type Param struct {
	// Name is the tensor's name in the checkpoint (e.g. features.0.weight).
	Name string
	// Role is weight, bias, running_mean or running_var.
	Role string
	// Shape is the tensor's shape in PyTorch's layout.
	Shape []int
	// Data holds prod(Shape) values.
	Data []float32
	// Buffer marks running statistics: saved with the model but not
	// trained by gradient descent.
	Buffer bool
}

// Workspace holds a forward pass's scratch buffers, reused from batch to
// batch. One Workspace serves one goroutine at a time.
type Workspace struct {
	act   [2][]float32
	out   []float32
	col   []float32
	tmp   []float32
	sum   []float32
	extra map[string][]float32
	// next serves the sub-sequences of blocks run at this level: blocks at
	// one depth run one at a time, so they share it.
	next *Workspace
}

func (w *Workspace) child() *Workspace {
	if w.next == nil {
		w.next = &Workspace{}
	}
	return w.next
}

func grow(b *[]float32, n int) []float32 {
	if cap(*b) < n {
		*b = make([]float32, n)
	}
	return (*b)[:n]
}

// Buffer returns a scratch slice of n values kept under key, for callers
// (such as a training loop) that want the workspace's reuse; its contents
// are unspecified.
func (w *Workspace) Buffer(key string, n int) []float32 {
	if w.extra == nil {
		w.extra = map[string][]float32{}
	}
	b := w.extra[key]
	b = grow(&b, n)
	w.extra[key] = b
	return b
}

type base struct {
	spec    LayerSpec
	in, out []int
}

// Spec returns the layer's resolved arch entry.
func (b *base) Spec() *LayerSpec { return &b.spec }

// InShape is one input sample's shape.
func (b *base) InShape() []int { return b.in }

// OutShape is one output sample's shape.
func (b *base) OutShape() []int { return b.out }

// Params is nil for layers without tensors.
func (b *base) Params() []*Param { return nil }

// InPlace is false unless a layer says otherwise.
func (b *base) InPlace() bool { return false }

func prod(s []int) int {
	n := 1
	for _, d := range s {
		n *= d
	}
	return n
}

// gemm computes C = op(A)·op(B) + beta·C with op(A) m×k and op(B) k×n,
// all row-major and dense, on every core (internal/sgemm: blocked, AVX2
// on amd64; the same bits for any core count).
func gemm(tA, tB bool, m, n, k int, a, b []float32, beta float32, c []float32) {
	lda, ldb := k, n
	if tA {
		lda = m
	}
	if tB {
		ldb = k
	}
	sgemm.Gemm(tA, tB, m, n, k, a, lda, b, ldb, beta, c, n, 0)
}

// Gemm is exported for the training package: C = op(A)·op(B) + beta·C,
// row-major, op(A) m×k, op(B) k×n, transposed when tA/tB. Its summation
// order depends only on the sizes, so results are reproducible.
func Gemm(tA, tB bool, m, n, k int, a, b []float32, beta float32, c []float32) {
	gemm(tA, tB, m, n, k, a, b, beta, c)
}

// Linear is y = x·Wᵀ + b, PyTorch's nn.Linear: W is [Out, In].
type Linear struct {
	base
	// In and Out are the input and output features.
	In, Out int
	// W is the [Out, In] weight, B the bias (nil without one).
	W, B *Param
}

// Params returns the weight and, if any, the bias.
func (l *Linear) Params() []*Param { return params(l.W, l.B) }

func params(ps ...*Param) []*Param {
	var out []*Param
	for _, p := range ps {
		if p != nil {
			out = append(out, p)
		}
	}
	return out
}

// Forward computes the batch's outputs.
func (l *Linear) Forward(x, y []float32, n int, _ *Workspace) {
	gemm(false, true, n, l.Out, l.In, x, l.W.Data, 0, y)
	if l.B != nil {
		b := l.B.Data
		parallel.Ranges(n, 64, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				row := y[i*l.Out : (i+1)*l.Out]
				for j := range row {
					row[j] += b[j]
				}
			}
		})
	}
}

// Conv2D is PyTorch's nn.Conv2d: W is [OutC, InC/G, KH, KW], inputs
// [InC, H, W], outputs [OutC, OH, OW]; with G groups, output channels
// [g·OutC/G, (g+1)·OutC/G) see only input channels [g·InC/G, (g+1)·InC/G).
type Conv2D struct {
	base
	// InC, H, W: input channels and size; OutC, OH, OW: output channels
	// and size; KH, KW kernel, SH, SW stride, PH, PW padding, DH, DW
	// dilation, G groups.
	InC, H, W, OutC, KH, KW, SH, SW, PH, PW, OH, OW, DH, DW, G int
	// Weight is [OutC, InC, KH, KW]; B the bias (nil without one).
	Weight, B *Param
}

// Params returns the weight and, if any, the bias.
func (c *Conv2D) Params() []*Param { return params(c.Weight, c.B) }

// colBudget bounds the im2col buffer (in values); larger batches are
// processed in groups of samples.
const colBudget = 1 << 22

// ColRows is the number of rows of the im2col matrix, InC·KH·KW; group
// g's rows are the g-th block of GroupRows.
func (c *Conv2D) ColRows() int { return c.InC * c.KH * c.KW }

// GroupRows is the number of im2col rows one group's weights see,
// InC/G·KH·KW.
func (c *Conv2D) GroupRows() int { return c.InC / c.G * c.KH * c.KW }

// GroupGemms runs fn once per group with the group's offsets into the
// weight, the im2col matrix of ld columns, and the [OutC, ld] output.
func (c *Conv2D) GroupGemms(ld int, fn func(w, col, out int)) {
	kg, og := c.GroupRows(), c.OutC/c.G
	for g := 0; g < c.G; g++ {
		fn(g*og*kg, g*kg*ld, g*og*ld)
	}
}

// GroupSize is how many samples Forward lays out in one im2col matrix.
func (c *Conv2D) GroupSize() int { return max(1, colBudget/(c.ColRows()*c.OH*c.OW)) }

// Im2Col writes the receptive fields of sample x (one [InC, H, W] image)
// as column block i of col, a row-major [InC·KH·KW, ld] matrix: entry
// ((ch·KH + kh)·KW + kw, i·OH·OW + oh·OW + ow) is x[ch, oh·SH − PH +
// kh·DH, ow·SW − PW + kw·DW], zero in the padding.
func (c *Conv2D) Im2Col(x, col []float32, i, ld int) {
	P := c.OH * c.OW
	for ch := 0; ch < c.InC; ch++ {
		plane := x[ch*c.H*c.W : (ch+1)*c.H*c.W]
		for kh := 0; kh < c.KH; kh++ {
			for kw := 0; kw < c.KW; kw++ {
				row := (ch*c.KH+kh)*c.KW + kw
				dst := col[row*ld+i*P : row*ld+i*P+P]
				for oh := 0; oh < c.OH; oh++ {
					ih := oh*c.SH - c.PH + kh*c.DH
					d := dst[oh*c.OW : (oh+1)*c.OW]
					if ih < 0 || ih >= c.H {
						clear(d)
						continue
					}
					src := plane[ih*c.W : (ih+1)*c.W]
					off := kw*c.DW - c.PW
					if c.SW == 1 {
						// The valid outputs ow have 0 ≤ ow + off < W: one run.
						lo := min(max(-off, 0), c.OW)
						hi := max(min(c.W-off, c.OW), lo)
						clear(d[:lo])
						copy(d[lo:hi], src[lo+off:])
						clear(d[hi:])
						continue
					}
					for ow := range d {
						iw := ow*c.SW + off
						if iw < 0 || iw >= c.W {
							d[ow] = 0
						} else {
							d[ow] = src[iw]
						}
					}
				}
			}
		}
	}
}

// Col2Im is Im2Col's adjoint: it adds column block i of col back onto the
// image dx (one [InC, H, W] gradient), summing where fields overlap.
func (c *Conv2D) Col2Im(col []float32, i, ld int, dx []float32) {
	P := c.OH * c.OW
	for ch := 0; ch < c.InC; ch++ {
		plane := dx[ch*c.H*c.W : (ch+1)*c.H*c.W]
		for kh := 0; kh < c.KH; kh++ {
			for kw := 0; kw < c.KW; kw++ {
				row := (ch*c.KH+kh)*c.KW + kw
				src := col[row*ld+i*P : row*ld+i*P+P]
				for oh := 0; oh < c.OH; oh++ {
					ih := oh*c.SH - c.PH + kh*c.DH
					if ih < 0 || ih >= c.H {
						continue
					}
					d := plane[ih*c.W : (ih+1)*c.W]
					s := src[oh*c.OW : (oh+1)*c.OW]
					for ow, v := range s {
						iw := ow*c.SW - c.PW + kw*c.DW
						if iw >= 0 && iw < c.W {
							d[iw] += v
						}
					}
				}
			}
		}
	}
}

// Forward computes the batch's outputs: im2col over a group of samples,
// one matrix product W·col, then bias and NCHW layout.
func (c *Conv2D) Forward(x, y []float32, n int, ws *Workspace) {
	K, P := c.ColRows(), c.OH*c.OW
	inSize, outSize := c.InC*c.H*c.W, c.OutC*P
	g := c.GroupSize()
	for s0 := 0; s0 < n; s0 += g {
		m := min(g, n-s0)
		ld := m * P
		col := grow(&ws.col, K*ld)
		parallel.Ranges(m, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				c.Im2Col(x[(s0+i)*inSize:(s0+i+1)*inSize], col, i, ld)
			}
		})
		out := grow(&ws.tmp, c.OutC*ld)
		if c.G == 1 {
			gemm(false, false, c.OutC, ld, K, c.Weight.Data, col, 0, out)
		} else {
			c.groupedProduct(col, out, ld)
		}
		parallel.Ranges(m, 1, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				for oc := 0; oc < c.OutC; oc++ {
					dst := y[(s0+i)*outSize+oc*P : (s0+i)*outSize+(oc+1)*P]
					copy(dst, out[oc*ld+i*P:oc*ld+(i+1)*P])
					if c.B != nil {
						b := c.B.Data[oc]
						for j := range dst {
							dst[j] += b
						}
					}
				}
			}
		})
	}
}

// groupedProduct computes out = W·col group by group. Narrow groups (a
// depthwise convolution's one channel) go through a direct loop, which is
// far cheaper there than a matrix product per group; each output's sum
// runs over the group's rows in order either way.
func (c *Conv2D) groupedProduct(col, out []float32, ld int) {
	kg, og := c.GroupRows(), c.OutC/c.G
	if og*kg > 64 {
		c.GroupGemms(ld, func(w, cl, o int) {
			gemm(false, false, og, ld, kg, c.Weight.Data[w:], col[cl:], 0, out[o:])
		})
		return
	}
	parallel.Ranges(c.OutC, 1, func(lo, hi int) {
		for oc := lo; oc < hi; oc++ {
			g := oc / og
			w := c.Weight.Data[oc*kg : (oc+1)*kg]
			dst := out[oc*ld : (oc+1)*ld]
			clear(dst)
			for k, wk := range w {
				src := col[(g*kg+k)*ld : (g*kg+k+1)*ld]
				for j, v := range src {
					dst[j] += wk * v
				}
			}
		}
	})
}

// BatchNorm is PyTorch's BatchNorm1d/2d in eval mode: per channel c,
// y = (x − running_mean[c]) / √(running_var[c] + Eps) · weight[c] + bias[c].
// Inputs are [C], [C, L] or [C, H, W]; Inner is the values per channel.
type BatchNorm struct {
	base
	// C is the number of channels, Inner the values per channel.
	C, Inner int
	// Eps is added to the variance; Momentum is used in training.
	Eps, Momentum float64
	// Weight and Bias (nil when not affine), running Mean and Var.
	Weight, Bias, Mean, Var *Param
	// NumBatchesTracked is PyTorch's counter of training batches, saved
	// as the num_batches_tracked tensor.
	NumBatchesTracked int64
}

// Params returns weight and bias (if affine) and the running statistics.
func (b *BatchNorm) Params() []*Param { return params(b.Weight, b.Bias, b.Mean, b.Var) }

// InPlace is true: each value maps to one value.
func (b *BatchNorm) InPlace() bool { return true }

// ScaleShift returns the per-channel affine map eval mode applies,
// computed in float64: y = x·scale[c] + shift[c].
func (b *BatchNorm) ScaleShift() (scale, shift []float32) {
	scale, shift = make([]float32, b.C), make([]float32, b.C)
	for c := 0; c < b.C; c++ {
		s := 1 / math.Sqrt(float64(b.Var.Data[c])+b.Eps)
		if b.Weight != nil {
			s *= float64(b.Weight.Data[c])
		}
		sh := -float64(b.Mean.Data[c]) * s
		if b.Bias != nil {
			sh += float64(b.Bias.Data[c])
		}
		scale[c], shift[c] = float32(s), float32(sh)
	}
	return scale, shift
}

// Forward applies the running statistics.
func (b *BatchNorm) Forward(x, y []float32, n int, _ *Workspace) {
	scale, shift := b.ScaleShift()
	per := b.C * b.Inner
	parallel.Ranges(n, 8, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			for c := 0; c < b.C; c++ {
				off := i*per + c*b.Inner
				s, t := scale[c], shift[c]
				xs, ys := x[off:off+b.Inner], y[off:off+b.Inner]
				for j, v := range xs {
					ys[j] = v*s + t
				}
			}
		}
	})
}

// Activation is an elementwise function: relu, relu6, leaky_relu, gelu
// (exact erf form, or the tanh approximation), silu, tanh or sigmoid.
type Activation struct {
	base
	// Kind is relu, relu6, leaky_relu, gelu, silu, tanh or sigmoid.
	Kind  string
	Slope float64 // leaky_relu's negative slope
	Tanh  bool    // gelu's tanh approximation
}

// InPlace is true.
func (a *Activation) InPlace() bool { return true }

// Forward applies the function to every value.
func (a *Activation) Forward(x, y []float32, n int, _ *Workspace) {
	total := n * prod(a.in)
	parallel.Ranges(total, 1<<14, func(lo, hi int) {
		xs, ys := x[lo:hi], y[lo:hi]
		switch a.Kind {
		case "relu":
			for i, v := range xs {
				ys[i] = max(v, 0)
			}
		case "relu6":
			for i, v := range xs {
				ys[i] = min(max(v, 0), 6)
			}
		case "leaky_relu":
			s := float32(a.Slope)
			for i, v := range xs {
				if v < 0 {
					v *= s
				}
				ys[i] = v
			}
		default:
			for i, v := range xs {
				ys[i] = float32(ActivationValue(a.Kind, a.Tanh, float64(v)))
			}
		}
	})
}

// ActivationValue evaluates gelu, silu, tanh or sigmoid in float64.
func ActivationValue(kind string, tanhApprox bool, x float64) float64 {
	switch kind {
	case "silu":
		return x / (1 + math.Exp(-x))
	case "gelu":
		if tanhApprox {
			return 0.5 * x * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(x+0.044715*x*x*x)))
		}
		return 0.5 * x * (1 + math.Erf(x/math.Sqrt2))
	case "tanh":
		return math.Tanh(x)
	case "sigmoid":
		return 1 / (1 + math.Exp(-x))
	case "relu":
		return max(x, 0)
	}
	return x
}

// Pool2D is max or average pooling over KH×KW windows, PyTorch's
// MaxPool2d (with dilation DH, DW) and AvgPool2d: max pooling pads with
// −∞; average pooling pads with zeros, which count in the divisor when
// CountIncludePad — as PyTorch, only the part of a window inside the
// padded input counts, which matters with ceil mode.
type Pool2D struct {
	base
	// Max selects max pooling, else average.
	Max bool
	// C, H, W: input; KH, KW kernel, SH, SW stride, PH, PW padding, DH, DW
	// dilation (1 for average pooling); OH, OW output size.
	C, H, W, KH, KW, SH, SW, PH, PW, DH, DW, OH, OW int
	// CountIncludePad divides averages by the padded window.
	CountIncludePad bool
}

// poolOutSize is PyTorch's pooling_output_shape: floor or ceil of
// (in + 2·pad − dilation·(k − 1) − 1) / stride, plus one, less one when
// ceil mode would start the last window past the input and its left
// padding.
func poolOutSize(in, k, s, pad, dil int, ceil bool) int {
	num := in + 2*pad - dil*(k-1) - 1
	if ceil {
		num += s - 1
	}
	if num < 0 {
		return 0
	}
	out := num/s + 1
	if ceil && (out-1)*s >= in+pad {
		out--
	}
	return out
}

// Forward pools every channel of every sample.
func (p *Pool2D) Forward(x, y []float32, n int, _ *Workspace) {
	planes := n * p.C
	parallel.Ranges(planes, 16, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x[pl*p.H*p.W : (pl+1)*p.H*p.W]
			dst := y[pl*p.OH*p.OW : (pl+1)*p.OH*p.OW]
			if p.Max && p.KH == 2 && p.KW == 2 && p.SH == 2 && p.SW == 2 && p.PH == 0 && p.PW == 0 && p.DH == 1 && p.DW == 1 && p.OH*2 <= p.H && p.OW*2 <= p.W {
				max2x2(src, dst, p.W, p.OH, p.OW)
				continue
			}
			for oh := 0; oh < p.OH; oh++ {
				h0 := oh*p.SH - p.PH
				for ow := 0; ow < p.OW; ow++ {
					w0 := ow*p.SW - p.PW
					if p.Max {
						m := float32(math.Inf(-1))
						for kh := 0; kh < p.KH; kh++ {
							ih := h0 + kh*p.DH
							if ih < 0 || ih >= p.H {
								continue
							}
							row := src[ih*p.W : (ih+1)*p.W]
							for kw := 0; kw < p.KW; kw++ {
								iw := w0 + kw*p.DW
								if iw < 0 || iw >= p.W {
									continue
								}
								if v := row[iw]; v > m || v != v {
									m = v
								}
							}
						}
						dst[oh*p.OW+ow] = m
						continue
					}
					hs, he, ws, we, div := p.AvgWindow(h0, w0)
					var s float32
					for ih := hs; ih < he; ih++ {
						for _, v := range src[ih*p.W+ws : ih*p.W+we] {
							s += v
						}
					}
					dst[oh*p.OW+ow] = s / float32(div)
				}
			}
		}
	})
}

// AvgWindow is an average pool's window starting at (h0, w0): the rows
// [hs, he) and columns [ws, we) inside the input, and the divisor.
func (p *Pool2D) AvgWindow(h0, w0 int) (hs, he, ws, we, div int) {
	he, we = min(h0+p.KH, p.H+p.PH), min(w0+p.KW, p.W+p.PW)
	div = (he - h0) * (we - w0)
	hs, ws = max(h0, 0), max(w0, 0)
	he, we = min(he, p.H), min(we, p.W)
	if !p.CountIncludePad {
		div = (he - hs) * (we - ws)
	}
	return hs, he, ws, we, max(div, 1)
}

// AdaptivePool2D is PyTorch's AdaptiveAvgPool2d/AdaptiveMaxPool2d: output
// cell (i, j) pools rows [⌊i·H/OH⌋, ⌈(i+1)·H/OH⌉) and the columns alike.
type AdaptivePool2D struct {
	base
	// Max selects max pooling, else average.
	Max bool
	// C, H, W: input; OH, OW: output size.
	C, H, W, OH, OW int
}

// AdaptiveRange is the input range [lo, hi) that output index i of o
// pools from an input of size n.
func AdaptiveRange(i, n, o int) (lo, hi int) {
	return i * n / o, ((i+1)*n + o - 1) / o
}

// Forward pools every channel of every sample.
func (p *AdaptivePool2D) Forward(x, y []float32, n int, _ *Workspace) {
	parallel.Ranges(n*p.C, 16, func(lo, hi int) {
		for pl := lo; pl < hi; pl++ {
			src := x[pl*p.H*p.W : (pl+1)*p.H*p.W]
			dst := y[pl*p.OH*p.OW : (pl+1)*p.OH*p.OW]
			for oh := 0; oh < p.OH; oh++ {
				h0, h1 := AdaptiveRange(oh, p.H, p.OH)
				for ow := 0; ow < p.OW; ow++ {
					w0, w1 := AdaptiveRange(ow, p.W, p.OW)
					if p.Max {
						m := float32(math.Inf(-1))
						for ih := h0; ih < h1; ih++ {
							for _, v := range src[ih*p.W+w0 : ih*p.W+w1] {
								if v > m || v != v {
									m = v
								}
							}
						}
						dst[oh*p.OW+ow] = m
						continue
					}
					var s float32
					for ih := h0; ih < h1; ih++ {
						for _, v := range src[ih*p.W+w0 : ih*p.W+w1] {
							s += v
						}
					}
					dst[oh*p.OW+ow] = s / float32((h1-h0)*(w1-w0))
				}
			}
		}
	})
}

// Block is a layer made of sequences of layers: a residual block's body
// and shortcut, or a concat block's branches.
type Block interface {
	Layer
	// Paths are the block's layer sequences, in order; an empty one is
	// the identity.
	Paths() [][]Layer
}

// Residual is y = body(x) + shortcut(x), the shortcut being the identity
// when empty — ResNet's basic and bottleneck blocks, with or without a
// downsample branch.
type Residual struct {
	base
	// Body and Shortcut are the two paths.
	Body, Shortcut []Layer
}

// Paths returns body and shortcut.
func (r *Residual) Paths() [][]Layer { return [][]Layer{r.Body, r.Shortcut} }

// Params returns the parameters of both paths, body first.
func (r *Residual) Params() []*Param { return pathParams(r.Paths()) }

// Forward runs the shortcut into y, the body into scratch, and adds the
// body's output onto y (as PyTorch's out += identity).
func (r *Residual) Forward(x, y []float32, n int, ws *Workspace) {
	total := n * prod(r.out)
	RunInto(r.Shortcut, x, y[:total], n, ws.child())
	body := grow(&ws.sum, total)
	RunInto(r.Body, x, body, n, ws.child())
	parallel.Ranges(total, 1<<14, func(lo, hi int) {
		ys, bs := y[lo:hi], body[lo:hi]
		for i, v := range bs {
			ys[i] = v + ys[i]
		}
	})
}

// Concat runs each branch on x and joins the outputs along the channels,
// branch by branch, as torch.cat(…, dim=1).
type Concat struct {
	base
	// Branches are the paths; an empty branch passes x through.
	Branches [][]Layer
	// Sizes are the values per sample each branch contributes.
	Sizes []int
}

// Paths returns the branches.
func (c *Concat) Paths() [][]Layer { return c.Branches }

// Params returns the parameters of every branch, in order.
func (c *Concat) Params() []*Param { return pathParams(c.Branches) }

// Forward fills y one branch at a time.
func (c *Concat) Forward(x, y []float32, n int, ws *Workspace) {
	per := prod(c.out)
	off := 0
	for b, br := range c.Branches {
		sz := c.Sizes[b]
		tmp := grow(&ws.sum, n*sz)
		RunInto(br, x, tmp, n, ws.child())
		parallel.Ranges(n, 8, func(lo, hi int) {
			for i := lo; i < hi; i++ {
				copy(y[i*per+off:i*per+off+sz], tmp[i*sz:(i+1)*sz])
			}
		})
		off += sz
	}
}

func pathParams(paths [][]Layer) []*Param {
	var out []*Param
	for _, p := range paths {
		for _, l := range p {
			out = append(out, l.Params()...)
		}
	}
	return out
}

// RunInto runs a sequence of layers on n samples x, writing the last
// layer's output into y (x copied when the sequence is empty); the
// intermediate activations live in ws.
func RunInto(layers []Layer, x, y []float32, n int, ws *Workspace) {
	if len(layers) == 0 {
		copy(y, x[:len(y)])
		return
	}
	cur := x
	which := 0
	for i, l := range layers {
		var dst []float32
		switch {
		case i == len(layers)-1:
			dst = y
		case l.InPlace() && &cur[0] != &x[0]:
			dst = cur
		default:
			dst = grow(&ws.act[which], n*prod(l.OutShape()))
			which ^= 1
		}
		l.Forward(cur, dst, n, ws)
		cur = dst
	}
}

// Walk calls fn on every layer of a sequence in order, descending into
// blocks (a block is visited before its paths).
func Walk(layers []Layer, fn func(Layer)) {
	for _, l := range layers {
		fn(l)
		if b, ok := l.(Block); ok {
			for _, p := range b.Paths() {
				Walk(p, fn)
			}
		}
	}
}

// Flatten turns [C, H, W] into [C·H·W]; the values do not move.
type Flatten struct{ base }

// InPlace is true.
func (f *Flatten) InPlace() bool { return true }

// Forward copies x to y when they differ.
func (f *Flatten) Forward(x, y []float32, n int, _ *Workspace) {
	copyIfDistinct(x, y, n*prod(f.in))
}

func copyIfDistinct(x, y []float32, n int) {
	if n > 0 && &x[0] != &y[0] {
		copy(y[:n], x[:n])
	}
}

// Dropout does nothing at evaluation; P is kept for training.
type Dropout struct {
	base
	// P is the probability of dropping a value in training.
	P float64
}

// InPlace is true.
func (d *Dropout) InPlace() bool { return true }

// Forward copies x to y when they differ.
func (d *Dropout) Forward(x, y []float32, n int, _ *Workspace) {
	copyIfDistinct(x, y, n*prod(d.in))
}

// Softmax is softmax (or log-softmax when Log) over a sample's features,
// computed in float64.
type Softmax struct {
	base
	// Log selects log-softmax.
	Log bool
}

// InPlace is true.
func (s *Softmax) InPlace() bool { return true }

// Forward normalises each sample's row.
func (s *Softmax) Forward(x, y []float32, n int, _ *Workspace) {
	f := s.in[0]
	parallel.Ranges(n, 64, func(lo, hi int) {
		for i := lo; i < hi; i++ {
			LogSoftmax(x[i*f:(i+1)*f], y[i*f:(i+1)*f], !s.Log)
		}
	})
}

// LogSoftmax writes log-softmax of x into y (softmax when exp), computed
// in float64; x and y may be the same slice. It returns the log of the
// normaliser, log Σ exp x.
func LogSoftmax(x, y []float32, exp bool) float64 {
	m := math.Inf(-1)
	for _, v := range x {
		m = math.Max(m, float64(v))
	}
	var sum float64
	for _, v := range x {
		sum += math.Exp(float64(v) - m)
	}
	lse := m + math.Log(sum)
	for i, v := range x {
		lp := float64(v) - lse
		if exp {
			y[i] = float32(math.Exp(lp))
		} else {
			y[i] = float32(lp)
		}
	}
	return lse
}

// max2x2 is the common 2×2, stride 2, unpadded max pool: the first
// maximum in scan order, NaN propagating, as the general loop.
func max2x2(src, dst []float32, w, oh, ow int) {
	for i := 0; i < oh; i++ {
		r0 := src[2*i*w : 2*i*w+2*ow]
		r1 := src[(2*i+1)*w : (2*i+1)*w+2*ow]
		d := dst[i*ow : (i+1)*ow]
		for j := range d {
			a, b := r0[2*j:2*j+2], r1[2*j:2*j+2]
			m := a[0]
			if v := a[1]; v > m || v != v {
				m = v
			}
			if v := b[0]; v > m || v != v {
				m = v
			}
			if v := b[1]; v > m || v != v {
				m = v
			}
			d[j] = m
		}
	}
}
