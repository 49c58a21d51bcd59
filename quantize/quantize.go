// Package quantize implements k-bit (1..8) uniform quantization of float32
// tensors with real bit packing: asymmetric min-max or symmetric absmax
// codes, one scale per tensor, per output channel or per block of G
// elements, a versioned binary layout (MarshalBinary) and a zstd wrapper
// (Compress/Decompress), plus error and size measurement (Measure).
//
// Rounding is to nearest, so every element reconstructs within half a step
// of its group's stored scale. Groups whose values are all equal
// reconstruct exactly; NaN and ±Inf inputs are an error.
//
// Large tensors are processed on all GOMAXPROCS cores, split at group and
// byte boundaries; the output does not depend on the number of workers.
package quantize

import (
	"errors"
	"fmt"
	"math"
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/weightops/weightops/weights"
	"github.com/x448/float16"
)

// Quantized is a quantized tensor: its codec, shape, per-group scales (and
// mins) and packed codes. Groups are runs of consecutive row-major
// elements: the whole tensor, one row per channel, or one block.
type Quantized struct {
	Config
	// Shape is the tensor's shape, row-major.
	Shape []int64
	// N is the number of elements, the product of Shape.
	N int
	// Scales holds one step size per group; 0 for a constant group. With
	// F16Scales every value is an F16 number.
	Scales []float32
	// Mins holds one offset per group for Asymmetric (the value of code 0)
	// and is empty for the other schemes.
	Mins []float32
	// Codes holds N k-bit codes packed LSB-first (see the package's pack
	// notes): ceil(N·k/8) bytes.
	Codes []byte
}

// layout is how a tensor splits into scale groups.
type layout struct {
	n      int // elements
	group  int // elements per group; the last group may be shorter
	groups int
}

// layout computes the grouping of a tensor of this shape.
func (c Config) layout(shape []int64) (layout, error) {
	n64, err := weights.TensorInfo{Shape: shape}.NumElements()
	if err != nil {
		return layout{}, fmt.Errorf("quantize: %w", err)
	}
	if n64 > math.MaxInt {
		return layout{}, fmt.Errorf("quantize: %d elements do not fit in an int", n64)
	}
	l := layout{n: int(n64)}
	if l.n == 0 {
		return l, nil
	}
	switch {
	case c.Granularity == PerBlock:
		l.group = min(c.BlockSize, l.n)
	case c.Granularity == PerChannel && len(shape) >= 2:
		l.group = l.n / int(shape[0])
	default:
		l.group = l.n
	}
	l.groups = (l.n-1)/l.group + 1
	return l, nil
}

// prepare validates the config and returns it canonical, with the
// grouping of a tensor of this shape.
func (c Config) prepare(shape []int64) (Config, layout, error) {
	if err := c.Validate(); err != nil {
		return c, layout{}, err
	}
	c = c.canonical()
	l, err := c.layout(shape)
	return c, l, err
}

// span is the element range [lo, hi) of group g.
func (l layout) span(g int) (lo, hi int) {
	lo = g * l.group
	return lo, min(lo+l.group, l.n)
}

// unitTarget is the number of elements one work unit aims for: its codes
// scratch stays in L1/L2 and there are enough units to balance two cores.
const unitTarget = 1 << 15

// quantUnit is the work unit size for Quantize: a multiple of 8 (so units
// pack into disjoint bytes) and, when there are several groups, of the group
// size (so a unit computes its groups' scales itself, with no second pass).
func (l layout) quantUnit() int {
	if l.groups <= 1 {
		return min(unitTarget, l.n)
	}
	a := lcm8(l.group)
	return min(a*max(1, unitTarget/a), l.n)
}

// Quantize quantizes values, a row-major tensor of the given shape, with
// cfg. It fails on an invalid config, a shape whose element count differs
// from len(values), a NaN or ±Inf value, or (only near the float32 or, with
// F16Scales, F16 range limits) a group whose scale would not be finite.
func Quantize(values []float32, shape []int64, cfg Config) (*Quantized, error) {
	return quantize(values, shape, cfg, runtime.GOMAXPROCS(0))
}

// QuantizeTensor decodes a floating-point tensor to float32 and quantizes
// it. F64 values beyond the float32 range become ±Inf and are rejected.
func QuantizeTensor(t weights.Tensor, cfg Config) (*Quantized, error) {
	if !t.DType.IsFloat() {
		return nil, fmt.Errorf("quantize: tensor %q has dtype %s; only floating-point tensors are quantized", t.Name, t.DType)
	}
	vals, err := t.Float32s()
	if err != nil {
		return nil, fmt.Errorf("quantize: tensor %q: %w", t.Name, err)
	}
	q, err := Quantize(vals, t.Shape, cfg)
	if err != nil {
		return nil, fmt.Errorf("tensor %q: %w", t.Name, err)
	}
	return q, nil
}

// quantize is Quantize with an explicit worker count, so tests can check
// that the result does not depend on it.
func quantize(values []float32, shape []int64, cfg Config, workers int) (*Quantized, error) {
	cfg, l, err := cfg.prepare(shape)
	if err != nil {
		return nil, err
	}
	if l.n != len(values) {
		return nil, fmt.Errorf("quantize: shape %v holds %d elements, got %d values", shape, l.n, len(values))
	}
	if cfg.Scheme == GGML {
		q := &Quantized{Config: cfg, Shape: append([]int64{}, shape...), N: l.n}
		if err := quantizeGGML(q, values, workers); err != nil {
			return nil, err
		}
		return q, nil
	}
	q := &Quantized{
		Config: cfg,
		Shape:  append([]int64{}, shape...),
		N:      l.n,
		Scales: make([]float32, l.groups),
		Codes:  make([]byte, packedLen(l.n, cfg.Bits)),
	}
	if cfg.Scheme == Asymmetric {
		q.Mins = make([]float32, l.groups)
	}
	if l.n == 0 {
		return q, nil
	}
	unit := l.quantUnit()
	units := (l.n-1)/unit + 1
	workers = min(max(workers, 1), units)
	scratch := make([][]uint8, workers)
	for i := range scratch {
		scratch[i] = make([]uint8, unit)
	}
	k := cfg.Bits

	if l.groups == 1 {
		// One group: its range is a reduction over all units, then codes.
		los, his := make([]float32, units), make([]float32, units)
		err := runUnits(units, workers, func(_, u int) error {
			lo, hi := u*unit, min((u+1)*unit, l.n)
			mn, mx, err := minMax(values[lo:hi], lo)
			los[u], his[u] = mn, mx
			return err
		})
		if err != nil {
			return nil, err
		}
		mn, mx := los[0], his[0]
		for u := range los {
			mn, mx = min(mn, los[u]), max(mx, his[u])
		}
		s, m, err := cfg.params(mn, mx)
		if err != nil {
			return nil, err
		}
		q.Scales[0] = s
		if q.Mins != nil {
			q.Mins[0] = m
		}
		err = runUnits(units, workers, func(w, u int) error {
			lo, hi := u*unit, min((u+1)*unit, l.n)
			codes := scratch[w][:hi-lo]
			cfg.encode(codes, values[lo:hi], s, m)
			pack(q.Codes[lo/8*k:], codes, k)
			return nil
		})
		return q, err
	}

	err = runUnits(units, workers, func(w, u int) error {
		lo, hi := u*unit, min((u+1)*unit, l.n)
		codes := scratch[w][:hi-lo]
		var mins []float32
		if q.Mins != nil {
			mins = q.Mins[lo/l.group:]
		}
		if err := cfg.quantGroups(l, lo, values[lo:hi], codes, q.Scales[lo/l.group:], mins); err != nil {
			return err
		}
		pack(q.Codes[lo/8*k:], codes, k)
		return nil
	})
	if err != nil {
		return nil, err
	}
	return q, nil
}

// quantGroups computes the scales (and mins, when mins is not nil) and
// codes of the whole groups in vs, the elements from lo on (lo the start
// of a group); scales[0] and mins[0] are those of lo's group.
func (c Config) quantGroups(l layout, lo int, vs []float32, codes []uint8, scales, mins []float32) error {
	hi := lo + len(vs)
	g0 := lo / l.group
	for g := g0; g*l.group < hi; g++ {
		glo, ghi := l.span(g)
		x, cs := vs[glo-lo:ghi-lo], codes[glo-lo:ghi-lo]
		mn, mx, err := minMax(x, glo)
		if err != nil {
			return err
		}
		s, m, err := c.params(mn, mx)
		if err != nil {
			return fmt.Errorf("%w (group %d, elements %d..%d)", err, g, glo, ghi-1)
		}
		if c.MSE {
			s, m = c.bestClip(x, cs, mn, mx, s, m)
		}
		scales[g-g0] = s
		if mins != nil {
			mins[g-g0] = m
		}
		c.encode(cs, x, s, m)
	}
	return nil
}

// clipFactors are the range shrinkings MSE tries; 1 (no clipping) first,
// so ties keep the plain min-max/absmax choice.
var clipFactors = []float64{1, 0.95, 0.9, 0.85, 0.8, 0.75, 0.7, 0.65, 0.6}

// bestClip returns the scale (and min) of the clipping of [mn, mx] with
// the least squared reconstruction error over vs; codes is scratch.
func (c Config) bestClip(vs []float32, codes []uint8, mn, mx, s0, m0 float32) (float32, float32) {
	bestS, bestM, bestE := s0, m0, math.Inf(1)
	L := c.levels()
	mid, half := (float64(mn)+float64(mx))/2, (float64(mx)-float64(mn))/2
	for _, f := range clipFactors {
		var lo, hi float32
		if c.Scheme == Symmetric {
			a := max(-float64(mn), float64(mx)) * f
			lo, hi = float32(-a), float32(a)
		} else {
			lo, hi = float32(mid-f*half), float32(mid+f*half)
		}
		s, m, err := c.params(lo, hi)
		if err != nil || (f != 1 && s == 0) {
			continue
		}
		c.encode(codes, vs, s, m)
		var e float64
		for i, x := range vs {
			var r float32
			if c.Scheme == Symmetric {
				r = float32(int32(codes[i])-L) * s
			} else {
				r = recon(m, int32(codes[i]), s)
			}
			d := float64(x) - float64(r)
			e += d * d
		}
		if e < bestE {
			bestS, bestM, bestE = s, m, e
		}
	}
	return bestS, bestM
}

// minMax returns the extremes of vs, or an error naming the first NaN or
// ±Inf (base is the index of vs[0] in the tensor).
//
// It compares order keys (see orderKey) with integer min/max, which compile
// to branch-free conditional moves, in four independent lanes: about 3×
// faster than float compares, whose branches mispredict on random data.
// NaNs order beyond ±Inf, so they surface as an extreme and one finiteness
// check at the end covers every element.
func minMax(vs []float32, base int) (mn, mx float32, err error) {
	k := orderKey(vs[0])
	l0, l1, l2, l3, h0, h1, h2, h3 := k, k, k, k, k, k, k, k
	i := 0
	for ; i+4 <= len(vs); i += 4 {
		w := vs[i : i+4 : i+4]
		a, b, c, d := orderKey(w[0]), orderKey(w[1]), orderKey(w[2]), orderKey(w[3])
		l0, h0 = min(l0, a), max(h0, a)
		l1, h1 = min(l1, b), max(h1, b)
		l2, h2 = min(l2, c), max(h2, c)
		l3, h3 = min(l3, d), max(h3, d)
	}
	for _, v := range vs[i:] {
		a := orderKey(v)
		l0, h0 = min(l0, a), max(h0, a)
	}
	mn, mx = fromOrderKey(min(l0, l1, l2, l3)), fromOrderKey(max(h0, h1, h2, h3))
	if isFinite(mn) && isFinite(mx) {
		return mn, mx, nil
	}
	for i, v := range vs {
		if !isFinite(v) {
			return 0, 0, fmt.Errorf("quantize: element %d is %v; NaN and ±Inf cannot be quantized", base+i, v)
		}
	}
	panic("unreachable: non-finite extreme without a non-finite element")
}

// orderKey maps a float32 to an int32 whose order is the float order
// (−0 just below +0, NaNs beyond ±Inf by sign): negative floats have their
// magnitude bits flipped.
func orderKey(v float32) int32 {
	b := int32(math.Float32bits(v))
	return b ^ (b >> 31 & 0x7fffffff)
}

// fromOrderKey inverts orderKey.
func fromOrderKey(k int32) float32 {
	return math.Float32frombits(uint32(k ^ (k >> 31 & 0x7fffffff)))
}

func isFinite(v float32) bool { return v-v == 0 }

// errRange is the error for groups whose scale or reconstruction would
// leave the storage format's finite range.
var errRange = errors.New("quantize: value range too large for a finite scale (float32 limit, or ±65504 with F16 scales)")

// params picks a group's stored scale and min (min is 0 for Symmetric) from
// its extremes. Scales round up and mins down to the storage grid, so every
// value of the group lies within the codes' range and rounds to within
// half a stored step.
func (c Config) params(mn, mx float32) (s, m float32, err error) {
	L := c.levels()
	if c.Scheme.nonlinear() {
		// The group's absmax, rounded up: the codes are relative to it.
		a := max(-mn, mx)
		if a == 0 {
			return 0, 0, nil
		}
		if s = c.roundUp(float64(a)); !isFinite(s) {
			return 0, 0, errRange
		}
		return s, 0, nil
	}
	if c.Scheme == Symmetric {
		a := max(-mn, mx)
		switch {
		case a == 0:
			return 0, 0, nil
		case mn == mx && isFinite(float32(L)*c.roundUp(float64(a))):
			// Constant group: scale |v| makes it code ±1, exact, whereas
			// absmax/L·L may miss v by a rounding. (Past MaxFloat32/L this
			// scale would fail the decodable-range check, so such huge
			// constants take the general path and are merely close.)
			s = c.roundUp(float64(a))
		default:
			s = c.roundUp(float64(a) / float64(L))
		}
		if !isFinite(float32(L) * s) {
			return 0, 0, errRange
		}
		return s, 0, nil
	}
	m = mn
	if c.F16Scales {
		m = roundDown16(mn)
	}
	if mx == m {
		return 0, m, nil // constant group, exact
	}
	s = c.roundUp((float64(mx) - float64(m)) / float64(L))
	if !isFinite(m) || !isFinite(recon(m, L, s)) {
		return 0, 0, errRange
	}
	return s, m, nil
}

// recon is the asymmetric reconstruction min + code·scale. The conversion
// keeps the product rounded on its own (no fused multiply-add), so every
// platform decodes the same bits.
func recon(m float32, code int32, s float32) float32 {
	return m + float32(float32(code)*s)
}

// roundUp rounds a non-negative v up to the storage grid (float32 or F16);
// the result may be +Inf.
func (c Config) roundUp(v float64) float32 {
	f := float32(v)
	if float64(f) < v {
		f = math.Nextafter32(f, float32(math.Inf(1)))
	}
	if !c.F16Scales {
		return f
	}
	// f is the least float32 ≥ v and F16 ⊂ float32, so the least F16 ≥ f
	// is the least F16 ≥ v.
	h := float16.Fromfloat32(f)
	if h.Float32() < f {
		h = nextUp16(h)
	}
	return h.Float32()
}

// roundDown16 rounds v down to an F16 value (possibly −Inf).
func roundDown16(v float32) float32 {
	h := float16.Fromfloat32(v)
	if h.Float32() > v {
		h = nextDown16(h)
	}
	return h.Float32()
}

// nextUp16 is the next F16 toward +Inf of a non-NaN h.
func nextUp16(h float16.Float16) float16.Float16 {
	b := h.Bits()
	switch {
	case b&0x7fff == 0:
		return float16.Frombits(1)
	case b&0x8000 == 0:
		return float16.Frombits(b + 1)
	default:
		return float16.Frombits(b - 1)
	}
}

// nextDown16 is the next F16 toward −Inf of a non-NaN h.
func nextDown16(h float16.Float16) float16.Float16 {
	b := h.Bits()
	switch {
	case b&0x7fff == 0:
		return float16.Frombits(0x8001)
	case b&0x8000 != 0:
		return float16.Frombits(b + 1)
	default:
		return float16.Frombits(b - 1)
	}
}

// encode writes the codes of one group's values given its scale and min.
func (c Config) encode(codes []uint8, vs []float32, s, m float32) {
	L := c.levels()
	switch {
	case s != 0 && c.Scheme == Log:
		c.encodeLog(codes, vs, s)
		return
	case s != 0 && c.Scheme == Tanh:
		c.encodeTanh(codes, vs, s)
		return
	}
	if s == 0 {
		z := uint8(0)
		if c.Scheme == Symmetric || c.Scheme == Tanh {
			z = uint8(L) // offset-binary zero
		}
		for i := range codes {
			codes[i] = z
		}
		return
	}
	inv := 1 / s
	if !isFinite(inv) {
		// Subnormal scale: 1/s overflows, so divide instead (rare, slower).
		for i, x := range vs {
			if c.Scheme == Symmetric {
				codes[i] = clampCode(float32(x/s)+float32(L)+0.5, 2*L)
			} else {
				codes[i] = clampCode(float32((x-m)/s)+0.5, L)
			}
		}
		return
	}
	// Adding 0.5 and truncating rounds to nearest: the argument is ≥ 0
	// up to rounding error, and truncation maps (−1, 1) to 0 anyway.
	if c.Scheme == Symmetric {
		off := float32(L) + 0.5
		top := 2 * L
		for i, x := range vs {
			codes[i] = clampCode(float32(x*inv)+off, top)
		}
		return
	}
	for i, x := range vs {
		codes[i] = clampCode(float32((x-m)*inv)+0.5, L)
	}
}

// clampCode truncates q to an integer code in 0..top.
func clampCode(q float32, top int32) uint8 {
	c := int32(q)
	c = min(max(c, 0), top)
	return uint8(c)
}

// Dequantize writes the reconstructed values into dst, which must hold N
// elements. It fails on a Quantized whose fields are inconsistent.
func (q *Quantized) Dequantize(dst []float32) error {
	if err := q.check(); err != nil {
		return err
	}
	if len(dst) != q.N {
		return fmt.Errorf("quantize: dequantize %d elements into %d", q.N, len(dst))
	}
	return q.dequantize(dst, runtime.GOMAXPROCS(0))
}

// dequantize is Dequantize with an explicit worker count, for tests.
func (q *Quantized) dequantize(dst []float32, workers int) error {
	if q.Scheme == GGML {
		return dequantizeGGML(q, dst, workers)
	}
	l, _ := q.layout(q.Shape)
	if l.n == 0 {
		return nil
	}
	k := q.Bits
	units := (l.n-1)/unitTarget + 1
	workers = min(max(workers, 1), units)
	scratch := make([][]uint8, workers)
	for i := range scratch {
		scratch[i] = make([]uint8, min(unitTarget, l.n))
	}
	return runUnits(units, workers, func(w, u int) error {
		lo, hi := u*unitTarget, min((u+1)*unitTarget, l.n)
		codes := scratch[w][:hi-lo]
		unpack(codes, q.Codes[lo/8*k:], k)
		q.decodeGroups(l, lo, codes, dst[lo:hi], q.Scales, q.Mins)
		return nil
	})
}

// decodeGroups reconstructs out, the elements from lo on, from their codes
// and the tensor's scales and mins (indexed by group, from group 0).
func (c Config) decodeGroups(l layout, lo int, codes []uint8, out []float32, scales, mins []float32) {
	hi, L := lo+len(out), c.levels()
	for g := lo / l.group; g*l.group < hi; g++ {
		glo, ghi := l.span(g)
		glo, ghi = max(glo, lo), min(ghi, hi)
		cs, o, s := codes[glo-lo:ghi-lo], out[glo-lo:ghi-lo], scales[g]
		switch c.Scheme {
		case Log:
			c.decodeLog(o, cs, s)
			continue
		case Tanh:
			c.decodeTanh(o, cs, s)
			continue
		}
		if c.Scheme == Symmetric {
			for i, v := range cs {
				o[i] = float32(int32(v)-L) * s
			}
			continue
		}
		m := mins[g]
		for i, v := range cs {
			o[i] = m + float32(float32(v)*s)
		}
	}
}

// Tensor dequantizes into a weights.Tensor of the given name and dtype
// (F32, F16, BF16, F64, ...), ready to write into a checkpoint.
func (q *Quantized) Tensor(name string, dt weights.DType) (weights.Tensor, error) {
	vals := make([]float32, q.N)
	if err := q.Dequantize(vals); err != nil {
		return weights.Tensor{}, err
	}
	if !dt.Writable() {
		return weights.Tensor{}, fmt.Errorf("quantize: cannot write dtype %s", dt)
	}
	data := make([]byte, q.N*dt.Size())
	if err := weights.EncodeFloat32(dt, vals, data); err != nil {
		return weights.Tensor{}, err
	}
	return weights.Tensor{
		TensorInfo: weights.TensorInfo{Name: name, DType: dt, Shape: append([]int64{}, q.Shape...)},
		Data:       data,
	}, nil
}

// check verifies that q's fields agree with each other and that every
// group decodes to finite values, so Dequantize and MarshalBinary never
// index out of range or emit Inf. Codes themselves are checked only by
// UnmarshalBinary (Quantize cannot produce bad ones).
func (q *Quantized) check() error {
	if err := q.Config.Validate(); err != nil {
		return err
	}
	if q.Config != q.canonical() {
		return fmt.Errorf("quantize: block size %d set without PerBlock granularity", q.BlockSize)
	}
	l, err := q.layout(q.Shape)
	if err != nil {
		return err
	}
	if q.N != l.n {
		return fmt.Errorf("quantize: N is %d but shape %v holds %d elements", q.N, q.Shape, l.n)
	}
	if q.Scheme == GGML {
		if want := q.ggmlBlocks(l.n) * q.blockBytes(); len(q.Scales) != 0 || len(q.Mins) != 0 || len(q.Codes) != want {
			return fmt.Errorf("quantize: %s codec with %d scales, %d mins and %d code bytes; want none, none and %d", q.typeName(), len(q.Scales), len(q.Mins), len(q.Codes), want)
		}
		return nil
	}
	switch {
	case len(q.Scales) != l.groups:
		return fmt.Errorf("quantize: %d scales for %d groups", len(q.Scales), l.groups)
	case q.Scheme == Asymmetric && len(q.Mins) != l.groups:
		return fmt.Errorf("quantize: %d mins for %d groups", len(q.Mins), l.groups)
	case q.Scheme != Asymmetric && len(q.Mins) != 0:
		return fmt.Errorf("quantize: %s codec with %d mins", q.Scheme, len(q.Mins))
	case len(q.Codes) != packedLen(l.n, q.Bits):
		return fmt.Errorf("quantize: %d code bytes, want %d for %d %d-bit codes", len(q.Codes), packedLen(l.n, q.Bits), l.n, q.Bits)
	}
	L := q.levels()
	for g, s := range q.Scales {
		if !(s >= 0) || !isFinite(s) || !q.representable(s) {
			return fmt.Errorf("quantize: group %d: invalid scale %v", g, s)
		}
		if q.Scheme.nonlinear() {
			continue // decoded magnitudes are at most the scale
		}
		if q.Scheme == Symmetric {
			if !isFinite(float32(L) * s) {
				return fmt.Errorf("quantize: group %d: scale %v overflows the float32 range", g, s)
			}
			continue
		}
		m := q.Mins[g]
		if !isFinite(m) || !q.representable(m) {
			return fmt.Errorf("quantize: group %d: invalid min %v", g, m)
		}
		if !isFinite(recon(m, L, s)) {
			return fmt.Errorf("quantize: group %d: min %v + %d·%v overflows the float32 range", g, m, L, s)
		}
	}
	return nil
}

// representable reports whether v survives the config's scale storage.
func (c Config) representable(v float32) bool {
	return !c.F16Scales || float16.Fromfloat32(v).Float32() == v
}

// runUnits calls fn(worker, unit) for units 0..units−1 on up to workers
// goroutines; each worker index is used by one goroutine at a time, so fn
// may keep per-worker scratch. It returns the error of the lowest failing
// unit: units are handed out in increasing order and a worker finishes the
// unit it holds, so every unit below the first failure still runs, and the
// error does not depend on scheduling.
func runUnits(units, workers int, fn func(w, u int) error) error {
	if workers <= 1 {
		for u := range units {
			if err := fn(0, u); err != nil {
				return err
			}
		}
		return nil
	}
	var next atomic.Int64
	var failed atomic.Bool
	errs := make([]error, workers)
	errUnit := make([]int, workers)
	var wg sync.WaitGroup
	for w := range workers {
		wg.Go(func() {
			for !failed.Load() {
				u := int(next.Add(1)) - 1
				if u >= units {
					return
				}
				if err := fn(w, u); err != nil {
					errs[w], errUnit[w] = err, u
					failed.Store(true)
					return
				}
			}
		})
	}
	wg.Wait()
	var first error
	firstUnit := units
	for w, err := range errs {
		if err != nil && errUnit[w] < firstUnit {
			first, firstUnit = err, errUnit[w]
		}
	}
	return first
}
