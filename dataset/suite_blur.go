package dataset

import "math"

// ---- noise ----

func (x *hwc) gaussianNoise(s int, n []float64) {
	c := []float64{0.04, 0.06, .08, .09, .10}[s-1]
	for i, v := range x.v {
		x.v[i] = v + c*n[i]
	}
	x.clip()
}

func (x *hwc) shotNoise(s int, r *Rand) {
	c := []float64{500, 250, 100, 75, 50}[s-1]
	k := make([]float64, len(x.v))
	for i, v := range x.v {
		k[i] = poisson(r, v*c)
	}
	x.shotNoiseFrom(s, k)
}

// shotNoiseFrom applies drawn Poisson counts k (means x·c).
func (x *hwc) shotNoiseFrom(s int, k []float64) {
	c := []float64{500, 250, 100, 75, 50}[s-1]
	for i := range x.v {
		x.v[i] = k[i] / c
	}
	x.clip()
}

// impulseNoise is skimage's salt-and-pepper (amount c, half salt): each
// value is flipped with probability c (u1 ≤ c), to 1 when u2 ≤ 0.5, else 0.
func (x *hwc) impulseNoise(s int, u1, u2 []float64) {
	c := []float64{.01, .02, .03, .05, .07}[s-1]
	for i := range x.v {
		if u1[i] <= c {
			if u2[i] <= 0.5 {
				x.v[i] = 1
			} else {
				x.v[i] = 0
			}
		}
	}
	x.clip()
}

func (x *hwc) speckleNoise(s int, n []float64) {
	c := []float64{.06, .1, .12, .16, .2}[s-1]
	for i, v := range x.v {
		x.v[i] = v + v*c*n[i]
	}
	x.clip()
}

// ---- blurs ----

// gaussianFilter is scipy.ndimage.gaussian_filter over the two spatial
// axes (sigma 0 over channels) with the given boundary mode ("nearest"
// or "reflect") and truncation (radius ⌊truncate·σ + 0.5⌋).
func gaussianFilter(v []float64, h, w, c int, sigma, truncate float64, mode string) {
	if sigma <= 0 {
		return
	}
	rad := int(truncate*sigma + 0.5)
	k := make([]float64, 2*rad+1)
	var sum float64
	for i := range k {
		d := float64(i - rad)
		k[i] = math.Exp(-0.5 * d * d / (sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	idx := func(i, n int) int {
		if mode == "nearest" {
			return min(max(i, 0), n-1)
		}
		return reflectIndex(i, n)
	}
	tmp := make([]float64, len(v))
	// scipy filters axis 0 (rows) first, then axis 1.
	for y := 0; y < h; y++ {
		for i := 0; i < w; i++ {
			for ch := 0; ch < c; ch++ {
				var acc float64
				for t, kv := range k {
					acc += kv * v[(idx(y+t-rad, h)*w+i)*c+ch]
				}
				tmp[(y*w+i)*c+ch] = acc
			}
		}
	}
	for y := 0; y < h; y++ {
		for i := 0; i < w; i++ {
			for ch := 0; ch < c; ch++ {
				var acc float64
				for t, kv := range k {
					acc += kv * tmp[(y*w+idx(i+t-rad, w))*c+ch]
				}
				v[(y*w+i)*c+ch] = acc
			}
		}
	}
}

// reflectIndex is scipy's "reflect" boundary (d c b a | a b c d | d c b a).
func reflectIndex(i, n int) int {
	if n == 1 {
		return 0
	}
	p := 2 * n
	i %= p
	if i < 0 {
		i += p
	}
	if i >= n {
		i = p - 1 - i
	}
	return i
}

// reflect101 is OpenCV's BORDER_REFLECT_101 (d c b | a b c d | c b a).
func reflect101(i, n int) int {
	if n == 1 {
		return 0
	}
	p := 2 * (n - 1)
	i %= p
	if i < 0 {
		i += p
	}
	if i >= n {
		i = p - i
	}
	return i
}

func (x *hwc) gaussianBlurSev(s int) {
	c := []float64{.4, .6, 0.7, .8, 1}[s-1]
	gaussianFilter(x.v, x.h, x.w, 3, c, 4, "nearest")
	x.clip()
}

// glassShifts draws the glass blur's pixel displacements in the order of
// the published loops: randint(−d, d) for dx then dy.
func glassShifts(x *hwc, s int, r *Rand) []int {
	c := glassParams[s-1]
	d, it := int(c[1]), int(c[2])
	n := it * max(x.h-2*d, 0) * max(x.w-2*d, 0) * 2
	out := make([]int, n)
	for i := range out {
		out[i] = -d + r.Intn(2*d)
	}
	return out
}

var glassParams = [][3]float64{{0.05, 1, 1}, {0.25, 1, 1}, {0.4, 1, 1}, {0.25, 1, 2}, {0.4, 1, 2}}

// glassBlur: blur, truncate to 8 bits, move pixels locally, blur again.
// The published loop's swap x[h, w], x[h', w'] = x[h', w'], x[h, w] acts
// on numpy views of the pixels, so it copies pixel (h', w') onto (h, w)
// and leaves (h', w') as it was; this does the same.
func (x *hwc) glassBlur(s int, shifts []int) {
	c := glassParams[s-1]
	d, it := int(c[1]), int(c[2])
	gaussianFilter(x.v, x.h, x.w, 3, c[0], 4, "nearest")
	for i, v := range x.v {
		x.v[i] = math.Floor(min(max(v, 0), 1)*255) / 255
	}
	k := 0
	for t := 0; t < it; t++ {
		for hh := x.h - d; hh > d; hh-- {
			for ww := x.w - d; ww > d; ww-- {
				dx, dy := shifts[k], shifts[k+1]
				k += 2
				hp, wp := hh+dy, ww+dx
				copy(x.v[(hh*x.w+ww)*3:(hh*x.w+ww)*3+3], x.v[(hp*x.w+wp)*3:(hp*x.w+wp)*3+3])
			}
		}
	}
	gaussianFilter(x.v, x.h, x.w, 3, c[0], 4, "nearest")
	x.clip()
}

// disk is the published defocus kernel: an aliased disk of the radius on
// a 17×17 grid (wider past radius 8), normalised, then smoothed by
// OpenCV's GaussianBlur with a k×k kernel of the given sigma (float32, as
// the published code's dtype).
func disk(radius, alias float64) (k []float64, n int) {
	lim, ks := 8, 3
	if radius > 8 {
		lim, ks = int(radius), 5
	}
	n = 2*lim + 1
	a := make([]float32, n*n)
	var sum float32
	for y := 0; y < n; y++ {
		for i := 0; i < n; i++ {
			X, Y := float64(i-lim), float64(y-lim)
			if X*X+Y*Y <= radius*radius {
				a[y*n+i] = 1
				sum++
			}
		}
	}
	for i := range a {
		a[i] /= sum
	}
	g := gaussKernel(ks, alias)
	out := make([]float64, n*n)
	tmp := make([]float64, n*n)
	half := ks / 2
	for y := 0; y < n; y++ {
		for i := 0; i < n; i++ {
			var acc float64
			for t, kv := range g {
				acc += kv * float64(a[y*n+reflect101(i+t-half, n)])
			}
			tmp[y*n+i] = float64(float32(acc))
		}
	}
	for y := 0; y < n; y++ {
		for i := 0; i < n; i++ {
			var acc float64
			for t, kv := range g {
				acc += kv * tmp[reflect101(y+t-half, n)*n+i]
			}
			out[y*n+i] = float64(float32(acc))
		}
	}
	return out, n
}

// gaussKernel is OpenCV's getGaussianKernel for an explicit sigma.
func gaussKernel(n int, sigma float64) []float64 {
	k := make([]float64, n)
	var sum float64
	for i := range k {
		d := float64(i - (n-1)/2)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	return k
}

// filter2D is OpenCV's filter2D (correlation, anchor at the centre,
// BORDER_REFLECT_101) of one channel.
func filter2D(v []float64, h, w, c, ch int, k []float64, n int) []float64 {
	out := make([]float64, h*w)
	half := n / 2
	for y := 0; y < h; y++ {
		for i := 0; i < w; i++ {
			var acc float64
			for ky := 0; ky < n; ky++ {
				yy := reflect101(y+ky-half, h)
				for kx := 0; kx < n; kx++ {
					acc += k[ky*n+kx] * v[(yy*w+reflect101(i+kx-half, w))*c+ch]
				}
			}
			out[y*w+i] = acc
		}
	}
	return out
}

func (x *hwc) defocusBlur(s int) {
	c := [][2]float64{{0.3, 0.4}, {0.4, 0.5}, {0.5, 0.6}, {1, 0.2}, {1.5, 0.1}}[s-1]
	k, n := disk(c[0], c[1])
	for ch := 0; ch < 3; ch++ {
		f := filter2D(x.v, x.h, x.w, 3, ch, k, n)
		for p, v := range f {
			x.v[p*3+ch] = v
		}
	}
	x.clip()
}

// motionBlur is ImageMagick's MotionBlurImage on an 8-bit image (the
// published code passes a PNG): a one-sided Gaussian of width 2⌈radius⌉+1
// along the angle, edge pixels repeated, in 16-bit quantum then back to 8
// bits. v holds one channel's 8-bit values.
func motionBlur(v []float64, h, w int, radius, sigma, angle float64) []float64 {
	width := int(2*math.Ceil(radius) + 1)
	k := make([]float64, width)
	var norm float64
	for i := range k {
		k[i] = math.Exp(-float64(i*i)/(2*sigma*sigma)) / (math.Sqrt(2*math.Pi) * sigma)
		norm += k[i]
	}
	for i := range k {
		k[i] /= norm
	}
	rad := angle * math.Pi / 180
	px, py := float64(width)*math.Sin(rad), float64(width)*math.Cos(rad)
	hyp := math.Hypot(px, py)
	ox, oy := make([]int, width), make([]int, width)
	for i := range ox {
		ox[i] = int(math.Ceil(float64(i)*py/hyp - 0.5))
		oy[i] = int(math.Ceil(float64(i)*px/hyp - 0.5))
	}
	out := make([]float64, h*w)
	for y := 0; y < h; y++ {
		for i := 0; i < w; i++ {
			var acc float64
			for j, kv := range k {
				yy, xx := min(max(y+oy[j], 0), h-1), min(max(i+ox[j], 0), w-1)
				acc += kv * v[yy*w+xx] * 257
			}
			// ClampToQuantum rounds to 16 bits; the 8-bit PNG then holds
			// q/257 truncated (matched against ImageMagick 6.9.11 Q16).
			q := math.Min(math.Max(math.Floor(acc+0.5), 0), 65535)
			out[y*w+i] = math.Floor(q / 257)
		}
	}
	return out
}

func (x *hwc) motionBlurSev(s int, angle float64) {
	c := [][2]float64{{6, 1}, {6, 1.5}, {6, 2}, {8, 2}, {9, 2.5}}[s-1]
	for ch := 0; ch < 3; ch++ {
		p := make([]float64, x.h*x.w)
		for i := range p {
			p[i] = math.Floor(x.v[i*3+ch]*255 + 0.5) // the PNG's 8 bits
		}
		o := motionBlur(p, x.h, x.w, c[0], c[1], angle)
		for i, v := range o {
			x.v[i*3+ch] = v
		}
	}
	x.bytes = true
}

// zoom is scipy.ndimage.zoom with order 1 on the spatial axes of a
// [h, w, c] block: output size round(n·z), input coordinate
// o·(n − 1)/(m − 1), linear interpolation.
func zoom(v []float64, h, w, c int, z float64) ([]float64, int, int) {
	// Python's round: half to even.
	oh, ow := int(math.RoundToEven(float64(h)*z)), int(math.RoundToEven(float64(w)*z))
	out := make([]float64, oh*ow*c)
	coord := func(o, n, m int) (int, float64) {
		if m <= 1 {
			return 0, 0
		}
		f := float64(o) * float64(n-1) / float64(m-1)
		i := int(math.Floor(f))
		if i >= n-1 {
			return n - 2, 1
		}
		return i, f - float64(i)
	}
	for y := 0; y < oh; y++ {
		y0, fy := coord(y, h, oh)
		for i := 0; i < ow; i++ {
			x0, fx := coord(i, w, ow)
			for ch := 0; ch < c; ch++ {
				a := v[(y0*w+x0)*c+ch]
				b := v[(y0*w+x0+1)*c+ch]
				d := v[((y0+1)*w+x0)*c+ch]
				e := v[((y0+1)*w+x0+1)*c+ch]
				out[(y*ow+i)*c+ch] = (1-fy)*((1-fx)*a+fx*b) + fy*((1-fx)*d+fx*e)
			}
		}
	}
	return out, oh, ow
}

// clippedZoom is the published clipped_zoom: zoom the centre crop
// ⌈n/z⌉ by z and cut the middle n back out.
func clippedZoom(v []float64, h, w, c int, z float64) []float64 {
	chh, cww := int(math.Ceil(float64(h)/z)), int(math.Ceil(float64(w)/z))
	top, left := (h-chh)/2, (w-cww)/2
	crop := make([]float64, chh*cww*c)
	for y := 0; y < chh; y++ {
		copy(crop[y*cww*c:(y+1)*cww*c], v[((top+y)*w+left)*c:((top+y)*w+left+cww)*c])
	}
	z2, zh, zw := zoom(crop, chh, cww, c, z)
	tt, tl := (zh-h)/2, (zw-w)/2
	out := make([]float64, h*w*c)
	for y := 0; y < h; y++ {
		copy(out[y*w*c:(y+1)*w*c], z2[((tt+y)*zw+tl)*c:((tt+y)*zw+tl+w)*c])
	}
	return out
}

func (x *hwc) zoomBlur(s int) {
	top := []float64{1.06, 1.11, 1.16, 1.21, 1.26}[s-1]
	// np.arange(1, top, 0.01) in float32 work, as the published code.
	f := make([]float32, len(x.v))
	for i, v := range x.v {
		f[i] = float32(v)
	}
	src := make([]float64, len(f))
	for i, v := range f {
		src[i] = float64(v)
	}
	out := make([]float32, len(f))
	n := int(math.Ceil((top - 1) / 0.01))
	// numpy's arange steps by (start + step) − start, not by step.
	one := 1.0
	delta := (one + 0.01) - one
	for j := 0; j < n; j++ {
		z := 1 + float64(j)*delta
		zz := clippedZoom(src, x.h, x.w, 3, z)
		for i, v := range zz {
			out[i] += float32(v)
		}
	}
	for i := range x.v {
		x.v[i] = float64((f[i] + out[i]) / float32(n+1))
	}
	x.clip()
	x.f32 = true
}
