package weights

import (
	"math"
	"math/rand/v2"
	"testing"
)

// TestDeltaPairFloat32 holds the pair path to DeltaFloat32 on the decoded
// base, bit for bit, for F32 and BF16 bytes (Inf, NaN, subnormal and huge
// values included), and checks it declines dtypes it has no path for and
// refuses short inputs.
func TestDeltaPairFloat32(t *testing.T) {
	r := rand.New(rand.NewPCG(21, 22))
	for _, dt := range []DType{F32, BF16} {
		n := 1003
		src, base := make([]byte, dt.Bytes(int64(n))), make([]byte, dt.Bytes(int64(n)))
		for i := range src {
			src[i], base[i] = byte(r.Uint32()), byte(r.Uint32())
		}
		b64 := make([]float64, n)
		if err := Decode(dt, base, b64); err != nil {
			t.Fatal(err)
		}
		want, got := make([]float32, n), make([]float32, n)
		if err := DeltaFloat32(dt, src, b64, want); err != nil {
			t.Fatal(err)
		}
		ok, err := DeltaPairFloat32(dt, src, base, got)
		if !ok || err != nil {
			t.Fatalf("%s: ok %v, %v", dt, ok, err)
		}
		for i := range want {
			if math.Float32bits(got[i]) != math.Float32bits(want[i]) {
				t.Fatalf("%s: entry %d: %#08x, want %#08x", dt, i, math.Float32bits(got[i]), math.Float32bits(want[i]))
			}
		}
		if _, err := DeltaPairFloat32(dt, src, base[:len(base)-dt.Size()], got); err == nil {
			t.Fatalf("%s: a short base was accepted", dt)
		}
	}
	if ok, err := DeltaPairFloat32(F16, make([]byte, 8), make([]byte, 8), make([]float32, 4)); ok || err != nil {
		t.Fatalf("F16: ok %v, %v; want declined", ok, err)
	}
}
