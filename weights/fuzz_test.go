package weights

import (
	"bytes"
	"os"
	"path/filepath"
	"syscall"
	"testing"
)

// FuzzSafetensorsHeader feeds arbitrary bytes to the header parser and, when
// a header is accepted, reads every tensor through the file reader. It must
// never panic, and an accepted file's tensors must lie inside it.
// Seed corpus: testdata/fuzz/FuzzSafetensorsHeader.
func FuzzSafetensorsHeader(f *testing.F) {
	f.Add(buildRaw(`{"a":{"dtype":"F32","shape":[2],"data_offsets":[0,8]}}`, make([]byte, 8)))
	f.Add(buildRaw(`{"__metadata__":{"format":"pt"},"b":{"dtype":"BF16","shape":[1,1],"data_offsets":[0,2]},"c":{"dtype":"BOOL","shape":[],"data_offsets":[2,3]}}`, make([]byte, 3)))
	f.Add(buildRaw(`{}`, nil))
	f.Fuzz(func(t *testing.T, raw []byte) {
		h, err := ParseSafetensorsHeader(bytes.NewReader(raw), int64(len(raw)))
		if err != nil {
			return
		}
		for _, ht := range h.Tensors {
			if h.DataStart+ht.End > int64(len(raw)) || ht.Begin > ht.End {
				t.Fatalf("accepted tensor %q outside the file", ht.Name)
			}
		}
		p := filepath.Join(t.TempDir(), "f.safetensors")
		if err := os.WriteFile(p, raw, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := OpenSafetensors(p)
		if err != nil {
			t.Fatalf("header parsed but open failed: %v", err)
		}
		defer c.Close()
		var buf []byte
		for _, ti := range c.Tensors() {
			ten, err := c.ReadTensor(ti.Name, buf)
			if err != nil {
				t.Fatal(err)
			}
			buf = ten.Data
			if _, err := ComputeStats(ten); err != nil {
				t.Fatal(err)
			}
		}
	})
}

// dirNames are the files FuzzOpenDir lays out: the names a model
// directory's reader and side-file copier look for.
var dirNames = []string{
	IndexName, ShardName(1, 2), ShardName(2, 2), "model.safetensors", "config.json",
	"tokenizer.json", "pytorch_model.bin.index.json", "a.safetensors", "sub",
}

// layDir builds a model directory from fuzz bytes: records of
// [name index][kind][length u8][content], kind 0 a regular file, 1 a link
// to another listed name (the content's first byte picks it), 2 a link to
// "..", 3 a link to ".", 4 a directory, 5 a FIFO.
func layDir(t *testing.T, data []byte) string {
	dir := t.TempDir()
	for len(data) >= 3 {
		name := dirNames[int(data[0])%len(dirNames)]
		kind, n := data[1]%6, int(data[2])
		data = data[3:]
		n = min(n, len(data))
		content := data[:n]
		data = data[n:]
		p := filepath.Join(dir, name)
		if _, err := os.Lstat(p); err == nil {
			continue
		}
		switch kind {
		case 0:
			os.WriteFile(p, content, 0o644)
		case 1:
			target := "config.json"
			if len(content) > 0 {
				target = dirNames[int(content[0])%len(dirNames)]
			}
			os.Symlink(target, p)
		case 2:
			os.Symlink("..", p)
		case 3:
			os.Symlink(".", p)
		case 4:
			os.Mkdir(p, 0o755)
		case 5:
			syscall.Mkfifo(p, 0o644)
		}
	}
	return dir
}

// FuzzOpenDir opens fuzzer-laid-out model directories — indexes naming
// anything, links to themselves, to their parent, FIFOs, directories where
// files belong — as a checkpoint and reads their side files: never a
// panic, a hang or a stack overflow. Seed corpus: testdata/fuzz/FuzzOpenDir.
func FuzzOpenDir(f *testing.F) {
	st := buildRaw(`{"w":{"dtype":"F32","shape":[1],"data_offsets":[0,4]}}`, make([]byte, 4))
	rec := func(name, kind int, content []byte) []byte {
		return append([]byte{byte(name), byte(kind), byte(len(content))}, content...)
	}
	idx := []byte(`{"metadata":{},"weight_map":{"w":"model-00001-of-00002.safetensors"}}`)
	f.Add(append(rec(0, 0, idx), rec(1, 0, st)...))
	f.Add(append(rec(3, 0, st), rec(4, 0, []byte(`{"a":1}`))...))
	f.Add(append(rec(0, 0, []byte(`{"weight_map":{"w":"."}}`)), rec(7, 3, nil)...))
	f.Add(append(rec(0, 0, []byte(`{"weight_map":{"w":"pytorch_model.bin.index.json"}}`)), rec(6, 1, []byte{0})...))
	f.Add(append(rec(3, 5, nil), rec(5, 2, nil)...))
	f.Fuzz(func(t *testing.T, data []byte) {
		dir := layDir(t, data)
		if c, err := Open(dir); err == nil {
			for _, ti := range c.Tensors() {
				if _, err := c.ReadTensor(ti.Name, nil); err != nil {
					break
				}
			}
			c.Close()
		}
		for _, name := range dirNames {
			if c, err := Open(filepath.Join(dir, name)); err == nil {
				c.Close()
			}
		}
		ReadModelFiles(dir)
	})
}
