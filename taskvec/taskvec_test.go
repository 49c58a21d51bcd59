package taskvec

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/weights"
)

func TestDiffAddInterpolate(t *testing.T) {
	ctx := context.Background()
	d := t.TempDir()
	base := filepath.Join(d, "base.safetensors")
	ft := filepath.Join(d, "ft.safetensors")
	mk := func(p string, w []float64, ids []byte, emb []float64, embRows int64) {
		data := make([]byte, 4*len(w))
		_ = weights.Encode(weights.F32, w, data)
		e := make([]byte, 2*len(emb))
		_ = weights.Encode(weights.BF16, emb, e)
		if err := weights.WriteSafetensors(p, []weights.Tensor{
			{TensorInfo: weights.TensorInfo{Name: "w", DType: weights.F32, Shape: []int64{int64(len(w))}}, Data: data},
			{TensorInfo: weights.TensorInfo{Name: "ids", DType: weights.U8, Shape: []int64{int64(len(ids))}}, Data: ids},
			{TensorInfo: weights.TensorInfo{Name: "embed", DType: weights.BF16, Shape: []int64{embRows, 2}}, Data: e},
		}, nil); err != nil {
			t.Fatal(err)
		}
	}
	mk(base, []float64{1, 2, 3}, []byte{1, 2}, []float64{1, 2, 3, 4}, 2)
	mk(ft, []float64{1.5, 2, 2}, []byte{1, 2}, []float64{1.5, 2, 3, 5, 9, 9}, 3)
	cks := testutil.Open(t, ft, base)
	tv := filepath.Join(d, "tv.safetensors")
	if _, err := Diff(ctx, cks[0], cks[1], tv, DiffOptions{}); err == nil || !strings.Contains(err.Error(), `tensor "embed"`) {
		t.Fatalf("shape mismatch not reported: %v", err)
	}
	rep, err := Diff(ctx, cks[0], cks[1], tv, DiffOptions{AllowResize: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Resized) != 1 {
		t.Errorf("resized %v", rep.Resized)
	}
	testutil.Near(t, "τ", testutil.Read(t, tv, "w"), []float64{0.5, 0, -1}, 1e-6)
	testutil.Near(t, "τ embed (first rows)", testutil.Read(t, tv, "embed"), []float64{0.5, 0, 0, 1}, 1e-6)
	if got := testutil.Read(t, tv, "ids"); got[1] != 2 {
		t.Errorf("equal integer tensor not copied: %v", got)
	}
	tvc := testutil.Open(t, tv)
	out := filepath.Join(d, "patched.safetensors")
	if _, err := Add(ctx, cks[1], tvc, out, AddOptions{Lambda: 0.5}); err != nil {
		t.Fatal(err)
	}
	testutil.Near(t, "θ + 0.5τ", testutil.Read(t, out, "w"), []float64{1.25, 2, 2.5}, 1e-6)
	// Interpolation endpoints are the inputs exactly; midpoints by formula.
	a, b := filepath.Join(d, "a.safetensors"), filepath.Join(d, "b.safetensors")
	mk(a, []float64{1, 2, 3}, []byte{1, 2}, []float64{1, 2, 3, 4}, 2)
	mk(b, []float64{3, 2, 1}, []byte{1, 2}, []float64{5, 6, 7, 8}, 2)
	ab := testutil.Open(t, a, b)
	alphas, _ := ParseAlphas("0:1:0.25")
	if len(alphas) != 5 || alphas[4] != 1 {
		t.Fatalf("alphas %v", alphas)
	}
	var outs []string
	for i := range alphas {
		outs = append(outs, filepath.Join(d, fmt.Sprintf("i%d.safetensors", i)))
	}
	if _, err := Interpolate(ctx, ab[0], ab[1], alphas, outs, ScaleOptions{}); err != nil {
		t.Fatal(err)
	}
	testutil.Near(t, "α=0", testutil.Read(t, outs[0], "w"), []float64{1, 2, 3}, 1e-6)
	testutil.Near(t, "α=0.25", testutil.Read(t, outs[1], "w"), []float64{1.5, 2, 2.5}, 1e-6)
	testutil.Near(t, "α=1", testutil.Read(t, outs[4], "embed"), []float64{5, 6, 7, 8}, 1e-6)
}
