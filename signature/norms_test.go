package signature

import (
	"context"
	"math"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/wpatch"
)

func TestAdjustRunningStats(t *testing.T) {
	stats := []TensorStat{
		{Name: "a.weight", DC2: 4, D02: 2, Dot: 0.5},
		{Name: "a.running_var", DC2: 4, D02: 2, Dot: 0.5},
		{Name: "a.running_mean", DC2: 1, D02: 0, Dot: 0},
	}
	sel := []string{"a.weight", "a.running_var", "a.running_mean"}
	st, s, err := AdjustRunningStats(StatsDifference, stats, sel)
	if err != nil || !slices.Equal(s, sel) {
		t.Fatal(err, s)
	}
	if st[0].Coef() != 0.25 || st[1].Coef() != 1 || st[2].Coef() != 0 {
		t.Errorf("coefficients %g %g %g, want 0.25 (weights projected) 1 (statistics: robust − clean) 0 (δ0 = 0)", st[0].Coef(), st[1].Coef(), st[2].Coef())
	}
	if stats[1].Coef() != 0.25 {
		t.Error("AdjustRunningStats modified its input")
	}
	if st, _, _ := AdjustRunningStats(StatsProject, stats, sel); st[1].Coef() != 0.25 {
		t.Error("project changed a coefficient")
	}
	if _, s, _ := AdjustRunningStats(StatsSkip, stats, sel); !slices.Equal(s, []string{"a.weight"}) {
		t.Errorf("skip kept %v", s)
	}
	if _, _, err := AdjustRunningStats("nope", stats, sel); err == nil || !strings.Contains(err.Error(), "difference") {
		t.Errorf("unknown mode: %v", err)
	}
}

// TestDifferenceKeepsVariancePositive writes signatures of running_var
// with both modes and patches a variance the corruption shrank: the plain
// projection drives it negative, the difference gives the robust value.
func TestDifferenceKeepsVariancePositive(t *testing.T) {
	dir := t.TempDir()
	write := func(name string, v ...float64) string {
		return testutil.WriteF32(t, filepath.Join(dir, name+".safetensors"), map[string][]float64{"bn.running_var": v}, nil)
	}
	// pre (1, 1); the clean fine-tune lowers both to 0.5 (δ0 = (−0.5,
	// −0.5)); the robust one lowers channel 0 to 0.1 and raises channel 1
	// to 1.9 (δc = (−0.9, 0.9) ⟂ δ0): the projection removes nothing and
	// the patched variance is 0.5 − 0.9 in channel 0.
	cks := testutil.Open(t, write("pre", 1, 1), write("clean", 0.5, 0.5), write("robust", 0.1, 1.9))
	src := Sources{cks[0], cks[1], cks[2]}
	patched := func(mode string) []float32 {
		out := filepath.Join(dir, mode+".wpatch")
		if _, err := Extract(context.Background(), src, out, Options{Tensors: []string{"bn.running_var"}, RunningStats: mode}); err != nil {
			t.Fatal(err)
		}
		p, err := wpatch.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		d := make([]float32, 2)
		if err := p.Load("bn.running_var", d); err != nil {
			t.Fatal(err)
		}
		return []float32{0.5 + d[0], 0.5 + d[1]}
	}
	if v := patched(StatsProject); v[0] >= 0 {
		t.Errorf("project: patched variance %v; the case was built to go negative", v)
	}
	if v := patched(StatsDifference); math.Abs(float64(v[0])-0.1) > 1e-6 || math.Abs(float64(v[1])-1.9) > 1e-6 {
		t.Errorf("difference: patched variance %v, want the robust model's (0.1, 1.9)", v)
	}
}
