package signature

import (
	"context"
	"math"
	"math/rand/v2"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
	"github.com/weightops/weightops/wpatch"
)

func writeF32(t *testing.T, path string, tensors map[string][]float64, shapes map[string][]int64) weights.Checkpoint {
	t.Helper()
	return testutil.Open(t, testutil.WriteF32(t, path, tensors, shapes))[0]
}

func TestRWSProjectionRemovesCleanDirection(t *testing.T) {
	d := t.TempDir()
	rng := rand.New(rand.NewPCG(8, 8))
	names := []string{"features.0.weight", "features.0.bias", "features.3.weight", "features.10.weight", "classifier.weight"}
	shapes := map[string][]int64{"features.0.weight": {8, 4}, "features.0.bias": {8}, "features.3.weight": {8, 8}, "features.10.weight": {8, 8}, "classifier.weight": {3, 8}}
	pre, clean, robust := map[string][]float64{}, map[string][]float64{}, map[string][]float64{}
	for _, n := range names {
		k := int(shapes[n][0])
		if len(shapes[n]) > 1 {
			k *= int(shapes[n][1])
		}
		for _, m := range []map[string][]float64{pre, clean, robust} {
			m[n] = make([]float64, k)
		}
		for i := 0; i < k; i++ {
			pre[n][i] = rng.NormFloat64()
			d0 := rng.NormFloat64() * 0.1
			clean[n][i] = pre[n][i] + d0
			// The robust fine-tune shares part of the clean direction.
			robust[n][i] = pre[n][i] + 0.6*d0 + rng.NormFloat64()*0.05
		}
	}
	cp := writeF32(t, filepath.Join(d, "pre.safetensors"), pre, shapes)
	cc := writeF32(t, filepath.Join(d, "clean.safetensors"), clean, shapes)
	cr := writeF32(t, filepath.Join(d, "robust.safetensors"), robust, shapes)
	st, err := ComputeStats(context.Background(), Sources{cp, cc, cr}, stream.Options{Workers: 2})
	if err != nil {
		t.Fatal(err)
	}
	layers := st.Layers
	var order []string
	for _, l := range layers {
		order = append(order, l.Name)
	}
	if got := strings.Join(order, " "); got != "features.0 features.3 features.10 classifier" {
		t.Errorf("layer order %q", got)
	}
	sel := Selection{Layers: 2}.Select(layers)
	if strings.Join(sel, ",") != "features.0.weight,features.0.bias,features.3.weight" && strings.Join(sel, ",") != "features.0.bias,features.0.weight,features.3.weight" {
		t.Errorf("first two weight layers selected %v", sel)
	}
	p := filepath.Join(d, "sig.wpatch")
	if _, err := Extract(context.Background(), Sources{cp, cc, cr}, p, Options{Options: stream.Options{Workers: 2}, Tensors: names, Stats: st}); err != nil {
		t.Fatal(err)
	}
	pt, _ := wpatch.Open(p)
	defer pt.Close()
	for _, n := range names {
		sig := make([]float32, len(pre[n]))
		pt.Load(n, sig)
		// Float64 re-derivation of the projection, and ⟨RWS, δ_0⟩ ≈ 0.
		var dot, dd, ss float64
		for i := range sig {
			d0 := clean[n][i] - pre[n][i]
			dc := robust[n][i] - pre[n][i]
			dot += dc * d0
			dd += d0 * d0
		}
		a := dot / dd
		var inner, norm, d0n float64
		for i := range sig {
			d0 := clean[n][i] - pre[n][i]
			want := (robust[n][i] - pre[n][i]) - a*d0
			if math.Abs(float64(sig[i])-want) > 1e-6*math.Max(1, math.Abs(want)) {
				t.Fatalf("%s[%d] = %v, want %v", n, i, sig[i], want)
			}
			inner += float64(sig[i]) * d0
			ss += float64(sig[i]) * float64(sig[i])
			d0n += d0 * d0
		}
		norm = math.Sqrt(ss * d0n)
		if math.Abs(inner) > 1e-6*norm {
			t.Errorf("%s: ⟨RWS, δ0⟩ = %g, relative %g", n, inner, inner/norm)
		}
	}
	// Energy selection keeps the shallowest layers holding that share.
	var total float64
	for _, l := range layers {
		if l.Weight {
			total += l.RWS2
		}
	}
	first := layers[0].RWS2 / total
	if got := (Selection{Energy: first * 0.99}).Select(layers); len(got) != 2 {
		t.Errorf("energy %.3f selected %v", first*0.99, got)
	}
	if got := (Selection{Include: regexp.MustCompile(`classifier`)}).Select(layers); len(got) != 1 {
		t.Errorf("include selected %v", got)
	}
}

func TestRWSWithoutPretrainedIsPlainDifference(t *testing.T) {
	d := t.TempDir()
	sh := map[string][]int64{"w": {3}}
	cc := writeF32(t, filepath.Join(d, "c.safetensors"), map[string][]float64{"w": {1, 2, 3}}, sh)
	cr := writeF32(t, filepath.Join(d, "r.safetensors"), map[string][]float64{"w": {1.5, 2, 2}}, sh)
	p := filepath.Join(d, "s.wpatch")
	if _, err := Extract(context.Background(), Sources{nil, cc, cr}, p, Options{Tensors: []string{"w"}, Encoding: wpatch.Encoding{Sparse: "never"}}); err != nil {
		t.Fatal(err)
	}
	pt, _ := wpatch.Open(p)
	defer pt.Close()
	got := make([]float32, 3)
	pt.Load("w", got)
	if got[0] != 0.5 || got[1] != 0 || got[2] != -1 {
		t.Errorf("got %v", got)
	}
}
