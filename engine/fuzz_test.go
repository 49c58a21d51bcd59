package engine_test

import (
	"os"
	"testing"

	"github.com/weightops/weightops/engine"
)

// FuzzArch feeds arbitrary bytes to the arch parser and builds a model
// from whatever parses: errors are fine, panics are not.
func FuzzArch(f *testing.F) {
	for _, p := range []string{td + "cnn/arch.yaml", td + "mlp/arch.yaml", td + "torch/cnn/arch.yaml", td + "torch/mlp/arch.json"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("input: {shape: [1, 4, 4]}\nlayers: [{type: conv2d, name: c, out: 2, kernel: [9, 1], stride: 3}]"))
	f.Add([]byte(`{"input": {"shape": [3]}, "layers": [{"type": "linear", "name": "l", "out": 2, "kernel": [1, 2]}]}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := engine.ParseArch(b)
		if err != nil {
			return
		}
		m, err := engine.New(a)
		if err != nil {
			return
		}
		if m.InputSize() <= 1<<12 && m.NumClasses() <= 1<<12 {
			x := make([]float32, m.InputSize())
			m.Normalize(x, x)
			m.Forward(x, 1, &engine.Workspace{})
		}
	})
}
