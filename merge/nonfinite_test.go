package merge

import (
	"context"
	"fmt"
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/stream"
)

// TestNonFiniteParametersRefused: NaN and Inf parameters, and linear
// weights that sum to zero under normalize, are recipe errors at
// validation, not all-NaN models with exit 0.
func TestNonFiniteParametersRefused(t *testing.T) {
	d := t.TempDir()
	for _, n := range []string{"base", "a", "b"} {
		model(t, d, n, map[string][]float64{"layers.0.w": {1, 2, 3, 4}, "emb": {1, 1}}, nil)
	}
	for _, c := range []struct{ yaml, want string }{
		{"merge_method: task_arithmetic\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1}}]\nparameters: {lambda: .nan}\n", "not a finite number"},
		{"merge_method: slerp\nbase_model: base\nmodels: [{model: a}]\nparameters: {t: .nan}\n", "not a finite number"},
		{"merge_method: ties\nbase_model: base\nmodels: [{model: a, parameters: {weight: 1, density: .nan}}]\n", "not a finite number"},
		{"merge_method: ties\nbase_model: base\nmodels: [{model: a, parameters: {weight: .inf, density: 0.5}}]\n", "not a finite number"},
		{"merge_method: ties\nbase_model: base\nmodels: [{model: a, parameters: {weight: [0.5, -.inf], density: 0.5}}]\n", "not a finite number"},
		{"merge_method: linear\nmodels: [{model: a, parameters: {weight: 0.5}}, {model: b, parameters: {weight: -0.5}}]\n", "sum to 0"},
	} {
		rp := filepath.Join(d, "r.yaml")
		os.WriteFile(rp, []byte(c.yaml), 0o644)
		r, err := ParseRecipe(rp)
		if err == nil {
			var p *Plan
			if p, err = r.Open(); err == nil {
				p.Close()
			}
		}
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: %v, want %q", c.yaml, err, c.want)
		}
	}
}

// TestNonFiniteInputs: a NaN or Inf in an input tensor is by default an
// error naming the file, the tensor and the count; with AllowNonFinite
// every method treats it the same way — the output is NaN exactly where an
// input is non-finite, and elsewhere what the merge of the inputs with
// those positions zeroed gives.
func TestNonFiniteInputs(t *testing.T) {
	d := t.TempDir()
	vals := func(seed float64, bad map[int]float64) []float64 {
		v := make([]float64, 64)
		for i := range v {
			v[i] = math.Sin(seed*float64(i+1)) * 0.1
		}
		for i, x := range bad {
			v[i] = x
		}
		return v
	}
	shapes := map[string][]int64{"layers.0.w": {8, 8}}
	model(t, d, "base", map[string][]float64{"layers.0.w": vals(1, map[int]float64{9: math.Inf(1)})}, shapes)
	model(t, d, "a", map[string][]float64{"layers.0.w": vals(2, map[int]float64{3: math.NaN()})}, shapes)
	model(t, d, "b", map[string][]float64{"layers.0.w": vals(3, nil)}, shapes)
	zeroed := func(name string, seed float64, at ...int) {
		v := vals(seed, nil)
		for _, i := range at {
			v[i] = 0
		}
		model(t, d, name, map[string][]float64{"layers.0.w": v}, shapes)
	}
	zeroed("base0", 1, 3, 9)
	zeroed("a0", 2, 3, 9)
	zeroed("b0", 3, 3, 9)
	// linear has no base: only a's NaN (position 3) is among its inputs.
	zeroed("al", 2, 3)
	zeroed("bl", 3, 3)
	recipes := map[string]string{
		"task_arithmetic": "merge_method: task_arithmetic\nbase_model: BASE\nmodels: [{model: A, parameters: {weight: 0.7}}, {model: B, parameters: {weight: 0.3}}]\n",
		"ties":            "merge_method: ties\nbase_model: BASE\nmodels: [{model: A, parameters: {weight: 0.7, density: 0.5}}, {model: B, parameters: {weight: 0.3, density: 0.5}}]\n",
		"dare_ties":       "merge_method: dare_ties\nbase_model: BASE\nmodels: [{model: A, parameters: {weight: 0.7, density: 0.5}}, {model: B, parameters: {weight: 0.3, density: 0.5}}]\nparameters: {seed: 4}\n",
		"breadcrumbs":     "merge_method: breadcrumbs\nbase_model: BASE\nmodels: [{model: A, parameters: {weight: 0.7, density: 0.5, gamma: 0.1}}, {model: B, parameters: {weight: 0.3, density: 0.5, gamma: 0.1}}]\n",
		"linear":          "merge_method: linear\nmodels: [{model: A, parameters: {weight: 0.7}}, {model: B, parameters: {weight: 0.3}}]\n",
		"slerp":           "merge_method: slerp\nbase_model: BASE\nmodels: [{model: A}]\nparameters: {t: 0.4}\n",
		"model_stock":     "merge_method: model_stock\nbase_model: BASE\nmodels: [{model: A}, {model: B}]\n",
	}
	run := func(y string, allow bool) (string, error) {
		rp := filepath.Join(d, "r.yaml")
		os.WriteFile(rp, []byte(y), 0o644)
		r, err := ParseRecipe(rp)
		if err != nil {
			return "", err
		}
		p, err := r.Open()
		if err != nil {
			return "", err
		}
		defer p.Close()
		out := filepath.Join(d, fmt.Sprintf("out-%d.safetensors", len(y)))
		_, err = p.Merge(context.Background(), out, Options{Options: stream.Options{AllowNonFinite: allow}})
		return out, err
	}
	defer func(v int64) { stream.StreamAbove = v }(stream.StreamAbove)
	for _, above := range []int64{stream.StreamAbove, -1} {
		// Read whole, then streamed chunk by chunk from the files (the
		// policy applied to each chunk as it is read).
		stream.StreamAbove = above
		nonFiniteCases(t, recipes, run)
	}
}

func nonFiniteCases(t *testing.T, recipes map[string]string, run func(y string, allow bool) (string, error)) {
	for name, y := range recipes {
		bad := strings.NewReplacer("BASE", "base", "A", "a", "B", "b").Replace(y)
		if _, err := run(bad, false); err == nil || !strings.Contains(err.Error(), `tensor "layers.0.w"`) || !strings.Contains(err.Error(), "1 NaN and 0 Inf") && !strings.Contains(err.Error(), "0 NaN and 1 Inf") {
			t.Errorf("%s: non-finite input: %v", name, err)
			continue
		}
		got, err := run(bad, true)
		if err != nil {
			t.Errorf("%s with AllowNonFinite: %v", name, err)
			continue
		}
		zero, nanAt := strings.NewReplacer("BASE", "base0", "A", "a0", "B", "b0"), map[int]bool{3: true, 9: true}
		if name == "linear" {
			zero, nanAt = strings.NewReplacer("A", "al", "B", "bl"), map[int]bool{3: true}
		}
		want, err := run(zero.Replace(y), false)
		if err != nil {
			t.Fatal(err)
		}
		g, w := read(t, got, "layers.0.w"), read(t, want, "layers.0.w")
		for i := range g {
			switch {
			case nanAt[i]:
				if !math.IsNaN(g[i]) {
					t.Errorf("%s[%d] = %g, want NaN", name, i, g[i])
				}
			case g[i] != w[i]:
				t.Errorf("%s[%d] = %g, want %g (the merge with those positions zeroed)", name, i, g[i], w[i])
			}
		}
	}
}
