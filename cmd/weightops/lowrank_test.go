package main

import (
	"encoding/json"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/lowrank"
	"github.com/weightops/weightops/weights"
)

// lrDelta is Δ = Σ_l s_l·u_l·v_lᵀ (m×n) with known singular values.
type lrDelta struct {
	m, n int
	s    []float64
	u, v [][]float64
}

func (d *lrDelta) values() []float64 {
	out := make([]float64, d.m*d.n)
	for l, s := range d.s {
		for i := 0; i < d.m; i++ {
			for j := 0; j < d.n; j++ {
				out[i*d.n+j] += s * d.u[l][i] * d.v[l][j]
			}
		}
	}
	return out
}

// relTail is √(Σ_{i≥r} s_i²)/√(Σ s_i²), the exact rank-r error.
func (d *lrDelta) relTail(r int) float64 {
	var tail, total float64
	for i, s := range d.s {
		total += s * s
		if i >= r {
			tail += s * s
		}
	}
	return math.Sqrt(tail / total)
}

func lrWrite(t *testing.T, path string, names []string, shapes [][]int64, vals [][]float64) {
	t.Helper()
	var ts []weights.Tensor
	for i, n := range names {
		data := make([]byte, 4*len(vals[i]))
		if err := weights.Encode(weights.F32, vals[i], data); err != nil {
			t.Fatal(err)
		}
		ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: n, DType: weights.F32, Shape: shapes[i]}, Data: data})
	}
	if err := weights.WriteSafetensors(path, ts, nil); err != nil {
		t.Fatal(err)
	}
}

// lrFixture writes a small F32 base and a fine-tune whose 2-D deltas have
// known singular values, plus a 1-D bias that differs.
func lrFixture(t *testing.T) (dir, base, ft string, deltas map[string]*lrDelta, baseVals map[string][]float64) {
	rng := rand.New(rand.NewPCG(42, 7))
	dir = t.TempDir()
	base, ft = filepath.Join(dir, "base.safetensors"), filepath.Join(dir, "ft.safetensors")
	names := []string{"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.0.self_attn.q_proj.bias"}
	shapes := [][]int64{{24, 16}, {16, 40}, {24}}
	deltas, baseVals = map[string]*lrDelta{}, map[string][]float64{}
	var bv, fv [][]float64
	for i, name := range names {
		n := int(shapes[i][0])
		if len(shapes[i]) == 2 {
			n *= int(shapes[i][1])
		}
		w := make([]float64, n)
		for j := range w {
			w[j] = float64(float32(rng.NormFloat64()))
		}
		f := make([]float64, n)
		if len(shapes[i]) == 2 {
			m, k := int(shapes[i][0]), int(shapes[i][1])
			d := &lrDelta{m: m, n: k, s: make([]float64, min(m, k))}
			for l := range d.s {
				d.s[l] = 0.8 * math.Pow(0.7, float64(l))
			}
			d.u, d.v = testutil.Orthonormal(rng, m, len(d.s)), testutil.Orthonormal(rng, k, len(d.s))
			dv := d.values()
			for j := range f {
				f[j] = w[j] + dv[j]
			}
			deltas[name] = d
		} else {
			for j := range f {
				f[j] = w[j] + 0.05*rng.NormFloat64()
			}
		}
		baseVals[name] = w
		bv, fv = append(bv, w), append(fv, f)
	}
	lrWrite(t, base, names, shapes, bv)
	lrWrite(t, ft, names, shapes, fv)
	return
}

// TestLoraExtractMergeRoundTrip is the end-to-end check: extract at full
// rank and merge back reproduces the fine-tune; at rank r the error is the
// √(Σ_{i>r} σ_i²)/‖Δ‖ fixed when the deltas were built.
func TestLoraExtractMergeRoundTrip(t *testing.T) {
	dir, base, ft, deltas, baseVals := lrFixture(t)
	want := testutil.ReadAll(t, ft)

	// -q leaves the summary line and the files written, not the tables.
	full := filepath.Join(dir, "full-adapter")
	out, e, code := run(t, "lora", "extract", ft, "--base", base, "--rank", "16", "-o", full, "-q")
	if code != 0 {
		t.Fatalf("extract: %s", e)
	}
	if strings.Contains(out, "TENSOR") || !strings.HasPrefix(out, fmt.Sprintf("%d tensors factorised", len(deltas))) {
		t.Errorf("extract -q printed:\n%s", out)
	}
	merged := filepath.Join(dir, "merged.safetensors")
	out, e, code = run(t, "lora", "merge", base, full, "-o", merged, "-q")
	if code != 0 {
		t.Fatalf("merge: %s", e)
	}
	if lines := strings.Split(out, "\n"); len(lines) != 3 || !strings.Contains(lines[0], "modules merged") || lines[1] != merged {
		t.Errorf("merge -q printed:\n%s", out)
	}
	got := testutil.ReadAll(t, merged)
	for name, w := range want {
		if e := testutil.RelFrob(got[name], w); e > 1e-5 {
			t.Errorf("%s: full-rank round trip relative error %g", name, e)
		}
	}

	for _, randomized := range []bool{false, true} {
		const r = 4
		ad := filepath.Join(dir, "r4")
		if randomized {
			ad += "-rand"
		}
		args := []string{"lora", "extract", ft, "--base", base, "--rank", "4", "-o", ad, "--json", "-q"}
		if randomized {
			// p + r must stay below min(m, n) = 16 for the sketch to be used.
			args = append(args, "--randomized", "--oversample", "6", "--power-iters", "2")
		}
		out, e, code := run(t, args...)
		if code != 0 {
			t.Fatalf("extract r=4: %s", e)
		}
		var rep lowrank.Report
		if err := json.Unmarshal([]byte(out), &rep); err != nil {
			t.Fatalf("json: %v\n%s", err, out)
		}
		m := filepath.Join(dir, "m4.safetensors")
		if _, e, code := run(t, "lora", "merge", base, ad, "-o", m, "-q"); code != 0 {
			t.Fatalf("merge r=4: %s", e)
		}
		got := testutil.ReadAll(t, m)
		for _, mod := range rep.Modules {
			d := deltas[mod.Tensor]
			exact := d.relTail(r)
			dv := d.values()
			diff := make([]float64, len(dv))
			for i := range dv {
				diff[i] = got[mod.Tensor][i] - baseVals[mod.Tensor][i]
			}
			merr := testutil.RelFrob(diff, dv)
			if !randomized {
				if math.Abs(mod.RelError-exact) > 2e-5 || math.Abs(merr-exact) > 2e-5 || mod.Method != "exact" {
					t.Errorf("%s: reported %g, merged %g, want %g", mod.Tensor, mod.RelError, merr, exact)
				}
			} else if mod.Method != "randomized" || merr > exact*1.03 || merr < exact*(1-2e-5) || math.Abs(mod.RelError-merr) > 2e-5 {
				t.Errorf("%s randomized: reported %g, merged %g, exact %g (%s)", mod.Tensor, mod.RelError, merr, exact, mod.Method)
			}
		}
	}
}

func TestLowrankCommand(t *testing.T) {
	dir, base, ft, deltas, baseVals := lrFixture(t)
	out := filepath.Join(dir, "compressed.safetensors")
	// Flags after the positional argument, as everywhere else.
	stdout, e, code := run(t, "lowrank", ft, "--base", base, "--energy", "0.9", "-o", out)
	if code != 0 {
		t.Fatalf("lowrank: %s", e)
	}
	for _, w := range []string{"model.layers.0.self_attn.q_proj.weight", "[24, 16]", "not factorised", "model.layers.0.self_attn.q_proj.bias", "1-D", "copied", "energy=0.9"} {
		if !strings.Contains(stdout, w) {
			t.Errorf("table lacks %q:\n%s", w, stdout)
		}
	}
	got, ftv := testutil.ReadAll(t, out), testutil.ReadAll(t, ft)
	if testutil.RelFrob(got["model.layers.0.self_attn.q_proj.bias"], ftv["model.layers.0.self_attn.q_proj.bias"]) != 0 {
		t.Error("bias not copied from FT")
	}
	for name, d := range deltas {
		dv := d.values()
		diff := make([]float64, len(dv))
		for i := range dv {
			diff[i] = got[name][i] - baseVals[name][i]
		}
		// Energy 0.9 keeps at most 10% of ‖Δ‖², so at most √0.1 relative error.
		if e := testutil.RelFrob(diff, dv); e > math.Sqrt(0.1)+1e-5 {
			t.Errorf("%s: error %g", name, e)
		}
	}

	// PELA-style compression of the weights themselves.
	pela := filepath.Join(dir, "pela")
	stdout, e, code = run(t, "lowrank", base, "--ratio", "2", "-o", pela, "--json", "-q")
	if code != 0 {
		t.Fatalf("lowrank --ratio: %s", e)
	}
	var rep lowrank.Report
	if err := json.Unmarshal([]byte(stdout), &rep); err != nil {
		t.Fatal(err)
	}
	for _, m := range rep.Modules {
		if m.ParamsAfter*2 > m.ParamsBefore {
			t.Errorf("%s: %d factor parameters for %d", m.Tensor, m.ParamsAfter, m.ParamsBefore)
		}
	}
	if _, err := os.Stat(filepath.Join(pela, "model.safetensors")); err != nil {
		t.Error(err)
	}

	// --format lora through lowrank is lora extract.
	ad := filepath.Join(dir, "ad")
	if _, e, code := run(t, "lowrank", ft, "--base", base, "--rank", "2", "--format", "lora", "--split", "b", "-o", ad, "-q"); code != 0 {
		t.Fatalf("lowrank --format lora: %s", e)
	}
	if _, err := lowrank.ReadAdapterConfig(filepath.Join(ad, lowrank.AdapterConfigFile)); err != nil {
		t.Error(err)
	}
}

// TestLoraErrors: one stderr line naming the file, exit 1, no output.
func TestLoraErrors(t *testing.T) {
	dir, base, ft, _, _ := lrFixture(t)
	ad := filepath.Join(dir, "ad")
	if _, e, code := run(t, "lora", "extract", ft, "--base", base, "--rank", "2", "-o", ad, "-q"); code != 0 {
		t.Fatal(e)
	}
	cfg := filepath.Join(ad, lowrank.AdapterConfigFile)
	for _, tc := range []struct{ cfg, want string }{
		{`{"r": 2, "lora_alpha": `, "not a JSON object"},
		{`{"r": 2, "target_modules": 7}`, "target_modules"},
		{`{"r": 3}`, "rank 2"},
	} {
		os.WriteFile(cfg, []byte(tc.cfg), 0o644)
		out := filepath.Join(dir, "merged.safetensors")
		_, e, code := run(t, "lora", "merge", base, ad, "-o", out)
		if code != 1 || strings.Count(e, "\n") != 1 || !strings.Contains(e, tc.want) || !strings.Contains(e, ad) {
			t.Errorf("%s: exit %d, stderr %q", tc.cfg, code, e)
		}
		if _, err := os.Stat(out); err == nil {
			t.Errorf("%s: output written", tc.cfg)
		}
	}
	for _, args := range [][]string{
		{"lowrank", ft, "-o", filepath.Join(dir, "x.safetensors")},
		{"lowrank", ft, "--rank", "2", "--energy", "0.9", "-o", filepath.Join(dir, "x.safetensors")},
		{"lowrank", ft, "--rank", "2", "--format", "peft", "-o", filepath.Join(dir, "x.safetensors")},
		{"lora", "extract", ft, "--rank", "2", "-o", filepath.Join(dir, "y")},
	} {
		if _, e, code := run(t, args...); code == 0 || strings.Count(e, "\n") != 1 {
			t.Errorf("%v: exit %d, stderr %q", args, code, e)
		}
	}
}
