package dataset

import "math"

// ---- weather ----

// plasmaUniforms draws the diamond-square uniforms in the published
// order, for a map of size the next power of two ≥ max(h, w) (32 for
// CIFAR): per step, the squares then the two diamond sets.
func plasmaUniforms(x *hwc, s int, r *Rand) []float64 {
	n := mapSize(x)
	var out []float64
	for step := n; step >= 2; step /= 2 {
		k := (n / step) * (n / step)
		out = append(out, uniforms(r, 3*k)...)
	}
	return out
}

func mapSize(x *hwc) int {
	n := 32
	for n < x.h || n < x.w {
		n *= 2
	}
	return n
}

// plasma is the published plasma_fractal (diamond-square) fed with
// uniforms in [0, 1) (mapped to [−wibble, wibble) as np.random.uniform
// does), normalised to [0, 1].
func plasma(n int, decay float64, u []float64) []float64 {
	m := make([]float64, n*n)
	wibble := 100.0
	ui := 0
	draw := func() float64 {
		v := -wibble + 2*wibble*u[ui]
		ui++
		return v
	}
	at := func(y, x int) *float64 { return &m[((y%n+n)%n)*n+(x%n+n)%n] }
	for step := n; step >= 2; step /= 2 {
		half := step / 2
		g := n / step
		// squares: corner sums of each square, centre = mean + wibble.
		for a := 0; a < g; a++ {
			for b := 0; b < g; b++ {
				y, x := a*step, b*step
				// (c[a][b] + c[a+1][b]) + (c[a][b+1] + c[a+1][b+1]), numpy's order.
				sum := (*at(y, x) + *at(y+step, x)) + (*at(y, x+step) + *at(y+step, x+step))
				*at(y+half, x+half) = sum/4 + wibble*draw()
			}
		}
		// diamonds: the points between corners along rows, then columns.
		vals := make([]float64, 2*g*g)
		for a := 0; a < g; a++ {
			for b := 0; b < g; b++ {
				y, x := a*step, b*step
				// row point (y, x+half): the centres above and below, the corners left and right.
				vals[a*g+b] = ((*at(y+half, x+half)+*at(y-half, x+half))+(*at(y, x)+*at(y, x+step)))/4 + wibble*draw()
			}
		}
		for a := 0; a < g; a++ {
			for b := 0; b < g; b++ {
				*at(a*step, b*step+half) = vals[a*g+b]
			}
		}
		for a := 0; a < g; a++ {
			for b := 0; b < g; b++ {
				y, x := a*step, b*step
				vals[g*g+a*g+b] = ((*at(y+half, x+half)+*at(y+half, x-half))+(*at(y, x)+*at(y+step, x)))/4 + wibble*draw()
			}
		}
		for a := 0; a < g; a++ {
			for b := 0; b < g; b++ {
				*at(a*step+half, b*step) = vals[g*g+a*g+b]
			}
		}
		wibble /= decay
	}
	lo, hi := math.Inf(1), math.Inf(-1)
	for _, v := range m {
		lo = math.Min(lo, v)
	}
	for i := range m {
		m[i] -= lo
		hi = math.Max(hi, m[i])
	}
	for i := range m {
		m[i] /= hi
	}
	return m
}

var fogParams = [][2]float64{{.2, 3}, {.5, 3}, {0.75, 2.5}, {1, 2}, {1.5, 1.75}}

func (x *hwc) fog(s int, u []float64) {
	c := fogParams[s-1]
	n := mapSize(x)
	f := plasma(n, c[1], u)
	mx := math.Inf(-1)
	for _, v := range x.v {
		mx = math.Max(mx, v)
	}
	for y := 0; y < x.h; y++ {
		for i := 0; i < x.w; i++ {
			for ch := 0; ch < 3; ch++ {
				p := (y*x.w+i)*3 + ch
				x.v[p] = (x.v[p] + c[0]*f[y*n+i]) * mx / (mx + c[0])
			}
		}
	}
	x.clip()
}

// frost blends the image with frost: x·c0 + c1·frost (frost in [0, 255]
// per channel). The published version crops one of six photographs of
// frost; those are not distributed here, so the frost layer is a
// procedural texture of ice crystals — a plasma fractal for the haze,
// sharpened by thresholded ridge lines — tinted pale blue-white, with the
// published blend weights. Its figures are comparable in kind, not
// equal, to the benchmark's frost.
func (x *hwc) frost(s int, r *Rand) {
	c := [][2]float64{{1, 0.2}, {1, 0.3}, {0.9, 0.4}, {0.85, 0.4}, {0.75, 0.45}}[s-1]
	n := mapSize(x)
	haze := plasma(n, 2, plasmaUniforms(x, s, r))
	fine := plasma(n, 1.4, plasmaUniforms(x, s, r))
	tint := [3]float64{200, 220, 240}
	for y := 0; y < x.h; y++ {
		for i := 0; i < x.w; i++ {
			ridge := 1 - math.Abs(2*fine[y*n+i]-1) // bright where the fine field crosses its middle
			f := 0.55*haze[y*n+i] + 0.45*math.Pow(ridge, 4)
			for ch := 0; ch < 3; ch++ {
				p := (y*x.w+i)*3 + ch
				x.v[p] = (c[0]*x.v[p]*255 + c[1]*f*tint[ch]) / 255
			}
		}
	}
	x.clip()
}

var snowParams = [][7]float64{
	{0.1, 0.2, 1, 0.6, 8, 3, 0.95},
	{0.1, 0.2, 1, 0.5, 10, 4, 0.9},
	{0.15, 0.3, 1.75, 0.55, 10, 4, 0.9},
	{0.25, 0.3, 2.25, 0.6, 12, 6, 0.85},
	{0.3, 0.3, 1.25, 0.65, 14, 12, 0.8},
}

// snow: a thresholded, zoomed Gaussian layer of flakes, motion-blurred
// (ImageMagick, through 8 bits), added twice (once rotated by 180°) to
// the image brightened towards 1.5·gray + 0.5.
func (x *hwc) snow(s int, n []float64, angle float64) {
	c := snowParams[s-1]
	layer := make([]float64, x.h*x.w)
	for i := range layer {
		layer[i] = c[0] + c[1]*n[i]
	}
	layer = clippedZoom(layer, x.h, x.w, 1, c[2])
	for i, v := range layer {
		if v < c[3] {
			v = 0
		}
		layer[i] = math.Floor(min(max(v, 0), 1) * 255) // astype(uint8)
	}
	layer = motionBlur(layer, x.h, x.w, c[4], c[5], angle)
	for i := range layer {
		layer[i] /= 255
	}
	f := make([]float32, len(x.v))
	for i, v := range x.v {
		f[i] = float32(v)
	}
	for y := 0; y < x.h; y++ {
		for i := 0; i < x.w; i++ {
			p := (y*x.w + i) * 3
			// cv2.cvtColor RGB2GRAY on float32.
			gray := float32(0.299)*f[p] + float32(0.587)*f[p+1] + float32(0.114)*f[p+2]
			// float32 throughout, as numpy with a float32 image, until
			// the float64 snow layer is added (once as is, once rotated 180°).
			for ch := 0; ch < 3; ch++ {
				v := f[p+ch]
				t := float32(c[6])*v + float32(1-c[6])*max(v, gray*float32(1.5)+float32(0.5))
				x.v[p+ch] = (float64(t) + layer[y*x.w+i]) + layer[(x.h-1-y)*x.w+(x.w-1-i)]
			}
		}
	}
	x.clip()
}
