package stream

import (
	"bytes"
	"context"
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
