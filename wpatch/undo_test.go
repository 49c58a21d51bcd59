package wpatch

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/klauspost/compress/zstd"

	"github.com/weightops/weightops/stream"
	"github.com/weightops/weightops/weights"
)

// encodeUndo writes undo records of the first format (MetaUndo), as
// builds before format 2 did, to test that they are still read.
func encodeUndo(recs []undoRecord) string {
	sort.Slice(recs, func(i, j int) bool { return recs[i].name < recs[j].name })
	var b bytes.Buffer
	for _, r := range recs {
		if len(r.indices) == 0 {
			continue
		}
		b.Write(binary.AppendUvarint(nil, uint64(len(r.name))))
		b.WriteString(r.name)
		b.Write(binary.AppendUvarint(nil, uint64(len(r.indices))))
		prev := int64(0)
		for _, i := range r.indices {
			b.Write(binary.AppendUvarint(nil, uint64(i-prev)))
			prev = i
		}
		b.Write(r.orig)
	}
	zw, _ := zstd.NewWriter(nil, zstd.WithEncoderConcurrency(1))
	return base64.StdEncoding.EncodeToString(zw.EncodeAll(b.Bytes(), nil))
}

// undoFixture is a BF16 model and a patch large enough to need many undo
// records (its values as large as the weights').
func undoFixture(t *testing.T) (d, mp string, patches []*Patch) {
	t.Helper()
	d = t.TempDir()
	mp = filepath.Join(d, "model.safetensors")
	randModel(t, mp, weights.BF16, 5)
	model, _ := weights.Open(mp)
	defer model.Close()
	pp := filepath.Join(d, "a.wpatch")
	randPatch(t, pp, model, 4, Encoding{})
	return d, mp, openPatches(t, pp)
}

func applyTo(t *testing.T, mp string, patches []*Patch, out string, o ApplyOptions) *ApplyReport {
	t.Helper()
	model, _ := weights.Open(mp)
	defer model.Close()
	rep, err := Apply(context.Background(), model, patches, out, o)
	if err != nil {
		t.Fatal(err)
	}
	return rep
}

func undoIndexOf(t *testing.T, path string) undoIndex {
	t.Helper()
	ck, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	var idx undoIndex
	if err := json.Unmarshal([]byte(ck.Metadata()[MetaUndoRecords]), &idx); err != nil {
		t.Fatal(err)
	}
	return idx
}

// TestUndoRecordsInAFile: records over the inline limit go in a file
// beside the output (a single file's name + .undo; weightops.undo in a
// directory, also a sharded one) holding the same bytes the metadata
// would, whatever the worker count or whether tensors stream; remove
// restores the model byte for byte from it; a missing, altered or linked
// records file is refused naming it; an apply whose records fit the
// metadata removes a stale records file of an earlier one.
func TestUndoRecordsInAFile(t *testing.T) {
	defer func(v, p int64, m, s int) {
		stream.StreamAbove, streamAbove, undoInlineMax, undoSpillAt = v, p, m, s
	}(stream.StreamAbove, streamAbove, undoInlineMax, undoSpillAt)
	d, mp, patches := undoFixture(t)
	inline := applyTo(t, mp, patches, filepath.Join(d, "inline.safetensors"), ApplyOptions{})
	idx := undoIndexOf(t, filepath.Join(d, "inline.safetensors"))
	if inline.UndoFile != "" || idx.Data == "" || inline.UndoEntries < 1000 {
		t.Fatalf("inline: file %q, %d entries", inline.UndoFile, inline.UndoEntries)
	}
	container, _ := base64.StdEncoding.DecodeString(idx.Data)
	undoInlineMax, undoSpillAt = 1000, 512 // and frames spooled
	for _, c := range []struct {
		name, out, file string
		o               ApplyOptions
		above           int64
	}{
		{"file", "p.safetensors", "p.safetensors.undo", ApplyOptions{}, 1 << 62},
		{"file-streamed-1-worker", "p.safetensors", "p.safetensors.undo", ApplyOptions{Options: stream.Options{Workers: 1}}, -1},
		{"dir", "pdir", "pdir/weightops.undo", ApplyOptions{}, -1},
		{"nested-new-dir", "new/deeper/pdir", "new/deeper/pdir/weightops.undo", ApplyOptions{}, -1},
		{"sharded", "psh", "psh/weightops.undo", ApplyOptions{Options: stream.Options{ShardSize: 300000}}, -1},
	} {
		t.Run(c.name, func(t *testing.T) {
			stream.StreamAbove, streamAbove = c.above, c.above
			out := filepath.Join(d, c.out)
			rep := applyTo(t, mp, patches, out, c.o)
			file := filepath.Join(d, c.file)
			if rep.UndoFile != file || rep.UndoEntries != inline.UndoEntries || !strings.Contains(strings.Join(rep.Files, ","), file) {
				t.Fatalf("records file %q (want %s), %d entries, files %v", rep.UndoFile, file, rep.UndoEntries, rep.Files)
			}
			got, _ := os.ReadFile(file)
			if !bytes.Equal(got, container) {
				t.Fatal("the records file differs from the records kept inline")
			}
			patched, err := weights.Open(out)
			if err != nil {
				t.Fatal(err)
			}
			defer patched.Close()
			if patched.Metadata()[MetaUndo] != "" || strings.Contains(patched.Metadata()[MetaUndoRecords], `"data"`) {
				t.Fatal("records in the metadata too")
			}
			if _, err := Records(patched); err != nil {
				t.Fatal(err)
			}
			back := filepath.Join(d, c.name+"-back")
			if _, err := Remove(context.Background(), patched, patches, back, ApplyOptions{}); err != nil {
				t.Fatal(err)
			}
			a, _ := os.ReadFile(mp)
			b, _ := os.ReadFile(filepath.Join(back, "model.safetensors"))
			if !bytes.Equal(a, b) {
				t.Fatal("not restored byte for byte")
			}
		})
	}
	stream.StreamAbove, streamAbove = -1, -1
	out := filepath.Join(d, "p.safetensors")
	file := out + ".undo"
	saved, _ := os.ReadFile(file)
	remove := func() error {
		patched, err := weights.Open(out)
		if err != nil {
			t.Fatal(err)
		}
		defer patched.Close()
		_, err = Remove(context.Background(), patched, patches, filepath.Join(d, "x.safetensors"), ApplyOptions{})
		return err
	}
	for _, c := range []struct {
		name, want string
		spoil      func()
	}{
		{"missing", "missing", func() { os.Remove(file) }},
		{"altered", "SHA-256", func() {
			b := append([]byte(nil), saved...)
			b[len(b)/2] ^= 1
			os.WriteFile(file, b, 0o644)
		}},
		{"short", "bytes", func() { os.WriteFile(file, saved[:len(saved)-1], 0o644) }},
		{"link", "link", func() {
			os.WriteFile(file+".real", saved, 0o644)
			os.Symlink(file+".real", file)
		}},
	} {
		os.Remove(file)
		c.spoil()
		if err := remove(); err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), file) {
			t.Errorf("%s records file: %v", c.name, err)
		}
		os.Remove(file)
	}
	os.WriteFile(file, saved, 0o644)
	if err := remove(); err != nil {
		t.Fatal(err)
	}
	undoInlineMax = 8 << 20
	if rep := applyTo(t, mp, patches, out, ApplyOptions{}); rep.UndoFile != "" {
		t.Fatal("records not inline")
	}
	if _, err := os.Stat(file); !os.IsNotExist(err) {
		t.Fatalf("stale records file left: %v", err)
	}
}

// rewriteMetadata writes checkpoint path's tensors again with md.
func rewriteMetadata(t *testing.T, path, to string, md func(map[string]string)) {
	t.Helper()
	ck, err := weights.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer ck.Close()
	m := ck.Metadata()
	var ts []weights.Tensor
	for _, info := range ck.Tensors() {
		x, _ := ck.ReadTensor(info.Name, nil)
		ts = append(ts, x)
	}
	md(m)
	if err := weights.WriteSafetensors(to, ts, m); err != nil {
		t.Fatal(err)
	}
}

// TestLegacyUndoRecords: a model patched by a build writing the first
// format (MetaUndo) is still unpatched byte for byte, whole and streamed.
func TestLegacyUndoRecords(t *testing.T) {
	defer func(v, p int64) { stream.StreamAbove, streamAbove = v, p }(stream.StreamAbove, streamAbove)
	d, mp, patches := undoFixture(t)
	out := filepath.Join(d, "p.safetensors")
	applyTo(t, mp, patches, out, ApplyOptions{})
	legacy := filepath.Join(d, "legacy.safetensors")
	rewriteMetadata(t, out, legacy, func(md map[string]string) {
		ck, _ := weights.Open(out)
		defer ck.Close()
		src, err := openUndo(ck)
		if err != nil {
			t.Fatal(err)
		}
		var recs []undoRecord
		for _, name := range src.names() {
			r, err := src.record(name)
			if err != nil {
				t.Fatal(err)
			}
			recs = append(recs, r)
		}
		delete(md, MetaUndoRecords)
		md[MetaUndo] = encodeUndo(recs)
	})
	for _, above := range []int64{1 << 62, -1} {
		stream.StreamAbove, streamAbove = above, above
		patched, _ := weights.Open(legacy)
		if _, err := Records(patched); err != nil {
			t.Fatal(err)
		}
		if !removeRestores(t, patched, patches, mp, filepath.Join(d, "back.safetensors")) {
			t.Fatalf("legacy records (stream above %d): not restored", above)
		}
		patched.Close()
	}
}

// TestHostileUndoRecords: a patched model whose undo index or frames are
// wrong is one error naming the model (and the tensor where known), from
// Records and from Remove, never a panic or a wrong restore.
func TestHostileUndoRecords(t *testing.T) {
	defer func(v, p int64) { stream.StreamAbove, streamAbove = v, p }(stream.StreamAbove, streamAbove)
	d, mp, patches := undoFixture(t)
	out := filepath.Join(d, "p.safetensors")
	applyTo(t, mp, patches, out, ApplyOptions{})
	good := undoIndexOf(t, out)
	container, _ := base64.StdEncoding.DecodeString(good.Data)
	// A frame holding entries of our choosing.
	frame := func(gaps ...uint64) []byte {
		var raw []byte
		for _, g := range gaps {
			raw = binary.AppendUvarint(raw, g)
			raw = append(raw, 0x80, 0x3f)
		}
		zw, _ := zstd.NewWriter(nil)
		return zw.EncodeAll(raw, nil)
	}
	last := len(good.Tensors) - 1
	for _, c := range []struct {
		name, want string
		edit       func(*undoIndex, *[]byte)
	}{
		{"not json", "valid JSON", nil},
		{"version", "version", func(x *undoIndex, _ *[]byte) { x.Version = 3 }},
		{"unknown tensor", "not in the model", func(x *undoIndex, _ *[]byte) { x.Tensors[0].Name = "nope" }},
		{"twice", "twice", func(x *undoIndex, _ *[]byte) { x.Tensors = append(x.Tensors, x.Tensors[0]) }},
		{"past the end", "bad range", func(x *undoIndex, _ *[]byte) { x.Tensors[last].Length += 10 }},
		{"count", "bad range or count", func(x *undoIndex, _ *[]byte) { x.Tensors[0].Entries = 1 << 40 }},
		{"bad magic", "magic", func(_ *undoIndex, b *[]byte) { (*b)[0] = 'X' }},
		{"fewer entries", "truncated", func(x *undoIndex, _ *[]byte) { x.Tensors[last].Entries++ }},
		{"more entries", "data after", func(x *undoIndex, _ *[]byte) { x.Tensors[last].Entries-- }},
		{"corrupt frame", "undo records", func(x *undoIndex, b *[]byte) { (*b)[x.Tensors[last].Offset+x.Tensors[last].Length/2] ^= 0x55 }},
		{"index past the tensor", "bad index", func(x *undoIndex, b *[]byte) {
			f := frame(0, 1<<40)
			x.Tensors = []undoTensor{{Name: "layers.1.weight", Offset: 8, Length: int64(len(f)), Entries: 2}}
			*b = append([]byte(undoMagic), f...)
		}},
		{"repeated index", "bad index", func(x *undoIndex, b *[]byte) {
			f := frame(3, 0)
			x.Tensors = []undoTensor{{Name: "layers.1.weight", Offset: 8, Length: int64(len(f)), Entries: 2}}
			*b = append([]byte(undoMagic), f...)
		}},
		{"file name", "plain file name", func(x *undoIndex, _ *[]byte) { x.Data, x.File = "", "../model.safetensors" }},
	} {
		t.Run(c.name, func(t *testing.T) {
			bad := filepath.Join(d, "bad.safetensors")
			rewriteMetadata(t, out, bad, func(md map[string]string) {
				if c.edit == nil {
					md[MetaUndoRecords] = "{"
					return
				}
				x := undoIndexOf(t, out)
				b := append([]byte(nil), container...)
				c.edit(&x, &b)
				if x.Data != "" {
					x.Data = base64.StdEncoding.EncodeToString(b)
				}
				js, _ := json.Marshal(x)
				md[MetaUndoRecords] = string(js)
			})
			for _, above := range []int64{1 << 62, -1} {
				stream.StreamAbove, streamAbove = above, above
				patched, _ := weights.Open(bad)
				_, rerr := Records(patched)
				_, err := Remove(context.Background(), patched, patches, filepath.Join(d, "x.safetensors"), ApplyOptions{})
				patched.Close()
				for _, e := range []error{rerr, err} {
					if e == nil || !strings.Contains(e.Error(), c.want) || !strings.Contains(e.Error(), bad) || strings.Count(e.Error(), "\n") > 0 {
						t.Errorf("stream above %d: %v", above, e)
					}
				}
				if _, err := os.Stat(filepath.Join(d, "x.safetensors")); err == nil {
					t.Fatal("output written")
				}
			}
		})
	}
}

// TestApplyNoUndo: without undo records (a .gguf output) apply writes the
// same tensors in one pass, Records accepts the model, Remove refuses it.
func TestApplyNoUndo(t *testing.T) {
	d, mp, patches := undoFixture(t)
	with, without := filepath.Join(d, "with.safetensors"), filepath.Join(d, "without.safetensors")
	applyTo(t, mp, patches, with, ApplyOptions{})
	if rep := applyTo(t, mp, patches, without, ApplyOptions{NoUndo: true}); rep.UndoEntries != 0 {
		t.Fatalf("%d undo entries", rep.UndoEntries)
	}
	a, _ := weights.Open(with)
	defer a.Close()
	b, _ := weights.Open(without)
	defer b.Close()
	for _, info := range a.Tensors() {
		x, _ := a.ReadTensor(info.Name, nil)
		y, _ := b.ReadTensor(info.Name, nil)
		if !bytes.Equal(x.Data, y.Data) {
			t.Fatalf("%s differs", info.Name)
		}
	}
	if _, ok := b.Metadata()[MetaUndoRecords]; ok {
		t.Fatal("undo records written")
	}
	if applied, err := Records(b); err != nil || len(applied) != 1 {
		t.Fatalf("Records: %v %v", applied, err)
	}
	if _, err := Remove(context.Background(), b, patches, filepath.Join(d, "x.safetensors"), ApplyOptions{}); err == nil || !strings.Contains(err.Error(), "no undo records") {
		t.Fatalf("Remove: %v", err)
	}
}

// fakeModel is a Checkpoint of tensor descriptions and metadata only.
type fakeModel struct {
	path  string
	infos []weights.TensorInfo
	md    map[string]string
}

func (m *fakeModel) Path() string                  { return m.path }
func (m *fakeModel) Tensors() []weights.TensorInfo { return m.infos }
func (m *fakeModel) Metadata() map[string]string   { return m.md }
func (m *fakeModel) Close() error                  { return nil }
func (m *fakeModel) Info(name string) (weights.TensorInfo, bool) {
	for _, t := range m.infos {
		if t.Name == name {
			return t, true
		}
	}
	return weights.TensorInfo{}, false
}
func (m *fakeModel) ReadTensor(string, []byte) (weights.Tensor, error) {
	return weights.Tensor{}, os.ErrNotExist
}

// undoSeed is a valid index and container for tensors a (F32, 64) and b
// (BF16, 3×100).
func undoSeed() (string, []byte) {
	frame := func(gaps []uint64, es int) []byte {
		var raw []byte
		for _, g := range gaps {
			raw = binary.AppendUvarint(raw, g)
			raw = append(raw, make([]byte, es)...)
		}
		zw, _ := zstd.NewWriter(nil)
		return zw.EncodeAll(raw, nil)
	}
	fa, fb := frame([]uint64{0, 5, 1, 50}, 4), frame([]uint64{7, 100, 192}, 2)
	idx := undoIndex{Version: 2, Tensors: []undoTensor{
		{Name: "a", Offset: 8, Length: int64(len(fa)), Entries: 4},
		{Name: "b", Offset: 8 + int64(len(fa)), Length: int64(len(fb)), Entries: 3},
	}}
	js, _ := json.Marshal(idx)
	return string(js), append(append([]byte(undoMagic), fa...), fb...)
}

// FuzzUndoRecords: any undo index and container is read (Records, and a
// cursor a chunk at a time, as Remove reads it) without a panic or an
// allocation beyond what the container justifies.
func FuzzUndoRecords(f *testing.F) {
	idx, container := undoSeed()
	f.Add(idx, container)
	f.Add(`{"version":2,"file":"x.undo","bytes":10,"sha256":"00","tensors":[]}`, []byte{})
	dir := f.TempDir()
	f.Fuzz(func(t *testing.T, index string, container []byte) {
		var x undoIndex
		if json.Unmarshal([]byte(index), &x) == nil && x.File == "" {
			x.Data = base64.StdEncoding.EncodeToString(container)
			js, _ := json.Marshal(x)
			index = string(js)
		}
		m := &fakeModel{path: filepath.Join(dir, "m.safetensors"), md: map[string]string{MetaPatches: "[]", MetaUndoMetadata: "{}", MetaUndoRecords: index},
			infos: []weights.TensorInfo{{Name: "a", DType: weights.F32, Shape: []int64{64}}, {Name: "b", DType: weights.BF16, Shape: []int64{3, 100}}}}
		_, _ = Records(m)
		src, err := openUndo(m)
		if err != nil {
			return
		}
		defer src.close()
		for _, name := range src.names() {
			c, err := src.cursor(name)
			if err != nil {
				continue
			}
			for s := int64(0); s < c.n && err == nil; s += 7 {
				for err == nil && c.have && c.at < s+7 {
					if c.at < s {
						t.Fatalf("%s: index %d before chunk %d", name, c.at, s)
					}
					err = c.advance()
				}
			}
			if err == nil {
				_ = c.finish()
			}
			c.close()
		}
	})
}

// TestUndoSpoolFailureReported: a frame whose spool cannot be written
// fails the apply's records (naming the tensor) instead of leaving its
// entries out.
func TestUndoSpoolFailureReported(t *testing.T) {
	defer func(s int) { undoSpillAt = s }(undoSpillAt)
	undoSpillAt = 16
	d := t.TempDir()
	s := &undoSet{dst: filepath.Join(d, "p.safetensors.undo"), spoolAt: filepath.Join(d, "missing", "dir", "x")}
	ok, bad := s.frame("a"), s.frame("b")
	ok.add(3, []byte{1, 2})
	if err := ok.close(); err != nil {
		t.Fatal(err)
	}
	for i := range int64(5000) {
		bad.add(i, []byte{byte(i), byte(i * 7)})
	}
	_ = bad.close() // Release ignores it: finish must not
	if _, err := s.finish(); err == nil || !strings.Contains(err.Error(), `tensor "b"`) {
		t.Fatalf("finish: %v", err)
	}
}
