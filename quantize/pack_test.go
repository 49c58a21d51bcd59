package quantize

import (
	"bytes"
	"math/rand/v2"
	"testing"
)

// refPack packs codes one bit at a time, straight from the definition:
// bit j of code i is stream bit i·k+j, stream bit p is bit p%8 of byte p/8.
func refPack(codes []uint8, k int) []byte {
	out := make([]byte, (len(codes)*k+7)/8)
	for i, c := range codes {
		for j := 0; j < k; j++ {
			if c>>j&1 != 0 {
				p := i*k + j
				out[p/8] |= 1 << (p % 8)
			}
		}
	}
	return out
}

// refUnpack reads code i of a packed stream one bit at a time.
func refUnpack(packed []byte, n, k int) []uint8 {
	out := make([]uint8, n)
	for i := range out {
		for j := 0; j < k; j++ {
			p := i*k + j
			out[i] |= (packed[p/8] >> (p % 8) & 1) << j
		}
	}
	return out
}

func TestPack3bitHandWorked(t *testing.T) {
	// 1,2,3,4,5,6,7,0 → Σ c_i·8^i = 0x1F58D1, little-endian D1 58 1F; the
	// ninth code, 5, starts byte 3 at bit 0.
	codes := []uint8{1, 2, 3, 4, 5, 6, 7, 0, 5}
	want := []byte{0xD1, 0x58, 0x1F, 0x05}
	got := make([]byte, packedLen(len(codes), 3))
	pack(got, codes, 3)
	if !bytes.Equal(got, want) {
		t.Fatalf("pack = % X, want % X", got, want)
	}
	// 0..7 in 3 bits is the classic 0x88 0xC6 0xFA.
	got = make([]byte, 3)
	pack(got, []uint8{0, 1, 2, 3, 4, 5, 6, 7}, 3)
	if !bytes.Equal(got, []byte{0x88, 0xC6, 0xFA}) {
		t.Fatalf("pack 0..7 = % X", got)
	}
	back := make([]uint8, len(codes))
	unpack(back, want, 3)
	if !bytes.Equal(back, codes) {
		t.Fatalf("unpack = %v, want %v", back, codes)
	}
}

func TestPackRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for k := 1; k <= 8; k++ {
		for _, n := range []int{0, 1, 2, 3, 5, 7, 8, 9, 15, 16, 17, 31, 63, 64, 65, 100, 1001} {
			codes := make([]uint8, n)
			for i := range codes {
				codes[i] = uint8(rng.IntN(1 << k))
			}
			if got, want := packedLen(n, k), (n*k+7)/8; got != want {
				t.Fatalf("k=%d n=%d: packedLen %d, want %d", k, n, got, want)
			}
			// Pre-fill with garbage: pack must overwrite every byte it owns
			// and leave the rest alone.
			dst := bytes.Repeat([]byte{0xA5}, packedLen(n, k)+3)
			pack(dst, codes, k)
			if want := refPack(codes, k); !bytes.Equal(dst[:len(want)], want) {
				t.Fatalf("k=%d n=%d: pack % X, want % X", k, n, dst[:len(want)], want)
			}
			if !bytes.Equal(dst[packedLen(n, k):], []byte{0xA5, 0xA5, 0xA5}) {
				t.Fatalf("k=%d n=%d: pack wrote past its bytes", k, n)
			}
			if !paddingClear(dst[:packedLen(n, k)], n, k) {
				t.Fatalf("k=%d n=%d: padding not clear", k, n)
			}
			back := bytes.Repeat([]byte{0xEE}, n)
			unpack(back, dst, k)
			if !bytes.Equal(back, codes) {
				t.Fatalf("k=%d n=%d: unpack %v, want %v", k, n, back, codes)
			}
			if ref := refUnpack(dst, n, k); !bytes.Equal(ref, codes) {
				t.Fatalf("k=%d n=%d: reference unpack disagrees", k, n)
			}
		}
	}
}

func TestPaddingClear(t *testing.T) {
	// 3 codes × 3 bits = 9 bits: byte 1 uses bit 0 only.
	if !paddingClear([]byte{0xFF, 0x01}, 3, 3) || paddingClear([]byte{0xFF, 0x03}, 3, 3) {
		t.Fatal("paddingClear misjudges a 9-bit stream")
	}
	if !paddingClear([]byte{0xFF, 0xFF, 0xFF}, 8, 3) {
		t.Fatal("a full stream has no padding")
	}
}

func BenchmarkPack3bit(b *testing.B) {
	const n = 1 << 20
	codes := make([]uint8, n)
	for i := range codes {
		codes[i] = uint8(i*5) & 7
	}
	dst := make([]byte, packedLen(n, 3))
	b.SetBytes(n)
	for b.Loop() {
		pack(dst, codes, 3)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
}

func BenchmarkUnpack3bit(b *testing.B) {
	const n = 1 << 20
	codes := make([]uint8, n)
	src := make([]byte, packedLen(n, 3))
	for i := range src {
		src[i] = byte(i * 37)
	}
	b.SetBytes(n)
	for b.Loop() {
		unpack(codes, src, 3)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N)/n, "ns/elem")
}
