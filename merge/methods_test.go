package merge

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/weightops/weightops/internal/testutil"
	"github.com/weightops/weightops/weights"
)

// The methods mergekit has and weightops gained for it, each against a
// direct float64 computation of mergekit's formula on hand-sized tensors
// (whole tensors in memory, no streaming, no shared code), edge cases
// included. Outputs are F32, so results agree to float32 rounding.

// fixture writes a base and models of random tensors: a 2-D weight, a
// 1-D bias, and per test whatever it adds.
type fixture struct {
	dir    string
	shapes map[string][]int64
	vals   map[string]map[string][]float64 // model → tensor → values
}

func newFixture(t *testing.T, models []string, seed uint64, shapes map[string][]int64, gen func(model, tensor string, i int, r *rand.Rand, base float64) float64) *fixture {
	t.Helper()
	f := &fixture{dir: t.TempDir(), shapes: shapes, vals: map[string]map[string][]float64{}}
	r := rand.New(rand.NewPCG(seed, 1))
	names := make([]string, 0, len(shapes))
	for n := range shapes {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, m := range models {
		f.vals[m] = map[string][]float64{}
	}
	for _, n := range names {
		size := 1
		for _, d := range shapes[n] {
			size *= int(d)
		}
		for _, m := range models {
			v := make([]float64, size)
			for i := range v {
				var b float64
				if m != models[0] {
					b = f.vals[models[0]][n][i]
				}
				// Values representable in float32: references and merge see
				// the same inputs.
				v[i] = float64(float32(gen(m, n, i, r, b)))
			}
			f.vals[m][n] = v
		}
	}
	for _, m := range models {
		model(t, f.dir, m, f.vals[m], shapes)
	}
	return f
}

func randomFT(_ string, _ string, _ int, r *rand.Rand, base float64) float64 {
	if base == 0 {
		return r.NormFloat64()
	}
	return base + 0.3*r.NormFloat64()
}

func (f *fixture) merge(t *testing.T, yaml string) string {
	t.Helper()
	return runRecipe(t, f.dir, yaml, 2)
}

func (f *fixture) check(t *testing.T, out, what string, want map[string][]float64) {
	t.Helper()
	for name, w := range want {
		got := read(t, out, name)
		if len(got) != len(w) {
			t.Fatalf("%s %s: %d values, want %d", what, name, len(got), len(w))
		}
		for i := range w {
			tol := 2e-6 * math.Max(1, math.Abs(w[i]))
			if math.Abs(got[i]-w[i]) > tol || math.IsNaN(got[i]) != math.IsNaN(w[i]) {
				t.Errorf("%s %s[%d] = %.9g, want %.9g", what, name, i, got[i], w[i])
				return
			}
		}
	}
}

func sub(a, b []float64) []float64 {
	out := make([]float64, len(a))
	for i := range a {
		out[i] = a[i] - b[i]
	}
	return out
}

func dotf(a, b []float64) float64 {
	var s float64
	for i := range a {
		s += a[i] * b[i]
	}
	return s
}

var basic = map[string][]int64{"w": {4, 6}, "b": {6}}

func TestNearSwap(t *testing.T) {
	f := newFixture(t, []string{"base", "m"}, 1, basic, randomFT)
	out := f.merge(t, "merge_method: nearswap\nbase_model: base\nmodels: [{model: m}]\nparameters: {t: 0.2}\n")
	want := map[string][]float64{}
	for n, a := range f.vals["base"] {
		b := f.vals["m"][n]
		o := make([]float64, len(a))
		for i := range a {
			w := math.Min(1, math.Max(0, 0.2/math.Max(math.Abs(a[i]-b[i]), 1e-6)))
			o[i] = w*b[i] + (1-w)*a[i]
		}
		want[n] = o
	}
	f.check(t, out, "nearswap", want)
}

func TestRAM(t *testing.T) {
	// Each model leaves a third of the entries unchanged, so entries are
	// changed by none, one, or both.
	gen := func(m, n string, i int, r *rand.Rand, base float64) float64 {
		if m == "base" {
			return r.NormFloat64()
		}
		if (i+len(m))%3 == 0 {
			return base
		}
		return base + 0.5*r.NormFloat64()
	}
	f := newFixture(t, []string{"base", "m1", "m22"}, 2, basic, gen)
	for _, plus := range []bool{false, true} {
		method, params := "ram", "{epsilon: 1e-5}"
		if plus {
			method, params = "ramplus_tl", "{r: 0.5, alpha: 0.3}"
		}
		out := f.merge(t, fmt.Sprintf("merge_method: %s\nbase_model: base\nmodels: [{model: m1}, {model: m22}]\nparameters: %s\n", method, params))
		want := map[string][]float64{}
		for n, base := range f.vals["base"] {
			r, alpha := 0.0, 0.0
			if plus {
				r, alpha = 0.5, 0.3
			}
			want[n] = ramRef(base, [][]float64{sub(f.vals["m1"][n], base), sub(f.vals["m22"][n], base)}, plus, r, alpha)
		}
		f.check(t, out, method, want)
	}
}

// ramRef is mergekit's RAM on task vectors taus over base (epsilon 1e-5):
// entries one model changes are added (by ramplus_tl, scaled by
// 1 + r·clamp(shared/unique, 0, alpha) per model), entries several change
// are averaged.
func ramRef(base []float64, taus [][]float64, plus bool, r, alpha float64) []float64 {
	count := make([]int, len(base))
	for _, tau := range taus {
		for i, x := range tau {
			if math.Abs(x) > 1e-5 {
				count[i]++
			}
		}
	}
	lambda := make([]float64, len(taus))
	for k, tau := range taus {
		lambda[k] = 1
		if !plus {
			continue
		}
		var shared, unique float64
		for i, x := range tau {
			if math.Abs(x) > 1e-5 {
				if count[i] > 1 {
					shared++
				} else {
					unique++
				}
			}
		}
		lambda[k] = 1 + r*math.Min(alpha, math.Max(0, shared/math.Max(unique, 1e-5)))
	}
	o := append([]float64(nil), base...)
	for i := range base {
		for k, tau := range taus {
			if math.Abs(tau[i]) <= 1e-5 {
				continue
			}
			if count[i] == 1 {
				o[i] += tau[i] * lambda[k]
			} else {
				o[i] += tau[i] / float64(count[i])
			}
		}
	}
	return o
}

// nuslerpRef is mergekit's nuslerp on vectors taken from a and b by
// index lists (each list one vector).
func nuslerpRef(t float64, a, b []float64, groups [][]int) []float64 {
	out := make([]float64, len(a))
	for _, g := range groups {
		var aa, bb, ab float64
		for _, i := range g {
			aa += a[i] * a[i]
			bb += b[i] * b[i]
			ab += a[i] * b[i]
		}
		cos := ab / (math.Max(math.Sqrt(aa), 1e-7) * math.Max(math.Sqrt(bb), 1e-7))
		theta := math.Acos(math.Max(-1, math.Min(1, cos)))
		s := math.Sin(theta)
		for _, i := range g {
			if math.Abs(s) < 1e-8 {
				out[i] = (1-t)*a[i] + t*b[i]
			} else {
				out[i] = (math.Sin((1-t)*theta)*a[i] + math.Sin(t*theta)*b[i]) / s
			}
		}
	}
	return out
}

func TestNuSlerp(t *testing.T) {
	f := newFixture(t, []string{"base", "m1", "m2"}, 3, basic, randomFT)
	groups := func(shape []int64, mode string) [][]int {
		n := 1
		for _, d := range shape {
			n *= int(d)
		}
		if mode == "flatten" || len(shape) == 1 {
			all := make([]int, n)
			for i := range all {
				all[i] = i
			}
			return [][]int{all}
		}
		rows, cols := int(shape[0]), n/int(shape[0])
		var gs [][]int
		if mode == "rows" {
			for r := range rows {
				var g []int
				for c := range cols {
					g = append(g, r*cols+c)
				}
				gs = append(gs, g)
			}
			return gs
		}
		for c := range cols {
			var g []int
			for r := range rows {
				g = append(g, r*cols+c)
			}
			gs = append(gs, g)
		}
		return gs
	}
	for _, withBase := range []bool{false, true} {
		for _, mode := range []string{"flatten", "rows", "columns"} {
			params := map[string]string{"flatten": "{}", "rows": "{nuslerp_flatten: false}", "columns": "{nuslerp_flatten: false, nuslerp_row_wise: true}"}[mode]
			base := ""
			if withBase {
				base = "base_model: base\n"
			}
			out := f.merge(t, "merge_method: nuslerp\n"+base+"models: [{model: m1, parameters: {weight: 0.3}}, {model: m2, parameters: {weight: 0.9}}]\nparameters: "+params+"\n")
			want := map[string][]float64{}
			tt := 0.9 / 1.2
			for n := range f.shapes {
				a, b := f.vals["m1"][n], f.vals["m2"][n]
				if withBase {
					bs := f.vals["base"][n]
					r := nuslerpRef(tt, sub(a, bs), sub(b, bs), groups(f.shapes[n], mode))
					for i := range r {
						r[i] += bs[i]
					}
					want[n] = r
				} else {
					want[n] = nuslerpRef(tt, a, b, groups(f.shapes[n], mode))
				}
			}
			f.check(t, out, fmt.Sprintf("nuslerp %s base=%v", mode, withBase), want)
		}
	}
	// Parallel vectors interpolate linearly; weights summing to 0 mean t = ½.
	par := newFixture(t, []string{"a", "b"}, 4, map[string][]int64{"w": {3}}, func(m, _ string, i int, _ *rand.Rand, _ float64) float64 {
		if m == "a" {
			return float64(i + 1)
		}
		return 2 * float64(i+1)
	})
	out := par.merge(t, "merge_method: nuslerp\nmodels: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: -1}}]\n")
	par.check(t, out, "nuslerp parallel", map[string][]float64{"w": {1.5, 3, 4.5}})
}

func multislerpRef(w []float64, xs [][]float64, base []float64, eps float64) []float64 {
	var s float64
	for _, x := range w {
		s += x
	}
	w = append([]float64(nil), w...)
	for i := range w {
		w[i] /= s
	}
	taus := make([][]float64, len(xs))
	for i, x := range xs {
		taus[i] = x
		if base != nil {
			taus[i] = sub(x, base)
		}
	}
	n := len(taus[0])
	norms := make([]float64, len(taus))
	units := make([][]float64, len(taus))
	mean := make([]float64, n)
	for i, tau := range taus {
		norms[i] = math.Sqrt(dotf(tau, tau))
		units[i] = make([]float64, n)
		for e := range tau {
			units[i][e] = tau[e] / (norms[i] + eps)
			mean[e] += w[i] * units[i][e]
		}
	}
	mn := math.Sqrt(dotf(mean, mean))
	for e := range mean {
		mean[e] /= mn
	}
	tr := make([]float64, n)
	for i, u := range units {
		d := dotf(u, mean)
		for e := range u {
			tr[e] += w[i] * (u[e] - d*mean[e])
		}
	}
	tn := math.Sqrt(dotf(tr, tr)) + eps
	var avg float64
	for i := range norms {
		avg += norms[i] * w[i]
	}
	out := make([]float64, n)
	for e := range out {
		out[e] = (mean[e]*math.Cos(tn) + tr[e]*math.Sin(tn)/tn) * avg
		if base != nil {
			out[e] += base[e]
		}
	}
	return out
}

func TestMultiSlerp(t *testing.T) {
	f := newFixture(t, []string{"base", "m1", "m2", "m3"}, 5, basic, randomFT)
	for _, withBase := range []bool{false, true} {
		base := ""
		if withBase {
			base = "base_model: base\n"
		}
		out := f.merge(t, "merge_method: multislerp\n"+base+"models: [{model: m1, parameters: {weight: 1}}, {model: m2, parameters: {weight: 2}}, {model: m3, parameters: {weight: 0.5}}]\n")
		want := map[string][]float64{}
		for n := range f.shapes {
			var b []float64
			if withBase {
				b = f.vals["base"][n]
			}
			want[n] = multislerpRef([]float64{1, 2, 0.5}, [][]float64{f.vals["m1"][n], f.vals["m2"][n], f.vals["m3"][n]}, b, 1e-8)
		}
		f.check(t, out, fmt.Sprintf("multislerp base=%v", withBase), want)
	}
	// Two antipodal models with equal weights cancel: linear fallback.
	anti := newFixture(t, []string{"a", "b"}, 6, map[string][]int64{"w": {2}}, func(m, _ string, i int, _ *rand.Rand, _ float64) float64 {
		if m == "a" {
			return float64(i + 1)
		}
		return -float64(i + 1)
	})
	out := anti.merge(t, "merge_method: multislerp\nmodels: [{model: a, parameters: {weight: 1}}, {model: b, parameters: {weight: 1}}]\n")
	anti.check(t, out, "multislerp antipodal", map[string][]float64{"w": {0, 0}})
}

// karcherRef iterates mergekit's Karcher mean on the vectors themselves.
func karcherRef(xs [][]float64, maxIter int, tol float64) []float64 {
	n := len(xs[0])
	alphas := make([]float64, len(xs))
	norms := make([]float64, len(xs))
	units := make([][]float64, len(xs))
	for i, x := range xs {
		alphas[i] = 1 / float64(len(xs))
		norms[i] = math.Sqrt(dotf(x, x))
		units[i] = make([]float64, n)
		if norms[i] > 0 {
			for e := range x {
				units[i][e] = x[e] / norms[i]
			}
		}
	}
	var valid []int
	for i := range xs {
		if norms[i] > tol {
			valid = append(valid, i)
		}
	}
	a := 1 / float64(len(valid))
	u := make([]float64, n)
	for _, i := range valid {
		for e := range u {
			u[e] += a * units[i][e]
		}
	}
	nu := math.Sqrt(dotf(u, u))
	for e := range u {
		u[e] /= nu
	}
	for range maxIter {
		T := make([]float64, n)
		for _, i := range valid {
			d := math.Max(-1, math.Min(1, dotf(u, units[i])))
			th := math.Acos(d)
			if th < tol {
				continue
			}
			for e := range T {
				T[e] += a * th / math.Sin(th) * (units[i][e] - d*u[e])
			}
		}
		nT := math.Sqrt(dotf(T, T))
		if nT < tol {
			break
		}
		for e := range u {
			u[e] = math.Cos(nT)*u[e] + math.Sin(nT)*T[e]/nT
		}
		nu := math.Sqrt(dotf(u, u))
		for e := range u {
			u[e] /= nu
		}
	}
	var s float64
	for i := range norms {
		s += alphas[i] * norms[i]
	}
	for e := range u {
		u[e] *= s
	}
	return u
}

func TestKarcher(t *testing.T) {
	f := newFixture(t, []string{"base", "m1", "m2"}, 7, basic, randomFT)
	// The base is one of the models (as mergekit merges it).
	out := f.merge(t, "merge_method: karcher\nbase_model: base\nmodels: [{model: m1}, {model: m2}]\nparameters: {max_iter: 20, tol: 1e-9}\n")
	want := map[string][]float64{}
	for n := range f.shapes {
		want[n] = karcherRef([][]float64{f.vals["m1"][n], f.vals["m2"][n], f.vals["base"][n]}, 20, 1e-9)
	}
	f.check(t, out, "karcher", want)
	// A zero tensor takes no part in the direction but counts in the norm.
	z := newFixture(t, []string{"a", "b", "c"}, 8, map[string][]int64{"w": {3}}, func(m, _ string, i int, r *rand.Rand, _ float64) float64 {
		if m == "c" {
			return 0
		}
		return r.NormFloat64()
	})
	out = z.merge(t, "merge_method: karcher\nmodels: [{model: a}, {model: b}, {model: c}]\n")
	z.check(t, out, "karcher zero", map[string][]float64{"w": karcherRef([][]float64{z.vals["a"]["w"], z.vals["b"]["w"], z.vals["c"]["w"]}, 10, 1e-5)})
}

func sceRef(base []float64, ms [][]float64, topk float64) []float64 {
	n := len(base)
	taus := make([][]float64, len(ms))
	for i, m := range ms {
		taus[i] = sub(m, base)
	}
	if topk < 1 {
		vars := make([]float32, n)
		nonzero := 0
		for e := range vars {
			var mean float64
			for _, tau := range taus {
				mean += tau[e]
			}
			mean /= float64(len(taus))
			var s float64
			for _, tau := range taus {
				s += (tau[e] - mean) * (tau[e] - mean)
			}
			vars[e] = float32(s / float64(len(taus)))
			if vars[e] != 0 {
				nonzero++
			}
		}
		k := int(float64(nonzero) * topk)
		idx := make([]int, n)
		for i := range idx {
			idx[i] = i
		}
		sort.SliceStable(idx, func(a, b int) bool { return vars[idx[a]] > vars[idx[b]] })
		keep := make([]bool, n)
		for _, i := range idx[:k] {
			keep[i] = true
		}
		for _, tau := range taus {
			for e := range tau {
				if !keep[e] {
					tau[e] = 0
				}
			}
		}
	}
	w := make([]float64, len(taus))
	var sum float64
	for i, tau := range taus {
		w[i] = dotf(tau, tau) / float64(n)
		sum += w[i]
	}
	for i := range w {
		if math.Abs(sum) < 1e-6 {
			w[i] = 1 / float64(len(w))
		} else {
			w[i] /= sum
		}
	}
	out := make([]float64, n)
	for e := range out {
		var total float64
		for _, tau := range taus {
			total += tau[e]
		}
		var merged, div float64
		for i, tau := range taus {
			if (tau[e] > 0 && total >= 0) || (tau[e] < 0 && total < 0) {
				merged += w[i] * tau[e]
				div += w[i]
			}
		}
		out[e] = base[e] + merged/math.Max(div, 1e-6)
	}
	return out
}

func TestSCE(t *testing.T) {
	f := newFixture(t, []string{"base", "m1", "m2", "m3"}, 9, basic, randomFT)
	for _, topk := range []float64{1, 0.5, 0.1, 0} {
		out := f.merge(t, fmt.Sprintf("merge_method: sce\nbase_model: base\nmodels: [{model: m1}, {model: m2}, {model: m3}]\nparameters: {select_topk: %g}\n", topk))
		want := map[string][]float64{}
		for n := range f.shapes {
			want[n] = sceRef(f.vals["base"][n], [][]float64{f.vals["m1"][n], f.vals["m2"][n], f.vals["m3"][n]}, topk)
		}
		f.check(t, out, fmt.Sprintf("sce topk=%g", topk), want)
	}
}

func arceeRef(a, b []float64, rowLen int) []float64 {
	n := len(a)
	imp := make([]float32, n)
	for r := 0; r < n; r += rowLen {
		soft := func(v []float64) []float64 {
			mx := math.Inf(-1)
			for _, x := range v {
				mx = math.Max(mx, x)
			}
			var s float64
			out := make([]float64, len(v))
			for i, x := range v {
				out[i] = math.Exp(x - mx)
				s += out[i]
			}
			for i := range out {
				out[i] = out[i]/s + 1e-8
			}
			return out
		}
		p, q := soft(b[r:r+rowLen]), soft(a[r:r+rowLen])
		var kl float64
		for i := range p {
			kl += p[i] * math.Log(p[i]/q[i])
		}
		for e := r; e < r+rowLen; e++ {
			imp[e] = float32(math.Max(0, math.Abs(b[e]-a[e])*kl))
		}
	}
	sorted := append([]float32(nil), imp...)
	sort.Slice(sorted, func(i, j int) bool { return sorted[i] < sorted[j] })
	q := func(x float64) float64 { return float64(sorted[int(x*float64(n-1))]) }
	th := float32(q(0.5) + 1.5*(q(0.75)-q(0.25)))
	out := make([]float64, n)
	for e := range out {
		out[e] = a[e]
		if imp[e] >= th {
			out[e] = b[e]
		}
	}
	return out
}

func TestArceeFusion(t *testing.T) {
	shapes := map[string][]int64{"w": {8, 50}, "b": {3}, "c": {1}}
	f := newFixture(t, []string{"base", "m"}, 10, shapes, randomFT)
	out := f.merge(t, "merge_method: arcee_fusion\nbase_model: base\nmodels: [{model: m}]\n")
	want := map[string][]float64{}
	for n, sh := range shapes {
		want[n] = arceeRef(f.vals["base"][n], f.vals["m"][n], int(sh[len(sh)-1]))
	}
	f.check(t, out, "arcee_fusion", want)
	// Few entries change: exactly the important ones are taken.
	got, b := read(t, out, "w"), f.vals["base"]["w"]
	changed := 0
	for i := range got {
		if got[i] != b[i] {
			changed++
		}
	}
	if changed == 0 || changed > len(got)/2 {
		t.Errorf("arcee_fusion took %d of %d changes", changed, len(got))
	}
}

func TestPassthroughSlices(t *testing.T) {
	// Two 4-layer models: the output stacks a's layers 0–2 and b's 1–3,
	// b's scaled; embeddings from a (the first slice), norm and head from
	// b (the last).
	shapes := map[string][]int64{"model.embed_tokens.weight": {5, 2}, "model.norm.weight": {2}, "lm_head.weight": {5, 2}}
	for l := range 4 {
		shapes[fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", l)] = []int64{2, 2}
		shapes[fmt.Sprintf("model.layers.%d.input_layernorm.weight", l)] = []int64{2}
	}
	f := newFixture(t, []string{"a", "b"}, 11, shapes, randomFT)
	out := f.merge(t, `merge_method: passthrough
slices:
  - sources:
      - model: a
        layer_range: [0, 3]
  - sources:
      - model: b
        layer_range: [1, 4]
        parameters:
          scale: [{filter: mlp, value: 0.5}, {value: 1}]
`)
	want := map[string][]float64{
		"model.embed_tokens.weight": f.vals["a"]["model.embed_tokens.weight"],
		"model.norm.weight":         f.vals["b"]["model.norm.weight"],
		"lm_head.weight":            f.vals["b"]["lm_head.weight"],
	}
	for o := range 6 {
		src, layer := "a", o
		if o >= 3 {
			src, layer = "b", o-3+1
		}
		up := append([]float64(nil), f.vals[src][fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", layer)]...)
		if src == "b" {
			for i := range up {
				up[i] *= 0.5
			}
		}
		want[fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", o)] = up
		want[fmt.Sprintf("model.layers.%d.input_layernorm.weight", o)] = f.vals[src][fmt.Sprintf("model.layers.%d.input_layernorm.weight", layer)]
	}
	f.check(t, out, "passthrough", want)
	if n := len(testOpen(t, out).Tensors()); n != 15 {
		t.Errorf("%d tensors written, want 15", n)
	}
}

func TestSlicesGradientsAndParameterLevels(t *testing.T) {
	// A slice-form linear merge: per-slice parameters override the top
	// level, per-source ones override both; a filter list with no match
	// falls through to the next level; t runs over each slice's layers.
	shapes := map[string][]int64{"model.embed_tokens.weight": {3, 2}, "lm_head.weight": {3, 2}}
	for l := range 4 {
		shapes[fmt.Sprintf("model.layers.%d.self_attn.q_proj.weight", l)] = []int64{2}
		shapes[fmt.Sprintf("model.layers.%d.mlp.up_proj.weight", l)] = []int64{2}
	}
	f := newFixture(t, []string{"a", "b"}, 12, shapes, randomFT)
	out := f.merge(t, `merge_method: linear
parameters:
  weight: 1
  normalize: true
slices:
  - sources:
      - model: a
        layer_range: [0, 2]
        parameters:
          weight: [{filter: self_attn, value: [1, 3]}]
      - model: b
        layer_range: [0, 2]
  - sources:
      - model: a
        layer_range: [2, 4]
      - model: b
        layer_range: [2, 4]
    parameters:
      weight: 0.25
`)
	lin := func(wa, wb float64, a, b []float64) []float64 {
		o := make([]float64, len(a))
		for i := range a {
			o[i] = (wa*a[i] + wb*b[i]) / (wa + wb)
		}
		return o
	}
	v := func(m, n string) []float64 { return f.vals[m][n] }
	q, up := "model.layers.%d.self_attn.q_proj.weight", "model.layers.%d.mlp.up_proj.weight"
	want := map[string][]float64{
		// Embeddings: the first slice's parameters at t = 0 (a's filter
		// does not match: top-level weight 1).
		"model.embed_tokens.weight": lin(1, 1, v("a", "model.embed_tokens.weight"), v("b", "model.embed_tokens.weight")),
		"lm_head.weight":            lin(0.25, 0.25, v("a", "lm_head.weight"), v("b", "lm_head.weight")),
		// Slice 1, layer 0 (t = 0) and 1 (t = 1): a's q_proj weight 1, 3.
		fmt.Sprintf(q, 0):  lin(1, 1, v("a", fmt.Sprintf(q, 0)), v("b", fmt.Sprintf(q, 0))),
		fmt.Sprintf(q, 1):  lin(3, 1, v("a", fmt.Sprintf(q, 1)), v("b", fmt.Sprintf(q, 1))),
		fmt.Sprintf(up, 1): lin(1, 1, v("a", fmt.Sprintf(up, 1)), v("b", fmt.Sprintf(up, 1))),
		// Slice 2: its own weight.
		fmt.Sprintf(q, 3): lin(0.25, 0.25, v("a", fmt.Sprintf(q, 3)), v("b", fmt.Sprintf(q, 3))),
	}
	f.check(t, out, "slices", want)
}

func TestDELLAStatistics(t *testing.T) {
	// della_linear over one model, base zero: the output is the masked and
	// L1-rescaled task vector. Over many seeds, each magnitude rank in a
	// row is kept with probability (d − ε) + 2ε·r/(L−1), and the rescale
	// restores the row's L1 norm per tensor.
	const rows, cols = 4, 9
	shapes := map[string][]int64{"w": {rows, cols}}
	f := newFixture(t, []string{"base", "m"}, 13, shapes, func(m, _ string, i int, _ *rand.Rand, _ float64) float64 {
		if m == "base" {
			return 0
		}
		// Distinct magnitudes, rank = column within each row, alternating sign.
		return float64(i%cols+1) * math.Pow(-1, float64(i))
	})
	d, eps := 0.5, 0.3
	kept := make([]float64, cols)
	const seeds = 300
	for s := range seeds {
		out := f.merge(t, fmt.Sprintf("merge_method: della_linear\nbase_model: base\nmodels: [{model: m, parameters: {weight: 1, density: %g, epsilon: %g}}]\nparameters: {seed: %d}\n", d, eps, s))
		got := read(t, out, "w")
		tau := f.vals["m"]["w"]
		var l1, keptL1 float64
		for i, x := range got {
			l1 += math.Abs(tau[i])
			if x != 0 {
				kept[i%cols]++
				keptL1 += math.Abs(tau[i])
			}
		}
		// Kept entries are scaled by l1/keptL1, and signs kept.
		for i, x := range got {
			if x != 0 && math.Abs(x-tau[i]*l1/keptL1) > 1e-4*math.Abs(x) {
				t.Fatalf("seed %d: entry %d = %g, want %g (rescaled)", s, i, x, tau[i]*l1/keptL1)
			}
		}
	}
	for r := range cols {
		p := (d - eps) + 2*eps*float64(r)/float64(cols-1)
		frac := kept[r] / (seeds * rows)
		sd := math.Sqrt(p * (1 - p) / (seeds * rows))
		if math.Abs(frac-p) > 4.5*sd {
			t.Errorf("rank %d kept %.3f of the time, want %.3f (±%.3f)", r, frac, p, sd)
		}
	}
}

func TestDELLARefusesProbabilitiesOutsideUnit(t *testing.T) {
	f := newFixture(t, []string{"base", "m"}, 14, basic, randomFT)
	rp := filepath.Join(f.dir, "della.yaml")
	writeFile(t, rp, "merge_method: della\nbase_model: base\nmodels: [{model: m, parameters: {weight: 1, density: 0.9}}]\n")
	r, err := ParseRecipe(rp)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := r.Open(); err == nil || !strings.Contains(err.Error(), "leaves (0, 1)") {
		t.Errorf("density 0.9 with ε 0.15: %v", err)
	}
}

func testOpen(t *testing.T, path string) weights.Checkpoint { return testutil.Open(t, path)[0] }

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestWarnings: a parameter another method takes is accepted with a
// warning (mergekit's own tests give slerp a weight); a typo is an error;
// a Breadcrumbs tensor where γ·n < 1 is noted as where mergekit differs.
func TestWarnings(t *testing.T) {
	f := newFixture(t, []string{"base", "m"}, 15, basic, randomFT)
	plan := openRecipe(t, f.dir, "merge_method: slerp\nbase_model: base\nmodels: [{model: base}, {model: m, parameters: {weight: 0.5}}]\nparameters: {t: 0.5}\n")
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], `slerp does not use parameter "weight"`) {
		t.Errorf("slerp weight: %v", plan.Warnings)
	}
	rp := filepath.Join(f.dir, "typo.yaml")
	writeFile(t, rp, "merge_method: slerp\nbase_model: base\nmodels: [{model: m, parameters: {wieght: 0.5}}]\nparameters: {t: 0.5}\n")
	if _, err := ParseRecipe(rp); err == nil || !strings.Contains(err.Error(), `unknown parameter "wieght"`) {
		t.Errorf("typo: %v", err)
	}
	plan = openRecipe(t, f.dir, "merge_method: breadcrumbs\nbase_model: base\nmodels: [{model: m, parameters: {weight: 1, density: 0.5, gamma: 0.01}}]\n")
	if len(plan.Warnings) != 1 || !strings.Contains(plan.Warnings[0], "gamma·n < 1 for b, w") {
		t.Errorf("breadcrumbs note: %v", plan.Warnings)
	}
}
