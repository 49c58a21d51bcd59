package wpatch

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"hash/crc32"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// craft writes a patch file from a header and raw (uncompressed) payloads,
// filling in offsets, lengths and checksums as a writer would: a valid
// container around whatever the entries claim.
func craft(t *testing.T, path string, h Header, raws map[string][]byte) {
	t.Helper()
	var body bytes.Buffer
	body.WriteString(Magic)
	zw, _ := zstd.NewWriter(nil)
	for i, e := range h.Tensors {
		raw := raws[e.Name]
		comp := zw.EncodeAll(raw, nil)
		h.Tensors[i].Offset, h.Tensors[i].Length = int64(body.Len()), int64(len(comp))
		h.Tensors[i].RawLength, h.Tensors[i].CRC32 = int64(len(raw)), crc32.ChecksumIEEE(raw)
		body.Write(comp)
	}
	h.FormatVersion = Version
	hdr, _ := json.Marshal(h)
	at := body.Len()
	body.Write(hdr)
	var foot [footerLen]byte
	binary.LittleEndian.PutUint64(foot[0:], uint64(at))
	binary.LittleEndian.PutUint64(foot[8:], uint64(len(hdr)))
	binary.LittleEndian.PutUint32(foot[16:], crc32.ChecksumIEEE(hdr))
	binary.LittleEndian.PutUint32(foot[20:], Version)
	body.Write(foot[:])
	if err := os.WriteFile(path, body.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
}

func sparseRaw(idx []uint64, vals []float32) []byte {
	var b []byte
	b = binary.AppendUvarint(b, uint64(len(idx)))
	prev := uint64(0)
	for _, i := range idx {
		b = binary.AppendUvarint(b, i-prev)
		prev = i
	}
	for _, v := range vals {
		b = binary.LittleEndian.AppendUint32(b, math.Float32bits(v))
	}
	return b
}

// TestHugeDeclaredShapes: a small patch declaring a tensor of 2^40 or
// 2^62 elements makes no reader allocate for them. A sparse one re-encodes
// as stored (memory follows the payload); a dense one whose payload cannot
// hold its shape is refused on open.
func TestHugeDeclaredShapes(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "huge.wpatch")
	craft(t, p, Header{Kind: "rws", Tensors: []Entry{
		{Name: "big", Shape: []int64{1 << 40}, DType: "F32", Encoding: "sparse", Values: "f32", NNZ: 3},
		{Name: "bigger", Shape: []int64{1 << 62}, DType: "BF16", Encoding: "sparse", Values: "f32", NNZ: 1},
	}}, map[string][]byte{
		"big":    sparseRaw([]uint64{5, 1 << 39, 1<<40 - 1}, []float32{1, -2, 3}),
		"bigger": sparseRaw([]uint64{7}, []float32{0.5}),
	})
	pt, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer pt.Close()
	cfg, _ := quantize.ParseConfig("4bit-sym-block64")
	out := filepath.Join(d, "q.wpatch")
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	if _, err := Requantize(context.Background(), pt, out, cfg, stream.Options{}); err != nil {
		t.Fatal(err)
	}
	runtime.ReadMemStats(&after)
	if a := after.TotalAlloc - before.TotalAlloc; a > 32<<20 {
		t.Errorf("re-encoding allocated %d MiB", a>>20)
	}
	q, err := Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer q.Close()
	idx, vals, err := q.LoadSparse("big")
	if err != nil || len(idx) != 3 || idx[1] != 1<<39 || math.Abs(float64(vals[2])-3) > 0.2 {
		t.Errorf("requantized sparse tensor: %v %v %v", idx, vals, err)
	}
	// Dense: 2^40 quantized elements need at least 2^37 payload bytes.
	craft(t, p, Header{Kind: "rws", Tensors: []Entry{
		{Name: "w", Shape: []int64{1 << 40}, DType: "F32", Encoding: "dense", Values: "q", Quant: "4bit-sym-block64", NNZ: 1 << 40},
	}}, map[string][]byte{"w": make([]byte, 100)})
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), "dense payload") {
		t.Errorf("dense tensor the payload cannot hold: %v", err)
	}
	// Sparse: more non-zeros than payload bytes.
	craft(t, p, Header{Kind: "rws", Tensors: []Entry{
		{Name: "w", Shape: []int64{1 << 30}, DType: "F32", Encoding: "sparse", Values: "f32", NNZ: 1 << 20},
	}}, map[string][]byte{"w": make([]byte, 100)})
	if _, err := Open(p); err == nil || !strings.Contains(err.Error(), "non-zeros") {
		t.Errorf("sparse count beyond the payload: %v", err)
	}
}

// TestNonFinitePatchValuesRefused: a patch whose stored values are NaN or
// Inf (written by something else: our writer refuses them) fails to load.
func TestNonFinitePatchValuesRefused(t *testing.T) {
	p := filepath.Join(t.TempDir(), "nan.wpatch")
	for _, v := range []float32{float32(math.NaN()), float32(math.Inf(-1))} {
		raw := binary.LittleEndian.AppendUint32(binary.LittleEndian.AppendUint32(nil, math.Float32bits(1)), math.Float32bits(v))
		craft(t, p, Header{Kind: "rws", Tensors: []Entry{{Name: "w", Shape: []int64{2}, DType: "F32", Encoding: "dense", Values: "f32", NNZ: 2}}}, map[string][]byte{"w": raw})
		pt, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if err := pt.Load("w", make([]float32, 2)); err == nil || !strings.Contains(err.Error(), "NaN or Inf") {
			t.Errorf("%v: %v", v, err)
		}
		pt.Close()
	}
}

// TestApplyChecksKindAndDType: a quantized checkpoint container (.wq,
// kind weights) is not a patch; a patch recorded for another dtype is a
// warning, an error with Strict.
func TestApplyChecksKindAndDType(t *testing.T) {
	d := t.TempDir()
	mp := testutil.WriteF32(t, filepath.Join(d, "m.safetensors"), map[string][]float64{"w": {1, 2, 3, 4}}, nil)
	model := testutil.Open(t, mp)[0]
	ctx := context.Background()
	wq := filepath.Join(d, "model.wq")
	w, _ := Create(wq, "weights", nil, Encoding{})
	w.Add("w", []int64{4}, weights.F32, []float32{1, 2, 3, 4})
	w.Commit()
	if _, err := Apply(ctx, model, openPatches(t, wq), filepath.Join(d, "o.safetensors"), ApplyOptions{}); err == nil || !strings.Contains(err.Error(), "not a patch") {
		t.Errorf(".wq applied: %v", err)
	}
	bp := filepath.Join(d, "bf16.wpatch")
	w, _ = Create(bp, "rws", nil, Encoding{})
	w.Add("w", []int64{4}, weights.BF16, []float32{0.5, 0, 0, 0})
	w.Commit()
	rep, err := Apply(ctx, model, openPatches(t, bp), filepath.Join(d, "o.safetensors"), ApplyOptions{})
	if err != nil || len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "made for a BF16 tensor") {
		t.Errorf("dtype mismatch: %v %v", rep, err)
	}
	if _, err := Apply(ctx, model, openPatches(t, bp), filepath.Join(d, "s.safetensors"), ApplyOptions{Strict: true}); err == nil || !strings.Contains(err.Error(), "--strict") {
		t.Errorf("dtype mismatch with strict: %v", err)
	}
}

// TestTruncatedPatchSaysTruncated: a cut file is "truncated", not an
// "unsupported version" made of whatever bytes end it.
func TestTruncatedPatchSaysTruncated(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "x.wpatch")
	writePatch(t, p, Encoding{}, map[string][]float32{"a": {1, 2, 3, 4}})
	raw, _ := os.ReadFile(p)
	for _, cut := range []int{len(raw) - 1, len(raw) - 30, len(raw) / 2} {
		os.WriteFile(p, raw[:cut], 0o644)
		_, err := Open(p)
		if err == nil || strings.Contains(err.Error(), "version") || !strings.Contains(err.Error(), "truncated") {
			t.Errorf("cut at %d: %v", cut, err)
		}
	}
}

// FuzzRequantize re-encodes arbitrary bytes opened as a patch, as
// `weightops quantize` does: never a panic, and no allocation beyond what
// the payloads hold, whatever shapes the header declares. Seed corpus:
// testdata/fuzz/FuzzRequantize.
func FuzzRequantize(f *testing.F) {
	dir := f.TempDir()
	p := filepath.Join(dir, "seed.wpatch")
	writePatch(f, p, Encoding{}, map[string][]float32{"a": {1, 2, 3, 4, 5, 6, 7, 8}, "b": {0, 0, 0, 1, 0, 0, 0, 0}})
	raw, _ := os.ReadFile(p)
	f.Add(raw)
	cfg, _ := quantize.ParseConfig("3bit-asym-block4")
	f.Fuzz(func(t *testing.T, data []byte) {
		d := t.TempDir()
		in := filepath.Join(d, "in.wpatch")
		os.WriteFile(in, data, 0o644)
		pt, err := Open(in)
		if err != nil {
			return
		}
		defer pt.Close()
		var before, after runtime.MemStats
		runtime.ReadMemStats(&before)
		Requantize(context.Background(), pt, filepath.Join(d, "out.wpatch"), cfg, stream.Options{Workers: 1})
		runtime.ReadMemStats(&after)
		if a := after.TotalAlloc - before.TotalAlloc; a > 64<<20+uint64(200*len(data)) {
			t.Fatalf("re-encoding a %d-byte patch allocated %d MiB", len(data), a>>20)
		}
	})
}
