package lowrank

import (
	"context"
	"encoding/json"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// pair is a base and fine-tune whose 2-D deltas have known SVDs.
type pair struct {
	dir, base, ft string
	deltas        map[string]*knownMatrix
	baseVals      map[string][]float64
}

// makePair writes BASE (random) and FT = BASE + Δ, Δ = U·diag(s)·Vᵀ with
// known s per 2-D tensor; plus a 1-D bias that differs, a norm that does
// not and an integer tensor. dt is the dtype of both files.
func makePair(t *testing.T, dt weights.DType, seed uint64) *pair {
	t.Helper()
	rng := rand.New(rand.NewPCG(seed, 99))
	p := &pair{dir: t.TempDir(), deltas: map[string]*knownMatrix{}, baseVals: map[string][]float64{}}
	p.base, p.ft = filepath.Join(p.dir, "base.safetensors"), filepath.Join(p.dir, "ft.safetensors")
	shapes := map[string][2]int{
		"model.layers.0.self_attn.q_proj.weight": {24, 16},
		"model.layers.0.mlp.up_proj.weight":      {16, 40},
		"model.layers.1.self_attn.q_proj.weight": {24, 16},
	}
	decay := map[string]float64{
		"model.layers.0.self_attn.q_proj.weight": 0.75,
		"model.layers.0.mlp.up_proj.weight":      0.6,
		"model.layers.1.self_attn.q_proj.weight": 0.85,
	}
	var base, ft []spec
	for _, name := range []string{"model.layers.0.self_attn.q_proj.weight", "model.layers.0.mlp.up_proj.weight", "model.layers.1.self_attn.q_proj.weight"} {
		m, n := shapes[name][0], shapes[name][1]
		k := min(m, n)
		s := make([]float64, k)
		for i := range s {
			// Different decays, so an energy rule picks different ranks.
			s[i] = 0.5 * math.Pow(decay[name], float64(i)) * (1 + float64(len(name)%3))
		}
		km := newKnown(rng, m, n, s)
		w := rounded(dt, randVals(rng, m*n, 1))
		d := km.full()
		f := make([]float64, m*n)
		for i := range f {
			f[i] = w[i] + d[i]
		}
		p.deltas[name] = km
		p.baseVals[name] = w
		base = append(base, spec{name, dt, []int64{int64(m), int64(n)}, w})
		ft = append(ft, spec{name, dt, []int64{int64(m), int64(n)}, f})
	}
	bias := randVals(rng, 24, 1)
	bias2 := make([]float64, 24)
	for i := range bias2 {
		bias2[i] = bias[i] + 0.1*rng.NormFloat64()
	}
	norm := randVals(rng, 16, 1)
	base = append(base, spec{"model.layers.0.self_attn.q_proj.bias", dt, []int64{24}, bias}, spec{"model.norm.weight", dt, []int64{16}, norm}, spec{"step", weights.I64, []int64{1}, []float64{3}})
	ft = append(ft, spec{"model.layers.0.self_attn.q_proj.bias", dt, []int64{24}, bias2}, spec{"model.norm.weight", dt, []int64{16}, norm}, spec{"step", weights.I64, []int64{1}, []float64{3}})
	writeTensors(t, p.base, base)
	writeTensors(t, p.ft, ft)
	return p
}

func openT(t *testing.T, path string) weights.Checkpoint {
	t.Helper()
	ck, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ck.Close() })
	return ck
}

func extract(t *testing.T, p *pair, out string, o Options) *Report {
	t.Helper()
	o.Format = FormatLoRA
	rep, err := Compress(context.Background(), openT(t, p.ft), openT(t, p.base), out, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func mergeInto(t *testing.T, p *pair, ad, out string) {
	t.Helper()
	a, err := OpenAdapter(ad)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	if _, err := a.Merge(context.Background(), openT(t, p.base), out, MergeOptions{Scale: 1}); err != nil {
		t.Fatal(err)
	}
}

func relFrob(got, want []float64) float64 { return frobDiff(got, want) / frob(want) }

// TestLoRARoundTrip: extract at full rank then merge reproduces the
// fine-tune; at rank r the merged model's error relative to ‖Δ‖ is the
// value √(Σ_{i>r} s_i²)/‖s‖ fixed when Δ was built.
func TestLoRARoundTrip(t *testing.T) {
	for _, dt := range []weights.DType{weights.F32, weights.F64} {
		p := makePair(t, dt, 1)
		full := filepath.Join(p.dir, "full")
		rep := extract(t, p, full, Options{Rule: Rule{Rank: 16}})
		if len(rep.Modules) != 3 {
			t.Fatalf("modules %+v", rep.Modules)
		}
		merged := filepath.Join(p.dir, "merged.safetensors")
		mergeInto(t, p, full, merged)
		got, want := readAll(t, merged), readAll(t, p.ft)
		for name, w := range want {
			g, ok := got[name]
			if !ok || g.DType != w.DType {
				t.Fatalf("%s: missing or wrong dtype", name)
			}
			if e := relFrob(floats(t, g), floats(t, w)); e > 1e-5 {
				t.Errorf("%s %s: full-rank round trip error %g", dt, name, e)
			}
		}

		for _, r := range []int{1, 4} {
			ad := filepath.Join(p.dir, "r"+string(rune('0'+r)))
			rep := extract(t, p, ad, Options{Rule: Rule{Rank: r}, Split: SplitLeft})
			merged := filepath.Join(p.dir, "m"+string(rune('0'+r))+".safetensors")
			mergeInto(t, p, ad, merged)
			got := readAll(t, merged)
			for _, m := range rep.Modules {
				km := p.deltas[m.Tensor]
				want := expectedRelError(km.s, r)
				// The merged model's own error, against the exact FT.
				g := floats(t, got[m.Tensor])
				d := make([]float64, len(g))
				for i := range g {
					d[i] = g[i] - p.baseVals[m.Tensor][i]
				}
				merr := frobDiff(d, km.full()) / frob(km.full())
				tol := 1e-9
				if dt == weights.F32 {
					tol = 2e-5 // FT and the merged output are rounded to F32
				}
				if math.Abs(m.RelError-want) > tol || math.Abs(merr-want) > tol {
					t.Errorf("%s %s r=%d: reported %g, merged %g, want %g", dt, m.Tensor, r, m.RelError, merr, want)
				}
				// And the merged delta is the known truncation itself.
				if e := frobDiff(d, km.truncated(r)) / frob(km.full()); e > tol {
					t.Errorf("%s %s r=%d: merged delta differs from U_r·Σ_r·V_rᵀ by %g", dt, m.Tensor, r, e)
				}
			}
		}
	}
}

// TestLoRAConfigAndLayout checks the adapter's names and config keys, the
// rank_pattern written when energy picks different ranks, and that the
// round trip still holds through it.
func TestLoRAConfigAndLayout(t *testing.T) {
	p := makePair(t, weights.F64, 2)
	ad := filepath.Join(p.dir, "ad")
	rep := extract(t, p, ad, Options{Rule: Rule{Energy: 0.99}, BaseName: "org/tiny"})
	ranks := map[string]int{}
	for _, m := range rep.Modules {
		ranks[m.Module] = m.Rank
	}
	if ranks["model.layers.0.mlp.up_proj"] == ranks["model.layers.0.self_attn.q_proj"] || ranks["model.layers.1.self_attn.q_proj"] == ranks["model.layers.0.self_attn.q_proj"] {
		t.Fatalf("want different ranks: %v", ranks)
	}
	raw, err := os.ReadFile(filepath.Join(ad, AdapterConfigFile))
	if err != nil {
		t.Fatal(err)
	}
	var cfg map[string]any
	if err := json.Unmarshal(raw, &cfg); err != nil {
		t.Fatal(err)
	}
	if cfg["peft_type"] != "LORA" || cfg["r"] != cfg["lora_alpha"] || cfg["fan_in_fan_out"] != false || cfg["use_rslora"] != false ||
		cfg["base_model_name_or_path"] != "org/tiny" || cfg["bias"] != "all" {
		t.Errorf("config: %s", raw)
	}
	if tm, _ := json.Marshal(cfg["target_modules"]); string(tm) != `["q_proj","up_proj"]` {
		t.Errorf("target_modules %s", tm)
	}
	// Two of the three ranks differ from r and get pattern entries, keyed
	// without the leading "model." (the form older PEFT also matches).
	if rp, _ := json.Marshal(cfg["rank_pattern"]); !strings.Contains(string(rp), `"layers.`) || len(cfg["rank_pattern"].(map[string]any)) != 2 ||
		len(cfg["alpha_pattern"].(map[string]any)) != 2 {
		t.Errorf("rank_pattern %s alpha_pattern %v", rp, cfg["alpha_pattern"])
	}
	parsed, err := ParseAdapterConfig(raw)
	if err != nil {
		t.Fatal(err)
	}
	for mod, r := range ranks {
		if parsed.RankFor(mod) != r || parsed.Scaling(mod) != 1 {
			t.Errorf("%s: config rank %d scaling %g, extracted %d", mod, parsed.RankFor(mod), parsed.Scaling(mod), r)
		}
	}
	got := readAll(t, filepath.Join(ad, AdapterWeightsFile))
	for mod, r := range ranks {
		info := p.deltas[mod+".weight"]
		a, b := got[PeftPrefix+mod+".lora_A.weight"], got[PeftPrefix+mod+".lora_B.weight"]
		if !weights.SameShape(a.Shape, []int64{int64(r), int64(info.n)}) || !weights.SameShape(b.Shape, []int64{int64(info.m), int64(r)}) {
			t.Errorf("%s: A %v B %v", mod, a.Shape, b.Shape)
		}
	}
	// The differing bias travels whole; the equal norm and the integer do not.
	if _, ok := got[PeftPrefix+"model.layers.0.self_attn.q_proj.bias"]; !ok || len(got) != 2*len(ranks)+1 {
		t.Errorf("adapter tensors: %d", len(got))
	}
	merged := filepath.Join(p.dir, "merged.safetensors")
	mergeInto(t, p, ad, merged)
	out := readAll(t, merged)
	for _, m := range rep.Modules {
		g := floats(t, out[m.Tensor])
		d := make([]float64, len(g))
		for i := range g {
			d[i] = g[i] - p.baseVals[m.Tensor][i]
		}
		km := p.deltas[m.Tensor]
		if e := frobDiff(d, km.truncated(m.Rank)) / frob(km.full()); e > 1e-9 {
			t.Errorf("%s: merged delta off by %g", m.Tensor, e)
		}
		if m.Energy < 0.99 {
			t.Errorf("%s: energy %g", m.Tensor, m.Energy)
		}
	}
}

// TestWeightsFormat: FT + BASE → BASE + Δ_r in FT's dtype; a task vector
// alone → Δ_r; non-2-D tensors copied.
func TestWeightsFormat(t *testing.T) {
	p := makePair(t, weights.F64, 3)
	out := filepath.Join(p.dir, "compressed.safetensors")
	rep, err := Compress(context.Background(), openT(t, p.ft), openT(t, p.base), out, Options{Rule: Rule{Rank: 3}})
	if err != nil {
		t.Fatal(err)
	}
	got, ft := readAll(t, out), readAll(t, p.ft)
	for name, km := range p.deltas {
		g := floats(t, got[name])
		want := km.truncated(3)
		for i := range want {
			want[i] += p.baseVals[name][i]
		}
		if e := frobDiff(g, want) / frob(km.full()); e > 1e-9 {
			t.Errorf("%s: off by %g", name, e)
		}
	}
	for _, name := range []string{"model.layers.0.self_attn.q_proj.bias", "model.norm.weight", "step"} {
		if string(got[name].Data) != string(ft[name].Data) {
			t.Errorf("%s not copied from FT", name)
		}
	}
	reasons := map[string]string{}
	for _, o := range rep.Others {
		reasons[o.Tensor] = o.Reason + "/" + o.Action
	}
	if reasons["step"] != "not floating point/copied" || reasons["model.norm.weight"] != "1-D/copied" {
		t.Errorf("others: %v", reasons)
	}

	// Task vector input, BF16 output, PELA ratio.
	tv := filepath.Join(p.dir, "tv.safetensors")
	name := "model.layers.0.mlp.up_proj.weight"
	km := p.deltas[name]
	writeTensors(t, tv, []spec{{name, weights.F64, []int64{16, 40}, km.full()}})
	out2 := filepath.Join(p.dir, "tv-r.safetensors")
	bf16 := weights.BF16
	rep, err = Compress(context.Background(), openT(t, tv), nil, out2, Options{Rule: Rule{Ratio: 4}, Options: stream.Options{DType: &bf16}})
	if err != nil {
		t.Fatal(err)
	}
	r := RatioRank(16, 40, 4) // ⌊640/224⌋ = 2
	if r != 2 || rep.Modules[0].Rank != r || rep.Modules[0].ParamsAfter != int64(r*56) {
		t.Errorf("ratio rank: %+v", rep.Modules[0])
	}
	g := readAll(t, out2)[name]
	if g.DType != weights.BF16 {
		t.Errorf("dtype %s", g.DType)
	}
	if e := relFrob(floats(t, g), km.truncated(r)); e > 1e-2 {
		t.Errorf("bf16 reconstruction off by %g", e)
	}
}

// TestCompressDeterministic: the randomized path gives the same bytes for
// a seed regardless of the worker count, and --skip leaves tensors alone.
func TestCompressDeterministic(t *testing.T) {
	p := makePair(t, weights.F32, 4)
	run := func(workers int, seed uint64) []byte {
		ad := filepath.Join(p.dir, "ad", string(rune('a'+workers))+string(rune('0'+seed)))
		extract(t, p, ad, Options{Rule: Rule{Rank: 3}, Options: stream.Options{Workers: workers},
			Method: Method{Randomized: true, Rand: RandOptions{Oversample: 2, PowerIters: 1, Seed: seed}},
			Skip:   regexp.MustCompile(`layers\.1\.`)})
		b, err := os.ReadFile(filepath.Join(ad, AdapterWeightsFile))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	a, b, c := run(1, 5), run(2, 5), run(2, 6)
	if string(a) != string(b) {
		t.Error("worker count changed the output")
	}
	if string(a) == string(c) {
		t.Error("seed had no effect")
	}
	if !strings.Contains(string(a), "layers.1.self_attn.q_proj.weight") {
		t.Error("skipped tensor not carried whole")
	}
}

// TestEmbeddingAndFanInFanOut: embeddings get lora_embedding_A/B, and
// --fan-in-fan-out writes factors PEFT merges as (B·A)ᵀ; both round-trip.
func TestEmbeddingAndFanInFanOut(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	dir := t.TempDir()
	base, ft := filepath.Join(dir, "b.safetensors"), filepath.Join(dir, "f.safetensors")
	mk := func(names ...string) (b, f []spec) {
		for _, n := range names {
			w := randVals(rng, 12*5, 1)
			d := randVals(rng, 12*5, 0.1)
			x := make([]float64, len(w))
			for i := range w {
				x[i] = w[i] + d[i]
			}
			b = append(b, spec{n, weights.F64, []int64{12, 5}, w})
			f = append(f, spec{n, weights.F64, []int64{12, 5}, x})
		}
		return
	}
	b, f := mk("transformer.wte.weight", "transformer.h.0.attn.c_attn.weight")
	writeTensors(t, base, b)
	writeTensors(t, ft, f)
	for _, split := range []Split{SplitSqrt, SplitLeft} {
		ad := filepath.Join(dir, "ad"+split.String())
		if _, err := Compress(context.Background(), openT(t, ft), openT(t, base), ad, Options{Rule: Rule{Rank: 5}, Format: FormatLoRA, FanInFanOut: true, Split: split}); err != nil {
			t.Fatal(err)
		}
		got := readAll(t, filepath.Join(ad, AdapterWeightsFile))
		if e := got[PeftPrefix+"transformer.wte.lora_embedding_A"]; !weights.SameShape(e.Shape, []int64{5, 12}) {
			t.Errorf("embedding A shape %v", e.Shape)
		}
		if e := got[PeftPrefix+"transformer.h.0.attn.c_attn.lora_B.weight"]; !weights.SameShape(e.Shape, []int64{5, 5}) {
			t.Errorf("fan-in-fan-out B shape %v", e.Shape)
		}
		a, err := OpenAdapter(ad)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "m"+split.String()+".safetensors")
		if _, err := a.Merge(context.Background(), openT(t, base), out, MergeOptions{Scale: 1}); err != nil {
			t.Fatal(err)
		}
		a.Close()
		m := readAll(t, out)
		for _, s := range f {
			if e := relFrob(floats(t, m[s.name]), s.vals); e > 1e-12 {
				t.Errorf("%s split %s: round trip error %g", s.name, split, e)
			}
		}
	}
}

func TestCompressErrorsAndWarnings(t *testing.T) {
	p := makePair(t, weights.F32, 5)
	// No base: the 1-D bias delta cannot be expressed; a warning says so.
	tv := filepath.Join(p.dir, "tv.safetensors")
	writeTensors(t, tv, []spec{
		{"a.weight", weights.F32, []int64{4, 3}, randVals(rand.New(rand.NewPCG(1, 1)), 12, 1)},
		{"a.bias", weights.F32, []int64{4}, []float64{0, 1, 0, 0}},
		{"b.bias", weights.F32, []int64{2}, []float64{0, 0}},
	})
	rep, err := Compress(context.Background(), openT(t, tv), nil, filepath.Join(p.dir, "tv-ad"), Options{Rule: Rule{Rank: 2}, Format: FormatLoRA})
	if err != nil {
		t.Fatal(err)
	}
	if len(rep.Warnings) != 1 || !strings.Contains(rep.Warnings[0], "a.bias") {
		t.Errorf("warnings %v", rep.Warnings)
	}
	// FT equal to BASE: nothing to write.
	if _, err := Compress(context.Background(), openT(t, p.base), openT(t, p.base), filepath.Join(p.dir, "same"), Options{Rule: Rule{Rank: 2}, Format: FormatLoRA}); err == nil {
		t.Error("empty adapter written")
	}
	// A 2-D tensor with NaN names the tensor.
	bad := filepath.Join(p.dir, "nan.safetensors")
	writeTensors(t, bad, []spec{{"x.weight", weights.F32, []int64{2, 2}, []float64{1, math.NaN(), 0, 1}}})
	_, err = Compress(context.Background(), openT(t, bad), nil, filepath.Join(p.dir, "nan-out.safetensors"), Options{Rule: Rule{Rank: 1}})
	if err == nil || !strings.Contains(err.Error(), `"x.weight"`) || !strings.Contains(err.Error(), "NaN") {
		t.Errorf("NaN: %v", err)
	}
	if _, serr := os.Stat(filepath.Join(p.dir, "nan-out.safetensors")); serr == nil {
		t.Error("output left behind")
	}
	if _, err := Compress(context.Background(), openT(t, p.ft), openT(t, p.base), filepath.Join(p.dir, "x.safetensors"), Options{Rule: Rule{Rank: 1}, Format: FormatLoRA}); err == nil {
		t.Error("lora into a .safetensors path accepted")
	}
	entries, _ := os.ReadDir(p.dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temp file left: %s", e.Name())
		}
	}
}
