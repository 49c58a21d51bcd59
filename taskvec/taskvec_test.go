package taskvec

import (
	"context"
	"crypto/sha256"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/sparsify"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
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

// TestDiffOutputsAgree: the patch and the checkpoint a diff writes hold
// the same values, sparsified or not (one implementation), and the
// sparsified values are the reference sparsification of float32(ft − base)
// done on the whole tensor — with the tensors read whole and streamed
// (the patch then written in parts).
func TestDiffOutputsAgree(t *testing.T) {
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	for _, above := range []int64{1 << 62, -1} {
		stream.StreamAbove = above
		diffOutputsAgree(t)
	}
}

func diffOutputsAgree(t *testing.T) {
	ctx := context.Background()
	d := t.TempDir()
	rng := rand.New(rand.NewPCG(3, 4))
	base, ft := map[string][]float64{}, map[string][]float64{}
	shapes := map[string][]int64{"a": {64, 300}, "b": {1000}}
	for n, s := range shapes {
		k := int(s[0])
		if len(s) > 1 {
			k *= int(s[1])
		}
		for i := 0; i < k; i++ {
			// Values an F32 file holds exactly, so the reference sees them.
			x := float64(float32(rng.NormFloat64()))
			base[n] = append(base[n], x)
			ft[n] = append(ft[n], float64(float32(x+rng.NormFloat64()*0.01)))
		}
	}
	cks := testutil.Open(t, testutil.WriteF32(t, filepath.Join(d, "ft.safetensors"), ft, shapes), testutil.WriteF32(t, filepath.Join(d, "base.safetensors"), base, shapes))
	for _, sp := range []sparsify.Spec{
		{Method: sparsify.None, Density: 1},
		{Method: sparsify.MagnitudeOutliers, Density: 0.3, Gamma: 0.02},
		{Method: sparsify.Random, Density: 0.4, Seed: 5, Rescale: sparsify.L1},
	} {
		st, wp := filepath.Join(d, "tv.safetensors"), filepath.Join(d, "tv.wpatch")
		if _, err := Diff(ctx, cks[0], cks[1], st, DiffOptions{Sparsify: sp, Options: stream.Options{Workers: 2, MaxMemory: 100_000}}); err != nil {
			t.Fatal(err)
		}
		rep, err := Diff(ctx, cks[0], cks[1], wp, DiffOptions{Sparsify: sp, Patch: &wpatch.Encoding{}})
		if err != nil || rep.Patch == nil {
			t.Fatal(err)
		}
		p, err := wpatch.Open(wp)
		if err != nil {
			t.Fatal(err)
		}
		// The base's digest, hashed beside the diff, is the file's.
		raw, err := os.ReadFile(filepath.Join(d, "base.safetensors"))
		if err != nil {
			t.Fatal(err)
		}
		if want := fmt.Sprintf("%x", sha256.Sum256(raw)); p.BaseSHA256 != want {
			t.Fatalf("%v: the patch records base sha256 %q, want %q", sp.Method, p.BaseSHA256, want)
		}
		for n, s := range shapes {
			want := make([]float32, len(ft[n]))
			for i := range want {
				want[i] = float32(ft[n][i] - base[n][i])
			}
			sparsify.InPlace(sp, n, s, 0, want)
			got := make([]float32, len(want))
			if err := p.Load(n, got); err != nil {
				t.Fatal(err)
			}
			ck := testutil.Read(t, st, n)
			for i := range want {
				if got[i] != want[i] || float32(ck[i]) != want[i] {
					t.Fatalf("%v %s[%d]: patch %g, checkpoint %g, reference %g", sp.Method, n, i, got[i], ck[i], want[i])
				}
			}
		}
		p.Close()
	}
}

// TestSparseDiffRawDTypes: a sparsified diff takes τ straight from the
// fine-tune's bytes; for a BF16 or F16 fine-tune over a base of another
// dtype, whole or streamed, the patch holds float32(ft − base) of the
// decoded values, sparsified as sparsify.InPlace does it.
func TestSparseDiffRawDTypes(t *testing.T) {
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	ctx := context.Background()
	rng := rand.New(rand.NewPCG(9, 10))
	shape := []int64{48, 500}
	n := int(shape[0] * shape[1])
	for _, dts := range [][2]weights.DType{{weights.BF16, weights.F32}, {weights.F16, weights.BF16}, {weights.BF16, weights.BF16}} {
		for _, above := range []int64{1 << 62, -1} {
			stream.StreamAbove = above
			d := t.TempDir()
			bv, fv := make([]float64, n), make([]float64, n)
			for i := range bv {
				bv[i] = rng.NormFloat64() * 0.02
				fv[i] = bv[i] + rng.NormFloat64()*0.002
			}
			fp := testutil.Write(t, filepath.Join(d, "ft.safetensors"), nil, testutil.Tensor{Name: "w", DType: dts[0], Shape: shape, Values: fv})
			bp := testutil.Write(t, filepath.Join(d, "base.safetensors"), nil, testutil.Tensor{Name: "w", DType: dts[1], Shape: shape, Values: bv})
			cks := testutil.Open(t, fp, bp)
			sp := sparsify.Spec{Method: sparsify.MagnitudeOutliers, Density: 0.3, Gamma: 0.02}
			wp := filepath.Join(d, "tv.wpatch")
			if _, err := Diff(ctx, cks[0], cks[1], wp, DiffOptions{Sparsify: sp, Patch: &wpatch.Encoding{}}); err != nil {
				t.Fatal(err)
			}
			f, b := testutil.Read(t, fp, "w"), testutil.Read(t, bp, "w")
			want := make([]float32, n)
			for i := range want {
				want[i] = float32(f[i] - b[i])
			}
			sparsify.InPlace(sp, "w", shape, 0, want)
			p, err := wpatch.Open(wp)
			if err != nil {
				t.Fatal(err)
			}
			got := make([]float32, n)
			if err := p.Load("w", got); err != nil {
				t.Fatal(err)
			}
			p.Close()
			for i := range want {
				if got[i] != want[i] {
					t.Fatalf("%v over %v, streamed %v: [%d] = %g, want %g", dts[0], dts[1], above < 0, i, got[i], want[i])
				}
			}
		}
	}
}
