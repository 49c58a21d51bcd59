package wpatch

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

func randModel(t *testing.T, path string, dt weights.DType, seed uint64) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 1))
	var ts []weights.Tensor
	// The last: three rows of 70,000, three chunks when streamed.
	for i, shape := range [][]int64{{16, 32}, {32}, {7, 3, 5}, {3, 70000}} {
		n := int(shape[0])
		for _, d := range shape[1:] {
			n *= int(d)
		}
		v := make([]float64, n)
		for j := range v {
			// Magnitudes over many binades so patches cross them.
			v[j] = rng.NormFloat64() * math.Pow(2, float64(rng.IntN(12)-8))
		}
		b := make([]byte, n*dt.Size())
		_ = weights.Encode(dt, v, b)
		ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: fmt.Sprintf("layers.%d.weight", i), DType: dt, Shape: shape}, Data: b})
	}
	ids := []byte{1, 2, 3}
	ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: "ids", DType: weights.U8, Shape: []int64{3}}, Data: ids})
	if err := weights.WriteSafetensors(path, ts, map[string]string{"format": "pt", "note": "original"}); err != nil {
		t.Fatal(err)
	}
}

func randPatch(t *testing.T, path string, model weights.Checkpoint, seed uint64, enc Encoding, only ...string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 2))
	w, err := Create(path, "rws", nil, enc)
	if err != nil {
		t.Fatal(err)
	}
	for _, info := range model.Tensors() {
		if !info.DType.IsFloat() || (len(only) > 0 && !strings.Contains(strings.Join(only, ","), info.Name)) {
			continue
		}
		n, _ := info.NumElements()
		v := make([]float32, n)
		for j := range v {
			if rng.IntN(3) > 0 {
				v[j] = float32(rng.NormFloat64() * 0.05)
			}
		}
		if err := w.Add(info.Name, info.Shape, info.DType, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
}

func openPatches(t *testing.T, paths ...string) []*Patch {
	var out []*Patch
	for _, p := range paths {
		pt, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { pt.Close() })
		out = append(out, pt)
	}
	return out
}

// TestApplyRemoveBitExactEveryDType: patch → unpatch restores the file
// byte for byte for every float dtype, with two composed patches and
// non-trivial scales; apply equals round(θ + Σ s_i·d_i) from float64.
// TestApplyRemoveBitExactEveryDType: apply is round(θ + Σ s·d) by an
// independent float64 re-derivation and remove restores the file byte for
// byte, for every float dtype, with the tensors read whole or streamed
// chunk by chunk from the model's file (then the same bytes as whole).
func TestApplyRemoveBitExactEveryDType(t *testing.T) {
	defer func(v, p int64) { stream.StreamAbove, streamAbove = v, p }(stream.StreamAbove, streamAbove)
	wholeOut := map[weights.DType][]byte{}
	for _, mode := range []struct {
		name  string
		above int64
	}{{"whole", 1 << 62}, {"streamed", -1}} {
		// Streamed: the model's tensors and the patches' payloads.
		stream.StreamAbove, streamAbove = mode.above, mode.above
		applyRemoveEveryDType(t, mode.name, wholeOut)
	}
}

func applyRemoveEveryDType(t *testing.T, mode string, wholeOut map[weights.DType][]byte) {
	for _, dt := range []weights.DType{weights.F64, weights.F32, weights.F16, weights.BF16} {
		t.Run(mode+"/"+dt.String(), func(t *testing.T) {
			d := t.TempDir()
			mp := filepath.Join(d, "model.safetensors")
			randModel(t, mp, dt, 1)
			model, _ := weights.Open(mp)
			defer model.Close()
			p1, p2 := filepath.Join(d, "a.wpatch"), filepath.Join(d, "b.wpatch")
			randPatch(t, p1, model, 1, Encoding{})
			randPatch(t, p2, model, 2, Encoding{Values: "f16"}, "layers.0.weight")
			patches := openPatches(t, p1, p2)
			out := filepath.Join(d, "patched.safetensors")
			rep, err := Apply(context.Background(), model, patches, out, ApplyOptions{Scales: []float64{0.7, -1.3}})
			if err != nil {
				t.Fatal(err)
			}
			patched, _ := weights.Open(out)
			defer patched.Close()
			// Independent float64 re-derivation of one tensor.
			name := "layers.0.weight"
			orig, _ := model.ReadTensor(name, nil)
			got, _ := patched.ReadTensor(name, nil)
			d1, d2 := make([]float32, 512), make([]float32, 512)
			patches[0].Load(name, d1)
			patches[1].Load(name, d2)
			ov, _ := orig.Float64s()
			want := make([]float64, len(ov))
			for i := range ov {
				want[i] = ov[i] + (0.7*float64(d1[i]) + -1.3*float64(d2[i]))
			}
			wb := make([]byte, len(got.Data))
			weights.Encode(dt, want, wb)
			if !bytes.Equal(wb, got.Data) {
				t.Fatal("apply differs from round(θ + Σ s·d)")
			}
			if bytes.Equal(got.Data, orig.Data) {
				t.Fatal("patch changed nothing")
			}
			ids, _ := patched.ReadTensor("ids", nil)
			if !bytes.Equal(ids.Data, []byte{1, 2, 3}) {
				t.Error("integer tensor changed")
			}
			// The tensors and undo records (the patch files' hashes differ:
			// streamed payloads are compressed otherwise).
			var pb []byte
			for _, info := range patched.Tensors() {
				tb, _ := patched.ReadTensor(info.Name, nil)
				pb = append(pb, tb.Data...)
			}
			pb = append(pb, patched.Metadata()[MetaUndoRecords]...)
			if w, ok := wholeOut[dt]; !ok {
				wholeOut[dt] = pb
			} else if !bytes.Equal(w, pb) {
				t.Fatal("the streamed apply wrote other bytes than the whole one")
			}
			back := filepath.Join(d, "back.safetensors")
			restored := removeRestores(t, patched, patches, mp, back)
			if !restored {
				t.Fatalf("remove did not restore the file byte for byte (undo entries: %d)", rep.UndoEntries)
			}
			t.Logf("%s: %d undo entries, %d bytes of metadata", dt, rep.UndoEntries, rep.UndoBytes)
		})
	}
}

func TestApplyScaleZeroIsIdentityAndErrors(t *testing.T) {
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	randModel(t, mp, weights.BF16, 3)
	model, _ := weights.Open(mp)
	defer model.Close()
	pp := filepath.Join(d, "a.wpatch")
	randPatch(t, pp, model, 3, Encoding{})
	patches := openPatches(t, pp)
	out := filepath.Join(d, "same.safetensors")
	if _, err := Apply(context.Background(), model, patches, out, ApplyOptions{Scales: []float64{0}}); err != nil {
		t.Fatal(err)
	}
	o, _ := weights.Open(out)
	defer o.Close()
	for _, info := range model.Tensors() {
		a, _ := model.ReadTensor(info.Name, nil)
		b, _ := o.ReadTensor(info.Name, nil)
		if !bytes.Equal(a.Data, b.Data) {
			t.Fatalf("scale 0 changed %s", info.Name)
		}
	}
	// Removing with other patches than applied is refused.
	other := filepath.Join(d, "b.wpatch")
	randPatch(t, other, model, 4, Encoding{})
	if _, err := Remove(context.Background(), o, openPatches(t, other), filepath.Join(d, "x.safetensors"), ApplyOptions{}); err == nil || !strings.Contains(err.Error(), "a.wpatch") {
		t.Errorf("wrong patch on remove: %v", err)
	}
	// A patch for another model's shapes.
	mp2 := filepath.Join(d, "other.safetensors")
	weights.WriteSafetensors(mp2, []weights.Tensor{{TensorInfo: weights.TensorInfo{Name: "layers.0.weight", DType: weights.F32, Shape: []int64{2}}, Data: make([]byte, 8)}}, nil)
	m2, _ := weights.Open(mp2)
	defer m2.Close()
	if _, err := Apply(context.Background(), m2, patches, filepath.Join(d, "y.safetensors"), ApplyOptions{}); err == nil || !strings.Contains(err.Error(), `tensor "layers.0.weight"`) {
		t.Errorf("shape mismatch: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d, "y.safetensors")); err == nil {
		t.Error("failed apply left an output")
	}
}

func TestBaseMismatchWarnsOrFails(t *testing.T) {
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	randModel(t, mp, weights.F32, 5)
	model, _ := weights.Open(mp)
	defer model.Close()
	pp := filepath.Join(d, "a.wpatch")
	w, _ := Create(pp, "rws", nil, Encoding{})
	w.SetBase(strings.Repeat("ab", 32))
	w.Add("layers.1.weight", []int64{32}, weights.F32, make([]float32, 32))
	w.Commit()
	patches := openPatches(t, pp)
	rep, err := Apply(context.Background(), model, patches, filepath.Join(d, "o.safetensors"), ApplyOptions{})
	if err != nil || len(rep.Warnings) != 1 {
		t.Errorf("non-strict: %v %v", err, rep)
	}
	if _, err := Apply(context.Background(), model, patches, filepath.Join(d, "s.safetensors"), ApplyOptions{Strict: true}); err == nil {
		t.Error("strict accepted a patch for another base")
	}
	digest, _ := weights.CheckpointDigest(model)
	w, _ = Create(pp, "rws", nil, Encoding{})
	w.SetBase(digest)
	w.Add("layers.1.weight", []int64{32}, weights.F32, make([]float32, 32))
	w.Commit()
	if rep, err := Apply(context.Background(), model, openPatches(t, pp), filepath.Join(d, "t.safetensors"), ApplyOptions{Strict: true}); err != nil || len(rep.Warnings) != 0 {
		t.Errorf("matching base: %v %v", err, rep)
	}
}

// Replaced tensors (a patched one and an untouched integer one) are
// written as given, recorded whole, and restored by Remove bit for bit;
// a replacement of the wrong size or for a missing tensor is refused.
func TestApplyReplace(t *testing.T) {
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	randModel(t, mp, weights.BF16, 3)
	model, _ := weights.Open(mp)
	defer model.Close()
	pp := filepath.Join(d, "a.wpatch")
	randPatch(t, pp, model, 4, Encoding{}, "layers.1.weight")
	patches := openPatches(t, pp)
	repl := map[string][]byte{"layers.1.weight": bytes.Repeat([]byte{0x80, 0x3f}, 32), "ids": {9, 9, 9}}
	out := filepath.Join(d, "patched.safetensors")
	if _, err := Apply(context.Background(), model, patches, out, ApplyOptions{Replace: repl, Metadata: map[string]string{"weightops.note": "x"}}); err != nil {
		t.Fatal(err)
	}
	patched, _ := weights.Open(out)
	defer patched.Close()
	for name, want := range repl {
		got, _ := patched.ReadTensor(name, nil)
		if !bytes.Equal(got.Data, want) {
			t.Errorf("%s: not the replacement", name)
		}
	}
	if patched.Metadata()["weightops.note"] != "x" {
		t.Error("extra metadata missing")
	}
	back := filepath.Join(d, "back.safetensors")
	restored := removeRestores(t, patched, patches, mp, back)
	if !restored {
		t.Fatal("remove did not restore the replaced tensors")
	}
	for _, bad := range []map[string][]byte{{"ids": {1}}, {"nope": {1}}} {
		if _, err := Apply(context.Background(), model, patches, filepath.Join(d, "x.safetensors"), ApplyOptions{Replace: bad}); err == nil {
			t.Errorf("replacement %v accepted", bad)
		}
	}
}

// With AverageBNAffine, a batchnorm's weight and bias get the mean of the
// patches' scaled changes, other tensors their sum (checked in float64);
// Remove reads the choice from the metadata and restores the file.
func TestAverageBNAffine(t *testing.T) {
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	rng := rand.New(rand.NewPCG(8, 8))
	var ts []weights.Tensor
	for _, c := range []struct {
		name string
		n    int
	}{{"conv.weight", 12}, {"bn.weight", 4}, {"bn.bias", 4}, {"bn.running_mean", 4}, {"head.bias", 3}} {
		v := make([]float64, c.n)
		for i := range v {
			v[i] = rng.NormFloat64()
		}
		b := make([]byte, 4*c.n)
		weights.Encode(weights.F32, v, b)
		ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: c.name, DType: weights.F32, Shape: []int64{int64(c.n)}}, Data: b})
	}
	if err := weights.WriteSafetensors(mp, ts, nil); err != nil {
		t.Fatal(err)
	}
	model, _ := weights.Open(mp)
	defer model.Close()
	p1, p2 := filepath.Join(d, "a.wpatch"), filepath.Join(d, "b.wpatch")
	randPatch(t, p1, model, 5, Encoding{}, "conv.weight", "bn.weight", "bn.bias", "head.bias")
	randPatch(t, p2, model, 6, Encoding{}, "conv.weight", "bn.weight", "bn.bias", "head.bias")
	patches := openPatches(t, p1, p2)
	out := filepath.Join(d, "patched.safetensors")
	if _, err := Apply(context.Background(), model, patches, out, ApplyOptions{Scales: []float64{0.6, 1.5}, AverageBNAffine: true}); err != nil {
		t.Fatal(err)
	}
	patched, _ := weights.Open(out)
	defer patched.Close()
	for _, name := range []string{"conv.weight", "bn.weight", "bn.bias", "head.bias"} {
		orig, _ := model.ReadTensor(name, nil)
		got, _ := patched.ReadTensor(name, nil)
		ov, _ := orig.Float64s()
		gv, _ := got.Float64s()
		d1, d2 := make([]float32, len(ov)), make([]float32, len(ov))
		patches[0].Load(name, d1)
		patches[1].Load(name, d2)
		div := 1.0
		if strings.HasPrefix(name, "bn.") {
			div = 2
		}
		for i := range ov {
			want := float64(float32(ov[i] + (0.6*float64(d1[i])+1.5*float64(d2[i]))/div))
			if gv[i] != want {
				t.Fatalf("%s[%d] = %v, want %v", name, i, gv[i], want)
			}
		}
	}
	if patched.Metadata()[MetaBNAveraged] != "true" {
		t.Error("averaging not recorded")
	}
	back := filepath.Join(d, "back.safetensors")
	restored := removeRestores(t, patched, patches, mp, back)
	if !restored {
		t.Fatal("remove did not restore an averaged apply")
	}
}

// TestRoundTrips: only bytes that decoding and encoding again would change
// (a NaN's payload) send an undo record's tensor down the whole path.
func TestRoundTrips(t *testing.T) {
	if !roundTrips(weights.BF16, []byte{0x80, 0x3f, 0x00, 0x80, 0x01, 0x00}) { // 1, −0, a subnormal
		t.Error("finite BF16 values do not round-trip")
	}
	if roundTrips(weights.BF16, []byte{0x81, 0x7f}) { // NaN with payload 1
		t.Error("a NaN payload round-trips")
	}
}

// TestApplyQuantizedPatch: a quantized patch, dequantized a chunk at a
// time as it is applied, gives round(θ + s·d) with d the values Load
// gives back (the whole-tensor dequantization), computed here in float64,
// read whole or streamed; remove restores the model byte for byte.
func TestApplyQuantizedPatch(t *testing.T) {
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	randModel(t, mp, weights.BF16, 4)
	model, _ := weights.Open(mp)
	defer model.Close()
	for _, spec := range []string{"4bit-sym-block64", "3bit-asym-channel", "q4_k"} {
		cfg, err := quantize.ParseConfig(spec)
		if err != nil {
			t.Fatal(err)
		}
		pp := filepath.Join(d, spec+".wpatch")
		randPatch(t, pp, model, 4, Encoding{Values: "q", Quant: cfg, Sparse: "never"})
		for _, above := range []int64{1 << 62, -1} {
			stream.StreamAbove = above
			out := filepath.Join(d, "patched.safetensors")
			patches := openPatches(t, pp)
			if _, err := Apply(context.Background(), model, patches, out, ApplyOptions{Scales: []float64{-2.5}}); err != nil {
				t.Fatal(err)
			}
			patched, _ := weights.Open(out)
			for _, info := range model.Tensors() {
				if !info.DType.IsFloat() {
					continue
				}
				n, _ := info.NumElements()
				dv := make([]float32, n)
				if err := patches[0].Load(info.Name, dv); err != nil {
					t.Fatal(err)
				}
				orig, _ := model.ReadTensor(info.Name, nil)
				ov, _ := orig.Float64s()
				for i := range ov {
					ov[i] += -2.5 * float64(dv[i])
				}
				want := make([]byte, len(orig.Data))
				_ = weights.Encode(info.DType, ov, want)
				got, _ := patched.ReadTensor(info.Name, nil)
				if !bytes.Equal(got.Data, want) {
					t.Fatalf("%s (stream above %d): %s differs from θ + s·Load", spec, above, info.Name)
				}
			}
			back := filepath.Join(d, "back.safetensors")
			restored := removeRestores(t, patched, openPatches(t, pp), mp, back)
			patched.Close()
			if !restored {
				t.Errorf("%s: remove did not restore the model", spec)
			}
		}
	}
}

// removeRestores removes patches from patched into back and reports
// whether back is the model file byte for byte.
func removeRestores(t *testing.T, patched weights.Checkpoint, patches []*Patch, model, back string) bool {
	t.Helper()
	if _, err := Remove(context.Background(), patched, patches, back, ApplyOptions{}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(model)
	b, _ := os.ReadFile(back)
	return bytes.Equal(a, b)
}

// TestApplyRemoveNonFinite: with AllowNonFinite a model's ±Inf and NaNs
// (one with a payload) go through patching element by element — Inf + d
// is the same Inf, NaN stays NaN — and remove gives the file back byte for
// byte, for tensors read whole and streamed; without it they are refused,
// naming the tensor.
func TestApplyRemoveNonFinite(t *testing.T) {
	defer func(v, p int64) { stream.StreamAbove, streamAbove = v, p }(stream.StreamAbove, streamAbove)
	for _, mode := range []struct {
		name  string
		above int64
	}{{"whole", 1 << 62}, {"streamed", -1}} {
		stream.StreamAbove, streamAbove = mode.above, mode.above
		for _, dt := range []weights.DType{weights.F32, weights.BF16} {
			t.Run(mode.name+"/"+dt.String(), func(t *testing.T) {
				d := t.TempDir()
				clean := filepath.Join(d, "clean.safetensors")
				randModel(t, clean, dt, 3)
				m, _ := weights.Open(clean)
				var ts []weights.Tensor
				for _, name := range []string{"layers.0.weight", "layers.1.weight", "layers.2.weight", "layers.3.weight", "ids"} {
					x, _ := m.ReadTensor(name, nil)
					ts = append(ts, x)
				}
				m.Close()
				// +Inf, −Inf, NaN, a NaN with a payload: in the small
				// first tensor and in the 210,000-element last one.
				var special [][]byte
				for _, v := range []float64{math.Inf(1), math.Inf(-1), math.NaN()} {
					b := make([]byte, dt.Size())
					_ = weights.Encode(dt, []float64{v}, b)
					special = append(special, b)
				}
				payload := append([]byte(nil), special[2]...)
				payload[0] |= 0x05 // a quiet NaN, low mantissa bits set
				special = append(special, payload)
				pos := []int{0, 17, 200, 511}
				for _, k := range []int{0, 3} {
					for i, p := range pos {
						at := p * (k*102 + 1) // spread over the last tensor's chunks
						copy(ts[k].Data[at*dt.Size():], special[i])
					}
				}
				mp := filepath.Join(d, "model.safetensors")
				if err := weights.WriteSafetensors(mp, ts, map[string]string{"format": "pt"}); err != nil {
					t.Fatal(err)
				}
				model, _ := weights.Open(mp)
				defer model.Close()
				pp := filepath.Join(d, "a.wpatch")
				randPatch(t, pp, model, 1, Encoding{})
				patches := openPatches(t, pp)
				out := filepath.Join(d, "patched.safetensors")
				if _, err := Apply(context.Background(), model, patches, out, ApplyOptions{}); err == nil || !strings.Contains(err.Error(), "layers.") {
					t.Fatalf("non-finite model applied without AllowNonFinite: %v", err)
				}
				allow := ApplyOptions{Options: stream.Options{AllowNonFinite: true}}
				if _, err := Apply(context.Background(), model, patches, out, allow); err != nil {
					t.Fatal(err)
				}
				patched, err := weights.Open(out)
				if err != nil {
					t.Fatal(err)
				}
				defer patched.Close()
				for _, k := range []int{0, 3} {
					x, _ := patched.ReadTensor(ts[k].Name, nil)
					v := make([]float64, len(x.Data)/dt.Size())
					_ = weights.Decode(dt, x.Data, v)
					for i, p := range pos {
						got := v[p*(k*102+1)]
						switch {
						case i == 0 && !math.IsInf(got, 1), i == 1 && !math.IsInf(got, -1), i >= 2 && !math.IsNaN(got):
							t.Errorf("%s[%d] patched = %v, want it kept non-finite (case %d)", ts[k].Name, p*(k*102+1), got, i)
						}
					}
				}
				back := filepath.Join(d, "back.safetensors")
				if _, err := Remove(context.Background(), patched, patches, back, allow); err != nil {
					t.Fatal(err)
				}
				a, _ := os.ReadFile(mp)
				b, _ := os.ReadFile(back)
				if !bytes.Equal(a, b) {
					t.Fatal("remove did not restore the model with non-finite values byte for byte")
				}
			})
		}
	}
}
