package dataset

import (
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"

	"github.com/weightops/weightops/internal/parallel"
)

// Corruptions act on one image with values in [0, 1] (before any
// normalisation) and clip their result to [0, 1]. An image's shape is
// [C, H, W], [H, W] (one channel) or [W] (one row). Those that draw random
// numbers take a *Rand; give each image its own, e.g. NewRand(seed, index),
// so the result does not depend on batching or goroutines.

// GaussianNoise adds independent N(0, sigma²) noise to every value.
func GaussianNoise(img []float32, sigma float64, r *Rand) {
	for i, v := range img {
		img[i] = clip01(float64(v) + sigma*r.NormFloat64())
	}
}

// GaussianBlur convolves each channel with a separable Gaussian of standard
// deviation sigma (in pixels), truncated at radius round(4·sigma) as
// scipy.ndimage and skimage do, borders extended with the edge value
// ("nearest" mode). sigma ≤ 0 leaves the image unchanged.
func GaussianBlur(img []float32, shape []int, sigma float64) {
	if sigma <= 0 {
		return
	}
	c, h, w := chw(shape)
	rad := int(4*sigma + 0.5)
	k := make([]float64, 2*rad+1)
	var sum float64
	for i := range k {
		d := float64(i - rad)
		k[i] = math.Exp(-d * d / (2 * sigma * sigma))
		sum += k[i]
	}
	for i := range k {
		k[i] /= sum
	}
	tmp := make([]float64, h*w)
	for ch := 0; ch < c; ch++ {
		p := img[ch*h*w : (ch+1)*h*w]
		for y := 0; y < h; y++ { // rows
			for x := 0; x < w; x++ {
				var acc float64
				for t, kv := range k {
					xx := min(max(x+t-rad, 0), w-1)
					acc += kv * float64(p[y*w+xx])
				}
				tmp[y*w+x] = acc
			}
		}
		for y := 0; y < h; y++ { // columns
			for x := 0; x < w; x++ {
				var acc float64
				for t, kv := range k {
					yy := min(max(y+t-rad, 0), h-1)
					acc += kv * tmp[yy*w+x]
				}
				p[y*w+x] = clip01(acc)
			}
		}
	}
}

// Contrast scales each channel's deviation from its mean by factor:
// x ← (x − mean)·factor + mean, as ImageNet-C's contrast corruption does;
// factor < 1 lowers contrast, 0 leaves a flat image.
func Contrast(img []float32, shape []int, factor float64) {
	c, h, w := chw(shape)
	n := h * w
	for ch := 0; ch < c; ch++ {
		p := img[ch*n : (ch+1)*n]
		var m float64
		for _, v := range p {
			m += float64(v)
		}
		m /= float64(n)
		for i, v := range p {
			p[i] = clip01((float64(v)-m)*factor + m)
		}
	}
}

// Brightness adds delta to every value.
func Brightness(img []float32, delta float64) {
	for i, v := range img {
		img[i] = clip01(float64(v) + delta)
	}
}

// SaltPepper sets each pixel, with probability p, to 0 or 1 (each half the
// time); all channels of a pixel change together.
func SaltPepper(img []float32, shape []int, p float64, r *Rand) {
	c, h, w := chw(shape)
	n := h * w
	for i := 0; i < n; i++ {
		u := r.Float64()
		if u >= p {
			continue
		}
		v := float32(0)
		if u < p/2 {
			v = 1
		}
		for ch := 0; ch < c; ch++ {
			img[ch*n+i] = v
		}
	}
}

// Pixelate replaces each block×block tile of each channel by its mean
// (tiles at the right and bottom edges may be smaller).
func Pixelate(img []float32, shape []int, block int) {
	if block <= 1 {
		return
	}
	c, h, w := chw(shape)
	for ch := 0; ch < c; ch++ {
		p := img[ch*h*w : (ch+1)*h*w]
		for y0 := 0; y0 < h; y0 += block {
			for x0 := 0; x0 < w; x0 += block {
				y1, x1 := min(y0+block, h), min(x0+block, w)
				var m float64
				for y := y0; y < y1; y++ {
					for x := x0; x < x1; x++ {
						m += float64(p[y*w+x])
					}
				}
				v := clip01(m / float64((y1-y0)*(x1-x0)))
				for y := y0; y < y1; y++ {
					for x := x0; x < x1; x++ {
						p[y*w+x] = v
					}
				}
			}
		}
	}
}

func clip01(v float64) float32 {
	switch {
	case v < 0:
		return 0
	case v > 1:
		return 1
	case v != v: // NaN
		return 0
	}
	return float32(v)
}

// chw reads an image shape as channels, height, width.
func chw(shape []int) (c, h, w int) {
	switch len(shape) {
	case 0:
		return 1, 1, 1
	case 1:
		return 1, 1, shape[0]
	case 2:
		return 1, shape[0], shape[1]
	}
	c = 1
	for _, d := range shape[:len(shape)-2] {
		c *= d
	}
	return c, shape[len(shape)-2], shape[len(shape)-1]
}

// Corruption is one corruption with its severity parameter, as written in
// a spec string: "gaussian_noise:0.3" is {Name: "gaussian_noise", Param: 0.3}.
type Corruption struct {
	// Name is one of CorruptionNames, or with Suite one of Benchmark and
	// Extra.
	Name string
	// Param is the severity: σ, factor, δ, probability or block size; with
	// Suite the benchmark's severity 1–5.
	Param float64
	// Suite selects the benchmark corruption (spec "name@severity").
	Suite bool
}

// corruptionKinds lists the corruptions a spec may name, their parameter's
// meaning and its allowed range.
var corruptionKinds = map[string]struct {
	param   string
	lo, hi  float64
	integer bool
}{
	"gaussian_noise": {"noise standard deviation", 0, 10, false},
	"blur":           {"Gaussian blur sigma in pixels", 0, 32, false},
	"contrast":       {"contrast factor (1 = unchanged)", 0, 100, false},
	"brightness":     {"value added, in [-1, 1]", -1, 1, false},
	"salt_pepper":    {"fraction of pixels set to 0 or 1", 0, 1, false},
	"pixelate":       {"block size in pixels (integer)", 1, 1 << 16, true},
}

// CorruptionNames lists the known corruption names, sorted.
func CorruptionNames() []string {
	out := make([]string, 0, len(corruptionKinds))
	for k := range corruptionKinds {
		out = append(out, k)
	}
	sort.Strings(out)
	return out
}

// Apply corrupts one image in place; r supplies the randomness of the
// noisy corruptions.
func (c Corruption) Apply(img []float32, shape []int, r *Rand) error {
	if c.Suite {
		return ApplySuite(img, shape, c.Name, int(c.Param), r)
	}
	switch c.Name {
	case "gaussian_noise":
		GaussianNoise(img, c.Param, r)
	case "blur":
		GaussianBlur(img, shape, c.Param)
	case "contrast":
		Contrast(img, shape, c.Param)
	case "brightness":
		Brightness(img, c.Param)
	case "salt_pepper":
		SaltPepper(img, shape, c.Param, r)
	case "pixelate":
		Pixelate(img, shape, int(c.Param))
	default:
		return fmt.Errorf("unknown corruption %q (known: %s)", c.Name, strings.Join(CorruptionNames(), ", "))
	}
	return nil
}

// String writes the corruption as in a spec, e.g. "blur:1.5".
func (c Corruption) String() string {
	if c.Suite {
		return c.Name + "@" + strconv.Itoa(int(c.Param))
	}
	return c.Name + ":" + strconv.FormatFloat(c.Param, 'g', -1, 64)
}

// Pipeline is a sequence of corruptions applied in order.
type Pipeline []Corruption

// ParseCorruptions reads a spec such as "gaussian_noise:0.3,blur:1,
// contrast:0.4": a comma-separated list of name:parameter, applied in
// that order. Names: gaussian_noise:σ (additive noise), blur:σ (Gaussian
// blur), contrast:c (scale deviations from the mean), brightness:δ (add),
// salt_pepper:p (pixels to 0 or 1), pixelate:k (k×k block means); and
// the benchmark's corruptions at a severity, name@1 to name@5 (e.g.
// motion_blur@3, see Benchmark and Extra). An empty spec is an empty
// pipeline.
func ParseCorruptions(spec string) (Pipeline, error) {
	var p Pipeline
	if strings.TrimSpace(spec) == "" {
		return p, nil
	}
	for _, item := range strings.Split(spec, ",") {
		item = strings.TrimSpace(item)
		if n, sev, ok := strings.Cut(item, "@"); ok {
			n = strings.TrimSpace(n)
			if !IsSuiteCorruption(n) {
				return nil, fmt.Errorf("corruption %q: unknown benchmark corruption (known: %s)", item, strings.Join(append(slices.Clone(Benchmark), Extra...), ", "))
			}
			k, err := strconv.Atoi(strings.TrimSpace(sev))
			if err != nil || k < 1 || k > 5 {
				return nil, fmt.Errorf("corruption %q: severity must be 1..5", item)
			}
			p = append(p, Corruption{Name: n, Param: float64(k), Suite: true})
			continue
		}
		name, val, ok := strings.Cut(item, ":")
		if b := strings.TrimSpace(name); b == "all" || b == "extra" || b == "all19" {
			return nil, fmt.Errorf("corruption %q: %s:S is a set of separate evaluations, one per corruption (eval --corrupt takes it); here give one, e.g. fog@3", item, b)
		}
		name = strings.TrimSpace(name)
		kind, known := corruptionKinds[name]
		if !known {
			return nil, fmt.Errorf("corruption %q: unknown name (known: %s)", item, strings.Join(CorruptionNames(), ", "))
		}
		if !ok {
			return nil, fmt.Errorf("corruption %q: missing parameter (%s), e.g. %s:1", item, kind.param, name)
		}
		v, err := strconv.ParseFloat(strings.TrimSpace(val), 64)
		if err != nil || math.IsNaN(v) || v < kind.lo || v > kind.hi || (kind.integer && v != math.Trunc(v)) {
			return nil, fmt.Errorf("corruption %q: parameter must be a %s in [%g, %g]", item, kind.param, kind.lo, kind.hi)
		}
		p = append(p, Corruption{Name: name, Param: v})
	}
	return p, nil
}

// Validate checks every corruption's name and parameter as
// ParseCorruptions does.
func (p Pipeline) Validate() error {
	_, err := ParseCorruptions(p.String())
	return err
}

// String writes the pipeline back as a spec.
func (p Pipeline) String() string {
	parts := make([]string, len(p))
	for i, c := range p {
		parts[i] = c.String()
	}
	return strings.Join(parts, ",")
}

// Apply corrupts one image in place with each corruption in turn, all
// drawing from r.
func (p Pipeline) Apply(img []float32, shape []int, r *Rand) error {
	for _, c := range p {
		if err := c.Apply(img, shape, r); err != nil {
			return err
		}
	}
	return nil
}

// ApplySet returns a corrupted copy of s: sample i is corrupted with its
// own generator NewRand(seed, i), so the result depends on the seed and
// the sample's index only (not on goroutines or on which other samples are
// present). shape overrides the sample shape for the spatial corruptions
// (e.g. [1, 8, 8] for 64-value CSV rows); nil means s.Shape. Values are
// expected in [0, 1] and come back clipped to it. The work is spread over
// all cores.
func (p Pipeline) ApplySet(s *Set, shape []int, seed uint64) (*Set, error) {
	if shape == nil {
		shape = s.Shape
	}
	d := s.SampleSize()
	if n, _ := byteCount(shape, 1); n != int64(d) {
		return nil, fmt.Errorf("corruption shape %v does not hold the %d values of a sample", shape, d)
	}
	out := &Set{X: append([]float32(nil), s.X...), Labels: s.Labels, Shape: s.Shape}
	if len(p) == 0 {
		return out, nil
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	parallel.Each(s.Len(), func(i int) {
		_ = p.Apply(out.Sample(i), shape, NewRand(seed, uint64(i)))
	})
	return out, nil
}
