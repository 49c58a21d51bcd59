package quantize

import "math"

// The log and tanh schemes quantize in a non-linear domain, for values
// such as weight differences whose magnitudes span decades: most are tiny
// and a few are large. Both store one value per group, M (the absmax,
// rounded up to the scale storage), and k-bit codes.
//
// Log (sign + (k−1)-bit exponent): code = s·2^(k−1) + c with s the sign
// bit and c in 0..2^(k−1)−1; c = 0 is zero and c ≥ 1 is M·2^−(c−1), so
// the levels are M, M/2, …, M/2^(L−1) with L = 2^(k−1)−1. A value's
// exponent is rounded in the log domain (to the nearer level by ratio);
// below the smallest level it rounds to it or to zero, whichever is
// nearer. The relative error of a value within the range is at most
// √2 − 1.
//
// Tanh (companded k-bit codes): y = tanh(α·x/M)/tanh(α) with α =
// TanhKnee maps the group onto [−1, 1], steeper near zero; y is rounded
// to k-bit symmetric codes (offset binary as Symmetric) and decoded as
// x̂ = M/α·atanh(tanh(α)·q/L). The step near zero is tanh(α)/α ≈ 0.48 of
// the linear one, near ±M 1/(α·tanh(α)·(1−tanh²α)) ≈ 7.4 times it.

// TanhKnee is α of the tanh scheme: how strongly it compands.
const TanhKnee = 2.0

// invSqrt2 is 2^−0.5, the geometric midpoint between two log levels.
const invSqrt2 = 0.70710678118654752440

// encodeLog writes one group's log codes for absmax m (> 0).
func (c Config) encodeLog(codes []uint8, vs []float32, m float32) {
	L := int(c.levels())
	sign := uint8(1) << (c.Bits - 1)
	smallest := math.Ldexp(1, -(L - 1)) // the smallest level, relative to m
	for i, x := range vs {
		r := math.Abs(float64(x)) / float64(m)
		if r == 0 {
			codes[i] = 0
			continue
		}
		f, e := math.Frexp(r) // r = f·2^e, f in [0.5, 1)
		j := -e               // −log2 r rounded to the nearest integer
		if f < invSqrt2 {
			j++
		}
		cd := j + 1
		if cd > L {
			if r < smallest/2 {
				codes[i] = 0
				continue
			}
			cd = L
		}
		code := uint8(cd)
		if x < 0 {
			code |= sign
		}
		codes[i] = code
	}
}

// decodeLog reconstructs log codes for absmax m.
func (c Config) decodeLog(out []float32, cs []uint8, m float32) {
	sign := uint8(1) << (c.Bits - 1)
	for i, code := range cs {
		mag := int(code &^ sign)
		if mag == 0 {
			out[i] = 0
			continue
		}
		v := float32(math.Ldexp(float64(m), -(mag - 1)))
		if code&sign != 0 {
			v = -v
		}
		out[i] = v
	}
}

// encodeTanh writes one group's companded codes for absmax m (> 0).
func (c Config) encodeTanh(codes []uint8, vs []float32, m float32) {
	L := c.levels()
	k := float64(L) / math.Tanh(TanhKnee)
	a := TanhKnee / float64(m)
	for i, x := range vs {
		y := math.Tanh(a*float64(x)) * k
		codes[i] = uint8(min(max(math.Round(y), -float64(L)), float64(L)) + float64(L))
	}
}

// decodeTanh reconstructs companded codes for absmax m.
func (c Config) decodeTanh(out []float32, cs []uint8, m float32) {
	L := c.levels()
	t := math.Tanh(TanhKnee) / float64(L)
	s := float64(m) / TanhKnee
	for i, code := range cs {
		out[i] = float32(s * math.Atanh(t*float64(int32(code)-L)))
	}
}

// nonlinear reports whether the scheme is log or tanh.
func (s Scheme) nonlinear() bool { return s == Log || s == Tanh }
