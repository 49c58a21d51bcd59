package train

import (
	"math"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

// This file checks the analytic gradients (float32, train's backward
// passes) against central finite differences of a float64 reference
// forward pass written here with plain loops and sharing no code with the
// engine or the training package.

// tensor64 is an n-sample batch of float64 values, shape per sample.
type tensor64 struct {
	n     int
	shape []int
	v     []float64
}

func (t tensor64) per() int { return size(t.shape) }

// refForwardMode runs the model in float64 with dropout off: batchnorm on
// the batch's statistics (biased variance), or with eval on the running
// statistics.
func refForwardMode(m *engine.Model, p [][]float64, x tensor64, eval bool) tensor64 {
	idx := map[*engine.Param]int{}
	for i, q := range m.Params() {
		idx[q] = i
	}
	get := func(q *engine.Param) []float64 {
		if q == nil {
			return nil
		}
		return p[idx[q]]
	}
	return refSeq(m.Layers, get, x, eval)
}

// refSeq runs one sequence of layers in float64 (see refForward).
func refSeq(layers []engine.Layer, get func(*engine.Param) []float64, x tensor64, eval bool) tensor64 {
	for _, l := range layers {
		switch l := l.(type) {
		case *engine.Residual:
			a, b := refSeq(l.Body, get, x, eval), refSeq(l.Shortcut, get, x, eval)
			y := tensor64{x.n, a.shape, make([]float64, len(a.v))}
			for k := range y.v {
				y.v[k] = a.v[k] + b.v[k]
			}
			x = y
		case *engine.Concat:
			var outs []tensor64
			ch := 0
			for _, br := range l.Branches {
				o := refSeq(br, get, x, eval)
				outs = append(outs, o)
				ch += o.shape[0]
			}
			shape := append([]int{ch}, outs[0].shape[1:]...)
			y := tensor64{x.n, shape, nil}
			for i := 0; i < x.n; i++ {
				for _, o := range outs {
					y.v = append(y.v, o.v[i*o.per():(i+1)*o.per()]...)
				}
			}
			x = y
		case *engine.AdaptivePool2D:
			y := tensor64{x.n, []int{l.C, l.OH, l.OW}, make([]float64, x.n*l.C*l.OH*l.OW)}
			for i := 0; i < x.n*l.C; i++ {
				for oh := 0; oh < l.OH; oh++ {
					h0 := int(math.Floor(float64(oh*l.H) / float64(l.OH)))
					h1 := int(math.Ceil(float64((oh+1)*l.H) / float64(l.OH)))
					for ow := 0; ow < l.OW; ow++ {
						w0 := int(math.Floor(float64(ow*l.W) / float64(l.OW)))
						w1 := int(math.Ceil(float64((ow+1)*l.W) / float64(l.OW)))
						best, sum := math.Inf(-1), 0.0
						for ih := h0; ih < h1; ih++ {
							for iw := w0; iw < w1; iw++ {
								v := x.v[(i*l.H+ih)*l.W+iw]
								best = math.Max(best, v)
								sum += v
							}
						}
						if !l.Max {
							best = sum / float64((h1-h0)*(w1-w0))
						}
						y.v[(i*l.OH+oh)*l.OW+ow] = best
					}
				}
			}
			x = y
		case *engine.Linear:
			w, b := get(l.W), get(l.B)
			y := tensor64{x.n, []int{l.Out}, make([]float64, x.n*l.Out)}
			for i := 0; i < x.n; i++ {
				for o := 0; o < l.Out; o++ {
					s := 0.0
					if b != nil {
						s = b[o]
					}
					for k := 0; k < l.In; k++ {
						s += w[o*l.In+k] * x.v[i*l.In+k]
					}
					y.v[i*l.Out+o] = s
				}
			}
			x = y
		case *engine.Conv2D:
			w, b := get(l.Weight), get(l.B)
			y := tensor64{x.n, []int{l.OutC, l.OH, l.OW}, make([]float64, x.n*l.OutC*l.OH*l.OW)}
			for i := 0; i < x.n; i++ {
				for o := 0; o < l.OutC; o++ {
					for oh := 0; oh < l.OH; oh++ {
						for ow := 0; ow < l.OW; ow++ {
							s := 0.0
							if b != nil {
								s = b[o]
							}
							cg := l.InC / l.G // channels per group
							g := o / (l.OutC / l.G)
							for c := 0; c < cg; c++ {
								for kh := 0; kh < l.KH; kh++ {
									for kw := 0; kw < l.KW; kw++ {
										ih, iw := oh*l.SH-l.PH+kh*l.DH, ow*l.SW-l.PW+kw*l.DW
										if ih >= 0 && ih < l.H && iw >= 0 && iw < l.W {
											s += w[((o*cg+c)*l.KH+kh)*l.KW+kw] * x.v[((i*l.InC+g*cg+c)*l.H+ih)*l.W+iw]
										}
									}
								}
							}
							y.v[((i*l.OutC+o)*l.OH+oh)*l.OW+ow] = s
						}
					}
				}
			}
			x = y
		case *engine.BatchNorm:
			g, b := get(l.Weight), get(l.Bias)
			y := tensor64{x.n, x.shape, make([]float64, len(x.v))}
			for c := 0; c < l.C; c++ {
				var vals []int
				for i := 0; i < x.n; i++ {
					for j := 0; j < l.Inner; j++ {
						vals = append(vals, i*l.C*l.Inner+c*l.Inner+j)
					}
				}
				mean, vr := 0.0, 0.0
				for _, k := range vals {
					mean += x.v[k]
				}
				mean /= float64(len(vals))
				for _, k := range vals {
					vr += (x.v[k] - mean) * (x.v[k] - mean)
				}
				vr /= float64(len(vals))
				if eval {
					mean, vr = get(l.Mean)[c], get(l.Var)[c]
				}
				for _, k := range vals {
					y.v[k] = (x.v[k]-mean)/math.Sqrt(vr+l.Eps)*g[c] + b[c]
				}
			}
			x = y
		case *engine.Activation:
			y := tensor64{x.n, x.shape, make([]float64, len(x.v))}
			for k, v := range x.v {
				switch l.Kind {
				case "relu":
					y.v[k] = math.Max(v, 0)
				case "relu6":
					y.v[k] = math.Min(math.Max(v, 0), 6)
				case "silu":
					y.v[k] = v / (1 + math.Exp(-v))
				case "leaky_relu":
					if v < 0 {
						v *= l.Slope
					}
					y.v[k] = v
				case "tanh":
					y.v[k] = math.Tanh(v)
				case "sigmoid":
					y.v[k] = 1 / (1 + math.Exp(-v))
				case "gelu":
					if l.Tanh {
						y.v[k] = 0.5 * v * (1 + math.Tanh(math.Sqrt(2/math.Pi)*(v+0.044715*v*v*v)))
					} else {
						y.v[k] = v * 0.5 * math.Erfc(-v/math.Sqrt2)
					}
				}
			}
			x = y
		case *engine.Pool2D:
			y := tensor64{x.n, []int{l.C, l.OH, l.OW}, make([]float64, x.n*l.C*l.OH*l.OW)}
			for i := 0; i < x.n*l.C; i++ {
				for oh := 0; oh < l.OH; oh++ {
					for ow := 0; ow < l.OW; ow++ {
						best, sum, cnt := math.Inf(-1), 0.0, 0
						for kh := 0; kh < l.KH; kh++ {
							for kw := 0; kw < l.KW; kw++ {
								ih, iw := oh*l.SH-l.PH+kh*l.DH, ow*l.SW-l.PW+kw*l.DW
								if ih < 0 || ih >= l.H || iw < 0 || iw >= l.W {
									continue
								}
								v := x.v[(i*l.H+ih)*l.W+iw]
								best = math.Max(best, v)
								sum += v
								cnt++
							}
						}
						o := (i*l.OH+oh)*l.OW + ow
						switch {
						case l.Max:
							y.v[o] = best
						case l.CountIncludePad:
							// PyTorch counts the window's part inside the padded input.
							h0, w0 := oh*l.SH-l.PH, ow*l.SW-l.PW
							hh := min(h0+l.KH, l.H+l.PH) - h0
							ww := min(w0+l.KW, l.W+l.PW) - w0
							y.v[o] = sum / float64(hh*ww)
						default:
							y.v[o] = sum / float64(cnt)
						}
					}
				}
			}
			x = y
		case *engine.Flatten:
			x = tensor64{x.n, []int{x.per()}, x.v}
		case *engine.Dropout, *engine.Softmax:
			// Dropout is off; the loss below works on the logits.
		}
	}
	return x
}

func refLoss(z tensor64, labels []int) float64 {
	k := z.per()
	var loss float64
	for i, lab := range labels {
		row := z.v[i*k : (i+1)*k]
		m := math.Inf(-1)
		for _, v := range row {
			m = math.Max(m, v)
		}
		s := 0.0
		for _, v := range row {
			s += math.Exp(v - m)
		}
		loss += m + math.Log(s) - row[lab]
	}
	return loss / float64(len(labels))
}

func f(v float64) *float64 { return &v }

func gradArchs() map[string]*engine.Arch {
	no := false
	return map[string]*engine.Arch{
		"cnn": {Input: engine.Input{Shape: []int{2, 7, 7}}, Layers: []engine.LayerSpec{
			{Type: "conv2d", Name: "c1", Out: 4, Kernel: engine.Pair{3, 3}, Stride: engine.Pair{2, 2}, Padding: engine.Pair{1, 1}},
			{Type: "batchnorm2d", Name: "b1"},
			{Type: "relu"},
			{Type: "maxpool2d", Kernel: engine.Pair{3, 3}, Stride: engine.Pair{2, 2}, Padding: engine.Pair{1, 1}},
			{Type: "conv2d", Name: "c2", Out: 3, Kernel: engine.Pair{2, 1}, Bias: &no},
			{Type: "avgpool2d", Kernel: engine.Pair{2, 2}, Stride: engine.Pair{1, 1}, Padding: engine.Pair{1, 1}, CountIncludePad: &no},
			{Type: "flatten"},
			{Type: "dropout", P: f(0.5)},
			{Type: "linear", Name: "l1", Out: 8},
			{Type: "gelu"},
			{Type: "linear", Name: "l2", Out: 5},
		}},
		// A graph: a residual block with a downsample branch, one with the
		// identity, a concat with an empty branch, grouped, depthwise and
		// dilated convolutions, ceil-mode pooling, adaptive pooling.
		"graph": {Input: engine.Input{Shape: []int{4, 9, 8}}, Layers: []engine.LayerSpec{
			{Type: "conv2d", Name: "stem", Out: 4, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}, Groups: 2},
			{Type: "maxpool2d", Kernel: engine.Pair{2, 2}, Stride: engine.Pair{1, 1}, Dilation: engine.Pair{2, 2}},
			{Type: "residual", Name: "b1", Body: []engine.LayerSpec{
				{Type: "conv2d", Name: "c1", Out: 6, Kernel: engine.Pair{3, 3}, Stride: engine.Pair{2, 2}, Padding: engine.Pair{2, 2}, Dilation: engine.Pair{2, 2}, Bias: &no},
				{Type: "batchnorm2d", Name: "bn1"},
				{Type: "relu6"},
				{Type: "conv2d", Name: "dw", Out: 6, Kernel: engine.Pair{3, 3}, Padding: engine.Pair{1, 1}, Groups: 6},
			}, Shortcut: []engine.LayerSpec{
				{Type: "conv2d", Name: "down", Out: 6, Kernel: engine.Pair{1, 1}, Stride: engine.Pair{2, 2}, Bias: &no},
			}},
			{Type: "silu"},
			{Type: "residual", Name: "b2", Body: []engine.LayerSpec{
				{Type: "batchnorm2d", Name: "bn"},
				{Type: "conv2d", Name: "c", Out: 6, Kernel: engine.Pair{1, 1}},
			}},
			{Type: "adaptive_maxpool2d", Output: engine.Pair{3, 2}},
			{Type: "concat", Name: "cat", Branches: [][]engine.LayerSpec{
				{{Type: "conv2d", Name: "0", Out: 3, Kernel: engine.Pair{1, 1}}, {Type: "relu"}},
				{},
			}},
			{Type: "avgpool2d", Kernel: engine.Pair{2, 2}, Stride: engine.Pair{2, 2}, CeilMode: true},
			{Type: "adaptive_avgpool2d", Output: engine.Pair{1, 1}},
			{Type: "flatten"},
			{Type: "linear", Name: "fc", Out: 5},
		}},
		"mlp": {Input: engine.Input{Shape: []int{6}}, Layers: []engine.LayerSpec{
			{Type: "linear", Name: "a", Out: 10},
			{Type: "batchnorm1d", Name: "bn"},
			{Type: "leaky_relu", NegativeSlope: f(0.1)},
			{Type: "linear", Name: "b", Out: 7},
			{Type: "tanh"},
			{Type: "linear", Name: "c", Out: 6},
			{Type: "sigmoid"},
			{Type: "linear", Name: "d", Out: 5},
			{Type: "gelu", Approximate: "tanh"},
			{Type: "linear", Name: "e", Out: 4},
			{Type: "log_softmax"},
		}},
	}
}

func TestGradientsFiniteDifferences(t *testing.T) {
	for _, eval := range []bool{false, true} {
		t.Run(map[bool]string{false: "train", true: "eval"}[eval], func(t *testing.T) { checkGradients(t, eval) })
	}
}

func checkGradients(t *testing.T, eval bool) {
	for name, a := range gradArchs() {
		m, err := engine.New(a)
		if err != nil {
			t.Fatal(name, err)
		}
		Init(m, 7)
		r, rs := dataset.NewRand(99), dataset.NewRand(98)
		// Non-trivial batchnorm affine parameters.
		for _, p := range m.Params() {
			if p.Role == "weight" && len(p.Shape) == 1 {
				for i := range p.Data {
					p.Data[i] = float32(r.Uniform(0.5, 1.5))
				}
			}
			if p.Role == "bias" && len(p.Shape) == 1 {
				for i := range p.Data {
					p.Data[i] = float32(r.Uniform(-0.5, 0.5))
				}
			}
			// Running statistics matter in evaluation mode (their own
			// stream, so the training-mode case sees the data it always did).
			if p.Role == "running_mean" {
				for i := range p.Data {
					p.Data[i] = float32(rs.Uniform(-0.3, 0.3))
				}
			}
			if p.Role == "running_var" {
				for i := range p.Data {
					p.Data[i] = float32(rs.Uniform(0.5, 2))
				}
			}
		}
		n := 5
		x := make([]float32, n*m.InputSize())
		for i := range x {
			x[i] = float32(r.NormFloat64())
		}
		labels := make([]int, n)
		for i := range labels {
			labels[i] = r.Intn(m.NumClasses())
		}
		gradients := Gradients
		if eval {
			gradients = GradientsEval
		}
		loss, grads, err := gradients(m, x, labels)
		if err != nil {
			t.Fatal(err)
		}
		params := m.Params()
		p64 := make([][]float64, len(params))
		for i, p := range params {
			p64[i] = make([]float64, len(p.Data))
			for j, v := range p.Data {
				p64[i][j] = float64(v)
			}
		}
		x64 := tensor64{n, m.InputShape(), make([]float64, len(x))}
		for i, v := range x {
			x64.v[i] = float64(v)
		}
		L := func() float64 { return refLoss(refForwardMode(m, p64, x64, eval), labels) }
		if ref := L(); math.Abs(ref-loss) > 1e-5*math.Max(1, ref) {
			t.Errorf("%s: loss %v, float64 reference %v", name, loss, ref)
		}
		const h = 1e-6
		checked := 0
		for i, p := range params {
			if grads[i] == nil {
				continue
			}
			fd := make([]float64, len(p.Data))
			scale := 0.0
			for j := range p64[i] {
				old := p64[i][j]
				p64[i][j] = old + h
				lp := L()
				p64[i][j] = old - h
				lm := L()
				p64[i][j] = old
				fd[j] = (lp - lm) / (2 * h)
				scale = math.Max(scale, math.Abs(fd[j]))
			}
			for j := range fd {
				if d := math.Abs(float64(grads[i][j]) - fd[j]); d > 2e-3*scale+1e-6 {
					t.Errorf("%s: d loss / d %s[%d] = %.6g, finite differences %.6g", name, p.Name, j, grads[i][j], fd[j])
				}
				checked++
			}
			if scale == 0 {
				t.Errorf("%s: %s has an all-zero gradient; the check proves nothing", name, p.Name)
			}
		}
		t.Logf("%s: %d gradient entries checked", name, checked)
		if name == "graph" {
			var shapes [][]int
			engine.Walk(m.Layers, func(l engine.Layer) { shapes = append(shapes, l.OutShape()) })
			t.Logf("graph shapes: %v", shapes)
		}
	}
}

// TestRunningStats checks the running statistics a training step leaves:
// PyTorch's momentum update with the unbiased batch variance.
func TestRunningStats(t *testing.T) {
	a := &engine.Arch{Input: engine.Input{Shape: []int{3}}, Layers: []engine.LayerSpec{
		{Type: "batchnorm1d", Name: "bn", Momentum: 0.25}, {Type: "linear", Name: "l", Out: 2}}}
	m, _ := engine.New(a)
	Init(m, 1)
	x := []float32{1, 2, 3, 4, 6, 8, 7, 10, 2, 0, 0, 3}
	tn, _ := newNet(m)
	tn.forward(x, 4, true, true, nil)
	bn := m.Layers[0].(*engine.BatchNorm)
	for c := 0; c < 3; c++ {
		var mean, ss float64
		for i := 0; i < 4; i++ {
			mean += float64(x[i*3+c]) / 4
		}
		for i := 0; i < 4; i++ {
			d := float64(x[i*3+c]) - mean
			ss += d * d
		}
		wantM, wantV := 0.25*mean, 0.75+0.25*ss/3
		if math.Abs(float64(bn.Mean.Data[c])-wantM) > 1e-6 || math.Abs(float64(bn.Var.Data[c])-wantV) > 1e-6 {
			t.Errorf("channel %d: running mean %v var %v, want %v %v", c, bn.Mean.Data[c], bn.Var.Data[c], wantM, wantV)
		}
	}
	if bn.NumBatchesTracked != 1 {
		t.Errorf("num_batches_tracked %d", bn.NumBatchesTracked)
	}
}
