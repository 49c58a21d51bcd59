package wpatch

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// partsTensors: a dense tensor whose length is no multiple of the chunk,
// a mostly-zero one (stored sparse under "auto"), an all-zero one, and
// two whose first part misleads the writer's spool choice (dense, then
// zeros: stored sparse; zeros, then dense: stored dense).
func partsTensors() map[string][]float32 {
	rng := rand.New(rand.NewPCG(7, 7))
	dense := make([]float32, 3*70000+5)
	for i := range dense {
		dense[i] = float32(rng.NormFloat64() * math.Pow(2, float64(rng.IntN(20)-10)))
	}
	sparse := make([]float32, 150001)
	for i := 3; i < len(sparse); i += 41 {
		sparse[i] = float32(rng.NormFloat64())
	}
	sparse[len(sparse)-1] = -2
	denseFirst, sparseFirst := make([]float32, 300000), make([]float32, 200000)
	copy(denseFirst, dense[:65536])
	copy(sparseFirst[65536:], dense)
	return map[string][]float32{"dense": dense, "sparse": sparse, "zeros": make([]float32, 70001),
		"densefirst": denseFirst, "sparsefirst": sparseFirst}
}

// writeInParts writes tensors through WriteTensorAt, partBytes at a time.
func writeInParts(t *testing.T, path string, enc Encoding, tensors map[string][]float32, partBytes int) {
	t.Helper()
	w, err := Create(path, "task-vector", nil, enc)
	if err != nil {
		t.Fatal(err)
	}
	var infos []weights.TensorInfo
	for name, v := range tensors {
		infos = append(infos, weights.TensorInfo{Name: name, DType: weights.BF16, Shape: []int64{int64(len(v))}})
	}
	w.Declare(infos)
	for name, v := range tensors {
		b := make([]byte, 4*len(v))
		_ = weights.EncodeFloat32(weights.F32, v, b)
		for off := 0; off < len(b); off += partBytes {
			if err := w.WriteTensorAt(name, b[off:min(len(b), off+partBytes)], int64(off)); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

// TestWrittenInPartsEqualsWhole: a tensor written in parts is stored as
// the same entry (encoding, count, raw length, checksum) as one added
// whole, loads to the same values — the given ones for f32 — and leaves
// no spool file behind.
func TestWrittenInPartsEqualsWhole(t *testing.T) {
	tensors := partsTensors()
	for _, enc := range []Encoding{{Values: "f32"}, {Values: "f16"}, {Values: "f32", Sparse: "never"}, {Values: "f16", Sparse: "always"}} {
		dir := t.TempDir()
		pw, pp := filepath.Join(dir, "whole.wpatch"), filepath.Join(dir, "parts.wpatch")
		w, err := Create(pw, "task-vector", nil, enc)
		if err != nil {
			t.Fatal(err)
		}
		for name, v := range tensors {
			if err := w.Add(name, []int64{int64(len(v))}, weights.BF16, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		writeInParts(t, pp, enc, tensors, 4*65536)
		if ents, _ := os.ReadDir(dir); len(ents) != 2 {
			t.Errorf("%v: %d files left in the directory, want the two patches", enc, len(ents))
		}
		a, b := openPatches(t, pw, pp)[0], openPatches(t, pp)[0]
		for name, want := range tensors {
			ea, _ := a.Tensor(name)
			eb, ok := b.Tensor(name)
			if !ok {
				t.Fatalf("%v: %s missing", enc, name)
			}
			ea.Offset, ea.Length, eb.Offset, eb.Length = 0, 0, 0, 0
			if !reflect.DeepEqual(ea, eb) {
				t.Errorf("%v: %s: entry %+v written in parts, %+v whole", enc, name, eb, ea)
			}
			ga, gb := make([]float32, len(want)), make([]float32, len(want))
			if err := a.Load(name, ga); err != nil {
				t.Fatal(err)
			}
			if err := b.Load(name, gb); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				if math.Float32bits(ga[i]) != math.Float32bits(gb[i]) || (enc.Values == "f32" && gb[i] != want[i]) {
					t.Fatalf("%v: %s[%d] = %v in parts, %v whole, %v given", enc, name, i, gb[i], ga[i], want[i])
				}
			}
		}
		for name, want := range map[string]string{"sparse": "sparse", "densefirst": "sparse", "sparsefirst": "dense"} {
			if enc.Sparse == "never" {
				want = "dense"
			} else if enc.Sparse == "always" {
				want = "sparse"
			}
			if e, _ := b.Tensor(name); e.Encoding != want {
				t.Errorf("%v: %s stored %s, want %s", enc, name, e.Encoding, want)
			}
		}
	}
}

func f32Bytes(v ...float32) []byte {
	b := make([]byte, 4*len(v))
	_ = weights.EncodeFloat32(weights.F32, v, b)
	return b
}

// TestPartsRefused: parts out of order, too many bytes, non-finite values
// and quantized encodings are refused naming the tensor, and an abort
// leaves no spool behind.
func TestPartsRefused(t *testing.T) {
	dir := t.TempDir()
	w, err := Create(filepath.Join(dir, "x.wpatch"), "rws", nil, Encoding{})
	if err != nil {
		t.Fatal(err)
	}
	w.Declare([]weights.TensorInfo{{Name: "a", DType: weights.F32, Shape: []int64{4}}, {Name: "b", DType: weights.F32, Shape: []int64{2}}, {Name: "c", DType: weights.F32, Shape: []int64{2}}})
	one := f32Bytes(1, 2)
	if err := w.WriteTensorAt("a", one, 0); err != nil {
		t.Fatal(err)
	}
	for what, err := range map[string]error{
		"out of order": w.WriteTensorAt("a", one, 0),
		"first part":   w.WriteTensorAt("b", one[:4], 4),
		"too long":     w.WriteTensorAt("c", append(one, one...), 0),
		"undeclared":   w.WriteTensorAt("d", one, 0),
		"non-finite":   w.WriteTensorAt("b", f32Bytes(1, float32(math.Inf(1))), 0),
	} {
		if err == nil || !strings.Contains(err.Error(), "tensor \"") {
			t.Errorf("%s: %v", what, err)
		}
	}
	w.Abort()
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("abort left %d files", len(ents))
	}
	q4, _ := quantize.ParseConfig("4bit-sym-block32")
	q, _ := Create(filepath.Join(dir, "q.wpatch"), "rws", nil, Encoding{Values: "q", Quant: q4})
	q.Declare([]weights.TensorInfo{{Name: "a", DType: weights.F32, Shape: []int64{2}}})
	if err := q.WriteTensorAt("a", one, 0); err == nil {
		t.Error("quantized values written in parts")
	}
	q.Abort()
}

// TestPartsRefuseNonFinite: an infinity or a NaN anywhere in a part, dense
// or sparse (the vector scan's body and its tail), is refused.
func TestPartsRefuseNonFinite(t *testing.T) {
	dir := t.TempDir()
	bad := map[string]float32{"+inf": float32(math.Inf(1)), "-inf": float32(math.Inf(-1)),
		"nan": float32(math.NaN()), "-nan": math.Float32frombits(0xffc00001)}
	for name, v := range bad {
		for _, dense := range []bool{true, false} {
			for _, at := range []int{0, 777, 999} {
				vals := make([]float32, 1000)
				for i := range vals {
					if dense || i%50 == 0 {
						vals[i] = float32(i%7) - 3.5
					}
				}
				vals[at] = v
				w, err := Create(filepath.Join(dir, "x.wpatch"), "rws", nil, Encoding{})
				if err != nil {
					t.Fatal(err)
				}
				w.Declare([]weights.TensorInfo{{Name: "a", DType: weights.F32, Shape: []int64{1000}}})
				// In two parts: the first sets the encoding.
				err = w.WriteTensorAt("a", f32Bytes(vals[:500]...), 0)
				if err == nil {
					err = w.WriteTensorAt("a", f32Bytes(vals[500:]...), 2000)
				}
				if err == nil || !strings.Contains(err.Error(), "finite") {
					t.Errorf("%s at %d (dense %v): %v", name, at, dense, err)
				}
				w.Abort()
			}
		}
	}
}

// TestValueStreamCorruption: a dense payload read a chunk at a time (as
// patch apply reads a large one) gives Load's values, and every truncation
// or flipped byte of it is an error by the last chunk at the latest.
func TestValueStreamCorruption(t *testing.T) {
	defer func(v int64) { streamAbove = v }(streamAbove)
	streamAbove = 0
	dir := t.TempDir()
	p := filepath.Join(dir, "x.wpatch")
	v := partsTensors()["dense"][:210000]
	writePatch(t, p, Encoding{}, map[string][]float32{"a": v})
	// Values before the last chunk may be wrong in a corrupted payload:
	// apply writes them to its temp file only, and the error at the last
	// chunk discards it.
	read := func(path string, check bool) error {
		pt, err := Open(path)
		if err != nil {
			return err
		}
		defer pt.Close()
		e, _ := pt.Tensor("a")
		if !pt.streamable(e) {
			t.Fatal("payload not streamable")
		}
		s, err := pt.values(e, int64(len(v)))
		if err != nil {
			return err
		}
		defer s.close()
		for at := int64(0); at < int64(len(v)); at += 65536 {
			got, err := s.at(at, min(at+65536, int64(len(v))))
			if err != nil {
				return err
			}
			for k, x := range got {
				if check && x != v[at+int64(k)] {
					t.Fatalf("value %d = %v, want %v", at+int64(k), x, v[at+int64(k)])
				}
			}
		}
		return nil
	}
	if err := read(p, true); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p)
	pt := openPatches(t, p)[0]
	e, _ := pt.Tensor("a")
	q := filepath.Join(dir, "bad.wpatch")
	rng := rand.New(rand.NewPCG(1, 1))
	for k := 0; k < 200; k++ {
		b := append([]byte(nil), raw...)
		i := e.Offset + rng.Int64N(e.Length)
		b[i] ^= byte(1 + rng.IntN(255))
		os.WriteFile(q, b, 0o644)
		if err := read(q, false); err == nil || !strings.Contains(err.Error(), q) {
			t.Fatalf("byte %d flipped: %v", i, err)
		}
	}
}

// TestApplyCorruptStreamedPatch: a patch whose large payload is corrupted
// past what its first chunks show fails apply naming the patch and
// tensor, and leaves no output and no temp file.
func TestApplyCorruptStreamedPatch(t *testing.T) {
	defer func(v, p int64) { stream.StreamAbove, streamAbove = v, p }(stream.StreamAbove, streamAbove)
	stream.StreamAbove, streamAbove = -1, 0
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	randModel(t, mp, weights.BF16, 5)
	model, _ := weights.Open(mp)
	defer model.Close()
	pp := filepath.Join(d, "a.wpatch")
	randPatch(t, pp, model, 5, Encoding{}, "layers.3.weight")
	pt := openPatches(t, pp)[0]
	e, _ := pt.Tensor("layers.3.weight")
	raw, _ := os.ReadFile(pp)
	raw[e.Offset+e.Length-8] ^= 0x10 // in the last block
	bad := filepath.Join(d, "bad.wpatch")
	os.WriteFile(bad, raw, 0o644)
	out := filepath.Join(d, "out", "patched.safetensors")
	os.Mkdir(filepath.Dir(out), 0o755)
	_, err := Apply(context.Background(), model, openPatches(t, bad), out, ApplyOptions{})
	if err == nil || !strings.Contains(err.Error(), bad) || !strings.Contains(err.Error(), `"layers.3.weight"`) {
		t.Fatalf("corrupt payload: %v", err)
	}
	if ents, _ := os.ReadDir(filepath.Dir(out)); len(ents) != 0 {
		t.Errorf("%d files left after a failed apply", len(ents))
	}
}

// TestSparseStreamCorruption: reading a large sparse payload in order, a
// chunk at a time (as patch apply reads one), gives LoadSparse's entries,
// f32 or f16 values, whatever the chunking; every flipped byte of it is an
// error naming the patch by the last chunk at the latest.
func TestSparseStreamCorruption(t *testing.T) {
	defer func(v int64) { streamAbove = v }(streamAbove)
	streamAbove = 0
	dir := t.TempDir()
	const n = 210000
	rng := rand.New(rand.NewPCG(2, 2))
	v := make([]float32, n)
	for i := range v {
		if rng.IntN(10) == 0 || i == 0 || i == n-1 {
			v[i] = float32(rng.NormFloat64())
		}
	}
	// entries reads tensor "s" of path in chunks of chunk elements and
	// returns the dense values.
	entries := func(path string, chunk int64) ([]float32, error) {
		pt, err := Open(path)
		if err != nil {
			return nil, err
		}
		defer pt.Close()
		e, _ := pt.Tensor("s")
		if e.Encoding != "sparse" || !pt.streamable(e) {
			t.Fatalf("payload %s not sparse and streamable", e.Encoding)
		}
		s, err := pt.sparse(e, n)
		if err != nil {
			return nil, err
		}
		defer s.close()
		out := make([]float32, n)
		for at := int64(0); at < n; at += chunk {
			idx, vals, err := s.at(at, min(at+chunk, n))
			if err != nil {
				return nil, err
			}
			for k, i := range idx {
				if i < at || i >= at+chunk {
					t.Fatalf("entry %d outside chunk at %d", i, at)
				}
				out[i] = vals[k]
			}
		}
		return out, nil
	}
	for _, values := range []string{"f32", "f16"} {
		p := filepath.Join(dir, values+".wpatch")
		writePatch(t, p, Encoding{Values: values}, map[string][]float32{"s": v})
		pt := openPatches(t, p)[0]
		want := make([]float32, n)
		if err := pt.Load("s", want); err != nil {
			t.Fatal(err)
		}
		for _, chunk := range []int64{65536, 1000, n} {
			got, err := entries(p, chunk)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(got, want) {
				t.Fatalf("%s, chunks of %d: entries differ from Load's", values, chunk)
			}
		}
		raw, _ := os.ReadFile(p)
		e, _ := pt.Tensor("s")
		q := filepath.Join(dir, "bad.wpatch")
		for k := 0; k < 100; k++ {
			b := append([]byte(nil), raw...)
			i := e.Offset + rng.Int64N(e.Length)
			b[i] ^= byte(1 + rng.IntN(255))
			os.WriteFile(q, b, 0o644)
			if _, err := entries(q, 65536); err == nil || !strings.Contains(err.Error(), q) {
				t.Fatalf("%s: byte %d flipped: %v", values, i, err)
			}
		}
	}
}

// TestApplySparseStreamedEqualsWhole: sparse patches (f32 and f16 values)
// read in order a chunk at a time give the patched model and undo records
// of the patches loaded whole, and remove restores the model byte for
// byte.
func TestApplySparseStreamedEqualsWhole(t *testing.T) {
	defer func(v, p int64) { stream.StreamAbove, streamAbove = v, p }(stream.StreamAbove, streamAbove)
	streamAbove = 0 // payloads written as windowed streams
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	randModel(t, mp, weights.BF16, 3)
	model, _ := weights.Open(mp)
	defer model.Close()
	rng := rand.New(rand.NewPCG(3, 3))
	var paths []string
	for k, values := range []string{"f32", "f16"} {
		p := filepath.Join(d, fmt.Sprintf("s%d.wpatch", k))
		w, err := Create(p, "rws", nil, Encoding{Values: values})
		if err != nil {
			t.Fatal(err)
		}
		for _, info := range model.Tensors() {
			if !info.DType.IsFloat() {
				continue
			}
			n, _ := info.NumElements()
			v := make([]float32, n)
			for j := range v {
				if rng.IntN(8) == 0 {
					v[j] = float32(rng.NormFloat64() * 0.3)
				}
			}
			if err := w.Add(info.Name, info.Shape, info.DType, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		paths = append(paths, p)
	}
	outs := map[string][]byte{}
	for _, mode := range []struct {
		name  string
		above int64
	}{{"whole", 1 << 62}, {"streamed", -1}} {
		stream.StreamAbove, streamAbove = mode.above, mode.above
		out := filepath.Join(d, mode.name+".safetensors")
		patches := openPatches(t, paths...)
		if mode.above < 0 {
			e, _ := patches[0].Tensor("layers.3.weight")
			if e.Encoding != "sparse" || !patches[0].streamable(e) {
				t.Fatal("the patch is not sparse and streamable")
			}
		}
		if _, err := Apply(context.Background(), model, patches, out, ApplyOptions{Scales: []float64{3.1, -7.7}}); err != nil {
			t.Fatal(err)
		}
		outs[mode.name], _ = os.ReadFile(out)
		patched, _ := weights.Open(out)
		back := filepath.Join(d, mode.name+".back.safetensors")
		restored := removeRestores(t, patched, openPatches(t, paths...), mp, back)
		patched.Close()
		if !restored {
			t.Errorf("%s: remove did not restore the model byte for byte", mode.name)
		}
	}
	if !bytes.Equal(outs["whole"], outs["streamed"]) {
		t.Error("streamed sparse patches give another patched model than loaded ones")
	}
}
