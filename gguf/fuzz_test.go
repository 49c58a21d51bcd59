package gguf

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// smallGGUF builds a valid file with a value of every metadata type and a
// tensor of each of a few types.
func smallGGUF(t testing.TB) []byte {
	h := &Header{}
	h.Add("general.architecture", "llama")
	h.Add("u8", uint8(1))
	h.Add("i8", int8(-1))
	h.Add("u16", uint16(2))
	h.Add("i16", int16(-2))
	h.Add("u32", uint32(3))
	h.Add("i32", int32(-3))
	h.Add("f32", float32(0.5))
	h.Add("b", true)
	h.Add("u64", uint64(4))
	h.Add("i64", int64(-4))
	h.Add("f64", 0.25)
	h.Add("arr", Strings([]string{"a", "bc"}))
	h.Add("nested", Array{Elem: TypeArray, Values: []any{Int32s([]int32{1, 2})}})
	h.Tensors = []TensorInfo{
		{Name: "token_embd.weight", Dims: []uint64{32, 2}, Type: Q8_0},
		{Name: "output_norm.weight", Dims: []uint64{32}, Type: F32},
		{Name: "blk.0.ffn_up.weight", Dims: []uint64{256, 1}, Type: Q4_K},
	}
	data := h.Layout()
	var b bytes.Buffer
	if _, err := h.Write(&b); err != nil {
		t.Fatal(err)
	}
	b.Write(make([]byte, data))
	return b.Bytes()
}

func FuzzParse(f *testing.F) {
	f.Add(smallGGUF(f))
	f.Add([]byte("GGUF\x03\x00\x00\x00" + strings.Repeat("\x00", 16)))
	f.Fuzz(func(t *testing.T, raw []byte) {
		g, err := Parse(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			return
		}
		for _, ti := range g.Tensors {
			if uint64(g.DataOffset)+ti.Offset+ti.Size > uint64(len(raw)) {
				t.Fatalf("accepted tensor %q outside the file", ti.Name)
			}
		}
		p := filepath.Join(t.TempDir(), "f.gguf")
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := Open(p)
		if err != nil {
			return // e.g. two tensors mapping to one name
		}
		defer c.Close()
		for _, ti := range c.Tensors() {
			if _, err := c.ReadTensor(ti.Name, nil); err != nil {
				t.Fatalf("parsed but %q does not read: %v", ti.Name, err)
			}
		}
		_, _ = c.ConfigJSON()
	})
}

// TestHostileHeaders: every truncation of a valid file, and headers that
// claim more than the file holds, end in an error, never a panic or a
// large allocation.
func TestHostileHeaders(t *testing.T) {
	good := smallGGUF(t)
	g, err := Parse(bytes.NewReader(good), int64(len(good)))
	if err != nil {
		t.Fatalf("the valid file: %v", err)
	}
	last := g.Tensors[len(g.Tensors)-1]
	end := int(g.DataOffset) + int(last.Offset+last.Size) // the padding after it is optional
	for n := 0; n < end; n++ {
		if _, err := Parse(bytes.NewReader(good[:n]), int64(n)); err == nil {
			t.Fatalf("truncated to %d of %d bytes: parsed", n, end)
		}
	}
	le := func(v uint64, n int) string {
		b := make([]byte, n)
		for i := range b {
			b[i] = byte(v >> (8 * i))
		}
		return string(b)
	}
	hdr := func(nt, nkv uint64) string { return "GGUF" + le(3, 4) + le(nt, 8) + le(nkv, 8) }
	kvStr := func(k string) string { return le(uint64(len(k)), 8) + k }
	for _, c := range []struct{ raw, want string }{
		{"GGML" + strings.Repeat("\x00", 20), "not a GGUF file"},
		{"GGUF" + le(1, 4) + strings.Repeat("\x00", 16), "version 1"},
		{hdr(1<<40, 0), "more than"},
		{hdr(0, 1<<40), "more than"},
		{hdr(0, 1) + le(1<<50, 8), "runs past"},
		{hdr(0, 1) + kvStr("k") + le(uint64(TypeArray), 4) + le(uint64(TypeUint64), 4) + le(1<<40, 8), "runs past"},
		{hdr(0, 1) + kvStr("k") + le(99, 4) + strings.Repeat("\x00", 8), "unknown value type"},
		{hdr(0, 1) + kvStr("general.alignment") + le(uint64(TypeUint32), 4) + le(3, 4), "power of two"},
		{hdr(1, 0) + kvStr("t") + le(5, 4) + strings.Repeat("\x00", 40), "dims"},
		{hdr(1, 0) + kvStr("t") + le(2, 4) + le(1<<40, 8) + le(1<<40, 8) + le(0, 4) + le(0, 8), "overflow"},
		{hdr(1, 0) + kvStr("t") + le(1, 4) + le(32, 8) + le(77, 4) + le(0, 8), "ggml type 77"},
		{hdr(1, 0) + kvStr("t") + le(1, 4) + le(33, 8) + le(uint64(Q8_0), 4) + le(0, 8), "not a multiple"},
		{hdr(1, 0) + kvStr("t") + le(1, 4) + le(32, 8) + le(0, 4) + le(4, 8) + strings.Repeat("\x00", 200), "not aligned"},
		{hdr(1, 0) + kvStr("t") + le(1, 4) + le(1<<20, 8) + le(0, 4) + le(0, 8) + strings.Repeat("\x00", 64), "run past"},
		{hdr(0, 2) + kvStr("k") + le(uint64(TypeUint8), 4) + "\x01" + kvStr("k") + le(uint64(TypeUint8), 4) + "\x01", "twice"},
	} {
		_, err := Parse(strings.NewReader(c.raw), int64(len(c.raw)))
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%q: error %v, want %q", c.raw[:min(len(c.raw), 40)], err, c.want)
		}
	}
}
