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
	"testing"

	"github.com/weightops/weightops/gguf"
	"github.com/weightops/weightops/quantize"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// quantModel writes a checkpoint with what quantizing one meets: every
// float dtype, tensors spanning several chunks with rows that no block
// size divides, one mostly zero (stored sparse), an empty one and an
// integer one (copied).
func quantModel(t *testing.T, path string) {
	t.Helper()
	rng := rand.New(rand.NewPCG(3, 4))
	var ts []weights.Tensor
	add := func(name string, dt weights.DType, shape []int64, zeros float64) {
		n := int64(1)
		for _, d := range shape {
			n *= d
		}
		v := make([]float64, n)
		for i := range v {
			if rng.Float64() >= zeros {
				v[i] = rng.NormFloat64() * 0.05
			}
		}
		b := make([]byte, dt.Bytes(n))
		_ = weights.Encode(dt, v, b)
		ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: name, DType: dt, Shape: shape}, Data: b})
	}
	add("big.bf16", weights.BF16, []int64{3, 70001}, 0)
	add("big.f16", weights.F16, []int64{2, 3, 33333}, 0)
	add("big.f32", weights.F32, []int64{140000}, 0)
	add("mid.f64", weights.F64, []int64{90, 1000}, 0)
	add("sparse.bf16", weights.BF16, []int64{4, 50000}, 0.9)
	add("small.bf16", weights.BF16, []int64{16, 32}, 0)
	add("empty.bf16", weights.BF16, []int64{0, 8}, 0)
	ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: "ids", DType: weights.I32, Shape: []int64{2}}, Data: []byte{1, 0, 0, 0, 2, 0, 0, 0}})
	if err := weights.WriteSafetensors(path, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
}

// TestQuantizeCheckpointEqualsWholeTensors: the container is, byte for
// byte, what AddReconstructed writes for each tensor read whole and the
// copy holds exactly the values it gives back, with the tensors read whole
// or streamed in chunks from the file, on one worker or two, for codecs of
// every granularity (one group, rows, blocks straddling rows, ggml's).
func TestQuantizeCheckpointEqualsWholeTensors(t *testing.T) {
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	quantModel(t, mp)
	model, err := weights.Open(mp)
	if err != nil {
		t.Fatal(err)
	}
	defer model.Close()
	q4k, _ := quantize.GGMLConfig(gguf.Q4_K)
	cfgs := []quantize.Config{
		{Bits: 4, Scheme: quantize.Symmetric, Granularity: quantize.PerBlock, BlockSize: 64},
		{Bits: 3, Scheme: quantize.Asymmetric, Granularity: quantize.PerTensor},
		{Bits: 8, Scheme: quantize.Asymmetric, Granularity: quantize.PerChannel, MSE: true},
		{Bits: 4, Scheme: quantize.Asymmetric, Granularity: quantize.PerBlock, BlockSize: 100, F16Scales: true},
		{Bits: 4, Scheme: quantize.Log, Granularity: quantize.PerBlock, BlockSize: 32},
		q4k,
	}
	for ci, cfg := range cfgs {
		// The reference: each tensor read whole, through Add's path.
		ref := filepath.Join(d, fmt.Sprintf("ref%d.wq", ci))
		w, err := Create(ref, "weights", map[string]string{"source": mp, "quantized": cfg.String()}, Encoding{Values: "q", Quant: cfg})
		if err != nil {
			t.Fatal(err)
		}
		want := map[string][]byte{}
		for _, info := range model.Tensors() {
			ten, err := model.ReadTensor(info.Name, nil)
			if err != nil {
				t.Fatal(err)
			}
			if !info.DType.IsFloat() {
				want[info.Name] = ten.Data
				continue
			}
			v, err := ten.Float32s()
			if err != nil {
				t.Fatal(err)
			}
			deq, err := w.AddReconstructed(info.Name, info.Shape, info.DType, v)
			if err != nil {
				t.Fatal(err)
			}
			want[info.Name] = make([]byte, info.DType.Bytes(int64(len(deq))))
			if err := weights.EncodeFloat32(info.DType, deq, want[info.Name]); err != nil {
				t.Fatal(err)
			}
		}
		wantErrs := w.Errors()
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		wantWQ, _ := os.ReadFile(ref)
		for _, mode := range []struct {
			name  string
			above int64
		}{{"whole", 1 << 62}, {"streamed", -1}} {
			for _, workers := range []int{1, 2} {
				stream.StreamAbove = mode.above
				label := fmt.Sprintf("%s/%s/%d workers", cfg, mode.name, workers)
				out := filepath.Join(d, fmt.Sprintf("q%d-%s-%d", ci, mode.name, workers))
				s, err := QuantizeCheckpoint(context.Background(), model, out, cfg, stream.Options{Workers: workers})
				if err != nil {
					t.Fatalf("%s: %v", label, err)
				}
				got, _ := os.ReadFile(filepath.Join(out, "model.wq"))
				if !bytes.Equal(got, wantWQ) {
					t.Errorf("%s: model.wq differs from the whole-tensor container", label)
				}
				if !reflect.DeepEqual(s.PerTensor, wantErrs) {
					t.Errorf("%s: quantization errors differ:\n got %v\nwant %v", label, s.PerTensor, wantErrs)
				}
				cp, err := weights.Open(filepath.Join(out, "model.safetensors"))
				if err != nil {
					t.Fatal(err)
				}
				for name, b := range want {
					ten, err := cp.ReadTensor(name, nil)
					if err != nil {
						t.Fatal(err)
					}
					if !bytes.Equal(ten.Data, b) {
						t.Errorf("%s: %s: the copy is not the values the container gives back", label, name)
					}
				}
				cp.Close()
			}
		}
	}
}

// TestQuantizeCheckpointFailureLeavesNothing: a tensor that cannot be
// quantized (its range overflows F16 scales) fails the run naming it, with
// no output, no spool and not the directory it made left behind, streamed
// or not.
func TestQuantizeCheckpointFailureLeavesNothing(t *testing.T) {
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	d := t.TempDir()
	mp := filepath.Join(d, "model.safetensors")
	v := make([]float32, 200000)
	for i := range v {
		v[i] = float32(i%1000) * 0.01
	}
	v[150001] = 1e6 // beyond what an F16 scale holds
	b := make([]byte, 4*len(v))
	_ = weights.EncodeFloat32(weights.F32, v, b)
	ts := []weights.Tensor{{TensorInfo: weights.TensorInfo{Name: "w", DType: weights.F32, Shape: []int64{2, 100000}}, Data: b}}
	if err := weights.WriteSafetensors(mp, ts, nil); err != nil {
		t.Fatal(err)
	}
	model, _ := weights.Open(mp)
	defer model.Close()
	for _, cfg := range []quantize.Config{
		{Bits: 4, Scheme: quantize.Symmetric, Granularity: quantize.PerBlock, BlockSize: 64, F16Scales: true},
		{Bits: 4, Scheme: quantize.Asymmetric, Granularity: quantize.PerTensor, F16Scales: true},
	} {
		for _, above := range []int64{1 << 62, -1} {
			stream.StreamAbove = above
			out := filepath.Join(d, "out")
			_, err := QuantizeCheckpoint(context.Background(), model, out, cfg, stream.Options{Workers: 2})
			if err == nil || !bytes.Contains([]byte(err.Error()), []byte(`"w"`)) {
				t.Errorf("%s (stream above %d): error %v, want one naming tensor \"w\"", cfg, above, err)
			}
			if _, err := os.Stat(out); !os.IsNotExist(err) {
				t.Errorf("%s: the output directory made for the run is left behind (%v)", cfg, err)
			}
			left, _ := os.ReadDir(d)
			if len(left) != 1 {
				t.Errorf("%s: %d files beside the model after a failed run", cfg, len(left)-1)
			}
		}
	}
}

// TestRequantizeStreamedEqualsWhole: re-encoding a patch whose dense
// payloads are read a chunk at a time stores the entries (encoding, raw
// length, checksum) and errors of re-encoding them loaded whole, for a
// blocked, a single-group and a ggml codec; a dense-stored tensor under a
// third non-zero still becomes sparse.
func TestRequantizeStreamedEqualsWhole(t *testing.T) {
	defer func(v int64) { streamAbove = v }(streamAbove)
	streamAbove = 0 // windowed payloads, read in order
	d := t.TempDir()
	src := filepath.Join(d, "src.wpatch")
	tensors := partsTensors()
	rng := rand.New(rand.NewPCG(8, 8))
	mostlyZero := make([]float32, 150000)
	for i := range mostlyZero {
		if rng.IntN(10) == 0 {
			mostlyZero[i] = float32(rng.NormFloat64())
		}
	}
	w, err := Create(src, "task-vector", nil, Encoding{Values: "f16", Sparse: "never"})
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"dense", "sparsefirst"} {
		if err := w.Add(name, []int64{int64(len(tensors[name]))}, weights.BF16, tensors[name]); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Add("mostlyzero", []int64{3, 50000}, weights.BF16, mostlyZero); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	q8, _ := quantize.GGMLConfig(gguf.Q8_0)
	for _, cfg := range []quantize.Config{
		{Bits: 4, Scheme: quantize.Symmetric, Granularity: quantize.PerBlock, BlockSize: 64},
		{Bits: 3, Scheme: quantize.Asymmetric, Granularity: quantize.PerTensor},
		q8,
	} {
		run := func(above int64, out string) (*Summary, *Patch) {
			streamAbove = above
			p := openPatches(t, src)[0]
			if e, _ := p.Tensor("dense"); p.streamable(e) != (above == 0) {
				t.Fatalf("stream above %d: streamable %v", above, p.streamable(e))
			}
			s, err := Requantize(context.Background(), p, out, cfg, stream.Options{Workers: 2})
			if err != nil {
				t.Fatalf("%s: %v", cfg, err)
			}
			return s, openPatches(t, out)[0]
		}
		ws, wp := run(1<<62, filepath.Join(d, "whole.wpatch"))
		ss, sp := run(0, filepath.Join(d, "streamed.wpatch"))
		if !reflect.DeepEqual(ws.PerTensor, ss.PerTensor) {
			t.Errorf("%s: errors differ:\n%v\n%v", cfg, ss.PerTensor, ws.PerTensor)
		}
		for _, name := range []string{"dense", "sparsefirst", "mostlyzero"} {
			a, _ := wp.Tensor(name)
			b, _ := sp.Tensor(name)
			a.Offset, a.Length, b.Offset, b.Length = 0, 0, 0, 0
			if !reflect.DeepEqual(a, b) {
				t.Errorf("%s: %s: entry %+v streamed, %+v whole", cfg, name, b, a)
			}
		}
		if e, _ := sp.Tensor("mostlyzero"); e.Encoding != "sparse" {
			t.Errorf("%s: a tensor under a third non-zero stored %s", cfg, e.Encoding)
		}
	}
}

// TestMaxOf: maxOf is math.Max on every pair of values an error's running
// maximum and an |error| can take: zero, numbers, +Inf and NaN.
func TestMaxOf(t *testing.T) {
	vals := []float64{0, 1e-300, 0.5, 3, math.MaxFloat64, math.Inf(1), math.NaN()}
	for _, m := range vals {
		for _, a := range vals {
			got, want := maxOf(m, a), math.Max(m, a)
			if math.Float64bits(got) != math.Float64bits(want) && !(got != got && want != want) {
				t.Errorf("maxOf(%g, %g) = %g, math.Max %g", m, a, got, want)
			}
		}
	}
}
