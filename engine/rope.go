package engine

import (
	"fmt"
	"math"
)

// The rope types of transformers' rope_scaling that the engine applies.
const (
	ropeDefault = "default"
	ropeLinear  = "linear"
	ropeDynamic = "dynamic"
	ropeLlama3  = "llama3"
	ropeYarn    = "yarn"
)

// kind is the rope type, "default" when there is no scaling.
func (r *RopeScaling) kind() string {
	switch {
	case r == nil:
		return ropeDefault
	case r.RopeType != "":
		return r.RopeType
	case r.Type != "":
		return r.Type
	}
	return ropeDefault
}

// validate checks the parameters each rope type needs.
func (r *RopeScaling) validate(c *LlamaConfig) error {
	switch k := r.kind(); k {
	case ropeDefault:
		return nil
	case ropeLinear, ropeDynamic, ropeYarn:
		if !(r.Factor > 0) {
			return fmt.Errorf("rope_scaling %s needs a positive factor", k)
		}
	case ropeLlama3:
		if !(r.Factor > 0) || r.OriginalMaxPositionEmbeddings <= 0 || !(r.HighFreqFactor > r.LowFreqFactor) || !(r.LowFreqFactor > 0) {
			return fmt.Errorf("rope_scaling llama3 needs factor, low_freq_factor < high_freq_factor and original_max_position_embeddings")
		}
	default:
		return fmt.Errorf("rope_scaling type %q is not implemented (linear, dynamic, llama3 and yarn are)", k)
	}
	return nil
}

// rotary is what rotates q and k for one forward pass: the inverse
// frequencies of the rotated dimensions and the factor cos and sin are
// multiplied by (yarn's attention factor, 1 otherwise).
type rotary struct {
	invFreq []float32
	scale   float32
}

// rotary computes the rotation for a pass whose positions end before
// seqLen (dynamic NTK scaling depends on it), as transformers'
// _compute_*_rope_parameters do.
func (c *LlamaConfig) rotary(seqLen int) rotary {
	d := c.rotDim
	base := c.RopeTheta
	r := c.RopeScaling
	switch r.kind() {
	case ropeDynamic:
		if seqLen > c.MaxPositionEmbeddings {
			base *= math.Pow(r.Factor*float64(seqLen)/float64(c.MaxPositionEmbeddings)-(r.Factor-1), float64(d)/float64(d-2))
		}
	}
	f := ropeInvFreq(base, d)
	out := rotary{invFreq: f, scale: 1}
	switch r.kind() {
	case ropeLinear:
		for i := range f {
			f[i] = float32(float64(f[i]) / r.Factor)
		}
	case ropeLlama3:
		old := float64(r.OriginalMaxPositionEmbeddings)
		lowWave, highWave := old/r.LowFreqFactor, old/r.HighFreqFactor
		for i, v := range f {
			inv := float64(v)
			wave := 2 * math.Pi / inv
			switch {
			case wave < highWave: // high frequencies: kept
			case wave > lowWave: // low frequencies: interpolated
				inv /= r.Factor
			default: // in between: a smooth blend of the two
				s := (old/wave - r.LowFreqFactor) / (r.HighFreqFactor - r.LowFreqFactor)
				inv = (1-s)*inv/r.Factor + s*inv
			}
			f[i] = float32(inv)
		}
	case ropeYarn:
		orig := float64(c.MaxPositionEmbeddings)
		if r.OriginalMaxPositionEmbeddings > 0 {
			orig = float64(r.OriginalMaxPositionEmbeddings)
		}
		fast, slow := r.BetaFast, r.BetaSlow
		if fast == 0 {
			fast = 32
		}
		if slow == 0 {
			slow = 1
		}
		// The dimension at which a frequency turns n times over orig.
		dimOf := func(n float64) float64 {
			return float64(d) * math.Log(orig/(n*2*math.Pi)) / (2 * math.Log(base))
		}
		lo := max(math.Floor(dimOf(fast)), 0)
		hi := min(math.Ceil(dimOf(slow)), float64(d-1))
		if lo == hi {
			hi += 0.001
		}
		for i, v := range f {
			ramp := min(max((float64(i)-lo)/(hi-lo), 0), 1)
			extra := 1 - ramp // share of the unscaled frequency
			inv := float64(v)
			f[i] = float32(inv/r.Factor*(1-extra) + inv*extra)
		}
		out.scale = float32(r.AttentionFactor)
		if r.AttentionFactor == 0 {
			out.scale = 1
			if r.Factor > 1 {
				out.scale = float32(0.1*math.Log(r.Factor) + 1)
			}
		}
	}
	return out
}

// apply rotates the first len(invFreq)·2 dimensions of one head vector
// in place, Hugging Face layout (pairs i, i + rotDim/2); the rest pass.
func (r rotary) apply(x []float32, pos int) {
	h := len(r.invFreq)
	for i, f := range r.invFreq {
		ang := float32(pos) * f
		s, c := math.Sincos(float64(ang))
		cs, sn := float32(c)*r.scale, float32(s)*r.scale
		a, b := x[i], x[i+h]
		x[i] = a*cs - b*sn
		x[i+h] = b*cs + a*sn
	}
}
