package engine_test

import (
	"os"
	"testing"

	"github.com/weightops/weightops/engine"
)

// FuzzArch feeds arbitrary bytes to the arch parser and builds a model
// from whatever parses: errors are fine, panics are not.
func FuzzArch(f *testing.F) {
	for _, p := range []string{td + "cnn/arch.yaml", td + "mlp/arch.yaml", td + "torch/cnn/arch.yaml", td + "torch/mlp/arch.json", td + "torch/graph/arch.yaml"} {
		b, err := os.ReadFile(p)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte("input: {shape: [1, 4, 4]}\nlayers: [{type: conv2d, name: c, out: 2, kernel: [9, 1], stride: 3}]"))
	f.Add([]byte(`{"input": {"shape": [3]}, "layers": [{"type": "linear", "name": "l", "out": 2, "kernel": [1, 2]}]}`))
	f.Add([]byte("input: {shape: [2, 5, 5]}\nlayers:\n- type: residual\n  name: r\n  body: [{type: conv2d, name: c, out: 2, kernel: 3, padding: 1, groups: 2}]\n- type: concat\n  branches: [[{type: adaptive_avgpool2d, output: 5}], []]\n- {type: flatten}\n- {type: linear, name: l, out: 3}"))
	f.Fuzz(func(t *testing.T, b []byte) {
		a, err := engine.ParseArch(b)
		if err != nil || !small(a.Layers, 0) {
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

// small keeps the fuzzer's fresh models cheap to allocate: every width at
// most 1024 and blocks at most 4 deep (the parser's own limits are far
// larger, sized for real models).
func small(layers []engine.LayerSpec, depth int) bool {
	if depth > 4 {
		return false
	}
	for _, l := range layers {
		if l.Out > 1024 || l.In > 1024 || !small(l.Body, depth+1) || !small(l.Shortcut, depth+1) {
			return false
		}
		for _, br := range l.Branches {
			if !small(br, depth+1) {
				return false
			}
		}
	}
	return true
}
