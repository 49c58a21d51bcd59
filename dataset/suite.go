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
