package dataset

import (
	"fmt"
	"math"
	"slices"
	"strconv"
	"strings"
)

// The common-corruptions benchmark of Hendrycks & Dietterich (ImageNet-C,
// CIFAR-10-C): 15 corruptions, and 4 extra ones held out for validation,
// each at severities 1–5 with the parameters of the published CIFAR-10-C
// generator (make_cifar_c.py), which is written for 32×32 RGB images.
// Here they also run on other sizes (the 32s of the published code become
// the image's height and width) and on one-channel images (treated as RGB
// with three equal channels, and averaged back). As in the benchmark, the
// image is first quantized to 8 bits and the result truncated to 8 bits
// (the benchmark's np.uint8), so a corrupted sample is what its stored
// images hold. Randomness comes from the Rand given, one per image.
//
// Where the published code calls libraries, these are re-implemented
// from their definitions: scipy/skimage Gaussian filtering and zoom,
// OpenCV's filter2D, GaussianBlur, warpAffine, Canny, distance transform
// and equalizeHist, ImageMagick's motion blur, PIL's box resampling,
// libjpeg's JPEG round trip, skimage's HSV conversion — checked against
// those libraries' own output on the same draws (TestSuiteMatchesReference:
// bit for bit, or to float32 rounding). One differs on purpose: frost,
// whose published version blends crops of six photographs of frost that
// are not distributed with weightops, blends a procedural frost texture
// instead (see frost).

// Benchmark lists the 15 corruptions of the benchmark, in its order.
var Benchmark = []string{"gaussian_noise", "shot_noise", "impulse_noise", "defocus_blur", "glass_blur",
	"motion_blur", "zoom_blur", "snow", "frost", "fog", "brightness", "contrast", "elastic_transform",
	"pixelate", "jpeg_compression"}

// Extra lists the 4 held-out corruptions.
var Extra = []string{"speckle_noise", "gaussian_blur", "spatter", "saturate"}

// suiteFuncs maps each suite corruption to its implementation (severity
// 1–5; img is HWC in [0, 1]).
var suiteFuncs = map[string]func(img *hwc, s int, r *Rand){
	"gaussian_noise":    func(x *hwc, s int, r *Rand) { x.gaussianNoise(s, normals(r, len(x.v))) },
	"shot_noise":        func(x *hwc, s int, r *Rand) { x.shotNoise(s, r) },
	"impulse_noise":     func(x *hwc, s int, r *Rand) { x.impulseNoise(s, uniforms(r, len(x.v)), uniforms(r, len(x.v))) },
	"speckle_noise":     func(x *hwc, s int, r *Rand) { x.speckleNoise(s, normals(r, len(x.v))) },
	"gaussian_blur":     func(x *hwc, s int, _ *Rand) { x.gaussianBlurSev(s) },
	"glass_blur":        func(x *hwc, s int, r *Rand) { x.glassBlur(s, glassShifts(x, s, r)) },
	"defocus_blur":      func(x *hwc, s int, _ *Rand) { x.defocusBlur(s) },
	"motion_blur":       func(x *hwc, s int, r *Rand) { x.motionBlurSev(s, r.Uniform(-45, 45)) },
	"zoom_blur":         func(x *hwc, s int, _ *Rand) { x.zoomBlur(s) },
	"fog":               func(x *hwc, s int, r *Rand) { x.fog(s, plasmaUniforms(x, s, r)) },
	"frost":             func(x *hwc, s int, r *Rand) { x.frost(s, r) },
	"snow":              func(x *hwc, s int, r *Rand) { x.snow(s, normals(r, x.h*x.w), r.Uniform(-135, -45)) },
	"spatter":           func(x *hwc, s int, r *Rand) { x.spatter(s, normals(r, x.h*x.w)) },
	"contrast":          func(x *hwc, s int, _ *Rand) { x.contrastSev(s) },
	"brightness":        func(x *hwc, s int, _ *Rand) { x.brightnessSev(s) },
	"saturate":          func(x *hwc, s int, _ *Rand) { x.saturate(s) },
	"jpeg_compression":  func(x *hwc, s int, _ *Rand) { x.jpeg(s) },
	"pixelate":          func(x *hwc, s int, _ *Rand) { x.pixelateSev(s) },
	"elastic_transform": func(x *hwc, s int, r *Rand) { x.elastic(s, uniforms(r, 6), uniforms(r, x.h*x.w), uniforms(r, x.h*x.w)) },
}

// IsSuiteCorruption reports whether name is one of Benchmark or Extra.
func IsSuiteCorruption(name string) bool { _, ok := suiteFuncs[name]; return ok }

// ApplySuite corrupts one image (values in [0, 1], shape [C, H, W] with C
// = 1 or 3, or [H, W]) with a benchmark corruption at severity 1–5.
func ApplySuite(img []float32, shape []int, name string, severity int, r *Rand) error {
	f, ok := suiteFuncs[name]
	if !ok {
		return fmt.Errorf("unknown benchmark corruption %q (known: %s)", name, strings.Join(append(slices.Clone(Benchmark), Extra...), ", "))
	}
	if severity < 1 || severity > 5 {
		return fmt.Errorf("%s: severity %d outside 1..5", name, severity)
	}
	c, h, w := chw(shape)
	if c != 1 && c != 3 {
		return fmt.Errorf("%s: images with %d channels (want 1 or 3)", name, c)
	}
	if h < 4 || w < 4 {
		return fmt.Errorf("%s: images of %dx%d are too small (at least 4x4)", name, h, w)
	}
	x := fromCHW(img, c, h, w)
	f(x, severity, r)
	x.toCHW(img, c)
	return nil
}

// hwc is an RGB image as the published code holds it: height × width × 3
// float64 values, [0, 1] between steps.
type hwc struct {
	h, w, c int
	v       []float64
	// bytes marks v as 8-bit values 0..255 (the result of a step that
	// goes through an 8-bit image: PNG, PIL, JPEG), taken as they are.
	bytes bool
	// f32 marks a float32 result, scaled to 0..255 in float32 as numpy
	// does before the truncation.
	f32 bool
}

func newHWC(h, w, c int) *hwc { return &hwc{h: h, w: w, c: c, v: make([]float64, h*w*c)} }

func (x *hwc) clone() *hwc { return &hwc{x.h, x.w, x.c, slices.Clone(x.v), x.bytes, x.f32} }

// scaled is value i on the 0..255 scale the published code truncates.
func (x *hwc) scaled(i int) float64 {
	switch {
	case x.bytes:
		return x.v[i]
	case x.f32:
		return float64(float32(x.v[i]) * 255)
	}
	return x.v[i] * 255
}

// fromCHW quantizes a [C, H, W] image in [0, 1] to 8 bits (as the
// benchmark's uint8 images) and lays it out as RGB HWC.
func fromCHW(img []float32, c, h, w int) *hwc {
	x := newHWC(h, w, 3)
	for y := 0; y < h; y++ {
		for i := 0; i < w; i++ {
			for ch := 0; ch < 3; ch++ {
				v := float64(img[(min(ch, c-1)*h+y)*w+i])
				x.v[(y*w+i)*3+ch] = math.Round(min(max(v, 0), 1)*255) / 255
			}
		}
	}
	return x
}

// toCHW truncates to 8 bits as np.uint8 does (of the published clip·255)
// and writes the image back (one channel: the mean of the three).
func (x *hwc) toCHW(img []float32, c int) {
	q := func(i int) float64 { return math.Floor(min(max(x.scaled(i), 0), 255)) }
	for y := 0; y < x.h; y++ {
		for i := 0; i < x.w; i++ {
			p := (y*x.w + i) * 3
			if c == 1 {
				img[y*x.w+i] = float32((q(p) + q(p+1) + q(p+2)) / 3 / 255)
				continue
			}
			for ch := 0; ch < 3; ch++ {
				img[(ch*x.h+y)*x.w+i] = float32(q(p+ch) / 255)
			}
		}
	}
}

func (x *hwc) clip() {
	for i, v := range x.v {
		x.v[i] = min(max(v, 0), 1)
	}
}

// ---- random fields ----

func normals(r *Rand, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = r.NormFloat64()
	}
	return out
}

func uniforms(r *Rand, n int) []float64 {
	out := make([]float64, n)
	for i := range out {
		out[i] = r.Float64()
	}
	return out
}

// poisson draws from a Poisson distribution of mean lam: Knuth's product
// method below 10, Hörmann's transformed rejection (PTRS, as numpy)
// above.
func poisson(r *Rand, lam float64) float64 {
	if lam <= 0 {
		return 0
	}
	if lam < 10 {
		l, k, p := math.Exp(-lam), 0.0, 1.0
		for {
			p *= r.Float64()
			if p <= l {
				return k
			}
			k++
		}
	}
	slam, loglam := math.Sqrt(lam), math.Log(lam)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := r.Float64() - 0.5
		v := r.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lam + 0.43)
		if us >= 0.07 && v <= vr {
			return k
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lam+k*loglam-lg {
			return k
		}
	}
}

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

// ---- digital ----

func (x *hwc) contrastSev(s int) {
	c := []float64{.75, .5, .4, .3, 0.15}[s-1]
	for ch := 0; ch < 3; ch++ {
		var m float64
		for p := 0; p < x.h*x.w; p++ {
			m += x.v[p*3+ch]
		}
		m /= float64(x.h * x.w)
		for p := 0; p < x.h*x.w; p++ {
			x.v[p*3+ch] = (x.v[p*3+ch]-m)*c + m
		}
	}
	x.clip()
}

// rgb2hsv and hsv2rgb are skimage's conversions.
func rgb2hsv(r, g, b float64) (h, s, v float64) {
	v = math.Max(r, math.Max(g, b))
	delta := v - math.Min(r, math.Min(g, b))
	if delta == 0 {
		return 0, 0, v
	}
	s = delta / v
	// skimage assigns red, green, blue in turn, so on ties the last wins.
	switch {
	case b == v:
		h = 4 + (r-g)/delta
	case g == v:
		h = 2 + (b-r)/delta
	default:
		h = (g - b) / delta
	}
	h = math.Mod(h/6, 1)
	if h < 0 {
		h++
	}
	return h, s, v
}

func hsv2rgb(h, s, v float64) (r, g, b float64) {
	hi := math.Floor(h * 6)
	f := h*6 - hi
	p := v * (1 - s)
	q := v * (1 - f*s)
	t := v * (1 - (1-f)*s)
	switch int(math.Mod(hi, 6)) {
	case 0:
		return v, t, p
	case 1:
		return q, v, p
	case 2:
		return p, v, t
	case 3:
		return p, q, v
	case 4:
		return t, p, v
	}
	return v, p, q
}

func (x *hwc) hsvMap(f func(h, s, v float64) (float64, float64, float64)) {
	for p := 0; p < x.h*x.w; p++ {
		q := x.v[p*3 : p*3+3]
		h, s, v := f(rgb2hsv(q[0], q[1], q[2]))
		q[0], q[1], q[2] = hsv2rgb(h, s, v)
	}
	x.clip()
}

func (x *hwc) brightnessSev(s int) {
	c := []float64{.05, .1, .15, .2, .3}[s-1]
	x.hsvMap(func(h, s, v float64) (float64, float64, float64) { return h, s, min(max(v+c, 0), 1) })
}

func (x *hwc) saturate(s int) {
	c := [][2]float64{{0.3, 0}, {0.1, 0}, {1.5, 0}, {2, 0.1}, {2.5, 0.2}}[s-1]
	x.hsvMap(func(h, s, v float64) (float64, float64, float64) { return h, min(max(s*c[0]+c[1], 0), 1), v })
}

// boxResize is PIL's Image.resize with the BOX filter on 8-bit channels:
// the horizontal pass, rounded to 8 bits, then the vertical pass, with
// PIL's fixed-point coefficients (22 fractional bits).
func boxResize(v []float64, h, w, c, oh, ow int) []float64 {
	coeffs := func(in, out int) ([]int, [][]int32) {
		scale := float64(in) / float64(out)
		filterscale := math.Max(scale, 1)
		support := 0.5 * filterscale
		ss := 1 / filterscale
		bounds := make([]int, 2*out)
		ks := make([][]int32, out)
		for xx := 0; xx < out; xx++ {
			center := (float64(xx) + 0.5) * scale
			xmin := max(int(center-support+0.5), 0)
			xmax := min(int(center+support+0.5), in) - xmin
			wts := make([]float64, xmax)
			var ww float64
			for i := range wts {
				t := (float64(i+xmin) - center + 0.5) * ss
				if t >= -0.5 && t < 0.5 {
					wts[i] = 1
				}
				ww += wts[i]
			}
			k := make([]int32, xmax)
			for i := range wts {
				if ww != 0 {
					wts[i] /= ww
				}
				f := wts[i] * (1 << 22)
				if f < 0 {
					k[i] = int32(-0.5 + f)
				} else {
					k[i] = int32(0.5 + f)
				}
			}
			bounds[2*xx], bounds[2*xx+1] = xmin, xmax
			ks[xx] = k
		}
		return bounds, ks
	}
	clip8 := func(ss int64) float64 {
		v := ss >> 22
		return float64(min(max(v, 0), 255))
	}
	hb, hk := coeffs(w, ow)
	tmp := make([]float64, h*ow*c)
	for y := 0; y < h; y++ {
		for xx := 0; xx < ow; xx++ {
			for ch := 0; ch < c; ch++ {
				ss := int64(1 << 21)
				for i, k := range hk[xx] {
					ss += int64(v[(y*w+hb[2*xx]+i)*c+ch]) * int64(k)
				}
				tmp[(y*ow+xx)*c+ch] = clip8(ss)
			}
		}
	}
	vb, vk := coeffs(h, oh)
	out := make([]float64, oh*ow*c)
	for yy := 0; yy < oh; yy++ {
		for xx := 0; xx < ow; xx++ {
			for ch := 0; ch < c; ch++ {
				ss := int64(1 << 21)
				for i, k := range vk[yy] {
					ss += int64(tmp[((vb[2*yy]+i)*ow+xx)*c+ch]) * int64(k)
				}
				out[(yy*ow+xx)*c+ch] = clip8(ss)
			}
		}
	}
	return out
}

func (x *hwc) pixelateSev(s int) {
	c := []float64{0.95, 0.9, 0.85, 0.75, 0.65}[s-1]
	u8 := make([]float64, len(x.v))
	for i, v := range x.v {
		u8[i] = math.Round(v * 255)
	}
	sh, sw := int(float64(x.h)*c), int(float64(x.w)*c)
	small := boxResize(u8, x.h, x.w, 3, sh, sw)
	x.v = boxResize(small, sh, sw, 3, x.h, x.w)
	x.bytes = true
}

// ---- geometric ----

// elastic: a random affine warp of three points (OpenCV warpAffine,
// bilinear on a 1/32 grid, BORDER_REFLECT_101), then a smooth random
// displacement field (Gaussian-filtered uniforms, scipy map_coordinates,
// order 1, "reflect").
func (x *hwc) elastic(s int, ua, udx, udy []float64) {
	size := float64(min(x.h, x.w))
	p := [][3]float64{{0, 0, 0.08}, {0.05, 0.2, 0.07}, {0.08, 0.06, 0.06}, {0.1, 0.04, 0.05}, {0.1, 0.03, 0.03}}[s-1]
	alpha, sigma, aff := size*p[0], size*p[1], size*p[2]
	// float32 arithmetic for the points, as the published code.
	cy, cx := float32(math.Floor(float64(x.h)/2)), float32(math.Floor(float64(x.w)/2))
	sq := float32(min(x.h, x.w) / 3)
	pts1 := [3][2]float32{{cy + sq, cx + sq}, {cy + sq, cx - sq}, {cy - sq, cx - sq}}
	var pts2 [3][2]float32
	for i := 0; i < 3; i++ {
		for j := 0; j < 2; j++ {
			d := float32(-aff + 2*aff*ua[i*2+j])
			pts2[i][j] = pts1[i][j] + d
		}
	}
	M := affineFrom(pts1, pts2)
	img := make([]float64, len(x.v))
	for i, v := range x.v {
		img[i] = float64(float32(math.Round(v*255)) / 255) // np.float32 image / 255.
	}
	warped := warpAffine(img, x.h, x.w, 3, M)
	field := func(u []float64) []float64 {
		f := make([]float64, len(u))
		for i, v := range u {
			f[i] = -1 + 2*v
		}
		gaussianFilter(f, x.h, x.w, 1, sigma, 3, "reflect")
		for i := range f {
			f[i] = float64(float32(f[i] * alpha))
		}
		return f
	}
	dx, dy := field(udx), field(udy)
	out := make([]float64, len(x.v))
	for y := 0; y < x.h; y++ {
		for i := 0; i < x.w; i++ {
			// int + float32 arrays promote to float64 in numpy.
			fy := float64(y) + dy[y*x.w+i]
			fx := float64(i) + dx[y*x.w+i]
			for ch := 0; ch < 3; ch++ {
				// map_coordinates keeps the float32 image's dtype.
				out[(y*x.w+i)*3+ch] = float64(float32(mapLinearReflect(warped, x.h, x.w, 3, ch, fy, fx)))
			}
		}
	}
	x.v = out
	x.clip()
	x.f32 = true
}

// affineFrom is OpenCV's getAffineTransform: the 2×3 matrix taking the
// three (row, col) points of src to dst, solved in float64 on (x, y).
func affineFrom(src, dst [3][2]float32) [6]float64 {
	// OpenCV takes points as (x, y); the published code passes
	// (row-ish, col-ish) pairs in its own order, used as (x, y) as given.
	var a [6][6]float64
	var b [6]float64
	for i := 0; i < 3; i++ {
		sx, sy := float64(src[i][0]), float64(src[i][1])
		a[2*i] = [6]float64{sx, sy, 1, 0, 0, 0}
		a[2*i+1] = [6]float64{0, 0, 0, sx, sy, 1}
		b[2*i], b[2*i+1] = float64(dst[i][0]), float64(dst[i][1])
	}
	// Gaussian elimination with partial pivoting (OpenCV: DECOMP_LU).
	for col := 0; col < 6; col++ {
		piv := col
		for r := col + 1; r < 6; r++ {
			if math.Abs(a[r][col]) > math.Abs(a[piv][col]) {
				piv = r
			}
		}
		a[col], a[piv] = a[piv], a[col]
		b[col], b[piv] = b[piv], b[col]
		for r := col + 1; r < 6; r++ {
			f := a[r][col] / a[col][col]
			for k := col; k < 6; k++ {
				a[r][k] -= f * a[col][k]
			}
			b[r] -= f * b[col]
		}
	}
	var m [6]float64
	for r := 5; r >= 0; r-- {
		s := b[r]
		for k := r + 1; k < 6; k++ {
			s -= a[r][k] * m[k]
		}
		m[r] = s / a[r][r]
	}
	return m
}

// warpAffine is OpenCV's warpAffine (INTER_LINEAR, BORDER_REFLECT_101):
// output (x, y) samples the input at M⁻¹… — OpenCV inverts M and maps
// each output pixel through it, with coordinates in 10-bit fixed point
// cut to a 1/32 grid for the bilinear weights.
func warpAffine(v []float64, h, w, c int, M [6]float64) []float64 {
	// Invert the 2×3 matrix.
	d := M[0]*M[4] - M[1]*M[3]
	if d != 0 {
		d = 1 / d
	}
	a11, a22 := M[4]*d, M[0]*d
	a12, a21 := -M[1]*d, -M[3]*d
	b1 := -a11*M[2] - a12*M[5]
	b2 := -a21*M[2] - a22*M[5]
	const abBits, abScale, interBits, tab = 10, 1 << 10, 5, 32
	round := func(f float64) int { return int(math.RoundToEven(f)) }
	out := make([]float64, len(v))
	for y := 0; y < h; y++ {
		const roundDelta = abScale / tab / 2
		X0 := round((a12*float64(y)+b1)*abScale) + roundDelta
		Y0 := round((a22*float64(y)+b2)*abScale) + roundDelta
		for i := 0; i < w; i++ {
			adx, ady := round(a11*float64(i)*abScale), round(a21*float64(i)*abScale)
			X := (X0 + adx) >> (abBits - interBits)
			Y := (Y0 + ady) >> (abBits - interBits)
			ix, iy := X>>interBits, Y>>interBits
			fx := float64(X&(tab-1)) / tab
			fy := float64(Y&(tab-1)) / tab
			for ch := 0; ch < c; ch++ {
				px := func(yy, xx int) float64 {
					return v[(reflect101(yy, h)*w+reflect101(xx, w))*c+ch]
				}
				w00, w01 := float32((1-fy)*(1-fx)), float32((1-fy)*fx)
				w10, w11 := float32(fy*(1-fx)), float32(fy*fx)
				// float32 arithmetic, as OpenCV's remap of a float image.
				t0 := float32(float32(px(iy, ix))*w00) + float32(float32(px(iy, ix+1))*w01)
				t1 := float32(float32(px(iy+1, ix))*w10) + float32(float32(px(iy+1, ix+1))*w11)
				out[(y*w+i)*c+ch] = float64(t0 + t1)
			}
		}
	}
	return out
}

// mapLinearReflect is scipy's map_coordinates, order 1, mode "reflect",
// at (y, x) of one channel.
func mapLinearReflect(v []float64, h, w, c, ch int, y, x float64) float64 {
	y0, x0 := math.Floor(y), math.Floor(x)
	fy, fx := y-y0, x-x0
	iy, ix := int(y0), int(x0)
	px := func(yy, xx int) float64 { return v[(reflectIndex(yy, h)*w+reflectIndex(xx, w))*c+ch] }
	return (1-fy)*((1-fx)*px(iy, ix)+fx*px(iy, ix+1)) + fy*((1-fx)*px(iy+1, ix)+fx*px(iy+1, ix+1))
}

// ---- suite specs ----

// SuiteCondition is one benchmark corruption at one severity.
type SuiteCondition struct {
	Name     string
	Severity int
}

// String writes the condition as name@severity.
func (c SuiteCondition) String() string { return c.Name + "@" + strconv.Itoa(c.Severity) }

// ParseSuite reads a benchmark spec: "all:S" (the 15 corruptions),
// "extra:S" (the 4 held-out ones) or "all19:S", with S a severity 1–5,
// a range "1-5", or a list "1,3,5". It returns the conditions in the
// benchmark's order, each corruption's severities in order, and ok =
// false when spec is not a benchmark spec (one corruption, "fog@3", is
// an ordinary pipeline for ParseCorruptions).
func ParseSuite(spec string) (conds []SuiteCondition, ok bool, err error) {
	spec = strings.TrimSpace(spec)
	var names []string
	var sev string
	if n, s, found := strings.Cut(spec, ":"); found {
		switch n {
		case "all":
			names = Benchmark
		case "extra":
			names = Extra
		case "all19":
			names = append(slices.Clone(Benchmark), Extra...)
		default:
			return nil, false, nil
		}
		sev = s
	} else {
		return nil, false, nil
	}
	var sevs []int
	for _, part := range strings.Split(sev, ",") {
		lo, hi, isRange := strings.Cut(strings.TrimSpace(part), "-")
		a, err1 := strconv.Atoi(lo)
		b := a
		var err2 error
		if isRange {
			b, err2 = strconv.Atoi(hi)
		}
		if err1 != nil || err2 != nil || a < 1 || b > 5 || a > b {
			return nil, true, fmt.Errorf("benchmark spec %q: severities must be 1..5, a range such as 1-5 or a list such as 1,3,5", spec)
		}
		for s := a; s <= b; s++ {
			if !slices.Contains(sevs, s) {
				sevs = append(sevs, s)
			}
		}
	}
	slices.Sort(sevs)
	for _, n := range names {
		for _, s := range sevs {
			conds = append(conds, SuiteCondition{Name: n, Severity: s})
		}
	}
	return conds, true, nil
}

// ---- spatter and JPEG ----

var spatterParams = [][6]float64{
	{0.62, 0.1, 0.7, 0.7, 0.5, 0},
	{0.65, 0.1, 0.8, 0.7, 0.5, 0},
	{0.65, 0.3, 1, 0.69, 0.5, 0},
	{0.65, 0.1, 0.7, 0.69, 0.6, 1},
	{0.65, 0.1, 0.5, 0.68, 0.6, 1},
}

// spatter: a thresholded, smoothed Gaussian "liquid" layer; at
// severities 1–3 water (edges of the liquid found by OpenCV's Canny,
// their distance transform, equalised and embossed) tinted pale
// turquoise is added, at 4–5 mud darkens the image where the layer is.
func (x *hwc) spatter(s int, n []float64) {
	c := spatterParams[s-1]
	h, w := x.h, x.w
	liquid := make([]float64, h*w)
	for i := range liquid {
		liquid[i] = c[0] + c[1]*n[i]
	}
	gaussianFilter(liquid, h, w, 1, c[2], 4, "nearest")
	for i, v := range liquid {
		if v < c[3] {
			liquid[i] = 0
		}
	}
	if c[5] == 0 {
		u8 := make([]uint8, h*w)
		for i, v := range liquid {
			// (liquid·255).astype(uint8) without a clip: numpy wraps the few
			// values past 1 around modulo 256, and so do the published images.
			u8[i] = uint8(int64(v * 255))
		}
		edges := canny(u8, h, w, 50, 150)
		for i, e := range edges {
			edges[i] = 255 - e
		}
		dist := distance5(edges, h, w)
		for i, v := range dist {
			dist[i] = float32(math.Min(float64(v), 20))
		}
		b := boxBlur3(dist, h, w)
		d8 := make([]uint8, h*w)
		for i, v := range b {
			d8[i] = uint8(v)
		}
		d8 = equalizeHist(d8)
		d8 = emboss(d8, h, w)
		bb := boxBlur3u8(d8, h, w)
		// float32 from here, as numpy: the 8-bit liquid (it replaced the
		// float layer) times the distance layer, normalised, tinted.
		m := make([]float32, h*w)
		var mx float32
		for i := range m {
			m[i] = float32(u8[i]) * float32(bb[i])
			mx = max(mx, m[i])
		}
		color := [3]float32{float32(175 / 255.), float32(238 / 255.), float32(238 / 255.)}
		for p := 0; p < h*w; p++ {
			var mv float32
			if mx > 0 {
				mv = m[p] / mx * float32(c[4])
			}
			for ch := 0; ch < 3; ch++ {
				xv := float32(math.Round(x.v[p*3+ch]*255)) / 255 // np.float32 image / 255.
				x.v[p*3+ch] = float64(xv + mv*color[ch])
			}
		}
		x.clip()
		x.f32 = true
		return
	}
	m := make([]float64, h*w)
	for i, v := range liquid {
		if v > c[3] {
			m[i] = 1
		}
	}
	gaussianFilter(m, h, w, 1, c[4], 4, "nearest")
	for i := range m {
		m[i] = float64(float32(m[i]))
		if m[i] < 0.8 {
			m[i] = 0
		}
	}
	mud := [3]float64{63 / 255., 42 / 255., 20 / 255.}
	for p := 0; p < h*w; p++ {
		for ch := 0; ch < 3; ch++ {
			x.v[p*3+ch] = x.v[p*3+ch]*(1-m[p]) + mud[ch]*m[p]
		}
	}
	x.clip()
}

// canny is OpenCV's Canny (3×3 Sobel with replicated borders, L1
// magnitude, non-maximum suppression by the 22.5°/67.5° sectors,
// hysteresis over 8-neighbours): 255 on edges, 0 elsewhere.
func canny(src []uint8, h, w int, low, high int) []uint8 {
	at := func(y, x int) int { return int(src[min(max(y, 0), h-1)*w+min(max(x, 0), w-1)]) }
	dx, dy, mag := make([]int, h*w), make([]int, h*w), make([]int, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			gx := (at(y-1, x+1) + 2*at(y, x+1) + at(y+1, x+1)) - (at(y-1, x-1) + 2*at(y, x-1) + at(y+1, x-1))
			gy := (at(y+1, x-1) + 2*at(y+1, x) + at(y+1, x+1)) - (at(y-1, x-1) + 2*at(y-1, x) + at(y-1, x+1))
			dx[y*w+x], dy[y*w+x] = gx, gy
			mag[y*w+x] = abs(gx) + abs(gy)
		}
	}
	m := func(y, x int) int {
		if y < 0 || y >= h || x < 0 || x >= w {
			return 0
		}
		return mag[y*w+x]
	}
	const shift = 15
	tg22 := 13573               // (int)(tan(22.5°)·2^15 + 0.5), as OpenCV
	state := make([]uint8, h*w) // 0 none, 1 weak, 2 strong
	var stack []int
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			v := mag[y*w+x]
			if v <= low {
				continue
			}
			xs, ys := abs(dx[y*w+x]), abs(dy[y*w+x])<<shift
			tg22x := xs * tg22
			keep := false
			if ys < tg22x {
				keep = v > m(y, x-1) && v >= m(y, x+1)
			} else if tg67x := tg22x + xs<<(shift+1); ys > tg67x {
				keep = v > m(y-1, x) && v >= m(y+1, x)
			} else {
				s := 1
				if (dx[y*w+x] ^ dy[y*w+x]) < 0 {
					s = -1
				}
				keep = v > m(y-1, x-s) && v > m(y+1, x+s)
			}
			if !keep {
				continue
			}
			if v > high {
				state[y*w+x] = 2
				stack = append(stack, y*w+x)
			} else {
				state[y*w+x] = 1
			}
		}
	}
	for len(stack) > 0 {
		p := stack[len(stack)-1]
		stack = stack[:len(stack)-1]
		y, x := p/w, p%w
		for dy := -1; dy <= 1; dy++ {
			for dx := -1; dx <= 1; dx++ {
				yy, xx := y+dy, x+dx
				if yy >= 0 && yy < h && xx >= 0 && xx < w && state[yy*w+xx] == 1 {
					state[yy*w+xx] = 2
					stack = append(stack, yy*w+xx)
				}
			}
		}
	}
	out := make([]uint8, h*w)
	for i, s := range state {
		if s == 2 {
			out[i] = 255
		}
	}
	return out
}

func abs(v int) int {
	if v < 0 {
		return -v
	}
	return v
}

// distance5 is OpenCV's distanceTransform(DIST_L2, 5): the 5×5 chamfer
// distance to the nearest zero pixel (weights 1, 1.4, 2.1969 in 16-bit
// fixed point), pixels outside the image never zero.
func distance5(src []uint8, h, w int) []float32 {
	const (
		a   = 65536
		b   = 91750
		c   = 143976
		inf = math.MaxInt32 / 2
	)
	d := make([]int, h*w)
	get := func(y, x int) int {
		if y < 0 || y >= h || x < 0 || x >= w {
			return inf
		}
		return d[y*w+x]
	}
	for i, v := range src {
		if v == 0 {
			d[i] = 0
		} else {
			d[i] = inf
		}
	}
	fwd := [][3]int{{-2, -1, c}, {-2, 1, c}, {-1, -2, c}, {-1, -1, b}, {-1, 0, a}, {-1, 1, b}, {-1, 2, c}, {0, -1, a}}
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			if d[y*w+x] == 0 {
				continue
			}
			best := d[y*w+x]
			for _, o := range fwd {
				best = min(best, get(y+o[0], x+o[1])+o[2])
			}
			d[y*w+x] = best
		}
	}
	for y := h - 1; y >= 0; y-- {
		for x := w - 1; x >= 0; x-- {
			if d[y*w+x] == 0 {
				continue
			}
			best := d[y*w+x]
			for _, o := range fwd {
				best = min(best, get(y-o[0], x-o[1])+o[2])
			}
			d[y*w+x] = best
		}
	}
	out := make([]float32, h*w)
	for i, v := range d {
		out[i] = float32(v) * (1.0 / 65536)
	}
	return out
}

// boxBlur3 is cv2.blur(·, (3, 3)) on float32 (BORDER_REFLECT_101).
func boxBlur3(v []float32, h, w int) []float32 {
	out := make([]float32, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			var s float32
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					s += v[reflect101(y+dy, h)*w+reflect101(x+dx, w)]
				}
			}
			out[y*w+x] = s * (1.0 / 9)
		}
	}
	return out
}

// boxBlur3u8 is cv2.blur(·, (3, 3)) on 8 bits: the mean, rounded.
func boxBlur3u8(v []uint8, h, w int) []uint8 {
	out := make([]uint8, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s := 0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					s += int(v[reflect101(y+dy, h)*w+reflect101(x+dx, w)])
				}
			}
			out[y*w+x] = uint8(math.RoundToEven(float64(s) / 9))
		}
	}
	return out
}

// equalizeHist is OpenCV's equalizeHist.
func equalizeHist(v []uint8) []uint8 {
	var hist [256]int
	for _, p := range v {
		hist[p]++
	}
	i := 0
	for hist[i] == 0 {
		i++
	}
	out := make([]uint8, len(v))
	if hist[i] == len(v) {
		for j := range out {
			out[j] = uint8(i)
		}
		return out
	}
	var lut [256]uint8
	scale := float32(255) / float32(len(v)-hist[i])
	sum := 0
	for i++; i < 256; i++ {
		sum += hist[i]
		lut[i] = uint8(min(max(math.RoundToEven(float64(float32(sum)*scale)), 0), 255))
	}
	for j, p := range v {
		out[j] = lut[p]
	}
	return out
}

// emboss is the published filter2D with [[-2,-1,0],[-1,1,1],[0,1,2]] to
// 8 bits (rounded, saturated; BORDER_REFLECT_101).
func emboss(v []uint8, h, w int) []uint8 {
	k := [3][3]int{{-2, -1, 0}, {-1, 1, 1}, {0, 1, 2}}
	out := make([]uint8, h*w)
	for y := 0; y < h; y++ {
		for x := 0; x < w; x++ {
			s := 0
			for dy := -1; dy <= 1; dy++ {
				for dx := -1; dx <= 1; dx++ {
					s += k[dy+1][dx+1] * int(v[reflect101(y+dy, h)*w+reflect101(x+dx, w)])
				}
			}
			out[y*w+x] = uint8(min(max(s, 0), 255))
		}
	}
	return out
}

// jpeg is a baseline JPEG round trip at the severity's quality as
// libjpeg makes and reads it (PIL's save and open): RGB to YCbCr and back
// in libjpeg's 16-bit fixed point, 4:2:0 chroma (2×2 means with
// alternating rounding; triangle-filter "fancy" upsampling), the slow
// integer DCT and inverse DCT, quantisation with libjpeg's quality-scaled
// tables. The entropy coding is lossless, so it is left out.
func (x *hwc) jpeg(s int) {
	q := []int{80, 65, 58, 50, 40}[s-1]
	h, w := x.h, x.w
	H, W := (h+15)/16*16, (w+15)/16*16
	const one, half = 1 << 16, 1 << 15
	fix := func(f float64) int64 { return int64(f*one + 0.5) }
	Y, Cb, Cr := make([]int64, H*W), make([]int64, H*W), make([]int64, H*W)
	for yy := 0; yy < H; yy++ {
		for xx := 0; xx < W; xx++ {
			p := x.v[(min(yy, h-1)*w+min(xx, w-1))*3:] // edges replicated
			r, g, b := int64(math.Round(p[0]*255)), int64(math.Round(p[1]*255)), int64(math.Round(p[2]*255))
			i := yy*W + xx
			Y[i] = (fix(0.29900)*r + fix(0.58700)*g + fix(0.11400)*b + half) >> 16
			Cb[i] = (-fix(0.16874)*r - fix(0.33126)*g + fix(0.5)*b + 128<<16 + half - 1) >> 16
			Cr[i] = (fix(0.5)*r - fix(0.41869)*g - fix(0.08131)*b + 128<<16 + half - 1) >> 16
		}
	}
	down := func(c []int64) []int64 {
		out := make([]int64, H/2*W/2)
		for yy := 0; yy < H/2; yy++ {
			bias := int64(1)
			for xx := 0; xx < W/2; xx++ {
				a := c[2*yy*W+2*xx] + c[2*yy*W+2*xx+1] + c[(2*yy+1)*W+2*xx] + c[(2*yy+1)*W+2*xx+1]
				out[yy*W/2+xx] = (a + bias) >> 2
				bias ^= 3
			}
		}
		return out
	}
	cb, cr := down(Cb), down(Cr)
	lq, cq := jpegTable(jpegLuma, q), jpegTable(jpegChroma, q)
	jpegPlane(Y, H, W, lq)
	jpegPlane(cb, H/2, W/2, cq)
	jpegPlane(cr, H/2, W/2, cq)
	ch, cw := (h+1)/2, (w+1)/2
	ucb, ucr := fancyUp(cb, W/2, ch, cw, h, w), fancyUp(cr, W/2, ch, cw, h, w)
	clamp := func(v int64) float64 { return float64(min(max(v, 0), 255)) }
	for yy := 0; yy < h; yy++ {
		for xx := 0; xx < w; xx++ {
			yv := Y[yy*W+xx]
			b, r := ucb[yy*w+xx]-128, ucr[yy*w+xx]-128
			p := x.v[(yy*w+xx)*3:]
			p[0] = clamp(yv + (fix(1.40200)*r+half)>>16)
			p[1] = clamp(yv + (-fix(0.34414)*b+half-fix(0.71414)*r)>>16)
			p[2] = clamp(yv + (fix(1.77200)*b+half)>>16)
		}
	}
	x.bytes = true
}

var jpegLuma = [64]int64{16, 11, 10, 16, 24, 40, 51, 61, 12, 12, 14, 19, 26, 58, 60, 55, 14, 13, 16, 24, 40, 57, 69, 56,
	14, 17, 22, 29, 51, 87, 80, 62, 18, 22, 37, 56, 68, 109, 103, 77, 24, 35, 55, 64, 81, 104, 113, 92,
	49, 64, 78, 87, 103, 121, 120, 101, 72, 92, 95, 98, 112, 100, 103, 99}

var jpegChroma = [64]int64{17, 18, 24, 47, 99, 99, 99, 99, 18, 21, 26, 66, 99, 99, 99, 99, 24, 26, 56, 99, 99, 99, 99, 99,
	47, 66, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99,
	99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99, 99}

// jpegTable is libjpeg's jpeg_set_quality scaling (baseline: 1..255).
func jpegTable(base [64]int64, quality int) [64]int64 {
	scale := int64(200 - 2*quality)
	if quality < 50 {
		scale = int64(5000 / quality)
	}
	var t [64]int64
	for i, b := range base {
		t[i] = min(max((b*scale+50)/100, 1), 255)
	}
	return t
}

// jpegPlane runs every 8×8 block of a plane through libjpeg's slow
// integer forward DCT, quantisation, dequantisation and inverse DCT.
func jpegPlane(p []int64, h, w int, qt [64]int64) {
	var blk [64]int64
	for by := 0; by < h; by += 8 {
		for bx := 0; bx < w; bx += 8 {
			for i := 0; i < 64; i++ {
				blk[i] = p[(by+i/8)*w+bx+i%8] - 128
			}
			fdctIslow(&blk)
			for i := range blk {
				d := qt[i] << 3
				v := blk[i]
				if v < 0 {
					v = -((-v + d>>1) / d)
				} else {
					v = (v + d>>1) / d
				}
				blk[i] = v * qt[i]
			}
			idctIslow(&blk)
			for i := 0; i < 64; i++ {
				p[(by+i/8)*w+bx+i%8] = blk[i]
			}
		}
	}
}

const (
	fix0298 = 2446
	fix0390 = 3196
	fix0541 = 4433
	fix0765 = 6270
	fix0899 = 7373
	fix1175 = 9633
	fix1501 = 12299
	fix1847 = 15137
	fix1961 = 16069
	fix2053 = 16819
	fix2562 = 20995
	fix3072 = 25172
)

func descale(x int64, n uint) int64 { return (x + 1<<(n-1)) >> n }

// fdctIslow is libjpeg's jpeg_fdct_islow (CONST_BITS 13, PASS1_BITS 2):
// rows, then columns; the result is 8 times the true DCT.
func fdctIslow(b *[64]int64) {
	for pass := 0; pass < 2; pass++ {
		for k := 0; k < 8; k++ {
			at := func(i int) *int64 {
				if pass == 0 {
					return &b[k*8+i]
				}
				return &b[i*8+k]
			}
			d := [8]int64{*at(0), *at(1), *at(2), *at(3), *at(4), *at(5), *at(6), *at(7)}
			tmp0, tmp7 := d[0]+d[7], d[0]-d[7]
			tmp1, tmp6 := d[1]+d[6], d[1]-d[6]
			tmp2, tmp5 := d[2]+d[5], d[2]-d[5]
			tmp3, tmp4 := d[3]+d[4], d[3]-d[4]
			tmp10, tmp13 := tmp0+tmp3, tmp0-tmp3
			tmp11, tmp12 := tmp1+tmp2, tmp1-tmp2
			var sh uint = 13 - 2
			if pass == 0 {
				*at(0) = (tmp10 + tmp11) << 2
				*at(4) = (tmp10 - tmp11) << 2
			} else {
				*at(0) = descale(tmp10+tmp11, 2)
				*at(4) = descale(tmp10-tmp11, 2)
				sh = 13 + 2
			}
			z1 := (tmp12 + tmp13) * fix0541
			*at(2) = descale(z1+tmp13*fix0765, sh)
			*at(6) = descale(z1+tmp12*-fix1847, sh)
			z1 = tmp4 + tmp7
			z2 := tmp5 + tmp6
			z3 := tmp4 + tmp6
			z4 := tmp5 + tmp7
			z5 := (z3 + z4) * fix1175
			tmp4 *= fix0298
			tmp5 *= fix2053
			tmp6 *= fix3072
			tmp7 *= fix1501
			z1 *= -fix0899
			z2 *= -fix2562
			z3 *= -fix1961
			z4 *= -fix0390
			z3 += z5
			z4 += z5
			*at(7) = descale(tmp4+z1+z3, sh)
			*at(5) = descale(tmp5+z2+z4, sh)
			*at(3) = descale(tmp6+z2+z3, sh)
			*at(1) = descale(tmp7+z1+z4, sh)
		}
	}
}

// idctIslow is libjpeg's jpeg_idct_islow on dequantised coefficients:
// columns, then rows, output samples level-shifted and clamped to 0..255.
func idctIslow(b *[64]int64) {
	var ws [64]int64
	for pass := 0; pass < 2; pass++ {
		for k := 0; k < 8; k++ {
			in := func(i int) int64 {
				if pass == 0 {
					return b[i*8+k]
				}
				return ws[k*8+i]
			}
			out := func(i int, v int64) {
				if pass == 0 {
					ws[i*8+k] = v
				} else {
					b[k*8+i] = min(max(v+128, 0), 255)
				}
			}
			sh := uint(13 - 2)
			if pass == 1 {
				sh = 13 + 2 + 3
			}
			z2, z3 := in(2), in(6)
			z1 := (z2 + z3) * fix0541
			tmp2 := z1 + z3*-fix1847
			tmp3 := z1 + z2*fix0765
			tmp0 := (in(0) + in(4)) << 13
			tmp1 := (in(0) - in(4)) << 13
			tmp10, tmp13 := tmp0+tmp3, tmp0-tmp3
			tmp11, tmp12 := tmp1+tmp2, tmp1-tmp2
			tmp0, tmp1, tmp2, tmp3 = in(7), in(5), in(3), in(1)
			z1, z2, z3 = tmp0+tmp3, tmp1+tmp2, tmp0+tmp2
			z4 := tmp1 + tmp3
			z5 := (z3 + z4) * fix1175
			tmp0 *= fix0298
			tmp1 *= fix2053
			tmp2 *= fix3072
			tmp3 *= fix1501
			z1 *= -fix0899
			z2 *= -fix2562
			z3 = z3*-fix1961 + z5
			z4 = z4*-fix0390 + z5
			tmp0 += z1 + z3
			tmp1 += z2 + z4
			tmp2 += z2 + z3
			tmp3 += z1 + z4
			if pass == 0 {
				sh = 13 - 2
			}
			out(0, descale(tmp10+tmp3, sh))
			out(7, descale(tmp10-tmp3, sh))
			out(1, descale(tmp11+tmp2, sh))
			out(6, descale(tmp11-tmp2, sh))
			out(2, descale(tmp12+tmp1, sh))
			out(5, descale(tmp12-tmp1, sh))
			out(3, descale(tmp13+tmp0, sh))
			out(4, descale(tmp13-tmp0, sh))
		}
	}
}

// fancyUp is libjpeg's h2v2_fancy_upsample: each output sample weighs the
// nearest input 9/16, the two next 3/16 each and the diagonal 1/16, with
// libjpeg's rounding; rows and columns past the edge repeat the edge.
// c is a ch×cw plane (row stride stride), out is h×w.
func fancyUp(c []int64, stride, ch, cw, h, w int) []int64 {
	out := make([]int64, h*w)
	at := func(y, x int) int64 { return c[min(max(y, 0), ch-1)*stride+x] }
	for y := 0; y < ch; y++ {
		for v := 0; v < 2; v++ {
			oy := 2*y + v
			if oy >= h {
				continue
			}
			ny := y - 1
			if v == 1 {
				ny = y + 1
			}
			col := func(x int) int64 { return at(y, x)*3 + at(ny, x) }
			row := make([]int64, 2*cw)
			if cw == 1 {
				t := col(0)
				row[0], row[1] = (t*4+8)>>4, (t*4+7)>>4
			} else {
				this, next := col(0), col(1)
				row[0] = (this*4 + 8) >> 4
				row[1] = (this*3 + next + 7) >> 4
				last := this
				this = next
				for x := 1; x < cw-1; x++ {
					next = col(x + 1)
					row[2*x] = (this*3 + last + 8) >> 4
					row[2*x+1] = (this*3 + next + 7) >> 4
					last, this = this, next
				}
				row[2*(cw-1)] = (this*3 + last + 8) >> 4
				row[2*(cw-1)+1] = (this*4 + 7) >> 4
			}
			copy(out[oy*w:(oy+1)*w], row[:w])
		}
	}
	return out
}
