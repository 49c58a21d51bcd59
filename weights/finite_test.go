package weights

import (
	"encoding/binary"
	"math"
	"math/rand/v2"
	"testing"
)

// TestNonFiniteScanMatchesDecoding checks the word-at-a-time scan against
// the definition: decode every element and ask math.IsNaN/IsInf. Lengths
// around the 8- and 32-byte strides, specials at every position class,
// and bit patterns one step away from an all-ones exponent.
func TestNonFiniteScanMatchesDecoding(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for _, dt := range []DType{BF16, F16, F32, F64} {
		es := dt.Size()
		// Every short length, and long ones the 128-byte vector scan takes.
		lens := []int{64, 65, 127, 200, 513, 1500}
		for n := 0; n <= 41; n++ {
			lens = append(lens, n)
		}
		for _, n := range lens {
			for trial := 0; trial < 40; trial++ {
				data := make([]byte, n*es)
				for i := range data {
					data[i] = byte(r.Uint32())
				}
				// Mostly finite: clear each element's top exponent bit,
				// then plant a few specials and near misses.
				for i := 0; i < n; i++ {
					setTopExpBit(dt, data[i*es:], false)
				}
				for k := r.IntN(3); k > 0 && n > 0; k-- {
					i := r.IntN(n)
					switch r.IntN(3) {
					case 0:
						setAllOnesExp(dt, data[i*es:], r.IntN(2) == 0)
					case 1: // largest exponent below all ones
						setAllOnesExp(dt, data[i*es:], false)
						flipLowExpBit(dt, data[i*es:])
					default:
						setTopExpBit(dt, data[i*es:], true)
					}
				}
				var wantNaN, wantInf int64
				var want []int
				vals := make([]float64, n)
				if err := Decode(dt, data, vals); err != nil {
					t.Fatal(err)
				}
				for i, v := range vals {
					if math.IsNaN(v) {
						wantNaN++
						want = append(want, i)
					} else if math.IsInf(v, 0) {
						wantInf++
						want = append(want, i)
					}
				}
				nan, inf, err := CountNonFinite(dt, data)
				if err != nil || nan != wantNaN || inf != wantInf {
					t.Fatalf("%s n=%d: CountNonFinite %d NaN %d Inf (%v), want %d, %d", dt, n, nan, inf, err, wantNaN, wantInf)
				}
				if got := HasNonFinite(dt, data); got != (len(want) > 0) {
					t.Fatalf("%s n=%d: HasNonFinite %v, want %v", dt, n, got, len(want) > 0)
				}
				mark := make([]bool, n)
				if _, err := MarkNonFinite(dt, data, mark); err != nil {
					t.Fatal(err)
				}
				for i, m := range mark {
					wantM := false
					for _, w := range want {
						wantM = wantM || w == i
					}
					if m != wantM {
						t.Fatalf("%s n=%d: mark[%d] = %v, want %v", dt, n, i, m, wantM)
					}
				}
			}
		}
	}
}

// exponent field of each dtype: the bits above the mantissa, below the sign.
func expField(dt DType) (mask uint64, low uint64) {
	switch dt {
	case BF16:
		return 0x7f80, 0x0080
	case F16:
		return 0x7c00, 0x0400
	case F32:
		return 0x7f800000, 0x00800000
	default:
		return 0x7ff0000000000000, 0x0010000000000000
	}
}

func getBits(dt DType, b []byte) uint64 {
	switch dt.Size() {
	case 2:
		return uint64(binary.LittleEndian.Uint16(b))
	case 4:
		return uint64(binary.LittleEndian.Uint32(b))
	}
	return binary.LittleEndian.Uint64(b)
}

func putBits(dt DType, b []byte, u uint64) {
	switch dt.Size() {
	case 2:
		binary.LittleEndian.PutUint16(b, uint16(u))
	case 4:
		binary.LittleEndian.PutUint32(b, uint32(u))
	default:
		binary.LittleEndian.PutUint64(b, u)
	}
}

func setTopExpBit(dt DType, b []byte, on bool) {
	mask, _ := expField(dt)
	top := mask &^ (mask >> 1)
	u := getBits(dt, b)
	if on {
		u |= top
	} else {
		u &^= top
	}
	putBits(dt, b, u)
}

func setAllOnesExp(dt DType, b []byte, inf bool) {
	mask, low := expField(dt)
	u := getBits(dt, b) | mask
	if inf {
		u &^= low - 1 // mantissa zero: ±Inf
	}
	putBits(dt, b, u)
}

func flipLowExpBit(dt DType, b []byte) {
	_, low := expField(dt)
	putBits(dt, b, getBits(dt, b)^low)
}
