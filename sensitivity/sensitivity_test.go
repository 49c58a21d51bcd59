package sensitivity

import (
	"math"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/dataset"
	"github.com/weightops/weightops/engine"
)

func TestNoiseHasTheRelativeNorm(t *testing.T) {
	w := []float32{3, -4, 0, 12} // ‖w‖ = 13
	v := make([]float32, 4)
	Noise(v, w, 0.1, dataset.NewRand(1))
	var n float64
	for _, x := range v {
		n += float64(x) * float64(x)
	}
	if math.Abs(math.Sqrt(n)-1.3) > 1e-6 {
		t.Errorf("‖v‖ = %v, want 1.3", math.Sqrt(n))
	}
	v2 := make([]float32, 4)
	Noise(v2, w, 0.1, dataset.NewRand(1))
	for i := range v {
		if v[i] != v2[i] {
			t.Fatal("same seed, different noise")
		}
	}
}

func loadMLP(t *testing.T) (*engine.Model, *dataset.Set) {
	t.Helper()
	dir := filepath.Join("..", "testdata", "engine")
	m, err := engine.Load(filepath.Join(dir, "mlp", "model.safetensors"), filepath.Join(dir, "mlp", "arch.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	s, err := dataset.Load(filepath.Join(dir, "data", "fashion-mnist", "t10k-images-idx3-ubyte.gz"), filepath.Join(dir, "data", "fashion-mnist", "t10k-labels-idx1-ubyte.gz"))
	if err != nil {
		t.Fatal(err)
	}
	return m, s
}

func TestAnalyzeOnTrainedMLP(t *testing.T) {
	m, s := loadMLP(t)
	before := append([]float32(nil), Weights(m)[0].Data...)
	rep, err := Analyze(m, s, Options{Rel: []float64{0, 0.05, 1}, Trials: 3, Seed: 7})
	if err != nil {
		t.Fatal(err)
	}
	mods := Weights(m)
	if got, want := len(rep.Results), 3*len(mods); got != want {
		t.Fatalf("%d results, want %d", got, want)
	}
	for i, x := range Weights(m)[0].Data {
		if x != before[i] {
			t.Fatal("the model was not restored")
		}
	}
	small := map[string]float64{}
	var worst float64
	for _, r := range rep.Results {
		switch r.Rel {
		case 0: // no noise: exactly the base accuracy
			if r.MeanDrop != 0 || r.StdDrop != 0 {
				t.Errorf("%s γ=0: drop %v ± %v", r.Module, r.MeanDrop, r.StdDrop)
			}
		case 0.05:
			small[r.Module] = r.MeanDrop
		case 1:
			worst = math.Max(worst, r.MeanDrop)
		}
	}
	for _, r := range rep.Results {
		// More noise hurts at least as much (up to trial noise).
		if r.Rel == 1 && r.MeanDrop < small[r.Module]-0.01 {
			t.Errorf("%s: drop %.3f at γ=1 below %.3f at γ=0.05", r.Module, r.MeanDrop, small[r.Module])
		}
	}
	// Noise as large as the weights breaks some module badly.
	if worst < 0.05 {
		t.Errorf("largest drop at γ=1 is only %.3f", worst)
	}
	// Sorted: the first module's γ=1 drop is the largest.
	first := rep.Results[2].MeanDrop
	for _, r := range rep.Results {
		if r.Rel == 1 && r.MeanDrop > first {
			t.Errorf("not sorted: %s drops %.3f > %.3f", r.Module, r.MeanDrop, first)
		}
	}
	// Reproducible.
	again, _ := Analyze(m, s, Options{Rel: []float64{0.05}, Trials: 2, Seed: 7})
	once, _ := Analyze(m, s, Options{Rel: []float64{0.05}, Trials: 2, Seed: 7})
	for i := range again.Results {
		if again.Results[i].MeanDrop != once.Results[i].MeanDrop {
			t.Fatal("same seed, different results")
		}
	}
}
