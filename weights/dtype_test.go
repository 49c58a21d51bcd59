package weights

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"sort"
	"testing"
)

// table16 decodes every 16-bit pattern of a format independently of
// Encode, sorted by value, finite values only, for nearest-value searches.
type entry16 struct {
	v    float64
	bits uint16
}

func finiteTable(t *testing.T, dt DType) []entry16 {
	t.Helper()
	var out []entry16
	b := make([]byte, 2)
	v := make([]float64, 1)
	for u := 0; u < 1<<16; u++ {
		binary.LittleEndian.PutUint16(b, uint16(u))
		if err := Decode(dt, b, v); err != nil {
			t.Fatal(err)
		}
		if math.IsNaN(v[0]) || math.IsInf(v[0], 0) || (v[0] == 0 && u != 0) {
			continue // keep +0 only
		}
		out = append(out, entry16{v[0], uint16(u)})
	}
	sort.Slice(out, func(i, j int) bool { return out[i].v < out[j].v })
	return out
}

// nearestEven picks the representable value nearest x, ties to the even
// pattern, straight from the definition. overflow is the magnitude at and
// beyond which IEEE rounding goes to infinity (max + half an ulp).
func nearestEven(tab []entry16, x, overflow float64) float64 {
	if math.Abs(x) >= overflow {
		return math.Copysign(math.Inf(1), x)
	}
	i := sort.Search(len(tab), func(i int) bool { return tab[i].v >= x })
	if i < len(tab) && tab[i].v == x {
		return x
	}
	if i == len(tab) || i == 0 { // beyond the largest finite, below overflow
		return tab[min(i, len(tab)-1)].v
	}
	lo, hi := tab[i-1], tab[i]
	dl, dh := x-lo.v, hi.v-x
	switch {
	case dl < dh:
		return lo.v
	case dh < dl:
		return hi.v
	case lo.bits&1 == 0: // ties go to the even pattern (zero's is 0)
		return lo.v
	default:
		return hi.v
	}
}

func TestEncodeHalfFormatsRoundToNearestEven(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, tc := range []struct {
		dt       DType
		overflow float64
	}{
		{F16, 65520},       // 65504 + half ulp (16)
		{BF16, 0x1.ffp127}, // max 0x1.fep127 + half ulp
	} {
		tab := finiteTable(t, tc.dt)
		maxFinite := tab[len(tab)-1].v
		var xs []float64
		for i := 0; i < 200000; i++ {
			// Values spread over the whole exponent range, plus exact
			// midpoints between neighbours (the tie cases).
			switch i % 4 {
			case 0:
				j := rng.IntN(len(tab) - 1)
				xs = append(xs, (tab[j].v+tab[j+1].v)/2)
			default:
				e := rng.IntN(300) - 150
				xs = append(xs, (rng.Float64()*2-1)*math.Ldexp(1, e))
			}
		}
		xs = append(xs, maxFinite, -maxFinite, tc.overflow, math.Nextafter(tc.overflow, 0), 1e300, -1e-300, 0)
		// Whole (the vector loops, groups of eight) and one by one.
		whole := make([]byte, 2*len(xs))
		if err := Encode(tc.dt, xs, whole); err != nil {
			t.Fatal(err)
		}
		buf := make([]byte, 2)
		back := make([]float64, 2)
		for i, x := range xs {
			if err := Encode(tc.dt, []float64{x}, buf); err != nil {
				t.Fatal(err)
			}
			_ = Decode(tc.dt, append(buf[:2:2], whole[2*i:2*i+2]...), back)
			want := nearestEven(tab, x, tc.overflow)
			if want == 0 {
				want = math.Copysign(0, x)
			}
			for k, got := range back {
				if got != want || math.Signbit(got) != math.Signbit(want) {
					t.Fatalf("%s: Encode(%v [%x]) = %v (%s), nearest-even is %v", tc.dt, x, math.Float64bits(x), got, []string{"alone", "in a batch"}[k], want)
				}
			}
		}
	}
}

func TestNonFinitePreserved(t *testing.T) {
	for _, dt := range []DType{F16, BF16, F32, F64} {
		in := []float64{math.NaN(), math.Inf(1), math.Inf(-1), math.Copysign(0, -1)}
		buf := make([]byte, len(in)*dt.Size())
		if err := Encode(dt, in, buf); err != nil {
			t.Fatal(err)
		}
		out := make([]float64, len(in))
		if err := Decode(dt, buf, out); err != nil {
			t.Fatal(err)
		}
		if !math.IsNaN(out[0]) || !math.IsInf(out[1], 1) || !math.IsInf(out[2], -1) || !math.Signbit(out[3]) {
			t.Errorf("%s: non-finite values not preserved: %v", dt, out)
		}
		// float32 paths too (the merge working precision).
		f32 := []float32{float32(math.NaN()), float32(math.Inf(1)), float32(math.Inf(-1)), float32(math.Copysign(0, -1))}
		if err := EncodeFloat32(dt, f32, buf); err != nil {
			t.Fatal(err)
		}
		back := make([]float32, len(f32))
		if err := DecodeFloat32(dt, buf, back); err != nil {
			t.Fatal(err)
		}
		if back[0] == back[0] || !math.IsInf(float64(back[1]), 1) || !math.IsInf(float64(back[2]), -1) || !math.Signbit(float64(back[3])) {
			t.Errorf("%s: float32 non-finite values not preserved: %v", dt, back)
		}
	}
	// A BF16 NaN whose payload sits only in the low float32 bits must stay
	// NaN, not truncate to Inf.
	nan := math.Float32frombits(0x7f800001)
	if got := bf16FromFloat32(nan); got&0x7f80 != 0x7f80 || got&0x7f == 0 {
		t.Errorf("bf16 of low-payload NaN = %#x, want a NaN", got)
	}
}

func TestIntegerEncodeRoundsAndSaturates(t *testing.T) {
	cases := []struct {
		dt   DType
		in   []float64
		want []float64
	}{
		{I8, []float64{-200, -128, 2.5, 3.5, -2.5, 127.4, 300, math.NaN()}, []float64{-128, -128, 2, 4, -2, 127, 127, 0}},
		{U8, []float64{-1, 0.5, 1.5, 255.6, 1e9}, []float64{0, 0, 2, 255, 255}},
		{I16, []float64{-40000, 40000}, []float64{-32768, 32767}},
		{I32, []float64{-1e10, 1e10, 7}, []float64{math.MinInt32, math.MaxInt32, 7}},
		{U32, []float64{-5, 1e12}, []float64{0, math.MaxUint32}},
		{Bool, []float64{0, 2, -1, math.NaN()}, []float64{0, 1, 1, 0}},
	}
	for _, c := range cases {
		buf := make([]byte, len(c.in)*c.dt.Size())
		if err := Encode(c.dt, c.in, buf); err != nil {
			t.Fatal(err)
		}
		got := make([]float64, len(c.in))
		if err := Decode(c.dt, buf, got); err != nil {
			t.Fatal(err)
		}
		for i := range got {
			if got[i] != c.want[i] {
				t.Errorf("%s: Encode(%v) = %v, want %v", c.dt, c.in[i], got[i], c.want[i])
			}
		}
	}
	// 64-bit extremes, checked on the raw integers.
	buf := make([]byte, 8)
	_ = Encode(I64, []float64{1e30}, buf)
	if v := int64(binary.LittleEndian.Uint64(buf)); v != math.MaxInt64 {
		t.Errorf("I64 saturate high = %d", v)
	}
	_ = Encode(I64, []float64{-1e30}, buf)
	if v := int64(binary.LittleEndian.Uint64(buf)); v != math.MinInt64 {
		t.Errorf("I64 saturate low = %d", v)
	}
	_ = Encode(U64, []float64{1e30}, buf)
	if v := binary.LittleEndian.Uint64(buf); v != math.MaxUint64 {
		t.Errorf("U64 saturate = %d", v)
	}
	_ = Encode(I64, []float64{-(1 << 53)}, buf)
	if v := int64(binary.LittleEndian.Uint64(buf)); v != -(1 << 53) {
		t.Errorf("I64 exact = %d", v)
	}
}

func TestFloat8Decode(t *testing.T) {
	// Hand-worked from the OCP FP8 spec: E4M3FN bias 7, E5M2 bias 15.
	e4 := map[byte]float64{0x38: 1, 0xb8: -1, 0x7e: 448, 0x01: math.Ldexp(1, -9), 0x08: math.Ldexp(1, -6), 0x3c: 1.5}
	e5 := map[byte]float64{0x3c: 1, 0x7b: 57344, 0x7c: math.Inf(1), 0x01: math.Ldexp(1, -16), 0x3e: 1.5}
	for b, want := range e4 {
		got := make([]float64, 1)
		_ = Decode(F8E4M3, []byte{b}, got)
		if got[0] != want {
			t.Errorf("E4M3 %#x = %v, want %v", b, got[0], want)
		}
	}
	nan := make([]float64, 1)
	_ = Decode(F8E4M3, []byte{0x7f}, nan)
	if !math.IsNaN(nan[0]) {
		t.Errorf("E4M3 0x7f = %v, want NaN", nan[0])
	}
	for b, want := range e5 {
		got := make([]float64, 1)
		_ = Decode(F8E5M2, []byte{b}, got)
		if got[0] != want {
			t.Errorf("E5M2 %#x = %v, want %v", b, got[0], want)
		}
	}
}

func TestConvertBytesWidenIsExactAndNarrowMatchesEncode(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 4))
	vals := make([]float64, 5000)
	for i := range vals {
		vals[i] = rng.NormFloat64() * math.Ldexp(1, rng.IntN(40)-20)
	}
	vals = append(vals, math.NaN(), math.Inf(-1))
	bf := make([]byte, len(vals)*2)
	_ = Encode(BF16, vals, bf)
	// BF16 → F32 → BF16 is the identity on bits (incl. NaN payload).
	f32, err := ConvertBytes(BF16, F32, bf)
	if err != nil {
		t.Fatal(err)
	}
	back, err := ConvertBytes(F32, BF16, f32)
	if err != nil {
		t.Fatal(err)
	}
	if string(back) != string(bf) {
		t.Fatal("BF16→F32→BF16 changed bits")
	}
	// F64 → F16 via ConvertBytes equals Encode from float64 (single rounding).
	f64 := make([]byte, len(vals)*8)
	_ = Encode(F64, vals, f64)
	h, err := ConvertBytes(F64, F16, f64)
	if err != nil {
		t.Fatal(err)
	}
	want := make([]byte, len(vals)*2)
	_ = Encode(F16, vals, want)
	if string(h) != string(want) {
		t.Fatal("F64→F16 ConvertBytes differs from Encode")
	}
	if _, err := ConvertBytes(F32, F8E4M3, f32); err == nil {
		t.Error("converting to F8 should be refused")
	}
	if _, err := ConvertBytes(F32, F16, []byte{1, 2, 3}); err == nil {
		t.Error("a partial element should be an error")
	}
}

func TestParseDType(t *testing.T) {
	for _, dt := range AllDTypes() {
		got, err := ParseDType(dt.String())
		if err != nil || got != dt {
			t.Errorf("ParseDType(%q) = %v, %v", dt.String(), got, err)
		}
	}
	for s, want := range map[string]DType{"bf16": BF16, "fp16": F16, "float32": F32} {
		if got, err := ParseDType(s); err != nil || got != want {
			t.Errorf("ParseDType(%q) = %v, %v", s, got, err)
		}
	}
	if _, err := ParseDType("F128"); err == nil {
		t.Error("unknown dtype accepted")
	}
}
