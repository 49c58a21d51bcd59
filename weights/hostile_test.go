package weights

import (
	"archive/zip"
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"
)

// small writes a one-tensor safetensors file.
func small(t *testing.T, path string, md map[string]string) {
	t.Helper()
	if err := WriteSafetensors(path, []Tensor{{TensorInfo{Name: "w", DType: F32, Shape: []int64{2}}, make([]byte, 8)}}, md); err != nil {
		t.Fatal(err)
	}
}

// within fails the test when fn has not returned after d: a hang is a bug.
func within(t *testing.T, d time.Duration, what string, fn func() error) error {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- fn() }()
	select {
	case err := <-done:
		return err
	case <-time.After(d):
		t.Fatalf("%s: still running after %v", what, d)
		return nil
	}
}

func writeIndex(t *testing.T, path string, weightMap map[string]string) {
	t.Helper()
	b, err := MarshalIndex(8, weightMap)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestIndexesCannotRecurse: an index naming itself, ".", "..", a path
// outside its directory or another index (which names it back) is one
// error, at once — not a stack overflow after seconds.
func TestIndexesCannotRecurse(t *testing.T) {
	d := t.TempDir()
	small(t, filepath.Join(d, "shard.safetensors"), nil)
	small(t, filepath.Join(filepath.Dir(d), "parent.safetensors"), nil)
	defer os.Remove(filepath.Join(filepath.Dir(d), "parent.safetensors"))
	for _, c := range []struct {
		shard, want string
	}{
		{"model.safetensors.index.json", "is an index"},
		{".", "must be a file name"},
		{"..", "must be a file name"},
		{"../parent.safetensors", "must be a file name"},
		{"/etc/passwd", "must be a file name"},
		{"other.index.json", "is an index"},
	} {
		idx := filepath.Join(d, "model.safetensors.index.json")
		writeIndex(t, idx, map[string]string{"w": c.shard})
		writeIndex(t, filepath.Join(d, "other.index.json"), map[string]string{"w": "model.safetensors.index.json"})
		for _, p := range []string{idx, d, filepath.Join(d, "other.index.json")} {
			err := within(t, 5*time.Second, c.shard, func() error { _, err := Open(p); return err })
			if err == nil || (p == idx && !strings.Contains(err.Error(), c.want)) {
				t.Errorf("open %s with shard %q: %v, want %q", p, c.shard, err, c.want)
			}
		}
	}
	// A directory whose only checkpoint-looking entry links to itself.
	e := t.TempDir()
	os.Symlink(".", filepath.Join(e, "loop.safetensors"))
	if err := within(t, 5*time.Second, "self link", func() error { _, err := Open(e); return err }); err == nil {
		t.Error("a directory linking to itself opened")
	}
}

// TestOnlyRegularFiles: a FIFO or a device where a checkpoint, a shard, an
// index or a side file belongs is refused at once (a FIFO would block the
// open, /dev/zero never ends), naming the file.
func TestOnlyRegularFiles(t *testing.T) {
	d := t.TempDir()
	fifo := filepath.Join(d, "model.safetensors")
	if err := syscall.Mkfifo(fifo, 0o644); err != nil {
		t.Skip("no FIFOs here:", err)
	}
	zero := filepath.Join(d, "zero.safetensors")
	os.Symlink("/dev/zero", zero)
	zidx := filepath.Join(d, "z.index.json")
	os.Symlink("/dev/zero", zidx)
	for _, p := range []string{fifo, zero, zidx, d} {
		err := within(t, 5*time.Second, p, func() error { _, err := Open(p); return err })
		if err == nil || !errors.Is(err, ErrNotRegular) {
			t.Errorf("open %s: %v, want not a regular file", p, err)
		}
	}
	for _, p := range []string{fifo, zero} {
		err := within(t, 5*time.Second, p, func() error { _, err := ReadFile(p, MaxConfigSize, "config"); return err })
		if !errors.Is(err, ErrNotRegular) || !strings.Contains(err.Error(), p) {
			t.Errorf("ReadFile %s: %v", p, err)
		}
		if _, err := FileSHA256(p); !errors.Is(err, ErrNotRegular) {
			t.Errorf("hashing %s: %v", p, err)
		}
	}
	big := filepath.Join(d, "big.json")
	os.WriteFile(big, bytes.Repeat([]byte(" "), 2000), 0o644)
	if _, err := ReadFile(big, 1000, "config"); err == nil || !strings.Contains(err.Error(), "1000-byte limit for a config") {
		t.Errorf("over the cap: %v", err)
	}
}

// TestSideFilesStayInside: links that leave the model directory are not
// followed (the file is skipped and said so), links inside it are; a FIFO
// or invalid JSON is an error before any work.
func TestSideFilesStayInside(t *testing.T) {
	d := t.TempDir()
	small(t, filepath.Join(d, "model.safetensors"), nil)
	os.Symlink("/proc/self/environ", filepath.Join(d, "vocab.json"))
	os.Symlink("/etc/passwd", filepath.Join(d, "tokenizer.json"))
	os.MkdirAll(filepath.Join(d, "real"), 0o755)
	os.WriteFile(filepath.Join(d, "real", "config.json"), []byte(`{"a": 1}`), 0o644)
	os.Symlink("real/config.json", filepath.Join(d, "config.json"))
	os.WriteFile(filepath.Join(d, "merges.txt"), []byte("a b\n"), 0o644)
	sf, err := ReadModelFiles(d)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, f := range sf.Files {
		names = append(names, f.Name)
	}
	if strings.Join(names, ",") != "config.json,merges.txt" || len(sf.Skipped) != 2 {
		t.Errorf("taken %v, skipped %v", names, sf.Skipped)
	}
	for _, s := range sf.Skipped {
		if !strings.Contains(s, "outside the model directory") || strings.Contains(s, "root:") {
			t.Errorf("skip message %q", s)
		}
	}
	out := t.TempDir()
	if files, err := sf.Write(out); err != nil || len(files) != 2 {
		t.Fatal(files, err)
	}
	if b, _ := os.ReadFile(filepath.Join(out, "config.json")); string(b) != `{"a": 1}` {
		t.Errorf("copied config %q", b)
	}
	os.WriteFile(filepath.Join(d, "generation_config.json"), []byte(`{"a": `), 0o644)
	if _, err := ReadModelFiles(d); err == nil || !strings.Contains(err.Error(), "not valid JSON") {
		t.Errorf("invalid JSON side file: %v", err)
	}
	os.Remove(filepath.Join(d, "generation_config.json"))
	if syscall.Mkfifo(filepath.Join(d, "tokenizer_config.json"), 0o644) == nil {
		err := within(t, 5*time.Second, "fifo side file", func() error { _, err := ReadModelFiles(d); return err })
		if !errors.Is(err, ErrNotRegular) {
			t.Errorf("FIFO side file: %v", err)
		}
	}
}

// TestWriteReplacesTheCheckpointThere: a single-file write into a
// directory that held a sharded checkpoint removes the old index and
// shards (and the other way round), so readers see the new model.
func TestWriteReplacesTheCheckpointThere(t *testing.T) {
	d := t.TempDir()
	infos := []TensorInfo{{Name: "a", DType: F32, Shape: []int64{4}}, {Name: "b", DType: F32, Shape: []int64{4}}}
	write := func(shard int64, val byte) []string {
		w, files, err := CreateOutput(d, infos, map[string]string{"v": string('0' + val)}, shard)
		if err != nil {
			t.Fatal(err)
		}
		for _, in := range infos {
			if err := w.WriteTensor(in.Name, bytes.Repeat([]byte{val}, 16)); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Commit(); err != nil {
			t.Fatal(err)
		}
		return files
	}
	listing := func() string {
		ents, _ := os.ReadDir(d)
		var n []string
		for _, e := range ents {
			n = append(n, e.Name())
		}
		return strings.Join(n, " ")
	}
	write(16, 1) // two shards and an index
	if got := listing(); got != "model-00001-of-00002.safetensors model-00002-of-00002.safetensors model.safetensors.index.json" {
		t.Fatalf("sharded: %s", got)
	}
	write(0, 2)
	if got := listing(); got != "model.safetensors" {
		t.Errorf("single after sharded: %s", got)
	}
	c, err := Open(d)
	if err != nil || c.Metadata()["v"] != "2" {
		t.Fatalf("reads the old model: %v %v", err, c.Metadata())
	}
	c.Close()
	// Writing model.safetensors by its file name is the same.
	write(16, 3)
	os.WriteFile(filepath.Join(d, "pytorch_model.bin"), []byte("old"), 0o644)
	w, _, err := CreateOutput(filepath.Join(d, "model.safetensors"), infos, nil, 0)
	if err != nil {
		t.Fatal(err)
	}
	for _, in := range infos {
		w.WriteTensor(in.Name, make([]byte, 16))
	}
	if err := w.Commit(); err != nil {
		t.Fatal(err)
	}
	if got := listing(); got != "model.safetensors" {
		t.Errorf("model.safetensors by name after sharded: %s", got)
	}
}

// TestIndexRefusesShardsOfDifferentRuns: `weightops index` checks that
// every shard carries the same metadata (recipe, inputs).
func TestIndexRefusesShardsOfDifferentRuns(t *testing.T) {
	d := t.TempDir()
	small(t, filepath.Join(d, ShardName(1, 2)), map[string]string{"weightops.recipe": "a"})
	if err := WriteSafetensors(filepath.Join(d, ShardName(2, 2)), []Tensor{{TensorInfo{Name: "v", DType: F32, Shape: []int64{2}}, make([]byte, 8)}}, map[string]string{"weightops.recipe": "b"}); err != nil {
		t.Fatal(err)
	}
	if _, err := WriteIndex(d); err == nil || !strings.Contains(err.Error(), `"weightops.recipe" differs`) {
		t.Errorf("shards of two recipes stitched: %v", err)
	}
	if _, err := os.Stat(filepath.Join(d, IndexName)); !os.IsNotExist(err) {
		t.Error("an index was written")
	}
}

// TestErrorsDoNotPrintFileBytes: a file that is not safetensors gets a
// message that does not quote its first bytes as a "header length".
func TestErrorsDoNotPrintFileBytes(t *testing.T) {
	p := filepath.Join(t.TempDir(), "x.safetensors")
	secret := []byte("SECRET=hunter2-very-secret")
	os.WriteFile(p, secret, 0o644)
	_, err := Open(p)
	if err == nil {
		t.Fatal("accepted")
	}
	n := uint64(0)
	for i := 7; i >= 0; i-- {
		n = n<<8 | uint64(secret[i])
	}
	if strings.Contains(err.Error(), fmt.Sprint(n)) || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("error shows the file's bytes: %v", err)
	}
}

// TestOutputsHonourTheUmask: committed outputs get 0666 less the umask.
func TestOutputsHonourTheUmask(t *testing.T) {
	p := filepath.Join(t.TempDir(), "o.safetensors")
	small(t, p, nil)
	st, err := os.Stat(p)
	if err != nil {
		t.Fatal(err)
	}
	if st.Mode().Perm() != fileMode {
		t.Errorf("mode %v, want %v", st.Mode().Perm(), fileMode)
	}
	if fileMode&0o600 != 0o600 {
		t.Errorf("umask leaves the owner without read/write: %v", fileMode)
	}
}

// TestCompressedPickleIsBounded: a zip checkpoint whose deflated data.pkl
// expands far beyond what its entries can need is refused after reading at
// most the bound, not unpacked whole.
func TestCompressedPickleIsBounded(t *testing.T) {
	var buf bytes.Buffer
	zw := zip.NewWriter(&buf)
	w, _ := zw.Create("archive/data.pkl")
	chunk := make([]byte, 1<<20)
	for range 256 { // 256 MiB of zeros: about 250 KB deflated
		w.Write(chunk)
	}
	zw.Close()
	p := filepath.Join(t.TempDir(), "bomb.pt")
	os.WriteFile(p, buf.Bytes(), 0o644)
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	_, err := Open(p)
	runtime.ReadMemStats(&after)
	if err == nil || !strings.Contains(err.Error(), "larger than") {
		t.Errorf("pickle bomb: %v", err)
	}
	if alloc := after.TotalAlloc - before.TotalAlloc; alloc > 64<<20 {
		t.Errorf("opening it allocated %d MiB", alloc>>20)
	}
}
