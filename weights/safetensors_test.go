package weights

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"

	refst "github.com/nlpodyssey/safetensors"
)

// TestWriterMatchesOfficialLayout checks a small file against bytes laid
// out by hand from the format spec and the Rust serializer's rules:
// __metadata__ first, tensors by descending dtype then name, offsets
// contiguous, header padded with spaces to a multiple of 8.
func TestWriterMatchesOfficialLayout(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "x.safetensors")
	err := WriteSafetensors(p, []Tensor{
		{TensorInfo{"c", I8, []int64{}}, []byte{0xff}},
		{TensorInfo{"a", BF16, []int64{1}}, []byte{0x80, 0x3f}},
		{TensorInfo{"b", F32, []int64{2}}, []byte{0, 0, 0x80, 0x3f, 0, 0, 0, 0x40}},
	}, map[string]string{"format": "pt"})
	if err != nil {
		t.Fatal(err)
	}
	json := `{"__metadata__":{"format":"pt"},` +
		`"b":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},` +
		`"a":{"dtype":"BF16","shape":[1],"data_offsets":[8,10]},` +
		`"c":{"dtype":"I8","shape":[],"data_offsets":[10,11]}}` + "       " // 193 + 7 = 200
	want := append([]byte{200, 0, 0, 0, 0, 0, 0, 0}, json...)
	want = append(want, 0, 0, 0x80, 0x3f, 0, 0, 0, 0x40, 0x80, 0x3f, 0xff)
	got, _ := os.ReadFile(p)
	if !bytes.Equal(got, want) {
		t.Fatalf("layout differs\n got %q\nwant %q", got, want)
	}
	// No temp file left beside it.
	if ents, _ := os.ReadDir(dir); len(ents) != 1 {
		t.Errorf("directory holds %d entries, want only the output", len(ents))
	}
}

func randomTensor(rng *rand.Rand, name string, dt DType, shape []int64) Tensor {
	ti := TensorInfo{Name: name, DType: dt, Shape: shape}
	n, _ := ti.ByteSize()
	data := make([]byte, n)
	for i := range data {
		data[i] = byte(rng.UintN(256))
	}
	if dt == Bool {
		for i := range data {
			data[i] &= 1
		}
	}
	return Tensor{ti, data}
}

// TestRoundTripEveryDType: write → read is byte-identical for every dtype
// (NaN payloads included, since the bytes are random), and an independent
// reader (nlpodyssey/safetensors) sees the same tensors.
func TestRoundTripEveryDType(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 8))
	var ts []Tensor
	for i, dt := range AllDTypes() {
		if !dt.InSafetensors() {
			continue
		}
		ts = append(ts, randomTensor(rng, fmt.Sprintf("layers.%d.w", i), dt, []int64{3, int64(i + 1)}))
	}
	ts = append(ts, randomTensor(rng, "scalar", F32, []int64{}), randomTensor(rng, "empty", BF16, []int64{0, 4}),
		randomTensor(rng, `odd "name" <&> ü`, F16, []int64{5}))
	p := filepath.Join(t.TempDir(), "all.safetensors")
	md := map[string]string{"format": "pt", "note": "<x> & \"y\""}
	if err := WriteSafetensors(p, ts, md); err != nil {
		t.Fatal(err)
	}
	c, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if got := c.Metadata(); len(got) != 2 || got["note"] != md["note"] {
		t.Errorf("metadata = %v", got)
	}
	if len(c.Tensors()) != len(ts) {
		t.Fatalf("%d tensors read, %d written", len(c.Tensors()), len(ts))
	}
	// The independent reader predates the F8 dtypes: give it a file without.
	var noF8 []Tensor
	for _, w := range ts {
		if w.DType != F8E4M3 && w.DType != F8E5M2 {
			noF8 = append(noF8, w)
		}
	}
	p2 := filepath.Join(t.TempDir(), "nof8.safetensors")
	if err := WriteSafetensors(p2, noF8, md); err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(p2)
	ref, err := refst.Deserialize(raw)
	if err != nil {
		t.Fatalf("independent reader rejects our file: %v", err)
	}
	for _, w := range ts {
		got, err := c.ReadTensor(w.Name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got.DType != w.DType || !SameShape(got.Shape, w.Shape) || !bytes.Equal(got.Data, w.Data) {
			t.Errorf("%s: read back %v %v, wrote %v %v", w.Name, got.DType, got.Shape, w.DType, w.Shape)
		}
		if w.DType == F8E4M3 || w.DType == F8E5M2 {
			continue
		}
		rv, ok := ref.Tensor(w.Name)
		if !ok || rv.DType().String() != w.DType.String() || !bytes.Equal(rv.Data(), w.Data) {
			t.Errorf("%s: independent reader disagrees", w.Name)
		}
	}
	if _, err := c.ReadTensor("nope", nil); !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), p) {
		t.Errorf("missing tensor error = %v", err)
	}
}

// buildRaw assembles a safetensors file from a header string and data.
func buildRaw(header string, data []byte) []byte {
	b := make([]byte, 8, 8+len(header)+len(data))
	binary.LittleEndian.PutUint64(b, uint64(len(header)))
	return append(append(b, header...), data...)
}

func TestBadSafetensorsInput(t *testing.T) {
	good := `{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`
	huge := make([]byte, 8)
	binary.LittleEndian.PutUint64(huge, 200_000_000)
	beyond := make([]byte, 16)
	binary.LittleEndian.PutUint64(beyond, 1000)
	cases := []struct {
		name   string
		raw    []byte
		want   string // substring of the error
		tensor string // tensor the error must name, if any
	}{
		{"empty", nil, "too small", ""},
		{"header over 100MB", append(huge, make([]byte, 64)...), "limit", ""},
		{"header beyond file", beyond, "beyond the end", ""},
		{"not json", buildRaw("hello world!", nil), "not a JSON object", ""},
		{"broken json", buildRaw(`{"a":{"dtype":"F32"`, nil), "", ""},
		{"not utf8", buildRaw("{\"\xff\":1}", nil), "UTF-8", ""},
		{"trailing", buildRaw(good+`{}`, make([]byte, 8)), "trailing", ""},
		{"unknown dtype", buildRaw(`{"a":{"dtype":"F128","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "unknown dtype", "a"},
		{"lowercase dtype", buildRaw(`{"a":{"dtype":"f32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)), "unknown dtype", "a"},
		{"missing offsets", buildRaw(`{"a":{"dtype":"F32","shape":[2]}}`, make([]byte, 8)), "data_offsets", "a"},
		{"negative dim", buildRaw(`{"a":{"dtype":"F32","shape":[-2],"data_offsets":[0,8]}}`, make([]byte, 8)), "invalid header entry", "a"},
		{"size mismatch", buildRaw(`{"a":{"dtype":"F32","shape":[3],"data_offsets":[0,8]}}`, make([]byte, 8)), "12 bytes", "a"},
		{"out of bounds", buildRaw(`{"a":{"dtype":"F32","shape":[4],"data_offsets":[0,16]}}`, make([]byte, 8)), "data buffer holds 8", ""},
		{"gap", buildRaw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)), "not contiguous", "a"},
		{"overlap", buildRaw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]},"b":{"dtype":"F32","shape":[2],"data_offsets":[4,12]}}`, make([]byte, 12)), "not contiguous", "b"},
		{"reversed", buildRaw(`{"a":{"dtype":"F32","shape":[0],"data_offsets":[8,0]}}`, make([]byte, 8)), "not contiguous", "a"},
		{"overflow", buildRaw(`{"a":{"dtype":"F32","shape":[4611686018427387904,4611686018427387904],"data_offsets":[0,8]}}`, make([]byte, 8)), "overflows", "a"},
		{"offset overflow", buildRaw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,18446744073709551615]}}`, make([]byte, 8)), "out of range", "a"},
		{"duplicate", buildRaw(`{"a":{"dtype":"U8","shape":[1],"data_offsets":[0,1]},"a":{"dtype":"U8","shape":[1],"data_offsets":[1,2]}}`, make([]byte, 2)), "twice", "a"},
		{"bad metadata", buildRaw(`{"__metadata__":{"k":1}}`, nil), "__metadata__", ""},
		{"truncated data", buildRaw(good, make([]byte, 5)), "data buffer holds 5", ""},
		{"padding after data", buildRaw(good, make([]byte, 9)), "data buffer holds 9", ""},
	}
	dir := t.TempDir()
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p := filepath.Join(dir, strings.ReplaceAll(c.name, " ", "_")+".safetensors")
			if err := os.WriteFile(p, c.raw, 0o644); err != nil {
				t.Fatal(err)
			}
			ck, err := OpenSafetensors(p)
			if err == nil {
				ck.Close()
				t.Fatal("accepted")
			}
			msg := err.Error()
			if !strings.HasPrefix(msg, p+": ") || strings.Contains(msg, "\n") {
				t.Errorf("error %q should be one line starting with the file name", msg)
			}
			if !strings.Contains(msg, c.want) {
				t.Errorf("error %q lacks %q", msg, c.want)
			}
			if c.tensor != "" && !strings.Contains(msg, fmt.Sprintf("tensor %q", c.tensor)) {
				t.Errorf("error %q does not name tensor %q", msg, c.tensor)
			}
		})
	}
}

func TestEmptyFileAndMetadataOnly(t *testing.T) {
	p := filepath.Join(t.TempDir(), "e.safetensors")
	if err := WriteSafetensors(p, nil, map[string]string{"k": "v"}); err != nil {
		t.Fatal(err)
	}
	c, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if len(c.Tensors()) != 0 || c.Metadata()["k"] != "v" {
		t.Errorf("got %v %v", c.Tensors(), c.Metadata())
	}
}

func TestWriterRefusesIncompleteOutput(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "out.safetensors")
	w, err := CreateSafetensors(p, []TensorInfo{{"a", F32, []int64{2}}, {"b", F32, []int64{1}}}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("a", make([]byte, 7)); err == nil {
		t.Error("short data accepted")
	}
	if err := w.WriteTensor("zzz", make([]byte, 4)); err == nil {
		t.Error("undeclared tensor accepted")
	}
	if err := w.WriteTensor("a", make([]byte, 8)); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensor("a", make([]byte, 8)); err == nil {
		t.Error("tensor written twice accepted")
	}
	if err := w.Commit(); err == nil || !strings.Contains(err.Error(), `"b"`) {
		t.Errorf("commit with a missing tensor: %v", err)
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("failed write left %d files behind", len(ents))
	}
	// Abort leaves nothing, and a later Commit is refused.
	w, _ = CreateSafetensors(p, []TensorInfo{{"a", U8, []int64{1}}}, nil)
	_ = w.WriteTensor("a", []byte{1})
	w.Abort()
	if err := w.Commit(); err == nil {
		t.Error("commit after abort succeeded")
	}
	if ents, _ := os.ReadDir(dir); len(ents) != 0 {
		t.Errorf("abort left %d files behind", len(ents))
	}
}

func TestShardedWriteAndRead(t *testing.T) {
	rng := rand.New(rand.NewPCG(9, 9))
	var ts []Tensor
	var infos []TensorInfo
	for i := 0; i < 12; i++ {
		tn := randomTensor(rng, fmt.Sprintf("model.layers.%d.w", i), []DType{BF16, F32, I64}[i%3], []int64{10, 10})
		ts = append(ts, tn)
		infos = append(infos, tn.TensorInfo)
	}
	dir := filepath.Join(t.TempDir(), "out")
	sw, err := CreateSharded(dir, infos, map[string]string{"format": "pt"}, 500)
	if err != nil {
		t.Fatal(err)
	}
	for i := len(ts) - 1; i >= 0; i-- { // any order
		if err := sw.WriteTensor(ts[i].Name, ts[i].Data); err != nil {
			t.Fatal(err)
		}
	}
	if err := sw.Commit(); err != nil {
		t.Fatal(err)
	}
	// Greedy plan by hand: sizes in layer order cycle 200, 400, 800 bytes;
	// with a 500-byte limit no two neighbours fit together (200+400 > 500),
	// so every tensor gets its own shard.
	ents, _ := os.ReadDir(dir)
	if len(ents) != 13 {
		t.Fatalf("%d files, want 12 shards + index", len(ents))
	}
	if _, err := os.Stat(filepath.Join(dir, "model-00012-of-00012.safetensors")); err != nil {
		t.Error(err)
	}
	for _, open := range []string{dir, filepath.Join(dir, IndexName)} {
		c, err := Open(open)
		if err != nil {
			t.Fatal(err)
		}
		if len(c.Tensors()) != len(ts) || c.Tensors()[2].Name != "model.layers.2.w" || c.Tensors()[10].Name != "model.layers.10.w" {
			t.Errorf("tensor order %v", c.Tensors())
		}
		for _, w := range ts {
			got, err := c.ReadTensor(w.Name, nil)
			if err != nil || !bytes.Equal(got.Data, w.Data) {
				t.Errorf("%s: %v", w.Name, err)
			}
		}
		if c.Metadata()["format"] != "pt" || c.Metadata()["total_size"] != "5600" {
			t.Errorf("metadata %v", c.Metadata())
		}
		c.Close()
	}
	idx, _ := os.ReadFile(filepath.Join(dir, IndexName))
	if !bytes.HasPrefix(idx, []byte("{\n  \"metadata\": {\n    \"total_size\": 5600\n  },\n  \"weight_map\": {\n    \"model.layers.0.w\": \"model-00001-of-00012.safetensors\"")) {
		t.Errorf("index layout:\n%s", idx)
	}
}

func TestPlanShardsGreedy(t *testing.T) {
	infos := []TensorInfo{{"l.1", U8, []int64{3}}, {"l.2", U8, []int64{3}}, {"l.3", U8, []int64{5}}, {"l.4", U8, []int64{1}}, {"l.10", U8, []int64{2}}}
	// Natural order: l.1(3) l.2(3) l.3(5) l.4(1) l.10(2), limit 6:
	// [l.1 l.2] [l.3 l.4] [l.10]
	g := PlanShards(infos, 6)
	var got []string
	for _, s := range g {
		var names []string
		for _, t := range s {
			names = append(names, t.Name)
		}
		got = append(got, strings.Join(names, "+"))
	}
	if strings.Join(got, " ") != "l.1+l.2 l.3+l.4 l.10" {
		t.Errorf("plan = %v", got)
	}
}

func TestBadShardIndex(t *testing.T) {
	dir := t.TempDir()
	if err := WriteSafetensors(filepath.Join(dir, "s1.safetensors"), []Tensor{{TensorInfo{"a", U8, []int64{1}}, []byte{1}}, {TensorInfo{"b", U8, []int64{1}}, []byte{2}}}, nil); err != nil {
		t.Fatal(err)
	}
	cases := map[string]struct{ index, want string }{
		"missing shard":   {`{"weight_map":{"a":"s1.safetensors","b":"s2.safetensors"}}`, "missing shard s2.safetensors"},
		"listed twice":    {`{"weight_map":{"a":"s1.safetensors","a":"s1.safetensors","b":"s1.safetensors"}}`, "listed twice"},
		"absent tensor":   {`{"weight_map":{"a":"s1.safetensors","b":"s1.safetensors","c":"s1.safetensors"}}`, `tensor "c": listed in weight_map but absent`},
		"unlisted tensor": {`{"weight_map":{"a":"s1.safetensors"}}`, `tensor "b": present in the shard but not in the weight_map`},
		"escaping path":   {`{"weight_map":{"a":"../s1.safetensors"}}`, "beside the index"},
		"no weight_map":   {`{"metadata":{}}`, "weight_map"},
		"bad json":        {`{"weight_map":`, "invalid index JSON"},
	}
	for name, c := range cases {
		p := filepath.Join(dir, strings.ReplaceAll(name, " ", "_")+".index.json")
		os.WriteFile(p, []byte(c.index), 0o644)
		ck, err := Open(p)
		if err == nil {
			ck.Close()
			t.Errorf("%s: accepted", name)
			continue
		}
		if !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %q lacks %q", name, err, c.want)
		}
	}
	// Two unindexed files in a directory holding the same tensor.
	if err := WriteSafetensors(filepath.Join(dir, "s2.safetensors"), []Tensor{{TensorInfo{"a", U8, []int64{1}}, []byte{3}}}, nil); err != nil {
		t.Fatal(err)
	}
	for _, e := range []string{"missing_shard", "listed_twice", "absent_tensor", "unlisted_tensor", "escaping_path", "no_weight_map", "bad_json"} {
		os.Remove(filepath.Join(dir, e+".index.json"))
	}
	if _, err := Open(dir); err == nil || !strings.Contains(err.Error(), "present in both") {
		t.Errorf("duplicate across files: %v", err)
	}
}

func TestNaturalLess(t *testing.T) {
	in := []string{"layers.10.w", "layers.9.w", "layers.1.w", "embed", "layers.02.w", "layers.2.w", "lm_head"}
	infos := make([]TensorInfo, len(in))
	for i, n := range in {
		infos[i].Name = n
	}
	SortNatural(infos)
	var got []string
	for _, t := range infos {
		got = append(got, t.Name)
	}
	want := "embed layers.1.w layers.2.w layers.02.w layers.9.w layers.10.w lm_head"
	if strings.Join(got, " ") != want {
		t.Errorf("got %v", got)
	}
}

func TestParseBytes(t *testing.T) {
	for s, want := range map[string]int64{"5GB": 5e9, "500MiB": 500 << 20, "1.5G": 1.5e9, "1024": 1024, "10 KB": 10000} {
		if got, err := ParseBytes(s); err != nil || got != want {
			t.Errorf("ParseBytes(%q) = %d, %v; want %d", s, got, err, want)
		}
	}
	for _, s := range []string{"", "GB", "-5GB", "5XB"} {
		if _, err := ParseBytes(s); err == nil {
			t.Errorf("ParseBytes(%q) accepted", s)
		}
	}
}

func TestComputeStatsAgainstTwoPass(t *testing.T) {
	rng := rand.New(rand.NewPCG(5, 5))
	vals := make([]float64, 10007) // spans several decode chunks
	for i := range vals {
		vals[i] = 1000 + rng.NormFloat64()*0.01 // large mean: naive sumsq cancels
	}
	vals[17], vals[5000] = math.NaN(), math.Inf(-1)
	data := make([]byte, 8*len(vals))
	_ = Encode(F64, vals, data)
	s, err := ComputeStats(Tensor{TensorInfo{"x", F64, []int64{int64(len(vals))}}, data})
	if err != nil {
		t.Fatal(err)
	}
	var sum, n float64
	mn, mx := math.Inf(1), math.Inf(-1)
	for _, v := range vals {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			sum += v
			n++
			mn, mx = math.Min(mn, v), math.Max(mx, v)
		}
	}
	mean := sum / n
	var ss float64
	for _, v := range vals {
		if !math.IsNaN(v) && !math.IsInf(v, 0) {
			ss += (v - mean) * (v - mean)
		}
	}
	std := math.Sqrt(ss / n)
	if s.NaN != 1 || s.Inf != 1 || s.Min != mn || s.Max != mx || math.Abs(s.Mean-mean) > 1e-12*mean || math.Abs(s.Std-std) > 1e-9*std {
		t.Errorf("stats %+v, want mean %v std %v min %v max %v", s, mean, std, mn, mx)
	}
}

// TestOpenSniffsSafetensorsBeforePickle: a header length of 0x280 makes a
// safetensors file start with 0x80 0x02, the opening of a pickle; Open must
// still read it as safetensors.
func TestOpenSniffsSafetensorsBeforePickle(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	for pad := 0; pad < 700; pad++ {
		md := map[string]string{"k": strings.Repeat("x", pad)}
		hdr, _, _ := EncodeSafetensorsHeader([]TensorInfo{{"a", U8, []int64{1}}}, md)
		if len(hdr) != 8+0x280 {
			continue
		}
		if err := WriteSafetensors(p, []Tensor{{TensorInfo{"a", U8, []int64{1}}, []byte{7}}}, md); err != nil {
			t.Fatal(err)
		}
		raw, _ := os.ReadFile(p)
		if raw[0] != 0x80 || raw[1] != 0x02 {
			t.Fatalf("test setup: header starts %x", raw[:2])
		}
		c, err := Open(p)
		if err != nil {
			t.Fatal(err)
		}
		c.Close()
		return
	}
	t.Fatal("no padding gave a 0x280 header")
}

// TestWriterTakesTensorsInParts: parts in any order make the same file as
// whole writes; overruns, a part after the whole, a whole after a part
// and a tensor missing a part are refused.
func TestWriterTakesTensorsInParts(t *testing.T) {
	dir := t.TempDir()
	infos := []TensorInfo{{"a", U8, []int64{6}}, {"b", U8, []int64{3}}}
	whole := filepath.Join(dir, "whole.safetensors")
	if err := WriteSafetensors(whole, []Tensor{{infos[0], []byte{1, 2, 3, 4, 5, 6}}, {infos[1], []byte{7, 8, 9}}}, nil); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "parts.safetensors")
	w, err := CreateSafetensors(p, infos, nil)
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		name string
		data []byte
		off  int64
	}{{"a", []byte{5, 6}, 4}, {"b", []byte{7, 8, 9}, 0}, {"a", []byte{1, 2, 3, 4}, 0}} {
		if err := w.WriteTensorAt(c.name, c.data, c.off); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.WriteTensorAt("a", []byte{1}, 0); err == nil {
		t.Error("a part of a complete tensor accepted")
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(whole)
	b, _ := os.ReadFile(p)
	if !bytes.Equal(a, b) {
		t.Error("parts give a different file than whole writes")
	}
	w, _ = CreateSafetensors(p, infos, nil)
	defer w.Abort()
	if err := w.WriteTensorAt("a", []byte{1, 2, 3}, 4); err == nil {
		t.Error("a part past the end accepted")
	}
	if err := w.WriteTensorAt("a", []byte{1}, -1); err == nil {
		t.Error("a negative offset accepted")
	}
	if err := w.WriteTensorAt("a", []byte{1, 2, 3, 4, 5}, 0); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteTensorAt("a", []byte{1, 2}, 4); err == nil {
		t.Error("parts adding up past the size accepted")
	}
	if err := w.WriteTensor("a", make([]byte, 6)); err == nil {
		t.Error("a whole write after a part accepted")
	}
	if err := w.WriteTensor("b", []byte{7, 8, 9}); err != nil {
		t.Fatal(err)
	}
	if err := w.Commit(); err == nil || !strings.Contains(err.Error(), `"a"`) {
		t.Errorf("commit with a part missing: %v", err)
	}
}

// TestShardedAbortRemovesMadeDir: an aborted sharded writer removes the
// directory it created, and leaves one that was there (and what is in it).
func TestShardedAbortRemovesMadeDir(t *testing.T) {
	infos := []TensorInfo{{Name: "a", DType: F32, Shape: []int64{4}}}
	made := filepath.Join(t.TempDir(), "new")
	w, err := CreateSharded(made, infos, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, err := os.Stat(made); !os.IsNotExist(err) {
		t.Errorf("directory made for the writer left after Abort (%v)", err)
	}
	there := t.TempDir()
	os.WriteFile(filepath.Join(there, "keep.txt"), []byte("x"), 0o644)
	w, err = CreateSharded(there, infos, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	w.Abort()
	if _, err := os.Stat(filepath.Join(there, "keep.txt")); err != nil {
		t.Errorf("Abort touched a file it did not write: %v", err)
	}
	empty := t.TempDir()
	w, _ = CreateSharded(empty, infos, nil, 0)
	w.Abort()
	if _, err := os.Stat(empty); err != nil {
		t.Errorf("Abort removed a directory that was there: %v", err)
	}
}

// TestWriterRefusesOversizedHeader: a header past MaxHeaderSize (what the
// reader and the official library accept) is refused before any file is
// made; one just under it is written and read back.
func TestWriterRefusesOversizedHeader(t *testing.T) {
	d := t.TempDir()
	p := filepath.Join(d, "big.safetensors")
	ts := []Tensor{{TensorInfo: TensorInfo{Name: "w", DType: F32, Shape: []int64{1}}, Data: make([]byte, 4)}}
	err := WriteSafetensors(p, ts, map[string]string{"k": strings.Repeat("x", MaxHeaderSize)})
	if err == nil || !strings.Contains(err.Error(), "limit") {
		t.Fatalf("oversized header: %v", err)
	}
	if ents, _ := os.ReadDir(d); len(ents) != 0 {
		t.Fatalf("left %v", ents)
	}
	if err := WriteSafetensors(p, ts, map[string]string{"k": strings.Repeat("x", MaxHeaderSize-200)}); err != nil {
		t.Fatal(err)
	}
	c, err := Open(p)
	if err != nil {
		t.Fatal(err)
	}
	c.Close()
}

// Flush before a header rewrite and Commit (a merge's order: tensors,
// flush while the inputs are hashed, the hashes into the header, commit)
// leaves the rewritten header and the data, single-file and sharded; a
// flush after commit is an error.
func TestFlushThenRewriteThenCommit(t *testing.T) {
	for _, shard := range []int64{0, 8} {
		dir := t.TempDir()
		out := filepath.Join(dir, "model.safetensors")
		if shard > 0 {
			out = filepath.Join(dir, "sharded")
		}
		infos := []TensorInfo{{"a", F32, []int64{2}}, {"b", F32, []int64{2}}}
		w, _, err := CreateOutput(out, infos, map[string]string{"h": "xxxx"}, shard)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			if err := w.WriteTensor(in.Name, []byte{1, 2, 3, 4, 5, 6, 7, 8}); err != nil {
				t.Fatal(err)
			}
		}
		f := w.(interface{ Flush() error })
		r := w.(interface {
			RewriteMetadata(map[string]string) error
		})
		if err := f.Flush(); err != nil {
			t.Fatal(err)
		}
		if err := r.RewriteMetadata(map[string]string{"h": "done"}); err != nil {
			t.Fatal(err)
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		if err := f.Flush(); err == nil {
			t.Fatal("Flush after Commit: no error")
		}
		c, err := Open(out)
		if err != nil {
			t.Fatal(err)
		}
		if got := c.Metadata()["h"]; got != "done" {
			t.Fatalf("shard %d: metadata h = %q, want the rewritten %q", shard, got, "done")
		}
		tb, err := c.ReadTensor("b", nil)
		c.Close()
		if err != nil || !bytes.Equal(tb.Data, []byte{1, 2, 3, 4, 5, 6, 7, 8}) {
			data := tb.Data
			t.Fatalf("shard %d: tensor b = %v, %v", shard, data, err)
		}
	}
}
