package lowrank

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/weightops/weightops/weights"
)

// spec is a tensor to write in a test fixture.
type spec struct {
	name  string
	dt    weights.DType
	shape []int64
	vals  []float64
}

func randVals(rng *rand.Rand, n int, scale float64) []float64 {
	v := make([]float64, n)
	for i := range v {
		v[i] = scale * rng.NormFloat64()
	}
	return v
}

func numel(shape []int64) int {
	n := 1
	for _, d := range shape {
		n *= int(d)
	}
	return n
}

func writeTensors(t *testing.T, path string, specs []spec) {
	t.Helper()
	var ts []weights.Tensor
	for _, s := range specs {
		if len(s.vals) != numel(s.shape) {
			t.Fatalf("%s: %d values for shape %v", s.name, len(s.vals), s.shape)
		}
		data := make([]byte, len(s.vals)*s.dt.Size())
		if err := weights.Encode(s.dt, s.vals, data); err != nil {
			t.Fatal(err)
		}
		ts = append(ts, weights.Tensor{TensorInfo: weights.TensorInfo{Name: s.name, DType: s.dt, Shape: s.shape}, Data: data})
	}
	if err := weights.WriteSafetensors(path, ts, map[string]string{"format": "pt"}); err != nil {
		t.Fatal(err)
	}
}

// readAll decodes every tensor of a checkpoint.
func readAll(t *testing.T, path string) map[string]weights.Tensor {
	t.Helper()
	ck, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	out := map[string]weights.Tensor{}
	for _, info := range ck.Tensors() {
		ten, err := ck.ReadTensor(info.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		out[info.Name] = ten
	}
	return out
}

func floats(t *testing.T, ten weights.Tensor) []float64 {
	t.Helper()
	v, err := ten.Float64s()
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// naiveDelta is s·B·A (out×in) by plain loops, transposed to in×out when
// asked: the reference for every merge check.
func naiveDelta(b, a []float64, out, r, in int, s float64, transpose bool) []float64 {
	d := make([]float64, out*in)
	for i := 0; i < out; i++ {
		for j := 0; j < in; j++ {
			var acc float64
			for k := 0; k < r; k++ {
				acc += b[i*r+k] * a[k*in+j]
			}
			if transpose {
				d[j*out+i] = s * acc
			} else {
				d[i*in+j] = s * acc
			}
		}
	}
	return d
}

// expectClose checks got (decoded from dtype dt) against want rounded once
// to dt, allowing one unit in the last place for summation order.
func expectClose(t *testing.T, name string, dt weights.DType, got, want []float64) {
	t.Helper()
	ulp := map[weights.DType]float64{weights.F32: 0x1p-23, weights.BF16: 0x1p-7, weights.F16: 0x1p-10, weights.F64: 0x1p-50}[dt]
	for i := range want {
		// 1e-12 absolute: float64 sums of O(1) terms in another order.
		if math.Abs(got[i]-want[i]) > ulp*math.Abs(want[i])+1e-12 {
			t.Fatalf("%s[%d] = %.10g, want %.10g", name, i, got[i], want[i])
		}
	}
}

// rounded returns vals as a file of dtype dt holds them.
func rounded(dt weights.DType, vals []float64) []float64 {
	enc := make([]byte, len(vals)*dt.Size())
	weights.Encode(dt, vals, enc)
	out := make([]float64, len(vals))
	weights.Decode(dt, enc, out)
	return out
}

func writeConfig(t *testing.T, dir, js string) {
	t.Helper()
	if err := os.WriteFile(filepath.Join(dir, AdapterConfigFile), []byte(js), 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMergeHandWrittenPEFT merges an adapter laid out as PEFT saves one
// (names, config keys) and checks every tensor against a float64
// computation of W + scale·(alpha/r)·B·A done here with plain loops.
func TestMergeHandWrittenPEFT(t *testing.T) {
	rng := rand.New(rand.NewPCG(21, 22))
	dir := t.TempDir()
	q := "model.layers.0.self_attn.q_proj"
	v := "model.layers.0.self_attn.v_proj"
	q1 := "model.layers.1.self_attn.q_proj"
	emb := "model.embed_tokens"
	conv := "model.conv"
	base := []spec{
		{q + ".weight", weights.F32, []int64{8, 6}, randVals(rng, 48, 1)},
		{v + ".weight", weights.BF16, []int64{8, 6}, randVals(rng, 48, 1)},
		{q1 + ".weight", weights.F64, []int64{8, 6}, randVals(rng, 48, 1)},
		{emb + ".weight", weights.F32, []int64{10, 6}, randVals(rng, 60, 1)},
		{conv + ".weight", weights.F32, []int64{4, 3, 2, 2}, randVals(rng, 48, 1)},
		{"model.norm.weight", weights.F32, []int64{6}, randVals(rng, 6, 1)},
		{"model.layers.0.self_attn.k_proj.weight", weights.F16, []int64{8, 6}, randVals(rng, 48, 1)},
		{"step", weights.I64, []int64{1}, []float64{7}},
	}
	basePath := filepath.Join(dir, "base.safetensors")
	writeTensors(t, basePath, base)

	f32 := func(n int) []float64 { return rounded(weights.F32, randVals(rng, n, 0.5)) }
	qA, qB := f32(2*6), f32(8*2)
	vA, vB := f32(3*6), f32(8*3)
	q1A, q1B := randVals(rng, 2*6, 0.5), randVals(rng, 8*2, 0.5)
	eA, eB := f32(2*10), f32(6*2)
	cA, cB := f32(2*3*2*2), f32(4*2)
	norm := f32(6)
	ad := filepath.Join(dir, "adapter")
	os.Mkdir(ad, 0o755)
	writeTensors(t, filepath.Join(ad, AdapterWeightsFile), []spec{
		{PeftPrefix + q + ".lora_A.weight", weights.F32, []int64{2, 6}, qA},
		{PeftPrefix + q + ".lora_B.weight", weights.F32, []int64{8, 2}, qB},
		// An adapter-name segment, as some PEFT versions save.
		{PeftPrefix + v + ".lora_A.default.weight", weights.F32, []int64{3, 6}, vA},
		{PeftPrefix + v + ".lora_B.default.weight", weights.F32, []int64{8, 3}, vB},
		{PeftPrefix + q1 + ".lora_A.weight", weights.F64, []int64{2, 6}, q1A},
		{PeftPrefix + q1 + ".lora_B.weight", weights.F64, []int64{8, 2}, q1B},
		{PeftPrefix + emb + ".lora_embedding_A", weights.F32, []int64{2, 10}, eA},
		{PeftPrefix + emb + ".lora_embedding_B", weights.F32, []int64{6, 2}, eB},
		{PeftPrefix + conv + ".lora_A.weight", weights.F32, []int64{2, 3, 2, 2}, cA},
		{PeftPrefix + conv + ".lora_B.weight", weights.F32, []int64{4, 2, 1, 1}, cB},
		// modules_to_save: the whole fine-tuned value.
		{PeftPrefix + "model.norm.weight", weights.F32, []int64{6}, norm},
	})
	for _, rslora := range []bool{false, true} {
		writeConfig(t, ad, `{
  "peft_type": "LORA", "r": 2, "lora_alpha": 5,
  "target_modules": ["q_proj", "v_proj", "embed_tokens", "conv"],
  "rank_pattern": {"layers.0.self_attn.v_proj": 3},
  "alpha_pattern": {"v_proj": 12, "layers.1.self_attn.q_proj": 3},
  "use_rslora": `+map[bool]string{false: "false", true: "true"}[rslora]+`,
  "fan_in_fan_out": false, "bias": "none", "modules_to_save": ["norm"],
  "base_model_name_or_path": "tiny", "task_type": "CAUSAL_LM", "lora_dropout": 0.05
}`)
		scaling := func(alpha float64, r int) float64 {
			if rslora {
				return alpha / math.Sqrt(float64(r))
			}
			return alpha / float64(r)
		}
		a, err := OpenAdapter(ad)
		if err != nil {
			t.Fatal(err)
		}
		ck, err := weights.Open(basePath)
		if err != nil {
			t.Fatal(err)
		}
		out := filepath.Join(dir, "merged.safetensors")
		const scale = 0.75
		rep, err := a.Merge(context.Background(), ck, out, MergeOptions{Scale: scale})
		ck.Close()
		a.Close()
		if err != nil {
			t.Fatal(err)
		}
		if len(rep.Modules) != 5 || len(rep.Replaced) != 1 || rep.Copied != 2 {
			t.Errorf("report: %+v", rep)
		}
		got := readAll(t, out)
		add := func(w, d []float64) []float64 {
			o := make([]float64, len(w))
			for i := range w {
				o[i] = w[i] + d[i]
			}
			return o
		}
		check := func(i int, want []float64) {
			t.Helper()
			s := base[i]
			g := got[s.name]
			if g.DType != s.dt {
				t.Fatalf("%s: dtype %s, want %s", s.name, g.DType, s.dt)
			}
			// Round the reference once to the base dtype.
			enc := make([]byte, len(want)*s.dt.Size())
			weights.Encode(s.dt, want, enc)
			ref := make([]float64, len(want))
			weights.Decode(s.dt, enc, ref)
			expectClose(t, s.name, s.dt, floats(t, g), ref)
		}
		// Values as the base file holds them (BF16/F16 rounded).
		bv := func(i int) []float64 {
			return floats(t, readAll(t, basePath)[base[i].name])
		}
		check(0, add(bv(0), naiveDelta(qB, qA, 8, 2, 6, scale*scaling(5, 2), false)))
		check(1, add(bv(1), naiveDelta(vB, vA, 8, 3, 6, scale*scaling(12, 3), false)))
		check(2, add(bv(2), naiveDelta(q1B, q1A, 8, 2, 6, scale*scaling(3, 2), false)))
		// Embedding: W (10×6) += s·(B·A)ᵀ with A 2×10, B 6×2.
		check(3, add(bv(3), naiveDelta(eB, eA, 6, 2, 10, scale*scaling(5, 2), true)))
		// Conv: W (4×3×2×2) += s·B(4×2)·A(2×12) reshaped.
		check(4, add(bv(4), naiveDelta(cB, cA, 4, 2, 12, scale*scaling(5, 2), false)))
		check(5, norm)
		for _, i := range []int{6, 7} {
			ref := readAll(t, basePath)[base[i].name]
			if string(got[base[i].name].Data) != string(ref.Data) {
				t.Errorf("%s not copied byte for byte", base[i].name)
			}
		}
	}
}

// TestMergeFanInFanOut: GPT-2 Conv1D weights are [in, out]; PEFT merges
// (B·A)ᵀ; the target list is a regex string here.
func TestMergeFanInFanOut(t *testing.T) {
	rng := rand.New(rand.NewPCG(23, 24))
	dir := t.TempDir()
	w := randVals(rng, 6*12, 1)
	basePath := filepath.Join(dir, "gpt2.safetensors")
	writeTensors(t, basePath, []spec{
		{"transformer.h.0.attn.c_attn.weight", weights.F32, []int64{6, 12}, w},
		{"transformer.h.0.attn.c_attn.bias", weights.F32, []int64{12}, randVals(rng, 12, 1)},
	})
	w = rounded(weights.F32, w)
	A, B := rounded(weights.F32, randVals(rng, 4*6, 1)), rounded(weights.F32, randVals(rng, 12*4, 1))
	bias := rounded(weights.F32, randVals(rng, 12, 1))
	ad := filepath.Join(dir, "ad")
	os.Mkdir(ad, 0o755)
	writeTensors(t, filepath.Join(ad, AdapterWeightsFile), []spec{
		{PeftPrefix + "transformer.h.0.attn.c_attn.lora_A.weight", weights.F32, []int64{4, 6}, A},
		{PeftPrefix + "transformer.h.0.attn.c_attn.lora_B.weight", weights.F32, []int64{12, 4}, B},
		{PeftPrefix + "transformer.h.0.attn.c_attn.bias", weights.F32, []int64{12}, bias},
	})
	writeConfig(t, ad, `{"peft_type": "LORA", "r": 4, "lora_alpha": 8, "target_modules": ".*\\.c_attn", "fan_in_fan_out": true, "use_rslora": true, "bias": "all"}`)
	a, err := OpenAdapter(ad)
	if err != nil {
		t.Fatal(err)
	}
	defer a.Close()
	ck, _ := weights.Open(basePath)
	defer ck.Close()
	out := filepath.Join(dir, "out")
	rep, err := a.Merge(context.Background(), ck, out, MergeOptions{Scale: 1})
	if err != nil {
		t.Fatal(err)
	}
	if rep.Modules[0].Layout != "fan_in_fan_out" || rep.Modules[0].Scaling != 8/2.0 {
		t.Errorf("report %+v", rep.Modules)
	}
	got := readAll(t, filepath.Join(out, "model.safetensors"))
	d := naiveDelta(B, A, 12, 4, 6, 8/math.Sqrt(4), true)
	want := make([]float64, len(w))
	for i := range w {
		want[i] = float64(float32(w[i] + d[i]))
	}
	expectClose(t, "c_attn", weights.F32, floats(t, got["transformer.h.0.attn.c_attn.weight"]), want)
	gb := floats(t, got["transformer.h.0.attn.c_attn.bias"])
	for i := range bias {
		if gb[i] != bias[i] {
			t.Fatalf("bias[%d] = %g, want %g", i, gb[i], bias[i])
		}
	}
}

// TestMergeErrors: bad adapters and mismatches give one error naming the
// file and tensor, and leave no output behind.
func TestMergeErrors(t *testing.T) {
	rng := rand.New(rand.NewPCG(25, 26))
	dir := t.TempDir()
	basePath := filepath.Join(dir, "base.safetensors")
	writeTensors(t, basePath, []spec{
		{"m.q_proj.weight", weights.F32, []int64{8, 6}, randVals(rng, 48, 1)},
		{"m.ids", weights.I64, []int64{2}, []float64{1, 2}},
	})
	good := []spec{
		{PeftPrefix + "m.q_proj.lora_A.weight", weights.F32, []int64{2, 6}, randVals(rng, 12, 1)},
		{PeftPrefix + "m.q_proj.lora_B.weight", weights.F32, []int64{8, 2}, randVals(rng, 16, 1)},
	}
	goodCfg := `{"peft_type": "LORA", "r": 2, "lora_alpha": 2, "target_modules": ["q_proj"]}`
	for i, tc := range []struct {
		name    string
		tensors []spec
		cfg     string
		want    []string
	}{
		{"bad json", good, `{"r": 2,`, []string{AdapterConfigFile, "not a JSON object"}},
		{"wrong type", good, `{"r": [2]}`, []string{AdapterConfigFile, "r:"}},
		{"not lora", good, `{"peft_type": "PREFIX_TUNING"}`, []string{"peft_type"}},
		{"dora", good, `{"r": 2, "use_dora": true}`, []string{"use_dora"}},
		{"rank mismatch", good, `{"r": 4}`, []string{"lora_A.weight", "rank 2", "rank 4"}},
		{"not targeted", good, `{"r": 2, "target_modules": ["v_proj"]}`, []string{"target_modules", "m.q_proj"}},
		{"missing B", good[:1], goodCfg, []string{"no matching lora_B"}},
		{"missing base tensor", []spec{
			{PeftPrefix + "m.k_proj.lora_A.weight", weights.F32, []int64{2, 6}, randVals(rng, 12, 1)},
			{PeftPrefix + "m.k_proj.lora_B.weight", weights.F32, []int64{8, 2}, randVals(rng, 16, 1)},
		}, `{"r": 2}`, []string{"m.k_proj.weight", "base"}},
		{"shape mismatch", []spec{
			{PeftPrefix + "m.q_proj.lora_A.weight", weights.F32, []int64{2, 7}, randVals(rng, 14, 1)},
			{PeftPrefix + "m.q_proj.lora_B.weight", weights.F32, []int64{8, 2}, randVals(rng, 16, 1)},
		}, goodCfg, []string{"m.q_proj.weight", "[8, 6]", "[8, 7]"}},
		{"B/A rank mismatch", []spec{
			good[0],
			{PeftPrefix + "m.q_proj.lora_B.weight", weights.F32, []int64{8, 3}, randVals(rng, 24, 1)},
		}, goodCfg, []string{"lora_B", "rank 2"}},
		{"whole tensor shape", append(good[:2:2], spec{PeftPrefix + "m.ids", weights.I64, []int64{3}, []float64{1, 2, 3}}), goodCfg, []string{"m.ids", "[3]"}},
		{"unknown variant", append(good[:2:2], spec{PeftPrefix + "m.q_proj.lora_magnitude_vector", weights.F32, []int64{8}, randVals(rng, 8, 1)}), goodCfg, []string{"lora_magnitude_vector"}},
		{"several adapters", []spec{
			{PeftPrefix + "m.q_proj.lora_A.one.weight", weights.F32, []int64{2, 6}, randVals(rng, 12, 1)},
			{PeftPrefix + "m.q_proj.lora_B.two.weight", weights.F32, []int64{8, 2}, randVals(rng, 16, 1)},
		}, goodCfg, []string{"several adapters"}},
	} {
		ad := filepath.Join(dir, "ad"+string(rune('a'+i)))
		os.Mkdir(ad, 0o755)
		writeTensors(t, filepath.Join(ad, AdapterWeightsFile), tc.tensors)
		writeConfig(t, ad, tc.cfg)
		out := filepath.Join(dir, "out"+string(rune('a'+i))+".safetensors")
		err := func() error {
			a, err := OpenAdapter(ad)
			if err != nil {
				return err
			}
			defer a.Close()
			ck, _ := weights.Open(basePath)
			defer ck.Close()
			_, err = a.Merge(context.Background(), ck, out, MergeOptions{Scale: 1})
			return err
		}()
		if err == nil {
			t.Errorf("%s: merged", tc.name)
			continue
		}
		for _, w := range tc.want {
			if !strings.Contains(err.Error(), w) {
				t.Errorf("%s: error %q lacks %q", tc.name, err, w)
			}
		}
		if _, serr := os.Stat(out); serr == nil {
			t.Errorf("%s: output left behind", tc.name)
		}
	}
	if _, err := OpenAdapter(filepath.Join(dir, "nope")); err == nil {
		t.Error("missing adapter dir accepted")
	}
	empty := filepath.Join(dir, "empty")
	os.Mkdir(empty, 0o755)
	if _, err := OpenAdapter(empty); err == nil || !strings.Contains(err.Error(), AdapterWeightsFile) {
		t.Errorf("empty adapter dir: %v", err)
	}
}
