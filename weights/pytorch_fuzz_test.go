package weights

import (
	"archive/zip"
	"bytes"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/weightops/weightops/internal/pickle"
)

// FuzzPyTorch opens arbitrary bytes as a PyTorch checkpoint and reads every
// tensor: it must fail cleanly, never panic or over-allocate. The zip
// fixtures mostly exercise the zip reader (data.pkl is CRC-checked, so
// mutations rarely reach the pickle); the legacy ones reach everything.
func FuzzPyTorch(f *testing.F) {
	for _, name := range ptFixtures {
		data, err := os.ReadFile(filepath.Join(ptFixtureDir, name+".pt"))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(data)
		f.Add(data[:len(data)*2/3])
	}
	// Each fuzzing process calls the function sequentially: one file will do.
	p := filepath.Join(f.TempDir(), "fuzz.pt")
	f.Fuzz(func(t *testing.T, data []byte) {
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		c, err := OpenPyTorch(p)
		if err != nil {
			return
		}
		defer c.Close()
		for _, info := range c.Tensors() {
			n, err := info.ByteSize()
			if err != nil || n > 1100*int64(len(data)) { // compressed entries may expand
				t.Fatalf("%s: %d bytes (%v) from a %d-byte file", info.Name, n, err, len(data))
			}
			tensor, err := c.ReadTensor(info.Name, nil)
			if err == nil && int64(len(tensor.Data)) != n {
				t.Fatalf("%s: read %d bytes, want %d", info.Name, len(tensor.Data), n)
			}
		}
	})
}

// FuzzPickle feeds arbitrary bytes to the pickle layer alone — scanner,
// gopickle with our hooks, state-dict flattening and view validation —
// pretending every storage holds 64 KiB.
func FuzzPickle(f *testing.F) {
	for _, name := range ptFixtures {
		zr, err := zip.OpenReader(filepath.Join(ptFixtureDir, name+".pt"))
		if err != nil {
			continue // a legacy file
		}
		for _, e := range zr.File {
			if filepath.Base(e.Name) == "data.pkl" {
				rc, err := e.Open()
				if err != nil {
					f.Fatal(err)
				}
				b, err := io.ReadAll(rc)
				rc.Close()
				if err != nil {
					f.Fatal(err)
				}
				f.Add(b)
			}
		}
		zr.Close()
	}
	f.Add([]byte("\x80\x02}(X\x01\x00\x00\x00a]q\x00h\x00au."))
	f.Add([]byte("\x80\x04\x95\x05\x00\x00\x00\x00\x00\x00\x00}q\x00."))
	f.Fuzz(func(t *testing.T, data []byte) {
		n, _, err := pickle.Scan(bytes.NewReader(data), int64(len(data)), false)
		if err != nil {
			return
		}
		l := &torchLoader{roots: map[string]*torchStorage{}, views: map[string]*storageRef{}}
		obj, err := l.unpickle(data[:n])
		if err != nil {
			return
		}
		for _, r := range l.order {
			r.size = 1 << 16
		}
		c := &torchCheckpoint{path: "fuzz", size: 1 << 16}
		if err := c.collect(obj); err != nil {
			return
		}
		for _, info := range c.infos {
			if b, err := info.ByteSize(); err != nil || b > 1<<16 {
				t.Fatalf("%s: %d bytes (%v)", info.Name, b, err)
			}
		}
	})
}
