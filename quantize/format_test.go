package quantize

import (
	"bytes"
	"encoding/binary"
	"errors"
	"hash/crc32"
	"math"
	"math/rand/v2"
	"reflect"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"
)

// smallExample is the 2-bit [0 1 2 3] tensor, whose encoding the next test
// spells out byte by byte.
func smallExample(t testing.TB) *Quantized {
	return mustQuantize(t, []float32{0, 1, 2, 3}, []int64{4}, Config{Bits: 2, Scheme: Asymmetric, Granularity: PerTensor})
}

func TestMarshalLayoutByHand(t *testing.T) {
	want := []byte{
		'W', 'O', 'Q', 'Z',
		1, 0, // version
		2,    // bits
		0,    // asymmetric
		0,    // per tensor
		0,    // float32 scales
		0, 0, // reserved
		0, 0, 0, 0, // block size
		1, 0, 0, 0, // ndim
		4, 0, 0, 0, 0, 0, 0, 0, // shape [4]
		0x00, 0x00, 0x80, 0x3f, // scale 1.0
		0, 0, 0, 0, // min 0.0
		0xE4, // codes 0,1,2,3
	}
	want = binary.LittleEndian.AppendUint32(want, crc32.Checksum(want, crc32.MakeTable(crc32.Castagnoli)))
	got, err := smallExample(t).MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("MarshalBinary:\n got % X\nwant % X", got, want)
	}
	if n := smallExample(t).Size(); n != int64(len(want)) {
		t.Fatalf("Size %d, encoding %d bytes", n, len(want))
	}
}

func TestMarshalRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 6))
	shapes := [][]int64{{}, {1}, {0}, {3, 0}, {7}, {5, 13}, {2, 3, 11}}
	for _, cfg := range allConfigs() {
		for _, shape := range shapes {
			n := 1
			for _, d := range shape {
				n *= int(d)
			}
			vals := make([]float32, n)
			for i := range vals {
				vals[i] = float32(rng.NormFloat64())
			}
			q := mustQuantize(t, vals, shape, cfg)
			b, err := q.MarshalBinary()
			if err != nil {
				t.Fatal(err)
			}
			if int64(len(b)) != q.Size() {
				t.Fatalf("%s %v: Size %d, encoding %d", cfg, shape, q.Size(), len(b))
			}
			var back Quantized
			if err := back.UnmarshalBinary(b); err != nil {
				t.Fatalf("%s %v: %v", cfg, shape, err)
			}
			if !reflect.DeepEqual(&back, q) {
				t.Fatalf("%s %v: round trip\n got %+v\nwant %+v", cfg, shape, back, *q)
			}
			b2, _ := back.MarshalBinary()
			if !bytes.Equal(b, b2) {
				t.Fatalf("%s %v: re-encoding differs", cfg, shape)
			}
			var buf bytes.Buffer
			if n, err := q.WriteTo(&buf); err != nil || n != int64(len(b)) || !bytes.Equal(buf.Bytes(), b) {
				t.Fatalf("%s %v: WriteTo wrote %d bytes, %v", cfg, shape, n, err)
			}
		}
	}
}

// reseal recomputes the checksum so a test reaches the checks before it.
func reseal(b []byte) []byte {
	body := b[:len(b)-4]
	return binary.LittleEndian.AppendUint32(append([]byte(nil), body...), crc32.Checksum(body, castagnoli))
}

func mustMarshal(t testing.TB, q *Quantized) []byte {
	b, err := q.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func expectFormatError(t *testing.T, name string, b []byte, substr string) {
	t.Helper()
	var q Quantized
	err := q.UnmarshalBinary(b)
	if err == nil {
		t.Fatalf("%s: accepted", name)
	}
	if !errors.Is(err, ErrFormat) {
		t.Fatalf("%s: error %v does not wrap ErrFormat", name, err)
	}
	if !strings.Contains(err.Error(), substr) {
		t.Fatalf("%s: error %q does not mention %q", name, err, substr)
	}
	if q.Config != (Config{}) || q.Codes != nil {
		t.Fatalf("%s: failed decode modified the receiver", name)
	}
}

func TestUnmarshalRejectsCorruption(t *testing.T) {
	b := mustMarshal(t, mustQuantize(t, []float32{0.5, -1, 2, 7, 3, 3, -4}, []int64{7},
		Config{Bits: 3, Scheme: Symmetric, Granularity: PerBlock, BlockSize: 4}))
	for n := range len(b) {
		expectFormatError(t, "truncated", b[:n], "")
	}
	expectFormatError(t, "extended", append(append([]byte(nil), b...), 0), "")
	for i := range b {
		for _, x := range []byte{0x01, 0x80, 0xFF} {
			c := append([]byte(nil), b...)
			c[i] ^= x
			expectFormatError(t, "flipped", c, "")
		}
	}

	patch := func(off int, v ...byte) []byte {
		c := append([]byte(nil), b...)
		copy(c[off:], v)
		return reseal(c)
	}
	expectFormatError(t, "magic", patch(0, 'X'), "magic")
	expectFormatError(t, "version 2", patch(4, 2, 0), "version 2")
	expectFormatError(t, "version 0", patch(4, 0, 0), "version 0")
	expectFormatError(t, "bits 0", patch(6, 0), "bits")
	expectFormatError(t, "bits 9", patch(6, 9), "bits")
	expectFormatError(t, "scheme", patch(7, 9), "scheme")
	expectFormatError(t, "ggml scheme, type F32", patch(7, 2), "not a ggml block codec")
	expectFormatError(t, "granularity", patch(8, 3), "granularity")
	expectFormatError(t, "scale format", patch(9, 2), "scale format")
	expectFormatError(t, "reserved", patch(11, 1), "reserved")
	expectFormatError(t, "block 0", patch(12, 0, 0, 0, 0), "block size")
	expectFormatError(t, "block huge", patch(12, 0, 0, 0, 0x80), "block size")
	expectFormatError(t, "block 7", patch(12, 7), "bytes follow") // 1 group, not 2
	expectFormatError(t, "ndim", patch(16, 2), "")
	expectFormatError(t, "ndim huge", patch(16, 0xFF, 0xFF, 0xFF, 0xFF), "dimensions")
	expectFormatError(t, "dim", patch(20, 13), "bytes follow")
	expectFormatError(t, "dim negative", patch(27, 0x80), "negative")
	expectFormatError(t, "scale NaN", patch(28, 0, 0, 0xC0, 0x7F), "invalid scale")
	expectFormatError(t, "scale negative", patch(31, 0xC0), "invalid scale")
	expectFormatError(t, "scale overflow", patch(28, 0xFF, 0xFF, 0x7F, 0x7F), "overflows")
	// The codes: 7 × 3 bits = 21 bits, 3 bytes, at offset 36. Setting the
	// top bits of the last byte breaks the zero padding; a code of 7 is
	// outside the symmetric range 0..6.
	expectFormatError(t, "padding", patch(38, b[38]|0xE0), "padding")
	expectFormatError(t, "sym code 7", patch(36, b[36]|0x07), "code 0 is 7")
	expectFormatError(t, "checksum", append(append([]byte(nil), b[:len(b)-4]...), 1, 2, 3, 4), "checksum")
}

func TestUnmarshalAbsurdHeadersAllocateLittle(t *testing.T) {
	hdr := func(bits, scheme, gran byte, block uint32, dims ...uint64) []byte {
		b := []byte{'W', 'O', 'Q', 'Z', 1, 0, bits, scheme, gran, 0, 0, 0}
		b = binary.LittleEndian.AppendUint32(b, block)
		b = binary.LittleEndian.AppendUint32(b, uint32(len(dims)))
		for _, d := range dims {
			b = binary.LittleEndian.AppendUint64(b, d)
		}
		b = append(b, make([]byte, 64)...)
		return reseal(append(b, 0, 0, 0, 0))
	}
	cases := map[string][]byte{
		"2^62 elements":       hdr(8, 0, 0, 0, 1<<62),
		"product overflow":    hdr(4, 1, 2, 64, 1<<40, 1<<40),
		"2^62 rows":           hdr(4, 0, 1, 0, 1<<62, 1),
		"1-bit 2^40 elements": hdr(1, 0, 2, 1, 1<<40),
		"max block":           hdr(8, 0, 2, MaxBlockSize, 1<<61),
		"huge dim":            hdr(2, 0, 0, 0, math.MaxUint64),
	}
	for name, b := range cases {
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		var q Quantized
		err := q.UnmarshalBinary(b)
		runtime.ReadMemStats(&after)
		if err == nil {
			t.Fatalf("%s: accepted", name)
		}
		if d := after.TotalAlloc - before.TotalAlloc; d > 1<<16 {
			t.Fatalf("%s: allocated %d bytes for a %d-byte input", name, d, len(b))
		}
	}
}

// FuzzUnmarshal feeds arbitrary bytes to UnmarshalBinary, as they are and
// with the checksum recomputed (so mutations reach the checks behind it).
// It must never panic; whatever it accepts must re-encode to the same bytes
// and decode to finite values. Seed corpus: testdata/fuzz/FuzzUnmarshal.
func FuzzUnmarshal(f *testing.F) {
	f.Add(mustMarshal(f, smallExample(f)))
	f.Add(mustMarshal(f, mustQuantize(f, []float32{1, -2, 3, 0.25, 9}, []int64{5}, Config{Bits: 3, Scheme: Symmetric, Granularity: PerBlock, BlockSize: 2, F16Scales: true})))
	for _, name := range []string{"q4_0", "q4_k"} {
		cfg, _ := ParseConfig(name)
		f.Add(mustMarshal(f, mustQuantize(f, []float32{1, -2, 3, 0.25, 9, 0, 7}, []int64{7}, cfg)))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		checkUnmarshal(t, data)
		if len(data) >= trailer {
			checkUnmarshal(t, reseal(data))
		}
	})
}

func checkUnmarshal(t *testing.T, data []byte) {
	var q Quantized
	if err := q.UnmarshalBinary(data); err != nil {
		if !errors.Is(err, ErrFormat) {
			t.Fatalf("error %v does not wrap ErrFormat", err)
		}
		return
	}
	b, err := q.MarshalBinary()
	if err != nil {
		t.Fatalf("accepted input does not re-encode: %v", err)
	}
	if !bytes.Equal(b, data) {
		t.Fatalf("re-encoding differs from the accepted input")
	}
	if q.N > 1<<20 {
		return
	}
	out := make([]float32, q.N)
	if err := q.Dequantize(out); err != nil {
		t.Fatalf("accepted input does not decode: %v", err)
	}
	for i, v := range out {
		if !isFinite(v) {
			t.Fatalf("element %d decodes to %v", i, v)
		}
	}
}

func TestCompressRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 10))
	vals := make([]float32, 64*300)
	for i := range vals {
		vals[i] = float32(rng.NormFloat64())
	}
	q := mustQuantize(t, vals, []int64{64, 300}, Config{Bits: 4, Scheme: Symmetric, Granularity: PerBlock, BlockSize: 64})
	var buf bytes.Buffer
	if err := Compress(&buf, q); err != nil {
		t.Fatal(err)
	}
	back, err := Decompress(bytes.NewReader(buf.Bytes()), 0)
	if err != nil {
		t.Fatal(err)
	}
	if !reflect.DeepEqual(back, q) {
		t.Fatal("compress round trip differs")
	}
	if _, err := Decompress(bytes.NewReader(buf.Bytes()), q.Size()-1); err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("limit below the size: %v", err)
	}
	if _, err := Decompress(bytes.NewReader(buf.Bytes()), q.Size()); err != nil {
		t.Fatalf("limit equal to the size: %v", err)
	}
	// Larger than the window and than a small limit would allow for it.
	big := make([]float32, 12<<20)
	for i := range big {
		big[i] = float32(i%1000) * 0.001
	}
	qb := mustQuantize(t, big, []int64{int64(len(big))}, Config{Bits: 8, Granularity: PerTensor})
	buf.Reset()
	if err := Compress(&buf, qb); err != nil {
		t.Fatal(err)
	}
	if back, err := Decompress(&buf, qb.Size()); err != nil || !bytes.Equal(back.Codes, qb.Codes) {
		t.Fatalf("12 MiB tensor: %v", err)
	}
	if _, err := Decompress(strings.NewReader("not zstd at all"), 0); err == nil {
		t.Fatal("garbage decompressed")
	}
	if _, err := Decompress(bytes.NewReader(buf.Bytes()[:buf.Len()/2]), 0); err == nil {
		t.Fatal("truncated stream decompressed")
	}
}

func TestDecompressStopsZipBomb(t *testing.T) {
	// 256 MiB of zeros compresses to a few KiB; a 1 MiB limit must stop
	// after about 1 MiB of output.
	enc, err := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	if err != nil {
		t.Fatal(err)
	}
	var bomb bytes.Buffer
	enc.Reset(&bomb)
	zeros := make([]byte, 1<<20)
	for range 256 {
		if _, err := enc.Write(zeros); err != nil {
			t.Fatal(err)
		}
	}
	if err := enc.Close(); err != nil {
		t.Fatal(err)
	}
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	_, err = Decompress(bytes.NewReader(bomb.Bytes()), 1<<20)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("bomb of %d bytes: %v", bomb.Len(), err)
	}
	if d := after.TotalAlloc - before.TotalAlloc; d > 32<<20 {
		t.Fatalf("decompressing the bomb allocated %d bytes", d)
	}
}
