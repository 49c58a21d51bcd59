package engine_test

import (
	"encoding/json"
	"math"
	"os"
	"slices"
	"testing"

	"github.com/weightops/weightops/engine"
)

// The shipped architecture files are checked against PyTorch: the
// fixture script (testdata/engine/make_torch_graphs.py) built each model
// in torch (torchvision's, or the common WideResNet definition), filled
// its state_dict from the counter-based generator below, and saved the
// logits of two generated images and the state_dict's names and shapes.
// The generator is re-implemented here, so no checkpoint is committed.

func fnv1a64(s string) uint64 {
	h := uint64(0xCBF29CE484222325)
	for i := 0; i < len(s); i++ {
		h = (h ^ uint64(s[i])) * 0x100000001B3
	}
	return h
}

// seeded is the fixture's uniform [-1, 1) stream for a tensor name.
func seeded(name string, n int) []float32 {
	out := make([]float32, n)
	key := fnv1a64(name)
	for i := range out {
		z := key + uint64(i+1)*0x9E3779B97F4A7C15
		z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9
		z = (z ^ (z >> 27)) * 0x94D049BB133111EB
		z ^= z >> 31
		out[i] = float32(z>>40)*(1.0/(1<<23)) - 1
	}
	return out
}

// fillSeeded gives a parameter the fixture's values for its role.
func fillSeeded(p *engine.Param) {
	u := seeded(p.Name, len(p.Data))
	var a, b float32 // v = a + b·u
	switch {
	case p.Role == "weight" && len(p.Shape) >= 2:
		fan := 1
		for _, d := range p.Shape[1:] {
			fan *= d
		}
		a, b = 0, float32(math.Sqrt(6/float64(fan)))
	case p.Role == "weight":
		a, b = 1, 0.25
	case p.Role == "bias", p.Role == "running_mean":
		a, b = 0, 0.1
	case p.Role == "running_var":
		a, b = 1, 0.5
	}
	for i, v := range u {
		if a == 0 {
			p.Data[i] = v * b
		} else {
			p.Data[i] = a + b*v
		}
	}
}

func TestArchZooMatchesTorch(t *testing.T) {
	names := engine.BuiltinArchs()
	if len(names) != 7 {
		t.Fatalf("built-in archs %v", names)
	}
	for _, name := range names {
		t.Run(name, func(t *testing.T) {
			dir := td + "torch/zoo/" + name + "/"
			a, err := engine.ReadArch(name)
			if err != nil {
				t.Fatal(err)
			}
			m, err := engine.New(a)
			if err != nil {
				t.Fatal(err)
			}
			var want [][2]any
			b, err := os.ReadFile(dir + "tensors.json")
			if err != nil {
				t.Fatal(err)
			}
			var raw []json.RawMessage
			if err := json.Unmarshal(b, &raw); err != nil {
				t.Fatal(err)
			}
			for _, r := range raw {
				var e [2]any
				if err := json.Unmarshal(r, &e); err != nil {
					t.Fatal(err)
				}
				want = append(want, e)
			}
			params := m.Params()
			if len(params) != len(want) {
				t.Fatalf("%d tensors, torch's state_dict has %d", len(params), len(want))
			}
			total := 0
			for i, p := range params {
				ws := want[i][1].([]any)
				shape := make([]int, len(ws))
				for j, d := range ws {
					shape[j] = int(d.(float64))
				}
				// Same names, shapes and order as torch's state_dict.
				if p.Name != want[i][0].(string) || !slices.Equal(p.Shape, shape) {
					t.Fatalf("tensor %d: %s %v, torch has %s %v", i, p.Name, p.Shape, want[i][0], shape)
				}
				fillSeeded(p)
				total += len(p.Data)
			}
			// The resolved arch, written back as YAML, builds the same model.
			y, err := m.Arch.YAML()
			if err != nil {
				t.Fatal(err)
			}
			a2, err := engine.ParseArch(y)
			if err != nil {
				t.Fatalf("%v\n%s", err, y)
			}
			m2, err := engine.New(a2)
			if err != nil {
				t.Fatal(err)
			}
			p2 := m2.Params()
			for i, p := range params {
				if i >= len(p2) || p2[i].Name != p.Name || !slices.Equal(p2[i].Shape, p.Shape) {
					t.Fatalf("after a YAML round trip tensor %d differs", i)
				}
			}
			in := m.InputShape()
			d := m.InputSize()
			x := seeded("input:"+name, 2*d)
			for i := range x {
				x[i] = x[i]*0.5 + 0.5
			}
			got := forwardRaw(m, x, 2)
			wantLogits := loadNPY(t, dir+"logits.npy").Float32s(false)
			if len(got) != len(wantLogits) {
				t.Fatalf("%d logits, torch %d", len(got), len(wantLogits))
			}
			e := relErr(got, wantLogits)
			if e > 1e-4 {
				t.Errorf("logits differ from torch's by %.3g of their largest magnitude", e)
			}
			t.Logf("%d parameters, input %v: max |Δ| / max |logit| = %.2g", total, in, e)
		})
	}
}
