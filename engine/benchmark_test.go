package engine_test

import (
	"math"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

// TestEvaluateBenchmark checks the summaries against their definitions,
// computed here from separate evaluations.
func TestEvaluateBenchmark(t *testing.T) {
	m, err := engine.Load(td+"cnn/model.safetensors", "")
	if err != nil {
		t.Fatal(err)
	}
	base, err := engine.Load(td+"mlp/model.safetensors", "")
	if err != nil {
		t.Fatal(err)
	}
	s, err := dataset.Load(td+"data/fashion-mnist/t10k-images-idx3-ubyte.gz", td+"data/fashion-mnist/t10k-labels-idx1-ubyte.gz")
	if err != nil {
		t.Fatal(err)
	}
	idx := make([]int, 300)
	for i := range idx {
		idx[i] = i
	}
	s = s.Subset(idx)
	conds := []dataset.SuiteCondition{{Name: "gaussian_noise", Severity: 2}, {Name: "gaussian_noise", Severity: 5}, {Name: "fog", Severity: 3}}
	opt := engine.EvalOptions{Seed: 4}
	calls := 0
	r, err := engine.EvaluateBenchmark(m, base, s, conds, opt, func() { calls++ })
	if err != nil {
		t.Fatal(err)
	}
	if calls != 2+2*len(conds) || len(r.Corruptions) != 2 {
		t.Fatalf("%d evaluations, %d corruptions", calls, len(r.Corruptions))
	}
	acc := func(mm *engine.Model, spec string) float64 {
		p, err := dataset.ParseCorruptions(spec)
		if err != nil {
			t.Fatal(err)
		}
		res, err := engine.Evaluate(mm, s, engine.EvalOptions{Corrupt: p, Seed: 4})
		if err != nil {
			t.Fatal(err)
		}
		return res.Accuracy
	}
	c0, b0 := acc(m, ""), acc(base, "")
	g2, g5, f3 := acc(m, "gaussian_noise@2"), acc(m, "gaussian_noise@5"), acc(m, "fog@3")
	bg2, bg5, bf3 := acc(base, "gaussian_noise@2"), acc(base, "gaussian_noise@5"), acc(base, "fog@3")
	ceG := ((1 - g2) + (1 - g5)) / ((1 - bg2) + (1 - bg5))
	ceF := (1 - f3) / (1 - bf3)
	// Relative CE is undefined where the baseline is not hurt beyond its
	// clean error, and such corruptions are left out of the mean.
	var rces []float64
	for _, p := range [][2]float64{{(1 - g2 - (1 - c0)) + (1 - g5 - (1 - c0)), (1 - bg2 - (1 - b0)) + (1 - bg5 - (1 - b0))},
		{1 - f3 - (1 - c0), 1 - bf3 - (1 - b0)}} {
		if p[1] > 0 {
			rces = append(rces, p[0]/p[1])
		}
	}
	if len(rces) == 0 {
		t.Fatal("the baseline is hurt by no corruption: pick others")
	}
	rmce := 0.0
	for _, v := range rces {
		rmce += v / float64(len(rces))
	}
	want := map[string]float64{
		"clean": c0, "mCA": ((g2+g5)/2 + f3) / 2, "mCE": (ceG + ceF) / 2, "rmCE": rmce,
		"rel": (((1 - g2) - (1 - c0)) + ((1 - g5) - (1 - c0)) + 2*((1-f3)-(1-c0))) / 4,
	}
	got := map[string]float64{"clean": r.Clean, "mCA": r.MeanAccuracy, "mCE": *r.MCE, "rmCE": *r.RelativeMCE, "rel": r.MeanRelativeError}
	for k, w := range want {
		if math.Abs(got[k]-w) > 1e-12 {
			t.Errorf("%s = %v, want %v", k, got[k], w)
		}
	}
	if g := r.Corruptions[0]; g.Name != "gaussian_noise" || len(g.Accuracy) != 2 || g.Accuracy[1] != g5 || g.CE == nil || *g.CE != ceG {
		t.Errorf("gaussian_noise row %+v", g)
	}
	t.Logf("clean %.3f, mCA %.3f, mCE %.3f (vs the MLP), relative mCE %.3f", r.Clean, r.MeanAccuracy, *r.MCE, *r.RelativeMCE)
	if r2, _ := engine.EvaluateBenchmark(m, nil, s, conds[:1], opt, nil); r2.MCE != nil || r2.Corruptions[0].CE != nil {
		t.Error("normalised figures without a baseline")
	}
}
