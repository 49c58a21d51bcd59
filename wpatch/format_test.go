package wpatch

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/weights"
)

func writePatch(t testing.TB, path string, enc Encoding, tensors map[string][]float32) {
	t.Helper()
	w, err := Create(path, "task-vector", map[string]string{"source": "test"}, enc)
	if err != nil {
		t.Fatal(err)
	}
	for name, v := range tensors {
		if err := w.Add(name, []int64{int64(len(v) / 4), 4}, weights.BF16, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func TestPatchRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(3, 3))
	dense := make([]float32, 64)
	for i := range dense {
		dense[i] = float32(rng.NormFloat64())
	}
	sparse := make([]float32, 4000)
	for i := 0; i < len(sparse); i += 37 {
		sparse[i] = float32(rng.NormFloat64())
	}
	zeros := make([]float32, 8)
	q4, _ := quantize.ParseConfig("4bit-sym-block32")
	for _, enc := range []Encoding{{Values: "f32"}, {Values: "f16"}, {Values: "q", Quant: q4}, {Values: "f32", Sparse: "never"}, {Values: "f32", Sparse: "always"}} {
		p := filepath.Join(t.TempDir(), "x.wpatch")
		writePatch(t, p, enc, map[string][]float32{"layers.10.w": dense, "layers.2.w": sparse, "z": zeros})
		pt, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		if pt.Kind != "task-vector" || pt.Metadata["source"] != "test" || pt.Tensors[0].Name != "layers.2.w" {
			t.Errorf("header %+v", pt.Header)
		}
		for name, want := range map[string][]float32{"layers.10.w": dense, "layers.2.w": sparse, "z": zeros} {
			got := make([]float32, len(want))
			if err := pt.Load(name, got); err != nil {
				t.Fatal(err)
			}
			for i := range want {
				var ok bool
				switch enc.Values {
				case "f32":
					ok = got[i] == want[i]
				case "f16":
					ok = math.Abs(float64(got[i]-want[i])) <= math.Abs(float64(want[i]))*1e-3
				case "q":
					ok = math.Abs(float64(got[i]-want[i])) <= 0.6 // half a step of absmax/7 for |x| ≲ 4
				}
				if !ok || (want[i] == 0 && enc.Values != "q" && got[i] != 0) {
					t.Fatalf("%v %s[%d] = %v, want %v", enc, name, i, got[i], want[i])
				}
			}
		}
		if e, _ := pt.Tensor("layers.2.w"); enc.Sparse != "never" && e.Encoding != "sparse" {
			t.Errorf("%v: mostly-zero tensor stored %s", enc, e.Encoding)
		}
		pt.Close()
	}
}

func TestPatchCorruptionIsReported(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "ok.wpatch")
	writePatch(t, p, Encoding{}, map[string][]float32{"a": {1, 2, 3, 4, 5, 6, 7, 8}, "b": {0, 0, 0, 1, 0, 0, 0, 0}})
	raw, _ := os.ReadFile(p)
	check := func(what string, data []byte) {
		t.Helper()
		q := filepath.Join(dir, "bad.wpatch")
		os.WriteFile(q, data, 0o644)
		pt, err := Open(q)
		if err == nil {
			// The header survived: every payload must then load or fail cleanly.
			for _, e := range pt.Tensors {
				dst := make([]float32, e.Elements())
				if lerr := pt.Load(e.Name, dst); lerr != nil {
					err = lerr
				}
			}
			pt.Close()
		}
		if err == nil {
			t.Errorf("%s: accepted", what)
		} else if !strings.Contains(err.Error(), q) {
			t.Errorf("%s: error %q does not name the file", what, err)
		}
	}
	for cut := 0; cut < len(raw); cut++ {
		check("truncated", raw[:cut])
	}
	for i := 0; i < len(raw); i++ {
		b := append([]byte(nil), raw...)
		b[i] ^= 0x41
		check("flipped byte", b)
	}
	v2 := append([]byte(nil), raw...)
	binary.LittleEndian.PutUint32(v2[len(v2)-4:], 2)
	q := filepath.Join(dir, "v2.wpatch")
	os.WriteFile(q, v2, 0o644)
	if _, err := Open(q); !errors.Is(err, ErrVersion) || !strings.Contains(err.Error(), "version 2") {
		t.Errorf("future version: %v", err)
	}
}

func TestPatchRefusesNonFinite(t *testing.T) {
	w, err := Create(filepath.Join(t.TempDir(), "x.wpatch"), "rws", nil, Encoding{})
	if err != nil {
		t.Fatal(err)
	}
	defer w.Abort()
	if err := w.Add("a", []int64{2}, weights.F32, []float32{1, float32(math.NaN())}); err == nil {
		t.Error("NaN accepted")
	}
}

// FuzzPatch opens arbitrary bytes as a patch and loads every tensor it
// lists: never a panic, and never an allocation the file cannot justify.
// Seed corpus: testdata/fuzz/FuzzPatch.
func FuzzPatch(f *testing.F) {
	dir := f.TempDir()
	p := filepath.Join(dir, "seed.wpatch")
	writePatch(f, p, Encoding{}, map[string][]float32{"a": {1, 2, 3, 4, 5, 6, 7, 8}, "b": {0, 0, 0, 1, 0, 0, 0, 0}})
	raw, _ := os.ReadFile(p)
	f.Add(raw)
	q4, _ := quantize.ParseConfig("4bit-asym-block32")
	writePatch(f, p, Encoding{Values: "q", Quant: q4}, map[string][]float32{"a": {1, 2, 3, 4, 5, 6, 7, 8}})
	raw, _ = os.ReadFile(p)
	f.Add(raw)
	// Payloads compressed as windowed streams, also read a chunk at a time.
	defer func(v int64) { streamAbove = v }(streamAbove)
	streamAbove = 0
	writePatch(f, p, Encoding{Values: "f16"}, map[string][]float32{"a": {1, 2, 3, 4, 5, 6, 7, 8}})
	raw, _ = os.ReadFile(p)
	f.Add(raw)
	writePatch(f, p, Encoding{}, map[string][]float32{"s": {0, 0, 1.5, 0, 0, 0, -2, 0, 0, 0, 0, 3}})
	raw, _ = os.ReadFile(p)
	f.Add(raw)
	f.Fuzz(func(t *testing.T, data []byte) {
		q := filepath.Join(t.TempDir(), "f.wpatch")
		os.WriteFile(q, data, 0o644)
		pt, err := Open(q)
		if err != nil {
			return
		}
		defer pt.Close()
		// Load at most 2^20 values per input in all: a header may list
		// many large tensors, and allocating for each is this harness's
		// cost, not the reader's (which checks every payload against the
		// file); slow inputs make Go's fuzz coordinator time out.
		budget := int64(1 << 20)
		for _, e := range pt.Tensors {
			if n := e.Elements(); n <= budget {
				budget -= n
				_ = pt.Load(e.Name, make([]float32, n))
				if !pt.streamable(e) {
					continue
				}
				if e.Encoding == "sparse" {
					if v, err := pt.sparse(e, n); err == nil {
						for s := int64(0); s < n; s += 3 {
							if _, _, err := v.at(s, min(n, s+3)); err != nil {
								break
							}
						}
						v.close()
					}
					continue
				}
				if v, err := pt.values(e, n); err == nil {
					for s := int64(0); s < n; s += 3 {
						if _, err := v.at(s, min(n, s+3)); err != nil {
							break
						}
					}
					v.close()
				}
			}
		}
	})
}

// TestPatchBytesIndependentOfOrder: tensors added in any order (as workers
// finish) give the same file.
func TestPatchBytesIndependentOfOrder(t *testing.T) {
	d := t.TempDir()
	write := func(p string, order []string) {
		w, err := Create(p, "rws", map[string]string{"k": "v"}, Encoding{})
		if err != nil {
			t.Fatal(err)
		}
		for _, n := range order {
			v := make([]float32, 8)
			for i := range v {
				v[i] = float32(len(n) + i)
			}
			if err := w.Add(n, []int64{8}, weights.F32, v); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
	}
	a, b := filepath.Join(d, "a.wpatch"), filepath.Join(d, "b.wpatch")
	write(a, []string{"layers.0.w", "layers.1.w", "layers.10.w", "layers.2.w"})
	write(b, []string{"layers.10.w", "layers.2.w", "layers.0.w", "layers.1.w"})
	x, _ := os.ReadFile(a)
	y, _ := os.ReadFile(b)
	if string(x) != string(y) {
		t.Fatal("the same tensors added in another order give other bytes")
	}
	if _, err := Open(a); err != nil {
		t.Fatal(err)
	}
	if ents, _ := os.ReadDir(d); len(ents) != 2 {
		t.Errorf("%d files left, want 2", len(ents))
	}
}

// TestAddReconstructedMatchesLoad: what AddReconstructed returns is what
// Load gives back, for every encoding, dense and sparse.
func TestAddReconstructedMatchesLoad(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 1))
	v := make([]float32, 256)
	for i := range v {
		if i%5 == 0 {
			v[i] = float32(rng.NormFloat64())
		}
	}
	q4, _ := quantize.ParseConfig("4bit-asym-block32")
	for _, enc := range []Encoding{{Values: "f32"}, {Values: "f16"}, {Values: "q", Quant: q4}, {Values: "q", Quant: q4, Sparse: "never"}} {
		p := filepath.Join(t.TempDir(), "r.wpatch")
		w, _ := Create(p, "weights", nil, enc)
		back, err := w.AddReconstructed("w", []int64{16, 16}, weights.F32, v)
		if err != nil {
			t.Fatal(err)
		}
		w.Commit()
		pt, _ := Open(p)
		got := make([]float32, len(v))
		if err := pt.Load("w", got); err != nil {
			t.Fatal(err)
		}
		pt.Close()
		for i := range got {
			if got[i] != back[i] {
				t.Fatalf("%+v: element %d: Load %v, AddReconstructed %v", enc, i, got[i], back[i])
			}
		}
	}
}

// TestSetBaseLater: the digest handed over at commit is the header's; a
// failing one fails the commit and leaves no file.
func TestSetBaseLater(t *testing.T) {
	d := t.TempDir()
	for _, fail := range []bool{false, true} {
		path := filepath.Join(d, fmt.Sprintf("p%v.wpatch", fail))
		w, err := Create(path, "full", nil, Encoding{})
		if err != nil {
			t.Fatal(err)
		}
		if err := w.Add("x", []int64{2}, weights.F32, []float32{1, 2}); err != nil {
			t.Fatal(err)
		}
		w.SetBaseLater(func() (string, error) {
			if fail {
				return "", errors.New("reading the base failed")
			}
			return "abc123", nil
		})
		err = w.Commit()
		if fail {
			if err == nil || !strings.Contains(err.Error(), "reading the base failed") {
				t.Fatalf("commit with a failing digest: %v", err)
			}
			if entries, _ := os.ReadDir(d); len(entries) != 1 {
				t.Fatalf("a failed commit left files: %v", entries)
			}
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		p, err := Open(path)
		if err != nil {
			t.Fatal(err)
		}
		if p.BaseSHA256 != "abc123" {
			t.Fatalf("base %q, want abc123", p.BaseSHA256)
		}
		p.Close()
	}
}
