package weights

import (
	"bytes"
	"os"
	"path/filepath"
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
