package weights

import (
	"archive/zip"
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/rand"
	"os"
	"path/filepath"
	"reflect"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/weightops/weightops/internal/pickle"
)

// The fixtures are made by testdata/pytorch/make_fixtures.py with torch.
const ptFixtureDir = "../testdata/pytorch"

var ptFixtures = []string{"zip", "legacy", "zip_proto4", "views", "views_legacy", "wrapped"}

type ptExpected struct {
	Tensors map[string]struct {
		DType string  `json:"dtype"`
		Shape []int64 `json:"shape"`
		Hex   string  `json:"hex"`
	} `json:"tensors"`
	Metadata map[string]string `json:"metadata"`
}

func ptLoadExpected(t *testing.T, name string) ptExpected {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(ptFixtureDir, name+".expected.json"))
	if err != nil {
		t.Fatal(err)
	}
	var e ptExpected
	if err := json.Unmarshal(b, &e); err != nil {
		t.Fatal(err)
	}
	if len(e.Tensors) == 0 {
		t.Fatalf("%s: no tensors expected", name)
	}
	return e
}

// ptCheckAgainst compares every tensor of c with the expectation.
func ptCheckAgainst(t *testing.T, c Checkpoint, want ptExpected) {
	t.Helper()
	infos := c.Tensors()
	if !sort.SliceIsSorted(infos, func(i, j int) bool { return NaturalLess(infos[i].Name, infos[j].Name) }) {
		t.Errorf("Tensors() not naturally sorted: %v", infos)
	}
	if len(infos) != len(want.Tensors) {
		names := make([]string, len(infos))
		for i, in := range infos {
			names[i] = in.Name
		}
		t.Fatalf("got %d tensors %v, want %d", len(infos), names, len(want.Tensors))
	}
	var buf []byte
	for _, info := range infos {
		w, ok := want.Tensors[info.Name]
		if !ok {
			t.Errorf("unexpected tensor %q", info.Name)
			continue
		}
		if info.DType.String() != w.DType || !SameShape(info.Shape, w.Shape) {
			t.Errorf("%s: got %s %v, want %s %v", info.Name, info.DType, info.Shape, w.DType, w.Shape)
		}
		if got, ok := c.Info(info.Name); !ok || got.Name != info.Name {
			t.Errorf("Info(%q) = %v, %v", info.Name, got, ok)
		}
		tensor, err := c.ReadTensor(info.Name, buf)
		if err != nil {
			t.Errorf("ReadTensor(%q): %v", info.Name, err)
			continue
		}
		if got := hex.EncodeToString(tensor.Data); got != w.Hex {
			t.Errorf("%s: bytes\n got %s\nwant %s", info.Name, got, w.Hex)
		}
		if tensor.Name != info.Name || tensor.DType != info.DType || !SameShape(tensor.Shape, info.Shape) {
			t.Errorf("%s: ReadTensor info %v, want %v", info.Name, tensor.TensorInfo, info)
		}
		buf = tensor.Data // reuse it for the next read, as callers do
	}
	wantMeta := want.Metadata
	if len(wantMeta) == 0 {
		wantMeta = nil
	}
	if got := c.Metadata(); !reflect.DeepEqual(got, wantMeta) {
		t.Errorf("Metadata() = %v, want %v", got, wantMeta)
	}
	_, err := c.ReadTensor("no.such.tensor", nil)
	if !errors.Is(err, ErrNotFound) || !strings.Contains(err.Error(), c.Path()) {
		t.Errorf("ReadTensor of a missing name: %v", err)
	}
	if _, ok := c.Info("no.such.tensor"); ok {
		t.Error("Info of a missing name succeeded")
	}
}

func TestPyTorchFixtures(t *testing.T) {
	for _, name := range ptFixtures {
		want := ptLoadExpected(t, name)
		path := filepath.Join(ptFixtureDir, name+".pt")
		for _, open := range []struct {
			how string
			fn  func(string) (Checkpoint, error)
		}{{"OpenPyTorch", OpenPyTorch}, {"Open", Open}} {
			t.Run(name+"/"+open.how, func(t *testing.T) {
				c, err := open.fn(path)
				if err != nil {
					t.Fatal(err)
				}
				defer c.Close()
				if c.Path() != path {
					t.Errorf("Path() = %q", c.Path())
				}
				ptCheckAgainst(t, c, want)
			})
		}
	}
}

func TestPyTorchConcurrentReads(t *testing.T) {
	c, err := OpenPyTorch(filepath.Join(ptFixtureDir, "views.pt"))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := ptLoadExpected(t, "views")
	var wg sync.WaitGroup
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for _, info := range c.Tensors() {
				tensor, err := c.ReadTensor(info.Name, nil)
				if err != nil {
					t.Error(err)
					return
				}
				if hex.EncodeToString(tensor.Data) != want.Tensors[info.Name].Hex {
					t.Errorf("%s: wrong bytes", info.Name)
				}
			}
		}()
	}
	wg.Wait()
}

// ptRezip rewrites a zip fixture through edit, which may drop, change or
// add entries (returning nil drops one).
func ptRezip(t *testing.T, src string, method uint16, edit func(name string, data []byte) []byte, extra map[string]string) string {
	t.Helper()
	zr, err := zip.OpenReader(src)
	if err != nil {
		t.Fatal(err)
	}
	defer zr.Close()
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	write := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: method})
		if err != nil {
			t.Fatal(err)
		}
		if _, err := w.Write(data); err != nil {
			t.Fatal(err)
		}
	}
	for _, f := range zr.File {
		rc, err := f.Open()
		if err != nil {
			t.Fatal(err)
		}
		data, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			t.Fatal(err)
		}
		if edit != nil {
			if data = edit(f.Name, data); data == nil {
				continue
			}
		}
		write(f.Name, data)
	}
	names := make([]string, 0, len(extra))
	for n := range extra {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		write(n, []byte(extra[n]))
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(t.TempDir(), "rezipped.pt")
	if err := os.WriteFile(p, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

func TestPyTorchZipVariants(t *testing.T) {
	src := filepath.Join(ptFixtureDir, "views.pt")
	want := ptLoadExpected(t, "views")

	t.Run("compressed entries", func(t *testing.T) {
		p := ptRezip(t, src, zip.Deflate, nil, nil)
		c, err := OpenPyTorch(p)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ptCheckAgainst(t, c, want)
	})
	t.Run("little-endian byteorder", func(t *testing.T) {
		p := ptRezip(t, src, zip.Store, nil, map[string]string{"views/byteorder": "little"})
		c, err := OpenPyTorch(p)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		ptCheckAgainst(t, c, want)
	})

	bad := []struct {
		name   string
		method uint16
		edit   func(string, []byte) []byte
		extra  map[string]string
		msg    string
	}{
		{"big-endian", zip.Store, nil, map[string]string{"views/byteorder": "big"}, "big-endian"},
		{"odd byteorder", zip.Store, nil, map[string]string{"views/byteorder": "middle"}, "byte order"},
		{"no data.pkl", zip.Store, func(n string, b []byte) []byte {
			if strings.HasSuffix(n, "data.pkl") {
				return nil
			}
			return b
		}, nil, "data.pkl"},
		{"storage missing", zip.Store, func(n string, b []byte) []byte {
			if n == "views/data/3" {
				return nil
			}
			return b
		}, nil, `storage "3"`},
		{"storage short", zip.Store, func(n string, b []byte) []byte {
			if n == "views/data/1" {
				return b[:len(b)-4]
			}
			return b
		}, nil, "storage"},
		{"truncated data.pkl", zip.Store, func(n string, b []byte) []byte {
			if strings.HasSuffix(n, "data.pkl") {
				return b[:len(b)/2]
			}
			return b
		}, nil, "pickle"},
		{"torchscript", zip.Store, nil, map[string]string{"views/constants.pkl": "x"}, "TorchScript"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			p := ptRezip(t, src, tc.method, tc.edit, tc.extra)
			c, err := OpenPyTorch(p)
			if err == nil {
				c.Close()
				t.Fatal("opened")
			}
			if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("error %q should name the file and say %q", err, tc.msg)
			}
		})
	}
}

func ptWriteTemp(t testing.TB, data []byte) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "in.pt")
	if err := os.WriteFile(p, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// ptMustFail opens data as a checkpoint and wants an error naming the file.
func ptMustFail(t *testing.T, what string, data []byte, msg string) {
	t.Helper()
	p := ptWriteTemp(t, data)
	c, err := OpenPyTorch(p)
	if err == nil {
		c.Close()
		t.Errorf("%s: opened", what)
		return
	}
	if !strings.Contains(err.Error(), p) || !strings.Contains(err.Error(), msg) {
		t.Errorf("%s: error %q should name the file and say %q", what, err, msg)
	}
}

func TestPyTorchTruncated(t *testing.T) {
	for _, name := range ptFixtures {
		data, err := os.ReadFile(filepath.Join(ptFixtureDir, name+".pt"))
		if err != nil {
			t.Fatal(err)
		}
		cuts := []int{0, 1, 2, 10, 15, 21, 100, len(data) / 2, len(data) - 100, len(data) - 9, len(data) - 8, len(data) - 1}
		for i := 1; i < 16; i++ {
			cuts = append(cuts, len(data)*i/16)
		}
		for _, n := range cuts {
			if n < 0 || n >= len(data) {
				continue
			}
			ptMustFail(t, fmt.Sprintf("%s cut at %d", name, n), data[:n], "")
		}
	}
}

func TestPyTorchGarbage(t *testing.T) {
	rng := rand.New(rand.NewSource(1))
	noise := func(n int) []byte {
		b := make([]byte, n)
		rng.Read(b)
		return b
	}
	for i := range 20 {
		n := 1 + rng.Intn(4000)
		ptMustFail(t, "noise", noise(n), "")
		ptMustFail(t, "zip magic + noise", append([]byte("PK\x03\x04"), noise(n)...), "")
		ptMustFail(t, fmt.Sprintf("pickle + noise %d", i), append([]byte("\x80\x02"), noise(n)...), "")
	}
	ptMustFail(t, "empty", nil, "empty")
	ptMustFail(t, "text", []byte("hello, world\n"), "not a PyTorch checkpoint")

	tar := make([]byte, 1024)
	copy(tar, "storages")
	copy(tar[257:], "ustar\x0000")
	ptMustFail(t, "tar", tar, "tar")

	// A pickle that is not a legacy checkpoint.
	ptMustFail(t, "plain pickle", []byte("\x80\x02}q\x00."), "magic")

	// Flip the legacy sys_info's little_endian to False.
	legacy, err := os.ReadFile(filepath.Join(ptFixtureDir, "legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	be := bytes.Replace(legacy, []byte("little_endianq\x02\x88"), []byte("little_endianq\x02\x89"), 1)
	if bytes.Equal(be, legacy) {
		t.Fatal("little_endian flag not found in legacy.pt")
	}
	ptMustFail(t, "big-endian legacy", be, "big-endian")

	// Rename the first key of the legacy storage key list (the fifth pickle).
	var pos int64
	for range 4 {
		n, _, err := pickle.Scan(bytes.NewReader(legacy[pos:]), int64(len(legacy))-pos, false)
		if err != nil {
			t.Fatal(err)
		}
		pos += n
	}
	renamed := bytes.Clone(legacy)
	x := bytes.IndexByte(renamed[pos:], 'X')
	renamed[pos+int64(x)+5] = 'z'
	ptMustFail(t, "legacy key renamed", renamed, "never refers to it")
}

// ---------------------------------------------------------------------------
// Hand-made pickles, for cases torch will not write.

// ptPickle builds protocol-2 pickle bytes.
type ptPickle struct{ bytes.Buffer }

func (p *ptPickle) op(s string) *ptPickle { p.WriteString(s); return p }

func (p *ptPickle) str(s string) *ptPickle {
	p.WriteByte('X')
	binary.Write(&p.Buffer, binary.LittleEndian, uint32(len(s)))
	p.WriteString(s)
	return p
}

func (p *ptPickle) int(v int32) *ptPickle {
	p.WriteByte('J')
	binary.Write(&p.Buffer, binary.LittleEndian, v)
	return p
}

func (p *ptPickle) global(module, name string) *ptPickle {
	return p.op("c" + module + "\n" + name + "\n")
}

func (p *ptPickle) ints(vs ...int32) *ptPickle {
	p.op("(")
	for _, v := range vs {
		p.int(v)
	}
	return p.op("t")
}

// tensor pushes _rebuild_tensor_v2(storage(key, numel), offset, shape, stride).
func (p *ptPickle) tensor(storageClass, key string, numel, offset int32, shape, stride []int32) *ptPickle {
	p.global("torch._utils", "_rebuild_tensor_v2").op("(")
	p.op("(").str("storage").global("torch", storageClass).str(key).str("cpu").int(numel).op("tQ")
	p.int(offset).ints(shape...).ints(stride...).op("\x89").op("N").op("tR")
	return p
}

// ptZip makes a zip checkpoint from a data.pkl and storage entries.
func ptZip(t *testing.T, pkl []byte, storages map[string][]byte) []byte {
	t.Helper()
	var out bytes.Buffer
	zw := zip.NewWriter(&out)
	add := func(name string, data []byte) {
		w, err := zw.CreateHeader(&zip.FileHeader{Name: name, Method: zip.Store})
		if err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	add("archive/data.pkl", pkl)
	keys := make([]string, 0, len(storages))
	for k := range storages {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		add("archive/data/"+k, storages[k])
	}
	if err := zw.Close(); err != nil {
		t.Fatal(err)
	}
	return out.Bytes()
}

func TestPyTorchHandMade(t *testing.T) {
	f32 := func(n int) []byte { // n float32s 0, 1, 2, ...
		b := make([]byte, 4*n)
		for i := range n {
			binary.LittleEndian.PutUint32(b[4*i:], 0x3f800000+uint32(i))
		}
		return b
	}
	dict := func(entries func(p *ptPickle)) []byte {
		p := &ptPickle{}
		p.op("\x80\x02}(")
		entries(p)
		p.op("u.")
		return p.Bytes()
	}
	one := func(storageClass string, numel, offset int32, shape, stride []int32) []byte {
		return dict(func(p *ptPickle) {
			p.str("w").tensor(storageClass, "0", numel, offset, shape, stride)
		})
	}

	t.Run("ok", func(t *testing.T) {
		// A transposed 3x2 view of a 2x3 storage, at offset 1 of 7.
		data := ptZip(t, one("FloatStorage", 7, 1, []int32{3, 2}, []int32{1, 3}), map[string][]byte{"0": f32(7)})
		c, err := OpenPyTorch(ptWriteTemp(t, data))
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		tensor, err := c.ReadTensor("w", nil)
		if err != nil {
			t.Fatal(err)
		}
		src := f32(7)
		var want []byte
		for _, i := range []int{1, 4, 2, 5, 3, 6} {
			want = append(want, src[4*i:4*i+4]...)
		}
		if !bytes.Equal(tensor.Data, want) {
			t.Errorf("got %x, want %x", tensor.Data, want)
		}
	})

	bad := []struct {
		name string
		pkl  []byte
		data []byte
		msg  string
	}{
		{"past storage end", one("FloatStorage", 4, 0, []int32{2, 3}, []int32{3, 1}), f32(4), "reach past"},
		{"offset past end", one("FloatStorage", 4, 4, []int32{1}, []int32{1}), f32(4), "reach past"},
		{"stride past end", one("FloatStorage", 4, 0, []int32{2}, []int32{4}), f32(4), "reach past"},
		{"negative stride", one("FloatStorage", 4, 3, []int32{2}, []int32{-1}), f32(4), "negative stride"},
		{"negative dim", one("FloatStorage", 4, 0, []int32{-2}, []int32{1}), f32(4), "negative"},
		{"rank mismatch", one("FloatStorage", 4, 0, []int32{2, 2}, []int32{1}), f32(4), "rank"},
		{"numel past entry", one("FloatStorage", 8, 0, []int32{2}, []int32{1}), f32(4), "storage"},
		{"huge shape", one("FloatStorage", 4, 0, []int32{1 << 30, 1 << 30, 1 << 30}, []int32{0, 0, 0}), f32(4), "overflow"},
		{"huge broadcast", one("FloatStorage", 4, 0, []int32{1 << 30}, []int32{0}), f32(4), "more than the file"},
		{"complex", one("ComplexFloatStorage", 2, 0, []int32{2}, []int32{1}), f32(4), "unsupported"},
		{"not a storage class", dict(func(p *ptPickle) {
			p.str("w").global("torch._utils", "_rebuild_tensor_v2").op("(")
			p.op("(").str("storage").global("os", "system").str("0").str("cpu").int(4).op("tQ")
			p.int(0).ints(4).ints(1).op("\x89N").op("tR")
		}), f32(4), "storage class"},
		{"quantized", dict(func(p *ptPickle) {
			p.str("q").global("torch._utils", "_rebuild_qtensor").op(")R")
		}), nil, "quantized"},
		{"bad rebuild args", dict(func(p *ptPickle) {
			p.str("w").global("torch._utils", "_rebuild_tensor_v2").op("(").int(1).op("tR")
		}), nil, "arguments"},
		{"top-level list", []byte("\x80\x02]."), nil, "list"},
		{"top-level module", []byte("\x80\x02c__main__\nNet\n)\x81."), nil, "nn.Module"},
		{"duplicate names", dict(func(p *ptPickle) {
			p.str("a.b").tensor("FloatStorage", "0", 4, 0, []int32{4}, []int32{1})
			p.str("a").op("}(").str("b").tensor("FloatStorage", "0", 4, 0, []int32{4}, []int32{1}).op("u")
		}), f32(4), "two tensors"},
		{"odd dict (gopickle panics)", []byte("\x80\x02(K\x01d."), nil, "malformed pickle"},
		{"empty LONG1 (gopickle panics)", []byte("\x80\x02\x8a\x00."), nil, "malformed pickle"},
		{"huge string", []byte("\x80\x02X\xff\xff\xff\x7f"), nil, "bytes"},
		{"huge frame", []byte("\x80\x04\x95\xff\xff\xff\xff\xff\xff\xff\x00"), nil, "frame"},
		{"unknown opcode", []byte("\x80\x02\xff."), nil, "opcode"},
		{"long decimal", []byte("\x80\x02L" + strings.Repeat("9", 5000) + "L\n."), nil, "longer than"},
		{"long LONG4", append([]byte("\x80\x02\x8b\x00\x00\x01\x00"), make([]byte, 65536)...), nil, "integer of 65536 bytes"},
		{"no STOP", []byte("\x80\x02}"), nil, "truncated"},
		{"bad persistent id", []byte("\x80\x02K\x01Q."), nil, "persistent id"},
	}
	for _, tc := range bad {
		t.Run(tc.name, func(t *testing.T) {
			storages := map[string][]byte{}
			if tc.data != nil {
				storages["0"] = tc.data
			}
			ptMustFail(t, tc.name, ptZip(t, tc.pkl, storages), tc.msg)
		})
	}
}

func TestPyTorchNestingAndCycles(t *testing.T) {
	// {"a": [L]} where L contains itself: the cycle is skipped.
	cyc := []byte("\x80\x02}(X\x01\x00\x00\x00a]q\x00h\x00au.")
	p := ptWriteTemp(t, ptZip(t, cyc, nil))
	c, err := OpenPyTorch(p)
	if err != nil {
		t.Fatal(err)
	}
	if n := len(c.Tensors()); n != 0 {
		t.Errorf("%d tensors", n)
	}
	c.Close()

	// Lists nested 100 deep: refused, not a stack overflow.
	deep := append([]byte("\x80\x02}(X\x01\x00\x00\x00a"), bytes.Repeat([]byte("]"), 100)...)
	deep = append(deep, bytes.Repeat([]byte("a"), 99)...)
	deep = append(deep, "u."...)
	ptMustFail(t, "deep", ptZip(t, deep, nil), "nested deeper")

	// A DAG doubling at every level: the walk is bounded.
	var dag ptPickle
	dag.op("\x80\x02}(X\x01\x00\x00\x00a]q\x000")
	for i := range 40 {
		dag.op(fmt.Sprintf("(h%ch%ctq%c0", rune(i), rune(i), rune(i+1)))
	}
	dag.op("h\x28u.")
	ptMustFail(t, "dag", ptZip(t, dag.Bytes(), nil), "over")
}

// storagePID pushes a zip-format persistent id and loads it.
func (p *ptPickle) storagePID(class, key string, numel int32) *ptPickle {
	return p.op("(").str("storage").global("torch", class).str(key).str("cpu").int(numel).op("tQ")
}

func TestPyTorchRebuildVariants(t *testing.T) {
	seq := func(n int) []byte {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(i)
		}
		return b
	}
	var p ptPickle
	p.op("\x80\x02}(")
	// _rebuild_tensor_v3 on an untyped storage with an explicit dtype: the
	// offset counts elements of the dtype.
	p.str("f8").global("torch._utils", "_rebuild_tensor_v3").op("(")
	p.storagePID("UntypedStorage", "u", 8)
	p.int(2).ints(4).ints(1).op("\x89").global("collections", "OrderedDict").op(")R")
	p.global("torch", "float8_e4m3fn").op("tR")
	p.str("bf").global("torch._utils", "_rebuild_tensor_v3").op("(")
	p.storagePID("UntypedStorage", "u", 8)
	p.int(1).ints(3).ints(1).op("\x89N").global("torch", "bfloat16").op("tR")
	// _rebuild_from_type_v2(func, type, args, state), with a torch.Size.
	p.str("ft").global("torch._tensor", "_rebuild_from_type_v2").op("(")
	p.global("torch._utils", "_rebuild_tensor_v2").global("torch.nn.parameter", "Parameter")
	p.op("(").storagePID("FloatStorage", "f", 4).int(1)
	p.global("torch", "Size").op("(").ints(2).op("tR")
	p.ints(1).op("\x89Nt}tR")
	// _rebuild_parameter around the old 4-argument _rebuild_tensor.
	p.str("param").global("torch._utils", "_rebuild_parameter").op("(")
	p.global("torch._utils", "_rebuild_tensor").op("(").storagePID("FloatStorage", "f", 4)
	p.int(3).ints().ints().op("tR\x88Nt").op("R")
	// Scalars become metadata; other objects are skipped.
	p.str("lr").op("G?\xe0\x00\x00\x00\x00\x00\x00")
	p.str("ok").op("\x88")
	p.str("obj").global("argparse", "Namespace").op(")R}b")
	p.op("u.")

	data := ptZip(t, p.Bytes(), map[string][]byte{"u": seq(8), "f": seq(16)})
	c, err := OpenPyTorch(ptWriteTemp(t, data))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	want := map[string]struct {
		dt    DType
		shape []int64
		data  []byte
	}{
		"f8":    {F8E4M3, []int64{4}, []byte{2, 3, 4, 5}},
		"bf":    {BF16, []int64{3}, []byte{2, 3, 4, 5, 6, 7}},
		"ft":    {F32, []int64{2}, seq(16)[4:12]},
		"param": {F32, []int64{}, seq(16)[12:16]},
	}
	if got := len(c.Tensors()); got != len(want) {
		t.Fatalf("%d tensors: %v", got, c.Tensors())
	}
	for name, w := range want {
		tensor, err := c.ReadTensor(name, nil)
		if err != nil {
			t.Fatal(err)
		}
		if tensor.DType != w.dt || !SameShape(tensor.Shape, w.shape) || !bytes.Equal(tensor.Data, w.data) {
			t.Errorf("%s: got %s %v %v, want %s %v %v", name, tensor.DType, tensor.Shape, tensor.Data, w.dt, w.shape, w.data)
		}
	}
	if got, want := c.Metadata(), map[string]string{"lr": "0.5", "ok": "True"}; !reflect.DeepEqual(got, want) {
		t.Errorf("Metadata() = %v, want %v", got, want)
	}
}

// ptLegacyFile assembles a legacy-format checkpoint: magic, protocol and
// sys_info pickles, main, the key list and the storages.
func ptLegacyFile(t *testing.T, main []byte, keys []string, storages map[string][]byte, elemSize int) []byte {
	t.Helper()
	fixture, err := os.ReadFile(filepath.Join(ptFixtureDir, "legacy.pt"))
	if err != nil {
		t.Fatal(err)
	}
	var out bytes.Buffer
	out.Write(fixture[:21]) // magic number and protocol version pickles
	out.WriteString("\x80\x02}.")
	out.Write(main)
	var kl ptPickle
	kl.op("\x80\x02(")
	for _, k := range keys {
		kl.str(k)
	}
	kl.op("l.")
	out.Write(kl.Bytes())
	for _, k := range keys {
		binary.Write(&out, binary.LittleEndian, uint64(len(storages[k])/elemSize))
		out.Write(storages[k])
	}
	return out.Bytes()
}

func TestPyTorchLegacyStorageViews(t *testing.T) {
	root := make([]byte, 40) // 10 float32s
	for i := range 10 {
		binary.LittleEndian.PutUint32(root[4*i:], uint32(i))
	}
	legacyPID := func(p *ptPickle) {
		p.op("(").str("storage").global("torch", "FloatStorage").str("root").str("cpu").int(10)
		p.op("(").str("view1").int(2).int(4).op("t") // elements 2..5
		p.op("tQ")
	}
	var p ptPickle
	p.op("\x80\x02}(")
	p.str("v").global("torch._utils", "_rebuild_tensor_v2").op("(")
	legacyPID(&p)
	p.int(1).ints(2).ints(1).op("\x89NtR")
	p.str("whole").global("torch._utils", "_rebuild_tensor_v2").op("(")
	p.op("(").str("storage").global("torch", "FloatStorage").str("root").str("cpu").int(10).op("NtQ")
	p.int(0).ints(5, 2).ints(1, 5).op("\x89NtR")
	p.op("u.")
	data := ptLegacyFile(t, p.Bytes(), []string{"root"}, map[string][]byte{"root": root}, 4)
	c, err := OpenPyTorch(ptWriteTemp(t, data))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.ReadTensor("v", nil)
	if err != nil {
		t.Fatal(err)
	}
	if want := root[12:20]; !bytes.Equal(got.Data, want) {
		t.Errorf("view: got %v, want %v", got.Data, want)
	}
	got, err = c.ReadTensor("whole", nil)
	if err != nil {
		t.Fatal(err)
	}
	var want []byte
	for _, i := range []int{0, 5, 1, 6, 2, 7, 3, 8, 4, 9} {
		want = append(want, root[4*i:4*i+4]...)
	}
	if !bytes.Equal(got.Data, want) {
		t.Errorf("transpose: got %v, want %v", got.Data, want)
	}

	// A view reaching past its root storage.
	var q ptPickle
	q.op("\x80\x02}(").str("v").global("torch._utils", "_rebuild_tensor_v2").op("(")
	q.op("(").str("storage").global("torch", "FloatStorage").str("root").str("cpu").int(10)
	q.op("(").str("view1").int(8).int(4).op("ttQ")
	q.int(0).ints(1).ints(1).op("\x89NtRu.")
	ptMustFail(t, "view past root", ptLegacyFile(t, q.Bytes(), []string{"root"}, map[string][]byte{"root": root}, 4), "storage")
	// A storage the key list forgets.
	ptMustFail(t, "unlisted storage", ptLegacyFile(t, p.Bytes(), nil, nil, 4), "no data")
}

func TestPyTorchSparseView(t *testing.T) {
	// Three elements, 250000 apart, of a 2.4 MB storage: read one by one,
	// not by reading the whole span.
	const numel = 600000
	storage := make([]byte, 4*numel)
	for i := range numel {
		binary.LittleEndian.PutUint32(storage[4*i:], uint32(i))
	}
	var p ptPickle
	p.op("\x80\x02}(").str("s").global("torch._utils", "_rebuild_tensor_v2").op("(")
	p.storagePID("FloatStorage", "0", numel).int(7).ints(3).ints(250000).op("\x89NtRu.")
	c, err := OpenPyTorch(ptWriteTemp(t, ptZip(t, p.Bytes(), map[string][]byte{"0": storage})))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	got, err := c.ReadTensor("s", make([]byte, 0, 100))
	if err != nil {
		t.Fatal(err)
	}
	want := []byte{7, 0, 0, 0, 0x97, 0xd0, 3, 0, 0x27, 0xa1, 7, 0}
	if !bytes.Equal(got.Data, want) || cap(got.Data) != 100 {
		t.Errorf("got %v (cap %d), want %v in the given buffer", got.Data, cap(got.Data), want)
	}
}
