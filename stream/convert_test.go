package stream

import (
	"bytes"
	"context"
	"fmt"
	"math"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/weights"
)

func TestConvertDTypeAndShards(t *testing.T) {
	dir := t.TempDir()
	vals := []float64{1, -2.5, math.Pi, 1e-3, math.NaN(), math.Inf(1)}
	f32 := make([]byte, 4*len(vals))
	_ = weights.Encode(weights.F32, vals, f32)
	src := filepath.Join(dir, "src.safetensors")
	ids := []byte{1, 0, 0, 0, 0, 0, 0, 0}
	if err := weights.WriteSafetensors(src, []weights.Tensor{{TensorInfo: weights.TensorInfo{Name: "w", DType: weights.F32, Shape: []int64{2, 3}}, Data: f32}, {TensorInfo: weights.TensorInfo{Name: "ids", DType: weights.I64, Shape: []int64{1}}, Data: ids}}, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	c, _ := weights.Open(src)
	defer c.Close()
	out := filepath.Join(dir, "out.safetensors")
	bf16 := weights.BF16
	files, err := Convert(context.Background(), c, out, ConvertOptions{Options: Options{DType: &bf16}, Metadata: map[string]string{"x": "y"}})
	if err != nil || len(files) != 1 {
		t.Fatal(files, err)
	}
	o, err := weights.Open(out)
	if err != nil {
		t.Fatal(err)
	}
	defer o.Close()
	w, _ := o.ReadTensor("w", nil)
	want := make([]byte, 2*len(vals))
	_ = weights.Encode(weights.BF16, vals, want)
	if w.DType != weights.BF16 || !bytes.Equal(w.Data, want) {
		t.Errorf("converted w = %v %x, want BF16 %x", w.DType, w.Data, want)
	}
	id, _ := o.ReadTensor("ids", nil)
	if id.DType != weights.I64 || !bytes.Equal(id.Data, ids) {
		t.Error("integer tensor changed by a float dtype conversion")
	}
	md := o.Metadata()
	if md["k"] != "v" || md["x"] != "y" || md["format"] != "pt" {
		t.Errorf("metadata %v", md)
	}
}

// TestConvertChunked: tensors copied chunk by chunk from the file (every
// tensor above StreamAbove) are the bytes a whole copy writes, for each
// target dtype, into a single file and into shards.
func TestConvertChunked(t *testing.T) {
	dir := t.TempDir()
	src := filepath.Join(dir, "src.safetensors")
	// 3·65536+5 elements: three whole chunks and a tail.
	if _, err := weights.Synthesize(context.Background(), src, weights.SynthOptions{Bytes: 2_000_000, Hidden: 64, Vocab: 3*65536/64 + 1, DType: weights.F32, Seed: 3}); err != nil {
		t.Fatal(err)
	}
	c, err := weights.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	defer func(v int64) { StreamAbove = v }(StreamAbove)
	for _, dt := range []weights.DType{weights.F32, weights.BF16, weights.F16} {
		for _, shard := range []int64{0, 500_000} {
			var outs [2][]weights.Tensor
			for k, above := range []int64{1 << 62, -1} {
				StreamAbove = above
				out := filepath.Join(dir, fmt.Sprintf("out-%s-%d-%d", dt, shard, k))
				if shard == 0 {
					out += ".safetensors"
				}
				if _, err := Convert(context.Background(), c, out, ConvertOptions{Options: Options{DType: &dt, ShardSize: shard}}); err != nil {
					t.Fatal(err)
				}
				o, err := weights.Open(out)
				if err != nil {
					t.Fatal(err)
				}
				for _, ti := range o.Tensors() {
					ten, err := o.ReadTensor(ti.Name, nil)
					if err != nil {
						t.Fatal(err)
					}
					outs[k] = append(outs[k], ten)
				}
				o.Close()
			}
			if len(outs[0]) != len(outs[1]) || len(outs[0]) == 0 {
				t.Fatalf("%s: %d and %d tensors", dt, len(outs[0]), len(outs[1]))
			}
			for i := range outs[0] {
				a, b := outs[0][i], outs[1][i]
				if a.Name != b.Name || a.DType != b.DType || !bytes.Equal(a.Data, b.Data) {
					t.Fatalf("%s shards %d: tensor %s differs copied in chunks", dt, shard, a.Name)
				}
			}
		}
	}
}
